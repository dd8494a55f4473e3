"""DICOM slices: parsed by pydicom from bytes in memory, rendered like the PNGs the model saw.

:mod:`lungdemo.decode` sends a file here by content (``DICM`` at byte 128; no ``force=True``
guessing). Against hostile files: a deflated dataset is inflated with a bound, the pixel count
is checked from the header before decoding, only the first frame is decoded, and compressions
without an installed decoder are refused by name.

CT goes through the Modality LUT to Hounsfield units and is shown in the fixed lung window
(center -600, width 1500 HU): the training PNGs' windowing is unknown and differs by class, so
no window reproduces it, and the file's own window (often mediastinal) would render the lungs
black. That window puts soft tissue near the *normal* renderings' gray, so every DICOM answer
carries :data:`TRAINED_ON_PNG_NOTE`. Other modalities use their own window (else min-max) and
get a warning; MONOCHROME1 is inverted; colour goes on as RGB through the colour check.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset, read_preamble
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder, pixel_array
from pydicom.uid import UID, JPEGExtended12Bit

from lungdemo.decoded import WARNING_PREFIX, DecodedInfo, ImageDecodeError

logger = logging.getLogger(__name__)

LUNG_WINDOW = (-600.0, 1500.0)
"""(center, width) in Hounsfield units: the standard lung window (PS3.3 C.11.2.1.2). The training
PNGs differ by class: the body's 75th-percentile gray is about 120/255 in cancer slices and 200 in
*normal* ones (every third test slice); this window puts soft tissue near 236."""
TRAINED_ON_PNG_NOTE = (
    "the model was trained on PNG renderings of CT slices (windowing unknown, not on DICOM): "
    "its answer on a DICOM file may differ from its answer on the same slice exported as PNG"
)
EIGHT_BIT_JPEG_PLUGINS = {"pillow"}
"""pydicom's JPEG plugins that decode 8-bit JPEG Extended only: with no other, 12-bit is refused up front."""
INFLATE_OVERHEAD_BYTES = 1024 * 1024
"""Room for the non-pixel elements of a deflated dataset, on top of its largest allowed image."""


def decode_dicom(data: bytes, max_pixels: int) -> tuple[Image.Image, DecodedInfo]:
    """DICOM bytes -> an 8-bit "L" image (grayscale) or an "RGB" image (colour), with notes.

    Raises :class:`ImageDecodeError`, with a message for users, for anything that is not a
    DICOM image this app can show: no pixel data, too many pixels, a compression without an
    installed decoder, broken or truncated data.
    """
    ds = read_dicom(data, max_pixels)
    rows, cols, frames = image_shape(ds)
    if rows * cols * frames > max_pixels:
        frames_text = f"x {frames} frames " if frames > 1 else ""
        raise ImageDecodeError(
            f"DICOM image is {cols}x{rows} {frames_text}= {rows * cols * frames:,} pixels; the limit is {max_pixels:,}"
        )
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    modality = str(ds.get("Modality", "") or "").strip().upper()
    info = DecodedInfo(format="DICOM", mode=photometric, size=(cols, rows), n_frames=frames)
    what = f"modality {modality}" if modality else "no modality given"
    info.notes.append(f"DICOM file ({what}, {cols}x{rows}, {ds.file_meta.TransferSyntaxUID.name})")
    if frames > 1:
        info.notes.append(f"multi-frame DICOM ({frames} frames): the first frame was used")

    arr = _first_frame(ds, rows, cols)
    bits = int(ds.get("BitsStored", 8) or 8)
    if photometric == "PALETTE COLOR":
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])  # the LUT entries' depth, 8 or 16
        arr = apply_color_lut(arr, ds)
    if arr.ndim == 3:
        img = Image.fromarray(_to_uint8(arr, bits))  # RGB (pydicom converts YBR to RGB)
        info.notes.append(f"colour DICOM ({photometric}) converted to 8-bit grayscale")
    else:
        gray = _render_gray(arr, ds, modality, info.notes)
        if photometric == "MONOCHROME1":
            gray = 255 - gray
            info.notes.append("MONOCHROME1 (low values shown white): inverted as a viewer shows it")
        img = Image.fromarray(gray)
    if modality != "CT":
        info.notes.insert(
            0, f"{WARNING_PREFIX}this DICOM file is not a CT image ({what}); the model knows chest CT only"
        )
    info.notes.append(TRAINED_ON_PNG_NOTE)
    return img, info


def read_dicom(data: bytes, max_pixels: int) -> Dataset:
    """Parse a DICOM file in memory (``force=False``), the pixel data still encoded.

    A deflated dataset is inflated here with a bound instead of by pydicom, which would
    inflate it whole: a few megabytes can expand to gigabytes.
    """
    try:
        fp = DicomBytesIO(data)
        read_preamble(fp, False)
        meta = read_dataset(fp, is_implicit_VR=False, is_little_endian=True, stop_when=_past_file_meta)
        syntax = meta.get("TransferSyntaxUID")
        if syntax is None:
            raise ImageDecodeError("the DICOM file has no transfer syntax in its file meta information")
        syntax = UID(str(syntax))
        if syntax.is_deflated:
            ds = read_dataset(
                DicomBytesIO(_inflate(data[fp.tell() :], 4 * max_pixels + INFLATE_OVERHEAD_BYTES)),
                is_implicit_VR=False,
                is_little_endian=True,
            )
            ds.file_meta = FileMetaDataset(meta)
        else:
            ds = pydicom.dcmread(DicomBytesIO(data), force=False)
    except ImageDecodeError:
        raise
    except Exception as exc:  # a third-party parser on untrusted bytes: any failure is the file's
        logger.info("unreadable DICOM file: %r", exc)
        raise ImageDecodeError(f"the DICOM file is broken or truncated ({_one_line(exc)})") from exc
    if "PixelData" not in ds:
        kind = ds.get("SOPClassUID")
        kind_text = f" (it is a {UID(str(kind)).name})" if kind else ""
        others = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        detail = f"; float pixel data ({others[0]}) is not supported" if others else ""
        raise ImageDecodeError(f"the DICOM file holds no image: it has no pixel data{kind_text}{detail}")
    if syntax.is_compressed:
        decoder = get_decoder(syntax)
        if not decoder.is_available:
            raise _no_decoder(syntax.name)
        bits = _bits_stored(ds)
        only_8_bit = set(decoder.available_plugins) <= EIGHT_BIT_JPEG_PLUGINS
        if syntax == JPEGExtended12Bit and bits is not None and bits != 8 and only_8_bit:
            raise _no_decoder(f"{syntax.name} with {bits}-bit samples")
    return ds


def _no_decoder(compression: str) -> ImageDecodeError:
    return ImageDecodeError(
        f"the DICOM pixel data is compressed as {compression}, which this server cannot decode: "
        "send it uncompressed, or as PNG"
    )


def _bits_stored(ds: Dataset) -> int | None:
    """The header's BitsStored (8 when absent), None when it is not a number."""
    try:
        return int(ds.get("BitsStored", 8) or 8)
    except (TypeError, ValueError):
        return None


def image_shape(ds: Dataset) -> tuple[int, int, int]:
    """(rows, columns, frames) from the header: what decoding would allocate, known before it."""
    missing = [k for k in ("Rows", "Columns") if ds.get(k) is None]
    if missing:
        raise ImageDecodeError(f"the DICOM image description is incomplete: no {' and no '.join(missing)}")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise ImageDecodeError(f"the DICOM image description is invalid ({_one_line(exc)})") from exc
    if rows <= 0 or cols <= 0 or frames <= 0:
        raise ImageDecodeError(f"the DICOM image has no pixels ({cols}x{rows}, {frames} frames)")
    return rows, cols, frames


def window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM linear VOI windowing (PS3.3 C.11.2.1.2.1) onto 0..255, as ``uint8``.

    Values at or below ``center - 0.5 - (width - 1) / 2`` are black, values above
    ``center - 0.5 + (width - 1) / 2`` are white, the rest linear in between.
    """
    width = max(float(width), 1.0)
    scaled = ((values.astype(np.float64) - (center - 0.5)) / max(width - 1.0, 1e-9) + 0.5) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def rescale(ds: Dataset) -> tuple[float, float] | None:
    """(slope, intercept) of the Modality LUT: top level, else the enhanced multi-frame
    functional groups (the first frame's, then the shared ones); None when absent."""
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    for groups in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        seq = ds.get(groups)
        if not seq:
            continue
        transform = seq[0].get("PixelValueTransformationSequence")
        if transform:
            item = transform[0]
            return float(item.get("RescaleSlope", 1) or 1), float(item.get("RescaleIntercept", 0) or 0)
    return None


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line: pydicom's messages span lines and list every plugin."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _past_file_meta(tag: Any, vr: Any, length: int) -> bool:
    return tag.group != 0x0002


def _inflate(body: bytes, limit: int) -> bytes:
    """Inflate a raw deflate stream, refusing output past ``limit`` bytes."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = inflater.decompress(body, limit)
    if inflater.unconsumed_tail:
        raise ImageDecodeError(
            f"the deflated DICOM file expands past {limit:,} bytes, more than an image within the pixel limit needs"
        )
    return out


def _first_frame(ds: Dataset, rows: int, cols: int) -> np.ndarray:
    """Decode frame 0 only (pydicom decodes one frame when given an index)."""
    try:
        arr = pixel_array(ds, index=0)
    except Exception as exc:  # decoders raise anything on bad data
        logger.info("DICOM pixel data not decodable: %r", exc)
        raise ImageDecodeError(
            f"the DICOM pixel data cannot be decoded: broken, truncated or in a form this server does not support "
            f"({_one_line(exc)})"
        ) from exc
    if arr.shape[:2] != (rows, cols):
        raise ImageDecodeError(f"the DICOM pixel data is {arr.shape[:2]}, not the {rows}x{cols} its header says")
    return arr


def _render_gray(arr: np.ndarray, ds: Dataset, modality: str, notes: list[str]) -> np.ndarray:
    """One grayscale frame -> ``uint8``: Modality LUT, then the window chosen for the modality."""
    if ds.get("ModalityLUTSequence"):
        values = apply_modality_lut(arr, ds).astype(np.float64)
        how = "the Modality LUT"
    else:
        found = rescale(ds)
        slope, intercept = found if found is not None else (1.0, 0.0)
        values = arr.astype(np.float64) * slope + intercept
        how = f"slope {slope:g}, intercept {intercept:g}" if found is not None else "no rescale in the file"
    if not np.isfinite(values).all():
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    own = _own_window(ds)
    if modality == "CT":
        center, width = LUNG_WINDOW
        notes.append(
            f"rescaled to Hounsfield units ({how}), shown in a lung window (center {center:g}, width {width:g} HU)"
        )
        if own is not None:
            notes.append(f"the file's own display window (center {own[0]:g}, width {own[1]:g}) was not used")
        return window(values, center, width)
    if own is not None:
        notes.append(f"shown in the file's own display window (center {own[0]:g}, width {own[1]:g})")
        return window(values, *own)
    notes.append("no display window in the file: values stretched from their minimum to their maximum")
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.clip(np.rint((values - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _own_window(ds: Dataset) -> tuple[float, float] | None:
    """The file's first WindowCenter/WindowWidth pair, if it has a usable one."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        c = float(center[0] if isinstance(center, MultiValue) else center)
        w = float(width[0] if isinstance(width, MultiValue) else width)
    except (TypeError, ValueError, IndexError):
        return None
    return (c, w) if np.isfinite(c) and np.isfinite(w) and w >= 1 else None


def _to_uint8(arr: np.ndarray, bits: int) -> np.ndarray:
    """Colour samples of ``bits`` bits (unsigned) -> 8 bits per channel."""
    if arr.dtype == np.uint8 and bits <= 8:
        return np.ascontiguousarray(arr)
    top = float(2 ** max(1, min(bits, 32)) - 1)
    scaled = arr.astype(np.float64) * (255.0 / top)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
