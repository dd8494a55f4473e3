"""``slice_fill``: the canvas around a slice rotated on a light background is painted, nothing else is."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lungdemo.framing import find_slice, frame_slice
from lungdemo.framing_fill import corner_fill
from lungdemo.preprocessing import PreprocessConfig, canonical_image, decode_image
from tests.test_framing import BODY, on_frame, slice_image

SHIPPED = Path(__file__).resolve().parents[1] / "lungdemo" / "shipped_model" / "config.json"


def full_slice() -> Image.Image:
    """A body that nearly fills its file, as in many of the dataset's slices: rotated, the wedges reach it."""
    return slice_image(size=(210, 130), body=(4, 4, 206, 126))


def rotated_on(img: Image.Image, degrees: float, fill: int) -> Image.Image:
    return img.convert("L").rotate(degrees, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=fill)


def light_share(img: Image.Image, colour: int) -> float:
    return float(np.mean(np.abs(np.asarray(img, dtype=np.int16) - colour) <= 12))


@pytest.mark.parametrize("colour", [255, 200, 128])
@pytest.mark.parametrize("degrees", [-10.0, 25.0, 40.0])
def test_canvas_in_the_corners_of_a_rotated_slice_is_painted(colour: int, degrees: float) -> None:
    """Fill off: wedges of the canvas stay in the crop. Fill on: none left, the body framed as on black."""
    tilted = rotated_on(full_slice(), degrees, colour)
    kept, _ = frame_slice(tilted, fill=False)
    painted, found = frame_slice(tilted, fill=True)
    reference, on_black = frame_slice(rotated_on(full_slice(), degrees, 0))
    assert found.fill is not None and found.fill_value < 20  # painted with the slice's dark air
    assert light_share(kept, colour) > 0.04 and light_share(painted, colour) < 0.01
    assert max(abs(a - b) for a, b in zip(found.box, on_black.box, strict=True)) <= 2
    assert np.mean(np.abs(np.asarray(painted, dtype=np.int16) - np.asarray(reference.resize(painted.size)))) < 3


def test_a_rotated_slice_inside_a_frame_of_another_colour_is_painted() -> None:
    """The wedges are the rotation's fill (white), the frame around it is gray: both go."""
    framed, _ = on_frame(rotated_on(full_slice(), 8, 255), (128, 128, 128), 20)
    painted, found = frame_slice(framed.convert("L"), fill=True)
    assert found.canvases == [128, 255]
    assert light_share(painted, 255) < 0.02 and light_share(painted, 128) < 0.02


def test_a_slice_without_a_canvas_is_never_painted() -> None:
    """A bright body reaching every corner matches no stripped canvas: the crop is the same either way."""
    whole = slice_image(size=(200, 120), body=(-20, -20, 220, 140))
    for img in (slice_image(), whole):
        assert find_slice(np.asarray(img), fill=True).fill is None
        np.testing.assert_array_equal(np.asarray(frame_slice(img, fill=True)[0]), np.asarray(frame_slice(img)[0]))


def test_a_straight_slice_in_a_light_frame_is_not_painted() -> None:
    framed, _ = on_frame(slice_image(), (255, 255, 255), 30)
    gray = framed.convert("L")
    found = find_slice(np.asarray(gray), fill=True)
    assert found.fill is None
    assert found.box == find_slice(np.asarray(gray)).box == (BODY[0] + 30, BODY[1] + 30, BODY[2] + 30, BODY[3] + 30)


def test_corner_fill_needs_a_corner_of_the_canvas_colour() -> None:
    view = np.full((40, 60), 255, dtype=np.uint8)
    view[5:35, 5:55] = 0
    mask, value = corner_fill(view, [255], tolerance=12)
    assert value == 0 and mask[0, 0] and not mask[20, 30]
    assert corner_fill(view, [128], tolerance=12) is None  # not the canvas's colour
    assert corner_fill(np.full((40, 60), 255, dtype=np.uint8), [255], tolerance=12) is None  # all canvas


def test_fill_is_a_stored_preprocessing_step() -> None:
    cfg = PreprocessConfig(resize="slice_crop_pad", slice_fill=False)
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="slice_fill"):
        PreprocessConfig(slice_fill="yes")  # type: ignore[arg-type]
    tilted = rotated_on(full_slice(), 10, 255)
    on = np.asarray(canonical_image(tilted, dataclasses.replace(cfg, slice_fill=True)))
    off = np.asarray(canonical_image(tilted, cfg))
    assert light_share(Image.fromarray(off), 255) > light_share(Image.fromarray(on), 255)


@pytest.mark.integration
def test_real_slices_rotated_on_white_frame_like_rotated_on_black(data_dir: Path) -> None:
    """What the model gets from a test slice rotated on white is, with fill, what it gets on black.

    Not to the gray level where bright structures (an annotation line, fat at the file's edge) touch
    the canvas: they are painted with it.
    """
    cfg = PreprocessConfig.from_dict(json.loads(SHIPPED.read_text())["preprocessing"])
    assert cfg.resize == "slice_crop_pad" and cfg.slice_fill
    # the fill alone: a turn of a degree more or less (the tilt is measured on each) moves every pixel
    cfg = dataclasses.replace(cfg, slice_deskew=0.0, slice_deskew_keep=0.0)
    paths = sorted(p for p in (data_dir / "test").rglob("*") if p.is_file())[::24]
    gaps = []
    for path in paths:
        gray, _ = decode_image(path)
        on_white = np.asarray(canonical_image(rotated_on(gray, 10, 255), cfg), dtype=np.int16)
        on_black = np.asarray(canonical_image(rotated_on(gray, 10, 0), cfg), dtype=np.int16)
        gaps.append(float(np.mean(np.abs(on_white - on_black))))
        assert gaps[-1] < 8, path.name
    assert np.median(gaps) < 0.5 and np.mean(gaps) < 1.5, gaps


def textured_edge_to_edge() -> Image.Image:
    """A body running past its file's edges, its soft tissue textured around 110 like a real slice's."""
    arr = np.asarray(slice_image(size=(210, 130), body=(-12, -12, 222, 142)), dtype=np.float64)
    arr = np.where(arr > 60, arr + np.random.default_rng(1).normal(0, 10, arr.shape), arr)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("degrees", [-18.0, 12.0])
def test_a_body_of_the_canvas_gray_is_not_painted_with_the_wedges(degrees: float) -> None:
    """Rotated on a gray within the tolerance of the body's own (118 against 110), the corner regions run
    on into the body: only the wedges are painted, and the crop is the slice rotated on black."""
    tilted = rotated_on(textured_edge_to_edge(), degrees, 118)
    painted, found = frame_slice(tilted, fill=True)
    reference, on_black = frame_slice(rotated_on(textured_edge_to_edge(), degrees, 0))
    assert found.fill is not None
    wedges = tilted.width * tilted.height - 210 * 130
    assert found.fill.sum() < 1.3 * wedges  # the wedges and their blended edge, not the body
    assert max(abs(a - b) for a, b in zip(found.box, on_black.box, strict=True)) <= 3
    assert np.mean(np.abs(np.asarray(painted, dtype=np.int16) - np.asarray(reference.resize(painted.size)))) < 12
