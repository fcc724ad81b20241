"""Estimates from an ensemble's measurements: ``summary`` (observables with Gamma-method errors, exact values and
pulls where known) and ``scales`` (the gradient-flow scales t0, w0)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from ..console import results_table
from .base import (INTERRUPTED_READER, TAU_EXP_HELP, _run, app, auto_windowing, console, discard_option,
                   print_thermalisation, tau_exp_option, warn_long_tail)


@app.command(epilog="""
**Example**

    corrflow summary data/runs.zarr u1_16x16_beta2

    # leave out the start-up drift, if any
    corrflow summary data/runs.zarr u1_16x16_beta2 --discard auto

    corrflow summary data/runs.zarr   # every ensemble of the store
""")
def summary(
    store: Path = typer.Argument(..., help="zarr store"),
    ensemble: Optional[str] = typer.Argument(None, help="ensemble name (omit: every ensemble of the store)"),
    discard: str = typer.Option("0", help="leading trajectories of every chain to leave out: a number, or auto (the "
                                          "cut that minimises the error of the plaquette's mean, so a "
                                          "start-up drift is cut off)"),
    tau_exp: str = typer.Option("0", help=TAU_EXP_HELP),
) -> None:
    """Observables with autocorrelation-aware errors (Gamma method), and exact values with pulls where known."""

    def one(st: Any, name: str, n_discard: int | None, windowing: Any) -> None:
        from ..summary import ensemble_summary, frozen_charge, thermalisation_cut

        cut = None
        if n_discard is None:
            cut = thermalisation_cut(st, name)
            n_discard = cut.n_discard
        if windowing is None:  # --tau-exp auto
            windowing = auto_windowing(st, name, n_discard)
        rows = ensemble_summary(st, name, discard=n_discard, windowing=windowing)
        info_ = st.info(name)
        warn_long_tail(windowing, info_["committed"] - n_discard)
        kept = f" (the first {n_discard} discarded)" if n_discard else ""
        kept += f"; {windowing.tail_note}" if windowing.tail_note else ""
        worst, shaky, cells = 0.0, [], []
        for r in rows:
            pull = r.pull
            if pull is not None:
                worst = max(worst, abs(pull))
            colour = "green" if pull is None or abs(pull) < 3 else ("yellow" if not r.conclusive else "red")
            mark = "*" if pull is not None and abs(pull) >= 3 and not r.conclusive else ""
            if mark:
                shaky.append(r)
            ptxt = "" if pull is None else f"[{colour}]{pull:+.2f}{mark}[/]"
            cells.append((r.observable, str(r.stats), f"{r.stats.tau_int:.2f}",
                          "" if r.exact is None else f"{r.exact:.6f}", ptxt))
        console.print(results_table(f"{name}: {info_['n_chains']} chains x {info_['committed']} trajectories{kept}",
                                    ("observable", "estimate", "tau_int", "exact (torus)", "pull"), cells,
                                    numbers=("estimate", "tau_int", "exact (torus)", "pull"), justify="right"))
        for r in shaky:
            console.print(f"[yellow]* {r.observable}: not conclusive -- its values per configuration are skewed "
                          f"(skewness {r.skewness:.2f}) and {r.n_effective:.0f} effective samples are fewer than the "
                          f"{r.n_needed:.0f} (28 + 25 skewness^2) a Gaussian error needs; a short ensemble of such a "
                          "quantity lies on the short side of its tail with too small an error more often than "
                          "3 sigma suggests[/]")
        for note in filter(None, (r.slow_mode_note() for r in rows)):
            console.print(f"[yellow]{escape(note)}[/]")
        charge = frozen_charge(st, name, n_discard)
        if charge is not None:
            console.print(f"[yellow]topological charge Q = {charge} on every configuration: the chains never left that "
                          "sector (a cold start at weak coupling), so the plaquette is compared with its exact value "
                          "in the sector, the Wilson loops with none, and chi_top is not estimable (hot starts or a "
                          "smaller beta sample the sectors)[/]")
        spec = st.spec(name)
        if spec.kind == "flowed":
            import numpy as np

            from ..stats import weight_ess_fraction

            lw = np.asarray(st.open_ensemble(name)["log_weight"].values[:, n_discard:], dtype=float)
            console.print(f"flowed ensemble of {spec.flow.get('source')!r}: observables reweighted to its parameters "
                          f"with its log weights (weight ESS {weight_ess_fraction(lw):.3f})")
        n_exact = sum(r.exact is not None for r in rows)
        if n_exact:
            console.print(f"{n_exact} observable{'' if n_exact == 1 else 's'} compared with exact values; largest "
                          f"|pull| = {worst:.2f}")
        n_all = info_["committed"]
        partial = {o: k for o, k in info_["observables"].items() if k < n_all}
        if partial:  # measured before the ensemble was extended: left out above, not silently
            what = ", ".join(f"{o} (measured on {k} of {n_all} trajectories per chain)" for o, k in partial.items())
            console.print(f"[yellow]not shown: {what}; `corrflow measure {store} {name} {' '.join(partial)}` "
                          "completes them[/]")
        if cut is not None:
            print_thermalisation(cut)

    def body() -> None:
        from ..store import open_store

        n_discard = discard_option(discard)
        windowing = tau_exp_option(tau_exp)
        st = open_store(store, "r")
        if ensemble is not None:
            one(st, ensemble, n_discard, windowing)
            return
        names = st.ensembles()
        if not names:
            console.print(f"{store}: no ensembles")
        for name in names:  # one that cannot be summarised (too short, ...) is named and skipped
            try:
                one(st, name, n_discard, windowing)
            except ValueError as exc:
                console.print(f"[yellow]{name}: not summarised: {escape(str(exc))}[/]")

    _run(body, interrupted=INTERRUPTED_READER)


@app.command(epilog="""
**Example**

    corrflow measure data/runs.zarr su3_8x8x8x8_beta6 wilson_flow
    corrflow scales data/runs.zarr su3_8x8x8x8_beta6
""")
def scales(
    store: Path = typer.Argument(..., help="zarr store"),
    ensemble: str = typer.Argument(..., help="ensemble measured with `corrflow measure ... wilson_flow`"),
    definition: str = typer.Option("clover", help="E(t) discretisation: clover or plaquette"),
    t0_ref: float = typer.Option(0.3, help="t0: t^2 E(t0) = t0-ref (lower it on small/coarse lattices)"),
    w0_ref: float = typer.Option(0.3, help="w0: t d/dt t^2 E = w0-ref at t = w0^2"),
    tau_exp: str = typer.Option("0", help=TAU_EXP_HELP),
) -> None:
    """Gradient-flow scales t0/a^2, w0/a, sqrt(t0)/w0 (and chi_top at t0) with Gamma-method errors."""

    def body() -> None:
        from ..scales import describe, scales_from_store
        from ..store import open_store

        windowing = tau_exp_option(tau_exp)
        st = open_store(store, "r")
        if windowing is None:  # (an unknown ensemble: the store says so, with the ones it has)
            windowing = auto_windowing(st, ensemble, 0)
        res = scales_from_store(st, ensemble, definition=definition, t0_ref=t0_ref, w0_ref=w0_ref, S=windowing,
                                partial=True)  # one scale out of reach: the other is still printed
        step = f", flow step {res['flow_eps']:g}" if res.get("flow_eps") is not None else ""
        tail = f", {windowing.tail_note}" if windowing.tail_note else ""
        console.print(f"[bold]{ensemble}[/] ({definition} E{step}, t0-ref {t0_ref}, w0-ref {w0_ref}{tail})")
        for line in describe(res):
            console.print(line)

    _run(body, interrupted=INTERRUPTED_READER)
