"""lungdemo.metrics against numbers worked out by hand, and balanced class weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from lungdemo.metrics import classification_metrics

CLASSES = ["adenocarcinoma", "large_cell_carcinoma", "normal", "squamous_cell_carcinoma"]

# 10 slices; classes 0=adeno, 1=large cell, 2=normal, 3=squamous
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
Y_PRED = [0, 0, 1, 1, 3, 2, 2, 0, 3, 1]
# confusion matrix (rows true, columns predicted):
#   adeno    [2, 1, 0, 0]
#   large    [0, 1, 0, 1]
#   normal   [1, 0, 2, 0]
#   squamous [0, 1, 0, 1]
# column sums (predicted counts): 3, 3, 2, 2; row sums (support): 3, 2, 3, 2
# precision = diag / column: 2/3, 1/3, 2/2, 1/2
# recall    = diag / row:    2/3, 1/2, 2/3, 1/2
# F1 = 2pr/(p+r):            2/3, 2/5, 4/5, 1/2
P = [2 / 3, 1 / 3, 1.0, 1 / 2]
R = [2 / 3, 1 / 2, 2 / 3, 1 / 2]
F = [2 / 3, 2 / 5, 4 / 5, 1 / 2]
SUPPORT = [3, 2, 3, 2]


@pytest.fixture
def metrics() -> dict:
    return classification_metrics(Y_TRUE, Y_PRED, CLASSES)


def test_accuracy_and_n(metrics: dict) -> None:
    assert metrics["n"] == 10
    assert metrics["accuracy"] == pytest.approx(6 / 10)  # diagonal 2 + 1 + 2 + 1


def test_per_class(metrics: dict) -> None:
    assert list(metrics["per_class"]) == CLASSES
    for i, name in enumerate(CLASSES):
        got = metrics["per_class"][name]
        assert got["precision"] == pytest.approx(P[i]), name
        assert got["recall"] == pytest.approx(R[i]), name
        assert got["f1"] == pytest.approx(F[i]), name
        assert got["support"] == SUPPORT[i]


def test_macro_average(metrics: dict) -> None:
    assert metrics["macro"]["precision"] == pytest.approx((2 / 3 + 1 / 3 + 1 + 1 / 2) / 4)  # 0.625
    assert metrics["macro"]["recall"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3 + 1 / 2) / 4)  # 7/12
    assert metrics["macro"]["f1"] == pytest.approx((2 / 3 + 2 / 5 + 4 / 5 + 1 / 2) / 4)  # 71/120
    assert metrics["macro"]["f1"] == pytest.approx(71 / 120)


def test_weighted_average(metrics: dict) -> None:
    # weights = support / 10 = 0.3, 0.2, 0.3, 0.2
    assert metrics["weighted"]["precision"] == pytest.approx((3 * 2 / 3 + 2 * 1 / 3 + 3 * 1 + 2 * 1 / 2) / 10)  # 2/3
    assert metrics["weighted"]["recall"] == pytest.approx(0.6)  # weighted recall is accuracy
    assert metrics["weighted"]["f1"] == pytest.approx((3 * 2 / 3 + 2 * 2 / 5 + 3 * 4 / 5 + 2 * 1 / 2) / 10)  # 0.62


def test_confusion_matrix(metrics: dict) -> None:
    assert metrics["confusion_matrix"] == [[2, 1, 0, 0], [0, 1, 0, 1], [1, 0, 2, 0], [0, 1, 0, 1]]
    assert metrics["class_names"] == CLASSES


def test_cancer_subtype_macro_f1_excludes_normal(metrics: dict) -> None:
    # mean F1 of adeno, large cell and squamous; adeno's precision still counts the normal
    # slice predicted as adeno (a false positive for adeno)
    assert metrics["cancer_subtype_macro_f1"] == pytest.approx((2 / 3 + 2 / 5 + 1 / 2) / 3)  # 47/90
    assert metrics["cancer_subtype_macro_f1"] != pytest.approx(metrics["macro"]["f1"])


def test_no_normal_class_no_subtype_score() -> None:
    m = classification_metrics([0, 1, 1], [0, 1, 0], ["a", "b"])
    assert "cancer_subtype_macro_f1" not in m
    assert m["per_class"]["a"]["precision"] == pytest.approx(1 / 2)
    assert m["per_class"]["b"]["recall"] == pytest.approx(1 / 2)


def test_class_never_predicted_and_absent_counts_as_zero() -> None:
    # class 3 has no support and is never predicted: its scores are 0, not NaN, and it
    # still counts in the macro mean (scikit-learn with zero_division=0)
    m = classification_metrics([0, 1, 2], [0, 1, 2], CLASSES)
    assert m["accuracy"] == 1.0
    assert m["per_class"]["squamous_cell_carcinoma"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["macro"]["f1"] == pytest.approx(3 / 4)
    assert m["weighted"]["f1"] == pytest.approx(1.0)
    assert m["confusion_matrix"][3] == [0, 0, 0, 0]


def test_empty_input_gives_zeros() -> None:
    # e.g. a leakage-free subset that ends up empty on a tiny smoke run
    m = classification_metrics([], [], CLASSES)
    assert m["n"] == 0 and m["accuracy"] == 0.0
    assert m["macro"]["f1"] == 0.0
    assert m["confusion_matrix"] == [[0] * 4 for _ in range(4)]
    assert m["cancer_subtype_macro_f1"] == 0.0
    assert m.keys() == classification_metrics([0], [0], CLASSES).keys()  # same shape as usual


def test_metrics_are_plain_json(metrics: dict) -> None:
    assert json.loads(json.dumps(metrics)) == metrics
    assert type(metrics["per_class"]["normal"]["support"]) is int
    assert type(metrics["accuracy"]) is float


def test_numpy_inputs_give_the_same_result(metrics: dict) -> None:
    assert classification_metrics(np.array(Y_TRUE), np.array(Y_PRED, dtype=np.int64), CLASSES) == metrics


def test_balanced_class_weights_by_hand() -> None:
    # scikit-learn "balanced": n_samples / (n_classes * count); what training uses
    y = np.array([0] * 6 + [1] * 3 + [2] * 2 + [3] * 1)  # n = 12, k = 4
    weights = compute_class_weight("balanced", classes=np.arange(4), y=y)
    np.testing.assert_allclose(weights, [12 / (4 * 6), 12 / (4 * 3), 12 / (4 * 2), 12 / (4 * 1)])
    np.testing.assert_allclose(weights, [0.5, 1.0, 1.5, 3.0])


def test_balanced_class_weights_real_training_counts() -> None:
    # the training split of the real dataset: 195, 115, 148, 155 (613 slices)
    counts = [195, 115, 148, 155]
    y = np.repeat(np.arange(4), counts)
    weights = compute_class_weight("balanced", classes=np.arange(4), y=y)
    np.testing.assert_allclose(weights, [613 / 780, 613 / 460, 613 / 592, 613 / 620])
    assert weights[1] == max(weights)  # the rarest class (large cell) weighs most
