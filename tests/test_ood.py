"""lungdemo.ood: the check's verdicts (distance, orientation) on made images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lungdemo.ood import WARNING_START, OODCheck
from lungdemo.preprocessing import canonical_image
from tests.ood_helpers import CFG, canon_of
from train.ood_corpus import chessboard, png, text_page, tiny_slices


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
