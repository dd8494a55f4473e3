"""Units of lungdemo.webapp that need no server: tables, figures, card, janitor, input widget."""

from __future__ import annotations

import base64
import io
import time
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from lungdemo import webapp
from lungdemo.gradcam import explain_source
from lungdemo.loading import ModelLoadError, load_model
from lungdemo.predict import InputError
from lungdemo.predictor import Predictor
from lungdemo.webapp import (
    CONFIDENCE_THRESHOLD,
    TOP_CLASS_CHOICE,
    BatchClassifier,
    Classifier,
    OutputFiles,
    ReliabilityPlots,
    Slice,
    UploadJanitor,
    calibration_intro,
    calibration_rows,
    confidence_markdown,
    confusion_figure,
    empty_map_markdown,
    local_images_as_text,
    report_file_name,
    report_rows,
    resolve_model_ref,
    strip_front_matter,
    summary_rows,
    table_rows,
    target_class_of,
    upload_name,
    upload_payload,
)
from tests.conftest import TEST_CLASSES, fake_metrics

EXAMPLES = sorted(webapp.EXAMPLES_DIR.glob("*.png"))


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


# --- classify tab extras ------------------------------------------------------------------


def test_confidence_line_says_when_the_model_is_unsure() -> None:
    unsure = {"adenocarcinoma": 0.45, "normal": 0.35, "large_cell_carcinoma": 0.1, "squamous_cell_carcinoma": 0.1}
    line = confidence_markdown(unsure, temperature=1.7)
    assert "unsure" in line and "adenocarcinoma" in line and "45%" in line and "T = 1.70" in line
    sure = {"adenocarcinoma": 0.05, "normal": CONFIDENCE_THRESHOLD, "large_cell_carcinoma": 0.2, "other": 0.15}
    line = confidence_markdown(sure)
    assert "unsure" not in line and "normal" in line and f"{CONFIDENCE_THRESHOLD:.0%}" in line
    assert confidence_markdown(None) == "" and confidence_markdown({}) == ""
    assert "unsure" in confidence_markdown({"a": 0.7, "b": 0.3}, threshold=0.75)


def test_target_class_choice() -> None:
    assert target_class_of(TOP_CLASS_CHOICE, TEST_CLASSES) is None
    assert target_class_of(None, TEST_CLASSES) is None and target_class_of(" ", TEST_CLASSES) is None
    assert target_class_of("normal", TEST_CLASSES) == "normal"
    with pytest.raises(gr.Error, match=r"unknown class 'Normal'.*top class"):
        target_class_of("Normal", TEST_CLASSES)


def test_names_of_uploads_and_reports() -> None:
    assert upload_name({"path": "/tmp/gradio/ab12/scan.png", "orig_name": "Scan 1.PNG"}) == "Scan 1.PNG"
    assert upload_name({"path": "/tmp/gradio/ab12/scan.png", "orig_name": None}) == "scan.png"
    assert upload_name("/x/y/z.dcm") == "z.dcm"
    assert upload_name(b"bytes") == "upload" and upload_name({"path": None, "url": "data:,"}) == "upload"
    assert report_file_name("Scan 1 (left).PNG", "PDF") == "Scan_1_left_report.pdf"
    assert report_file_name("../../etc/passwd", "png") == "passwd_report.png"
    assert report_file_name("...", "pdf") == "slice_report.pdf"


def test_empty_map_line_reads_the_overlay(model_folder: Path) -> None:
    """The line appears exactly for the maps gradcam calls empty (this random model has both kinds)."""
    predictor = Predictor(load_model(model_folder))
    results = [explain_source(predictor, path, c) for path in EXAMPLES for c in TEST_CLASSES]
    assert {r.empty for r in results} == {True, False}
    for r in results:
        line = empty_map_markdown(r.overlay(), r.target_class)
        assert (f"heat map for {r.target_class} is empty" in line) == r.empty
    assert empty_map_markdown(None, "normal") == ""


def test_classifier_explain_and_report_words_errors(model_folder: Path, tmp_path: Path) -> None:
    outputs = OutputFiles(grace_s=3600)
    classifier = Classifier(Predictor(load_model(model_folder)), outputs=outputs)
    with pytest.raises(gr.Error, match="the file is empty"):
        classifier.explain(b"", TOP_CLASS_CHOICE)
    assert classifier.explain(None, TOP_CLASS_CHOICE) == (None, "")
    assert classifier.explain_slice(None, "normal") == (gr.skip(), gr.skip())
    with pytest.raises(gr.Error, match="classify a slice first"):
        classifier.report(None, TOP_CLASS_CHOICE, "PDF")
    broken = Slice(b"not an image", "notes.png")
    with pytest.raises(gr.Error, match="not an image file"):
        classifier.report(broken, TOP_CLASS_CHOICE, "PDF")
    with pytest.raises(gr.Error, match="PDF or PNG"):
        classifier.report(Slice(EXAMPLES[0].read_bytes(), "a.png"), TOP_CLASS_CHOICE, "tiff")
    assert outputs.pending == set() and list(outputs.root.iterdir()) == []  # failed reports leave nothing


def test_output_files_are_deleted_after_the_grace_period(tmp_path: Path) -> None:
    outputs = OutputFiles(grace_s=3600)
    first, second = outputs.new_path("same.csv"), outputs.new_path("same.csv")
    assert first != second and first.parent.parent == second.parent.parent == outputs.root
    for path in (first, second):
        path.write_text("x")
    assert outputs.handed_out(first) == str(first)
    assert outputs.pending == {str(first)}
    outputs.flush()
    assert not first.parent.exists() and second.exists()


# --- batch --------------------------------------------------------------------------------


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_batch_sources_from_uploads(tmp_path: Path) -> None:
    archive = tmp_path / "upload.zip"
    archive.write_bytes(_zip_bytes({"a/one.png": EXAMPLES[0].read_bytes(), "a/notes.txt": b"x"}))
    uploads = BatchClassifier._uploads(
        [
            {"path": str(EXAMPLES[1]), "orig_name": "second.png"},
            {"path": str(archive), "orig_name": "series.zip"},
            {"path": str(tmp_path / "gone.png"), "orig_name": "gone.png"},
        ]
    )
    sources = BatchClassifier._sources(uploads)
    assert [name for name, _ in sources] == ["second.png", "series.zip!a/one.png", "gone.png"]
    assert sources[0][1] == EXAMPLES[1]
    assert sources[1][1] == EXAMPLES[0].read_bytes()
    assert isinstance(sources[2][1], InputError) and "no longer on the server" in str(sources[2][1])
    assert BatchClassifier._uploads(None) == []


def test_batch_limit_and_table(model_folder: Path) -> None:
    batcher = BatchClassifier(Predictor(load_model(model_folder)), outputs=OutputFiles(grace_s=3600), max_slices=2)
    files = [{"path": str(p), "orig_name": p.name} for p in EXAMPLES[:3]]
    with pytest.raises(gr.Error, match="3 slices in one batch; the limit here is 2"):
        batcher.batch(files, progress=lambda *a, **k: None)
    table, csv_path = batcher.batch(files[:2], progress=lambda *a, **k: None)
    assert [row[0] for row in table] == [p.name for p in EXAMPLES[:2]] and Path(csv_path).is_file()
    assert batcher.batch(None, progress=lambda *a, **k: None) == ([], None)
    rows = [{"file": "x", "predicted_class": "", "p_a": None, "p_b": None, "error": "broken"}]
    assert table_rows(rows, ["a", "b"]) == [["x", "", "", "", "broken"]]


# --- evaluation: calibration ---------------------------------------------------------------


def test_calibration_rows_and_missing_splits() -> None:
    metrics = fake_metrics(seed=2)
    rows = calibration_rows(metrics)
    cal = metrics["validation"]["calibration"]
    assert rows[0] == [
        "Validation split",
        metrics["validation"]["n"],
        round(cal["temperature"], 3),
        round(cal["ece_uncalibrated"], 3),
        round(cal["ece_calibrated"], 3),
    ]
    assert "no calibration results" not in calibration_intro(metrics, 1.5)
    metrics["validation"] = {k: v for k, v in metrics["validation"].items() if k != "calibration"}
    assert [r[0] for r in calibration_rows(metrics)] == ["Official test split"]
    assert "no calibration results for `validation`" in calibration_intro(metrics, 1.5)
    assert calibration_rows({"class_names": TEST_CLASSES}) == []


def test_reliability_plots_drawn_once() -> None:
    cal = fake_metrics(seed=3)["test"]["calibration"]
    plots = ReliabilityPlots([(cal, "Official test split")])
    images = plots.render()
    assert len(images) == 1 and images[0].plot.startswith("data:image/png;base64,")
    png = Image.open(io.BytesIO(base64.b64decode(images[0].plot.partition(",")[2])))
    assert png.width > 200 and np.asarray(png).std() > 0
    assert plots.render() == images
