"""The classify tab: input boxes | notes, probabilities and confidence | heat map, and the report row under them.

One upload (image box, file box or example click) runs ``/classify``; on success ``/explain``
and the page-only steps (notes, confidence line, the session's slice); on failure all is cleared.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from lungdemo.gradcam import HEATMAP_NOTE
from lungdemo.web.classifier import REPORT_FORMATS, TOP_CLASS_CHOICE, Classifier, Slice, empty_map_markdown
from lungdemo.web.lifecycle import SLICE_TTL_S
from lungdemo.web.text import DISCLAIMER_MARKDOWN

FILE_INPUT_TYPES = [".dcm", ".dicom", "image"]
"""The file box takes DICOM, which the image box cannot preview; the server decodes by content."""
PAGE_ONLY: dict[str, Any] = {"api_visibility": "private", "queue": False}
DOWNLOAD_JS = """(file) => {
    // One-click download: the report event has just put the file in the File box.
    if (file && file.url) {
        const link = document.createElement("a");
        link.href = file.url;
        link.download = file.orig_name || "";
        document.body.appendChild(link);
        link.click();
        link.remove();
    }
    return [];
}"""


def classify_tab(classifier: Classifier, examples: Sequence[Path], classify_limit: int, explain_limit: int) -> None:
    """Lay out the tab and wire its events (see the module docstring for the chain).

    Classifications (``classify_limit`` at once) share forward passes; heat maps (a forward and
    a backward pass each, ``explain_limit`` at once) have their own slots, so they never hold
    a classification's place.
    """
    classes = classifier.predictor.class_names
    gr.Markdown(DISCLAIMER_MARKDOWN, elem_id="disclaimer")
    current = gr.State(None, time_to_live=SLICE_TTL_S)
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            image = gr.Image(
                type="filepath",
                image_mode=None,
                sources=["upload", "clipboard"],
                label="CT slice (drop, click to upload, or paste)",
                buttons=["fullscreen"],
                elem_id="slice-input",
            )
            file_box = gr.File(
                file_types=FILE_INPUT_TYPES,
                label="…or upload a file: DICOM (.dcm) or any image the box above cannot show",
                height=140,
                elem_id="file-input",
            )
            example_block = (
                gr.Examples(
                    examples=[[str(p)] for p in examples],
                    inputs=[image],
                    example_labels=[p.stem.replace("_", " ") for p in examples],
                    cache_examples=False,
                    label="Example slices from the test split",
                )
                if examples
                else None
            )
        with gr.Column(scale=3):
            notes = gr.Markdown(elem_id="decode-notes")  # first: a flagged upload's banner leads
            label = gr.Label(
                num_top_classes=len(classes),
                label=f"Class probabilities (temperature-scaled, T = {classifier.temperature:.2f})",
                elem_id="probabilities",
            )
            confidence = gr.Markdown(elem_id="confidence-note")
        with gr.Column(scale=4):
            cam_class = gr.Dropdown(
                choices=[TOP_CLASS_CHOICE, *classes], value=TOP_CLASS_CHOICE, label="Heat map for", elem_id="cam-class"
            )
            overlay = gr.Image(
                type="pil",
                format="png",
                interactive=False,
                label="Grad-CAM",
                buttons=["download", "fullscreen"],
                height=300,
                elem_id="cam-overlay",
            )
            cam_target = gr.Textbox(label="Heat map explains the class", interactive=False, elem_id="cam-target")
            cam_empty = gr.Markdown(elem_id="cam-empty")
            gr.Markdown(
                f"*{HEATMAP_NOTE}* The overlay is drawn on the slice as the model saw it: cropped to the body, "
                "padded to a square and resized.",
                elem_id="heatmap-note",
            )
    with gr.Row(equal_height=False):
        report_format = gr.Radio(
            list(REPORT_FORMATS), value=REPORT_FORMATS[0], label="Report format", scale=1, elem_id="report-format"
        )
        report_button = gr.Button("Download report", variant="primary", size="md", scale=1, elem_id="report-button")
        # hidden until there is a report: an empty File box is a large, empty drop zone
        report_file = gr.File(
            label="Report", interactive=False, visible=False, scale=2, height=90, elem_id="report-file"
        )

    answers = [label, confidence, notes, overlay, cam_target, cam_empty, current, report_file]

    def cleared() -> tuple[Any, ...]:
        return None, "", "", None, "", "", None, no_report()

    def no_report() -> Any:
        return gr.File(value=None, visible=False)

    def report_shown(current: Slice | None, target_class: str | None, fmt: str | None) -> Any:
        return gr.File(value=classifier.report(current, target_class, fmt), visible=True)

    def follow_up(event: Any, source: gr.components.Component, explain_api_name: str | None) -> None:
        """What runs after a classification from ``source``."""
        api: dict[str, Any] = {"api_visibility": "private"}
        if explain_api_name:
            api = {
                "api_name": explain_api_name,
                "api_description": (
                    "Grad-CAM heat map of one chest CT slice (an image file) for target_class: "
                    f"{TOP_CLASS_CHOICE!r} (the predicted class) or one of {classes}. Returns the overlay "
                    "image (the slice as the model saw it, at its input size) and the class it explains. "
                    "A heat map shows where the model looked, not proof of disease."
                ),
            }
        ok = event.success(
            classifier.explain,
            inputs=[source, cam_class],
            outputs=[overlay, cam_target],
            preprocess=False,  # the file untouched, as /classify gets it
            concurrency_limit=explain_limit,
            concurrency_id="explain",
            **api,
        )
        ok.success(empty_map_markdown, inputs=[overlay, cam_target], outputs=cam_empty, **PAGE_ONLY)
        ok.failure(lambda: (None, "", ""), outputs=[overlay, cam_target, cam_empty], **PAGE_ONLY)
        event.success(classifier.notes, inputs=source, outputs=notes, preprocess=False, **PAGE_ONLY)
        event.success(classifier.confidence, inputs=label, outputs=confidence, **PAGE_ONLY)
        event.success(no_report, outputs=report_file, **PAGE_ONLY)
        event.success(classifier.remember, inputs=source, outputs=current, preprocess=False, **PAGE_ONLY)
        event.failure(cleared, outputs=answers, **PAGE_ONLY)

    # `upload` fires once per file; `change` fires twice when an image replaces another (Gradio 6.31)
    classify_options: dict[str, Any] = {
        "fn": classifier.classify,
        "outputs": label,
        "preprocess": False,  # the function gets the upload untouched (lifecycle.upload_payload)
        "concurrency_limit": classify_limit,
        "concurrency_id": "classify",
    }
    follow_up(
        image.upload(
            **classify_options,
            inputs=image,
            api_name="classify",
            api_description=(
                "Classify one chest CT slice (an image file). Returns the probability of each of "
                f"the classes {classes}."
            ),
        ),
        image,
        "explain",
    )
    # API only: the same classification as JSON, with the out-of-distribution check's verdict
    json_trigger = gr.Button(visible=False)
    json_trigger.click(
        classifier.classify_json,
        inputs=file_box,
        outputs=gr.JSON(visible=False),
        preprocess=False,
        concurrency_limit=classify_limit,
        concurrency_id="classify",
        api_name="classify_json",
        api_description=(
            "Classify one chest CT slice (an image or DICOM file) and check that it looks like one. Returns "
            "probabilities, top_class, check (score, threshold, flagged, reason; null without a check) and notes."
        ),
    )
    image.upload(lambda: None, outputs=file_box, **PAGE_ONLY)  # one current slice: the other box empties
    if example_block is not None:
        loaded = example_block.load_input_event
        follow_up(loaded.then(**classify_options, inputs=image, api_visibility="private"), image, None)
        loaded.then(lambda: None, outputs=file_box, **PAGE_ONLY)
    follow_up(file_box.upload(**classify_options, inputs=file_box, api_visibility="private"), file_box, None)
    file_box.upload(lambda: None, outputs=image, **PAGE_ONLY)
    image.clear(cleared, outputs=answers, **PAGE_ONLY)
    file_box.clear(cleared, outputs=answers, **PAGE_ONLY)

    cam_class.input(
        classifier.explain_slice,
        inputs=[current, cam_class],
        outputs=[overlay, cam_target],
        api_visibility="private",
        concurrency_limit=explain_limit,
        concurrency_id="explain",
    ).success(empty_map_markdown, inputs=[overlay, cam_target], outputs=cam_empty, **PAGE_ONLY)
    report_button.click(
        report_shown,
        inputs=[current, cam_class, report_format],
        outputs=report_file,
        api_visibility="private",
        concurrency_limit=1,
        concurrency_id="report",
    ).success(None, inputs=report_file, js=DOWNLOAD_JS, **PAGE_ONLY)
