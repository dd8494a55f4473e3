"""The about tab: the model card (without its Hub metadata) and where the model came from."""

from __future__ import annotations

import re

import gradio as gr

from lungdemo import DISCLAIMER
from lungdemo.folder import CARD_NAME
from lungdemo.loading import LoadedModel
from lungdemo.web.text import model_label

_IMAGE_RE = re.compile(r"!\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FRONT_MATTER_RE = re.compile(r"\A---[ \t]*\r?\n.*?\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


def strip_front_matter(text: str) -> str:
    """A model card without its YAML front matter (Hub metadata, not for readers)."""
    return _FRONT_MATTER_RE.sub("", text.lstrip("\ufeff"), count=1).lstrip()


def local_images_as_text(card: str) -> str:
    """Images of the folder's own PNGs as a line of text: the app does not serve the model folder."""

    def replace(match: re.Match[str]) -> str:
        alt, target = match.group(1), match.group(2)
        if re.match(r"^(?:[a-z][a-z0-9+.-]*:|/)", target, re.IGNORECASE):
            return match.group(0)  # http(s)://, data:, absolute: left as they are
        return f"*[figure: {alt or target}, `{target}` in the model folder]*"

    return _IMAGE_RE.sub(replace, card)


FLIP_LINE = "- Each slice is scored together with its mirror image (left-right); the two views' logits are averaged"


def about_markdown(loaded: LoadedModel) -> str:
    """The model card plus where the model came from."""
    card_path = loaded.folder / CARD_NAME
    if card_path.is_file():
        card = local_images_as_text(strip_front_matter(card_path.read_text(encoding="utf-8")))
    else:
        card = f"*This model folder has no model card ({CARD_NAME}).*"
    model = loaded.model
    cfg = model.preprocess_config
    source = ["## Where this model came from", "", f"- Model: {model_label(loaded)}"]
    if loaded.ref.is_hub:
        revision = loaded.revision or loaded.ref.revision or "main"
        source.append(f"- Hub repo `{loaded.ref.repo_id}`, revision `{revision}`")
    source += [
        f"- Classes (output order): {', '.join(f'`{c}`' for c in model.class_names)}",
        f"- Input: {cfg.image_size}×{cfg.image_size}, framing `{cfg.resize}`, grayscale repeated to "
        f"{cfg.in_channels} channels; softmax temperature {model.temperature:g}",
        *([FLIP_LINE] if model.test_time_flip else []),
        "",
        f"> **{DISCLAIMER}**",
    ]
    return card.rstrip() + "\n\n" + "\n".join(source) + "\n"


def about_tab(loaded: LoadedModel) -> None:
    gr.Markdown(about_markdown(loaded), elem_id="model-card")
