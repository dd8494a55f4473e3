"""Reading the out-of-distribution check from a model folder, strictly.

``ood.json`` must have exactly the expected sections and keys, ``ood.safetensors`` exactly the
expected finite float32 tensors, their shapes must fit each other, and the check must have
been fitted with the classifier's own preprocessing (``config.json``). Anything else is an
:class:`~lungdemo.ood_backbone.OODCheckError` that names the fix; a folder with neither file
has no check (``None``).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from lungdemo.ood import FORMAT, FORMAT_VERSION, OOD_FILES, OOD_JSON, OOD_WEIGHTS, ORIENTATION_CLASSES, OODCheck
from lungdemo.ood_backbone import GRID, REFIT_HINT, BackboneSpec, Features, OODCheckError, expect_keys
from lungdemo.preprocessing import PreprocessConfig

logger = logging.getLogger(__name__)

JSON_KEYS = {"format", "format_version", "backbone", "preprocessing", "distance", "orientation", "info"}
DISTANCE_KEYS = {"k", "metric", "threshold", "false_alarm_rate", "n_reference"}
ORIENTATION_KEYS = {"classes", "threshold", "false_alarm_rate"}
TENSOR_NAMES = {"reference", "probe.coef", "probe.intercept"}
METRICS = ("cosine", "euclidean")


def _number(value: Any, where: str, lo: float, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise OODCheckError(f"{OOD_JSON} {where} must be a number in [{lo}, {hi}], got {value!r}: {REFIT_HINT}")
    return float(value)


def _integer(value: Any, where: str, lo: int, hi: int | float = math.inf) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise OODCheckError(f"{OOD_JSON} {where} must be an integer in [{lo}, {hi}], got {value!r}: {REFIT_HINT}")
    return value


def read_check_json(path: Path) -> dict[str, Any]:
    """``ood.json``, with exactly the expected sections and keys."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OODCheckError(f"{path} is not readable JSON ({exc}): {REFIT_HINT}") from exc
    expect_keys(data, JSON_KEYS, OOD_JSON)
    if data["format"] != FORMAT or data["format_version"] != FORMAT_VERSION:
        raise OODCheckError(
            f"{path} is format {data['format']!r} version {data['format_version']!r}; this lungdemo reads "
            f"{FORMAT!r} version {FORMAT_VERSION}: {REFIT_HINT}"
        )
    expect_keys(data["distance"], DISTANCE_KEYS, f"{OOD_JSON} distance")
    expect_keys(data["orientation"], ORIENTATION_KEYS, f"{OOD_JSON} orientation")
    if not isinstance(data["info"], dict):
        raise OODCheckError(f"{OOD_JSON} info must be a JSON object: {REFIT_HINT}")
    return data


def read_check_tensors(path: Path) -> dict[str, np.ndarray]:
    """``ood.safetensors``: exactly the expected tensors, finite float32."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise OODCheckError(f"{path} is not a readable safetensors file ({exc}): {REFIT_HINT}") from exc
    expect_keys(tensors, TENSOR_NAMES, OOD_WEIGHTS)
    for name, arr in tensors.items():
        if arr.dtype != np.float32 or not np.isfinite(arr).all():
            raise OODCheckError(f"{OOD_WEIGHTS}: tensor {name!r} must be finite float32, got {arr.dtype}: {REFIT_HINT}")
    return tensors


def load_check(folder: Path, preprocessing: PreprocessConfig, *, features: Features | None = None) -> OODCheck | None:
    """The check stored in a model folder, or ``None`` when it has none (neither file).

    Strict: one file without the other, unknown or missing keys, shapes that do not fit
    together, a backbone other than the installed one, or preprocessing other than the
    classifier's ``config.json``, each raise :class:`OODCheckError` naming the fix.
    ``features`` reuses an already built backbone (tests, several folders in one process).
    """
    folder = Path(folder)
    present = [name for name in OOD_FILES if (folder / name).is_file()]
    if not present:
        return None
    if len(present) != len(OOD_FILES):
        missing = next(name for name in OOD_FILES if name not in present)
        raise OODCheckError(f"{folder} has {present[0]} but no {missing}: copy both files, or {REFIT_HINT}")
    data = read_check_json(folder / OOD_JSON)
    tensors = read_check_tensors(folder / OOD_WEIGHTS)
    spec = BackboneSpec.from_dict(data["backbone"], f"{OOD_JSON} backbone")
    if spec.architecture != BackboneSpec.architecture:
        raise OODCheckError(f"{OOD_JSON}: unknown backbone {spec.architecture!r}: {REFIT_HINT}")
    if features is not None and features.spec != spec:
        raise OODCheckError(f"{folder / OOD_JSON} was fitted with another backbone than the one given: {REFIT_HINT}")
    try:
        fitted_with = PreprocessConfig.from_dict(data["preprocessing"])
    except (TypeError, ValueError) as exc:
        raise OODCheckError(f"{OOD_JSON} preprocessing: {exc}: {REFIT_HINT}") from exc
    if fitted_with != preprocessing:
        raise OODCheckError(
            f"{folder / OOD_JSON} was fitted with preprocessing {fitted_with.to_dict()}, but the model's config.json "
            f"has {preprocessing.to_dict()}: {REFIT_HINT}"
        )
    dist, orient = data["distance"], data["orientation"]
    if orient["classes"] != list(ORIENTATION_CLASSES):
        raise OODCheckError(f"{OOD_JSON} orientation.classes must be {list(ORIENTATION_CLASSES)}: {REFIT_HINT}")
    if dist["metric"] not in METRICS:
        raise OODCheckError(f"{OOD_JSON} distance.metric must be one of {METRICS}, got {dist['metric']!r}")
    n_reference = _integer(dist["n_reference"], "distance.n_reference", 1)
    expected = {
        "reference": (n_reference, spec.feature_dim),
        "probe.coef": (len(ORIENTATION_CLASSES), GRID * GRID * spec.feature_dim),
        "probe.intercept": (len(ORIENTATION_CLASSES),),
    }
    bad = [f"{n} is {tensors[n].shape}, expected {shape}" for n, shape in expected.items() if tensors[n].shape != shape]
    if bad:
        raise OODCheckError(f"{folder / OOD_WEIGHTS} does not match {OOD_JSON}: {'; '.join(bad)}: {REFIT_HINT}")
    check = OODCheck(
        spec=spec,
        preprocessing=fitted_with,
        reference=tensors["reference"],
        k=_integer(dist["k"], "distance.k", 1, n_reference),
        metric=dist["metric"],
        threshold=_number(dist["threshold"], "distance.threshold", 0.0),
        false_alarm_rate=_number(dist["false_alarm_rate"], "distance.false_alarm_rate", 0.0, 1.0),
        probe_coef=tensors["probe.coef"],
        probe_intercept=tensors["probe.intercept"],
        orientation_threshold=_number(orient["threshold"], "orientation.threshold", 0.0, 1.0),
        orientation_false_alarm_rate=_number(orient["false_alarm_rate"], "orientation.false_alarm_rate", 0.0, 1.0),
        info=data["info"],
        features=features,
    )
    logger.info("loaded %s from %s", check.description, folder)
    return check
