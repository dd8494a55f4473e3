"""lungdemo.preprocessing on small images made here: framing, normalising, the config, one definition."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lungdemo.decode import ImageDecodeError
from lungdemo.folder import write_model_folder
from lungdemo.loading import load_model_folder
from lungdemo.model import LungAlexNet
from lungdemo.predictor import Predictor
from lungdemo.preprocessing import (
    PreprocessConfig,
    canonical_image,
    canonical_tensor,
    decode_canonical,
    normalize,
)
from tests.conftest import TEST_CLASSES
from train.data import Sample, load_images


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


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


def test_decode_canonical_then_normalize() -> None:
    cfg = PreprocessConfig(image_size=40)
    canon, info = decode_canonical(encode(_rectangle_on_black(5, 5), "PNG"), cfg)
    assert canon.shape == (1, 40, 40) and canon.dtype == torch.uint8
    assert info.format == "PNG"
    out = normalize(canon, cfg)
    assert out.shape == (3, 40, 40) and out.dtype == torch.float32
    # the three channels hold the same gray slice, so they differ only by mean/std
    torch.testing.assert_close(out[1] * 0.224 + 0.456, out[0] * 0.229 + 0.485)


def test_the_config_pixel_limit_reaches_decoding() -> None:
    data = encode(Image.new("L", (100, 100)), "PNG")
    assert canonical_tensor(data, PreprocessConfig(image_size=32)).shape == (1, 32, 32)
    with pytest.raises(ImageDecodeError) as err:
        decode_canonical(data, PreprocessConfig(image_size=32, max_pixels=5000))
    assert str(err.value) == "image is 100x100 = 10,000 pixels; the limit is 5,000"


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
    assert PreprocessConfig.from_dict({}) == PreprocessConfig(slice_fill=False)  # what a config without it meant


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
        a, _ = decode_canonical(path, fresh.preprocess_config)
        b, _ = decode_canonical(path, reloaded.preprocess_config)
        assert a.shape == (1, 72, 72)
        assert torch.equal(a, b), path.name
        with torch.inference_mode():
            assert torch.equal(fresh(normalize(a, cfg)[None]), reloaded(normalize(b, cfg)[None]))

    # training/evaluation path (decoded-image cache + normalize) == app path (Predictor.predict)
    samples = [Sample(path=p, label=0, split="test") for p in files]
    cached = load_images(samples, reloaded.preprocess_config, cache_dir=None)
    predictor = Predictor.from_ref(folder)
    for i, path in enumerate(files):
        assert torch.equal(cached[i], canonical_tensor(path, cfg))
        with torch.inference_mode():
            logits = reloaded(normalize(cached[i : i + 1], reloaded.preprocess_config))
        expected = torch.softmax(logits / reloaded.temperature, dim=1)[0].tolist()
        assert list(predictor.predict(path).probabilities.values()) == expected, path.name
