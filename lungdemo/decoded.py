"""What decoding yields besides pixels, and its error.

A leaf module so that :mod:`lungdemo.decode` and :mod:`lungdemo.dicom` share these without
importing each other. Other code imports them from :mod:`lungdemo.decode`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lungdemo.errors import LungdemoError

WARNING_PREFIX = "warning: "
"""Notes that start with this are warnings (the file may not be what the model knows).
They are ordinary notes, so every place that shows notes (page, reports) shows them."""


class ImageDecodeError(LungdemoError, ValueError):
    """Raised when a file cannot be turned into a slice; the message is shown to users."""


@dataclass
class DecodedInfo:
    """What decoding saw, for warnings and the data audit."""

    format: str | None
    mode: str
    size: tuple[int, int]
    n_frames: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """The notes that are warnings (they come first in :attr:`notes`)."""
        return [n for n in self.notes if n.startswith(WARNING_PREFIX)]
