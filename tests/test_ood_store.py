"""lungdemo.ood_store: the check's files load strictly, and a wrong one names the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from lungdemo.ood import NO_CHECK_MESSAGE, OOD_JSON, OOD_WEIGHTS, OODCheck
from lungdemo.ood_backbone import BackboneSpec, Features, OODCheckError
from lungdemo.ood_store import load_check
from tests.ood_helpers import CFG, FALSE_ALARM_RATE, canon_of
from train.ood_corpus import png, text_page


def test_save_and_load_round_trip(folder: Path, check: OODCheck, features: Features) -> None:
    loaded = load_check(folder, CFG, features=features)
    assert loaded is not None
    assert loaded.to_json() == check.to_json()
    canon = canon_of(png(text_page()))
    assert loaded.check(canon)[0].score == pytest.approx(check.check(canon)[0].score, abs=1e-6)
    stored = json.loads((folder / OOD_JSON).read_text())
    assert stored["backbone"]["weights_sha256"] == BackboneSpec().weights_sha256
    assert stored["distance"]["k"] == 3 and stored["distance"]["metric"] == "cosine"
    assert stored["distance"]["false_alarm_rate"] == FALSE_ALARM_RATE


def test_folder_without_the_check_has_none(tmp_path: Path) -> None:
    assert load_check(tmp_path, CFG) is None
    assert "no out-of-distribution check" in NO_CHECK_MESSAGE


@pytest.mark.parametrize("present", [OOD_JSON, OOD_WEIGHTS])
def test_one_file_without_the_other_is_refused(folder: Path, present: str) -> None:
    other = OOD_WEIGHTS if present == OOD_JSON else OOD_JSON
    (folder / other).unlink()
    with pytest.raises(OODCheckError, match=f"has {present} but no {other}.*train.ood_fit"):
        load_check(folder, CFG)


def edit_json(folder: Path, edit) -> None:
    data = json.loads((folder / OOD_JSON).read_text())
    edit(data)
    (folder / OOD_JSON).write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["distance"].pop("threshold"), r"distance has missing keys \['threshold'\]"),
        (lambda d: d.update(extra=1), r"unknown keys \['extra'\]"),
        (lambda d: d["backbone"].update(input_size="160"), "backbone.input_size must be int"),
        (lambda d: d["distance"].update(k=0), "distance.k must be an integer"),
        (lambda d: d["distance"].update(threshold=float("nan")), "distance.threshold must be a number"),
        (lambda d: d["distance"].update(n_reference=19), r"reference is \(20, 1280\), expected \(19, 1280\)"),
        (lambda d: d.update(format_version=99), "version 99"),
        (lambda d: d["preprocessing"].update(image_size=224), "fitted with preprocessing"),
        (lambda d: d["backbone"].update(weights_sha256="0" * 64), "another backbone"),
    ],
    ids=["missing", "unknown", "type", "k", "nan", "count", "version", "preprocessing", "backbone"],
)
def test_bad_json_is_refused_with_the_fix(folder: Path, features: Features, edit, message: str) -> None:
    edit_json(folder, edit)
    with pytest.raises(OODCheckError, match=message) as info:
        load_check(folder, CFG, features=features)
    assert "python -m train.ood_fit" in str(info.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.pop("probe.intercept"), r"missing keys \['probe.intercept'\]"),
        (
            lambda t: t.update({"probe.coef": t["probe.coef"][:, :10].copy()}),
            r"probe.coef is \(4, 10\), expected \(4, 5120\)",
        ),
        (lambda t: t.update(reference=t["reference"].astype(np.float64)), "must be finite float32"),
        (lambda t: t["reference"].__setitem__((0, 0), np.inf), "must be finite float32"),
    ],
    ids=["missing", "shape", "dtype", "inf"],
)
def test_bad_tensors_are_refused_with_the_fix(folder: Path, features: Features, edit, message: str) -> None:
    tensors = dict(load_file(str(folder / OOD_WEIGHTS)))
    edit(tensors)
    save_file(tensors, str(folder / OOD_WEIGHTS))
    with pytest.raises(OODCheckError, match=message) as info:
        load_check(folder, CFG, features=features)
    assert "python -m train.ood_fit" in str(info.value)


def test_unreadable_files_are_refused(folder: Path) -> None:
    (folder / OOD_WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(OODCheckError, match="not a readable safetensors file"):
        load_check(folder, CFG)
    (folder / OOD_JSON).write_text("{")
    with pytest.raises(OODCheckError, match="not readable JSON"):
        load_check(folder, CFG)
