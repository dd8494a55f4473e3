"""Words the tabs share: the model's name as the page shows it, and the disclaimer line."""

from __future__ import annotations

from lungdemo import DISCLAIMER
from lungdemo.loading import SHIPPED_MODEL_DIR, LoadedModel

DISCLAIMER_MARKDOWN = f"> ⚠️ **{DISCLAIMER}**"


def model_label(loaded: LoadedModel) -> str:
    """The model as Markdown, never a server path: the shipped model, ``user/repo@revision``, or a folder's name."""
    if loaded.ref.is_hub:
        return f"`{loaded.description}`"
    if loaded.folder.resolve() == SHIPPED_MODEL_DIR.resolve():
        return f"the shipped model (`{loaded.folder.name}`)"
    return f"`{loaded.folder.name}`"
