"""train.ood_fit: the check is fitted on training slices, its thresholds on validation only."""

from __future__ import annotations

import numpy as np

from lungdemo.ood import UPRIGHT, OODCheck
from lungdemo.ood_backbone import pooled
from tests.ood_helpers import FALSE_ALARM_RATE


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
