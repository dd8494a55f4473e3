"""Writing a self-describing model folder, atomically.

Layout (what ``huggingface_hub`` pushes and what :mod:`lungdemo.loading` reads)::

    model.safetensors      weights (float32 or float16, see config "weights_dtype")
    config.json            LungAlexNet.__init__ arguments: class names, head, preprocessing
    metrics.json           see lungdemo.metrics; validation, test, test_leakage_free
    training_args.json     the command line and derived facts (class weights, seed, ...)
    history.json           per-epoch curves
    *.png                  confusion matrices, training curves
    README.md              the model card

The folder is built under a temporary name beside the target and renamed into place, so a
crash never leaves a half-written model folder, and an existing one is replaced only at the
very end.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lungdemo.atomic import write_json, write_text
from lungdemo.model import LungAlexNet

logger = logging.getLogger(__name__)


def write_model_folder(
    model: LungAlexNet,
    out_dir: Path,
    *,
    json_files: dict[str, Any] | None = None,
    extra_files: dict[str, Path] | None = None,
    card: str | None = None,
) -> Path:
    """Save weights, config and the given JSON files, extra files and card into ``out_dir``.

    ``json_files`` maps file names (``metrics.json``) to data; ``extra_files`` maps names in
    the folder to existing files to copy (plots). Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    staging.chmod(0o755)
    try:
        if card is not None:
            write_text(staging / "README.md", card)
        model.save_pretrained(staging)  # keeps an existing README.md
        if card is None:
            (staging / "README.md").unlink(missing_ok=True)
        for name, data in (json_files or {}).items():
            write_json(staging / name, data)
        for name, src in (extra_files or {}).items():
            shutil.copyfile(src, staging / name)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            staging.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("wrote model folder %s", out_dir)
    return out_dir
