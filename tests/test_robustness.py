"""train.robustness: the suite runs through the app's path and reports what it measured."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lungdemo.decode import decode_image
from lungdemo.folder import write_model_folder
from lungdemo.model import LungAlexNet
from lungdemo.predictor import Predictor
from lungdemo.preprocessing import PreprocessConfig
from tests.conftest import TEST_CLASSES, fake_metrics
from train import robustness
from train.data import scan_dataset
from train.perturb import apply
from train.suites import SUITES

FOLDERS = {"adenocarcinoma": 0, "large.cell.carcinoma": 1, "normal": 2, "squamous.cell.carcinoma": 3}


def tiny_dataset(root: Path, per_class: int = 2) -> Path:
    """test/<class>/*.png: ellipses whose size depends on the class, a few per class."""
    for name, label in FOLDERS.items():
        folder = root / "test" / name
        folder.mkdir(parents=True)
        for k in range(per_class):
            img = Image.new("L", (120, 90), 0)
            r = 20 + 8 * label + 2 * k
            ImageDraw.Draw(img).ellipse([60 - r, 45 - r * 0.7, 60 + r, 45 + r * 0.7], fill=90 + 30 * label)
            img.save(folder / f"{k}.png")
    return root


def model_folder(path: Path, resize: str = "slice_crop_pad") -> Path:
    import torch

    torch.manual_seed(0)
    cfg = PreprocessConfig(image_size=64, resize=resize)
    model = LungAlexNet(class_names=list(TEST_CLASSES), hidden=16, preprocessing=cfg.to_dict()).eval()
    return write_model_folder(model, path, json_files={"metrics.json": fake_metrics()})


def test_cli_writes_a_report_with_clean_rows_and_worst(tmp_path: Path, capsys) -> None:
    data = tiny_dataset(tmp_path / "data")
    out = tmp_path / "robustness.json"
    argv = ["--model", str(model_folder(tmp_path / "model")), "--data-dir", str(data)]
    only = ["--only", "jpeg q75", "--only", "frame white 5%", "--only", "frame white 20%"]
    assert robustness.main([*argv, *only, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["suite"] == "dev" and report["n"] == 8
    assert report["preprocessing"]["resize"] == "slice_crop_pad"
    names = [r["name"] for r in report["perturbations"]]
    assert names == ["frame white 5%", "frame white 20%", "jpeg q75"]
    clean = report["clean"]["macro_f1"]
    for row in report["perturbations"]:
        assert row["drop_macro_f1"] == pytest.approx(clean - row["macro_f1"])
        assert 0 <= row["agreement_with_clean"] <= 1 and set(row["recall"]) == set(TEST_CLASSES)
    worst = min(report["perturbations"], key=lambda r: r["macro_f1"])
    assert report["worst"]["name"] == worst["name"]
    assert report["failing"] == [r["name"] for r in report["perturbations"] if r["drop_macro_f1"] > 0.03]
    assert report["passed"] == (not report["failing"])
    ci = report["clean"]["intervals"]["macro_f1"]
    assert ci["low"] <= clean <= ci["high"]
    assert "worst:" in capsys.readouterr().out


def test_write_metrics_puts_the_summary_in_metrics_json_the_card_and_the_tab(tmp_path: Path, capsys) -> None:
    from lungdemo.web.demo import build_demo

    data = tiny_dataset(tmp_path / "data")
    folder = model_folder(tmp_path / "model")
    before = json.loads((folder / "metrics.json").read_text())
    only = ["--only", "frame white 20%", "--only", "jpeg q75"]
    argv = ["--model", str(folder), "--data-dir", str(data), *only, "--out", str(tmp_path / "r.json")]
    assert robustness.main([*argv, "--write-metrics"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    block = metrics.pop("robustness")
    assert metrics == before  # the other blocks untouched
    assert block["command"].startswith("python -m train.robustness --model ")
    assert [r["name"] for r in block["perturbations"]] == ["frame white 20%", "jpeg q75"]
    assert [r["macro_f1"] for r in block["perturbations"]] == [r["macro_f1"] for r in report["perturbations"]]
    assert block["worst"] == report["worst"] and block["passed"] == report["passed"]
    card = (folder / "README.md").read_text()
    assert "### Real uploads (robustness)" in card
    worst = block["worst"]
    assert f"Worst case: {worst['name']}, macro F1 {worst['macro_f1']:.3f}" in card
    assert f"| jpeg q75 | jpeg | dev | {block['perturbations'][1]['macro_f1']:.3f} |" in card
    assert block["by_suite"]["dev"]["n"] == 2 and "By suite: `dev`" in card
    demo, _ = build_demo(str(folder), warmup=False)
    blocks = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    rows = blocks["robustness"].value["data"]
    assert [r[0] for r in rows] == ["the dataset's own files", "frame white 20%", "jpeg q75"]
    assert rows[1][2] == "dev" and rows[1][3] == round(block["perturbations"][0]["macro_f1"], 3)
    assert f"Worst case: **{worst['name']}**" in blocks["robustness-intro"].value
    assert "By suite: `dev`" in blocks["robustness-intro"].value


def test_write_metrics_refuses_a_hub_reference(tmp_path: Path, capsys) -> None:
    data = tiny_dataset(tmp_path / "data")
    argv = ["--model", "user/repo", "--data-dir", str(data), "--write-metrics"]
    assert robustness.main(argv) == 2
    assert "--write-metrics needs a local model folder, not a Hub reference" in capsys.readouterr().err


def test_the_validation_split_can_be_perturbed_but_not_written(tmp_path: Path, capsys) -> None:
    """``--split valid`` reads the validation slices (to choose models by) and never writes metrics."""
    data = tiny_dataset(tmp_path / "data")
    for path in (data / "test").rglob("0.png"):  # one validation slice a class, two test ones
        (data / "valid" / path.parent.name).mkdir(parents=True)
        shutil.copy(path, data / "valid" / path.parent.name / path.name)
    n_valid = len(list((data / "valid").rglob("*.png")))
    folder = model_folder(tmp_path / "model")
    argv = ["--model", str(folder), "--data-dir", str(data), "--only", "jpeg q75", "--out", str(tmp_path / "r.json")]
    assert robustness.main([*argv, "--split", "valid"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["split"] == "valid" and report["n"] == n_valid < len(list((data / "test").rglob("*.png")))
    assert "valid split" in capsys.readouterr().out
    assert robustness.main([*argv, "--split", "valid", "--write-metrics"]) == 2
    assert "--write-metrics stores the test split's figures" in capsys.readouterr().err


def test_predictions_are_those_of_predictor_predict_on_the_perturbed_file(tmp_path: Path) -> None:
    """The batch path of the suite gives what the app gives for the same uploaded bytes."""
    data = tiny_dataset(tmp_path / "data", per_class=1)
    predictor = Predictor.from_ref(model_folder(tmp_path / "model"))
    samples = scan_dataset(data, ("test",))["test"]
    originals = [s.path.read_bytes() for s in samples]
    p = next(p for p in SUITES["dev"].perturbations if p.kind == "canvas")
    _, preds = robustness.evaluate_perturbation(predictor, originals, [s.label for s in samples], p, seed=5)
    for i, data_bytes in enumerate(originals):
        upload = apply(p, decode_image(data_bytes)[0], 5 + i)
        app = predictor.predict(upload).probabilities
        assert preds[i] == TEST_CLASSES.index(max(app, key=app.__getitem__))


def test_slice_crop_pad_undoes_a_white_frame_where_body_crop_pad_does_not(tmp_path: Path) -> None:
    """What the model sees of a framed upload: the clean slice again, or the frame shrunk into it."""
    data = tiny_dataset(tmp_path / "data", per_class=1)
    originals = [s.path.read_bytes() for s in scan_dataset(data, ("test",))["test"]]
    frame = next(p for p in SUITES["dev"].perturbations if p.name == "frame white 20%")
    for resize, close in (("slice_crop_pad", True), ("body_crop_pad", False)):
        cfg = PreprocessConfig(image_size=64, resize=resize)
        for i in range(len(originals)):
            clean, _ = robustness.canonical_of(originals, cfg, robustness.CLEAN, i, 0)
            framed, missed = robustness.canonical_of(originals, cfg, frame, i, 0)
            diff = (framed.int() - clean.int()).abs().float().mean().item()
            assert (diff < 1.0) == close and not missed


def test_limit_per_class_and_select() -> None:
    samples = [type("S", (), {"label": lab})() for lab in [0, 0, 0, 1, 2, 2]]
    assert [s.label for s in robustness.limit_per_class(samples, 2)] == [0, 0, 1, 2, 2]
    assert robustness.limit_per_class(samples, None) == samples
    assert len(robustness.select("all", [])) == sum(len(s.perturbations) for s in SUITES.values())
    assert {p.kind for p in robustness.select("holdout", ["jpeg"])} == {"jpeg", "combo"}


def test_bad_arguments_exit_2_with_a_message(tmp_path: Path, capsys) -> None:
    folder = str(model_folder(tmp_path / "model"))
    assert robustness.main(["--model", folder, "--data-dir", str(tmp_path / "missing")]) == 2
    assert "error:" in capsys.readouterr().err
    data = str(tiny_dataset(tmp_path / "data", per_class=1))
    assert robustness.main(["--model", folder, "--data-dir", data, "--only", "no such thing"]) == 2
    assert "no perturbation" in capsys.readouterr().err
    assert robustness.main(["--model", str(tmp_path / "nope"), "--data-dir", data]) == 2


@pytest.mark.integration
def test_shipped_model_on_a_few_real_slices(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    argv = ["--model", "lungdemo/shipped_model", "--data-dir", str(data_dir), "--limit", "3", "--out", str(out)]
    assert robustness.main([*argv, "--only", "jpeg q75"]) == 0
    report = json.loads(out.read_text())
    stored = json.loads(Path("lungdemo/shipped_model/config.json").read_text())["preprocessing"]
    shipped = PreprocessConfig.from_dict(stored).to_dict()  # keys added since read as they were meant
    assert report["n"] == 12 and report["preprocessing"] == shipped
    assert np.isfinite(report["worst"]["macro_f1"])


def test_teachers_are_scored_through_the_apps_path(tmp_path: Path, capsys) -> None:
    """``--teacher``: one teacher, or the ensemble of several, answers the perturbed files as the app frames them."""
    import torch

    from lungdemo.preprocessing import decode_canonical, normalize
    from tests.training_helpers import teacher_folder
    from train.teacher import load_teachers

    data = tiny_dataset(tmp_path / "data", per_class=1)
    pre = PreprocessConfig(image_size=64, resize="slice_crop_pad")
    a, b = teacher_folder(tmp_path / "a", pre, 1), teacher_folder(tmp_path / "b", pre, 2)
    out = tmp_path / "r.json"
    argv = ["--data-dir", str(data), "--only", "jpeg q75", "--out", str(out)]
    samples = scan_dataset(data, ("test",))["test"]
    canon = torch.stack([decode_canonical(s.path.read_bytes(), pre)[0] for s in samples])
    for folders in ((a,), (a, b)):
        assert robustness.main(["--teacher", *map(str, folders), *argv]) == 0
        report = json.loads(out.read_text())
        assert report["model"] == " + ".join(map(str, folders)) and report["n"] == len(samples)
        with torch.no_grad():
            want = load_teachers(folders, pre)(normalize(canon, pre)).argmax(1).tolist()
        right = sum(w == s.label for w, s in zip(want, samples, strict=True))
        assert report["clean"]["accuracy"] == pytest.approx(right / len(samples))
    assert robustness.main(["--teacher", str(a), *argv, "--write-metrics"]) == 2
    assert "a teacher has no metrics.json" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):  # one or the other
        robustness.main(["--teacher", str(a), "--model", str(a), *argv])
    assert "not allowed with argument" in capsys.readouterr().err
