"""Predictor with and without the out-of-distribution check: the verdict and its warning in the same call."""

from __future__ import annotations

import io
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lungdemo.decode import WARNING_PREFIX
from lungdemo.loading import load_model
from lungdemo.ood import NO_CHECK_MESSAGE, OOD_FILES, WARNING_START
from lungdemo.ood_backbone import BackboneSpec, Features, OODCheckError, build_backbone
from lungdemo.predictor import Predictor, is_warning
from lungdemo.preprocessing import decode_canonical
from tests.conftest import make_model_folder
from train.ood_corpus import chessboard, png, synthetic_images, text_page, tiny_slices
from train.ood_fit import canonical_variants, evaluate_check, fit_check, variant_features
from train.ood_fit import main as ood_fit_main


@pytest.fixture(scope="module")
def plain_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("plain") / "model", seed=3)


@pytest.fixture(scope="module")
def checked_folder(plain_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model with a real check, fitted on a tiny set of example-based slices."""
    folder = tmp_path_factory.mktemp("checked") / "model"
    shutil.copytree(plain_folder, folder)
    cfg = load_model(folder).model.preprocess_config
    features = Features(BackboneSpec(), build_backbone(BackboneSpec()))
    train = variant_features(features, canonical_variants(tiny_slices(20, seed=0), cfg))
    valid = variant_features(features, canonical_variants(tiny_slices(10, seed=1), cfg))
    fit_check(train, valid, features=features, preprocessing=cfg, k=3, false_alarm_rate=0.1).save(folder)
    return folder


@pytest.fixture(scope="module")
def checked(checked_folder: Path) -> Predictor:
    return Predictor.from_ref(checked_folder)


@pytest.fixture(scope="module")
def plain(plain_folder: Path) -> Predictor:
    return Predictor.from_ref(plain_folder)


def colour_photo() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), "RGB").save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("make", [text_page, chessboard], ids=["text-page", "chessboard"])
def test_non_ct_image_gets_the_warning_first(checked: Predictor, make) -> None:
    prediction = checked.predict(png(make()))
    assert prediction.ood is not None and prediction.ood.flagged and prediction.ood.reason == "far"
    assert prediction.warnings[0] == prediction.notes[0] == prediction.ood.message
    assert prediction.warnings[0].startswith(f"{WARNING_START}: it is far from every slice the model was trained on")
    assert sum(p for p in prediction.probabilities.values()) == pytest.approx(1.0)  # still answered


def test_slice_gets_no_warning(checked: Predictor) -> None:
    prediction = checked.predict(png(tiny_slices(1, seed=7)[0]))
    assert prediction.ood is not None and not prediction.ood.flagged
    assert prediction.warnings == [] and prediction.ood.message is None


def test_upside_down_slice_is_flagged_as_such(checked: Predictor) -> None:
    prediction = checked.predict(png(tiny_slices(1, seed=7)[0].rotate(180)))
    assert prediction.ood.reason == "upside_down"
    assert prediction.warnings == [prediction.ood.message]
    assert prediction.warnings[0].startswith(f"{WARNING_START}: it looks upside down")


def test_decode_warnings_stay_beside_the_check(checked: Predictor) -> None:
    prediction = checked.predict(colour_photo())
    assert prediction.warnings[0].startswith(WARNING_START)
    assert prediction.warnings[1].startswith(f"{WARNING_PREFIX}this does not look like a CT slice: it is strongly")
    assert all(is_warning(n) for n in prediction.notes[:2])


def test_batch_path_gives_the_same_verdict(checked: Predictor) -> None:
    data = png(text_page())
    canon = decode_canonical(data, checked.cfg)[0].unsqueeze(0)
    (batch,) = checked.check_canonical(canon)
    single = checked.predict(data).ood
    assert batch.score == pytest.approx(single.score, abs=1e-6) and batch.flagged == single.flagged


def test_the_check_runs_beside_the_classifier(checked_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In its own thread, with the verdict it gives alone; its error reaches the caller, who can go on."""
    predictor = Predictor.from_ref(checked_folder)
    assert predictor.ood is not None
    threads: list[str] = []
    alone = predictor.ood.check

    def spy(canon):
        threads.append(threading.current_thread().name)
        return alone(canon)

    monkeypatch.setattr(predictor.ood, "check", spy)
    data = png(text_page())
    prediction = predictor.predict(data)
    assert len(threads) == 1 and threads[0].startswith("lungdemo-check")
    canon = decode_canonical(data, predictor.cfg)[0].unsqueeze(0)
    (expected,) = alone(canon)
    assert prediction.ood is not None and prediction.ood.score == pytest.approx(expected.score, abs=1e-6)

    def broken(canon):
        raise RuntimeError("check failed")

    monkeypatch.setattr(predictor.ood, "check", broken)
    with pytest.raises(RuntimeError, match="check failed"):
        predictor.predict(data)
    monkeypatch.setattr(predictor.ood, "check", spy)
    assert predictor.predict(data).ood.flagged


def test_folder_without_the_check_loads_and_says_so(plain: Predictor, plain_folder: Path) -> None:
    assert not any((plain_folder / name).exists() for name in OOD_FILES)
    assert plain.ood is None and plain.ood_description == NO_CHECK_MESSAGE
    assert plain.check_canonical(decode_canonical(png(text_page()), plain.cfg)[0].unsqueeze(0)) is None
    prediction = plain.predict(png(text_page()))
    assert prediction.ood is None and prediction.warnings == []


def test_same_probabilities_with_and_without_the_check(checked: Predictor, plain: Predictor) -> None:
    data = png(tiny_slices(1, seed=9)[0])
    assert checked.predict(data).probabilities == plain.predict(data).probabilities
    assert checked.ood_description.startswith("out-of-distribution check: 3-nearest-neighbour cosine distance")


def test_check_can_be_left_out(checked_folder: Path) -> None:
    predictor = Predictor(load_model(checked_folder), ood=None)
    assert predictor.ood is None and predictor.predict(png(text_page())).ood is None


def test_evaluation_reports_auroc_and_shares_flagged(checked: Predictor) -> None:
    slices = [png(im) for im in tiny_slices(6, seed=11)]
    corpus = synthetic_images()
    result = evaluate_check(checked, slices, corpus)
    flagged = {item.name: bool(checked.predict(item.data).warnings) for item in corpus}
    assert result["n_in_distribution"] == 6 and result["n_corpus"] == len(corpus)
    assert result["corpus_flagged"] == pytest.approx(np.mean(list(flagged.values())), abs=1e-4)
    assert result["corpus_missed"] == [name for name, hit in flagged.items() if not hit]
    assert result["corpus_flagged"] >= 0.8 and result["in_distribution_flagged"] < 0.5
    n_flagged_slices = round(result["in_distribution_flagged"] * 6)
    assert len(result["in_distribution_flagged_reasons"]) == n_flagged_slices
    assert 0.9 <= result["auroc"] <= 1.0
    assert sum(int(v.split("/")[1]) for v in result["corpus_flagged_by_kind"].values()) == len(corpus)


def test_evaluation_needs_a_check(plain: Predictor) -> None:
    with pytest.raises(OODCheckError, match="has no out-of-distribution check"):
        evaluate_check(plain, [], [])


def test_fit_command_refuses_a_folder_that_is_no_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert ood_fit_main(["--model", str(tmp_path), "--data-dir", str(tmp_path), "--no-eval"]) == 2
    assert "is not a lungdemo model folder" in capsys.readouterr().err
