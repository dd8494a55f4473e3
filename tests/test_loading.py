"""lungdemo.loading: model references, the Hub cache and downloads, with the real client.

Offline: a Hub cache built by hand in ``tmp_path``. Online: :class:`tests.hub_server.FakeHub`
on 127.0.0.1, in this process through :func:`tests.hub_server.use_hub` or, for the
environment-variable path a user takes, in a fresh interpreter.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from huggingface_hub import constants as hub_constants

from lungdemo.folder import WEIGHTS_NAME
from lungdemo.loading import ModelLoadError, cache_miss_message, load_model, parse_model_ref
from tests.conftest import TEST_CLASSES, make_model_folder
from tests.hub_helpers import PickleBomb, build_cache, hub_env, run_python, seed_repo, use_hub
from tests.hub_server import FakeHub

SHA_OLD = "1" * 40
SHA_NEW = "2" * 40

LOAD_SCRIPT = """
import hashlib, json, sys
from lungdemo.loading import ModelLoadError, load_model
out = []
for ref in sys.argv[1:]:
    try:
        loaded = load_model(ref)
    except ModelLoadError as exc:
        out.append({"ref": ref, "error": str(exc)})
        continue
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in loaded.model.state_dict().values())).hexdigest()
    out.append({"ref": ref, "revision": loaded.revision, "folder": str(loaded.folder), "weights": digest})
print(json.dumps(out))
"""


def fingerprint(model: torch.nn.Module) -> str:
    """Which weights a model holds, as LOAD_SCRIPT reports it from another process."""
    return hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.state_dict().values())).hexdigest()


def run_loads(env: dict[str, str], *refs: str) -> list[dict[str, Any]]:
    """Load ``refs`` in a fresh interpreter that sees ``env`` when huggingface_hub is imported."""
    proc = run_python(env, "-c", LOAD_SCRIPT, *refs)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two model folders with different random weights, and their fingerprints."""
    root = tmp_path_factory.mktemp("models")
    old = make_model_folder(root / "old", seed=0)
    new = make_model_folder(root / "new", seed=1)
    prints = {name: fingerprint(load_model(folder).model) for name, folder in (("old", old), ("new", new))}
    assert prints["old"] != prints["new"]
    return {"old": old, "new": new, "prints": prints}


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


# --- references ------------------------------------------------------------------------------------
def test_reference_forms(tmp_path: Path) -> None:
    assert parse_model_ref(tmp_path).local_path == tmp_path
    ref = parse_model_ref("user/lung")
    assert (ref.repo_id, ref.revision, ref.is_pinned) == ("user/lung", None, False)
    assert parse_model_ref("user/lung@v1.0").revision == "v1.0"
    assert parse_model_ref(f"user/lung@{SHA_OLD}").is_pinned


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("user/lung@", "model reference 'user/lung@' has an empty revision after '@'"),
        ("", "empty model reference"),
        ("./not-here", "is neither an existing folder nor a Hub repo id"),
        ("a/b/c", "is neither an existing folder nor a Hub repo id"),
    ],
)
def test_bad_references(text: str, words: str) -> None:
    with pytest.raises(ModelLoadError, match=words):
        parse_model_ref(text)


# --- from the cache, offline -------------------------------------------------------------------------
def test_load_by_repo_id_uses_main(cached_repo: Path, models: dict[str, Any]) -> None:
    loaded = load_model("user/lung")
    assert loaded.revision == SHA_NEW
    assert loaded.folder == cached_repo / "models--user--lung" / "snapshots" / SHA_NEW
    assert loaded.description == f"user/lung@{SHA_NEW}"
    assert loaded.metrics is not None and loaded.metrics["class_names"] == TEST_CLASSES
    assert fingerprint(loaded.model) == models["prints"]["new"]


def test_load_by_branch(cached_repo: Path, models: dict[str, Any]) -> None:
    loaded = load_model("user/lung@experiment")
    assert loaded.revision == SHA_OLD
    assert fingerprint(loaded.model) == models["prints"]["old"]


def test_load_by_pinned_commit_needs_no_refs(offline_cache: Path, models: dict[str, Any]) -> None:
    build_cache(offline_cache, "user/pinned", {SHA_OLD: models["old"]}, refs={})
    loaded = load_model(f"user/pinned@{SHA_OLD}")
    assert loaded.revision == SHA_OLD and loaded.ref.is_pinned
    assert fingerprint(loaded.model) == models["prints"]["old"]


def test_offline_with_empty_cache(offline_cache: Path) -> None:
    with pytest.raises(ModelLoadError) as err:
        load_model("user/lung")
    assert str(err.value) == (
        f"user/lung is not in the local Hugging Face cache ({offline_cache}) and HF_HUB_OFFLINE=1 is set, so "
        "nothing is downloaded: unset HF_HUB_OFFLINE (or set it to 0) to fetch it; or pass a local model folder instead"
    )


def test_revision_missing_from_cache_lists_what_is_cached(cached_repo: Path) -> None:
    with pytest.raises(ModelLoadError) as err:
        load_model("user/lung@v2")
    assert str(err.value) == (
        f"revision 'v2' of user/lung is not in the local Hugging Face cache ({cached_repo}), which has only: "
        f"experiment ({SHA_OLD[:12]}), main ({SHA_NEW[:12]}); HF_HUB_OFFLINE=1 is set, so nothing is downloaded: "
        "unset HF_HUB_OFFLINE (or set it to 0) to fetch it, or use one of the cached revisions "
        f"(e.g. user/lung@{SHA_OLD})"
    )


def test_unreachable_hub_message_when_not_offline(cached_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without HF_HUB_OFFLINE the cause is the network (a real attempt costs ~23 s of retries)."""
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    message = cache_miss_message(parse_model_ref("user/lung@v2"))
    assert f"the Hub ({hub_constants.ENDPOINT}) cannot be reached: check the network connection (and HF_ENDPOINT)" in (
        message
    )
    assert "HF_HUB_OFFLINE=1" not in message


def test_cached_repo_with_only_pickled_weights(offline_cache: Path, tmp_path: Path, models: dict[str, Any]) -> None:
    folder = tmp_path / "pickle-repo"
    folder.mkdir()
    shutil.copy(models["old"] / "config.json", folder / "config.json")
    marker = tmp_path / "unpickled"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(PickleBomb(marker)))
    build_cache(offline_cache, "user/pickles", {SHA_OLD: folder}, {"main": SHA_OLD})
    with pytest.raises(ModelLoadError) as err:
        load_model("user/pickles")
    assert str(err.value) == (
        "user/pickles is not a lungdemo model repo: it has no model.safetensors (pickled weights such as "
        "pytorch_model.bin are never downloaded or loaded); push a model folder with "
        "`python -m train.push FOLDER user/pickles`"
    )
    assert not marker.exists()


# --- from the Hub, online ------------------------------------------------------------------------------
def test_download_takes_only_the_model_folder_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models: dict[str, Any]
) -> None:
    """A pickle (and anything else) beside the model in the repo is never requested, let alone loaded."""
    marker = tmp_path / "unpickled"
    extra = {"pytorch_model.bin": pickle.dumps(PickleBomb(marker)), "notes.txt": b"hello"}
    with FakeHub() as hub:
        cache = use_hub(monkeypatch, tmp_path, hub)
        commit = seed_repo(hub, "user/lung", models["new"], extra=extra)
        loaded = load_model("user/lung")
        fetched = {r.path.rsplit("/", 1)[-1] for r in hub.requests if "/resolve/" in r.path}
    assert loaded.revision == commit.sha
    assert fingerprint(loaded.model) == models["prints"]["new"]
    assert WEIGHTS_NAME in commit.lfs and WEIGHTS_NAME in fetched, "the weights come from large-file storage"
    assert fetched == {p.name for p in models["new"].iterdir()}, "exactly the model folder's files"
    assert sorted(p.name for p in loaded.folder.iterdir()) == sorted(p.name for p in models["new"].iterdir())
    assert not list(cache.rglob("pytorch_model.bin")) and not list(cache.rglob("notes.txt"))
    assert not marker.exists()


def test_branch_tag_and_errors_online(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models: dict[str, Any]) -> None:
    with FakeHub() as hub:
        use_hub(monkeypatch, tmp_path, hub)
        first = seed_repo(hub, "user/lung", models["old"])
        hub.repo("user/lung").tags["v1"] = first.sha
        hub.repo("user/lung").branches["dev"] = first.sha
        second = seed_repo(hub, "user/lung", models["new"])
        by_tag, by_branch, by_main = load_model("user/lung@v1"), load_model("user/lung@dev"), load_model("user/lung")
        with pytest.raises(ModelLoadError) as missing:
            load_model("user/lung@v9")
        with pytest.raises(ModelLoadError) as absent:
            load_model("user/absent")
    assert (by_tag.revision, by_branch.revision, by_main.revision) == (first.sha, first.sha, second.sha)
    assert fingerprint(by_tag.model) == fingerprint(by_branch.model) == models["prints"]["old"]
    assert fingerprint(by_main.model) == models["prints"]["new"]
    assert by_tag.description == f"user/lung@{first.sha}"
    assert str(missing.value) == (
        f"revision 'v9' does not exist in user/lung: use a branch, tag or commit that the repo has "
        f"(see {hub.url}/user/lung/tree/main), or drop '@v9' to use the main branch"
    )
    assert str(absent.value) == (
        "Hub repo user/absent not found, or it is private: check the name, or log in with `hf auth login` "
        "(or set HF_TOKEN) with access to it"
    )


def test_rejected_token_online(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models: dict[str, Any]) -> None:
    with FakeHub(valid_tokens={"hf_good"}) as hub:
        use_hub(monkeypatch, tmp_path, hub, token="hf_expired")
        seed_repo(hub, "user/lung", models["old"])
        with pytest.raises(ModelLoadError, match=r"the Hub refused the token while fetching user/lung \(401\)"):
            load_model("user/lung")
        assert load_model("user/lung", token="hf_good").revision == hub.head("user/lung").sha


def test_fresh_processes_pinned_commit_online_without_requests_then_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models: dict[str, Any]
) -> None:
    """The user's path: a first start downloads; later starts, with the variables a user sets, reuse the cache.

    Online (HF_HUB_OFFLINE unset) a pinned commit sends nothing to the Hub; offline, a branch
    name is served from the cache too and a revision that is not cached says what to do.
    """
    with FakeHub() as hub:
        cache = use_hub(monkeypatch, tmp_path, hub)
        sha = seed_repo(hub, "user/lung", models["new"]).sha
        hub.repo("user/lung").tags["v1"] = sha
        assert load_model("user/lung@v1").revision == sha  # the first start, in this process
        hub.requests.clear()
        online = hub_env(tmp_path, hub, HF_HUB_CACHE=str(cache))
        online.pop("HF_HUB_OFFLINE")
        [pinned] = run_loads(online, f"user/lung@{sha}")
        assert hub.requests == [], "a pinned, cached commit must not ask the Hub anything"
    assert (pinned["revision"], pinned["weights"]) == (sha, models["prints"]["new"])

    offline = hub_env(tmp_path, HF_HUB_CACHE=str(cache), HF_ENDPOINT="http://127.0.0.1:9")
    by_tag, missing = run_loads(offline, "user/lung@v1", "user/lung@nope")
    assert (by_tag["revision"], by_tag["weights"]) == (sha, models["prints"]["new"])
    assert missing["error"].startswith("revision 'nope' of user/lung is not in the local Hugging Face cache")
    assert "HF_HUB_OFFLINE=1 is set" in missing["error"]
