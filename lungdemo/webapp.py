"""The Gradio web demo: classify (with Grad-CAM and a report), batch, evaluation and about tabs.

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
  stub next to any module that defines a component class.) A small ``gr.File`` next to the
  image box takes what a browser cannot preview (DICOM ``.dcm``) into the same function:
  files are decoded by content, never by their name.
* The page's upload event *is* the ``/classify`` API endpoint (example clicks run the same
  function), so the API is what the page runs. It returns the label dict alone. Its
  follow-up on success is the ``/explain`` endpoint (Grad-CAM overlay and the class it
  explains), followed by page-only steps: the decode notes, the confidence line
  (:data:`CONFIDENCE_THRESHOLD`) and keeping the slice's bytes in the session.
* The session keeps the current slice's bytes in memory (``gr.State``, :class:`Slice`), not
  its upload path: the upload is deleted from disk seconds after use, and picking another
  class for the heat map or downloading the report may come minutes later.
* Files the app hands out (batch CSV, report) are written to a per-request temporary folder
  (:class:`OutputFiles`) that is deleted a minute later; Gradio serves its own cached copy,
  which the cache sweep removes.
* The batch tab (``/batch``) runs :func:`lungdemo.predict.predict_files`, the command line's
  code, on the uploaded files and zip archives, with tighter limits than the command line
  because the bytes of a whole archive are held in memory per request.
* Nothing in the evaluation tab is computed here: tables, confusion matrices and reliability
  diagrams are drawn from the model folder's ``metrics.json`` as written by evaluation, the
  figures only when the tab is first opened.
* Uploads are deleted shortly after use (:class:`UploadJanitor`) and the cache is swept
  (``delete_cache``); there is no flagging and no run history.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import contextlib
import io
import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import numpy as np
from gradio.components.plot import PlotData

from lungdemo import DISCLAIMER
from lungdemo.decode import DEFAULT_MAX_BYTES, ImageDecodeError, decode_image
from lungdemo.gradcam import HEATMAP_NOTE, explain_source
from lungdemo.loading import CARD_NAME, METRICS_NAME, SHIPPED_MODEL_DIR, LoadedModel, ModelLoadError, load_model
from lungdemo.predict import InputError, Source, csv_columns, predict_files, probability_column, write_csv, zip_sources
from lungdemo.predictor import Predictor

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL import Image

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
EXAMPLES_DIR = PACKAGE_DIR.parent / "examples"
"""Example slices in a source checkout (absent from an installed wheel: then no examples)."""

EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_CONCURRENCY = 2
"""Requests processed at once: decoding runs in parallel, the forward pass is serialised by
the Predictor's lock, so more workers than CPU cores only add waiting."""
DEFAULT_MAX_QUEUE = 64
STATE_SESSION_CAPACITY = 256
"""Sessions whose state (the stored slice for heat maps and reports) Gradio keeps in memory."""
DEFAULT_UPLOAD_GRACE_S = 10.0
CACHE_SWEEP = (300, 300)
"""``Blocks(delete_cache=(every, older_than))`` in seconds: a safety net for uploads that
never reached the classifier, and the lifetime of the files handed out (overlays, CSV,
report): Gradio serves its cached copies for five to ten minutes. Everything is removed when
the server stops."""

CONFIDENCE_THRESHOLD = 0.6
"""Calibrated top-class probability below which the classify tab says the model is unsure.

With temperature scaling fitted on the validation split, a top class shown at 60% is right
about 60% of the time on slices like the validation ones (see the evaluation tab's
reliability diagram); below that the answer is closer to a guess among four classes than to
a finding, so the page says so in words next to the percentages. The one place to change it.
Page only: the API returns the probabilities and leaves any threshold to the caller."""
TOP_CLASS_CHOICE = "top class"
"""The heat-map class picker's first entry (and the ``/explain`` default): the predicted class."""
FILE_INPUT_TYPES = [".dcm", ".dicom", "image"]
"""What the "upload a file" box offers in the file picker: DICOM, which the image box cannot
preview, and any image. The server decodes by content whatever the name says."""
SLICE_TTL_S = 3600
"""Seconds a session keeps its current slice's bytes (for the heat-map picker and the report)
after the last upload; Gradio also drops them when the tab closes."""
OUTPUT_GRACE_S = 60.0
"""Seconds a handed-out file's own temporary folder lives after the request: Gradio copies
the file into its cache right after the function returns, and serves that copy."""
REPORT_FORMATS = ("PDF", "PNG")
BATCH_MAX_SLICES = 1000
"""Slices one batch request may hold (zip members counted): the page is for a series, the
command line (``python -m lungdemo.predict``) for a dataset."""
BATCH_ZIP_MAX_MEMBERS = 5000
BATCH_ZIP_MAX_BYTES = 256 * 1024 * 1024
"""Uncompressed image bytes one zip may expand to here (1 GiB on the command line): the app
holds them in memory while the request runs."""
BATCH_CSV_NAME = "lungdemo_batch.csv"
BATCH_FILE_TYPES = ["image", ".dcm", ".dicom", ".zip"]
BATCH_SIZE = 32
"""Slices per forward pass in the batch tab, as the command line's default."""

SPLIT_COLUMNS = (
    ("test", "Official test split"),
    ("test_leakage_free", "Leakage-free test subset"),
)
"""metrics.json keys shown side by side, with their column titles."""
CALIBRATION_SPLITS = (
    ("validation", "Validation split"),
    ("test", "Official test split"),
)
"""metrics.json keys whose ``calibration`` the evaluation tab shows: validation, where the
temperature was fitted, and the official test split, which played no part in fitting it."""
REPORT_HEADERS = ["class", "precision", "recall", "F1", "support"]
SUMMARY_HEADERS = ["metric", *(title for _, title in SPLIT_COLUMNS)]
CALIBRATION_HEADERS = ["split", "slices (n)", "temperature", "ECE before scaling", "ECE after scaling"]
DIGITS = 3
TITLE = "lungdemo: chest CT slice classifier"

DOWNLOAD_JS = """(file) => {
    // One-click download: the report event has just put the file in the File box.
    if (file && file.url) {
        const link = document.createElement("a");
        link.href = file.url;
        link.download = file.orig_name || "";
        document.body.appendChild(link);
        link.click();
        link.remove();
    }
    return [];
}"""

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


def upload_name(image: str | bytes | dict[str, Any] | None) -> str:
    """The name the user's file had, for the report and the batch table.

    Gradio's file dict carries it as ``orig_name``; its upload path ends with the same name
    (sanitised), which is the fallback. Bytes and inline data have no name.
    """
    if isinstance(image, dict):
        name = image.get("orig_name") or (Path(str(image["path"])).name if image.get("path") else "")
    elif isinstance(image, str):
        name = Path(image).name
    else:
        name = ""
    return str(name).strip() or "upload"


@dataclass(frozen=True)
class Slice:
    """A session's current slice: the uploaded bytes and the name the file had.

    Kept in ``gr.State`` (memory, per session) because the upload itself is deleted from
    disk seconds after use, while the heat-map picker and the report need the slice later.
    """

    data: bytes
    name: str

    def __repr__(self) -> str:  # gr.State may log it: no bytes in logs
        return f"Slice(name={self.name!r}, {len(self.data)} bytes)"


class OutputFiles:
    """Per-request temporary folders for the files the app hands out (batch CSV, report).

    Why a folder per request: two requests writing the same name (``lungdemo_batch.csv``)
    must not overwrite each other, and the download keeps a meaningful name. Why deleted a
    minute later rather than at once: Gradio copies the returned file into its cache after
    the function returns (the copy is what it serves and what its cache sweep removes), so
    the original must outlive the function, briefly. Folders left by a server that stops
    within that minute go with the process (``atexit``).
    """

    def __init__(self, grace_s: float = OUTPUT_GRACE_S) -> None:
        self.janitor = UploadJanitor(grace_s, is_deletable=lambda _path: True)
        self._lock = threading.Lock()
        self._root: Path | None = None

    @property
    def root(self) -> Path:
        """The folder holding the per-request folders, created on first use."""
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="lungdemo-outputs-"))
                atexit.register(shutil.rmtree, self._root, ignore_errors=True)
            return self._root

    def new_path(self, name: str) -> Path:
        """``<root>/<fresh folder>/<name>``: where one request writes one file."""
        return Path(tempfile.mkdtemp(dir=self.root)) / name

    def handed_out(self, path: Path) -> str:
        """Schedule ``path`` and its folder for deletion; returns it as the event's output."""
        self.janitor.claim(str(path))
        self.janitor.release(str(path))
        return str(path)

    def discard(self, path: Path) -> None:
        """Remove the folder of a file that will not be handed out (the request failed)."""
        shutil.rmtree(path.parent, ignore_errors=True)

    @property
    def pending(self) -> set[str]:
        return self.janitor.pending

    def flush(self) -> None:
        """Delete every handed-out file now (tests)."""
        self.janitor.flush()


def target_class_of(choice: str | None, class_names: Sequence[str]) -> str | None:
    """The heat-map picker's value as a class name, ``None`` for the top class.

    The events run with ``preprocess=False``, so Gradio does not check an API caller's value
    against the dropdown's choices: this does, with a message that lists them.
    """
    if choice is None or not str(choice).strip() or str(choice).strip() == TOP_CLASS_CHOICE:
        return None
    name = str(choice).strip()
    if name not in class_names:
        raise gr.Error(
            f"unknown class {name!r}: use {TOP_CLASS_CHOICE!r} or one of {', '.join(class_names)}",
            title="Unknown class",
            print_exception=False,
        )
    return name


def confidence_markdown(
    probabilities: dict[str, float] | None, threshold: float = CONFIDENCE_THRESHOLD, temperature: float = 1.0
) -> str:
    """One line under the probabilities: says in words when the top class is below ``threshold``."""
    if not probabilities:
        return ""
    top = max(probabilities, key=probabilities.__getitem__)
    p = float(probabilities[top])
    scaling = f"temperature-scaled probabilities, T = {temperature:.2f}"
    if p < threshold:
        return (
            f"⚠️ **The model is unsure.** Its top class, *{top}*, has a probability of {p:.0%}, below the "
            f"{threshold:.0%} this demo treats as confident ({scaling}). Read it as a guess, not an answer."
        )
    return f"Top class *{top}* at {p:.0%}, at or above the {threshold:.0%} confidence threshold ({scaling})."


def report_file_name(original: str, fmt: str) -> str:
    """``<original stem>_report.<fmt>`` with only safe characters (the user's name in a path)."""
    stem = re.sub(r"[^\w.-]+", "_", Path(original).stem).strip("._")[:80] or "slice"
    return f"{stem}_report.{fmt.lower()}"


class Classifier:
    """The functions behind the classify tab: original bytes -> Predictor -> label, heat map, report.

    :meth:`classify` is the ``/classify`` endpoint and returns the label dict alone, so API
    users get exactly the class probabilities; :meth:`explain` is ``/explain``. The rest are
    page-only follow-ups: :meth:`notes` reads the same file again for the decode notes (a few
    milliseconds) rather than adding a second output to the API, :meth:`remember` keeps the
    bytes in the session for :meth:`explain_slice` and :meth:`report`.
    """

    def __init__(
        self, predictor: Predictor, janitor: UploadJanitor | None = None, outputs: OutputFiles | None = None
    ) -> None:
        self.predictor = predictor
        self.janitor = janitor
        self.outputs = outputs or OutputFiles()

    @property
    def temperature(self) -> float:
        return float(self.predictor.model.temperature)

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

    def explain(
        self, image: str | bytes | dict[str, Any] | None, target_class: str | None = TOP_CLASS_CHOICE
    ) -> tuple[Image.Image | None, str]:
        """Grad-CAM of one chest CT slice: the heat-map overlay and the class it explains.

        `target_class` is "top class" (the predicted class) or one of the model's classes.
        The overlay is drawn on the slice as the model saw it (cropped to the body, padded
        and resized to the model's input size). A heat map shows where the model looked,
        not proof of disease.
        """
        upload = upload_payload(image)
        if upload is None:
            return None, ""
        return self._explain(self._read(upload), target_class)

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

    def confidence(self, label: dict[str, float] | None) -> str:
        """The confidence line for the probabilities the page shows (the label's value)."""
        return confidence_markdown(label if isinstance(label, dict) else None, temperature=self.temperature)

    def remember(self, image: str | bytes | dict[str, Any] | None) -> Slice | None:
        """The session's copy of a slice that was just classified (page only)."""
        upload = upload_payload(image)
        if upload is None:
            return None
        return Slice(self._read(upload), upload_name(image))

    def explain_slice(self, current: Slice | None, target_class: str | None) -> tuple[Any, Any]:
        """Heat map of the session's slice for another class (the picker's change event)."""
        if current is None:
            return gr.skip(), gr.skip()
        return self._explain(current.data, target_class)

    def report(self, current: Slice | None, target_class: str | None, fmt: str | None = "PDF") -> str:
        """Write the one-page report of the session's slice; returns its path (page only).

        The report holds the slice, the overlay for the class the picker names, the
        probabilities, the model and the disclaimer (:mod:`lungdemo.report`), and is named
        after the uploaded file.
        """
        if current is None:
            raise gr.Error("classify a slice first, then download its report", title="No slice", print_exception=False)
        kind = str(fmt or "PDF").strip().lower()
        if kind not in ("pdf", "png"):
            raise gr.Error(f"unknown report format {fmt!r}: PDF or PNG", print_exception=False)
        target = target_class_of(target_class, self.predictor.class_names)
        from lungdemo.report import make_report  # matplotlib's PDF/PNG machinery, off the start-up

        out = self.outputs.new_path(report_file_name(current.name, kind))
        try:
            make_report(self.predictor, current.data, out, fmt=kind, target_class=target, file_name=current.name)
        except ImageDecodeError as exc:
            self.outputs.discard(out)
            raise gr.Error(str(exc), title="Cannot read this file", print_exception=False) from exc
        except Exception as exc:
            self.outputs.discard(out)
            logger.exception("report failed")
            raise gr.Error(
                "the server could not make the report (an internal error, logged on the server)", print_exception=False
            ) from exc
        logger.info("report %s for %s", out.name, current.name)
        return self.outputs.handed_out(out)

    def _explain(self, data: bytes, target_class: str | None) -> tuple[Image.Image, str]:
        target = target_class_of(target_class, self.predictor.class_names)
        try:
            result = explain_source(self.predictor, data, target)
        except ImageDecodeError as exc:
            raise gr.Error(str(exc), title="Cannot read this file", print_exception=False) from exc
        except Exception as exc:
            logger.exception("Grad-CAM failed")
            raise gr.Error(
                "the server could not compute the heat map (an internal error, logged on the server)",
                print_exception=False,
            ) from exc
        return result.overlay(), result.target_class

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


def empty_map_markdown(overlay: Image.Image | None, target_class: str | None) -> str:
    """A line under the overlay when the heat map is empty, else nothing (page only).

    An empty map (no region raised the class's score) leaves the plain slice, which looks
    like a failure unless the page says why. Read from the overlay the page already shows
    rather than computed again: the map is scaled by its maximum, so a non-empty map has at
    least one pixel at full colour, and an empty one leaves every pixel grey (R = G = B).
    """
    if overlay is None or not target_class:
        return ""
    rgb = np.asarray(overlay.convert("RGB"), dtype=np.int16)
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return f"*The heat map for {target_class} is empty: no region raised this class's score.*"
    return ""


class BatchClassifier:
    """The batch tab (``/batch``): many files and zip archives -> table and CSV.

    Runs :func:`lungdemo.predict.predict_files`, the command line's code, so a row here is
    the row the CLI writes for the same file. Uploads are claimed while the batch reads them
    and released for deletion afterwards; zip archives are read in memory, never extracted.
    """

    def __init__(
        self,
        predictor: Predictor,
        janitor: UploadJanitor | None = None,
        outputs: OutputFiles | None = None,
        *,
        max_slices: int = BATCH_MAX_SLICES,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.predictor = predictor
        self.janitor = janitor
        self.outputs = outputs or OutputFiles()
        self.max_slices = max_slices
        self.batch_size = batch_size

    @property
    def headers(self) -> list[str]:
        return csv_columns(self.predictor.class_names)

    def batch(
        self,
        files: Sequence[str | dict[str, Any]] | str | dict[str, Any] | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio injects the request's tracker)
    ) -> tuple[list[list[Any]], str | None]:
        """Classify several chest CT slices: image files, DICOM files or .zip archives of them.

        Returns a table with one row per slice (file, predicted class, the probability of
        each class, error) and the same table as a CSV file. A file that cannot be read
        gets a row with the reason in `error`; the others are classified.
        """
        uploads = self._uploads(files)
        if not uploads:
            return [], None
        paths = [path for path, _ in uploads]
        if self.janitor is not None:
            for path in paths:
                self.janitor.claim(path)
        try:
            progress(0.0, desc="Reading the files")
            sources = self._sources(uploads)
            if len(sources) > self.max_slices:
                raise gr.Error(
                    f"{len(sources):,} slices in one batch; the limit here is {self.max_slices:,}. "
                    "Split them, or use the command line: python -m lungdemo.predict",
                    title="Too many slices",
                    print_exception=False,
                )
            done = 0

            def advance(n: int) -> None:
                nonlocal done
                done += n
                progress((done, len(sources)), desc="Classifying", unit="slices")

            rows = predict_files(self.predictor, sources, self.batch_size, on_progress=advance)
        finally:
            if self.janitor is not None:
                for path in paths:
                    self.janitor.release(path)
        out = self.outputs.new_path(BATCH_CSV_NAME)
        try:
            write_csv(rows, self.predictor.class_names, out)
        except Exception:
            self.outputs.discard(out)
            raise
        failed = sum(1 for row in rows if row["error"])
        logger.info("batch of %d files: %d slices, %d with errors", len(uploads), len(rows), failed)
        return table_rows(rows, self.predictor.class_names), self.outputs.handed_out(out)

    @staticmethod
    def _uploads(files: Sequence[str | dict[str, Any]] | str | dict[str, Any] | None) -> list[tuple[str, str]]:
        """``(path, name)`` of each upload, from the raw payload (``preprocess=False``)."""
        if files is None:
            return []
        items = [files] if isinstance(files, (str, dict)) else list(files)
        uploads = []
        for item in items:
            path = upload_payload(item)
            if isinstance(path, bytes):
                raise gr.Error("the batch takes uploaded files, not inline data", print_exception=False)
            if path is not None:
                uploads.append((path, upload_name(item)))
        return uploads

    @staticmethod
    def _sources(uploads: Sequence[tuple[str, str]]) -> list[Source]:
        """Zip archives opened into their image members, other files as they are."""
        sources: list[Source] = []
        for path, name in uploads:
            if not Path(path).is_file():
                sources.append((name, InputError("the uploaded file is no longer on the server: upload it again")))
            elif name.lower().endswith(".zip"):
                sources.extend(
                    zip_sources(name, path, max_members=BATCH_ZIP_MAX_MEMBERS, max_total_bytes=BATCH_ZIP_MAX_BYTES)
                )
            else:
                sources.append((name, Path(path)))
        return sources


def table_rows(rows: Sequence[dict[str, Any]], class_names: Sequence[str]) -> list[list[Any]]:
    """predict_files rows as the table's rows, in :func:`csv_columns` order.

    Probabilities keep every digit (the CSV's values); an error row has empty cells there.
    """
    columns = ["file", "predicted_class", *(probability_column(c) for c in class_names), "error"]
    return [["" if row[col] is None else row[col] for col in columns] for row in rows]


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

    kind = "confusion matrices"

    def __init__(self, splits: Sequence[tuple[dict[str, Any], str]]) -> None:
        self.splits = list(splits)
        self._lock = threading.Lock()
        self._images: list[PlotData] | None = None

    def render(self) -> list[PlotData]:
        with self._lock:
            if self._images is None:
                self._images = [self.draw(split, title) for split, title in self.splits]
                logger.info("drew %d %s", len(self._images), self.kind)
            return list(self._images)

    def draw(self, split: dict[str, Any], title: str) -> PlotData:
        return figure_png(confusion_figure(split, title))


class ReliabilityPlots(ConfusionPlots):
    """The reliability diagrams (before and after temperature scaling), drawn like the matrices.

    ``splits`` holds each split's ``calibration`` dict from metrics.json.
    :func:`lungdemo.plots.reliability_figure` (shared with training, so the app shows the
    figure training saved) draws through pyplot, which keeps global state: the figure is
    drawn under this object's lock and closed at once.
    """

    kind = "reliability diagrams"

    def draw(self, split: dict[str, Any], title: str) -> PlotData:
        import matplotlib.pyplot as plt

        from lungdemo.plots import reliability_figure

        fig = reliability_figure(split, title)
        try:
            return figure_png(fig)
        finally:
            plt.close(fig)


def calibration_rows(metrics: dict[str, Any]) -> list[list[Any]]:
    """One row per split of :data:`CALIBRATION_SPLITS` that has calibration results."""
    rows = []
    for key, title in CALIBRATION_SPLITS:
        split = metrics.get(key)
        calibration = split.get("calibration") if isinstance(split, dict) else None
        if not isinstance(calibration, dict):
            continue
        rows.append(
            [
                title,
                int(split["n"]),
                _fmt(calibration["temperature"]),
                _fmt(calibration["ece_uncalibrated"]),
                _fmt(calibration["ece_calibrated"]),
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
    upload limit and privacy settings apply. ``demo.lungdemo_classifier`` is the object
    behind ``/classify`` and ``/explain``, ``demo.lungdemo_batch`` the one behind ``/batch``
    (tests use them to see the janitors).
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

    with gr.Blocks(title=TITLE, delete_cache=CACHE_SWEEP, analytics_enabled=False) as demo:
        janitor = UploadJanitor(
            upload_grace_s,
            is_deletable=lambda p: p in demo.upload_file_set and p not in _kept_files(demo),
        )
        outputs = OutputFiles()
        classifier = Classifier(predictor, janitor, outputs)
        batcher = BatchClassifier(predictor, janitor, outputs)
        gr.Markdown(f"# {TITLE}\nModel: `{loaded.description}`")
        with gr.Tab("Classify", id="classify"):
            _classify_tab(classifier, examples, concurrency_limit)

        with gr.Tab("Batch", id="batch"):
            _batch_tab(batcher)

        with gr.Tab("Evaluation", id="evaluation") as evaluation_tab:
            confusion_plots, reliability_plots = _evaluation_tab(loaded, evaluation_tab)

        with gr.Tab("About", id="about"):
            gr.Markdown(about_markdown(loaded), elem_id="model-card")

    demo.queue(max_size=max_queue, default_concurrency_limit=concurrency_limit)
    demo.lungdemo_classifier = classifier  # type: ignore[attr-defined]
    demo.lungdemo_batch = batcher  # type: ignore[attr-defined]
    demo.lungdemo_outputs = outputs  # type: ignore[attr-defined]
    demo.lungdemo_loaded = loaded  # type: ignore[attr-defined]
    demo.lungdemo_confusion_plots = confusion_plots  # type: ignore[attr-defined]
    demo.lungdemo_reliability_plots = reliability_plots  # type: ignore[attr-defined]
    logger.info("built demo for %s (%d examples)", loaded.description, len(examples))
    return demo


def _classify_tab(classifier: Classifier, examples: Sequence[Path], concurrency_limit: int) -> None:
    """Input boxes | probabilities and notes | heat map; the report row under them.

    Event chain of one upload (image box, file box or example click): ``/classify`` -> on
    success ``/explain`` (queued: a forward and backward pass) and three page-only steps
    (decode notes, confidence line, the session's copy of the slice); on failure everything
    is cleared so no stale answer stays beside the error.
    """
    classes = classifier.predictor.class_names
    gr.Markdown(f"> ⚠️ **{DISCLAIMER}**", elem_id="disclaimer")
    current = gr.State(None, time_to_live=SLICE_TTL_S)
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            image = gr.Image(
                type="filepath",
                image_mode=None,
                sources=["upload", "clipboard"],
                label="CT slice (drop, click to upload, or paste)",
                buttons=["fullscreen"],
                elem_id="slice-input",
            )
            file_box = gr.File(
                file_types=FILE_INPUT_TYPES,
                label="…or upload a file: DICOM (.dcm) or any image the box above cannot show",
                height=140,
                elem_id="file-input",
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
        with gr.Column(scale=3):
            label = gr.Label(
                num_top_classes=len(classes),
                label=f"Class probabilities (temperature-scaled, T = {classifier.temperature:.2f})",
                elem_id="probabilities",
            )
            confidence = gr.Markdown(elem_id="confidence-note")
            notes = gr.Markdown(elem_id="decode-notes")
        with gr.Column(scale=4):
            cam_class = gr.Dropdown(
                choices=[TOP_CLASS_CHOICE, *classes],
                value=TOP_CLASS_CHOICE,
                label="Heat map for",
                elem_id="cam-class",
            )
            overlay = gr.Image(
                type="pil",
                format="png",
                interactive=False,
                label="Grad-CAM",
                buttons=["download", "fullscreen"],
                height=300,
                elem_id="cam-overlay",
            )
            cam_target = gr.Textbox(label="Heat map explains the class", interactive=False, elem_id="cam-target")
            cam_empty = gr.Markdown(elem_id="cam-empty")
            gr.Markdown(
                f"*{HEATMAP_NOTE}* The overlay is drawn on the slice as the model saw it: cropped to the body, "
                "padded to a square and resized.",
                elem_id="heatmap-note",
            )
    with gr.Row(equal_height=False):
        report_format = gr.Radio(
            list(REPORT_FORMATS), value=REPORT_FORMATS[0], label="Report format", scale=1, elem_id="report-format"
        )
        report_button = gr.Button("Download report", variant="primary", size="md", scale=1, elem_id="report-button")
        # hidden until there is a report: an empty File box is a large, empty drop zone
        report_file = gr.File(
            label="Report", interactive=False, visible=False, scale=2, height=90, elem_id="report-file"
        )

    page_only: dict[str, Any] = {"api_visibility": "private", "queue": False}
    answers = [label, confidence, notes, overlay, cam_target, cam_empty, current, report_file]

    def cleared() -> tuple[Any, ...]:
        return None, "", "", None, "", "", None, no_report()

    def no_report() -> Any:
        return gr.File(value=None, visible=False)

    def report_shown(current: Slice | None, target_class: str | None, fmt: str | None) -> Any:
        """The report event: :meth:`Classifier.report`, its File box shown with the file."""
        return gr.File(value=classifier.report(current, target_class, fmt), visible=True)

    def follow_up(event: Any, source: gr.components.Component, explain_api_name: str | None) -> None:
        """What runs after a classification from ``source`` (the chain in _classify_tab's docstring)."""
        ok = event.success(
            classifier.explain,
            inputs=[source, cam_class],
            outputs=[overlay, cam_target],
            preprocess=False,  # the file untouched, as /classify gets it
            concurrency_limit=concurrency_limit,
            concurrency_id="classify",
            **(
                {
                    "api_name": explain_api_name,
                    "api_description": (
                        "Grad-CAM heat map of one chest CT slice (an image file) for target_class: "
                        f"{TOP_CLASS_CHOICE!r} (the predicted class) or one of {classes}. Returns the overlay "
                        "image (the slice as the model saw it, at its input size) and the class it explains. "
                        "A heat map shows where the model looked, not proof of disease."
                    ),
                }
                if explain_api_name
                else {"api_visibility": "private"}
            ),
        )
        ok.success(empty_map_markdown, inputs=[overlay, cam_target], outputs=cam_empty, **page_only)
        ok.failure(lambda: (None, "", ""), outputs=[overlay, cam_target, cam_empty], **page_only)
        event.success(classifier.notes, inputs=source, outputs=notes, preprocess=False, **page_only)
        event.success(classifier.confidence, inputs=label, outputs=confidence, **page_only)
        event.success(no_report, outputs=report_file, **page_only)
        event.success(classifier.remember, inputs=source, outputs=current, preprocess=False, **page_only)
        event.failure(cleared, outputs=answers, **page_only)

    # `upload` fires once per file, dropped, picked or pasted; `change` fires twice when
    # an image replaces another (measured with Gradio 6.31), which would classify twice.
    classify_options: dict[str, Any] = {
        "fn": classifier.classify,
        "outputs": label,
        "preprocess": False,  # the function gets the upload untouched: see upload_payload()
        "concurrency_limit": concurrency_limit,
        "concurrency_id": "classify",
    }
    follow_up(
        image.upload(
            **classify_options,
            inputs=image,
            api_name="classify",
            api_description=(
                "Classify one chest CT slice (an image file). Returns the probability of each of "
                f"the classes {classes}."
            ),
        ),
        image,
        "explain",
    )
    image.upload(lambda: None, outputs=file_box, **page_only)  # one current slice: the other box empties
    if example_block is not None:
        loaded = example_block.load_input_event
        follow_up(loaded.then(**classify_options, inputs=image, api_visibility="private"), image, None)
        loaded.then(lambda: None, outputs=file_box, **page_only)
    follow_up(file_box.upload(**classify_options, inputs=file_box, api_visibility="private"), file_box, None)
    file_box.upload(lambda: None, outputs=image, **page_only)
    image.clear(cleared, outputs=answers, **page_only)
    file_box.clear(cleared, outputs=answers, **page_only)

    cam_class.input(
        classifier.explain_slice,
        inputs=[current, cam_class],
        outputs=[overlay, cam_target],
        api_visibility="private",
        concurrency_limit=concurrency_limit,
        concurrency_id="classify",
    ).success(empty_map_markdown, inputs=[overlay, cam_target], outputs=cam_empty, **page_only)
    report_button.click(
        report_shown,
        inputs=[current, cam_class, report_format],
        outputs=report_file,
        api_visibility="private",
        concurrency_limit=1,
        concurrency_id="report",
    ).success(None, inputs=report_file, js=DOWNLOAD_JS, **page_only)


def _batch_tab(batcher: BatchClassifier) -> None:
    """Files in, table and CSV out; the button's event is the ``/batch`` endpoint."""
    gr.Markdown(
        f"> ⚠️ **{DISCLAIMER}**\n\n"
        "Classify several slices at once: pick or drop image files, DICOM files or `.zip` archives of them "
        f"(up to {batcher.max_slices:,} slices; for more, use `python -m lungdemo.predict`). Each slice goes "
        "through the same preprocessing and model as the classify tab. A file that cannot be read gets a row "
        "saying why. The CSV holds every digit of the probabilities; it can be downloaded for about five "
        "minutes, and the uploads are deleted after the batch."
    )
    with gr.Row(equal_height=True):
        files = gr.File(
            file_count="multiple",
            file_types=BATCH_FILE_TYPES,
            label="CT slices: image files, DICOM files or .zip archives",
            height=140,
            scale=3,
            elem_id="batch-input",
        )
        with gr.Column(scale=1):
            run = gr.Button("Classify all", variant="primary", elem_id="batch-button")
            csv_file = gr.File(label="Results as CSV", interactive=False, height=90, elem_id="batch-csv")
    table = gr.Dataframe(
        headers=batcher.headers,
        label="Results (probabilities are temperature-scaled)",
        interactive=False,
        wrap=True,
        max_height=600,
        elem_id="batch-table",
    )
    run.click(
        batcher.batch,
        inputs=files,
        outputs=[table, csv_file],
        preprocess=False,  # the files untouched: see upload_payload()
        api_name="batch",
        api_description=(
            "Classify several chest CT slices: a list of image files, DICOM files or .zip archives of them. "
            f"Returns a table with the columns {batcher.headers} (one row per slice; zip members are named "
            "archive.zip!member) and the same table as a CSV file."
        ),
        concurrency_limit=1,
        concurrency_id="batch",
    )
    files.clear(lambda: (None, None), outputs=[table, csv_file], api_visibility="private", queue=False)


def _evaluation_tab(loaded: LoadedModel, tab: gr.Tab) -> tuple[ConfusionPlots | None, ReliabilityPlots | None]:
    """Tables filled at build time from metrics.json; plots drawn when the tab is opened."""
    metrics = loaded.metrics
    if not metrics:
        gr.Markdown(
            f"This model folder ({loaded.description}) has no `{METRICS_NAME}`, so there are no "
            "evaluation results to show. The training pipeline writes it when it evaluates a model.",
            elem_id="no-metrics",
        )
        return None, None
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
    reliability = _calibration_section(metrics, float(loaded.model.temperature), tab)
    return confusion, reliability


def _calibration_section(metrics: dict[str, Any], temperature: float, tab: gr.Tab) -> ReliabilityPlots | None:
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
    gr.Dataframe(
        value=rows,
        headers=CALIBRATION_HEADERS,
        label="Calibration (expected calibration error, 10 bins)",
        interactive=False,
        elem_id="calibration-table",
    )
    plots: list[gr.Plot] = []
    drawn: list[tuple[dict[str, Any], str]] = []
    with gr.Row():
        for key, title in CALIBRATION_SPLITS:
            split = metrics.get(key)
            calibration = split.get("calibration") if isinstance(split, dict) else None
            if not isinstance(calibration, dict):
                continue
            with gr.Column():
                plots.append(
                    gr.Plot(
                        format="png",
                        label=f"{title}: reliability diagram",
                        show_label=False,
                        elem_id=f"reliability-{key}",
                    )
                )
                drawn.append((calibration, title))
    reliability = ReliabilityPlots(drawn)
    tab.select(reliability.render, outputs=plots, api_visibility="private", queue=False)
    return reliability


def launch_options(max_file_size: int | str = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """``demo.launch`` keyword arguments every launch should use.

    Gradio takes these at launch, not at build time: the upload size limit, no run history
    saved in the browser, no monitoring endpoint, no footer link to run history.
    """
    return {
        "max_file_size": max_file_size,
        # Gradio keeps per-session state for up to 10,000 sessions by default; every API call
        # is a session, so memory grew ~13% over 1,024 requests. 256 keeps it bounded.
        "state_session_capacity": STATE_SESSION_CAPACITY,
        "run_history": False,
        "enable_monitoring": False,
        "footer_links": ["api", "gradio"],
    }
