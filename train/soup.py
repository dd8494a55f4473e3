"""Average the weights of a model and its fine-tunes into a new model folder (a weight soup, WiSE-FT).

    python -m train.soup runs/soup lungdemo/shipped_model runs/kd17a/model --data-dir ../shared/data/chest-ct

A fine-tune and the model it started from lie in one basin of the loss, so the average of their weights is a
working model that tends to keep much of the fine-tune's gain and of the start's robustness to shifted inputs
(Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"; "Model soups"). The folders must share the
architecture, classes and preprocessing; the result takes the last folder's records (training arguments and
curves, which the card's reproduction steps read) and its test-time flip, fits the temperature again on the
validation split and scores validation. Test is left to ``python -m train.export``, which scores the
exported weights; the out-of-distribution check is not carried over (the weights changed): fit it again with
``python -m train.ood_fit``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from lungdemo.errors import LungdemoError, report_error
from lungdemo.folder import METRICS_NAME, load_model_folder, write_model_folder
from lungdemo.model import LungAlexNet
from lungdemo.plots import metrics_figures
from train.card import render_model_card
from train.card_sections import with_later_command
from train.config import TRAINING_ARGS_NAME
from train.data import DEFAULT_CACHE_DIR, scan_dataset
from train.loop import HISTORY_NAME
from train.scoring import evaluate_validation, refit_temperature

logger = logging.getLogger(__name__)

PER_FOLDER = ("temperature", "weights_dtype", "test_time_flip")
"""Config keys the ingredients may differ in: fitted or chosen after training, not part of what the weights learnt."""


class SoupError(LungdemoError):
    """The folders cannot be averaged (another architecture, other classes or preprocessing) or bad weights."""


def soup_weights(weights: list[float] | None, n: int) -> list[float]:
    """Mixing weights normalised to sum to one; equal when not given."""
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise SoupError(f"--weights needs one number per folder: {n} folders, {len(weights)} weights")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise SoupError(f"--weights must be non-negative with a positive sum, got {weights}")
    return [w / sum(weights) for w in weights]


def check_compatible(models: list[LungAlexNet], folders: list[Path]) -> None:
    """Refuse folders whose weights do not mean the same thing, naming the first key that differs."""
    first = {k: v for k, v in models[0].config_dict().items() if k not in PER_FOLDER}
    for model, folder in zip(models[1:], folders[1:], strict=True):
        other = {k: v for k, v in model.config_dict().items() if k not in PER_FOLDER}
        for key in sorted(first.keys() | other.keys()):
            if first.get(key) != other.get(key):
                raise SoupError(
                    f"{folder} cannot be averaged with {folders[0]}: its {key!r} is {other.get(key)!r}, "
                    f"not {first.get(key)!r}"
                )


def average(models: list[LungAlexNet], weights: list[float]) -> LungAlexNet:
    """A float32 model with the weighted mean of the models' parameters and the last model's config."""
    last = models[-1]
    out = LungAlexNet(**{**last.config_dict(), "weights_dtype": "float32"})
    states = [m.state_dict() for m in models]
    mixed = {k: sum(w * s[k].float() for w, s in zip(weights, states, strict=True)) for k in states[0]}
    out.load_state_dict(mixed)
    return out.eval()


def soup(
    dst: Path,
    folders: list[Path],
    data_dir: Path,
    command: str,
    weights: list[float] | None = None,
    cache_dir: Path = DEFAULT_CACHE_DIR,
) -> dict[str, Any]:
    """Write the averaged folder to ``dst``; its ``metrics.json`` ``soup`` record."""
    if len(folders) < 2:
        raise SoupError("a soup needs at least two model folders")
    mix = soup_weights(weights, len(folders))
    models = [load_model_folder(f)[0] for f in folders]
    check_compatible(models, folders)
    model = average(models, mix)
    splits = scan_dataset(data_dir)
    refit_temperature(model, splits, cache_dir=cache_dir)
    last = folders[-1]
    source = json.loads((last / METRICS_NAME).read_text())
    record = {"folders": [str(f) for f in folders], "weights": mix, "command": command}
    metrics = {
        "class_names": list(model.class_names),
        "best_epoch": source.get("best_epoch"),
        "selection": source.get("selection", "validation macro-F1"),
        "validation": evaluate_validation(model, splits, cache_dir=cache_dir),
        "soup": record,
    }
    json_files: dict[str, Any] = {METRICS_NAME: metrics}
    if (last / HISTORY_NAME).is_file():
        json_files[HISTORY_NAME] = json.loads((last / HISTORY_NAME).read_text())
    if (last / TRAINING_ARGS_NAME).is_file():  # the card's reproduction chain: training, then every later step
        json_files[TRAINING_ARGS_NAME] = with_later_command(
            json.loads((last / TRAINING_ARGS_NAME).read_text()), command
        )
    extra = {p.name: p for p in last.glob("training_curves.png")}
    with tempfile.TemporaryDirectory() as tmp:
        extra |= metrics_figures(metrics, Path(tmp))
        write_model_folder(model, dst, json_files=json_files, extra_files=extra, card=render_model_card)
    logger.info("wrote %s: %s", dst, ", ".join(f"{w:.3f} x {f}" for w, f in zip(mix, folders, strict=True)))
    return record


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m train.soup", description=__doc__.split("\n")[0])
    p.add_argument("dst", type=Path, help="model folder to write")
    p.add_argument("folders", type=Path, nargs="+", help="model folders to average (the last one's records are kept)")
    p.add_argument("--weights", type=float, nargs="+", default=None, help="mixing weights (default: equal)")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = shlex.join(["python", "-m", "train.soup", *argv])
    try:
        record = soup(args.dst, args.folders, args.data_dir, command, args.weights, args.cache_dir)
    except LungdemoError as exc:
        return report_error(exc)
    metrics = json.loads((args.dst / METRICS_NAME).read_text())
    print(
        f"wrote {args.dst}: weights {', '.join(f'{w:.3f}' for w in record['weights'])}; "
        f"validation macro-F1 {metrics['validation']['macro']['f1']:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
