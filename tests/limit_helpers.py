"""Zip archives for the limit tests, cheap to build at the real default limits, and a count of
the work a batch did (slices decoded, slices through the model).

A member of zeros that declares a gigabyte costs about a megabyte on disk: one megabyte of zeros
is deflated once and its compressed blocks are repeated (each copy ends in a full flush, so it
refers to nothing before it). The archive is written field by field, so a header can also be
made to lie about a member's size or CRC, as a hostile archive would.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from lungdemo import predict as predict_mod
from lungdemo.predictor import Predictor

CHUNK = 1024 * 1024
DEFLATED = 8
VERSION = 20  # 2.0: deflate
DOS_DATE = (2024 - 1980) << 9 | 1 << 5 | 1  # 2024-01-01
ZEROS = bytes(CHUNK)
RAW_PIECE = 4096
LOCAL_HEADER = "<IHHHHHIIIHH"
LOCAL_SIGNATURE = 0x04034B50
CENTRAL_HEADER = "<IHHHHHHIIIHHHHHII"
CENTRAL_SIGNATURE = 0x02014B50
END_RECORD = "<IHHHHIIH"
END_SIGNATURE = 0x06054B50


@dataclass(frozen=True)
class Member:
    """``prefix`` followed by ``zeros`` zero bytes; ``declared_*`` replace the true size and CRC
    in both the local header and the central directory (``None``: the truth)."""

    name: str
    prefix: bytes = b""
    zeros: int = 0
    declared_size: int | None = None
    declared_crc: int | None = None

    @property
    def size(self) -> int:
        return len(self.prefix) + self.zeros


@cache
def _zeros_block(n: int) -> bytes:
    """``n`` zero bytes as non-final deflate blocks, byte-aligned (a full flush at the end)."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    return co.compress(bytes(n)) + co.flush(zlib.Z_FULL_FLUSH)


def _deflated(member: Member) -> bytes:
    parts = []
    if member.prefix:
        co = zlib.compressobj(9, zlib.DEFLATED, -15)
        parts.append(co.compress(member.prefix) + co.flush(zlib.Z_FULL_FLUSH))
    whole, rest = divmod(member.zeros, CHUNK)
    parts.append(_zeros_block(CHUNK) * whole)
    if rest:
        parts.append(_zeros_block(rest))
    parts.append(zlib.compressobj(9, zlib.DEFLATED, -15).flush())  # the final, empty block
    return b"".join(parts)


@cache
def _crc(prefix: bytes, zeros: int) -> int:
    crc = zlib.crc32(prefix)
    whole, rest = divmod(zeros, CHUNK)
    for _ in range(whole):
        crc = zlib.crc32(ZEROS, crc)
    return zlib.crc32(bytes(rest), crc)


def write_zip(path: Path, members: list[Member]) -> Path:
    """A deflated zip of ``members`` (sizes under 4 GiB, no zip64), written as the format says."""
    central = []
    with path.open("wb") as fh:
        for m in members:
            data = _deflated(m)
            crc = _crc(m.prefix, m.zeros) if m.declared_crc is None else m.declared_crc
            size = m.size if m.declared_size is None else m.declared_size
            name = m.name.encode("utf-8")
            offset = fh.tell()
            common = (0, DEFLATED, 0, DOS_DATE, crc, len(data), size, len(name), 0)  # flags ... extra length
            fh.write(struct.pack(LOCAL_HEADER, LOCAL_SIGNATURE, VERSION, *common) + name + data)
            # then: comment length, disk, internal and external attributes, the local header's offset
            central.append(
                struct.pack(CENTRAL_HEADER, CENTRAL_SIGNATURE, VERSION, VERSION, *common, 0, 0, 0, 0, offset)
            )
            central.append(name)
        start = fh.tell()
        directory = b"".join(central)
        fh.write(directory)
        fh.write(struct.pack(END_RECORD, END_SIGNATURE, 0, 0, len(members), len(members), len(directory), start, 0))
    return path


def _local_header(fh: BinaryIO, info: zipfile.ZipInfo) -> tuple[int, ...]:
    fh.seek(info.header_offset)
    header = struct.unpack(LOCAL_HEADER, fh.read(struct.calcsize(LOCAL_HEADER)))
    assert header[0] == LOCAL_SIGNATURE, f"{info.filename}: no local header at {info.header_offset}"
    return header


def local_header_size(path: Path, info: zipfile.ZipInfo) -> int:
    """The uncompressed size a member's local header states (zipfile reads the central directory's)."""
    with path.open("rb") as fh:
        return _local_header(fh, info)[8]


def inflated_size(path: Path, name: str) -> int:
    """What a member really inflates to, whatever its headers say: its raw deflate stream inflated
    a piece at a time and counted, never held whole."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    with path.open("rb") as fh:
        header = _local_header(fh, info)
        fh.seek(header[9] + header[10], 1)  # the name and the extra field
        raw = fh.read(info.compress_size)
    inflater = zlib.decompressobj(-15)
    total = 0
    for start in range(0, len(raw), RAW_PIECE):  # deflate expands at most ~1032:1: 4 MiB a piece
        total += len(inflater.decompress(raw[start : start + RAW_PIECE]))
    total += len(inflater.flush())
    assert inflater.eof, f"{name}: the deflate stream does not end"
    return total


def tiny_members_zip(path: Path, count: int, *, suffix: str = ".txt", extra: dict[str, bytes] | None = None) -> Path:
    """``count`` one-byte members named ``m00000<suffix>``..., then ``extra`` (name -> bytes)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(count):
            zf.writestr(f"m{i:05d}{suffix}", b"x")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def count_work(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """``decoded``: files :mod:`lungdemo.predict` decoded; ``forward``/``predicted``: forward passes
    and slices through any :class:`Predictor` (the real ones run; they are only counted)."""
    seen: Counter[str] = Counter()
    decode = predict_mod.decode_canonical
    forward = Predictor.probabilities_canonical

    def counted_decode(source: Any, cfg: Any) -> Any:
        seen["decoded"] += 1
        return decode(source, cfg)

    def counted_forward(self: Predictor, canon: Any) -> Any:
        seen["forward"] += 1
        seen["predicted"] += len(canon)
        return forward(self, canon)

    monkeypatch.setattr(predict_mod, "decode_canonical", counted_decode)
    monkeypatch.setattr(Predictor, "probabilities_canonical", counted_forward)
    return seen
