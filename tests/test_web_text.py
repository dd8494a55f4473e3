"""lungdemo.web.text: the model's name on the page is never a server path."""

from __future__ import annotations

from pathlib import Path

from lungdemo.loading import SHIPPED_MODEL_DIR, LoadedModel, load_model, parse_model_ref
from lungdemo.web.text import DISCLAIMER_MARKDOWN, model_label


def test_model_label_of_a_local_folder_is_its_name(model_folder: Path) -> None:
    assert model_label(load_model(model_folder)) == "`model`"


def test_model_label_of_the_shipped_model(model_folder: Path) -> None:
    loaded = load_model(model_folder)
    shipped = LoadedModel(model=loaded.model, folder=SHIPPED_MODEL_DIR, ref=parse_model_ref(SHIPPED_MODEL_DIR))
    assert model_label(shipped) == "the shipped model (`shipped_model`)"


def test_model_label_of_a_hub_model_is_repo_at_revision(model_folder: Path) -> None:
    loaded = load_model(model_folder)
    sha = "0123456789abcdef0123456789abcdef01234567"
    cache = Path.home() / ".cache/huggingface/hub/models--user--repo/snapshots" / sha
    hub = LoadedModel(model=loaded.model, folder=cache, ref=parse_model_ref("user/repo@v1"), revision=sha)
    assert model_label(hub) == f"`user/repo@{sha}`"


def test_disclaimer_line() -> None:
    assert DISCLAIMER_MARKDOWN.startswith("> ⚠️ **Research demo only.")
