"""Confidence calibration: temperature scaling and expected calibration error.

A network trained with cross-entropy on 613 slices is usually over-confident. Temperature
scaling (Guo et al., 2017) divides the logits by one scalar fitted on the validation split;
it changes no prediction, only how far the probabilities can be trusted. The fitted value is
stored as ``temperature`` in ``config.json`` and applied by the app.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """The temperature minimising the negative log-likelihood of ``labels`` (LBFGS on log T)."""
    logits = logits.detach().to(torch.float64)
    labels = labels.detach().long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return t if math.isfinite(t) and t > 0 else 1.0


def reliability(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> dict[str, Any]:
    """Expected calibration error and per-bin confidence/accuracy for a reliability diagram.

    Bins are equal-width over the top-class confidence; ECE is the count-weighted mean gap.
    """
    probs = np.asarray(probs, dtype=float)
    labels = np.asarray(labels, dtype=int)
    conf = probs.max(axis=1) if probs.size else np.zeros(0)
    correct = (probs.argmax(axis=1) == labels).astype(float) if probs.size else np.zeros(0)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = []
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        n = int(in_bin.sum())
        if n:
            gap = abs(float(correct[in_bin].mean()) - float(conf[in_bin].mean()))
            ece += gap * n / len(conf)
            bins.append(
                {
                    "lo": float(lo),
                    "hi": float(hi),
                    "count": n,
                    "confidence": float(conf[in_bin].mean()),
                    "accuracy": float(correct[in_bin].mean()),
                }
            )
        else:
            bins.append({"lo": float(lo), "hi": float(hi), "count": 0, "confidence": None, "accuracy": None})
    return {"ece": float(ece), "bins": bins, "n": len(conf)}
