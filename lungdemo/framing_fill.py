"""The canvas around a slice rotated on a light background (``slice_fill``, :mod:`lungdemo.framing`).

Rotating a picture on a canvas leaves wedges of the canvas colour in the corners of its box;
framing paints them with the slice's own air, so neither the body search nor the model sees them.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from lungdemo.framing_masks import Box


def corner_fill(view: np.ndarray, colours: list[int], tolerance: float) -> tuple[np.ndarray, int] | None:
    """The canvas reaching into the corners of a picture, and the gray to paint it with.

    A slice rotated on a light canvas leaves wedges of the canvas colour in the corners of its
    picture. A corner region counts when it is within ``tolerance`` of a canvas colour stripped
    around the picture, so a slice without a canvas is never touched; it is kept to its wedge
    (:func:`_wedge`), so a body of the canvas's gray touching the wedge is not painted with it. The
    mask grows by a pixel to take the blended edge of the rotation; the paint is the picture's
    darkest gray outside it (the air around the body). ``None`` when no corner holds canvas.
    """
    corners = [(0, 0), (0, -1), (-1, 0), (-1, -1)]
    mask = np.zeros(view.shape, dtype=bool)
    for colour in dict.fromkeys(colours):
        near = np.abs(view.astype(np.int16) - colour) <= tolerance
        if not any(near[c] for c in corners):
            continue
        labels, _ = ndi.label(near)
        for corner in corners:
            if labels[corner]:
                mask |= _wedge(labels == labels[corner], corner)
    if not mask.any() or mask.all():
        return None
    mask = ndi.binary_dilation(mask, structure=np.ones((3, 3), dtype=bool))
    return mask, int(np.percentile(view[~mask], 1)) if (~mask).any() else 0


def _wedge(region: np.ndarray, corner: tuple[int, int]) -> np.ndarray:
    """The part of a corner's canvas ``region`` inside the triangle its runs along the two sides span.

    The canvas left in a corner by a rotation is a right triangle whose legs are the canvas runs along
    the picture's sides from that corner: what lies beyond its long side is picture, whatever its gray.
    """
    height, width = region.shape
    flipped = region[:: -1 if corner[0] else 1, :: -1 if corner[1] else 1]  # the corner at (0, 0)
    across = int(np.argmin(flipped[0])) if not flipped[0].all() else width  # run along the corner's row
    down = int(np.argmin(flipped[:, 0])) if not flipped[:, 0].all() else height  # and its column
    rows, cols = np.ogrid[:height, :width]
    inside = rows * across + cols * down <= (across * down) * (1 + 1.5 / max(1, min(across, down)))
    wedge = flipped & inside
    return wedge[:: -1 if corner[0] else 1, :: -1 if corner[1] else 1]


def painted(gray: Image.Image, picture: Box, mask: np.ndarray, value: int) -> Image.Image:
    """``gray`` with ``mask`` (in ``picture``'s coordinates, from :func:`corner_fill`) painted ``value``."""
    left, top, right, bottom = picture
    pixels = np.array(gray)
    pixels[top:bottom, left:right][mask] = value
    return Image.fromarray(pixels)
