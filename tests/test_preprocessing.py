"""lungdemo.preprocessing on small images made here: decoding, framing, normalising, config."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lungdemo.folder import write_model_folder
from lungdemo.loading import load_model_folder
from lungdemo.model import LungAlexNet
from lungdemo.preprocessing import (
    COLOURFULNESS_LIMIT,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    LOW_CONTRAST_STD,
    WARNING_PREFIX,
    ImageDecodeError,
    PreprocessConfig,
    canonical_image,
    canonical_tensor,
    colourfulness,
    decode_image,
    normalize,
    preprocess,
)
from tests.conftest import TEST_CLASSES
from train.data import Sample, load_images


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def pixels(img: Image.Image) -> list[int]:
    assert img.mode == "L"
    return np.asarray(img).ravel().tolist()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR + IEND, without any pixel data (IDAT)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# --- decoding by content ----------------------------------------------------------------


def test_jpeg_named_png_is_decoded_as_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "slice.png"
    path.write_bytes(encode(Image.new("L", (16, 12), 128), "JPEG", quality=95))
    gray, info = decode_image(path)
    assert info.format == "JPEG"
    assert gray.mode == "L" and gray.size == (16, 12)
    assert abs(int(np.asarray(gray).mean()) - 128) <= 1  # flat gray survives JPEG


def test_png_named_jpg_is_decoded_as_png(tmp_path: Path) -> None:
    path = tmp_path / "slice.jpg"
    arr = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    path.write_bytes(encode(Image.fromarray(arr), "PNG"))
    gray, info = decode_image(path)
    assert info.format == "PNG"
    np.testing.assert_array_equal(np.asarray(gray), arr)  # lossless: exactly the pixels


# --- every PIL mode to 8-bit grayscale ----------------------------------------------------
# PIL's RGB->L is ITU-R 601-2 luma, (R*19595 + G*38470 + B*7471 + 0x8000) >> 16:
#   (255, 0, 0) -> 76,  (0, 255, 0) -> 150,  (10, 20, 30) -> 18,  (0, 255, 255) -> 179.


def test_mode_1_bilevel() -> None:
    img = Image.new("1", (2, 1), 0)
    img.putpixel((1, 0), 1)
    gray, info = decode_image(encode(img, "PNG"))
    assert info.mode == "1"
    assert pixels(gray) == [0, 255]


def test_mode_L_is_unchanged() -> None:
    arr = np.array([[0, 1, 127, 254, 255]], dtype=np.uint8)
    gray, info = decode_image(encode(Image.fromarray(arr), "PNG"))
    assert info.mode == "L" and info.notes == []
    assert pixels(gray) == [0, 1, 127, 254, 255]


def _palette_image() -> Image.Image:
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    img.putpixel((0, 0), 0)  # red
    img.putpixel((1, 0), 1)  # green
    return img


def test_mode_P_palette() -> None:
    gray, info = decode_image(encode(_palette_image(), "PNG"))
    assert info.mode == "P"
    assert pixels(gray) == [76, 150]
    assert any("mode P" in n for n in info.notes)


def test_mode_P_with_transparency_composites_on_black() -> None:
    gray, info = decode_image(encode(_palette_image(), "PNG", transparency=0))  # red index is transparent
    assert info.mode == "P"
    assert pixels(gray) == [0, 150]


def test_mode_RGB() -> None:
    img = Image.new("RGB", (2, 1))
    img.putpixel((0, 0), (255, 0, 0))
    img.putpixel((1, 0), (10, 20, 30))
    gray, info = decode_image(encode(img, "PNG"))
    assert info.mode == "RGB"
    assert pixels(gray) == [76, 18]


def test_mode_RGBA_transparent_regions_become_black() -> None:
    img = Image.new("RGBA", (3, 1))
    img.putpixel((0, 0), (200, 200, 200, 0))  # fully transparent: black, not 200
    img.putpixel((1, 0), (100, 100, 100, 255))  # opaque: its own value
    img.putpixel((2, 0), (200, 200, 200, 128))  # half: 200 * 128/255 = 100.4 -> 100
    gray, info = decode_image(encode(img, "PNG"))
    assert info.mode == "RGBA"
    assert pixels(gray) == [0, 100, 100]


def test_mode_LA() -> None:
    img = Image.new("LA", (2, 1))
    img.putpixel((0, 0), (200, 0))
    img.putpixel((1, 0), (50, 255))
    gray, info = decode_image(encode(img, "PNG"))
    assert info.mode == "LA"
    assert pixels(gray) == [0, 50]


def test_mode_CMYK() -> None:
    img = Image.new("CMYK", (3, 1))
    img.putpixel((0, 0), (0, 0, 0, 0))  # no ink: white
    img.putpixel((1, 0), (0, 0, 0, 255))  # full black ink
    img.putpixel((2, 0), (255, 0, 0, 0))  # cyan = RGB (0, 255, 255)
    gray, info = decode_image(encode(img, "TIFF"))
    assert info.mode == "CMYK"
    assert pixels(gray) == [255, 0, 179]


@pytest.mark.parametrize(
    ("values", "dtype", "fmt", "mode"),
    [
        # stretched from min..max onto 0..255: (v - min) * 255 / (max - min), rounded
        ([0, 250, 1000], np.uint16, "PNG", "I;16"),  # 250 -> 63.75 -> 64
        ([-1000, 0, 3000], np.int32, "TIFF", "I"),  # 0 -> 1000 * 255 / 4000 = 63.75 -> 64
        ([0.0, 0.25, 1.0], np.float32, "TIFF", "F"),  # 0.25 -> 63.75 -> 64
    ],
)
def test_high_bit_depth_modes_are_stretched(values: list, dtype: type, fmt: str, mode: str) -> None:
    img = Image.fromarray(np.array([values], dtype=dtype))
    assert img.mode == mode
    gray, info = decode_image(encode(img, fmt))
    assert info.mode == mode
    assert pixels(gray) == [0, 64, 255]
    assert any(f"mode {mode}" in n for n in info.notes)


def test_16_bit_values_above_255_are_not_clipped() -> None:
    # a naive convert("L") would clip everything above 255 to white
    img = Image.fromarray(np.array([[1000, 2000, 3000]], dtype=np.uint16))
    gray, _ = decode_image(encode(img, "PNG"))
    assert pixels(gray) == [0, 128, 255]  # 2000 -> 127.5 -> rint (to even) 128


def test_multi_frame_gif_uses_first_frame_with_note() -> None:
    frames = [Image.new("L", (4, 4), 50), Image.new("L", (4, 4), 200)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    gray, info = decode_image(data)
    assert info.n_frames == 2
    assert set(pixels(gray)) == {50}
    assert any("first frame" in n for n in info.notes)


def _left_bright(width: int = 40, height: int = 20) -> Image.Image:
    img = Image.new("L", (width, height), 0)
    img.paste(255, (0, 0, width // 2, height))
    return img


def test_exif_orientation_6_is_rotated() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the left edge ends up at the top
    gray, info = decode_image(encode(_left_bright(), "JPEG", quality=95, exif=exif.tobytes()))
    assert gray.size == (20, 40)
    arr = np.asarray(gray).astype(int)
    assert arr[:18].mean() > 250 and arr[22:].mean() < 5
    assert any("EXIF" in n for n in info.notes)


def test_exif_orientation_3_is_rotated() -> None:
    exif = Image.Exif()
    exif[0x0112] = 3  # upside down: the left half ends up on the right
    gray, _ = decode_image(encode(_left_bright(), "JPEG", quality=95, exif=exif.tobytes()))
    assert gray.size == (40, 20)
    arr = np.asarray(gray).astype(int)
    assert arr[:, 22:].mean() > 250 and arr[:, :18].mean() < 5


# --- bad input ----------------------------------------------------------------------------


def test_zero_bytes(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match=r"empty \(0 bytes\)"):
        decode_image(path)


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("patient notes, not an image\n")
    with pytest.raises(ImageDecodeError, match="not an image file"):
        decode_image(path)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.png"
    with pytest.raises(ImageDecodeError, match=r"cannot read .*nowhere\.png"):
        decode_image(path)


def test_truncated_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = encode(Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)), "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="broken or truncated"):
        decode_image(path)


def test_huge_png_header_is_refused_without_decoding() -> None:
    # 40000x40000 = 1.6e9 pixels in a 57-byte file with no pixel data at all: had anything
    # tried to decode it, the error would be about broken data, not about its size
    data = png_header_only(40000, 40000)
    assert len(data) < 100
    with pytest.raises(ImageDecodeError) as err:
        decode_image(data)
    msg = str(err.value)
    assert "too large" in msg and "1,600,000,000 pixels" in msg and "limit is 40,000,000" in msg
    assert "truncated" not in msg


def test_header_over_the_project_limit_is_refused_without_decoding() -> None:
    # 8000x8000 = 64e6 pixels: under PIL's own bomb limit, over the project's 40e6
    assert DEFAULT_MAX_PIXELS < 8000 * 8000
    with pytest.raises(ImageDecodeError, match=r"8000x8000 = 64,000,000 pixels; the limit is 40,000,000"):
        decode_image(png_header_only(8000, 8000))


def test_max_pixels_is_configurable() -> None:
    data = encode(Image.new("L", (100, 100)), "PNG")
    with pytest.raises(ImageDecodeError, match=r"100x100 = 10,000 pixels; the limit is 5,000"):
        decode_image(data, max_pixels=5000)
    cfg = PreprocessConfig(image_size=32, max_pixels=5000)
    with pytest.raises(ImageDecodeError, match="the limit is 5,000"):
        preprocess(data, cfg)


def test_file_size_limit_on_bytes() -> None:
    data = encode(Image.new("L", (8, 8)), "PNG")
    with pytest.raises(ImageDecodeError) as err:
        decode_image(data + b"\0" * (DEFAULT_MAX_BYTES + 1 - len(data)))
    assert str(err.value) == "the file is 20,971,521 bytes (20.0 MiB); the limit is 20,971,520 bytes (20 MiB)"
    with pytest.raises(ImageDecodeError, match=r"the limit is 50 bytes"):
        decode_image(data, max_bytes=50)
    assert decode_image(data, max_bytes=len(data))[0].size == (8, 8)


def test_file_size_limit_on_a_path_is_checked_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.png"
    with path.open("wb") as f:
        f.truncate(DEFAULT_MAX_BYTES + 1)  # sparse: no disk space, no memory
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("the oversized file was read"))
    with pytest.raises(ImageDecodeError, match=r"^the file is 20,971,521 bytes"):
        decode_image(path)


# --- does it look like a CT slice? ---------------------------------------------------------------


def photo_like(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    """A colour "photograph": blue sky, green field, a yellow sun, a red box, sensor noise."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height)[:, None, None]
    x = np.linspace(0.0, 1.0, width)[None, :, None]
    sky = np.array([90.0, 150.0, 235.0]) + y * np.array([60.0, 50.0, -30.0])
    field = np.array([60.0, 150.0, 50.0]) + x * np.array([40.0, 60.0, 0.0])
    rgb = np.where(y > 0.6, field, sky) + rng.normal(0.0, 8.0, (height, width, 3))
    rgb[20:80, 200:260] = (250, 200, 40)
    rgb[110:190, 40:120] = (200, 40, 40)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def test_colour_photo_gets_a_warning_but_is_decoded() -> None:
    photo = photo_like()
    assert colourfulness(photo) > 5 * COLOURFULNESS_LIMIT
    for fmt in ("PNG", "JPEG"):
        gray, info = decode_image(encode(photo, fmt))
        assert gray.mode == "L" and gray.size == photo.size
        assert len(info.warnings) == 1
        assert info.warnings[0].startswith(
            f"{WARNING_PREFIX}this does not look like a CT slice: it is strongly coloured"
        )
        assert info.notes[0] == info.warnings[0]


def test_transparent_colour_counts_as_black() -> None:
    """Colour under alpha 0 is invisible, and composited on black like the grayscale is."""
    rgba = photo_like().convert("RGBA")
    rgba.putalpha(0)
    assert colourfulness(rgba) == 0.0


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_gray_slice_gets_no_warning(mode: str) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "adenocarcinoma_1.png"
    img = Image.open(example).convert(mode)
    assert colourfulness(img) == 0.0
    _, info = decode_image(encode(img, "PNG"))
    assert info.warnings == []


def test_uniform_picture_gets_a_warning() -> None:
    _, info = decode_image(encode(Image.new("RGB", (64, 64), (128, 128, 128)), "PNG"))
    assert len(info.warnings) == 1 and "almost uniform (contrast 0.0 of 255" in info.warnings[0]
    noise = np.random.default_rng(0).integers(120, 136, (64, 64), dtype=np.uint8)  # std about 4.6
    _, info = decode_image(encode(Image.fromarray(noise), "PNG"))
    assert any("almost uniform" in w for w in info.warnings)


@pytest.mark.integration
def test_no_slice_of_the_dataset_gets_a_warning(data_dir: Path) -> None:
    """The thresholds are calibrated on these 1000 slices: none of them may be flagged."""
    files = sorted(p for p in data_dir.rglob("*") if p.is_file())
    assert len(files) == 1000
    flagged = {}
    lowest_spread = 255.0
    for path in files:
        gray, info = decode_image(path)
        if info.warnings:
            flagged[str(path.relative_to(data_dir))] = info.warnings
        thumb = gray.copy()
        thumb.thumbnail((256, 256))
        lowest_spread = min(lowest_spread, float(np.asarray(thumb, dtype=np.float64).std()))
    assert flagged == {}
    assert lowest_spread > 2 * LOW_CONTRAST_STD  # a wide margin, not a near miss


# --- framing ------------------------------------------------------------------------------


def _rectangle_on_black(left: int, top: int, size=(100, 80), rect=(20, 10), value: int = 200) -> Image.Image:
    img = Image.new("L", size, 0)
    img.paste(value, (left, top, left + rect[0], top + rect[1]))
    return img


def test_body_crop_pad_keeps_aspect_ratio_and_centres() -> None:
    cfg = PreprocessConfig(image_size=32, interpolation="nearest")
    out = np.asarray(canonical_image(_rectangle_on_black(7, 50), cfg))
    assert out.shape == (32, 32)
    # the 20x10 rectangle is cropped, padded to 20x20 (5 black rows above and below) and
    # scaled by 32/20 = 1.6: nearest sampling puts it on rows 8..23, all 32 columns
    bright_rows = np.flatnonzero((out == 200).all(axis=1))
    assert bright_rows.tolist() == list(range(8, 24))
    assert (out[:8] == 0).all() and (out[24:] == 0).all()
    assert set(np.unique(out).tolist()) == {0, 200}


def test_body_crop_pad_does_not_depend_on_position() -> None:
    cfg = PreprocessConfig(image_size=48)
    a = np.asarray(canonical_image(_rectangle_on_black(0, 0), cfg))
    b = np.asarray(canonical_image(_rectangle_on_black(63, 41), cfg))
    np.testing.assert_array_equal(a, b)


def test_body_crop_ignores_pixels_at_or_below_threshold() -> None:
    img = _rectangle_on_black(40, 30)
    img.paste(20, (0, 0, 100, 5))  # a dim strip at the threshold: background, not body
    cfg = PreprocessConfig(image_size=32, interpolation="nearest", body_threshold=20)
    expected = np.asarray(canonical_image(_rectangle_on_black(40, 30), cfg))
    np.testing.assert_array_equal(np.asarray(canonical_image(img, cfg)), expected)


def test_all_black_image_falls_back_to_whole_frame() -> None:
    cfg = PreprocessConfig(image_size=32)
    out = np.asarray(canonical_image(Image.new("L", (50, 30), 0), cfg))
    assert out.shape == (32, 32) and (out == 0).all()


def test_pad_and_squash_policies() -> None:
    img = Image.new("L", (40, 20), 200)  # a full-frame wide image
    pad = np.asarray(canonical_image(img, PreprocessConfig(image_size=32, resize="pad", interpolation="nearest")))
    # padded to 40x40 with 10 black rows above and below, scaled by 32/40: rows 8..23
    assert np.flatnonzero((pad == 200).all(axis=1)).tolist() == list(range(8, 24))
    squash = np.asarray(canonical_image(img, PreprocessConfig(image_size=32, resize="squash")))
    assert (squash == 200).all()


def test_canonical_image_requires_grayscale() -> None:
    with pytest.raises(ValueError, match="expects an 'L' image"):
        canonical_image(Image.new("RGB", (8, 8)), PreprocessConfig(image_size=32))


# --- normalising --------------------------------------------------------------------------


def test_normalize_hand_computed() -> None:
    cfg = PreprocessConfig(image_size=32, mean=(0.5, 0.2, 0.0), std=(0.5, 0.2, 1.0))
    batch = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3).repeat(2, 1, 1, 1)
    out = normalize(batch, cfg)
    assert out.shape == (2, 3, 1, 3) and out.dtype == torch.float32
    # pixel/255 = 0, 0.2, 1.0; channel c: (x - mean[c]) / std[c]
    expected = torch.tensor(
        [
            [[-1.0, -0.6, 1.0]],  # (x - 0.5) / 0.5
            [[-1.0, 0.0, 4.0]],  # (x - 0.2) / 0.2
            [[0.0, 0.2, 1.0]],  # (x - 0) / 1
        ]
    )
    torch.testing.assert_close(out[0], expected)
    torch.testing.assert_close(out[1], expected)


def test_normalize_default_imagenet_stats_and_single_image() -> None:
    cfg = PreprocessConfig(image_size=32)
    out = normalize(torch.full((1, 4, 5), 255, dtype=torch.uint8), cfg)
    assert out.shape == (3, 4, 5)
    # (1 - 0.485) / 0.229 = 2.2489, (1 - 0.456) / 0.224 = 2.4286, (1 - 0.406) / 0.225 = 2.64
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([2.2489083, 2.4285715, 2.64]))


def test_normalize_refuses_float_input() -> None:
    with pytest.raises(TypeError, match="uint8"):
        normalize(torch.zeros(1, 1, 4, 4), PreprocessConfig(image_size=32))


def test_preprocess_output_shape_and_dtype() -> None:
    cfg = PreprocessConfig(image_size=40)
    out = preprocess(encode(_rectangle_on_black(5, 5), "PNG"), cfg)
    assert out.shape == (3, 40, 40) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # the three channels hold the same gray slice, so they differ only by mean/std
    torch.testing.assert_close(out[1] * 0.224 + 0.456, out[0] * 0.229 + 0.485)


# --- the config -----------------------------------------------------------------------------


def test_config_round_trip_through_json() -> None:
    cfg = PreprocessConfig(
        image_size=64,
        resize="pad",
        body_threshold=33,
        interpolation="bicubic",
        mean=(0.1, 0.2, 0.3),
        std=(0.4, 0.5, 0.6),
        max_pixels=1234567,
    )
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["mean"] == [0.1, 0.2, 0.3]
    back = PreprocessConfig.from_dict(data)
    assert back == cfg
    assert PreprocessConfig.from_dict({}) == PreprocessConfig()


def test_config_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown keys \['image_sise'\]"):
        PreprocessConfig.from_dict({"image_sise": 64})
    with pytest.raises(ValueError, match="must be a JSON object"):
        PreprocessConfig.from_dict([64])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"image_size": 16}, "image_size"),
        ({"resize": "crop"}, "resize"),
        ({"interpolation": "lanczos"}, "interpolation"),
        ({"mean": (0.5,)}, "mean and std"),
        ({"std": (0.2, 0.0, 0.2)}, "std values must be positive"),
        ({"color_mode": "rgb"}, "color_mode"),
    ],
)
def test_config_invalid_values(kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        PreprocessConfig(**kwargs)


# --- one definition: fresh model, reloaded folder, training cache ----------------------------


def _sample_files(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(1)
    body = rng.integers(30, 256, (70, 90), dtype=np.uint8)
    canvas = np.zeros((120, 110), dtype=np.uint8)
    canvas[20:90, 10:100] = body
    gray = Image.fromarray(canvas)
    rgba = gray.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(canvas > 100, 255, 0).astype(np.uint8)))
    files = {
        "gray.png": encode(gray, "PNG"),
        "jpeg_named.png": encode(gray.convert("RGB"), "JPEG", quality=90),
        "rgba.png": encode(rgba, "PNG"),
        "wide.png": encode(gray.resize((200, 60)), "PNG"),
    }
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    return paths


def test_transforms_identical_after_reloading_the_model_folder(tmp_path: Path) -> None:
    cfg = PreprocessConfig(
        image_size=72, resize="body_crop_pad", body_threshold=25, interpolation="bicubic", mean=(0.4, 0.4, 0.4)
    )
    torch.manual_seed(0)
    fresh = LungAlexNet(class_names=list(TEST_CLASSES), hidden=16, preprocessing=cfg.to_dict()).eval()
    folder = write_model_folder(fresh, tmp_path / "model")
    stored = json.loads((folder / "config.json").read_text())
    assert stored["preprocessing"] == cfg.to_dict()

    reloaded, _ = load_model_folder(folder)
    assert reloaded.preprocess_config == fresh.preprocess_config == cfg
    files = _sample_files(tmp_path)
    for path in files:
        a = preprocess(path, fresh.preprocess_config)
        b = preprocess(path, reloaded.preprocess_config)
        assert a.shape == (3, 72, 72)
        assert torch.equal(a, b), path.name
        with torch.inference_mode():
            assert torch.equal(fresh(a[None]), reloaded(b[None]))

    # training/evaluation path (decoded-image cache + normalize) == app path (preprocess)
    samples = [Sample(path=p, label=0, split="test") for p in files]
    cached = load_images(samples, reloaded.preprocess_config, cache_dir=None)
    for i, path in enumerate(files):
        assert torch.equal(cached[i], canonical_tensor(path, cfg))
        assert torch.equal(normalize(cached[i], reloaded.preprocess_config), preprocess(path, cfg))
