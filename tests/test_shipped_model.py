"""The model folder shipped in the package: what `python app.py` serves with no options.

Its metrics.json and card make claims (test accuracy, macro-F1, how it was trained); these
tests check the claims against a fresh evaluation on the real dataset and against the folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lungdemo.loading import SHIPPED_MODEL_DIR, load_model
from train.config import TEACHER_ARCHITECTURES
from train.data import scan_dataset
from train.scoring import evaluate_test

MAX_BYTES = 30 * 1024 * 1024


def test_shipped_folder_is_complete_and_small() -> None:
    names = {p.name for p in SHIPPED_MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "metrics.json", "README.md", "training_args.json"} <= names
    assert not [n for n in names if n.endswith((".pt", ".pth", ".bin", ".pkl"))]  # safetensors only
    assert sum(p.stat().st_size for p in SHIPPED_MODEL_DIR.rglob("*") if p.is_file()) < MAX_BYTES


def test_card_says_how_it_was_trained() -> None:
    card = (SHIPPED_MODEL_DIR / "README.md").read_text()
    args = json.loads((SHIPPED_MODEL_DIR / "training_args.json").read_text())
    start = args["pretrained"]
    while start.get("warm_start"):  # a continued run: the card rebuilds each run it continues first
        assert start["source_command"] in card
        start = start["source_pretrained"]
    assert start["pretrained"] == "none"  # and the first run of the chain started from nothing
    assert "No ImageNet weights were used" in card
    assert "--pretrained imagenet" in card  # how to train the ImageNet-initialised version
    exports = args.get("export_commands") or [args["export_command"]]
    assert args["command"] in card and all(command in card for command in exports)


def test_the_teacher_is_recorded_and_its_command_is_in_the_card() -> None:
    """The shipped student was distilled (``--teacher`` in its command): the record must be there.

    A teacher is an ImageNet network fine-tuned by ``train.teacher`` or a trained model folder of the
    project (kd10 learned from kd5); either way the card's reproduce steps train it, and name the folders
    that a step reads but no listed step writes.
    """
    args = json.loads((SHIPPED_MODEL_DIR / "training_args.json").read_text())
    assert "--teacher " in args["command"]
    teachers = args["teacher"] if isinstance(args["teacher"], list) else [args["teacher"]]
    card = (SHIPPED_MODEL_DIR / "README.md").read_text()
    reproduce = card.split("## How to reproduce", 1)[1]
    for teacher in teachers:
        if teacher["architecture"].startswith("alexnet model folder "):
            assert teacher["command"].startswith("python -m train --data-dir ")
        else:
            assert teacher["command"].startswith("python -m train.teacher --data-dir ")
            assert teacher["architecture"].startswith(TEACHER_ARCHITECTURES)
        assert 0.0 < teacher["val_macro_f1"] <= 1.0 and teacher["best_epoch"] >= 1
        assert teacher["command"] in reproduce  # the reproduce steps rebuild every teacher first
    assert "knowledge distillation" in card
    written = {w for c in re.findall(r"--out (\S+)", reproduce) for w in (c, f"{c}/model")}
    named = reproduce.split("Make the folders", 1)[1].split("\n", 1)[0]
    words = args["command"].split()
    read = [words[i + 1] for i, w in enumerate(words) if w in ("--pretrained", "--teacher")]  # (first teacher)
    for path in read:
        assert path in written or f"`{path}`" in named, path


@pytest.mark.integration
def test_stored_test_metrics_are_what_evaluation_gives(data_dir: Path, tmp_path: Path) -> None:
    """The figures in metrics.json (and so in the card and the app's evaluation tab) are true."""
    stored = json.loads((SHIPPED_MODEL_DIR / "metrics.json").read_text())
    loaded = load_model(SHIPPED_MODEL_DIR)
    result = evaluate_test(loaded.model, scan_dataset(data_dir), data_dir, cache_dir=tmp_path / "cache")
    for key in ("test", "test_leakage_free"):
        assert result[key]["accuracy"] == pytest.approx(stored[key]["accuracy"], abs=1e-9)
        assert result[key]["macro"]["f1"] == pytest.approx(stored[key]["macro"]["f1"], abs=1e-9)
        assert result[key]["confusion_matrix"] == stored[key]["confusion_matrix"]
    assert result["leakage_free"]["dropped"] == stored["leakage_free"]["dropped"]
