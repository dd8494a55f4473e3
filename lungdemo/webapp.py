"""The Gradio web demo: a classify tab, an evaluation tab read from metrics.json, an about tab.

:func:`build_demo` turns a model reference (a folder or ``user/repo[@revision]``) into a
:class:`gradio.Blocks` app; ``app.py`` at the repository root launches it with
:func:`launch_options`. Design choices, each for a measured reason:

* The upload reaches :class:`~lungdemo.predictor.Predictor` as the original bytes. Gradio's
  own ``gr.Image`` opens (and with the default ``image_mode`` re-encodes) the file before the
  app's function runs; a failure there reaches the user as a generic "verbose error
  reporting" message, and a re-encoded file is not what evaluation saw. The classify events
  run with ``preprocess=False`` (:func:`upload_payload`): the image widget keeps drag and
  drop, paste and preview, the function gets the uploaded file untouched, every check
  happens in :mod:`lungdemo.preprocessing`, and its message reaches page and API through
  :class:`gradio.Error`. (A ``gr.Image`` subclass would do too, but Gradio writes a ``.pyi``
  stub next to any module that defines a component class.)
* The page's upload event *is* the ``/classify`` API endpoint (example clicks run the same
  function), so the API is what the page runs. It returns the label dict alone; a page-only
  follow-up event shows the decode notes.
* Nothing in the evaluation tab is computed here: tables and confusion matrices are drawn from
  the model folder's ``metrics.json`` as written by evaluation.
* Uploads are deleted shortly after use (:class:`UploadJanitor`) and the cache is swept
  (``delete_cache``); there is no flagging and no run history.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import logging
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
from gradio.components.plot import PlotData

from lungdemo import DISCLAIMER
from lungdemo.loading import CARD_NAME, METRICS_NAME, LoadedModel, ModelLoadError, load_model
from lungdemo.predictor import Predictor
from lungdemo.preprocessing import DEFAULT_MAX_BYTES, ImageDecodeError, decode_image

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_MODEL_DIR = PACKAGE_DIR / "shipped_model"
"""The model folder shipped inside the package: the default when no reference is given."""
EXAMPLES_DIR = PACKAGE_DIR.parent / "examples"
"""Example slices in a source checkout (absent from an installed wheel: then no examples)."""

EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_CONCURRENCY = 2
"""Requests processed at once: decoding runs in parallel, the forward pass is serialised by
the Predictor's lock, so more workers than CPU cores only add waiting."""
DEFAULT_MAX_QUEUE = 64
DEFAULT_UPLOAD_GRACE_S = 10.0
CACHE_SWEEP = (300, 300)
"""``Blocks(delete_cache=(every, older_than))`` in seconds: a safety net for uploads that
never reached the classifier; everything is removed when the server stops."""

SPLIT_COLUMNS = (
    ("test", "Official test split"),
    ("test_leakage_free", "Leakage-free test subset"),
)
"""metrics.json keys shown side by side, with their column titles."""
REPORT_HEADERS = ["class", "precision", "recall", "F1", "support"]
SUMMARY_HEADERS = ["metric", *(title for _, title in SPLIT_COLUMNS)]
DIGITS = 3
TITLE = "lungdemo: chest CT slice classifier"

_IMAGE_RE = re.compile(r"!\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FRONT_MATTER_RE = re.compile(r"\A---[ \t]*\r?\n.*?\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


# --- model reference ------------------------------------------------------------------


def resolve_model_ref(model_ref: str | Path | None) -> str:
    """The reference to load: the one given, else the shipped model folder.

    The shipped folder is looked up next to this module (not the working directory), so
    ``python app.py`` works from anywhere; when it is missing the error says what to do.
    """
    if model_ref is not None and str(model_ref).strip():
        return str(model_ref).strip()
    if not SHIPPED_MODEL_DIR.is_dir():
        raise ModelLoadError(
            f"no model given and the shipped model folder {SHIPPED_MODEL_DIR} does not exist: "
            "train one (see the README's training section), or point the app at a model with "
            "--model PATH_OR_USER/REPO or the LUNGDEMO_MODEL environment variable"
        )
    return str(SHIPPED_MODEL_DIR)


# --- upload handling ------------------------------------------------------------------


def upload_payload(image: str | bytes | dict[str, Any] | None) -> str | bytes | None:
    """The uploaded file's path (or bytes) from what the classify events receive.

    The events run with ``preprocess=False``: ``gr.Image.preprocess`` would open the file
    with PIL before the app's function runs (and with the default ``image_mode`` re-encode
    it), so a bad file would fail inside Gradio with a generic message and a good one would
    not be the bytes evaluation saw. Gradio still checks that the path is one of its uploads
    or cached files. Python callers may pass a path or bytes directly.
    """
    if image is None or isinstance(image, (str, bytes)):
        return image
    url = image.get("url") or ""
    if url.startswith("data:"):
        _, _, encoded = url.partition(",")
        try:
            return base64.b64decode(encoded, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise gr.Error("the inline image data is not valid base64", print_exception=False) from exc
    if not image.get("path"):
        raise gr.Error("no file was received: upload an image file", print_exception=False)
    return str(image["path"])


class UploadJanitor:
    """Deletes uploaded files a short grace period after their last use.

    Why a grace period instead of deleting at once: Gradio stores an upload under a folder
    named by its content hash plus the file name, so two clients sending the same file share
    one path. Deleting it the moment one request finishes would pull it from under the other
    request, still waiting in the queue. Each use cancels a pending deletion; the last
    release schedules one. ``is_deletable`` guards files the app must keep (examples).
    """

    def __init__(self, grace_s: float, is_deletable: Callable[[str], bool]) -> None:
        self.grace_s = float(grace_s)
        self._is_deletable = is_deletable
        self._lock = threading.Lock()
        self._in_use: dict[str, int] = {}
        self._timers: dict[str, threading.Timer] = {}

    def claim(self, path: str) -> None:
        """Mark ``path`` in use: cancels its pending deletion."""
        with self._lock:
            timer = self._timers.pop(path, None)
            if timer is not None:
                timer.cancel()
            self._in_use[path] = self._in_use.get(path, 0) + 1

    def release(self, path: str) -> None:
        """Mark one use of ``path`` finished; the last one schedules the deletion."""
        with self._lock:
            left = self._in_use.get(path, 1) - 1
            if left > 0:
                self._in_use[path] = left
                return
            self._in_use.pop(path, None)
            if not self._is_deletable(path):
                return
            timer = threading.Timer(self.grace_s, self._delete)
            timer.args = (path, timer)
            timer.daemon = True
            self._timers[path] = timer
            timer.start()

    @property
    def pending(self) -> set[str]:
        """Paths scheduled for deletion."""
        with self._lock:
            return set(self._timers)

    def flush(self) -> None:
        """Delete everything scheduled now instead of after the grace period."""
        with self._lock:
            scheduled = list(self._timers.items())
        for path, timer in scheduled:
            timer.cancel()
            self._delete(path, timer)

    def _delete(self, path: str, timer: threading.Timer) -> None:
        with self._lock:
            if self._timers.get(path) is not timer or self._in_use.get(path):
                return  # claimed again, or re-scheduled by a later release
            file = Path(path)
            file.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                file.parent.rmdir()  # Gradio's per-upload hash folder, when now empty
            del self._timers[path]  # last, so "not pending" means "deleted"
        logger.debug("deleted upload %s", path)


class Classifier:
    """The functions behind the classify tab: original bytes -> Predictor -> label dict.

    :meth:`classify` is the ``/classify`` endpoint and returns the label dict alone, so API
    users get exactly the class probabilities; :meth:`notes` is a page-only follow-up that
    reads the same file again for the decode notes (a few milliseconds) rather than adding
    a second output to the API.
    """

    def __init__(self, predictor: Predictor, janitor: UploadJanitor | None = None) -> None:
        self.predictor = predictor
        self.janitor = janitor

    def classify(self, image: str | bytes | dict[str, Any] | None) -> dict[str, float] | None:
        """Classify one chest CT slice; returns the probability of each class.

        `image` is an image file (PNG, JPEG, TIFF, BMP, GIF, ...). A file that is not a
        readable image is rejected with a message saying why.
        """
        upload = upload_payload(image)
        if upload is None:
            return None
        data = self._read(upload)
        try:
            prediction = self.predictor.predict(data)
        except ImageDecodeError as exc:
            logger.info("rejected upload (%d bytes): %s", len(data), exc)
            raise gr.Error(str(exc), title="Cannot read this file", print_exception=False) from exc
        except Exception as exc:
            logger.exception("classification failed")
            raise gr.Error(
                "the server could not classify this file (an internal error, logged on the server)",
                print_exception=False,
            ) from exc
        return prediction.probabilities

    def notes(self, image: str | bytes | dict[str, Any] | None) -> str:
        """Markdown with the decode notes for ``image`` (what conversion took place)."""
        upload = upload_payload(image)
        if upload is None:
            return ""
        try:
            _, info = decode_image(self._read(upload), self.predictor.cfg.max_pixels)
        except (ImageDecodeError, gr.Error):
            return ""
        return notes_markdown(info.notes)

    def _read(self, image: str | bytes) -> bytes:
        """The upload's bytes; the janitor may delete the file once nobody reads it."""
        if isinstance(image, bytes):
            return image
        if self.janitor is not None:
            self.janitor.claim(image)
        try:
            return Path(image).read_bytes()
        except FileNotFoundError as exc:
            raise gr.Error(
                "the uploaded file is no longer on the server (uploads are deleted after use): upload it again",
                print_exception=False,
            ) from exc
        finally:
            if self.janitor is not None:
                self.janitor.release(image)


def notes_markdown(notes: Sequence[str] | None) -> str:
    """Decode notes as Markdown for the classify tab."""
    if not notes:
        return ""
    return "**How the file was read:**\n\n" + "\n".join(f"- {note}" for note in notes)


# --- evaluation tab: everything from metrics.json -------------------------------------


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


def confusion_figure(split: dict[str, Any], title: str) -> Figure:
    """The confusion matrix of one split (rows = true class), coloured by row share.

    Colour by the share of each true class so the small classes are as readable as the
    large ones; the cells show the counts. Uses ``Figure`` directly (no pyplot state), so
    it is safe to build in any thread.
    """
    from matplotlib.figure import Figure  # imported on first use: about 0.8 s, kept off the start-up

    names = list(split["class_names"])
    counts = [[int(v) for v in row] for row in split["confusion_matrix"]]
    shares = [[v / max(sum(row), 1) for v in row] for row in counts]
    short = [n.replace("_carcinoma", "").replace("_", " ") for n in names]
    fig = Figure(figsize=(5.2, 4.4), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if shares[i][j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), short, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), short)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{title} (n={int(split['n'])})", fontsize=10)
    fig.colorbar(image, ax=ax, label="share of the true class", shrink=0.8)
    return fig


def figure_png(fig: Figure) -> PlotData:
    """A figure as the PNG payload ``gr.Plot`` shows (what its own postprocessing makes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return PlotData(type="matplotlib", plot="data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())


class ConfusionPlots:
    """The evaluation tab's confusion matrices, drawn when the tab is first opened, then reused.

    Drawing needs matplotlib, about a second to import and render here, and classifying
    never does; deferring it to the first visit keeps it out of the cold start. The images
    are drawn once for all visitors.
    """

    def __init__(self, splits: Sequence[tuple[dict[str, Any], str]]) -> None:
        self.splits = list(splits)
        self._lock = threading.Lock()
        self._images: list[PlotData] | None = None

    def render(self) -> list[PlotData]:
        with self._lock:
            if self._images is None:
                self._images = [figure_png(confusion_figure(split, title)) for split, title in self.splits]
                logger.info("drew %d confusion matrices", len(self._images))
            return list(self._images)


def evaluation_intro(loaded: LoadedModel) -> str:
    """Where the numbers come from, in one paragraph."""
    m = loaded.metrics or {}
    epoch = f" Best epoch (by validation): {m['best_epoch']}." if "best_epoch" in m else ""
    return (
        f"Read from `{METRICS_NAME}` in the model folder ({loaded.description}), as written by the "
        "evaluation: nothing here is recomputed. The **leakage-free subset** leaves out test slices "
        "with an exact or near copy in train or valid. *Normal* slices come from another source than "
        "the cancer slices and are recognisable by that alone, so the **cancer-subtype macro F1** "
        f"(the three cancer classes only) is the honest number.{epoch}"
    )


# --- about tab -------------------------------------------------------------------------


def strip_front_matter(text: str) -> str:
    """A model card without its YAML front matter (Hub metadata, not for readers)."""
    return _FRONT_MATTER_RE.sub("", text.lstrip("\ufeff"), count=1).lstrip()


def local_images_as_text(card: str) -> str:
    """Replace Markdown images with relative paths (the folder's PNGs) by a line of text.

    The app does not serve the model folder, so ``![...](confusion_matrix.png)`` would show
    as a broken image; the evaluation tab draws the same figures from metrics.json.
    """

    def replace(match: re.Match[str]) -> str:
        alt, target = match.group(1), match.group(2)
        if re.match(r"^(?:[a-z][a-z0-9+.-]*:|/)", target, re.IGNORECASE):
            return match.group(0)  # http(s)://, data:, absolute: left as they are
        return f"*[figure: {alt or target}, `{target}` in the model folder]*"

    return _IMAGE_RE.sub(replace, card)


def about_markdown(loaded: LoadedModel) -> str:
    """The model card plus where the model came from."""
    card_path = loaded.folder / CARD_NAME
    if card_path.is_file():
        card = local_images_as_text(strip_front_matter(card_path.read_text(encoding="utf-8")))
    else:
        card = f"*This model folder has no model card ({CARD_NAME}).*"
    model = loaded.model
    cfg = model.preprocess_config
    source = [
        "## Where this model came from",
        "",
        f"- Model: `{loaded.description}`",
    ]
    if loaded.ref.is_hub:
        revision = loaded.revision or loaded.ref.revision or "main"
        source.append(f"- Hub repo `{loaded.ref.repo_id}`, revision `{revision}`")
    source += [
        f"- Local folder: `{loaded.folder}`",
        f"- Classes (output order): {', '.join(f'`{c}`' for c in model.class_names)}",
        f"- Input: {cfg.image_size}×{cfg.image_size}, framing `{cfg.resize}`, grayscale repeated to "
        f"{cfg.in_channels} channels; softmax temperature {model.temperature:g}",
        "",
        f"> **{DISCLAIMER}**",
    ]
    return card.rstrip() + "\n\n" + "\n".join(source) + "\n"


# --- the app ---------------------------------------------------------------------------


def example_files(examples_dir: Path | None) -> list[Path]:
    """Example slices, sorted by name; none when the folder is absent."""
    if examples_dir is None or not Path(examples_dir).is_dir():
        return []
    return sorted(p for p in Path(examples_dir).iterdir() if p.suffix.lower() in EXAMPLE_SUFFIXES)


def _kept_files(demo: gr.Blocks) -> set[str]:
    kept: set[str] = set()
    for block in demo.blocks.values():
        kept.update(str(p) for p in getattr(block, "keep_in_cache", ()))
    return kept


def build_demo(
    model_ref: str | Path | None = None,
    *,
    loaded: LoadedModel | None = None,
    examples_dir: Path | None = EXAMPLES_DIR,
    concurrency_limit: int = DEFAULT_CONCURRENCY,
    max_queue: int = DEFAULT_MAX_QUEUE,
    upload_grace_s: float = DEFAULT_UPLOAD_GRACE_S,
    warmup: bool = True,
) -> gr.Blocks:
    """Build the demo for a model folder or ``user/repo[@revision]`` (default: the shipped model).

    ``loaded`` skips loading when the caller already holds the model. The returned Blocks
    has its queue configured; launch it with ``demo.launch(**launch_options())`` so the
    upload limit and privacy settings apply. ``demo.lungdemo_classifier`` is the function
    behind ``/classify`` (tests use it to see the janitor).
    """
    if loaded is None:
        loaded = load_model(resolve_model_ref(model_ref))
    predictor = Predictor(loaded)
    if warmup:
        # one forward pass at start-up so the first user does not pay for allocator warm-up
        cfg = predictor.cfg
        import torch

        predictor.probabilities(torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size))
    examples = example_files(examples_dir)
    classes = predictor.class_names

    with gr.Blocks(title=TITLE, delete_cache=CACHE_SWEEP, analytics_enabled=False) as demo:
        janitor = UploadJanitor(
            upload_grace_s,
            is_deletable=lambda p: p in demo.upload_file_set and p not in _kept_files(demo),
        )
        classifier = Classifier(predictor, janitor)
        gr.Markdown(f"# {TITLE}\nModel: `{loaded.description}`")
        with gr.Tab("Classify", id="classify"):
            gr.Markdown(f"> ⚠️ **{DISCLAIMER}**", elem_id="disclaimer")
            with gr.Row():
                with gr.Column():
                    image = gr.Image(
                        type="filepath",
                        image_mode=None,
                        sources=["upload", "clipboard"],
                        label="CT slice (drop, click to upload, or paste)",
                        buttons=["fullscreen"],
                        elem_id="slice-input",
                    )
                    example_block = (
                        gr.Examples(
                            examples=[[str(p)] for p in examples],
                            inputs=[image],
                            example_labels=[p.stem.replace("_", " ") for p in examples],
                            cache_examples=False,
                            label="Example slices from the test split",
                        )
                        if examples
                        else None
                    )
                with gr.Column():
                    label = gr.Label(num_top_classes=len(classes), label="Class probabilities", elem_id="probabilities")
                    notes = gr.Markdown(elem_id="decode-notes")

            page_only: dict[str, Any] = {"api_visibility": "private", "queue": False}

            def then_show_notes(event: Any) -> None:
                """After a classification: the decode notes on success, cleared outputs on failure."""
                event.success(classifier.notes, inputs=image, outputs=notes, preprocess=False, **page_only)
                event.failure(lambda: (None, ""), outputs=[label, notes], **page_only)

            # `upload` fires once per file, dropped, picked or pasted; `change` fires twice when
            # an image replaces another (measured with Gradio 6.31), which would classify twice.
            classify_options: dict[str, Any] = {
                "fn": classifier.classify,
                "inputs": image,
                "outputs": label,
                "preprocess": False,  # the function gets the upload untouched: see upload_payload()
                "concurrency_limit": concurrency_limit,
                "concurrency_id": "classify",
            }
            then_show_notes(
                image.upload(
                    **classify_options,
                    api_name="classify",
                    api_description=(
                        "Classify one chest CT slice (an image file). Returns the probability of each of "
                        f"the classes {classes}."
                    ),
                )
            )
            if example_block is not None:
                then_show_notes(example_block.load_input_event.then(**classify_options, api_visibility="private"))
            image.clear(lambda: (None, ""), outputs=[label, notes], **page_only)

        with gr.Tab("Evaluation", id="evaluation") as evaluation_tab:
            confusion_plots = _evaluation_tab(loaded, evaluation_tab)

        with gr.Tab("About", id="about"):
            gr.Markdown(about_markdown(loaded), elem_id="model-card")

    demo.queue(max_size=max_queue, default_concurrency_limit=concurrency_limit)
    demo.lungdemo_classifier = classifier  # type: ignore[attr-defined]
    demo.lungdemo_loaded = loaded  # type: ignore[attr-defined]
    demo.lungdemo_confusion_plots = confusion_plots  # type: ignore[attr-defined]
    logger.info("built demo for %s (%d examples)", loaded.description, len(examples))
    return demo


def _evaluation_tab(loaded: LoadedModel, tab: gr.Tab) -> ConfusionPlots | None:
    """Tables filled at build time from metrics.json; plots drawn when the tab is opened."""
    metrics = loaded.metrics
    if not metrics:
        gr.Markdown(
            f"This model folder ({loaded.description}) has no `{METRICS_NAME}`, so there are no "
            "evaluation results to show. The training pipeline writes it when it evaluates a model.",
            elem_id="no-metrics",
        )
        return None
    gr.Markdown(evaluation_intro(loaded))
    gr.Dataframe(
        value=summary_rows(metrics),
        headers=SUMMARY_HEADERS,
        label="Summary",
        interactive=False,
        elem_id="metrics-summary",
    )
    plots: list[gr.Plot] = []
    drawn: list[tuple[dict[str, Any], str]] = []
    with gr.Row():
        for key, title in SPLIT_COLUMNS:
            split = metrics.get(key)
            with gr.Column():
                if not isinstance(split, dict):
                    gr.Markdown(f"*{METRICS_NAME} has no `{key}` results.*")
                    continue
                gr.Dataframe(
                    value=report_rows(split),
                    headers=REPORT_HEADERS,
                    label=f"{title}: per class",
                    interactive=False,
                    elem_id=f"report-{key}",
                )
                plots.append(
                    gr.Plot(
                        format="png",
                        label=f"{title}: confusion matrix",
                        show_label=False,  # the figure has its own title
                        elem_id=f"confusion-{key}",
                    )
                )
                drawn.append((split, title))
    confusion = ConfusionPlots(drawn)
    if plots:
        tab.select(confusion.render, outputs=plots, api_visibility="private", queue=False)
    return confusion


def launch_options(max_file_size: int | str = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """``demo.launch`` keyword arguments every launch should use.

    Gradio takes these at launch, not at build time: the upload size limit, no run history
    saved in the browser, no monitoring endpoint, no footer link to run history.
    """
    return {
        "max_file_size": max_file_size,
        "run_history": False,
        "enable_monitoring": False,
        "footer_links": ["api", "gradio"],
    }
