"""train.augment: batched training augmentation on uint8 slices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lungdemo.framing import body_angle
from train.augment import AugmentConfig, AugmentParams, apply_params, augment_batch, sample_params

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


# --- the batch pipeline as it was before the export augmentations: configs must reproduce it ---


def legacy_augment_batch(images: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    import torch.nn.functional as F

    def uniform(n: int, lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=gen) * (hi - lo) + lo

    n = images.shape[0]
    x = images.to(torch.float32) / 255.0
    scale = uniform(n, cfg.scale_min, cfg.scale_max)
    angle = uniform(n, -cfg.rotate_deg, cfg.rotate_deg) * (math.pi / 180.0)
    tx = uniform(n, -cfg.translate, cfg.translate) * 2
    ty = uniform(n, -cfg.translate, cfg.translate) * 2
    flip = (torch.rand(n, generator=gen) < 0.5).float() * 2 - 1 if cfg.hflip else torch.ones(n)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cfg.gamma:
        x = x.clamp_min(0).pow(torch.exp(uniform(n, -cfg.gamma, cfg.gamma)).view(n, 1, 1, 1))
    if cfg.contrast:
        c = uniform(n, 1 - cfg.contrast, 1 + cfg.contrast).view(n, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * c + mean
    if cfg.brightness:
        x = x + uniform(n, -cfg.brightness, cfg.brightness).view(n, 1, 1, 1)
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8)


@pytest.mark.parametrize("changes", [{}, {"hflip": False}, {"gamma": 0.0, "contrast": 0.4}, {"rotate_deg": 0.0}])
def test_configs_without_the_new_augmentations_give_the_same_batches(changes: dict) -> None:
    cfg = AugmentConfig(**changes)
    x = slices(8, 48)
    g_new, g_old = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    for _ in range(3):  # batch after batch, so the generator must be consumed identically too
        assert torch.equal(augment_batch(x, cfg, g_new), legacy_augment_batch(x, cfg, g_old))
    assert torch.equal(g_new.get_state(), g_old.get_state())


def test_new_augmentations_default_to_off() -> None:
    d = AugmentConfig()
    assert d.window == 0 and d.downscale_prob == 0 and d.noise == 0 and d.jpeg_prob == 0


# --- direction and amount of each transform, on made images ---


def identity(n: int = 1, **values) -> AugmentParams:
    base = {"scale": 1.0, "angle_deg": 0.0, "tx": 0.0, "ty": 0.0, "flip": 1.0}
    fields = {k: torch.full((n,), float(values.pop(k, v))) for k, v in base.items()}
    fields.update({k: torch.as_tensor(v, dtype=torch.float32).reshape(n) for k, v in values.items()})
    return AugmentParams(**fields)


def image(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.uint8)).view(1, 1, *arr.shape)


def centroid(x: torch.Tensor) -> tuple[float, float]:
    m = x[0, 0].numpy().astype(np.float64)
    yy, xx = np.mgrid[: m.shape[0], : m.shape[1]]
    return float((m * xx).sum() / m.sum()), float((m * yy).sum() / m.sum())


def bar(size: int = 96) -> torch.Tensor:
    arr = np.zeros((size, size))
    arr[size // 2 - 6 : size // 2 + 6, size // 2 - 30 : size // 2 + 30] = 200
    return image(arr)


@pytest.mark.parametrize("degrees", [12.0, -7.0])
def test_rotation_turns_counter_clockwise_by_the_angle(degrees: float) -> None:
    out = apply_params(bar(), identity(angle_deg=degrees))
    assert body_angle(out[0, 0].numpy() > 100) == pytest.approx(degrees, abs=1.0)


@pytest.mark.parametrize("scale", [1.5, 0.8])
def test_scale_above_one_zooms_in_by_that_factor(scale: float) -> None:
    arr = np.zeros((96, 96))
    yy, xx = np.mgrid[:96, :96]
    arr[(yy - 47.5) ** 2 + (xx - 47.5) ** 2 <= 15**2] = 255
    before = (image(arr) > 127).sum().item()
    after = (apply_params(image(arr), identity(scale=scale)) > 127).sum().item()
    assert after / before == pytest.approx(scale**2, rel=0.06)


def test_translation_moves_left_and_up_by_half_the_side_per_unit() -> None:
    arr = np.zeros((64, 64))
    arr[26:38, 26:38] = 255
    cx, cy = centroid(image(arr))
    mx, my = centroid(apply_params(image(arr), identity(tx=0.25)))
    assert (mx - cx, my - cy) == (pytest.approx(-8, abs=0.3), pytest.approx(0, abs=0.3))
    mx, my = centroid(apply_params(image(arr), identity(ty=0.25)))
    assert (mx - cx, my - cy) == (pytest.approx(0, abs=0.3), pytest.approx(-8, abs=0.3))


def test_flip_mirrors_left_and_right() -> None:
    x = slices(1, 32)
    assert torch.equal(apply_params(x, identity(flip=-1.0)), torch.flip(x, dims=[-1]))


@pytest.mark.parametrize("log_gamma", [0.3, -0.3])
def test_gamma_above_one_darkens_by_the_power(log_gamma: float) -> None:
    x = torch.full((1, 1, 8, 8), 128, dtype=torch.uint8)
    g = math.exp(log_gamma)
    out = apply_params(x, identity(gamma=g))
    assert int(out[0, 0, 0, 0]) == round(255 * (128 / 255) ** g)
    assert (int(out[0, 0, 0, 0]) < 128) == (g > 1)


def test_contrast_spreads_values_from_the_mean_by_its_factor() -> None:
    arr = np.full((16, 16), 100.0)
    arr[:, 8:] = 160  # mean 130
    out = apply_params(image(arr), identity(contrast=1.5))[0, 0]
    assert int(out[0, 0]) == 85 and int(out[0, 15]) == 175
    out = apply_params(image(arr), identity(contrast=0.5))[0, 0]
    assert int(out[0, 0]) == 115 and int(out[0, 15]) == 145


def test_window_maps_its_ends_to_black_and_white() -> None:
    ramp = image(np.tile(np.arange(256), (4, 1)))
    narrow = apply_params(ramp, identity(window_lo=0.1, window_hi=0.9))[0, 0, 0].int()
    assert narrow[: round(0.1 * 255)].max() == 0 and narrow[round(0.9 * 255) + 1 :].min() == 255
    assert int(narrow[128]) == pytest.approx(255 * (128 / 255 - 0.1) / 0.8, abs=1)
    lifted = apply_params(ramp, identity(window_lo=-0.1, window_hi=1.0))[0, 0, 0].int()
    assert int(lifted[0]) == round(255 * 0.1 / 1.1) and int(lifted[255]) == 255  # black rises, as a wider window


def _edge_width(x: torch.Tensor) -> int:
    row = x[0, 0, 32].int()
    return int(((row > 25) & (row < 230)).sum())


def test_downscale_blurs_more_the_smaller_the_factor() -> None:
    arr = np.zeros((64, 64))
    arr[:, 32:] = 255
    widths = [_edge_width(apply_params(image(arr), identity(downscale=f))) for f in (1.0, 0.5, 0.25)]
    assert widths[0] == 0 and 0 < widths[1] < widths[2]
    assert 2 <= widths[2] <= 8  # about 1 / 0.25 pixels
    flat = torch.full((1, 1, 64, 64), 90, dtype=torch.uint8)
    assert torch.equal(apply_params(flat, identity(downscale=0.3)), flat)


def test_noise_has_the_drawn_sigma() -> None:
    x = torch.full((1, 1, 128, 128), 128, dtype=torch.uint8)
    field = torch.randn((1, 1, 128, 128), generator=torch.Generator().manual_seed(0))
    params = identity(noise=0.05)
    params.noise_field = field
    out = apply_params(x, params).float()
    assert out.std().item() == pytest.approx(0.05 * 255, rel=0.05)
    assert out.mean().item() == pytest.approx(128, abs=0.5)


def test_jpeg_error_grows_as_quality_falls() -> None:
    x = slices(1, 64)
    errors = []
    for q in (95, 50, 15):
        out = apply_params(x, identity(jpeg_quality=torch.tensor([q])))
        errors.append((out.float() - x.float()).pow(2).mean().item())
    assert 0 < errors[0] < errors[1] < errors[2]
    assert torch.equal(apply_params(x, identity(jpeg_quality=torch.tensor([0]))), x)  # 0: left alone


def test_sampled_export_parameters_stay_in_range() -> None:
    cfg = AugmentConfig(window=0.1, downscale_prob=0.5, downscale_min=0.4, noise=0.03, jpeg_prob=0.5)
    p = sample_params(400, cfg, torch.Generator().manual_seed(0), (400, 1, 8, 8))
    assert p.window_lo.abs().max() <= 0.1 and (p.window_hi - 1).abs().max() <= 0.1
    assert p.downscale.min() >= 0.4 and p.downscale.max() <= 1.0
    assert 0.4 < (p.downscale < 1).float().mean() < 0.6
    assert 0.4 < (p.jpeg_quality > 0).float().mean() < 0.6
    hits = p.jpeg_quality[p.jpeg_quality > 0]
    assert hits.min() >= cfg.jpeg_quality_min and hits.max() <= cfg.jpeg_quality_max
    assert p.noise.max() <= 0.03 and p.noise_field.shape == (400, 1, 8, 8)


def test_all_augmentations_together_keep_shape_dtype_and_determinism() -> None:
    cfg = AugmentConfig(window=0.1, downscale_prob=0.5, noise=0.02, jpeg_prob=0.5)
    x = slices(6, 48)
    a = augment_batch(x, cfg, torch.Generator().manual_seed(4))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.dtype == torch.uint8 and torch.equal(a, b)
