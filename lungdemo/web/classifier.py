"""The functions behind the classify tab: original bytes -> Predictor -> label, heat map, notes, report."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import numpy as np

from lungdemo.batching import BatchedPredictor
from lungdemo.decode import ImageDecodeError, decode_image
from lungdemo.gradcam import explain_canonical, explain_source
from lungdemo.ood import WARNING_START
from lungdemo.predictor import Prediction, Predictor
from lungdemo.web.lifecycle import OutputFiles, Upload, UploadJanitor, read_upload, upload_name, upload_payload
from lungdemo.web.recent import Decoded, RecentUploads

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

CONFIDENCE_THRESHOLD = 0.6
"""Calibrated top-class probability below which the page says the model is unsure (page only)."""
TOP_CLASS_CHOICE = "top class"
"""The heat-map picker's first entry (and the ``/explain`` default): the predicted class."""
REPORT_FORMATS = ("PDF", "PNG")
INTERNAL_ERROR = "the server could not {} (an internal error, logged on the server)"


@dataclass(frozen=True)
class Slice:
    """A session's current slice, kept in memory: the upload itself is deleted seconds after use."""

    data: bytes
    name: str


def target_class_of(choice: str | None, class_names: Sequence[str]) -> str | None:
    """The heat-map picker's value as a class name (``None``: the top class), checked for API callers."""
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


def notes_markdown(notes: Sequence[str] | None) -> str:
    """Decode notes as Markdown for the classify tab; a flagged upload leads with a banner."""
    if not notes:
        return ""
    notes = list(notes)
    banner = ""
    if notes[0].startswith(WARNING_START):
        head, _, reason = notes.pop(0).partition(": ")
        banner = (
            f"### ⚠️ {head}\n\n{reason[:1].upper()}{reason[1:]}. **The class probabilities are not meaningful.**\n\n"
        )
    if not notes:
        return banner
    return banner + "**How the file was read:**\n\n" + "\n".join(f"- {note}" for note in notes)


def report_file_name(original: str, fmt: str) -> str:
    """``<original stem>_report.<fmt>`` with only safe characters (the user's name in a path)."""
    stem = re.sub(r"[^\w.-]+", "_", Path(original).stem).strip("._")[:80] or "slice"
    return f"{stem}_report.{fmt.lower()}"


def empty_map_markdown(overlay: Image.Image | None, target_class: str | None) -> str:
    """A line under an empty heat map, which would otherwise look like a failure.

    Read from the overlay: a map scaled by its maximum has a full-colour pixel, an empty one leaves all grey.
    """
    if overlay is None or not target_class:
        return ""
    rgb = np.asarray(overlay.convert("RGB"), dtype=np.int16)
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return f"*The heat map for {target_class} is empty: no region raised this class's score.*"
    return ""


def cannot_read(exc: ImageDecodeError) -> gr.Error:
    return gr.Error(str(exc), title="Cannot read this file", print_exception=False)


class Classifier:
    """``classify`` is ``/classify`` (the label dict alone), ``explain`` is ``/explain``; the rest are page-only.

    Concurrent classifications share forward passes (:class:`BatchedPredictor`). What classify
    read and decoded is kept briefly (:class:`RecentUploads`), so the page's follow-ups on the
    same upload (heat map, notes, the session's slice) neither read nor decode it again.
    """

    def __init__(
        self,
        predictor: Predictor,
        janitor: UploadJanitor | None = None,
        outputs: OutputFiles | None = None,
        batched: BatchedPredictor | None = None,
    ) -> None:
        self.predictor = predictor
        self.janitor = janitor
        self.outputs = outputs or OutputFiles()
        self.batched = batched or BatchedPredictor(predictor)
        self.recent = RecentUploads()

    @property
    def temperature(self) -> float:
        return float(self.predictor.model.temperature)

    def classify(self, image: Upload) -> dict[str, float] | None:
        """Classify one chest CT slice; returns the probability of each class.

        `image` is an image file (PNG, JPEG, TIFF, BMP, GIF, ...). A file that is not a
        readable image is rejected with a message saying why.
        """
        upload = upload_payload(image)
        if upload is None:
            return None
        return self._predict(upload).probabilities

    def _predict(self, upload: str | bytes) -> Prediction:
        """Read, classify and check one upload; remember what was decoded for the page's follow-ups."""
        data = read_upload(upload, self.janitor)
        try:
            prediction, canonical = self.batched.predict_with_input(data)
        except ImageDecodeError as exc:
            logger.info("rejected upload (%d bytes): %s", len(data), exc)
            raise cannot_read(exc) from exc
        except Exception as exc:
            logger.exception("classification failed")
            raise gr.Error(INTERNAL_ERROR.format("classify this file"), print_exception=False) from exc
        if isinstance(upload, str):
            self.recent.put(upload, Decoded(data, canonical, tuple(prediction.notes)))
        return prediction

    def classify_json(self, image: Upload) -> dict[str, Any]:
        """Classify one slice and say whether it looks like one: probabilities, top class, check, notes.

        `check` is the out-of-distribution check's score, threshold and decision (`null` when the
        model folder has no check); when `check.flagged` is true the probabilities mean little.
        """
        upload = upload_payload(image)
        if upload is None:
            raise gr.Error("No file: send one image or DICOM file.", print_exception=False)
        prediction = self._predict(upload)
        return {
            "probabilities": prediction.probabilities,
            "top_class": prediction.top_class,
            "check": prediction.ood.to_dict() if prediction.ood is not None else None,
            "notes": prediction.notes,
            "warnings": prediction.warnings,
        }

    def explain(self, image: Upload, target_class: str | None = TOP_CLASS_CHOICE) -> tuple[Image.Image | None, str]:
        """Grad-CAM of one chest CT slice: the heat-map overlay and the class it explains.

        `target_class` is "top class" (the predicted class) or one of the model's classes.
        The overlay is drawn on the slice as the model saw it (cropped to the body, padded
        and resized to the model's input size). A heat map shows where the model looked,
        not proof of disease.
        """
        upload = upload_payload(image)
        if upload is None:
            return None, ""
        decoded = self._recent(upload)
        if decoded is not None:
            return self._explain(decoded, target_class)
        return self._explain(read_upload(upload, self.janitor), target_class)

    def notes(self, image: Upload) -> str:
        """Markdown with the decode notes for ``image`` (what conversion took place)."""
        upload = upload_payload(image)
        if upload is None:
            return ""
        decoded = self._recent(upload)
        if decoded is not None:
            return notes_markdown(decoded.notes)
        try:
            _, info = decode_image(read_upload(upload, self.janitor), self.predictor.cfg.max_pixels)
        except (ImageDecodeError, gr.Error):
            return ""
        return notes_markdown(info.notes)

    def confidence(self, label: dict[str, float] | None) -> str:
        """The confidence line for the probabilities the page shows (the label's value)."""
        return confidence_markdown(label if isinstance(label, dict) else None, temperature=self.temperature)

    def remember(self, image: Upload) -> Slice | None:
        """The session's copy of a slice that was just classified."""
        upload = upload_payload(image)
        if upload is None:
            return None
        decoded = self._recent(upload)
        data = decoded.data if decoded is not None else read_upload(upload, self.janitor)
        return Slice(data, upload_name(image))

    def explain_slice(self, current: Slice | None, target_class: str | None) -> tuple[Any, Any]:
        """Heat map of the session's slice for another class (the picker's change event)."""
        if current is None:
            return gr.skip(), gr.skip()
        return self._explain(current.data, target_class)

    def report(self, current: Slice | None, target_class: str | None, fmt: str | None = "PDF") -> str:
        """Write the one-page report (:mod:`lungdemo.report`) of the session's slice; returns its path."""
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
            raise cannot_read(exc) from exc
        except Exception as exc:
            self.outputs.discard(out)
            logger.exception("report failed")
            raise gr.Error(INTERNAL_ERROR.format("make the report"), print_exception=False) from exc
        logger.info("report %s for %s", out.name, current.name)
        return self.outputs.handed_out(out)

    def _recent(self, upload: str | bytes) -> Decoded | None:
        return self.recent.get(upload) if isinstance(upload, str) else None

    def _explain(self, source: bytes | Decoded, target_class: str | None) -> tuple[Image.Image, str]:
        target = target_class_of(target_class, self.predictor.class_names)
        try:
            if isinstance(source, Decoded):
                result = explain_canonical(self.predictor, source.canonical, target, source.notes)
            else:
                result = explain_source(self.predictor, source, target)
        except ImageDecodeError as exc:
            raise cannot_read(exc) from exc
        except Exception as exc:
            logger.exception("Grad-CAM failed")
            raise gr.Error(INTERNAL_ERROR.format("compute the heat map"), print_exception=False) from exc
        return result.overlay(), result.target_class
