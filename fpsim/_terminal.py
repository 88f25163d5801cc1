"""Terminal output through rich: one console for the CLI, demo and tutorials.

Invariant: colour only on a terminal and never under NO_COLOR; piped output is plain text at a fixed width.
"""

from __future__ import annotations

import os
import sys
from typing import IO

from rich.console import Console

_PIPE_WIDTH = 120  # piped or redirected output: wide enough for the tables, stable for tests and files


def console(file: IO[str] | None = None) -> Console:
    """A rich Console writing to `file` (default: the current sys.stdout), sized to the terminal when there is one."""
    stream = file if file is not None else sys.stdout
    interactive = hasattr(stream, "isatty") and stream.isatty()
    return Console(
        file=stream,
        width=None if interactive else _PIPE_WIDTH,
        no_color="NO_COLOR" in os.environ,
        color_system="auto" if interactive else None,
        highlight=False,
        soft_wrap=False,
    )
