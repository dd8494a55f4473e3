"""train.perturb: each perturbation does what its name says, by the amount it says."""

from __future__ import annotations

import io
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from lungdemo.decode import decode_image
from lungdemo.framing import body_angle
from train import perturb
from train.perturb import Perturbation, apply
from train.suites import SUITES

RNG = np.random.default_rng(0)


def slice_img(w: int = 120, h: int = 90) -> Image.Image:
    """A gray ellipse with texture on black, wider than tall."""
    yy, xx = np.mgrid[:h, :w]
    inside = ((xx - w / 2) / (w * 0.4)) ** 2 + ((yy - h / 2) / (h * 0.35)) ** 2 <= 1
    arr = np.where(inside, 100 + np.random.default_rng(1).integers(0, 60, (h, w)), 0).astype(np.uint8)
    return Image.fromarray(arr).convert("RGB")


ALL = [p for s in SUITES.values() for p in s.perturbations]


@pytest.mark.parametrize("p", ALL, ids=[f"{p.kind}:{p.name}" for p in ALL])
def test_every_perturbation_gives_a_decodable_file_of_its_format(p: Perturbation) -> None:
    data = apply(p, slice_img(), seed=3)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == p.fmt.upper()
    gray, _ = decode_image(data)
    assert gray.mode == "L" and min(gray.size) > 10
    assert apply(p, slice_img(), seed=3) == data  # deterministic for a seed


def test_suites_cover_each_kind_at_several_strengths_and_do_not_overlap() -> None:
    kinds = {"frame", "canvas", "jpeg", "downscale", "gamma", "window", "rotate", "combo"}
    for suite in SUITES.values():
        counts = Counter(p.kind for p in suite.perturbations)
        assert all(counts[k] >= 2 for k in kinds), counts
        assert len({p.name for p in suite.perturbations}) == len(suite.perturbations)

    def key(p: Perturbation) -> str:
        return json.dumps(p.describe() | {"name": ""}, sort_keys=True)

    everywhere = [p.name for suite in SUITES.values() for p in suite.perturbations]
    assert len(set(everywhere)) == len(everywhere)  # a row's name says which suite it is from
    names = list(SUITES)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not {key(p) for p in SUITES[a].perturbations} & {key(p) for p in SUITES[b].perturbations}, (a, b)


def test_frame_adds_borders_of_the_colour_and_width() -> None:
    img = slice_img(100, 60)
    out = perturb.frame(img, RNG, colour=(40, 70, 170), width=0.1)
    assert out.size == (120, 80)  # 10% of the longer side on every side
    arr = np.asarray(out)
    assert (arr[:10] == (40, 70, 170)).all() and (arr[:, -10:] == (40, 70, 170)).all()
    assert (arr[10:70, 10:110] == np.asarray(img)).all()
    uneven = perturb.frame(img, RNG, colour=255, width=0.1, sides=(2, 0, 0, 1))
    assert uneven.size == (120, 70)


def test_canvas_keeps_the_slice_and_draws_overlays_around_it() -> None:
    img = slice_img(120, 90)
    out = np.asarray(perturb.canvas(img, np.random.default_rng(0), background=20, fill=0.6, offset=(0.5, 0.5)))
    h, w = out.shape[:2]
    assert h == 150 and w == 200  # 90 / 0.6 high, 4:3
    y0, x0 = (h - 90) // 2, (w - 120) // 2
    window = out[y0 : y0 + 90, x0 : x0 + 120]
    assert (np.abs(window.astype(int) - np.asarray(img).astype(int)) <= 0).mean() > 0.95  # letters aside
    around = out.copy()
    around[y0 : y0 + 90, x0 : x0 + 120] = 20
    drawn = (np.abs(around.astype(int) - 20).max(axis=2) > 60).mean()
    assert 0.005 < drawn < 0.2  # text, ruler and letters, not a filled canvas


def test_canvas_text_changes_with_the_seed() -> None:
    p = Perturbation("c", "canvas", (("canvas", {"background": 0}),))
    assert apply(p, slice_img(), seed=1) != apply(p, slice_img(), seed=2)


def test_gamma_below_one_brightens_by_the_power() -> None:
    img = Image.new("RGB", (4, 4), (64, 64, 64))
    assert np.asarray(perturb.gamma(img, RNG, g=0.5))[0, 0, 0] == round(255 * (64 / 255) ** 0.5)
    assert np.asarray(perturb.gamma(img, RNG, g=2.0))[0, 0, 0] == round(255 * (64 / 255) ** 2)


def test_window_maps_its_ends() -> None:
    ramp = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (2, 1))).convert("RGB")
    out = np.asarray(perturb.window(ramp, RNG, lo=20, hi=220))[0, :, 0].astype(int)
    assert out[20] == 0 and out[220] == 255 and out[120] == round(100 * 255 / 200)
    flat = np.asarray(perturb.window(ramp, RNG, lo=0, hi=255, out_lo=20, out_hi=210))[0, :, 0].astype(int)
    assert flat[0] == 20 and flat[255] == 210


@pytest.mark.parametrize("degrees", [5.0, -8.0])
def test_rotate_turns_counter_clockwise_and_grows_the_canvas(degrees: float) -> None:
    img = slice_img(160, 100)
    out = perturb.rotate(img, RNG, degrees=degrees)
    assert out.width > 160 and out.height > 100
    assert body_angle(np.asarray(out.convert("L")) > 50) == pytest.approx(degrees, abs=0.7)


def test_downscale_and_back() -> None:
    img = slice_img(120, 90)
    assert perturb.downscale(img, RNG, factor=0.5).size == (60, 45)
    blurred = perturb.downscale(img, RNG, factor=0.5, back=True)
    assert blurred.size == img.size
    assert np.asarray(blurred).std() < np.asarray(img).std()


def test_jpeg_quality_sets_the_error() -> None:
    img = slice_img()
    err = [np.abs(np.asarray(perturb.jpeg(img, RNG, quality=q), int) - np.asarray(img, int)).mean() for q in (90, 20)]
    assert 0 < err[0] < err[1]


def test_noise_has_its_sigma() -> None:
    img = Image.new("RGB", (200, 200), (128, 128, 128))
    out = np.asarray(perturb.noise(img, np.random.default_rng(0), sigma=6), dtype=float)
    assert out[..., 0].std() == pytest.approx(6, rel=0.05)
    assert (out[..., 0] == out[..., 2]).all()  # gray noise: the same on every channel
