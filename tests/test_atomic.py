"""lungdemo.atomic: a reader sees the old file or the whole new one, and failures leave no litter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lungdemo.atomic import atomic_open, atomic_path, write_bytes, write_json, write_text


def litter(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_write_json_round_trip_and_trailing_newline(tmp_path: Path) -> None:
    out = write_json(tmp_path / "sub" / "m.json", {"a": [1, 2], "b": "é"})
    text = out.read_text(encoding="utf-8")
    assert json.loads(text) == {"a": [1, 2], "b": "é"}
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert litter(out.parent) == []


def test_write_text_and_bytes_replace_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    write_text(path, "a much longer first version\n")
    write_text(path, "short\n")
    assert path.read_text(encoding="utf-8") == "short\n"
    write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"


def test_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    path = tmp_path / "keep.json"
    write_json(path, {"version": 1})
    with pytest.raises(TypeError), atomic_open(path, "w") as f:
        f.write('{"version": 2')  # half a document, then the writer fails
        json.dump({"bad": object()}, f)
    assert json.loads(path.read_text(encoding="utf-8")) == {"version": 1}
    assert litter(tmp_path) == []


def test_interrupt_inside_atomic_path_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "w.bin"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt
    assert not target.exists()
    assert litter(tmp_path) == []


def test_temporary_lives_beside_the_target(tmp_path: Path) -> None:
    """Same folder, so the final rename never crosses file systems."""
    with atomic_path(tmp_path / "x.safetensors") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".x.safetensors.")
        tmp.write_bytes(b"ok")
    assert (tmp_path / "x.safetensors").read_bytes() == b"ok"


def test_atomic_open_refuses_read_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="writes only"), atomic_open(tmp_path / "r", "rb"):
        pass
