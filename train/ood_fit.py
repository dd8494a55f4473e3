"""Fit the out-of-distribution check for an existing model folder, and measure it.

    python -m train.ood_fit --model lungdemo/shipped_model --data-dir ../shared/data/chest-ct

copies the folder to ``runs/<name>-ood`` (``--out``) and writes ``ood.json`` and
``ood.safetensors`` into the copy (``--in-place`` writes into ``--model`` itself), then
measures it through :meth:`Predictor.predict` on the official test split and on the non-CT
corpus of :mod:`train.ood_corpus`: AUROC, the share of the corpus flagged and the share of test
slices flagged (``--no-eval`` skips that).

What is fitted on what (see :mod:`lungdemo.ood`): the reference features and the orientation
probe come from the *training* split only (the probe also from its turned and inverted
versions); both thresholds are quantiles of the *validation* split's upright slices. The
non-CT corpus is only ever measured, never used to choose anything.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from lungdemo.decode import ImageDecodeError, decode_image
from lungdemo.errors import report_error
from lungdemo.loading import LoadedModel, ModelLoadError, load_model_folder
from lungdemo.ood import ORIENTATION_CLASSES, TRANSFORM_CLASS, TRANSFORMS, UPRIGHT, OODCheck
from lungdemo.ood_backbone import (
    BackboneSpec,
    Features,
    OODCheckError,
    build_backbone,
    features_in_batches,
    layout,
    pooled,
)
from lungdemo.predictor import Predictor
from lungdemo.preprocessing import PreprocessConfig, canonical_image
from train.card import update_metrics
from train.data import DatasetError, Sample, scan_dataset

logger = logging.getLogger(__name__)

DEFAULT_K = 5
DEFAULT_METRIC = "cosine"
DEFAULT_FALSE_ALARM_RATE = 0.01
"""Share of validation slices above the distance threshold."""
DEFAULT_ORIENTATION_FALSE_ALARM_RATE = 0.01
MIN_ORIENTATION_THRESHOLD = 0.5
"""The probe flags a slice only when "wrong way round" is at least as likely as "upright"."""
DEFAULT_PROBE_C = 1.0


def decode_grays(samples: Sequence[Sample]) -> list[Image.Image]:
    """The decoded gray images (before framing), so that transforms act as they would on an upload."""
    out = []
    for s in samples:
        try:
            out.append(decode_image(s.path)[0])
        except ImageDecodeError as exc:
            raise DatasetError(f"cannot decode {s.path}: {exc}") from exc
    return out


def canonical_variants(grays: Sequence[Image.Image], cfg: PreprocessConfig) -> dict[str, torch.Tensor]:
    """``{"upright": (N, 1, S, S) uint8, "rot90": ..., ...}``: each slice and its :data:`TRANSFORMS`, framed."""

    def frame(images: list[Image.Image]) -> torch.Tensor:
        arrays = [np.asarray(canonical_image(im, cfg), dtype=np.uint8) for im in images]
        return torch.from_numpy(np.stack(arrays)).unsqueeze(1)

    variants = {UPRIGHT: frame(list(grays))}
    for name, transform in TRANSFORMS.items():
        variants[name] = frame([transform(im) for im in grays])
    return variants


def variant_features(features: Features, variants: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {name: features_in_batches(features, canon) for name, canon in variants.items()}


def probe_data(feats: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Probe inputs (grid cells side by side) and orientation labels (indices into ``ORIENTATION_CLASSES``)."""
    labels = {UPRIGHT: 0} | {t: ORIENTATION_CLASSES.index(c) for t, c in TRANSFORM_CLASS.items()}
    x = np.concatenate([layout(feats[name]) for name in labels]).astype(np.float32)
    y = np.concatenate([np.full(len(feats[name]), label) for name, label in labels.items()])
    return x, y


def fit_check(
    train: dict[str, np.ndarray],
    valid: dict[str, np.ndarray],
    *,
    features: Features,
    preprocessing: PreprocessConfig,
    k: int = DEFAULT_K,
    metric: str = DEFAULT_METRIC,
    false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
    orientation_false_alarm_rate: float = DEFAULT_ORIENTATION_FALSE_ALARM_RATE,
    probe_c: float = DEFAULT_PROBE_C,
) -> OODCheck:
    """Fit on the training split's features (per variant), set both thresholds on validation's upright slices."""
    from sklearn.linear_model import LogisticRegression

    if len(train[UPRIGHT]) < k:
        raise ValueError(f"need at least k={k} training slices, got {len(train[UPRIGHT])}")
    x, y = probe_data(train)
    probe = LogisticRegression(C=probe_c, max_iter=5000).fit(x, y)
    check = OODCheck(
        spec=features.spec,
        preprocessing=preprocessing,
        reference=pooled(train[UPRIGHT]).astype(np.float32),
        k=k,
        metric=metric,
        threshold=0.0,
        false_alarm_rate=false_alarm_rate,
        probe_coef=probe.coef_.astype(np.float32),
        probe_intercept=probe.intercept_.astype(np.float32),
        orientation_threshold=MIN_ORIENTATION_THRESHOLD,
        orientation_false_alarm_rate=orientation_false_alarm_rate,
        features=features,
    )
    upright_valid = valid[UPRIGHT]
    check.threshold = float(np.quantile(check.scores(upright_valid), 1.0 - false_alarm_rate))
    wrong = 1.0 - check.orientation_probabilities(upright_valid)[:, 0]
    check.orientation_threshold = max(
        MIN_ORIENTATION_THRESHOLD, float(np.quantile(wrong, 1.0 - orientation_false_alarm_rate))
    )
    check.info = {
        "fitted_on": {"train_slices": len(train[UPRIGHT]), "valid_slices": len(upright_valid)},
        "probe": {"C": probe_c, "transforms": dict(TRANSFORM_CLASS)},
        "validation": validation_summary(check, valid),
    }
    return check


def validation_summary(check: OODCheck, valid: dict[str, np.ndarray]) -> dict[str, Any]:
    """Shares of validation slices flagged, upright and per transform (synthetic transforms of in-distribution data)."""
    out = {}
    for name, feats in valid.items():
        results = check.judge(feats)
        out[name] = round(float(np.mean([r.flagged for r in results])), 4)
    return {"flagged_share": out}


def fit_for_model(
    model_cfg: PreprocessConfig, splits: dict[str, list[Sample]], spec: BackboneSpec | None = None, **kwargs: Any
) -> OODCheck:
    """Decode the training and validation splits, make their variants, and fit the check."""
    features = Features(spec or BackboneSpec(), build_backbone(spec or BackboneSpec()))
    feats = {}
    for split in ("train", "valid"):
        started = time.perf_counter()
        feats[split] = variant_features(features, canonical_variants(decode_grays(splits[split]), model_cfg))
        logger.info("features of %s and its variants in %.0f s", split, time.perf_counter() - started)
    return fit_check(feats["train"], feats["valid"], features=features, preprocessing=model_cfg, **kwargs)


# --- measuring -------------------------------------------------------------------------------------


class Upload(Protocol):
    name: str
    kind: str
    data: bytes


def evaluate_check(predictor: Predictor, in_distribution: Sequence[bytes | Path], corpus: Sequence[Upload]) -> dict:
    """Through :meth:`Predictor.predict`: AUROC, share of the corpus flagged, share of in-distribution slices flagged.

    "Flagged" means the prediction has a warning (``Prediction.warnings``: the check's or a
    decode warning); ``*_by_check`` counts the check's own decision alone. The AUROC ranks by
    :attr:`OODResult.severity` (in-distribution slices negative, corpus positive), and by the
    distance alone.
    """
    from sklearn.metrics import roc_auc_score

    if predictor.ood is None:
        raise OODCheckError(f"{predictor.loaded.folder} has no out-of-distribution check to evaluate")
    ins = [predictor.predict(src) for src in in_distribution]
    outs = [predictor.predict(item.data) for item in corpus]
    labels = np.r_[np.zeros(len(ins)), np.ones(len(outs))]
    both = ins + outs

    def share(preds: list, key: Any) -> float:
        return round(float(np.mean([bool(key(p)) for p in preds])), 4) if preds else float("nan")

    by_kind: dict[str, list[int]] = {}
    for item, p in zip(corpus, outs, strict=True):
        counts = by_kind.setdefault(item.kind, [0, 0])
        counts[0] += bool(p.warnings)
        counts[1] += 1
    return {
        "n_in_distribution": len(ins),
        "n_corpus": len(outs),
        "auroc": round(float(roc_auc_score(labels, [p.ood.severity for p in both])), 4),
        "auroc_distance": round(float(roc_auc_score(labels, [p.ood.score for p in both])), 4),
        "corpus_flagged": share(outs, lambda p: p.warnings),
        "corpus_flagged_by_check": share(outs, lambda p: p.ood.flagged),
        "in_distribution_flagged": share(ins, lambda p: p.warnings),
        "in_distribution_flagged_by_check": share(ins, lambda p: p.ood.flagged),
        "corpus_flagged_by_kind": {k: f"{v[0]}/{v[1]}" for k, v in sorted(by_kind.items())},
        "corpus_missed": [item.name for item, p in zip(corpus, outs, strict=True) if not p.warnings],
        "in_distribution_flagged_reasons": sorted(p.ood.reason for p in ins if p.ood.flagged),
    }


def format_evaluation(result: dict) -> str:
    lines = [
        f"AUROC {result['auroc']:.4f} (distance alone {result['auroc_distance']:.4f}), "
        f"{result['n_in_distribution']} test slices vs {result['n_corpus']} corpus images",
        f"corpus flagged: {result['corpus_flagged']:.1%} (by the check alone {result['corpus_flagged_by_check']:.1%})",
        f"test slices flagged: {result['in_distribution_flagged']:.1%} "
        f"(by the check alone {result['in_distribution_flagged_by_check']:.1%})",
        "by kind: " + ", ".join(f"{k} {v}" for k, v in result["corpus_flagged_by_kind"].items()),
    ]
    if result["corpus_missed"]:
        lines.append("missed: " + ", ".join(result["corpus_missed"]))
    return "\n".join(lines)


def metrics_summary(check: OODCheck, result: dict[str, Any]) -> dict[str, Any]:
    """The ``ood`` block of ``metrics.json``: what the check is and how it measured (evaluation tab, card)."""
    return {
        "description": check.description,
        "k": check.k,
        "metric": check.metric,
        "threshold": check.threshold,
        "false_alarm_rate": check.false_alarm_rate,
        "backbone": check.spec.architecture,
        "validation_flagged_share": check.info.get("validation", {}).get("flagged_share"),
        "command": check.info.get("command"),
        **result,
    }


def fit_and_measure(
    loaded: LoadedModel, splits: dict[str, list[Sample]], data_dir: Path, command: str
) -> tuple[OODCheck, dict[str, Any]]:
    """Fit the check for a model (train and validation only), then measure it on test and the non-CT corpus.

    What ``python -m train`` runs at the end of training, like calibration; returns the check
    (for the model folder) and its ``metrics.json`` block.
    """
    from train.ood_corpus import build_corpus

    started = time.perf_counter()
    check = fit_for_model(loaded.model.preprocess_config, splits)
    check.info["command"] = command
    result = evaluate_check(Predictor(loaded, ood=check), [s.path for s in splits["test"]], build_corpus(data_dir))
    logger.info("out-of-distribution check fitted and measured in %.0f s", time.perf_counter() - started)
    logger.info("%s", format_evaluation(result))
    return check, metrics_summary(check, result)


# --- command line ----------------------------------------------------------------------------------


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.ood_fit", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True, help="a local model folder")
    p.add_argument("--data-dir", type=Path, required=True, help="dataset root (train/ valid/ test/)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, help="folder for the copy with the check (default runs/<name>-ood)")
    where.add_argument("--in-place", action="store_true", help="write the check into --model itself")
    p.add_argument("--k", type=int, default=DEFAULT_K)
    p.add_argument("--false-alarm-rate", type=float, default=DEFAULT_FALSE_ALARM_RATE)
    p.add_argument("--orientation-false-alarm-rate", type=float, default=DEFAULT_ORIENTATION_FALSE_ALARM_RATE)
    p.add_argument("--no-eval", action="store_true", help="fit only; skip the measurement on test and corpus")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, _ = load_model_folder(args.model)
        splits = scan_dataset(args.data_dir)
        out = args.model if args.in_place else (args.out or Path("runs") / f"{args.model.resolve().name}-ood")
        if not args.in_place:
            if out.resolve() == args.model.resolve():
                raise ModelLoadError("--out is the model folder itself: use --in-place to write into it")
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(args.model, out)
        check = fit_for_model(
            model.preprocess_config,
            splits,
            k=args.k,
            false_alarm_rate=args.false_alarm_rate,
            orientation_false_alarm_rate=args.orientation_false_alarm_rate,
        )
        check.info["command"] = "python -m train.ood_fit " + " ".join(shlex.quote(a) for a in argv)
        check.save(out)
        print(f"wrote {check.description} into {out}")
        if not args.no_eval:
            from train.ood_corpus import build_corpus

            predictor = Predictor.from_ref(out)
            result = evaluate_check(predictor, [s.path for s in splits["test"]], build_corpus(args.data_dir))
            print(format_evaluation(result))
            update_metrics(out, {"ood": metrics_summary(check, result)})
            print(f"wrote the measurement into {out}/metrics.json and its card")
    except (ModelLoadError, DatasetError, OSError) as exc:
        return report_error(exc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
