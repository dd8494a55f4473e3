"""One training epoch and batched inference, on cached ``uint8`` slices."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from lungdemo.preprocessing import PreprocessConfig, normalize
from train.augment import AugmentConfig, augment_batch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Cached canonical ``uint8`` slices ``(N, 1, S, S)`` and their labels."""

    images: torch.Tensor
    labels: torch.Tensor


@dataclass(frozen=True)
class Distillation:
    """A teacher whose softened predictions weigh ``alpha`` in the loss."""

    teacher: nn.Module
    alpha: float
    temperature: float


@dataclass(frozen=True)
class EpochConfig:
    """How each batch is made and scored: preprocessing, augmentation, batch size, mixup, teacher."""

    pre: PreprocessConfig
    augment: AugmentConfig
    batch_size: int
    mixup: float = 0.0
    distill: Distillation | None = None


@dataclass(frozen=True)
class TrainingParts:
    """What an epoch updates: the model through its optimizer and loss, and the generator it draws from."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    gen: torch.Generator


def train_one_epoch(parts: TrainingParts, data: Split, cfg: EpochConfig, epoch: int) -> float:
    """Shuffle, augment, step; returns the mean training loss.

    All randomness comes from ``parts.gen`` so that a resumed run (which restores its state)
    draws the same batches and augmentations as an uninterrupted one. With ``cfg.distill``,
    the loss mixes the label loss with ``alpha`` of the KL divergence to the teacher's
    softened predictions on the very same augmented (and mixed) batch.
    """
    model, criterion, optimizer, gen = parts.model, parts.criterion, parts.optimizer, parts.gen
    images, labels = data.images, data.labels
    distill = cfg.distill
    model.train()
    order = torch.randperm(len(images), generator=gen)
    total, seen = 0.0, 0
    bar = tqdm(range(0, len(order), cfg.batch_size), desc=f"epoch {epoch}", unit="batch", leave=False)
    for start in bar:
        idx = order[start : start + cfg.batch_size]
        if len(idx) < 2:  # batch of 1 cannot be mixed and wastes a step
            continue
        x = normalize(augment_batch(images[idx], cfg.augment, gen), cfg.pre)
        y = labels[idx]
        if cfg.mixup > 0:
            lam = float(
                np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=gen))).beta(cfg.mixup, cfg.mixup)
            )
            perm = torch.randperm(len(idx), generator=gen)
            x = lam * x + (1 - lam) * x[perm]
            logits = model(x)
            loss = lam * criterion(logits, y) + (1 - lam) * criterion(logits, y[perm])
        else:
            logits = model(x)
            loss = criterion(logits, y)
        if distill is not None and distill.alpha > 0:
            t = distill.temperature
            with torch.no_grad():
                soft = torch.log_softmax(distill.teacher(x) / t, dim=1)
            kd = F.kl_div(torch.log_softmax(logits / t, dim=1), soft, log_target=True, reduction="batchmean") * t**2
            loss = distill.alpha * kd + (1 - distill.alpha) * loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)
        seen += len(idx)
        bar.set_postfix(loss=f"{total / seen:.4f}")
    return total / max(seen, 1)


@torch.inference_mode()
def predict_logits(
    model: nn.Module, images: torch.Tensor, pre_cfg: PreprocessConfig, batch_size: int = 64
) -> torch.Tensor:
    """Logits for cached canonical slices, through the same :func:`normalize` as the app."""
    model.eval()
    out = [model(normalize(images[i : i + batch_size], pre_cfg)) for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.empty(0)
