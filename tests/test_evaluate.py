"""python -m train.evaluate: the command line around train.scoring (its figures: test_train.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lungdemo.loading import ModelLoadError
from tests.conftest import make_model, make_model_folder
from tests.training_helpers import error_line, fake_dataset
from train import evaluate
from train.data import CLASS_NAMES


def test_evaluate_prints_both_tables_for_a_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = make_model_folder(tmp_path / "model", image_size=64)
    data = fake_dataset(tmp_path / "data")
    assert evaluate.main(["--model", str(folder), "--data-dir", str(data), "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model: ")
    assert "official test: n=4  accuracy=" in out
    assert "leakage-free test (0 test images with copies in train/valid dropped): n=4" in out
    assert "  [..]: 95% bootstrap interval (9999 paired resamples, seed 0)" in out
    assert out.rstrip().endswith("out-of-distribution check: none in this model folder")


def test_evaluate_measures_the_check_of_a_folder_that_has_one(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lungdemo.loading import load_model
    from train.data import scan_dataset
    from train.ood_corpus import build_corpus
    from train.ood_fit import fit_for_model

    folder = make_model_folder(tmp_path / "model", image_size=64)
    data = fake_dataset(tmp_path / "data")
    splits = scan_dataset(data)
    fit_for_model(load_model(folder).model.preprocess_config, splits).save(folder)
    argv = ["--model", str(folder), "--data-dir", str(data), "--cache-dir", str(tmp_path / "c")]
    assert evaluate.main(argv) == 0
    out = capsys.readouterr().out
    assert "out-of-distribution check: 5-nearest-neighbour cosine distance" in out
    assert f"{len(splits['test'])} test slices vs {len(build_corpus(data))} corpus images" in out
    assert "corpus flagged: " in out and "test slices flagged: " in out
    assert evaluate.main([*argv, "--no-ood"]) == 0
    assert "out-of-distribution" not in capsys.readouterr().out


def test_a_bad_model_folder_is_an_error_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    assert evaluate.main(["--model", str(tmp_path / "empty"), "--data-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    err = error_line(captured.err)
    assert str(tmp_path / "empty") in err and "missing config.json" in err
    assert captured.out == ""


def test_a_missing_dataset_is_an_error_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = make_model_folder(tmp_path / "model")
    assert evaluate.main(["--model", str(folder), "--data-dir", str(tmp_path / "nowhere")]) == 2
    captured = capsys.readouterr()
    assert error_line(captured.err) == f"error: data folder not found: {tmp_path / 'nowhere'}"
    assert captured.out == ""


def test_class_names_must_match_the_dataset() -> None:
    evaluate.check_class_names(make_model(), CLASS_NAMES)
    other = tuple(reversed(CLASS_NAMES))
    with pytest.raises(ModelLoadError) as err:
        evaluate.check_class_names(make_model(), other)
    assert str(err.value) == f"the model's classes {list(CLASS_NAMES)} differ from the dataset's {list(other)}"
