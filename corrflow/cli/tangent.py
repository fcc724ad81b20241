"""``derivative``: tangent-flow derivative estimators (:mod:`corrflow.tangent`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import numpy as np
import typer

from ..console import ordinal, results_table
from .base import (TAU_EXP_HELP, CLIError, _run, _stage, app, auto_windowing, console, discard_option,
                   print_thermalisation, tau_exp_option)


# ----------------------------------------------------------------------------------------
# derivative (tangent-flow estimators, corrflow.tangent)
# ----------------------------------------------------------------------------------------


def _agreement_verdict(r: Any, worst: float) -> str:
    """The end of the tangent − connected line: nothing within 3 sigma; beyond, what a pull means -- a fault of the
    field or a drift -- or, on an ensemble too small for a Gaussian error of the skewed difference, that it is not
    conclusive yet."""
    if worst <= 3:
        return ""
    weak = r.unreliable_agreement()
    if weak and all(abs(s.pull(0.0)) <= 3 for o, s in r.agreement.items() if o not in weak):
        return ("; not conclusive on this many configurations: the difference per configuration is a product of "
                "fluctuations, skewed, so on few configurations its mean lies on the short side with too small an "
                "error (" + "; ".join(f"{o}: {why}" for o, why in weak.items()) + "); generate more[/]")
    return ("; both are unbiased, so a pull beyond 3 sigma points at the field or its divergence, or at a drift at "
            "the start of the chains that the connected estimator takes up (try --discard auto)[/]")


@app.command(epilog="""
**Examples**

    corrflow derivative --store data/runs.zarr u1_16x16_beta2 --param beta \\
        --obs plaquette,wilson_2x2

    corrflow derivative --store data/su3.zarr su3_4x4x4x4_beta5.8 \\
        --param beta --obs plaquette --field gradient --json

    corrflow derivative --store data/demo.zarr u1_16x16_beta2 \\
        --obs plaquette,wilson_2x2 --compare flowed_beta2.2 \\
        --compare direct_beta2.2 --compare u1_16x16_beta2.2

    corrflow derivative --store data/schwinger.zarr schwinger_8x8_beta2_m0.2 \\
        --param mass --obs plaquette,condensate,pion@1,pion@2

    corrflow derivative --store data/su3.zarr su3_8x8x8x8_beta6 \\
        --obs t2E@2.6,t2E@2.8,t2E@3.0,t2E@3.2 --field gradient

--compare adds the finite-shift estimators of ensembles at param + delta already in the store (flowed, direct
reweighting, independent HMC) as (<O>(param + delta) - <O>(param)) / delta: biased by O(delta), shown for comparison.
The fitted field is saved (pickle-free) in --out (default: STORE_tangent/ENSEMBLE-PARAM-HASH next to the store) and
reused when the ensemble content and every fit setting match. Ensembles with Wilson fermions need traces of D^-1
for d/dmass and for the fermion part of v.grad S: exact on small lattices, else stochastic (--noise vectors per
configuration; their noise is in the errors; the stochastic condensate has noise vectors of its own).
""")
def derivative(
    ensemble: str = typer.Argument(..., help="ensemble in the store (pure gauge or with Wilson fermions)"),
    store: Path = typer.Option(..., help="zarr store (only read)"),
    param: str = typer.Option("beta", help="action parameter: beta, xi or lam; mass for ensembles with fermions"),
    obs: str = typer.Option("plaquette", help="observables, comma-separated: plaquette, wilson_RxT, t2E@T (SU(N)), "
                                              "chi_top (2D U(1): Q^2/V of the geometric charge; plaquette field, "
                                              "which then keeps Q, or none); with fermions (dynamical, or "
                                              "--valence-mass) also condensate, pion@T"),
    field: str = typer.Option("auto", help="tangent field: auto (plaquette for 2D U(1); for --param beta, xi or lam "
                                           "on pure-gauge SU(2)/SU(3) lattices of 3+ even extents, and for xi or lam "
                                           "with Wilson fermions, smoothing with --held-out-smoothing, anisotropic "
                                           "flows for xi and lam; gradient otherwise) | "
                                           "plaquette | gradient | preconditioned (gradient fields times the "
                                           "inverse covariant Laplacian: non-local, any theory) | smoothing "
                                           "(links moved towards their Wilson-flowed values: any theory; cheap in "
                                           "4D) | none (connected estimator only)"),
    harmonics: int = typer.Option(6, help="plaquette field: sine harmonics of h(phi)"),
    features: Optional[str] = typer.Option(None,
                                 help="gradient and preconditioned fields: features, comma-separated (plaquette, "
                                      "plaquette^n, rectangle, flowed@T; with _t / _s the temporal / spatial planes "
                                      "only: plaquette_t, rectangle_s, flowed_t@T, ...); default gradient: plaquette, "
                                      "rectangle, flowed@0.1, flowed@0.2, flowed@0.4 (for --param xi or lam in 4D "
                                      "each split into _t and _s), preconditioned: plaquette, plaquette^2, "
                                      "plaquette^3, rectangle"),
    times: Optional[str] = typer.Option(None, help="smoothing field (also where auto chooses it): Wilson-flow times, "
                                                   "comma-separated (default 0.1,0.2,0.4,0.8; multiples of 0.05; "
                                                   "auto on pure-gauge lattices 0.1,0.2,0.4 in steps of 0.1)"),
    held_out_smoothing: bool = typer.Option(False, "--held-out-smoothing", help="smoothing field (SU(2)/SU(3)): flow "
                                            "each link's surroundings with the link's mask replaced by its staple "
                                            "projection -- exact divergence, no probes, 2d flows per configuration, 4d "
                                            "with an anisotropy "
                                            "(the tangent of the flows' smoothing layers)"),
    anisotropy: Optional[float] = typer.Option(None, help="smoothing field: flows with plane couplings 1 +- A "
                                                          "(temporal) and 1 -+ A (spatial), two per time (default "
                                                          "0.5 for --param xi or lam in 3+ dimensions, else 0: "
                                                          "isotropic)"),
    probes: Optional[int] = typer.Option(None, help="gradient, preconditioned and smoothing fields: Hutchinson probes "
                                                    "per configuration for the divergence (default 4; smoothing 1)"),
    masses: str = typer.Option("0", help="preconditioned field: regulator masses m^2 of the Laplacian, comma-"
                                         "separated (one basis field per feature and mass)"),
    probe_period: Optional[int] = typer.Option(None, help="preconditioned and smoothing fields: dilute each "
                                                         "Hutchinson probe into classes of links this many sites "
                                                         "apart (period^d * d jvps per probe; 4 in 2D cuts the "
                                                         "probe noise ~20x; default 1, smoothing 2)"),
    folds: int = typer.Option(2, help="cross-fitting folds (each block of a chain gets coefficients fitted on the "
                                      "others; 1: fit and evaluate on everything)"),
    held_out: float = typer.Option(0.25, help="fraction of the fit configurations held out to select the ridge"),
    out: Optional[Path] = typer.Option(None, help="checkpoint directory of the fitted field"),
    seed: int = typer.Option(0, help="seed of the Hutchinson probes and trace noise"),
    valence_mass: Optional[float] = typer.Option(None, help="pure-gauge ensembles: bare mass of quenched (valence) "
                                                            "Wilson quarks for pion@T and condensate (e.g. "
                                                            "Feynman-Hellmann dE_pi/dlam with --param lam)"),
    sources: int = typer.Option(1, help="point sources per configuration of the pion correlator pion@T (t_0 = k L_0 / "
                                        "N; must divide L_0; one propagator solve each)"),
    traces: str = typer.Option("auto", help="fermion ensembles: traces of D^-1 exact (dense, small lattices) | "
                                            "stochastic (noise vectors, one CG each) | auto (exact up to a Schur "
                                            "dimension of 512; exact is refused on larger lattices)"),
    noise: int = typer.Option(2, help="fermion ensembles, stochastic traces: noise vectors per configuration"),
    dilution: str = typer.Option("even-odd", help="stochastic traces: split each noise vector into pieces solved "
                                                  "separately: none | even-odd (2 solves; the default: 2.9x less "
                                                  "noise per solve in 4D QCD) | spin-color (`Ns*Nc`) | full (`2*Ns*Nc`)"),
    t0_ref: float = typer.Option(0.3, help="t^2 E(t0) that defines t0: with two or more t2E@T observables whose mean "
                                           "crosses it, the derivative of t0/a^2 joins the table (else a line "
                                           "under it says why)"),
    w0_ref: float = typer.Option(0.3, help="W(w0^2) = t d/dt t^2 E that defines w0: with four or more t2E@T whose W "
                                           "crosses it, the derivative of w0/a joins the table (else a line "
                                           "under it says why)"),
    batch: int = typer.Option(32, help="configurations per jitted batch"),
    discard: str = typer.Option("0", help="leading trajectories of every chain to leave out (thermalisation), here "
                                          "and in the --compare ensembles: a number, or auto (the cut that leaves "
                                          "the smallest errors of the stored plaquette and observables)"),
    fit: str = typer.Option("field", help="what the least squares minimises: field (Var[R_v]: one field, the tangent "
                                          "of the ideal flow) | observable (Var[T_v] of each observable: control "
                                          "variates; helps where the observable's own noise dominates)"),
    thin: int = typer.Option(1, help="use every N-th configuration after --discard for the tangent and connected "
                                     "estimates (their per-configuration terms are the cost)"),
    compare: Optional[List[str]] = typer.Option(None, help="ensemble at param + delta (flowed, identity-flow or "
                                                "independent; repeat or comma-separate) whose finite-shift "
                                                "derivative joins the table"),
    contract_on: bool = typer.Option(False, "--contract",
                                     help="two passes: the field's terms, the fit, then v.grad O along the fitted "
                                          "field only (same estimates; one solve per source instead of one per basis "
                                          "field or correlator slice). Default: on for pion@T, condensate and t2E@T "
                                          "with --fit field"),
    contract_off: bool = typer.Option(False, "--no-contract", help="one pass: v.grad O along every basis field (what "
                                                                   "--fit observable needs)"),
    second_order: bool = typer.Option(False, "--second-order",
                                      help="add the second-order control variate to the tangent rows: the same "
                                           "identity with R_v in place of O, weighted by the slope of O on dS; for "
                                           "the plaquette it turns the product `(P - <P>)(R - <R>)` into `(R - <R>)^2` "
                                           "(`d<P>/dbeta` at beta = 6.0 on 8^4: 18x instead of 6.6x); two passes, the "
                                           "second about 5x the first's cost; pure-gauge ensembles"),
    tau_exp: str = typer.Option("0", help=TAU_EXP_HELP),
    json_: bool = typer.Option(False, "--json", help="print one JSON object (for scripts) instead of the table"),
) -> None:
    """Derivatives `d<O>/d(param)` by the tangent-flow estimator (unbiased, no weights) and the connected estimator,
    with value(error), tau_int and the variance reduction.  The per-configuration terms are saved in the checkpoint
    as they are computed (at least every 20 s, and on Ctrl-C): an interrupted run continues where it stopped when the
    same command is run again."""

    def body() -> None:
        import json

        from ..pipeline.tangent import derivative_from_store
        from ..stats import format_value_error
        from ..store import open_store
        from ..store.checkpoints import check_writable_dir
        from ..summary import exact_derivative

        if batch < 1:
            raise CLIError(f"--batch must be >= 1, got {batch}")
        if contract_on and contract_off:
            raise CLIError("--contract and --no-contract exclude each other; give one (or neither: the default)")
        contract = True if contract_on else (False if contract_off else None)
        n_discard = discard_option(discard)
        windowing = tau_exp_option(tau_exp)  # checked before anything is read
        if probes is not None and probes < 1:
            raise CLIError(f"--probes must be >= 1, got {probes}")
        if probe_period is not None and probe_period < 1:
            raise CLIError(f"--probe-period must be >= 1, got {probe_period}")
        from ..tangent import DILUTIONS, TRACE_METHODS, FermionTraces

        if traces not in TRACE_METHODS:
            raise CLIError(f"--traces must be one of {', '.join(TRACE_METHODS)}, got {traces!r}")
        if noise < 1:
            raise CLIError(f"--noise must be >= 1, got {noise}")
        if not t0_ref > 0 or not w0_ref > 0:
            raise CLIError(f"--t0-ref and --w0-ref must be > 0, got {t0_ref}, {w0_ref}")
        if dilution not in DILUTIONS:
            raise CLIError(f"--dilution must be one of {', '.join(DILUTIONS)}, got {dilution!r}")
        trace_opts = FermionTraces(method=traces, n_noise=noise, dilution=dilution)
        if out is not None:
            check_writable_dir(out, "--out")
        st = open_store(store, "r")
        if ensemble not in st.ensembles():
            raise CLIError(f"no ensemble {ensemble!r} in {store}; available: {', '.join(st.ensembles()) or 'none'}")
        if windowing is None:  # --tau-exp auto (in stored trajectories, as a number would be)
            windowing = auto_windowing(st, ensemble, n_discard, quiet=json_)
        opts: dict[str, Any] = {}
        kind = field.strip().lower()
        # --field auto takes the smoothing options too: where it chooses another field, make_field says so
        smoothing_ok = kind in ("smoothing", "auto")
        if times is not None and not smoothing_ok:
            raise CLIError("--times applies to --field smoothing (or auto) only")
        if held_out_smoothing and not smoothing_ok:
            raise CLIError("--held-out-smoothing applies to --field smoothing (or auto) only")
        if anisotropy is not None and not smoothing_ok:
            raise CLIError("--anisotropy applies to --field smoothing (or auto) only")
        if features is not None and kind == "smoothing":
            raise CLIError("--features does not apply to --field smoothing; give its flow times with --times")
        spec = st.spec(ensemble)
        is_u1_2d = spec.group == "u1" and len(spec.shape) == 2
        if kind == "plaquette" or (kind == "auto" and is_u1_2d):
            opts = {"harmonics": harmonics}
        elif kind in ("gradient", "auto"):
            opts = {"n_probes": probes}
        elif kind == "preconditioned":
            opts = {"n_probes": probes, "masses": masses, "probe_period": probe_period}
        elif kind == "smoothing":
            opts = {"n_probes": probes, "probe_period": probe_period}
        if kind in ("smoothing", "auto"):  # for auto, make_field refuses them where it chooses another field
            opts.update(times=times, held_out=True if held_out_smoothing else None, anisotropy=anisotropy)
        opts = {k: v for k, v in opts.items() if v is not None}  # unset: the field's own default
        if features is not None and (kind in ("gradient", "preconditioned") or (kind == "auto" and not is_u1_2d)):
            opts["features"] = features
        names = [o.strip() for o in obs.split(",") if o.strip()]
        others = [c.strip() for item in (compare or []) for c in item.split(",") if c.strip()]
        settings = dict(field=kind, field_options=opts, n_folds=folds, held_out=held_out, seed=seed, batch=batch,
                        out=out, compare=others, traces=trace_opts, t0_reference=t0_ref, w0_reference=w0_ref,
                        discard=n_discard, thin=thin, target=fit.strip().lower(), valence_mass=valence_mass,
                        pion_sources=sources, contract=contract, second_order=second_order, tau_exp=windowing.tau_exp)
        exact = {o: exact_derivative(spec, o, param) for o in names}
        exact = {o: x for o, x in exact.items() if x is not None}  # pure gauge 2D: the exact torus derivative
        if json_:
            res = derivative_from_store(st, store, ensemble, param, names, **settings)
            typer.echo(json.dumps({"ensemble": ensemble, **res.as_dict(), "exact": exact}, default=float))
            return
        with _stage(f"tangent terms {ensemble}", "cfg/s") as lp:
            res = derivative_from_store(st, store, ensemble, param, names, progress=lambda d, t: lp(d, t),
                                        **settings)
        r = res.result
        reductions = r.reductions()
        tr_msg = "" if res.valence_mass is None else f", valence quarks m = {res.valence_mass:g} (quenched)"
        if "method" in res.traces:
            tr_msg += (", exact fermion traces" if res.traces["method"] == "exact" else
                       f", stochastic fermion traces ({res.traces['n_noise']} noise vectors"
                       + (f", {res.traces['dilution']} dilution" if "dilution" in res.traces else "") + ")")
        kept = (f" after the first {res.discard}" if res.discard else "") + (
            f", every {ordinal(thin)}" if thin > 1 else "")
        kept += f"; {windowing.tail_note}" if windowing.tail_note else ""
        cells = [(o, f"{k} ({res.shifts[k][0]}, d{param} {res.shifts[k][1]:+g})" if k in res.shifts else k,
                  format_value_error(s.value, s.error), f"{s.tau_int:.2f}", f"{reductions[o][k]:.3g}x")
                 for o, est in r.estimates.items() for k, s in est.items()]
        console.print(results_table(
            f"d<O>/d{param} on {ensemble} ({res.n_chains} x {res.n_traj} configurations{kept}, "
            f"{r.field.get('kind')} field{' per observable' if r.target == 'observable' else ''}"
            f"{' + second-order control variate' if r.second_order else ''}{tr_msg})",
            ("observable", "estimator", "value(error)", "tau_int", "variance reduction"), cells,
            numbers=("value(error)", "tau_int", "variance reduction")))
        for note in r.notes.values():  # why a t0/a^2 or w0/a row that the t2E@T observables ask for is missing
            console.print(note, markup=False, highlight=False)
        if any(s.error > 0 for s in r.agreement.values()):  # (none with --field none: the same estimator)
            worst = max(abs(s.pull(0.0)) for s in r.agreement.values())
            console.print(("[yellow]" if worst > 3 else "") + "tangent - connected (same configurations, error of the "
                          "difference): " + ", ".join(f"{o} {format_value_error(s.value, s.error)} "
                                                      f"({s.pull(0.0):+.1f} sigma)" for o, s in r.agreement.items())
                          + _agreement_verdict(r, worst))
        if exact:
            console.print(f"exact d<O>/d{param} on this finite torus: " + "; ".join(
                f"{o} {x:.6g} (" + ", ".join(f"{k} {s.pull(x):+.1f} sigma" for k, s in r.estimates[o].items()
                                             if k not in res.shifts) + ")"
                for o, x in exact.items() if o in r.estimates))
        if res.thermalisation is not None:
            print_thermalisation(res.thermalisation)
        c, adjusted = res.cost, res.cost_adjusted()
        terms_s = (f"{c['terms_s']:.3g} s" if np.isfinite(c["terms_s"]) else
                   "unknown (terms read from a checkpoint written without their cost)")
        line = (f"cost per configuration: tangent terms {terms_s}"
                + ((" (two passes: the field, then v.grad O" + (" and v.grad R_v" if r.second_order else "")
                    + " along the fitted field)") if res.contracted else "")
                + f", fit {c['fit_s']:.2g} s")
        if "observables_s" in c:
            line += f" (observables alone {c['observables_s']:.3g} s, paid by the connected estimator too)"
        if adjusted:
            line += (f", generation {c['generation_s']:.3g} s; variance reduction at equal cost: "
                     + ", ".join(f"{o} {x:.3g}x" for o, x in adjusted.items()))
        else:
            line += "; the ensemble's generation cost is not recorded (made by an older corrflow or imported)"
        console.print(line)
        fit_msg = "reused" if res.reused else ("fitted" if r.fits or r.observable_fits else "none")
        extra = ""
        # one fold: fitted and judged on the same configurations, which flatters the reduction
        where = " per fold" if folds > 1 else " (in-sample: --folds 1 fits and evaluates on the same configurations)"
        if r.fits:
            extra = ", Var[R_v] reduced " + "/".join(f"{f.reduction:.1f}x" for f in r.fits) + where
        elif r.observable_fits:
            extra = f", Var[T_v] reduced{where}: " + ", ".join(
                f"{o} " + "/".join(f"{f.reduction:.1f}x" for f in fs) for o, fs in r.observable_fits.items())
        resumed = (f"; terms of {res.terms_resumed} of {res.n_chains * res.n_traj} configurations read from the "
                   "checkpoint" if res.terms_resumed else "")
        console.print(f"[green]done[/] tangent field {fit_msg}{extra}{resumed}; checkpoint {res.checkpoint}")

    _run(body, interrupted="the per-configuration terms computed so far are saved in the checkpoint directory; rerun "
                           "the same command to continue")
