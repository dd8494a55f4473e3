"""Assemble the demo: load the model, build the four tabs, configure the queue; and the launch options."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from lungdemo.batching import DEFAULT_MAX_BATCH_SIZE
from lungdemo.decode import DEFAULT_MAX_BYTES
from lungdemo.loading import SHIPPED_MODEL_DIR, LoadedModel, ModelLoadError, load_model
from lungdemo.predictor import Predictor
from lungdemo.web.about import about_tab
from lungdemo.web.batch import BatchClassifier, batch_tab
from lungdemo.web.classifier import Classifier
from lungdemo.web.classify import classify_tab
from lungdemo.web.evaluation import PlotCache, evaluation_tab
from lungdemo.web.lifecycle import CACHE_SWEEP, OUTPUT_GRACE_S, UPLOAD_GRACE_S, OutputFiles, Timers, UploadJanitor
from lungdemo.web.text import model_label

logger = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
"""Example slices in a source checkout (absent from an installed wheel: then no examples)."""
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_CONCURRENCY = 2
"""Requests processed at once per event (heat maps; any event without its own limit)."""
CLASSIFY_CONCURRENCY = DEFAULT_MAX_BATCH_SIZE
"""``/classify`` requests processed at once: they decode in parallel and share forward passes
(:mod:`lungdemo.batching`), so a full batch needs this many in flight."""
DEFAULT_MAX_QUEUE = 64
"""Requests waiting beyond those; the next one is answered "Queue is full"."""
STATE_SESSION_CAPACITY = 256
"""Sessions whose state Gradio keeps (default 10,000; every API call is a session)."""
TITLE = "lungdemo: chest CT slice classifier"
QUEUE_ANALYTICS = {"GRADIO_ANALYTICS_MAX_EVENTS": "256", "GRADIO_ANALYTICS_CACHE_FREQUENCY": "256"}
"""Gradio's queue summarises its last 10,000 events in a pandas table after every event, for a monitoring
page this app does not serve: the cost grew with every request served. Kept to 256 events, summarised
once per 256 (environment variables of Gradio's own; a value set outside wins)."""
ABSENT_PLOT_BACKENDS = ("bokeh",)
"""``gr.Plot`` tries ``import bokeh`` for each new session (every API call is one); when it is not
installed, that search of ``sys.path`` failed again on every request."""


def lean_serving() -> None:
    """Take Gradio's per-request work that this app does not use off the request path (see the constants)."""
    for key, value in QUEUE_ANALYTICS.items():
        os.environ.setdefault(key, value)
    for name in ABSENT_PLOT_BACKENDS:
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            sys.modules[name] = None  # type: ignore[assignment]  # import fails at once, as Python documents


@dataclass
class AppState:
    """The parts behind the page, for the launcher and the tests: nothing hangs on the Blocks."""

    loaded: LoadedModel
    predictor: Predictor
    janitor: UploadJanitor
    outputs: OutputFiles
    classifier: Classifier
    batcher: BatchClassifier
    confusion_plots: PlotCache | None
    reliability_plots: PlotCache | None


def resolve_model_ref(model_ref: str | Path | None) -> str:
    """The reference to load: the one given, else the shipped model folder (found next to the package)."""
    if model_ref is not None and str(model_ref).strip():
        return str(model_ref).strip()
    if not SHIPPED_MODEL_DIR.is_dir():
        raise ModelLoadError(
            f"no model given and the shipped model folder {SHIPPED_MODEL_DIR} does not exist: "
            "train one (see the README's training section), or point the app at a model with "
            "--model PATH_OR_USER/REPO or the LUNGDEMO_MODEL environment variable"
        )
    return str(SHIPPED_MODEL_DIR)


def example_files(examples_dir: Path | None) -> list[Path]:
    """Example slices, sorted by name; none when the folder is absent."""
    if examples_dir is None or not Path(examples_dir).is_dir():
        return []
    return sorted(p for p in Path(examples_dir).iterdir() if p.suffix.lower() in EXAMPLE_SUFFIXES)


def _kept_files(demo: gr.Blocks) -> set[str]:
    """Files Gradio keeps in its cache for the page (the examples): never deleted after use."""
    kept: set[str] = set()
    for block in demo.blocks.values():
        kept.update(str(p) for p in getattr(block, "keep_in_cache", ()))
    return kept


def build_demo(
    model_ref: str | Path | None = None,
    *,
    timers: Timers | None = None,
    warmup: bool = True,
    device: str | None = None,
) -> tuple[gr.Blocks, AppState]:
    """The demo for a model folder or ``user/repo[@revision]`` (default: the shipped model), and its parts.

    Launch the Blocks with ``demo.launch(**launch_options())``; ``timers`` replaces the clock of the deletions;
    ``device`` (``auto|cpu|cuda|cuda:N|mps``, see :mod:`lungdemo.device`) is where the model runs (default: CPU).
    """
    lean_serving()
    loaded = load_model(resolve_model_ref(model_ref))
    predictor = Predictor(loaded, device=device)
    if warmup:  # one forward pass now, so the first user does not pay for allocator warm-up
        import torch

        cfg = predictor.cfg
        predictor.probabilities(torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size))
    examples = example_files(EXAMPLES_DIR)

    with gr.Blocks(title=TITLE, delete_cache=CACHE_SWEEP, analytics_enabled=False) as demo:
        janitor = UploadJanitor(
            UPLOAD_GRACE_S,
            is_deletable=lambda p: p in demo.upload_file_set and p not in _kept_files(demo),
            timers=timers,
        )
        outputs = OutputFiles(OUTPUT_GRACE_S, timers=timers)
        classifier = Classifier(predictor, janitor, outputs)
        batcher = BatchClassifier(predictor, janitor, outputs)
        gr.Markdown(f"# {TITLE}\nModel: {model_label(loaded)}")
        with gr.Tab("Classify", id="classify"):
            classify_tab(classifier, examples, CLASSIFY_CONCURRENCY, DEFAULT_CONCURRENCY)
        with gr.Tab("Batch", id="batch"):
            batch_tab(batcher)
        with gr.Tab("Evaluation", id="evaluation") as tab:
            confusion_plots, reliability_plots = evaluation_tab(loaded, tab)
        with gr.Tab("About", id="about"):
            about_tab(loaded)

    demo.queue(max_size=DEFAULT_MAX_QUEUE, default_concurrency_limit=DEFAULT_CONCURRENCY)
    logger.info("built demo for %s (%d examples)", loaded.description, len(examples))
    state = AppState(loaded, predictor, janitor, outputs, classifier, batcher, confusion_plots, reliability_plots)
    return demo, state


def launch_options() -> dict[str, Any]:
    """``demo.launch`` keyword arguments (Gradio takes these at launch, not at build time)."""
    return {
        "max_file_size": DEFAULT_MAX_BYTES,
        "state_session_capacity": STATE_SESSION_CAPACITY,  # per-session state otherwise grows ~13% per 1,024 calls
        "run_history": False,
        "enable_monitoring": False,
        "footer_links": ["api", "gradio"],
    }
