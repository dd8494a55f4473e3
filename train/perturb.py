"""Perturbations that turn dataset slices into what people actually upload.

Each :class:`Perturbation` is a short list of steps applied to a decoded slice (an RGB PIL image)
and the file format it is saved in. The kinds, each at several strengths:

* ``frame``: uniform borders of a colour and width (exported figures, light or coloured frames),
  nested frames, asymmetric margins;
* ``figure``: a white figure page with a caption and a panel letter;
* ``canvas``: a viewer screenshot: the slice on a dark canvas with overlay text, rulers,
  orientation letters and an arrow (drawn with :mod:`PIL.ImageDraw`);
* ``jpeg``, ``downscale``, ``gamma``, ``window``, ``rotate``, ``noise``: export settings and
  handling that framing cannot undo;
* combinations of the above.

The suites that combine them at fixed strengths live in :mod:`train.suites`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Colour = tuple[int, int, int]
Step = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Perturbation:
    """A named list of steps and the format the result is saved in (``png`` or ``jpeg``)."""

    name: str
    kind: str
    steps: tuple[Step, ...] = ()
    fmt: str = "png"
    quality: int = 95
    note: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "steps": [[op, dict(kw)] for op, kw in self.steps],
            "format": self.fmt,
            **({"quality": self.quality} if self.fmt == "jpeg" else {}),
        }


def _rgb(colour: int | Colour) -> Colour:
    return (colour, colour, colour) if isinstance(colour, int) else tuple(colour)  # type: ignore[return-value]


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(6, int(size)))


def frame(
    img: Image.Image,
    rng: np.random.Generator,
    *,
    colour: int | Colour,
    width: float,
    sides: tuple[float, float, float, float] = (1, 1, 1, 1),
) -> Image.Image:
    """A uniform border ``width`` x the longer side wide (per side times ``sides``: left, top, right, bottom)."""
    w = width * max(img.size)
    left, top, right, bottom = (round(w * s) for s in sides)
    out = Image.new("RGB", (img.width + left + right, img.height + top + bottom), _rgb(colour))
    out.paste(img, (left, top))
    return out


def figure(
    img: Image.Image,
    rng: np.random.Generator,
    *,
    colour: int | Colour = 255,
    margin: float = 0.08,
    caption_lines: int = 1,
    text_colour: int | Colour = 0,
) -> Image.Image:
    """A figure page: margins, a panel letter above the slice and a caption below it."""
    side = max(img.size)
    m = round(margin * side)
    font_size = max(8, side // 28)
    cap_h = caption_lines * round(font_size * 1.4) + m
    out = Image.new("RGB", (img.width + 2 * m, img.height + 2 * m + cap_h), _rgb(colour))
    out.paste(img, (m, m + font_size))
    draw = ImageDraw.Draw(out)
    draw.text((max(1, m // 4), max(1, m // 4)), "A", fill=_rgb(text_colour), font=_font(font_size * 1.3))
    words = ["Figure", "1.", "Axial", "chest", "CT", "slice", "showing", "a", "lesion", "in", "the", "lobe", "(arrow)."]
    for line in range(caption_lines):
        text = " ".join(rng.permutation(words)[: 6 + line])
        draw.text(
            (m, m + font_size + img.height + m // 2 + line * round(font_size * 1.4)),
            text,
            fill=_rgb(text_colour),
            font=_font(font_size),
        )
    return out


def canvas(
    img: Image.Image,
    rng: np.random.Generator,
    *,
    background: int | Colour = 0,
    fill: float = 0.8,
    aspect: float = 4 / 3,
    offset: tuple[float, float] = (0.5, 0.5),
    text_colour: int | Colour = 220,
    ruler: str = "right",
    letters: bool = True,
    arrow: bool = False,
    colourbar: bool = False,
    toolbar: int | Colour | None = None,
    sidebar: int | Colour | None = None,
) -> Image.Image:
    """A viewer screenshot: the slice ``fill`` x the canvas height, overlay text in the corners,
    a ruler with ticks, orientation letters, optionally an arrow that touches the body,
    a grey-scale colour bar, a light toolbar strip along the top and a panel of buttons on the left."""
    ch = round(img.height / fill)
    cw = max(round(ch * aspect), img.width + 8)
    panel = round(cw / 5) if sidebar is not None else 0
    cw += panel
    out = Image.new("RGB", (cw, ch), _rgb(background))
    x0 = panel + round((cw - panel - img.width) * offset[0])
    y0 = round((ch - img.height) * offset[1])
    out.paste(img, (x0, y0))
    draw = ImageDraw.Draw(out)
    fs = max(7, ch // 32)
    font, tc = _font(fs), _rgb(text_colour)
    study = int(rng.integers(1000, 9999))
    corners = [
        ["ANON^PATIENT", f"ID {study}", "F 63Y"],
        [f"Se: {int(rng.integers(2, 9))}", f"Im: {int(rng.integers(10, 300))}", "Ax 1.25mm"],
        ["W: 1500 L: -600", "kVp 120  mA 210", "Zoom 1.00"],
        ["2019-03-14", "LUNG", f"{int(rng.integers(1, 99))}%"],
    ]
    pad, lh = max(2, fs // 3), round(fs * 1.25)
    for i, lines in enumerate(corners):
        for j, line in enumerate(lines):
            right, bottom = i in (1, 3), i in (2, 3)
            tw = draw.textlength(line, font=font)
            x = cw - pad - tw if right else pad
            y = ch - pad - (len(lines) - j) * lh if bottom else pad + j * lh
            draw.text((x, y), line, fill=tc, font=font)
    if ruler != "none":
        length, tick = ch // 2, max(3, fs // 2)
        x = cw - 3 * pad - tick if ruler == "right" else 3 * pad + tick
        y1 = (ch - length) // 2
        draw.line([(x, y1), (x, y1 + length)], fill=tc, width=1)
        for k in range(11):
            yy = y1 + k * length // 10
            t = tick if k % 5 == 0 else tick // 2
            draw.line([(x, yy), (x - t if ruler == "right" else x + t, yy)], fill=tc, width=1)
    if letters:
        for text, (px, py) in {"A": (0.5, 0.0), "P": (0.5, 1.0), "R": (0.0, 0.5), "L": (1.0, 0.5)}.items():
            tw = draw.textlength(text, font=font)
            draw.text(
                (min(max(pad, px * cw - tw / 2), cw - pad - tw), min(max(pad, py * ch - fs / 2), ch - pad - fs)),
                text,
                fill=tc,
                font=font,
            )
    if arrow:
        tip = (x0 + img.width * 0.2, y0 + img.height * 0.45)
        tail = (max(pad, tip[0] - cw * 0.15), tip[1] - ch * 0.2)
        draw.line([tail, tip], fill=_rgb((255, 220, 0)), width=max(1, fs // 6))
        draw.polygon(
            [tip, (tip[0] - fs * 0.7, tip[1] - fs * 0.2), (tip[0] - fs * 0.3, tip[1] - fs * 0.7)],
            fill=_rgb((255, 220, 0)),
        )
    if colourbar:
        bw, bh = max(4, fs // 2), ch // 3
        bx, by = cw - 6 * pad - bw - fs, ch - bh - 3 * lh
        for k in range(bh):
            v = round(255 * (1 - k / max(1, bh - 1)))
            draw.line([(bx, by + k), (bx + bw, by + k)], fill=(v, v, v))
    if toolbar is not None:
        th = max(12, ch // 14)
        draw.rectangle([0, 0, cw, th], fill=_rgb(toolbar))
        for k in range(6):
            draw.rectangle([pad + k * th * 1.3, 2, pad + k * th * 1.3 + th - 4, th - 3], outline=(90, 90, 90))
    if sidebar is not None:
        draw.rectangle([0, 0, panel, ch], fill=_rgb(sidebar))
        for k in range(8):
            y = pad + k * 2 * lh
            draw.rectangle([pad, y, panel - pad, y + lh], outline=(70, 70, 70))
            draw.text((2 * pad, y + 1), f"Tool {k + 1}", fill=(30, 30, 30), font=font)
    return out


def jpeg(img: Image.Image, rng: np.random.Generator, *, quality: int) -> Image.Image:
    """Re-encode as JPEG at ``quality`` (a step, so later steps can follow)."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def downscale(img: Image.Image, rng: np.random.Generator, *, factor: float, back: bool = False) -> Image.Image:
    """Resize by ``factor`` (antialiased); with ``back``, up again to the original size (a blurred copy)."""
    size = (max(1, round(img.width * factor)), max(1, round(img.height * factor)))
    small = img.resize(size, Image.Resampling.BILINEAR)
    return small.resize(img.size, Image.Resampling.BICUBIC) if back else small


def _lut(img: Image.Image, fn: Callable[[np.ndarray], np.ndarray]) -> Image.Image:
    table = np.clip(np.rint(fn(np.arange(256, dtype=np.float64))), 0, 255).astype(np.uint8)
    return img.point(list(table) * len(img.getbands()))


def gamma(img: Image.Image, rng: np.random.Generator, *, g: float) -> Image.Image:
    """``255 * (v / 255) ** g``: g < 1 is brighter (another export setting)."""
    return _lut(img, lambda v: 255.0 * (v / 255.0) ** g)


def window(
    img: Image.Image, rng: np.random.Generator, *, lo: float, hi: float, out_lo: float = 0, out_hi: float = 255
) -> Image.Image:
    """A linear window: ``lo..hi`` mapped onto ``out_lo..out_hi``, clipped (another CT window or level)."""
    return _lut(img, lambda v: out_lo + (v - lo) * (out_hi - out_lo) / (hi - lo))


def rotate(img: Image.Image, rng: np.random.Generator, *, degrees: float, fill: int | Colour = 0) -> Image.Image:
    """Rotate counter-clockwise by ``degrees``, the image grown to keep the corners."""
    return img.rotate(degrees, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=_rgb(fill))


def noise(img: Image.Image, rng: np.random.Generator, *, sigma: float) -> Image.Image:
    """Gaussian noise of ``sigma`` gray levels, the same on the three channels."""
    arr = np.asarray(img, dtype=np.float64)
    arr = arr + rng.normal(0.0, sigma, arr.shape[:2])[..., None]
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


OPS: dict[str, Callable[..., Image.Image]] = {
    f.__name__: f for f in (frame, figure, canvas, jpeg, downscale, gamma, window, rotate, noise)
}


def apply(p: Perturbation, img: Image.Image, seed: int = 0) -> bytes:
    """The file an uploader would send: ``img`` perturbed by ``p`` and encoded; deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    out = img.convert("RGB")
    for op, kwargs in p.steps:
        out = OPS[op](out, rng, **kwargs)
    buf = io.BytesIO()
    if p.fmt == "jpeg":
        out.save(buf, "JPEG", quality=p.quality)
    else:
        out.save(buf, "PNG")
    return buf.getvalue()
