"""An analysis declared: :class:`Analysis` (settings + ``prepare`` + ``estimate`` + ``render``) and its command line
(:func:`command`, :func:`app`), without loading what runs it -- JAX, scipy and the pipeline's steps load when the
command's body starts (:func:`corrflow.pipeline.run_analysis`), so ``--help`` answers at once.  :func:`deferred` names
a function by ``"module:name"`` and imports its module on the first call: an analysis package declares its
:class:`Analysis` with deferred ``prepare``, ``estimate`` and ``render``."""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Analysis", "app", "check_tangent_settings", "command", "deferred"]


def deferred(target: str) -> Callable[..., Any]:
    """The function ``target`` (``"package.module:function"``), imported on its first call."""
    module, _, name = target.partition(":")

    @functools.cache
    def resolve() -> Callable[..., Any]:
        return getattr(importlib.import_module(module), name)

    def call(*args: Any, **kwargs: Any) -> Any:
        return resolve()(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"{target} (imported on the first call)"
    return call


@dataclass(frozen=True)
class Analysis:
    """One analysis: its store record ``name``, command-line ``command``, settings class and three functions
    (:mod:`corrflow.pipeline.analysis`; any callables, :func:`deferred` ones too).  At the end of a run the console
    shows the first ``tables_printed`` tables and the summary's headline (the lines ``record["headline"]`` indexes:
    the results), its warnings and its last ``summary_lines`` other lines (the notes;
    :func:`corrflow.pipeline.analysis.console_summary`)."""

    name: str
    command: str
    settings: type
    prepare: Callable[[Any, Any], Any]
    estimate: Callable[[Any, Any], dict]
    render: Callable[[dict], bytes | None]
    help: str = ""
    epilog: str = ""
    header: Callable[[Any], str] | None = None
    summary_lines: int = 3
    tables_printed: int | None = 1


def check_tangent_settings(s: Any, field_of: Callable[[Any], Any]) -> None:
    """The tangent-estimator options of an analysis's settings ``s`` (``tangent``, ``tangent_batch``), checked before
    anything runs: ``tangent_batch >= 1`` and, with ``tangent``, enough configurations for the cross-fit of the field
    ``field_of(s)`` (:func:`corrflow.tangent.check_field_size`).  One-line ``ValueError`` otherwise."""
    if s.tangent_batch < 1:
        raise ValueError(f"tangent_batch must be >= 1, got {s.tangent_batch}")
    if s.tangent:
        from ..tangent import check_field_size

        check_field_size(s.ensemble.n_chains, s.ensemble.n_configs, field_of(s),
                         hint=" (raise --n-configs, or --no-tangent)")


def command(analysis: Analysis, app: Any, extra: dict[str, Any] | None = None) -> Callable[..., None]:
    """Register ``analysis`` as a command of the typer ``app`` (options from its settings, ``--config``, and the
    ``extra`` options of :func:`~corrflow.pipeline.cli.settings_command`, which the caller handles)."""
    from .cli import settings_command

    def run(s: Any, console: Any) -> Any:
        from .analysis import run_analysis

        return run_analysis(analysis, s, console=console)

    return settings_command(app, analysis.settings, run, name=analysis.command, help=analysis.help,
                            epilog=analysis.epilog, extra=extra)


def app(analysis: Analysis, extra: dict[str, Any] | None = None) -> Any:
    """A typer app with ``analysis`` as its only command (``python -m analysis.<name>``); ``extra``: options the
    caller reads before the command runs (listed in the help, ignored by the command; :func:`command`)."""
    import typer

    from ..console import main_with_one_line_errors, plain_flags

    class _App(typer.Typer):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return main_with_one_line_errors(plain_flags(typer.main.get_command(self)).main, *args, **kwargs)

    a = _App(add_completion=False, rich_markup_mode="markdown", help=analysis.help)
    command(analysis, a, extra)
    return a
