"""Mask and gray-level primitives :mod:`lungdemo.framing` is built from: boxes, openings,
connected components, Otsu's threshold, and the reduced size large pictures are searched at.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

Box = tuple[int, int, int, int]
"""(left, top, right, bottom), right and bottom exclusive, as PIL's ``crop`` takes it."""

WORK_SIDE = 512
"""Images with a longer side are searched at a size reduced by a whole factor: fast, and bounded in memory."""


def bbox(mask: np.ndarray) -> Box | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def open_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary opening with a (2r+1) square: separable min/max filters, fast at any size."""
    if radius <= 0:
        return mask
    size = 2 * radius + 1
    return ndi.maximum_filter(ndi.minimum_filter(mask, size=size, mode="nearest"), size=size, mode="constant")


def components(mask: np.ndarray, keep: float, beside: bool = True) -> np.ndarray:
    """The largest connected region (holes filled) and the parts beside it (the arms).

    A part is kept when it has at least ``keep`` of the largest one's area and, with ``beside``,
    is no taller and no wider than it with at least half of its rows level with it: a toolbar or
    a side panel of a screenshot, taller or wider than the body or above it, is not.
    """
    labels, n = ndi.label(fill_holes(mask))  # areas with the lungs in them
    if n == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    largest = int(sizes.argmax())
    chosen = np.zeros(n + 1, dtype=bool)
    chosen[largest] = True
    if keep < 1:
        boxes = ndi.find_objects(labels)
        rows, cols = boxes[largest - 1]
        for k in np.flatnonzero(sizes >= keep * sizes[largest]):
            r, c = boxes[k - 1]
            height, width = r.stop - r.start, c.stop - c.start
            level = min(r.stop, rows.stop) - max(r.start, rows.start)
            small = height <= rows.stop - rows.start and width <= cols.stop - cols.start
            chosen[k] = chosen[k] or not beside or (small and level >= 0.5 * height)
    return chosen[labels]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every background region that does not reach the border filled in.

    The same result as ``ndi.binary_fill_holes``, from one labelling instead of repeated dilations.
    """
    labels, n = ndi.label(~mask)
    if n == 0:
        return mask
    border = np.zeros(n + 1, dtype=bool)
    border[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    border[0] = True  # label 0 is the mask itself
    return mask | ~border[labels]


def otsu_threshold(gray: np.ndarray) -> int:
    """Otsu's threshold of a ``uint8`` image: the gray level that best splits it in two classes."""
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    p = hist / hist.sum()
    w = np.cumsum(p)
    mu = np.cumsum(p * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * w - mu) ** 2 / (w * (1.0 - w))
    return int(np.argmax(np.nan_to_num(between[:-1], nan=0.0)))


def body_level(gray: np.ndarray, threshold: int, level: float) -> int:
    """The gray level above which a pixel is body (see the module docstring)."""
    background = float(np.percentile(gray, 1))
    return max(threshold, int(background + level * (otsu_threshold(gray) - background)))


def radius(shape: tuple[int, ...], share: float) -> int:
    return max(1, round(share * min(shape))) if share > 0 else 0


def reduced(gray: np.ndarray) -> tuple[np.ndarray, int]:
    """``gray`` reduced by the smallest whole factor that brings it within ``WORK_SIDE``, and the factor."""
    factor = -(-max(gray.shape) // WORK_SIDE)
    if factor <= 1:
        return gray, 1
    return np.asarray(Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8)).reduce(factor)), factor


def scale_box(box: Box, factor: int, shape: tuple[int, ...]) -> Box:
    left, top, right, bottom = box
    return left * factor, top * factor, min(shape[1], right * factor), min(shape[0], bottom * factor)
