"""train.deploy_space: the Space's allow-list, and deploys against :class:`tests.hub_server.FakeHub`.

Deploys run in this process (:func:`tests.hub_server.use_hub`) from a small synthetic checkout,
so the exact file list is known; one test deploys this checkout through the command line, and
one imports ``app`` from the staged allow-list to show the Space has what ``app.py`` needs.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import SpaceCard

from lungdemo.loading import ModelLoadError
from tests.conftest import make_model_folder
from tests.hub_helpers import REPO_ROOT, TOKEN, PickleBomb, committed, hub_env, run_python, seed_repo, use_hub
from tests.hub_server import FakeHub
from train.deploy_space import DEVICE_VARIABLE, MODEL_VARIABLE, deploy, main, space_files
from train.push import PushError, push_folder

README = """---
title: lungdemo
sdk: gradio
sdk_version: 6.31.0
app_file: app.py
python_version: "3.11"
models: []
---

# lungdemo

The demo.
"""
SHIPPED = [
    "lungdemo/shipped_model/README.md",
    "lungdemo/shipped_model/config.json",
    "lungdemo/shipped_model/confusion_matrix.png",
    "lungdemo/shipped_model/model.safetensors",
]
ALLOWED = sorted(
    [
        "README.md",
        "app.py",
        "requirements.txt",
        "examples/README.md",
        "examples/normal_1.png",
        "lungdemo/__init__.py",
        "lungdemo/webapp.py",
        "lungdemo/ui/__init__.py",
        "lungdemo/ui/tabs.py",
        *SHIPPED,
    ]
)
NOT_ALLOWED = [
    "pyproject.toml",
    "requirements-dev.txt",
    "tests/test_app.py",
    "train/train.py",
    "docs/spaces.md",
    "bench/serve.py",
    "runs/alexnet-1/model/model.safetensors",
    ".git/HEAD",
    ".venv/bin/python",
    ".cache/lungdemo/x.npy",
    "lungdemo/__pycache__/webapp.cpython-311.pyc",
    "lungdemo/ui/__pycache__/tabs.cpython-311.pyc",
    "lungdemo/.DS_Store",
    "lungdemo/shipped_model/pytorch_model.bin",
    "lungdemo/shipped_model/.README.md.tmp",
    "examples/.ipynb_checkpoints/x.png",
]
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR fake"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A checkout with the Space's files and everything that must stay behind."""
    root = tmp_path / "checkout"
    for rel in ALLOWED + NOT_ALLOWED:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(PNG if rel.endswith((".png", ".safetensors")) else f"# {rel}\n".encode())
    (root / "README.md").write_text(README)
    (root / "requirements.txt").write_text("torch==2.14.1\ngradio==6.31.0\nhuggingface-hub==2.4.0\n")
    (root / "lungdemo/shipped_model/pytorch_model.bin").write_bytes(pickle.dumps(PickleBomb(tmp_path / "unpickled")))
    return root


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("model") / "model", seed=3)


def tree(root: Path, files: list[str]) -> dict[str, bytes]:
    return {rel: (root / rel).read_bytes() for rel in files}


# --- the allow-list -----------------------------------------------------------------------------------
def test_allow_list_of_a_checkout(source: Path) -> None:
    assert space_files(source) == ALLOWED
    assert space_files(source, shipped_model=False) == [f for f in ALLOWED if f not in SHIPPED]


def test_this_checkout_runs_from_its_allow_list(tmp_path: Path) -> None:
    """Staged alone, the Space's files import ``app`` (which builds the demo on the shipped model)."""
    files = space_files(REPO_ROOT)
    modules = {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "lungdemo").rglob("*.py")}
    assert modules - {f for f in modules if "__pycache__" in f} <= set(files), "every module of the package goes"
    assert not [f for f in files if f.split("/")[0] not in ("lungdemo", "examples") and "/" in f]
    staged = tmp_path / "space"
    for rel in files:
        (staged / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / rel, staged / rel)
    script = "import app, lungdemo; print(type(app.demo).__name__, lungdemo.__file__)"
    proc = run_python(hub_env(tmp_path), "-c", script, cwd=staged)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-2:] == ["Blocks", str(staged / "lungdemo" / "__init__.py")]


# --- deploys -------------------------------------------------------------------------------------------
def test_deploy_creates_a_gradio_space_with_exactly_the_allow_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: Path
) -> None:
    with FakeHub() as hub:
        use_hub(monkeypatch, tmp_path, hub)
        first = deploy("user/space", root=source, private=True, hardware="t4-small")
        create = hub.requests_to("POST", "/api/repos/create")[0].json()
        space = hub.repo("user/space", "space")
        head = hub.head("user/space", repo_type="space")
        requests_before = len(hub.requests)
        second = deploy("user/space", root=source)
        later = hub.requests[requests_before:]
    assert create == {
        "name": "space",
        "organization": "user",
        "visibility": "private",
        "type": "space",
        "sdk": "gradio",
        "hardware": "t4-small",
    }
    assert (space.sdk, space.hardware, space.private) == ("gradio", "t4-small", True)
    assert committed(head) == tree(source, ALLOWED), "exactly the allow-list, byte for byte"
    assert head.lfs == {"examples/normal_1.png", "lungdemo/shipped_model/confusion_matrix.png", SHIPPED[3]}
    assert {k: v["value"] for k, v in space.variables.items()} == {DEVICE_VARIABLE: "cuda"}
    assert (first.space_url, first.commit, first.changed) == (f"{hub.url}/spaces/user/space", head.sha, True)
    assert first.commit_url == f"{hub.url}/spaces/user/space/commit/{head.sha}"
    assert first.variables == {DEVICE_VARIABLE: "cuda"}
    # the second deploy of the same tree: no commit, no variable change, same answer
    assert (second.commit, second.changed) == (head.sha, False)
    assert not [r for r in later if "/commit/" in r.path or r.method in ("PUT", "DELETE")]
    assert not [r for r in later if r.method == "POST" and r.path.endswith("/variables")]
    assert not (tmp_path / "unpickled").exists()


def test_deploy_with_a_model_pins_it_and_leaves_the_shipped_model_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: Path, model_folder: Path
) -> None:
    with FakeHub() as hub:
        use_hub(monkeypatch, tmp_path, hub)
        sha = seed_repo(hub, "user/lung", model_folder).sha
        hub.repo("user/lung").tags["v1"] = sha
        seed_repo(hub, "user/lung", make_model_folder(tmp_path / "newer", seed=4))  # main moves on
        deploy("user/space", root=source)
        with_model = deploy("user/space", root=source, model="user/lung@v1")
        space = hub.repo("user/space", "space")
        files = committed(hub.head("user/space", repo_type="space"))
        variables = dict(space.variables)
        back = deploy("user/space", root=source)
        files_back = committed(hub.head("user/space", repo_type="space"))
    assert with_model.changed and back.changed
    assert {k: v["value"] for k, v in variables.items()} == {MODEL_VARIABLE: f"user/lung@{sha}"}
    assert sorted(files) == [f for f in ALLOWED if f not in SHIPPED], "the shipped model is deleted from the Space"
    card = SpaceCard(files.pop("README.md").decode())
    assert card.data.models == ["user/lung"] and card.text == SpaceCard(README).text
    assert files == {k: v for k, v in tree(source, ALLOWED).items() if k in files}
    assert (source / "README.md").read_text() == README, "only the uploaded copy is rewritten"
    # deployed again without --model: the variable goes, the shipped model comes back
    assert space.variables == {} and back.variables == {}
    assert files_back == tree(source, ALLOWED)


def test_command_line_deploys_this_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeHub() as hub:
        use_hub(monkeypatch, tmp_path, hub)
        assert main(["user/lung-demo", "--hardware", "cpu-upgrade"]) == 0
        head = hub.head("user/lung-demo", repo_type="space")
        space = hub.repo("user/lung-demo", "space")
    assert sorted(committed(head)) == space_files(REPO_ROOT)
    assert committed(head)["README.md"] == (REPO_ROOT / "README.md").read_bytes()
    assert {k: v["value"] for k, v in space.variables.items()} == {DEVICE_VARIABLE: "cpu"}
    assert capsys.readouterr().out.splitlines() == [
        f"Space: {hub.url}/spaces/user/lung-demo",
        f"commit: {head.sha} (new commit) {hub.url}/spaces/user/lung-demo/commit/{head.sha}",
        f"files: {len(space_files(REPO_ROOT))}; variables: {{'{DEVICE_VARIABLE}': 'cpu'}}",
    ]


def test_help_documents_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    for words in ("USER/SPACE", "--private", "--model", "--hardware", "--token", "LUNGDEMO_MODEL", "LUNGDEMO_DEVICE"):
        assert words in out, words


def test_existing_space_keeps_its_hardware_and_visibility(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeHub() as hub:
        use_hub(monkeypatch, tmp_path, hub)
        hub.add_repo("user/space", "space", sdk="gradio", hardware="cpu-basic")
        result = deploy("user/space", root=source, hardware="a10g-small", private=True)
    assert hub.repo("user/space", "space").hardware == "cpu-basic" and result.variables == {}
    assert "user/space already exists and is public: --private applies only to new Spaces" in caplog.messages
    assert (
        "user/space already exists on cpu-basic: --hardware applies only to new Spaces (change it in the Space's "
        f"settings); {DEVICE_VARIABLE} is left as it is"
    ) in caplog.messages


# --- errors: as the model push words them, nothing written before the checks pass ---------------------------
def errors_of_both(source: Path, model_folder: Path, space_id: str, **deploy_kw: Any) -> tuple[str, str]:
    with pytest.raises(PushError) as deploying:
        deploy(space_id, root=source, **deploy_kw)
    with pytest.raises(PushError) as pushing:
        push_folder(model_folder, space_id)
    return str(deploying.value), str(pushing.value)


@pytest.mark.parametrize(
    ("hub_kw", "token", "space_id", "start"),
    [
        ({}, None, "user/space", "no Hugging Face token found, so nothing can be pushed to user/space: "),
        ({"read_only_tokens": {TOKEN}}, TOKEN, "user/space", "the token of 'user' is read-only"),
        ({"valid_tokens": {"hf_good"}}, TOKEN, "user/space", "the Hub refused the token (401: invalid or expired)"),
        ({"forbidden_namespaces": {"someone"}}, TOKEN, "someone/space", "no permission to create or write someone/"),
    ],
)
def test_login_errors_read_as_the_model_push(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: Path,
    model_folder: Path,
    hub_kw: dict,
    token: str | None,
    space_id: str,
    start: str,
) -> None:
    with FakeHub(**hub_kw) as hub:
        use_hub(monkeypatch, tmp_path, hub, token=token)
        deploying, pushing = errors_of_both(source, shutil.copytree(model_folder, tmp_path / "m"), space_id)
        assert not hub.requests_to("POST", "/commit/") and not hub.requests_to("POST", "/variables")
    assert deploying == pushing and deploying.startswith(start)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (
            "user/absent",
            "Hub repo user/absent not found, or it is private: check the name, or log in with `hf auth login` "
            "(or set HF_TOKEN) with access to it",
        ),
        ("user/lung@v9", "revision 'v9' does not exist in user/lung: use a branch, tag or commit that the repo has"),
    ],
)
def test_a_model_that_does_not_load_stops_the_deploy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: Path, model_folder: Path, model: str, expected: str
) -> None:
    with FakeHub() as hub:
        use_hub(monkeypatch, tmp_path, hub)
        seed_repo(hub, "user/lung", model_folder)
        with pytest.raises(ModelLoadError) as err:
            deploy("user/space", root=source, model=model)
        assert not hub.requests_to("POST", "/api/repos/create"), "no Space is created for a model that fails"
    assert str(err.value).startswith(expected)


@pytest.mark.parametrize(
    ("setup", "kw", "expected"),
    [
        (
            lambda root: (root / "README.md").write_text(README.replace("6.31.0", "5.0.0")),
            {},
            "the front matter says sdk_version: 5.0.0, but requirements.txt pins gradio==6.31.0; set sdk_version: "
            "6.31.0 so the Space runs the tested version",
        ),
        (
            lambda root: (root / "README.md").write_text(README.replace("sdk: gradio", "sdk: docker")),
            {},
            "the front matter says sdk: docker, but this app needs sdk: gradio",
        ),
        (
            lambda root: (root / "README.md").write_text("# no front matter\n"),
            {},
            "has no front matter: the Space reads its configuration (sdk, app_file) from it",
        ),
        (
            lambda root: (root / "requirements.txt").write_text("gradio>=6\n"),
            {},
            "does not pin gradio (a line gradio==X.Y.Z): the Space needs the exact version",
        ),
        (lambda root: None, {"hardware": "h100"}, "unknown --hardware 'h100': one of cpu-basic, cpu-upgrade, "),
        (lambda root: None, {"hardware": "zero-a10g"}, "--hardware zero-a10g is ZeroGPU, which needs the `spaces`"),
        (lambda root: None, {"model": "lungdemo"}, "--model 'lungdemo' is a local folder; a Space can only load a Hub"),
        (lambda root: None, {}, "Space id 'not-a-space-id' must be of the form user/space (or organisation/space)"),
    ],
)
def test_checks_before_anything_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: Path, setup: Any, kw: dict, expected: str
) -> None:
    setup(source)
    monkeypatch.chdir(source)  # so that "lungdemo" is an existing local folder
    space_id = "not-a-space-id" if expected.startswith("Space id") else "user/space"
    with FakeHub() as hub:
        use_hub(monkeypatch, tmp_path, hub)
        with pytest.raises(PushError) as err:
            deploy(space_id, root=source, **kw)
        sent = [r.path for r in hub.requests]
    assert expected in str(err.value)
    assert sent in ([], ["/api/whoami-v2"]), "nothing but the login check before the checks pass"


def test_command_line_error_goes_to_stderr_with_status_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeHub() as hub:
        use_hub(monkeypatch, tmp_path, hub, token=None)
        assert main(["user/space"]) == 2
        assert hub.requests == []
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "error: no Hugging Face token found, so nothing can be pushed to user/space: run `hf auth login` "
        "(or set HF_TOKEN, or pass --token) with a token that has write access\n"
    )
