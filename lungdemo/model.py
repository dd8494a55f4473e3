"""The classifier: torchvision's AlexNet with a replaceable classifier head.

The convolutional ``features`` are torchvision's own, with the same parameter names, so an
ImageNet AlexNet state dict loads into them unchanged. The head keeps torchvision's layout
(dropout, linear, relu, dropout, linear, relu, linear) with a configurable width: the classic
4096-wide head is 54M parameters, which is too heavy for a demo folder; ``hidden=0`` gives a
single linear layer.

The class is a :class:`huggingface_hub.PyTorchModelHubMixin`: its ``__init__`` arguments are
what ``config.json`` holds (class names in logit order, head size, preprocessing), so
``LungAlexNet.from_pretrained(folder)`` rebuilds the exact model. Unlike the mixin's default,
loading reads safetensors only (never a pickle) and checks keys and shapes strictly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
import torchvision
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from lungdemo.preprocessing import PreprocessConfig

logger = logging.getLogger(__name__)

ARCHITECTURE = "alexnet"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
WEIGHTS_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ModelFormatError(ValueError):
    """A model folder or weights file that does not match what the config describes."""


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


class LungAlexNet(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="lungdemo",
    pipeline_tag="image-classification",
    tags=["alexnet", "chest-ct", "medical-imaging", "image-classification"],
    license="mit",
):
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
        if not isinstance(hidden, int) or hidden < 0:
            raise ModelFormatError(f"hidden must be a non-negative integer, got {hidden!r}")
        if weights_dtype not in WEIGHTS_DTYPES:
            raise ModelFormatError(f"weights_dtype must be one of {sorted(WEIGHTS_DTYPES)}, got {weights_dtype!r}")
        if not float(temperature) > 0:
            raise ModelFormatError(f"temperature must be positive, got {temperature!r}")
        try:
            self.preprocess_config = PreprocessConfig.from_dict(preprocessing or {})
        except (TypeError, ValueError) as exc:
            raise ModelFormatError(str(exc)) from exc
        self.class_names = list(class_names)
        self.hidden = hidden
        self.weights_dtype = weights_dtype
        self.temperature = float(temperature)
        base = torchvision.models.alexnet(weights=None)
        if self.preprocess_config.in_channels != 3:
            raise ModelFormatError("AlexNet takes 3 input channels; preprocessing.in_channels must be 3")
        self.features = base.features
        self.avgpool = base.avgpool
        self.classifier = build_head(256 * 6 * 6, hidden, len(self.class_names), dropout)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        return self.classifier(torch.flatten(x, 1))

    # --- weights I/O: safetensors only, strict -------------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        """Write ``model.safetensors`` in ``weights_dtype`` (float16 halves the folder)."""
        from safetensors.torch import save_file

        dtype = WEIGHTS_DTYPES[self.weights_dtype]
        state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(Path(save_directory) / WEIGHTS_NAME), metadata={"format": "pt"})

    def load_weights_file(self, path: str | os.PathLike[str]) -> None:
        """Load a safetensors file with strict key and shape checks and clear messages."""
        try:
            state = load_file(str(path))
        except FileNotFoundError as exc:
            raise ModelFormatError(f"weights file not found: {path}") from exc
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelFormatError(f"{path} is not a valid safetensors file ({exc})") from exc
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        shape_diff = [
            f"{k}: file {tuple(state[k].shape)} vs config {tuple(expected[k].shape)}"
            for k in expected
            if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
        ]
        if missing or unexpected or shape_diff:
            parts = []
            if shape_diff:
                parts.append("shape mismatch: " + "; ".join(shape_diff[:4]))
            if missing:
                parts.append(f"missing keys: {missing[:6]}")
            if unexpected:
                parts.append(f"unexpected keys: {unexpected[:6]}")
            raise ModelFormatError(
                f"{path} does not fit the config (classes={self.class_names}, hidden={self.hidden}): "
                + "; ".join(parts)
            )
        not_float = [f"{k} ({v.dtype})" for k, v in state.items() if not v.is_floating_point()]
        if not_float:  # load_state_dict would cast integers to float silently: garbage weights
            raise ModelFormatError(f"{path} holds non-float weights: {not_float[:4]}")
        bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
        if bad:
            raise ModelFormatError(f"{path} holds non-finite values in {bad[:4]}")
        self.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        strict: bool = True,
        **model_kwargs: Any,
    ) -> LungAlexNet:
        """Mixin hook: safetensors only, strict, eval mode (the mixin's default would unpickle)."""
        if not strict:
            raise ValueError("LungAlexNet loads weights strictly; strict=False is not supported")
        model = cls(**model_kwargs)
        if os.path.isdir(model_id):
            weights = os.path.join(model_id, WEIGHTS_NAME)
        else:
            weights = hf_hub_download(
                repo_id=model_id,
                filename=WEIGHTS_NAME,
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
                token=token,
                local_files_only=local_files_only,
            )
        model.load_weights_file(weights)
        model.to(map_location)
        model.eval()
        return model

    def set_temperature(self, temperature: float) -> None:
        """Store a fitted softmax temperature; it goes into config.json with the weights."""
        if not float(temperature) > 0:
            raise ModelFormatError(f"temperature must be positive, got {temperature!r}")
        self.temperature = float(temperature)
        if self._hub_mixin_config is not None:
            self._hub_mixin_config["temperature"] = self.temperature

    def config_dict(self) -> dict[str, Any]:
        """The ``config.json`` content: the ``__init__`` arguments the mixin records."""
        return dict(self._hub_mixin_config or {})


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
