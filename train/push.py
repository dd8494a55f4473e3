"""Publish a model folder to the Hugging Face Hub.

Usage::

    hf auth login                      # or: export HF_TOKEN=hf_...
    python -m train.push runs/alexnet-1/model user/lung-ct-alexnet [--private] [--branch B]

A run folder (``runs/alexnet-1``, holding ``model/``) is accepted too. Before anything is
sent the folder is checked the way the app will load it (``config.json`` and
``model.safetensors`` present, weights load strictly), and its model card is re-rendered
with the repo id so the metadata on the Hub is right. Then ``create_repo(exist_ok=True)``
(and ``create_branch(exist_ok=True)`` for ``--branch``) and ``upload_folder``: only
safetensors, JSON, Markdown and PNG files are sent, never a pickle. Pushing an unchanged
folder again makes no commit; the Hub compares file hashes and the card is deterministic.

Errors are :class:`PushError` with a message that names the fix (log in, check the repo
name or your write access, re-export the folder).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

import httpx2  # huggingface_hub's HTTP client (a dependency of huggingface-hub 2.x)
from huggingface_hub import HfApi, get_token
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from lungdemo.loading import CARD_NAME, ModelLoadError, load_model_folder
from lungdemo.model import CONFIG_NAME
from train.card import render_model_card

logger = logging.getLogger(__name__)

UPLOAD_PATTERNS = ["*.safetensors", "*.json", "*.md", "*.png"]
IGNORE_PATTERNS = [".*", "*/.*"]
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
LOGIN_HINT = "run `hf auth login` (or set HF_TOKEN) with a token that has write access"


class PushError(RuntimeError):
    """A push that cannot happen or failed; the message says what to do about it."""


def resolve_model_folder(folder: Path) -> Path:
    """The model folder itself, or ``FOLDER/model`` when given a training run folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PushError(f"{folder} is not a folder: give the model folder written by training (e.g. runs/NAME/model)")
    if not (folder / CONFIG_NAME).is_file() and (folder / "model" / CONFIG_NAME).is_file():
        logger.info("%s is a run folder: pushing its model folder %s", folder, folder / "model")
        return folder / "model"
    return folder


def validate_folder(folder: Path) -> None:
    """Refuse a folder the app could not load: missing files, pickles, config/weights mismatch."""
    try:
        load_model_folder(folder)
    except ModelLoadError as exc:
        raise PushError(f"cannot push {folder}: {exc}") from exc


def refresh_card(folder: Path, repo_id: str) -> bool:
    """Rewrite ``README.md`` for ``repo_id`` (atomically); return whether it changed."""
    card = render_model_card(folder, repo_id)
    path = folder / CARD_NAME
    if path.is_file() and path.read_text(encoding="utf-8") == card:
        return False
    tmp = folder / f".{CARD_NAME}.tmp"
    tmp.write_text(card, encoding="utf-8")
    tmp.replace(path)
    logger.info("model card %s written for %s", path, repo_id)
    return True


def _http_error(exc: HfHubHTTPError, repo_id: str, branch: str | None) -> PushError:
    """Turn a Hub HTTP error into a message that names the fix."""
    status = exc.response.status_code if exc.response is not None else None
    namespace = repo_id.split("/")[0]
    if isinstance(exc, RevisionNotFoundError):
        return PushError(f"branch {branch!r} of {repo_id} could not be found or created: check the branch name")
    if isinstance(exc, RepositoryNotFoundError) or status == 404:
        return PushError(
            f"Hub repo {repo_id} not found, or it is private and your token cannot see it: check the name, "
            f"and {LOGIN_HINT} to {namespace!r}"
        )
    if status == 401:
        return PushError(f"the Hub refused the token (401: invalid or expired): {LOGIN_HINT}")
    if status == 403:
        return PushError(
            f"no permission to create or write {repo_id} (403): the token cannot write to namespace "
            f"{namespace!r}; push to your own namespace (your-user/{repo_id.split('/')[1]}), or {LOGIN_HINT} "
            "there (a fine-grained token needs write access to that repo or organisation)"
        )
    return PushError(f"the Hub refused the push to {repo_id} (HTTP {status}): {exc}")


def check_can_push(repo_id: str, *, branch: str | None = None, token: str | None = None) -> str:
    """Check what a push needs before any work is done; return the token to use.

    Meant for ``python -m train --push-to-hub`` to call before its first epoch, so a missing
    login fails in a second rather than after hours of training. Makes no network call.
    """
    if not _REPO_RE.match(repo_id or ""):
        raise PushError(f"repo id {repo_id!r} must be of the form user/repo (or organisation/repo)")
    if branch is not None and not branch.strip():
        raise PushError("the branch name is empty: pass --branch NAME or leave it out to push to main")
    token = token or get_token()
    if not token:
        raise PushError(f"no Hugging Face token found, so nothing can be pushed to {repo_id}: {LOGIN_HINT}")
    if hub_constants.HF_HUB_OFFLINE:
        raise PushError("HF_HUB_OFFLINE=1 is set, so the Hub cannot be reached: unset HF_HUB_OFFLINE to push")
    return token


def default_commit_message(folder: Path) -> str:
    return f"Upload lungdemo model ({folder.resolve().parent.name}/{folder.name})"


def push_folder(
    folder: Path,
    repo_id: str,
    *,
    private: bool = False,
    branch: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
) -> str:
    """Validate ``folder``, refresh its card, and upload it to ``repo_id``; return the commit URL.

    ``private`` applies when the repo is created (an existing repo keeps its visibility; a
    warning says so). ``branch`` is created from ``main`` when missing and receives the
    commit. Raises :class:`PushError`.
    """
    if not _REPO_RE.match(repo_id or ""):
        raise PushError(f"repo id {repo_id!r} must be of the form user/repo (or organisation/repo)")
    folder = resolve_model_folder(folder)
    validate_folder(folder)
    token = check_can_push(repo_id, branch=branch, token=token)
    refresh_card(folder, repo_id)

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=True if private else None, exist_ok=True, repo_type="model")
        logger.info("repo ready: %s", url)
        if private:
            info = api.model_info(repo_id)
            if not info.private:
                logger.warning("%s already exists and is public: --private applies only to new repos", repo_id)
        if branch:
            api.create_branch(repo_id, branch=branch, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            revision=branch,
            commit_message=commit_message or default_commit_message(folder),
            allow_patterns=UPLOAD_PATTERNS,
            ignore_patterns=IGNORE_PATTERNS,
        )
    except HfHubHTTPError as exc:
        raise _http_error(exc, repo_id, branch) from exc
    except httpx2.TransportError as exc:
        raise PushError(
            f"cannot reach the Hub at {api.endpoint} ({type(exc).__name__}: {exc}): check the network "
            "connection (and HF_ENDPOINT), then run the push again; it is safe to repeat"
        ) from exc
    logger.info("pushed %s to %s (%s)", folder, repo_id, commit.commit_url)
    return str(commit.commit_url)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.push", description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path, help="model folder (or a training run folder holding model/)")
    p.add_argument("repo_id", help="Hub repo id, user/repo or organisation/repo (created when missing)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--branch", default=None, help="push to this branch (created from main when missing)")
    p.add_argument("--commit-message", default=None, help="commit message (default: names the folder)")
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the `hf auth login` token)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "httpcore"):  # one line per HTTP request otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        url = push_folder(
            args.folder,
            args.repo_id,
            private=args.private,
            branch=args.branch,
            commit_message=args.commit_message,
            token=args.token,
        )
    except PushError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"pushed {args.folder} to {args.repo_id}: {url}")
    suffix = f"@{args.branch}" if args.branch else ""
    print(f"load it with: LUNGDEMO_MODEL={args.repo_id}{suffix} python app.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
