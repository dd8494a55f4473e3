"""Batch prediction: many slices through the model at once, to a CSV table.

    python -m lungdemo.predict INPUT... --out results.csv [--model REF] [--batch-size 32]

``INPUT`` is any mix of image files, folders (searched recursively for image files) and
``.zip`` archives (read in memory, never extracted to disk). Every file goes through the same
:func:`~lungdemo.preprocessing.decode_canonical` and normalisation as
:meth:`Predictor.predict`, and ``batch_size`` decoded slices share one forward pass: on a CPU
that is where the time goes, and a batch uses the cores far better than one slice at a time.

Batched and single predictions can differ in the last bits (the convolution kernels sum in
another order for another batch size: about 1e-8 for a 224 model); the CSV writes each
probability with all the digits of its float, so nothing is lost on top of that.

A file that cannot be read gets a row with an ``error`` message and the run goes on. Folders
and archives are scanned for image files and DICOM (``.dcm``, ``.dicom``); every file is
decoded by its content, whatever its name.

Zip archives come from users, so they are bounded before anything is decompressed: at most
``max_members`` entries and ``max_total_bytes`` uncompressed in all, each member at most
``max_file_bytes``, all checked against the sizes the archive declares (``zipfile`` never
returns more than a member declares; a member whose header lies fails its CRC check). An
archive over a limit gets one error row and none of its members is read.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import sys
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from tqdm import tqdm

from lungdemo.atomic import write_text
from lungdemo.decode import DEFAULT_MAX_BYTES, ImageDecodeError
from lungdemo.device import add_device_argument, describe_device, resolve_device
from lungdemo.errors import LungdemoError, report_error
from lungdemo.loading import SHIPPED_MODEL_DIR, LoadedModel, load_model
from lungdemo.ood import OODResult
from lungdemo.predictor import Predictor
from lungdemo.preprocessing import decode_canonical

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".dcm", ".dicom"})
"""File endings picked up from folders and archives (files are still decoded by content)."""
ZIP_SUFFIX = ".zip"
MAX_ZIP_MEMBERS = 10_000
MAX_ZIP_TOTAL_BYTES = 1024 * 1024 * 1024
MAX_FILE_BYTES = DEFAULT_MAX_BYTES
DEFAULT_BATCH_SIZE = 32
CHECK_COLUMNS = ("not_chest_ct", "ood_score", "ood_reason")
"""The out-of-distribution check's verdict, score and reason (lungdemo.ood); empty without a check."""
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class InputError(LungdemoError):
    """An input refused before decoding (archive over its limits, unreadable archive).

    It takes the place of the file's bytes in a source list, so its row keeps its position.
    """


Payload = bytes | str | Path | InputError
Source = tuple[str, Payload]


def probability_column(class_name: str) -> str:
    return f"p_{class_name}"


def csv_columns(class_names: Sequence[str]) -> list[str]:
    """``file, predicted_class, p_<class>... (model order), the check's columns, error``."""
    return ["file", "predicted_class", *(probability_column(c) for c in class_names), *CHECK_COLUMNS, "error"]


def _row(
    name: str,
    class_names: Sequence[str],
    probs: Sequence[float] | None,
    error: str = "",
    check: OODResult | None = None,
) -> dict[str, Any]:
    row: dict[str, Any] = {"file": name, "predicted_class": ""}
    for i, cls in enumerate(class_names):
        row[probability_column(cls)] = None if probs is None else float(probs[i])
    if probs is not None:
        # max() over the class order, as Prediction.top_class does: the first of equal maxima
        row["predicted_class"] = class_names[max(range(len(class_names)), key=lambda i: probs[i])]
    # empty when the model folder has no check (or the file could not be read)
    row["not_chest_ct"] = None if check is None else check.flagged
    row["ood_score"] = None if check is None else float(check.score)
    row["ood_reason"] = None if check is None else check.reason
    row["error"] = error
    return row


def _is_hidden(parts: Sequence[str]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def folder_sources(folder: Path) -> list[Source]:
    """Image files under ``folder``, recursively, sorted; hidden files and folders skipped."""
    found = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).parts
        if path.is_file() and _is_image_name(path.name) and not _is_hidden(rel):
            found.append((str(path), path))
    return found


def zip_sources(
    name: str,
    archive: bytes | str | Path,
    *,
    max_members: int = MAX_ZIP_MEMBERS,
    max_total_bytes: int = MAX_ZIP_TOTAL_BYTES,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> list[Source]:
    """The image members of a zip archive as ``(f"{name}!{member}", bytes)``, read in memory.

    Directories, hidden entries (``.*``, ``__MACOSX/``) and non-image members are skipped.
    Returns a single ``(name, InputError)`` when the archive is unreadable or over a limit.
    """
    handle = io.BytesIO(archive) if isinstance(archive, (bytes, bytearray)) else archive
    try:
        with zipfile.ZipFile(handle) as zf:
            entries = zf.infolist()
            if len(entries) > max_members:
                return [(name, InputError(f"zip has {len(entries):,} entries; the limit is {max_members:,}"))]
            members = [
                i
                for i in entries
                if not i.is_dir() and _is_image_name(i.filename) and not _is_hidden(PurePosixPath(i.filename).parts)
            ]
            declared = sum(i.file_size for i in members)
            if declared > max_total_bytes:
                return [
                    (
                        name,
                        InputError(
                            f"zip would expand to {declared:,} bytes of images; the limit is {max_total_bytes:,}"
                        ),
                    )
                ]
            out: list[Source] = []
            for info in members:
                member = f"{name}!{info.filename}"
                if info.file_size > max_file_bytes:
                    out.append((member, InputError(f"{info.file_size:,} bytes; the limit is {max_file_bytes:,}")))
                    continue
                try:
                    with zf.open(info) as fh:
                        data = fh.read(max_file_bytes)
                except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError, zlib.error) as exc:
                    # RuntimeError: encrypted; NotImplementedError: unsupported compression
                    out.append((member, InputError(f"cannot read this zip member: {exc}")))
                    continue
                out.append((member, data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        return [(name, InputError(f"not a readable zip archive: {exc}"))]
    logger.info("%s: %d image members of %d entries", name, len(out), len(entries))
    return out


def collect_sources(
    inputs: Sequence[str | Path],
    *,
    max_members: int = MAX_ZIP_MEMBERS,
    max_total_bytes: int = MAX_ZIP_TOTAL_BYTES,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> list[Source]:
    """Files, folders and zip archives -> ``(name, payload)`` in input order.

    Files named explicitly are always tried, whatever their ending; a missing path becomes an
    :class:`InputError` payload, so it shows up as an error row instead of stopping the run.
    """
    sources: list[Source] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = folder_sources(path)
            if not found:
                logger.warning("no image files under %s", path)
            sources.extend(found)
        elif path.is_file() and path.suffix.lower() == ZIP_SUFFIX:
            sources.extend(
                zip_sources(
                    str(path),
                    path,
                    max_members=max_members,
                    max_total_bytes=max_total_bytes,
                    max_file_bytes=max_file_bytes,
                )
            )
        elif path.is_file():
            sources.append((str(path), path))
        else:
            sources.append((str(path), InputError("no such file or folder")))
    return sources


def predict_files(
    predictor_or_loaded: Predictor | LoadedModel,
    sources: Sequence[Source],
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per source, in order: ``file``, ``predicted_class``, ``p_<class>``..., ``error``.

    Probabilities are the calibrated ones :meth:`Predictor.predict` gives (floats; ``None`` in
    error rows, where ``predicted_class`` is ``""`` and ``error`` says why). Each chunk of
    ``batch_size`` sources is decoded, stacked and sent through the model in one forward pass;
    only one chunk of decoded slices is in memory at a time. ``on_progress(n)`` is called after
    each chunk with the number of sources it held (a tqdm ``update``, a Gradio progress).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    predictor = predictor_or_loaded if isinstance(predictor_or_loaded, Predictor) else Predictor(predictor_or_loaded)
    classes = predictor.class_names
    rows: list[dict[str, Any]] = []
    for start in range(0, len(sources), batch_size):
        chunk = sources[start : start + batch_size]
        chunk_rows: list[dict[str, Any] | None] = []
        decoded: list[torch.Tensor] = []
        slots: list[int] = []
        for name, payload in chunk:
            if isinstance(payload, InputError):
                chunk_rows.append(_row(name, classes, None, str(payload)))
                continue
            try:
                canon, _ = decode_canonical(payload, predictor.cfg)
            except ImageDecodeError as exc:
                chunk_rows.append(_row(name, classes, None, str(exc)))
                continue
            except Exception as exc:  # one odd file must not end a run of thousands
                logger.exception("unexpected error decoding %s", name)
                chunk_rows.append(_row(name, classes, None, f"unexpected error: {type(exc).__name__}: {exc}"))
                continue
            slots.append(len(chunk_rows))
            chunk_rows.append(None)
            decoded.append(canon)
        if decoded:
            results = predictor.forward_canonical(torch.stack(decoded))
            for slot, (p, check) in zip(slots, results, strict=True):
                chunk_rows[slot] = _row(chunk[slot][0], classes, p, check=check)
        rows.extend(r for r in chunk_rows if r is not None)
        if on_progress is not None:
            on_progress(len(chunk))
    return rows


def _cell(value: Any) -> Any:
    """CSV cell: floats as ``repr`` (round-trips exactly); text that a spreadsheet would run
    as a formula (a file named ``=cmd...``) gets a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def rows_to_csv(rows: Sequence[dict[str, Any]], class_names: Sequence[str]) -> str:
    """The CSV text for ``rows`` (the UI offers this as a download)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=csv_columns(class_names), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buf.getvalue()


def write_csv(rows: Sequence[dict[str, Any]], class_names: Sequence[str], out: Path) -> Path:
    """Write the CSV atomically (temporary file beside it, then rename)."""
    return write_text(out, rows_to_csv(rows, class_names))


def default_model_ref() -> str | None:
    """``LUNGDEMO_MODEL``, else the shipped model folder when it exists (as the app does)."""
    env = os.environ.get("LUNGDEMO_MODEL", "").strip()
    if env:
        return env
    return str(SHIPPED_MODEL_DIR) if SHIPPED_MODEL_DIR.is_dir() else None


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lungdemo.predict",
        description="Classify CT slices (files, folders, zip archives) in batches and write a CSV.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive) or .zip archives")
    p.add_argument("--out", required=True, type=Path, help="CSV file to write")
    p.add_argument(
        "--model",
        default=None,
        help="model folder or Hub repo user/repo[@revision] (default: $LUNGDEMO_MODEL, else the shipped model)",
    )
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="slices per forward pass")
    p.add_argument("--max-zip-members", type=int, default=MAX_ZIP_MEMBERS, help="entries allowed in one zip")
    p.add_argument(
        "--max-zip-bytes", type=int, default=MAX_ZIP_TOTAL_BYTES, help="uncompressed bytes allowed in one zip"
    )
    add_device_argument(p, env=True)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 when at least one slice was classified, 1 when none was, 2 on bad usage."""
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.batch_size < 1:
        return report_error(f"--batch-size must be at least 1, got {args.batch_size}")
    ref = args.model or default_model_ref()
    if ref is None:
        return report_error(
            f"no --model given, LUNGDEMO_MODEL is not set and there is no shipped model at "
            f"{SHIPPED_MODEL_DIR}: pass --model FOLDER or --model user/repo[@revision]"
        )
    try:
        device = resolve_device(args.device)  # before the download: a missing GPU fails at once
        loaded = load_model(ref)
    except LungdemoError as exc:
        return report_error(exc)
    sources = collect_sources(args.inputs, max_members=args.max_zip_members, max_total_bytes=args.max_zip_bytes)
    if not sources:
        return report_error("no image files found in the inputs")
    predictor = Predictor(loaded, device=device)
    with tqdm(total=len(sources), unit="slice", disable=args.no_progress, file=sys.stderr) as bar:
        rows = predict_files(predictor, sources, batch_size=args.batch_size, on_progress=bar.update)
    try:
        write_csv(rows, predictor.class_names, args.out)
    except OSError as exc:
        return report_error(f"cannot write {args.out}: {exc.strerror or exc}")
    failed = sum(1 for r in rows if r["error"])
    counts = Counter(r["predicted_class"] for r in rows if not r["error"])
    print(f"model: {loaded.description} on {describe_device(device)}")
    print(f"{len(rows)} files: {len(rows) - failed} classified, {failed} with errors -> {args.out}")
    for cls in predictor.class_names:
        print(f"  {cls}: {counts.get(cls, 0)}")
    return 0 if failed < len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
