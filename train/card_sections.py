"""The model card's measurement sections: intervals, robustness and the upload check, from ``metrics.json``.

Each function turns one block of ``metrics.json`` into what ``templates/model_card.md`` renders, or
``None`` when the folder has no such measurement (the card then leaves the section out).
"""

from __future__ import annotations

import shlex
from typing import Any

# metrics.json key -> (row name in the summary table, section title)
SPLITS = {
    "test": ("official test split", "Official test split"),
    "test_leakage_free": ("leakage-free test subset", "Leakage-free test subset"),
    "validation": ("validation split (used to pick the epoch)", "Validation split"),
}


def fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "n/a"


def interval(entry: Any) -> str:
    if not isinstance(entry, dict):
        return "n/a"
    return f"{fmt(entry.get('estimate'))} ({fmt(entry.get('low'))} to {fmt(entry.get('high'))})"


def intervals_section(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """Rows of the 95%-interval table: one per figure, one column per split that has intervals."""
    blocks = [
        (name, metrics[key]["intervals"])
        for key, (name, _) in SPLITS.items()
        if isinstance((metrics or {}).get(key), dict) and isinstance(metrics[key].get("intervals"), dict)
    ]
    if not blocks:
        return None
    first = blocks[0][1]
    figures = [
        ("accuracy", "accuracy"),
        ("macro_f1", "macro F1"),
        ("cancer_subtype_macro_f1", "cancer-subtype macro F1"),
    ]
    rows = [(label, [interval(b.get(key)) for _, b in blocks]) for key, label in figures]
    rows += [
        (f"recall: {c}", [interval(b.get("recall", {}).get(c)) for _, b in blocks]) for c in first.get("recall", {})
    ]
    return {
        "columns": [name for name, _ in blocks],
        "rows": rows,
        "n_resamples": first.get("n_resamples"),
        "seed": first.get("seed"),
    }


def robustness_section(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    block = (metrics or {}).get("robustness")
    if not isinstance(block, dict):
        return None
    rows = [
        (
            r["name"],
            r["kind"],
            r.get("suite", ""),
            fmt(r["macro_f1"]),
            fmt(r["drop_macro_f1"]),
            fmt(r.get("cancer_subtype_macro_f1")),
        )
        for r in block.get("perturbations", [])
    ]
    clean = block.get("clean") or {}
    return {
        **block,
        "rows": rows,
        "clean_f1": fmt(clean.get("macro_f1")),
        "clean_subtype": fmt(clean.get("cancer_subtype_macro_f1")),
        "worst_name": (block.get("worst") or {}).get("name"),
        "worst_f1": fmt((block.get("worst") or {}).get("macro_f1")),
    }


def ood_section(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    block = (metrics or {}).get("ood")
    if not isinstance(block, dict):
        return None
    pct = {k: f"{block[k]:.1%}" for k in ("corpus_flagged", "in_distribution_flagged") if k in block}
    command = block.get("command")  # a check fitted at the end of training records the training command
    refit = command if isinstance(command, str) and command.startswith("python -m train.ood_fit") else None
    return {
        **block,
        **{f"{k}_pct": v for k, v in pct.items()},
        "auroc_text": fmt(block.get("auroc"), 4),
        "refit_command": refit,
    }


READ_FLAGS = ("--pretrained", "--teacher")
"""Flags whose values name a folder a reproduction step reads (``--teacher`` takes several)."""
NOT_FOLDERS = {"none", "imagenet"}


def unwritten_folders(commands: list[str]) -> list[str]:
    """Folders the reproduction steps read (``--pretrained``, ``--teacher``) that no earlier step writes.

    A chain can pass through an exported release (``lungdemo/shipped_model`` at the time) or a
    teacher trained outside the recorded chain; the card names them rather than list steps that
    silently assume them. A step writes ``--out X`` (the folder a teacher run leaves) and ``X/model``.
    """
    written: set[str] = set()
    missing: list[str] = []
    for command in commands:
        words = shlex.split(command)
        reading: str | None = None
        for word in words:
            if word.startswith("--"):
                reading = word if word in READ_FLAGS else None
                continue
            if reading is None:
                continue
            path = word.rstrip("/")
            if path not in NOT_FOLDERS and path not in written and path not in missing:
                missing.append(path)
            if reading == "--pretrained":
                reading = None
        out = words[words.index("--out") + 1].rstrip("/") if "--out" in words[:-1] else None
        if out:
            written.update({out, f"{out}/model"})
    return missing


def later_commands(training_args: dict[str, Any]) -> list[str]:
    """The commands run on a trained folder since training (exports, soups), in order: the card's last steps.

    Folders exported before the list existed hold a single ``export_command``.
    """
    return list(training_args.get("export_commands") or [c for c in [training_args.get("export_command")] if c])


def with_later_command(training_args: dict[str, Any], command: str) -> dict[str, Any]:
    """``training_args`` with ``command`` recorded as the latest step since training."""
    rest = {k: v for k, v in training_args.items() if k not in ("export_command", "export_commands")}
    return {**rest, "export_commands": [*later_commands(training_args), command]}
