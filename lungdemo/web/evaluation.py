"""The evaluation tab: tables and figures read from the model folder's metrics.json, nothing recomputed."""

from __future__ import annotations

import base64
import io
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import gradio as gr
from gradio.components.plot import PlotData

from lungdemo.folder import METRICS_NAME
from lungdemo.loading import LoadedModel
from lungdemo.web.evaluation_sections import intervals_section, ood_section, robustness_section, table
from lungdemo.web.text import model_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

SPLIT_COLUMNS = (("test", "Official test split"), ("test_leakage_free", "Leakage-free test subset"))
"""metrics.json keys shown side by side, with their column titles."""
CALIBRATION_SPLITS = (("validation", "Validation split"), ("test", "Official test split"))
"""Where the temperature was fitted, and a split that played no part in fitting it."""
REPORT_HEADERS = ["class", "precision", "recall", "F1", "support"]
SUMMARY_HEADERS = ["metric", *(title for _, title in SPLIT_COLUMNS)]
CALIBRATION_HEADERS = ["split", "slices (n)", "temperature", "ECE before scaling", "ECE after scaling"]
DIGITS = 3


def _fmt(value: Any) -> Any:
    return round(float(value), DIGITS) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def report_rows(split: dict[str, Any]) -> list[list[Any]]:
    """Per-class precision/recall/F1/support plus macro and weighted rows, like sklearn's report."""
    rows: list[list[Any]] = []
    for name in split["class_names"]:
        c = split["per_class"][name]
        rows.append([name, _fmt(c["precision"]), _fmt(c["recall"]), _fmt(c["f1"]), int(c["support"])])
    for avg in ("macro", "weighted"):
        a = split[avg]
        rows.append([f"{avg} avg", _fmt(a["precision"]), _fmt(a["recall"]), _fmt(a["f1"]), int(split["n"])])
    return rows


SUMMARY_METRICS: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
    ("slices (n)", lambda m: int(m["n"])),
    ("accuracy", lambda m: _fmt(m["accuracy"])),
    ("macro precision", lambda m: _fmt(m["macro"]["precision"])),
    ("macro recall", lambda m: _fmt(m["macro"]["recall"])),
    ("macro F1", lambda m: _fmt(m["macro"]["f1"])),
    ("weighted F1", lambda m: _fmt(m["weighted"]["f1"])),
    ("cancer-subtype macro F1", lambda m: _fmt(m.get("cancer_subtype_macro_f1", "—"))),
)


def summary_rows(metrics: dict[str, Any]) -> list[list[Any]]:
    """One row per headline metric, one column per test split (— where a split is absent)."""
    rows = []
    for label, getter in SUMMARY_METRICS:
        row: list[Any] = [label]
        for key, _ in SPLIT_COLUMNS:
            row.append(getter(metrics[key]) if isinstance(metrics.get(key), dict) else "—")
        rows.append(row)
    return rows


def calibration_rows(metrics: dict[str, Any]) -> list[list[Any]]:
    """One row per split of :data:`CALIBRATION_SPLITS` that has calibration results."""
    rows = []
    for key, title in CALIBRATION_SPLITS:
        split = metrics.get(key)
        cal = split.get("calibration") if isinstance(split, dict) else None
        if isinstance(cal, dict):
            rows.append(
                [
                    title,
                    int(split["n"]),
                    _fmt(cal["temperature"]),
                    _fmt(cal["ece_uncalibrated"]),
                    _fmt(cal["ece_calibrated"]),
                ]
            )
    return rows


def calibration_intro(metrics: dict[str, Any], temperature: float) -> str:
    """What temperature scaling and ECE are, and which splits lack results."""
    text = (
        "**Calibration.** Temperature scaling divides the model's scores by one number, fitted on the "
        "validation split, so that a class shown at 70% is right about 70% of the time; it changes no "
        f"prediction. This model's temperature: **{temperature:.3g}** (1 means no scaling). The expected "
        "calibration error (ECE) is the average gap between confidence and accuracy over ten confidence "
        "bins: lower is better. The diagrams plot accuracy against confidence per bin; the dotted diagonal "
        "is perfect calibration."
    )
    missing = [
        f"`{key}`"
        for key, _ in CALIBRATION_SPLITS
        if not (isinstance(metrics.get(key), dict) and isinstance(metrics[key].get("calibration"), dict))
    ]
    if missing:
        text += (
            f"\n\n*{METRICS_NAME} has no calibration results for {' and '.join(missing)}: this model was "
            "evaluated before calibration was added to training and evaluation.*"
        )
    return text


def evaluation_intro(loaded: LoadedModel) -> str:
    """Where the numbers come from, in one paragraph."""
    m = loaded.metrics or {}
    epoch = f" Best epoch (by validation): {m['best_epoch']}." if "best_epoch" in m else ""
    return (
        f"Read from `{METRICS_NAME}` in the model folder ({model_label(loaded)}), as written by the "
        "evaluation: nothing here is recomputed. The **leakage-free subset** leaves out test slices "
        "with an exact or near copy in train or valid. *Normal* slices come from another source than "
        "the cancer slices and are recognisable by that alone, so the **cancer-subtype macro F1** "
        f"(the three cancer classes only) is the honest number.{epoch}"
    )


def draw_confusion(split: dict[str, Any], title: str) -> Figure:
    """Training's confusion-matrix figure for one split of metrics.json."""
    from lungdemo import plots  # matplotlib on the tab's first visit, not at start-up

    title = f"{title} (n={int(split['n'])})"
    return plots.confusion_matrix_figure(split["confusion_matrix"], split["class_names"], title)


def draw_reliability(calibration: dict[str, Any], title: str) -> Figure:
    """Training's reliability diagram for one split's ``calibration``."""
    from lungdemo import plots

    return plots.reliability_figure(calibration, title)


def figure_png(fig: Figure) -> PlotData:
    """A figure as the PNG payload ``gr.Plot`` shows."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return PlotData(type="matplotlib", plot="data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())


class PlotCache:
    """Figures drawn once, on the tab's first visit, then served to every visitor."""

    def __init__(self, kind: str, draw: Callable[[dict[str, Any], str], Figure], splits: Sequence[tuple[dict, str]]):
        self.kind = kind
        self.draw = draw
        self.splits = list(splits)
        self._lock = threading.Lock()
        self._images: list[PlotData] | None = None

    def render(self) -> list[PlotData]:
        with self._lock:
            if self._images is None:
                self._images = [figure_png(self.draw(split, title)) for split, title in self.splits]
                logger.info("drew %d %s", len(self._images), self.kind)
            return list(self._images)


def _plot(label: str, elem_id: str) -> gr.Plot:
    return gr.Plot(format="png", label=label, show_label=False, elem_id=elem_id)  # the figure has its own title


def evaluation_tab(loaded: LoadedModel, tab: gr.Tab) -> tuple[PlotCache | None, PlotCache | None]:
    """Tables filled at build time from metrics.json; the confusion matrices drawn when the tab opens."""
    metrics = loaded.metrics
    if not metrics:
        gr.Markdown(
            f"This model folder ({model_label(loaded)}) has no `{METRICS_NAME}`, so there are no "
            "evaluation results to show. The training pipeline writes it when it evaluates a model.",
            elem_id="no-metrics",
        )
        return None, None
    gr.Markdown(evaluation_intro(loaded))
    table(summary_rows(metrics), SUMMARY_HEADERS, "Summary", "metrics-summary")
    plots: list[gr.Plot] = []
    drawn: list[tuple[dict[str, Any], str]] = []
    with gr.Row():
        for key, title in SPLIT_COLUMNS:
            split = metrics.get(key)
            with gr.Column():
                if not isinstance(split, dict):
                    gr.Markdown(f"*{METRICS_NAME} has no `{key}` results.*")
                    continue
                table(report_rows(split), REPORT_HEADERS, f"{title}: per class", f"report-{key}")
                plots.append(_plot(f"{title}: confusion matrix", f"confusion-{key}"))
                drawn.append((split, title))
    confusion = PlotCache("confusion matrices", draw_confusion, drawn)
    if plots:
        tab.select(confusion.render, outputs=plots, api_visibility="private", queue=False)
    intervals_section(metrics)
    reliability = _calibration_section(metrics, float(loaded.model.temperature), tab)
    robustness_section(metrics)
    ood_section(metrics)
    return confusion, reliability


def _calibration_section(metrics: dict[str, Any], temperature: float, tab: gr.Tab) -> PlotCache | None:
    """Temperature and ECE per split, and the reliability diagrams (drawn when the tab opens)."""
    rows = calibration_rows(metrics)
    if not rows:
        gr.Markdown(
            f"**Calibration.** {METRICS_NAME} has no calibration results (no temperature, expected calibration "
            "error or reliability diagram): this model was evaluated before calibration was added to training "
            f"and evaluation. Its softmax temperature is {temperature:.3g}.",
            elem_id="no-calibration",
        )
        return None
    gr.Markdown(calibration_intro(metrics, temperature), elem_id="calibration-intro")
    table(rows, CALIBRATION_HEADERS, "Calibration (expected calibration error, 10 bins)", "calibration-table")
    plots: list[gr.Plot] = []
    drawn: list[tuple[dict[str, Any], str]] = []
    with gr.Row():
        for key, title in CALIBRATION_SPLITS:
            split = metrics.get(key)
            cal = split.get("calibration") if isinstance(split, dict) else None
            if isinstance(cal, dict):
                with gr.Column():
                    plots.append(_plot(f"{title}: reliability diagram", f"reliability-{key}"))
                drawn.append((cal, title))
    reliability = PlotCache("reliability diagrams", draw_reliability, drawn)
    tab.select(reliability.render, outputs=plots, api_visibility="private", queue=False)
    return reliability
