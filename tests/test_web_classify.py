"""The classify tab of a running app: ``/classify`` and ``/explain`` over the API, the page's
follow-ups, the session's slice and its report, and when the uploads go.

Every answer is compared with what the evaluation code computes on the same file, or with the
message the preprocessing code words for a bad file. Deletions run on a fake clock.
"""

from __future__ import annotations

import datetime
import json
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio as gr
import gradio.state_holder
import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from lungdemo import DISCLAIMER
from lungdemo.decode import DEFAULT_MAX_BYTES
from lungdemo.gradcam import HEATMAP_NOTE, explain_source
from lungdemo.loading import load_model
from lungdemo.predictor import Predictor
from lungdemo.preprocessing import canonical_tensor, normalize
from lungdemo.web.classifier import TOP_CLASS_CHOICE, Slice
from tests.bad_input_corpus import slice_gray
from tests.conftest import TEST_CLASSES, make_model_folder
from tests.web_helpers import (
    BAD,
    EXAMPLES,
    PROMISED_OUTPUT_GRACE_S,
    PROMISED_SLICE_TTL_S,
    PROMISED_UPLOAD_GRACE_S,
    TOL,
    UNUSUAL,
    FakeTimers,
    Server,
    assert_same,
    classify_http,
    components_by_elem_id,
    file_data,
    page_config,
    pdf_info,
    png_bytes_of,
    probabilities,
    read_events,
    serve,
    write_bad,
    write_unusual,
)

JUST = 0.01
TIMERS = FakeTimers()
"""The clock of this module's app: uploads and reports go only when a test moves it on."""


@pytest.fixture(scope="module")
def app_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("app") / "model", seed=3)


@pytest.fixture(scope="module")
def server(app_folder: Path) -> Iterator[Server]:
    with serve(app_folder, timers=TIMERS) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Server) -> Client:
    return Client(server.url, verbose=False)


@pytest.fixture(scope="module")
def predictor(app_folder: Path) -> Predictor:
    return Predictor(load_model(app_folder))


def direct_probabilities(predictor: Predictor, path: Path) -> dict[str, float]:
    """Decode, frame, normalise and the model, without the Predictor: the evaluation path spelled out."""
    model, cfg = predictor.model, predictor.model.preprocess_config
    with torch.inference_mode():
        logits = model(normalize(canonical_tensor(path, cfg), cfg).unsqueeze(0))
        probs = torch.softmax(logits / model.temperature, dim=1)[0].tolist()
    return dict(zip(model.class_names, probs, strict=True))


# --- classify ------------------------------------------------------------------------------


def test_examples_exist() -> None:
    assert 4 <= len(EXAMPLES) <= 6
    stems = {p.stem.rsplit("_", 1)[0] for p in EXAMPLES}
    assert stems == {"adenocarcinoma", "large_cell_carcinoma", "normal", "squamous_cell_carcinoma"}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_classify_example_equals_evaluation_path(client: Client, predictor: Predictor, example: Path) -> None:
    result = client.predict(handle_file(str(example)), api_name="/classify")
    api = probabilities(result)
    expected = predictor.predict(example).probabilities
    assert_same(api, expected)
    assert_same(api, direct_probabilities(predictor, example))
    assert result["label"] == max(expected, key=expected.__getitem__)
    assert sum(api.values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.integration
def test_classify_real_jpeg_named_png(client: Client, predictor: Predictor, data_dir: Path) -> None:
    """A file of the dataset that is a JPEG under a .png name: decoded by content."""
    path = data_dir / "train" / "normal" / "n7.png"
    assert path.read_bytes()[:2] == b"\xff\xd8"
    api = probabilities(client.predict(handle_file(str(path)), api_name="/classify"))
    assert_same(api, predictor.predict(path).probabilities)


@pytest.mark.parametrize("kind", UNUSUAL)
def test_unusual_valid_images_are_answered(client: Client, predictor: Predictor, tmp_path: Path, kind: str) -> None:
    path = write_unusual(kind, tmp_path)
    api = probabilities(client.predict(handle_file(str(path)), api_name="/classify"))
    assert_same(api, predictor.predict(path).probabilities)
    assert_same(api, direct_probabilities(predictor, path))


@pytest.mark.parametrize(
    ("kind", "note"),
    [("animated", "multi-frame file (3 frames)"), ("16bit", "converted from mode I;16"), ("cmyk", "mode CMYK")],
)
def test_decode_notes_for_the_page(server: Server, tmp_path: Path, kind: str, note: str) -> None:
    """The page-only follow-up event shows what decoding did to the file."""
    assert note in server.state.classifier.notes(str(write_unusual(kind, tmp_path)))


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_upload_gives_message_and_app_keeps_serving(
    client: Client, predictor: Predictor, tmp_path: Path, kind: str
) -> None:
    path = write_bad(kind, tmp_path)
    with pytest.raises(AppError) as info:
        client.predict(handle_file(str(path)), api_name="/classify")
    assert BAD[kind] in str(info.value)
    assert "verbose error reporting" not in str(info.value)
    good = EXAMPLES[-1]
    assert_same(
        probabilities(client.predict(handle_file(str(good)), api_name="/classify")),
        predictor.predict(good).probabilities,
    )


def test_bad_upload_message_over_plain_http(server: Server) -> None:
    reply = classify_http(server.url, b"GIF89a and then nothing", "broken.gif")
    assert reply.event == "error"
    assert BAD["text_renamed_png"] in reply.payload["error"]


def test_paths_not_uploaded_are_refused_and_kept(server: Server) -> None:
    """An API call naming a server file that was never uploaded is refused before the app runs."""
    weights = server.folder / "model.safetensors"
    with httpx.Client(base_url=server.url, timeout=60) as http:
        call = http.post("/gradio_api/call/classify", json={"data": [file_data(str(weights))]})
        event, _ = read_events(http, "classify", call.json()["event_id"])
    assert event == "error"
    TIMERS.advance(3600)
    assert weights.is_file()


def test_upload_size_limit(server: Server, client: Client, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (DEFAULT_MAX_BYTES + 1024))
    with httpx.Client(base_url=server.url, timeout=60) as http:
        response = http.post("/gradio_api/upload", files={"files": ("big.png", big.read_bytes(), "image/png")})
    assert response.status_code == 413
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict(handle_file(str(big)), api_name="/classify")
    assert client.predict(handle_file(str(EXAMPLES[0])), api_name="/classify")["label"]


def test_plain_http_api_returns_label_only(server: Server, predictor: Predictor) -> None:
    reply = classify_http(server.url, EXAMPLES[1].read_bytes())
    assert reply.event == "complete"
    assert len(reply.payload) == 1
    assert_same(probabilities(reply.payload[0]), predictor.predict(EXAMPLES[1]).probabilities)


def test_concurrent_clients_same_file(server: Server, predictor: Predictor, tmp_path: Path) -> None:
    """8 clients sending the same file share Gradio's upload path; all must be answered."""
    data = write_unusual("rgba", tmp_path).read_bytes()
    expected = predictor.predict(data).probabilities
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: classify_http(server.url, data, "same.png"), range(16)))
    assert [r.event for r in replies] == ["complete"] * 16
    for reply in replies:
        assert_same(probabilities(reply.payload[0]), expected)


# --- when the uploads go ---------------------------------------------------------------------


def test_uploads_are_deleted_ten_seconds_after_use(server: Server) -> None:
    data = png_bytes_of(slice_gray().rotate(5))
    reply = classify_http(server.url, data, "to_delete.png")
    assert reply.event == "complete"
    TIMERS.advance(PROMISED_UPLOAD_GRACE_S - JUST)
    assert Path(reply.path).exists()
    TIMERS.advance(2 * JUST)
    assert not Path(reply.path).exists()
    # the same file again is simply uploaded again
    again = classify_http(server.url, data, "to_delete.png")
    assert again.event == "complete" and again.path == reply.path


def test_example_files_are_kept(server: Server) -> None:
    """A client upload identical to an example lands on the example's cached path: keep it."""
    reply = classify_http(server.url, EXAMPLES[0].read_bytes(), EXAMPLES[0].name)
    assert reply.event == "complete"
    TIMERS.advance(3600)
    assert Path(reply.path).exists()


class _Clock(datetime.datetime):
    """``datetime.datetime`` whose ``now()`` moves only when a test says so."""

    offset = datetime.timedelta(0)

    @classmethod
    def now(cls, tz: datetime.tzinfo | None = None) -> _Clock:
        return datetime.datetime(2030, 1, 1) + cls.offset


def test_a_tab_keeps_its_slice_for_an_hour(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gradio's own state expiry, on a fake clock: the slice is there just before an hour, gone just after."""
    monkeypatch.setattr(_Clock, "offset", datetime.timedelta(0))
    monkeypatch.setattr(gradio.state_holder, "datetime", types.SimpleNamespace(datetime=_Clock))
    [key] = [k for k, b in server.demo.blocks.items() if isinstance(b, gr.State)]
    holder = server.demo.state_holder
    session = holder["ttl-test-session"]
    session[key] = server.state.classifier.remember(EXAMPLES[0].read_bytes())
    _Clock.offset = datetime.timedelta(seconds=PROMISED_SLICE_TTL_S - JUST)
    holder.delete_all_expired_state()
    assert key in session and session[key].data == EXAMPLES[0].read_bytes()
    _Clock.offset = datetime.timedelta(seconds=PROMISED_SLICE_TTL_S + JUST)
    holder.delete_all_expired_state()
    assert key not in session


# --- explain and report ----------------------------------------------------------------------


def test_explain_endpoint_gives_the_overlay_for_each_class(client: Client, predictor: Predictor) -> None:
    """/explain: an image of the model's input size per class, different maps for different classes,
    pixel for pixel the overlay lungdemo.gradcam draws for the same file."""
    example = EXAMPLES[0]
    size = predictor.cfg.image_size
    top = client.predict(handle_file(str(example)), api_name="/classify")["label"]
    overlays = {}
    for choice in [TOP_CLASS_CHOICE, *TEST_CLASSES]:
        path, explained = client.predict(handle_file(str(example)), choice, api_name="/explain")
        assert explained == (top if choice == TOP_CLASS_CHOICE else choice)
        with Image.open(path) as img:
            assert img.format == "PNG" and img.mode == "RGB" and img.size == (size, size)
            overlays[choice] = np.asarray(img)
        expected = explain_source(predictor, example, explained).overlay()
        assert np.array_equal(overlays[choice], np.asarray(expected)), choice
    assert np.array_equal(overlays[TOP_CLASS_CHOICE], overlays[top])
    for i, a in enumerate(TEST_CLASSES):
        for b in TEST_CLASSES[i + 1 :]:
            assert not np.array_equal(overlays[a], overlays[b]), (a, b)


def test_explain_endpoint_words_its_errors(client: Client, tmp_path: Path) -> None:
    with pytest.raises(AppError, match="unknown class 'melanoma'"):
        client.predict(handle_file(str(EXAMPLES[0])), "melanoma", api_name="/explain")
    with pytest.raises(AppError) as info:
        client.predict(handle_file(str(write_bad("empty", tmp_path))), TOP_CLASS_CHOICE, api_name="/explain")
    assert BAD["empty"] in str(info.value)


def test_report_of_the_session_slice(server: Server, client: Client, tmp_path: Path) -> None:
    """The report button's function: the session's slice -> a PDF or PNG named after the upload, gone a minute later."""
    classifier = server.state.classifier
    source = tmp_path / "scan 7 (copy).png"
    source.write_bytes(EXAMPLES[1].read_bytes())
    current = classifier.remember({"path": str(source), "orig_name": source.name, "meta": {"_type": "gradio.FileData"}})
    assert current == Slice(source.read_bytes(), source.name)
    api = client.predict(handle_file(str(source)), api_name="/classify")

    pdf = Path(classifier.report(current, TOP_CLASS_CHOICE, "PDF"))
    assert pdf.name == "scan_7_copy_report.pdf"
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    keywords = pdf_info(data)["Keywords"]
    assert f"predicted_class={api['label']}" in keywords
    assert f"heatmap_class={api['label']}" in keywords
    assert f"file={source.name}" in keywords

    png = Path(classifier.report(current, "normal", "PNG"))
    assert png.name == "scan_7_copy_report.png"
    with Image.open(png) as img:
        text = dict(img.text)
    assert text["file"] == source.name and text["heatmap_class"] == "normal"
    assert text["predicted_class"] == api["label"]
    assert json.loads(text["probabilities"]) == pytest.approx(probabilities(api), abs=TOL)

    TIMERS.advance(PROMISED_OUTPUT_GRACE_S - JUST)
    assert pdf.exists() and png.exists()
    TIMERS.advance(2 * JUST)
    assert not pdf.exists() and not pdf.parent.exists() and not png.exists()


def test_report_without_a_slice_says_so(server: Server) -> None:
    with pytest.raises(gr.Error, match="classify a slice first"):
        server.state.classifier.report(None, TOP_CLASS_CHOICE, "PDF")


# --- the tab on the page -------------------------------------------------------------------------


def test_classify_tab_content(server: Server) -> None:
    comps = components_by_elem_id(server.url)
    assert DISCLAIMER in comps["disclaimer"]["props"]["value"]
    assert comps["slice-input"]["type"] == "image"
    assert comps["slice-input"]["props"]["sources"] == ["upload", "clipboard"]
    assert comps["file-input"]["type"] == "file"
    assert ".dcm" in comps["file-input"]["props"]["file_types"]
    assert comps["cam-class"]["props"]["choices"] == [[c, c] for c in [TOP_CLASS_CHOICE, *TEST_CLASSES]]
    assert HEATMAP_NOTE in comps["heatmap-note"]["props"]["value"]
    datasets = [c for c in page_config(server.url)["components"] if c["type"] == "dataset"]
    assert len(datasets) == 1 and len(datasets[0]["props"]["samples"]) == len(EXAMPLES)
