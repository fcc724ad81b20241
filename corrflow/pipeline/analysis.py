"""An analysis = settings + ``prepare`` (pipeline steps) + ``estimate`` (numbers -> record) + ``render`` (record ->
figure); :func:`run_analysis` runs any of them the same way, and :func:`command` / :func:`app` make its command line.

    CONTINUUM = Analysis(name="continuum_limit", settings=ContinuumSettings, prepare=prepare, estimate=estimate,
                         render=render, help="...")
    record = run_analysis(CONTINUUM, ContinuumSettings.make(n_configs=200), console=None)

``prepare(pipe, settings)`` runs the store-backed steps and returns the analysis's inputs (a
:class:`~corrflow.pipeline.Family` and measurements, with their costs); ``estimate(settings, inputs)`` returns
the record (:mod:`corrflow.pipeline.record`: title, summary, tables, numbers, costs, variance reductions);
``render(record)`` draws the figure from the record alone, so a stored record can be re-rendered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from .progress import Progress
from .record import print_tables, publish
from .steps import Pipeline

__all__ = ["Analysis", "app", "check_tangent_settings", "command", "run_analysis"]


@dataclass(frozen=True)
class Analysis:
    """One analysis: its store record ``name``, command-line ``command``, settings class and three functions
    (module docstring); ``summary_lines`` of the summary are printed at the end of a run."""

    name: str
    command: str
    settings: type
    prepare: Callable[[Pipeline, Any], Any]
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


def run_analysis(analysis: Analysis, settings: Any = None, *, console: Any = None, write: bool = True,
                 progress: Any = None) -> dict[str, Any]:
    """Run ``analysis`` with ``settings`` (defaults if None): steps, estimates, figure; with ``write`` the record,
    figure, Markdown, JSON and run file go to the store and ``settings.io.out``.  Returns the record."""
    s = settings if settings is not None else analysis.settings()
    if not isinstance(s, analysis.settings):
        raise TypeError(f"{analysis.name} takes {analysis.settings.__name__}, got {type(s).__name__}")
    t0 = time.perf_counter()
    prog = progress if isinstance(progress, Progress) else Progress(console, on_update=progress)
    if analysis.header is not None:
        prog.log(analysis.header(s))
    pipe = Pipeline(s.io.store, s.io.resolved_flow_dir(), prog)
    inputs = analysis.prepare(pipe, s)
    record = analysis.estimate(s, inputs)
    record["settings"] = s.to_dict()
    record["analysis"] = analysis.name
    record.setdefault("costs", {})["wall_seconds_this_run"] = time.perf_counter() - t0
    png = analysis.render(record)
    if write:
        out = publish(pipe.store, analysis.name, record, png, s.io.out, s)
        prog.log(f"  wrote {out}/{analysis.name}.md/.png/.json/.toml and the store record {analysis.name!r}")
    if console is not None:
        print_tables(console, record, first=analysis.tables_printed)
        from rich.markup import escape

        for line in record.get("summary", [])[-analysis.summary_lines:]:  # plain text: "[...]" is not markup
            console.print(escape(line.replace("**", "")))
        console.print(f"[green]done[/] in {time.perf_counter() - t0:.1f} s")
    return record


def command(analysis: Analysis, app: Any) -> Callable[..., None]:
    """Register ``analysis`` as a command of the typer ``app`` (options from its settings, ``--config``)."""
    from .cli import settings_command

    return settings_command(app, analysis.settings, lambda s, console: run_analysis(analysis, s, console=console),
                            name=analysis.command, help=analysis.help, epilog=analysis.epilog)


def app(analysis: Analysis) -> Any:
    """A typer app with ``analysis`` as its only command (``python -m analysis.<name>``)."""
    import typer

    a = typer.Typer(add_completion=False, rich_markup_mode="markdown", help=analysis.help)
    command(analysis, a)
    return a
