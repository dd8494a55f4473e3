"""Resolve a model reference to a folder and load it.

One reference form everywhere (app, evaluation, batch prediction):

* a local folder path: ``runs/alexnet-1``, ``./models/lungdemo-alexnet``;
* a Hub repo id with an optional revision: ``user/repo``, ``user/repo@v1`` (a branch or
  tag) or ``user/repo@<40-hex commit>``.

Hub folders are fetched with :func:`huggingface_hub.snapshot_download` into the standard
cache, so a second start works with ``HF_HUB_OFFLINE=1`` and a pinned commit needs no network
at all. Only the files a model folder is made of (:data:`lungdemo.folder.FOLDER_PATTERNS`) are
fetched: a pickle in the repo is never downloaded, let alone loaded. The folder itself is read
by :func:`lungdemo.folder.load_model_folder`.

Every failure is a :class:`ModelLoadError` whose message says what to do about it: the app
shows it to the user as is, so it names the fix (log in, unset ``HF_HUB_OFFLINE``, pick a
revision the repo has, re-export the folder) rather than the library's exception.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import constants as hub_constants
from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from lungdemo.folder import (
    FOLDER_PATTERNS,
    METRICS_NAME,
    ModelLoadError,
    load_model_folder,
    missing_files,
    read_json,
)
from lungdemo.model import LungAlexNet

__all__ = [
    "REPO_ID_RE",
    "SHIPPED_MODEL_DIR",
    "LoadedModel",
    "ModelLoadError",
    "ModelRef",
    "load_model",
    "load_model_folder",
    "parse_model_ref",
]

logger = logging.getLogger(__name__)

SHIPPED_MODEL_DIR = Path(__file__).resolve().parent / "shipped_model"
"""The model folder shipped inside the package: the default model reference everywhere."""
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
"""A Hub repo id, ``user/repo`` or ``organisation/repo``."""
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference."""

    text: str
    local_path: Path | None = None
    repo_id: str | None = None
    revision: str | None = None

    @property
    def is_hub(self) -> bool:
        return self.repo_id is not None

    @property
    def is_pinned(self) -> bool:
        """A full commit sha: immutable, so the cache alone can serve it."""
        return self.revision is not None and bool(COMMIT_RE.match(self.revision))


def parse_model_ref(ref: str | Path) -> ModelRef:
    """Tell a local folder from ``user/repo[@revision]``; an existing path always wins."""
    text = str(ref).strip()
    if not text:
        raise ModelLoadError("empty model reference: give a folder path or a Hub repo id user/repo")
    path = Path(text).expanduser()
    if path.exists():
        return ModelRef(text=text, local_path=path)
    repo, at, revision = text.partition("@")
    if REPO_ID_RE.match(repo) and not text.startswith((".", "/", "~")):
        if at and not revision.strip():
            raise ModelLoadError(
                f"model reference {text!r} has an empty revision after '@': write {repo}@<branch, tag or commit>, "
                f"or just {repo} for the main branch"
            )
        return ModelRef(text=text, repo_id=repo, revision=revision.strip() or None)
    raise ModelLoadError(
        f"model reference {text!r} is neither an existing folder nor a Hub repo id "
        "of the form user/repo or user/repo@revision"
    )


def _repo_cache_dir(repo_id: str) -> Path:
    """The standard cache folder of a model repo (read at call time, so tests can point it elsewhere)."""
    return Path(hub_constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))


def cached_revisions(repo_id: str) -> dict[str, str]:
    """Revisions of ``repo_id`` that the local cache can serve: ``{branch or tag or sha: sha}``.

    Only used to word errors: telling "this revision is not cached" from "this repo was never
    downloaded" saves the user a guess.
    """
    root = _repo_cache_dir(repo_id)
    snapshots = root / "snapshots"
    have = {p.name for p in snapshots.iterdir() if p.is_dir()} if snapshots.is_dir() else set()
    out: dict[str, str] = {}
    refs = root / "refs"
    if refs.is_dir():
        for ref in sorted(p for p in refs.rglob("*") if p.is_file()):
            sha = ref.read_text(encoding="utf-8").strip()
            if sha in have:
                out[ref.relative_to(refs).as_posix()] = sha
    for sha in sorted(have - set(out.values())):
        out[sha] = sha
    return out


def cache_miss_message(ref: ModelRef) -> str:
    """Why a Hub reference could not be served from the cache, and what to do instead."""
    assert ref.repo_id is not None
    revision = ref.revision or hub_constants.DEFAULT_REVISION
    cache = _repo_cache_dir(ref.repo_id).parent
    offline = hub_constants.HF_HUB_OFFLINE
    cached = cached_revisions(ref.repo_id)
    if offline:
        how = "HF_HUB_OFFLINE=1 is set, so nothing is downloaded: unset HF_HUB_OFFLINE (or set it to 0) to fetch it"
    else:
        how = (
            f"the Hub ({hub_constants.ENDPOINT}) cannot be reached: check the network connection "
            "(and HF_ENDPOINT) and run again to fetch it"
        )
    if not cached:
        return (
            f"{ref.repo_id} is not in the local Hugging Face cache ({cache}) and {how}; "
            "or pass a local model folder instead"
        )
    listed = ", ".join(name if name == sha else f"{name} ({sha[:12]})" for name, sha in cached.items())
    return (
        f"revision {revision!r} of {ref.repo_id} is not in the local Hugging Face cache ({cache}), "
        f"which has only: {listed}; {how}, or use one of the cached revisions "
        f"(e.g. {ref.repo_id}@{next(iter(cached.values()))})"
    )


def fetch_model_folder(ref: ModelRef, token: str | None = None) -> tuple[Path, str | None]:
    """Return the local folder for ``ref`` (downloading a Hub snapshot when needed) and,
    for Hub references, the resolved commit sha. ``token`` defaults to the logged-in one."""
    if ref.local_path is not None:
        return ref.local_path, None
    assert ref.repo_id is not None
    repo = ref.repo_id
    try:
        folder = Path(
            snapshot_download(
                repo_id=repo,
                revision=ref.revision,
                allow_patterns=FOLDER_PATTERNS,
                token=token,
            )
        )
    except RevisionNotFoundError as exc:
        raise ModelLoadError(
            f"revision {ref.revision!r} does not exist in {repo}: use a branch, tag or commit that the repo has "
            f"(see {hub_constants.ENDPOINT}/{repo}/tree/main), or drop '@{ref.revision}' to use the main branch"
        ) from exc
    except GatedRepoError as exc:
        raise ModelLoadError(
            f"{repo} is gated: accept its terms on {hub_constants.ENDPOINT}/{repo} and log in with "
            "`hf auth login` (or set HF_TOKEN)"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelLoadError(
            f"Hub repo {repo} not found, or it is private: check the name, or log in "
            "with `hf auth login` (or set HF_TOKEN) with access to it"
        ) from exc
    except LocalEntryNotFoundError as exc:
        raise ModelLoadError(cache_miss_message(ref)) from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            raise ModelLoadError(
                f"the Hub refused the token while fetching {ref.text} (401): it is invalid or expired; "
                "run `hf auth login` again or set HF_TOKEN to a valid token"
            ) from exc
        raise ModelLoadError(f"could not download {ref.text} from the Hub: {exc}") from exc
    except ValueError as exc:  # HFValidationError: a malformed repo id or revision
        raise ModelLoadError(f"invalid Hub reference {ref.text!r}: {exc}") from exc
    sha = folder.name if COMMIT_RE.fullmatch(folder.name) else None
    logger.info("resolved %s to %s", ref.text, folder)
    return folder, sha


@dataclass
class LoadedModel:
    """A model ready for inference, with what it was loaded from."""

    model: LungAlexNet
    folder: Path
    ref: ModelRef
    revision: str | None = None
    metrics: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        """Human-readable source, e.g. ``user/repo@<sha>`` or the folder path."""
        if self.ref.is_hub:
            return f"{self.ref.repo_id}@{self.revision or self.ref.revision or 'main'}"
        return str(self.folder)


def load_model(ref: str | Path, *, token: str | None = None) -> LoadedModel:
    """Load a model from a folder path or ``user/repo[@revision]`` (``token``: for private repos)."""
    parsed = parse_model_ref(ref)
    folder, sha = fetch_model_folder(parsed, token)
    if parsed.is_hub:
        missing = missing_files(folder)
        if missing:
            raise ModelLoadError(
                f"{parsed.text} is not a lungdemo model repo: it has no {', '.join(missing)} "
                f"(pickled weights such as pytorch_model.bin are never downloaded or loaded); "
                f"push a model folder with `python -m train.push FOLDER {parsed.repo_id}`"
            )
    model, config = load_model_folder(folder)
    metrics_path = folder / METRICS_NAME
    metrics = read_json(metrics_path) if metrics_path.is_file() else None
    logger.info("loaded model %s (%d classes) from %s", parsed.text, model.num_classes, folder)
    return LoadedModel(model=model, folder=folder, ref=parsed, revision=sha, metrics=metrics, config=config)
