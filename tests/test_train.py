"""python -m train / python -m train.evaluate, called in-process.

Integration tests (marked) train tiny models on a subset of the real dataset; the bad-input
tests use tiny fake datasets generated in tmp_path.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import train.checkpoint as ckpt
import train.loop as loop_mod
import train.train as train_mod
from lungdemo.loading import load_model
from lungdemo.preprocessing import PreprocessConfig
from tests.training_helpers import error_line, fake_dataset, mirror_subset, small_args, snapshot
from train import evaluate
from train.data import CLASS_NAMES, scan_dataset
from train.scoring import evaluate_test, format_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ["confusion_matrix.png", "confusion_matrix_leakage_free.png", "confusion_matrix_validation.png"]


# --- one short training run on the real data -------------------------------------------------


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def one_epoch_run(data_dir: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run1"
    assert train_mod.main(small_args(data_dir, out, cache_dir)) == 0
    return out


@pytest.mark.integration
def test_run_writes_the_model_folder(one_epoch_run: Path) -> None:
    model_dir = one_epoch_run / "model"
    names = {p.name for p in model_dir.iterdir()}
    expected = {"model.safetensors", "config.json", "metrics.json", "training_args.json", "history.json", "README.md"}
    assert expected | {"training_curves.png", *PLOTS} <= names
    for png in ["training_curves.png", *PLOTS]:
        assert (model_dir / png).read_bytes()[:8] == PNG_MAGIC, png
    assert not [n for n in names if n.startswith(".")]  # no temporary files left behind
    assert (one_epoch_run / "checkpoints" / ckpt.LAST).is_file()
    assert (one_epoch_run / "checkpoints" / ckpt.BEST).is_file()

    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert {"validation", "test", "test_leakage_free"} <= metrics.keys()
    assert metrics["class_names"] == list(CLASS_NAMES)
    assert metrics["best_epoch"] == 1
    assert metrics["validation"]["n"] == 24 and metrics["test"]["n"] == 24  # 6 per class
    lf = metrics["leakage_free"]
    assert lf["kept"] + lf["dropped"] == 24 and metrics["test_leakage_free"]["n"] == lf["kept"]
    assert sum(map(sum, metrics["test"]["confusion_matrix"])) == 24

    args = json.loads((model_dir / "training_args.json").read_text())
    assert args["command"].startswith("python -m train --data-dir ")
    assert "--limit 6" in args["command"]
    assert args["class_weights"] == dict.fromkeys(CLASS_NAMES, 1.0)  # 6 of each: balanced is 1
    assert args["train_counts"] == dict.fromkeys(CLASS_NAMES, 6)
    assert args["pretrained"] == {"pretrained": "none"}
    assert args["epochs_run"] == 1 and args["args"]["image_size"] == 64

    history = json.loads((model_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1]
    assert {"train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr"} <= history[0].keys()
    assert history[0]["val_accuracy"] == metrics["validation"]["accuracy"]

    card = (model_dir / "README.md").read_text()
    assert card.startswith("---\n")  # Hub metadata block
    assert "## Intended use" in card and "## Limitations" in card


@pytest.mark.integration
def test_reload_keeps_class_names_and_preprocessing(one_epoch_run: Path) -> None:
    loaded = load_model(one_epoch_run / "model")
    assert loaded.model.class_names == list(CLASS_NAMES)
    assert loaded.model.preprocess_config == PreprocessConfig(image_size=64)
    assert loaded.config["preprocessing"] == PreprocessConfig(image_size=64).to_dict()
    assert loaded.config["hidden"] == 32
    assert not loaded.model.training
    assert loaded.metrics == json.loads((one_epoch_run / "model" / "metrics.json").read_text())
    # the weights are the best checkpoint's
    best = load_file(str(one_epoch_run / "checkpoints" / ckpt.BEST))
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, best[key]), key


@pytest.mark.integration
def test_evaluate_reproduces_the_stored_test_metrics(
    one_epoch_run: Path, data_dir: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    metrics = json.loads((one_epoch_run / "model" / "metrics.json").read_text())
    subset = mirror_subset(data_dir, tmp_path / "subset", 6)  # python -m train.evaluate has no --limit
    capsys.readouterr()
    argv = ["--model", str(one_epoch_run / "model"), "--data-dir", str(subset), "--cache-dir", str(cache_dir)]
    assert evaluate.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"official test: n=24  accuracy={metrics['test']['accuracy']:.3f}" in printed
    assert format_metrics("official test", metrics["test"]) in printed  # every number of the table
    dropped = metrics["leakage_free"]["dropped"]
    lf_name = f"leakage-free test ({dropped} test images with copies in train/valid dropped)"
    assert format_metrics(lf_name, metrics["test_leakage_free"]) in printed

    # and exactly, to the last bit, through the same functions
    loaded = load_model(one_epoch_run / "model")
    result = evaluate_test(loaded.model, scan_dataset(subset), subset, cache_dir=cache_dir)
    assert result["test"] == metrics["test"]
    assert result["test"]["accuracy"] == metrics["test"]["accuracy"]
    assert result["test_leakage_free"] == metrics["test_leakage_free"]
    assert result["leakage_free"] == metrics["leakage_free"]


@pytest.mark.integration
def test_finished_run_is_not_overwritten(
    one_epoch_run: Path, data_dir: Path, cache_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    before = snapshot(one_epoch_run)
    capsys.readouterr()
    assert train_mod.main(small_args(data_dir, one_epoch_run, cache_dir)) == 2
    err = error_line(capsys.readouterr().err)
    assert err == (
        f"error: {one_epoch_run} already holds a finished run ({one_epoch_run / 'model'}); "
        "pass --overwrite to replace it"
    )
    assert snapshot(one_epoch_run) == before  # nothing destroyed, nothing added


@pytest.mark.integration
def test_overwrite_replaces_a_finished_run(
    one_epoch_run: Path, data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    shutil.copytree(one_epoch_run, out)
    (out / "model" / "stale.txt").write_text("from the old run")
    assert train_mod.main(small_args(data_dir, out, cache_dir, "--overwrite", "--seed", "1")) == 0
    args = json.loads((out / "model" / "training_args.json").read_text())
    assert "--overwrite" in args["command"] and args["args"]["seed"] == 1
    assert not (out / "model" / "stale.txt").exists()  # the folder was replaced as a whole
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


# --- resume -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_resume_ends_with_the_same_result(
    data_dir: Path, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    assert train_mod.main(small_args(data_dir, out_a, cache_dir, epochs=3)) == 0

    # B: the same command, killed right after the checkpoint of epoch 2 was written
    real_save = ckpt.save_atomic
    writes = []

    def save_then_die(obj, path):
        real_save(obj, path)
        writes.append(obj["state"]["epoch"])
        if len(writes) == 2:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(ckpt, "save_atomic", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            train_mod.main(small_args(data_dir, out_b, cache_dir, epochs=3))
    assert writes == [1, 2]
    assert not (out_b / "model").exists()
    assert ckpt.load_last(out_b / "checkpoints")["state"]["epoch"] == 2

    # a plain restart is refused: it would throw the two epochs away
    capsys.readouterr()
    assert train_mod.main(small_args(data_dir, out_b, cache_dir, epochs=3)) == 2
    assert "holds an unfinished run: pass --resume" in error_line(capsys.readouterr().err)

    # --resume alone: the arguments come from the checkpoint
    assert train_mod.main(["--data-dir", str(data_dir), "--out", str(out_b), "--resume"]) == 0

    metrics_a = json.loads((out_a / "model" / "metrics.json").read_text())
    metrics_b = json.loads((out_b / "model" / "metrics.json").read_text())
    assert metrics_a == metrics_b
    weights_a = load_file(str(out_a / "model" / "model.safetensors"))
    weights_b = load_file(str(out_b / "model" / "model.safetensors"))
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key

    def curves(out: Path) -> list[dict]:
        history = json.loads((out / "model" / "history.json").read_text())
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert [h["epoch"] for h in curves(out_b)] == [1, 2, 3]
    assert curves(out_a) == curves(out_b)
    args_a = json.loads((out_a / "model" / "training_args.json").read_text())
    args_b = json.loads((out_b / "model" / "training_args.json").read_text())
    assert args_b["command"] == args_a["command"].replace(str(out_a), str(out_b))
    assert args_b["class_weights"] == args_a["class_weights"] and args_b["epochs_run"] == 3


def test_resume_without_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = fake_dataset(tmp_path / "data")
    out = tmp_path / "run"
    assert train_mod.main(small_args(data, out, tmp_path / "cache", "--resume")) == 2
    assert error_line(capsys.readouterr().err) == f"error: --resume: no checkpoint in {out / 'checkpoints'}"
    assert not out.exists()


# --- bad input, on fake datasets ---------------------------------------------------------------


def test_output_folder_not_writable(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # tests run as root, where chmod does not block writing; a path under a regular file
    # cannot be created by anyone
    data = fake_dataset(tmp_path / "data")
    (tmp_path / "file.txt").write_text("a file, not a folder")
    out = tmp_path / "file.txt" / "run"
    assert train_mod.main(small_args(data, out, tmp_path / "cache")) == 2
    err = error_line(capsys.readouterr().err)
    assert err.startswith(f"error: output folder {out} is not writable")
    assert (tmp_path / "file.txt").read_text() == "a file, not a folder"


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("missing_split", "split folder missing: {data}/valid"),
        ("unknown_class", "unknown class folder 'benign'"),
        ("empty_class", "class folder is empty: {data}/test/normal"),
        ("truncated_image", "cannot decode {data}/train/normal/0.png: the image data is broken or truncated"),
    ],
)
def test_bad_dataset_is_a_one_line_error(
    breakage: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = fake_dataset(tmp_path / "data")
    if breakage == "missing_split":
        shutil.rmtree(data / "valid")
    elif breakage == "unknown_class":
        (data / "train" / "benign").mkdir()
        shutil.copyfile(data / "train" / "normal" / "0.png", data / "train" / "benign" / "0.png")
    elif breakage == "empty_class":
        (data / "test" / "normal" / "0.png").unlink()
    elif breakage == "truncated_image":
        path = data / "train" / "normal" / "0.png"
        path.write_bytes(path.read_bytes()[:80])
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("kept")
    assert train_mod.main(small_args(data, out, tmp_path / "cache")) == 2
    err = error_line(capsys.readouterr().err)
    assert expected.format(data=data) in err
    assert (out / "notes.txt").read_text() == "kept"
    assert not (out / "model").exists()


def test_imagenet_offline_fails_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    data = fake_dataset(tmp_path / "data")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    decoded = []
    monkeypatch.setattr(train_mod, "load_images", lambda *a, **k: decoded.append(a) or pytest.fail("decoded"))
    argv = small_args(data, tmp_path / "run", tmp_path / "cache")
    argv[argv.index("--pretrained") + 1] = "imagenet"
    assert train_mod.main(argv) == 2
    err = error_line(capsys.readouterr().err)
    assert err.startswith("error: ImageNet AlexNet weights are not cached")
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth") in err
    assert "--pretrained none" in err
    assert decoded == []  # failed before the (slow) decode of the dataset


def test_pretrained_file_of_wrong_architecture_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = fake_dataset(tmp_path / "data")
    weights = tmp_path / "resnet.safetensors"
    save_file({"conv1.weight": torch.zeros(4, 3, 3, 3)}, str(weights))
    argv = small_args(data, tmp_path / "run", tmp_path / "cache")
    argv[argv.index("--pretrained") + 1] = str(weights)
    assert train_mod.main(argv) == 2
    err = error_line(capsys.readouterr().err)
    assert err.startswith(f"error: --pretrained {weights}: not an AlexNet ImageNet state dict")


def test_class_weights_from_training_counts_reach_the_loss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # training counts 6, 3, 2, 1: balanced weights n / (k * count) = 12/24, 12/12, 12/8, 12/4
    data = fake_dataset(tmp_path / "data", {"train": [6, 3, 2, 1], "valid": [1, 1, 1, 1], "test": [1, 1, 1, 1]})
    seen = []
    real_epoch = loop_mod.train_one_epoch

    def spy(parts, data, cfg, epoch):
        seen.append(parts.criterion.weight.clone())
        return real_epoch(parts, data, cfg, epoch)

    monkeypatch.setattr(loop_mod, "train_one_epoch", spy)
    out = tmp_path / "run"
    assert train_mod.main(small_args(data, out, tmp_path / "cache")) == 0
    expected = [0.5, 1.0, 1.5, 3.0]
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], torch.tensor(expected))
    args = json.loads((out / "model" / "training_args.json").read_text())
    assert args["class_weights"] == dict(zip(CLASS_NAMES, expected, strict=True))
    assert args["train_counts"] == dict(zip(CLASS_NAMES, [6, 3, 2, 1], strict=True))
