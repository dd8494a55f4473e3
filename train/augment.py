"""Training-only augmentation, applied to a whole batch at once.

Works on the cached canonical slices (``uint8`` ``(N, 1, S, S)``, see
:func:`lungdemo.preprocessing.decode_canonical`) before :func:`~lungdemo.preprocessing.normalize`.
One random affine transform per slice (scale, a small rotation, translation, horizontal flip)
is applied with a single ``affine_grid`` + ``grid_sample`` call for the batch, and an
intensity jitter (brightness, contrast, gamma) that mimics differences in CT windowing.
Batching it keeps augmentation a small fraction of an AlexNet step on 2 cores, where
per-image PIL transforms would not be.

What framing cannot undo in real uploads (another window, a downscaled or re-encoded export,
noise) has its own augmentations, off by default so that existing configs give the very same
batches: ``window`` (both ends of the gray window moved), ``downscale_prob`` (shrunk and
enlarged back, a blur), ``noise`` (Gaussian) and ``jpeg_prob`` (re-encoded as JPEG).

Conventions, as the tests check them: ``scale`` > 1 zooms in; a positive rotation turns the
slice counter-clockwise as displayed; a positive ``tx`` (``ty``) moves it left (up) by
``tx * S / 2`` pixels; gamma > 1 darkens; contrast > 1 spreads values away from the slice mean.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each augmentation; zero disables it."""

    scale_min: float = 0.8
    scale_max: float = 1.1
    rotate_deg: float = 10.0
    translate: float = 0.06
    hflip: bool = True
    brightness: float = 0.15
    contrast: float = 0.2
    gamma: float = 0.2
    window: float = 0.0
    """Each end of the gray window moves by up to this (0..1 units): a narrower, wider or shifted window."""
    downscale_prob: float = 0.0
    """Share of slices shrunk by a factor in ``downscale_min..1`` and enlarged back (an export's blur)."""
    downscale_min: float = 0.35
    noise: float = 0.0
    """Largest Gaussian noise sigma, in 0..1 units (each slice draws its own up to this)."""
    jpeg_prob: float = 0.0
    """Share of slices re-encoded as JPEG at a quality in ``jpeg_quality_min..jpeg_quality_max``."""
    jpeg_quality_min: int = 30
    jpeg_quality_max: int = 95

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AugmentParams:
    """The random draws for one batch, one value per slice (``None``: that augmentation is off)."""

    scale: torch.Tensor
    angle_deg: torch.Tensor
    tx: torch.Tensor
    ty: torch.Tensor
    flip: torch.Tensor
    gamma: torch.Tensor | None = None
    contrast: torch.Tensor | None = None
    brightness: torch.Tensor | None = None
    window_lo: torch.Tensor | None = None
    window_hi: torch.Tensor | None = None
    downscale: torch.Tensor | None = None
    """Factor per slice; 1 leaves a slice sharp."""
    noise: torch.Tensor | None = None
    noise_field: torch.Tensor | None = None
    jpeg_quality: torch.Tensor | None = None
    """Quality per slice; 0 leaves a slice as it is."""

    def geometry_only(self) -> AugmentParams:
        """The same moves without intensity changes or degradation: the view a distillation
        teacher is shown under ``--distill-view clean`` (the student still gets all of them)."""
        return AugmentParams(self.scale, self.angle_deg, self.tx, self.ty, self.flip)

    def rows(self, index: torch.Tensor | slice) -> AugmentParams:
        """The draws of some slices of the batch (one process's share under torchrun)."""
        return AugmentParams(**{f.name: _take(getattr(self, f.name), index) for f in fields(self)})

    def to(self, device: torch.device) -> AugmentParams:
        """The draws on ``device`` (they come from the run's CPU generator; the images may be on a GPU)."""
        return AugmentParams(**{f.name: _move(getattr(self, f.name), device) for f in fields(self)})


def _take(t: torch.Tensor | None, index: torch.Tensor | slice) -> torch.Tensor | None:
    return None if t is None else t[index]


def _move(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if t is None else t.to(device)


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (hi - lo) + lo


def sample_params(
    n: int, cfg: AugmentConfig, gen: torch.Generator | None = None, shape: tuple[int, ...] = ()
) -> AugmentParams:
    """Draw one batch's parameters, in the order the batch pipeline always drew them.

    The augmentations added later draw after the original ones and only when enabled, so a config
    that leaves them off consumes the generator exactly as before. ``shape`` is the batch's shape,
    needed for the noise field.
    """
    p = AugmentParams(
        scale=_uniform(n, cfg.scale_min, cfg.scale_max, gen),
        angle_deg=_uniform(n, -cfg.rotate_deg, cfg.rotate_deg, gen),
        tx=_uniform(n, -cfg.translate, cfg.translate, gen) * 2,
        ty=_uniform(n, -cfg.translate, cfg.translate, gen) * 2,
        flip=(torch.rand(n, generator=gen) < 0.5).float() * 2 - 1 if cfg.hflip else torch.ones(n),
    )
    if cfg.gamma:
        p.gamma = torch.exp(_uniform(n, -cfg.gamma, cfg.gamma, gen))
    if cfg.contrast:
        p.contrast = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, gen)
    if cfg.brightness:
        p.brightness = _uniform(n, -cfg.brightness, cfg.brightness, gen)
    if cfg.window:
        p.window_lo = _uniform(n, -cfg.window, cfg.window, gen)
        p.window_hi = 1 + _uniform(n, -cfg.window, cfg.window, gen)
    if cfg.downscale_prob:
        hit = torch.rand(n, generator=gen) < cfg.downscale_prob
        p.downscale = torch.where(hit, _uniform(n, cfg.downscale_min, 1.0, gen), torch.ones(n))
    if cfg.noise:
        p.noise = _uniform(n, 0.0, cfg.noise, gen)
        p.noise_field = torch.randn(shape or (n, 1, 1, 1), generator=gen)
    if cfg.jpeg_prob:
        hit = torch.rand(n, generator=gen) < cfg.jpeg_prob
        q = torch.randint(cfg.jpeg_quality_min, cfg.jpeg_quality_max + 1, (n,), generator=gen)
        p.jpeg_quality = torch.where(hit, q, torch.zeros_like(q))
    return p


def _blur_by_downscale(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    height, width = x.shape[-2:]
    for i in torch.nonzero(factors < 1).flatten().tolist():
        f = float(factors[i])
        small = F.interpolate(
            x[i : i + 1],
            size=(max(1, round(height * f)), max(1, round(width * f))),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        out[i : i + 1] = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
    return out


def _reencode_jpeg(images: torch.Tensor, qualities: torch.Tensor) -> torch.Tensor:
    out = images.clone()
    for i in torch.nonzero(qualities > 0).flatten().tolist():
        out[i] = decode_jpeg(encode_jpeg(images[i], quality=int(qualities[i])))
    return out


def apply_params(images: torch.Tensor, p: AugmentParams) -> torch.Tensor:
    """Transform a ``uint8`` batch ``(N, 1, H, W)`` with given parameters; returns ``uint8``."""
    n = images.shape[0]
    x = images.to(torch.float32) / 255.0
    # geometry: zoom (scale > 1 zooms in), rotation, translation, flip
    angle = p.angle_deg * (math.pi / 180.0)
    cos, sin = torch.cos(angle) / p.scale, torch.sin(angle) / p.scale
    theta = torch.stack([torch.stack([cos * p.flip, -sin, p.tx], 1), torch.stack([sin * p.flip, cos, p.ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # intensity: gamma, contrast around the slice mean, brightness
    if p.gamma is not None:
        x = x.clamp_min(0).pow(p.gamma.view(n, 1, 1, 1))
    if p.contrast is not None:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * p.contrast.view(n, 1, 1, 1) + mean
    if p.brightness is not None:
        x = x + p.brightness.view(n, 1, 1, 1)
    if p.window_lo is not None and p.window_hi is not None:
        lo, hi = p.window_lo.view(n, 1, 1, 1), p.window_hi.view(n, 1, 1, 1)
        x = (x.clamp(0, 1) - lo) / (hi - lo)
    if p.downscale is not None:
        x = _blur_by_downscale(x.clamp(0, 1), p.downscale)
    if p.noise is not None and p.noise_field is not None:
        x = x + p.noise.view(n, 1, 1, 1) * p.noise_field
    out = (x.clamp(0, 1) * 255.0).round().to(torch.uint8)
    if p.jpeg_quality is not None:
        out = _reencode_jpeg(out, p.jpeg_quality)
    return out


def augment_batch(images: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator | None = None) -> torch.Tensor:
    """Randomly transform a ``uint8`` batch ``(N, 1, H, W)``; returns ``uint8`` of the same shape.

    Returning ``uint8`` means the exact :func:`normalize` used at evaluation follows.
    """
    return apply_params(images, sample_params(images.shape[0], cfg, gen, tuple(images.shape)))
