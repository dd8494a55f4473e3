"""lungdemo.framing: the slice found in frames, figures, canvases, noise and odd images."""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from lungdemo.framing import NOTE_NO_BODY, body_angle, find_slice, frame_slice, otsu_threshold
from lungdemo.loading import SHIPPED_MODEL_DIR
from lungdemo.preprocessing import (
    PreprocessConfig,
    _pad_to_square,
    body_bbox,
    canonical_image,
    decode_canonical,
    decode_image,
)

BODY = (30, 40, 230, 160)  # the synthetic body's box in a 260x200 slice


def slice_image(
    size: tuple[int, int] = (260, 200), body: tuple[int, int, int, int] = BODY, seed: int = 0
) -> Image.Image:
    """A CT-like slice: a textured body ellipse with two dark lungs, a spine, a faint table."""
    rng = np.random.default_rng(seed)
    img = Image.new("L", size, 0)
    d = ImageDraw.Draw(img)
    left, top, right, bottom = body
    w, h = right - left, bottom - top
    d.ellipse([left, top, right - 1, bottom - 1], fill=110)
    d.ellipse([left + w * 0.12, top + h * 0.15, left + w * 0.45, top + h * 0.8], fill=12)
    d.ellipse([left + w * 0.55, top + h * 0.15, left + w * 0.88, top + h * 0.8], fill=12)
    d.ellipse([left + w * 0.45, top + h * 0.7, left + w * 0.55, top + h * 0.9], fill=230)
    if bottom + 8 < size[1]:
        d.line([(left, bottom + 6), (right, bottom + 6)], fill=14, width=2)  # the table, below threshold
    arr = np.asarray(img, dtype=np.float64)
    arr = np.where(arr > 0, arr + rng.normal(0, 4, arr.shape), arr)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def box_of(img: Image.Image, **kw) -> tuple[int, int, int, int]:
    return find_slice(np.asarray(img.convert("L")), **kw).box


def assert_box(found, expected, tol: int = 2) -> None:
    assert max(abs(a - b) for a, b in zip(found, expected, strict=True)) <= tol, f"{found} != {expected}"


def on_frame(img: Image.Image, colour, width: int, sides=(1, 1, 1, 1)) -> tuple[Image.Image, tuple[int, int]]:
    left, top, right, bottom = (width * s for s in sides)
    out = Image.new("RGB", (img.width + left + right, img.height + top + bottom), colour)
    out.paste(img.convert("RGB"), (left, top))
    return out, (left, top)


def shifted(box, offset):
    return box[0] + offset[0], box[1] + offset[1], box[2] + offset[0], box[3] + offset[1]


def test_plain_slice_is_cropped_to_the_body() -> None:
    assert_box(box_of(slice_image()), BODY)


@pytest.mark.parametrize("colour", [(255, 255, 255), (205, 205, 205), (128, 128, 128), (40, 70, 170), (200, 180, 40)])
@pytest.mark.parametrize("width", [4, 30, 90])
def test_frames_of_any_colour_and_width_are_removed(colour, width) -> None:
    framed, offset = on_frame(slice_image(), colour, width)
    assert_box(box_of(framed), shifted(BODY, offset))


def test_nested_and_asymmetric_frames_are_removed() -> None:
    inner, o1 = on_frame(slice_image(), (0, 0, 0), 4)
    middle, o2 = on_frame(inner, (250, 250, 250), 12, sides=(3, 1, 0, 2))
    outer, o3 = on_frame(middle, (150, 150, 150), 9)
    offset = (o1[0] + o2[0] + o3[0], o1[1] + o2[1] + o3[1])
    found = find_slice(np.asarray(outer.convert("L")))
    assert_box(found.box, shifted(BODY, offset))
    assert found.canvases[:2] == [150, 250]


def test_white_figure_page_with_caption_and_panel_letter() -> None:
    page, offset = on_frame(slice_image(), (255, 255, 255), 20, sides=(1, 2, 1, 4))
    d = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=14)
    d.text((4, 4), "B", fill=(0, 0, 0), font=font)
    d.text((20, page.height - 50), "Figure 2. Axial CT of the chest (lung window).", fill=(0, 0, 0), font=font)
    assert_box(box_of(page), shifted(BODY, offset))


def viewer_canvas(background: int, slice_img: Image.Image, offset=(90, 60), size=(480, 330)) -> Image.Image:
    """A viewer screenshot: overlay text in the corners, a ruler with ticks, orientation letters, an arrow."""
    out = Image.new("RGB", size, (background,) * 3)
    out.paste(slice_img.convert("RGB"), offset)
    d = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=12)
    for i, text in enumerate(["ANON^PATIENT", "ID 4711", "Se 3 Im 120"]):
        d.text((4, 4 + 14 * i), text, fill=(230, 230, 230), font=font)
    d.text((size[0] - 110, size[1] - 18), "W 1500 L -600", fill=(230, 230, 60), font=font)
    d.text((4, size[1] - 18), "kVp 120 mA 200", fill=(200, 200, 200), font=font)
    x = size[0] - 20
    d.line([(x, 80), (x, 250)], fill=(220, 220, 220), width=1)
    for k in range(11):
        d.line([(x, 80 + 17 * k), (x - (8 if k % 5 == 0 else 4), 80 + 17 * k)], fill=(220, 220, 220))
    for text, pos in {"A": (size[0] // 2, 2), "R": (2, size[1] // 2), "L": (size[0] - 12, size[1] // 2)}.items():
        d.text(pos, text, fill=(230, 230, 230), font=font)
    # an arrow whose tip touches the body
    tip = (offset[0] + BODY[0] + 20, offset[1] + BODY[1] + 40)
    d.line([(tip[0] - 60, tip[1] - 45), tip], fill=(255, 220, 0), width=1)
    return out


@pytest.mark.parametrize("background", [0, 10, 30, 45])
def test_dark_canvas_text_rulers_and_markers_are_ignored(background) -> None:
    offset = (90, 60)
    shot = viewer_canvas(background, slice_image(), offset)
    assert_box(box_of(shot), shifted(BODY, offset))


@pytest.mark.parametrize("panel", ["toolbar", "sidebar"])
def test_light_user_interface_panels_of_a_screenshot_are_not_body(panel) -> None:
    """A toolbar above or a panel beside the slice is bright, but it is not an arm.

    (The slice is the largest bright thing on the screen: a panel larger than it would win.)
    """
    body = (30, 30, 270, 190)
    offset = (120, 50)
    shot = viewer_canvas(8, slice_image(size=(300, 220), body=body), offset, size=(520, 320))
    d = ImageDraw.Draw(shot)
    if panel == "toolbar":
        d.rectangle([0, 0, 519, 36], fill=(225, 225, 225))
    else:
        d.rectangle([0, 0, 70, 319], fill=(200, 200, 200))
    for k in range(6):
        button = [8 + 60 * k, 8, 50 + 60 * k, 30] if panel == "toolbar" else [8, 50 + 45 * k, 62, 80 + 45 * k]
        d.rectangle(button, outline=(60, 60, 60))
    assert_box(box_of(shot), shifted(body, offset))


def test_noise_does_not_grow_the_box() -> None:
    rng = np.random.default_rng(1)
    noisy = np.asarray(slice_image(), dtype=np.float64) + rng.normal(0, 8, (200, 260))
    img = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    assert_box(box_of(img), BODY)
    assert body_bbox(np.asarray(img), 20) == (0, 0, 260, 200)  # where the old crop sees noise everywhere


def test_lifted_background_and_brighter_gamma_keep_the_box() -> None:
    arr = np.asarray(slice_image(), dtype=np.float64)
    lifted = Image.fromarray((25 + arr * 0.8).astype(np.uint8))  # a window whose black is 25
    bright = Image.fromarray((255 * (arr / 255) ** 0.6).astype(np.uint8))  # the faint table rises over 20
    assert_box(box_of(lifted), BODY)
    assert_box(box_of(bright), BODY)
    assert body_bbox(np.asarray(bright), 20)[3] > BODY[3] + 4  # the old crop takes the table in


def test_slice_touching_the_image_edge() -> None:
    img = slice_image(size=(200, 120), body=(-20, -10, 220, 110))  # the body runs off three sides
    assert_box(box_of(img), (0, 0, 200, 110))
    framed, offset = on_frame(img, (255, 255, 255), 25)  # and the same inside a white frame
    assert_box(box_of(framed), shifted((0, 0, 200, 110), offset))


def test_arms_beside_the_body_are_kept() -> None:
    img = slice_image(size=(320, 200), body=(60, 40, 260, 160))
    d = ImageDraw.Draw(img)
    d.ellipse([5, 70, 50, 130], fill=100)  # an arm, separate from the body
    d.ellipse([270, 70, 315, 130], fill=100)
    assert_box(box_of(img), (5, 40, 316, 160))


@pytest.mark.parametrize(
    "img",
    [
        Image.new("L", (64, 48), 0),
        Image.new("L", (64, 48), 255),
        Image.new("L", (64, 48), 128),
        Image.new("L", (1, 1), 200),
        Image.new("L", (5, 3), 90),
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (7, 30), dtype=np.uint8)),
    ],
    ids=["black", "white", "gray", "1x1", "5x3", "tiny-noise"],
)
def test_empty_uniform_and_tiny_images_give_the_whole_image_with_a_note(img) -> None:
    found = find_slice(np.asarray(img))
    assert found.box == (0, 0, img.width, img.height)
    assert found.notes == [NOTE_NO_BODY]
    out = canonical_image(img, PreprocessConfig(image_size=32, resize="slice_crop_pad"))
    assert out.size == (32, 32)


def test_sparse_speckle_is_no_body() -> None:
    arr = np.zeros((100, 100), dtype=np.uint8)
    arr[np.random.default_rng(2).random((100, 100)) < 0.01] = 255  # isolated bright pixels
    found = find_slice(arr)
    assert found.box == (0, 0, 100, 100) and found.notes == [NOTE_NO_BODY]


def test_the_note_reaches_the_decode_notes() -> None:
    buf = io.BytesIO()
    Image.new("L", (50, 40), 0).save(buf, "PNG")
    cfg = PreprocessConfig(image_size=32, resize="slice_crop_pad")
    canon, info = decode_canonical(buf.getvalue(), cfg)
    assert canon.shape == (1, 32, 32) and NOTE_NO_BODY in info.notes


def test_otsu_splits_two_levels() -> None:
    arr = np.array([10] * 50 + [200] * 50, dtype=np.uint8).reshape(10, 10)
    assert 10 <= otsu_threshold(arr) < 200


@pytest.mark.parametrize("degrees", [6.0, -9.0, 2.5])
def test_body_angle_has_the_sign_and_size_of_the_rotation(degrees) -> None:
    """Counter-clockwise as displayed (PIL's ``rotate``) is positive."""
    img = slice_image(size=(300, 300), body=(50, 90, 250, 210)).rotate(degrees, resample=Image.Resampling.BILINEAR)
    found = find_slice(np.asarray(img))
    assert found.angle == pytest.approx(degrees, abs=0.5)


def test_round_body_has_no_angle() -> None:
    disc = np.zeros((100, 100), dtype=bool)
    yy, xx = np.mgrid[:100, :100]
    disc[(yy - 50) ** 2 + (xx - 50) ** 2 < 30**2] = True
    assert body_angle(disc) is None


def test_deskew_levels_a_tilted_slice_within_its_limit() -> None:
    straight = slice_image(size=(300, 300), body=(50, 90, 250, 210))
    tilted = straight.rotate(8, resample=Image.Resampling.BILINEAR)
    out, found = frame_slice(tilted, deskew=15)
    assert found.deskewed == pytest.approx(8, abs=0.5)
    assert find_slice(np.asarray(out)).angle == pytest.approx(0, abs=0.5)
    assert abs(out.width - 200) <= 3 and abs(out.height - 120) <= 3  # the straight body's box again
    kept, found = frame_slice(tilted, deskew=5)  # beyond the limit: left as it is
    assert found.deskewed == 0 and kept.size == (found.box[2] - found.box[0], found.box[3] - found.box[1])


def test_deskew_keep_leaves_the_training_tilts_alone_and_turns_a_larger_one_back_to_them() -> None:
    straight = slice_image(size=(300, 300), body=(50, 90, 250, 210))
    for tilt, expected_turn in ((3, 0.0), (-3, 0.0), (12, 8.0), (-12, -8.0)):
        tilted = straight.rotate(tilt, resample=Image.Resampling.BILINEAR, expand=True)
        out, found = frame_slice(tilted, deskew=25, keep_tilt=4)
        assert found.deskewed == pytest.approx(expected_turn, abs=0.5), tilt
        assert bool(found.notes) == (expected_turn != 0) and all("turned to" in n for n in found.notes), found.notes
        remaining = find_slice(np.asarray(out)).angle
        assert remaining == pytest.approx(tilt if expected_turn == 0 else math.copysign(4, tilt), abs=0.7), tilt
    _, found = frame_slice(straight.rotate(30, expand=True), deskew=25, keep_tilt=4)  # beyond the limit
    assert found.deskewed == 0
    _, found = frame_slice(straight.rotate(4.6, expand=True), deskew=25, keep_tilt=4)  # a turn under MIN_DESKEW
    assert found.deskewed == 0


def test_deskew_keep_is_stored_and_checked() -> None:
    cfg = PreprocessConfig(resize="slice_crop_pad", slice_deskew=25, slice_deskew_keep=4)
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert PreprocessConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "slice_deskew_keep"}) == replace(
        cfg, slice_deskew_keep=0.0
    )  # a folder written before the key levels fully, as it always did
    for bad in ({"slice_deskew_keep": -1}, {"slice_deskew_keep": 25}, {"slice_deskew": 0, "slice_deskew_keep": 4}):
        with pytest.raises(ValueError, match="slice_deskew_keep"):
            PreprocessConfig.from_dict({**cfg.to_dict(), **bad})


def test_slice_crop_pad_config_round_trip_and_validation() -> None:
    cfg = PreprocessConfig(resize="slice_crop_pad", slice_tolerance=8, slice_level=0.4, slice_deskew=10)
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    for bad in ({"slice_tolerance": 200}, {"slice_opening": 0.5}, {"slice_keep": 0}, {"slice_level": 2.0}):
        with pytest.raises(ValueError, match="slice_"):
            PreprocessConfig(resize="slice_crop_pad", **bad)


def test_a_stored_config_without_slice_keys_is_todays_body_crop_pad() -> None:
    old = {"image_size": 64, "resize": "body_crop_pad", "body_threshold": 20, "interpolation": "bilinear"}
    assert PreprocessConfig.from_dict(old) == PreprocessConfig(image_size=64, slice_fill=False)
    assert PreprocessConfig.from_dict({**old, "slice_fill": True}) == PreprocessConfig(image_size=64)


def test_slice_parameters_do_not_touch_body_crop_pad() -> None:
    framed, _ = on_frame(slice_image(), (255, 255, 255), 30)
    gray = framed.convert("L")
    base = PreprocessConfig(image_size=64)
    other = PreprocessConfig(image_size=64, slice_tolerance=3, slice_opening=0.05, slice_keep=0.9, slice_deskew=20)
    expected = _pad_to_square(gray.crop(body_bbox(np.asarray(gray), 20))).resize((64, 64), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(np.asarray(canonical_image(gray, base)), np.asarray(expected))
    np.testing.assert_array_equal(np.asarray(canonical_image(gray, other)), np.asarray(expected))


def _test_files(data_dir: Path, every: int = 16) -> list[Path]:
    return sorted(p for p in (data_dir / "test").rglob("*") if p.is_file())[::every]


@pytest.mark.integration
def test_body_crop_pad_tensors_are_unchanged_on_real_slices(data_dir: Path) -> None:
    """The old pipeline written out (threshold box, pad, resize) gives the same bytes as the policy."""
    cfg = PreprocessConfig()
    for path in _test_files(data_dir):
        gray, _ = decode_image(path)
        old = _pad_to_square(gray.crop(body_bbox(np.asarray(gray), cfg.body_threshold)))
        old = np.asarray(old.resize((cfg.image_size, cfg.image_size), Image.Resampling.BILINEAR))
        np.testing.assert_array_equal(decode_canonical(path, cfg)[0][0].numpy(), old)


@pytest.mark.integration
def test_real_slices_in_frames_and_canvases_frame_like_the_file(data_dir: Path) -> None:
    """A real test slice inside a white frame or a dark screenshot is cut out as the file itself (to 1%).

    Not always to the pixel: where the body touches the file's edge, the screenshot has black beyond it.
    """
    for path in _test_files(data_dir, every=32):
        gray, _ = decode_image(path)
        clean = find_slice(np.asarray(gray)).box
        tol = max(1, max(gray.size) // 100)
        framed, offset = on_frame(gray, (255, 255, 255), max(gray.size) // 8)
        assert_box(box_of(framed), shifted(clean, offset), tol=tol)
        shot = Image.new("RGB", (gray.width + 200, gray.height + 120), (0, 0, 0))
        shot.paste(gray.convert("RGB"), (120, 60))
        d = ImageDraw.Draw(shot)
        d.text((4, 4), "ANON^PATIENT  W 1500 L -600", fill=(255, 255, 255), font=ImageFont.load_default(size=14))
        d.line([(shot.width - 30, 40), (shot.width - 30, shot.height - 40)], fill=(255, 255, 255))
        assert_box(box_of(shot), shifted(clean, (120, 60)), tol=tol)


@pytest.mark.integration
def test_real_slices_turned_by_an_uploader_come_back_within_the_kept_tilt(data_dir: Path) -> None:
    """The shipped framing on test slices turned 12 and -18 degrees: each is turned back to its kept tilt."""
    cfg = PreprocessConfig.from_dict(json.loads((SHIPPED_MODEL_DIR / "config.json").read_text())["preprocessing"])
    assert cfg.slice_deskew > 18 > 12 > cfg.slice_deskew_keep > 0
    params = {"deskew": cfg.slice_deskew, "keep_tilt": cfg.slice_deskew_keep, "fill": cfg.slice_fill}
    for path in _test_files(data_dir, every=40):
        gray, _ = decode_image(path)
        own = find_slice(np.asarray(gray), fill=True).angle
        assert own is not None and abs(own) < 8, path.name  # the dataset's own tilts: within the kept tilt or near it
        for turn in (12, -18):
            out, found = frame_slice(gray.rotate(turn, resample=Image.Resampling.BILINEAR, expand=True), **params)
            left = find_slice(np.asarray(out)).angle
            assert found.notes and abs(found.deskewed) > 3, (path.name, turn, found.deskewed)
            assert left is not None and abs(left) <= cfg.slice_deskew_keep + 1.5, (path.name, turn, left)
