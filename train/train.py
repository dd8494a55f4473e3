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
import random
import shlex
import shutil
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

from lungdemo.atomic import write_json
from lungdemo.calibration import fit_temperature
from lungdemo.folder import write_model_folder
from lungdemo.metrics import classification_metrics
from lungdemo.model import LungAlexNet
from lungdemo.plots import confusion_matrix_figure, reliability_figure, save_figure, training_curves_figure
from lungdemo.preprocessing import RESIZE_POLICIES, PreprocessConfig
from train import checkpoint as ckpt
from train.augment import AugmentConfig
from train.data import CLASS_NAMES, DatasetError, Sample, labels_of, load_images, scan_dataset
from train.engine import predict_logits, train_one_epoch
from train.evaluate import evaluate_test, format_metrics, metrics_for
from train.pretrained import PretrainedError, apply_pretrained
from train.push import PushError
from train.teacher import TeacherError

logger = logging.getLogger("train")

MODEL_DIR = "model"


class RunError(RuntimeError):
    """A problem with the run's arguments or output folder, found before training starts."""


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n")[0])
    io = p.add_argument_group("data and output")
    io.add_argument("--data-dir", type=Path, required=True, help="dataset root (train/ valid/ test/)")
    io.add_argument("--out", type=Path, required=True, help="run folder (model folder goes to OUT/model)")
    io.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    io.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    io.add_argument("--cache-dir", type=Path, default=Path(".cache/lungdemo"), help="decoded-image cache")
    io.add_argument("--limit", type=int, default=0, help="use at most N images per class and split (smoke tests)")
    io.add_argument("--skip-test", action="store_true", help="do not evaluate on the test split at the end")

    m = p.add_argument_group("model")
    m.add_argument(
        "--pretrained",
        default="imagenet",
        help="'imagenet' (torchvision AlexNet_Weights.IMAGENET1K_V1), 'none', or a local state-dict file",
    )
    m.add_argument("--hidden", type=int, default=4096, help="classifier hidden width; 0 = one linear layer")
    m.add_argument("--dropout", type=float, default=0.5)
    m.add_argument("--freeze-features", action="store_true", help="train only the classifier head")
    m.add_argument(
        "--features-lr-mult",
        type=float,
        default=1.0,
        help="learning-rate multiplier for the convolutional features (layer-wise LR)",
    )
    m.add_argument(
        "--weights-dtype",
        choices=["float32", "float16"],
        default="float32",
        help="storage precision of model.safetensors",
    )

    pre = p.add_argument_group("preprocessing (stored with the weights)")
    pre.add_argument("--image-size", type=int, default=224)
    pre.add_argument("--resize", choices=RESIZE_POLICIES, default="body_crop_pad")
    pre.add_argument("--body-threshold", type=int, default=20)

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=30)
    opt.add_argument("--batch-size", type=int, default=32)
    opt.add_argument("--lr", type=float, default=1e-4)
    opt.add_argument("--weight-decay", type=float, default=1e-4)
    opt.add_argument("--warmup-epochs", type=int, default=1)
    opt.add_argument("--label-smoothing", type=float, default=0.0)
    opt.add_argument("--mixup", type=float, default=0.0, help="mixup Beta(a, a) parameter; 0 disables")
    opt.add_argument("--no-class-weights", action="store_true", help="unweighted loss (default: balanced weights)")
    opt.add_argument("--patience", type=int, default=10, help="early stopping: epochs without a better val F1")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument(
        "--calibrate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fit a softmax temperature on the validation split (stored in config.json)",
    )
    opt.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")

    aug = p.add_argument_group("augmentation (training split only)")
    d = AugmentConfig()
    aug.add_argument("--scale-min", type=float, default=d.scale_min)
    aug.add_argument("--scale-max", type=float, default=d.scale_max)
    aug.add_argument("--rotate", type=float, default=d.rotate_deg, help="max rotation in degrees")
    aug.add_argument("--translate", type=float, default=d.translate, help="max shift, fraction of the size")
    aug.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=d.hflip)
    aug.add_argument("--brightness", type=float, default=d.brightness)
    aug.add_argument("--contrast", type=float, default=d.contrast)
    aug.add_argument("--gamma", type=float, default=d.gamma)

    kd = p.add_argument_group("knowledge distillation (training-only extra, see train.teacher)")
    kd.add_argument("--teacher", type=Path, default=None, help="teacher folder made by python -m train.teacher")
    kd.add_argument("--distill-alpha", type=float, default=0.7, help="weight of the teacher term in the loss")
    kd.add_argument("--distill-temperature", type=float, default=4.0)

    hub = p.add_argument_group("publishing")
    hub.add_argument("--push-to-hub", metavar="USER/REPO", help="push the model folder when training ends")
    hub.add_argument("--hub-private", action="store_true")
    hub.add_argument("--hub-branch", default=None)
    return p


def args_to_json(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def prepare_out_dir(args: argparse.Namespace) -> None:
    """Refuse to clobber a finished run; check the folder has room and is writable, now.

    The disk-space check runs first, on the nearest folder that exists, so a full disk is
    reported before anything is created (not after an hour of training, and without leaving
    an empty run folder behind).
    """
    out: Path = args.out
    model_dir = out / MODEL_DIR
    if args.resume:
        if not (out / "checkpoints" / ckpt.LAST).is_file():
            raise RunError(f"--resume: no checkpoint in {out / 'checkpoints'}")
    elif (model_dir / "config.json").exists() and not args.overwrite:
        raise RunError(f"{out} already holds a finished run ({model_dir}); pass --overwrite to replace it")
    elif (out / "checkpoints" / ckpt.LAST).exists() and not args.overwrite:
        raise RunError(f"{out} holds an unfinished run: pass --resume to continue it or --overwrite to restart")
    params = 2_500_000 + 9216 * args.hidden + args.hidden * args.hidden
    need = params * 4 * 5 + 200 * 2**20  # model + 2 Adam moments + best + folder, plus plots/cache
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        free = shutil.disk_usage(existing).free
    except OSError as exc:
        raise RunError(f"output folder {out} is not usable: {exc.strerror or exc}") from exc
    if free < need:
        raise RunError(f"not enough disk space in {out}: {free / 2**20:.0f} MiB free, about {need / 2**20:.0f} needed")
    try:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise RunError(f"output folder {out} is not writable: {exc.strerror or exc}") from exc


def limit_samples(samples: list[Sample], limit: int) -> list[Sample]:
    if limit <= 0:
        return samples
    out: list[Sample] = []
    for label in range(len(CLASS_NAMES)):
        out.extend([s for s in samples if s.label == label][:limit])
    return out


def build_optimizer(model: LungAlexNet, args: argparse.Namespace) -> torch.optim.Optimizer:
    """AdamW with a separate learning rate for the convolutional features."""
    if args.freeze_features:
        for p in model.features.parameters():
            p.requires_grad_(False)
    groups = [{"params": [p for p in model.classifier.parameters()], "lr": args.lr}]
    feats = [p for p in model.features.parameters() if p.requires_grad]
    if feats:
        groups.append({"params": feats, "lr": args.lr * args.features_lr_mult})
    return torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up, then cosine decay, stepped once per epoch."""

    def factor(epoch: int) -> float:
        if epoch < args.warmup_epochs:
            return (epoch + 1) / (args.warmup_epochs + 1)
        progress = (epoch - args.warmup_epochs) / max(1, args.epochs - args.warmup_epochs)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def run(args: argparse.Namespace, command: str) -> Path:
    """Train, pick the best epoch on validation, evaluate on test, write the model folder."""
    prepare_out_dir(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt_dir = args.out / "checkpoints"
    started = time.time()

    splits = scan_dataset(args.data_dir)
    train_s = limit_samples(splits["train"], args.limit)
    valid_s = limit_samples(splits["valid"], args.limit)
    pre_cfg = PreprocessConfig(image_size=args.image_size, resize=args.resize, body_threshold=args.body_threshold)
    aug_cfg = AugmentConfig(
        args.scale_min,
        args.scale_max,
        args.rotate,
        args.translate,
        args.hflip,
        args.brightness,
        args.contrast,
        args.gamma,
    )
    # starting weights before the slow first decode, so a missing ImageNet file fails fast;
    # decoding draws no random numbers, so the seeded sequence is the same either way
    gen = seed_everything(args.seed)
    model = LungAlexNet(
        class_names=list(CLASS_NAMES),
        hidden=args.hidden,
        dropout=args.dropout,
        preprocessing=pre_cfg.to_dict(),
        weights_dtype=args.weights_dtype,
    )
    pretrained = apply_pretrained(model, args.pretrained)
    teacher = None
    if args.teacher is not None:
        from train.teacher import load_teacher

        teacher = load_teacher(args.teacher, pre_cfg)

    x_train = load_images(train_s, pre_cfg, args.cache_dir, desc="decode train")
    y_train = labels_of(train_s)
    x_valid = load_images(valid_s, pre_cfg, args.cache_dir, desc="decode valid")
    y_valid = labels_of(valid_s)

    counts = np.bincount(y_train.numpy(), minlength=len(CLASS_NAMES))
    if (counts == 0).any():
        absent = [c for c, n in zip(CLASS_NAMES, counts, strict=True) if n == 0]
        raise DatasetError(f"the training split lacks classes {absent}")
    weights = compute_class_weight("balanced", classes=np.arange(len(CLASS_NAMES)), y=y_train.numpy())
    class_weights = torch.tensor(weights, dtype=torch.float32)
    optimizer = build_optimizer(model, args)
    scheduler = build_scheduler(optimizer, args)
    criterion = nn.CrossEntropyLoss(
        weight=None if args.no_class_weights else class_weights, label_smoothing=args.label_smoothing
    )

    state: dict[str, Any] = {"epoch": 0, "best_f1": -1.0, "best_epoch": 0, "stale": 0, "history": [], "elapsed": 0.0}
    if args.resume:
        saved = ckpt.load_last(ckpt_dir)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        gen.set_state(saved["gen_state"])
        torch.set_rng_state(saved["torch_rng"])
        state = saved["state"]
        logger.info(
            "resumed from epoch %d (best %.4f at epoch %d)", state["epoch"], state["best_f1"], state["best_epoch"]
        )

    val_criterion = nn.CrossEntropyLoss(weight=None if args.no_class_weights else class_weights)
    while state["epoch"] < args.epochs and state["stale"] < args.patience:
        epoch = state["epoch"] + 1
        t0 = time.time()
        loss = train_one_epoch(
            model,
            x_train,
            y_train,
            criterion=criterion,
            optimizer=optimizer,
            pre_cfg=pre_cfg,
            aug_cfg=aug_cfg,
            batch_size=args.batch_size,
            gen=gen,
            epoch=epoch,
            mixup=args.mixup,
            teacher=teacher,
            distill_alpha=args.distill_alpha,
            distill_temperature=args.distill_temperature,
        )
        scheduler.step()
        logits = predict_logits(model, x_valid, pre_cfg)
        val = classification_metrics(y_valid.numpy(), logits.argmax(1).numpy(), CLASS_NAMES)
        val_loss = float(val_criterion(logits, y_valid))
        f1 = val["macro"]["f1"]
        improved = f1 > state["best_f1"]
        if improved:
            state.update(best_f1=f1, best_epoch=epoch, stale=0)
            ckpt.save_best(model.state_dict(), ckpt_dir)
        else:
            state["stale"] += 1
        state["epoch"] = epoch
        state["elapsed"] += time.time() - t0
        state["history"].append(
            {
                "epoch": epoch,
                "train_loss": loss,
                "val_loss": val_loss,
                "val_accuracy": val["accuracy"],
                "val_macro_f1": f1,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.time() - t0,
            }
        )
        ckpt.save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "gen_state": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "state": state,
                "args": args_to_json(args),
                "command": command,
            },
            ckpt_dir / ckpt.LAST,
        )
        write_json(args.out / "history.json", state["history"])
        logger.info(
            "epoch %d/%d  train loss %.4f  val loss %.4f  val acc %.3f  val macro-F1 %.3f%s  (%.0fs)",
            epoch,
            args.epochs,
            loss,
            val_loss,
            val["accuracy"],
            f1,
            "  *best*" if improved else "",
            time.time() - t0,
        )
    stopped_early = state["epoch"] < args.epochs
    if stopped_early:
        logger.info("early stop: no better validation macro-F1 for %d epochs", args.patience)

    model.load_state_dict(ckpt.load_best(ckpt_dir))
    model.eval()
    val_logits = predict_logits(model, x_valid, pre_cfg)
    if args.calibrate:
        model.set_temperature(fit_temperature(val_logits, y_valid))
        logger.info("temperature fitted on validation: %.3f", model.temperature)
    metrics: dict[str, Any] = {
        "class_names": list(CLASS_NAMES),
        "best_epoch": state["best_epoch"],
        "selection": "validation macro-F1",
        "validation": metrics_for(val_logits, y_valid, list(CLASS_NAMES), model.temperature),
    }
    if not args.skip_test:
        test_splits = {k: limit_samples(v, args.limit) for k, v in splits.items()}
        metrics.update(evaluate_test(model, test_splits, args.data_dir, cache_dir=args.cache_dir))

    training_args = {
        "command": command,
        "args": args_to_json(args),
        "pretrained": pretrained,
        "class_weights": dict(zip(CLASS_NAMES, [round(float(w), 6) for w in weights], strict=True)),
        "train_counts": dict(zip(CLASS_NAMES, counts.tolist(), strict=True)),
        "valid_count": len(valid_s),
        "augmentation": aug_cfg.to_dict(),
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "stopped_early": stopped_early,
        "train_seconds": round(state["elapsed"], 1),
        "total_seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
    if args.teacher is not None:
        from train.teacher import teacher_summary

        training_args["teacher"] = teacher_summary(args.teacher)
    return write_outputs(model, args.out, metrics, training_args, state["history"])


def write_outputs(
    model: LungAlexNet, out: Path, metrics: dict[str, Any], training_args: dict[str, Any], history: list[dict[str, Any]]
) -> Path:
    """Plots, JSON files and the model card into ``out/model`` (atomically replaced)."""
    figures: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        figures["training_curves.png"] = save_figure(
            training_curves_figure(history, metrics["best_epoch"]), tmpdir / "training_curves.png"
        )
        for key, name, title in (
            ("test", "confusion_matrix.png", "official test split"),
            ("test_leakage_free", "confusion_matrix_leakage_free.png", "leakage-free test"),
            ("validation", "confusion_matrix_validation.png", "validation split"),
        ):
            if key in metrics:
                fig = confusion_matrix_figure(metrics[key]["confusion_matrix"], metrics["class_names"], title)
                figures[name] = save_figure(fig, tmpdir / name)
        for key, name, title in (
            ("validation", "reliability_validation.png", "validation"),
            ("test", "reliability_test.png", "official test"),
        ):
            if key in metrics and "calibration" in metrics[key]:
                figures[name] = save_figure(reliability_figure(metrics[key]["calibration"], title), tmpdir / name)
        folder = write_model_folder(
            model,
            out / MODEL_DIR,
            json_files={"metrics.json": metrics, "training_args.json": training_args, "history.json": history},
            extra_files=figures,
        )
    from train.card import render_model_card

    card = render_model_card(folder)
    tmp_card = folder / ".README.md.tmp"
    tmp_card.write_text(card, encoding="utf-8")
    tmp_card.replace(folder / "README.md")
    return folder


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    command = "python -m train " + " ".join(shlex.quote(a) for a in argv)
    if args.resume and (args.out / "checkpoints" / ckpt.LAST).is_file():
        saved = ckpt.load_last(args.out / "checkpoints")
        stored, command = saved["args"], saved["command"]
        args = argparse.Namespace(**{**stored, "resume": True, "overwrite": False})
        args.data_dir, args.out, args.cache_dir = (
            Path(stored["data_dir"]),
            Path(stored["out"]),
            Path(stored["cache_dir"]),
        )
        logger.info("--resume: continuing with the arguments stored in the checkpoint")
    try:
        if args.push_to_hub:
            from train.push import check_can_push

            check_can_push(args.push_to_hub, branch=args.hub_branch)  # fail now, not after training
        folder = run(args, command)
    except (RunError, DatasetError, PretrainedError, TeacherError, PushError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    metrics = json.loads((folder / "metrics.json").read_text())
    print(f"model folder: {folder}")
    print(format_metrics(f"validation (best epoch {metrics['best_epoch']})", metrics["validation"]))
    for key, name in (("test", "official test"), ("test_leakage_free", "leakage-free test")):
        if key in metrics:
            print(format_metrics(name, metrics[key]))
    if args.push_to_hub:
        from train.push import push_folder

        try:
            url = push_folder(folder, args.push_to_hub, private=args.hub_private, branch=args.hub_branch)
        except PushError as exc:
            print(f"error: the model folder {folder} is complete, but the push failed: {exc}", file=sys.stderr)
            print(f"retry with: python -m train.push {folder} {args.push_to_hub}", file=sys.stderr)
            return 2
        print(f"pushed to {url}")
    return 0
