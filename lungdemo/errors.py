"""The project's one exception family: command lines catch ``LungdemoError`` and exit 2."""

from __future__ import annotations

import sys


class LungdemoError(Exception):
    """A failure the user can fix (bad input, wrong folder, missing login); its text says how."""


EXIT_STATUS = 2
"""What every command line returns after a ``LungdemoError`` (argparse uses 2 for bad flags too)."""


def report_error(exc: BaseException | str) -> int:
    """Print ``error: <message>`` on stderr, as every command line does; returns :data:`EXIT_STATUS`."""
    print(f"error: {exc}", file=sys.stderr)
    return EXIT_STATUS
