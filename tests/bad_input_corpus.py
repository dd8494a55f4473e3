"""The corpus of bad and unusual uploads, generated in memory: shared by the tests and the load bench.

``tests/test_bad_inputs.py`` sends each file to a running app's ``/classify`` and checks the
reply; ``bench/load.py`` mixes them with good slices under load. Each :class:`Case` says what
a client must get back: for ``REFUSED`` files the start of the one-line error message, for
``ANSWERED`` files (unusual but valid) a line of the notes the page shows beside the answer.
Everything is made from an example slice or from pydicom's bundled test data (only files
shipped inside the pydicom wheel: nothing is downloaded).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file

from lungdemo.decode import DEFAULT_MAX_BYTES, WARNING_PREFIX
from lungdemo.dicom import TRAINED_ON_PNG_NOTE

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.png"))
NOT_AN_IMAGE = "not an image file PIL can read (PNG, JPEG, TIFF, BMP, GIF, ...) nor a DICOM file"
OVERSIZED_REFUSAL = f"File size exceeded maximum allowed size of {DEFAULT_MAX_BYTES} bytes"
"""Gradio's own answer (HTTP 413 to the upload) for a file over ``launch_options()``'s limit."""


# --- the corpus ---------------------------------------------------------------------------------


def slice_gray() -> Image.Image:
    return Image.open(EXAMPLES[0]).convert("L")


def encode(img: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """PNG signature + IHDR claiming width x height + IEND: a bomb stand-in of 45 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


def dicom_bytes(name: str, change: Callable[[pydicom.Dataset], None] | None = None) -> bytes:
    """A file of pydicom's bundled test data, optionally changed and saved again, as bytes."""
    path = get_testdata_file(name)
    if change is None:
        return Path(path).read_bytes()
    ds = pydicom.dcmread(path)
    change(ds)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _drop_pixel_data(ds: pydicom.Dataset) -> None:
    del ds.PixelData


def _huge_header(ds: pydicom.Dataset) -> None:
    ds.Rows = ds.Columns = 40000


def photo_like() -> Image.Image:
    """A colour "photograph": sky, field, sun, a red box, sensor noise."""
    rng = np.random.default_rng(0)
    y = np.linspace(0.0, 1.0, 240)[:, None, None]
    x = np.linspace(0.0, 1.0, 320)[None, :, None]
    sky = np.array([90.0, 150.0, 235.0]) + y * np.array([60.0, 50.0, -30.0])
    field = np.array([60.0, 150.0, 50.0]) + x * np.array([40.0, 60.0, 0.0])
    rgb = np.where(y > 0.6, field, sky) + rng.normal(0.0, 8.0, (240, 320, 3))
    rgb[20:80, 200:260] = (250, 200, 40)
    rgb[110:190, 40:120] = (200, 40, 40)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def animated_gif() -> bytes:
    gray = slice_gray()
    frames = [gray.convert("P"), gray.rotate(10).convert("P"), gray.rotate(20).convert("P")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


@dataclass(frozen=True)
class Case:
    """One corpus file: its name as uploaded, how to make it, and what the client must get."""

    file_name: str
    make: Callable[[], bytes]
    expected: str
    """Refused: the start of the error message. Answered: a line of the page's notes."""


REFUSED = {
    "truncated_png": Case(
        "slice.png",
        lambda: EXAMPLES[0].read_bytes()[: len(EXAMPLES[0].read_bytes()) * 6 // 10],
        "the image data is broken or truncated",
    ),
    "zero_bytes": Case("empty.png", lambda: b"", "the file is empty (0 bytes)"),
    "text_renamed_png": Case("notes.png", lambda: b"patient notes, definitely not pixels\n" * 20, NOT_AN_IMAGE),
    "html": Case(
        "page.html", lambda: b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>", NOT_AN_IMAGE
    ),
    "svg": Case(
        "drawing.svg",
        lambda: (
            b'<svg xmlns="http://www.w3.org/2000/svg" width="512" height="512">'
            b'<circle cx="256" cy="256" r="200" fill="gray"/><script>alert(1)</script></svg>'
        ),
        NOT_AN_IMAGE,
    ),
    "png_header_40000x40000": Case(
        "bomb.png",
        lambda: png_header_only(40000, 40000),
        "image too large: 1,600,000,000 pixels; the limit is 40,000,000",
    ),
    "dicom_without_pixel_data": Case(
        "no_pixels.dcm",
        lambda: dicom_bytes("CT_small.dcm", _drop_pixel_data),
        "the DICOM file holds no image: it has no pixel data (it is a CT Image Storage)",
    ),
    "dicom_header_40000x40000": Case(
        "huge.dcm",
        lambda: dicom_bytes("CT_small.dcm", _huge_header),
        "DICOM image is 40000x40000 = 1,600,000,000 pixels; the limit is 40,000,000",
    ),
    "dicom_compressed_without_decoder": Case(
        "jpeg_ls.dcm",
        lambda: dicom_bytes("MR_small_jpeg_ls_lossless.dcm"),
        "the DICOM pixel data is compressed as JPEG-LS Lossless Image Compression, which this server cannot decode",
    ),
}

ANSWERED = {
    "png_16bit": Case(
        "slice16.png",
        lambda: encode(Image.fromarray(np.asarray(slice_gray(), dtype=np.uint16) * 257), "PNG"),
        "converted from mode I;16 to 8-bit grayscale",
    ),
    "cmyk_jpeg": Case(
        "cmyk.jpg",
        lambda: encode(slice_gray().convert("RGB").convert("CMYK"), "JPEG", quality=95),
        "converted from mode CMYK to 8-bit grayscale",
    ),
    "animated_gif": Case("animated.gif", animated_gif, "multi-frame file (3 frames): the first frame was used"),
    "dicom_ct": Case("ct.dcm", lambda: dicom_bytes("CT_small.dcm"), TRAINED_ON_PNG_NOTE),
    "colour_photo": Case(
        "holiday.jpg",
        lambda: encode(photo_like(), "JPEG", quality=90),
        f"{WARNING_PREFIX}this does not look like a CT slice: it is strongly coloured",
    ),
}


def oversized_file() -> bytes:
    """A valid PNG padded to one byte over the upload limit."""
    data = EXAMPLES[0].read_bytes()
    return data + b"\0" * (DEFAULT_MAX_BYTES + 1 - len(data))
