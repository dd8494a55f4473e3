"""Where the AlexNet starting weights come from: ImageNet via torchvision, a local file, a trained
model folder (a warm start: features and head), or none.

``--pretrained imagenet`` goes through torchvision's ``AlexNet_Weights.IMAGENET1K_V1`` and its
cache (``$TORCH_HOME/hub/checkpoints``). When the file is not cached, reachability of the
download host is checked first with a short timeout, so an offline machine fails in
seconds with a message that says how to supply the file instead of hanging.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from safetensors.torch import load_file

from lungdemo.errors import LungdemoError
from lungdemo.model import LungAlexNet, ModelFormatError, load_imagenet_features

logger = logging.getLogger(__name__)

IMAGENET = torchvision.models.AlexNet_Weights.IMAGENET1K_V1


class PretrainedError(LungdemoError, RuntimeError):
    """The requested starting weights cannot be had; the message names the fix."""


def imagenet_cache_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(IMAGENET.url).path)


def _check_reachable(url: str, timeout: float = 10.0) -> None:
    try:
        req = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(req, timeout=timeout):
            pass
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise PretrainedError(
            f"ImageNet AlexNet weights are not cached and {urlparse(url).netloc} cannot be reached "
            f"({getattr(exc, 'reason', exc)}). Supply them yourself: download {url} on a machine "
            f"with network access and either copy it to {imagenet_cache_path()} or pass "
            "--pretrained /path/to/alexnet-owt-7be5be79.pth (a .safetensors file works too); "
            "or train from scratch with --pretrained none"
        ) from exc


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A local ImageNet state dict: safetensors, or a torch file read with ``weights_only``."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedError(f"--pretrained file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        # weights_only restricts unpickling to tensors and containers: no code runs
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedError(f"cannot read {path} as an AlexNet state dict: {exc}") from exc
    if not isinstance(state, dict):
        raise PretrainedError(f"{path} does not hold a state dict")
    return state


def warm_start(model: LungAlexNet, folder: Path) -> dict[str, object]:
    """Every weight from a trained model folder (same classes and head); its temperature is not kept.

    The record carries the source's own training command, so a card can list the run it continues.
    """
    from lungdemo.folder import load_model_folder, read_json

    args_path = Path(folder) / "training_args.json"
    try:
        source, _ = load_model_folder(folder)
        source_args = read_json(args_path) if args_path.is_file() else {}
    except LungdemoError as exc:
        raise PretrainedError(f"--pretrained {folder}: {exc}") from exc
    if source.class_names != model.class_names or source.hidden != model.hidden:
        raise PretrainedError(
            f"--pretrained {folder}: it has classes {source.class_names} and hidden={source.hidden}; "
            f"this run has {model.class_names} and hidden={model.hidden}"
        )
    model.load_state_dict(source.state_dict(), strict=True)
    return {
        "pretrained": str(folder),
        "warm_start": True,
        "source_command": source_args.get("command"),
        "source_pretrained": source_args.get("pretrained"),
    }


def apply_pretrained(model: LungAlexNet, spec: str) -> dict[str, object]:
    """Initialise ``model`` from ``spec`` ("imagenet", "none", a file or a model folder); returns a record of it."""
    if spec == "none":
        return {"pretrained": "none"}
    if spec == "imagenet":
        cached = imagenet_cache_path()
        if not cached.is_file():
            _check_reachable(IMAGENET.url)
        state = IMAGENET.get_state_dict(progress=True)
        loaded = load_imagenet_features(model, state)
        return {"pretrained": "imagenet", "weights": "AlexNet_Weights.IMAGENET1K_V1", "tensors": len(loaded)}
    if Path(spec).is_dir():
        return warm_start(model, Path(spec))
    state = read_state_dict(Path(spec))
    try:
        loaded = load_imagenet_features(model, state)
    except ModelFormatError as exc:  # a one-line CLI error naming the file, not a traceback
        raise PretrainedError(f"--pretrained {spec}: {exc}") from exc
    return {"pretrained": str(spec), "tensors": len(loaded)}
