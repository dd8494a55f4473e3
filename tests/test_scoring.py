"""train.scoring: metrics with calibration and the terminal table (end to end: test_train.py)."""

from __future__ import annotations

import torch

from lungdemo.calibration import reliability
from train.scoring import format_metrics, metrics_for

CLASSES = ["a", "b", "c", "d"]


def test_metrics_for_adds_calibration_before_and_after_the_temperature() -> None:
    logits = torch.tensor([[4.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 1, 2, 3])
    m = metrics_for(logits, labels, CLASSES, temperature=2.0)
    assert m["accuracy"] == 0.75 and m["n"] == 4
    cal = m["calibration"]
    assert cal["temperature"] == 2.0
    assert cal["ece_uncalibrated"] == reliability(torch.softmax(logits, 1).numpy(), labels.numpy())["ece"]
    assert cal["ece_calibrated"] == reliability(torch.softmax(logits / 2.0, 1).numpy(), labels.numpy())["ece"]
    assert cal["ece_calibrated"] != cal["ece_uncalibrated"]


def test_format_metrics_has_one_line_per_class_and_the_matrix() -> None:
    m = metrics_for(torch.eye(4) * 3, torch.arange(4), CLASSES)
    lines = format_metrics("check", m).splitlines()
    ci = m["intervals"]
    acc, f1 = ci["accuracy"], ci["macro_f1"]
    assert lines[0] == (
        f"check: n=4  accuracy=1.000 [{acc['low']:.3f}, {acc['high']:.3f}]  "
        f"macro-F1=1.000 [{f1['low']:.3f}, {f1['high']:.3f}]"
    )
    assert lines[1] == "  [..]: 95% bootstrap interval (9999 paired resamples, seed 0)"
    assert [line.split()[0] for line in lines[3:7]] == CLASSES
    assert lines[-1].endswith("[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]")
