"""Resolve a model reference to a folder and load it.

One reference form everywhere (app, evaluation, batch prediction):

* a local folder path: ``runs/alexnet-1``, ``./models/lungdemo-alexnet``;
* a Hub repo id with an optional revision: ``user/repo``, ``user/repo@v1`` (a branch or
  tag) or ``user/repo@<40-hex commit>``.

Hub folders are fetched with :func:`huggingface_hub.snapshot_download` into the standard
cache, so a second start works with ``HF_HUB_OFFLINE=1`` and a pinned commit needs no network
at all. Only JSON, safetensors, Markdown and PNG files are fetched: a pickle in the repo is
never downloaded, let alone loaded.

Every failure is a :class:`ModelLoadError` whose message says what to do about it: the app
shows it to the user as is, so it names the fix (log in, unset ``HF_HUB_OFFLINE``, pick a
revision the repo has, re-export the folder) rather than the library's exception.
"""

from __future__ import annotations

import json
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

from lungdemo.model import CONFIG_NAME, WEIGHTS_NAME, LungAlexNet, ModelFormatError

logger = logging.getLogger(__name__)

METRICS_NAME = "metrics.json"
SHIPPED_MODEL_DIR = Path(__file__).resolve().parent / "shipped_model"
"""The model folder shipped inside the package: the default model reference everywhere."""
CARD_NAME = "README.md"
HUB_PATTERNS = ["*.json", "*.safetensors", "*.md", "*.png"]
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


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

    @property
    def is_pinned(self) -> bool:
        """A full commit sha: immutable, so the cache alone can serve it."""
        return self.revision is not None and bool(_COMMIT_RE.match(self.revision))


def parse_model_ref(ref: str | Path) -> ModelRef:
    """Tell a local folder from ``user/repo[@revision]``; an existing path always wins."""
    text = str(ref).strip()
    if not text:
        raise ModelLoadError("empty model reference: give a folder path or a Hub repo id user/repo")
    path = Path(text).expanduser()
    if path.exists():
        return ModelRef(text=text, local_path=path)
    repo, at, revision = text.partition("@")
    if _REPO_RE.match(repo) and not text.startswith((".", "/", "~")):
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


def _offline_message(ref: ModelRef) -> str:
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


def fetch_model_folder(ref: ModelRef) -> tuple[Path, str | None]:
    """Return the local folder for ``ref`` (downloading a Hub snapshot when needed) and,
    for Hub references, the resolved commit sha."""
    if ref.local_path is not None:
        return ref.local_path, None
    assert ref.repo_id is not None
    repo = ref.repo_id
    try:
        folder = Path(
            snapshot_download(
                repo_id=repo,
                revision=ref.revision,
                allow_patterns=HUB_PATTERNS,
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
        raise ModelLoadError(_offline_message(ref)) from exc
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
    sha = folder.name if _COMMIT_RE.fullmatch(folder.name) else None
    logger.info("resolved %s to %s", ref.text, folder)
    return folder, sha


def check_model_folder(folder: Path) -> None:
    """Say exactly what a folder lacks before anything is built from it."""
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is not a folder")
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
    if missing:
        pickles = sorted(p.name for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES)
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


def weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors header, without reading the tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118


def describe_mismatch(model: LungAlexNet, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """Plain-words differences between the model ``config.json`` built and the weights' shapes.

    model.py's strict loader lists raw keys and shapes; this says what they mean (class
    count, head width, architecture) so the user knows which of the two files is wrong.
    """
    found: list[str] = []
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    feature_keys = [k for k in expected if k.startswith("features.")]
    bad_features = [k for k in feature_keys if shapes.get(k) != expected[k]]
    if bad_features:
        found.append(
            f"the weights are not a torchvision AlexNet as config.json says: {len(bad_features)} of "
            f"{len(feature_keys)} AlexNet feature tensors are missing or misshapen; the file's tensors "
            f"start with {sorted(shapes)[:3]}"
        )
    head = sorted((int(m.group(1)), k) for k in shapes if (m := re.fullmatch(r"classifier\.(\d+)\.weight", k)))
    if head and all(len(shapes[k]) == 2 for _, k in head):
        last_key = head[-1][1]
        outputs = shapes[last_key][0]
        if outputs != model.num_classes:
            found.append(
                f"config.json lists {model.num_classes} classes {model.class_names} but the weights' output "
                f"layer ({last_key}) has {outputs} outputs"
            )
        file_hidden = shapes[head[0][1]][0] if len(head) > 1 else 0
        if file_hidden != model.hidden:
            found.append(f"config.json says hidden={model.hidden} but the weights have a head of width {file_hidden}")
    return found


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
    except ModelFormatError as exc:
        raise ModelLoadError(f"{folder / CONFIG_NAME}: {exc}") from exc
    try:
        model.load_weights_file(folder / WEIGHTS_NAME)
    except ModelFormatError as exc:
        try:
            differences = describe_mismatch(model, weight_shapes(folder / WEIGHTS_NAME))
        except Exception:  # an unreadable file: model.py's message already says so
            differences = []
        if differences:
            raise ModelLoadError(
                f"{folder}: {CONFIG_NAME} and {WEIGHTS_NAME} do not belong together: "
                + "; ".join(differences)
                + f". Re-export the folder from the training run, or fix {CONFIG_NAME}. Details: {exc}"
            ) from exc
        raise ModelLoadError(f"{folder}: {exc}") from exc
    model.eval()
    return model, config


def load_model(ref: str | Path) -> LoadedModel:
    """Load a model from a folder path or ``user/repo[@revision]``."""
    parsed = parse_model_ref(ref)
    folder, sha = fetch_model_folder(parsed)
    if parsed.is_hub:
        missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
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
