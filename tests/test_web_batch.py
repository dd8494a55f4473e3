"""The batch tab: ``/batch`` rows equal single predictions, the CSV, the limits (at their real
defaults too), and when the files go."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from lungdemo.loading import load_model
from lungdemo.predict import CHECK_COLUMNS, InputError, csv_columns
from lungdemo.predictor import Predictor
from lungdemo.web.batch import BATCH_CSV_NAME, BatchClassifier, batch_sources, batch_uploads, table_rows
from lungdemo.web.lifecycle import OutputFiles
from tests.bad_input_corpus import slice_gray
from tests.conftest import TEST_CLASSES, make_model_folder
from tests.limit_helpers import Member, count_work, tiny_members_zip, write_zip
from tests.web_helpers import (
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
NOT_AN_IMAGE = (
    "not an image file PIL can read (PNG, JPEG, TIFF, BMP, GIF, ...) "
    "nor a DICOM file (DICOM needs its 128-byte preamble and 'DICM' prefix)"
)
TRUNCATED = "the image data is broken or truncated (image file is truncated)"
# The README's "Limits" table: the batch tab takes 1,000 slices a request and a zip may expand to
# 256 MiB; the tab's zips hold at most 5,000 entries (lungdemo.web.batch). Written out, not
# imported, so that a changed default fails here.
PROMISED_SLICES = 1000
PROMISED_ZIP_BYTES = 256 * 1024 * 1024
ZIP_MEMBERS = 5000
FILE_LIMIT = "the limit is 20,971,520"  # DEFAULT_MAX_BYTES, 20 MiB


def too_many(count: int) -> str:
    return (
        f"{count:,} slices in one batch; the limit here is {PROMISED_SLICES:,}. "
        "Split them, or use the command line: python -m lungdemo.predict"
    )


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
    assert isinstance(sources[2][1], InputError)
    assert str(sources[2][1]) == "the uploaded file is no longer on the server: upload it again"
    assert batch_uploads(None) == []
    with pytest.raises(gr.Error) as info:
        batch_uploads([{"path": None, "url": "data:image/png;base64,AAAA"}])
    assert info.value.message == "the batch takes uploaded files, not inline data"


def test_batch_limit_and_table(model_folder: Path) -> None:
    batcher = BatchClassifier(
        Predictor(load_model(model_folder)), outputs=OutputFiles(timers=FakeTimers()), max_slices=2
    )
    files = [{"path": str(p), "orig_name": p.name} for p in EXAMPLES[:3]]
    with pytest.raises(gr.Error) as info:
        batcher.batch(files, progress=no_progress)
    assert info.value.message == (
        "3 slices in one batch; the limit here is 2. Split them, or use the command line: python -m lungdemo.predict"
    )
    table, csv_path = batcher.batch(files[:2], progress=no_progress)
    assert [row[0] for row in table] == [p.name for p in EXAMPLES[:2]] and Path(csv_path).is_file()
    assert batcher.batch(None, progress=no_progress) == ([], None)
    rows = [{"file": "x", "predicted_class": "", "p_a": None, "p_b": None, "error": "broken"}]
    assert table_rows(rows, ["a", "b"]) == [["x", "", "", "", "", "", "", "broken"]]  # no check: empty cells


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
    assert bad_row["predicted_class"] == "" and bad_row["error"] == TRUNCATED
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


# --- the limits at their real defaults -----------------------------------------------------------


@pytest.fixture(scope="module")
def default_batcher(tmp_path_factory: pytest.TempPathFactory) -> BatchClassifier:
    """The tab's classifier with every limit at its default, as the demo builds it."""
    folder = make_model_folder(tmp_path_factory.mktemp("defaults") / "model")
    return BatchClassifier(Predictor(load_model(folder)), outputs=OutputFiles(timers=FakeTimers()))


def uploaded(*paths: Path) -> list[dict[str, str]]:
    return [{"path": str(p), "orig_name": p.name} for p in paths]


def refused(name: str, error: str) -> list[list[str]]:
    return [[name, "", *([""] * len(TEST_CLASSES)), *([""] * len(CHECK_COLUMNS)), error]]


def test_batch_zip_member_limit_at_its_default(
    default_batcher: BatchClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """5,001 entries (5,000 one-byte text files and a slice) are refused unread; 5,000 are read."""
    work = count_work(monkeypatch)
    slice_png = EXAMPLES[0].read_bytes()
    over = tiny_members_zip(tmp_path / "over.zip", ZIP_MEMBERS, extra={"slice.png": slice_png})
    table, _ = default_batcher.batch(uploaded(over), progress=no_progress)
    assert table == refused("over.zip", "zip has 5,001 entries; the limit is 5,000")
    assert work == Counter()  # nothing decoded, no forward pass

    at = tiny_members_zip(tmp_path / "at.zip", ZIP_MEMBERS - 1, extra={"slice.png": slice_png})
    table, _ = default_batcher.batch(uploaded(at), progress=no_progress)
    assert [(row[0], row[-1]) for row in table] == [("at.zip!slice.png", "")]
    assert work == Counter(decoded=1, forward=1, predicted=1)


def test_batch_zip_byte_limit_at_its_default(
    default_batcher: BatchClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Zeros and a slice declaring 256 MiB of images (a quarter megabyte on disk): one byte more is
    refused from the declared sizes; exactly the limit is read, the zeros refused as over 20 MiB."""
    work = count_work(monkeypatch)
    slice_png = EXAMPLES[1].read_bytes()
    zeros = PROMISED_ZIP_BYTES - len(slice_png)
    at_limit = [Member("zeros.png", zeros=zeros), Member("slice.png", slice_png)]
    over = write_zip(tmp_path / "over.zip", [*at_limit, Member("one.png", b"x")])
    assert over.stat().st_size < 1024 * 1024
    table, _ = default_batcher.batch(uploaded(over), progress=no_progress)
    assert table == refused("over.zip", "zip would expand to 268,435,457 bytes of images; the limit is 268,435,456")
    assert work == Counter()

    at = write_zip(tmp_path / "at.zip", at_limit)
    table, _ = default_batcher.batch(uploaded(at), progress=no_progress)
    assert [(row[0], row[-1]) for row in table] == [
        ("at.zip!zeros.png", f"{zeros:,} bytes; {FILE_LIMIT}"),
        ("at.zip!slice.png", ""),
    ]
    assert work == Counter(decoded=1, forward=1, predicted=1)


def test_batch_slice_limit_at_its_default(
    default_batcher: BatchClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slices are counted over all the uploads, zip members one by one: a slice file and a zip of
    1,000 one-byte '.png' members are refused before anything is decoded; with 999 members, all
    1,000 are tried (the one-byte ones get their error rows) and the slice is classified."""
    work = count_work(monkeypatch)
    over = tiny_members_zip(tmp_path / "over.zip", PROMISED_SLICES, suffix=".png")
    with pytest.raises(gr.Error) as info:
        default_batcher.batch(uploaded(EXAMPLES[0], over), progress=no_progress)
    assert info.value.message == too_many(1001)
    assert work == Counter()

    at = tiny_members_zip(tmp_path / "at.zip", PROMISED_SLICES - 1, suffix=".png")
    table, csv_path = default_batcher.batch(uploaded(EXAMPLES[0], at), progress=no_progress)
    assert len(table) == PROMISED_SLICES and Path(csv_path).is_file()
    assert (table[0][0], table[0][-1]) == (EXAMPLES[0].name, "")
    assert [row[0] for row in table[1:]] == [f"at.zip!m{i:05d}.png" for i in range(PROMISED_SLICES - 1)]
    assert {row[-1] for row in table[1:]} == {NOT_AN_IMAGE}
    assert work == Counter(decoded=PROMISED_SLICES, forward=1, predicted=1)


def test_batch_endpoint_refuses_too_many_slices(client: Client, tmp_path: Path) -> None:
    """The served tab (built by the demo, limits at their defaults) answers with the one-line message."""
    over = tiny_members_zip(tmp_path / "over.zip", PROMISED_SLICES + 1, suffix=".png")
    with pytest.raises(AppError, match=f"^{re.escape(too_many(1001))}$"):
        client.predict([handle_file(str(over))], api_name="/batch")
