"""Shared helpers of the training tests: tiny fake datasets, small command lines, error lines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lungdemo.preprocessing import PreprocessConfig
from train import checkpoint as ckpt
from train.data import scan_dataset
from train.teacher import META, WEIGHTS, build_teacher
from train.train import limit_samples

LONG = [
    "adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib",
    "large.cell.carcinoma_left.hilum_T2_N2_M0_IIIa",
    "normal",
    "squamous.cell.carcinoma_left.hilum_T1_N2_M0_IIIa",
]
SHORT = ["adenocarcinoma", "large.cell.carcinoma", "normal", "squamous.cell.carcinoma"]


def small_args(data_dir: Path, out: Path, cache: Path, *extra: str, epochs: int = 1, ood: bool = False) -> list[str]:
    """``python -m train`` arguments for a run of seconds: 6 images per class, 64x64, a 32-wide head.

    Without ``ood`` the out-of-distribution check is not fitted (``tests/test_train_ood.py`` fits it).
    """
    return [
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        "--limit",
        "6",
        "--image-size",
        "64",
        "--hidden",
        "32",
        "--epochs",
        str(epochs),
        "--pretrained",
        "none",
        "--threads",
        "1",
        "--cache-dir",
        str(cache),
        *extra,
        *([] if ood else ["--no-ood-check"]),
    ]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def error_line(captured: str) -> str:
    """The one ``error:`` line of a failed command (progress bars may share stderr)."""
    lines = [line for line in captured.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, captured
    assert lines[-1] == errors[0], captured  # nothing (no traceback) after it
    return errors[0]


def fake_dataset(root: Path, counts: dict[str, list[int]] | None = None) -> Path:
    """A tiny dataset of smooth random PNGs; ``counts[split]`` = images per class."""
    counts = counts or {"train": [2, 2, 2, 2], "valid": [1, 1, 1, 1], "test": [1, 1, 1, 1]}
    rng = np.random.default_rng(0)
    for split, per_class in counts.items():
        for name, n in zip(SHORT if split == "test" else LONG, per_class, strict=True):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                small = rng.integers(0, 256, (8, 8), dtype=np.uint8)
                Image.fromarray(small).resize((80, 72), Image.Resampling.BICUBIC).save(d / f"{i}.png")
    return root


def mirror_subset(data_dir: Path, dest: Path, limit: int) -> Path:
    """Symlink exactly the files a ``--limit`` run used into a dataset of the same layout."""
    for samples in scan_dataset(data_dir).values():
        for s in limit_samples(samples, limit):
            target = dest / s.path.relative_to(data_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(s.path)
    return dest


def teacher_folder(folder: Path, pre: PreprocessConfig, seed: int) -> Path:
    """A Lite0 teacher folder with random weights (no ImageNet body) that frames as ``pre`` says."""
    folder.mkdir()
    (folder / META).write_text(json.dumps({"preprocessing": pre.to_dict(), "class_names": list("abcd")}))
    torch.manual_seed(seed)
    ckpt.save_weights(build_teacher(4, imagenet=False).state_dict(), folder / WEIGHTS)
    return folder
