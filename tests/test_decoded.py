"""lungdemo.decoded: the notes decoding returns, and which of them are warnings."""

from __future__ import annotations

from lungdemo.decoded import WARNING_PREFIX, DecodedInfo, ImageDecodeError
from lungdemo.errors import LungdemoError


def test_warnings_are_the_notes_with_the_prefix() -> None:
    info = DecodedInfo(
        format="PNG",
        mode="RGBA",
        size=(10, 20),
        notes=[f"{WARNING_PREFIX}this looks like a colour photograph", "converted from RGBA to grayscale"],
    )
    assert info.warnings == [f"{WARNING_PREFIX}this looks like a colour photograph"]
    assert DecodedInfo(format=None, mode="L", size=(1, 1)).warnings == []


def test_notes_are_not_shared_between_instances() -> None:
    a, b = DecodedInfo(format=None, mode="L", size=(1, 1)), DecodedInfo(format=None, mode="L", size=(1, 1))
    a.notes.append("x")
    assert b.notes == []


def test_decode_error_is_caught_as_value_error_and_project_error() -> None:
    err = ImageDecodeError("the file is empty (0 bytes)")
    assert isinstance(err, ValueError) and isinstance(err, LungdemoError)
