"""lungdemo.web.lifecycle: uploads and handed-out files deleted at the real grace periods (on a fake clock)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from pathlib import Path

import gradio as gr
import pytest

from lungdemo.web.lifecycle import (
    OUTPUT_GRACE_S,
    SLICE_TTL_S,
    UPLOAD_GRACE_S,
    OutputFiles,
    ThreadTimers,
    Timer,
    UploadJanitor,
    read_upload,
    upload_name,
    upload_payload,
)
from tests.web_helpers import PROMISED_OUTPUT_GRACE_S, PROMISED_SLICE_TTL_S, PROMISED_UPLOAD_GRACE_S, FakeTimers

JUST = 0.01  # seconds either side of a grace period


def test_the_grace_periods_the_readme_states() -> None:
    assert (UPLOAD_GRACE_S, OUTPUT_GRACE_S, SLICE_TTL_S) == (
        PROMISED_UPLOAD_GRACE_S,
        PROMISED_OUTPUT_GRACE_S,
        PROMISED_SLICE_TTL_S,
    )


def _upload(tmp_path: Path, name: str = "a.png") -> str:
    folder = tmp_path / "0123abcd"  # Gradio's per-upload hash folder
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(b"x")
    return str(path)


def test_janitor_deletes_at_the_grace_period_after_the_last_release(tmp_path: Path) -> None:
    timers = FakeTimers()
    janitor = UploadJanitor(UPLOAD_GRACE_S, lambda _p: True, timers)
    path = _upload(tmp_path)
    janitor.claim(path)
    janitor.claim(path)  # a second request on the same upload path
    janitor.release(path)
    timers.advance(3600)
    assert Path(path).exists() and timers.scheduled == 0  # still in use by the second request
    janitor.release(path)
    timers.advance(UPLOAD_GRACE_S - JUST)
    assert Path(path).exists()
    timers.advance(2 * JUST)
    assert not Path(path).exists() and not Path(path).parent.exists()


def test_janitor_use_cancels_pending_deletion(tmp_path: Path) -> None:
    timers = FakeTimers()
    janitor = UploadJanitor(UPLOAD_GRACE_S, lambda _p: True, timers)
    path = _upload(tmp_path)
    janitor.claim(path)
    janitor.release(path)
    timers.advance(UPLOAD_GRACE_S / 2)
    janitor.claim(path)  # the same file uploaded again before the grace period ended
    assert timers.scheduled == 0
    timers.advance(3600)
    assert Path(path).exists()
    janitor.release(path)  # the period starts again from this release
    timers.advance(UPLOAD_GRACE_S - JUST)
    assert Path(path).exists()
    timers.advance(2 * JUST)
    assert not Path(path).exists()


def test_janitor_keeps_protected_files(tmp_path: Path) -> None:
    timers = FakeTimers()
    janitor = UploadJanitor(UPLOAD_GRACE_S, lambda _p: False, timers)
    path = _upload(tmp_path)
    janitor.claim(path)
    janitor.release(path)
    assert timers.scheduled == 0
    timers.advance(3600)
    assert Path(path).exists()


def test_the_real_clock_runs_and_cancels() -> None:
    fired, cancelled = threading.Event(), threading.Event()
    ThreadTimers().call_later(0.0, fired.set)
    ThreadTimers().call_later(0.05, cancelled.set).cancel()
    assert fired.wait(30)
    assert not cancelled.is_set()


def test_janitor_on_the_real_clock_deletes(tmp_path: Path) -> None:
    deleted = threading.Event()
    path = _upload(tmp_path)

    class Watched(ThreadTimers):
        def call_later(self, delay_s: float, fn: Callable[[], None]) -> Timer:
            def run() -> None:
                fn()
                deleted.set()

            return super().call_later(delay_s, run)

    janitor = UploadJanitor(0.0, lambda _p: True, Watched())
    janitor.claim(path)
    janitor.release(path)
    assert deleted.wait(30)
    assert not Path(path).exists()


def test_output_files_are_deleted_after_a_minute() -> None:
    timers = FakeTimers()
    outputs = OutputFiles(timers=timers)  # the app's default grace period
    first, second = outputs.new_path("same.csv"), outputs.new_path("same.csv")
    assert first != second and first.parent.parent == second.parent.parent == outputs.root
    for path in (first, second):
        path.write_text("x")
    assert outputs.handed_out(first) == str(first)
    assert timers.scheduled == 1
    timers.advance(PROMISED_OUTPUT_GRACE_S - JUST)
    assert first.exists()
    timers.advance(2 * JUST)
    assert not first.parent.exists() and second.exists()
    outputs.discard(second)
    assert list(outputs.root.iterdir()) == []


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


def test_upload_names() -> None:
    assert upload_name({"path": "/tmp/gradio/ab12/scan.png", "orig_name": "Scan 1.PNG"}) == "Scan 1.PNG"
    assert upload_name({"path": "/tmp/gradio/ab12/scan.png", "orig_name": None}) == "scan.png"
    assert upload_name("/x/y/z.dcm") == "z.dcm"
    assert upload_name(b"bytes") == "upload" and upload_name({"path": None, "url": "data:,"}) == "upload"


def test_read_upload_claims_while_reading_and_words_a_deleted_file(tmp_path: Path) -> None:
    timers = FakeTimers()
    janitor = UploadJanitor(UPLOAD_GRACE_S, lambda _p: True, timers)
    path = _upload(tmp_path)
    assert read_upload(path, janitor) == b"x"
    assert timers.scheduled == 1  # released after reading: deletion scheduled
    timers.advance(UPLOAD_GRACE_S + JUST)
    with pytest.raises(gr.Error, match="no longer on the server"):
        read_upload(path, janitor)
    assert read_upload(b"bytes", janitor) == b"bytes"
