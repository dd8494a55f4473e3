"""Batch prediction: rows equal single predictions, folder/zip inputs, error rows, zip limits
(shrunk, and at their real defaults), zip headers that lie, the CSV, and the command line."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lungdemo import predict as predict_mod
from lungdemo.loading import load_model
from lungdemo.predict import (
    CHECK_COLUMNS,
    InputError,
    collect_sources,
    csv_columns,
    main,
    predict_files,
    rows_to_csv,
    write_csv,
    zip_sources,
)
from lungdemo.predictor import Predictor
from tests.conftest import TEST_CLASSES, make_model_folder
from tests.limit_helpers import Member, count_work, inflated_size, local_header_size, tiny_members_zip, write_zip
from tests.training_helpers import error_line

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.png"))
P_COLUMNS = [f"p_{c}" for c in TEST_CLASSES]
TOLERANCE = 1e-6  # batched convolutions may sum in another order than single ones
NOT_AN_IMAGE = (
    "not an image file PIL can read (PNG, JPEG, TIFF, BMP, GIF, ...) "
    "nor a DICOM file (DICOM needs its 128-byte preamble and 'DICM' prefix)"
)
TRUNCATED = "the image data is broken or truncated (image file is truncated)"
EMPTY = "the file is empty (0 bytes)"
# The README's "Limits" table: the command line takes 10,000 entries and 1 GiB of images per zip,
# and a file is at most 20 MiB. Written out, not imported, so that a changed default fails here.
PROMISED_ZIP_MEMBERS = 10_000
PROMISED_ZIP_BYTES = 1024 * 1024 * 1024
PROMISED_FILE_BYTES = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("m") / "model", temperature=1.7)


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> Predictor:
    return Predictor.from_ref(model_dir)


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def varied_images(tmp_path: Path) -> list[Path]:
    """Slices in other modes and sizes than the examples, so the batch mixes decode paths."""
    rng = np.random.default_rng(0)
    base = np.asarray(Image.open(EXAMPLES[0]).convert("L"))
    made = {
        "rgba.png": Image.fromarray(np.dstack([base, base, base, np.full_like(base, 255)]), "RGBA"),
        "sixteen.png": Image.fromarray((base.astype(np.uint16) * 200), "I;16"),
        "small.png": Image.fromarray(base).resize((150, 110)),
        "noise.png": Image.fromarray(rng.integers(0, 255, (80, 120), dtype=np.uint8), "L"),
    }
    paths = []
    for name, img in made.items():
        path = tmp_path / name
        img.save(path)
        paths.append(path)
    jpeg = tmp_path / "jpeg_named.png"  # JPEG content behind a .png name: decoded by content
    jpeg.write_bytes(png_bytes(Image.fromarray(base).convert("RGB"), "JPEG"))
    return [*paths, jpeg]


def assert_row_matches(row: dict, predictor: Predictor, source: bytes | Path) -> None:
    single = predictor.predict(source)
    assert row["error"] == ""
    assert row["predicted_class"] == single.top_class
    for cls in TEST_CLASSES:
        assert abs(row[f"p_{cls}"] - single.probabilities[cls]) <= TOLERANCE


def test_rows_match_single_predictions(predictor: Predictor, tmp_path: Path) -> None:
    files = [*EXAMPLES, *varied_images(tmp_path)]
    sources = [(str(p), p) for p in files]
    for batch_size in (1, 3, 32):  # 3: chunks of different sizes, the last one partial
        rows = predict_files(predictor, sources, batch_size=batch_size)
        assert [r["file"] for r in rows] == [str(p) for p in files]
        assert all(list(r) == csv_columns(TEST_CLASSES) for r in rows)
        for row, path in zip(rows, files, strict=True):
            assert_row_matches(row, predictor, path)
            assert sum(row[c] for c in P_COLUMNS) == pytest.approx(1.0, abs=1e-5)


def test_accepts_a_loaded_model_and_bytes(model_dir: Path, predictor: Predictor) -> None:
    rows = predict_files(load_model(model_dir), [("upload.png", EXAMPLES[2].read_bytes())])
    assert_row_matches(rows[0], predictor, EXAMPLES[2])
    with pytest.raises(ValueError, match=r"^batch_size must be at least 1, got 0$"):
        predict_files(predictor, [], batch_size=0)


def test_progress_callback_counts_every_source(predictor: Predictor) -> None:
    seen: list[int] = []
    predict_files(predictor, [(str(p), p) for p in EXAMPLES], batch_size=2, on_progress=seen.append)
    assert seen == [2, 2, 1]


def test_broken_files_get_error_rows_and_the_rest_is_predicted(predictor: Predictor, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(EXAMPLES[0].read_bytes()[:300])
    text = tmp_path / "text.png"
    text.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    sources = [
        (str(EXAMPLES[0]), EXAMPLES[0]),
        (str(truncated), truncated),
        (str(EXAMPLES[1]), EXAMPLES[1]),
        (str(text), text),
        ("refused.zip", InputError("zip has 9 entries; the limit is 3")),
        (str(empty), empty),
        (str(EXAMPLES[2]), EXAMPLES[2]),
    ]
    rows = predict_files(predictor, sources, batch_size=4)
    assert [r["file"] for r in rows] == [name for name, _ in sources]
    errors = {r["file"]: r["error"] for r in rows if r["error"]}
    assert set(errors) == {str(truncated), str(text), "refused.zip", str(empty)}
    assert errors[str(truncated)] == TRUNCATED
    assert errors[str(text)] == NOT_AN_IMAGE
    assert errors[str(empty)] == EMPTY
    assert errors["refused.zip"] == "zip has 9 entries; the limit is 3"
    for row in rows:
        if row["error"]:
            assert row["predicted_class"] == "" and all(row[c] is None for c in P_COLUMNS)
    for i in (0, 2, 6):
        assert_row_matches(rows[i], predictor, sources[i][1])


def test_folder_input_is_recursive_and_takes_image_files_only(tmp_path: Path) -> None:
    root = tmp_path / "scans"
    (root / "a" / "b").mkdir(parents=True)
    (root / ".cache").mkdir()
    data = EXAMPLES[0].read_bytes()
    for rel in ("one.png", "a/two.JPG", "a/b/three.tiff", ".hidden.png", ".cache/four.png", "notes.txt", "x.dcm"):
        (root / rel).write_bytes(data)
    sources = collect_sources([root])
    expected = ("a/b/three.tiff", "a/two.JPG", "one.png", "x.dcm")
    assert [name for name, _ in sources] == [str(root / r) for r in expected]
    assert all(isinstance(payload, Path) for _, payload in sources)


def test_explicit_files_are_always_tried_and_missing_paths_reported(predictor: Predictor, tmp_path: Path) -> None:
    dcm = tmp_path / "scan.dcm"
    dcm.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    sources = collect_sources([dcm, tmp_path / "missing.png", EXAMPLES[0]])
    rows = predict_files(predictor, sources)
    assert [r["file"] for r in rows] == [str(dcm), str(tmp_path / "missing.png"), str(EXAMPLES[0])]
    # the DICM prefix makes it DICOM by content; its empty file meta is refused with a reason
    assert rows[0]["error"] == "the DICOM file has no transfer syntax in its file meta information"
    assert rows[1]["error"] == "no such file or folder"
    assert_row_matches(rows[2], predictor, EXAMPLES[0])


def make_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        zf.writestr("sub/", b"")  # a directory entry
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_input_is_read_in_memory(predictor: Predictor, tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "batch.zip",
        {
            "sub/adeno.png": EXAMPLES[0].read_bytes(),
            "normal.png": EXAMPLES[2].read_bytes(),
            "README.txt": b"not a slice",
            "__MACOSX/sub/._adeno.png": b"resource fork",
            "broken.png": b"\x89PNG\r\n\x1a\n broken",
        },
    )
    before = sorted(tmp_path.rglob("*"))
    rows = predict_files(predictor, collect_sources([archive]), batch_size=8)
    assert sorted(tmp_path.rglob("*")) == before  # nothing extracted
    assert [r["file"] for r in rows] == [f"{archive}!sub/adeno.png", f"{archive}!normal.png", f"{archive}!broken.png"]
    assert_row_matches(rows[0], predictor, EXAMPLES[0])
    assert_row_matches(rows[1], predictor, EXAMPLES[2])
    assert rows[2]["error"] == NOT_AN_IMAGE
    # the same archive as uploaded bytes (the UI's path)
    same = zip_sources("upload.zip", archive.read_bytes())
    assert [n for n, _ in same] == ["upload.zip!sub/adeno.png", "upload.zip!normal.png", "upload.zip!broken.png"]


def test_zip_bomb_guards(tmp_path: Path) -> None:
    image = EXAMPLES[0].read_bytes()
    many = make_zip(tmp_path / "many.zip", {f"s{i}.png": image for i in range(5)})
    refused = zip_sources(str(many), many, max_members=4)  # 6 entries with the directory
    assert len(refused) == 1 and isinstance(refused[0][1], InputError)
    assert str(refused[0][1]) == "zip has 6 entries; the limit is 4"
    assert len(zip_sources(str(many), many, max_members=6)) == 5

    # 64 MiB of zeros deflates to about 64 kB: refused from the declared sizes, nothing inflated
    bomb = tmp_path / "bomb.zip"
    with (
        zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf,
        zf.open("zeros.png", "w", force_zip64=True) as fh,
    ):
        for _ in range(64):
            fh.write(bytes(1024 * 1024))
    assert bomb.stat().st_size < 1024 * 1024
    refused = zip_sources(str(bomb), bomb, max_total_bytes=32 * 1024 * 1024)
    assert len(refused) == 1
    assert str(refused[0][1]) == "zip would expand to 67,108,864 bytes of images; the limit is 33,554,432"

    # over the per-file limit: that member gets an error, the others are read
    small = png_bytes(Image.new("L", (16, 16), 128))
    capped = make_zip(tmp_path / "capped.zip", {"big.png": bytes(5000), "ok.png": small})
    members = dict(zip_sources("capped.zip", capped, max_file_bytes=4000))
    assert str(members["capped.zip!big.png"]) == "5,000 bytes; the limit is 4,000"
    assert members["capped.zip!ok.png"] == small


def test_unreadable_zip(predictor: Predictor, tmp_path: Path) -> None:
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"PK\x03\x04 this is not really a zip")
    rows = predict_files(predictor, collect_sources([fake, EXAMPLES[0]]))
    assert rows[0]["file"] == str(fake)
    assert rows[0]["error"] == "not a readable zip archive: File is not a zip file"
    assert rows[1]["error"] == ""


# --- the zip limits at their real defaults ----------------------------------------------------


def run_cli(archive: Path, model_dir: Path, out: Path) -> tuple[int, list[dict[str, str]]]:
    """``python -m lungdemo.predict ARCHIVE`` with every limit at its default: status and CSV rows."""
    status = main([str(archive), "--model", str(model_dir), "--out", str(out), "--no-progress"])
    with out.open(newline="", encoding="utf-8") as fh:
        return status, list(csv.DictReader(fh))


def refused_row(name: str, error: str) -> dict[str, str]:
    return {
        "file": name,
        "predicted_class": "",
        **dict.fromkeys(P_COLUMNS, ""),
        **dict.fromkeys(CHECK_COLUMNS, ""),
        "error": error,
    }


def test_cli_zip_member_limit_at_its_default(
    model_dir: Path, predictor: Predictor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10,001 entries (10,000 one-byte text files and a slice) are refused before anything is read;
    10,000 are read (non-image entries count: they are entries all the same)."""
    work = count_work(monkeypatch)
    slice_png = EXAMPLES[0].read_bytes()
    over = tiny_members_zip(tmp_path / "over.zip", PROMISED_ZIP_MEMBERS, extra={"slice.png": slice_png})
    status, rows = run_cli(over, model_dir, tmp_path / "over.csv")
    assert rows == [refused_row(str(over), "zip has 10,001 entries; the limit is 10,000")]
    assert status == 1
    assert work == Counter()  # nothing decoded, no forward pass

    at = tiny_members_zip(tmp_path / "at.zip", PROMISED_ZIP_MEMBERS - 1, extra={"slice.png": slice_png})
    status, rows = run_cli(at, model_dir, tmp_path / "at.csv")
    assert [(r["file"], r["error"]) for r in rows] == [(f"{at}!slice.png", "")]
    assert status == 0
    assert work == Counter(decoded=1, forward=1, predicted=1)
    assert rows[0]["predicted_class"] == predictor.predict(EXAMPLES[0]).top_class


def test_cli_zip_byte_limit_at_its_default(
    model_dir: Path, predictor: Predictor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Zeros and a slice declaring 1 GiB of images (a megabyte on disk): one byte more is refused
    from the declared sizes; exactly the limit is read, the zeros refused as a file over 20 MiB."""
    work = count_work(monkeypatch)
    slice_png = EXAMPLES[1].read_bytes()
    zeros = PROMISED_ZIP_BYTES - len(slice_png)
    at_limit = [Member("zeros.png", zeros=zeros), Member("slice.png", slice_png)]
    over = write_zip(tmp_path / "over.zip", [*at_limit, Member("one.png", b"x")])
    assert over.stat().st_size < 2 * 1024 * 1024
    status, rows = run_cli(over, model_dir, tmp_path / "over.csv")
    assert rows == [
        refused_row(str(over), "zip would expand to 1,073,741,825 bytes of images; the limit is 1,073,741,824")
    ]
    assert status == 1
    assert work == Counter()

    at = write_zip(tmp_path / "at.zip", at_limit)
    status, rows = run_cli(at, model_dir, tmp_path / "at.csv")
    assert [(r["file"], r["error"]) for r in rows] == [
        (f"{at}!zeros.png", f"{zeros:,} bytes; the limit is 20,971,520"),
        (f"{at}!slice.png", ""),
    ]
    assert status == 0
    assert work == Counter(decoded=1, forward=1, predicted=1)
    assert rows[1]["predicted_class"] == predictor.predict(EXAMPLES[1]).top_class


def test_zip_file_limit_at_its_default(tmp_path: Path) -> None:
    """A member of exactly 20 MiB is read whole (and its CRC checked); one byte more is refused unread."""
    archive = write_zip(
        tmp_path / "files.zip",
        [Member("edge.png", zeros=PROMISED_FILE_BYTES), Member("over.png", zeros=PROMISED_FILE_BYTES + 1)],
    )
    sources = dict(collect_sources([archive]))
    assert list(sources) == [f"{archive}!edge.png", f"{archive}!over.png"]
    edge = sources[f"{archive}!edge.png"]
    assert not isinstance(edge, InputError), edge
    assert edge == bytes(PROMISED_FILE_BYTES)
    over = sources[f"{archive}!over.png"]
    assert isinstance(over, InputError) and str(over) == "20,971,521 bytes; the limit is 20,971,520"


def test_zip_headers_that_understate_a_size(predictor: Predictor, tmp_path: Path) -> None:
    """Both headers say a member is one slice long; it really inflates to the slice and 64 MiB of
    zeros, past the 20 MiB a member may hold. zipfile reads no further than the size the central
    directory declares, so the read stops there and never reaches the limit: with the member's true
    CRC it is refused while reading; with a CRC forged for the declared bytes, exactly those bytes
    come back (so the limit checks on the bytes read, after the declared ones, have nothing to catch)."""
    slice_png = EXAMPLES[2].read_bytes()
    tail = 64 * 1024 * 1024
    real_size = len(slice_png) + tail
    archive = write_zip(
        tmp_path / "lies.zip",
        [
            Member("lie.png", slice_png, tail, declared_size=len(slice_png)),
            Member("forged.png", slice_png, tail, declared_size=len(slice_png), declared_crc=zlib.crc32(slice_png)),
        ],
    )
    with zipfile.ZipFile(archive) as zf:  # what the archive claims, in both headers
        assert [i.file_size for i in zf.infolist()] == [len(slice_png)] * 2
        assert [local_header_size(archive, i) for i in zf.infolist()] == [len(slice_png)] * 2
    assert inflated_size(archive, "lie.png") == real_size > PROMISED_FILE_BYTES  # what it holds

    sources = collect_sources([archive])
    assert [name for name, _ in sources] == [f"{archive}!lie.png", f"{archive}!forged.png"]
    lie, forged = (payload for _, payload in sources)
    assert isinstance(lie, InputError)
    assert str(lie) == "cannot read this zip member: Bad CRC-32 for file 'lie.png'"
    assert forged == slice_png  # the declared bytes and not one more
    rows = predict_files(predictor, sources)
    assert rows[0]["error"] == "cannot read this zip member: Bad CRC-32 for file 'lie.png'"
    assert_row_matches(rows[1], predictor, EXAMPLES[2])


def test_csv_round_trips_the_probabilities(predictor: Predictor, tmp_path: Path) -> None:
    bad = tmp_path / "=HYPERLINK(1).png"  # a spreadsheet must not run a file name as a formula
    bad.write_text("x")
    rows = predict_files(predictor, [(str(p), p) for p in EXAMPLES] + [(bad.name, bad)])
    out = write_csv(rows, predictor.class_names, tmp_path / "out" / "results.csv")
    with out.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["file", "predicted_class", *P_COLUMNS, *CHECK_COLUMNS, "error"]
        read = list(reader)
    assert len(read) == len(rows)
    for got, row in zip(read[:-1], rows[:-1], strict=True):
        assert got["file"] == row["file"] and got["predicted_class"] == row["predicted_class"]
        assert [float(got[c]) for c in P_COLUMNS] == [row[c] for c in P_COLUMNS]  # exact
        assert got["error"] == ""
    assert read[-1]["file"] == "'" + bad.name
    assert read[-1]["p_normal"] == "" and read[-1]["error"] == NOT_AN_IMAGE
    assert rows_to_csv(rows, predictor.class_names) == out.read_text(encoding="utf-8")


def test_cli_end_to_end(model_dir: Path, predictor: Predictor, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for p in EXAMPLES[:3]:
        (folder / p.name).write_bytes(p.read_bytes())
    archive = make_zip(tmp_path / "more.zip", {"z/normal.png": EXAMPLES[3].read_bytes()})
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnope")
    out = tmp_path / "results.csv"
    args = [str(folder), str(archive), str(broken), str(EXAMPLES[4]), "--model", str(model_dir), "--out", str(out)]
    assert main([*args, "--batch-size", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "6 files: 5 classified, 1 with errors" in printed
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    expected_sources = [
        *(folder / p.name for p in EXAMPLES[:3]),
        EXAMPLES[3],  # inside the zip
        broken,
        EXAMPLES[4],
    ]
    assert [r["file"] for r in rows] == [
        *(str(folder / p.name) for p in EXAMPLES[:3]),
        f"{archive}!z/normal.png",
        str(broken),
        str(EXAMPLES[4]),
    ]
    for row, source in zip(rows, expected_sources, strict=True):
        if source == broken:
            assert row["error"] == NOT_AN_IMAGE and row["predicted_class"] == ""
            continue
        single = predictor.predict(source)
        assert row["predicted_class"] == single.top_class
        assert all(abs(float(row[f"p_{c}"]) - single.probabilities[c]) <= TOLERANCE for c in TEST_CLASSES)


def test_cli_as_a_module(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lungdemo.predict",
            str(REPO / "examples"),
            "--model",
            str(model_dir),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{len(EXAMPLES)} files: {len(EXAMPLES)} classified, 0 with errors" in proc.stdout
    assert "slice" in proc.stderr  # the tqdm progress bar
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(EXAMPLES) + 1


def test_cli_failures(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "r.csv"
    monkeypatch.delenv("LUNGDEMO_MODEL", raising=False)
    monkeypatch.setattr(predict_mod, "SHIPPED_MODEL_DIR", tmp_path / "no_shipped_model")
    assert main([str(EXAMPLES[0]), "--out", str(out)]) == 2
    assert error_line(capsys.readouterr().err) == (
        f"error: no --model given, LUNGDEMO_MODEL is not set and there is no shipped model at "
        f"{tmp_path / 'no_shipped_model'}: pass --model FOLDER or --model user/repo[@revision]"
    )
    assert main([str(EXAMPLES[0]), "--out", str(out), "--model", str(tmp_path / "nothing")]) == 2
    captured = capsys.readouterr()
    assert error_line(captured.err) == (
        f"error: model reference '{tmp_path / 'nothing'}' is neither an existing folder nor a Hub repo id "
        "of the form user/repo or user/repo@revision"
    )
    assert captured.out == ""
    monkeypatch.setenv("LUNGDEMO_MODEL", str(model_dir))  # the environment default works
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    assert main([str(broken), "--out", str(out), "--no-progress"]) == 1  # nothing could be classified
    assert "1 files: 0 classified, 1 with errors" in capsys.readouterr().out
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    assert main([str(empty), "--out", str(out)]) == 2
    assert error_line(capsys.readouterr().err) == "error: no image files found in the inputs"
    assert main([str(EXAMPLES[0]), "--out", str(out), "--batch-size", "0"]) == 2
    assert error_line(capsys.readouterr().err) == "error: --batch-size must be at least 1, got 0"


def test_cli_unwritable_csv_is_a_one_line_error(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "file.txt").write_text("a file, not a folder")
    out = tmp_path / "file.txt" / "r.csv"
    assert main([str(EXAMPLES[0]), "--out", str(out), "--model", str(model_dir), "--no-progress"]) == 2
    assert error_line(capsys.readouterr().err) == f"error: cannot write {out}: File exists"
    assert (tmp_path / "file.txt").read_text() == "a file, not a folder"


def test_write_csv_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while putting the CSV in place keeps the previous one and leaves no temporary file."""
    out = write_csv([], TEST_CLASSES, tmp_path / "r.csv")
    before = out.read_bytes()

    def full_disk(self, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_csv([{"file": "a.png", "predicted_class": "", "error": "x"}], TEST_CLASSES, out)
    monkeypatch.undo()
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]
