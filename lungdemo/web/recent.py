"""What ``/classify`` just read and decoded, kept briefly for the page's follow-ups.

After a classification the page asks for the heat map, the decode notes and the session's
copy of the slice, each in its own event with the same upload. Without this each would read
and decode the file again. Gradio names an upload by its content hash, so a path names one
content; the file's size and modification time are checked too, for paths given from Python.
Bounded in entries and bytes, least recently used first out: the API alone only fills it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

RECENT_ENTRIES = 32
RECENT_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Decoded:
    """One upload as classify saw it: its bytes, the canonical slice and the decode notes."""

    data: bytes
    canonical: torch.Tensor
    notes: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.data) + self.canonical.numel() * self.canonical.element_size()


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class RecentUploads:
    """``path -> Decoded`` for the last few uploads (thread-safe)."""

    def __init__(self, max_entries: int = RECENT_ENTRIES, max_bytes: int = RECENT_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[tuple[int, int], Decoded]] = OrderedDict()
        self._bytes = 0

    def put(self, path: str, decoded: Decoded) -> None:
        stamp = _stamp(path)
        if stamp is None or decoded.size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(path, None)
            if old is not None:
                self._bytes -= old[1].size
            self._items[path] = (stamp, decoded)
            self._bytes += decoded.size
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped.size

    def get(self, path: str) -> Decoded | None:
        """The entry for ``path`` if the file is still the one that was decoded."""
        stamp = _stamp(path)
        with self._lock:
            entry = self._items.get(path)
            if entry is None:
                return None
            if entry[0] != stamp:  # changed or gone: forget it
                del self._items[path]
                self._bytes -= entry[1].size
                return None
            self._items.move_to_end(path)
            return entry[1]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes
