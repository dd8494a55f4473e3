"""train.push: publishing a model folder, against :class:`tests.hub_server.FakeHub` with the real client.

One test runs the command line in a fresh interpreter with the environment a user sets
(``HF_ENDPOINT``, ``HF_TOKEN``); the rest call it in this process through
:func:`tests.hub_server.use_hub`. Model card content is tested in tests/test_card.py.
"""

from __future__ import annotations

import base64
import pickle
import shutil
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from huggingface_hub import constants as hub_constants

from lungdemo.folder import CARD_NAME, CONFIG_NAME, FOLDER_PATTERNS, WEIGHTS_NAME
from lungdemo.loading import load_model
from tests.conftest import make_model_folder
from tests.hub_helpers import TOKEN, PickleBomb, committed, hub_env, run_python, use_hub
from tests.hub_server import FakeHub, git_blob_sha1, sha256
from train.push import PushError, check_can_push, main, push_folder


def folder_files(folder: Path) -> dict[str, bytes]:
    """What a push must send: the model folder's files, no hidden file, nothing else."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return {p.name: p.read_bytes() for p in files if any(p.match(x) for x in FOLDER_PATTERNS)}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A model folder with a pickle, a hidden file and a plot beside it, as a careless run folder might have."""
    folder = make_model_folder(tmp_path / "model", seed=1)
    (folder / "training_curves.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00 not really a plot")
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(PickleBomb(tmp_path / "unpickled")))
    (folder / ".notes.json").write_text("{}")
    return folder


# --- the command line, as a user runs it -------------------------------------------------------------
def test_push_command_sends_the_folder_byte_for_byte_weights_through_large_file_storage(
    tmp_path: Path, folder: Path
) -> None:
    with FakeHub() as hub:
        proc = run_python(hub_env(tmp_path, hub), "-m", "train.push", str(folder), "user/lung-ct")
        assert proc.returncode == 0, proc.stderr
        head = hub.head("user/lung-ct")
        preupload = hub.requests_to("POST", "/api/models/user/lung-ct/preupload/main")[0].json()
        batch = hub.requests_to("POST", "/user/lung-ct.git/info/lfs/objects/batch")[0].json()
        commit_lines = hub.requests_to("POST", "/api/models/user/lung-ct/commit/main")[0].ndjson()
        puts = hub.requests_to("PUT", "/lfs-upload/")
    sent = folder_files(folder)
    assert set(sent) == {WEIGHTS_NAME, CONFIG_NAME, "metrics.json", CARD_NAME, "training_curves.png"}
    assert committed(head) == sent, "committed files must be byte-identical to the model folder"
    assert sorted(f["path"] for f in preupload["files"]) == sorted(sent), "no pickle, no hidden file offered"
    # the large-file path: batch request, PUT of the bytes, then a pointer in the commit
    lfs_oids = {o["oid"] for o in batch["objects"]}
    assert lfs_oids == {sha256(sent[WEIGHTS_NAME]), sha256(sent["training_curves.png"])}
    assert {r.path.rsplit("/", 1)[-1] for r in puts} == lfs_oids
    lines = {line["value"]["path"]: line for line in commit_lines[1:]}
    assert lines[WEIGHTS_NAME]["key"] == "lfsFile" and lines[WEIGHTS_NAME]["value"]["oid"] == sha256(sent[WEIGHTS_NAME])
    assert lines[CONFIG_NAME]["key"] == "file"
    assert base64.b64decode(lines[CONFIG_NAME]["value"]["content"]) == sent[CONFIG_NAME]
    assert head.lfs == {WEIGHTS_NAME, "training_curves.png"}
    assert commit_lines[0]["value"]["summary"] == f"Upload lungdemo model ({tmp_path.name}/model)"
    assert proc.stdout.splitlines() == [
        f"pushed {folder} to user/lung-ct: {hub.url}/user/lung-ct/commit/{head.sha}",
        "load it with: LUNGDEMO_MODEL=user/lung-ct python app.py",
    ]
    card = ModelCard(sent[CARD_NAME].decode())
    assert card.data.model_name == "lung-ct", "the card is rendered for the repo id before the push"
    assert not (tmp_path / "unpickled").exists()


# --- in this process -----------------------------------------------------------------------------------
def test_second_push_of_an_unchanged_folder_makes_no_commit_then_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeHub() as hub:
        use_hub(monkeypatch, tmp_path, hub)
        assert main([str(folder), "user/lung-ct"]) == 0
        first = hub.head("user/lung-ct")
        puts = len(hub.requests_to("PUT", "/lfs-upload/"))
        assert main([str(folder), "user/lung-ct"]) == 0
        assert hub.head("user/lung-ct") == first
        assert len(hub.requests_to("POST", "/commit/")) == 1, "an unchanged folder makes no second commit"
        assert len(hub.requests_to("PUT", "/lfs-upload/")) == puts, "stored large files are not sent again"
        loaded = load_model("user/lung-ct")
    assert capsys.readouterr().out.count(f"/user/lung-ct/commit/{first.sha}") == 2
    assert loaded.revision == first.sha
    assert (loaded.folder / WEIGHTS_NAME).read_bytes() == (folder / WEIGHTS_NAME).read_bytes()


def test_push_through_the_xet_installed_client_with_regular_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    """With hf_xet installed and every file "regular", the client takes its pipelined upload path."""
    with FakeHub(large_files=False) as hub:
        use_hub(monkeypatch, tmp_path, hub)
        push_folder(folder, "user/lung-ct")
        assert committed(hub.head("user/lung-ct")) == folder_files(folder)
        assert not hub.requests_to("POST", "/info/lfs/objects/batch")


def test_token_flag_is_the_token_sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    with FakeHub(valid_tokens={"hf_flag"}) as hub:
        use_hub(monkeypatch, tmp_path, hub, token=None)
        assert main([str(folder), "user/lung-ct", "--token", "hf_flag"]) == 0
        sent = {r.headers.get("authorization") for r in hub.requests if not r.path.startswith("/lfs-upload/")}
    assert sent == {"Bearer hf_flag"}


def test_private_branch_and_commit_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    with FakeHub() as hub:
        use_hub(monkeypatch, tmp_path, hub)
        url = push_folder(folder, "user/lung-ct", private=True, branch="exp/1", commit_message="first try")
        repo = hub.repo("user/lung-ct")
        assert hub.requests_to("POST", "/api/repos/create")[0].json()["visibility"] == "private"
        assert hub.requests_to("POST", "/api/models/user/lung-ct/branch/exp%2F1"), "the branch is created"
    assert repo.private
    main_sha, branch_sha = repo.branches["main"], repo.branches["exp/1"]
    assert repo.commits[main_sha].parent is None, "main keeps only the initial commit"
    assert (repo.commits[branch_sha].message, repo.commits[branch_sha].parent) == ("first try", main_sha)
    assert url == f"{hub.url}/user/lung-ct/commit/{branch_sha}"


def test_private_flag_on_an_existing_public_repo_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeHub() as hub:
        use_hub(monkeypatch, tmp_path, hub)
        hub.add_repo("user/lung-ct", private=False)
        push_folder(folder, "user/lung-ct", private=True)
    assert not hub.repo("user/lung-ct").private
    assert "user/lung-ct already exists and is public: --private applies only to new repos" in caplog.messages


# --- errors: each one exact, nothing sent that should not be ---------------------------------------------
def test_without_a_token_nothing_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeHub() as hub:
        use_hub(monkeypatch, tmp_path, hub, token=None)
        assert main([str(folder), "user/lung-ct"]) == 2
        assert hub.requests == [], "nothing is sent without a token"
    assert capsys.readouterr().err == (
        "error: no Hugging Face token found, so nothing can be pushed to user/lung-ct: run `hf auth login` "
        "(or set HF_TOKEN, or pass --token) with a token that has write access\n"
    )


def test_read_only_token_is_refused_before_anything_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    with FakeHub(read_only_tokens={TOKEN}) as hub:
        use_hub(monkeypatch, tmp_path, hub)
        with pytest.raises(PushError) as err:
            push_folder(folder, "user/lung-ct")
        assert [r.path for r in hub.requests] == ["/api/whoami-v2"]
    assert str(err.value) == (
        "the token of 'user' is read-only, so nothing can be pushed to user/lung-ct: run `hf auth login` "
        "(or set HF_TOKEN, or pass --token) with a token that has write access"
    )


def test_namespace_without_permission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    with FakeHub(forbidden_namespaces={"someone"}) as hub:
        use_hub(monkeypatch, tmp_path, hub)
        with pytest.raises(PushError) as err:
            push_folder(folder, "someone/their-model")
        assert not hub.requests_to("POST", "/commit/")
    assert str(err.value) == (
        "no permission to create or write someone/their-model (403): the token cannot write to namespace "
        "'someone'; push to your own namespace (your-user/their-model), or run `hf auth login` (or set HF_TOKEN, "
        "or pass --token) with a token that has write access there (a fine-grained token needs write access to "
        "that repo or organisation)"
    )


def test_rejected_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    with FakeHub(valid_tokens={"hf_good"}) as hub:
        use_hub(monkeypatch, tmp_path, hub, token="hf_expired")
        with pytest.raises(PushError) as err:
            push_folder(folder, "user/lung-ct")
        assert [r.path for r in hub.requests] == ["/api/whoami-v2"]
    assert str(err.value) == (
        "the Hub refused the token (401: invalid or expired): run `hf auth login` (or set HF_TOKEN, or pass "
        "--token) with a token that has write access"
    )


def test_repo_that_cannot_be_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """The repo exists (create answers 409) but is private to someone else: 404 on upload."""
    with FakeHub(hidden_repos={"someone/private-model"}) as hub:
        use_hub(monkeypatch, tmp_path, hub)
        with pytest.raises(PushError) as err:
            push_folder(folder, "someone/private-model")
        assert not hub.requests_to("POST", "/commit/")
    assert str(err.value).startswith(
        "Hub repo someone/private-model not found, or it is private and your token cannot see it: check the name"
    )


def test_folders_the_app_could_not_load_are_refused(folder: Path) -> None:
    (folder / WEIGHTS_NAME).unlink()
    with pytest.raises(PushError) as err:
        push_folder(folder, "user/lung", token=TOKEN)
    assert str(err.value).startswith(f"cannot push {folder}: {folder} is not a lungdemo model folder: missing ")
    assert "found ['pytorch_model.bin']: pickled weights are never loaded" in str(err.value)


def test_bad_repo_id(folder: Path) -> None:
    with pytest.raises(
        PushError, match=r"repo id 'just-a-name' must be of the form user/repo \(or organisation/repo\)"
    ):
        push_folder(folder, "just-a-name", token=TOKEN)


def test_a_run_folder_is_accepted_then_offline_stops_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m train.push runs/NAME user/repo`` validates ``runs/NAME/model``, then stops offline."""
    run = tmp_path / "runs" / "alexnet-1"
    make_model_folder(run / "model")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PushError, match="HF_HUB_OFFLINE=1 is set, so the Hub cannot be reached: unset HF_HUB_OFFLINE"):
        push_folder(run, "user/lung", token=TOKEN)
    shutil.rmtree(run / "model")
    with pytest.raises(PushError, match=r"is not a lungdemo model folder: missing config\.json"):
        push_folder(run, "user/lung", token=TOKEN)


def test_preflight_for_training(monkeypatch: pytest.MonkeyPatch) -> None:
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
