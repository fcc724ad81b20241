"""Flow commands: ``train``, ``correlate``, and the comparisons ``compare`` and ``report``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, List, Optional

import typer

from ..console import results_table
from .base import (INTERRUPTED_READER, TAU_EXP_HELP, CLIError, _run, _stage, app, auto_windowing, console,
                   discard_option, option_error, print_thermalisation, tau_exp_option, warn_long_tail)


# ----------------------------------------------------------------------------------------
# flows: train / correlate / compare
# ----------------------------------------------------------------------------------------


def _parse_assignments(items: List[str], params: dict[str, float], ndim: int) -> dict[str, float]:
    """``NAME=VALUE`` items (comma-separated or repeated) -> target parameters, for a theory with action parameters
    ``params`` on ``ndim`` dimensions: every parameter but the flavour number ``nf``, and ``kappa`` for theories
    with a quark mass (converted to ``mass``)."""
    allowed = [k for k in params if k != "nf"] + (["kappa"] if "mass" in params else [])
    out = {}
    for it in items:
        for part in it.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise CLIError(f"malformed parameter {part!r}: use NAME=VALUE, e.g. beta=2.2")
            k, v = part.split("=", 1)
            k = k.strip()
            if k not in allowed:
                raise CLIError(f"unknown action parameter {k!r} for this ensemble's theory; allowed: "
                               f"{', '.join(allowed)}")
            try:
                value = float(v)
            except ValueError:
                raise CLIError(f"malformed value {v!r} for {k}") from None
            if not math.isfinite(value):
                raise CLIError(f"{k} must be finite, got {v.strip()}")
            if k == "kappa":
                if value <= 0:
                    raise CLIError(f"kappa must be > 0, got {value:g}")
                from ..theories import mass_from_kappa

                k, value = "mass", mass_from_kappa(value, ndim)
            if k in out and out[k] != value:
                raise CLIError(f"{k} is given twice ({out[k]:g} and {value:g}): give each target parameter once")
            out[k] = value
    if not out:
        raise CLIError("give the target parameters, e.g. --to beta=2.2")
    return out


def _names(items: List[str]) -> list[str]:
    """Observable names from a repeated and/or comma-separated option, in order, each once."""
    return list(dict.fromkeys(o.strip() for item in items for o in item.split(",") if o.strip()))


def _parse_times(text: Optional[str]) -> tuple[float, ...]:
    """``--smoothing 0.1,0.2,0.4`` -> ``(0.1, 0.2, 0.4)``, ``none`` -> ``()``; ``CLIError`` for a value that is not a
    number."""
    if not text or text.strip().lower() == "none":
        return ()
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise CLIError(f"--smoothing takes comma-separated flow times, e.g. 0.1,0.2,0.4,0.8; got {text!r}") from None


@app.command(epilog="""
**Examples**

    corrflow train --store data/runs.zarr --from u1_16x16_beta2 \\
        --to beta=2.2 --out flows/b2_to_b2.2

    corrflow train --store data/runs.zarr --from u1_16x16_beta2 \\
        --to beta=2.2 --out flows/b2_to_b2.2 --resume --epochs 80

    corrflow train --store data/su3.zarr --from su3_8x8x8x8_beta5.7 \\
        --to beta=5.75 --out flows/su3 --epochs 15

    corrflow train --store data/sch.zarr --from schwinger_16x16_beta2_m0.2 \\
        --to mass=0.22 --out flows/m0.22

With no architecture options the flow is the good one for the theory: plaquette-space maps for 2D U(1) (ESS ~0.98 for
beta 2 -> 2.2 at L = 16), residual layers otherwise. `--optimizer auto` (the default) trains residual flows by
Gauss–Newton on the variance of log w (`linear`: tied coefficients, no learning rate; the reverse-KL gradient of the
others follows the extensive noise of a few hundred configurations), plaquette-space flows and network coefficients
with L-BFGS (Adam for network coefficients in 2D).
""")
def train(
    store: Path = typer.Option(..., help="zarr store holding the base ensemble"),
    from_: str = typer.Option(..., "--from", help="base ensemble name"),
    to: List[str] = typer.Option(..., help="target parameters, e.g. beta=2.2, or mass=0.22 / kappa=0.24 with "
                                            "dynamical quarks (repeat or comma-separate)"),
    out: Path = typer.Option(..., help="checkpoint directory (created)"),
    epochs: int = typer.Option(40, help="training epochs (L-BFGS: maximum iterations)"),
    batch_size: int = typer.Option(64, help="configurations per optimiser step (L-BFGS: per micro-batch)"),
    lr: float = typer.Option(0.02, help="initial learning rate (cosine decay; Adam only)"),
    optimizer: str = typer.Option("auto", help="auto (linear for residual flows, lbfgs for plaquette flows and "
                                               "network coefficients in 4D, adam for those in 2D) | adam (mini-batch) "
                                               "| lbfgs (full batch, no learning rate) | linear (Gauss-Newton on var "
                                               "log w, tied parameters; residual flows)"),
    kind: str = typer.Option("auto", "--kind", "--flow-kind",
                             help="flow architecture: auto (plaquette for 2D U(1), residual otherwise) | plaquette (2D "
                                  "U(1): exact per-plaquette maps) | residual (masked staple layers)"),
    loops: Optional[str] = typer.Option(None, help="residual flows: staple shapes of the layers, plaquette[,rectangle] "
                                                   "(default plaquette; implies --kind residual under auto)"),
    sweeps: Optional[int] = typer.Option(None, help="sweeps of layers over all links (residual, default 2) or "
                                                    "plaquette-space maps (plaquette, default 1)"),
    degree: Optional[int] = typer.Option(None, help="residual flows: coefficients 0 constant (default), p > 0 "
                                                    "degree-p polynomial of the staple norm"),
    harmonics: int = typer.Option(6, help="plaquette flows: sine harmonics of each per-plaquette map"),
    net_width: int = typer.Option(0, help="residual flows: coefficients from a periodic CNN of frozen invariants with "
                                          "this many hidden channels (0: constant coefficients)"),
    net_depth: int = typer.Option(2, help="residual flows with --net-width: convolutions per coefficient network"),
    smear: int = typer.Option(0, help="residual flows in d >= 3: also staples from transverse links after this many "
                                      "stout steps (frozen links only; own coefficients)"),
    smoothing: Optional[str] = typer.Option(None, help="residual SU(2)/SU(3) flows: Wilson-flow times of held-out "
                                                       "smoothing terms (links moved towards their smoothed values), "
                                                       "or none; default 0.1,0.2,0.4,0.8 with one sweep in d >= 3 "
                                                       "when no other architecture option is given"),
    held_out: int = typer.Option(64, help="base configurations held out (not trained on): held-out ESS and var(log w) "
                                          "every epoch, the best epoch is kept (0: none)"),
    patience: int = typer.Option(5, help="with --held-out: stop after this many epochs without held-out improvement "
                                         "(0: never)"),
    n_train: Optional[int] = typer.Option(None, show_default=False,
                                          help="base configurations used for training (spread over the chains) "
                                               "[default: 512; 128 for --optimizer linear, whose few tied "
                                               "coefficients need no more]"),
    target_ess: float = typer.Option(1.0, help="stop early when the weight ESS fraction reaches this"),
    seed: int = typer.Option(0, help="seed for shuffling and initialisation"),
    resume: bool = typer.Option(False, "--resume", help="continue from the checkpoint in --out"),
    stream: Optional[bool] = typer.Option(None, "--stream/--no-stream",
                                          help="read the training configurations from the store one batch at a time "
                                               "instead of loading them (default: when they exceed 1 GiB); same flow "
                                               "either way"),
) -> None:
    """Train a residual flow from a base ensemble to target parameters (reverse KL; base samples only)."""

    def body() -> None:
        import dataclasses

        from ..flows import default_kind, default_smoothing, make_flow
        from ..flows.train import FlowTrainingError, TrainConfig, load_checkpoint, resolve_optimizer, resume_kwargs
        from ..flows.train import train as train_flow
        from ..flows.train import held_out_summary, kept_epoch, worse_than_start
        from ..pipeline.handles import TRAINING_REMEDY, check_exact_weights, training_sets
        from ..store import check_writable_dir, open_store

        check_writable_dir(out, "--out")  # before the training, not after it
        if not resume and (out / "checkpoint.json").exists():
            try:
                old = load_checkpoint(out)
                what = f" ({old['base'].params()} -> {old['target'].params()}, id {old['id']})"
            except Exception:  # unreadable: still not overwritten
                what = ""
            raise CLIError(f"--out {out} holds a flow checkpoint{what}: --resume continues it; give another --out, "
                           "or delete it to train afresh (ensembles made with it record its id)")
        st = open_store(store, "r")
        spec = st.spec(from_)
        if spec.kind == "flowed":
            raise CLIError(f"{from_!r} is a flowed ensemble (its configurations are unweighted images f(U)): train "
                           f"from its base {spec.flow.get('source')!r} or another Markov-chain ensemble")
        base = spec.make_theory()
        shift = _parse_assignments(to, base.params(), len(spec.shape))
        target = base.replace(**shift)
        if target.params() == base.params():
            k, v = next(iter(shift.items()))
            raise CLIError(f"--to {' '.join(to)} gives the parameters of {from_!r} itself ({base.params()}): a flow "
                           f"needs a shifted target, e.g. --to {k}={v + 0.1 * max(abs(v), 1.0):g}")
        check_exact_weights(base, "training a flow", TRAINING_REMEDY)
        kind_ = kind
        staple_options = loops is not None or degree is not None or net_width or smear  # residual-only options
        if kind_ == "auto":
            kind_ = "residual" if staple_options or smoothing else default_kind(base.group, base.shape)
        flow_opts: dict[str, Any] = {"kind": kind_}
        if kind_ == "plaquette":
            if staple_options or smoothing:
                raise CLIError("--loops, --degree, --net-width, --smear and --smoothing belong to --kind residual, not "
                               "to plaquette flows")
            flow_opts.update(n_sweeps=1 if sweeps is None else sweeps, harmonics=harmonics)
        else:
            times = _parse_times(smoothing) if smoothing is not None else (
                () if staple_options else default_smoothing(base.group, base.shape))
            flow_opts.update(loops=tuple(x.strip() for x in (loops or "plaquette").split(",") if x.strip()),
                             n_sweeps=(1 if times else 2) if sweeps is None else sweeps, degree=degree or 0,
                             net_width=net_width, net_depth=net_depth, smear=smear, smoothing=times)
        new_flow = make_flow(base.group, base.shape, **flow_opts)  # ValueError for options that do not fit
        if held_out < 0:
            raise CLIError(f"--held-out must be >= 0, got {held_out}")
        if n_train is not None and n_train < 2:
            raise CLIError(f"--n-train must be >= 2 (training configurations), got {n_train}")
        try:
            cfg = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=lr, target_ess=target_ess, seed=seed,
                              optimizer=resolve_optimizer(optimizer, len(base.shape), getattr(new_flow, "kind", kind_),
                                                          bool(getattr(new_flow, "net_width", 0))),
                              patience=patience if held_out else 0)
        except ValueError as exc:
            raise option_error(exc) from None
        # Gauss-Newton fits a handful of tied coefficients: 128 configurations pin them (held-out var(log w) 0.28 of
        # direct reweighting's with 128 and 0.29 with 272 on 4D 4^4, BENCHMARKS.md) at a quarter of 512's cost
        n_fit = n_train if n_train is not None else (128 if cfg.optimizer == "linear" else 512)
        ds = st.open_ensemble(from_)
        n = int(ds.sizes["traj"])
        # spread over the run, held-out ones between them, streamed when large (the pipeline's rules)
        configs, held, streamed = training_sets(st, from_, n, spec.n_chains, n_fit, held_out, stream)
        if held is None:
            cfg = dataclasses.replace(cfg, patience=0)
            if held_out:
                console.print(f"no held-out configurations ({spec.n_chains} x {n} are too few to hold any out): the "
                              "last epoch is kept, without held-out selection")
        elif len(configs) < min(n_fit, n * spec.n_chains):
            console.print(f"{len(configs)} of {spec.n_chains} x {n} configurations for training, {len(held)} held out "
                          f"(--n-train {n_fit} and --held-out {held_out} do not both fit; --held-out 0 trains on "
                          "all of them, without held-out selection)")
        if streamed:
            size = configs.nbytes + (held.nbytes if held is not None else 0)
            console.print(f"streaming {len(configs)} training" + (f" and {len(held)} held-out" if held is not None
                                                                   else "")
                          + f" configurations ({size / 2**30:.2f} GiB) from the store, one batch at a time")
        kwargs: dict[str, Any] = {}
        if resume:
            ck = load_checkpoint(out)
            flow = ck["flow"]
            if ck["target"].params() != target.params() or ck["base"].params() != base.params():
                raise CLIError(f"checkpoint {out} was trained for {ck['base'].params()} -> {ck['target'].params()}")
            kwargs = resume_kwargs(ck, len(configs), cfg)
        else:
            flow = new_flow
        with _stage(f"train {from_} -> {target.params()}") as lp:
            try:
                res = train_flow(flow, base, target, configs, cfg, checkpoint=out, held_out=held,
                                 progress=lambda e, r: lp(e, epochs, f"loss {r['loss']:.4f}  ESS {r['ess']:.3f}"
                                                                 + (f"  held-out ESS {r['held_ess']:.3f}"
                                                                    if "held_ess" in r else "")),
                                 batch_progress=lambda it, d, m: lp(it - 1, epochs, f"iteration {it}: {d}/{m} "
                                                                                    "configurations"),
                                 **kwargs)
            except FlowTrainingError as exc:
                raise CLIError(str(exc)) from None
        h = res.history
        ck = load_checkpoint(out)
        held_msg = held_out_summary(h)
        held_msg = f", {held_msg}" if held_msg else ""
        kept = kept_epoch(h)  # the flow saved
        why = {"epochs": "all --epochs run", "patience": "stopped: no held-out gain for --patience epochs",
               "target_ess": "stopped: --target-ess reached", "converged": "converged"}.get(res.stopped, res.stopped)
        done_epochs = f"{len(h) - 1} epoch{'s' if len(h) != 2 else ''}"
        console.print(f"[green]done[/] {flow.kind} flow, {done_epochs} ({why}): weight ESS "
                      f"{h[0]['ess']:.3f} -> {kept['ess']:.3f}{held_msg}, checkpoint {out} (id {ck['id']})")
        warning = worse_than_start(h)
        if warning:
            console.print(f"[yellow]warning: {warning}[/]")

    _run(body, interrupted="the last checkpoint in --out is kept; rerun the same command with --resume to continue")


@app.command(epilog="""
**Examples**

    corrflow correlate --store data/runs.zarr --from u1_16x16_beta2 \\
        --flow flows/b2_to_b2.2 --name flowed_b2.2

    corrflow correlate --store data/runs.zarr --from u1_16x16_beta2 \\
        --identity --to beta=2.2 --name direct_b2.2
""")
def correlate(
    store: Path = typer.Option(..., help="zarr store"),
    from_: str = typer.Option(..., "--from", help="base ensemble"),
    name: str = typer.Option(..., help="name of the flowed ensemble to write"),
    flow: Optional[Path] = typer.Option(None, help="flow checkpoint directory (from `corrflow train`)"),
    identity: bool = typer.Option(False, "--identity", help="identity flow: direct reweighting baseline (needs --to)"),
    to: List[str] = typer.Option([], help="target parameters, e.g. beta=2.2: needed with --identity; with --flow "
                                          "checked against the flow's target"),
    batch: int = typer.Option(64, help="base configurations per batch (and per stored chunk)"),
    seed: int = typer.Option(0, help="seed of the flowed Metropolis chain (and of the determinant noise)"),
    det_noise: int = typer.Option(0, help="two-flavour dynamical quarks: noise vectors per configuration of an unbiased "
                                          "stochastic determinant ratio (one CG solve each) instead of the exact, dense "
                                          "one (0); for lattices too large for dense algebra"),
) -> None:
    """Flow every base configuration; store f(U), log weights, log Jacobians and the pairing (resumable)."""

    def body() -> None:
        from ..pipeline import correlate_to_store, direct_to_store
        from ..store import check_name, open_store

        if (flow is None) == (not identity):
            raise CLIError("give exactly one of --flow CHECKPOINT or --identity")
        if batch < 1:
            raise CLIError(f"--batch must be >= 1, got {batch}")
        if det_noise < 0:
            raise CLIError(f"--det-noise must be >= 0 (0: the exact determinant ratio), got {det_noise}")
        check_name(name)
        if name == from_:
            raise CLIError(f"--name {name!r} is the base ensemble (--from); the flowed ensemble needs a name of its own")
        st = open_store(store, "a")  # created at the first write only
        with _stage(f"correlate {from_} -> {name}", "cfg/s") as lp:
            prog = lambda d, t: lp(d, t)  # noqa: E731
            bspec = st.spec(from_)
            shift = _parse_assignments(to, bspec.params, len(bspec.shape)) if to or identity else None
            if identity:
                res = direct_to_store(st, from_, name, shift, batch=batch, seed=seed, progress=prog,
                                      det_noise=det_noise)
            else:
                res = correlate_to_store(st, from_, name, checkpoint=flow, batch=batch, seed=seed, progress=prog,
                                         target_params=shift, det_noise=det_noise)
        head = (f"[green]up to date[/] {res.name}: all {res.committed} base configurations per chain paired; nothing "
                "to do (generate more base trajectories to extend it)," if res.n_new == 0 else
                f"[green]done[/] {res.name}: +{res.n_new} -> {res.committed} paired configurations per chain,")
        console.print(f"{head} weight ESS {res.weight_ess_fraction:.3f}, flowed-chain acceptance {res.acceptance:.3f}, "
                      f"log<w> {res.log_mean_weight:.5f}")

    _run(body)


@app.command(epilog="""
**Example**

    corrflow compare --store data/runs.zarr \\
        --base u1_16x16_beta2 flowed_b2.2 direct_b2.2 u1_16x16_beta2.2 \\
        --obs plaquette
""")
def compare(
    ensembles: List[str] = typer.Argument(..., help="flowed ensembles and/or independent ensembles at a'"),
    store: Path = typer.Option(..., help="zarr store"),
    base: str = typer.Option(..., help="base ensemble"),
    obs: List[str] = typer.Option(["plaquette"], help="observables (repeat the option or comma-separate; chi_top from "
                                                      "the stored topological charge)"),
    discard: str = typer.Option("0", help="leading trajectories of every chain to leave out (the same in a flowed "
                                          "ensemble and its base, so the pairing is kept): a number, or auto (the "
                                          "longest cut of the base and the independent ensembles)"),
    tau_exp: str = typer.Option("0", help=TAU_EXP_HELP),
) -> None:
    """The estimators side by side: `<O>_a'`, the difference and derivative, errors, ESS, variance reduction."""

    def body() -> None:
        from ..compare import compare_ensembles, parameter_shift
        from ..store import open_store
        from ..summary import common_thermalisation_cut

        n_discard = discard_option(discard)
        windowing = tau_exp_option(tau_exp)
        st = open_store(store, "r")
        cut = None
        if n_discard is None:
            cut = common_thermalisation_cut(st, (base, *ensembles), _names(obs))
            n_discard = cut.n_discard
        if windowing is None:  # the base and the independent ensembles (flowed ones share the base's chains)
            windowing = auto_windowing(st, [n for n in (base, *ensembles) if st.spec(n).kind != "flowed"], n_discard)
        rows = compare_ensembles(st, base, ensembles, _names(obs), discard=n_discard, windowing=windowing)
        warn_long_tail(windowing, st.info(base)["committed"] - n_discard)
        pname, shift = parameter_shift(st.spec(base).params, st.spec(ensembles[0]).params)
        kept = f" (the first {n_discard} of every chain discarded)" if n_discard else ""
        kept += f"; {windowing.tail_note}" if windowing.tail_note else ""
        numbers = ("<O>(a')", "difference", f"d<O>/d{pname}", "weight ESS", "var. red. vs indep.")
        cells = [(r.observable, r.estimator, r.ensemble, "" if r.value_at_target is None else str(r.value_at_target),
                  str(r.difference), "" if r.derivative is None else str(r.derivative),
                  "" if r.weight_ess is None else f"{r.weight_ess:.3f}",
                  "" if r.variance_reduction is None else f"{r.variance_reduction:.1f}") for r in rows]
        console.print(results_table(f"{base} -> {pname} {'+' if shift >= 0 else ''}{shift:g}{kept}",
                                    ("observable", "estimator", "ensemble", *numbers), cells, numbers=numbers,
                                    justify="right"))
        if cut is not None:
            print_thermalisation(cut)

    _run(body, interrupted=INTERRUPTED_READER)


@app.command(epilog="""
**Example**

    corrflow report --store data/runs.zarr \\
        --base u1_16x16_beta2 flowed_b2.2 direct_b2.2 u1_16x16_beta2.2 \\
        --out reports/

    # analysis sections only
    corrflow report --store data/mass_dependence.zarr --out reports/
""")
def report(
    ensembles: Optional[List[str]] = typer.Argument(None, help="flowed and/or independent ensembles compared with "
                                                    "the base"),
    store: Path = typer.Option(..., help="zarr store"),
    base: Optional[str] = typer.Option(None, help="base ensemble (omit to report only the analysis results)"),
    out: Path = typer.Option(Path("reports"), help="output directory (PNG figures + report.md)"),
    obs: List[str] = typer.Option(["plaquette"], help="observables (repeat the option or comma-separate; chi_top from "
                                                      "the stored topological charge)"),
    analysis: Optional[List[str]] = typer.Option(None, help="analysis results to include (repeat; default: all "
                                                 "recorded in the store by `python -m analysis.<name>`)"),
    tangent: bool = typer.Option(False, help="also the tangent-flow and connected derivative estimators on the base "
                                             "ensemble (pure gauge; smooth observables; fitted field kept in OUT)"),
    second_order: bool = typer.Option(False, "--second-order", help="with --tangent: the tangent rows with their "
                                      "second-order control variate (a second pass, ~5x the first; for observables "
                                      "along the action, e.g. the plaquette, the variance falls like Var[R_v]^2)"),
    discard: str = typer.Option("0", help="leading trajectories of every chain to leave out of the comparison: a "
                                          "number, or auto (the longest cut of the base and the independent "
                                          "ensembles)"),
    tau_exp: str = typer.Option("0", help=TAU_EXP_HELP),
) -> None:
    """Variance-reduction report: error bars per estimator, variance reduction and ESS vs shift, loss curves, and
    a section per analysis (continuum limit, mass dependence, Feynman–Hellmann) recorded in the store."""

    def body() -> None:
        from ..report import write_report
        from ..store import check_writable_dir, open_store

        if base is not None and not ensembles:
            raise CLIError("--base needs at least one ensemble to compare with")
        if base is None and ensembles:
            raise CLIError("ensembles given without --base; name the base ensemble they are compared with")
        if tangent and base is None:
            raise CLIError("--tangent needs --base: the tangent-flow estimators are computed on the base ensemble")
        n_discard = discard_option(discard)
        if n_discard != 0 and base is None:
            raise CLIError("--discard applies to the comparison with --base; analysis sections keep their own "
                           "ensembles' settings")
        windowing = tau_exp_option(tau_exp)
        if (windowing is None or windowing.tau_exp is not None) and base is None:
            raise CLIError("--tau-exp applies to the comparison with --base; analysis sections keep their own "
                           "error settings (the analyses' --tau-exp)")
        existed = out.exists()
        try:
            check_writable_dir(out, "--out")
            st = open_store(store, "r")
            if windowing is None:  # (an unknown ensemble: st.spec says so, with the ones the store has)
                windowing = auto_windowing(st, [n for n in (base, *ensembles) if st.spec(n).kind != "flowed"],
                                           n_discard)
            path = write_report(st, base, ensembles or [], out, _names(obs), analysis, tangent=tangent,
                                discard=n_discard, second_order=second_order, tau_exp=windowing.tau_exp)
        except BaseException:
            if not existed and out.is_dir() and not any(out.iterdir()):
                out.rmdir()  # refused (or interrupted) before anything was written: leave no empty directory
            raise
        n_png = len(list(out.glob("*.png")))
        console.print(f"[green]done[/] report written to {path} ({n_png} figure{'' if n_png == 1 else 's'})")

    _run(body)
