"""The model card (``README.md`` of a model folder), written from the folder's own files.

The layout is the template ``train/templates/model_card.md``, rendered with ``ModelCard.from_template``;
this module reads ``config.json``, ``metrics.json`` and ``training_args.json`` and hands the template
formatted values, so the card cannot drift from the weights beside it. Rendering is deterministic (no
dates, no host names), so pushing an unchanged folder twice changes nothing on the Hub.

Usage (prints the card; training writes it to ``README.md`` itself)::

    python -m train.card runs/alexnet-1/model [--repo-id user/repo]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

import lungdemo
from lungdemo.atomic import write_json, write_text
from lungdemo.errors import report_error
from lungdemo.folder import CARD_NAME, METRICS_NAME
from lungdemo.model import LIBRARY_NAME, LICENSE, PIPELINE_TAG, TAGS
from train.card_sections import (
    SPLITS,
    fmt,
    intervals_section,
    later_commands,
    ood_section,
    robustness_section,
    unwritten_folders,
)

logger = logging.getLogger(__name__)

DATASET_ID = "mohamedhanyyy/chest-ctscan-images"
DATASET_URL = f"https://www.kaggle.com/datasets/{DATASET_ID}"
DATASET_NAME = "Chest CT-Scan images (Kaggle)"
PROJECT_NAME = "lungdemo"
DEFAULT_MODEL_NAME = "lungdemo-alexnet"
TEMPLATE_PATH = Path(__file__).with_name("templates") / "model_card.md"

# metrics.json key -> (model-index split, human name of the evaluation set)
EVAL_SETS = {
    "test": ("test", f"{DATASET_NAME}, official test split"),
    "test_leakage_free": (
        "test_leakage_free",
        f"{DATASET_NAME}, leakage-free test subset (test images with a copy in train/valid removed)",
    ),
}

# training_args.json key -> label in the Training table
TRAINING_FACTS = (
    ("epochs_run", "epochs run"),
    ("best_epoch", "best epoch"),
    ("stopped_early", "stopped early"),
    ("class_weights", "class weights (balanced)"),
    ("train_counts", "training images per class"),
    ("valid_count", "validation images"),
    ("train_seconds", "training time (s)"),
    ("torch", "torch"),
    ("torchvision", "torchvision"),
)


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when it is missing or unreadable (logged).

    A card is documentation: a missing ``training_args.json`` (a folder exported by hand)
    should thin the card out, not stop a push.
    """
    if not path.is_file():
        logger.info("%s not found: the card leaves out what it would say", path.name)
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        logger.warning("cannot read %s (%s): the card leaves out what it would say", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _round(value: float) -> float:
    """Four decimals for the metadata: enough for a leaderboard, short in YAML."""
    return round(float(value), 4)


def eval_results(metrics: dict[str, Any]) -> list[EvalResult]:
    """Test accuracy and macro-F1 (official and leakage-free) as ``model-index`` entries."""
    results: list[EvalResult] = []
    for key, (split, dataset_name) in EVAL_SETS.items():
        m = metrics.get(key)
        if not isinstance(m, dict) or "accuracy" not in m:
            continue
        common = {
            "task_type": PIPELINE_TAG,
            "task_name": "Image Classification",
            "dataset_type": DATASET_ID,
            "dataset_name": dataset_name,
            "dataset_split": split,
        }
        results.append(
            EvalResult(**common, metric_type="accuracy", metric_value=_round(m["accuracy"]), metric_name="Accuracy")
        )
        macro = m.get("macro") or {}
        if "f1" in macro:
            results.append(
                EvalResult(
                    **common,
                    metric_type="f1",
                    metric_value=_round(macro["f1"]),
                    metric_name="Macro F1",
                    metric_args={"average": "macro"},
                )
            )
        if "cancer_subtype_macro_f1" in m:
            results.append(
                EvalResult(
                    **common,
                    metric_type="f1",
                    metric_value=_round(m["cancer_subtype_macro_f1"]),
                    metric_name="Cancer-subtype macro F1 (normal class excluded)",
                    metric_config="cancer-subtypes",
                    metric_args={"average": "macro", "exclude": ["normal"]},
                )
            )
    return results


def _class_row(name: str, c: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "precision": fmt(c.get("precision")),
        "recall": fmt(c.get("recall")),
        "f1": fmt(c.get("f1")),
        "support": c.get("support", "n/a"),
    }


def _split_rows(m: dict[str, Any], name: str, title: str, class_names: list[str]) -> dict[str, Any]:
    """One evaluation set: its summary row, per-class rows and confusion matrix, numbers as text."""
    macro, weighted, per_class = m.get("macro") or {}, m.get("weighted") or {}, m.get("per_class") or {}
    matrix = m.get("confusion_matrix")
    confusion = None
    if isinstance(matrix, list) and len(matrix) == len(class_names):
        confusion = list(zip(class_names, matrix, strict=True))
    return {
        "name": name,
        "title": title,
        "n": m.get("n", "n/a"),
        "accuracy": fmt(m.get("accuracy")),
        "macro_precision": fmt(macro.get("precision")),
        "macro_recall": fmt(macro.get("recall")),
        "macro_f1": fmt(macro.get("f1")),
        "weighted_f1": fmt(weighted.get("f1")),
        "subtype_f1": fmt(m.get("cancer_subtype_macro_f1")),
        "per_class": [_class_row(c, per_class.get(c) or {}) for c in class_names or list(per_class)],
        "confusion": confusion,
    }


def _evaluation(folder: Path, metrics: dict[str, Any] | None, class_names: list[str]) -> dict[str, Any] | None:
    """What the Evaluation section shows, or None when the folder has no metrics."""
    if not metrics:
        return None
    names = list(metrics.get("class_names") or class_names)
    lf = metrics.get("leakage_free")
    return {
        "class_names": names,
        "best_epoch": metrics.get("best_epoch"),
        "selection": metrics.get("selection", "validation macro-F1"),
        "leakage_free": lf if isinstance(lf, dict) and "kept" in lf else None,
        "splits": [
            _split_rows(metrics[key], name, title, names)
            for key, (name, title) in SPLITS.items()
            if isinstance(metrics.get(key), dict)
        ],
        "figures": [(p.name.removesuffix(".png").replace("_", " "), p.name) for p in sorted(folder.glob("*.png"))],
    }


def _training(training_args: dict[str, Any]) -> dict[str, Any] | None:
    """The facts table and the full arguments of ``training_args.json``, or None without one."""
    if not training_args:
        return None
    facts: list[tuple[str, str]] = []
    pretrained = training_args.get("pretrained")
    if isinstance(pretrained, dict):
        facts.append(("starting weights", json.dumps(pretrained.get("weights") or pretrained.get("pretrained"))))
    facts += [(label, json.dumps(training_args[key])) for key, label in TRAINING_FACTS if key in training_args]
    args = training_args.get("args")
    args_json = json.dumps(args, indent=2, sort_keys=True) if isinstance(args, dict) and args else None
    return {"facts": facts, "args_json": args_json}


def _warm_start_chain(pretrained: Any) -> tuple[dict[str, Any] | None, Any]:
    """The runs a warm-started model continues, oldest first, and where the oldest started.

    Each warm start records its source's own ``pretrained`` block, so a run continued twice
    names both earlier commands; the card lists them as reproduction steps in order.
    """
    commands: list[str] = []
    start = pretrained
    while isinstance(start, dict) and start.get("warm_start"):
        if start.get("source_command"):
            commands.append(start["source_command"])
        start = start.get("source_pretrained")
    origin = start.get("pretrained") if isinstance(start, dict) else None
    if not isinstance(pretrained, dict) or not pretrained.get("warm_start"):
        return None, origin
    return {"commands": commands[::-1], "origin": origin}, origin


def card_context(
    folder: Path,
    config: dict[str, Any],
    metrics: dict[str, Any] | None,
    training_args: dict[str, Any],
    repo_id: str | None = None,
) -> dict[str, Any]:
    """The template's variables, from the folder's JSON files; a missing file leaves its parts out."""
    class_names = list(config.get("class_names") or (metrics or {}).get("class_names") or [])
    if repo_id:
        model_name = repo_id.split("/")[-1]
    elif folder.name and folder.name != "model":
        model_name = folder.name
    else:
        model_name = DEFAULT_MODEL_NAME
    command = training_args.get("command")
    if isinstance(command, list):
        command = " ".join(str(c) for c in command)
    pretrained = training_args.get("pretrained")
    teachers = training_args.get("teacher")  # one teacher: a dict; an ensemble: a list of them
    view = (training_args.get("args") or {}).get("distill_view", "same")  # what the teachers were shown
    teachers = [
        {
            **t,
            "val_macro_f1": fmt(t.get("val_macro_f1")),
            "clean_view": view == "clean",
            "model_folder": str(t.get("architecture") or "").startswith("alexnet model folder"),
        }
        for t in (teachers if isinstance(teachers, list) else [teachers])
        if isinstance(t, dict) and t
    ]
    warm_start, origin = _warm_start_chain(pretrained)
    chain = warm_start["commands"] if warm_start else []
    # a teacher that is also a run of the chain is trained by its chain step; listed once
    teacher_steps = [t for t in teachers if t.get("command") and not (t["model_folder"] and t["command"] in chain)]
    temperature = config.get("temperature")
    preprocessing = config.get("preprocessing")
    return {
        "model_name": model_name,
        "class_names": class_names,
        "disclaimer": lungdemo.DISCLAIMER,
        "project_name": PROJECT_NAME,
        "dataset_name": DATASET_NAME,
        "dataset_url": DATASET_URL,
        "hidden": config.get("hidden"),
        "weights_dtype": config.get("weights_dtype", "float32"),
        "temperature": temperature if isinstance(temperature, (int, float)) and temperature != 1 else None,
        "test_time_flip": config.get("test_time_flip") is True,
        "preprocessing": [(k, json.dumps(v)) for k, v in preprocessing.items()]
        if isinstance(preprocessing, dict)
        else [],
        "evaluation": _evaluation(folder, metrics, class_names),
        "intervals": intervals_section(metrics),
        "robustness": robustness_section(metrics),
        "ood": ood_section(metrics),
        "training": _training(training_args),
        "command": command or None,
        "origin": origin,
        "teachers": teachers,
        "teacher_steps": teacher_steps,
        "unwritten": unwritten_folders([t["command"] for t in teacher_steps] + chain + [command or ""]),
        "standardized": isinstance(preprocessing, dict) and preprocessing.get("intensity") == "standardize",
        "warm_start": warm_start,
        "export_commands": later_commands(training_args),
        "ref": repo_id or "user/repo",
    }


def build_card_data(metrics: dict[str, Any] | None, model_name: str, class_names: list[str]) -> ModelCardData:
    """The YAML metadata: library, task, tags, dataset, class names and ``model-index``."""
    results = eval_results(metrics) if metrics else []
    return ModelCardData(
        library_name=LIBRARY_NAME,
        pipeline_tag=PIPELINE_TAG,
        license=LICENSE,
        tags=list(TAGS),
        datasets=[DATASET_ID],
        metrics=["accuracy", "f1"],
        model_name=model_name,
        eval_results=results or None,
        class_names=list(class_names),
        num_classes=len(class_names),
    )


def render_model_card(folder: Path, repo_id: str | None = None) -> str:
    """Return the model card (``README.md`` text) for the model folder ``folder``.

    ``repo_id`` names the model and fills the load instructions; without it the folder's
    name is used. The text parses back with :class:`huggingface_hub.ModelCard`.
    """
    folder = Path(folder)
    config = _read_json(folder / "config.json") or {}
    metrics = _read_json(folder / "metrics.json")
    training_args = _read_json(folder / "training_args.json") or {}
    context = card_context(folder, config, metrics, training_args, repo_id)
    data = build_card_data(metrics, context["model_name"], context["class_names"])
    card = ModelCard.from_template(data, template_path=str(TEMPLATE_PATH), **context)
    return re.sub(r"\n{3,}", "\n\n", str(card)).rstrip() + "\n"


def update_metrics(folder: Path, blocks: dict[str, Any]) -> None:
    """Add or replace top-level blocks of a folder's ``metrics.json`` and re-render its card to match.

    For measurements made after the folder was written (the robustness suite, a refitted
    out-of-distribution check); each file is replaced atomically.
    """
    folder = Path(folder)
    metrics = _read_json(folder / METRICS_NAME) or {}
    write_json(folder / METRICS_NAME, {**metrics, **blocks})
    write_text(folder / CARD_NAME, render_model_card(folder))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.card", description="Print the model card of a model folder.")
    p.add_argument("folder", type=Path)
    p.add_argument("--repo-id", default=None, help="user/repo the card is for")
    args = p.parse_args(argv)
    if not args.folder.is_dir():
        return report_error(f"{args.folder} is not a folder")
    print(render_model_card(args.folder, args.repo_id), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
