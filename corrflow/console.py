"""The rich consoles of corrflow's command lines (``corrflow ...``, ``corrflow analyse ...``) and their help."""

from __future__ import annotations

import os
import re
import sys
import textwrap
from collections.abc import Collection, Iterable, Sequence
from typing import Any

__all__ = ["make_console", "results_table"]

#: a cell that reads as a number: a float, a value(error), a ratio "12.3x" or a percentage, nan or inf
_NUMBER = re.compile(r"^[+-]?(\d[\d.]*|\.\d+|nan|inf)(\([\d.]+\))?(e[+-]?\d+)?[x%]?$", re.IGNORECASE)


def make_console(stderr: bool = False) -> Any:
    """A rich console: a terminal's own width; where the output is not a terminal (log files, pipes, ``make demo``)
    the width ``COLUMNS`` asks for, else 160 columns, so that wide tables stay readable there instead of being cut to
    rich's default 80 columns."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    columns = os.environ.get("COLUMNS", "")
    return Console(stderr=stderr, width=int(columns) if columns.isdigit() and int(columns) >= 40 else 160)


def results_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]],
                  numbers: Collection[str] | None = None, justify: str = "left") -> Any:
    """A rich table of results (cells are strings, rich markup allowed).  On a narrow terminal the ``numbers``
    columns keep the width of their widest cell, so that a value(error) is never cut (their headers wrap instead),
    and the other columns (names of ensembles, observables, estimators) fold rather than end in an ellipsis.
    ``numbers=None``: the columns whose non-empty cells all look like numbers (``0.7282(39)``, ``93.4x``, ``-1.70``,
    ``nan``)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    rows = [list(r) for r in rows]
    if numbers is None:
        numbers = [c for i, c in enumerate(columns)
                   if all(_NUMBER.match(Text.from_markup(r[i]).plain) for r in rows if r[i].strip())]
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, show_edge=False)
    for i, col in enumerate(columns):
        if col in numbers:  # as wide as its widest cell (at least 8, or a header word): the header wraps to it
            width = max([8] + [Text.from_markup(r[i]).cell_len for r in rows] + [len(w) for w in col.split()])
            table.add_column(textwrap.fill(col, width), justify="right", no_wrap=True)
        else:
            table.add_column(col, justify=justify, overflow="fold")
    for r in rows:
        table.add_row(*r)
    return table


def usage_error_line(exc: Any) -> str:
    """One line for a command-line usage error (click's ``ClickException``: a missing or malformed option, an unknown
    option or command): ``error: invalid value for '--n': 'abc' is not a valid integer (corrflow generate --help)``,
    in place of typer's boxed usage panel."""
    msg = " ".join(str(exc.format_message()).split())
    cause = getattr(exc, "__cause__", None)  # typer's conversion errors do not say what was typed
    errors = cause.errors() if hasattr(cause, "errors") else None
    if errors and isinstance(errors[0], dict) and "input" in errors[0]:
        msg += f" (got {errors[0]['input']!r})"
    ctx = getattr(exc, "ctx", None)
    where = f" ({ctx.command_path} --help)" if ctx is not None else ""
    return f"error: {msg[:1].lower()}{msg[1:]}{where}"


def main_with_one_line_errors(main: Any, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
    """Run a click ``main`` (a typer command's) with usage errors said in one line (:func:`usage_error_line`, exit
    status 2 as click's) instead of typer's usage text and box; exit statuses, ``--help``, Ctrl-C and the output of
    the commands themselves as before.  ``standalone_mode=False`` (a caller that handles the exceptions) runs
    ``main`` unchanged."""
    import typer  # (typer 0.29 carries its own click: its exceptions derive from typer.TyperException)

    if not standalone_mode:
        return main(*args, standalone_mode=False, **kwargs)
    try:
        rv = main(*args, standalone_mode=False, **kwargs)
    except typer.Abort:
        print("Aborted!", file=sys.stderr)
        sys.exit(1)
    except typer.TyperException as exc:
        if not hasattr(exc, "format_message"):
            raise
        if type(exc).__name__ != "NoArgsIsHelpError":  # (the help is printed already, as typer does)
            make_console(stderr=True).print(usage_error_line(exc), markup=False, highlight=False, soft_wrap=True)
        sys.exit(getattr(exc, "exit_code", 2))
    # a command's body returns None; typer.Exit(n) comes back as n in this mode
    sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)


def plain_flags(cmd: Any) -> Any:
    """``cmd`` with its on/off flags shown without a type in the help (typer 0.29 writes ``--help <bool>``)."""
    if cmd is None:
        return None
    help_option = cmd.get_help_option(cmd.context_class(cmd))  # created once per command, then reused
    for p in [*cmd.params, help_option]:
        if getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""
    return cmd


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ``11th``, ``12th``, ``13th``, ``21st``, ... (``every 2nd``, not ``2th``)."""
    n = int(n)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
