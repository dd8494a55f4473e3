"""Resumable training state, written atomically each epoch.

``checkpoints/last.pt`` holds model, optimizer, scheduler, epoch, best-so-far bookkeeping,
history and every RNG state, so ``--resume`` continues a killed run and ends with the same
result as an uninterrupted one. It is read with ``torch.load(weights_only=True)``: only
tensors and plain containers, no code. The best weights so far are kept as
``checkpoints/best.safetensors``. Both go through :mod:`lungdemo.atomic`, so a kill or a
failed write leaves the previous file whole.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lungdemo.atomic import atomic_open, atomic_path

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
BEST = "best.safetensors"


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary name, fsync, rename: ``path`` is always a whole checkpoint."""
    with atomic_open(path, "wb", fsync=True) as f:
        torch.save(obj, f)


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """A state dict as safetensors (contiguous CPU copies), written atomically."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))


def save_best(state: dict[str, torch.Tensor], ckpt_dir: Path) -> None:
    """The best weights so far, as ``ckpt_dir/best.safetensors``."""
    save_weights(state, Path(ckpt_dir) / BEST)


def load_best(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(ckpt_dir) / BEST))


def load_last(ckpt_dir: Path) -> dict[str, Any]:
    path = Path(ckpt_dir) / LAST
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)
