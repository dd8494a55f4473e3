"""Gray-level standardisation: the same slice exported brighter or darker reaches the model alike.

Exports and viewers apply a gamma or another window to a slice; a model trained on one source's
gray levels loses accuracy on the others (the robustness suites' worst rows). ``standardize``
scales each slice so that its ``white`` quantile is 1, then applies the power that brings its
``mid`` quantile to one half. A power law commutes with both steps, so a gamma change of the
upload is undone exactly (up to 8-bit rounding), and a window change mostly.
"""

from __future__ import annotations

import math

import numpy as np
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
    level = torch.quantile(scaled, mid, dim=-1, keepdim=True)
    return scaled.pow(_power(level)).reshape(x.shape)


def _power(level: torch.Tensor) -> torch.Tensor:
    """The power that brings a slice's ``mid`` quantile (``level``, after scaling) to ``MID_TARGET``."""
    return (math.log(MID_TARGET) / torch.log(level.clamp(*LEVEL_RANGE))).clamp(*POWER_RANGE)


def _mixed_ranks(cum: torch.Tensor, n: int, q: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gray levels (0..255) at the two ranks ``torch.quantile`` mixes for ``q`` in ``n`` values, and the weight.

    The rank is computed as ``torch.quantile`` computes it for float32 input (``q`` rounded to float32, the
    product in double), so :func:`standardize_u8` matches :func:`standardize` bit for bit (tests check it).
    """
    rank = float(np.float32(q)) * (n - 1)
    below, above = math.floor(rank), math.ceil(rank)
    shape = (*cum.shape[:-1], 1)
    lo = torch.searchsorted(cum, torch.full(shape, below, device=cum.device), right=True)
    hi = torch.searchsorted(cum, torch.full(shape, above, device=cum.device), right=True)
    return lo, hi, torch.tensor(rank - below, dtype=torch.float32, device=cum.device)


def standardize_u8(batch: torch.Tensor, white: float, mid: float) -> torch.Tensor:
    """``standardize(batch / 255, white, mid)`` for ``uint8`` slices ``(..., 1, H, W)``, without sorting.

    A ``uint8`` slice has 256 possible values, so its quantiles are read from a histogram (linear in the
    pixels) instead of two sorts: the serving path's normalisation cost 3.6 ms a slice with the sorts.
    """
    if batch.dtype != torch.uint8 or batch.shape[-3] != 1:
        raise ValueError(
            f"standardize_u8 expects uint8 slices with one channel, got {batch.dtype} {tuple(batch.shape)}"
        )
    flat = batch.reshape(*batch.shape[:-3], -1)
    index = flat.long()
    counts = torch.zeros((*flat.shape[:-1], 256), dtype=torch.int64, device=batch.device)
    cum = counts.scatter_add_(-1, index, torch.ones_like(index)).cumsum_(-1)
    top, power = _white_and_power(cum, flat.shape[-1], white, mid)
    scaled = (flat.to(torch.float32).div_(255.0) / top).clamp_(0.0, 1.0)
    return scaled.pow(power).reshape(batch.shape)


def _white_and_power(cum: torch.Tensor, n: int, white: float, mid: float) -> tuple[torch.Tensor, torch.Tensor]:
    """From the cumulative histogram of ``uint8`` slices of ``n`` pixels: the gray (0..1) scaled to white, and the
    power :func:`standardize` then applies."""
    levels = torch.arange(256, dtype=torch.float32, device=cum.device).div_(255.0)  # each value x = u8 / 255 takes
    lo, hi, weight = _mixed_ranks(cum, n, white)
    top = torch.lerp(levels[lo], levels[hi], weight).clamp_min(MIN_LEVEL)
    lo, hi, weight = _mixed_ranks(cum, n, mid)  # the map to the scaled slice keeps the order: same ranks
    level = torch.lerp((levels[lo] / top).clamp_(0.0, 1.0), (levels[hi] / top).clamp_(0.0, 1.0), weight)
    return top, _power(level)


def standardize_lut(gray: np.ndarray, white: float, mid: float, black: int = 0) -> np.ndarray:
    """A 256-entry ``uint8`` table that standardises ``gray`` (``uint8``) as :func:`standardize` would.

    For the body search (``slice_search="standardized"``, :mod:`lungdemo.framing`): a gamma change of the
    upload no longer moves the level the body is cut at. Gray levels up to ``black`` (a dark canvas's
    colour) are taken as black first, so the power never lifts a canvas into the body's range.
    """
    shifted = np.clip(np.arange(256) - int(black), 0, 255)
    counts = np.bincount(shifted[np.asarray(gray, dtype=np.uint8).ravel()], minlength=256)
    top, power = _white_and_power(torch.from_numpy(np.cumsum(counts)), int(counts.sum()), white, mid)
    scaled = (torch.arange(256, dtype=torch.float32).div_(255.0) / top).clamp_(0.0, 1.0)
    return scaled.pow(power).mul_(255.0).round_().to(torch.uint8).numpy()[shifted]
