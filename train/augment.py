"""Training-only augmentation, applied to a whole batch at once.

Works on the cached canonical slices (``uint8`` ``(N, 1, S, S)``, see
:func:`lungdemo.preprocessing.decode_canonical`) before :func:`~lungdemo.preprocessing.normalize`.
One random affine transform per slice (scale, a small rotation, translation, horizontal flip)
is applied with a single ``affine_grid`` + ``grid_sample`` call for the batch, and an
intensity jitter (brightness, contrast, gamma) that mimics differences in CT windowing.
Batching it keeps augmentation a small fraction of an AlexNet step on 2 cores, where
per-image PIL transforms would not be.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F


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

    def to_dict(self) -> dict:
        return asdict(self)


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (hi - lo) + lo


@dataclass(frozen=True)
class AugmentDraw:
    """One batch's random draws, one row per slice (CPU tensors, from the run's generator).

    Drawing apart from applying lets several processes draw a global batch alike and each apply
    its own rows, and lets the draws stay on the CPU generator while the images sit on a GPU.
    """

    scale: torch.Tensor
    angle: torch.Tensor
    tx: torch.Tensor
    ty: torch.Tensor
    flip: torch.Tensor
    gamma: torch.Tensor | None
    contrast: torch.Tensor | None
    brightness: torch.Tensor | None

    def rows(self, index: torch.Tensor | slice) -> AugmentDraw:
        """The draws of some slices of the batch (e.g. one process's share)."""
        return AugmentDraw(*(None if t is None else t[index] for t in self._tensors()))

    def to(self, device: torch.device) -> AugmentDraw:
        return AugmentDraw(*(None if t is None else t.to(device) for t in self._tensors()))

    def _tensors(self) -> list[torch.Tensor | None]:
        return [getattr(self, f.name) for f in fields(self)]


def draw_augment(n: int, cfg: AugmentConfig, gen: torch.Generator | None = None) -> AugmentDraw:
    """The random numbers :func:`augment_batch` uses for ``n`` slices, in the order it draws them."""
    scale = _uniform(n, cfg.scale_min, cfg.scale_max, gen)
    angle = _uniform(n, -cfg.rotate_deg, cfg.rotate_deg, gen) * (math.pi / 180.0)
    tx = _uniform(n, -cfg.translate, cfg.translate, gen) * 2
    ty = _uniform(n, -cfg.translate, cfg.translate, gen) * 2
    flip = (torch.rand(n, generator=gen) < 0.5).float() * 2 - 1 if cfg.hflip else torch.ones(n)
    gamma = torch.exp(_uniform(n, -cfg.gamma, cfg.gamma, gen)) if cfg.gamma else None
    contrast = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, gen) if cfg.contrast else None
    brightness = _uniform(n, -cfg.brightness, cfg.brightness, gen) if cfg.brightness else None
    return AugmentDraw(scale, angle, tx, ty, flip, gamma, contrast, brightness)


def apply_augment(images: torch.Tensor, draw: AugmentDraw) -> torch.Tensor:
    """Transform a ``uint8`` batch ``(N, 1, H, W)`` by ``draw`` (N rows), on the images' device."""
    n = images.shape[0]
    d = draw.to(images.device)
    x = images.to(torch.float32) / 255.0
    # geometry: zoom (scale > 1 zooms in), rotation, translation, flip
    cos, sin = torch.cos(d.angle) / d.scale, torch.sin(d.angle) / d.scale
    theta = torch.stack([torch.stack([cos * d.flip, -sin, d.tx], 1), torch.stack([sin * d.flip, cos, d.ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # intensity: gamma, contrast around the slice mean, brightness
    if d.gamma is not None:
        x = x.clamp_min(0).pow(d.gamma.view(n, 1, 1, 1))
    if d.contrast is not None:
        c = d.contrast.view(n, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * c + mean
    if d.brightness is not None:
        x = x + d.brightness.view(n, 1, 1, 1)
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8)


def augment_batch(images: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator | None = None) -> torch.Tensor:
    """Randomly transform a ``uint8`` batch ``(N, 1, H, W)``; returns ``uint8`` of the same shape.

    Returning ``uint8`` means the exact :func:`normalize` used at evaluation follows.
    """
    return apply_augment(images, draw_augment(images.shape[0], cfg, gen))
