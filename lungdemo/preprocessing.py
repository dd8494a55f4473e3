"""The one definition of how a CT slice becomes model input.

Training, validation, test evaluation and the app all call :func:`preprocess` (or its two
halves :func:`canonical_image` and :func:`normalize`) with the :class:`PreprocessConfig` that
is stored in the model folder's ``config.json``. Nothing else in the project resizes or
normalises images, so the app sees exactly what evaluation saw.

Steps, in order:

1. :func:`decode_image` reads the bytes (refusing files over ``DEFAULT_MAX_BYTES`` before
   reading them), opens them by content (never by file name): DICOM (the ``DICM`` prefix at
   byte 128) goes to :mod:`lungdemo.dicom`, everything else to PIL. It refuses pixel counts
   over a limit *before* decoding them, applies EXIF rotation, takes the first frame, and
   turns every PIL mode (1-bit, palette, 16-bit, float, CMYK, RGBA, LA, ...) into 8-bit
   grayscale. CT is a single-channel modality; colour in this dataset is only a trace of
   the source the file came from, so it is dropped on purpose. Before dropping it,
   :func:`look_warnings` checks that the file looks like a CT slice at all: a colour
   photograph still gets an answer, with a warning among the notes.
2. :func:`canonical_image` frames the slice: with ``resize="body_crop_pad"`` it crops to the
   bounding box of pixels brighter than ``body_threshold`` (the body), pads to a square with
   black so the aspect ratio is kept, and resizes to ``image_size``. The splits of the
   dataset are framed differently; normalising the framing is what generalised best.
   ``resize="slice_crop_pad"`` (:mod:`lungdemo.framing`) finds the slice in real uploads first:
   frames and canvases of any colour, overlay text, rulers and noise are left out of the box.
3. :func:`normalize` scales to [0, 1], repeats the gray channel ``in_channels`` times and
   applies ``mean``/``std``.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from lungdemo.framing import frame_slice, slice_problems

logger = logging.getLogger(__name__)

RESIZE_POLICIES = ("body_crop_pad", "slice_crop_pad", "pad", "squash")
DEFAULT_MAX_PIXELS = 40_000_000  # a 6000x6000 slice; CT renderings are far smaller
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
"""Largest file accepted (20 MiB): the dataset's largest PNG is under 1 MiB, an uncompressed
512x512 CT DICOM about 0.5 MiB. Checked before the file is read into memory."""

DICOM_PREFIX = b"DICM"
DICOM_PREFIX_OFFSET = 128

WARNING_PREFIX = "warning: "
"""Notes that start with this are warnings (the file may not be what the model knows).
They are ordinary notes, so every place that shows notes (page, reports) shows them."""
COLOURFULNESS_LIMIT = 20.0
"""Warn above this colourfulness (Hasler & Süsstrunk 2003, 0 for gray; on their scale 15 is
"slightly" and 33 "moderately" colourful). Measured on all 1000 slices of the dataset: at most
9.9 (faint coloured annotations on a few *normal* slices), 0 for most."""
LOW_CONTRAST_STD = 10.0
"""Warn when the grayscale standard deviation (0..255) is below this: a blank or almost
uniform picture. The dataset's slices are at least 25."""
LOOK_CHECK_SIDE = 256
"""The look checks run on a thumbnail at most this big: cheap and size-independent."""


class ImageDecodeError(ValueError):
    """Raised when a file cannot be turned into a slice; the message is shown to users."""


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything needed to turn a decoded slice into a model input tensor.

    Stored under ``"preprocessing"`` in the model folder's ``config.json``.
    """

    image_size: int = 224
    resize: str = "body_crop_pad"
    body_threshold: int = 20
    interpolation: str = "bilinear"
    in_channels: int = 3
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    color_mode: str = "grayscale"
    max_pixels: int = DEFAULT_MAX_PIXELS
    # slice_crop_pad only (see lungdemo.framing): canvas tolerance in gray levels, opening as a share of the
    # image side, the area share of the largest component that still counts as body, the body level's share of
    # the way from the background to Otsu's threshold, the largest tilt straightened (degrees)
    slice_tolerance: int = 12
    slice_opening: float = 0.01
    slice_keep: float = 0.1
    slice_level: float = 0.5
    slice_deskew: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.image_size, int) or not 32 <= self.image_size <= 1024:
            problems.append(f"image_size must be an integer in 32..1024, got {self.image_size!r}")
        if self.resize not in RESIZE_POLICIES:
            problems.append(f"resize must be one of {RESIZE_POLICIES}, got {self.resize!r}")
        if not 0 <= int(self.body_threshold) < 255:
            problems.append(f"body_threshold must be in 0..254, got {self.body_threshold!r}")
        if self.interpolation not in _INTERPOLATIONS:
            problems.append(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.color_mode != "grayscale":
            problems.append(f"color_mode must be 'grayscale', got {self.color_mode!r}")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            problems.append(
                f"mean and std need {self.in_channels} values each, got {list(self.mean)} and {list(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            problems.append(f"std values must be positive, got {list(self.std)}")
        problems += slice_problems(
            self.slice_tolerance, self.slice_opening, self.slice_keep, self.slice_level, self.slice_deskew
        )
        if problems:
            raise ValueError("invalid preprocessing config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        """Build from a stored dict; unknown keys are an error, so a typo cannot pass silently."""
        if not isinstance(data, dict):
            raise ValueError(f"preprocessing config must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"invalid preprocessing config: unknown keys {unknown}")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)


_INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


@dataclass
class DecodedInfo:
    """What decoding saw, for warnings and the data audit."""

    format: str | None
    mode: str
    size: tuple[int, int]
    n_frames: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """The notes that are warnings (they come first in :attr:`notes`)."""
        return [n for n in self.notes if n.startswith(WARNING_PREFIX)]


def read_source(source: bytes | str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The file's bytes, refusing more than ``max_bytes``; a path's size is checked before reading.

    Gradio refuses larger uploads already; this guards every other caller (batch prediction,
    Python callers, the API of a server launched without the upload limit).
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
    """Open an image by its content and check its pixel count before any pixel is decoded.

    PIL reads only the header in ``Image.open``; checking ``width * height`` here stops
    decompression bombs (a 40000x40000 PNG is a few kB on disk) before they take memory.
    DICOM is not opened here (PIL cannot): :func:`decode_image` handles it.
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
    """Decode any supported image (or a DICOM slice) into an 8-bit grayscale ("L") PIL image.

    Returns the image and what was seen; :attr:`DecodedInfo.warnings` says when it does not
    look like a CT slice. Raises :class:`ImageDecodeError` with a message fit for users on
    anything that is not a readable image.
    """
    data = read_source(source, max_bytes)
    if data and is_dicom(data):
        from lungdemo.dicom import decode_dicom  # pydicom takes ~0.3 s to import: only DICOM pays it

        img, info = decode_dicom(data, max_pixels)
        gray = to_grayscale(img)
    else:
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
    try:
        warnings = look_warnings(img, gray)
    except (OSError, ValueError) as exc:  # advisory only: never let it refuse a decoded slice
        logger.warning("look check skipped for a %s image: %s", info.mode, exc)
        warnings = []
    if warnings:
        logger.info("decoded image may not be a CT slice: %s", "; ".join(warnings))
        info.notes[:0] = warnings
    return gray, info


def _thumbnail(img: Image.Image) -> Image.Image:
    """A reduced copy at most ``LOOK_CHECK_SIDE`` pixels a side (the image itself when smaller)."""
    scale = LOOK_CHECK_SIDE / max(img.size)
    if scale >= 1:
        return img
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def colourfulness(img: Image.Image) -> float:
    """Hasler & Süsstrunk's colourfulness of an image (0 for any gray image).

    ``M = sqrt(std(rg)^2 + std(yb)^2) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2)`` with
    ``rg = R - G`` and ``yb = (R + G) / 2 - B``, measured after compositing transparency on
    black (as :func:`to_grayscale` does) on a thumbnail of at most ``LOOK_CHECK_SIDE`` pixels.
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

    A cheap heuristic, not a classifier: CT is grayscale, so a strongly coloured picture
    (a photograph, a chart) is not a CT rendering; and a slice has body and air, so an almost
    uniform picture is not one either. The thresholds are calibrated on the dataset's 1000
    slices with a wide margin (see ``COLOURFULNESS_LIMIT`` and ``LOW_CONTRAST_STD``): the
    model answers anything, and these say when the answer is unlikely to mean anything.
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
    """Convert any PIL mode to 8-bit grayscale.

    Transparent pixels are composited onto black (the background of a CT rendering);
    high-bit-depth data is stretched from its own minimum to maximum onto 0..255.
    """
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


def body_bbox(gray: np.ndarray, threshold: int) -> tuple[int, int, int, int]:
    """Bounding box (left, top, right, bottom) of pixels brighter than ``threshold``.

    Falls back to the whole image when nothing is brighter, so a black upload still works.
    """
    mask = gray > threshold
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0 or cols.size == 0:
        return 0, 0, gray.shape[1], gray.shape[0]
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _pad_to_square(img: Image.Image) -> Image.Image:
    side = max(img.size)
    canvas = Image.new("L", (side, side), 0)
    canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return canvas


def canonical_image(gray: Image.Image, cfg: PreprocessConfig, notes: list[str] | None = None) -> Image.Image:
    """Frame a grayscale slice and resize it to ``cfg.image_size`` square (an "L" image).

    Framing notes (e.g. no slice found) are appended to ``notes`` when given.
    """
    if gray.mode != "L":
        raise ValueError(f"canonical_image expects an 'L' image, got {gray.mode}")
    resample = _INTERPOLATIONS[cfg.interpolation]
    if cfg.resize == "body_crop_pad":
        box = body_bbox(np.asarray(gray), cfg.body_threshold)
        gray = _pad_to_square(gray.crop(box))
    elif cfg.resize == "slice_crop_pad":
        gray, found = frame_slice(
            gray,
            threshold=cfg.body_threshold,
            tolerance=cfg.slice_tolerance,
            opening=cfg.slice_opening,
            keep=cfg.slice_keep,
            level=cfg.slice_level,
            deskew=cfg.slice_deskew,
        )
        if notes is not None:
            notes += found.notes
        gray = _pad_to_square(gray)
    elif cfg.resize == "pad":
        gray = _pad_to_square(gray)
    return gray.resize((cfg.image_size, cfg.image_size), resample=resample)


def decode_canonical(source: bytes | str | Path, cfg: PreprocessConfig) -> tuple[torch.Tensor, DecodedInfo]:
    """Decode and frame a file into a ``uint8`` tensor ``(1, size, size)``, with decode notes.

    This is what the training data cache stores: augmentation and normalisation start here.
    """
    gray, info = decode_image(source, cfg.max_pixels)
    arr = np.asarray(canonical_image(gray, cfg, info.notes), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).unsqueeze(0), info


def canonical_tensor(source: bytes | str | Path, cfg: PreprocessConfig) -> torch.Tensor:
    """:func:`decode_canonical` without the notes."""
    return decode_canonical(source, cfg)[0]


def normalize(batch: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """``uint8`` ``(..., 1, H, W)`` -> normalised float ``(..., in_channels, H, W)``."""
    if batch.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 input, got {batch.dtype}")
    x = batch.to(torch.float32).div_(255.0)
    x = x.expand(*x.shape[:-3], cfg.in_channels, *x.shape[-2:])
    mean = torch.tensor(cfg.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32).view(-1, 1, 1)
    return (x - mean) / std


def preprocess(source: bytes | str | Path, cfg: PreprocessConfig) -> torch.Tensor:
    """File bytes or path -> model input ``(in_channels, size, size)``: the evaluation path."""
    return normalize(canonical_tensor(source, cfg), cfg)
