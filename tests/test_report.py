"""The one-page report: PNG and PDF files open and carry the expected fields."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from PIL import Image

from lungdemo import DISCLAIMER
from lungdemo.decode import ImageDecodeError
from lungdemo.gradcam import HEATMAP_NOTE
from lungdemo.loading import LoadedModel, ModelRef, load_model
from lungdemo.predictor import Predictor
from lungdemo.report import PAGE_SIZE_IN, PNG_DPI, make_report
from tests.conftest import TEST_CLASSES, make_model_folder
from tests.web_helpers import pdf_info

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.png"))
WHEN = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=1)))


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    return Predictor.from_ref(make_model_folder(tmp_path_factory.mktemp("m") / "model", temperature=1.5))


def test_png_report_opens_and_holds_the_fields(predictor: Predictor, tmp_path: Path) -> None:
    source = EXAMPLES[0]
    out = make_report(predictor, source, tmp_path / "report.png", created=WHEN)
    assert out == tmp_path / "report.png"
    assert [p.name for p in tmp_path.iterdir()] == ["report.png"]  # no temporary file left
    single = predictor.predict(source)
    with Image.open(out) as img:
        img.load()
        assert img.format == "PNG" and img.mode == "RGB"
        assert img.size == (int(PAGE_SIZE_IN[0] * PNG_DPI), int(PAGE_SIZE_IN[1] * PNG_DPI))  # A4 at PNG_DPI
        text = dict(img.text)
    assert text["predicted_class"] == single.top_class
    assert json.loads(text["probabilities"]) == single.probabilities  # exact: the same code path
    assert list(json.loads(text["probabilities"])) == TEST_CLASSES
    assert text["heatmap_class"] == single.top_class
    assert text["model"] == predictor.loaded.description
    assert text["file"] == source.name
    assert text["created"] == "2026-03-04T05:06:07+01:00"
    assert json.loads(text["temperature"]) == 1.5
    assert text["disclaimer"] == DISCLAIMER
    assert text["heatmap_note"] == HEATMAP_NOTE


def test_pdf_report_opens_and_holds_the_fields(predictor: Predictor, tmp_path: Path) -> None:
    source = EXAMPLES[2]
    out = make_report(predictor, source, tmp_path / "report.pdf", fmt="pdf", target_class="normal", created=WHEN)
    data = out.read_bytes()
    assert data.startswith(b"%PDF-1.") and data.rstrip().endswith(b"%%EOF")
    assert len(re.findall(rb"/Type\s*/Page\b(?!s)", data)) == 1  # one page
    info = pdf_info(data)
    single = predictor.predict(source)
    assert info["Title"] == f"lungdemo report: {source.name}"
    assert DISCLAIMER in info["Subject"] and HEATMAP_NOTE in info["Subject"]
    keywords = dict(part.split("=", 1) for part in info["Keywords"].split("; "))
    assert keywords["predicted_class"] == single.top_class
    assert json.loads(keywords["probabilities"]) == single.probabilities
    assert keywords["heatmap_class"] == "normal"
    assert keywords["model"] == predictor.loaded.description
    assert keywords["file"] == source.name
    assert keywords["created"] == "2026-03-04T05:06:07+01:00"


def test_hub_models_are_named_by_repo_and_revision(model_folder: Path, tmp_path: Path) -> None:
    local = load_model(model_folder)
    sha = "0123456789abcdef0123456789abcdef01234567"
    hub = LoadedModel(
        model=local.model,
        folder=local.folder,
        ref=ModelRef(text="someone/lung-ct@v1", repo_id="someone/lung-ct", revision="v1"),
        revision=sha,
    )
    out = make_report(Predictor(hub), EXAMPLES[1].read_bytes(), tmp_path / "r.png", file_name="scan 7.png")
    with Image.open(out) as img:
        assert img.text["model"] == f"someone/lung-ct@{sha}"
        assert img.text["revision"] == sha
        assert img.text["file"] == "scan 7.png"


def test_bytes_without_a_name_and_default_time(predictor: Predictor, tmp_path: Path) -> None:
    before = datetime.now().astimezone().replace(microsecond=0)
    out = make_report(predictor, EXAMPLES[3].read_bytes(), tmp_path / "sub" / "r.png")
    with Image.open(out) as img:
        assert img.text["file"] == "upload"
        created = datetime.fromisoformat(img.text["created"])
    assert created.tzinfo is not None and created >= before


def test_errors_leave_no_file(predictor: Predictor, tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError):
        make_report(predictor, b"not an image", tmp_path / "r.png")
    with pytest.raises(ImageDecodeError, match="cannot read"):
        make_report(predictor, tmp_path / "missing.png", tmp_path / "r.png")
    with pytest.raises(ValueError, match="unknown class"):
        make_report(predictor, EXAMPLES[0], tmp_path / "r.png", target_class="cat")
    with pytest.raises(ValueError, match="format"):
        make_report(predictor, EXAMPLES[0], tmp_path / "r.svg", fmt="svg")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
