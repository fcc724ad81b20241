"""The ``corrflow`` command line (typer + rich).

Every command reads and writes one store, prints progress for long work and a one-line summary, and
exits with status 2 and a one-line explanation (no traceback) on bad input.  The commands live in
:mod:`.ensembles` (generate, info, verify, measure), :mod:`.summary` (summary, scales), :mod:`.ildg` (ILDG export
and import), :mod:`.flows` (train, correlate, compare, report) and :mod:`.tangent` (derivative); the analyses are
loaded from the ``corrflow.analyses`` entry points when asked for.
"""

from __future__ import annotations

from typing import Any

import typer

from . import ensembles, summary, ildg, flows, tangent  # noqa: F401  (registers the commands, in this order)
from .base import CLIError, PlainFlagsGroup, app, console, err_console, parse_shape

__all__ = ["app", "main", "console", "err_console", "CLIError", "parse_shape"]


# analyses (registered by the installed packages through the "corrflow.analyses" entry points)
def _analysis_entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group="corrflow.analyses")}


def _load_analysis(name: str, ep: Any) -> Any:
    """The click command of one analysis entry point (or one that says why it cannot be loaded)."""
    sub = typer.Typer(add_completion=False, rich_markup_mode="markdown")
    try:
        analysis = ep.load()
    except Exception as exc:  # a broken plug-in must not break the other commands
        msg = f"analysis {name!r} cannot be loaded ({type(exc).__name__}: {exc})"

        def broken(msg: str = msg) -> None:
            err_console.print(f"[bold red]error:[/] {msg}")
            raise typer.Exit(2)

        sub.command(name, help=msg)(broken)
    else:
        from ..pipeline.command import command

        command(analysis, sub)
    return typer.main.get_command(sub)


class _Analyses(PlainFlagsGroup):
    """``corrflow analyse <name>``: one command per :class:`corrflow.pipeline.Analysis` declared under the
    ``corrflow.analyses`` entry-point group (pyproject.toml); corrflow itself imports no analysis by name.  An
    analysis (and with it JAX and the pipeline) is loaded when it is asked for, so ``corrflow --help`` and the other
    commands start without it."""

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted(_analysis_entry_points())

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands:
            ep = _analysis_entry_points().get(cmd_name)
            if ep is None:
                return None
            self.commands[cmd_name] = _load_analysis(cmd_name, ep)
        return super().get_command(ctx, cmd_name)


app.add_typer(
    typer.Typer(cls=_Analyses, no_args_is_help=True, add_completion=False, rich_markup_mode="markdown",
                help="Run an analysis (each also `python -m analysis.<name>`); every option also from a TOML run file "
                     "(`--config run.toml`)."),
    name="analyse",
    help="Run an analysis: " + ", ".join(sorted(_analysis_entry_points())) + " (`corrflow analyse NAME --help`; the "
         "same as `python -m analysis.<name>`).")


def main() -> None:  # pragma: no cover - console entry
    from ..runtime import run_entry

    run_entry(app)  # the allocator setting, Ctrl-C (corrflow.runtime)


if __name__ == "__main__":  # pragma: no cover
    main()
