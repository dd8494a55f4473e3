"""The tilt of a slice's body, and how far a tilted upload is turned back (``slice_deskew``).

:func:`~lungdemo.framing.frame_slice` measures the body's axis from its second moments and,
within ``deskew`` degrees, turns the slice: to level, or with ``keep_tilt`` only back to the
largest tilt the training slices have themselves, so a clean slice is left as it is.
"""

from __future__ import annotations

import math

import numpy as np

MIN_ECCENTRICITY = 0.1
"""Bodies rounder than this (0 is a disc, 1 a line) have no axis to level: the dataset's are 0.12..0.6."""
MIN_DESKEW = 1.0
"""Turns under this many degrees are not made: not worth a resampling of the slice."""


def body_angle(body: np.ndarray) -> float | None:
    """The body's orientation in degrees, counter-clockwise as displayed, from its second moments.

    ``None`` when the body is too round for its axis to mean anything. A chest is wider than deep,
    so a straight slice measures about 0 (the dataset's slices: -7..+6, half within 1.5).
    """
    ys, xs = np.nonzero(body)
    if xs.size < 2:
        return None
    x, y = xs - xs.mean(), ys - ys.mean()
    mu20, mu02, mu11 = float((x * x).mean()), float((y * y).mean()), float((x * y).mean())
    if mu20 + mu02 <= 0 or np.hypot(mu20 - mu02, 2 * mu11) / (mu20 + mu02) < MIN_ECCENTRICITY:
        return None
    return -0.5 * float(np.degrees(np.arctan2(2 * mu11, mu20 - mu02)))  # image rows grow downwards


def tilt_turn(angle: float, keep_tilt: float = 0.0) -> float:
    """How far to turn a body tilted by ``angle``: back to ``keep_tilt`` (0: level); 0 under MIN_DESKEW."""
    turn = angle - math.copysign(min(keep_tilt, abs(angle)), angle)
    return turn if abs(turn) >= MIN_DESKEW else 0.0


def turned_note(angle: float, turn: float) -> str:
    """What the page says when a tilted slice was turned before it was classified."""
    return (
        f"the slice is tilted by {angle:+.0f} degrees: it was turned to {angle - turn:+.0f} degrees, "
        "within the tilts of the training slices, before it was classified"
    )
