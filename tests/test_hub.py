"""Publishing to and loading from the Hugging Face Hub, with the real client and no network.

Download side: a Hub cache is built by hand in ``tmp_path`` (``models--user--repo/refs`` and
``snapshots/<sha>``) and loaded with offline mode on, by repo id, branch and pinned commit.
Upload side: ``python -m train.push`` runs in a subprocess whose ``HF_ENDPOINT`` points at
:class:`tests.hub_server.FakeHub` on 127.0.0.1. ``huggingface_hub`` reads its environment
when imported, so code that needs a different endpoint or offline setting than this process
runs in a subprocess; in-process tests only repoint ``constants.HF_HUB_CACHE`` and
``constants.HF_HUB_OFFLINE``, which the client reads at call time.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub import constants as hub_constants
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from lungdemo.loading import ModelLoadError, _offline_message, load_model, parse_model_ref
from lungdemo.predictor import Predictor
from tests.conftest import TEST_CLASSES, make_model_folder
from tests.hub_server import FakeHub, git_blob_sha1
from train.card import DATASET_ID, render_model_card
from train.push import PushError, check_can_push, push_folder

REPO_ROOT = Path(__file__).resolve().parents[1]
SHA_OLD = "1" * 40
SHA_NEW = "2" * 40
PUSHED_SUFFIXES = {".safetensors", ".json", ".md", ".png"}

LOAD_SCRIPT = """
import json, sys
from lungdemo.loading import ModelLoadError, load_model
from lungdemo.predictor import Predictor
image, refs = sys.argv[1], sys.argv[2:]
out = []
for ref in refs:
    try:
        loaded = load_model(ref)
    except ModelLoadError as exc:
        out.append({"ref": ref, "error": str(exc)})
        continue
    probs = Predictor(loaded).predict(image).probabilities
    out.append({"ref": ref, "revision": loaded.revision, "folder": str(loaded.folder), "probabilities": probs})
print(json.dumps(out))
"""


# --- helpers ------------------------------------------------------------------------------------
def slice_png(path: Path) -> Path:
    """A CT-like test slice: dark background, a bright 'body' with some structure inside."""
    img = Image.new("L", (140, 100), 0)
    draw = ImageDraw.Draw(img)
    draw.ellipse((15, 10, 125, 92), fill=170)
    draw.ellipse((35, 30, 65, 75), fill=40)
    draw.ellipse((78, 28, 110, 72), fill=55)
    draw.rectangle((66, 20, 74, 85), fill=230)
    noise = np.random.default_rng(0).integers(0, 12, (100, 140), dtype=np.uint8)
    Image.fromarray(np.asarray(img, dtype=np.uint8) + noise, mode="L").save(path)
    return path


def predict(ref: str | Path, image: Path) -> dict[str, float]:
    return Predictor(load_model(ref)).predict(image).probabilities


def build_cache(cache: Path, repo_id: str, snapshots: dict[str, Path], refs: dict[str, str]) -> Path:
    """A Hub cache as ``snapshot_download`` leaves it: refs hold the sha with no newline."""
    root = cache / ("models--" + repo_id.replace("/", "--"))
    for sha, folder in snapshots.items():
        shutil.copytree(folder, root / "snapshots" / sha)
    for name, sha in refs.items():
        ref = root / "refs" / name
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(sha, encoding="utf-8")
    return root


def hub_env(tmp_path: Path, hub: FakeHub | None = None, **extra: str) -> dict[str, str]:
    """A clean environment for a subprocess: no real token, cache or proxy; the fake Hub if given."""
    drop = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(drop) and k.lower() not in {"http_proxy", "https_proxy", "all_proxy"}
    }
    env.update(
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_OFFLINE="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    if hub is not None:
        env.update(HF_ENDPOINT=hub.url, HF_TOKEN="hf_test_token", HF_HUB_OFFLINE="0")
    env.update(extra)
    return env


def run_push(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "train.push", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def run_loads(env: dict[str, str], image: Path, *refs: str) -> list[dict[str, Any]]:
    """Load refs and predict ``image`` in a fresh interpreter that sees ``env`` at import."""
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(image), *refs],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pushed_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.suffix in PUSHED_SUFFIXES}


# --- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two model folders with different random weights, a test slice, and their predictions."""
    root = tmp_path_factory.mktemp("models")
    old = make_model_folder(root / "old", seed=0)
    new = make_model_folder(root / "new", seed=1)
    (new / "training_curves.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a plot")
    image = slice_png(root / "slice.png")
    expected = {"old": predict(old, image), "new": predict(new, image)}
    assert expected["old"] != expected["new"], "the two folders must be told apart by their predictions"
    return {"old": old, "new": new, "image": image, "expected": expected}


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point this process's client at an empty cache in tmp_path, offline."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def cached_repo(offline_cache: Path, models: dict[str, Any]) -> Path:
    """``user/lung`` in the cache: main -> new weights, branch experiment -> old weights."""
    build_cache(
        offline_cache,
        "user/lung",
        {SHA_OLD: models["old"], SHA_NEW: models["new"]},
        {"main": SHA_NEW, "experiment": SHA_OLD},
    )
    return offline_cache


# --- download side --------------------------------------------------------------------------------
def test_load_by_repo_id_uses_main(cached_repo: Path, models: dict[str, Any]) -> None:
    loaded = load_model("user/lung")
    assert loaded.revision == SHA_NEW
    assert loaded.folder == cached_repo / "models--user--lung" / "snapshots" / SHA_NEW
    assert loaded.description == f"user/lung@{SHA_NEW}"
    assert loaded.metrics is not None and loaded.metrics["class_names"] == TEST_CLASSES
    assert Predictor(loaded).predict(models["image"]).probabilities == models["expected"]["new"]


def test_load_by_branch(cached_repo: Path, models: dict[str, Any]) -> None:
    loaded = load_model("user/lung@experiment")
    assert loaded.revision == SHA_OLD
    assert Predictor(loaded).predict(models["image"]).probabilities == models["expected"]["old"]


def test_load_by_pinned_commit_needs_no_refs(offline_cache: Path, models: dict[str, Any]) -> None:
    build_cache(offline_cache, "user/pinned", {SHA_OLD: models["old"]}, refs={})
    loaded = load_model(f"user/pinned@{SHA_OLD}")
    assert loaded.revision == SHA_OLD
    assert loaded.ref.is_pinned
    assert Predictor(loaded).predict(models["image"]).probabilities == models["expected"]["old"]


def test_offline_env_in_fresh_process(tmp_path: Path, models: dict[str, Any]) -> None:
    """The real user path: HF_HUB_OFFLINE=1 and HF_HUB_CACHE set before the client is imported."""
    cache = tmp_path / "cache"
    build_cache(cache, "user/lung", {SHA_OLD: models["old"], SHA_NEW: models["new"]}, {"main": SHA_NEW})
    env = hub_env(tmp_path, HF_HUB_CACHE=str(cache), HF_ENDPOINT="http://127.0.0.1:9")
    results = run_loads(env, models["image"], "user/lung", f"user/lung@{SHA_OLD}", "user/lung@nope")
    assert results[0]["revision"] == SHA_NEW
    assert results[0]["probabilities"] == models["expected"]["new"]
    assert results[1]["probabilities"] == models["expected"]["old"]
    assert "revision 'nope' of user/lung is not in the local Hugging Face cache" in results[2]["error"]
    assert "HF_HUB_OFFLINE=1 is set" in results[2]["error"]


# --- download errors -----------------------------------------------------------------------------
def test_offline_with_empty_cache(offline_cache: Path) -> None:
    with pytest.raises(ModelLoadError) as err:
        load_model("user/lung")
    message = str(err.value)
    assert f"user/lung is not in the local Hugging Face cache ({offline_cache})" in message
    assert "HF_HUB_OFFLINE=1 is set" in message and "unset HF_HUB_OFFLINE" in message
    assert "local model folder" in message


def test_revision_missing_from_cache_lists_what_is_cached(cached_repo: Path) -> None:
    with pytest.raises(ModelLoadError) as err:
        load_model("user/lung@v2")
    message = str(err.value)
    assert "revision 'v2' of user/lung is not in the local Hugging Face cache" in message
    assert f"experiment ({SHA_OLD[:12]})" in message and f"main ({SHA_NEW[:12]})" in message
    assert "unset HF_HUB_OFFLINE" in message


def test_unknown_commit_missing_from_cache(cached_repo: Path) -> None:
    with pytest.raises(ModelLoadError, match=f"revision '{'3' * 40}' of user/lung is not in the local"):
        load_model(f"user/lung@{'3' * 40}")


def test_unreachable_hub_message_when_not_offline(cached_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without HF_HUB_OFFLINE the cause is the network (a real attempt costs ~23 s of retries)."""
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    message = _offline_message(parse_model_ref("user/lung@v2"))
    assert "cannot be reached: check the network connection (and HF_ENDPOINT)" in message
    assert "HF_HUB_OFFLINE=1" not in message
    assert "not in the local Hugging Face cache" in _offline_message(parse_model_ref("user/other"))


def test_empty_revision_is_refused() -> None:
    with pytest.raises(ModelLoadError, match="empty revision after '@'"):
        parse_model_ref("user/lung@")


def test_hub_repo_with_only_pickled_weights(offline_cache: Path, tmp_path: Path, models: dict[str, Any]) -> None:
    folder = tmp_path / "pickle-repo"
    folder.mkdir()
    shutil.copy(models["old"] / "config.json", folder / "config.json")
    marker = tmp_path / "unpickled"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Bomb(str(marker))))
    build_cache(offline_cache, "user/pickles", {SHA_OLD: folder}, {"main": SHA_OLD})
    with pytest.raises(ModelLoadError) as err:
        load_model("user/pickles")
    assert "user/pickles is not a lungdemo model repo: it has no model.safetensors" in str(err.value)
    assert "never downloaded or loaded" in str(err.value)
    assert not marker.exists()


# --- local folder errors (the same checks guard pushes) ------------------------------------------
class _Bomb:
    """Unpickling this creates a file: proof that a loader did (or did not) unpickle."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.marker),))


def test_pickle_only_folder_is_refused_without_unpickling(tmp_path: Path, model_folder: Path) -> None:
    marker = tmp_path / "unpickled"
    (model_folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Bomb(str(marker))))
    (model_folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError) as err:
        load_model(model_folder)
    assert "missing model.safetensors" in str(err.value)
    assert "found ['pytorch_model.bin']: pickled weights are never loaded; export them to safetensors" in str(err.value)
    with pytest.raises(PushError, match="pickled weights are never loaded"):
        push_folder(model_folder, "user/lung", token="hf_test_token")
    assert not marker.exists()


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors"])
def test_folder_missing_a_file(model_folder: Path, missing: str) -> None:
    (model_folder / missing).unlink()
    with pytest.raises(ModelLoadError, match=f"is not a lungdemo model folder: missing {missing}"):
        load_model(model_folder)
    with pytest.raises(PushError, match=f"cannot push .*missing {missing}"):
        push_folder(model_folder, "user/lung", token="hf_test_token")


def test_wrong_class_count(model_folder: Path) -> None:
    config = json.loads((model_folder / "config.json").read_text())
    config["class_names"] = TEST_CLASSES[:3]
    (model_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as err:
        load_model(model_folder)
    message = str(err.value)
    assert "config.json and model.safetensors do not belong together" in message
    assert f"config.json lists 3 classes {TEST_CLASSES[:3]} but the weights' output layer" in message
    assert "has 4 outputs" in message
    assert "classifier.6.weight: file (4, 32) vs config (3, 32)" in message
    with pytest.raises(PushError, match="lists 3 classes"):
        push_folder(model_folder, "user/lung", token="hf_test_token")


def test_wrong_head_width(model_folder: Path) -> None:
    config = json.loads((model_folder / "config.json").read_text())
    config["hidden"] = 0
    (model_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ModelLoadError, match=re.escape("config.json says hidden=0 but the weights have a head of width 32")
    ):
        load_model(model_folder)


def test_weights_of_another_architecture(model_folder: Path) -> None:
    torch.manual_seed(0)
    resnet_like = {
        "conv1.weight": torch.randn(8, 3, 7, 7),
        "bn1.weight": torch.ones(8),
        "fc.weight": torch.randn(4, 8),
        "fc.bias": torch.zeros(4),
    }
    save_file(resnet_like, str(model_folder / "model.safetensors"))
    with pytest.raises(ModelLoadError) as err:
        load_model(model_folder)
    message = str(err.value)
    assert "the weights are not a torchvision AlexNet as config.json says" in message
    assert "['bn1.weight', 'conv1.weight', 'fc.bias']" in message
    assert "missing keys" in message and "unexpected keys" in message


def test_unknown_architecture_in_config(model_folder: Path) -> None:
    config = json.loads((model_folder / "config.json").read_text())
    config["architecture"] = "resnet18"
    (model_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=re.escape("config.json: unknown architecture 'resnet18'")):
        load_model(model_folder)


# --- model card ------------------------------------------------------------------------------------
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


# --- upload side --------------------------------------------------------------------------------------
def test_push_commits_the_folder_byte_for_byte(tmp_path: Path, models: dict[str, Any]) -> None:
    folder = shutil.copytree(models["new"], tmp_path / "model")
    with FakeHub() as hub:
        proc = run_push(hub_env(tmp_path, hub), str(folder), "user/lung-ct")
        assert proc.returncode == 0, proc.stderr
        head = hub.head("user/lung-ct")
        assert f"{hub.url}/user/lung-ct/commit/{head.sha}" in proc.stdout
        assert "LUNGDEMO_MODEL=user/lung-ct python app.py" in proc.stdout
        create = hub.requests_to("POST", "/api/repos/create")[0].json()
        assert create["name"] == "lung-ct" and create["organization"] == "user"
        assert create.get("visibility") != "private" and not hub.repos["user/lung-ct"].private
        commit_header = hub.requests_to("POST", "/commit/main")[0].ndjson()[0]
        assert commit_header["value"]["summary"].startswith("Upload lungdemo model")
        auth = hub.requests_to("POST", "/commit/main")[0].headers["authorization"]
        assert auth == "Bearer hf_test_token"

    local = pushed_files(folder)
    assert {"model.safetensors", "config.json", "metrics.json", "README.md", "training_curves.png"} <= set(local)
    committed = {k: v for k, v in head.files.items() if k != ".gitattributes"}
    assert committed == local, "committed files must be byte-identical to the model folder"
    card = ModelCard(committed["README.md"].decode())
    assert card.data.library_name == "lungdemo" and card.data.model_name == "lung-ct"
    metrics = json.loads(committed["metrics.json"])
    accuracy = {r.dataset_split: r.metric_value for r in card.data.eval_results if r.metric_type == "accuracy"}
    assert accuracy["test"] == pytest.approx(metrics["test"]["accuracy"], abs=5e-5)
    assert accuracy["test_leakage_free"] == pytest.approx(metrics["test_leakage_free"]["accuracy"], abs=5e-5)
    assert "LUNGDEMO_MODEL=user/lung-ct@<revision>" in card.text


def test_private_flag_on_an_existing_public_repo_warns(tmp_path: Path, models: dict[str, Any]) -> None:
    folder = shutil.copytree(models["old"], tmp_path / "model")
    with FakeHub() as hub:
        hub.add_repo("user/lung-ct", private=False)
        proc = run_push(hub_env(tmp_path, hub), str(folder), "user/lung-ct", "--private")
        assert proc.returncode == 0, proc.stderr
        assert not hub.repos["user/lung-ct"].private
    assert "user/lung-ct already exists and is public: --private applies only to new repos" in proc.stderr


def test_push_private_branch_message_and_second_push_is_harmless(tmp_path: Path, models: dict[str, Any]) -> None:
    folder = shutil.copytree(models["old"], tmp_path / "model")
    with FakeHub() as hub:
        env = hub_env(tmp_path, hub)
        args = (str(folder), "user/lung-ct", "--private", "--branch", "exp/1", "--commit-message", "first try")
        first = run_push(env, *args)
        assert first.returncode == 0, first.stderr
        repo = hub.repos["user/lung-ct"]
        assert hub.requests_to("POST", "/api/repos/create")[0].json()["visibility"] == "private"
        assert repo.private
        assert hub.requests_to("POST", "/api/models/user/lung-ct/branch/exp%2F1"), "the branch is created"
        main_sha, branch_sha = repo.branches["main"], repo.branches["exp/1"]
        assert repo.commits[main_sha].parent is None, "main keeps only the initial commit"
        assert repo.commits[branch_sha].message == "first try"
        assert repo.commits[branch_sha].parent == main_sha
        assert {k: v for k, v in repo.commits[branch_sha].files.items() if k != ".gitattributes"} == pushed_files(
            folder
        )
        preupload = hub.requests_to("POST", "/preupload/")[0].json()
        assert all("pytorch_model.bin" not in f["path"] for f in preupload["files"])

        second = run_push(env, *args)
        assert second.returncode == 0, second.stderr
        assert len(hub.requests_to("POST", "/commit/")) == 1, "an unchanged folder makes no second commit"
        assert repo.branches == {"main": main_sha, "exp/1": branch_sha}
        assert f"commit/{branch_sha}" in second.stdout
        assert "LUNGDEMO_MODEL=user/lung-ct@exp/1" in second.stdout


def test_push_then_load_online_then_offline(tmp_path: Path, models: dict[str, Any]) -> None:
    """The issue's round trip: push, first start downloads, second start works offline."""
    folder = shutil.copytree(models["new"], tmp_path / "model")
    with FakeHub() as hub:
        env = hub_env(tmp_path, hub)
        assert run_push(env, str(folder), "user/lung-ct", "--branch", "dev").returncode == 0
        sha = hub.repos["user/lung-ct"].branches["dev"]
        online = run_loads(env, models["image"], "user/lung-ct@dev", "user/lung-ct@missing", "user/absent")
        assert hub.requests_to("GET", f"/user/lung-ct/resolve/{sha}/model.safetensors")
    assert online[0]["revision"] == sha
    assert online[0]["probabilities"] == models["expected"]["new"]
    assert "revision 'missing' does not exist in user/lung-ct" in online[1]["error"]
    assert "use a branch, tag or commit that the repo has" in online[1]["error"]
    assert "Hub repo user/absent not found, or it is private" in online[2]["error"]
    assert "hf auth login" in online[2]["error"]

    offline = run_loads(dict(env, HF_HUB_OFFLINE="1"), models["image"], "user/lung-ct@dev", f"user/lung-ct@{sha}")
    assert [r["probabilities"] for r in offline] == [models["expected"]["new"]] * 2
    cached = Path(offline[0]["folder"])
    assert cached.name == sha and not (cached / "pytorch_model.bin").exists()


# --- upload errors ------------------------------------------------------------------------------------
def test_push_without_a_token(tmp_path: Path, model_folder: Path) -> None:
    with FakeHub() as hub:
        env = hub_env(tmp_path, hub)
        del env["HF_TOKEN"]
        proc = run_push(env, str(model_folder), "user/lung-ct")
        assert hub.requests == [], "nothing is sent without a token"
    assert proc.returncode == 2
    assert "error: no Hugging Face token found, so nothing can be pushed to user/lung-ct" in proc.stderr
    assert "run `hf auth login` (or set HF_TOKEN)" in proc.stderr


def test_push_to_a_namespace_without_permission(tmp_path: Path, model_folder: Path) -> None:
    with FakeHub(forbidden_namespaces={"someone"}) as hub:
        proc = run_push(hub_env(tmp_path, hub), str(model_folder), "someone/their-model")
        assert not hub.requests_to("POST", "/commit/")
    assert proc.returncode == 2
    assert "no permission to create or write someone/their-model (403)" in proc.stderr
    assert "push to your own namespace (your-user/their-model)" in proc.stderr


def test_push_with_a_rejected_token(tmp_path: Path, model_folder: Path) -> None:
    with FakeHub(valid_tokens={"hf_good"}) as hub:
        proc = run_push(hub_env(tmp_path, hub, HF_TOKEN="hf_expired"), str(model_folder), "user/lung-ct")
    assert proc.returncode == 2
    assert "the Hub refused the token (401: invalid or expired)" in proc.stderr
    assert "hf auth login" in proc.stderr


def test_push_to_a_repo_that_cannot_be_found(tmp_path: Path, model_folder: Path) -> None:
    """The repo exists (create answers 409) but is private to someone else: 404 on upload."""
    with FakeHub(hidden_repos={"someone/private-model"}) as hub:
        proc = run_push(hub_env(tmp_path, hub), str(model_folder), "someone/private-model")
        assert hub.requests_to("POST", "/preupload/"), "the upload was attempted"
        assert not hub.requests_to("POST", "/commit/")
    assert proc.returncode == 2
    assert "Hub repo someone/private-model not found, or it is private and your token cannot see it" in proc.stderr
    assert "check the name" in proc.stderr and "hf auth login" in proc.stderr


def test_push_refuses_a_bad_repo_id(model_folder: Path) -> None:
    with pytest.raises(PushError, match="must be of the form user/repo"):
        push_folder(model_folder, "just-a-name", token="hf_test_token")


def test_push_accepts_a_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m train.push runs/NAME user/repo`` validates ``runs/NAME/model``, then stops offline."""
    run = tmp_path / "runs" / "alexnet-1"
    make_model_folder(run / "model")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PushError, match="HF_HUB_OFFLINE=1 is set, so the Hub cannot be reached: unset HF_HUB_OFFLINE"):
        push_folder(run, "user/lung", token="hf_test_token")


def test_push_preflight_for_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``python -m train --push-to-hub`` can check before training starts, offline."""
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    assert check_can_push("user/lung", token="hf_x") == "hf_x"
    with pytest.raises(PushError, match="branch name is empty"):
        check_can_push("user/lung", branch=" ", token="hf_x")
    with pytest.raises(PushError, match="must be of the form user/repo"):
        check_can_push("user/lung/extra", token="hf_x")


def test_git_blob_sha1_matches_git() -> None:
    """The fake answers preupload with this oid; it must be git's, or a second push would commit again."""
    assert git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
