"""The model folder: its file names, and the one writer and one reader of it.

Layout (what training and export write, ``train.push`` uploads and the app loads)::

    model.safetensors      weights (float32 or float16, see config "weights_dtype")
    config.json            LungAlexNet.__init__ arguments: class names, head, preprocessing
    metrics.json           see lungdemo.metrics; validation, test, test_leakage_free
    training_args.json     the command line and derived facts (class weights, seed, ...)
    history.json           per-epoch curves
    *.png                  confusion matrices, training curves
    README.md              the model card

:func:`write_model_folder` builds the folder under a temporary name beside the target and
renames it into place, so a crash never leaves a half-written model folder.
:func:`load_model_folder` reads it back strictly; finding a folder from a reference (a path
or a Hub repo) is :mod:`lungdemo.loading`'s job.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lungdemo.atomic import write_json, write_text
from lungdemo.errors import LungdemoError
from lungdemo.model import LungAlexNet, ModelFormatError, WeightsMismatchError

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.json"
TRAINING_ARGS_NAME = "training_args.json"
HISTORY_NAME = "history.json"
CARD_NAME = "README.md"
FOLDER_PATTERNS = ["*.safetensors", "*.json", "*.md", "*.png"]
"""The files a model folder is made of: what is uploaded and downloaded, nothing else (no pickle)."""
RUN_MODEL_DIR = "model"
"""Where a training run folder keeps its model folder (``runs/NAME/model``)."""
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}


class ModelLoadError(LungdemoError, RuntimeError):
    """A model that cannot be loaded; the message says what to do about it."""


def write_model_folder(
    model: LungAlexNet,
    out_dir: Path,
    *,
    json_files: dict[str, Any] | None = None,
    extra_files: dict[str, Path] | None = None,
    card: Callable[[Path], str] | None = None,
) -> Path:
    """Save weights, config, the given JSON and extra files, and the card into ``out_dir``.

    ``json_files`` maps file names (``metrics.json``) to data; ``extra_files`` maps names in
    the folder to existing files to copy (plots); ``card`` renders ``README.md`` from the
    folder written so far (e.g. ``train.card.render_model_card``; the folder already has its
    final name), so the card appears with the rest or not at all. Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    staging = scratch / out_dir.name  # the final name, for renderers that read it (the card's model name)
    try:
        staging.mkdir()
        staging.chmod(0o755)
        model.save_weights(staging / WEIGHTS_NAME)
        write_text(staging / CONFIG_NAME, json.dumps(model.config_dict(), sort_keys=True, indent=2))
        for name, data in (json_files or {}).items():
            write_json(staging / name, data)
        for name, src in (extra_files or {}).items():
            shutil.copyfile(src, staging / name)
        if card is not None:
            write_text(staging / CARD_NAME, card(staging))
        if out_dir.exists():
            previous = scratch / f"{out_dir.name}.previous"
            out_dir.rename(previous)
            try:
                staging.rename(out_dir)
            except BaseException:
                previous.rename(out_dir)
                raise
        else:
            staging.rename(out_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logger.info("wrote model folder %s", out_dir)
    return out_dir


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or a :class:`ModelLoadError` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} must hold a JSON object")
    return data


def missing_files(folder: Path) -> list[str]:
    """The files a loadable folder needs that ``folder`` lacks."""
    return [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]


def check_model_folder(folder: Path) -> None:
    """Say exactly what a folder lacks before anything is built from it."""
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is not a folder")
    missing = missing_files(folder)
    if missing:
        pickles = sorted(p.name for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES)
        hint = f" (found {pickles}: pickled weights are never loaded; export them to safetensors)" if pickles else ""
        raise ModelLoadError(f"{folder} is not a lungdemo model folder: missing {', '.join(missing)}{hint}")


def load_model_folder(folder: Path) -> tuple[LungAlexNet, dict[str, Any]]:
    """Build the model from ``config.json`` and load ``model.safetensors`` strictly.

    Returns the model in eval mode and the config it was built from.
    """
    folder = Path(folder)
    check_model_folder(folder)
    config = read_json(folder / CONFIG_NAME)
    try:
        model = LungAlexNet.from_config(config)
    except ModelFormatError as exc:
        raise ModelLoadError(f"{folder / CONFIG_NAME}: {exc}") from exc
    try:
        model.load_weights_file(folder / WEIGHTS_NAME)
    except WeightsMismatchError as exc:
        raise ModelLoadError(
            f"{folder}: {CONFIG_NAME} and {WEIGHTS_NAME} do not belong together: "
            + "; ".join(exc.problems)
            + f". Re-export the folder from the training run, or fix {CONFIG_NAME}"
        ) from exc
    except ModelFormatError as exc:
        raise ModelLoadError(f"{folder}: {exc}") from exc
    return model.eval(), config
