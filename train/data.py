"""Reading the Chest CT-Scan images dataset into the four canonical classes.

The Kaggle layout names class folders differently per split (``adenocarcinoma_left.lower.
lobe_T2_N0_M0_Ib`` in train/valid, ``adenocarcinoma`` in test). :func:`canonical_class` maps
both explicitly; :data:`CLASS_NAMES` is the logit order written into every model folder,
after which everything reads it from there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from lungdemo.atomic import atomic_path
from lungdemo.decode import ImageDecodeError
from lungdemo.errors import LungdemoError
from lungdemo.framing import FRAMING_REVISION
from lungdemo.preprocessing import PreprocessConfig, canonical_tensor

logger = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = (
    "adenocarcinoma",
    "large_cell_carcinoma",
    "normal",
    "squamous_cell_carcinoma",
)
SPLITS: tuple[str, ...] = ("train", "valid", "test")
DEFAULT_CACHE_DIR = Path(".cache/lungdemo")
"""Where every command keeps decoded slices between runs (``--cache-dir``)."""


class DatasetError(LungdemoError, ValueError):
    """A problem with the dataset on disk; the message names the path."""


@dataclass(frozen=True)
class Sample:
    """One image file with its canonical label."""

    path: Path
    label: int
    split: str

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.label]


def canonical_class(folder_name: str) -> str:
    """Map a class folder name of any split to its canonical class name.

    ``large.cell.carcinoma_left.hilum_T2_N2_M0_IIIa`` -> ``large_cell_carcinoma``. The TNM
    suffix is one fixed string per class in this dataset, not a per-image label, so it is
    dropped.
    """
    norm = re.sub(r"[.\s-]+", "_", folder_name.strip().lower())
    for name in CLASS_NAMES:
        if norm == name or norm.startswith(name + "_"):
            return name
    raise DatasetError(
        f"unknown class folder {folder_name!r}: expected a name starting with one of "
        f"{', '.join(CLASS_NAMES)} (dots or underscores)"
    )


def _is_data_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.name != "Thumbs.db"


def scan_split(data_dir: Path, split: str) -> list[Sample]:
    """List the samples of one split, sorted by path, with clear errors for layout problems."""
    split_dir = Path(data_dir) / split
    if not split_dir.is_dir():
        raise DatasetError(f"split folder missing: {split_dir}")
    class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DatasetError(f"split folder has no class folders: {split_dir}")
    samples: list[Sample] = []
    seen: dict[str, Path] = {}
    for class_dir in class_dirs:
        name = canonical_class(class_dir.name)
        if name in seen:
            raise DatasetError(
                f"two folders map to class {name!r} in {split_dir}: {seen[name].name} and {class_dir.name}"
            )
        seen[name] = class_dir
        files = sorted(p for p in class_dir.rglob("*") if _is_data_file(p))
        if not files:
            raise DatasetError(f"class folder is empty: {class_dir}")
        label = CLASS_NAMES.index(name)
        samples.extend(Sample(path=f, label=label, split=split) for f in files)
    missing = [c for c in CLASS_NAMES if c not in seen]
    if missing:
        logger.warning("split %s has no folder for classes %s", split_dir, missing)
    return samples


def scan_dataset(data_dir: Path, splits: tuple[str, ...] = SPLITS) -> dict[str, list[Sample]]:
    """All requested splits of the dataset."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"data folder not found: {data_dir}")
    return {split: scan_split(data_dir, split) for split in splits}


def _cache_key(samples: list[Sample], cfg: PreprocessConfig) -> str:
    h = hashlib.sha256(json.dumps({**cfg.to_dict(), "framing": FRAMING_REVISION}, sort_keys=True).encode())
    for s in samples:
        st = s.path.stat()
        h.update(f"{s.path.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def load_images(
    samples: list[Sample], cfg: PreprocessConfig, cache_dir: Path | None = None, desc: str = "decode"
) -> torch.Tensor:
    """Decode and frame every sample once: ``uint8`` tensor ``(N, 1, S, S)``.

    Decoding PNGs is the slow part on 2 cores, so epochs run from this tensor. With
    ``cache_dir`` the result is also kept on disk (safetensors, keyed by the files' paths,
    sizes and mtimes and the preprocessing config) for the next run.
    """
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"images-{_cache_key(samples, cfg)}.safetensors"
        if cache_file.is_file():
            try:
                images = load_file(str(cache_file))["images"]
                if images.shape[0] == len(samples):
                    logger.info("loaded %d decoded images from %s", len(samples), cache_file)
                    return images
            except Exception as exc:
                logger.warning("ignoring unreadable cache %s: %s", cache_file, exc)
    out = torch.empty((len(samples), 1, cfg.image_size, cfg.image_size), dtype=torch.uint8)
    for i, s in enumerate(tqdm(samples, desc=desc, unit="img", leave=False)):
        try:
            out[i] = canonical_tensor(s.path, cfg)
        except ImageDecodeError as exc:
            raise DatasetError(f"cannot decode {s.path}: {exc}") from exc
    if cache_file is not None:
        with atomic_path(cache_file) as tmp:
            save_file({"images": out}, str(tmp))
    return out


def labels_of(samples: list[Sample]) -> torch.Tensor:
    return torch.tensor([s.label for s in samples], dtype=torch.long)
