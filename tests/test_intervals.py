"""lungdemo.intervals: paired bootstrap intervals of the headline figures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lungdemo.intervals import bootstrap_intervals
from lungdemo.metrics import classification_metrics

CLASSES = ["adenocarcinoma", "large_cell_carcinoma", "normal", "squamous_cell_carcinoma"]


def predictions(n: int = 300, correct: float = 0.75, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, n)
    y_pred = np.where(rng.random(n) < correct, y_true, rng.integers(0, 4, n))
    return y_true, y_pred


def test_estimates_are_the_metrics_values() -> None:
    y_true, y_pred = predictions()
    m = classification_metrics(y_true, y_pred, CLASSES)
    ci = bootstrap_intervals(y_true, y_pred, CLASSES, n_resamples=500)
    assert ci["accuracy"]["estimate"] == pytest.approx(m["accuracy"], abs=1e-12)
    assert ci["macro_f1"]["estimate"] == pytest.approx(m["macro"]["f1"], abs=1e-12)
    assert ci["cancer_subtype_macro_f1"]["estimate"] == pytest.approx(m["cancer_subtype_macro_f1"], abs=1e-12)
    for c in CLASSES:
        assert ci["recall"][c]["estimate"] == pytest.approx(m["per_class"][c]["recall"], abs=1e-12)


def test_intervals_contain_the_estimate_and_are_json_ready() -> None:
    y_true, y_pred = predictions()
    ci = bootstrap_intervals(y_true, y_pred, CLASSES, n_resamples=500)
    entries = [ci["accuracy"], ci["macro_f1"], ci["cancer_subtype_macro_f1"], *ci["recall"].values()]
    for e in entries:
        assert 0 <= e["low"] < e["estimate"] < e["high"] <= 1
    assert json.loads(json.dumps(ci)) == ci
    assert ci["n"] == 300 and ci["confidence_level"] == 0.95 and ci["method"] == "percentile"


def test_fixed_seed_gives_the_same_interval_and_another_seed_another() -> None:
    y_true, y_pred = predictions()
    a = bootstrap_intervals(y_true, y_pred, CLASSES, n_resamples=400, seed=3)
    b = bootstrap_intervals(y_true, y_pred, CLASSES, n_resamples=400, seed=3)
    c = bootstrap_intervals(y_true, y_pred, CLASSES, n_resamples=400, seed=4)
    assert a == b
    assert a["macro_f1"] != c["macro_f1"]


def test_width_shrinks_like_one_over_root_n() -> None:
    """Four times the slices, about half the width: the resampling is of slices."""
    small = bootstrap_intervals(*predictions(200, seed=1), CLASSES, n_resamples=2000)
    large = bootstrap_intervals(*predictions(800, seed=1), CLASSES, n_resamples=2000)
    ratio = (small["accuracy"]["high"] - small["accuracy"]["low"]) / (
        large["accuracy"]["high"] - large["accuracy"]["low"]
    )
    assert 1.6 < ratio < 2.5


def test_accuracy_interval_matches_the_binomial_width() -> None:
    """For accuracy the bootstrap must agree with the normal approximation 1.96 * sqrt(p(1-p)/n)."""
    y_true, y_pred = predictions(400, correct=0.7, seed=2)
    ci = bootstrap_intervals(y_true, y_pred, CLASSES, n_resamples=4000)
    p = ci["accuracy"]["estimate"]
    half = 1.96 * np.sqrt(p * (1 - p) / 400)
    assert (ci["accuracy"]["high"] - ci["accuracy"]["low"]) / 2 == pytest.approx(half, rel=0.15)


def test_pairs_are_resampled_together() -> None:
    """A perfect classifier stays perfect in every resample: resampling truth and prediction apart would not."""
    y = np.repeat(np.arange(4), 25)
    ci = bootstrap_intervals(y, y, CLASSES, n_resamples=300)
    assert ci["macro_f1"] == {"estimate": 1.0, "low": 1.0, "high": 1.0}
    assert all(v == {"estimate": 1.0, "low": 1.0, "high": 1.0} for v in ci["recall"].values())


def test_a_rare_class_gets_a_wide_recall_interval() -> None:
    rng = np.random.default_rng(5)
    y_true = np.concatenate([np.zeros(280, int), np.ones(20, int)])
    y_pred = np.where(rng.random(300) < 0.8, y_true, 3)
    ci = bootstrap_intervals(y_true, y_pred, CLASSES, n_resamples=1000)
    rare = ci["recall"]["large_cell_carcinoma"]
    common = ci["recall"]["adenocarcinoma"]
    assert rare["high"] - rare["low"] > 2.5 * (common["high"] - common["low"])


def test_tiny_and_empty_inputs_do_not_crash() -> None:
    one = bootstrap_intervals([1], [1], CLASSES)
    assert one["recall"]["large_cell_carcinoma"] == {"estimate": 1.0, "low": 1.0, "high": 1.0}
    empty = bootstrap_intervals([], [], CLASSES)
    assert empty["n"] == 0 and empty["macro_f1"] == {"estimate": 0.0, "low": 0.0, "high": 0.0}
    with pytest.raises(ValueError, match="one length"):
        bootstrap_intervals([0, 1], [0], CLASSES)


def test_without_a_normal_class_there_is_no_subtype_figure() -> None:
    ci = bootstrap_intervals([0, 1, 1, 0, 1], [0, 1, 0, 0, 1], ["a", "b"], n_resamples=200)
    assert "cancer_subtype_macro_f1" not in ci and set(ci["recall"]) == {"a", "b"}
