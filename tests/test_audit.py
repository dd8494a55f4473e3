"""train.audit: on a planted synthetic dataset, and (integration) on the real chest CT dataset."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.training_helpers import error_line
from train import audit
from train.data import SPLITS

LONG = {
    "adenocarcinoma": "adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib",
    "large_cell_carcinoma": "large.cell.carcinoma_left.hilum_T2_N2_M0_IIIa",
    "normal": "normal",
    "squamous_cell_carcinoma": "squamous.cell.carcinoma_left.hilum_T1_N2_M0_IIIa",
}
SHORT = {
    "adenocarcinoma": "adenocarcinoma",
    "large_cell_carcinoma": "large.cell.carcinoma",
    "normal": "normal",
    "squamous_cell_carcinoma": "squamous.cell.carcinoma",
}


def smooth_image(seed: int, size: int = 96) -> Image.Image:
    """A smooth random slice: distinct seeds give perceptual hashes far apart."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).resize((size, size), Image.Resampling.BICUBIC)


def folder(root: Path, split: str, cls: str) -> Path:
    return root / split / (SHORT if split == "test" else LONG)[cls]


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """2 distinct images per split and class, plus planted problems."""
    root = tmp_path / "data"
    seed = 0
    for split in SPLITS:
        for cls in LONG:
            d = folder(root, split, cls)
            d.mkdir(parents=True)
            for i in range(2):
                smooth_image(seed).save(d / f"img{i}.png")
                seed += 1
    # 1. an exact copy of a training file in test
    shutil.copyfile(
        folder(root, "train", "adenocarcinoma") / "img0.png", folder(root, "test", "adenocarcinoma") / "copy.png"
    )
    # 2. a near copy: a training slice re-saved as JPEG at quality 90
    src = Image.open(folder(root, "train", "normal") / "img0.png")
    src.save(folder(root, "test", "normal") / "resaved.jpg", "JPEG", quality=90)
    # 3. a near copy: a validation slice resized
    src = Image.open(folder(root, "valid", "squamous_cell_carcinoma") / "img1.png")
    src.resize((80, 80)).save(folder(root, "test", "squamous_cell_carcinoma") / "smaller.png")
    # 4. one file under two classes (an exact copy within train)
    shutil.copyfile(
        folder(root, "train", "large_cell_carcinoma") / "img0.png",
        folder(root, "train", "squamous_cell_carcinoma") / "dup.png",
    )
    # 5. a JPEG named .png
    buf = io.BytesIO()
    smooth_image(999).save(buf, "JPEG", quality=95)
    (folder(root, "valid", "normal") / "really_a_jpeg.png").write_bytes(buf.getvalue())
    return root


def rel(root: Path, split: str, cls: str, name: str) -> str:
    return folder(root, split, cls).relative_to(root).joinpath(name).as_posix()


def test_planted_problems_are_found(planted: Path) -> None:
    report = audit.audit_dataset(planted)
    assert report["counts"]["train"] == {
        "adenocarcinoma": 2,
        "large_cell_carcinoma": 2,
        "normal": 2,
        "squamous_cell_carcinoma": 3,
        "total": 9,
    }
    assert report["counts"]["valid"]["total"] == 9 and report["counts"]["test"]["total"] == 11

    ex = report["exact_duplicates"]
    assert ex["groups"] == 2 and ex["files_in_groups"] == 4
    assert ex["groups_across_splits"] == {"train-test": 1}
    assert ex["extra_copies_within_split"] == {"train": 1}
    copy_group = next(g for g in ex["list"] if any(f["split"] == "test" for f in g))
    assert {f["path"] for f in copy_group} == {
        rel(planted, "train", "adenocarcinoma", "img0.png"),
        rel(planted, "test", "adenocarcinoma", "copy.png"),
    }

    (conflict,) = report["class_conflicts"]
    assert {(f["path"], f["class"]) for f in conflict} == {
        (rel(planted, "train", "large_cell_carcinoma", "img0.png"), "large_cell_carcinoma"),
        (rel(planted, "train", "squamous_cell_carcinoma", "dup.png"), "squamous_cell_carcinoma"),
    }

    near = report["near_duplicates"]
    assert near["pairs"] == 2  # the two planted ones; exact copies are not counted again
    assert near["pairs_across_splits"] == {"train-test": 1, "valid-test": 1}
    pairs = {frozenset((p["a"]["path"], p["b"]["path"])) for p in near["list"]}
    assert pairs == {
        frozenset((rel(planted, "train", "normal", "img0.png"), rel(planted, "test", "normal", "resaved.jpg"))),
        frozenset(
            (
                rel(planted, "valid", "squamous_cell_carcinoma", "img1.png"),
                rel(planted, "test", "squamous_cell_carcinoma", "smaller.png"),
            )
        ),
    }
    assert all(p["distance"] <= report["near_threshold"] for p in near["list"])

    assert report["extension_mismatch"] == [
        {
            "path": rel(planted, "valid", "normal", "really_a_jpeg.png"),
            "split": "valid",
            "class": "normal",
            "format": "JPEG",
        }
    ]
    assert report["formats"]["test"] == {"JPEG/L": 1, "PNG/L": 10}

    lf = report["leakage_free_test"]
    assert lf["count"] == 8 and lf["leaky_count"] == 3
    leaky = {
        rel(planted, "test", "adenocarcinoma", "copy.png"),
        rel(planted, "test", "normal", "resaved.jpg"),
        rel(planted, "test", "squamous_cell_carcinoma", "smaller.png"),
    }
    assert not leaky & set(lf["files"])
    assert set(lf["files"]) == {rel(planted, "test", cls, f"img{i}.png") for cls in SHORT for i in range(2)}


def test_near_detection_off_still_drops_exact_copies(planted: Path) -> None:
    report = audit.audit_dataset(planted, near_threshold=-1)  # no phash distance is <= -1
    assert report["near_duplicates"]["pairs"] == 0
    lf = report["leakage_free_test"]
    assert lf["count"] == 10  # only the exact copy is dropped
    assert rel(planted, "test", "adenocarcinoma", "copy.png") not in lf["files"]


def test_cli_writes_the_report(planted: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "reports" / "audit.json"
    assert audit.main(["--data-dir", str(planted), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["leakage_free_test"]["count"] == 8
    printed = capsys.readouterr().out
    assert "leakage-free test subset: 8 of 11 test images" in printed
    assert f"report written to {out}" in printed


def test_cli_unreadable_file_is_a_one_line_error(planted: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = folder(planted, "test", "normal") / "img1.png"
    bad.write_bytes(bad.read_bytes()[:50])
    out = tmp_path / "audit.json"
    assert audit.main(["--data-dir", str(planted), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    err = error_line(captured.err)
    assert err.startswith(f"error: cannot decode {bad}: ")
    assert captured.out == ""
    assert not out.exists()


def test_cli_unwritable_report_is_a_one_line_error(
    planted: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "file.txt").write_text("a file, not a folder")
    out = tmp_path / "file.txt" / "audit.json"
    assert audit.main(["--data-dir", str(planted), "--out", str(out)]) == 2
    assert error_line(capsys.readouterr().err).startswith(f"error: cannot write {out}: ")
    assert (tmp_path / "file.txt").read_text() == "a file, not a folder"


def test_cli_report_write_is_atomic(planted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while putting the report in place leaves the previous report and no temporary file."""
    out = tmp_path / "reports" / "audit.json"
    out.parent.mkdir()
    out.write_text('{"old": true}')

    def full_disk(self, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "replace", full_disk)
    assert audit.main(["--data-dir", str(planted), "--out", str(out)]) == 2
    monkeypatch.undo()
    assert out.read_text() == '{"old": true}'
    assert sorted(p.name for p in out.parent.iterdir()) == ["audit.json"]


# --- the real dataset (one audit run, ~10 s) -------------------------------------------------


@pytest.fixture(scope="module")
def real_report(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("audit") / "audit.json"
    assert audit.main(["--data-dir", str(data_dir), "--out", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.integration
def test_real_counts(real_report: dict) -> None:
    # the table in ../shared/data/README.md
    assert real_report["counts"]["train"] == {
        "adenocarcinoma": 195,
        "large_cell_carcinoma": 115,
        "normal": 148,
        "squamous_cell_carcinoma": 155,
        "total": 613,
    }
    assert real_report["counts"]["valid"]["total"] == 72
    assert real_report["counts"]["test"]["total"] == 315


@pytest.mark.integration
def test_real_cross_split_exact_duplicates(real_report: dict) -> None:
    ex = real_report["exact_duplicates"]
    assert ex["groups_across_splits"].get("train-test", 0) > 0
    assert ex["groups"] > 0 and ex["files_in_groups"] > ex["groups"]
    train_test = [g for g in ex["list"] if {"train", "test"} <= {f["split"] for f in g}]
    assert len(train_test) == ex["groups_across_splits"]["train-test"]


@pytest.mark.integration
def test_real_class_conflict(real_report: dict) -> None:
    names = [{Path(f["path"]).name: f["class"] for f in group} for group in real_report["class_conflicts"]]
    assert {"l4.png": "large_cell_carcinoma", "sq2.png": "squamous_cell_carcinoma"} in names


@pytest.mark.integration
def test_real_jpegs_named_png(real_report: dict) -> None:
    mismatched = real_report["extension_mismatch"]
    assert mismatched
    assert all(m["path"].endswith(".png") and m["format"] == "JPEG" for m in mismatched)


@pytest.mark.integration
def test_real_leakage_free_subset(real_report: dict, data_dir: Path) -> None:
    lf = real_report["leakage_free_test"]
    assert 0 < lf["count"] < 315
    assert lf["count"] + lf["leaky_count"] == 315
    clean = set(lf["files"])
    assert all(re.match(r"test/", f) and (data_dir / f).is_file() for f in clean)
    # no leakage-free file is an exact or near copy of a train/valid file
    for group in real_report["exact_duplicates"]["list"]:
        if any(f["split"] != "test" for f in group):
            assert not clean & {f["path"] for f in group if f["split"] == "test"}
    for pair in real_report["near_duplicates"]["list"]:
        a, b = pair["a"], pair["b"]
        if {a["split"], b["split"]} & {"train", "valid"} and "test" in (a["split"], b["split"]):
            test_side = a if a["split"] == "test" else b
            assert test_side["path"] not in clean
