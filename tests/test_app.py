"""app.py, the Spaces entry: flags and environment variables, ``main()``'s launch, and its errors."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import gradio.networking
import httpx
import pytest

from tests.conftest import free_port, make_model_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def app_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("app") / "model", seed=3)


@pytest.fixture
def app(app_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``import app`` as Spaces does, configured by environment variables."""
    monkeypatch.setenv("LUNGDEMO_MODEL", str(app_folder))
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    monkeypatch.setenv("GRADIO_SHARE", "1")
    monkeypatch.syspath_prepend(str(REPO))
    sys.modules.pop("app", None)
    module = importlib.import_module("app")
    try:
        yield module
    finally:
        module.demo.close()
        sys.modules.pop("app", None)


def test_app_module_builds_demo_from_env(app: ModuleType, app_folder: Path) -> None:
    assert app.state.loaded.folder == app_folder
    args = app.parse_args([])
    assert (args.model, args.host, args.port, args.share) == (str(app_folder), "127.0.0.1", 7999, True)
    args = app.parse_args(["--model", "user/repo@v1", "--port", "1234", "--no-share", "--host", "0.0.0.0"])
    assert (args.model, args.host, args.port, args.share) == ("user/repo@v1", "0.0.0.0", 1234, False)


def test_main_serves_and_suggests_share(
    app: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(app.demo, "block_thread", lambda: None)
    app.main(app.parse_args(["--port", str(free_port()), "--no-share"]))
    out, err = capsys.readouterr()
    assert f"* Running on local URL:  {app.demo.local_url}" in out
    assert "* For a temporary public link, add --share (or set GRADIO_SHARE=1)" in out
    assert err == ""
    assert httpx.get(f"{app.demo.local_url}config", timeout=30).json()["title"] == app.demo.title


def test_main_says_when_there_is_no_share_link(
    app: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--share without Gradio's share servers (as offline): Gradio's message, ours, and the local app keeps serving."""

    def offline(**_kwargs: object) -> str:
        raise RuntimeError("Could not get share link from Gradio API Server.")

    monkeypatch.setattr(gradio.networking, "setup_tunnel", offline)
    monkeypatch.setattr(app.demo, "block_thread", lambda: None)
    app.main(app.parse_args(["--port", str(free_port())]))  # GRADIO_SHARE=1
    out, err = capsys.readouterr()
    assert "Could not create share link." in out
    assert f"* Running on local URL:  {app.demo.local_url}" in out
    assert app.demo.share_url is None
    assert err == (
        "\nNo public share link: it needs a connection to Gradio's share servers (see the message above). "
        f"The app is still running locally at {app.demo.local_url}\n"
    )
    assert httpx.get(f"{app.demo.local_url}config", timeout=30).status_code == 200


def test_app_cli_bad_model_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    env.pop("LUNGDEMO_MODEL", None)
    proc = subprocess.run(
        [sys.executable, str(REPO / "app.py"), "--model", str(tmp_path / "no-such-folder")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: model reference") and "neither an existing folder" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
