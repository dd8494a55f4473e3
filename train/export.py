"""Export a trained model folder at a storage precision, checked against the float32 model.

    python -m train.export runs/alexnet-1/model lungdemo/shipped_model \\
        --weights-dtype float16 --data-dir ../shared/data/chest-ct

Halving the weights to float16 halves the folder (the shipped model must stay small), but
it is only acceptable if predictions do not change: the command predicts the whole test
split with both models, reports the agreement, refuses to write below ``--min-agreement``,
and re-evaluates the exported weights so that ``metrics.json`` and the card describe exactly
the weights in the folder.

``--framing slice_deskew=25 --framing slice_deskew_keep=4`` changes how uploads are
straightened (``slice_fill=true``: how a canvas is painted; ``slice_search=standardized``: where
the body is looked for, see :mod:`lungdemo.framing`) at inference, the weights as trained:
validation and test are then scored again with the new framing, the stale robustness and
out-of-distribution figures are left out, and the check is not copied (it was fitted on
the old framing): refit it with ``python -m train.ood_fit --model DST --data-dir ... --in-place``.

``--test-time-flip true`` makes the folder average each slice's logits with its mirror image's
(:class:`~lungdemo.model.LungAlexNet`): the temperature is fitted again on validation for the new
prediction, validation and test are scored again, and the stale robustness figures are left out;
the check stays (it sees the framed slice, which the flip does not change).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from lungdemo.errors import LungdemoError, report_error
from lungdemo.folder import METRICS_NAME, load_model_folder, write_model_folder
from lungdemo.model import WEIGHTS_DTYPES, LungAlexNet
from lungdemo.ood import OOD_FILES
from lungdemo.plots import metrics_figures
from train.card import render_model_card
from train.card_sections import with_later_command
from train.config import TRAINING_ARGS_NAME
from train.data import DEFAULT_CACHE_DIR, load_images, scan_dataset
from train.engine import predict_logits
from train.loop import HISTORY_NAME
from train.scoring import evaluate_test, evaluate_validation, refit_temperature

logger = logging.getLogger(__name__)

COPIED = (TRAINING_ARGS_NAME, HISTORY_NAME)
DEFAULT_MIN_AGREEMENT = 0.995
INFERENCE_FRAMING = ("slice_fill", "slice_deskew", "slice_deskew_keep", "slice_search")
"""Preprocessing an export may change: how a canvas is painted, a tilted upload straightened and the body looked
for, which the dataset's own slices barely meet (``slice_fill`` changes 11 of its 1,000 files, the standardised
search 5 of 205 training boxes by more than 3%), so the weights need not learn it."""
BOOLEANS = {"true": True, "false": False}
STALE_WHEN_REFRAMED = ("robustness", "ood")
STALE_WHEN_FLIPPED = ("robustness",)


class ExportError(LungdemoError):
    """The exported weights would predict differently from the trained ones."""


def cast_model(model: LungAlexNet, dtype: str) -> LungAlexNet:
    """A copy of ``model`` holding exactly what ``dtype`` storage keeps (computed in float32)."""
    out = LungAlexNet(**{**model.config_dict(), "weights_dtype": dtype})
    store = WEIGHTS_DTYPES[dtype]
    out.load_state_dict({k: v.to(store).to(v.dtype) for k, v in model.state_dict().items()})
    return out.eval()


def parse_framing(items: list[str]) -> dict[str, float | bool | str]:
    """``["slice_deskew=25", "slice_fill=true"]`` -> ``{"slice_deskew": 25.0, "slice_fill": True}``."""
    changes: dict[str, float | bool | str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in INFERENCE_FRAMING:
            keys = ", ".join(INFERENCE_FRAMING)
            raise ExportError(f"--framing takes KEY=VALUE with KEY one of {keys}, got {item!r}")
        if key == "slice_fill":
            if value.lower() not in BOOLEANS:
                raise ExportError(f"--framing slice_fill takes true or false, got {value!r}")
            changes[key] = BOOLEANS[value.lower()]
            continue
        if key == "slice_search":
            changes[key] = value  # checked with the rest of the preprocessing in ``reframed``
            continue
        try:
            changes[key] = float(value)
        except ValueError:
            raise ExportError(f"--framing {key} needs a number of degrees, got {value!r}") from None
    return changes


def reframed(model: LungAlexNet, changes: dict[str, float | bool | str]) -> dict[str, Any]:
    """Apply ``changes`` to the model's preprocessing; what changed, as ``{key: [before, after]}``."""
    cfg = model.preprocess_config
    try:
        model.preprocess_config = replace(cfg, **changes)
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    return {k: [getattr(cfg, k), v] for k, v in changes.items() if getattr(cfg, k) != v}


def export(
    src: Path,
    dst: Path,
    dtype: str,
    data_dir: Path,
    cache_dir: Path,
    min_agreement: float,
    command: str,
    framing: dict[str, float | bool | str] | None = None,
    test_time_flip: bool | None = None,
) -> dict:
    model, _ = load_model_folder(src)
    changed = reframed(model, framing or {})
    flipped = test_time_flip is not None and test_time_flip != model.test_time_flip
    if flipped:
        model.test_time_flip = bool(test_time_flip)
    exported = cast_model(model, dtype)
    splits = scan_dataset(data_dir)
    temperature_before = exported.temperature
    if flipped:  # the fitted temperature belongs to the old prediction; fit it for the new one
        refit_temperature(exported, splits, cache_dir=cache_dir)
    images = load_images(splits["test"], model.preprocess_config, cache_dir, desc="decode test")
    ref = predict_logits(model, images, model.preprocess_config).argmax(1)
    new = predict_logits(exported, images, model.preprocess_config).argmax(1)
    agreement = float((ref == new).float().mean())
    if agreement < min_agreement:
        raise ExportError(
            f"{dtype} weights agree with float32 on {agreement:.4f} of test slices, "
            f"below --min-agreement {min_agreement}"
        )
    source = json.loads((src / METRICS_NAME).read_text())
    metrics = dict(source)
    metrics.update(evaluate_test(exported, splits, data_dir, cache_dir=cache_dir))
    if changed or flipped:
        for key in STALE_WHEN_REFRAMED if changed else STALE_WHEN_FLIPPED:
            metrics.pop(key, None)
        metrics["validation"] = evaluate_validation(exported, splits, cache_dir=cache_dir)
        logger.info("framing %s, test-time flip %s: validation and test scored again", changed, flipped)
    metrics["export"] = {
        "weights_dtype": dtype,
        "test_agreement_with_float32": agreement,
        "test_slices": len(ref),
        "float32_metrics": {
            k: {"accuracy": source[k]["accuracy"], "macro_f1": source[k]["macro"]["f1"]}
            for k in ("test", "test_leakage_free")
            if k in source
        },
        "command": command,
    }
    if changed:
        metrics["export"]["framing_changed"] = changed
    if flipped:
        metrics["export"]["test_time_flip_changed"] = [not exported.test_time_flip, exported.test_time_flip]
        metrics["export"]["temperature_refit"] = [temperature_before, exported.temperature]
    if changed or flipped:
        metrics["export"]["validation_macro_f1_before"] = source["validation"]["macro"]["f1"]
    json_files = {METRICS_NAME: metrics}
    for name in COPIED:
        if (src / name).is_file():
            json_files[name] = json.loads((src / name).read_text())
    if TRAINING_ARGS_NAME in json_files:  # every export since training, in order: the card's reproduction chain
        json_files[TRAINING_ARGS_NAME] = with_later_command(json_files[TRAINING_ARGS_NAME], command)
    extra = {p.name: p for p in src.glob("*.png")}  # the training curves; the rest is drawn from the new metrics
    if not changed:  # the check travels with the model; after a new framing it must be fitted again
        extra |= {name: src / name for name in OOD_FILES if (src / name).is_file()}
    with tempfile.TemporaryDirectory() as tmp:
        extra |= metrics_figures(metrics, Path(tmp))
        write_model_folder(exported, dst, json_files=json_files, extra_files=extra, card=render_model_card)
    return metrics["export"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m train.export", description=__doc__.split("\n")[0])
    p.add_argument("src", type=Path, help="trained model folder (float32)")
    p.add_argument("dst", type=Path, help="folder to write")
    p.add_argument("--weights-dtype", choices=sorted(WEIGHTS_DTYPES), default="float16")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    p.add_argument("--min-agreement", type=float, default=DEFAULT_MIN_AGREEMENT)
    p.add_argument(
        "--framing",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"change how uploads are framed at inference ({', '.join(INFERENCE_FRAMING)}); repeatable",
    )
    p.add_argument(
        "--test-time-flip",
        choices=sorted(BOOLEANS),
        default=None,
        help="average each slice's logits with its mirror image's (true) or not (false); refits the temperature",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = "python -m train.export " + " ".join(shlex.quote(a) for a in argv)
    try:
        framing = parse_framing(args.framing)
        info = export(
            args.src,
            args.dst,
            args.weights_dtype,
            args.data_dir,
            args.cache_dir,
            args.min_agreement,
            command,
            framing,
            None if args.test_time_flip is None else BOOLEANS[args.test_time_flip],
        )
    except LungdemoError as exc:
        return report_error(exc)
    size = sum(f.stat().st_size for f in args.dst.iterdir()) / 2**20
    print(
        f"wrote {args.dst} ({size:.1f} MiB); {args.weights_dtype} predictions agree with float32 on "
        f"{info['test_agreement_with_float32']:.4f} of {info['test_slices']} test slices"
    )
    if info.get("framing_changed"):
        dst, data = shlex.quote(str(args.dst)), shlex.quote(str(args.data_dir))
        print(
            f"framing changed {info['framing_changed']}; fit its check again: "
            f"python -m train.ood_fit --model {dst} --data-dir {data} --in-place"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
