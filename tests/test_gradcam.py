"""Grad-CAM: map size and range, class dependence, agreement with a hook-free reference,
no state left on the model, and the overlay image."""

from __future__ import annotations

import threading
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lungdemo.decode import ImageDecodeError
from lungdemo.gradcam import CAM_LAYER, explain, explain_source, gradcam, overlay
from lungdemo.predictor import Predictor
from lungdemo.preprocessing import decode_canonical, normalize
from tests.conftest import TEST_CLASSES, make_model, make_model_folder

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.png"))
SIZE = 96  # conftest models


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    # hidden=0 (a linear head): with seed 0 every class has a non-empty map on the examples
    return Predictor.from_ref(make_model_folder(tmp_path_factory.mktemp("m") / "model", hidden=0))


def model_input(predictor: Predictor, path: Path) -> torch.Tensor:
    canon, _ = decode_canonical(path, predictor.cfg)
    return normalize(canon, predictor.cfg).unsqueeze(0)


def reference_gradcam(model: torch.nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """Grad-CAM written out without hooks: split the forward pass at the hooked layer."""
    x = x.clone()
    with torch.enable_grad():
        act = model.features[: CAM_LAYER + 1](x)
        act.retain_grad()
        rest = model.features[CAM_LAYER + 1 :](act)
        logits = model.classifier(torch.flatten(model.avgpool(rest), 1))
        logits[0, target].backward()
    weights = act.grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    model.zero_grad(set_to_none=True)
    return (cam / cam.max()).numpy() if cam.max() > 0 else cam.numpy()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_map_has_the_model_input_size_and_is_finite_in_unit_range(predictor: Predictor, path: Path) -> None:
    for target in (None, *TEST_CLASSES):
        result = explain_source(predictor, path, target)
        assert result.cam.shape == (SIZE, SIZE)
        assert result.cam.dtype == np.float32
        assert np.isfinite(result.cam).all()
        assert result.cam.min() >= 0.0 and result.cam.max() <= 1.0
        assert result.canonical.size == (SIZE, SIZE) and result.canonical.mode == "L"


def test_default_target_is_the_predicted_class(predictor: Predictor) -> None:
    for path in EXAMPLES:
        assert explain_source(predictor, path).target_class == predictor.predict(path).top_class


def test_map_moves_when_the_target_class_changes(predictor: Predictor) -> None:
    x = model_input(predictor, EXAMPLES[0])
    maps = {t: gradcam(predictor.model, x, t)[0] for t in range(len(TEST_CLASSES))}
    for t, cam in maps.items():
        assert cam.max() == pytest.approx(1.0), f"class {t} has an empty map; the comparison would be vacuous"
    # every pair of classes gives a clearly different map (mean difference over 5% of the range)
    for a in maps:
        for b in maps:
            if a < b:
                assert np.abs(maps[a] - maps[b]).mean() > 0.05, (a, b)


def test_matches_a_hook_free_reference(predictor: Predictor) -> None:
    for path in EXAMPLES[:2]:
        x = model_input(predictor, path)
        for target in range(len(TEST_CLASSES)):
            cam, index = gradcam(predictor.model, x, target)
            assert index == target
            np.testing.assert_allclose(cam, reference_gradcam(predictor.model, x, target), atol=1e-5)


def test_a_test_time_flip_model_maps_the_sum_of_both_views_and_a_mirror_to_the_mirrored_map() -> None:
    model = make_model(seed=0, hidden=0, test_time_flip=True)
    canon, _ = decode_canonical(EXAMPLES[0], model.preprocess_config)
    x = normalize(canon, model.preprocess_config).unsqueeze(0)
    for target in range(len(TEST_CLASSES)):
        cam, index = gradcam(model, x, target)
        assert index == target
        # the averaged score's map: each view's Grad-CAM (half the gradient each), the mirror's turned back
        expected = _unscaled(model, x, target)
        expected += _unscaled(model, x.flip(-1), target)[:, ::-1]
        assert expected.max() > 0, "seed 0 gives every class some evidence on this slice"
        np.testing.assert_allclose(cam, expected / expected.max(), atol=1e-5)
        mirrored, _ = gradcam(model, x.flip(-1), target)
        np.testing.assert_allclose(mirrored, cam[:, ::-1], atol=1e-5)


def _unscaled(model: torch.nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """One view's Grad-CAM before scaling, written out without hooks."""
    with torch.enable_grad():
        act = model.features[: CAM_LAYER + 1](x.clone())
        act.retain_grad()
        logits = model.classifier(torch.flatten(model.avgpool(model.features[CAM_LAYER + 1 :](act)), 1))
        logits[0, target].backward()
    cam = F.relu((act.grad.mean(dim=(2, 3), keepdim=True) * act).sum(1, keepdim=True)).detach()
    model.zero_grad(set_to_none=True)
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0].numpy()


def test_leaves_no_hooks_gradients_or_changes_on_the_model() -> None:
    model = make_model(hidden=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.inference_mode():  # the app's request threads run in inference mode
        cam, _ = gradcam(model, x)
    assert cam.shape == (SIZE, SIZE)
    with pytest.raises(RuntimeError):  # fails inside forward: wrong channel count
        gradcam(model, torch.randn(1, 1, SIZE, SIZE))
    with pytest.raises(ValueError, match="out of range"):
        gradcam(model, x, target=len(TEST_CLASSES))
    with pytest.raises(ValueError, match=r"\(1, C, H, W\)"):
        gradcam(model, torch.randn(2, 3, SIZE, SIZE))
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training


def test_concurrent_forward_passes_do_not_leak_into_the_map() -> None:
    """Another thread runs the same model meanwhile; its activations must not be used."""
    model = make_model(hidden=0)
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    expected, _ = gradcam(model, x, 0)
    other = torch.randn(1, 3, SIZE, SIZE)
    stop = threading.Event()
    failures: list[BaseException] = []

    def busy() -> None:
        try:
            with torch.inference_mode():
                while not stop.is_set():
                    model(other)
        except BaseException as exc:
            failures.append(exc)

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        results = [gradcam(model, x, 0)[0] for _ in range(8)]
    finally:
        stop.set()
        worker.join()
    assert not failures
    for cam in results:
        np.testing.assert_array_equal(cam, expected)


def test_unknown_class_name(predictor: Predictor) -> None:
    with pytest.raises(ValueError, match="unknown class 'cat'"):
        explain(predictor, EXAMPLES[0], "cat")


def test_unreadable_file(predictor: Predictor) -> None:
    with pytest.raises(ImageDecodeError):
        explain(predictor, b"not an image")


def test_explain_overlay_is_the_canonical_view(predictor: Predictor) -> None:
    image, cls = explain(predictor, EXAMPLES[1].read_bytes(), "normal")
    assert cls == "normal"
    assert image.mode == "RGB" and image.size == (SIZE, SIZE)


def test_overlay_size_mode_and_blending() -> None:
    gray = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))  # 48 rows x 64 columns
    cam = np.zeros((12, 16), dtype=np.float32)
    cam[:, 8:] = 1.0  # evidence on the right half, given at a lower resolution
    for slice_image in (gray, Image.fromarray(gray, mode="L")):
        out = overlay(slice_image, cam)
        assert out.mode == "RGB" and out.size == (64, 48)
    plain = np.asarray(overlay(gray, np.zeros((48, 64), np.float32)))
    np.testing.assert_array_equal(plain, np.repeat(gray[..., None], 3, axis=2))  # no evidence: the slice
    full = np.asarray(overlay(gray, np.ones((48, 64), np.float32), alpha=1.0, cmap="jet"))
    top = np.rint(np.asarray(matplotlib.colormaps["jet"](1.0)[:3]) * 255)
    assert np.abs(full.astype(int) - top).max() <= 1  # alpha 1 on full evidence: the colour map
    coloured = np.asarray(overlay(gray, cam)).astype(int)
    assert np.abs(coloured[:, :28] - plain[:, :28]).max() <= 1  # the left stays as it was
    assert np.abs(coloured[:, 40:] - plain[:, 40:]).max() > 50
    with pytest.raises(ValueError):
        overlay(gray, np.zeros(5, np.float32))
