"""95% bootstrap intervals for the headline figures, ready for ``metrics.json``.

With 51 large-cell slices in the test split a recall moves by 0.02 per slice, so a figure
means little without its interval. :func:`bootstrap_intervals` resamples the slices (truth and
prediction together, ``paired=True``) with :func:`scipy.stats.bootstrap` and a fixed seed, so
the same predictions always give the same interval::

    {"method": "percentile", "confidence_level": 0.95, "n_resamples": 9999, "seed": 0, "n": 315,
     "accuracy": {"estimate": .., "low": .., "high": ..},
     "macro_f1": {..}, "cancer_subtype_macro_f1": {..},
     "recall": {"adenocarcinoma": {..}, ...}}

The estimates are the very values :func:`lungdemo.metrics.classification_metrics` gives
(zero for an undefined recall or F1, as there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import bootstrap

from lungdemo.metrics import NORMAL_CLASS

DEFAULT_RESAMPLES = 9999
DEFAULT_SEED = 0
DEFAULT_CONFIDENCE = 0.95
DEFAULT_METHOD = "percentile"
"""Percentile rather than scipy's default BCa: BCa is undefined (NaN) when every resample gives the
same value, as a recall of 1.0 does, and the figures here need an interval every time."""
_BATCH = 1000


def _statistics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, subtypes: list[int]) -> np.ndarray:
    """accuracy, macro-F1, subtype macro-F1, then each class's recall, along the last axis's samples."""
    accuracy = (y_true == y_pred).mean(axis=-1)
    f1s, recalls = [], []
    for c in range(num_classes):
        is_true, is_pred = y_true == c, y_pred == c
        tp = (is_true & is_pred).sum(axis=-1)
        support, predicted = is_true.sum(axis=-1), is_pred.sum(axis=-1)
        recalls.append(np.where(support > 0, tp / np.maximum(support, 1), 0.0))
        f1s.append(np.where(support + predicted > 0, 2 * tp / np.maximum(support + predicted, 1), 0.0))
    f1 = np.stack(f1s)
    subtype_f1 = f1[subtypes].mean(axis=0) if subtypes else np.zeros_like(accuracy)
    return np.stack([accuracy, f1.mean(axis=0), subtype_f1, *recalls])


def bootstrap_intervals(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    *,
    confidence_level: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    method: str = DEFAULT_METHOD,
) -> dict[str, Any]:
    """Paired bootstrap intervals of accuracy, macro-F1, cancer-subtype macro-F1 and per-class recall.

    ``cancer_subtype_macro_f1`` is present when a ``normal`` class exists, as in the metrics dict.
    With fewer than two slices there is nothing to resample: the bounds equal the estimates (zeros for none).
    """
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D and of one length, got {y_true.shape} and {y_pred.shape}")
    names = list(class_names)
    subtypes = [i for i, c in enumerate(names) if c != NORMAL_CLASS] if NORMAL_CLASS in names else []

    def statistic(t: np.ndarray, p: np.ndarray, axis: int = -1) -> np.ndarray:
        return _statistics(np.moveaxis(t, axis, -1), np.moveaxis(p, axis, -1), len(names), subtypes)

    # an empty subset (e.g. leakage-free) gets zeros, as the metrics dict has
    estimate = np.zeros(3 + len(names)) if y_true.size == 0 else statistic(y_true, y_pred)
    if y_true.size >= 2:
        result = bootstrap(
            (y_true, y_pred),
            statistic,
            paired=True,
            vectorized=True,
            n_resamples=n_resamples,
            batch=_BATCH,
            confidence_level=confidence_level,
            method=method,
            rng=np.random.default_rng(seed),
        )
        low, high = result.confidence_interval.low, result.confidence_interval.high
    else:  # nothing to resample
        low = high = estimate

    def entry(i: int) -> dict[str, float]:
        return {"estimate": float(estimate[i]), "low": float(low[i]), "high": float(high[i])}

    out: dict[str, Any] = {
        "method": method,
        "confidence_level": confidence_level,
        "n_resamples": n_resamples,
        "seed": seed,
        "n": int(y_true.size),
        "accuracy": entry(0),
        "macro_f1": entry(1),
    }
    if subtypes:
        out["cancer_subtype_macro_f1"] = entry(2)
    out["recall"] = {name: entry(3 + i) for i, name in enumerate(names)}
    return out
