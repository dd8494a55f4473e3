"""Resumable training state, written atomically each epoch.

``checkpoints/last.pt`` holds model, optimizer, scheduler, epoch, best-so-far bookkeeping,
history and every RNG state, so ``--resume`` continues a killed run and ends with the same
result as an uninterrupted one. It is written to a temporary file and renamed, so a kill
during the write leaves the previous checkpoint intact. It is read with
``torch.load(weights_only=True)``: only tensors and plain containers, no code. The best
weights so far are kept as ``checkpoints/best.safetensors``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.safetensors"


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary name, fsync, rename: ``path`` is always a whole checkpoint.

    A failure while writing (a full disk, an error) removes the partial temporary file and
    leaves the previous checkpoint as it was; a kill leaves at most the temporary file, which
    the next save overwrites and nothing reads.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_best(state: dict[str, torch.Tensor], ckpt_dir: Path) -> None:
    """The best weights so far, written like :func:`save_atomic` (temporary name, rename)."""
    tmp = Path(ckpt_dir) / f".{BEST}.tmp"
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
        tmp.replace(Path(ckpt_dir) / BEST)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_best(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(ckpt_dir) / BEST))


def load_last(ckpt_dir: Path) -> dict[str, Any]:
    path = Path(ckpt_dir) / LAST
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)
