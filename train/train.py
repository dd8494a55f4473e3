"""Fine-tune (or train from scratch) AlexNet on the chest CT dataset.

Usage::

    python -m train --data-dir ../shared/data/chest-ct --out runs/alexnet-1 --pretrained none
    python -m train --data-dir ../shared/data/chest-ct --out runs/alexnet-1 --resume

The run folder holds ``checkpoints/`` (resumable state), ``history.json`` and, when training
ends, ``model/``: the self-describing model folder (weights, config, metrics, card, plots)
that ``python -m train.evaluate``, ``python -m train.push`` and the app take.

The best epoch is chosen on validation macro-F1; the test split is only read after training.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from lungdemo.calibration import fit_temperature
from lungdemo.device import Precision, host_to_device, model_to_device, model_to_host
from lungdemo.errors import LungdemoError, report_error
from lungdemo.folder import CONFIG_NAME, METRICS_NAME, write_model_folder
from lungdemo.loading import LoadedModel, ModelRef
from lungdemo.model import LungAlexNet
from lungdemo.ood import OOD_FILES, OODCheck
from lungdemo.plots import metrics_figures, save_figure, training_curves_figure
from train import checkpoint as ckpt
from train.card import render_model_card
from train.config import TRAINING_ARGS_NAME, TrainConfig
from train.data import CLASS_NAMES, DatasetError, Sample, labels_of, load_images, scan_dataset
from train.distributed import DistContext, cleanup, is_main_process, launch_command, main_first
from train.engine import Distillation, EpochConfig, Split, predict_logits
from train.loop import (
    HISTORY_NAME,
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
from train.pretrained import apply_pretrained
from train.scoring import evaluate_test, format_metrics, metrics_for

logger = logging.getLogger("train")

MODEL_DIR = "model"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n")[0])
    return TrainConfig.add_arguments(p)


def student_params(hidden: int) -> int:
    """About how many parameters the AlexNet with a ``hidden``-wide head has (disk-space check)."""
    return 2_500_000 + 9216 * hidden + hidden * hidden


def limit_samples(samples: list[Sample], limit: int) -> list[Sample]:
    if limit <= 0:
        return samples
    out: list[Sample] = []
    for label in range(len(CLASS_NAMES)):
        out.extend([s for s in samples if s.label == label][:limit])
    return out


def build_optimizer(model: LungAlexNet, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with a separate learning rate for the convolutional features."""
    if cfg.freeze_features:
        for p in model.features.parameters():
            p.requires_grad_(False)
    groups = [{"params": [p for p in model.classifier.parameters()], "lr": cfg.lr}]
    feats = [p for p in model.features.parameters() if p.requires_grad]
    if feats:
        groups.append({"params": feats, "lr": cfg.lr * cfg.features_lr_mult})
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up, then cosine decay, stepped once per epoch."""

    def factor(epoch: int) -> float:
        if epoch < cfg.warmup_epochs:
            return (epoch + 1) / (cfg.warmup_epochs + 1)
        progress = (epoch - cfg.warmup_epochs) / max(1, cfg.epochs - cfg.warmup_epochs)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def run(cfg: TrainConfig, command: str) -> Path | None:
    """Train, pick the best epoch on validation, evaluate on test, write the model folder.

    Under torchrun every process trains; rank 0 alone finishes (calibration, test, model folder)
    and returns the folder, the others return ``None``.
    """
    ctx, precision = start_devices(cfg)  # first: a missing GPU fails before anything is read
    try:
        return _run(cfg, command, ctx, precision)
    finally:
        cleanup(ctx)


def _run(cfg: TrainConfig, command: str, ctx: DistContext, precision: Precision) -> Path | None:
    prepare_out_dir(cfg, cfg.out / MODEL_DIR / CONFIG_NAME, disk_need(student_params(cfg.hidden)))
    started = time.time()
    splits = scan_dataset(cfg.data_dir)
    train_s = limit_samples(splits["train"], cfg.limit)
    valid_s = limit_samples(splits["valid"], cfg.limit)
    pre_cfg = cfg.preprocess
    # starting weights before the slow first decode, so a missing ImageNet file fails fast;
    # decoding draws no random numbers, so the seeded sequence is the same either way
    gen = start(cfg)
    model = LungAlexNet(
        class_names=list(CLASS_NAMES),
        hidden=cfg.hidden,
        dropout=cfg.dropout,
        preprocessing=pre_cfg.to_dict(),
        weights_dtype=cfg.weights_dtype,
    )
    pretrained = apply_pretrained(model, cfg.pretrained)
    distill = None
    if cfg.teacher:
        from train.frozen import teacher_for_inference
        from train.teacher import load_teachers, teacher_preprocessing

        teacher = model_to_device(teacher_for_inference(load_teachers(cfg.teacher, pre_cfg)), ctx.device)
        teacher_pre = teacher_preprocessing(cfg.teacher, pre_cfg)
        distill = Distillation(teacher, cfg.distill_alpha, cfg.distill_temperature, cfg.distill_view, teacher_pre)

    with main_first(ctx):  # rank 0 decodes into the cache, the others read it
        train = Split(load_images(train_s, pre_cfg, cfg.cache_dir, desc="decode train"), labels_of(train_s))
        valid = Split(load_images(valid_s, pre_cfg, cfg.cache_dir, desc="decode valid"), labels_of(valid_s))

    counts = np.bincount(train.labels.numpy(), minlength=len(CLASS_NAMES))
    if (counts == 0).any():
        absent = [c for c, n in zip(CLASS_NAMES, counts, strict=True) if n == 0]
        raise DatasetError(f"the training split lacks classes {absent}")
    weights = compute_class_weight("balanced", classes=np.arange(len(CLASS_NAMES)), y=train.labels.numpy())
    class_weights = None if cfg.no_class_weights else torch.tensor(weights, dtype=torch.float32)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    criterion = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=cfg.label_smoothing)
    epoch_cfg = EpochConfig(pre_cfg, cfg.augment, cfg.batch_size, mixup=cfg.mixup, distill=distill)
    state = fit(
        place(model, optimizer, criterion, gen, ctx, precision, cfg.seed),
        scheduler,
        Split(host_to_device(train.images, ctx.device), train.labels),  # augmented where it trains
        valid,
        epoch_cfg,
        cfg,
        val_criterion=nn.CrossEntropyLoss(weight=class_weights),
        command=command,
        patience=cfg.patience,
    )

    if not ctx.is_main:
        return None
    model.load_state_dict(ckpt.load_best(checkpoint_dir(cfg.out)))
    model.eval()
    val_logits = predict_logits(model, valid.images, pre_cfg)
    if cfg.calibrate:
        model.set_temperature(fit_temperature(val_logits, valid.labels))
        logger.info("temperature fitted on validation: %.3f", model.temperature)
    metrics: dict[str, Any] = {
        "class_names": list(CLASS_NAMES),
        "best_epoch": state["best_epoch"],
        "selection": "validation macro-F1",
        "validation": metrics_for(val_logits, valid.labels, list(CLASS_NAMES), model.temperature),
    }
    test_splits = {k: limit_samples(v, cfg.limit) for k, v in splits.items()}
    if not cfg.skip_test:
        metrics.update(evaluate_test(model, test_splits, cfg.data_dir, cache_dir=cfg.cache_dir))
    check = None
    if cfg.ood_check:  # like calibration: fitted on train and validation, measured on test and the corpus
        from train.ood_fit import fit_and_measure

        folder = cfg.out / MODEL_DIR  # not written yet: the check is measured on the model in memory
        loaded = LoadedModel(model, folder, ModelRef(text=str(folder), local_path=folder))
        check, metrics["ood"] = fit_and_measure(loaded, test_splits, cfg.data_dir, command)

    training_args = {
        "command": command,
        "args": cfg.to_json(),
        "pretrained": pretrained,
        "class_weights": dict(zip(CLASS_NAMES, [round(float(w), 6) for w in weights], strict=True)),
        "train_counts": dict(zip(CLASS_NAMES, counts.tolist(), strict=True)),
        "valid_count": len(valid_s),
        "augmentation": cfg.augment.to_dict(),
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "stopped_early": state["stopped_early"],
        "train_seconds": round(state["elapsed"], 1),
        "total_seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "compute": device_record(ctx, precision),
    }
    if cfg.teacher:
        from train.teacher import teacher_summary

        summaries = [teacher_summary(f) for f in cfg.teacher]  # one teacher: a dict, as before ensembles
        training_args["teacher"] = summaries[0] if len(summaries) == 1 else summaries
    return write_outputs(model_to_host(model), cfg.out, metrics, training_args, state["history"], check)


def write_outputs(
    model: LungAlexNet,
    out: Path,
    metrics: dict[str, Any],
    training_args: dict[str, Any],
    history: list[dict[str, Any]],
    check: OODCheck | None = None,
) -> Path:
    """Plots, JSON files, the out-of-distribution check and the model card into ``out/model`` (atomically replaced)."""
    figures: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        if check is not None:
            check.save(tmpdir)
            figures |= {name: tmpdir / name for name in OOD_FILES}
        figures["training_curves.png"] = save_figure(
            training_curves_figure(history, metrics["best_epoch"]), tmpdir / "training_curves.png"
        )
        figures |= metrics_figures(metrics, tmpdir)
        folder = write_model_folder(
            model,
            out / MODEL_DIR,
            json_files={METRICS_NAME: metrics, TRAINING_ARGS_NAME: training_args, HISTORY_NAME: history},
            extra_files=figures,
            card=render_model_card,
        )
    return folder


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = TrainConfig.from_namespace(get_args_parser().parse_args(argv))
    start_logging()
    try:
        cfg, command = resume_config(cfg, launch_command("train", argv))
        if cfg.push_to_hub and is_main_process():
            from train.push import check_can_push

            check_can_push(cfg.push_to_hub, branch=cfg.hub_branch)  # fail now, not after training
        folder = run(cfg, command)
    except LungdemoError as exc:
        return report_error(exc)
    if folder is None:  # another process of a torchrun run: rank 0 reports
        return 0
    metrics = json.loads((folder / METRICS_NAME).read_text())
    print(f"model folder: {folder}")
    print(format_metrics(f"validation (best epoch {metrics['best_epoch']})", metrics["validation"]))
    for key, name in (("test", "official test"), ("test_leakage_free", "leakage-free test")):
        if key in metrics:
            print(format_metrics(name, metrics[key]))
    if cfg.push_to_hub:
        from train.push import push_folder

        try:
            url = push_folder(folder, cfg.push_to_hub, private=cfg.hub_private, branch=cfg.hub_branch)
        except LungdemoError as exc:
            print(f"error: the model folder {folder} is complete, but the push failed: {exc}", file=sys.stderr)
            print(f"retry with: python -m train.push {folder} {cfg.push_to_hub}", file=sys.stderr)
            return 2
        print(f"pushed to {url}")
    return 0
