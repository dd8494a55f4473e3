"""Gray-level standardisation: the same slice exported brighter or darker reaches the model alike.

Exports and viewers apply a gamma or another window to a slice; a model trained on one source's
gray levels loses accuracy on the others (the robustness suites' worst rows). ``standardize``
scales each slice so that its ``white`` quantile is 1, then applies the power that brings its
``mid`` quantile to one half. A power law commutes with both steps, so a gamma change of the
upload is undone exactly (up to 8-bit rounding), and a window change mostly.
"""

from __future__ import annotations

import math

import torch

INTENSITY_POLICIES = ("none", "standardize")
"""``none``: gray levels as decoded (every folder saved before this existed); ``standardize``: see the module."""
MID_TARGET = 0.5
"""Where the ``mid`` quantile lands."""
POWER_RANGE = (0.25, 4.0)
"""The power applied is kept within this range, so a nearly black or white slice is not blown up."""
LEVEL_RANGE = (0.02, 0.98)
"""The ``mid`` quantile is read within this range before the power is fitted to it (log of 0 or 1)."""
MIN_LEVEL = 1.0 / 255.0
"""A white point below one gray level is read as one gray level (an all-black slice stays black)."""


def standardize(x: torch.Tensor, white: float, mid: float) -> torch.Tensor:
    """Standardise float slices in [0, 1], shape ``(..., 1, H, W)``, each on its own quantiles."""
    if x.shape[-3] != 1:
        raise ValueError(f"standardize expects one channel, got shape {tuple(x.shape)}")
    flat = x.reshape(*x.shape[:-3], -1)
    top = torch.quantile(flat, white, dim=-1, keepdim=True).clamp_min(MIN_LEVEL)
    scaled = (flat / top).clamp_(0.0, 1.0)
    level = torch.quantile(scaled, mid, dim=-1, keepdim=True).clamp(*LEVEL_RANGE)
    power = (math.log(MID_TARGET) / torch.log(level)).clamp(*POWER_RANGE)
    return scaled.pow(power).reshape(x.shape)
