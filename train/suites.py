"""The perturbation suites :mod:`train.robustness` runs, each a list of :mod:`train.perturb` steps.

* ``dev``: the framing and the augmentation were tuned against these;
* ``holdout``: other colours, widths, canvases and strengths, run only once the framing was fixed,
  an honest check of the *kind* of input rather than of exact settings;
* ``stress``: the same kinds pushed past both (gamma 0.5 and 1.6, a 40..200 window, a quarter-size
  export, JPEG quality 10, 15-18 degree turns): where a model's robustness ends.

``all`` in :mod:`train.robustness` runs every suite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from train.perturb import Perturbation, Step


def _p(name: str, kind: str, *steps: Step, fmt: str = "png", quality: int = 95) -> Perturbation:
    return Perturbation(name, kind, tuple(steps), fmt, quality)


def _s(op: str, **kw: Any) -> Step:
    return (op, kw)


def _jpeg_combo(name: str, quality: int, *steps: Step) -> Perturbation:
    """Steps then a JPEG export: how most combined uploads reach the app."""
    return _p(name, "combo", *steps, fmt="jpeg", quality=quality)


@dataclass(frozen=True)
class Suite:
    name: str
    perturbations: tuple[Perturbation, ...] = field(default_factory=tuple)
    description: str = ""


DEV = Suite(
    "dev",
    (
        _p("frame white 5%", "frame", _s("frame", colour=255, width=0.05)),
        _p("frame white 20%", "frame", _s("frame", colour=255, width=0.2)),
        _p("frame light gray 10%", "frame", _s("frame", colour=210, width=0.1)),
        _p("frame mid gray 10%", "frame", _s("frame", colour=128, width=0.1)),
        _p("frame blue 15%", "frame", _s("frame", colour=(40, 70, 170), width=0.15)),
        _p("frame nested white+black", "frame", _s("frame", colour=0, width=0.02), _s("frame", colour=255, width=0.08)),
        _p("figure white, caption", "figure", _s("figure", margin=0.08, caption_lines=1)),
        _p("canvas black, text+ruler", "canvas", _s("canvas", background=0, fill=0.8)),
        _p("canvas gray 30, text", "canvas", _s("canvas", background=30, fill=0.75, offset=(0.4, 0.5))),
        _p(
            "canvas black, small slice, arrow",
            "canvas",
            _s("canvas", background=0, fill=0.55, arrow=True, ruler="left"),
        ),
        _p("canvas beside a light side panel", "canvas", _s("canvas", background=5, fill=0.75, sidebar=200)),
        _p("jpeg q75", "jpeg", fmt="jpeg", quality=75),
        _p("jpeg q50", "jpeg", fmt="jpeg", quality=50),
        _p("jpeg q30", "jpeg", fmt="jpeg", quality=30),
        _p("downscale 1/2", "downscale", _s("downscale", factor=0.5)),
        _p("downscale 1/3", "downscale", _s("downscale", factor=1 / 3)),
        _p("gamma 0.7 (brighter)", "gamma", _s("gamma", g=0.7)),
        _p("gamma 1.4 (darker)", "gamma", _s("gamma", g=1.4)),
        _p("window narrower 20..220", "window", _s("window", lo=20, hi=220)),
        _p("window flatter 0..255 -> 20..210", "window", _s("window", lo=0, hi=255, out_lo=20, out_hi=210)),
        _p("rotate +4", "rotate", _s("rotate", degrees=4)),
        _p("rotate -8", "rotate", _s("rotate", degrees=-8)),
        _p("rotate +12", "rotate", _s("rotate", degrees=12)),
        _p("rotate -7 on white", "rotate", _s("rotate", degrees=-7, fill=255)),
        _p("noise sigma 6", "noise", _s("noise", sigma=6)),
        _jpeg_combo("canvas black + jpeg q70", 70, _s("canvas", background=0, fill=0.8)),
        _jpeg_combo(
            "frame white 10% + downscale 1/2 + jpeg q80",
            80,
            _s("frame", colour=255, width=0.1),
            _s("downscale", factor=0.5),
        ),
        _p("gamma 0.8 + rotate +3", "combo", _s("gamma", g=0.8), _s("rotate", degrees=3)),
    ),
    "tuning suite: the framing was developed against these",
)

HOLDOUT = Suite(
    "holdout",
    (
        _p("frame cream 12%", "frame", _s("frame", colour=(245, 240, 225), width=0.12)),
        _p("frame dark gray 7%", "frame", _s("frame", colour=60, width=0.07)),
        _p("frame red 25%", "frame", _s("frame", colour=(180, 30, 30), width=0.25)),
        _p("frame green 3%", "frame", _s("frame", colour=(60, 160, 80), width=0.03)),
        _p("frame white 35%", "frame", _s("frame", colour=255, width=0.35)),
        _p("frame asymmetric gray 190", "frame", _s("frame", colour=190, width=0.05, sides=(6, 1, 0.5, 3))),
        _p(
            "frame nested gray+white+gray",
            "frame",
            _s("frame", colour=90, width=0.015),
            _s("frame", colour=250, width=0.06),
            _s("frame", colour=160, width=0.04),
        ),
        _p(
            "figure gray 235, two-line caption",
            "figure",
            _s("figure", colour=235, margin=0.05, caption_lines=2, text_colour=40),
        ),
        _p(
            "canvas navy, yellow text, left ruler",
            "canvas",
            _s("canvas", background=(10, 15, 35), fill=0.7, text_colour=(240, 220, 60), ruler="left"),
        ),
        _p(
            "canvas gray 45, colour bar",
            "canvas",
            _s("canvas", background=45, fill=0.6, offset=(0.3, 0.6), colourbar=True, text_colour=255),
        ),
        _p(
            "canvas black, green text, arrow, 16:9",
            "canvas",
            _s("canvas", background=0, fill=0.9, aspect=16 / 9, text_colour=(80, 230, 80), arrow=True),
        ),
        _p("canvas under a light toolbar", "canvas", _s("canvas", background=12, fill=0.7, toolbar=225, ruler="none")),
        _p("jpeg q60", "jpeg", fmt="jpeg", quality=60),
        _p("jpeg q40", "jpeg", fmt="jpeg", quality=40),
        _p("jpeg q20", "jpeg", fmt="jpeg", quality=20),
        _p("downscale 0.6", "downscale", _s("downscale", factor=0.6)),
        _p("downscale 0.4", "downscale", _s("downscale", factor=0.4)),
        _p("downscale 1/2 and back (blur)", "downscale", _s("downscale", factor=0.5, back=True)),
        _p("gamma 0.6", "gamma", _s("gamma", g=0.6)),
        _p("gamma 0.85", "gamma", _s("gamma", g=0.85)),
        _p("gamma 1.25", "gamma", _s("gamma", g=1.25)),
        _p("window 10..200", "window", _s("window", lo=10, hi=200)),
        _p("window level up 0..255 -> 30..255", "window", _s("window", lo=0, hi=255, out_lo=30, out_hi=255)),
        _p("rotate +2", "rotate", _s("rotate", degrees=2)),
        _p("rotate -5", "rotate", _s("rotate", degrees=-5)),
        _p("rotate +10 on white", "rotate", _s("rotate", degrees=10, fill=255)),
        _p("noise sigma 10", "noise", _s("noise", sigma=10)),
        _jpeg_combo(
            "canvas gray 45 + downscale 0.6 + jpeg q60",
            60,
            _s("canvas", background=45, fill=0.6, offset=(0.3, 0.6), colourbar=True),
            _s("downscale", factor=0.6),
        ),
        _jpeg_combo(
            "frame cream 12% + gamma 0.85 + jpeg q50",
            50,
            _s("frame", colour=(245, 240, 225), width=0.12),
            _s("gamma", g=0.85),
        ),
        _p("rotate -3 + noise 4 + figure", "combo", _s("rotate", degrees=-3), _s("noise", sigma=4), _s("figure")),
    ),
    "independent check: other colours, widths, canvases and strengths, not run while tuning",
)


STRESS = Suite(
    "stress",
    (
        _p("gamma 0.5 (much brighter)", "gamma", _s("gamma", g=0.5)),
        _p("gamma 1.6 (much darker)", "gamma", _s("gamma", g=1.6)),
        _p("gamma 2.0", "gamma", _s("gamma", g=2.0)),
        _p("window 40..200", "window", _s("window", lo=40, hi=200)),
        _p("window flat 0..255 -> 40..200", "window", _s("window", lo=0, hi=255, out_lo=40, out_hi=200)),
        _p("downscale 0.25", "downscale", _s("downscale", factor=0.25)),
        _p("jpeg q10", "jpeg", fmt="jpeg", quality=10),
        _p("jpeg q15", "jpeg", fmt="jpeg", quality=15),
        _p("downscale 0.3 and back (blur)", "downscale", _s("downscale", factor=0.3, back=True)),
        _p("rotate -15", "rotate", _s("rotate", degrees=-15)),
        _p("rotate +18 on gray", "rotate", _s("rotate", degrees=18, fill=128)),
        _p("noise sigma 16", "noise", _s("noise", sigma=16)),
        _p("frame pink 18%", "frame", _s("frame", colour=(240, 180, 200), width=0.18)),
        _p("frame teal 45%", "frame", _s("frame", colour=(20, 110, 120), width=0.45)),
        _p("canvas gray 70, text", "canvas", _s("canvas", background=70, fill=0.65, offset=(0.6, 0.4))),
        _p(
            "canvas light theme 235, dark text",
            "canvas",
            _s("canvas", background=235, fill=0.7, text_colour=20, offset=(0.45, 0.55)),
        ),
        _jpeg_combo(
            "canvas black + gamma 0.6 + jpeg q40", 40, _s("canvas", background=0, fill=0.8), _s("gamma", g=0.6)
        ),
        _jpeg_combo(
            "frame white 25% + downscale 0.3 + jpeg q25",
            25,
            _s("frame", colour=255, width=0.25),
            _s("downscale", factor=0.3),
        ),
    ),
    "beyond both: the same kinds at strengths past the dev and holdout suites (and the trained ranges)",
)

SUITES: dict[str, Suite] = {s.name: s for s in (DEV, HOLDOUT, STRESS)}
