"""The demo in a real browser: Debian's chromium driven by Playwright, against 127.0.0.1.

Uploads a real slice through the page's file input, reads the label the page shows and
compares it with the API's answer for the same file; checks a bad file's message reaches
the page; opens the evaluation tab and finds the confusion-matrix plot. Screenshots go to a
temporary folder (or ``$LUNGDEMO_SCREENSHOTS`` when set), listed in the test output.
"""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image
from playwright.sync_api import expect

from lungdemo.webapp import EXAMPLES_DIR, build_demo, launch_options
from tests.conftest import make_model_folder

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
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.png"))
TIMEOUT_MS = 60_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = make_model_folder(tmp_path_factory.mktemp("browser") / "model", seed=5)
    demo = build_demo(str(folder))
    demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True, **launch_options()
    )
    try:
        yield demo.local_url
    finally:
        demo.close()


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
                viewport={"width": 1280, "height": 1000}, permissions=["clipboard-read", "clipboard-write"]
            )
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
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
    """Remove the current image (which clears the label) and select the file source again."""
    remove = page.locator("#slice-input").get_by_role("button", name="Remove Image")
    if remove.count():
        remove.click()
    expect(page.get_by_test_id("label-output-value")).to_have_count(0)
    page.locator("#slice-input").get_by_role("button", name="Upload file").click()
    page.locator("#slice-input input[type=file]").wait_for(state="attached")


def wait_for_label(page, expected: str) -> str:
    page.get_by_test_id("label-output-value").filter(has_text=expected).wait_for(state="visible")
    return shown_label(page)


def test_upload_shows_same_class_as_api(page, app_url: str, shots: Path) -> None:
    slice_path = EXAMPLES[0]
    api = Client(app_url, verbose=False).predict(handle_file(str(slice_path)), api_name="/classify")
    reset(page)
    page.locator("#slice-input input[type=file]").set_input_files(str(slice_path))
    assert wait_for_label(page, api["label"]) == api["label"]
    for row in api["confidences"]:  # every class is listed with its percentage
        page.locator("#probabilities").get_by_text(row["label"], exact=True).first.wait_for()
    page.screenshot(path=str(shots / "classify.png"), full_page=True, animations="disabled")
    print(f"screenshot: {shots / 'classify.png'}")


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
    page.locator("#metrics-summary").get_by_text("cancer-subtype macro F1").filter(visible=True).first.wait_for()
    page.screenshot(path=str(shots / "evaluation.png"), full_page=True, animations="disabled")
    print(f"screenshot: {shots / 'evaluation.png'}")


def test_about_tab_shows_model_card(page) -> None:
    page.get_by_role("tab", name="About").click()
    card = page.locator("#model-card")
    card.get_by_text("Random weights, for tests only.").wait_for(state="visible")
    assert "library_name" not in card.inner_text()
