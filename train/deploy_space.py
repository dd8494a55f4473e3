"""Deploy the demo to a Hugging Face Space with the Hub's upload API (no git push).

Usage::

    hf auth login                      # or: export HF_TOKEN=hf_...
    python -m train.deploy_space USER/SPACE [--private] [--model user/repo@revision] [--hardware t4-small]

The Space is created when missing (Gradio SDK), then receives exactly what ``app.py`` needs:
``app.py``, ``requirements.txt``, ``README.md`` (its front matter is the Space's config), the
``lungdemo`` package with its shipped model, and ``examples/``. The upload mirrors that list:
files from an earlier deploy that are no longer in it are deleted from the Space. Large and
binary files go through the Hub's large-file storage by themselves, which a ``git push`` of
this repository does not do. Deploying an unchanged tree again makes no commit.

``--model`` serves a pushed model instead of the shipped one: the revision is resolved to a
commit (so the Space is pinned), loaded once here to prove it works, set as the Space
variable ``LUNGDEMO_MODEL`` and listed under ``models:`` in the uploaded README. Without it,
a ``LUNGDEMO_MODEL`` left by an earlier deploy is removed. ``--hardware`` applies when the
Space is created and sets ``LUNGDEMO_DEVICE`` to match (``cuda`` on a GPU).
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, SpaceCard, SpaceHardware
from huggingface_hub.errors import HfHubHTTPError

from lungdemo.errors import LungdemoError, report_error
from lungdemo.folder import CARD_NAME, FOLDER_PATTERNS
from lungdemo.loading import SHIPPED_MODEL_DIR, load_model, parse_model_ref
from train.push import (
    PushError,
    add_token_argument,
    check_can_push,
    check_write_access,
    hub_error,
    start_hub_cli,
    unreachable_error,
)

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
APP_FILE = "app.py"
REQUIREMENTS = "requirements.txt"
SPACE_ROOT_FILES = (APP_FILE, REQUIREMENTS, CARD_NAME)
"""The top-level files of the Space; README.md's front matter is the Space's configuration."""
SPACE_FOLDERS = ("lungdemo", "examples")
"""Copied whole, less what :data:`SKIPPED_PARTS` names: the package app.py imports, and its example slices."""
SKIPPED_PARTS = ("__pycache__",)
SKIPPED_SUFFIXES = (".pyc", ".pyo")
SHIPPED_MODEL = SHIPPED_MODEL_DIR.relative_to(SHIPPED_MODEL_DIR.parents[1]).as_posix()
"""The shipped model folder inside the tree (``lungdemo/shipped_model``); left out with ``--model``."""
SDK = "gradio"
MODEL_VARIABLE = "LUNGDEMO_MODEL"
DEVICE_VARIABLE = "LUNGDEMO_DEVICE"
HARDWARE = [h.value for h in SpaceHardware]


@dataclass
class Deployment:
    """What a deploy did: where the Space is, the commit it now serves, and what it holds."""

    space_url: str
    commit_url: str
    commit: str
    changed: bool
    files: list[str]
    variables: dict[str, str] = field(default_factory=dict)


def space_files(root: Path, *, shipped_model: bool = True) -> list[str]:
    """The files a Space needs to run ``app.py``, as sorted paths relative to ``root``.

    The one allow-list of a deploy: the top-level files, and the two folders without caches,
    hidden files or (``shipped_model=False``) the shipped model. Of the shipped model, only what
    a model folder is made of goes (:data:`lungdemo.folder.FOLDER_PATTERNS`).
    """
    root = Path(root)
    missing = [name for name in (*SPACE_ROOT_FILES, *SPACE_FOLDERS) if not (root / name).exists()]
    if missing:
        raise PushError(f"{root} is not a lungdemo checkout: it has no {', '.join(missing)}")
    files = list(SPACE_ROOT_FILES)
    for folder in SPACE_FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            rel = path.relative_to(root)
            parts = rel.parts
            if not path.is_file() or any(p.startswith(".") or p in SKIPPED_PARTS for p in parts):
                continue
            if path.suffix in SKIPPED_SUFFIXES:
                continue
            in_model = rel.as_posix().startswith(SHIPPED_MODEL + "/")
            if in_model and (not shipped_model or not any(path.match(p) for p in FOLDER_PATTERNS)):
                continue
            files.append(rel.as_posix())
    return sorted(files)


def pinned_gradio(requirements: Path) -> str:
    """The gradio version ``requirements.txt`` pins: the Space installs it from there too."""
    for line in requirements.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"\s*gradio\s*==\s*([^\s;#]+).*", line)
        if match:
            return match.group(1)
    raise PushError(f"{requirements} does not pin gradio (a line gradio==X.Y.Z): the Space needs the exact version")


def space_readme(root: Path, model_repo: str | None) -> str | None:
    """Check README.md's front matter against what the Space will run.

    Returns the README to upload with ``models:`` set to ``model_repo``, or ``None`` (upload it
    as it is) without one; the local file is never changed.
    """
    readme = root / CARD_NAME
    text = readme.read_text(encoding="utf-8")
    if not text.startswith("---"):
        raise PushError(f"{readme} has no front matter: the Space reads its configuration (sdk, app_file) from it")
    try:
        card = SpaceCard(text)
    except ValueError as exc:
        raise PushError(f"{readme}: the front matter is not valid YAML: {exc}") from exc
    data = card.data
    if data.sdk != SDK:
        raise PushError(f"{readme}: the front matter says sdk: {data.sdk}, but this app needs sdk: {SDK}")
    pinned = pinned_gradio(root / REQUIREMENTS)
    if str(data.sdk_version) != pinned:
        raise PushError(
            f"{readme}: the front matter says sdk_version: {data.sdk_version}, but {REQUIREMENTS} pins "
            f"gradio=={pinned}; set sdk_version: {pinned} so the Space runs the tested version"
        )
    if (data.app_file or APP_FILE) != APP_FILE:
        raise PushError(f"{readme}: the front matter says app_file: {data.app_file}, but the app is {APP_FILE}")
    if model_repo is None:
        return None
    data.models = [model_repo]
    return str(card)


def check_hardware(hardware: str | None) -> None:
    if hardware is None or hardware in HARDWARE:
        if hardware is not None and hardware.startswith("zero-"):
            raise PushError(
                f"--hardware {hardware} is ZeroGPU, which needs the `spaces` package and @spaces.GPU functions; "
                "this app does not use them: pick a GPU such as t4-small, or a CPU"
            )
        return
    raise PushError(f"unknown --hardware {hardware!r}: one of {', '.join(HARDWARE)}")


def device_for(hardware: str) -> str:
    return "cpu" if hardware.startswith("cpu") else "cuda"


def resolve_model(ref: str, token: str) -> str:
    """``user/repo@<commit>`` for ``ref``, after loading it the way the Space will."""
    parsed = parse_model_ref(ref)
    if not parsed.is_hub:
        raise PushError(
            f"--model {ref!r} is a local folder; a Space can only load a Hub repo: push it with "
            f"`python -m train.push {ref} user/repo`, then pass --model user/repo"
        )
    loaded = load_model(parsed.text, token=token)
    if loaded.revision is None:
        raise PushError(f"--model {ref!r} did not resolve to a commit")
    pinned = f"{parsed.repo_id}@{loaded.revision}"
    logger.info("model %s resolved to %s and loads (%d classes)", ref, pinned, loaded.model.num_classes)
    return pinned


def stage(root: Path, files: list[str], readme: str | None, dest: Path) -> None:
    """Copy ``files`` from ``root`` into ``dest``; README.md replaced by ``readme`` when given."""
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel == CARD_NAME and readme is not None:
            target.write_text(readme, encoding="utf-8")
        else:
            shutil.copyfile(root / rel, target)


def sync_variables(api: HfApi, space_id: str, wanted: dict[str, str | None]) -> dict[str, str]:
    """Set (or, for ``None``, delete) Space variables that differ; return the ones now set."""
    current = {k: v.value for k, v in api.get_space_variables(space_id).items()}
    for key, value in wanted.items():
        if value is None and key in current:
            api.delete_space_variable(space_id, key)
            logger.info("removed the Space variable %s (was %s)", key, current.pop(key))
        elif value is not None and current.get(key) != value:
            api.add_space_variable(space_id, key, value)
            current[key] = value
            logger.info("set the Space variable %s=%s", key, value)
    return current


def deploy(
    space_id: str,
    *,
    root: Path = REPO_ROOT,
    private: bool = False,
    model: str | None = None,
    hardware: str | None = None,
    token: str | None = None,
) -> Deployment:
    """Create ``space_id`` if needed and upload the app to it; raises a :class:`LungdemoError`."""
    root = Path(root)
    token = check_can_push(space_id, token=token, repo_type="space")
    check_hardware(hardware)
    files = space_files(root, shipped_model=model is None)
    model_repo = parse_model_ref(model).repo_id if model is not None else None
    readme = space_readme(root, model_repo)

    api = HfApi(token=token)
    try:
        check_write_access(api, space_id)
        pinned = resolve_model(model, token) if model is not None else None
        url = api.create_repo(
            space_id,
            repo_type="space",
            space_sdk=SDK,
            private=True if private else None,
            space_hardware=hardware,
            exist_ok=True,
        )
        info = api.space_info(space_id)
        if private and not info.private:
            logger.warning("%s already exists and is public: --private applies only to new Spaces", space_id)
        wanted: dict[str, str | None] = {MODEL_VARIABLE: pinned}
        if hardware is not None:
            runtime = info.runtime
            current = (runtime.requested_hardware or runtime.hardware) if runtime is not None else None
            if current not in (None, hardware):
                logger.warning(
                    "%s already exists on %s: --hardware applies only to new Spaces (change it in the Space's "
                    "settings); %s is left as it is",
                    space_id,
                    current,
                    DEVICE_VARIABLE,
                )
            else:
                wanted[DEVICE_VARIABLE] = device_for(hardware)
        variables = sync_variables(api, space_id, wanted)
        with tempfile.TemporaryDirectory(prefix="lungdemo-space-") as tmp:
            stage(root, files, readme, Path(tmp))
            commit = api.upload_folder(
                repo_id=space_id,
                repo_type="space",
                folder_path=tmp,
                delete_patterns="*",
                commit_message=f"Deploy lungdemo ({pinned or 'shipped model'})",
            )
    except HfHubHTTPError as exc:
        raise hub_error(exc, space_id, repo_type="space") from exc
    except httpx2.TransportError as exc:
        raise unreachable_error(exc, api) from exc
    return Deployment(
        space_url=str(url),
        commit_url=str(commit.commit_url),
        commit=str(commit.oid),
        changed=commit.oid != info.sha,
        files=files,
        variables=variables,
    )


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.deploy_space",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Errors go to stderr with exit status 2. See docs/spaces.md.",
    )
    p.add_argument("space_id", help="the Space, USER/SPACE or ORGANISATION/SPACE (created when missing)")
    p.add_argument("--private", action="store_true", help="create the Space as private")
    p.add_argument(
        "--model",
        default=None,
        help="serve this Hub model, user/repo[@branch, tag or commit], instead of the shipped one "
        "(pinned to its commit; sets the Space variable LUNGDEMO_MODEL)",
    )
    p.add_argument(
        "--hardware",
        default=None,
        metavar="NAME",
        help="hardware for a new Space, e.g. cpu-basic, cpu-upgrade, t4-small, a10g-small "
        "(a GPU sets LUNGDEMO_DEVICE=cuda); default: the Hub's free CPU",
    )
    add_token_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    start_hub_cli()
    try:
        result = deploy(
            args.space_id,
            private=args.private,
            model=args.model,
            hardware=args.hardware,
            token=args.token,
        )
    except LungdemoError as exc:
        return report_error(exc)
    print(f"Space: {result.space_url}")
    state = "new commit" if result.changed else "unchanged, no new commit"
    print(f"commit: {result.commit} ({state}) {result.commit_url}")
    print(f"files: {len(result.files)}; variables: {result.variables or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
