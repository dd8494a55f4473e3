"""lungdemo.intensity and its place in normalize: a gamma change of the upload is undone, old folders unchanged."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lungdemo.intensity import standardize, standardize_u8
from lungdemo.preprocessing import PreprocessConfig, normalize


def slice_like(seed: int = 0, size: int = 96) -> torch.Tensor:
    """A made-up axial slice, uint8 (1, S, S): black air, a gray body, two dark lungs, bright spine, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    img = np.zeros((size, size))
    img[((xx - 0.5) / 0.42) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1] = 120
    for cx in (0.32, 0.68):
        img[((xx - cx) / 0.13) ** 2 + ((yy - 0.48) / 0.2) ** 2 < 1] = 25
    img[((xx - 0.5) / 0.05) ** 2 + ((yy - 0.72) / 0.05) ** 2 < 1] = 235
    img = np.clip(img + rng.normal(0, 6, img.shape) * (img > 0), 0, 255)
    return torch.from_numpy(np.rint(img).astype(np.uint8)).unsqueeze(0)


def with_gamma(canon: torch.Tensor, g: float) -> torch.Tensor:
    return torch.from_numpy(np.rint(255.0 * (canon.numpy() / 255.0) ** g).astype(np.uint8))


STANDARD = PreprocessConfig(image_size=96, intensity="standardize")
PLAIN = PreprocessConfig(image_size=96)


@pytest.mark.parametrize("g", [0.5, 0.7, 1.4, 2.0])
def test_a_gamma_change_of_the_slice_is_undone(g: float) -> None:
    clean, changed = slice_like(), with_gamma(slice_like(), g)
    plain_gap = (normalize(changed, PLAIN) - normalize(clean, PLAIN)).abs().mean()
    standard_gap = (normalize(changed, STANDARD) - normalize(clean, STANDARD)).abs().mean()
    assert plain_gap > 0.15  # without it the model sees another picture
    assert standard_gap < 0.1 * plain_gap  # with it, what is left is 8-bit rounding


def test_the_mid_quantile_lands_at_one_half_and_the_white_point_at_one() -> None:
    x = slice_like().float().div(255).unsqueeze(0)
    out = standardize(x, 0.99, 0.75)
    flat = out.flatten()
    assert torch.quantile(flat, 0.75).item() == pytest.approx(0.5, abs=0.02)
    assert torch.quantile(flat, 0.99).item() == pytest.approx(1.0, abs=1e-6)
    assert out.min() >= 0 and out.max() <= 1


def test_each_slice_of_a_batch_is_standardised_on_its_own() -> None:
    batch = torch.stack([slice_like(0), with_gamma(slice_like(1), 1.8)])
    together = normalize(batch, STANDARD)
    alone = torch.stack([normalize(batch[i], STANDARD) for i in range(2)])
    torch.testing.assert_close(together, alone)


@pytest.mark.parametrize("value", [0, 255])
def test_uniform_slices_stay_finite(value: int) -> None:
    out = normalize(torch.full((1, 32, 32), value, dtype=torch.uint8), STANDARD)
    assert torch.isfinite(out).all()


def test_folders_saved_before_it_keep_their_gray_levels() -> None:
    stored = {k: v for k, v in PLAIN.to_dict().items() if not k.startswith("intensity")}
    cfg = PreprocessConfig.from_dict(stored)
    assert cfg.intensity == "none"
    canon = slice_like()
    expected = (canon.float() / 255 - torch.tensor(cfg.mean).view(-1, 1, 1)) / torch.tensor(cfg.std).view(-1, 1, 1)
    torch.testing.assert_close(normalize(canon, cfg), expected)


@pytest.mark.parametrize(
    ("change", "message"),
    [({"intensity": "equalize"}, "intensity must be one of"), ({"intensity_mid": 0.995}, "intensity quantiles")],
)
def test_bad_settings_say_what_is_wrong(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(STANDARD, **change)


@pytest.mark.parametrize("shape", [(1, 1, 224, 224), (3, 1, 64, 80), (1, 40, 40), (2, 2, 1, 17, 9)])
def test_the_histogram_path_is_the_sorting_path_bit_for_bit(shape: tuple[int, ...]) -> None:
    """normalize uses standardize_u8; the stored metrics were computed with standardize: they must agree exactly."""
    gen = torch.Generator().manual_seed(sum(shape))
    batches = [
        torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8),
        (torch.rand(shape, generator=gen) ** 3 * 255).round().to(torch.uint8),  # mostly dark, like a slice
        torch.full(shape, 7, dtype=torch.uint8),  # uniform: the quantiles coincide
    ]
    if shape[-1] == shape[-2]:
        batches.append(torch.stack([slice_like(seed, shape[-1]) for seed in range(shape[0])]).reshape(shape))
    for batch in batches:
        assert torch.equal(standardize_u8(batch, 0.99, 0.75), standardize(batch.float().div(255.0), 0.99, 0.75))
        assert torch.equal(standardize_u8(batch, 0.9, 0.3), standardize(batch.float().div(255.0), 0.9, 0.3))


def test_the_histogram_path_takes_only_uint8_slices() -> None:
    with pytest.raises(ValueError, match="uint8"):
        standardize_u8(torch.zeros(1, 1, 8, 8), 0.99, 0.75)
    with pytest.raises(ValueError, match="one channel"):
        standardize_u8(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 0.99, 0.75)
