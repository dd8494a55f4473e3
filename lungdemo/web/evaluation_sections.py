"""The evaluation tab's later sections: 95% intervals, the robustness suite, the upload check.

Each reads one block of ``metrics.json`` (``intervals`` inside each split, ``robustness``,
``ood``), as training, ``python -m train.robustness --write-metrics`` and ``python -m
train.ood_fit`` wrote it; nothing is recomputed. A folder without a block says so instead.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from lungdemo.folder import METRICS_NAME

INTERVAL_SPLITS = (("test", "Official test split"), ("test_leakage_free", "Leakage-free test subset"))
INTERVAL_HEADERS = ["metric", *(f"{title} (95% interval)" for _, title in INTERVAL_SPLITS)]
ROBUSTNESS_HEADERS = ["upload", "kind", "suite", "macro F1", "drop from clean", "cancer-subtype macro F1"]
OOD_KIND_HEADERS = ["kind of image", "flagged"]


def table(rows: list[list[Any]], headers: list[str], label: str, elem_id: str) -> gr.Dataframe:
    """A read-only table of the evaluation tab."""
    return gr.Dataframe(value=rows, headers=headers, label=label, interactive=False, elem_id=elem_id)


def _ci(entry: dict[str, Any] | None) -> str:
    if not isinstance(entry, dict):
        return "—"
    return f"{entry['estimate']:.3f} ({entry['low']:.3f} to {entry['high']:.3f})"


def interval_rows(metrics: dict[str, Any]) -> list[list[str]]:
    """Accuracy, macro F1, subtype macro F1 and each class's recall, with their intervals, per test split."""
    blocks = [
        (metrics.get(key) or {}).get("intervals") if isinstance(metrics.get(key), dict) else None
        for key, _ in INTERVAL_SPLITS
    ]
    present = [b for b in blocks if isinstance(b, dict)]
    if not present:
        return []
    rows = []
    for key, label in (
        ("accuracy", "accuracy"),
        ("macro_f1", "macro F1"),
        ("cancer_subtype_macro_f1", "cancer-subtype macro F1"),
    ):
        rows.append([label, *(_ci(b.get(key)) if isinstance(b, dict) else "—" for b in blocks)])
    for name in present[0].get("recall", {}):
        rows.append(
            [f"recall: {name}", *(_ci(b.get("recall", {}).get(name)) if isinstance(b, dict) else "—" for b in blocks)]
        )
    return rows


def intervals_section(metrics: dict[str, Any]) -> None:
    rows = interval_rows(metrics)
    if not rows:
        gr.Markdown(f"*{METRICS_NAME} has no bootstrap intervals: this model was evaluated before they were added.*")
        return
    first = next(metrics[k]["intervals"] for k, _ in INTERVAL_SPLITS if isinstance(metrics.get(k), dict))
    gr.Markdown(
        "**How sure are these figures?** Each is shown with its 95% bootstrap interval "
        f"({first['n_resamples']} resamples of the slices, truth and prediction together, seed {first['seed']}). "
        "With about fifty slices of a class, one slice moves its recall by two points.",
        elem_id="intervals-intro",
    )
    table(rows, INTERVAL_HEADERS, "95% intervals", "intervals")


def robustness_rows(block: dict[str, Any]) -> list[list[Any]]:
    """The clean row, then one row per perturbation, numbers rounded."""
    clean = block["clean"]
    rows: list[list[Any]] = [
        [
            "the dataset's own files",
            "clean",
            "",
            round(clean["macro_f1"], 3),
            "",
            round(clean["cancer_subtype_macro_f1"] or 0, 3),
        ]
    ]
    for r in block["perturbations"]:
        rows.append(
            [
                r["name"],
                r["kind"],
                r.get("suite", ""),
                round(r["macro_f1"], 3),
                round(r["drop_macro_f1"], 3),
                round(r["cancer_subtype_macro_f1"] or 0, 3),
            ]
        )
    return rows


def robustness_summary(block: dict[str, Any]) -> str:
    worst = block.get("worst") or {}
    verdict = (
        f"every perturbation within {block['max_drop']:.2f} of clean"
        if block["passed"]
        else f"{len(block['failing'])} of {len(block['perturbations'])} perturbations lose more than "
        f"{block['max_drop']:.2f}: {', '.join(block['failing'])}"
    )
    return (
        "**Real uploads.** The same test slices changed the way real uploads differ from the dataset's files "
        "(framed, on a viewer canvas with text, re-encoded, downscaled, another gamma, rotated), each "
        f"classified through the app's own path ({block['n']} slices, suite `{block['suite']}`). "
        f"Worst case: **{worst.get('name', '—')}**, macro F1 {worst.get('macro_f1', float('nan')):.3f}; {verdict}."
        + suite_verdicts(block)
    )


def suite_verdicts(block: dict[str, Any]) -> str:
    """One clause per suite (``dev``, ``holdout``, ``stress``), when the block records them."""
    parts = []
    for name, suite in (block.get("by_suite") or {}).items():
        over = len(suite["failing"])
        state = f"{over} of {suite['n']} over" if over else f"all {suite['n']} within"
        parts.append(f"`{name}` {state} (worst {suite['worst']['name']}, drop {suite['worst']['drop_macro_f1']:.3f})")
    return (" By suite: " + "; ".join(parts) + ".") if parts else ""


def robustness_section(metrics: dict[str, Any]) -> None:
    block = metrics.get("robustness")
    if not isinstance(block, dict):
        gr.Markdown(
            f"*{METRICS_NAME} has no robustness results; `python -m train.robustness --model FOLDER "
            "--data-dir DATA --write-metrics` measures them.*",
            elem_id="no-robustness",
        )
        return
    gr.Markdown(robustness_summary(block), elem_id="robustness-intro")
    table(robustness_rows(block), ROBUSTNESS_HEADERS, "Macro F1 per kind of upload", "robustness")


def ood_summary(block: dict[str, Any]) -> str:
    return (
        "**Is it a chest CT slice?** Every upload is also checked against the training slices "
        f"({block['description']}). Measured on {block['n_corpus']} images that are not axial chest CT "
        "(photographs, documents, phantoms, other modalities, chest slices turned or inverted) and on the "
        f"{block['n_in_distribution']} official test slices: AUROC **{block['auroc']:.3f}**, "
        f"**{block['corpus_flagged']:.1%}** of the other images flagged, "
        f"**{block['in_distribution_flagged']:.1%}** of the test slices flagged (false alarms). The threshold was "
        "set on validation slices only; the other images were never used to choose it."
    )


def ood_section(metrics: dict[str, Any]) -> None:
    block = metrics.get("ood")
    if not isinstance(block, dict):
        gr.Markdown(f"*{METRICS_NAME} has no measurement of the upload check.*", elem_id="no-ood-metrics")
        return
    gr.Markdown(ood_summary(block), elem_id="ood-metrics")
    by_kind = block.get("corpus_flagged_by_kind") or {}
    if by_kind:
        table([[k, v] for k, v in by_kind.items()], OOD_KIND_HEADERS, "Other images flagged, by kind", "ood-by-kind")
