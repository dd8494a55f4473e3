"""What the app keeps on disk, and for how long: uploads, the files it hands out, the session's slice."""

from __future__ import annotations

import atexit
import base64
import binascii
import contextlib
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import gradio as gr

logger = logging.getLogger(__name__)

UPLOAD_GRACE_S = 10.0
"""Seconds an upload stays after its last use (another queued request may share its path)."""
OUTPUT_GRACE_S = 60.0
"""Seconds a handed-out file lives after the request: Gradio copies it to its cache meanwhile."""
SLICE_TTL_S = 3600
"""Seconds a browser tab keeps its current slice (heat-map picker, report) after the last upload."""
CACHE_SWEEP = (300, 300)
"""``Blocks(delete_cache=(every, older_than))``: Gradio serves its cached copies for 5 to 10 minutes."""


class Timer(Protocol):
    def cancel(self) -> None: ...


class Timers(Protocol):
    """Runs a function after a delay; tests pass a fake clock instead of waiting."""

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> Timer: ...


class ThreadTimers:
    """The real clock: one daemon ``threading.Timer`` per call."""

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> Timer:
        timer = threading.Timer(delay_s, fn)
        timer.daemon = True
        timer.start()
        return timer


class UploadJanitor:
    """Deletes files a grace period after their last use.

    Gradio names an upload by its content hash, so two clients sending the same file share
    one path: each use cancels a pending deletion, the last release schedules one.
    """

    def __init__(self, grace_s: float, is_deletable: Callable[[str], bool], timers: Timers | None = None) -> None:
        self.grace_s = float(grace_s)
        self._is_deletable = is_deletable
        self._timers = timers or ThreadTimers()
        self._lock = threading.Lock()
        self._in_use: dict[str, int] = {}
        self._scheduled: dict[str, tuple[object, Timer]] = {}

    def claim(self, path: str) -> None:
        """Mark ``path`` in use: cancels its pending deletion."""
        with self._lock:
            scheduled = self._scheduled.pop(path, None)
            if scheduled is not None:
                scheduled[1].cancel()
            self._in_use[path] = self._in_use.get(path, 0) + 1

    def release(self, path: str) -> None:
        """Mark one use of ``path`` finished; the last one schedules the deletion."""
        with self._lock:
            left = self._in_use.get(path, 1) - 1
            if left > 0:
                self._in_use[path] = left
                return
            self._in_use.pop(path, None)
            if not self._is_deletable(path):
                return
            token = object()
            timer = self._timers.call_later(self.grace_s, lambda: self._delete(path, token))
            self._scheduled[path] = (token, timer)

    def _delete(self, path: str, token: object) -> None:
        with self._lock:
            scheduled = self._scheduled.get(path)
            if scheduled is None or scheduled[0] is not token or self._in_use.get(path):
                return  # claimed again, or re-scheduled by a later release
            file = Path(path)
            file.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                file.parent.rmdir()  # Gradio's per-upload hash folder, when now empty
            del self._scheduled[path]
        logger.debug("deleted %s", path)


class OutputFiles:
    """A temporary folder per handed-out file (batch CSV, report), deleted a grace period later.

    One folder per request so two requests writing the same name never collide; whatever a
    server leaves when it stops goes with the process (``atexit``).
    """

    def __init__(self, grace_s: float = OUTPUT_GRACE_S, timers: Timers | None = None) -> None:
        self.janitor = UploadJanitor(grace_s, is_deletable=lambda _path: True, timers=timers)
        self._lock = threading.Lock()
        self._root: Path | None = None

    @property
    def root(self) -> Path:
        """The folder holding the per-request folders, created on first use."""
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="lungdemo-outputs-"))
                atexit.register(shutil.rmtree, self._root, ignore_errors=True)
            return self._root

    def new_path(self, name: str) -> Path:
        """``<root>/<fresh folder>/<name>``: where one request writes one file."""
        return Path(tempfile.mkdtemp(dir=self.root)) / name

    def handed_out(self, path: Path) -> str:
        """Schedule ``path`` and its folder for deletion; returns it as the event's output."""
        self.janitor.claim(str(path))
        self.janitor.release(str(path))
        return str(path)

    def discard(self, path: Path) -> None:
        """Remove the folder of a file that will not be handed out (the request failed)."""
        shutil.rmtree(path.parent, ignore_errors=True)


Upload = str | bytes | dict[str, Any] | None
"""What an event with ``preprocess=False`` receives: Gradio's file dict (or a path or bytes from Python)."""


def upload_payload(image: Upload) -> str | bytes | None:
    """The uploaded file's path (or inline bytes), untouched: Gradio has not opened it."""
    if image is None or isinstance(image, (str, bytes)):
        return image
    url = image.get("url") or ""
    if url.startswith("data:"):
        _, _, encoded = url.partition(",")
        try:
            return base64.b64decode(encoded, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise gr.Error("the inline image data is not valid base64", print_exception=False) from exc
    if not image.get("path"):
        raise gr.Error("no file was received: upload an image file", print_exception=False)
    return str(image["path"])


def upload_name(image: Upload) -> str:
    """The name the user's file had (Gradio's ``orig_name``, else the upload path's name)."""
    if isinstance(image, dict):
        name = image.get("orig_name") or (Path(str(image["path"])).name if image.get("path") else "")
    elif isinstance(image, str):
        name = Path(image).name
    else:
        name = ""
    return str(name).strip() or "upload"


def read_upload(upload: str | bytes, janitor: UploadJanitor | None) -> bytes:
    """The upload's bytes, claimed while read so the janitor deletes it only after the last use."""
    if isinstance(upload, bytes):
        return upload
    if janitor is not None:
        janitor.claim(upload)
    try:
        return Path(upload).read_bytes()
    except FileNotFoundError as exc:
        raise gr.Error(
            "the uploaded file is no longer on the server (uploads are deleted after use): upload it again",
            print_exception=False,
        ) from exc
    finally:
        if janitor is not None:
            janitor.release(upload)
