"""An analysis = settings + ``prepare`` (pipeline steps) + ``estimate`` (numbers -> record) + ``render`` (record ->
figure); :func:`run_analysis` runs any of them the same way, and :func:`command` / :func:`app`
(:mod:`corrflow.pipeline.command`, which declares :class:`Analysis` without loading JAX) make its command line.

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
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .command import Analysis, app, check_tangent_settings, command
from .progress import Progress
from .record import print_tables, publish
from .steps import Pipeline

__all__ = ["Analysis", "TangentMeasurement", "app", "check_tangent_settings", "command", "console_summary",
           "measure_tangent", "run_analysis"]


@dataclass(frozen=True)
class TangentMeasurement:
    """The tangent estimator's per-configuration series on the base configurations, leading axes ``(chains, n)``
    (:func:`measure_tangent`): ``o`` the observables ``(..., n_obs)``, ``ds`` ``∂_α S``, ``r`` ``R_v`` and ``dvo``
    ``v·∇O`` ``(..., n_obs)`` with each configuration's cross-fitted field, ``do`` the explicit ``∂_α O`` at fixed
    links; ``fits`` the per-fold fits (:class:`corrflow.tangent.FieldFit`), ``fit_s`` the fit's seconds, ``cost`` the
    ledger's seconds of both passes."""

    o: np.ndarray
    ds: np.ndarray
    r: np.ndarray
    dvo: np.ndarray
    do: np.ndarray
    fits: list[Any] = field(default_factory=list)
    fit_s: float = 0.0
    cost: float = 0.0


def measure_tangent(pipe: Pipeline, key: dict[str, Any], links: np.ndarray, theory: Any, field: Any, param: str,
                    observables: Sequence[str], *, seed: int, pion_sources: int = 1, n_folds: int = 2,
                    held_out: float = 0.25, **options: Any) -> TangentMeasurement:
    """The tangent estimator of ``d<O>/d param`` on ``links`` ``(chains, n, ...)`` in two cached passes
    (:meth:`Pipeline.measure_batches`, stages ``tangent field terms`` and ``tangent derivatives``, each saved after
    every batch: an interrupted analysis continues where it stopped when it is run again): the terms of
    ``field`` (:func:`corrflow.tangent.field_terms`: ``∂_α S`` and ``v_k·∇S − ∇·v_k``), the field fitted by
    cross-fitted least squares of ``Var[R_v]`` (:func:`corrflow.tangent.cross_fit`: no configuration enters its own
    coefficients), then ``observables`` with ``v·∇O`` along each configuration's field and the explicit ``∂_α O``
    (:func:`corrflow.tangent.contracted_derivatives`, ``pion_sources`` point sources for ``pion@T``).  Configuration
    ``i`` (chain-major) uses the key ``fold_in(PRNGKey(seed), i)``; ``options`` (``batch``, ``traces``,
    ``valence_mass``) go to both passes.  ``theory``: the theory whose action the field follows (with dynamical
    quarks their determinant enters ``v·∇S``).  ``key``: the cache key of the first pass -- it must identify the
    configurations, the theory, the field, the observables, the options and the seed; the second pass is cached under
    the fitted coefficients as well."""
    import jax

    from .. import tangent as tg

    stages = {"field": "tangent field terms", "contracted": "tangent derivatives"}

    def run_pass(name: str, extra: dict[str, Any], outputs: tuple[str, ...], compute: Callable[..., Any]
                 ) -> tuple[tuple[np.ndarray, ...], float, int]:
        def flat_pass(flat: np.ndarray, progress: Any, resume: Any, on_batch: Any) -> dict[str, np.ndarray]:
            out = compute(np.asarray(flat)[None], progress, resume, on_batch)  # one chain, chain-major
            return {k: np.asarray(x)[0] for k, x in zip(outputs, out)}

        k = ({**key, "pass": "field"} if name == "field" else
             {**key, "pass": "contracted", **extra, "n_folds": n_folds, "held_out": held_out})
        res, cost = pipe.measure_batches(k, links, flat_pass, stage=stages[name], outputs=outputs)
        return tuple(res[o] for o in outputs), cost, 0

    tp = tg.two_pass(field, theory, param, observables, jax.random.PRNGKey(seed), run_pass=run_pass,
                     n_folds=n_folds, held_out=held_out, pion_sources=pion_sources, **options)
    return TangentMeasurement(np.asarray(tp.o, float), np.asarray(tp.ds, float), np.asarray(tp.r, float),
                              np.asarray(tp.dvo, float), np.asarray(tp.do, float), tp.fits, tp.fit_s,
                              float(tp.field_s + tp.derivatives_s))


#: a cut whose discarded part differs from the rest by more than this (mean or spread, in sigma) is a start-up drift
DRIFT_SIGMA = 5.0


def thermalisation_check(pipe: Pipeline, record: dict[str, Any]) -> None:
    """The automatic thermalisation cut (:func:`corrflow.summary.thermalisation_cut`, plaquette) of every Markov-chain
    ensemble ``pipe`` used, over the configurations it used, into ``record["thermalisation"]``
    (``{name: {n_discard, drift_sigma, ...}}``); a summary line for each that drifts at its start (the discarded part
    more than :data:`DRIFT_SIGMA` off the rest): the analysis used all of its configurations, so its estimates --
    connected ones above all -- carry the drift."""
    from ..summary import thermalisation_cut

    checks = {}
    for name, n in pipe.markov_ensembles.items():
        try:
            cut = thermalisation_cut(pipe.store, name, n=n)
        except ValueError:  # no plaquette stored, or too few configurations for a cut
            continue
        checks[name] = asdict(cut)
        if cut.n_discard and cut.drift_sigma > DRIFT_SIGMA:
            record.setdefault("summary", []).append(
                f"WARNING: ensemble {name} drifts over its first {cut.n_discard} configurations per chain (they "
                f"differ from the rest by {cut.drift_sigma:.0f} sigma in the {cut.series}'s mean or spread) and the "
                "estimates above include them: thermalise longer (--therm); `corrflow summary STORE "
                f"{name} --discard auto` shows the cut.")
    record["thermalisation"] = checks


def console_summary(record: dict[str, Any], notes: int) -> list[str]:
    """The summary lines a run prints at its end, in their order and without Markdown emphasis: the headline
    (``record["headline"]``: indices of the summary lines that hold the results -- values, variance reductions), every
    ``WARNING`` line, and the last ``notes`` of the other lines after the first headline line (the introduction before
    it is in the run's header already).  A record without a headline prints its last ``notes`` lines and warnings."""
    summary = [str(line) for line in record.get("summary", [])]
    head = {int(i) % len(summary) for i in record.get("headline", []) if -len(summary) <= int(i) < len(summary)}
    warn = {i for i, line in enumerate(summary) if line.startswith("WARNING")}
    rest = [i for i in range(min(head, default=0), len(summary)) if i not in head and i not in warn]
    keep = head | warn | set(rest[max(len(rest) - max(notes, 0), 0):])
    return [summary[i].replace("**", "") for i in sorted(keep)]


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
    thermalisation_check(pipe, record)
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

        for line in console_summary(record, analysis.summary_lines):  # plain text: "[...]" is not markup
            console.print(escape(line))
        console.print(f"[green]done[/] in {time.perf_counter() - t0:.1f} s")
    return record
