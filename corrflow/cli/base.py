"""The ``corrflow`` command line: the typer app, the console and the one error runner every command uses.

Every command reads and writes one store, prints progress for long work and a one-line summary, and
exits with status 2 and a one-line explanation (no traceback) on bad input.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import typer
from rich.console import Console

app = typer.Typer(
    help="corrflow: correlated ensembles for lattice field theory. Each command works on one zarr store.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
)
console = Console()
err_console = Console(stderr=True)


class CLIError(Exception):
    """Bad input detected by the CLI itself."""


def parse_shape(text: str) -> tuple[int, ...]:
    """``"16,16"`` or ``"16x16"`` -> ``(16, 16)``; clear error otherwise."""
    parts = [p.strip() for p in re.split(r"[,x]", text.strip()) if p.strip() != ""]
    if len(parts) < 2 or not all(re.fullmatch(r"\d+", p) for p in parts) or any(int(p) < 1 for p in parts):
        raise CLIError(f"malformed --shape {text!r}: expected at least two comma-separated positive integers, e.g. 16,16 or 8,8,8,8")
    return tuple(int(p) for p in parts)


def _run(fn: Callable[[], Any], interrupted: str = "everything committed so far is safe; rerun the same command "
                                                    "with --resume to continue") -> Any:
    """Run a command body with the pipeline's one error runner: expected errors become a message and exit status 2,
    Ctrl-C exits 130 after printing ``interrupted``."""
    from ..ildg import IldgFormatError
    from ..pipeline.cli import run_cli

    return run_cli(fn, err_console, (CLIError, IldgFormatError), interrupted=interrupted)


def _stage(description: str, unit: str = "") -> Any:
    """A persistent progress bar for one command step (the pipeline's :class:`~corrflow.pipeline.Progress`):
    ``with _stage("HMC x", "traj/s") as tick: tick(done, total, extra)``."""
    from ..pipeline.progress import Progress

    return Progress(console, transient=False).stage(description, unit)


def print_thermalisation(cut: Any) -> None:
    """The line of an automatic thermalisation cut (``--discard auto``; a
    :class:`corrflow.stats.equilibration.EquilibrationCut`), in yellow where the cut is at its limit."""
    warn = cut.at_limit
    console.print(("[yellow]" if warn else "") + "thermalisation (--discard auto): " + cut.describe()
                  + ("[/]" if warn else ""))


def discard_option(text: str) -> int | None:
    """``--discard`` of a command: a count of leading trajectories, or ``None`` for ``auto``
    (:func:`corrflow.stats.equilibration.parse_discard`); a :class:`CLIError` (one line, exit 2) otherwise."""
    from ..stats.equilibration import parse_discard

    try:
        return parse_discard(text)
    except ValueError as e:
        raise CLIError(str(e)) from None
