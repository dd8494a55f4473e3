"""Units of lungdemo.webapp that need no server: tables, figures, card, janitor, input widget."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import gradio as gr
import pytest

from lungdemo import webapp
from lungdemo.loading import ModelLoadError, load_model
from lungdemo.predictor import Predictor
from lungdemo.webapp import (
    Classifier,
    UploadJanitor,
    confusion_figure,
    local_images_as_text,
    report_rows,
    resolve_model_ref,
    strip_front_matter,
    summary_rows,
    upload_payload,
)
from tests.conftest import fake_metrics


def test_strip_front_matter() -> None:
    card = "---\nlicense: mit\ntags:\n- a\n---\n# Title\n\nText\n\n---\n\nAfter a rule.\n"
    assert strip_front_matter(card) == "# Title\n\nText\n\n---\n\nAfter a rule.\n"
    assert strip_front_matter("\ufeff---\r\nx: 1\r\n---\r\n# T\r\n") == "# T\r\n"
    assert strip_front_matter("# No metadata\n---\n") == "# No metadata\n---\n"


def test_tables_come_from_the_metrics_dict() -> None:
    metrics = fake_metrics(seed=4)
    rows = report_rows(metrics["test"])
    assert [r[0] for r in rows] == [*metrics["class_names"], "macro avg", "weighted avg"]
    c = metrics["test"]["per_class"]["normal"]
    assert rows[2] == ["normal", round(c["precision"], 3), round(c["recall"], 3), round(c["f1"], 3), c["support"]]

    del metrics["test_leakage_free"]
    summary = {r[0]: r[1:] for r in summary_rows(metrics)}
    assert summary["accuracy"] == [round(metrics["test"]["accuracy"], 3), "—"]
    assert summary["slices (n)"] == [metrics["test"]["n"], "—"]


def test_confusion_figure_shows_the_counts() -> None:
    split = fake_metrics(seed=1)["test"]
    fig = confusion_figure(split, "Official test split")
    ax = fig.axes[0]
    counts = [int(t.get_text()) for t in ax.texts]
    assert counts == [v for row in split["confusion_matrix"] for v in row]
    assert f"n={split['n']}" in ax.get_title()


def test_resolve_model_ref(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_model_ref(" user/repo@v1 ") == "user/repo@v1"
    monkeypatch.setattr(webapp, "SHIPPED_MODEL_DIR", tmp_path / "shipped_model")
    with pytest.raises(ModelLoadError, match="LUNGDEMO_MODEL") as info:
        resolve_model_ref(None)
    assert str(tmp_path / "shipped_model") in str(info.value)
    (tmp_path / "shipped_model").mkdir()
    assert resolve_model_ref("") == str(tmp_path / "shipped_model")


def test_upload_payload_is_the_untouched_upload(tmp_path: Path) -> None:
    """What the events get with preprocess=False: Gradio's file dict, path unchanged."""
    path = tmp_path / "not-an-image.png"
    path.write_text("text")  # gr.Image.preprocess would fail on this inside Gradio
    assert upload_payload({"path": str(path), "url": None, "meta": {"_type": "gradio.FileData"}}) == str(path)
    inline = "data:image/png;base64," + base64.b64encode(b"\x89PNG...").decode()
    assert upload_payload({"path": None, "url": inline}) == b"\x89PNG..."
    assert upload_payload(None) is None
    assert upload_payload(b"raw") == b"raw"
    with pytest.raises(gr.Error, match="no file was received"):
        upload_payload({"path": None, "url": None})


def test_classifier_words_decode_errors(model_folder: Path) -> None:
    classifier = Classifier(Predictor(load_model(model_folder)))
    with pytest.raises(gr.Error, match="the file is empty"):
        classifier.classify(b"")
    assert classifier.classify(None) is None
    assert classifier.notes(b"not an image") == ""


def _janitor(deletable: bool = True) -> UploadJanitor:
    return UploadJanitor(grace_s=3600, is_deletable=lambda p: deletable)


def _upload(tmp_path: Path, name: str = "a.png") -> str:
    folder = tmp_path / "0123abcd"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(b"x")
    return str(path)


def test_janitor_deletes_after_last_release(tmp_path: Path) -> None:
    janitor = _janitor()
    path = _upload(tmp_path)
    janitor.claim(path)
    janitor.claim(path)  # a second request on the same upload path
    janitor.release(path)
    assert janitor.pending == set()
    janitor.release(path)
    assert janitor.pending == {path}
    janitor.flush()
    assert not Path(path).exists() and not Path(path).parent.exists()


def test_janitor_use_cancels_pending_deletion(tmp_path: Path) -> None:
    janitor = _janitor()
    path = _upload(tmp_path)
    janitor.claim(path)
    janitor.release(path)
    janitor.claim(path)  # the same file uploaded again before the grace period ended
    assert janitor.pending == set()
    janitor.flush()
    assert Path(path).exists()
    janitor.release(path)
    assert janitor.pending == {path}


def test_janitor_keeps_protected_files(tmp_path: Path) -> None:
    janitor = _janitor(deletable=False)
    path = _upload(tmp_path)
    janitor.claim(path)
    janitor.release(path)
    janitor.flush()
    assert janitor.pending == set() and Path(path).exists()


def test_janitor_timer_deletes(tmp_path: Path) -> None:
    janitor = UploadJanitor(grace_s=0.0, is_deletable=lambda p: True)
    path = _upload(tmp_path)
    janitor.claim(path)
    janitor.release(path)
    deadline = time.monotonic() + 30
    while path in janitor.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not Path(path).exists()


def test_card_images_of_the_folder_become_text() -> None:
    card = "![confusion matrix](confusion_matrix.png)\n![remote](https://example.org/a.png)\n"
    out = local_images_as_text(card)
    assert "![confusion matrix]" not in out and "`confusion_matrix.png` in the model folder" in out
    assert "![remote](https://example.org/a.png)" in out
