"""The ``corrflow`` command line (typer + rich).

Every command reads and writes one store, prints progress for long work and a one-line summary, and
exits with status 2 and a one-line explanation (no traceback) on bad input.  The commands live in
:mod:`.ensembles` (generate, info, verify, summary, measure, scales), :mod:`.ildg` (ILDG export and import),
:mod:`.flows` (train, correlate, compare, report) and :mod:`.tangent` (derivative); the analyses are registered
from the ``corrflow.analyses`` entry points.
"""

from __future__ import annotations

import typer

from . import ensembles, ildg, flows, tangent  # noqa: F401  (registers the commands, in this order)
from .base import CLIError, app, console, err_console, parse_shape

__all__ = ["app", "main", "console", "err_console", "CLIError", "parse_shape"]


# ----------------------------------------------------------------------------------------
# analyses (registered by the installed packages through the "corrflow.analyses" entry points)
# ----------------------------------------------------------------------------------------


def _register_analyses() -> None:
    """``corrflow analyse <name>``: one command per :class:`corrflow.pipeline.Analysis` declared under the
    ``corrflow.analyses`` entry-point group (pyproject.toml); corrflow itself imports no analysis by name."""
    from importlib.metadata import entry_points

    from ..pipeline.analysis import command

    group = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode="markdown",
                        help="Run an analysis (each also `python -m analysis.<name>`); every option also from a "
                             "TOML run file (`--config run.toml`).")
    names = []
    for ep in sorted(entry_points(group="corrflow.analyses"), key=lambda e: e.name):
        try:
            analysis = ep.load()
        except Exception as exc:  # a broken plug-in must not break the other commands
            msg = f"analysis {ep.name!r} cannot be loaded ({type(exc).__name__}: {exc})"

            def broken(msg: str = msg) -> None:
                err_console.print(f"[bold red]error:[/] {msg}")
                raise typer.Exit(2)

            group.command(ep.name, help=msg)(broken)
            continue
        command(analysis, group)
        names.append(ep.name)
    app.add_typer(group, name="analyse", help="Run an analysis: " + ", ".join(names) + " (`corrflow analyse NAME "
                  "--help`; the same as `python -m analysis.<name>`).")


_register_analyses()


def main() -> None:  # pragma: no cover - console entry
    from ..runtime import apply_allocator_setting

    apply_allocator_setting()  # CORRFLOW_MALLOC=tuned, before JAX starts its threads
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
