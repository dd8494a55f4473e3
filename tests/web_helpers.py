"""Helpers the web tests share (not a test module): a running app, a fake clock, API calls, files."""

from __future__ import annotations

import heapq
import io
import json
import re
import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from lungdemo.web.demo import EXAMPLES_DIR, AppState
from tests.bad_input_corpus import png_header_only, slice_gray
from tests.conftest import running_app

EXAMPLES = sorted(EXAMPLES_DIR.glob("*.png"))
TOL = 1e-6
PROMISED_UPLOAD_GRACE_S = 10.0
PROMISED_OUTPUT_GRACE_S = 60.0
PROMISED_SLICE_TTL_S = 3600.0
"""What the README promises: uploads deleted about 10 s after use, handed-out files after a minute,
a tab's slice kept for an hour. Tests hold the app to these numbers, not to its own constants."""


# --- a running app ---------------------------------------------------------------------------


@dataclass
class Server:
    demo: Any
    state: AppState
    url: str
    folder: Path


@contextmanager
def serve(folder: Path, **build_options: Any) -> Iterator[Server]:
    with running_app(folder, **build_options) as (demo, state):
        yield Server(demo=demo, state=state, url=demo.local_url, folder=folder)


# --- a fake clock for the deletion timers ------------------------------------------------------


@dataclass
class FakeTimer:
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeTimers:
    """``call_later`` on a clock that moves only when a test calls :meth:`advance`."""

    now: float = 0.0
    _due: list[tuple[float, int, Callable[[], None], FakeTimer]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: int = 0

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer()
        with self._lock:
            self._seq += 1
            heapq.heappush(self._due, (self.now + delay_s, self._seq, fn, timer))
        return timer

    @property
    def scheduled(self) -> int:
        """Timers still due (not cancelled)."""
        with self._lock:
            return sum(1 for *_, timer in self._due if not timer.cancelled)

    def advance(self, seconds: float) -> None:
        """Move the clock on, running every timer due by then, in order."""
        end = self.now + seconds
        while True:
            with self._lock:
                if not self._due or self._due[0][0] > end:
                    self.now = end
                    return
                when, _, fn, timer = heapq.heappop(self._due)
                self.now = when
            if not timer.cancelled:
                fn()


# --- the API over plain HTTP ---------------------------------------------------------------------


@dataclass
class Reply:
    event: str
    """"complete", "error", or "upload refused" (the upload itself got an HTTP error)."""
    payload: Any
    path: str = ""
    """Where the server stored the upload."""


def read_events(http: httpx.Client, api_name: str, event_id: str) -> tuple[str, Any]:
    """The event stream of one call, read to its end: (last event, its data)."""
    text = http.get(f"/gradio_api/call/{api_name}/{event_id}").text
    event, payload = "", None
    for line in text.splitlines():
        if line.startswith("event:"):
            event = line.partition(":")[2].strip()
        elif line.startswith("data:") and event in ("complete", "error"):
            payload = json.loads(line.partition(":")[2])
    return event, payload


def file_data(path: str, name: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"path": path, "meta": {"_type": "gradio.FileData"}}
    if name is not None:
        data["orig_name"] = name
    return data


def upload(http: httpx.Client, data: bytes, name: str) -> httpx.Response:
    return http.post("/gradio_api/upload", files={"files": (name, data, "application/octet-stream")})


def classify_http(url: str, data: bytes, name: str = "slice.png") -> Reply:
    """Upload, ``POST /gradio_api/call/classify``, read the event stream: as any HTTP client would."""
    with httpx.Client(base_url=url, timeout=120) as http:
        up = upload(http, data, name)
        if up.status_code != 200:
            return Reply("upload refused", (up.status_code, up.text))
        path = up.json()[0]
        call = http.post("/gradio_api/call/classify", json={"data": [file_data(path, name)]})
        call.raise_for_status()
        event, payload = read_events(http, "classify", call.json()["event_id"])
    return Reply(event, payload, path)


def probabilities(label: dict) -> dict[str, float]:
    """gr.Label's payload -> {class: probability}."""
    return {c["label"]: c["confidence"] for c in label["confidences"]}


def assert_same(api: dict[str, float], expected: dict[str, float]) -> None:
    assert set(api) == set(expected)
    for name, p in expected.items():
        assert api[name] == pytest.approx(p, abs=TOL), name


def page_config(url: str) -> dict[str, Any]:
    return httpx.get(f"{url.rstrip('/')}/config", timeout=30).json()


def components_by_elem_id(url: str) -> dict[str, dict]:
    config = page_config(url)
    return {c["props"]["elem_id"]: c for c in config["components"] if c.get("props", {}).get("elem_id")}


# --- files ---------------------------------------------------------------------------------------


def png_bytes_of(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def write_unusual(kind: str, folder: Path) -> Path:
    """Valid but unusual image files made from a real slice."""
    gray = slice_gray()
    path = folder / f"{kind}.png"
    if kind == "16bit":
        Image.fromarray(np.asarray(gray, dtype=np.uint16) * 257).save(path)  # mode I;16
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


def make_zip(path: Path, members: list[Path]) -> Path:
    """A zip with image members in a folder, plus entries the batch must skip."""
    with zipfile.ZipFile(path, "w") as zf:
        for member in members:
            zf.write(member, f"slices/{member.name}")
        zf.writestr("slices/README.txt", "not a slice")
        zf.writestr("__MACOSX/slices/._x.png", b"resource fork")
    return path


def pdf_info(data: bytes) -> dict[str, str]:
    """The document info strings matplotlib writes (literal strings, ``\\``-escaped)."""
    info = {}
    for key in ("Title", "Subject", "Keywords", "Creator"):
        found = re.search(rb"/" + key.encode() + rb" \(((?:\\.|[^\\)])*)\)", data)
        assert found, f"no /{key} in the PDF"
        info[key] = re.sub(rb"\\(.)", rb"\1", found.group(1)).decode("latin-1")
    return info
