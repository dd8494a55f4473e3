"""Figures drawn from stored numbers: confusion matrices, training curves, reliability diagrams.

Training saves them as PNGs and the app draws them from metrics.json with the same functions.
Plain ``Figure`` objects (no pyplot state), so any thread may draw at any time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(figsize: tuple[float, float], dpi: int = 110) -> Figure:
    """A figure with its own Agg canvas, so it can be saved without pyplot."""
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def confusion_matrix_figure(matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str) -> Figure:
    """Counts with row-normalised colour (recall per true class)."""
    cm = np.asarray(matrix, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig = new_figure((5.6, 4.8))
    ax = fig.subplots()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    labels = [c.replace("_", " ") for c in class_names]
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", color="white" if frac[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    fig.tight_layout()
    return fig


def training_curves_figure(history: list[dict[str, Any]], best_epoch: int | None) -> Figure:
    """Train loss and validation accuracy / macro-F1 per epoch."""
    epochs = [h["epoch"] for h in history]
    fig = new_figure((9, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    if history and "val_loss" in history[0]:
        ax1.plot(epochs, [h["val_loss"] for h in history], label="validation loss")
    ax1.set_xlabel("epoch")
    ax1.legend()
    ax2.plot(epochs, [h["val_accuracy"] for h in history], label="validation accuracy")
    ax2.plot(epochs, [h["val_macro_f1"] for h in history], label="validation macro-F1")
    if best_epoch is not None:
        for ax in (ax1, ax2):
            ax.axvline(best_epoch, color="grey", linestyle=":", label="best epoch")
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("epoch")
    ax2.legend(loc="lower right")
    fig.tight_layout()
    return fig


def reliability_figure(calibration: dict[str, Any], title: str) -> Figure:
    """Reliability diagram: accuracy against confidence per bin, before and after scaling."""
    fig = new_figure((4.6, 4.2))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for key, label in (("bins_uncalibrated", "uncalibrated"), ("bins_calibrated", "temperature-scaled")):
        ece_key = "ece_" + key.split("_", 1)[1]
        pts = [(b["confidence"], b["accuracy"]) for b in calibration[key] if b["count"]]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", label=f"{label} (ECE {calibration[ece_key]:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence of the top class")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}, T = {calibration['temperature']:.2f}")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    path = Path(path)
    fig.savefig(path)
    return path


CONFUSION_FIGURES = (
    ("test", "confusion_matrix.png", "official test split"),
    ("test_leakage_free", "confusion_matrix_leakage_free.png", "leakage-free test"),
    ("validation", "confusion_matrix_validation.png", "validation split"),
)
RELIABILITY_FIGURES = (
    ("validation", "reliability_validation.png", "validation"),
    ("test", "reliability_test.png", "official test"),
)


def metrics_figures(metrics: dict[str, Any], folder: Path) -> dict[str, Path]:
    """The confusion matrices and reliability diagrams of ``metrics.json``, saved in ``folder`` by file name.

    Training and ``train.export`` both draw them from the metrics they write, so a folder's
    pictures always show its own figures.
    """
    figures = {}
    for key, name, title in CONFUSION_FIGURES:
        if key in metrics:
            fig = confusion_matrix_figure(metrics[key]["confusion_matrix"], metrics["class_names"], title)
            figures[name] = save_figure(fig, folder / name)
    for key, name, title in RELIABILITY_FIGURES:
        if key in metrics and "calibration" in metrics[key]:
            figures[name] = save_figure(reliability_figure(metrics[key]["calibration"], title), folder / name)
    return figures
