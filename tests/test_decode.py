"""lungdemo.decode on small files made here: by content, every PIL mode, limits, bad input, the CT look."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lungdemo.decode import (
    COLOURFULNESS_LIMIT,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    LOW_CONTRAST_STD,
    WARNING_PREFIX,
    ImageDecodeError,
    colourfulness,
    decode_image,
)
from lungdemo.errors import LungdemoError

NOT_AN_IMAGE = (
    "not an image file PIL can read (PNG, JPEG, TIFF, BMP, GIF, ...) nor a DICOM file "
    "(DICOM needs its 128-byte preamble and 'DICM' prefix)"
)


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


def test_decode_errors_are_project_errors_and_value_errors() -> None:
    """Command lines catch LungdemoError; callers that caught ValueError before still do."""
    with pytest.raises(LungdemoError) as err:
        decode_image(b"hello")
    assert isinstance(err.value, ValueError) and isinstance(err.value, ImageDecodeError)


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
    assert info.notes[-1] == "converted from mode P to 8-bit grayscale"  # after the colour warning


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
    assert info.notes == [f"converted from mode {mode} to 8-bit grayscale"]


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
    assert "multi-frame file (2 frames): the first frame was used" in info.notes


def test_multi_page_tiff_uses_the_first_page(tmp_path: Path) -> None:
    """Pages of other sizes and values behind the first: only the first is decoded."""
    first = Image.fromarray(np.arange(30 * 20, dtype=np.uint16).reshape(20, 30) % 251).convert("L")
    later = [Image.new("L", (64, 48), 255), Image.new("RGB", (10, 10), (255, 0, 0))]
    path = tmp_path / "stack.png"  # the name says PNG; the content is a TIFF
    first.save(path, "TIFF", save_all=True, append_images=later)
    gray, info = decode_image(path)
    assert (info.format, info.n_frames, info.size) == ("TIFF", 3, (30, 20))
    np.testing.assert_array_equal(np.asarray(gray), np.asarray(first))
    assert info.notes == ["multi-frame file (3 frames): the first frame was used"]


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
    assert info.notes == ["rotated according to its EXIF orientation"]


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
    with pytest.raises(ImageDecodeError) as err:
        decode_image(path)
    assert str(err.value) == "the file is empty (0 bytes)"


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("patient notes, not an image\n")
    with pytest.raises(ImageDecodeError) as err:
        decode_image(path)
    assert str(err.value) == NOT_AN_IMAGE


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.png"
    with pytest.raises(ImageDecodeError) as err:
        decode_image(path)
    assert str(err.value) == f"cannot read {path}: No such file or directory"


def test_truncated_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = encode(Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)), "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError) as err:
        decode_image(path)
    assert str(err.value) == "the image data is broken or truncated (image file is truncated)"


def test_huge_png_header_is_refused_without_decoding() -> None:
    # 40000x40000 = 1.6e9 pixels in a 57-byte file with no pixel data at all: had anything
    # tried to decode it, the error would be about broken data, not about its size
    data = png_header_only(40000, 40000)
    assert len(data) < 100
    with pytest.raises(ImageDecodeError) as err:
        decode_image(data)
    assert str(err.value) == "image too large: 1,600,000,000 pixels; the limit is 40,000,000"


def test_header_over_the_project_limit_is_refused_without_decoding() -> None:
    # 8000x8000 = 64e6 pixels: under PIL's own bomb limit, over the project's 40e6
    assert DEFAULT_MAX_PIXELS < 8000 * 8000
    with pytest.raises(ImageDecodeError) as err:
        decode_image(png_header_only(8000, 8000))
    assert str(err.value) == "image is 8000x8000 = 64,000,000 pixels; the limit is 40,000,000"


def test_max_pixels_is_configurable() -> None:
    data = encode(Image.new("L", (100, 100)), "PNG")
    with pytest.raises(ImageDecodeError) as err:
        decode_image(data, max_pixels=5000)
    assert str(err.value) == "image is 100x100 = 10,000 pixels; the limit is 5,000"
    assert decode_image(data, max_pixels=10_000)[0].size == (100, 100)


def test_file_size_limit_on_bytes() -> None:
    data = encode(Image.new("L", (8, 8)), "PNG")
    with pytest.raises(ImageDecodeError) as err:
        decode_image(data + b"\0" * (DEFAULT_MAX_BYTES + 1 - len(data)))
    assert str(err.value) == "the file is 20,971,521 bytes (20.0 MiB); the limit is 20,971,520 bytes (20 MiB)"
    with pytest.raises(ImageDecodeError) as err:
        decode_image(data, max_bytes=50)
    assert str(err.value) == f"the file is {len(data)} bytes (0.0 MiB); the limit is 50 bytes (4.76837e-05 MiB)"
    assert decode_image(data, max_bytes=len(data))[0].size == (8, 8)


def test_file_size_limit_on_a_path_is_checked_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.png"
    with path.open("wb") as f:
        f.truncate(DEFAULT_MAX_BYTES + 1)  # sparse: no disk space, no memory
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("the oversized file was read"))
    with pytest.raises(ImageDecodeError) as err:
        decode_image(path)
    assert str(err.value) == "the file is 20,971,521 bytes (20.0 MiB); the limit is 20,971,520 bytes (20 MiB)"


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
        data = encode(photo, fmt)
        gray, info = decode_image(data)
        assert gray.mode == "L" and gray.size == photo.size
        colour = colourfulness(Image.open(io.BytesIO(data)))  # of what was decoded (JPEG shifts it a little)
        assert info.warnings == [
            f"{WARNING_PREFIX}this does not look like a CT slice: it is strongly coloured (colourfulness "
            f"{colour:.0f}, CT slices are gray); the model only knows chest CT, so its answer means little here"
        ]
        assert info.notes == info.warnings  # warnings first; nothing else to note on an 8-bit RGB file


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
    def uniform(contrast: str) -> str:
        return (
            f"{WARNING_PREFIX}this does not look like a CT slice: it is almost uniform (contrast {contrast} "
            "of 255, CT slices have body and air); the model's answer means little here"
        )

    _, info = decode_image(encode(Image.new("RGB", (64, 64), (128, 128, 128)), "PNG"))
    assert info.warnings == [uniform("0.0")]
    noise = np.random.default_rng(0).integers(120, 136, (64, 64), dtype=np.uint8)  # 64 px < the thumbnail side
    _, info = decode_image(encode(Image.fromarray(noise), "PNG"))
    assert info.warnings == [uniform(f"{noise.std():.1f}")]


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
