"""Grayscale slice -> model input: framing, resize and normalisation, with their stored config.

Training, evaluation, the app and batch prediction all use :func:`decode_canonical` (or
:func:`canonical_image`) then :func:`normalize`, with the :class:`PreprocessConfig` stored in
the model folder's ``config.json``: nothing else resizes or normalises, so the app sees what
evaluation saw. Reading files is :mod:`lungdemo.decode`'s job.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from lungdemo.decode import DEFAULT_MAX_PIXELS, DecodedInfo, decode_image
from lungdemo.framing import frame_slice, slice_problems
from lungdemo.intensity import INTENSITY_POLICIES, standardize_u8

RESIZE_POLICIES = ("body_crop_pad", "slice_crop_pad", "pad", "squash")
SLICE_SEARCHES = ("levels", "standardized")
"""Where ``slice_crop_pad`` looks for the body: the upload's gray levels, or the picture standardised first."""
SAVED_BEFORE: dict[str, Any] = {"slice_fill": False, "slice_search": "levels"}
"""Fields added later, with what a ``config.json`` written before them meant."""
_INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


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
    # the way from the background to Otsu's threshold, the largest tilt straightened (degrees), the tilt it is turned
    # back to (and within which a slice is left alone: the training slices' own tilts), and whether canvas in
    # the picture's corners (a slice rotated on a light canvas) is painted with the slice's background (read as
    # False from folders saved before it existed, so they keep their behaviour: ``SAVED_BEFORE``)
    slice_tolerance: int = 12
    slice_opening: float = 0.01
    slice_keep: float = 0.1
    slice_level: float = 0.5
    slice_deskew: float = 0.0
    slice_deskew_keep: float = 0.0
    slice_fill: bool = True
    # where the body is looked for (SLICE_SEARCHES): in the gray levels as uploaded, or with ``standardized`` in
    # the picture standardised on the intensity quantiles below, so an export's gamma does not move the crop
    slice_search: str = "levels"
    # gray levels (lungdemo.intensity): ``none`` as decoded (every folder saved before it), or ``standardize``
    # each slice on its own ``intensity_white`` and ``intensity_mid`` quantiles
    intensity: str = "none"
    intensity_white: float = 0.99
    intensity_mid: float = 0.75

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
            self.slice_tolerance,
            self.slice_opening,
            self.slice_keep,
            self.slice_level,
            self.slice_deskew,
            self.slice_deskew_keep,
        )
        if not isinstance(self.slice_fill, bool):
            problems.append(f"slice_fill must be true or false, got {self.slice_fill!r}")
        if self.slice_search not in SLICE_SEARCHES:
            problems.append(f"slice_search must be one of {SLICE_SEARCHES}, got {self.slice_search!r}")
        if self.intensity not in INTENSITY_POLICIES:
            problems.append(f"intensity must be one of {INTENSITY_POLICIES}, got {self.intensity!r}")
        if not 0 < self.intensity_mid < self.intensity_white <= 1:
            problems.append(
                "intensity quantiles need 0 < intensity_mid < intensity_white <= 1, got "
                f"{self.intensity_mid!r} and {self.intensity_white!r}"
            )
        if problems:
            raise ValueError("invalid preprocessing config: " + "; ".join(problems))

    def framing(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~lungdemo.framing.frame_slice` this config stands for."""
        return {
            "threshold": self.body_threshold,
            "tolerance": self.slice_tolerance,
            "opening": self.slice_opening,
            "keep": self.slice_keep,
            "level": self.slice_level,
            "deskew": self.slice_deskew,
            "keep_tilt": self.slice_deskew_keep,
            "fill": self.slice_fill,
            "search": (self.intensity_white, self.intensity_mid) if self.slice_search == "standardized" else None,
        }

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
        values = {**SAVED_BEFORE, **data}
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)


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

    ``body_crop_pad`` crops to the body, then pads to a square with black: the dataset's splits
    are framed differently, and normalising the framing is what generalised best.
    ``slice_crop_pad`` (:mod:`lungdemo.framing`) first finds the slice in a real upload (frames,
    canvases, overlay text left out); its notes are appended to ``notes`` when given.
    """
    if gray.mode != "L":
        raise ValueError(f"canonical_image expects an 'L' image, got {gray.mode}")
    resample = _INTERPOLATIONS[cfg.interpolation]
    if cfg.resize == "body_crop_pad":
        box = body_bbox(np.asarray(gray), cfg.body_threshold)
        gray = _pad_to_square(gray.crop(box))
    elif cfg.resize == "slice_crop_pad":
        gray, found = frame_slice(gray, **cfg.framing())
        if notes is not None:
            notes += found.notes
        gray = _pad_to_square(gray)
    elif cfg.resize == "pad":
        gray = _pad_to_square(gray)
    return gray.resize((cfg.image_size, cfg.image_size), resample=resample)


def decode_canonical(source: bytes | str | Path, cfg: PreprocessConfig) -> tuple[torch.Tensor, DecodedInfo]:
    """Decode and frame one file: a ``uint8`` tensor ``(1, size, size)`` and the decode notes.

    Every path starts here (predictor, Grad-CAM, batch prediction, the training cache), then
    augments and/or calls :func:`normalize`.
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
    if cfg.intensity == "standardize":
        x = standardize_u8(batch, cfg.intensity_white, cfg.intensity_mid)  # = standardize(batch / 255), bit for bit
    else:
        x = batch.to(torch.float32).div_(255.0)
    x = x.expand(*x.shape[:-3], cfg.in_channels, *x.shape[-2:])
    mean = torch.tensor(cfg.mean, dtype=torch.float32, device=batch.device).view(-1, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32, device=batch.device).view(-1, 1, 1)
    return (x - mean) / std
