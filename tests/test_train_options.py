"""python -m train options, each checked by its effect: --patience, --freeze-features,
--features-lr-mult, --mixup, --push-to-hub (end to end against the fake Hub).

All runs use tiny fake datasets in tmp_path (8 training slices, 64x64, a 32-wide head).
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import load_file, save_file

import train.loop as loop_mod
import train.train as train_mod
from lungdemo.folder import FOLDER_PATTERNS
from lungdemo.loading import load_model
from lungdemo.model import LungAlexNet
from tests.hub_helpers import hub_env
from tests.hub_server import FakeHub
from tests.training_helpers import error_line, fake_dataset, small_args
from train.config import TrainConfig
from train.data import CLASS_NAMES, scan_dataset
from train.train import build_optimizer, build_scheduler, limit_samples

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_dataset(tmp_path_factory.mktemp("data") / "ct")


@pytest.fixture(scope="module")
def start_weights(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """ImageNet-shaped AlexNet features (random, seeded) as a --pretrained file: known starting weights."""
    torch.manual_seed(99)
    features = {k: v for k, v in torchvision.models.alexnet(weights=None).state_dict().items() if "features" in k}
    path = tmp_path_factory.mktemp("start") / "features.safetensors"
    save_file(features, str(path))
    return {"path": path, "state": features}


def run_from(data: Path, tmp_path: Path, start_weights: dict, *extra: str, lr: str = "1e-3") -> dict[str, torch.Tensor]:
    """Train two epochs from the known starting features; returns the trained weights."""
    out = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    argv = small_args(data, out, tmp_path / "cache", *extra, "--lr", lr, epochs=2)
    argv[argv.index("--pretrained") + 1] = str(start_weights["path"])
    assert train_mod.main(argv) == 0
    return load_file(str(out / "model" / "model.safetensors"))


def features_unchanged(trained: dict[str, torch.Tensor], start: dict[str, torch.Tensor]) -> list[bool]:
    return [torch.equal(trained[k], v) for k, v in start.items()]


# --- --patience -------------------------------------------------------------------------------


def test_patience_stops_at_the_right_epoch(data: Path, tmp_path: Path) -> None:
    # lr 0: the weights never change, so epoch 1 is the best and each later epoch is stale;
    # with --patience 2 the run stops after epoch 3 of 8
    argv = small_args(data, tmp_path / "run", tmp_path / "cache", "--lr", "0", "--patience", "2", epochs=8)
    assert train_mod.main(argv) == 0
    args = json.loads((tmp_path / "run" / "model" / "training_args.json").read_text())
    assert (args["epochs_run"], args["best_epoch"], args["stopped_early"]) == (3, 1, True)
    history = json.loads((tmp_path / "run" / "model" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]


# --- --freeze-features and --features-lr-mult --------------------------------------------------


def test_freeze_features_keeps_the_starting_features(data: Path, tmp_path: Path, start_weights: dict) -> None:
    trained = run_from(data, tmp_path, start_weights, "--freeze-features")
    assert all(features_unchanged(trained, start_weights["state"]))


def test_without_freezing_the_features_train(data: Path, tmp_path: Path, start_weights: dict) -> None:
    trained = run_from(data, tmp_path, start_weights)
    assert not any(features_unchanged(trained, start_weights["state"]))


def test_features_lr_mult_zero_keeps_the_features_and_trains_the_head(
    data: Path, tmp_path: Path, start_weights: dict
) -> None:
    trained = run_from(data, tmp_path, start_weights, "--features-lr-mult", "0")
    assert all(features_unchanged(trained, start_weights["state"]))
    untrained = run_from(data, tmp_path, start_weights, lr="0")  # the head as initialised
    head = [k for k in trained if k.startswith("classifier.")]
    assert head and not any(torch.equal(trained[k], untrained[k]) for k in head)


def test_features_lr_mult_shows_in_the_optimizer_param_groups(tmp_path: Path) -> None:
    cfg = TrainConfig(data_dir=tmp_path, out=tmp_path, lr=2e-4, features_lr_mult=0.25, epochs=5, warmup_epochs=1)
    model = LungAlexNet(class_names=list(CLASS_NAMES), hidden=32)
    optimizer = build_optimizer(model, cfg)
    head, feats = optimizer.param_groups
    assert {id(p) for p in head["params"]} == {id(p) for p in model.classifier.parameters()}
    assert {id(p) for p in feats["params"]} == {id(p) for p in model.features.parameters()}
    scheduler = build_scheduler(optimizer, cfg)
    for _ in range(4):  # warm-up and cosine scale both groups alike: the ratio stays
        assert feats["lr"] == pytest.approx(0.25 * head["lr"], rel=1e-12)
        optimizer.step()
        scheduler.step()
    assert head["initial_lr"] == 2e-4 and feats["initial_lr"] == pytest.approx(5e-5)


def test_freeze_features_leaves_only_the_head_to_the_optimizer(tmp_path: Path) -> None:
    model = LungAlexNet(class_names=list(CLASS_NAMES), hidden=32)
    optimizer = build_optimizer(model, TrainConfig(data_dir=tmp_path, out=tmp_path, freeze_features=True))
    (head,) = optimizer.param_groups
    assert {id(p) for p in head["params"]} == {id(p) for p in model.classifier.parameters()}
    assert not any(p.requires_grad for p in model.features.parameters())


# --- --mixup -----------------------------------------------------------------------------------


def test_mixup_reaches_every_epoch_and_is_recorded(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What mixup does to inputs and targets is in test_engine.py; here: the flag gets there."""
    seen = []
    real_epoch = loop_mod.train_one_epoch

    def spy(parts, batch, cfg, epoch):
        seen.append(cfg.mixup)
        return real_epoch(parts, batch, cfg, epoch)

    monkeypatch.setattr(loop_mod, "train_one_epoch", spy)
    assert train_mod.main(small_args(data, tmp_path / "run", tmp_path / "cache", "--mixup", "0.3", epochs=2)) == 0
    assert seen == [0.3, 0.3]
    assert json.loads((tmp_path / "run" / "model" / "training_args.json").read_text())["args"]["mixup"] == 0.3


# --- --push-to-hub ------------------------------------------------------------------------------


def test_push_to_hub_from_a_training_run(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = small_args(data, out, tmp_path / "cache", "--push-to-hub", "user/lung-ct")
    with FakeHub() as hub:
        proc = subprocess.run(
            [sys.executable, "-m", "train", *argv],
            cwd=REPO,
            env=hub_env(tmp_path, hub),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        head = hub.head("user/lung-ct")
    assert f"pushed to {hub.url}/user/lung-ct/commit/{head.sha}" in proc.stdout
    folder = out / "model"
    local = {
        p.name: p.read_bytes()
        for p in folder.iterdir()
        if p.is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in FOLDER_PATTERNS)
    }
    assert {"model.safetensors", "config.json", "metrics.json", "training_args.json", "README.md"} <= local.keys()
    committed = {k: v for k, v in head.files.items() if k != ".gitattributes"}
    assert committed == local  # what was trained is what was pushed, byte for byte
    assert "user/lung-ct" in local["README.md"].decode()  # the card names the repo it was pushed to
    load_model(folder)


def test_push_to_hub_with_a_bad_repo_id_fails_before_training(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(train_mod, "load_images", lambda *a, **k: pytest.fail("the dataset was decoded"))
    argv = small_args(data, tmp_path / "run", tmp_path / "cache", "--push-to-hub", "not-a-repo-id")
    assert train_mod.main(argv) == 2
    assert error_line(capsys.readouterr().err) == (
        "error: repo id 'not-a-repo-id' must be of the form user/repo (or organisation/repo)"
    )
    assert not (tmp_path / "run").exists()


# --- the out-of-distribution check, fitted at the end of training ------------------------------


def test_training_fits_and_measures_the_upload_check(data: Path, tmp_path: Path) -> None:
    from lungdemo.predictor import Predictor
    from lungdemo.web.demo import build_demo
    from train.ood_corpus import build_corpus

    out = tmp_path / "run"
    assert train_mod.main(small_args(data, out, tmp_path / "cache", ood=True)) == 0
    folder = out / "model"
    stored = json.loads((folder / "ood.json").read_text())
    block = json.loads((folder / "metrics.json").read_text())["ood"]
    args = json.loads((folder / "training_args.json").read_text())
    splits = {k: limit_samples(v, 6) for k, v in scan_dataset(data).items()}  # what small_args's --limit 6 uses
    n_train, n_valid, n_test = (len(splits[k]) for k in ("train", "valid", "test"))
    assert stored["distance"]["n_reference"] == n_train  # the training split only
    assert stored["info"]["fitted_on"] == {"train_slices": n_train, "valid_slices": n_valid}
    assert stored["info"]["command"] == args["command"] and args["args"]["ood_check"] is True
    assert block["threshold"] == stored["distance"]["threshold"] and block["k"] == stored["distance"]["k"]
    assert block["n_in_distribution"] == n_test and block["n_corpus"] == len(build_corpus(data))
    assert 0.0 <= block["auroc"] <= 1.0 and 0.0 <= block["corpus_flagged"] <= 1.0
    predictor = Predictor.from_ref(folder)
    assert predictor.ood is not None and predictor.ood.description == block["description"]
    card = (folder / "README.md").read_text()
    assert "### Out-of-distribution check" in card and f"AUROC {block['auroc']:.4f}" in card
    demo, _ = build_demo(str(folder), warmup=False)
    texts = {getattr(b, "elem_id", None): getattr(b, "value", None) for b in demo.blocks.values()}
    assert f"AUROC **{block['auroc']:.3f}**" in texts["ood-metrics"]
    assert f"**{block['corpus_flagged']:.1%}** of the other images flagged" in texts["ood-metrics"]


def test_no_ood_check_leaves_the_folder_without_one(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train_mod.main(small_args(data, out, tmp_path / "cache")) == 0  # small_args: --no-ood-check
    assert not list((out / "model").glob("ood*"))
    assert "ood" not in json.loads((out / "model" / "metrics.json").read_text())
    assert "Out-of-distribution check" not in (out / "model" / "README.md").read_text()
