"""lungdemo.plots: the figures training saves and the app shows, drawn without pyplot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from lungdemo.loading import SHIPPED_MODEL_DIR
from lungdemo.plots import confusion_matrix_figure, reliability_figure, save_figure, training_curves_figure
from tests.conftest import fake_metrics

REPO = Path(__file__).resolve().parents[1]
SHIPPED_CONFUSION_PNGS = (
    ("test", "confusion_matrix.png", "official test split"),
    ("test_leakage_free", "confusion_matrix_leakage_free.png", "leakage-free test"),
    ("validation", "confusion_matrix_validation.png", "validation split"),
)
"""What train.write_outputs draws into the shipped folder: metrics key, file, title."""


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGBA"))


def test_confusion_figure_shows_the_counts() -> None:
    split = fake_metrics(seed=1)["test"]
    fig = confusion_matrix_figure(split["confusion_matrix"], split["class_names"], "Official test split (n=60)")
    ax = fig.axes[0]
    assert [int(t.get_text()) for t in ax.texts] == [v for row in split["confusion_matrix"] for v in row]
    assert ax.get_title() == "Official test split (n=60)"
    assert [t.get_text() for t in ax.get_yticklabels()] == [c.replace("_", " ") for c in split["class_names"]]


def test_shipped_pngs_are_redrawn_pixel_for_pixel(tmp_path: Path) -> None:
    """Training's PNGs in the shipped folder come out the same from metrics.json and history.json."""
    metrics = json.loads((SHIPPED_MODEL_DIR / "metrics.json").read_text())
    history = json.loads((SHIPPED_MODEL_DIR / "history.json").read_text())
    for key, name, title in SHIPPED_CONFUSION_PNGS:
        fig = confusion_matrix_figure(metrics[key]["confusion_matrix"], metrics["class_names"], title)
        out = save_figure(fig, tmp_path / name)
        assert np.array_equal(pixels(out), pixels(SHIPPED_MODEL_DIR / name)), name
    out = save_figure(training_curves_figure(history, metrics["best_epoch"]), tmp_path / "training_curves.png")
    assert np.array_equal(pixels(out), pixels(SHIPPED_MODEL_DIR / "training_curves.png"))


def test_reliability_figure_draws_both_curves(tmp_path: Path) -> None:
    calibration = fake_metrics(seed=3)["test"]["calibration"]
    fig = reliability_figure(calibration, "official test")
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == [
        "perfect calibration",
        f"uncalibrated (ECE {calibration['ece_uncalibrated']:.3f})",
        f"temperature-scaled (ECE {calibration['ece_calibrated']:.3f})",
    ]
    out = save_figure(fig, tmp_path / "r.png")
    assert pixels(out).shape == (462, 506, 4)  # 4.6 x 4.2 in at 110 dpi
    assert pixels(out).std() > 0


def test_drawing_never_imports_pyplot() -> None:
    """pyplot keeps global state (the app would need a lock); drawing and saving go without it."""
    code = (
        "import sys, io\n"
        "from lungdemo.plots import confusion_matrix_figure\n"
        "confusion_matrix_figure([[1, 2], [3, 4]], ['a', 'b'], 't').savefig(io.BytesIO(), format='png')\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"
