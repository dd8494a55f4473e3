"""train.augment: batched training augmentation on uint8 slices."""

from __future__ import annotations

import pytest
import torch

from train.augment import AugmentConfig, augment_batch

OFF = AugmentConfig(
    scale_min=1.0, scale_max=1.0, rotate_deg=0.0, translate=0.0, hflip=False, brightness=0.0, contrast=0.0, gamma=0.0
)


def slices(n: int = 6, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Asymmetric test slices: a random texture, brighter on the left."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 200, (n, 1, size, size), generator=g, dtype=torch.uint8)
    x[..., : size // 3] += 55
    return x


def test_shape_and_dtype_are_kept() -> None:
    x = slices(5, 40)
    out = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert not torch.equal(out, x)  # the default config does change the slices


def test_rectangular_slices_keep_their_shape() -> None:
    x = torch.randint(0, 256, (2, 1, 24, 40), dtype=torch.uint8)
    assert augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(0)).shape == (2, 1, 24, 40)


def test_deterministic_for_a_generator_seed() -> None:
    x = slices()
    a = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(42))
    b = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(42))
    c = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_generator_state_advances_batch_to_batch() -> None:
    x = slices()
    g = torch.Generator().manual_seed(7)
    first, second = augment_batch(x, AugmentConfig(), g), augment_batch(x, AugmentConfig(), g)
    assert not torch.equal(first, second)
    g2 = torch.Generator().manual_seed(7)
    assert torch.equal(augment_batch(x, AugmentConfig(), g2), first)
    assert torch.equal(augment_batch(x, AugmentConfig(), g2), second)


def test_global_rng_is_not_used_with_a_generator() -> None:
    x = slices()
    torch.manual_seed(1)
    a = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(5))
    torch.manual_seed(2)
    b = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_all_strengths_zero_is_identity() -> None:
    x = slices(8, 36)
    out = augment_batch(x, OFF, torch.Generator().manual_seed(0))
    # an identity affine grid samples pixel centres exactly; allow one gray level of rounding
    assert (out.int() - x.int()).abs().max() <= 1
    assert (out != x).float().mean() < 0.01


def test_hflip_alone_mirrors() -> None:
    x = slices(16, 32)
    cfg = AugmentConfig(**{**OFF.to_dict(), "hflip": True})
    out = augment_batch(x, cfg, torch.Generator().manual_seed(3))
    mirrored = torch.flip(x, dims=[-1])
    flipped = []
    for i in range(len(x)):
        same = (out[i].int() - x[i].int()).abs().max() <= 1
        mirror = (out[i].int() - mirrored[i].int()).abs().max() <= 1
        assert same != mirror, f"slice {i} is neither the input nor its mirror image"
        flipped.append(bool(mirror))
    assert any(flipped) and not all(flipped)  # about half of the 16 are mirrored


@pytest.mark.parametrize(
    "field",
    [
        {"brightness": 0.3},
        {"contrast": 0.3},
        {"gamma": 0.3},
        {"rotate_deg": 15.0},
        {"translate": 0.1},
        {"scale_min": 0.8, "scale_max": 1.2},
    ],
)
def test_each_strength_alone_changes_the_slices(field: dict) -> None:
    x = slices(4, 32)
    out = augment_batch(x, AugmentConfig(**{**OFF.to_dict(), **field}), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert (out.int() - x.int()).abs().max() > 1


def test_brightness_shifts_a_flat_slice_uniformly() -> None:
    x = torch.full((3, 1, 16, 16), 100, dtype=torch.uint8)
    out = augment_batch(x, AugmentConfig(**{**OFF.to_dict(), "brightness": 0.2}), torch.Generator().manual_seed(0))
    for i in range(3):
        values = out[i].unique()
        assert values.numel() == 1  # one offset per slice
        assert abs(int(values) - 100) <= 0.2 * 255 + 1
