"""Data audit: counts, sizes and modes, exact and near duplicates, cross-class conflicts.

Usage::

    python -m train.audit --data-dir ../shared/data/chest-ct --out runs/audit.json

Exact duplicates are files with the same SHA-256. Near duplicates are images whose
perceptual hashes (``imagehash.phash`` of the decoded grayscale slice) differ by at most
``--near-threshold`` bits: re-encodings, resizes and small edits of the same slice. The
report lists the *leakage-free test subset*: test images with no exact or near copy in
train or valid, which evaluation reports beside the official split.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import statistics
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
from tqdm import tqdm

from lungdemo.atomic import write_json
from lungdemo.decode import ImageDecodeError, decode_image, open_image
from lungdemo.errors import LungdemoError, report_error
from train.data import CLASS_NAMES, SPLITS, DatasetError, Sample, scan_dataset

logger = logging.getLogger(__name__)

DEFAULT_NEAR_THRESHOLD = 4
_EXT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".gif": "GIF"}


def _rel(sample: Sample, data_dir: Path) -> str:
    return sample.path.relative_to(data_dir).as_posix()


def _describe(sample: Sample, data_dir: Path) -> dict[str, str]:
    return {"path": _rel(sample, data_dir), "split": sample.split, "class": sample.class_name}


def file_facts(sample: Sample) -> dict[str, Any]:
    """SHA-256, format, mode, size and perceptual hash of one file."""
    data = sample.path.read_bytes()
    try:
        img = open_image(data)
        fmt, mode, size = img.format, img.mode, img.size
        gray, _ = decode_image(data)
        phash = int(str(imagehash.phash(gray)), 16)
    except ImageDecodeError as exc:
        raise DatasetError(f"cannot decode {sample.path}: {exc}") from exc
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "format": fmt,
        "mode": mode,
        "size": size,
        "phash": phash,
    }


def _hamming_matrix(hashes: np.ndarray) -> np.ndarray:
    x = hashes[:, None] ^ hashes[None, :]
    # popcount of uint64 via byte view
    return np.unpackbits(x.view(np.uint8), axis=-1).reshape(len(hashes), len(hashes), -1).sum(-1)


def audit_samples(
    splits: dict[str, list[Sample]], data_dir: Path, near_threshold: int = DEFAULT_NEAR_THRESHOLD
) -> dict[str, Any]:
    """Build the audit report for already-scanned splits."""
    samples = [s for split in splits.values() for s in split]
    with tqdm(samples, desc="audit", unit="img", leave=False) as bar:  # cleared before an error is shown
        facts = [file_facts(s) for s in bar]
    report: dict[str, Any] = {"data_dir": str(data_dir), "near_threshold": near_threshold}

    counts = {split: {c: sum(1 for s in ss if s.class_name == c) for c in CLASS_NAMES} for split, ss in splits.items()}
    for split in counts:
        counts[split]["total"] = len(splits[split])
    report["counts"] = counts

    modes: dict[str, Counter] = defaultdict(Counter)
    sizes: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    mismatched = []
    for s, f in zip(samples, facts, strict=True):
        modes[s.split][f"{f['format']}/{f['mode']}"] += 1
        sizes[s.split][s.class_name].append(f["size"])
        expected = _EXT_FORMATS.get(s.path.suffix.lower())
        if expected and expected != f["format"]:
            mismatched.append({**_describe(s, data_dir), "format": f["format"]})
    report["formats"] = {split: dict(sorted(c.items())) for split, c in modes.items()}
    report["extension_mismatch"] = mismatched
    report["sizes"] = {
        split: {
            cls: {
                "min": [min(w for w, _ in v), min(h for _, h in v)],
                "median": [statistics.median(w for w, _ in v), statistics.median(h for _, h in v)],
                "max": [max(w for w, _ in v), max(h for _, h in v)],
            }
            for cls, v in per_class.items()
        }
        for split, per_class in sizes.items()
    }

    # exact duplicates
    by_sha: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(facts):
        by_sha[f["sha256"]].append(i)
    groups = [idx for idx in by_sha.values() if len(idx) > 1]
    within = Counter()
    across = Counter()
    conflicts = []
    for idx in groups:
        for split in SPLITS:
            n = sum(1 for i in idx if samples[i].split == split)
            if n > 1:
                within[split] += n - 1
        for a, b in combinations(sorted({samples[i].split for i in idx}, key=SPLITS.index), 2):
            across[f"{a}-{b}"] += 1
        if len({samples[i].label for i in idx}) > 1:
            conflicts.append([_describe(samples[i], data_dir) for i in idx])
    report["exact_duplicates"] = {
        "groups": len(groups),
        "files_in_groups": sum(len(g) for g in groups),
        "extra_copies_within_split": dict(within),
        "groups_across_splits": dict(across),
        "list": [[_describe(samples[i], data_dir) for i in idx] for idx in groups],
    }
    report["class_conflicts"] = conflicts

    # near duplicates (perceptual hash), excluding exact copies
    hashes = np.array([f["phash"] for f in facts], dtype=np.uint64)
    dist = _hamming_matrix(hashes)
    ii, jj = np.nonzero(np.triu(dist <= near_threshold, k=1))
    near_pairs = []
    near_across = Counter()
    near_conflicts = 0
    for i, j in zip(ii.tolist(), jj.tolist(), strict=True):
        if facts[i]["sha256"] == facts[j]["sha256"]:
            continue
        a, b = samples[i], samples[j]
        if a.split != b.split:
            key = "-".join(sorted((a.split, b.split), key=SPLITS.index))
            near_across[key] += 1
        if a.label != b.label:
            near_conflicts += 1
        near_pairs.append({"a": _describe(a, data_dir), "b": _describe(b, data_dir), "distance": int(dist[i, j])})
    report["near_duplicates"] = {
        "pairs": len(near_pairs),
        "pairs_across_splits": dict(near_across),
        "pairs_with_different_classes": near_conflicts,
        "list": near_pairs,
    }

    # leakage-free test subset: no exact or near copy in train/valid
    test_idx = [i for i, s in enumerate(samples) if s.split == "test"]
    other_idx = np.array([i for i, s in enumerate(samples) if s.split != "test"], dtype=int)
    other_shas = {facts[i]["sha256"] for i in other_idx.tolist()}
    leaky, clean = [], []
    for i in test_idx:
        exact = facts[i]["sha256"] in other_shas  # also with near detection off (threshold < 0)
        close = exact or (other_idx.size and bool((dist[i, other_idx] <= near_threshold).any()))
        (leaky if close else clean).append(_rel(samples[i], data_dir))
    report["leakage_free_test"] = {"count": len(clean), "leaky_count": len(leaky), "files": clean}
    return report


def audit_dataset(data_dir: Path, near_threshold: int = DEFAULT_NEAR_THRESHOLD) -> dict[str, Any]:
    """Scan and audit the dataset at ``data_dir``."""
    data_dir = Path(data_dir)
    return audit_samples(scan_dataset(data_dir), data_dir, near_threshold)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A short human-readable summary of the report."""
    lines = ["counts per split and class:"]
    for split, c in report["counts"].items():
        lines.append(f"  {split:5s} " + "  ".join(f"{k}={v}" for k, v in c.items()))
    lines.append("formats/modes: " + json.dumps(report["formats"]))
    lines.append(f"files whose extension does not match their content: {len(report['extension_mismatch'])}")
    ex = report["exact_duplicates"]
    lines.append(
        f"exact duplicates: {ex['groups']} groups ({ex['files_in_groups']} files); extra copies "
        f"within splits {ex['extra_copies_within_split']}; groups across splits {ex['groups_across_splits']}"
    )
    lines.append(f"files under two different classes (exact): {len(report['class_conflicts'])} groups")
    nd = report["near_duplicates"]
    lines.append(
        f"near duplicates (phash distance <= {report['near_threshold']}, not exact): {nd['pairs']} pairs; "
        f"across splits {nd['pairs_across_splits']}; with different classes {nd['pairs_with_different_classes']}"
    )
    lf = report["leakage_free_test"]
    lines.append(f"leakage-free test subset: {lf['count']} of {lf['count'] + lf['leaky_count']} test images")
    return lines


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.audit", description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, required=True, help="dataset root (train/ valid/ test/)")
    p.add_argument("--out", type=Path, default=Path("audit.json"), help="JSON report to write")
    p.add_argument(
        "--near-threshold",
        type=int,
        default=DEFAULT_NEAR_THRESHOLD,
        help="max phash Hamming distance for a near duplicate (default %(default)s)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = audit_dataset(args.data_dir, args.near_threshold)
        write_json(args.out, report)
    except LungdemoError as exc:
        return report_error(exc)
    except OSError as exc:
        return report_error(f"cannot write {args.out}: {exc.strerror or exc}")
    print("\n".join(summary_lines(report)))
    print(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
