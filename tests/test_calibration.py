"""Temperature scaling and ECE on hand-made logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lungdemo.calibration import fit_temperature, reliability
from tests.conftest import make_model


def test_ece_of_hand_computed_bins() -> None:
    # two bins used: conf 0.9 (2 samples, 1 correct) and conf 0.6 (2 samples, 2 correct)
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 1])
    r = reliability(probs, labels, n_bins=10)
    # |0.5 - 0.9| * 2/4 + |1.0 - 0.6| * 2/4 = 0.2 + 0.2
    assert r["ece"] == pytest.approx(0.4)
    used = [b for b in r["bins"] if b["count"]]
    assert [(b["count"], b["accuracy"]) for b in used] == [(2, 1.0), (2, 0.5)]


def test_fitted_temperature_undoes_a_known_scaling() -> None:
    # labels drawn from softmax(z); logits given as 3*z are over-confident by exactly T=3
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 4, generator=gen)
    labels = torch.multinomial(torch.softmax(z, 1), 1, generator=gen).squeeze(1)
    t = fit_temperature(3 * z, labels)
    assert t == pytest.approx(3.0, rel=0.1)


def test_scaling_does_not_worsen_nll_or_change_predictions() -> None:
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(500, 4, generator=gen)
    labels = torch.multinomial(torch.softmax(z, 1), 1, generator=gen).squeeze(1)
    logits = 2.5 * z
    t = fit_temperature(logits, labels)
    nll = torch.nn.functional.cross_entropy
    assert float(nll(logits / t, labels)) <= float(nll(logits, labels)) + 1e-9
    assert torch.equal((logits / t).argmax(1), logits.argmax(1))
    before = reliability(torch.softmax(logits, 1).numpy(), labels.numpy())["ece"]
    after = reliability(torch.softmax(logits / t, 1).numpy(), labels.numpy())["ece"]
    assert after <= before


def test_temperature_is_saved_in_config_and_read_back(tmp_path) -> None:
    from lungdemo.folder import write_model_folder
    from lungdemo.loading import load_model

    model = make_model()
    model.set_temperature(1.7)
    write_model_folder(model, tmp_path / "m")
    assert load_model(tmp_path / "m").model.temperature == pytest.approx(1.7)
