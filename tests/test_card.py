"""The model card: train/card.py fills train/templates/model_card.md from a model folder's own files.

Folders are written in tmp_path with the project's writer (tiny random LungAlexNet, a metrics.json
of the real shape); the card's numbers are checked against those files.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from huggingface_hub import ModelCard

import lungdemo
from lungdemo.folder import write_model_folder
from lungdemo.loading import SHIPPED_MODEL_DIR
from lungdemo.model import TAGS
from tests.conftest import TEST_CLASSES, fake_metrics, make_model
from train.card import DATASET_ID, TEMPLATE_PATH, main, render_model_card
from train.card_sections import unwritten_folders

REPO_ROOT = Path(__file__).resolve().parents[1]
SECTIONS = [
    "## Classes",
    "## Preprocessing",
    "## Evaluation",
    "## Training",
    "## Intended use",
    "## Limitations",
    "## How to reproduce",
    "## How to load",
]
TEACHER = {
    "architecture": "tiny-teacher",
    "command": "python -m train.teacher --data-dir DATA --out runs/teacher",
    "val_macro_f1": 0.8912,
}


def folder_with(tmp_path: Path, name: str = "model", hidden: int = 8, **json_files: dict[str, Any]) -> Path:
    """A model folder with random weights and exactly the given JSON files (no card)."""
    model = make_model(hidden=hidden, image_size=64)
    files = {f"{key}.json": data for key, data in json_files.items()}
    return write_model_folder(model, tmp_path / name, json_files=files)


def front_matter(text: str) -> dict[str, Any]:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("\n---\n", 1)[0].removeprefix("---\n"))


def table_row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


# --- copied from tests/test_hub.py --------------------------------------------------------------
def test_card_metadata_and_body(model_folder: Path) -> None:
    command = "python -m train --data-dir ../shared/data/chest-ct --out runs/alexnet-1 --epochs 30"
    (model_folder / "training_args.json").write_text(json.dumps({"command": command, "args": {"epochs": 30}}))
    text = render_model_card(model_folder, "user/lung-ct")
    assert render_model_card(model_folder, "user/lung-ct") == text, "the card must be deterministic"
    card = ModelCard(text)
    data = card.data
    assert data.library_name == "lungdemo"
    assert data.pipeline_tag == "image-classification"
    assert data.license == "mit"
    assert data.datasets == [DATASET_ID]
    assert {"alexnet", "chest-ct", "medical-imaging"} <= set(data.tags)
    assert data.class_names == TEST_CLASSES
    metrics = json.loads((model_folder / "metrics.json").read_text())
    assert data.model_name == "lung-ct"
    found = {(r.dataset_split, r.metric_name): r.metric_value for r in data.eval_results}
    for split in ("test", "test_leakage_free"):
        assert found[(split, "Accuracy")] == pytest.approx(metrics[split]["accuracy"], abs=5e-5)
        assert found[(split, "Macro F1")] == pytest.approx(metrics[split]["macro"]["f1"], abs=5e-5)
    body = card.text
    assert command in body
    assert "\n".join(f"{i}. `{name}`" for i, name in enumerate(TEST_CLASSES)) in body
    for phrase in (
        "Not a medical device",
        "Not for clinical use",
        "Known dataset duplicates",
        "separable by image source",
        "Domain shift from PNG renderings to DICOM",
        "## How to reproduce",
        "LUNGDEMO_MODEL=user/lung-ct@<revision> python app.py",
        "lungdemo.loading import load_model",
        "leakage-free test subset",
        "body_crop_pad",
    ):
        assert phrase in body, phrase


def test_card_without_training_args_or_metrics(model_folder: Path) -> None:
    (model_folder / "metrics.json").unlink()
    card = ModelCard(render_model_card(model_folder))
    assert card.data.eval_results is None
    assert card.data.class_names == TEST_CLASSES
    assert "not been evaluated" in card.text
    assert "No `training_args.json`" in card.text


# --- layout and numbers ---------------------------------------------------------------------------
def test_shipped_card_is_what_the_template_renders() -> None:
    """The committed card of the shipped model is the current template's output, byte for byte."""
    assert render_model_card(SHIPPED_MODEL_DIR) == (SHIPPED_MODEL_DIR / "README.md").read_text(encoding="utf-8")


def test_sections_in_order_and_front_matter_parses(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, "lung-small", metrics=fake_metrics(3))
    text = render_model_card(folder)
    positions = [text.index(f"\n{s}\n") for s in SECTIONS]
    assert positions == sorted(positions)
    assert text.count("\n# ") == 1 and "\n# lung-small\n" in text  # folder name names the model
    assert f"> **Not a medical device.** {lungdemo.DISCLAIMER}" in text
    assert "\n\n\n" not in text and text.endswith("```\n")

    meta = front_matter(text)
    assert meta["tags"] == TAGS and meta["license"] == "mit" and meta["datasets"] == [DATASET_ID]
    assert meta["class_names"] == TEST_CLASSES and meta["num_classes"] == len(TEST_CLASSES)
    assert meta["model-index"][0]["name"] == "lung-small"
    (folder / "README.md").write_text(text, encoding="utf-8")
    loaded = ModelCard.load(folder / "README.md")
    assert loaded.data.library_name == "lungdemo" and loaded.data.model_name == "lung-small"
    assert str(loaded) == text  # parsing and writing back changes nothing


def test_numbers_come_from_metrics_json(tmp_path: Path) -> None:
    metrics = fake_metrics(5)
    metrics["best_epoch"] = 7
    metrics["leakage_free"] = {"kept": 40, "dropped": 20, "near_threshold": 4}
    text = render_model_card(folder_with(tmp_path, metrics=metrics))
    assert "Weights from epoch 7, chosen by validation macro-F1." in text
    assert "Leakage-free subset: 40 test images kept, 20 dropped (near-duplicate threshold: 4 bits" in text
    for key, name in (("test", "official test split"), ("test_leakage_free", "leakage-free test subset")):
        m = metrics[key]
        row = table_row(
            name,
            m["n"],
            *(
                f"{v:.3f}"
                for v in (
                    m["accuracy"],
                    m["macro"]["precision"],
                    m["macro"]["recall"],
                    m["macro"]["f1"],
                    m["weighted"]["f1"],
                    m["cancer_subtype_macro_f1"],
                )
            ),
        )
        assert f"\n{row}\n" in text, row
    section = text.split("### Leakage-free test subset\n", 1)[1].split("\n### ", 1)[0]
    m = metrics["test_leakage_free"]
    per_class = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for name in TEST_CLASSES:
        c = m["per_class"][name]
        per_class.append(table_row(name, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", c["support"]))
    assert "\n".join(per_class) in section  # one table: rows in class order, no blank line between
    confusion = [table_row("true \\ predicted", *TEST_CLASSES), "|---|" + "---:|" * len(TEST_CLASSES)]
    confusion += [table_row(name, *row) for name, row in zip(TEST_CLASSES, m["confusion_matrix"], strict=True)]
    assert "\n".join(confusion) in section

    meta = front_matter(text)
    found = {
        (r["dataset"]["split"], m["name"]): m["value"] for r in meta["model-index"][0]["results"] for m in r["metrics"]
    }
    assert found[("test_leakage_free", "Cancer-subtype macro F1 (normal class excluded)")] == round(
        metrics["test_leakage_free"]["cancer_subtype_macro_f1"], 4
    )


def test_folder_without_metrics_or_training_args_renders(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, "bare", hidden=0)
    (folder / "curves.png").write_bytes(b"not shown without metrics")
    text = render_model_card(folder, "user/bare-model")
    for section in SECTIONS:
        assert f"\n{section}\n" in text, section
    assert "This folder has no `metrics.json`: the model has not been evaluated." in text
    assert "No `training_args.json` in this folder: how the weights were trained is not recorded." in text
    assert "a single linear layer as classifier head" in text
    assert "### " not in text and "curves.png" not in text and "softmax(logits" not in text
    assert "3. Train with `python -m train --data-dir DATA --out runs/NAME`" in text
    assert "4. Evaluate any model reference" in text
    assert 'load_model("user/bare-model")' in text
    card = ModelCard(text)
    assert card.data.eval_results is None and card.data.model_name == "bare-model"
    assert "model-index" not in front_matter(text)


def test_training_args_fill_training_and_reproduce(tmp_path: Path) -> None:
    args = {
        "command": ["python", "-m", "train", "--pretrained", "none", "--teacher", "runs/teacher"],
        "export_command": "python -m train.export runs/x/model out --weights-dtype float16",
        "pretrained": {"pretrained": "none"},
        "teacher": TEACHER,
        "epochs_run": 12,
        "train_counts": {"normal": 3},
        "args": {"lr": 0.001, "epochs": 12},
    }
    folder = folder_with(tmp_path, metrics=fake_metrics(), training_args=args)
    (folder / "training_curves.png").write_bytes(b"png")
    text = render_model_card(folder)
    command = " ".join(args["command"])
    assert f"```bash\n{command}\n```" in text
    assert (
        '| starting weights | `"none"` |\n| epochs run | `12` |\n| training images per class | `{"normal": 3}` |'
        in text
    )
    assert '```json\n{\n  "epochs": 12,\n  "lr": 0.001\n}\n```' in text
    assert "![training curves](training_curves.png)" in text
    assert "It was trained from scratch (no pretrained weights). Its training loss included knowledge" in text
    assert "teacher: tiny-teacher, validation macro-F1 0.891" in text
    steps = re.findall(r"^(\d)\. (\S+ \S+)", text.split("## How to reproduce", 1)[1], flags=re.M)
    assert steps == [
        ("1", "Get the"),
        ("2", "Download the"),
        ("3", "Fine-tune the"),
        ("4", "Run the"),
        ("5", "Export the"),
        ("6", "Evaluate any"),
    ]
    assert TEACHER["command"] in text and f"`{command}` (adjust `--data-dir`" in text
    assert args["export_command"] in text


def test_the_card_says_when_the_teachers_saw_the_clean_view(tmp_path: Path) -> None:
    args = {"command": "python -m train --teacher runs/teacher --distill-view clean", "teacher": TEACHER}
    clean = render_model_card(
        folder_with(tmp_path / "a", metrics=fake_metrics(), training_args=args | {"args": {"distill_view": "clean"}})
    )
    assert "teacher, shown each training batch without the gray-level changes" in clean
    same = render_model_card(folder_with(tmp_path / "b", metrics=fake_metrics(), training_args=args))
    assert "knowledge distillation from an ImageNet-pretrained teacher." in same  # older records: the same batch


def test_a_warm_start_distilled_from_two_teachers_lists_every_step(tmp_path: Path) -> None:
    second = {**TEACHER, "architecture": "other-teacher", "command": "python -m train.teacher --out runs/t3"}
    args = {
        "command": "python -m train --pretrained runs/kd2/model --teacher runs/teacher runs/t3",
        "pretrained": {
            "pretrained": "runs/kd2/model",
            "warm_start": True,
            "source_command": "python -m train --out runs/kd2 --pretrained none",
            "source_pretrained": {"pretrained": "none"},
        },
        "teacher": [TEACHER, second],
    }
    text = render_model_card(folder_with(tmp_path, metrics=fake_metrics(), training_args=args))
    assert "every weight was initialised from the model folder of the run before it, and the first run was" in text
    assert "knowledge distillation from an ensemble of 2 ImageNet-pretrained teachers." in text
    assert "teacher 1: tiny-teacher, validation macro-F1 0.891; teacher 2: other-teacher" in text
    reproduce = text.split("## How to reproduce", 1)[1]
    steps = re.findall(r"^(\d)\. (\S+ \S+ \S+)", reproduce, flags=re.M)
    assert [s for _, s in steps][2:5] == ["Fine-tune the distillation", "Fine-tune the distillation", "Train the run"]
    assert "teacher 2 of 2 first" in reproduce and "`python -m train --out runs/kd2 --pretrained none`" in reproduce
    assert (
        reproduce.index("runs/t3`") < reproduce.index("runs/kd2 --pretrained none") < reproduce.index(args["command"])
    )


def test_a_run_continued_twice_lists_both_earlier_runs_in_order(tmp_path: Path) -> None:
    first = {"pretrained": "none"}
    second = {"pretrained": "runs/a/model", "warm_start": True, "source_command": "train A", "source_pretrained": first}
    third = {"pretrained": "runs/b/model", "warm_start": True, "source_command": "train B", "source_pretrained": second}
    args = {"command": "train C", "pretrained": third}
    text = render_model_card(folder_with(tmp_path, metrics=fake_metrics(), training_args=args))
    assert "It continues a chain of 2 earlier runs of the project" in text
    reproduce = text.split("## How to reproduce", 1)[1]
    assert reproduce.index("`train A`") < reproduce.index("`train B`") < reproduce.index("`train C`")
    assert "No ImageNet weights were used for this model" in text  # the chain started from nothing


def test_imagenet_start_and_temperature(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, training_args={"pretrained": {"pretrained": "imagenet", "weights": "IMAGENET1K"}})
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "temperature": 1.5}))
    text = render_model_card(folder)
    assert "The convolutional features were initialised from torchvision's ImageNet AlexNet weights." in text
    assert "two 8-wide hidden layers" in text
    assert "Probabilities are softmax(logits / 1.5) (temperature-scaled)." in text
    assert '| starting weights | `"IMAGENET1K"` |' in text
    assert "No ImageNet weights were used" not in text and "knowledge distillation" not in text
    assert f"| `image_size` | `{config['preprocessing']['image_size']}` |" in text


def test_unreadable_files_thin_the_card_out(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, metrics=fake_metrics())
    (folder / "metrics.json").write_text("{not json")
    (folder / "training_args.json").write_text("[1, 2]")
    text = render_model_card(folder)
    assert "not been evaluated" in text and "No `training_args.json`" in text
    assert ModelCard(text).data.class_names == TEST_CLASSES  # class names still come from config.json


# --- command line and packaging ------------------------------------------------------------------
def test_cli_prints_the_card(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = folder_with(tmp_path, metrics=fake_metrics())
    assert main([str(folder), "--repo-id", "user/lung-ct"]) == 0
    assert capsys.readouterr().out == render_model_card(folder, "user/lung-ct")
    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr()
    assert err.out == "" and "is not a folder" in err.err


def test_template_is_packaged() -> None:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["train"]
    relative = TEMPLATE_PATH.relative_to(REPO_ROOT / "train").as_posix()
    assert TEMPLATE_PATH.is_file() and any(fnmatch.fnmatch(relative, p) for p in patterns)


def test_a_run_taught_by_the_model_it_continues_says_so_once(tmp_path: Path) -> None:
    """kd8's shape: kd5 is both the warm start and the teacher; the card says what the teacher is, names its
    standardised gray levels, and lists kd5's command once."""
    source = "python -m train --out runs/kd5 --pretrained none"
    teacher = {"architecture": "alexnet model folder runs/kd5/model", "command": source, "val_macro_f1": 0.904}
    args = {
        "command": "python -m train --pretrained runs/kd5/model --teacher runs/kd5/model --intensity standardize",
        "pretrained": {"pretrained": "runs/kd5/model", "warm_start": True, "source_command": source},
        "teacher": teacher,
        "args": {"distill_view": "clean"},
    }
    folder = folder_with(tmp_path, metrics=fake_metrics(), training_args=args)
    config = json.loads((folder / "config.json").read_text())
    config["preprocessing"]["intensity"] = "standardize"
    (folder / "config.json").write_text(json.dumps(config))
    text = render_model_card(folder)
    assert "knowledge distillation from a trained model of the project (given each batch through its own" in text
    assert "ImageNet-pretrained" not in text
    assert "standardise the gray levels" in text
    assert text.split("## How to reproduce", 1)[1].count(source) == 1
    assert "Make the folders" not in text  # runs/kd5/model is written by the step that lists kd5's command


def test_unwritten_folders_name_what_the_chain_reads_but_no_step_makes() -> None:
    steps = [
        "python -m train.teacher --out runs/teacher",
        "python -m train --out runs/kd2 --pretrained none --teacher runs/teacher runs/teacher3 --epochs 3",
        "python -m train --out runs/kd8 --pretrained lungdemo/shipped_model --teacher lungdemo/shipped_model",
        "python -m train --out runs/kd9 --pretrained runs/kd8/model --teacher lungdemo/shipped_model --lr 5e-5",
    ]
    assert unwritten_folders(steps) == ["runs/teacher3", "lungdemo/shipped_model"]
    assert unwritten_folders(steps[:2]) == ["runs/teacher3"]
    assert unwritten_folders(["python -m train --out runs/a --pretrained imagenet"]) == []


def test_card_asks_for_an_exported_release_the_chain_continues(tmp_path: Path) -> None:
    """kd10's shape: kd8 continued an exported release, which no listed step writes."""
    kd5 = "python -m train --out runs/kd5 --pretrained none"
    kd8 = "python -m train --out runs/kd8 --pretrained lungdemo/shipped_model"
    args = {
        "command": "python -m train --out runs/kd9 --pretrained runs/kd8/model",
        "pretrained": {
            "pretrained": "runs/kd8/model",
            "warm_start": True,
            "source_command": kd8,
            "source_pretrained": {
                "pretrained": "lungdemo/shipped_model",
                "warm_start": True,
                "source_command": kd5,
                "source_pretrained": {"pretrained": "none"},
            },
        },
    }
    text = render_model_card(folder_with(tmp_path, metrics=fake_metrics(), training_args=args))
    reproduce = text.split("## How to reproduce", 1)[1]
    assert "3. Make the folders the steps below read before any of them writes them" in reproduce
    assert "`lungdemo/shipped_model`. The project's `docs/results.md` lists the commands that made it." in reproduce
    assert reproduce.index("Make the folders") < reproduce.index(kd5) < reproduce.index(kd8)
