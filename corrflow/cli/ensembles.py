"""Commands that make, inspect and measure ensembles: ``generate``, ``info``, ``verify``, ``measure`` (the
estimates from their measurements: :mod:`.summary`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.markup import escape

from ..console import results_table
from .base import INTERRUPTED_READER, CLIError, _run, _stage, app, console, option_error, parse_shape


# ----------------------------------------------------------------------------------------
# generate
# ----------------------------------------------------------------------------------------


#: the recipe of a new ensemble where `corrflow generate` leaves an option out
_DEFAULT_RECIPE: dict[str, Any] = {"chains": 1, "seed": 0, "therm": 100, "thin": 1, "precision": "double",
                                   "observables": "", "algorithm": "hmc", "step_size": 0.2, "n_steps": 5,
                                   "integrator": "omelyan", "overrelax": 4, "fermion_det": "auto"}
_R = _DEFAULT_RECIPE


@app.command(epilog="""
**Examples**

    corrflow generate u1 --beta 2.0 --shape 16,16 --n 2000 --chains 4 \\
        --store data/runs.zarr

    corrflow generate su3 --beta 5.7 --shape 4,4,4,4 --n 500 \\
        --step-size 0.0833 --n-steps 12 --store runs.zarr

    corrflow generate u1 --beta 2.0 --shape 16,16 --n 4000 --chains 4 \\
        --store data/runs.zarr --resume   # continue / extend

    corrflow generate schwinger --beta 2.0 --mass 0.1 --shape 16,8 --n 1000 \\
        --store data/schwinger.zarr   # N_f=2 Wilson

    corrflow generate schwinger --beta 2.0 --kappa 0.24 --shape 32,32 \\
        --fermion-det pseudofermion --n 500 --store s.zarr
""")
def generate(
    theory: str = typer.Argument(..., help="u1, su2, su3 or suN (Wilson gauge action; dimension from --shape); "
                                 "schwinger (U(1) + N_f=2 Wilson fermions) or su3-wilson etc."),
    beta: float = typer.Option(..., help="gauge coupling beta"),
    shape: str = typer.Option(..., help="lattice extents, time first, e.g. 16,16 or 8,8,8,8"),
    n: int = typer.Option(..., "--n", "--n-configs", help="stored trajectories per chain (total, after thermalisation "
                          "and thinning)"),
    store: Path = typer.Option(..., help="zarr store (directory; created if absent)"),
    chains: Optional[int] = typer.Option(None, help=f"independent chains, run in parallel (vmap; default "
                                                    f"{_R['chains']})"),
    xi: float = typer.Option(1.0, help="bare anisotropy (temporal coupling beta*xi, spatial beta/xi)"),
    lam: float = typer.Option(0.0, help="Feynman–Hellmann source coefficient (lam * (spatial - temporal plaquettes))"),
    mass: Optional[float] = typer.Option(None, help="bare quark mass m (fermion theories; kappa = 1/(2m + 2d))"),
    kappa: Optional[float] = typer.Option(None, help="hopping parameter instead of --mass"),
    fermion_det: Optional[str] = typer.Option(None, "--fermion-det", "--hmc-det",
                                              help="fermion determinant in HMC: exact (dense, small lattices: V Ns Nc "
                                              "<= 2048), pseudofermion (CG, even-odd preconditioned), or auto (the "
                                              "default: exact where it fits, pseudofermion otherwise)"),
    seed: Optional[int] = typer.Option(None, help=f"random seed (default {_R['seed']}); trajectory t of chain c uses "
                                       "fold_in(fold_in(key(seed), c), t)"),
    therm: Optional[int] = typer.Option(None, help=f"thermalisation trajectories, not stored (default {_R['therm']})"),
    thin: Optional[int] = typer.Option(None, help=f"store every thin-th trajectory (default {_R['thin']})"),
    step_size: Optional[float] = typer.Option(None, help=f"HMC: molecular-dynamics step size (default "
                                                         f"{_R['step_size']})"),
    n_steps: Optional[int] = typer.Option(None, help=f"HMC: molecular-dynamics steps per trajectory (default "
                                                     f"{_R['n_steps']})"),
    integrator: Optional[str] = typer.Option(None, help="HMC: omelyan (the default) or leapfrog"),
    jitter: Optional[float] = typer.Option(None, help="randomised trajectory lengths: each trajectory's step size "
                                           "drawn from step-size x [1 - jitter, 1 + jitter]; 0: fixed (a fixed "
                                           "length can resonate with near-harmonic modes at weak coupling and freeze "
                                           "them). Default: 0.2 for a new ensemble, the stored value with --resume"),
    observables: Optional[str] = typer.Option(None, help="extra observables measured on the fly, comma-separated: "
                                              "wilson_RxT, topological_charge, polyakov_loop (its modulus |P|: the "
                                              "loop itself averages to 0 in a finite volume)"),
    name: Optional[str] = typer.Option(None, help="ensemble name (default from theory and parameters)"),
    start: str = typer.Option("hot", help="hot (Haar random) or cold (unit links)"),
    precision: Optional[str] = typer.Option(None, help="double (the default) or single (links stored in that "
                                            "precision)"),
    block: int = typer.Option(100, "--block", "--block-size",
                              help="stored trajectories per block (one jit call and one commit per block)"),
    resume: bool = typer.Option(False, "--resume", help="continue (or extend to --n) an existing ensemble; the "
                                "settings of its recipe that are left out (chains, seed, therm, thin, precision, "
                                "observables, algorithm and its step size, steps, integrator, jitter, over-relaxation, "
                                "fermion determinant) take their stored values"),
    algorithm: Optional[str] = typer.Option(None, help="hmc (the default), or heatbath (pure SU(N) gauge: 1 "
                                            "Cabibbo-Marinari heat-bath sweep + --overrelax over-relaxation sweeps "
                                            "per stored 'trajectory')"),
    overrelax: Optional[int] = typer.Option(None, "--overrelax", "--n-overrelax",
                                            help=f"heatbath: over-relaxation sweeps per update (default "
                                                 f"{_R['overrelax']})"),
    devices: int = typer.Option(0, help="shard the chains over this many devices (jax.sharding; 0: one device). "
                                "--chains must be a multiple of it"),
) -> None:
    """Generate an HMC (or heat-bath) ensemble into a store (resumable: interrupt at any time, rerun with --resume)."""
    given = {"chains": chains, "seed": seed, "therm": therm, "thin": thin, "precision": precision,
             "observables": observables, "algorithm": algorithm, "fermion_det": fermion_det}

    def body() -> None:
        nonlocal chains, seed, therm, thin, precision, observables, algorithm, fermion_det
        import jax.numpy as jnp
        import numpy as np

        from .. import HMCConfig, make_theory
        from ..generate import low_acceptance_message, measurements_from_names
        from ..pipeline import generate_to_store
        from ..store import check_name, ensemble_name, open_store
        from ..theories import has_fermions

        dims = parse_shape(shape)
        if beta < 0:
            raise CLIError(f"--beta must be >= 0 (0: the strong-coupling limit), got {beta:g}")
        for label, val, lo in (("--n", n, 1), ("--chains", chains, 1), ("--therm", therm, 0), ("--thin", thin, 1),
                               ("--block", block, 1), ("--n-steps", n_steps, 1), ("--devices", devices, 0),
                               ("--overrelax", overrelax, 0)):
            if val is not None and val < lo:
                raise CLIError(f"{label} must be >= {lo}, got {val}")
        if precision not in (None, "double", "single"):
            raise CLIError(f"--precision must be 'double' or 'single', got {precision!r}")
        if algorithm not in (None, "hmc", "heatbath"):
            raise CLIError(f"--algorithm must be 'hmc' or 'heatbath', got {algorithm!r}")
        fermion = {k: v for k, v in (("mass", mass), ("kappa", kappa)) if v is not None}
        dynamical = has_fermions(theory)
        if fermion and not dynamical:
            raise CLIError(f"theory {theory!r} is pure gauge: --mass and --kappa belong to theories with dynamical "
                           "quarks (schwinger, su3-wilson)")
        if fermion_det not in (None, "auto", "exact", "pseudofermion"):
            raise CLIError(f"--fermion-det must be auto, exact or pseudofermion, got {fermion_det!r}")
        if dynamical and not fermion:
            raise CLIError(f"theory {theory!r} has dynamical fermions: give --mass (or --kappa)")
        try:
            th = make_theory(theory, dims, beta=beta, xi=xi, lam=lam, **fermion)
        except ValueError as exc:
            raise option_error(exc) from None
        ens = check_name(name or ensemble_name(th.theory_name, dims, th.params()))
        st = open_store(store, "a")  # created at the first write only
        if resume and ens not in st.ensembles() and ens not in st.incomplete():
            have = ", ".join(st.ensembles()) or "none"
            raise CLIError(f"--resume: no ensemble {ens!r} in {store} (ensembles: {have}); check --name and the "
                           "parameters, or leave out --resume to create it")
        # --resume: what the command leaves out is the stored recipe's; else the defaults
        recipe = {**_DEFAULT_RECIPE, **(_stored_recipe(st, ens) if resume else {})}
        chains, seed, therm, thin, precision, observables, algorithm, fermion_det = (
            recipe[k] if v is None else v for k, v in given.items())  # (the algorithm's own settings: below)
        try:
            if fermion:
                th = th.replace(det="exact" if fermion_det == "auto" else fermion_det)
            if fermion and th.det == "exact":  # dense algebra above this size takes hours per trajectory
                from ..observables.fermions import DENSE_MAX_DIM, check_dense

                try:
                    check_dense(th, "HMC with --fermion-det exact takes the determinant of",
                                remedy="use --fermion-det pseudofermion (or auto)")
                except ValueError:
                    if fermion_det != "auto":
                        raise
                    th = th.replace(det="pseudofermion")
                    console.print(f"fermion determinant: pseudofermion (V*Ns*Nc > {DENSE_MAX_DIM}: too large for "
                                  "the exact dense determinant)")
            if algorithm == "hmc":
                if overrelax is not None:
                    raise CLIError("--overrelax sets the over-relaxation sweeps of --algorithm heatbath; HMC has none "
                                   "(leave it out, or add --algorithm heatbath)")
                if jitter is not None and not 0.0 <= jitter < 1.0:
                    raise CLIError(f"--jitter must be in [0, 1) (relative spread of the step size), got {jitter}")
                cfg: Any = HMCConfig(step_size=recipe["step_size"] if step_size is None else step_size,
                                     n_steps=recipe["n_steps"] if n_steps is None else n_steps,
                                     integrator=integrator or recipe["integrator"], jitter=jitter)
            else:
                from ..heatbath import HeatbathConfig

                hmc_only = [f for f, v in (("--step-size", step_size), ("--n-steps", n_steps),
                                           ("--integrator", integrator), ("--jitter", jitter)) if v is not None]
                if hmc_only:
                    raise CLIError(f"{', '.join(hmc_only)}: HMC molecular-dynamics settings; the heat bath has no "
                                   "trajectories (leave them out, or use --algorithm hmc)")
                cfg = HeatbathConfig(n_heatbath=1, n_overrelax=recipe["overrelax"] if overrelax is None else overrelax)
        except ValueError as exc:
            raise option_error(exc) from None
        mesh = None
        if devices:
            from ..sharding import chain_mesh

            if chains % devices:
                raise CLIError(f"--chains {chains} is not a multiple of --devices {devices}")
            mesh = chain_mesh(devices)
        real = jnp.float64 if precision == "double" else jnp.float32
        dtype = real if th.group.is_abelian else (jnp.complex128 if precision == "double" else jnp.complex64)
        obs = [o.strip() for o in observables.split(",") if o.strip()]
        measurements_from_names(th.group, obs, th.ndim, shape=dims)  # validate before touching the store
        if start not in ("hot", "cold"):
            raise CLIError(f"--start must be 'hot' or 'cold', got {start!r}")
        if algorithm == "heatbath":
            from ..heatbath import _check_theory

            _check_theory(th)
        label, unit = ("heat bath", "upd/s") if algorithm == "heatbath" else ("HMC", "traj/s")
        with _stage(f"{label} {ens}", unit) as lp:

            def progress(done: int, tot: int, stats: dict) -> None:
                pl = stats["plaquette"]
                lp(done, tot, f"acc {stats['acceptance']:.2f}" + ("" if np.isnan(pl) else f"  plaq {pl:.5f}"))

            summary = generate_to_store(st, ens, th, cfg, n_traj=n, n_chains=chains, seed=seed, n_therm=therm, thin=thin,
                                        block_size=block, start=start, dtype=dtype, observables=obs, resume=resume,
                                        progress=progress, mesh=mesh)
        if summary.n_new == 0:  # --resume of a finished run (e.g. a requeued job): not an error
            console.print(f"[green]up to date[/] {summary.name}: {summary.committed} trajectories x {chains} chains "
                          f"stored (--n {n}); nothing to do (raise --n to extend it), store {store}")
            return
        acc = f"acceptance {summary.acceptance:.3f}, " if algorithm == "hmc" else ""  # the heat bath always accepts
        console.print(f"[green]done[/] {summary.name}: +{summary.n_new} -> {summary.committed} trajectories x {chains} "
                      f"chains, {acc}<plaquette> {summary.plaquette:.5f}, "
                      f"{summary.seconds:.1f} s, store {store}")
        msg = low_acceptance_message(summary.acceptance, "--step-size", "--n-steps") if algorithm == "hmc" else None
        if msg is not None:
            console.print(f"[yellow]warning: {msg}[/]")

    _run(body, interrupted="everything committed so far is safe; rerun the same command with --resume to continue")


def _stored_recipe(st: Any, name: str) -> dict[str, Any]:
    """The `corrflow generate` options of ensemble ``name``'s stored recipe (:data:`_DEFAULT_RECIPE`'s keys; only
    those it records), for ``--resume`` without them; ``{}`` when it has none (absent, or an interrupted creation)."""
    from ..store import StoreError

    try:
        spec = st.spec(name)
    except (StoreError, KeyError, ValueError):
        return {}
    h = dict(spec.hmc)
    out: dict[str, Any] = {"chains": int(spec.n_chains), "seed": int(spec.seed), "therm": int(spec.n_therm),
                           "thin": int(spec.thin),
                           "precision": "single" if spec.dtype in ("float32", "complex64") else "double",
                           "observables": ",".join(m for m in spec.measurements if m != "plaquette"),
                           "algorithm": h.get("algorithm", "hmc")}
    for key, field in (("step_size", "step_size"), ("n_steps", "n_steps"), ("integrator", "integrator"),
                       ("overrelax", "n_overrelax"), ("fermion_det", "fermion_det")):
        if field in h:
            out[key] = h[field]
    return out


# ----------------------------------------------------------------------------------------
# info / verify
# ----------------------------------------------------------------------------------------


@app.command(epilog="""
**Examples**

    corrflow info data/runs.zarr

    corrflow info data/runs.zarr u1_16x16_beta2
""")
def info(
    store: Path = typer.Argument(..., help="zarr store"),
    ensemble: Optional[str] = typer.Argument(None, help="show one ensemble in detail"),
) -> None:
    """List the ensembles of a store: parameters, sizes, trajectories, pairing of flowed ensembles."""

    def body() -> None:
        from ..pipeline.ensembles import recorded_cost_per_configuration
        from ..store import open_store

        st = open_store(store, "r")
        names = [ensemble] if ensemble else st.ensembles()
        broken = {} if ensemble else st.incomplete()
        if not names and not broken:
            console.print(f"{store}: empty corrflow store")
            return
        notes, cells = [], []
        for nm in names:
            d = st.info(nm)
            params = _parameters(d)
            status, how = _status(d)
            cells.append((nm, _kind(d), f"{d['theory']} {'x'.join(map(str, d['shape']))}", params,
                          f"{d['n_chains']} x {d['committed']}", f"{d['links_bytes'] / 2**20:.1f} MiB",
                          status if how is None else f"[yellow]{status}[/]"))
            of = {k: "" if v == d["committed"] else f" of {d['committed']}" for k, v in d["observables"].items()}
            made = {k: "".join(f", {s} {format(x, 'g') if isinstance(x, (int, float)) else x}"
                               for s, x in d["observable_settings"].get(k, {}).items()) for k in d["observables"]}
            obs = ", ".join(list(d["measurements"])
                            + [f"{k} ({v}{of[k]} measured{made[k]})" for k, v in d["observables"].items()])
            notes.append(f"[bold]{nm}[/]: observables {obs}")
            if how is not None:
                notes.append(f"  [yellow]{how}[/]")
            if d["kind"] == "flowed":
                notes.append(f"  paired with {d['flow'].get('source')} via flow {d['flow'].get('flow_id', '?')}")
        for nm, why in broken.items():
            damaged = why.startswith("damaged")
            cells.append((nm, "", "", "", "", "", "[red]DAMAGED[/]" if damaged else "[yellow]INCOMPLETE[/]"))
            advice = ("restore it from a backup, or delete its directory to create it again" if damaged else
                      "rerun the command that creates it (the remains are removed first)")
            notes.append(f"[bold]{nm}[/]: {escape(why)}; {advice}")
        console.print(results_table(f"corrflow store {store}", ("ensemble", "kind", "lattice", "parameters",
                                                                "chains x traj", "size", "status"), cells,
                                    numbers=("size",)))
        for line in notes:
            console.print(line)
        if ensemble:
            d = st.info(ensemble)
            if d["kind"] == "flowed":  # (its trajectory bookkeeping is its source's)
                console.print(f"{_generation(d)}; dtype {d['dtype']}")
            else:
                console.print(f"{_generation(d)}; therm {d['n_therm']}, thin {d['thin']}, seed {d['seed']}, dtype "
                              f"{d['dtype']}, phase {d['phase']}, next trajectory {d['next_traj']}")
            console.print(f"created {d['created']} with {d['versions']}")
            n_cfg = d["committed"] * d["n_chains"]
            if d["cost_s"] is not None and n_cfg and d["kind"] == "flowed":
                console.print(f"flow application cost {d['cost_s'] / n_cfg:.3g} s per configuration "
                              f"({d['cost_s']:.1f} s for {n_cfg}: flow, weights and measurements; steady state, "
                              "compilation excluded)")
            elif d["cost_s"] is not None and n_cfg:
                charged = recorded_cost_per_configuration(d)
                console.print(f"generation cost {d['cost_s'] / n_cfg:.3g} s per configuration ({d['cost_s']:.1f} s for "
                              f"{n_cfg}; steady state, compilation excluded); {charged:.3g} s with the thermalisation "
                              "at the same rate, as the cost ledger and `corrflow derivative` charge it")
            else:
                console.print(("flow application" if d["kind"] == "flowed" else "generation") + " cost not recorded")

    _run(body, interrupted=INTERRUPTED_READER)


def _parameters(d: dict[str, Any]) -> str:
    """The table's parameters column, ``beta=5.8, mass=0.1, kappa=0.161290, ...``: with dynamical quarks the hopping
    parameter next to the bare mass (``kappa = 1 / (2 m + 2 d)``), the number a lattice QCD user quotes."""
    from ..theories import has_fermions, kappa_from_mass

    items = [f"{k}={v:g}" for k, v in d["params"].items()]
    if "mass" in d["params"] and has_fermions(d["theory"]):
        kappa = kappa_from_mass(float(d["params"]["mass"]), len(d["shape"]))
        items.insert(list(d["params"]).index("mass") + 1, f"kappa={kappa:.6g}")
    return ", ".join(items)


def _kind(d: dict[str, Any]) -> str:
    """The table's kind column: how the configurations were made (``hmc`` ensembles name their algorithm)."""
    return str(d["hmc"].get("algorithm", "hmc")) if d["kind"] == "hmc" else str(d["kind"])


def _generation(d: dict[str, Any]) -> str:
    """One line on how the configurations were made, from the stored settings ``d["hmc"]``."""
    h = d["hmc"]
    if d["kind"] == "imported":
        return f"imported from {len(d['flow'].get('source_files', []))} ILDG files"
    if d["kind"] == "flowed":
        f = d["flow"]
        how = "the identity (direct reweighting)" if f.get("flow_id") == "identity" else f"flow {f.get('flow_id', '?')}"
        weights = (f"; weights with a stochastic determinant ratio ({f['det_noise']} noise vectors per configuration)"
                   if f.get("det_noise") else "")
        return f"flowed from {f.get('source')} by {how}, configuration by configuration{weights}"
    if h.get("algorithm") == "heatbath":
        return (f"heat bath: {h.get('n_heatbath', 1)} Cabibbo-Marinari sweep(s) + {h.get('n_overrelax', 0)} "
                "over-relaxation sweep(s) per update")
    if "n_steps" not in h:
        return f"HMC: {h}"
    tau, j = h["n_steps"] * h["step_size"], float(h.get("jitter", 0.0))
    line = (f"HMC: {h.get('integrator', 'leapfrog')} integrator, {h['n_steps']} steps of {h['step_size']:g} "
            + (f"(trajectory length {tau:g})" if not j else
               f"+- {100 * j:g}% (randomised trajectory length {tau * (1 - j):g} .. {tau * (1 + j):g})"))
    if "fermion_det" in h:
        line += f", fermion determinant {h['fermion_det']}"
        if h["fermion_det"] != "exact":
            line += f" (CG tolerance {h.get('cg_tol', '?')}{', even-odd' if h.get('even_odd') else ''})"
    return line


def _status(d: dict[str, Any]) -> tuple[str, str | None]:
    """(short status, note on how to continue an interrupted run or import, or None)."""
    if d["complete"]:
        return "complete", None
    if d["target"] is None:
        return "empty", None
    if d["kind"] == "imported":
        return (f"INCOMPLETE {d['committed']}/{d['target']}", f"{d['committed']} of {d['target']} files imported; "
                "rerun the same import-ildg command to continue")
    return (f"INCOMPLETE {d['committed']}/{d['target']}", f"interrupted at {d['committed']} of {d['target']} "
            "trajectories per chain; rerun the same command" + (" with --resume" if d["kind"] == "hmc" else "")
            + " to continue")


@app.command(epilog="""
**Examples**

    corrflow verify data/runs.zarr   # every committed chunk checksummed

    # quick look: 16 random links chunks
    corrflow verify data/runs.zarr u1_16x16_beta2 --sample 16 --configs 32
""")
def verify(
    store: Path = typer.Argument(..., help="zarr store"),
    ensemble: Optional[str] = typer.Argument(None, help="one ensemble (default: all)"),
    sample: Optional[int] = typer.Option(None, help="checksum only this many random links chunks (a quick look; "
                                         "default: every chunk). Small arrays are always checked in full"),
    configs: int = typer.Option(8, help="configurations whose plaquette (and SU(N) unitarity) is recomputed and "
                                "compared with the stored values (-1: all, 0: none)"),
) -> None:
    """Check integrity: every committed chunk present, of the right size and with an intact CRC32C checksum; a
    sample of configurations recomputed.  Each problem names ensemble, array, chain and trajectories; exit
    status 1 if any."""

    def body() -> None:
        from ..checks import gauge_config_check
        from ..store import open_store

        if sample is not None and sample < 0:
            raise CLIError(f"--sample must be >= 0, got {sample}")
        if configs < -1:
            raise CLIError(f"--configs must be a count >= 0, or -1 for all, got {configs}")
        st = open_store(store, "r")
        bad = 0
        names = [ensemble] if ensemble else st.ensembles()
        for nm in names:
            rep = st.verify(nm, sample=sample, check=gauge_config_check if configs else None, n_check=configs)
            console.print(escape(str(rep)), style="green" if rep.ok else "red", highlight=False, soft_wrap=True)
            bad += not rep.ok
        if not ensemble:
            for nm, why in st.incomplete().items():
                damaged = why.startswith("damaged")
                console.print(escape(f"{nm}: {'DAMAGED' if damaged else 'INCOMPLETE'}: {why}"),
                              style="red" if damaged else "yellow", highlight=False, soft_wrap=True)
                bad += damaged
        if bad:
            raise typer.Exit(1)

    _run(body, interrupted=INTERRUPTED_READER)


# ----------------------------------------------------------------------------------------
# measure
# ----------------------------------------------------------------------------------------


@app.command(epilog="""
**Examples**

    corrflow measure data/runs.zarr u1_16x16_beta2 wilson_2x2 wilson_3x3 \\
        topological_charge

    corrflow measure data/runs.zarr su3_4x4x4x4_beta5.7 polyakov_loop

    corrflow measure data/runs.zarr su3_8x8x8x8_beta6 wilson_flow \\
        --flow-t-max 2.0   # E(t), Q(t) for t0, w0

    corrflow measure data/runs.zarr su3_8x8x8x8_beta6 wilson_flow \\
        --flow-t-max 3.0 --replace   # a longer flow
""")
def measure(
    store: Path = typer.Argument(..., help="zarr store"),
    ensemble: str = typer.Argument(..., help="ensemble name (see `corrflow info`)"),
    observables: List[str] = typer.Argument(..., help="plaquette, wilson_RxT (e.g. wilson_2x2), topological_charge "
                                            "(2D U(1)), polyakov_loop, wilson_flow (SU(N): E(t), clover Q(t))"),
    batch: int = typer.Option(64, help="configurations per jitted evaluation"),
    flow_t_max: Optional[float] = typer.Option(None, help="wilson_flow: last flow time (default: sqrt(8t) = L_min/2)"),
    flow_eps: float = typer.Option(0.02, help="wilson_flow: integrator step (Lüscher RK3)"),
    flow_every: float = typer.Option(0.1, help="wilson_flow: flow-time spacing of the measurements"),
    replace: bool = typer.Option(False, "--replace", help="discard the stored values of these observables and "
                                 "measure them anew (e.g. wilson_flow on a longer flow-time grid)"),
) -> None:
    """Compute observables on the stored configurations and write them into the store (resumable)."""

    def body() -> None:
        from ..pipeline import WilsonFlowGrid, measure_stored
        from ..store import open_store

        if batch < 1:
            raise CLIError(f"--batch must be >= 1, got {batch}")
        open_store(store, "r")  # "no store at ...": measure adds to a store, it does not create one
        st = open_store(store, "a")
        flow = WilsonFlowGrid(flow_t_max, flow_eps, flow_every)
        with _stage(f"measure {ensemble}") as lp:
            res = measure_stored(st, ensemble, observables, batch=batch, progress=lambda d, t: lp(d, t),
                                 flow=flow, replace=replace)
        for o in res.skipped:
            console.print(f"{o}: recorded during generation, nothing to do"
                          + (" (--replace applies to observables added by measure; generation's own are part of "
                             "the chain's record)" if replace else ""))
        msg = ", ".join(f"{k} +{v}" for k, v in res.measured.items()) or "nothing new to measure"
        console.print(f"[green]done[/] {ensemble}: {msg}")

    _run(body, interrupted="the measurements committed so far are kept; rerun the same command "
         + ("without --replace (with it the measurement starts over) " if replace else "") + "to continue")
