"""Resolve a model reference to a folder and load it.

One reference form everywhere (app, evaluation, batch prediction):

* a local folder path: ``runs/alexnet-1``, ``./models/lungdemo-alexnet``;
* a Hub repo id with an optional revision: ``user/repo`` or ``user/repo@v1`` or
  ``user/repo@<40-hex commit>``.

Hub folders are fetched with :func:`huggingface_hub.snapshot_download` into the standard
cache, so a second start works with ``HF_HUB_OFFLINE=1`` and a pinned commit needs no network
at all. Only JSON, safetensors, Markdown and PNG files are fetched: a pickle in the repo is
never downloaded, let alone loaded.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from lungdemo.model import CONFIG_NAME, WEIGHTS_NAME, LungAlexNet, ModelFormatError

logger = logging.getLogger(__name__)

METRICS_NAME = "metrics.json"
CARD_NAME = "README.md"
HUB_PATTERNS = ["*.json", "*.safetensors", "*.md", "*.png"]
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class ModelLoadError(RuntimeError):
    """A model reference that cannot be loaded; the message says what to do about it."""


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


def parse_model_ref(ref: str | Path) -> ModelRef:
    """Tell a local folder from ``user/repo[@revision]``; an existing path always wins."""
    text = str(ref).strip()
    if not text:
        raise ModelLoadError("empty model reference: give a folder path or a Hub repo id user/repo")
    path = Path(text).expanduser()
    if path.exists():
        return ModelRef(text=text, local_path=path)
    repo, _, revision = text.partition("@")
    if _REPO_RE.match(repo) and not text.startswith((".", "/", "~")):
        return ModelRef(text=text, repo_id=repo, revision=revision or None)
    raise ModelLoadError(
        f"model reference {text!r} is neither an existing folder nor a Hub repo id "
        "of the form user/repo or user/repo@revision"
    )


def fetch_model_folder(ref: ModelRef) -> tuple[Path, str | None]:
    """Return the local folder for ``ref`` (downloading a Hub snapshot when needed) and,
    for Hub references, the resolved commit sha."""
    if ref.local_path is not None:
        return ref.local_path, None
    assert ref.repo_id is not None
    try:
        folder = Path(
            snapshot_download(
                repo_id=ref.repo_id,
                revision=ref.revision,
                allow_patterns=HUB_PATTERNS,
            )
        )
    except RevisionNotFoundError as exc:
        raise ModelLoadError(
            f"revision {ref.revision!r} does not exist in {ref.repo_id}: use a branch, tag or commit that the repo has"
        ) from exc
    except GatedRepoError as exc:
        raise ModelLoadError(f"{ref.repo_id} is gated: accept its terms on the Hub and log in (hf auth login)") from exc
    except RepositoryNotFoundError as exc:
        raise ModelLoadError(
            f"Hub repo {ref.repo_id} not found, or it is private: check the name, or log in "
            "with `hf auth login` (or set HF_TOKEN) with access to it"
        ) from exc
    except LocalEntryNotFoundError as exc:
        raise ModelLoadError(
            f"{ref.text} is not in the local Hugging Face cache and the Hub cannot be reached "
            "(offline, or HF_HUB_OFFLINE=1): run once with network access to cache it, or "
            "pass a local model folder"
        ) from exc
    except HfHubHTTPError as exc:
        raise ModelLoadError(f"could not download {ref.text} from the Hub: {exc}") from exc
    sha = folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else None
    return folder, sha


def check_model_folder(folder: Path) -> None:
    """Say exactly what a folder lacks before anything is built from it."""
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is not a folder")
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
    if missing:
        pickles = sorted(p.name for p in folder.glob("*") if p.suffix in {".bin", ".pt", ".pth", ".ckpt"})
        hint = f" (found {pickles}: pickled weights are never loaded; export them to safetensors)" if pickles else ""
        raise ModelLoadError(f"{folder} is not a lungdemo model folder: missing {', '.join(missing)}{hint}")


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} must hold a JSON object")
    return data


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


def load_model_folder(folder: Path) -> tuple[LungAlexNet, dict[str, Any]]:
    """Build the model from ``config.json`` and load ``model.safetensors`` strictly."""
    check_model_folder(folder)
    config = read_json(folder / CONFIG_NAME)
    if "class_names" not in config:
        raise ModelLoadError(f"{folder / CONFIG_NAME} has no 'class_names': not a lungdemo config")
    allowed = set(LungAlexNet._hub_mixin_init_parameters) - {"self"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ModelLoadError(f"{folder / CONFIG_NAME} has unknown keys {unknown}")
    try:
        model = LungAlexNet(**config)
        model.load_weights_file(folder / WEIGHTS_NAME)
    except ModelFormatError as exc:
        raise ModelLoadError(f"{folder}: {exc}") from exc
    model.eval()
    return model, config


def load_model(ref: str | Path) -> LoadedModel:
    """Load a model from a folder path or ``user/repo[@revision]``."""
    parsed = parse_model_ref(ref)
    folder, sha = fetch_model_folder(parsed)
    model, config = load_model_folder(folder)
    metrics_path = folder / METRICS_NAME
    metrics = read_json(metrics_path) if metrics_path.is_file() else None
    logger.info("loaded model %s (%d classes) from %s", parsed.text, model.num_classes, folder)
    return LoadedModel(model=model, folder=folder, ref=parsed, revision=sha, metrics=metrics, config=config)
