"""LungAlexNet: torchvision's AlexNet with a configurable classifier head.

The convolutional features are torchvision's own, with the same parameter names, so an
ImageNet AlexNet state dict loads into them unchanged. The head keeps torchvision's layout
(dropout, linear, relu, dropout, linear, relu, linear) with a configurable width: the classic
4096-wide head is 54M parameters, which is too heavy for a demo folder; ``hidden=0`` gives a
single linear layer.

``test_time_flip`` averages, in eval mode, the logits of each slice and its mirror image (the
training augmentation flips slices, so both are views the model knows); training is unchanged,
and :meth:`LungAlexNet.logits` is always the single view.

The ``__init__`` arguments are the model's config (:meth:`LungAlexNet.config_dict`, stored as
``config.json``); :meth:`LungAlexNet.from_config` rebuilds the exact model from it. Weights are
read from safetensors only (never a pickle) with strict key and shape checks; reading and
writing whole folders is :mod:`lungdemo.folder`'s job.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
from typing import Any

import torch
import torchvision
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lungdemo.errors import LungdemoError
from lungdemo.preprocessing import PreprocessConfig

logger = logging.getLogger(__name__)

ARCHITECTURE = "alexnet"
WEIGHTS_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# Hub metadata of a lungdemo model, for the model card's front matter.
LIBRARY_NAME = "lungdemo"
PIPELINE_TAG = "image-classification"
LICENSE = "mit"
TAGS = ["lungdemo", "alexnet", "chest-ct", "medical-imaging", "image-classification", "pytorch", "safetensors"]


class ModelFormatError(LungdemoError, ValueError):
    """A config or weights file that does not describe a LungAlexNet, or not the same one."""


class WeightsMismatchError(ModelFormatError):
    """Weights whose tensors do not fit the model the config built; ``problems`` says how."""

    def __init__(self, path: str | os.PathLike[str], problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{path} does not fit the config: " + "; ".join(problems))


def build_head(in_features: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    """torchvision's AlexNet classifier layout with a chosen hidden width (0 = linear only)."""
    if hidden == 0:
        return nn.Sequential(nn.Dropout(p=dropout), nn.Linear(in_features, num_classes))
    return nn.Sequential(
        nn.Dropout(p=dropout),
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(p=dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


class LungAlexNet(nn.Module):
    """AlexNet for chest CT slices. Build it from a config, never from a download."""

    def __init__(
        self,
        class_names: list[str],
        hidden: int = 4096,
        dropout: float = 0.5,
        preprocessing: dict[str, Any] | None = None,
        architecture: str = ARCHITECTURE,
        weights_dtype: str = "float32",
        temperature: float = 1.0,
        test_time_flip: bool = False,
    ) -> None:
        super().__init__()
        if architecture != ARCHITECTURE:
            raise ModelFormatError(f"unknown architecture {architecture!r}: this project builds only {ARCHITECTURE!r}")
        if (
            not isinstance(class_names, (list, tuple))
            or len(class_names) < 2
            or not all(isinstance(c, str) and c for c in class_names)
            or len(set(class_names)) != len(class_names)
        ):
            raise ModelFormatError(f"class_names must be a list of at least 2 distinct names, got {class_names!r}")
        if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 0:
            raise ModelFormatError(f"hidden must be a non-negative integer, got {hidden!r}")
        if weights_dtype not in WEIGHTS_DTYPES:
            raise ModelFormatError(f"weights_dtype must be one of {sorted(WEIGHTS_DTYPES)}, got {weights_dtype!r}")
        if not isinstance(test_time_flip, bool):
            raise ModelFormatError(f"test_time_flip must be true or false, got {test_time_flip!r}")
        try:
            self.preprocess_config = PreprocessConfig.from_dict(preprocessing or {})
        except (TypeError, ValueError) as exc:
            raise ModelFormatError(str(exc)) from exc
        if self.preprocess_config.in_channels != 3:
            raise ModelFormatError("AlexNet takes 3 input channels; preprocessing.in_channels must be 3")
        self.class_names = list(class_names)
        self.hidden = hidden
        self.dropout = dropout
        self.weights_dtype = weights_dtype
        self.test_time_flip = test_time_flip
        self.temperature = 1.0
        self.set_temperature(temperature)
        base = torchvision.models.alexnet(weights=None)
        self.features = base.features
        self.avgpool = base.avgpool
        self.classifier = build_head(256 * 6 * 6, hidden, len(self.class_names), dropout)

    @classmethod
    def config_keys(cls) -> list[str]:
        """The keys a ``config.json`` may hold: the ``__init__`` arguments."""
        return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LungAlexNet:
        """Build the model ``config`` describes; unknown or missing keys are an error, not ignored."""
        if not isinstance(config, dict):
            raise ModelFormatError(f"a model config must be a JSON object, got {type(config).__name__}")
        if "class_names" not in config:
            raise ModelFormatError("no 'class_names': not a lungdemo config")
        unknown = sorted(set(config) - set(cls.config_keys()))
        if unknown:
            raise ModelFormatError(f"unknown keys {unknown}")
        return cls(**config)

    def config_dict(self) -> dict[str, Any]:
        """The config that rebuilds this model (``config.json``); the fitted temperature included."""
        return {
            "architecture": ARCHITECTURE,
            "class_names": list(self.class_names),
            "dropout": self.dropout,
            "hidden": self.hidden,
            "preprocessing": self.preprocess_config.to_dict(),
            "temperature": self.temperature,
            "test_time_flip": self.test_time_flip,
            "weights_dtype": self.weights_dtype,
        }

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits; in eval mode with ``test_time_flip``, those of ``x`` and its mirror averaged (one pass)."""
        if self.test_time_flip and not self.training:
            both = self.logits(torch.cat([x, x.flip(-1)]))
            return (both[: len(x)] + both[len(x) :]) / 2
        return self.logits(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of exactly the view ``x``, whatever ``test_time_flip`` says."""
        x = self.features(x)
        x = self.avgpool(x)
        return self.classifier(torch.flatten(x, 1))

    def set_temperature(self, temperature: float) -> None:
        """Store a fitted softmax temperature; it goes into config.json with the weights."""
        if not float(temperature) > 0:
            raise ModelFormatError(f"temperature must be positive, got {temperature!r}")
        self.temperature = float(temperature)

    # --- weights I/O: safetensors only, strict -------------------------------------------
    def save_weights(self, path: str | os.PathLike[str]) -> None:
        """Write the weights as safetensors in ``weights_dtype`` (float16 halves the file)."""
        dtype = WEIGHTS_DTYPES[self.weights_dtype]
        state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path), metadata={"format": "pt"})

    def load_weights_file(self, path: str | os.PathLike[str]) -> None:
        """Load a safetensors file with strict key and shape checks; the error says what does not fit."""
        try:
            state = load_file(str(path))
        except FileNotFoundError as exc:
            raise ModelFormatError(f"weights file not found: {path}") from exc
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelFormatError(f"{path} is not a valid safetensors file ({exc})") from exc
        problems = mismatch(self, {k: tuple(v.shape) for k, v in state.items()})
        if problems:
            raise WeightsMismatchError(path, problems)
        not_float = [f"{k} ({v.dtype})" for k, v in state.items() if not v.is_floating_point()]
        if not_float:  # load_state_dict would cast integers to float silently: garbage weights
            raise ModelFormatError(f"{path} holds non-float weights: {not_float[:4]}")
        bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
        if bad:
            raise ModelFormatError(f"{path} holds non-finite values in {bad[:4]}")
        expected = self.state_dict()
        self.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def mismatch(model: LungAlexNet, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """What keeps weights of these tensor ``shapes`` from loading into ``model``; empty when they fit.

    Plain words first (class count, head width, architecture) so the user knows which file is
    wrong, then the raw keys and shapes.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found: list[str] = []
    feature_keys = [k for k in expected if k.startswith("features.")]
    bad_features = [k for k in feature_keys if shapes.get(k) != expected[k]]
    if bad_features:
        found.append(
            f"the weights are not a torchvision AlexNet as the config says: {len(bad_features)} of "
            f"{len(feature_keys)} AlexNet feature tensors are missing or misshapen; the file's tensors "
            f"start with {sorted(shapes)[:3]}"
        )
    head = sorted((int(m.group(1)), k) for k in shapes if (m := re.fullmatch(r"classifier\.(\d+)\.weight", k)))
    if head and all(len(shapes[k]) == 2 for _, k in head):
        last_key = head[-1][1]
        outputs = shapes[last_key][0]
        if outputs != model.num_classes:
            found.append(
                f"the config lists {model.num_classes} classes {model.class_names} but the weights' output "
                f"layer ({last_key}) has {outputs} outputs"
            )
        file_hidden = shapes[head[0][1]][0] if len(head) > 1 else 0
        if file_hidden != model.hidden:
            found.append(f"the config says hidden={model.hidden} but the weights have a head of width {file_hidden}")
    shape_diff = [f"{k}: file {shapes[k]} vs config {v}" for k, v in expected.items() if k in shapes and shapes[k] != v]
    if shape_diff:
        found.append("shape mismatch: " + "; ".join(shape_diff[:4]))
    missing = sorted(set(expected) - set(shapes))
    if missing:
        found.append(f"missing keys: {missing[:6]}")
    unexpected = sorted(set(shapes) - set(expected))
    if unexpected:
        found.append(f"unexpected keys: {unexpected[:6]}")
    return found


def load_imagenet_features(model: LungAlexNet, state: dict[str, torch.Tensor]) -> list[str]:
    """Copy ImageNet AlexNet weights into ``model`` where names and shapes match.

    Returns the keys that were loaded. The convolutional features always match; the two
    hidden classifier layers match only for the classic 4096-wide head; the last layer
    (1000 ImageNet classes) never does.
    """
    own = model.state_dict()
    feature_keys = [k for k in own if k.startswith("features.")]
    missing = [k for k in feature_keys if k not in state or state[k].shape != own[k].shape]
    if missing:
        raise ModelFormatError(f"not an AlexNet ImageNet state dict: missing or misshapen {missing[:4]}")
    loadable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    own.update(loadable)
    model.load_state_dict(own, strict=True)
    logger.info("loaded %d ImageNet tensors (%s...)", len(loadable), sorted(loadable)[:2])
    return sorted(loadable)
