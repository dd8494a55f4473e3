"""Publish a model folder to the Hugging Face Hub.

Usage::

    hf auth login                      # or: export HF_TOKEN=hf_...
    python -m train.push runs/alexnet-1/model user/lung-ct-alexnet [--private] [--branch B]

A run folder (``runs/alexnet-1``, holding ``model/``) is accepted too. Before anything is
sent the folder is checked the way the app will load it (``config.json`` and
``model.safetensors`` present, weights load strictly), and its model card is re-rendered
with the repo id so the metadata on the Hub is right. The token is checked with the Hub
(``whoami``: a rejected or read-only token stops here), then ``create_repo(exist_ok=True)``
(and ``create_branch(exist_ok=True)`` for ``--branch``) and ``upload_folder``: only
safetensors, JSON, Markdown and PNG files are sent, never a pickle. Pushing an unchanged
folder again makes no commit; the Hub compares file hashes and the card is deterministic.

Errors are :class:`PushError` with a message that names the fix (log in, check the repo
name or your write access, re-export the folder); ``train.deploy_space`` shares the checks
and messages.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import httpx2  # huggingface_hub's HTTP client (a dependency of huggingface-hub 2.x)
from huggingface_hub import HfApi, get_token
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from lungdemo.atomic import write_text
from lungdemo.errors import LungdemoError, report_error
from lungdemo.folder import (
    CARD_NAME,
    CONFIG_NAME,
    FOLDER_PATTERNS,
    RUN_MODEL_DIR,
    ModelLoadError,
    load_model_folder,
)
from lungdemo.loading import REPO_ID_RE
from train.card import render_model_card

logger = logging.getLogger(__name__)

IGNORE_PATTERNS = [".*", "*/.*"]
LOGIN_HINT = "run `hf auth login` (or set HF_TOKEN, or pass --token) with a token that has write access"
NOUNS = {"model": "Hub repo", "space": "Space"}


class PushError(LungdemoError, RuntimeError):
    """A push that cannot happen or failed; the message says what to do about it."""


def resolve_model_folder(folder: Path) -> Path:
    """The model folder itself, or ``FOLDER/model`` when given a training run folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PushError(f"{folder} is not a folder: give the model folder written by training (e.g. runs/NAME/model)")
    if not (folder / CONFIG_NAME).is_file() and (folder / RUN_MODEL_DIR / CONFIG_NAME).is_file():
        logger.info("%s is a run folder: pushing its model folder %s", folder, folder / RUN_MODEL_DIR)
        return folder / RUN_MODEL_DIR
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
    write_text(path, card)
    logger.info("model card %s written for %s", path, repo_id)
    return True


# --- shared with train.deploy_space: one set of checks and messages for every upload ---------------
def check_repo_id(repo_id: str, repo_type: str = "model") -> None:
    if not REPO_ID_RE.match(repo_id or ""):
        what, name = ("Space id", "space") if repo_type == "space" else ("repo id", "repo")
        raise PushError(f"{what} {repo_id!r} must be of the form user/{name} (or organisation/{name})")


def check_can_push(
    repo_id: str, *, branch: str | None = None, token: str | None = None, repo_type: str = "model"
) -> str:
    """Check what a push needs before any work is done; return the token to use.

    Meant for ``python -m train --push-to-hub`` to call before its first epoch, so a missing
    login fails in a second rather than after hours of training. Makes no network call.
    """
    check_repo_id(repo_id, repo_type)
    if branch is not None and not branch.strip():
        raise PushError("the branch name is empty: pass --branch NAME or leave it out to push to main")
    token = token or get_token()
    if not token:
        raise PushError(f"no Hugging Face token found, so nothing can be pushed to {repo_id}: {LOGIN_HINT}")
    if hub_constants.HF_HUB_OFFLINE:
        raise PushError("HF_HUB_OFFLINE=1 is set, so the Hub cannot be reached: unset HF_HUB_OFFLINE to push")
    return token


def check_write_access(api: HfApi, repo_id: str) -> None:
    """Ask the Hub who the token belongs to; refuse a rejected or read-only token before any work.

    Namespace rights are left to the Hub, which answers 403 on creation (see :func:`hub_error`);
    a failure other than a rejected token (e.g. the endpoint's rate limit) only logs a warning.
    """
    try:
        info = api.whoami()
    except HfHubHTTPError as exc:
        if exc.response is not None and exc.response.status_code == 401:
            raise
        logger.warning("could not check the token with the Hub (%s); trying the push anyway", exc)
        return
    role = ((info.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise PushError(
            f"the token of {info.get('name')!r} is read-only, so nothing can be pushed to {repo_id}: {LOGIN_HINT}"
        )
    logger.info("logged in to %s as %s", api.endpoint, info.get("name"))


def hub_error(exc: HfHubHTTPError, repo_id: str, *, repo_type: str = "model", branch: str | None = None) -> PushError:
    """Turn a Hub HTTP error into a message that names the fix."""
    status = exc.response.status_code if exc.response is not None else None
    namespace, name = repo_id.split("/", 1)
    if isinstance(exc, RevisionNotFoundError):
        return PushError(f"branch {branch!r} of {repo_id} could not be found or created: check the branch name")
    if isinstance(exc, RepositoryNotFoundError) or status == 404:
        return PushError(
            f"{NOUNS[repo_type]} {repo_id} not found, or it is private and your token cannot see it: check the "
            f"name, and {LOGIN_HINT} to {namespace!r}"
        )
    if status == 401:
        return PushError(f"the Hub refused the token (401: invalid or expired): {LOGIN_HINT}")
    if status == 402:
        return PushError(
            f"the Hub asks for payment to run {repo_id} (402: {exc.server_message or 'Payment Required'}): "
            "Spaces on compute need a subscription or billing set up on the account "
            "(https://huggingface.co/settings/billing)"
        )
    if status == 403:
        return PushError(
            f"no permission to create or write {repo_id} (403): the token cannot write to namespace "
            f"{namespace!r}; push to your own namespace (your-user/{name}), or {LOGIN_HINT} "
            "there (a fine-grained token needs write access to that repo or organisation)"
        )
    return PushError(f"the Hub refused the push to {repo_id} (HTTP {status}): {exc}")


def unreachable_error(exc: httpx2.TransportError, api: HfApi) -> PushError:
    return PushError(
        f"cannot reach the Hub at {api.endpoint} ({type(exc).__name__}: {exc}): check the network "
        "connection (and HF_ENDPOINT), then run the push again; it is safe to repeat"
    )


# --- the model push -----------------------------------------------------------------------------------
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
    check_repo_id(repo_id)
    folder = resolve_model_folder(folder)
    validate_folder(folder)
    token = check_can_push(repo_id, branch=branch, token=token)
    refresh_card(folder, repo_id)

    api = HfApi(token=token)
    try:
        check_write_access(api, repo_id)
        url = api.create_repo(repo_id, private=True if private else None, exist_ok=True, repo_type="model")
        logger.info("repo ready: %s", url)
        if private and not api.model_info(repo_id).private:
            logger.warning("%s already exists and is public: --private applies only to new repos", repo_id)
        if branch:
            api.create_branch(repo_id, branch=branch, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            revision=branch,
            commit_message=commit_message or default_commit_message(folder),
            allow_patterns=FOLDER_PATTERNS,
            ignore_patterns=IGNORE_PATTERNS,
        )
    except HfHubHTTPError as exc:
        raise hub_error(exc, repo_id, branch=branch) from exc
    except httpx2.TransportError as exc:
        raise unreachable_error(exc, api) from exc
    logger.info("pushed %s to %s (%s)", folder, repo_id, commit.commit_url)
    return str(commit.commit_url)


def start_hub_cli() -> None:
    """Logging for the Hub command lines; the HTTP clients' one line per request stays quiet."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_token_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the `hf auth login` token)")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.push", description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path, help="model folder (or a training run folder holding model/)")
    p.add_argument("repo_id", help="Hub repo id, user/repo or organisation/repo (created when missing)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--branch", default=None, help="push to this branch (created from main when missing)")
    p.add_argument("--commit-message", default=None, help="commit message (default: names the folder)")
    add_token_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    start_hub_cli()
    try:
        url = push_folder(
            args.folder,
            args.repo_id,
            private=args.private,
            branch=args.branch,
            commit_message=args.commit_message,
            token=args.token,
        )
    except LungdemoError as exc:
        return report_error(exc)
    print(f"pushed {args.folder} to {args.repo_id}: {url}")
    suffix = f"@{args.branch}" if args.branch else ""
    print(f"load it with: LUNGDEMO_MODEL={args.repo_id}{suffix} python app.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
