"""The project's one exception family: command lines catch ``LungdemoError`` and exit 2."""

from __future__ import annotations


class LungdemoError(Exception):
    """A failure the user can fix (bad input, wrong folder, missing login); its text says how."""
