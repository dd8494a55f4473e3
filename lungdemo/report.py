"""A one-page report for one slice, as PNG or PDF.

The page holds what someone reading a prediction later needs to judge it: the slice as the
model saw it (cropped, padded and resized by :mod:`lungdemo.preprocessing`), the Grad-CAM
overlay, the calibrated probabilities, the predicted class, which model made it (repo and
revision, or the folder), when, from which file, and the disclaimer with the heat-map note.

The same facts are embedded as metadata so that software (and the tests) can read them
without reading pixels: PNG text chunks (``predicted_class``, ``probabilities`` as JSON,
``model``, ``disclaimer``, ...), and for PDF the document info (``Title``, ``Subject``
holding the disclaimer, ``Keywords`` holding ``key=value`` pairs).

Drawing uses :class:`matplotlib.figure.Figure` directly, never ``pyplot``: no global figure
state, so reports can be made from several app threads at once.
"""

from __future__ import annotations

import json
import logging
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from lungdemo import DISCLAIMER, __version__
from lungdemo.decode import ImageDecodeError
from lungdemo.gradcam import HEATMAP_NOTE, explain_source
from lungdemo.predictor import Predictor

logger = logging.getLogger(__name__)

ReportFormat = Literal["png", "pdf"]
PAGE_SIZE_IN = (8.27, 11.69)  # A4 portrait
PNG_DPI = 150


def _read(source: bytes | str | Path) -> tuple[bytes, str | None]:
    """The file's bytes (read once, so the prediction and the heat map see the same data)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), None
    path = Path(source)
    try:
        return path.read_bytes(), path.name
    except OSError as exc:
        raise ImageDecodeError(f"cannot read {path}: {exc.strerror or exc}") from exc


def report_fields(
    predictor: Predictor,
    data: bytes,
    file_name: str,
    target_class: str | None,
    created: datetime,
) -> tuple[dict[str, Any], Image.Image, Image.Image]:
    """The facts of the report, the canonical slice and the overlay image."""
    prediction = predictor.predict(data)
    explanation = explain_source(predictor, data, target_class or prediction.top_class)
    loaded = predictor.loaded
    fields: dict[str, Any] = {
        "file": file_name,
        "predicted_class": prediction.top_class,
        "probabilities": prediction.probabilities,
        "heatmap_class": explanation.target_class,
        "heatmap_empty": explanation.empty,
        "model": loaded.description,
        "revision": loaded.revision or "",
        "temperature": float(predictor.model.temperature),
        "created": created.isoformat(timespec="seconds"),
        "notes": list(dict.fromkeys(prediction.notes + explanation.notes)),
        "software": f"lungdemo {__version__}",
        "disclaimer": DISCLAIMER,
        "heatmap_note": HEATMAP_NOTE,
    }
    return fields, explanation.canonical, explanation.overlay()


def draw_report(fields: dict[str, Any], canonical: Image.Image, overlay_image: Image.Image) -> Figure:
    """The report page as a matplotlib figure (no pyplot)."""
    fig = Figure(figsize=PAGE_SIZE_IN)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(4, 2, height_ratios=[1.25, 3.6, 2.6, 1.3], hspace=0.35, wspace=0.08)
    grid.update(left=0.08, right=0.95, top=0.97, bottom=0.03)

    head = fig.add_subplot(grid[0, :])
    head.axis("off")
    head.text(0, 1, "lungdemo - chest CT slice report", fontsize=16, weight="bold", va="top")
    top_p = fields["probabilities"][fields["predicted_class"]]
    lines = [
        f"Predicted class: {fields['predicted_class']} ({top_p:.1%}, calibrated)",
        f"File: {fields['file']}",
        f"Model: {fields['model']}   (temperature {fields['temperature']:.3g})",
        f"Created: {fields['created']}   {fields['software']}",
    ]
    head.text(0, 0.68, "\n".join(lines), fontsize=10, va="top", linespacing=1.6)

    size = canonical.width
    for col, (img, title) in enumerate(
        [
            (canonical, f"Slice as the model saw it ({size}x{size})"),
            (
                overlay_image,
                f"Grad-CAM for {fields['heatmap_class']}" + (" (empty)" if fields["heatmap_empty"] else ""),
            ),
        ]
    ):
        ax = fig.add_subplot(grid[1, col])
        ax.imshow(np.asarray(img), cmap="gray" if img.mode == "L" else None, vmin=0, vmax=255)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])

    bars = fig.add_subplot(grid[2, :])
    box = bars.get_position()  # room on the left for long class names
    bars.set_position((box.x0 + 0.22, box.y0, box.width - 0.22, box.height))
    names = list(fields["probabilities"])
    values = [fields["probabilities"][n] for n in names]
    colours = ["tab:red" if n == fields["predicted_class"] else "tab:gray" for n in names]
    ypos = np.arange(len(names))[::-1]
    bars.barh(ypos, values, color=colours)
    bars.set_yticks(ypos, names, fontsize=9)
    bars.set_xlim(0, 1.12)
    bars.set_xlabel("calibrated probability")
    bars.set_title("Class probabilities", fontsize=10)
    for y, v in zip(ypos, values, strict=True):
        bars.text(v + 0.01, y, f"{v:.1%}", va="center", fontsize=9)

    foot = fig.add_subplot(grid[3, :])
    foot.axis("off")
    notes = fields["notes"]
    footer = [fields["heatmap_note"], *(f"Note: {n}" for n in notes), fields["disclaimer"]]
    if fields["heatmap_empty"]:
        footer.insert(0, f"The heat map is empty: no region raised the score of {fields['heatmap_class']}.")
    text = "\n".join(textwrap.fill(line, width=105) for line in footer)
    foot.text(0, 1, text, fontsize=9, va="top", linespacing=1.5, style="italic")
    return fig


def _png_info(fields: dict[str, Any]) -> PngInfo:
    info = PngInfo()
    for key, value in fields.items():
        text = json.dumps(value) if isinstance(value, (dict, list, float)) else str(value)
        info.add_itxt(key, text)  # iTXt: UTF-8, so any file name fits
    info.add_itxt("Title", f"lungdemo report: {fields['file']}")
    return info


def _pdf_metadata(fields: dict[str, Any], created: datetime) -> dict[str, Any]:
    keywords = {
        "predicted_class": fields["predicted_class"],
        "probabilities": json.dumps(fields["probabilities"]),
        "heatmap_class": fields["heatmap_class"],
        "model": fields["model"],
        "file": fields["file"],
        "created": fields["created"],
    }
    return {
        "Title": f"lungdemo report: {fields['file']}",
        "Subject": f"{fields['disclaimer']} {fields['heatmap_note']}",
        "Keywords": "; ".join(f"{k}={v}" for k, v in keywords.items()),
        "Creator": fields["software"],
        "CreationDate": created,
    }


def make_report(
    predictor: Predictor,
    source: bytes | str | Path,
    out_path: Path,
    fmt: ReportFormat = "png",
    target_class: str | None = None,
    *,
    file_name: str | None = None,
    created: datetime | None = None,
) -> Path:
    """Write the report for ``source`` to ``out_path`` and return it.

    ``target_class`` picks the class the heat map explains (default: the predicted class).
    ``file_name`` names a bytes upload on the page (default: the path's name, or
    ``"upload"``); ``created`` defaults to now, local time with its offset. Raises
    :class:`~lungdemo.preprocessing.ImageDecodeError` for an unreadable file and
    ``ValueError`` for an unknown format or class. The file is written atomically.
    """
    if fmt not in ("png", "pdf"):
        raise ValueError(f"report format must be 'png' or 'pdf', got {fmt!r}")
    data, path_name = _read(source)
    when = created or datetime.now().astimezone()
    fields, canonical, overlay_image = report_fields(
        predictor, data, file_name or path_name or "upload", target_class, when
    )
    fig = draw_report(fields, canonical, overlay_image)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if fmt == "png":
        canvas = fig.canvas
        fig.set_dpi(PNG_DPI)
        canvas.draw()
        page = Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
        page.save(tmp, format="PNG", pnginfo=_png_info(fields), dpi=(PNG_DPI, PNG_DPI))
    else:
        fig.savefig(tmp, format="pdf", metadata=_pdf_metadata(fields, when))
    tmp.replace(out)
    logger.info("report for %s (%s) written to %s", fields["file"], fields["predicted_class"], out)
    return out
