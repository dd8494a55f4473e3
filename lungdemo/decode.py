"""Bytes -> an 8-bit grayscale slice and notes: the one place that reads uploaded files.

Files are opened by content, never by name: DICOM (the ``DICM`` prefix at byte 128) goes to
:mod:`lungdemo.dicom`, everything else to PIL. Size and pixel limits are checked before any
pixel is decoded. Colour is dropped on purpose (CT is single-channel), after
:func:`look_warnings` has said whether the file looks like a CT slice at all.
Framing the slice for the model is :mod:`lungdemo.preprocessing`'s job.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lungdemo.decoded import WARNING_PREFIX, DecodedInfo, ImageDecodeError

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 40_000_000  # a 6000x6000 slice; CT renderings are far smaller
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
"""Largest file accepted (20 MiB): the dataset's largest PNG is under 1 MiB, an uncompressed
512x512 CT DICOM about 0.5 MiB. Checked before the file is read into memory."""

DICOM_PREFIX = b"DICM"
DICOM_PREFIX_OFFSET = 128

COLOURFULNESS_LIMIT = 20.0
"""Warn above this colourfulness (Hasler & Süsstrunk 2003, 0 for gray; on their scale 15 is
"slightly" and 33 "moderately" colourful). Measured on all 1000 slices of the dataset: at most
9.9 (faint coloured annotations on a few *normal* slices), 0 for most."""
LOW_CONTRAST_STD = 10.0
"""Warn when the grayscale standard deviation (0..255) is below this: a blank or almost
uniform picture. The dataset's slices are at least 25."""
LOOK_CHECK_SIDE = 256
"""The look checks run on a thumbnail at most this big: cheap and size-independent."""


def read_source(source: bytes | str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The file's bytes, refusing more than ``max_bytes``; a path's size is checked before reading.

    Gradio refuses larger uploads already; this guards batch prediction and Python callers.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            size = path.stat().st_size
            _check_size(size, max_bytes)
            data = path.read_bytes()
        except OSError as exc:
            raise ImageDecodeError(f"cannot read {path}: {exc.strerror or exc}") from exc
    else:
        data = bytes(source)
    _check_size(len(data), max_bytes)
    return data


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise ImageDecodeError(
            f"the file is {size:,} bytes ({size / 2**20:.1f} MiB); the limit is {max_bytes:,} bytes "
            f"({max_bytes / 2**20:g} MiB)"
        )


def is_dicom(data: bytes) -> bool:
    """A DICOM file by content: the ``DICM`` prefix after the 128-byte preamble (PS3.10 7.1)."""
    return data[DICOM_PREFIX_OFFSET : DICOM_PREFIX_OFFSET + len(DICOM_PREFIX)] == DICOM_PREFIX


def open_image(
    source: bytes | str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> Image.Image:
    """Open a raster image by content, refusing too many pixels before any is decoded.

    ``Image.open`` reads the header only, so a decompression bomb (a 40000x40000 PNG is a few
    kB) is stopped here. DICOM is not opened here (PIL cannot): :func:`decode_image` handles it.
    """
    data = read_source(source, max_bytes)
    if not data:
        raise ImageDecodeError("the file is empty (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            "not an image file PIL can read (PNG, JPEG, TIFF, BMP, GIF, ...) nor a DICOM file "
            "(DICOM needs its 128-byte preamble and 'DICM' prefix)"
        ) from exc
    except Image.DecompressionBombError as exc:
        # PIL's own guard fires in open() for absurd sizes; word it with our limit
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "more pixels than PIL allows"
        raise ImageDecodeError(f"image too large: {size}; the limit is {max_pixels:,}") from exc
    except OSError as exc:
        raise ImageDecodeError(f"cannot read image: {exc}") from exc
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageDecodeError(f"image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}")
    return img


def decode_image(
    source: bytes | str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[Image.Image, DecodedInfo]:
    """Any supported image or DICOM slice -> an 8-bit grayscale ("L") image and what was seen.

    Raises :class:`ImageDecodeError`, with a message for users, on anything unreadable; the
    first frame of a multi-frame file is used, and EXIF rotation applied.
    """
    data = read_source(source, max_bytes)
    if data and is_dicom(data):
        from lungdemo.dicom import decode_dicom  # pydicom takes ~0.3 s to import: only DICOM pays it

        img, info = decode_dicom(data, max_pixels)
        gray = to_grayscale(img)
    else:
        img, gray, info = _decode_raster(data, max_pixels, max_bytes)
    try:
        warnings = look_warnings(img, gray)
    except (OSError, ValueError) as exc:  # advisory only: never let it refuse a decoded slice
        logger.warning("look check skipped for a %s image: %s", info.mode, exc)
        warnings = []
    if warnings:
        logger.info("decoded image may not be a CT slice: %s", "; ".join(warnings))
        info.notes[:0] = warnings
    return gray, info


def _decode_raster(data: bytes, max_pixels: int, max_bytes: int) -> tuple[Image.Image, Image.Image, DecodedInfo]:
    """A PIL-readable file -> (its first frame upright, that frame in grayscale, notes)."""
    img = open_image(data, max_pixels, max_bytes=max_bytes)
    info = DecodedInfo(format=img.format, mode=img.mode, size=img.size)
    info.n_frames = int(getattr(img, "n_frames", 1) or 1)
    try:
        if info.n_frames > 1:
            img.seek(0)
            info.notes.append(f"multi-frame file ({info.n_frames} frames): the first frame was used")
        img.load()
        transposed = ImageOps.exif_transpose(img)
        if transposed is not None and transposed.size != img.size:
            info.notes.append("rotated according to its EXIF orientation")
        img = transposed if transposed is not None else img
        gray = to_grayscale(img)
    except ImageDecodeError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"the image data is broken or truncated ({exc})") from exc
    if img.mode not in ("L", "RGB", "RGBA"):
        info.notes.append(f"converted from mode {info.mode} to 8-bit grayscale")
    return img, gray, info


def _thumbnail(img: Image.Image) -> Image.Image:
    """A reduced copy at most ``LOOK_CHECK_SIDE`` pixels a side (the image itself when smaller)."""
    scale = LOOK_CHECK_SIDE / max(img.size)
    if scale >= 1:
        return img
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def colourfulness(img: Image.Image) -> float:
    """Hasler & Süsstrunk's colourfulness (0 for any gray image), on a thumbnail.

    ``M = hypot(std(rg), std(yb)) + 0.3 * hypot(mean(rg), mean(yb))``, ``rg = R - G``,
    ``yb = (R + G) / 2 - B``; transparency is composited on black as :func:`to_grayscale` does.
    """
    if img.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "LA", "La"):
        return 0.0
    thumb = _thumbnail(img)
    if thumb.mode in ("RGBA", "PA", "RGBa") or (thumb.mode == "P" and "transparency" in thumb.info):
        rgba = thumb.convert("RGBA")
        thumb = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    rgb = np.asarray(thumb.convert("RGB"), dtype=np.float64)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def look_warnings(original: Image.Image, gray: Image.Image) -> list[str]:
    """Warnings when a decoded image does not look like a CT slice; empty when it does.

    The model answers anything: a strongly coloured or almost uniform picture gets an answer
    that means little, and these say so (thresholds calibrated on the dataset's 1000 slices).
    """
    found = []
    colour = colourfulness(original)
    if colour > COLOURFULNESS_LIMIT:
        found.append(
            f"{WARNING_PREFIX}this does not look like a CT slice: it is strongly coloured (colourfulness "
            f"{colour:.0f}, CT slices are gray); the model only knows chest CT, so its answer means little here"
        )
    spread = float(np.asarray(_thumbnail(gray), dtype=np.float64).std())
    if spread < LOW_CONTRAST_STD:
        found.append(
            f"{WARNING_PREFIX}this does not look like a CT slice: it is almost uniform (contrast {spread:.1f} "
            f"of 255, CT slices have body and air); the model's answer means little here"
        )
    return found


def to_grayscale(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit grayscale: transparency on black (a CT's background), high bit
    depths stretched from their own minimum to maximum."""
    mode = img.mode
    if mode == "L":
        return img
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if not np.isfinite(arr).all():
            arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    if mode == "CMYK" or mode not in ("1", "P", "RGB"):
        img = img.convert("RGB")
    return img.convert("L")
