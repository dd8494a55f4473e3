"""Pointing the real ``huggingface_hub`` client at :class:`tests.hub_server.FakeHub`, and test inputs.

In this process (:func:`use_hub`, fast) or in a fresh interpreter with the environment a user
sets (:func:`hub_env` + :func:`run_python`); a Hub cache built by hand (:func:`build_cache`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.hub_server import Commit, FakeHub

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_test_token"


def hub_env(tmp_path: Path, hub: FakeHub | None = None, **extra: str) -> dict[str, str]:
    """A clean environment for a subprocess: no real token, cache or proxy; the fake Hub if given.

    ``huggingface_hub`` reads these when imported, so code that needs them runs in a subprocess.
    """
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
        OMP_NUM_THREADS="1",
    )
    if hub is not None:
        env.update(HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HUB_OFFLINE="0")
        if hub.large_files:
            env["HF_HUB_DISABLE_XET"] = "1"  # the LFS batch path; the fake does not speak Xet
    env.update(extra)
    return env


def use_hub(monkeypatch: Any, tmp_path: Path, hub: FakeHub, *, token: str | None = TOKEN) -> Path:
    """Point this process's client at ``hub``, online, with ``token`` (``None``: no login at all).

    Sets what ``huggingface_hub`` reads at call time (a ``pytest.MonkeyPatch`` undoes it), so
    in-process tests skip a subprocess; :func:`hub_env` is the real, environment-variable path.
    Returns the empty Hub cache the downloads go to.
    """
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    cache.mkdir(exist_ok=True)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", hub.large_files)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    if token is not None:
        monkeypatch.setenv("HF_TOKEN", token)
    return cache


def seed_repo(hub: FakeHub, repo_id: str, folder: Path, *, extra: dict[str, bytes] | None = None) -> Commit:
    """Put a model folder's files (and ``extra`` ones) in ``repo_id`` on ``hub``, large ones as LFS."""
    if ("model", repo_id) not in hub.repos:
        hub.add_repo(repo_id)
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} | (extra or {})
    head = hub.head(repo_id)
    lfs = {path for path, data in files.items() if hub.upload_mode(head, path, data[:512], len(data)) == "lfs"}
    return hub.commit_files(repo_id, "main", files, f"add {folder.name}", lfs=lfs)


def run_python(
    env: dict[str, str], *args: str, cwd: Path = REPO_ROOT, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in ``cwd`` (default: the repository root) with ``env`` (e.g. ``-m train.push ...``)."""
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


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


class PickleBomb:
    """Unpickling this creates a file: proof that a loader did (or did not) unpickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.marker),))


def committed(commit: Commit) -> dict[str, bytes]:
    """A commit's files without the ``.gitattributes`` the Hub adds."""
    return {k: v for k, v in commit.files.items() if k != ".gitattributes"}
