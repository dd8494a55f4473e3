"""lungdemo.folder: the model folder's one writer and one reader. Random weights, tmp_path."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest
import torch

from lungdemo.folder import (
    CARD_NAME,
    CONFIG_NAME,
    METRICS_NAME,
    WEIGHTS_NAME,
    ModelLoadError,
    load_model_folder,
    write_model_folder,
)
from tests.conftest import TEST_CLASSES, make_model
from tests.hub_helpers import PickleBomb


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_model_folder(make_model(seed=7, hidden=32, image_size=64), tmp_path / "model")


def _edit_config(folder: Path, **changes: object) -> None:
    path = folder / CONFIG_NAME
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


# --- writing -------------------------------------------------------------------------------------
def test_written_folder_holds_exactly_weights_and_config(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    text = (folder / CONFIG_NAME).read_text()
    assert text == json.dumps(make_model(hidden=32, image_size=64).config_dict(), sort_keys=True, indent=2)
    assert json.loads(text)["class_names"] == TEST_CLASSES
    assert not any(p.name.startswith(".") for p in folder.parent.iterdir()), "no staging folder left behind"


def test_json_extra_files_and_a_card_rendered_from_the_folder(tmp_path: Path) -> None:
    plot = tmp_path / "plot.png"
    plot.write_bytes(b"\x89PNG fake")
    seen: dict[str, object] = {}

    def card(staging: Path) -> str:
        seen["name"] = staging.name
        seen["files"] = sorted(p.name for p in staging.iterdir())
        seen["classes"] = json.loads((staging / CONFIG_NAME).read_text())["class_names"]
        return "# card\n"

    out = write_model_folder(
        make_model(hidden=0),
        tmp_path / "m",
        json_files={METRICS_NAME: {"a": 1}},
        extra_files={"c.png": plot},
        card=card,
    )
    assert seen == {"name": "m", "files": ["c.png", CONFIG_NAME, METRICS_NAME, WEIGHTS_NAME], "classes": TEST_CLASSES}
    assert (out / CARD_NAME).read_text() == "# card\n"
    assert json.loads((out / METRICS_NAME).read_text()) == {"a": 1}
    assert (out / "c.png").read_bytes() == plot.read_bytes()


def test_an_existing_folder_is_replaced_whole_or_not_at_all(folder: Path) -> None:
    (folder / "stale.json").write_text("{}")
    before = (folder / WEIGHTS_NAME).read_bytes()

    def failing_card(_: Path) -> str:
        raise RuntimeError("card renderer broke")

    with pytest.raises(RuntimeError, match="card renderer broke"):
        write_model_folder(make_model(seed=99, hidden=32, image_size=64), folder, card=failing_card)
    assert (folder / WEIGHTS_NAME).read_bytes() == before, "the old folder is untouched"
    assert sorted(p.name for p in folder.parent.iterdir()) == ["model"], "no staging folder left behind"

    write_model_folder(make_model(seed=99, hidden=32, image_size=64), folder)
    assert (folder / WEIGHTS_NAME).read_bytes() != before
    assert not (folder / "stale.json").exists(), "replaced, not merged"


# --- reading -------------------------------------------------------------------------------------
def test_round_trip(tmp_path: Path) -> None:
    model = make_model(seed=5, hidden=32, image_size=64)
    model.set_temperature(1.7)
    folder = write_model_folder(model, tmp_path / "model")
    loaded, config = load_model_folder(folder)
    assert config == json.loads((folder / CONFIG_NAME).read_text()) == model.config_dict()
    assert not loaded.training, "ready for inference"
    assert loaded.temperature == 1.7
    x = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(model.eval()(x), loaded(x))


@pytest.mark.parametrize("missing", [CONFIG_NAME, WEIGHTS_NAME])
def test_folder_missing_a_file(folder: Path, missing: str) -> None:
    (folder / missing).unlink()
    with pytest.raises(ModelLoadError, match=re.escape(f"{folder} is not a lungdemo model folder: missing {missing}")):
        load_model_folder(folder)


def test_pickle_only_folder_is_refused_without_unpickling(tmp_path: Path, folder: Path) -> None:
    marker = tmp_path / "unpickled"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(PickleBomb(marker)))
    (folder / WEIGHTS_NAME).unlink()
    with pytest.raises(ModelLoadError) as err:
        load_model_folder(folder)
    assert str(err.value) == (
        f"{folder} is not a lungdemo model folder: missing {WEIGHTS_NAME} (found ['pytorch_model.bin']: "
        "pickled weights are never loaded; export them to safetensors)"
    )
    assert not marker.exists()


def test_config_and_weights_that_do_not_belong_together(folder: Path) -> None:
    _edit_config(folder, class_names=TEST_CLASSES[:3])
    with pytest.raises(ModelLoadError) as err:
        load_model_folder(folder)
    message = str(err.value)
    assert message.startswith(
        f"{folder}: {CONFIG_NAME} and {WEIGHTS_NAME} do not belong together: the config lists 3 classes "
        f"{TEST_CLASSES[:3]} but the weights' output layer (classifier.6.weight) has 4 outputs; shape mismatch: "
    )
    assert message.endswith(f". Re-export the folder from the training run, or fix {CONFIG_NAME}")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"num_layers": 8}, "unknown keys ['num_layers']"),
        ({"architecture": "resnet18"}, "unknown architecture 'resnet18'"),
        ({"class_names": None}, "class_names must be a list of at least 2 distinct names, got None"),
    ],
)
def test_bad_config(folder: Path, change: dict, words: str) -> None:
    _edit_config(folder, **change)
    with pytest.raises(ModelLoadError, match=re.escape(f"{folder / CONFIG_NAME}: {words}")):
        load_model_folder(folder)


@pytest.mark.parametrize(("text", "words"), [("{not json", "is not valid JSON"), ("[1, 2]", "must hold a JSON object")])
def test_config_that_is_not_a_json_object(folder: Path, text: str, words: str) -> None:
    (folder / CONFIG_NAME).write_text(text)
    with pytest.raises(ModelLoadError, match=re.escape(f"{folder / CONFIG_NAME} {words}")):
        load_model_folder(folder)


def test_unreadable_weights_name_the_folder(folder: Path) -> None:
    (folder / WEIGHTS_NAME).write_bytes(b"\x00" * 64)
    with pytest.raises(
        ModelLoadError, match=re.escape(f"{folder}: {folder / WEIGHTS_NAME} is not a valid safetensors")
    ):
        load_model_folder(folder)
