"""How much accuracy survives the way real uploads differ from the dataset's files.

Usage::

    python -m train.robustness --model lungdemo/shipped_model --data-dir ../shared/data/chest-ct \\
        [--suite dev|holdout|stress|all] [--out robustness.json]

Every slice of the official test split is perturbed by each perturbation of the suite (see
:mod:`train.suites`; ``all`` runs every suite), saved as the PNG or JPEG file an uploader would
send, and classified through the app's own path: :func:`~lungdemo.preprocessing.decode_canonical` (decode, frame with
the model's stored policy) and :meth:`Predictor.probabilities_canonical` (normalise, forward).
The report gives accuracy, macro-F1 and cancer-subtype macro-F1 for the clean files and for each
perturbation, the drop from clean, and the worst case; ``--write-metrics`` stores it in the model
folder's ``metrics.json`` (``robustness``), where the evaluation tab and the card show it.
``--split valid`` perturbs the validation slices instead: a robustness figure to choose between
models by, without reading the test split. ``--teacher runs/teacher7 [runs/teacher5 ...]`` scores
distillation teachers (an ensemble for several) the same way: a teacher whose answers collapse on
perturbed views teaches a consistent student those wrong answers.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lungdemo.atomic import write_json
from lungdemo.decode import ImageDecodeError, decode_image, read_source
from lungdemo.errors import report_error
from lungdemo.framing import NOTE_NO_BODY
from lungdemo.intervals import bootstrap_intervals
from lungdemo.loading import ModelLoadError, parse_model_ref
from lungdemo.metrics import classification_metrics
from lungdemo.predictor import Predictor
from lungdemo.preprocessing import PreprocessConfig, decode_canonical
from train.card import update_metrics
from train.data import CLASS_NAMES, DatasetError, Sample, scan_dataset
from train.perturb import Perturbation, apply
from train.suites import SUITES
from train.teacher import TeacherError, teacher_predictor

logger = logging.getLogger(__name__)

DEFAULT_MAX_DROP = 0.03
"""The target: no perturbation may cost more macro-F1 than this against the clean files."""
CLEAN = Perturbation("clean", "clean")
"""The dataset's own files, read from disk unchanged."""

_WORKER: dict[str, Any] = {}


def _init_worker(originals: list[bytes], cfg: PreprocessConfig) -> None:
    torch.set_num_threads(1)
    _WORKER["originals"], _WORKER["cfg"] = originals, cfg


def canonical_of(
    originals: list[bytes], cfg: PreprocessConfig, p: Perturbation, i: int, seed: int
) -> tuple[torch.Tensor, bool]:
    """Slice ``i`` as the model sees it after ``p`` (decode, perturb, encode, then the app's decode and
    framing), and whether framing found no slice in it."""
    if p.kind == "clean":
        data = originals[i]
    else:
        gray, _ = decode_image(originals[i], cfg.max_pixels)
        data = apply(p, gray, seed + i)
    canon, info = decode_canonical(data, cfg)
    return canon, NOTE_NO_BODY in info.notes


def _worker_canonical(job: tuple[Perturbation, int, int]) -> tuple[torch.Tensor, bool]:
    return canonical_of(_WORKER["originals"], _WORKER["cfg"], *job)


def _canonicals(
    originals: list[bytes], cfg: PreprocessConfig, p: Perturbation, seed: int, pool: ProcessPoolExecutor | None
) -> Iterator[tuple[torch.Tensor, bool]]:
    if pool is None:
        yield from (canonical_of(originals, cfg, p, i, seed) for i in range(len(originals)))
    else:
        yield from pool.map(_worker_canonical, [(p, i, seed) for i in range(len(originals))], chunksize=8)


def headline(metrics: dict[str, Any], no_slice: int = 0) -> dict[str, Any]:
    """The figures a robustness row keeps from a full metrics dict."""
    return {
        "no_slice_found": no_slice,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro"]["f1"],
        "cancer_subtype_macro_f1": metrics.get("cancer_subtype_macro_f1"),
        "recall": {c: v["recall"] for c, v in metrics["per_class"].items()},
    }


def evaluate_perturbation(
    predictor: Predictor,
    originals: list[bytes],
    labels: Sequence[int],
    p: Perturbation,
    *,
    seed: int = 0,
    batch_size: int = 32,
    pool: ProcessPoolExecutor | None = None,
) -> tuple[dict[str, Any], list[int]]:
    """Headline metrics of one perturbation over the slices, and the predicted class of each slice."""
    preds: list[int] = []
    batch: list[torch.Tensor] = []
    no_slice = 0
    for canon, missed in _canonicals(originals, predictor.cfg, p, seed, pool):
        no_slice += missed
        batch.append(canon)
        if len(batch) == batch_size:
            preds += predictor.probabilities_canonical(torch.stack(batch)).argmax(1).tolist()
            batch = []
    if batch:
        preds += predictor.probabilities_canonical(torch.stack(batch)).argmax(1).tolist()
    return headline(classification_metrics(labels, preds, predictor.class_names), no_slice), preds


def run_suite(
    predictor: Predictor,
    samples: Sequence[Sample],
    perturbations: Sequence[Perturbation],
    *,
    seed: int = 0,
    batch_size: int = 32,
    workers: int = 1,
    max_drop: float = DEFAULT_MAX_DROP,
) -> dict[str, Any]:
    """The clean row, one row per perturbation, and the worst case, as a JSON-ready dict."""
    originals = [read_source(s.path) for s in samples]
    labels = [s.label for s in samples]
    pool = None
    if workers > 1:
        pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(originals, predictor.cfg))
    try:
        clean, clean_preds = evaluate_perturbation(
            predictor, originals, labels, CLEAN, seed=seed, batch_size=batch_size, pool=pool
        )
        clean["intervals"] = bootstrap_intervals(labels, clean_preds, predictor.class_names, n_resamples=2000)
        rows = []
        for p in tqdm(perturbations, desc="perturbations", unit="set", leave=False):
            m, preds = evaluate_perturbation(
                predictor, originals, labels, p, seed=seed, batch_size=batch_size, pool=pool
            )
            row = {**p.describe(), "suite": suite_of(p), **m}
            row["drop_macro_f1"] = clean["macro_f1"] - row["macro_f1"]
            row["agreement_with_clean"] = sum(a == b for a, b in zip(preds, clean_preds, strict=True)) / len(preds)
            rows.append(row)
    finally:
        if pool is not None:
            pool.shutdown()
    worst_subtype = min(rows, key=lambda r: r["cancer_subtype_macro_f1"] or 0.0) if rows else None
    overall = verdict(rows, max_drop)
    return {
        "n": len(samples),
        "seed": seed,
        "clean": clean,
        "perturbations": rows,
        "worst": overall["worst"],
        "worst_subtype": None
        if worst_subtype is None
        else {"name": worst_subtype["name"], "cancer_subtype_macro_f1": worst_subtype["cancer_subtype_macro_f1"]},
        "max_drop": max_drop,
        "failing": overall["failing"],
        "passed": not overall["failing"],
        "by_suite": {
            name: verdict([r for r in rows if r["suite"] == name], max_drop)
            for name in dict.fromkeys(r["suite"] for r in rows)
        },
    }


def verdict(rows: list[dict[str, Any]], max_drop: float) -> dict[str, Any]:
    """Rows' count, worst case (``None`` without rows) and the perturbations losing more than ``max_drop``:
    of the whole run, and of each suite in ``by_suite``."""
    worst = min(rows, key=lambda r: r["macro_f1"]) if rows else None
    return {
        "n": len(rows),
        "worst": None if worst is None else {k: worst[k] for k in ("name", "macro_f1", "drop_macro_f1")},
        "failing": [r["name"] for r in rows if r["drop_macro_f1"] > max_drop],
    }


def suite_of(p: Perturbation) -> str:
    """The suite ``p`` belongs to (``custom`` for one built elsewhere)."""
    return next((s.name for s in SUITES.values() if p in s.perturbations), "custom")


def format_report(result: dict[str, Any]) -> str:
    """A fixed-width table of a :func:`run_suite` result."""
    c = result["clean"]
    ci = c["intervals"]["macro_f1"]
    lines = [f"{'perturbation':46s} {'macro-F1':>8s} {'drop':>6s} {'subtype':>7s} {'agree':>6s}"]
    lines.append(
        f"{'clean':46s} {c['macro_f1']:8.3f} {'':>6s} {c['cancer_subtype_macro_f1'] or 0:7.3f} {'':>6s}"
        f"  (95% CI {ci['low']:.3f}..{ci['high']:.3f})"
    )
    for r in result["perturbations"]:
        lines.append(
            f"{r['name'][:46]:46s} {r['macro_f1']:8.3f} {r['drop_macro_f1']:+6.3f} "
            f"{r['cancer_subtype_macro_f1'] or 0:7.3f} {r['agreement_with_clean']:6.3f}"
            + (f"  no slice found in {r['no_slice_found']}" if r["no_slice_found"] else "")
        )
    if result["worst"]:
        w = result["worst"]
        lines.append(f"worst: {w['name']} macro-F1 {w['macro_f1']:.3f} (drop {w['drop_macro_f1']:.3f})")
    verdict = "all within" if result["passed"] else f"{len(result['failing'])} over"
    lines.append(f"{verdict} {result['max_drop']:.2f} of clean")
    for name, block in result.get("by_suite", {}).items():
        over = f"{len(block['failing'])} of {block['n']} over" if block["failing"] else f"all {block['n']} within"
        lines.append(f"  {name}: {over}; worst {block['worst']['name']} (drop {block['worst']['drop_macro_f1']:.3f})")
    return "\n".join(lines)


def select(suite: str, only: Sequence[str]) -> list[Perturbation]:
    names = list(SUITES) if suite == "all" else [suite]
    chosen = [p for n in names for p in SUITES[n].perturbations]
    if only:
        chosen = [p for p in chosen if any(o.lower() in p.name.lower() for o in only)]
    return chosen


def limit_per_class(samples: list[Sample], limit: int | None) -> list[Sample]:
    """The first ``limit`` samples of each class (all of them for ``None``): quick runs and tests."""
    if limit is None:
        return samples
    seen: dict[int, int] = {}
    out = []
    for s in samples:
        seen[s.label] = seen.get(s.label, 0) + 1
        if seen[s.label] <= limit:
            out.append(s)
    return out


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.robustness", description=__doc__.split("\n")[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="model folder or user/repo[@revision]")
    which.add_argument(
        "--teacher",
        type=Path,
        nargs="+",
        help="teacher folder(s) from python -m train.teacher (several: their ensemble), to choose distillation "
        "teachers by how they answer perturbed slices",
    )
    p.add_argument("--data-dir", type=Path, required=True, help="dataset root (train/ valid/ test/)")
    p.add_argument("--suite", choices=[*SUITES, "all"], default="dev", help="which perturbation suite")
    p.add_argument("--only", action="append", default=[], help="run perturbations whose name contains this")
    p.add_argument("--out", type=Path, help="write the report as JSON here")
    p.add_argument("--seed", type=int, default=0, help="seed of the random parts (overlay text)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1, help="processes that perturb and decode")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the forward passes")
    p.add_argument(
        "--split",
        choices=["test", "valid"],
        default="test",
        help="the slices perturbed: test to report, valid to choose between models without reading test",
    )
    p.add_argument("--limit", type=int, help="only the first N slices of each class")
    p.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP, help="allowed macro-F1 drop")
    p.add_argument(
        "--write-metrics",
        action="store_true",
        help="store the summary under 'robustness' in the model folder's metrics.json and re-render its card",
    )
    return p


def metrics_block(result: dict[str, Any], command: str) -> dict[str, Any]:
    """The ``robustness`` block of ``metrics.json``: each row's headline figures, the worst case, the verdict."""
    keep = ("name", "kind", "suite", "format", "accuracy", "macro_f1", "cancer_subtype_macro_f1", "drop_macro_f1")
    clean = result["clean"]
    return {
        "suite": result["suite"],
        "n": result["n"],
        "command": command,
        "clean": {k: clean[k] for k in ("accuracy", "macro_f1", "cancer_subtype_macro_f1")},
        "perturbations": [{k: r.get(k) for k in keep} for r in result["perturbations"]],
        "worst": result["worst"],
        "worst_subtype": result["worst_subtype"],
        "max_drop": result["max_drop"],
        "failing": result["failing"],
        "passed": result["passed"],
        "by_suite": result["by_suite"],
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, args.threads))
    try:
        if args.write_metrics and args.teacher:
            raise ModelLoadError("--write-metrics stores a model folder's figures: a teacher has no metrics.json")
        if args.write_metrics and parse_model_ref(args.model).is_hub:
            raise ModelLoadError("--write-metrics needs a local model folder, not a Hub reference")
        if args.write_metrics and args.split != "test":
            raise DatasetError("--write-metrics stores the test split's figures: drop --split valid")
        predictor = teacher_predictor(tuple(args.teacher)) if args.teacher else Predictor.from_ref(args.model)
        if tuple(predictor.class_names) != CLASS_NAMES:
            raise ModelLoadError(f"the model's classes {predictor.class_names} differ from {list(CLASS_NAMES)}")
        samples = limit_per_class(scan_dataset(args.data_dir, (args.split,))[args.split], args.limit)
        perturbations = select(args.suite, args.only)
        if not perturbations:
            raise DatasetError(f"no perturbation in suite {args.suite!r} matches {args.only}")
        result = run_suite(
            predictor,
            samples,
            perturbations,
            seed=args.seed,
            batch_size=args.batch_size,
            workers=args.workers,
            max_drop=args.max_drop,
        )
    except (ModelLoadError, DatasetError, ImageDecodeError, TeacherError) as exc:
        return report_error(exc)
    result = {
        "model": " + ".join(map(str, args.teacher)) if args.teacher else predictor.loaded.description,
        "preprocessing": predictor.cfg.to_dict(),
        "suite": args.suite,
        "split": args.split,
        **result,
    }
    print(f"model: {result['model']} (framing: {predictor.cfg.resize}; {args.split} split)")
    print(format_report(result))
    if args.out:
        write_json(args.out, result)
        print(f"wrote {args.out}")
    if args.write_metrics:
        command = "python -m train.robustness " + " ".join(shlex.quote(a) for a in argv)
        update_metrics(predictor.loaded.folder, {"robustness": metrics_block(result, command)})
        print(f"wrote the summary into {predictor.loaded.folder}/metrics.json and its card")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
