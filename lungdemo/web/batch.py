"""The batch tab (``/batch``): image files, DICOM files and zip archives in; a table and a CSV out.

It runs the command line's code (:func:`lungdemo.predict.predict_files`), so a row here is the
row the CLI writes for the same file; zip archives are read in memory, never extracted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from lungdemo.predict import InputError, Source, csv_columns, predict_files, write_csv, zip_sources
from lungdemo.predictor import Predictor
from lungdemo.web.lifecycle import OutputFiles, UploadJanitor, upload_name, upload_payload
from lungdemo.web.text import DISCLAIMER_MARKDOWN

logger = logging.getLogger(__name__)

BATCH_MAX_SLICES = 1000
"""Slices one request may hold (zip members counted); a dataset goes to ``python -m lungdemo.predict``."""
BATCH_ZIP_MAX_MEMBERS = 5000
BATCH_ZIP_MAX_BYTES = 256 * 1024 * 1024
"""Uncompressed bytes one zip may expand to here (1 GiB on the command line): held in memory per request."""
BATCH_CSV_NAME = "lungdemo_batch.csv"
BATCH_FILE_TYPES = ["image", ".dcm", ".dicom", ".zip"]
BATCH_SIZE = 32
"""Slices per forward pass, as the command line's default."""

Files = Sequence[str | dict[str, Any]] | str | dict[str, Any] | None


def batch_uploads(files: Files) -> list[tuple[str, str]]:
    """``(path, name)`` of each upload, from the raw payload (``preprocess=False``)."""
    if files is None:
        return []
    items = [files] if isinstance(files, (str, dict)) else list(files)
    uploads = []
    for item in items:
        path = upload_payload(item)
        if isinstance(path, bytes):
            raise gr.Error("the batch takes uploaded files, not inline data", print_exception=False)
        if path is not None:
            uploads.append((path, upload_name(item)))
    return uploads


def batch_sources(uploads: Sequence[tuple[str, str]]) -> list[Source]:
    """Zip archives opened into their image members, other files as they are."""
    sources: list[Source] = []
    for path, name in uploads:
        if not Path(path).is_file():
            sources.append((name, InputError("the uploaded file is no longer on the server: upload it again")))
        elif name.lower().endswith(".zip"):
            sources.extend(
                zip_sources(name, path, max_members=BATCH_ZIP_MAX_MEMBERS, max_total_bytes=BATCH_ZIP_MAX_BYTES)
            )
        else:
            sources.append((name, Path(path)))
    return sources


def table_rows(rows: Sequence[dict[str, Any]], class_names: Sequence[str]) -> list[list[Any]]:
    """predict_files rows in :func:`csv_columns` order; every digit kept, empty cells for an error row."""
    columns = csv_columns(class_names)
    return [["" if row.get(col) is None else row[col] for col in columns] for row in rows]


class BatchClassifier:
    """``batch`` is ``/batch``; uploads are claimed while read and released for deletion afterwards."""

    def __init__(
        self,
        predictor: Predictor,
        janitor: UploadJanitor | None = None,
        outputs: OutputFiles | None = None,
        *,
        max_slices: int = BATCH_MAX_SLICES,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.predictor = predictor
        self.janitor = janitor
        self.outputs = outputs or OutputFiles()
        self.max_slices = max_slices
        self.batch_size = batch_size

    @property
    def headers(self) -> list[str]:
        return csv_columns(self.predictor.class_names)

    def batch(
        self,
        files: Files,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio injects the request's tracker)
    ) -> tuple[list[list[Any]], str | None]:
        """Classify several chest CT slices: image files, DICOM files or .zip archives of them.

        Returns a table with one row per slice (file, predicted class, the probability of
        each class, error) and the same table as a CSV file. A file that cannot be read
        gets a row with the reason in `error`; the others are classified.
        """
        uploads = batch_uploads(files)
        if not uploads:
            return [], None
        paths = [path for path, _ in uploads]
        if self.janitor is not None:
            for path in paths:
                self.janitor.claim(path)
        try:
            progress(0.0, desc="Reading the files")
            sources = batch_sources(uploads)
            if len(sources) > self.max_slices:
                raise gr.Error(
                    f"{len(sources):,} slices in one batch; the limit here is {self.max_slices:,}. "
                    "Split them, or use the command line: python -m lungdemo.predict",
                    title="Too many slices",
                    print_exception=False,
                )
            done = 0

            def advance(n: int) -> None:
                nonlocal done
                done += n
                progress((done, len(sources)), desc="Classifying", unit="slices")

            rows = predict_files(self.predictor, sources, self.batch_size, on_progress=advance)
        finally:
            if self.janitor is not None:
                for path in paths:
                    self.janitor.release(path)
        out = self.outputs.new_path(BATCH_CSV_NAME)
        try:
            write_csv(rows, self.predictor.class_names, out)
        except Exception:
            self.outputs.discard(out)
            raise
        failed = sum(1 for row in rows if row["error"])
        logger.info("batch of %d files: %d slices, %d with errors", len(uploads), len(rows), failed)
        return table_rows(rows, self.predictor.class_names), self.outputs.handed_out(out)


def batch_tab(batcher: BatchClassifier) -> None:
    """Files in, table and CSV out; the button's event is the ``/batch`` endpoint."""
    gr.Markdown(
        f"{DISCLAIMER_MARKDOWN}\n\n"
        "Classify several slices at once: pick or drop image files, DICOM files or `.zip` archives of them "
        f"(up to {batcher.max_slices:,} slices; for more, use `python -m lungdemo.predict`). Each slice goes "
        "through the same preprocessing and model as the classify tab. A file that cannot be read gets a row "
        "saying why. The CSV holds every digit of the probabilities; it can be downloaded for about five "
        "minutes, and the uploads are deleted after the batch."
    )
    with gr.Row(equal_height=True):
        files = gr.File(
            file_count="multiple",
            file_types=BATCH_FILE_TYPES,
            label="CT slices: image files, DICOM files or .zip archives",
            height=140,
            scale=3,
            elem_id="batch-input",
        )
        with gr.Column(scale=1):
            run = gr.Button("Classify all", variant="primary", elem_id="batch-button")
            csv_file = gr.File(label="Results as CSV", interactive=False, height=90, elem_id="batch-csv")
    table = gr.Dataframe(
        headers=batcher.headers,
        label="Results (probabilities are temperature-scaled)",
        interactive=False,
        wrap=True,
        max_height=600,
        elem_id="batch-table",
    )
    run.click(
        batcher.batch,
        inputs=files,
        outputs=[table, csv_file],
        preprocess=False,  # the files untouched (lifecycle.upload_payload)
        api_name="batch",
        api_description=(
            "Classify several chest CT slices: a list of image files, DICOM files or .zip archives of them. "
            f"Returns a table with the columns {batcher.headers} (one row per slice; zip members are named "
            "archive.zip!member) and the same table as a CSV file."
        ),
        concurrency_limit=1,
        concurrency_id="batch",
    )
    files.clear(lambda: (None, None), outputs=[table, csv_file], api_visibility="private", queue=False)
