"""Frames that a small or re-encoded export blurred into the picture: the blended band is not body."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from lungdemo.decode import decode_image
from tests.test_framing import assert_box, box_of, on_frame, slice_image

TOUCHING = ((376, 259), (4, 2, 352, 259))
"""A file size and a body reaching its top and bottom, as in many of the dataset's slices: the band meets it."""


def exported(img: Image.Image, factor: float, quality: int | None) -> Image.Image:
    """``img`` shrunk by ``factor`` (antialiased) and, with a quality, sent through JPEG and decoded."""
    small = img.resize((round(img.width * factor), round(img.height * factor)), Image.Resampling.BICUBIC)
    if quality is None:
        return small.convert("L")
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=quality)
    return decode_image(buf.getvalue(), 10_000_000)[0]


def expected_box(size, body, offset, factor: float) -> tuple[int, ...]:
    left, top, right, bottom = max(body[0], 0), max(body[1], 0), min(body[2], size[0]), min(body[3], size[1])
    return tuple(round(v * factor) for v in (left + offset[0], top + offset[1], right + offset[0], bottom + offset[1]))


@pytest.mark.parametrize("colour", [(255, 255, 255), (200, 190, 170), (150, 150, 150), (60, 90, 160)])
@pytest.mark.parametrize(("factor", "quality"), [(0.3, 25), (0.5, 40), (0.25, 50), (0.4, None)])
def test_a_blurred_frame_leaves_no_ring_around_the_body(colour, factor: float, quality: int | None) -> None:
    size, body = TOUCHING
    framed, offset = on_frame(slice_image(size=size, body=body), colour, 75)
    assert_box(box_of(exported(framed, factor, quality)), expected_box(size, body, offset, factor))


@pytest.mark.parametrize("colour", [(255, 255, 255), (150, 150, 150)])
def test_a_body_touching_the_picture_edge_inside_a_blurred_frame_keeps_its_edge(colour) -> None:
    """The band is peeled next to the canvas only: a body reaching the picture's sides loses at most a line."""
    size, body = (300, 300), (0, 20, 300, 280)
    framed, offset = on_frame(slice_image(size=size, body=body), colour, 60)
    assert_box(box_of(exported(framed, 0.3, 25)), expected_box(size, body, offset, 0.3))
