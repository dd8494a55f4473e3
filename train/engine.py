"""One training epoch and batched inference, on cached ``uint8`` slices, on any device.

On the CPU with one process the step is exactly the plain one (no autocast, no scaler, no
sharding), so CPU results stay bit-identical. On CUDA the step runs under the run's
:class:`~lungdemo.device.Precision`; under torchrun each process steps on its rows of the
global batch (:mod:`train.distributed`). Inference is always float32.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from lungdemo.device import Precision, batch_to_device, float32_matmul
from lungdemo.preprocessing import PreprocessConfig, normalize
from train.augment import AugmentConfig, apply_params, sample_params
from train.distributed import (
    DistContext,
    all_sum,
    eval_rows,
    gather_rows,
    min_global_batch,
    shard,
    shard_batchmean,
    shard_cross_entropy,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Cached canonical ``uint8`` slices ``(N, 1, S, S)`` and their labels."""

    images: torch.Tensor
    labels: torch.Tensor


DISTILL_VIEWS = ("same", "clean")
"""What the teacher is shown: the student's very batch, or the same moves without intensity changes
and degradation (gamma, window, contrast, brightness, blur, noise, JPEG), so the student learns to
give the clean slice's answer whatever an export did to its gray levels (Noisy Student, Xie et al. 2020)."""


@dataclass(frozen=True)
class Distillation:
    """A teacher whose softened predictions weigh ``alpha`` in the loss, shown the ``view`` of each batch
    through ``pre``'s normalisation (``None``: the student's; a teacher keeps its own gray levels)."""

    teacher: nn.Module
    alpha: float
    temperature: float
    view: str = "same"
    pre: PreprocessConfig | None = None

    def __post_init__(self) -> None:
        if self.view not in DISTILL_VIEWS:
            raise ValueError(f"distillation view must be one of {DISTILL_VIEWS}, got {self.view!r}")

    @property
    def clean_view(self) -> bool:
        return self.alpha > 0 and self.view == "clean"

    @property
    def own_input(self) -> bool:
        """Whether the teacher's input is made apart from the student's (another view or normalisation)."""
        return self.clean_view or (self.alpha > 0 and self.pre is not None)


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
    """What an epoch updates: the model through its optimizer and loss, and the generator it draws from.

    ``ctx`` says which process this is and its device (the model is already there, DDP-wrapped
    under torchrun); ``precision`` and ``scaler`` are the CUDA step's (float32 and none elsewhere).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    gen: torch.Generator
    ctx: DistContext = field(default_factory=DistContext)
    precision: Precision = field(default_factory=lambda: Precision("cpu"))
    scaler: torch.amp.GradScaler | None = None


def model_device(model: nn.Module) -> torch.device:
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def _mixup_draw(n: int, alpha: float, gen: torch.Generator) -> tuple[float, torch.Tensor]:
    lam = float(np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=gen))).beta(alpha, alpha))
    return lam, torch.randperm(n, generator=gen)


def train_one_epoch(parts: TrainingParts, data: Split, cfg: EpochConfig, epoch: int) -> float:
    """Shuffle, augment, step; returns the mean training loss.

    All randomness comes from ``parts.gen`` so that a resumed run (which restores its state)
    draws the same batches and augmentations as an uninterrupted one. With ``cfg.distill``,
    the loss mixes the label loss with ``alpha`` of the KL divergence to the teacher's
    softened predictions on the very same augmented (and mixed) batch, or with ``view="clean"``
    on that batch's moves (and mixing) without its intensity changes and degradation.
    """
    model, optimizer, gen, ctx = parts.model, parts.optimizer, parts.gen, parts.ctx
    device = ctx.device
    criterion = parts.criterion if device.type == "cpu" else copy.deepcopy(parts.criterion).to(device)
    images, labels = data.images, data.labels
    distill = cfg.distill
    model.train()
    order = torch.randperm(len(images), generator=gen)
    total, seen = 0.0, 0
    batches = range(0, len(order), cfg.batch_size)
    bar = tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not ctx.is_main)
    for start in bar:
        idx = order[start : start + cfg.batch_size]
        if len(idx) < min_global_batch(ctx):  # batch of 1 cannot be mixed and wastes a step
            continue
        with parts.precision.autocast():
            if ctx.enabled:
                x, x_teacher, logits, loss = _shard_step(model, criterion, images, labels, idx, cfg, gen, ctx)
            else:
                x, x_teacher, logits, loss = _step(model, criterion, images, labels, idx, cfg, gen, device)
            if distill is not None and distill.alpha > 0:
                t = distill.temperature
                with torch.no_grad():
                    soft = torch.log_softmax(distill.teacher(x if x_teacher is None else x_teacher).float() / t, dim=1)
                log_p = torch.log_softmax(logits.float() / t, dim=1)  # float32 even under autocast
                if ctx.enabled:
                    kl = F.kl_div(log_p, soft, log_target=True, reduction="sum")
                    kd = shard_batchmean(kl, len(idx), ctx) * t**2
                else:
                    kd = F.kl_div(log_p, soft, log_target=True, reduction="batchmean") * t**2
                loss = distill.alpha * kd + (1 - distill.alpha) * loss
        optimizer.zero_grad(set_to_none=True)
        if parts.scaler is not None and parts.scaler.is_enabled():
            parts.scaler.scale(loss).backward()
            parts.scaler.step(optimizer)
            parts.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        # one process: its loss; several: this process's part of the global batch's loss
        total += (loss.item() / ctx.world_size if ctx.enabled else loss.item()) * len(idx)
        seen += len(idx)
        bar.set_postfix(loss=f"{total * ctx.world_size / seen:.4f}")  # several processes: rank 0's estimate
    if ctx.enabled:
        total = float(all_sum(total, ctx))
    return total / max(seen, 1)


def _step(
    model: nn.Module,
    criterion: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    idx: torch.Tensor,
    cfg: EpochConfig,
    gen: torch.Generator,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """One process: the whole global batch (on the CPU, exactly the plain step).

    Returns the student's input, the teacher's when it differs (``view="clean"``, else ``None``),
    the logits and the loss. The clean view draws no random numbers, so the batches stay the same.
    """
    batch = images[idx]
    draw = sample_params(len(idx), cfg.augment, gen, tuple(batch.shape))
    seen = apply_params(batch, draw)
    x = batch_to_device(normalize(seen, cfg.pre), device)
    xt = None
    distill = cfg.distill
    if distill is not None and distill.own_input:
        view = apply_params(batch, draw.geometry_only()) if distill.clean_view else seen
        xt = batch_to_device(normalize(view, distill.pre or cfg.pre), device)
    y = labels[idx].to(device)
    if cfg.mixup > 0:
        lam, perm = _mixup_draw(len(idx), cfg.mixup, gen)
        x = lam * x + (1 - lam) * x[perm.to(device)]
        if xt is not None:
            xt = lam * xt + (1 - lam) * xt[perm.to(device)]
        logits = model(x)
        loss = lam * criterion(logits, y) + (1 - lam) * criterion(logits, y[perm.to(device)])
    else:
        logits = model(x)
        loss = criterion(logits, y)
    return x, xt, logits, loss


def _shard_step(
    model: nn.Module,
    criterion: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    idx: torch.Tensor,
    cfg: EpochConfig,
    gen: torch.Generator,
    ctx: DistContext,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Several processes: every one draws the global batch's random numbers, and steps on its rows
    (returns as :func:`_step` does)."""
    if not isinstance(criterion, nn.CrossEntropyLoss):
        raise TypeError(f"several processes need an nn.CrossEntropyLoss criterion, got {type(criterion).__name__}")
    device = ctx.device
    draw = sample_params(len(idx), cfg.augment, gen, shape=(len(idx), *images.shape[1:]))
    mine = shard(torch.arange(len(idx)), ctx)

    distill = cfg.distill

    def inputs(rows: torch.Tensor, teacher: bool = False) -> torch.Tensor:
        params = draw.rows(rows).to(device)
        clean = teacher and distill is not None and distill.clean_view
        canon = apply_params(images[idx[rows]].to(device), params.geometry_only() if clean else params)
        pre = (distill.pre if teacher and distill is not None else None) or cfg.pre
        return batch_to_device(normalize(canon, pre), device)

    y = labels[idx].to(device)
    x = inputs(mine)
    own_input = distill is not None and distill.own_input
    xt = inputs(mine, teacher=True) if own_input else None
    if cfg.mixup > 0:
        lam, perm = _mixup_draw(len(idx), cfg.mixup, gen)
        x = lam * x + (1 - lam) * inputs(perm[mine])
        if xt is not None:
            xt = lam * xt + (1 - lam) * inputs(perm[mine], teacher=True)
        logits = model(x)
        loss = lam * shard_cross_entropy(criterion, logits, y[mine], y, ctx) + (1 - lam) * shard_cross_entropy(
            criterion, logits, y[perm[mine]], y, ctx
        )
    else:
        logits = model(x)
        loss = shard_cross_entropy(criterion, logits, y[mine], y, ctx)
    return x, xt, logits, loss


@torch.inference_mode()
def predict_logits(
    model: nn.Module, images: torch.Tensor, pre_cfg: PreprocessConfig, batch_size: int = 64
) -> torch.Tensor:
    """Logits (on the CPU) for cached canonical slices, through the same :func:`normalize` as the app.

    The batches go to the model's device; float32 throughout (no autocast, no TF32).
    """
    model.eval()
    device = model_device(model)
    with float32_matmul():
        out = [
            model(batch_to_device(normalize(images[i : i + batch_size].to(device), pre_cfg), device)).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    return torch.cat(out) if out else torch.empty(0)


def predict_split(model: nn.Module, images: torch.Tensor, pre_cfg: PreprocessConfig, ctx: DistContext) -> torch.Tensor:
    """:func:`predict_logits` of every slice; under torchrun each process predicts its share
    and all processes get every row back, in order (so they all score, and choose, alike)."""
    if not ctx.enabled:
        return predict_logits(model, images, pre_cfg)
    local = predict_logits(model, images[eval_rows(len(images), ctx)], pre_cfg)
    return gather_rows(local.to(ctx.device), len(images), ctx).cpu()
