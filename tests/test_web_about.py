"""The about tab: the model card without its Hub metadata, where the model came from, no server path."""

from __future__ import annotations

from pathlib import Path

from lungdemo import DISCLAIMER
from lungdemo.folder import CARD_NAME
from lungdemo.loading import load_model
from lungdemo.web.about import FLIP_LINE, about_markdown, local_images_as_text, strip_front_matter
from tests.conftest import make_model_folder


def test_strip_front_matter() -> None:
    card = "---\nlicense: mit\ntags:\n- a\n---\n# Title\n\nText\n\n---\n\nAfter a rule.\n"
    assert strip_front_matter(card) == "# Title\n\nText\n\n---\n\nAfter a rule.\n"
    assert strip_front_matter("\ufeff---\r\nx: 1\r\n---\r\n# T\r\n") == "# T\r\n"
    assert strip_front_matter("# No metadata\n---\n") == "# No metadata\n---\n"


def test_card_images_of_the_folder_become_text() -> None:
    card = "![confusion matrix](confusion_matrix.png)\n![remote](https://example.org/a.png)\n"
    out = local_images_as_text(card)
    assert "![confusion matrix]" not in out and "`confusion_matrix.png` in the model folder" in out
    assert "![remote](https://example.org/a.png)" in out


def test_about_shows_the_card_and_the_model_by_name(model_folder: Path) -> None:
    loaded = load_model(model_folder)
    text = about_markdown(loaded)
    assert text.lstrip().startswith("# Test model")
    assert "library_name" not in text
    assert DISCLAIMER in text
    assert "- Model: `model`" in text
    assert str(model_folder) not in text and str(model_folder.parent) not in text
    assert "- Classes (output order): `adenocarcinoma`, `large_cell_carcinoma`, `normal`" in text
    assert "Hub repo" not in text
    assert FLIP_LINE not in text


def test_about_says_when_the_model_scores_the_mirror_image_too(tmp_path: Path) -> None:
    text = about_markdown(load_model(make_model_folder(tmp_path / "model", test_time_flip=True)))
    assert FLIP_LINE in text


def test_about_without_a_card(model_folder: Path) -> None:
    (model_folder / CARD_NAME).unlink()
    text = about_markdown(load_model(model_folder))
    assert text.startswith(f"*This model folder has no model card ({CARD_NAME}).*")
