"""Scoring a model: metrics with intervals and calibration, the official and leakage-free test, the terminal table.

Training (``metrics.json`` at the end of a run), ``python -m train.evaluate`` and
``python -m train.export`` all score through these functions, so their figures agree to the
last bit. The leakage-free subset drops every test image that has an exact or perceptual near
copy in train or valid (see :mod:`train.audit`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from lungdemo.calibration import fit_temperature, reliability
from lungdemo.intervals import bootstrap_intervals
from lungdemo.metrics import classification_metrics
from lungdemo.model import LungAlexNet
from train.audit import DEFAULT_NEAR_THRESHOLD, audit_samples
from train.data import Sample, labels_of, load_images
from train.engine import predict_logits

logger = logging.getLogger(__name__)


def leakage_free_mask(splits: dict[str, list[Sample]], data_dir: Path, near_threshold: int) -> list[bool]:
    """For each test sample: True when no exact or near copy exists in train/valid."""
    report = audit_samples(splits, data_dir, near_threshold)
    clean = set(report["leakage_free_test"]["files"])
    return [s.path.relative_to(data_dir).as_posix() in clean for s in splits["test"]]


def metrics_for(
    logits: torch.Tensor, labels: torch.Tensor, class_names: list[str], temperature: float = 1.0
) -> dict[str, Any]:
    """Classification metrics, their 95% bootstrap intervals, and calibration (ECE before/after the temperature)."""
    preds = logits.argmax(1).numpy()
    metrics = classification_metrics(labels.numpy(), preds, class_names)
    metrics["intervals"] = bootstrap_intervals(labels.numpy(), preds, class_names)
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


def validation_logits(
    model: LungAlexNet, splits: dict[str, list[Sample]], *, cache_dir: Path | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits on the validation split (decoded through the cache) and the split's labels."""
    cfg = model.preprocess_config
    valid = splits["valid"]
    return predict_logits(model, load_images(valid, cfg, cache_dir, desc="decode valid"), cfg), labels_of(valid)


def evaluate_validation(model: LungAlexNet, splits: dict[str, list[Sample]], *, cache_dir: Path | None = None) -> dict:
    """Validation metrics, as training reports them for the chosen epoch (the split recipes are chosen on)."""
    logits, labels = validation_logits(model, splits, cache_dir=cache_dir)
    return metrics_for(logits, labels, model.class_names, model.temperature)


def refit_temperature(model: LungAlexNet, splits: dict[str, list[Sample]], *, cache_dir: Path | None = None) -> float:
    """Fit ``model``'s softmax temperature on the validation split again (after its prediction changed)."""
    model.set_temperature(fit_temperature(*validation_logits(model, splits, cache_dir=cache_dir)))
    logger.info("temperature fitted on validation again: %.3f", model.temperature)
    return model.temperature


def format_metrics(name: str, m: dict[str, Any]) -> str:
    """A fixed-width table of one metrics dict, for the terminal and the closing notes."""
    ci = m.get("intervals") or {}

    def interval(key: str) -> str:
        e = ci.get(key)
        return f" [{e['low']:.3f}, {e['high']:.3f}]" if e else ""

    lines = [
        f"{name}: n={m['n']}  accuracy={m['accuracy']:.3f}{interval('accuracy')}  "
        f"macro-F1={m['macro']['f1']:.3f}{interval('macro_f1')}"
        + (
            f"  cancer-subtype macro-F1={m['cancer_subtype_macro_f1']:.3f}{interval('cancer_subtype_macro_f1')}"
            if "cancer_subtype_macro_f1" in m
            else ""
        )
    ]
    if ci:
        lines.append(f"  [..]: 95% bootstrap interval ({ci['n_resamples']} paired resamples, seed {ci['seed']})")
    lines.append(f"  {'class':26s} {'prec':>6s} {'recall':>6s} {'f1':>6s} {'n':>5s}")
    for cls, v in m["per_class"].items():
        lines.append(f"  {cls:26s} {v['precision']:6.3f} {v['recall']:6.3f} {v['f1']:6.3f} {v['support']:5d}")
    lines.append("  confusion matrix (rows true, columns predicted): " + str(m["confusion_matrix"]))
    return "\n".join(lines)
