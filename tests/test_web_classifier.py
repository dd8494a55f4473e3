"""lungdemo.web.classifier: the functions behind /classify, /explain, the notes, the heat-map picker and the report."""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr
import pytest

from lungdemo.gradcam import explain_source
from lungdemo.loading import load_model
from lungdemo.predictor import Predictor
from lungdemo.web.classifier import (
    CONFIDENCE_THRESHOLD,
    TOP_CLASS_CHOICE,
    Classifier,
    Slice,
    confidence_markdown,
    empty_map_markdown,
    notes_markdown,
    report_file_name,
    target_class_of,
)
from lungdemo.web.lifecycle import OutputFiles
from tests.conftest import TEST_CLASSES
from tests.web_helpers import EXAMPLES, FakeTimers


def test_classifier_words_decode_errors(model_folder: Path) -> None:
    classifier = Classifier(Predictor(load_model(model_folder)))
    with pytest.raises(gr.Error, match="the file is empty"):
        classifier.classify(b"")
    assert classifier.classify(None) is None
    assert classifier.notes(b"not an image") == ""


def test_refused_file_is_logged_with_size_and_reason_not_content(
    model_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    classifier = Classifier(Predictor(load_model(model_folder)))
    data = b"patient: Jane Roe, DOB 1970-01-01\n" * 10
    caplog.set_level(logging.INFO, logger="lungdemo")
    with pytest.raises(gr.Error) as err:
        classifier.classify(data)
    [record] = [r for r in caplog.records if r.name == "lungdemo.web.classifier"]
    assert record.getMessage() == f"rejected upload ({len(data)} bytes): {err.value.message}"
    assert "Jane Roe" not in caplog.text and "1970" not in caplog.text


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


def test_report_file_names() -> None:
    assert report_file_name("Scan 1 (left).PNG", "PDF") == "Scan_1_left_report.pdf"
    assert report_file_name("../../etc/passwd", "png") == "passwd_report.png"
    assert report_file_name("...", "pdf") == "slice_report.pdf"


def test_notes_markdown() -> None:
    assert notes_markdown(["a", "b"]) == "**How the file was read:**\n\n- a\n- b"
    assert notes_markdown([]) == "" and notes_markdown(None) == ""


def test_empty_map_line_reads_the_overlay(model_folder: Path) -> None:
    """The line appears exactly for the maps gradcam calls empty (this random model has both kinds)."""
    predictor = Predictor(load_model(model_folder))
    results = [explain_source(predictor, path, c) for path in EXAMPLES for c in TEST_CLASSES]
    assert {r.empty for r in results} == {True, False}
    for r in results:
        line = empty_map_markdown(r.overlay(), r.target_class)
        assert (f"heat map for {r.target_class} is empty" in line) == r.empty
    assert empty_map_markdown(None, "normal") == ""


def test_classifier_explain_and_report_words_errors(model_folder: Path) -> None:
    timers = FakeTimers()
    outputs = OutputFiles(timers=timers)
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
    assert timers.scheduled == 0 and list(outputs.root.iterdir()) == []  # failed reports leave nothing
