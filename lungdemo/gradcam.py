"""Grad-CAM: where in the slice the evidence for one class came from.

Grad-CAM (Selvaraju et al., 2017) weights each channel of a convolutional activation by the
mean gradient of a class score with respect to it, sums the channels and keeps the positive
part. The result says which regions *raised* that class's score; it is a coarse picture of
what the model used, not a segmentation and not proof of disease.

Layer: the activation of AlexNet's last convolutional block, i.e. the output of
``features[11]`` (the ReLU after the last convolution ``features[10]``), before the final
max-pool. It is the last layer that still has a spatial map (13x13 for a 224 input) and the
usual choice for AlexNet: the pooled 6x6 map is coarser, and earlier blocks see edges rather
than class evidence. Hooking the ReLU rather than the convolution also avoids the in-place
ReLU rewriting a hooked convolution output after the hook has stored it.

Map size: the map is upsampled to the model input size (``image_size`` x ``image_size``),
which is the size of the *canonical* slice (cropped to the body, padded to a square and
resized by :mod:`lungdemo.preprocessing`), not the uploaded file's size. The overlay is drawn
on that canonical slice, because it is the picture the model actually saw.

Why not a library: ``torchcam`` 0.5.0 installs against the pinned torch 2.14.1 and fits, and
``grad-cam`` 1.5.7 pulls in OpenCV, ttach and SciPy. But both keep the hooked tensors on an
extractor whose hooks fire for *every* forward pass through the module while it exists, so a
concurrent request on the app's one shared model can overwrite the activations of another.
The few lines below keep all state local to the call, register the hook only for the call
(removed in ``finally``), and store activations only from the calling thread. Before scaling,
the maps are identical to torchcam's ``GradCAM(model, target_layer=model.features[11])``
(checked with ``normalized=False``); they are scaled by their maximum, not min-max as
torchcam does, so that 0 keeps meaning "no evidence" when the whole map is positive.

A model with ``test_time_flip`` scores the slice and its mirror in one pass and averages the
logits; the map is then the sum of the two views' maps for that averaged score, the mirror's
flipped back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lungdemo.preprocessing import decode_canonical, normalize

if TYPE_CHECKING:
    from lungdemo.predictor import Predictor

logger = logging.getLogger(__name__)

CAM_LAYER = 11
"""Index in ``model.features`` of the hooked module: the ReLU after the last convolution."""

HEATMAP_NOTE = "A heat map shows where the model looked, not proof of disease."
"""Shown next to every overlay (app, report): users read heat maps as findings otherwise."""

DEFAULT_CMAP = "jet"
DEFAULT_ALPHA = 0.5


def cam_layer(model: nn.Module) -> nn.Module:
    """The module whose output Grad-CAM uses (see the module docstring for the choice)."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential) or len(features) <= CAM_LAYER:
        raise TypeError("gradcam expects a LungAlexNet (torchvision AlexNet features)")
    layer = features[CAM_LAYER]
    if not isinstance(layer, nn.ReLU) or not isinstance(features[CAM_LAYER - 1], nn.Conv2d):
        raise TypeError(f"features[{CAM_LAYER}] is not the ReLU after AlexNet's last convolution")
    return layer


def gradcam(model: nn.Module, x: torch.Tensor, target: int | None = None) -> tuple[np.ndarray, int]:
    """Grad-CAM of one normalised input ``x`` ``(1, 3, H, W)`` for class index ``target``.

    ``target=None`` explains the top class. Returns ``(cam, target_index)`` where ``cam`` is
    ``float32`` ``(H, W)`` in [0, 1]: the positive evidence scaled by its maximum, upsampled
    bilinearly to the input size. A map of zeros means no region raised that class's score.
    The model is used as it is (callers keep it in eval mode: dropout would make the map
    random); nothing in it is changed, and no gradient is left on its parameters.
    """
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"gradcam expects one input of shape (1, C, H, W), got {tuple(x.shape)}")
    if model.training:
        logger.warning("gradcam on a model in training mode: dropout makes the map random")
    layer = cam_layer(model)
    caller = threading.get_ident()
    captured: list[torch.Tensor] = []

    def keep_activation(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        # Other threads may run the same (shared) model meanwhile; their activations are not ours.
        if threading.get_ident() == caller:
            captured.append(output)

    # The app's request threads run in inference mode; a graph is needed here.
    with torch.inference_mode(False), torch.enable_grad():
        handle = layer.register_forward_hook(keep_activation)
        try:
            # A fresh leaf that requires grad: the graph exists even if the weights are frozen.
            logits = model(x.detach().clone().requires_grad_(True))
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(f"expected one activation from features[{CAM_LAYER}], got {len(captured)}")
        activation = captured[0]
        num_classes = logits.shape[1]
        index = int(logits[0].argmax()) if target is None else int(target)
        if not 0 <= index < num_classes:
            raise ValueError(f"target class index {index} is out of range for {num_classes} classes")
        (grads,) = torch.autograd.grad(logits[0, index], activation)
    with torch.no_grad():
        weights = grads.mean(dim=(2, 3), keepdim=True)  # (V, K, 1, 1): one weight per channel and view
        views = F.relu((weights * activation).sum(dim=1, keepdim=True))
        if len(views) == 2:  # test-time flip: the slice, then its mirror image
            views = views[:1] + views[1:].flip(-1)
        elif len(views) != 1:
            raise RuntimeError(f"expected one or two views of the slice, got {len(views)}")
        cam = F.interpolate(views, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
        peak = float(cam.max())
        out = (cam / peak).clamp_(0.0, 1.0) if peak > 0 and np.isfinite(peak) else torch.zeros_like(cam)
    if peak <= 0:
        logger.info("Grad-CAM for class %d is empty: no region raised its score", index)
    return out.detach().cpu().numpy().astype(np.float32), index


def overlay(
    canonical_gray: Image.Image | np.ndarray,
    cam: np.ndarray,
    alpha: float = DEFAULT_ALPHA,
    cmap: str = DEFAULT_CMAP,
) -> Image.Image:
    """Draw ``cam`` over a grayscale slice; returns an RGB image of the slice's size.

    The colour is blended in proportion to the map (``alpha * cam``), so regions with no
    evidence keep the plain slice instead of a uniform blue tint: the anatomy stays readable
    and only the evidence is coloured. A map of another size is resized to the slice.
    """
    if isinstance(canonical_gray, Image.Image):
        gray = np.asarray(canonical_gray.convert("L"), dtype=np.float32) / 255.0
    else:
        arr = np.asarray(canonical_gray)
        if arr.ndim != 2:
            raise ValueError(f"overlay expects a 2-D grayscale image, got shape {arr.shape}")
        gray = arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0)
    heat = np.asarray(cam, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"cam must be 2-D, got shape {heat.shape}")
    if heat.shape != gray.shape:
        resized = Image.fromarray(heat, mode="F").resize((gray.shape[1], gray.shape[0]), Image.Resampling.BILINEAR)
        heat = np.asarray(resized, dtype=np.float32)
    heat = np.clip(np.nan_to_num(heat, nan=0.0), 0.0, 1.0)
    colours = matplotlib.colormaps[cmap](heat)[..., :3].astype(np.float32)
    weight = (float(alpha) * heat)[..., None]
    blended = (1.0 - weight) * np.clip(gray, 0.0, 1.0)[..., None] + weight * colours
    return Image.fromarray(np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8), mode="RGB")


@dataclass
class Explanation:
    """A Grad-CAM result together with the canonical slice it belongs to."""

    canonical: Image.Image
    """The slice the model saw: 8-bit grayscale, ``image_size`` square."""
    cam: np.ndarray
    target_index: int
    target_class: str
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """No region raised the target class's score (the overlay is the plain slice)."""
        return not bool(self.cam.max() > 0)

    def overlay(self, alpha: float = DEFAULT_ALPHA, cmap: str = DEFAULT_CMAP) -> Image.Image:
        return overlay(self.canonical, self.cam, alpha=alpha, cmap=cmap)


def explain_source(predictor: Predictor, source: bytes | str | Path, target_class: str | None = None) -> Explanation:
    """Decode ``source`` exactly as :meth:`Predictor.predict` does and compute its Grad-CAM.

    ``target_class=None`` explains the top class. Raises
    :class:`~lungdemo.preprocessing.ImageDecodeError` for unreadable files and ``ValueError``
    for a class name the model does not have.
    """
    _target_index(predictor, target_class)  # an unknown class is refused before the file is read
    canon, info = decode_canonical(source, predictor.cfg)
    return explain_canonical(predictor, canon, target_class, notes=info.notes)


def explain_canonical(
    predictor: Predictor, canon: torch.Tensor, target_class: str | None = None, notes: Sequence[str] = ()
) -> Explanation:
    """:func:`explain_source` for a slice already decoded by :func:`decode_canonical` (not decoded twice)."""
    classes = list(predictor.class_names)
    target = _target_index(predictor, target_class)
    x = normalize(canon.to(predictor.device), predictor.cfg).unsqueeze(0)
    with predictor.lock:
        cam, index = gradcam(predictor.model, x, target)
    canonical = Image.fromarray(canon[0].numpy(), mode="L")
    return Explanation(canonical=canonical, cam=cam, target_index=index, target_class=classes[index], notes=list(notes))


def _target_index(predictor: Predictor, target_class: str | None) -> int | None:
    classes = list(predictor.class_names)
    if target_class is None:
        return None
    if target_class not in classes:
        raise ValueError(f"unknown class {target_class!r}: the model's classes are {classes}")
    return classes.index(target_class)


def explain(
    predictor: Predictor, source: bytes | str | Path, target_class: str | None = None
) -> tuple[Image.Image, str]:
    """The overlay image for ``source`` and the class it explains (the top class by default).

    The overlay is drawn on the canonical slice (``image_size`` square), the picture the
    model saw; show :data:`HEATMAP_NOTE` next to it.
    """
    result = explain_source(predictor, source, target_class)
    return result.overlay(), result.target_class
