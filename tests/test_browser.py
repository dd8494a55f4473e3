"""The demo in a real browser: Debian's chromium driven by Playwright, against 127.0.0.1.

Uploads a real slice through the page's file input, reads the label the page shows and
compares it with the API's answer for the same file, sees the Grad-CAM overlay and the
confidence line, picks another class for the heat map, downloads the report; classifies a
file through the "upload a file" box; runs a batch of three examples and checks the
downloaded CSV's rows against the API; checks a bad file's message reaches the page; opens
the evaluation tab and finds the confusion matrices and reliability diagrams. Screenshots go
to a temporary folder (or ``$LUNGDEMO_SCREENSHOTS`` when set), listed in the test output.
"""

from __future__ import annotations

import base64
import csv
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image
from playwright.sync_api import expect

from lungdemo.gradcam import HEATMAP_NOTE
from lungdemo.loading import SHIPPED_MODEL_DIR
from lungdemo.ood import WARNING_START
from lungdemo.predict import csv_columns
from tests.conftest import TEST_CLASSES, make_model_folder
from tests.web_helpers import EXAMPLES, pdf_info, serve
from train.ood_corpus import chessboard, png

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 60_000
SIZE = 96  # the conftest model's input size
TOL = 1e-6


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = make_model_folder(tmp_path_factory.mktemp("browser") / "model", seed=5)
    with serve(folder) as server:
        yield server.url


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("LUNGDEMO_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def page(app_url: str) -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(
                viewport={"width": 1280, "height": 1000},
                permissions=["clipboard-read", "clipboard-write"],
                accept_downloads=True,
            )
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)  # answers come from a busy CPU
            page.goto(app_url)
            page.locator("#slice-input").wait_for()
            yield page
        finally:
            browser.close()


def shown_label(page) -> str:
    """The top class the page shows, once a prediction has arrived."""
    value = page.get_by_test_id("label-output-value")
    value.wait_for(state="visible")
    return value.inner_text().strip()


def reset(page) -> None:
    """Remove the current image or file (which clears the label) and select the file source again."""
    page.get_by_role("tab", name="Classify").click()
    remove = page.locator("#slice-input").get_by_role("button", name="Remove Image")
    if remove.count():
        remove.click()
    clear_file = page.locator("#file-input").get_by_role("button", name="Clear")
    if clear_file.count():
        clear_file.click()
    expect(page.get_by_test_id("label-output-value")).to_have_count(0)
    page.locator("#slice-input").get_by_role("button", name="Upload file").click()
    page.locator("#slice-input input[type=file]").wait_for(state="attached")


def wait_for_label(page, expected: str) -> str:
    page.get_by_test_id("label-output-value").filter(has_text=expected).wait_for(state="visible")
    return shown_label(page)


def wait_for_heatmap_class(page, expected: str) -> None:
    """The heat-map class box shows ``expected`` (its overlay arrives with it)."""
    expect(page.locator("#cam-target textarea")).to_have_value(expected, timeout=TIMEOUT_MS)


def overlay_src(page) -> str:
    image = page.locator("#cam-overlay img")
    image.wait_for(state="visible")
    return image.get_attribute("src") or ""


def test_upload_shows_same_class_as_api(page, app_url: str, shots: Path) -> None:
    slice_path = EXAMPLES[0]
    api = Client(app_url, verbose=False).predict(handle_file(str(slice_path)), api_name="/classify")
    reset(page)
    page.locator("#slice-input input[type=file]").set_input_files(str(slice_path))
    assert wait_for_label(page, api["label"]) == api["label"]
    for row in api["confidences"]:  # every class is listed with its percentage
        page.locator("#probabilities").get_by_text(row["label"], exact=True).first.wait_for()
    # the heat map of the top class, at the model's input size, with the note beside it
    wait_for_heatmap_class(page, api["label"])
    overlay = page.locator("#cam-overlay img")
    overlay.wait_for(state="visible")
    expect(overlay).to_have_js_property("naturalWidth", SIZE)
    expect(page.locator("#heatmap-note")).to_contain_text(HEATMAP_NOTE)
    # a random-weight model is never sure: the page says so in words
    top = max(row["confidence"] for row in api["confidences"])
    assert top < 0.6
    expect(page.locator("#confidence-note")).to_contain_text("The model is unsure")
    expect(page.locator("#confidence-note")).to_contain_text(f"{top:.0%}")
    page.screenshot(path=str(shots / "classify.png"), full_page=True, animations="disabled")
    print(f"screenshot: {shots / 'classify.png'}")


def test_heatmap_class_picker_and_report_download(page, app_url: str, tmp_path: Path, shots: Path) -> None:
    """Another class for the heat map, then the one-click report of the slice on the page."""
    slice_path = EXAMPLES[0]
    api = Client(app_url, verbose=False).predict(handle_file(str(slice_path)), api_name="/classify")
    other = next(c for c in TEST_CLASSES if c != api["label"])
    reset(page)
    page.locator("#slice-input input[type=file]").set_input_files(str(slice_path))
    wait_for_label(page, api["label"])
    wait_for_heatmap_class(page, api["label"])
    before = overlay_src(page)
    page.locator("#cam-class input").click()
    page.get_by_role("option", name=other, exact=True).click()
    wait_for_heatmap_class(page, other)
    expect(page.locator("#cam-overlay img")).not_to_have_attribute("src", before)

    with page.expect_download() as download:
        page.locator("#report-button").click()
    report = tmp_path / download.value.suggested_filename
    download.value.save_as(report)
    assert report.name == f"{slice_path.stem}_report.pdf"
    data = report.read_bytes()
    assert data.startswith(b"%PDF")
    keywords = pdf_info(data)["Keywords"]
    assert f"file={slice_path.name}" in keywords
    assert f"predicted_class={api['label']}" in keywords
    assert f"heatmap_class={other}" in keywords  # the class picked on the page
    page.locator("#report-file").get_by_test_id("download-link").wait_for(state="visible")
    page.screenshot(path=str(shots / "report.png"), full_page=True, animations="disabled")

    page.locator("#report-format").get_by_label("PNG").check()
    with page.expect_download() as download:
        page.locator("#report-button").click()
    assert download.value.suggested_filename == f"{slice_path.stem}_report.png"
    png = tmp_path / "report.png"
    download.value.save_as(png)
    with Image.open(png) as img:
        assert img.format == "PNG" and img.text["heatmap_class"] == other

    # back to the top class: the picker's first entry
    page.locator("#cam-class input").click()
    page.get_by_role("option", name="top class", exact=True).click()
    wait_for_heatmap_class(page, api["label"])


def test_file_box_classifies(page, app_url: str) -> None:
    """The "upload a file" box (for DICOM, which the image box cannot show) runs the same classifier."""
    slice_path = EXAMPLES[3]
    api = Client(app_url, verbose=False).predict(handle_file(str(slice_path)), api_name="/classify")
    reset(page)
    page.locator("#file-input input[type=file]").set_input_files(str(slice_path))
    assert wait_for_label(page, api["label"]) == api["label"]
    wait_for_heatmap_class(page, api["label"])
    expect(page.locator("#cam-overlay img")).to_have_js_property("naturalWidth", SIZE)


def test_file_box_takes_dicom(page, app_url: str, tmp_path: Path) -> None:
    """A .dcm file (pydicom's bundled CT slice) through the file box: the page shows the API's answer."""
    from pydicom.data import get_testdata_file

    dcm = tmp_path / "CT_small.dcm"
    dcm.write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    api = Client(app_url, verbose=False).predict(handle_file(str(dcm)), api_name="/classify")
    reset(page)
    page.locator("#file-input input[type=file]").set_input_files(str(dcm))
    assert wait_for_label(page, api["label"]) == api["label"]
    expect(page.locator("#cam-overlay img")).to_have_js_property("naturalWidth", SIZE)


def test_batch_of_three_examples_and_csv_download(page, app_url: str, tmp_path: Path, shots: Path) -> None:
    client = Client(app_url, verbose=False)
    slices = EXAMPLES[:3]
    page.get_by_role("tab", name="Batch").click()
    page.locator("#batch-input input[type=file]").set_input_files([str(p) for p in slices])
    for p in slices:
        page.locator("#batch-input").get_by_text(p.stem).first.wait_for()
    page.locator("#batch-button").click()
    link = page.locator("#batch-csv").get_by_test_id("download-link")
    link.wait_for(state="visible")
    for p in slices:  # one table row per file
        page.locator("#batch-table").get_by_text(p.name, exact=True).filter(visible=True).first.wait_for()
    page.screenshot(path=str(shots / "batch.png"), full_page=True, animations="disabled")
    print(f"screenshot: {shots / 'batch.png'}")

    with page.expect_download() as download:
        link.click()
    assert download.value.suggested_filename == "lungdemo_batch.csv"
    saved = tmp_path / "batch.csv"
    download.value.save_as(saved)
    with open(saved, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == csv_columns(TEST_CLASSES)
        rows = list(reader)
    assert [r["file"] for r in rows] == [p.name for p in slices]
    for row, path in zip(rows, slices, strict=True):
        api = client.predict(handle_file(str(path)), api_name="/classify")
        single = {c["label"]: c["confidence"] for c in api["confidences"]}
        for name, p in single.items():
            assert float(row[f"p_{name}"]) == pytest.approx(p, abs=TOL), (path.name, name)
        assert row["predicted_class"] == api["label"] and row["error"] == ""


def test_example_click_classifies(page, app_url: str) -> None:
    example = next(p for p in EXAMPLES if p.stem.startswith("normal"))
    api = Client(app_url, verbose=False).predict(handle_file(str(example)), api_name="/classify")
    reset(page)
    page.get_by_role("button", name=example.stem.replace("_", " ")).first.click()
    assert wait_for_label(page, api["label"]) == api["label"]


def test_bad_file_message_reaches_page(page, tmp_path: Path, shots: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("this is text with an image name\n")
    reset(page)
    page.locator("#slice-input input[type=file]").set_input_files(str(bad))
    toast = page.get_by_test_id("toast-text").filter(has_text="not an image file PIL can read")
    toast.first.wait_for(state="visible")
    assert "verbose error reporting" not in toast.first.inner_text()
    expect(page.get_by_test_id("label-output-value")).to_have_count(0)  # no stale answer beside the error
    page.screenshot(path=str(shots / "bad_file.png"), full_page=True, animations="disabled")


def test_paste_from_clipboard(page, app_url: str) -> None:
    slice_path = EXAMPLES[2]
    api = Client(app_url, verbose=False).predict(handle_file(str(slice_path)), api_name="/classify")
    encoded = base64.b64encode(slice_path.read_bytes()).decode()
    page.evaluate(
        """async (b64) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const blob = new Blob([bytes], {type: "image/png"});
            await navigator.clipboard.write([new ClipboardItem({"image/png": blob})]);
        }""",
        encoded,
    )
    reset(page)
    page.locator("#slice-input").get_by_role("button", name="Paste from clipboard").click()
    assert wait_for_label(page, api["label"]) == api["label"]


def test_decode_notes_shown(page, tmp_path: Path) -> None:
    gray = Image.open(EXAMPLES[1]).convert("L")
    gif = tmp_path / "animated.gif"
    frames = [gray.convert("P"), gray.rotate(15).convert("P")]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    reset(page)
    page.locator("#slice-input input[type=file]").set_input_files(str(gif))
    page.locator("#decode-notes").get_by_text("multi-frame file (2 frames)").wait_for(state="visible")


def test_evaluation_tab_shows_confusion_matrix(page, shots: Path) -> None:
    page.get_by_role("tab", name="Evaluation").click()
    plot = page.locator("#confusion-test img")
    plot.wait_for(state="visible")
    assert plot.evaluate("img => img.naturalWidth") > 200
    page.locator("#confusion-test_leakage_free img").wait_for(state="visible")
    for key in ("validation", "test"):
        diagram = page.locator(f"#reliability-{key} img")
        diagram.wait_for(state="visible")
        assert diagram.evaluate("img => img.naturalWidth") > 200
    expect(page.locator("#calibration-table")).to_contain_text("ECE after scaling")
    expect(page.locator("#calibration-intro")).to_contain_text(re.compile(r"temperature: \S+"))
    page.locator("#metrics-summary").get_by_text("cancer-subtype macro F1").filter(visible=True).first.wait_for()
    page.screenshot(path=str(shots / "evaluation.png"), full_page=True, animations="disabled")
    print(f"screenshot: {shots / 'evaluation.png'}")


def test_about_tab_shows_model_card(page) -> None:
    page.get_by_role("tab", name="About").click()
    card = page.locator("#model-card")
    card.get_by_text("Random weights, for tests only.").wait_for(state="visible")
    assert "library_name" not in card.inner_text()


@pytest.fixture(scope="module")
def checked_url() -> Iterator[str]:
    """The shipped model, which carries the out-of-distribution check."""
    with serve(SHIPPED_MODEL_DIR) as server:
        yield server.url


def test_a_flagged_upload_leads_with_the_banner(page, checked_url: str, tmp_path: Path, shots: Path) -> None:
    board = tmp_path / "chessboard.png"
    board.write_bytes(png(chessboard()))
    page.goto(checked_url)
    page.locator("#slice-input input[type=file]").set_input_files(str(board))
    banner = page.locator("#decode-notes h3")
    expect(banner).to_contain_text(WARNING_START)
    expect(page.locator("#decode-notes")).to_contain_text("The class probabilities are not meaningful.")
    shown_label(page)  # the probabilities still arrive, under the banner
    top_of = page.evaluate("(sel) => document.querySelector(sel).getBoundingClientRect().top", "#decode-notes")
    assert top_of < page.evaluate("() => document.querySelector('#probabilities').getBoundingClientRect().top")
    page.screenshot(path=str(shots / "flagged-upload.png"))

    reset(page)  # a chest slice: no banner
    page.locator("#slice-input input[type=file]").set_input_files(str(EXAMPLES[0]))
    shown_label(page)
    expect(page.locator("#decode-notes")).not_to_contain_text(WARNING_START)
