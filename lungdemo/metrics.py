"""Classification metrics as plain JSON-ready dicts, computed with scikit-learn.

The same dict shape is written to ``metrics.json`` by evaluation and read by the app's
evaluation tab and the model card, so nothing there recomputes or retypes a number::

    {"n": 315, "accuracy": 0.6,
     "per_class": {"adenocarcinoma": {"precision": .., "recall": .., "f1": .., "support": 120}, ...},
     "macro": {"precision": .., "recall": .., "f1": ..},
     "weighted": {"precision": .., "recall": .., "f1": ..},
     "cancer_subtype_macro_f1": ..,           # only when a "normal" class exists
     "confusion_matrix": [[..]],               # rows = true class, columns = predicted
     "class_names": [...]}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

NORMAL_CLASS = "normal"


def classification_metrics(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class/macro/weighted precision-recall-F1 and the confusion matrix.

    ``cancer_subtype_macro_f1`` is the macro F1 over the classes other than ``normal``:
    normal slices in this dataset come from another source and are separable by that alone,
    so the subtypes are the honest measure.
    """
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    labels = list(range(len(class_names)))
    if y_true.size == 0:  # e.g. an empty leakage-free subset: zeros, not a crash (scikit-learn refuses n=0)
        return _empty_metrics(class_names)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out: dict[str, Any] = {
        "n": int(y_true.size),
        "accuracy": float(accuracy_score(y_true, y_pred)) if y_true.size else 0.0,
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(class_names)
        },
    }
    for avg in ("macro", "weighted"):
        ap, ar, af, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=avg, zero_division=0)
        out[avg] = {"precision": float(ap), "recall": float(ar), "f1": float(af)}
    if NORMAL_CLASS in class_names:
        subtypes = [i for i, c in enumerate(class_names) if c != NORMAL_CLASS]
        out["cancer_subtype_macro_f1"] = float(
            f1_score(y_true, y_pred, labels=subtypes, average="macro", zero_division=0)
        )
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    out["class_names"] = list(class_names)
    return out


def _empty_metrics(class_names: Sequence[str]) -> dict[str, Any]:
    """The metrics dict of zero samples, in the same shape as :func:`classification_metrics`."""
    zeros = {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    out: dict[str, Any] = {
        "n": 0,
        "accuracy": 0.0,
        "per_class": {name: {**zeros, "support": 0} for name in class_names},
        "macro": dict(zeros),
        "weighted": dict(zeros),
    }
    if NORMAL_CLASS in class_names:
        out["cancer_subtype_macro_f1"] = 0.0
    out["confusion_matrix"] = [[0] * len(class_names) for _ in class_names]
    out["class_names"] = list(class_names)
    return out
