"""Evaluate a model folder on the official test split and its leakage-free subset.

Usage::

    python -m train.evaluate --model runs/alexnet-1/model --data-dir ../shared/data/chest-ct

``--model`` takes any model reference (folder, ``user/repo[@revision]``). The slices go
through the preprocessing stored in the model's ``config.json``, by the same functions the
app uses. The leakage-free subset drops every test image that has an exact or perceptual
near copy in train or valid (see :mod:`train.audit`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch

from lungdemo.calibration import reliability
from lungdemo.loading import ModelLoadError, load_model
from lungdemo.metrics import classification_metrics
from lungdemo.model import LungAlexNet
from train.audit import DEFAULT_NEAR_THRESHOLD, audit_samples
from train.data import CLASS_NAMES, DatasetError, Sample, labels_of, load_images, scan_dataset
from train.engine import predict_logits

logger = logging.getLogger(__name__)


def leakage_free_mask(splits: dict[str, list[Sample]], data_dir: Path, near_threshold: int) -> list[bool]:
    """For each test sample: True when no exact or near copy exists in train/valid."""
    report = audit_samples(splits, data_dir, near_threshold)
    clean = set(report["leakage_free_test"]["files"])
    return [s.path.relative_to(data_dir).as_posix() in clean for s in splits["test"]]


def check_class_names(model: LungAlexNet, dataset_classes: tuple[str, ...]) -> None:
    if tuple(model.class_names) != tuple(dataset_classes):
        raise ModelLoadError(
            f"the model's classes {model.class_names} differ from the dataset's {list(dataset_classes)}"
        )


def metrics_for(
    logits: torch.Tensor, labels: torch.Tensor, class_names: list[str], temperature: float = 1.0
) -> dict[str, Any]:
    """Classification metrics plus calibration (ECE before/after the model's temperature)."""
    metrics = classification_metrics(labels.numpy(), logits.argmax(1).numpy(), class_names)
    raw = reliability(torch.softmax(logits, 1).numpy(), labels.numpy())
    cal = reliability(torch.softmax(logits / temperature, 1).numpy(), labels.numpy())
    metrics["calibration"] = {
        "temperature": temperature,
        "ece_uncalibrated": raw["ece"],
        "ece_calibrated": cal["ece"],
        "bins_uncalibrated": raw["bins"],
        "bins_calibrated": cal["bins"],
    }
    return metrics


def evaluate_test(
    model: LungAlexNet,
    splits: dict[str, list[Sample]],
    data_dir: Path,
    *,
    cache_dir: Path | None = None,
    near_threshold: int = DEFAULT_NEAR_THRESHOLD,
) -> dict[str, Any]:
    """Official test metrics and leakage-free test metrics."""
    cfg = model.preprocess_config
    test = splits["test"]
    images = load_images(test, cfg, cache_dir, desc="decode test")
    labels = labels_of(test)
    mask = leakage_free_mask(splits, data_dir, near_threshold)
    keep = torch.tensor(mask, dtype=torch.bool)
    logits = predict_logits(model, images, cfg)
    t = model.temperature
    return {
        "test": metrics_for(logits, labels, model.class_names, t),
        "test_leakage_free": metrics_for(logits[keep], labels[keep], model.class_names, t),
        "leakage_free": {"near_threshold": near_threshold, "kept": sum(mask), "dropped": len(mask) - sum(mask)},
    }


def format_metrics(name: str, m: dict[str, Any]) -> str:
    """A fixed-width table of one metrics dict, for the terminal and the closing notes."""
    lines = [
        f"{name}: n={m['n']}  accuracy={m['accuracy']:.3f}  macro-F1={m['macro']['f1']:.3f}"
        + (f"  cancer-subtype macro-F1={m['cancer_subtype_macro_f1']:.3f}" if "cancer_subtype_macro_f1" in m else "")
    ]
    lines.append(f"  {'class':26s} {'prec':>6s} {'recall':>6s} {'f1':>6s} {'n':>5s}")
    for cls, v in m["per_class"].items():
        lines.append(f"  {cls:26s} {v['precision']:6.3f} {v['recall']:6.3f} {v['f1']:6.3f} {v['support']:5d}")
    lines.append("  confusion matrix (rows true, columns predicted): " + str(m["confusion_matrix"]))
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="model folder or user/repo[@revision]")
    p.add_argument("--data-dir", type=Path, required=True, help="dataset root (train/ valid/ test/)")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/lungdemo"), help="decoded-image cache")
    p.add_argument("--near-threshold", type=int, default=DEFAULT_NEAR_THRESHOLD)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        loaded = load_model(args.model)
        splits = scan_dataset(args.data_dir)

        check_class_names(loaded.model, CLASS_NAMES)
        result = evaluate_test(
            loaded.model, splits, args.data_dir, cache_dir=args.cache_dir, near_threshold=args.near_threshold
        )
    except (ModelLoadError, DatasetError) as exc:
        print(f"error: {exc}")
        return 2
    print(f"model: {loaded.description}")
    print(format_metrics("official test", result["test"]))
    lf = result["leakage_free"]
    print(
        format_metrics(
            f"leakage-free test ({lf['dropped']} test images with copies in train/valid dropped)",
            result["test_leakage_free"],
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
