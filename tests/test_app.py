"""The running web app: launched on 127.0.0.1 and called through its API (``/classify``,
``/explain``, ``/batch``).

One server per module (launching takes seconds). Every check compares what a client gets
with what the evaluation code computes on the same file, or with the message the
preprocessing code words for a bad file.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

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
from lungdemo.predict import csv_columns
from lungdemo.predictor import Predictor
from lungdemo.preprocessing import canonical_tensor, normalize
from lungdemo.webapp import EXAMPLES_DIR, TOP_CLASS_CHOICE, Slice, build_demo
from tests.conftest import TEST_CLASSES, make_model_folder, running_app
from tests.test_report import pdf_info

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.png"))
TOL = 1e-6


# --- fixtures ---------------------------------------------------------------------------


@dataclass
class Server:
    demo: object
    url: str
    folder: Path


@pytest.fixture(scope="module")
def app_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("app") / "model", seed=3)


@pytest.fixture(scope="module")
def server(app_folder: Path) -> Iterator[Server]:
    with running_app(app_folder) as demo:
        yield Server(demo=demo, url=demo.local_url, folder=app_folder)


@pytest.fixture(scope="module")
def client(server: Server) -> Client:
    return Client(server.url, verbose=False)


@pytest.fixture(scope="module")
def predictor(app_folder: Path) -> Predictor:
    return Predictor(load_model(app_folder))


def probabilities(result: dict) -> dict[str, float]:
    """gr.Label's payload -> {class: probability}."""
    return {c["label"]: c["confidence"] for c in result["confidences"]}


def assert_same(api: dict[str, float], expected: dict[str, float]) -> None:
    assert set(api) == set(expected)
    for name, p in expected.items():
        assert api[name] == pytest.approx(p, abs=TOL), name


def direct_probabilities(predictor: Predictor, path: Path) -> dict[str, float]:
    """Decode, frame, normalise and the model, without the Predictor: the evaluation path spelled out."""
    model, cfg = predictor.model, predictor.model.preprocess_config
    with torch.inference_mode():
        logits = model(normalize(canonical_tensor(path, cfg), cfg).unsqueeze(0))
        probs = torch.softmax(logits / model.temperature, dim=1)[0].tolist()
    return dict(zip(model.class_names, probs, strict=True))


def classify_http(url: str, data: bytes, name: str = "slice.png") -> tuple[str, dict, str]:
    """Upload + call + event stream over Gradio's plain HTTP API; returns (event, payload, path)."""
    with httpx.Client(base_url=url, timeout=60) as http:
        up = http.post("/gradio_api/upload", files={"files": (name, data, "application/octet-stream")})
        up.raise_for_status()
        path = up.json()[0]
        call = http.post(
            "/gradio_api/call/classify", json={"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}]}
        )
        call.raise_for_status()
        text = http.get(f"/gradio_api/call/classify/{call.json()['event_id']}").text
    event, payload = "", None
    for line in text.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and event in ("complete", "error"):
            payload = json.loads(line.split(":", 1)[1])
    return event, payload, path


# --- files of every kind -----------------------------------------------------------------


def slice_gray() -> Image.Image:
    return Image.open(EXAMPLES[0]).convert("L")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: a decompression bomb stand-in of a few bytes."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def write_unusual(kind: str, folder: Path) -> Path:
    """Valid but unusual image files made from a real slice."""
    gray = slice_gray()
    path = folder / f"{kind}.png"
    if kind == "16bit":
        arr = np.asarray(gray, dtype=np.uint16) * 257
        Image.fromarray(arr).save(path)  # mode I;16
    elif kind == "cmyk":
        path = folder / "cmyk.jpg"
        gray.convert("RGB").convert("CMYK").save(path, "JPEG", quality=95)
    elif kind == "palette":
        gray.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(path)
    elif kind == "rgba":
        rgba = gray.convert("RGBA")
        alpha = Image.new("L", gray.size, 255)
        alpha.paste(0, (0, 0, gray.width // 4, gray.height))
        rgba.putalpha(alpha)
        rgba.save(path)
    elif kind == "animated":
        path = folder / "animated.gif"
        frames = [gray.convert("P"), gray.rotate(10).convert("P"), gray.rotate(20).convert("P")]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    elif kind == "jpeg_named_png":
        gray.save(path, "JPEG", quality=90)
    elif kind == "float_tiff":
        path = folder / "float.tif"
        Image.fromarray(np.asarray(gray, dtype=np.float32) / 255.0).save(path)  # mode F
    else:
        raise ValueError(kind)
    return path


UNUSUAL = ["16bit", "cmyk", "palette", "rgba", "animated", "jpeg_named_png", "float_tiff"]


def write_bad(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.png"
    if kind == "text_renamed_png":
        path.write_text("patient notes, definitely not pixels\n" * 20)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = EXAMPLES[0].read_bytes()
        path.write_bytes(data[: len(data) * 6 // 10])
    elif kind == "huge_dimensions":
        path.write_bytes(png_header_only(8000, 8000))
    elif kind == "decompression_bomb":
        path.write_bytes(png_header_only(60000, 60000))
    elif kind == "random_bytes":
        path = folder / "random.jpg"
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    else:
        raise ValueError(kind)
    return path


BAD = {
    "text_renamed_png": "not an image file PIL can read",
    "empty": "the file is empty (0 bytes)",
    "truncated": "broken or truncated",
    "huge_dimensions": "8000x8000 = 64,000,000 pixels; the limit is 40,000,000",
    "decompression_bomb": "image too large",
    "random_bytes": "not an image file PIL can read",
}


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
def test_unusual_valid_images_are_answered(
    client: Client, predictor: Predictor, server: Server, tmp_path: Path, kind: str
) -> None:
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
    markdown = server.demo.lungdemo_classifier.notes(str(write_unusual(kind, tmp_path)))
    assert note in markdown


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
    event, payload, _ = classify_http(server.url, b"GIF89a and then nothing", "broken.gif")
    assert event == "error"
    assert BAD["text_renamed_png"] in payload["error"]


def test_paths_not_uploaded_are_refused(server: Server) -> None:
    """An API call naming a server file that was never uploaded is refused before the app runs."""
    weights = server.folder / "model.safetensors"
    with httpx.Client(base_url=server.url, timeout=60) as http:
        file_data = {"path": str(weights), "meta": {"_type": "gradio.FileData"}}
        call = http.post("/gradio_api/call/classify", json={"data": [file_data]})
        text = http.get(f"/gradio_api/call/classify/{call.json()['event_id']}").text
    assert "event: error" in text
    assert str(weights) not in server.demo.lungdemo_classifier.janitor.pending


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
    event, payload, _ = classify_http(server.url, EXAMPLES[1].read_bytes())
    assert event == "complete"
    assert len(payload) == 1
    assert_same(probabilities(payload[0]), predictor.predict(EXAMPLES[1]).probabilities)


def test_concurrent_clients_same_file(server: Server, predictor: Predictor, tmp_path: Path) -> None:
    """8 clients sending the same file share Gradio's upload path; all must be answered."""
    data = write_unusual("rgba", tmp_path).read_bytes()
    expected = predictor.predict(data).probabilities
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: classify_http(server.url, data, "same.png"), range(16)))
    assert [event for event, _, _ in results] == ["complete"] * 16
    for _, payload, _ in results:
        assert_same(probabilities(payload[0]), expected)


def test_uploads_are_deleted_after_use(server: Server) -> None:
    janitor = server.demo.lungdemo_classifier.janitor
    data = png_bytes_of(slice_gray().rotate(5))
    event, _, path = classify_http(server.url, data, "to_delete.png")
    assert event == "complete"
    assert path in janitor.pending
    janitor.flush()
    assert not Path(path).exists()
    # the same file again is simply uploaded again
    event, _, path2 = classify_http(server.url, data, "to_delete.png")
    assert event == "complete" and path2 == path


def test_example_files_are_kept(server: Server, client: Client) -> None:
    """A client upload identical to an example lands on the example's cached path: keep it."""
    _, _, path = classify_http(server.url, EXAMPLES[0].read_bytes(), EXAMPLES[0].name)
    server.demo.lungdemo_classifier.janitor.flush()
    assert Path(path).exists()


def png_bytes_of(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


# --- explain, batch, report ------------------------------------------------------------------


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


def make_zip(path: Path, members: list[Path]) -> Path:
    """A zip with image members in a folder, plus entries the batch must skip."""
    with zipfile.ZipFile(path, "w") as zf:
        for member in members:
            zf.write(member, f"slices/{member.name}")
        zf.writestr("slices/README.txt", "not a slice")
        zf.writestr("__MACOSX/slices/._x.png", b"resource fork")
    return path


def test_batch_endpoint_rows_equal_single_predictions(
    client: Client, server: Server, predictor: Predictor, tmp_path: Path
) -> None:
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

    assert Path(csv_path).name == "lungdemo_batch.csv"
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

    # the CSV's own temporary folder goes; what was served is Gradio's cached copy
    outputs = server.demo.lungdemo_outputs
    written = [Path(p) for p in outputs.pending if p.endswith("lungdemo_batch.csv")]
    assert written
    outputs.flush()
    assert not any(p.exists() or p.parent.exists() for p in written)


def test_batch_endpoint_deletes_its_uploads(server: Server) -> None:
    data = png_bytes_of(slice_gray().rotate(7))
    with httpx.Client(base_url=server.url, timeout=60) as http:
        up = http.post("/gradio_api/upload", files={"files": ("batch_upload.png", data, "image/png")})
        path = up.json()[0]
        call = http.post(
            "/gradio_api/call/batch", json={"data": [[{"path": path, "meta": {"_type": "gradio.FileData"}}]]}
        )
        text = http.get(f"/gradio_api/call/batch/{call.json()['event_id']}").text
    assert "event: complete" in text
    janitor = server.demo.lungdemo_batch.janitor
    assert path in janitor.pending
    janitor.flush()
    assert not Path(path).exists()


def test_report_of_the_session_slice(server: Server, client: Client, tmp_path: Path) -> None:
    """The report button's function: the session's slice -> a PDF or PNG named after the upload."""
    classifier = server.demo.lungdemo_classifier
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

    server.demo.lungdemo_outputs.flush()
    assert not pdf.exists() and not pdf.parent.exists() and not png.exists()


def test_report_without_a_slice_says_so(server: Server) -> None:
    from gradio import Error

    with pytest.raises(Error, match="classify a slice first"):
        server.demo.lungdemo_classifier.report(None, TOP_CLASS_CHOICE, "PDF")


# --- page content ------------------------------------------------------------------------


def components_by_elem_id(url: str) -> dict[str, dict]:
    config = httpx.get(f"{url.rstrip('/')}/config", timeout=30).json()
    return {c["props"]["elem_id"]: c for c in config["components"] if c.get("props", {}).get("elem_id")}


def test_evaluation_tab_reads_metrics_json(server: Server) -> None:
    metrics = json.loads((server.folder / "metrics.json").read_text())
    comps = components_by_elem_id(server.url)

    summary = comps["metrics-summary"]["props"]["value"]
    rows = {row[0]: row[1:] for row in summary["data"]}
    for col, key in enumerate(["test", "test_leakage_free"]):
        m = metrics[key]
        assert rows["slices (n)"][col] == m["n"]
        assert rows["accuracy"][col] == round(m["accuracy"], 3)
        assert rows["macro F1"][col] == round(m["macro"]["f1"], 3)
        assert rows["weighted F1"][col] == round(m["weighted"]["f1"], 3)
        assert rows["cancer-subtype macro F1"][col] == round(m["cancer_subtype_macro_f1"], 3)
    assert rows["slices (n)"][0] != rows["slices (n)"][1]  # the two splits really differ

    for key in ("test", "test_leakage_free"):
        m = metrics[key]
        report = {row[0]: row[1:] for row in comps[f"report-{key}"]["props"]["value"]["data"]}
        for name in m["class_names"]:
            c = m["per_class"][name]
            assert report[name] == [round(c["precision"], 3), round(c["recall"], 3), round(c["f1"], 3), c["support"]]
        assert report["macro avg"][:3] == [round(m["macro"][k], 3) for k in ("precision", "recall", "f1")]
        assert report["weighted avg"][:3] == [round(m["weighted"][k], 3) for k in ("precision", "recall", "f1")]

        assert comps[f"confusion-{key}"]["type"] == "plot"

    # the confusion matrices are drawn from the same dicts when the tab is first opened
    plots = server.demo.lungdemo_confusion_plots
    assert [split for split, _ in plots.splits] == [metrics["test"], metrics["test_leakage_free"]]
    for image in plots.render():
        header, _, encoded = image.plot.partition(",")
        assert (image.type, header) == ("matplotlib", "data:image/png;base64")
        assert Image.open(io.BytesIO(base64.b64decode(encoded))).width > 200
    assert plots.render() == plots.render()  # drawn once, reused


def test_evaluation_tab_shows_calibration(server: Server) -> None:
    metrics = json.loads((server.folder / "metrics.json").read_text())
    comps = components_by_elem_id(server.url)
    table = comps["calibration-table"]["props"]["value"]["data"]
    assert [row[0] for row in table] == ["Validation split", "Official test split"]
    for row, key in zip(table, ["validation", "test"], strict=True):
        cal = metrics[key]["calibration"]
        assert row[1:] == [
            metrics[key]["n"],
            round(cal["temperature"], 3),
            round(cal["ece_uncalibrated"], 3),
            round(cal["ece_calibrated"], 3),
        ]
    assert "no calibration results" not in comps["calibration-intro"]["props"]["value"]
    diagrams = server.demo.lungdemo_reliability_plots
    assert [split for split, _ in diagrams.splits] == [
        metrics["validation"]["calibration"],
        metrics["test"]["calibration"],
    ]
    for image in diagrams.render():
        _, _, encoded = image.plot.partition(",")
        assert Image.open(io.BytesIO(base64.b64decode(encoded))).width > 200
    assert comps["reliability-test"]["type"] == "plot"


def test_metrics_without_calibration_say_so(tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "model")
    metrics = json.loads((folder / "metrics.json").read_text())
    for split in metrics.values():
        if isinstance(split, dict):
            split.pop("calibration", None)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    demo = build_demo(str(folder), warmup=False)
    texts = [getattr(b, "value", "") for b in demo.blocks.values() if getattr(b, "elem_id", None) == "no-calibration"]
    assert texts and "no calibration results" in texts[0]
    assert demo.lungdemo_reliability_plots is None

    # one split without it: the table shows the other, the text names the missing one
    metrics = json.loads((make_model_folder(tmp_path / "model2") / "metrics.json").read_text())
    del metrics["validation"]["calibration"]
    (tmp_path / "model2" / "metrics.json").write_text(json.dumps(metrics))
    demo = build_demo(str(tmp_path / "model2"), warmup=False)
    blocks = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    assert [row[0] for row in blocks["calibration-table"].value["data"]] == ["Official test split"]
    assert "no calibration results for `validation`" in blocks["calibration-intro"].value
    assert len(demo.lungdemo_reliability_plots.render()) == 1


def test_folder_without_metrics_says_so(tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "model")
    (folder / "metrics.json").unlink()
    demo = build_demo(str(folder), warmup=False)
    texts = [getattr(b, "value", "") for b in demo.blocks.values() if getattr(b, "elem_id", None) == "no-metrics"]
    assert texts and "has no `metrics.json`" in texts[0]
    assert not [
        b for b in demo.blocks.values() if getattr(b, "elem_id", "") and str(b.elem_id).startswith("confusion-")
    ]


def test_about_and_classify_tab_content(server: Server) -> None:
    comps = components_by_elem_id(server.url)
    card = comps["model-card"]["props"]["value"]
    assert card.lstrip().startswith("# Test model")
    assert "library_name" not in card
    assert str(server.folder) in card
    assert DISCLAIMER in card
    assert DISCLAIMER in comps["disclaimer"]["props"]["value"]
    assert comps["slice-input"]["type"] == "image"
    assert comps["slice-input"]["props"]["sources"] == ["upload", "clipboard"]
    assert comps["file-input"]["type"] == "file"
    assert ".dcm" in comps["file-input"]["props"]["file_types"]
    assert comps["cam-class"]["props"]["choices"] == [[c, c] for c in [TOP_CLASS_CHOICE, *TEST_CLASSES]]
    assert HEATMAP_NOTE in comps["heatmap-note"]["props"]["value"]
    assert comps["batch-input"]["props"]["file_count"] == "multiple"
    assert ".zip" in comps["batch-input"]["props"]["file_types"]
    assert comps["batch-table"]["props"]["headers"] == csv_columns(TEST_CLASSES)
    config = httpx.get(f"{server.url.rstrip('/')}/config", timeout=30).json()
    datasets = [c for c in config["components"] if c["type"] == "dataset"]
    assert len(datasets) == 1 and len(datasets[0]["props"]["samples"]) == len(EXAMPLES)


def test_api_has_three_public_endpoints(client: Client) -> None:
    info = client.view_api(print_info=False, return_format="dict")
    endpoints = info["named_endpoints"]
    assert list(endpoints) == ["/classify", "/explain", "/batch"]
    assert [p["parameter_name"] for p in endpoints["/classify"]["parameters"]] == ["image"]
    assert [p["parameter_name"] for p in endpoints["/explain"]["parameters"]] == ["image", "target_class"]
    assert [p["parameter_name"] for p in endpoints["/batch"]["parameters"]] == ["files"]
    assert [r["component"] for r in endpoints["/explain"]["returns"]] == ["Image", "Textbox"]
    assert [r["component"] for r in endpoints["/batch"]["returns"]] == ["Dataframe", "File"]


# --- app.py ------------------------------------------------------------------------------


def test_app_module_builds_demo_from_env(app_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    monkeypatch.setenv("LUNGDEMO_MODEL", str(app_folder))
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    monkeypatch.setenv("GRADIO_SHARE", "1")
    monkeypatch.syspath_prepend(str(REPO))
    sys.modules.pop("app", None)
    app = importlib.import_module("app")
    try:
        assert app.demo.lungdemo_loaded.folder == app_folder
        args = app.parse_args([])
        assert (args.model, args.host, args.port, args.share) == (str(app_folder), "127.0.0.1", 7999, True)
        args = app.parse_args(["--model", "user/repo@v1", "--port", "1234", "--no-share", "--host", "0.0.0.0"])
        assert (args.model, args.host, args.port, args.share) == ("user/repo@v1", "0.0.0.0", 1234, False)
    finally:
        sys.modules.pop("app", None)


def test_app_cli_bad_model_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    env.pop("LUNGDEMO_MODEL", None)
    proc = subprocess.run(
        [sys.executable, str(REPO / "app.py"), "--model", str(tmp_path / "no-such-folder")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "error: model reference" in proc.stderr and "neither an existing folder" in proc.stderr
    assert "Traceback" not in proc.stderr
