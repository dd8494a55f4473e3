"""Find the CT slice in what people upload: figures, frames, viewer screenshots.

``body_crop_pad`` crops to the box of every pixel above a threshold, so a light frame, a canvas,
overlay text or lifted noise becomes part of the "body". :func:`find_slice` (the
``slice_crop_pad`` policy) instead:

1. strips canvases and frames of any colour: while the outer ring of the picture is one uniform
   colour brighter than the body threshold, it keeps the largest region that differs from that
   colour (after an opening, so caption text, rulers and JPEG ringing do not count), moves its
   sides to where the canvas colour begins and past the blended band a blur or JPEG leaves
   there, and crops to it;
2. finds the body: pixels above a level, opened so thin overlay text, rulers, the table and
   noise fall apart from it; the largest connected component and the components beside it
   with at least ``keep`` of its area (the arms) are the body, and its box is the crop. The level is
   ``body_threshold`` or, when higher, ``level`` of the way from the background's gray (its 1st
   percentile) to Otsu's threshold: it follows a lifted background or a brighter gamma, where a
   fixed threshold lets the faint table and noise join the body. The body is then looked for once
   more around its first box, so the level and the opening follow the slice, not its canvas;
   With ``fill``, the canvas colour reaching into the picture's corners (the fill around a slice
   rotated on a light canvas) is first painted with the picture's own background, so neither the
   body step nor the model sees light wedges;
3. optionally (``deskew``, :func:`frame_slice`, :mod:`lungdemo.framing_tilt`) levels a tilted
   body: its axis from the second moments, rotated back when within the limit. With
   ``keep_tilt``, tilts the training slices mostly have are left alone and a larger one is only
   turned back to that tilt, so a turned upload comes back into the range the model has seen.

The mask primitives are in :mod:`lungdemo.framing_masks`. Nothing here raises on odd input: an
empty, uniform or tiny image gives the whole image back, with a note saying so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from lungdemo.framing_fill import corner_fill, painted
from lungdemo.framing_masks import (
    Box,
    bbox,
    body_level,
    components,
    open_mask,
    otsu_threshold,
    radius,
    reduced,
    scale_box,
)
from lungdemo.framing_tilt import body_angle, tilt_turn, turned_note
from lungdemo.intensity import standardize_lut

logger = logging.getLogger(__name__)
__all__ = ["NOTE_NO_BODY", "Framing", "body_angle", "find_slice", "frame_slice", "otsu_threshold", "slice_problems"]

FRAMING_REVISION = 3
"""Raised whenever a change here can frame a file differently: decoded-slice caches are keyed by it."""
MAX_CANVAS_PASSES = 4
"""Nested frames stripped at most (a figure page, a frame line, a viewer canvas, one spare)."""
UNIFORM_RING = 0.75
"""Share of the outer ring within ``tolerance`` of its median for the border to count as uniform."""
PEEL_SHARE = 0.9
"""A border row or column with this share of canvas-coloured pixels is canvas, not slice."""
MIN_BODY_SHARE = 0.002
"""A body smaller than this share of the image is no body: the whole image is used instead."""
MIN_SIDE = 8
"""Images with a side shorter than this are too small to look into: the whole image is used."""
RAMP_SHARE = 0.02
RAMP_MIN = 3
"""The blended band between a canvas and its picture is peeled at most this deep (share of the side, lines)."""
REFINE_MARGIN = 0.05
"""The body is looked for a second time in its first box grown by this share on each side."""
DARK_BORDER_LEVEL = 75
"""With ``search``: the percentile of the picture's darkest side taken as its border's gray; when under the body
threshold (a dark canvas or the slice's air, its noise included), gray levels up to it are black before
standardising."""
NOTE_NO_BODY = "no slice found in the image (it is empty, uniform or tiny): the whole image was used"


@dataclass
class Framing:
    """Where the slice is, and what was done to find it (for notes and tests)."""

    box: Box
    picture: Box
    """The picture inside every canvas and frame stripped."""
    canvases: list[int] = field(default_factory=list)
    """Gray level of each uniform canvas or frame stripped, outermost first."""
    angle: float | None = None
    """The body's tilt (:func:`body_angle`)."""
    deskewed: float = 0.0
    """Degrees the slice was rotated back by :func:`frame_slice` (0 when it was not)."""
    fill: np.ndarray | None = None
    """With ``fill``: the picture's pixels painted with ``fill_value`` (canvas in its corners), or ``None``."""
    fill_value: int = 0
    black: int = 0
    """With a standardised search: the gray taken as black before it (:func:`border_black`)."""
    notes: list[str] = field(default_factory=list)


def slice_problems(
    tolerance: float,
    opening: float,
    keep: float,
    level: float,
    deskew: float = 0.0,
    keep_tilt: float = 0.0,
    *,
    prefix: str = "slice_",
) -> list[str]:
    """What is wrong with a set of parameters (empty when they are valid)."""
    problems = []
    if not 0 <= tolerance < 128:
        problems.append(f"{prefix}tolerance must be in 0..127, got {tolerance!r}")
    if not 0 <= opening <= 0.1:
        problems.append(f"{prefix}opening must be in 0..0.1 of the image side, got {opening!r}")
    if not 0 < keep <= 1:
        problems.append(f"{prefix}keep must be in (0, 1], got {keep!r}")
    if not 0 <= level <= 1:
        problems.append(f"{prefix}level must be in 0..1, got {level!r}")
    if not 0 <= deskew <= 45:
        problems.append(f"{prefix}deskew must be in 0..45 degrees, got {deskew!r}")
    if not 0 <= keep_tilt <= 45:
        problems.append(f"{prefix}deskew_keep must be in 0..45 degrees, got {keep_tilt!r}")
    elif keep_tilt > 0 and keep_tilt >= deskew:
        problems.append(f"{prefix}deskew_keep ({keep_tilt!r}) must be below {prefix}deskew ({deskew!r})")
    return problems


def _sides(gray: np.ndarray) -> tuple[np.ndarray, ...]:
    """The picture's four outer strips (top, bottom, left, right), 1/200 of its shorter side wide."""
    width = max(1, min(gray.shape) // 200)
    return gray[:width], gray[-width:], gray[:, :width], gray[:, -width:]


def _ring(gray: np.ndarray) -> np.ndarray:
    return np.concatenate([side.ravel() for side in _sides(gray)])


def _fit_to_canvas_edges(near: np.ndarray, box: Box) -> Box:
    """Move each side of ``box`` to where the canvas begins: outwards over lines that are not mostly
    canvas-coloured (slice parts the colour split off), inwards over lines that are (leftover border).

    ``near`` marks the canvas-coloured pixels; a line is canvas when ``PEEL_SHARE`` of it is.
    """
    height, width = near.shape
    left, top, right, bottom = box

    def canvas(line: np.ndarray) -> bool:
        return line.size == 0 or line.mean() >= PEEL_SHARE

    changed = True
    while changed:
        changed = False
        if top > 0 and not canvas(near[top - 1, left:right]):
            top, changed = top - 1, True
        if bottom < height and not canvas(near[bottom, left:right]):
            bottom, changed = bottom + 1, True
        if left > 0 and not canvas(near[top:bottom, left - 1]):
            left, changed = left - 1, True
        if right < width and not canvas(near[top:bottom, right]):
            right, changed = right + 1, True
    while right - left > 1 and bottom - top > 1:
        if canvas(near[top, left:right]):
            top += 1
        elif canvas(near[bottom - 1, left:right]):
            bottom -= 1
        elif canvas(near[top:bottom, left]):
            left += 1
        elif canvas(near[top:bottom, right - 1]):
            right -= 1
        else:
            break
    return left, top, right, bottom


def _strip_canvas(gray: np.ndarray, threshold: int, tolerance: float, opening: float, keep: float) -> tuple[Box, int]:
    """One pass of step 1: the box of the picture inside a uniform bright border and its gray level.

    Returns the whole image and -1 when the border is not uniform, or dark (the body step
    treats dark canvases as background), or nothing differs from it. The picture is looked for
    at a reduced size, its edges then fitted at full size.
    """
    whole = (0, 0, gray.shape[1], gray.shape[0])
    ring = _ring(gray)
    colour = round(float(np.median(ring)))
    if colour <= threshold or np.mean(np.abs(ring - colour) <= tolerance) < UNIFORM_RING:
        return whole, -1
    small, factor = reduced(gray)
    near = np.abs(small.astype(np.int16) - colour) <= tolerance
    box = bbox(components(open_mask(~near, radius(small.shape, opening)), keep, beside=False))
    if box is None:
        return whole, -1
    box = _fit_to_canvas_edges(np.abs(gray.astype(np.int16) - colour) <= tolerance, scale_box(box, factor, gray.shape))
    box = _peel_ramps(gray, box, colour, tolerance)
    return (whole, -1) if box == whole else (box, colour)


def _peel_ramps(gray: np.ndarray, box: Box, colour: int, tolerance: float) -> Box:
    """Move each side of ``box`` inwards over the blended band a blur or JPEG leaves between the canvas
    and the picture: lines nearly all within twice the tolerance of the canvas colour, or nearly uniform
    with a median between it and the next line's, a clear step away from it; at most ``RAMP_SHARE``
    of the picture's side deep (at least ``RAMP_MIN`` lines).

    Left in, a light band along the picture's edge would join the body as a ring around it.
    """
    left, top, right, bottom = box
    sides = {
        "top": lambda b: gray[b[1], b[0] : b[2]],
        "bottom": lambda b: gray[b[3] - 1, b[0] : b[2]],
        "left": lambda b: gray[b[1] : b[3], b[0]],
        "right": lambda b: gray[b[1] : b[3], b[2] - 1],
    }
    inward = {"top": (0, 1, 0, 0), "bottom": (0, 0, 0, -1), "left": (1, 0, 0, 0), "right": (0, 0, -1, 0)}
    for side, line in sides.items():
        depth = max(RAMP_MIN, round(RAMP_SHARE * min(right - left, bottom - top)))
        step = inward[side]
        for _ in range(depth):
            inner = tuple(v + d for v, d in zip((left, top, right, bottom), step, strict=True))
            if inner[2] - inner[0] < MIN_SIDE or inner[3] - inner[1] < MIN_SIDE:
                break
            here = line((left, top, right, bottom)).astype(np.int16)
            centre, after = float(np.median(here)), float(np.median(line(inner)))
            canvas_like = np.mean(np.abs(here - colour) <= 2 * tolerance) >= PEEL_SHARE  # JPEG blocks off its gray
            uniform = np.mean(np.abs(here - centre) <= 2 * tolerance) >= UNIFORM_RING  # not a wedge beside a slice
            ramp = uniform and min(colour, after) < centre < max(colour, after) and abs(centre - after) > tolerance / 2
            if not (canvas_like or ramp):
                break
            left, top, right, bottom = inner
    return left, top, right, bottom


def _body(view: np.ndarray, threshold: int, opening: float, keep: float, level: float) -> np.ndarray:
    return components(open_mask(view > body_level(view, threshold, level), radius(view.shape, opening)), keep)


def find_slice(
    gray: np.ndarray,
    *,
    threshold: int = 20,
    tolerance: float = 12,
    opening: float = 0.01,
    keep: float = 0.1,
    level: float = 0.5,
    fill: bool = False,
    search: tuple[float, float] | None = None,
    black: int | None = None,
) -> Framing:
    """The box of the CT slice's body in a grayscale ``uint8`` image (see the module docstring).

    With ``search`` (the ``white`` and ``mid`` quantiles of :mod:`lungdemo.intensity`), the body is
    looked for in the picture standardised on them, a dark border taken as black first
    (:func:`searched`): the same slice exported with another gamma is then cut at the same place.
    Both passes below standardise on the whole picture's black point and the gray levels around the
    body, so a canvas wider than the slice changes neither; ``black`` gives the black point found
    before the picture was turned (:func:`frame_slice`), since a turn's black corners hide it.
    ``opening`` is a share of the searched picture's shorter side. Pictures larger than
    ``WORK_SIDE`` are searched at a size reduced by a whole factor; the last search, around the
    body, at a factor set by the body's own size, so a slice gives the same box in any canvas.
    """
    gray = np.asarray(gray)
    if gray.ndim != 2:
        raise ValueError(f"find_slice expects a 2-D grayscale array, got shape {gray.shape}")
    height, width = gray.shape
    whole: Box = (0, 0, width, height)
    if min(height, width) < MIN_SIDE or int(gray.max()) == int(gray.min()):
        return Framing(whole, picture=whole, notes=[NOTE_NO_BODY])
    left, top = 0, 0
    view = gray
    canvases = []
    for _ in range(MAX_CANVAS_PASSES):
        (l0, t0, r0, b0), colour = _strip_canvas(view, threshold, tolerance, opening, keep)
        if colour < 0 or min(r0 - l0, b0 - t0) < MIN_SIDE:
            break
        canvases.append(colour)
        left, top = left + l0, top + t0
        view = view[t0:b0, l0:r0]
    picture = (left, top, left + view.shape[1], top + view.shape[0])
    result = Framing(picture, picture=picture, canvases=canvases)
    corners = corner_fill(view, canvases, tolerance) if fill and canvases else None
    if corners is not None:
        result.fill, result.fill_value = corners
        view = np.where(result.fill, np.uint8(result.fill_value), view)
    raw = view
    if search is not None:
        result.black = border_black(view, threshold) if black is None else black
        view = searched(view, search, result.black)
    found = _body_box(view, threshold, opening, keep, level)
    if found is None:
        if not canvases:  # inside a frame, the picture is the slice even when it holds no body of its own
            result.notes.append(NOTE_NO_BODY)
        logger.debug("no body in a %dx%d picture; using %s", view.shape[1], view.shape[0], result.box)
        return result
    # again around the body, so the scale, the level and the opening follow the slice, not its canvas
    bl, bt, br, bb = _grow(found[0], view.shape, REFINE_MARGIN)
    around = raw[bt:bb, bl:br] if search is None else searched(raw[bt:bb, bl:br], search, result.black)
    refined = _body_box(around, threshold, opening, keep, level, min_share=0.0)
    (l1, t1, r1, b1), body = refined if refined is not None else ((0, 0, br - bl, bb - bt), found[1])
    result.box = (left + bl + l1, top + bt + t1, left + bl + r1, top + bt + b1)
    result.angle = body_angle(body)
    return result


def border_black(view: np.ndarray, threshold: int) -> int:
    """The gray taken as black before the search standardises ``view``: its border's, when darker than
    ``threshold`` (a viewer's dark canvas, or the slice's own air), so the power cannot lift a canvas or
    its noise into the body's range; else 0. The border's gray is a percentile of its darkest side (a
    toolbar or a panel may line another), which a gamma change maps as it maps the picture: the search
    stays invariant to it."""
    black = int(min(np.percentile(side, DARK_BORDER_LEVEL) for side in _sides(view)))
    return black if black <= threshold else 0


def searched(view: np.ndarray, search: tuple[float, float], black: int) -> np.ndarray:
    """``view`` standardised for the body search, gray levels up to ``black`` (:func:`border_black`) black."""
    return standardize_lut(view, *search, black=black)[view]


def _body_box(
    view: np.ndarray, threshold: int, opening: float, keep: float, level: float, min_share: float = MIN_BODY_SHARE
) -> tuple[Box, np.ndarray] | None:
    """The body's box in ``view`` (full-size coordinates) and its mask (reduced), or ``None``."""
    small, factor = reduced(view)
    body = _body(small, threshold, opening, keep, level)
    box = bbox(body)
    if box is None or body.sum() < min_share * body.size:
        return None
    return scale_box(box, factor, view.shape), body


def _grow(box: Box, shape: tuple[int, ...], share: float) -> Box:
    left, top, right, bottom = box
    dx, dy = round(share * (right - left)), round(share * (bottom - top))
    return max(0, left - dx), max(0, top - dy), min(shape[1], right + dx), min(shape[0], bottom + dy)


def frame_slice(
    gray: Image.Image,
    *,
    threshold: int = 20,
    tolerance: float = 12,
    opening: float = 0.01,
    keep: float = 0.1,
    level: float = 0.5,
    deskew: float = 0.0,
    keep_tilt: float = 0.0,
    fill: bool = False,
    search: tuple[float, float] | None = None,
) -> tuple[Image.Image, Framing]:
    """The slice cut out of a grayscale ("L") image, straightened when ``deskew`` allows.

    With ``fill``, canvas in the picture's corners is painted first (:func:`corner_fill`). With
    ``deskew`` > 0, a body tilted by at most that many degrees is turned (black fill) inside its
    picture and its box found again; a tilt beyond it is left alone. The turn brings the tilt
    to ``keep_tilt`` (0: level); a tilt within ``keep_tilt`` is not turned at all.
    """
    params = {
        "threshold": threshold,
        "tolerance": tolerance,
        "opening": opening,
        "keep": keep,
        "level": level,
        "search": search,
    }
    found = find_slice(np.asarray(gray), **params, fill=fill)
    if found.fill is not None:
        gray = painted(gray, found.picture, found.fill, found.fill_value)
    angle = found.angle
    turn = tilt_turn(angle, keep_tilt) if deskew > 0 and angle is not None and abs(angle) <= deskew else 0.0
    if turn == 0:
        return gray.crop(found.box), found
    picture = gray.crop(found.picture).rotate(-turn, resample=Image.Resampling.BILINEAR, expand=True)
    level_found = find_slice(np.asarray(picture), **params, black=found.black)
    if level_found.notes:
        return gray.crop(found.box), found
    found.deskewed = turn
    found.notes.append(turned_note(angle, turn))
    return picture.crop(level_found.box), found
