"""Evaluate a model folder on the official test split and its leakage-free subset.

Usage::

    python -m train.evaluate --model runs/alexnet-1/model --data-dir ../shared/data/chest-ct

``--model`` takes any model reference (folder, ``user/repo[@revision]``). The slices go
through the preprocessing stored in the model's ``config.json``, by the same functions the
app uses (scoring: :mod:`train.scoring`). Every headline figure comes with its 95% bootstrap
interval. A model with an out-of-distribution check also has the check measured through
``Predictor.predict`` on the test slices and the non-CT corpus (:mod:`train.ood_corpus`;
``--no-ood`` skips it).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lungdemo.device import add_device_argument, describe_device, model_to_device, resolve_device
from lungdemo.errors import LungdemoError, report_error
from lungdemo.loading import LoadedModel, ModelLoadError, load_model
from lungdemo.model import LungAlexNet
from train.audit import DEFAULT_NEAR_THRESHOLD
from train.data import CLASS_NAMES, DEFAULT_CACHE_DIR, scan_dataset
from train.scoring import evaluate_test, format_metrics

logger = logging.getLogger(__name__)


def check_class_names(model: LungAlexNet, dataset_classes: tuple[str, ...]) -> None:
    if tuple(model.class_names) != tuple(dataset_classes):
        raise ModelLoadError(
            f"the model's classes {model.class_names} differ from the dataset's {list(dataset_classes)}"
        )


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="model folder or user/repo[@revision]")
    p.add_argument("--data-dir", type=Path, required=True, help="dataset root (train/ valid/ test/)")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="decoded-image cache")
    p.add_argument("--near-threshold", type=int, default=DEFAULT_NEAR_THRESHOLD)
    p.add_argument("--no-ood", action="store_true", help="do not measure the out-of-distribution check")
    add_device_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        device = resolve_device(args.device)  # before the download: a missing GPU fails at once
        loaded = load_model(args.model)
        splits = scan_dataset(args.data_dir)
        check_class_names(loaded.model, CLASS_NAMES)
        model = model_to_device(loaded.model, device)  # scored in float32 on any device
        result = evaluate_test(
            model, splits, args.data_dir, cache_dir=args.cache_dir, near_threshold=args.near_threshold
        )
    except LungdemoError as exc:
        return report_error(exc)
    print(f"model: {loaded.description} on {describe_device(device)}")
    print(format_metrics("official test", result["test"]))
    lf = result["leakage_free"]
    print(
        format_metrics(
            f"leakage-free test ({lf['dropped']} test images with copies in train/valid dropped)",
            result["test_leakage_free"],
        )
    )
    if not args.no_ood:
        return measure_check(loaded, splits, args.data_dir)
    return 0


def measure_check(loaded: LoadedModel, splits: dict, data_dir: Path) -> int:
    """Print the check's AUROC and flagged shares (test slices and the non-CT corpus), or that there is none."""
    from lungdemo.predictor import Predictor

    predictor = Predictor(loaded)
    if predictor.ood is None:
        print("out-of-distribution check: none in this model folder")
        return 0
    from train.ood_corpus import build_corpus
    from train.ood_fit import evaluate_check, format_evaluation

    print(predictor.ood.description)
    print(format_evaluation(evaluate_check(predictor, [s.path for s in splits["test"]], build_corpus(data_dir))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
