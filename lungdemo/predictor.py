"""Inference on files: the same preprocessing as evaluation, then softmax over the classes."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lungdemo.decode import WARNING_PREFIX
from lungdemo.device import resolve_device
from lungdemo.loading import LoadedModel, load_model
from lungdemo.preprocessing import decode_canonical, normalize

logger = logging.getLogger(__name__)


@dataclass
class Prediction:
    """Class probabilities for one slice, in the model's class order, plus decode notes.

    ``notes`` say how the file was read; those starting with ``WARNING_PREFIX`` (listed first,
    and in :attr:`warnings`) say the file may not be a chest CT slice at all. They stay in
    ``notes`` so that everything that shows notes (the page, reports) shows the warnings too.
    """

    probabilities: dict[str, float]
    notes: list[str] = field(default_factory=list)

    @property
    def top_class(self) -> str:
        return max(self.probabilities, key=self.probabilities.__getitem__)

    @property
    def warnings(self) -> list[str]:
        """The notes that warn the answer may mean little (e.g. a colour photograph)."""
        return [n for n in self.notes if n.startswith(WARNING_PREFIX)]


class Predictor:
    """Holds a loaded model; thread-safe for concurrent requests (inference only)."""

    def __init__(self, loaded: LoadedModel, device: str | torch.device | None = None) -> None:
        self.loaded = loaded
        self.device = resolve_device(device) if device is not None else next(loaded.model.parameters()).device
        self.model = loaded.model.to(self.device).eval()  # float32, no autocast: calibrated as trained
        self.cfg = self.model.preprocess_config
        self.class_names = list(self.model.class_names)
        self._lock = threading.Lock()

    @classmethod
    def from_ref(cls, ref: str | Path, device: str | torch.device | None = None) -> Predictor:
        """``device``: ``auto|cpu|cuda|cuda:N|mps`` (:mod:`lungdemo.device`); default: where the model loaded (CPU)."""
        return cls(load_model(ref), device=device)

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

    def predict(self, source: bytes | str | Path) -> Prediction:
        """Decode, preprocess exactly as evaluation does, and classify one file."""
        canon, info = decode_canonical(source, self.cfg)
        probs = self.probabilities_canonical(canon.unsqueeze(0))[0].tolist()
        return Prediction(dict(zip(self.class_names, probs, strict=True)), notes=list(info.notes))
