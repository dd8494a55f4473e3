"""Shared fixtures: small model folders with random weights, built in tmp_path, no network."""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from lungdemo.calibration import reliability
from lungdemo.folder import write_model_folder
from lungdemo.intervals import bootstrap_intervals
from lungdemo.metrics import classification_metrics
from lungdemo.model import LungAlexNet
from lungdemo.preprocessing import PreprocessConfig

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chest-ct"
TEST_CLASSES = ["adenocarcinoma", "large_cell_carcinoma", "normal", "squamous_cell_carcinoma"]
INITIAL_TORCH_THREADS = torch.get_num_threads()

pytest_plugins = ["tests.ood_helpers"]  # the fitted check's fixtures, for the check's test modules


@pytest.fixture(autouse=True)
def restore_torch_threads() -> Iterator[None]:
    """Undo ``--threads N`` of in-process CLI runs, so later tests compute with the default.

    Results are bit-identical only for the same thread count, and some tests compare this
    process's numbers with a fresh subprocess's.
    """
    yield
    torch.set_num_threads(INITIAL_TORCH_THREADS)


def make_model(seed: int = 0, hidden: int = 32, image_size: int = 96, **kwargs) -> LungAlexNet:
    """A small random-weight model (deterministic for a seed)."""
    torch.manual_seed(seed)
    cfg = PreprocessConfig(image_size=image_size)
    return LungAlexNet(class_names=list(TEST_CLASSES), hidden=hidden, preprocessing=cfg.to_dict(), **kwargs).eval()


def fake_metrics(seed: int = 0) -> dict:
    """metrics.json content of the real shape, from random predictions."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, 60)
    y_pred = np.where(rng.random(60) < 0.6, y_true, rng.integers(0, 4, 60))
    m = classification_metrics(y_true, y_pred, TEST_CLASSES)
    m_lf = classification_metrics(y_true[:40], y_pred[:40], TEST_CLASSES)
    # calibration in the shape train.scoring.metrics_for writes, from logits whose top class is y_pred
    logits = rng.normal(0.0, 1.0, (60, 4))
    logits[np.arange(60), y_pred] = logits.max(axis=1) + rng.uniform(0.1, 3.0, 60)

    def calibration(z: np.ndarray, labels: np.ndarray, temperature: float = 1.5) -> dict:
        def softmax(x: np.ndarray) -> np.ndarray:
            e = np.exp(x - x.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)

        raw, cal = reliability(softmax(z), labels), reliability(softmax(z / temperature), labels)
        return {
            "temperature": temperature,
            "ece_uncalibrated": raw["ece"],
            "ece_calibrated": cal["ece"],
            "bins_uncalibrated": raw["bins"],
            "bins_calibrated": cal["bins"],
        }

    m["calibration"] = calibration(logits, y_true)
    m_lf["calibration"] = calibration(logits[:40], y_true[:40])
    m["intervals"] = bootstrap_intervals(y_true, y_pred, TEST_CLASSES, n_resamples=500)
    m_lf["intervals"] = bootstrap_intervals(y_true[:40], y_pred[:40], TEST_CLASSES, n_resamples=500)
    return {"class_names": TEST_CLASSES, "best_epoch": 1, "validation": m, "test": m, "test_leakage_free": m_lf}


def make_model_folder(path: Path, seed: int = 0, **kwargs) -> Path:
    """Write a complete model folder (weights, config, metrics, card) with random weights."""
    model = make_model(seed, **kwargs)
    card = "---\nlibrary_name: lungdemo\n---\n# Test model\n\nRandom weights, for tests only.\n"
    return write_model_folder(model, path, json_files={"metrics.json": fake_metrics(seed)}, card=lambda _: card)


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    return make_model_folder(tmp_path / "model")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    assert DATA_DIR.is_dir(), f"the real dataset is expected at {DATA_DIR}"
    return DATA_DIR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(folder: Path, **build_options) -> Iterator:
    """``(demo, state)`` on the model ``folder``, served on 127.0.0.1 with the app's launch options."""
    from lungdemo.web.demo import build_demo, launch_options

    demo, state = build_demo(str(folder), **build_options)
    demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True, **launch_options()
    )
    try:
        yield demo, state
    finally:
        demo.close()
