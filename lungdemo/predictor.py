"""Inference on files: the same preprocessing as evaluation, then softmax over the classes.

When the model folder holds an out-of-distribution check (:mod:`lungdemo.ood`), every
prediction carries its verdict, computed in the same call, and a flagged upload gets the
check's note first among its warnings.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from lungdemo.decode import WARNING_PREFIX
from lungdemo.device import resolve_device
from lungdemo.loading import LoadedModel, load_model
from lungdemo.ood import NO_CHECK_MESSAGE, WARNING_START, OODCheck, OODResult
from lungdemo.ood_store import load_check
from lungdemo.preprocessing import decode_canonical, normalize

logger = logging.getLogger(__name__)


def is_warning(note: str) -> bool:
    """Decode warnings (``WARNING_PREFIX``) and the check's notes (``WARNING_START``) are warnings."""
    return note.startswith((WARNING_PREFIX, WARNING_START))


@dataclass
class Prediction:
    """Class probabilities for one slice, in the model's class order, plus decode notes.

    ``notes`` say how the file was read; warnings (see :func:`is_warning`: listed first, and in
    :attr:`warnings`) say the file may not be a chest CT slice at all. They stay in ``notes`` so
    that everything that shows notes (the page, reports) shows the warnings too. ``ood`` is the
    out-of-distribution check's verdict, ``None`` when the model has no check.
    """

    probabilities: dict[str, float]
    notes: list[str] = field(default_factory=list)
    ood: OODResult | None = None

    @property
    def top_class(self) -> str:
        return max(self.probabilities, key=self.probabilities.__getitem__)

    @property
    def warnings(self) -> list[str]:
        """The notes that warn the answer may mean little (e.g. a colour photograph, a face)."""
        return [n for n in self.notes if is_warning(n)]


def with_check_note(notes: list[str], result: OODResult | None) -> list[str]:
    """The notes with the check's message (when it flags) first, ahead of the decode warnings."""
    message = result.message if result is not None else None
    return [message, *notes] if message else list(notes)


class Predictor:
    """Holds a loaded model (and its check, if any); thread-safe for concurrent requests (inference only)."""

    def __init__(
        self,
        loaded: LoadedModel,
        device: str | torch.device | None = None,
        ood: OODCheck | Literal["folder"] | None = "folder",
    ) -> None:
        self.loaded = loaded
        self.device = resolve_device(device) if device is not None else next(loaded.model.parameters()).device
        self.model = loaded.model.to(self.device).eval()  # float32, no autocast: calibrated as trained
        self.cfg = self.model.preprocess_config
        self.class_names = list(self.model.class_names)
        self._lock = threading.Lock()
        self.ood: OODCheck | None = load_check(loaded.folder, self.cfg) if ood == "folder" else ood
        """The out-of-distribution check stored with the model; ``None`` when the folder has none."""
        self._beside = ThreadPoolExecutor(1, thread_name_prefix="lungdemo-check") if self.ood is not None else None
        """Runs the check beside the classifier (:meth:`forward_canonical`)."""

    @classmethod
    def from_ref(cls, ref: str | Path, device: str | torch.device | None = None) -> Predictor:
        """``device``: ``auto|cpu|cuda|cuda:N|mps`` (:mod:`lungdemo.device`); default: where the model loaded (CPU)."""
        return cls(load_model(ref), device=device)

    @property
    def ood_description(self) -> str:
        """One line for the page and reports: what the check is, or that there is none."""
        return self.ood.description if self.ood is not None else NO_CHECK_MESSAGE

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Normalised input batch -> calibrated probabilities ``(N, num_classes)``, on the model's device."""
        logits = self.model(batch.to(self.device))
        return torch.softmax(logits / self.model.temperature, dim=1)

    @property
    def lock(self) -> threading.Lock:
        """The lock every forward pass on this model takes (Grad-CAM too), one at a time."""
        return self._lock

    def probabilities_canonical(self, canon: torch.Tensor) -> torch.Tensor:
        """``uint8`` ``(N, 1, H, W)`` from :func:`decode_canonical` -> probabilities ``(N, C)``.

        The batch path (:mod:`lungdemo.predict`): the same normalisation and locked forward as
        :meth:`predict`, one forward pass for the whole batch.
        """
        x = normalize(canon.to(self.device), self.cfg)
        with self._lock:
            return self.probabilities(x).cpu()

    def check_canonical(self, canon: torch.Tensor) -> list[OODResult] | None:
        """The check's verdicts for ``uint8`` ``(N, 1, H, W)`` canonical slices; ``None`` without a check.

        The batch path calls this beside :meth:`probabilities_canonical` on the same tensor.
        """
        return self.ood.check(canon) if self.ood is not None else None

    def predict(self, source: bytes | str | Path) -> Prediction:
        """Decode, preprocess exactly as evaluation does, classify one file, and check it."""
        canon, info = decode_canonical(source, self.cfg)
        (probs, result), *_ = self.forward_canonical(canon.unsqueeze(0))
        return self.prediction(probs, info.notes, result)

    def forward_canonical(self, canon: torch.Tensor) -> list[tuple[list[float], OODResult | None]]:
        """Probabilities and the check's verdict for each canonical slice of a batch (one pass each).

        The check runs in its own thread while the classifier runs in this one; its error, if any,
        reaches the caller.
        """
        if self.ood is None or self._beside is None:
            return [(row, None) for row in self.probabilities_canonical(canon).tolist()]
        checking = self._beside.submit(self.ood.check, canon)
        try:
            probs = self.probabilities_canonical(canon).tolist()
        finally:
            checked = checking.result()  # never leave the check running on its own; its error wins
        return list(zip(probs, checked, strict=True))

    def prediction(self, probs: list[float], notes: list[str], result: OODResult | None) -> Prediction:
        """The one place a :class:`Prediction` is put together, for every path that classifies."""
        if result is not None and result.flagged:
            logger.debug("upload flagged by the out-of-distribution check: %s", result.reason)
        return Prediction(
            dict(zip(self.class_names, probs, strict=True)),
            notes=with_check_note(list(notes), result),
            ood=result,
        )
