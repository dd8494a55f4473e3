"""train.soup: the weighted mean of compatible folders' weights, scored on validation, with a clear refusal.

Tiny models on the tiny fake dataset; the expected weights are computed here from the ingredients' own
state dicts, so a soup that kept one folder, mixed the wrong keys or ignored ``--weights`` fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lungdemo.folder import load_model_folder, write_model_folder
from lungdemo.model import LungAlexNet
from tests.conftest import fake_metrics, make_model
from tests.training_helpers import error_line, fake_dataset
from train.data import scan_dataset
from train.scoring import evaluate_validation
from train.soup import SoupError, main, soup, soup_weights

COMMAND = "python -m train.soup dst a b --data-dir d"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_dataset(tmp_path_factory.mktemp("data") / "ct")


def folder(path: Path, model: LungAlexNet, exports: list[str] | None = None) -> Path:
    args: dict = {"command": f"python -m train --data-dir d --out {path.name}", "args": {"epochs": 1}}
    if exports:
        args["export_commands"] = exports
    json_files = {
        "metrics.json": {**fake_metrics(0), "best_epoch": 7},
        "training_args.json": args,
        "history.json": [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_macro_f1": 0.5, "lr": 1e-4}],
    }
    return write_model_folder(model, path, json_files=json_files)


def test_the_soup_holds_the_weighted_mean_and_the_last_folders_records(data: Path, tmp_path: Path) -> None:
    a = make_model(seed=1, hidden=32, image_size=64, weights_dtype="float16", test_time_flip=True)
    b = make_model(seed=2, hidden=32, image_size=64)
    fa = folder(tmp_path / "a", a, exports=["python -m train.export x a"])
    fb = folder(tmp_path / "b", b)
    dst = tmp_path / "soup"
    record = soup(dst, [fa, fb], data, COMMAND, weights=[1, 3], cache_dir=tmp_path / "cache")
    assert record == {"folders": [str(fa), str(fb)], "weights": [0.25, 0.75], "command": COMMAND}

    mixed, _ = load_model_folder(dst)
    sa, sb = load_model_folder(fa)[0].state_dict(), b.state_dict()  # a as stored (float16 values)
    for key, value in mixed.state_dict().items():
        torch.testing.assert_close(value, 0.25 * sa[key] + 0.75 * sb[key], msg=key)
    assert mixed.weights_dtype == "float32" and mixed.test_time_flip is False  # the last folder's settings

    metrics = json.loads((dst / "metrics.json").read_text())
    assert metrics["soup"] == record and metrics["best_epoch"] == 7 and "test" not in metrics
    splits = scan_dataset(data)
    assert metrics["validation"] == evaluate_validation(mixed, splits, cache_dir=tmp_path / "cache")
    args = json.loads((dst / "training_args.json").read_text())
    assert args["command"] == "python -m train --data-dir d --out b" and args["export_commands"] == [COMMAND]
    card = (dst / "README.md").read_text()
    assert (
        f"Average that folder's weights with the folders the command names (a weight soup; the temperature "
        f"fitted and validation scored again): `{COMMAND}`" in card
    )
    assert not any(dst.glob("ood*"))


def test_equal_weights_by_default_and_bad_weights_refused() -> None:
    assert soup_weights(None, 4) == [0.25] * 4
    assert soup_weights([2, 2], 2) == [0.5, 0.5]
    with pytest.raises(SoupError, match="one number per folder: 2 folders, 3 weights"):
        soup_weights([1, 1, 1], 2)
    with pytest.raises(SoupError, match="non-negative"):
        soup_weights([1, -1], 2)


def test_folders_that_mean_different_things_are_refused_by_name(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    fa = folder(tmp_path / "a", make_model(seed=1, hidden=32, image_size=64))
    fb = folder(tmp_path / "b", make_model(seed=2, hidden=16, image_size=64))
    dst = tmp_path / "soup"
    assert main([str(dst), str(fa), str(fb), "--data-dir", str(data), "--cache-dir", str(tmp_path / "c")]) != 0
    assert error_line(capsys.readouterr().err) == (
        f"error: {fb} cannot be averaged with {fa}: its 'hidden' is 16, not 32"
    )
    assert not dst.exists()
    with pytest.raises(SoupError, match="at least two"):
        soup(dst, [fa], data, COMMAND)
