"""train.export: float16 export, checked against the float32 model before anything is written.

Tiny models on a tiny fake dataset in tmp_path, built so that the answer is known: in the "tied"
model classes 0 and 1 differ by less than float16 can hold, so float32 says class 1 for every
slice and float16 says class 0 (a tie goes to the first class); in the "clear" model class 1
wins by a margin no rounding can undo.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lungdemo.folder import write_model_folder
from lungdemo.loading import SHIPPED_MODEL_DIR, load_model, load_model_folder
from lungdemo.model import LungAlexNet
from lungdemo.ood import OOD_FILES
from lungdemo.predictor import Predictor
from tests.conftest import fake_metrics, make_model
from tests.training_helpers import error_line, fake_dataset, mirror_subset
from train import export as export_mod
from train.data import CLASS_NAMES, scan_dataset
from train.export import ExportError, cast_model, export, parse_framing, reframed
from train.scoring import evaluate_test, evaluate_validation, refit_temperature

COMMAND = "python -m train.export src dst"


def decided_model(margin: float) -> LungAlexNet:
    """Every slice scores class 1 ``margin`` (relative) above class 0; classes 2 and 3 never win."""
    model = make_model(seed=0, hidden=32, image_size=64)
    last, hidden = model.classifier[-1], model.classifier[-3]
    with torch.no_grad():
        hidden.bias.fill_(1.0)  # positive activations into the last layer
        last.weight.fill_(0.5)  # exactly representable in float16
        last.weight[1] *= 1 + margin
        last.bias.copy_(torch.tensor([0.0, 0.0, -100.0, -100.0]))
    return model


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_dataset(tmp_path_factory.mktemp("data") / "ct")


def model_folder(path: Path, model: LungAlexNet) -> Path:
    json_files = {
        "metrics.json": fake_metrics(0),
        "training_args.json": {"command": "python -m train --data-dir d --out runs/x", "args": {"epochs": 1}},
        "history.json": [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_macro_f1": 0.5, "lr": 1e-4}],
    }
    return write_model_folder(model, path, json_files=json_files)


def test_cast_model_keeps_exactly_what_float16_storage_keeps() -> None:
    model = make_model(seed=1, hidden=32, image_size=64)
    half = cast_model(model, "float16")
    assert half.weights_dtype == "float16" and not half.training
    for key, value in model.state_dict().items():
        assert torch.equal(half.state_dict()[key], value.to(torch.float16).to(torch.float32)), key
    assert any(not torch.equal(half.state_dict()[k], v) for k, v in model.state_dict().items())  # it did round


def test_export_refuses_below_the_agreement_threshold(data: Path, tmp_path: Path) -> None:
    src = model_folder(tmp_path / "src", decided_model(margin=2**-14))
    dst = tmp_path / "dst"
    with pytest.raises(ExportError) as err:
        export(src, dst, "float16", data, tmp_path / "cache", 0.995, COMMAND)
    assert str(err.value) == "float16 weights agree with float32 on 0.0000 of test slices, below --min-agreement 0.995"
    assert not dst.exists()


def test_export_command_reports_the_refusal_on_stderr(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src = model_folder(tmp_path / "src", decided_model(margin=2**-14))
    argv = [str(src), str(tmp_path / "dst"), "--data-dir", str(data), "--cache-dir", str(tmp_path / "cache")]
    assert export_mod.main(argv) == 2
    captured = capsys.readouterr()
    assert error_line(captured.err).startswith("error: float16 weights agree with float32 on 0.0000 of test slices")
    assert "error" not in captured.out and not (tmp_path / "dst").exists()


def test_export_metrics_are_re_evaluated_on_the_exported_weights(data: Path, tmp_path: Path) -> None:
    src = model_folder(tmp_path / "src", decided_model(margin=2**-14))
    dst = tmp_path / "dst"
    info = export(src, dst, "float16", data, tmp_path / "cache", 0.0, COMMAND)
    assert info["test_agreement_with_float32"] == 0.0 and info["test_slices"] == 4
    metrics = json.loads((dst / "metrics.json").read_text())
    # float16 predicts adenocarcinoma (class 0) for all 4 test slices, one per class: accuracy 1/4
    assert metrics["test"]["accuracy"] == 0.25
    assert metrics["test"]["per_class"]["adenocarcinoma"]["recall"] == 1.0
    assert metrics["test"]["per_class"]["large_cell_carcinoma"]["recall"] == 0.0  # float32's answer, not kept
    # exactly what a fresh evaluation of the written folder gives
    fresh = evaluate_test(load_model(dst).model, scan_dataset(data), data, cache_dir=tmp_path / "cache")
    assert metrics["test"] == fresh["test"] and metrics["test_leakage_free"] == fresh["test_leakage_free"]
    source = json.loads((src / "metrics.json").read_text())
    assert metrics["export"]["float32_metrics"]["test"] == {
        "accuracy": source["test"]["accuracy"],
        "macro_f1": source["test"]["macro"]["f1"],
    }
    assert metrics["validation"] == source["validation"]  # not re-evaluated: kept from training
    args = json.loads((dst / "training_args.json").read_text())
    assert args["export_commands"] == [COMMAND] and args["command"] == "python -m train --data-dir d --out runs/x"
    assert json.loads((dst / "history.json").read_text()) == json.loads((src / "history.json").read_text())
    assert COMMAND in (dst / "README.md").read_text()


def test_export_of_a_clear_model_agrees_fully_and_stores_float16(data: Path, tmp_path: Path) -> None:
    src = model_folder(tmp_path / "src", decided_model(margin=0.1))
    dst = tmp_path / "dst"
    info = export(src, dst, "float16", data, tmp_path / "cache", 1.0, COMMAND)  # 1.0 is not below 1.0
    assert info["test_agreement_with_float32"] == 1.0
    stored = load_file(str(dst / "model.safetensors"))
    assert {v.dtype for v in stored.values()} == {torch.float16}
    assert (dst / "model.safetensors").stat().st_size < 0.55 * (src / "model.safetensors").stat().st_size
    model, config = load_model_folder(dst)
    assert config["weights_dtype"] == "float16"
    original, _ = load_model_folder(src)
    for key, value in original.state_dict().items():
        assert torch.equal(model.state_dict()[key], value.half().float()), key
    metrics = json.loads((dst / "metrics.json").read_text())
    assert metrics["test"]["per_class"]["large_cell_carcinoma"]["recall"] == 1.0


def test_framing_options_are_parsed_strictly() -> None:
    assert parse_framing(
        ["slice_deskew=25", "slice_deskew_keep=4", "slice_fill=TRUE", "slice_search=standardized"]
    ) == {
        "slice_deskew": 25.0,
        "slice_deskew_keep": 4.0,
        "slice_fill": True,
        "slice_search": "standardized",
    }
    for bad, says in (
        ("image_size=64", "KEY one of slice_fill, slice_deskew, slice_deskew_keep"),
        ("slice_deskew", "KEY=VALUE"),
        ("slice_deskew=a lot", "needs a number of degrees"),
        ("slice_fill=yes", "true or false"),
    ):
        with pytest.raises(ExportError, match=says):
            parse_framing([bad])
    model = decided_model(margin=0.1)
    with pytest.raises(ExportError, match="slice_search must be one of"):
        reframed(model, parse_framing(["slice_search=brighter"]))


def test_export_with_a_new_framing_scores_again_and_leaves_stale_parts_out(data: Path, tmp_path: Path) -> None:
    src = model_folder(tmp_path / "src", decided_model(margin=0.1))
    source = json.loads((src / "metrics.json").read_text())
    source |= {"robustness": {"clean": 0.5}, "ood": {"auroc": 1.0}}
    (src / "metrics.json").write_text(json.dumps(source))
    for name in OOD_FILES:
        (src / name).write_text("fitted on the old framing")
    (src / "confusion_matrix.png").write_bytes(b"drawn from the old metrics")
    (src / "training_curves.png").write_bytes(b"the training run's curves")
    framing = {"slice_deskew": 25.0, "slice_deskew_keep": 4.0}
    info = export(src, tmp_path / "dst", "float16", data, tmp_path / "cache", 1.0, COMMAND, framing)
    assert info["framing_changed"] == {"slice_deskew": [0.0, 25.0], "slice_deskew_keep": [0.0, 4.0]}
    assert info["validation_macro_f1_before"] == source["validation"]["macro"]["f1"]
    dst = load_model(tmp_path / "dst")
    assert (dst.model.preprocess_config.slice_deskew, dst.model.preprocess_config.slice_deskew_keep) == (25.0, 4.0)
    metrics = json.loads((tmp_path / "dst" / "metrics.json").read_text())
    assert "robustness" not in metrics and "ood" not in metrics
    assert metrics["validation"] == evaluate_validation(dst.model, scan_dataset(data), cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "dst" / name).exists() for name in OOD_FILES)  # to be fitted again
    assert Predictor(dst).ood is None
    for name in ("confusion_matrix.png", "confusion_matrix_leakage_free.png", "reliability_test.png"):
        assert (tmp_path / "dst" / name).read_bytes().startswith(b"\x89PNG"), name  # drawn from the new metrics
    assert (tmp_path / "dst" / "training_curves.png").read_bytes() == b"the training run's curves"


def test_export_with_test_time_flip_refits_the_temperature_and_keeps_the_check(data: Path, tmp_path: Path) -> None:
    model = make_model(seed=4, hidden=32, image_size=64)
    model.set_temperature(3.0)  # fitted for the single view; the export fits it again
    src = model_folder(tmp_path / "src", model)
    shipped = json.loads((SHIPPED_MODEL_DIR / "metrics.json").read_text())  # real blocks of figures
    check = shipped["ood"]
    source = json.loads((src / "metrics.json").read_text()) | {"robustness": shipped["robustness"], "ood": check}
    (src / "metrics.json").write_text(json.dumps(source))
    for name in OOD_FILES:
        (src / name).write_text("fitted on this framing, which the flip leaves alone")
    info = export(src, tmp_path / "dst", "float32", data, tmp_path / "cache", 1.0, COMMAND, test_time_flip=True)
    dst = load_model(tmp_path / "dst").model
    assert dst.test_time_flip is True
    assert info["test_time_flip_changed"] == [False, True]
    assert info["temperature_refit"][0] == 3.0 and info["temperature_refit"][1] == dst.temperature != 3.0
    splits = scan_dataset(data)
    refit = load_model(tmp_path / "dst").model
    refit_temperature(refit, splits, cache_dir=tmp_path / "cache")
    assert refit.temperature == pytest.approx(dst.temperature)  # fitted on validation with the flip
    metrics = json.loads((tmp_path / "dst" / "metrics.json").read_text())
    assert "robustness" not in metrics and metrics["ood"] == check
    assert all((tmp_path / "dst" / name).is_file() for name in OOD_FILES)
    assert metrics["validation"] == evaluate_validation(dst, splits, cache_dir=tmp_path / "cache")
    assert metrics["test"] == evaluate_test(dst, splits, data, cache_dir=tmp_path / "cache")["test"]
    assert "test_time_flip" in (tmp_path / "dst" / "README.md").read_text()
    assert json.loads((tmp_path / "dst" / "training_args.json").read_text())["export_commands"] == [COMMAND]
    again = "python -m train.export dst dst2 --test-time-flip false"
    export(tmp_path / "dst", tmp_path / "dst2", "float32", data, tmp_path / "cache", 1.0, again, test_time_flip=False)
    chain = json.loads((tmp_path / "dst2" / "training_args.json").read_text())["export_commands"]
    assert chain == [COMMAND, again]  # each export since training, in order, as the card lists them
    card = (tmp_path / "dst2" / "README.md").read_text()
    assert card.index(COMMAND) < card.index(again)
    unchanged = export(src, tmp_path / "same", "float32", data, tmp_path / "cache", 1.0, COMMAND, test_time_flip=False)
    assert "test_time_flip_changed" not in unchanged
    assert json.loads((tmp_path / "same" / "metrics.json").read_text())["robustness"] == shipped["robustness"]
    assert load_model(tmp_path / "same").model.temperature == 3.0


def test_export_refuses_a_framing_that_does_not_hold_together(data: Path, tmp_path: Path) -> None:
    src = model_folder(tmp_path / "src", decided_model(margin=0.1))
    with pytest.raises(ExportError, match=r"slice_deskew_keep \(4.0\) must be below slice_deskew \(0.0\)"):
        export(src, tmp_path / "dst", "float16", data, tmp_path / "cache", 1.0, COMMAND, {"slice_deskew_keep": 4.0})
    assert not (tmp_path / "dst").exists()


@pytest.mark.integration
def test_exporting_the_shipped_model_on_real_slices(data_dir: Path, tmp_path: Path) -> None:
    """The shipped float16 weights held in float32 predict the same; the metrics are a fresh evaluation."""
    subset = mirror_subset(data_dir, tmp_path / "subset", 6)  # 6 real slices per class and split
    cache = tmp_path / "cache"
    info = export(SHIPPED_MODEL_DIR, tmp_path / "dst", "float32", subset, cache, 1.0, COMMAND)
    assert (info["test_agreement_with_float32"], info["test_slices"]) == (1.0, 24)
    again = json.loads((tmp_path / "dst" / "metrics.json").read_text())
    fresh = evaluate_test(load_model(SHIPPED_MODEL_DIR).model, scan_dataset(subset), subset, cache_dir=cache)
    for key in ("test", "test_leakage_free", "leakage_free"):
        assert again[key] == fresh[key], key
    assert again["test"]["n"] == 24
    assert json.loads((tmp_path / "dst" / "config.json").read_text())["class_names"] == list(CLASS_NAMES)
    for name in OOD_FILES:  # the shipped check travels with the exported weights, byte for byte
        assert (tmp_path / "dst" / name).read_bytes() == (SHIPPED_MODEL_DIR / name).read_bytes()
    assert Predictor.from_ref(tmp_path / "dst").ood is not None
