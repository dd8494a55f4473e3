"""The out-of-distribution check fitted on a tiny set, shared by its tests (features, a fitted check, its folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lungdemo.ood import OODCheck
from lungdemo.ood_backbone import BackboneSpec, Features, build_backbone
from lungdemo.preprocessing import PreprocessConfig, decode_canonical
from train.ood_corpus import tiny_slices
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


# --- storage --------------------------------------------------------------------------------------


# --- the backbone's identity ---------------------------------------------------------------------
