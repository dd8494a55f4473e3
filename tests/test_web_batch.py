"""The batch tab: ``/batch`` rows equal single predictions, the CSV, the limits, and when the files go."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import httpx
import pytest
from gradio_client import Client, handle_file

from lungdemo.loading import load_model
from lungdemo.predict import InputError, csv_columns
from lungdemo.predictor import Predictor
from lungdemo.web.batch import BATCH_CSV_NAME, BatchClassifier, batch_sources, batch_uploads, table_rows
from lungdemo.web.lifecycle import OutputFiles
from tests.bad_input_corpus import slice_gray
from tests.conftest import TEST_CLASSES, make_model_folder
from tests.web_helpers import (
    BAD,
    EXAMPLES,
    PROMISED_OUTPUT_GRACE_S,
    PROMISED_UPLOAD_GRACE_S,
    FakeTimers,
    Server,
    assert_same,
    components_by_elem_id,
    file_data,
    make_zip,
    png_bytes_of,
    probabilities,
    read_events,
    serve,
    upload,
    write_bad,
)

JUST = 0.01
TIMERS = FakeTimers()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(make_model_folder(tmp_path_factory.mktemp("batch") / "model", seed=3), timers=TIMERS) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Server) -> Client:
    return Client(server.url, verbose=False)


def no_progress(*_args: object, **_kwargs: object) -> None:
    return None


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_batch_sources_from_uploads(tmp_path: Path) -> None:
    archive = tmp_path / "upload.zip"
    archive.write_bytes(_zip_bytes({"a/one.png": EXAMPLES[0].read_bytes(), "a/notes.txt": b"x"}))
    uploads = batch_uploads(
        [
            {"path": str(EXAMPLES[1]), "orig_name": "second.png"},
            {"path": str(archive), "orig_name": "series.zip"},
            {"path": str(tmp_path / "gone.png"), "orig_name": "gone.png"},
        ]
    )
    sources = batch_sources(uploads)
    assert [name for name, _ in sources] == ["second.png", "series.zip!a/one.png", "gone.png"]
    assert sources[0][1] == EXAMPLES[1]
    assert sources[1][1] == EXAMPLES[0].read_bytes()
    assert isinstance(sources[2][1], InputError) and "no longer on the server" in str(sources[2][1])
    assert batch_uploads(None) == []
    with pytest.raises(gr.Error, match="not inline data"):
        batch_uploads([{"path": None, "url": "data:image/png;base64,AAAA"}])


def test_batch_limit_and_table(model_folder: Path) -> None:
    batcher = BatchClassifier(
        Predictor(load_model(model_folder)), outputs=OutputFiles(timers=FakeTimers()), max_slices=2
    )
    files = [{"path": str(p), "orig_name": p.name} for p in EXAMPLES[:3]]
    with pytest.raises(gr.Error, match="3 slices in one batch; the limit here is 2"):
        batcher.batch(files, progress=no_progress)
    table, csv_path = batcher.batch(files[:2], progress=no_progress)
    assert [row[0] for row in table] == [p.name for p in EXAMPLES[:2]] and Path(csv_path).is_file()
    assert batcher.batch(None, progress=no_progress) == ([], None)
    rows = [{"file": "x", "predicted_class": "", "p_a": None, "p_b": None, "error": "broken"}]
    assert table_rows(rows, ["a", "b"]) == [["x", "", "", "", "broken"]]


def test_batch_endpoint_rows_equal_single_predictions(client: Client, server: Server, tmp_path: Path) -> None:
    """/batch on three example slices, a zip of two more and a broken file: one row per slice in
    input order, probabilities equal to /classify's for the same file, and a CSV with the same values."""
    zipped = make_zip(tmp_path / "more.zip", EXAMPLES[3:5])
    broken = write_bad("truncated", tmp_path)
    inputs = [*EXAMPLES[:3], zipped, broken]
    table, csv_path = client.predict([handle_file(str(p)) for p in inputs], api_name="/batch")

    columns = csv_columns(TEST_CLASSES)
    assert table["headers"] == columns
    rows = [dict(zip(columns, row, strict=True)) for row in table["data"]]
    names = [p.name for p in EXAMPLES[:3]] + [f"more.zip!slices/{p.name}" for p in EXAMPLES[3:5]] + [broken.name]
    assert [r["file"] for r in rows] == names
    for row, path in zip(rows[:5], EXAMPLES[:5], strict=True):
        single = probabilities(client.predict(handle_file(str(path)), api_name="/classify"))
        assert_same({c: row[f"p_{c}"] for c in TEST_CLASSES}, single)
        assert row["predicted_class"] == max(single, key=single.__getitem__)
        assert row["error"] == ""
    bad_row = rows[-1]
    assert bad_row["predicted_class"] == "" and BAD["truncated"] in bad_row["error"]
    assert all(bad_row[f"p_{c}"] in ("", None) for c in TEST_CLASSES)

    assert Path(csv_path).name == BATCH_CSV_NAME == "lungdemo_batch.csv"
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == columns
        parsed = list(reader)
    assert [r["file"] for r in parsed] == names
    for got, row in zip(parsed, rows, strict=True):
        assert got["predicted_class"] == row["predicted_class"] and got["error"] == row["error"]
        for c in TEST_CLASSES:
            value = row[f"p_{c}"]
            assert (float(got[f"p_{c}"]) == value) if value not in ("", None) else got[f"p_{c}"] == ""

    # the CSV's own temporary folder goes a minute later; what was served is Gradio's cached copy
    written = list(server.state.outputs.root.glob(f"*/{BATCH_CSV_NAME}"))
    assert written and Path(csv_path) not in written
    TIMERS.advance(PROMISED_OUTPUT_GRACE_S - JUST)
    assert all(p.exists() for p in written)
    TIMERS.advance(2 * JUST)
    assert not any(p.exists() or p.parent.exists() for p in written)
    assert Path(csv_path).is_file()


def test_batch_endpoint_deletes_its_uploads_ten_seconds_after(server: Server) -> None:
    data = png_bytes_of(slice_gray().rotate(7))
    with httpx.Client(base_url=server.url, timeout=60) as http:
        path = upload(http, data, "batch_upload.png").json()[0]
        call = http.post("/gradio_api/call/batch", json={"data": [[file_data(path)]]})
        event, _ = read_events(http, "batch", call.json()["event_id"])
    assert event == "complete"
    TIMERS.advance(PROMISED_UPLOAD_GRACE_S - JUST)
    assert Path(path).exists()
    TIMERS.advance(2 * JUST)
    assert not Path(path).exists()


def test_batch_tab_content(server: Server) -> None:
    comps = components_by_elem_id(server.url)
    assert comps["batch-input"]["props"]["file_count"] == "multiple"
    assert ".zip" in comps["batch-input"]["props"]["file_types"]
    assert comps["batch-table"]["props"]["headers"] == csv_columns(TEST_CLASSES)
