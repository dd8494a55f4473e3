"""One training epoch and batched inference, on cached ``uint8`` slices."""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from lungdemo.preprocessing import PreprocessConfig, normalize
from train.augment import AugmentConfig, augment_batch

logger = logging.getLogger(__name__)


def train_one_epoch(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    pre_cfg: PreprocessConfig,
    aug_cfg: AugmentConfig,
    batch_size: int,
    gen: torch.Generator,
    epoch: int,
    mixup: float = 0.0,
    teacher: nn.Module | None = None,
    distill_alpha: float = 0.0,
    distill_temperature: float = 4.0,
) -> float:
    """Shuffle, augment, step; returns the mean training loss.

    All randomness comes from ``gen`` so that a resumed run (which restores its state)
    draws the same batches and augmentations as an uninterrupted one. With a ``teacher``,
    the loss mixes the label loss with ``distill_alpha`` of the KL divergence to the
    teacher's softened predictions on the very same augmented (and mixed) batch.
    """
    model.train()
    order = torch.randperm(len(images), generator=gen)
    total, seen = 0.0, 0
    bar = tqdm(range(0, len(order), batch_size), desc=f"epoch {epoch}", unit="batch", leave=False)
    for start in bar:
        idx = order[start : start + batch_size]
        if len(idx) < 2:  # batch of 1 cannot be mixed and wastes a step
            continue
        x = normalize(augment_batch(images[idx], aug_cfg, gen), pre_cfg)
        y = labels[idx]
        if mixup > 0:
            lam = float(np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=gen))).beta(mixup, mixup))
            perm = torch.randperm(len(idx), generator=gen)
            x = lam * x + (1 - lam) * x[perm]
            logits = model(x)
            loss = lam * criterion(logits, y) + (1 - lam) * criterion(logits, y[perm])
        else:
            logits = model(x)
            loss = criterion(logits, y)
        if teacher is not None and distill_alpha > 0:
            with torch.no_grad():
                soft = torch.log_softmax(teacher(x) / distill_temperature, dim=1)
            kd = (
                F.kl_div(
                    torch.log_softmax(logits / distill_temperature, dim=1), soft, log_target=True, reduction="batchmean"
                )
                * distill_temperature**2
            )
            loss = distill_alpha * kd + (1 - distill_alpha) * loss
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
