"""Where the model runs: one ``--device`` for every command line, and the CUDA extras.

``auto`` takes CUDA when torch sees a GPU, else the CPU. Asking for a device this machine lacks
fails at once with a :class:`DeviceError` that says what torch sees. On the CPU nothing here
changes a computation: no autocast, no memory-format change, so CPU results stay bit-identical.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from lungdemo.errors import LungdemoError

logger = logging.getLogger(__name__)

DEVICE_ENV = "LUNGDEMO_DEVICE"
"""Environment variable the app (and ``python -m lungdemo.predict``) read for their device."""
DEFAULT_DEVICE = "auto"
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
_SPEC = re.compile(r"auto|cpu|mps|cuda(?::(\d+))?")


class DeviceError(LungdemoError, ValueError):
    """A device that is not a device, or that this machine does not have."""


def check_device_spec(spec: str) -> str:
    """``spec`` normalised (stripped, lower case); :class:`DeviceError` when it is no device name."""
    text = str(spec).strip().lower()
    if not _SPEC.fullmatch(text):
        raise DeviceError(f"{spec!r} is not a device: use {DEVICE_CHOICES}")
    return text


def _device_arg(spec: str) -> str:
    try:
        return check_device_spec(spec)
    except DeviceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_device_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, env: bool = False) -> None:
    """The one ``--device`` option; with ``env`` its default comes from ``$LUNGDEMO_DEVICE``."""
    default = (os.environ.get(DEVICE_ENV, "").strip() or DEFAULT_DEVICE) if env else DEFAULT_DEVICE
    origin = f" (default: ${DEVICE_ENV}, else {DEFAULT_DEVICE})" if env else f" (default: {DEFAULT_DEVICE})"
    parser.add_argument(
        "--device",
        type=_device_arg,
        default=default,
        help=f"{DEVICE_CHOICES}; auto takes CUDA when present, else the CPU{origin}",
    )


def _no_cuda_message(spec: str) -> str:
    built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA (a CPU-only wheel)"
    return (
        f"--device {spec}: CUDA is not available here: torch {torch.__version__} is {built} and "
        f"torch.cuda.is_available() is False (no GPU, or no working NVIDIA driver, is visible). "
        f"Use --device cpu, or --device auto to take a GPU only when there is one"
    )


def resolve_device(spec: str | torch.device | None = None, *, local_rank: int | None = None) -> torch.device:
    """``auto|cpu|cuda|cuda:N|mps`` -> a device this machine has; :class:`DeviceError` otherwise.

    ``local_rank`` (one process of several, from torchrun) picks the GPU for ``auto`` and ``cuda``.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = check_device_spec(DEFAULT_DEVICE if spec is None else spec)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(
                "--device mps: Apple's Metal backend is not available here "
                "(torch.backends.mps.is_available() is False; it needs macOS on Apple silicon). Use --device cpu"
            )
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise DeviceError(_no_cuda_message(text))
    count = torch.cuda.device_count()
    index = int(text.split(":")[1]) if ":" in text else (local_rank or 0)
    if index >= count:
        raise DeviceError(
            f"--device {text}: there is no CUDA device {index}; this machine has {count} (0..{count - 1})"
        )
    return torch.device("cuda", index)


def describe_device(device: torch.device) -> str:
    """``cpu``, ``mps`` or ``cuda:0 (NVIDIA H200)``: for logs and ``training_args.json``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


@dataclass(frozen=True)
class Precision:
    """The arithmetic of a training step: float32 throughout (``dtype=None``) or an autocast dtype."""

    device_type: str
    dtype: torch.dtype | None = None

    @property
    def name(self) -> str:
        return {None: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[self.dtype]

    @property
    def needs_scaler(self) -> bool:
        """float16 gradients underflow without loss scaling; bfloat16 has float32's range."""
        return self.dtype == torch.float16

    def autocast(self) -> torch.autocast | nullcontext:
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype is not None else nullcontext()

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A scaler for float16; a pass-through (``enabled=False``) for every other precision."""
        return torch.amp.GradScaler(self.device_type, enabled=self.needs_scaler)


PRECISION_CHOICES: tuple[str, ...] = ("auto", "float32", "bfloat16")
"""What ``--precision`` takes: ``auto`` is the device's default (below)."""


def choose_precision(
    device: torch.device, *, mixed: bool = True, bf16_supported: bool | None = None, requested: str = "auto"
) -> Precision:
    """The training step's arithmetic for ``requested`` (``auto``, ``float32`` or ``bfloat16``).

    ``auto``: bfloat16 autocast on a CUDA GPU that has it, float16 (with a scaler) on one that
    does not, float32 everywhere else (CPU and MPS: the CPU path stays exactly today's).
    ``bfloat16`` asks for bfloat16 autocast on any device: on a CPU with AVX512-BF16 it makes
    a distillation step about three times faster (weights stay float32). ``bf16_supported``
    defaults to asking torch; passing it lets the choice be tested anywhere.
    """
    if requested not in PRECISION_CHOICES:
        raise DeviceError(f"{requested!r} is not a precision: use {', '.join(PRECISION_CHOICES)}")
    if requested == "float32" or (requested == "auto" and (not mixed or device.type != "cuda")):
        return Precision(device.type)
    if requested == "bfloat16":
        if device.type == "cuda" and not (torch.cuda.is_bf16_supported() if bf16_supported is None else bf16_supported):
            raise DeviceError("--precision bfloat16: this GPU has no bfloat16; use auto (float16) or float32")
        return Precision(device.type, torch.bfloat16)
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    return Precision("cuda", torch.bfloat16 if bf16_supported else torch.float16)


def uses_channels_last(device: torch.device) -> bool:
    """channels_last pays on CUDA convolutions (tensor cores); on the CPU it would change the sums."""
    return device.type == "cuda"


def model_to_device(model: nn.Module, device: torch.device, *, channels_last: bool | None = None) -> nn.Module:
    """Move ``model`` (in place) to ``device``, channels_last on CUDA; a no-op for a CPU model on the CPU."""
    model.to(device)
    if uses_channels_last(device) if channels_last is None else channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def model_to_host(model: nn.Module) -> nn.Module:
    """Back to the CPU in the standard memory format (for writing the weights)."""
    return model.to("cpu", memory_format=torch.contiguous_format)


def batch_to_device(x: torch.Tensor, device: torch.device, *, channels_last: bool | None = None) -> torch.Tensor:
    """A batch on ``device`` (without blocking the host when it is pinned), channels_last when the model is."""
    x = x.to(device, non_blocking=True)
    if x.ndim == 4 and (uses_channels_last(device) if channels_last is None else channels_last):
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def host_to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a host tensor to ``device`` through pinned memory (the fast, asynchronous path to a GPU)."""
    if device.type != "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


@contextmanager
def float32_matmul() -> Iterator[None]:
    """Evaluation and calibration in true float32: no TF32 shortcut on Ampere+ GPUs meanwhile."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
