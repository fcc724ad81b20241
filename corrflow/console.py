"""The rich consoles of corrflow's command lines (``corrflow ...``, ``corrflow analyse ...``)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["make_console"]


def make_console(stderr: bool = False) -> Any:
    """A rich console: a terminal's own width, or 160 columns where the output is not a terminal (log files, pipes,
    ``make demo``), so that wide tables stay readable there instead of being cut to rich's default 80 columns."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr) if stream.isatty() else Console(stderr=stderr, width=160)
