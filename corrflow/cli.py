"""The ``corrflow`` command line (typer + rich).

Every command reads and writes one store, prints progress for long work and a one-line summary, and
exits with status 2 and a one-line explanation (no traceback) on bad input.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(
    help="corrflow: correlated ensembles for lattice field theory. Each command works on one zarr store.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
)
console = Console()
err_console = Console(stderr=True)


class CLIError(Exception):
    """Bad input detected by the CLI itself."""


def parse_shape(text: str) -> tuple[int, ...]:
    """``"16,16"`` or ``"16x16"`` -> ``(16, 16)``; clear error otherwise."""
    parts = [p.strip() for p in re.split(r"[,x]", text.strip()) if p.strip() != ""]
    if len(parts) < 2 or not all(re.fullmatch(r"\d+", p) for p in parts) or any(int(p) < 1 for p in parts):
        raise CLIError(f"malformed --shape {text!r}: expected at least two comma-separated positive integers, e.g. 16,16 or 8,8,8,8")
    return tuple(int(p) for p in parts)


def _run(fn: Callable[[], Any]) -> Any:
    """Run a command body with the pipeline's one error runner: expected errors become a message and exit status 2,
    Ctrl-C exits 130."""
    from .ildg import IldgFormatError
    from .pipeline.cli import run_cli

    return run_cli(fn, err_console, (CLIError, IldgFormatError),
                   interrupted="everything committed so far is safe; rerun the same command with --resume to continue")


def _stage(description: str, unit: str = "") -> Any:
    """A persistent progress bar for one command step (the pipeline's :class:`~corrflow.pipeline.Progress`):
    ``with _stage("HMC x", "traj/s") as tick: tick(done, total, extra)``."""
    from .pipeline.progress import Progress

    return Progress(console, transient=False).stage(description, unit)


# ----------------------------------------------------------------------------------------
# generate
# ----------------------------------------------------------------------------------------


@app.command(epilog="""
**Examples**

    corrflow generate u1 --beta 2.0 --shape 16,16 --n 2000 --chains 4 --store data/runs.zarr

    corrflow generate su3 --beta 5.7 --shape 4,4,4,4 --n 500 --step-size 0.0833 --n-steps 12 --store runs.zarr

    corrflow generate u1 --beta 2.0 --shape 16,16 --n 4000 --chains 4 --store data/runs.zarr --resume   # continue / extend

    corrflow generate schwinger --beta 2.0 --mass 0.1 --shape 16,8 --n 1000 --store data/schwinger.zarr   # N_f=2 Wilson

    corrflow generate schwinger --beta 2.0 --kappa 0.24 --shape 32,32 --fermion-det pseudofermion --n 500 --store s.zarr
""")
def generate(
    theory: str = typer.Argument(..., help="u1, su2, su3 or suN (Wilson gauge action; dimension from --shape); "
                                 "schwinger (U(1) + N_f=2 Wilson fermions) or su3-wilson etc."),
    beta: float = typer.Option(..., help="gauge coupling beta"),
    shape: str = typer.Option(..., help="lattice extents, time first, e.g. 16,16 or 8,8,8,8"),
    n: int = typer.Option(..., "--n", help="stored trajectories per chain (total, after thermalisation and thinning)"),
    store: Path = typer.Option(..., help="zarr store (directory; created if absent)"),
    chains: int = typer.Option(1, help="independent chains, run in parallel (vmap)"),
    xi: float = typer.Option(1.0, help="bare anisotropy (temporal coupling beta*xi, spatial beta/xi)"),
    lam: float = typer.Option(0.0, help="Feynman–Hellmann source coefficient (lam * (spatial - temporal plaquettes))"),
    mass: Optional[float] = typer.Option(None, help="bare quark mass m (fermion theories; kappa = 1/(2m + 2d))"),
    kappa: Optional[float] = typer.Option(None, help="hopping parameter instead of --mass"),
    fermion_det: str = typer.Option("exact", help="fermion determinant in HMC: exact (dense, small lattices) or "
                                    "pseudofermion (CG, even-odd preconditioned)"),
    seed: int = typer.Option(0, help="random seed; trajectory t of chain c uses fold_in(fold_in(key(seed), c), t)"),
    therm: int = typer.Option(100, help="thermalisation trajectories (not stored)"),
    thin: int = typer.Option(1, help="store every thin-th trajectory"),
    step_size: float = typer.Option(0.2, help="molecular-dynamics step size"),
    n_steps: int = typer.Option(5, help="molecular-dynamics steps per trajectory"),
    integrator: str = typer.Option("omelyan", help="omelyan or leapfrog"),
    observables: str = typer.Option("", help="extra observables measured on the fly, comma-separated: wilson_RxT, topological_charge, polyakov_loop"),
    name: Optional[str] = typer.Option(None, help="ensemble name (default from theory and parameters)"),
    start: str = typer.Option("hot", help="hot (Haar random) or cold (unit links)"),
    precision: str = typer.Option("double", help="double or single (links stored in that precision)"),
    block: int = typer.Option(100, help="stored trajectories per block (one jit call and one commit per block)"),
    resume: bool = typer.Option(False, "--resume", help="continue (or extend to --n) an existing ensemble"),
    algorithm: str = typer.Option("hmc", help="hmc, or heatbath (pure SU(N) gauge: 1 Cabibbo-Marinari heat-bath "
                                  "sweep + --overrelax over-relaxation sweeps per stored 'trajectory')"),
    overrelax: int = typer.Option(4, help="heatbath: over-relaxation sweeps per update"),
    devices: int = typer.Option(0, help="shard the chains over this many devices (jax.sharding; 0: one device). "
                                "--chains must be a multiple of it"),
) -> None:
    """Generate an HMC (or heat-bath) ensemble into a store (resumable: interrupt at any time, rerun with --resume)."""

    def body() -> None:
        import jax.numpy as jnp
        import numpy as np

        from . import HMCConfig, make_theory
        from .generate import measurements_from_names
        from .pipeline import generate_to_store
        from .store import check_name, ensemble_name, open_store

        dims = parse_shape(shape)
        for label, val, lo in (("--n", n, 1), ("--chains", chains, 1), ("--therm", therm, 0), ("--thin", thin, 1),
                               ("--block", block, 1), ("--n-steps", n_steps, 1)):
            if val < lo:
                raise CLIError(f"{label} must be >= {lo}, got {val}")
        if precision not in ("double", "single"):
            raise CLIError(f"--precision must be 'double' or 'single', got {precision!r}")
        fermion = {k: v for k, v in (("mass", mass), ("kappa", kappa)) if v is not None}
        if fermion:
            fermion["det"] = fermion_det
        elif theory.strip().lower() == "schwinger" or theory.strip().lower().endswith("-wilson"):
            raise CLIError(f"theory {theory!r} has dynamical fermions: give --mass (or --kappa)")
        th = make_theory(theory, dims, beta=beta, xi=xi, lam=lam, **fermion)
        if algorithm == "hmc":
            cfg: Any = HMCConfig(step_size=step_size, n_steps=n_steps, integrator=integrator)
        elif algorithm == "heatbath":
            from .heatbath import HeatbathConfig

            cfg = HeatbathConfig(n_heatbath=1, n_overrelax=overrelax)
        else:
            raise CLIError(f"--algorithm must be 'hmc' or 'heatbath', got {algorithm!r}")
        mesh = None
        if devices:
            from .sharding import chain_mesh

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
            from .heatbath import _check_theory

            _check_theory(th)
        ens = check_name(name or ensemble_name(th.theory_name, dims, th.params()))
        st = open_store(store, "a")  # created at the first write only
        label, unit = ("heat bath", "upd/s") if algorithm == "heatbath" else ("HMC", "traj/s")
        with _stage(f"{label} {ens}", unit) as lp:

            def progress(done: int, tot: int, stats: dict) -> None:
                pl = stats["plaquette"]
                lp(done, tot, f"acc {stats['acceptance']:.2f}" + ("" if np.isnan(pl) else f"  plaq {pl:.5f}"))

            summary = generate_to_store(st, ens, th, cfg, n_traj=n, n_chains=chains, seed=seed, n_therm=therm, thin=thin,
                                        block_size=block, start=start, dtype=dtype, observables=obs, resume=resume,
                                        progress=progress, mesh=mesh)
        console.print(f"[green]done[/] {summary.name}: +{summary.n_new} -> {summary.committed} trajectories x {chains} "
                      f"chains, acceptance {summary.acceptance:.3f}, <plaquette> {summary.plaquette:.5f}, "
                      f"{summary.seconds:.1f} s, store {store}")

    _run(body)


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
        from .store import open_store

        st = open_store(store, "r")
        names = [ensemble] if ensemble else st.ensembles()
        broken = {} if ensemble else st.incomplete()
        if not names and not broken:
            console.print(f"{store}: empty corrflow store")
            return
        table = Table(title=f"corrflow store {store}")
        for col in ("ensemble", "kind", "lattice", "parameters", "chains x traj", "size", "status"):
            table.add_column(col)
        notes = []
        for nm in names:
            d = st.info(nm)
            params = ", ".join(f"{k}={v:g}" for k, v in d["params"].items())
            status, how = _status(d)
            table.add_row(nm, d["kind"], f"{d['theory']} {'x'.join(map(str, d['shape']))}", params,
                          f"{d['n_chains']} x {d['committed']}", f"{d['links_bytes'] / 2**20:.1f} MiB",
                          status if how is None else f"[yellow]{status}[/]")
            obs = ", ".join(list(d["measurements"]) + [f"{k} ({v} measured)" for k, v in d["observables"].items()])
            notes.append(f"[bold]{nm}[/]: observables {obs}")
            if how is not None:
                notes.append(f"  [yellow]{how}[/]")
            if d["kind"] == "flowed":
                notes.append(f"  paired with {d['flow'].get('source')} via flow {d['flow'].get('flow_id', '?')}")
        for nm, why in broken.items():
            damaged = why.startswith("damaged")
            table.add_row(nm, "", "", "", "", "", "[red]DAMAGED[/]" if damaged else "[yellow]INCOMPLETE[/]")
            advice = ("restore it from a backup, or delete its directory to create it again" if damaged else
                      "rerun the command that creates it (the remains are removed first)")
            notes.append(f"[bold]{nm}[/]: {escape(why)}; {advice}")
        console.print(table)
        for line in notes:
            console.print(line)
        if ensemble:
            d = st.info(ensemble)
            console.print(f"HMC: {d['hmc']}, therm {d['n_therm']}, thin {d['thin']}, seed {d['seed']}, dtype {d['dtype']}, "
                          f"phase {d['phase']}, next trajectory {d['next_traj']}")
            console.print(f"created {d['created']} with {d['versions']}")

    _run(body)


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

    corrflow verify data/runs.zarr                       # every committed chunk checksummed

    corrflow verify data/runs.zarr u1_16x16_beta2 --sample 16 --configs 32   # quick look: 16 random links chunks
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
        from .checks import gauge_config_check
        from .store import open_store

        if sample is not None and sample < 0:
            raise CLIError(f"--sample must be >= 0, got {sample}")
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

    _run(body)


@app.command(epilog="""
**Example**

    corrflow summary data/runs.zarr u1_16x16_beta2
""")
def summary(
    store: Path = typer.Argument(..., help="zarr store"),
    ensemble: str = typer.Argument(..., help="ensemble name"),
) -> None:
    """Observables with autocorrelation-aware errors (Gamma method), and exact values with pulls where known."""

    def body() -> None:
        from .store import open_store
        from .summary import ensemble_summary

        st = open_store(store, "r")
        rows = ensemble_summary(st, ensemble)
        info_ = st.info(ensemble)
        table = Table(title=f"{ensemble}: {info_['n_chains']} chains x {info_['committed']} trajectories")
        for col in ("observable", "estimate", "tau_int", "exact (torus)", "pull"):
            table.add_column(col, justify="right")
        worst = 0.0
        for r in rows:
            pull = r.pull
            if pull is not None:
                worst = max(worst, abs(pull))
            ptxt = "" if pull is None else f"[{'green' if abs(pull) < 3 else 'red'}]{pull:+.2f}[/]"
            table.add_row(r.observable, str(r.stats), f"{r.stats.tau_int:.2f}",
                          "" if r.exact is None else f"{r.exact:.6f}", ptxt)
        console.print(table)
        n_exact = sum(r.exact is not None for r in rows)
        if n_exact:
            console.print(f"{n_exact} observables compared with exact values; largest |pull| = {worst:.2f}")

    _run(body)


# ----------------------------------------------------------------------------------------
# measure
# ----------------------------------------------------------------------------------------


@app.command(epilog="""
**Examples**

    corrflow measure data/runs.zarr u1_16x16_beta2 wilson_2x2 wilson_3x3 topological_charge

    corrflow measure data/runs.zarr su3_4x4x4x4_beta5.7 polyakov_loop

    corrflow measure data/runs.zarr su3_8x8x8x8_beta6 wilson_flow --flow-t-max 2.0   # E(t), Q(t) for t0, w0
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
) -> None:
    """Compute observables on the stored configurations and write them into the store (resumable)."""

    def body() -> None:
        from .pipeline import WilsonFlowGrid, measure_stored
        from .store import open_store

        if batch < 1:
            raise CLIError(f"--batch must be >= 1, got {batch}")
        st = open_store(store, "a")
        flow = WilsonFlowGrid(flow_t_max, flow_eps, flow_every)
        with _stage(f"measure {ensemble}") as lp:
            res = measure_stored(st, ensemble, observables, batch=batch, progress=lambda d, t: lp(d, t),
                                 flow=flow)
        for o in res.skipped:
            console.print(f"{o}: recorded during generation, nothing to do")
        msg = ", ".join(f"{k} +{v}" for k, v in res.measured.items()) or "nothing new to measure"
        console.print(f"[green]done[/] {ensemble}: {msg}")

    _run(body)


@app.command(epilog="""
**Example**

    corrflow measure data/runs.zarr su3_8x8x8x8_beta6 wilson_flow && corrflow scales data/runs.zarr su3_8x8x8x8_beta6
""")
def scales(
    store: Path = typer.Argument(..., help="zarr store"),
    ensemble: str = typer.Argument(..., help="ensemble measured with `corrflow measure ... wilson_flow`"),
    definition: str = typer.Option("clover", help="E(t) discretisation: clover or plaquette"),
    t0_ref: float = typer.Option(0.3, help="t0: t^2 E(t0) = t0-ref (lower it on small/coarse lattices)"),
    w0_ref: float = typer.Option(0.3, help="w0: t d/dt t^2 E = w0-ref at t = w0^2"),
) -> None:
    """Gradient-flow scales t0/a^2, w0/a, sqrt(t0)/w0 (and chi_top at t0) with Gamma-method errors."""

    def body() -> None:
        from .scales import describe, scales_from_store
        from .store import open_store

        res = scales_from_store(open_store(store, "r"), ensemble, definition=definition, t0_ref=t0_ref,
                                w0_ref=w0_ref)
        console.print(f"[bold]{ensemble}[/] ({definition} E, t0-ref {t0_ref}, w0-ref {w0_ref})")
        for line in describe(res):
            console.print(line)

    _run(body)


# ----------------------------------------------------------------------------------------
# ILDG interop
# ----------------------------------------------------------------------------------------


@app.command("export-ildg", epilog="""
**Example**

    corrflow export-ildg runs.zarr su3_8x8x8x8_beta6 --out configs/ --chain 0 --every 10
""")
def export_ildg(
    store: Path = typer.Argument(..., help="zarr store"),
    ensemble: str = typer.Argument(..., help="a 4D SU(3) ensemble"),
    out: Path = typer.Option(..., help="output directory (created)"),
    chain: int = typer.Option(0, help="chain to export"),
    every: int = typer.Option(1, help="export every k-th stored configuration"),
    single: bool = typer.Option(False, "--single", help="write single precision (default double)"),
) -> None:
    """Write stored 4D SU(3) configurations as ILDG (LIME) files, one per configuration."""

    def body() -> None:
        from .ildg import write_ildg
        from .store import open_store

        st = open_store(store, "r")
        spec = st.spec(ensemble)
        if spec.group != "su3" or len(spec.shape) != 4:
            raise CLIError(f"ILDG export needs a 4D SU(3) ensemble; {ensemble!r} is {spec.group} on {spec.shape}")
        if not 0 <= chain < spec.n_chains:
            raise CLIError(f"--chain must be in 0..{spec.n_chains - 1}, got {chain}")
        if every < 1:
            raise CLIError(f"--every must be >= 1, got {every}")
        ds = st.open_ensemble(ensemble)
        out.mkdir(parents=True, exist_ok=True)
        positions = list(range(0, ds.sizes["traj"], every))
        for pos in positions:
            traj = int(ds.traj.values[pos])
            u = st.load_configs(ensemble, chain, [pos])[0]
            write_ildg(out / f"{ensemble}_c{chain}_t{traj:06d}.lime", u, precision=32 if single else 64,
                       lfn=f"corrflow/{ensemble}/chain{chain}/traj{traj}")
        console.print(f"[green]done[/] wrote {len(positions)} ILDG files to {out}")

    _run(body)


ILDG_SU3_TOL = 1e-5  # max |U U^dag - 1| and |det U - 1| accepted on import (float32 files round to ~1e-7)


def _check_su3(path: Path, u: Any, meta: dict[str, Any]) -> None:
    """Refuse ILDG data that are not SU(3) matrices (the flows and actions assume exact group elements)."""
    import numpy as np

    viol = float(meta.get("unitarity_violation", 0.0))
    if not np.isfinite(viol) or viol > ILDG_SU3_TOL:
        raise CLIError(f"{path}: the links are not SU(3) matrices: max |U U^dag - 1| = {viol:.2e} exceeds "
                       f"{ILDG_SU3_TOL:g} (not a gauge configuration, or stored in another convention)")
    det_dev = max((float(np.max(np.abs(np.linalg.det(u[t]) - 1.0))) for t in range(u.shape[0])), default=0.0)
    if not det_dev <= ILDG_SU3_TOL:
        raise CLIError(f"{path}: the links are unitary but not special unitary: max |det U - 1| = {det_dev:.2e} "
                       f"exceeds {ILDG_SU3_TOL:g} (U(3) rather than SU(3) data?)")


@app.command("import-ildg", epilog="""
**Example**

    corrflow import-ildg runs.zarr cfg_*.lime --name imported_b6 --beta 6.0
""")
def import_ildg(
    store: Path = typer.Argument(..., help="zarr store (created if absent)"),
    files: List[Path] = typer.Argument(..., help="ILDG files, in Monte Carlo order"),
    name: str = typer.Option(..., help="name of the new ensemble"),
    beta: float = typer.Option(..., help="beta the configurations were generated at"),
    xi: float = typer.Option(1.0, help="anisotropy"),
    lam: float = typer.Option(0.0, help="Feynman–Hellmann source"),
) -> None:
    """Import 4D SU(3) ILDG configurations as a one-chain ensemble (usable as a base ensemble for `train` and
    `correlate`).  Every file is checked before anything is written: one lattice size, SU(3) links.  Resumable
    file by file: rerun the same command after an interruption; until every file is in, `info` lists the
    ensemble as incomplete."""

    def body() -> None:
        import jax.numpy as jnp
        import numpy as np

        from . import make_theory
        from . import observables as obs_mod
        from .ildg import read_ildg
        from .store import EnsembleSpec, StoreError, check_name, open_store

        if not files:
            raise CLIError("no ILDG files given")
        check_name(name)
        for f in files:
            if not f.exists():
                raise CLIError(f"{f}: no such file")
            if not f.is_file():
                raise CLIError(f"{f} is {'a directory' if f.is_dir() else 'not a regular file'}; give ILDG files")
        # pass 1: read and validate every file before anything is written
        shape = None
        with _stage("check ILDG files") as lp:
            for i, f in enumerate(files):
                u, meta = read_ildg(f)
                if shape is None:
                    shape = u.shape[:4]
                elif u.shape[:4] != shape:
                    raise CLIError(f"{f}: lattice {u.shape[:4]} differs from the first file's {shape} "
                                   f"({files[0]}); an ensemble has one lattice size (t, x, y, z)")
                _check_su3(f, u, meta)
                lp(i + 1, len(files))
        th = make_theory("su3", shape, beta=beta, xi=xi, lam=lam)
        spec = EnsembleSpec(theory="su3", group="su3", shape=shape, params=th.params(), n_chains=1, seed=-1,
                            dtype="complex128", hmc={}, n_therm=0, thin=1, measurements=("plaquette",), kind="imported",
                            flow={"source_files": [str(f) for f in files]})
        st = open_store(store, "a")  # created at the first write only

        def refuse_existing(stored: EnsembleSpec, committed: int) -> None:
            diffs = stored.differences(spec)
            if diffs:
                raise StoreError(f"ensemble {name!r} exists with different settings ({'; '.join(diffs)[:300]}); "
                                 "an interrupted import continues only with the same files and parameters. Choose "
                                 "another --name")
            if committed >= len(files):
                raise StoreError(f"ensemble {name!r} already holds all {len(files)} imported configurations; "
                                 "nothing to do")

        if name in st:
            refuse_existing(st.spec(name), int(st.commit(name)["committed"]))
        # pass 2: import, one commit per file (created atomically under the writer lock; resumed if interrupted)
        with st.writer(name, create=spec) as w, _stage(f"import {name}") as lp:
            if not w.created:
                refuse_existing(w.spec, w.committed)
            w.set_target(len(files))
            for i in range(w.committed, len(files)):
                u, _ = read_ildg(files[i], dtype=np.complex128)
                uj = jnp.asarray(u)
                per = {"plaquette": np.array([[float(obs_mod.plaquette(uj, th.group))]]),
                       "action": np.array([[float(th.action(uj))]]), "delta_H": np.full((1, 1), np.nan),
                       "accepted": np.ones((1, 1), bool), "step_size": np.full((1, 1), np.nan)}
                w.append([i], u[None, None], per, i + 1)
                lp(i + 1, len(files))
        console.print(f"[green]done[/] imported {len(files)} configurations of {'x'.join(map(str, shape))} into {name}")

    _run(body)


# ----------------------------------------------------------------------------------------
# flows: train / correlate / compare
# ----------------------------------------------------------------------------------------


def _parse_assignments(items: List[str]) -> dict[str, float]:
    out = {}
    for it in items:
        for part in it.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise CLIError(f"malformed parameter {part!r}: use NAME=VALUE, e.g. beta=2.2")
            k, v = part.split("=", 1)
            k = k.strip()
            if k not in ("beta", "xi", "lam"):
                raise CLIError(f"unknown action parameter {k!r}; allowed: beta, xi, lam")
            try:
                out[k] = float(v)
            except ValueError:
                raise CLIError(f"malformed value {v!r} for {k}") from None
    if not out:
        raise CLIError("give the target parameters, e.g. --to beta=2.2")
    return out


@app.command(epilog="""
**Examples**

    corrflow train --store data/runs.zarr --from u1_16x16_beta2 --to beta=2.2 --out flows/b2_to_b2.2

    corrflow train --store data/runs.zarr --from u1_16x16_beta2 --to beta=2.2 --out flows/b2_to_b2.2 --resume --epochs 80

    corrflow train --store data/su3.zarr --from su3_8x8x8x8_beta5.7 --to beta=5.75 --out flows/su3 --epochs 15

With no architecture options the flow is the good one for the theory: plaquette-space maps for 2D U(1) (ESS ~0.98 for
beta 2 -> 2.2 at L = 16), residual layers otherwise. `--optimizer auto` (the default) trains plaquette flows and 4D
flows with L-BFGS (few or tiny coefficients; Adam's fixed step overshoots them) and residual 2D flows with Adam.
""")
def train(
    store: Path = typer.Option(..., help="zarr store holding the base ensemble"),
    from_: str = typer.Option(..., "--from", help="base ensemble name"),
    to: List[str] = typer.Option(..., help="target parameters, e.g. beta=2.2 (repeat or comma-separate)"),
    out: Path = typer.Option(..., help="checkpoint directory (created)"),
    epochs: int = typer.Option(40, help="training epochs (L-BFGS: maximum iterations)"),
    batch_size: int = typer.Option(64, help="configurations per optimiser step (L-BFGS: per micro-batch)"),
    lr: float = typer.Option(0.02, help="initial learning rate (cosine decay; Adam only)"),
    optimizer: str = typer.Option("auto", help="auto (lbfgs in 4D, adam otherwise) | adam (mini-batch) | lbfgs "
                                             "(full batch, no learning rate)"),
    kind: str = typer.Option("auto", help="flow architecture: auto (plaquette for 2D U(1), residual otherwise) | "
                                          "plaquette (2D U(1): exact per-plaquette maps) | residual (masked staple "
                                          "layers)"),
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
    held_out: int = typer.Option(64, help="base configurations held out (not trained on): held-out ESS and var(log w) "
                                          "every epoch, the best epoch is kept (0: none)"),
    patience: int = typer.Option(5, help="with --held-out: stop after this many epochs without held-out improvement "
                                         "(0: never)"),
    n_train: int = typer.Option(512, help="base configurations used for training (spread over the chains)"),
    target_ess: float = typer.Option(1.0, help="stop early when the weight ESS fraction reaches this"),
    seed: int = typer.Option(0, help="seed for shuffling and initialisation"),
    resume: bool = typer.Option(False, "--resume", help="continue from the checkpoint in --out"),
) -> None:
    """Train a residual flow from a base ensemble to target parameters (reverse KL; base samples only)."""

    def body() -> None:
        import dataclasses

        import numpy as np

        from . import make_theory
        from .flows import default_kind, make_flow
        from .flows.train import FlowTrainingError, TrainConfig, load_checkpoint, resolve_optimizer, resume_kwargs
        from .flows.train import train as train_flow
        from .pipeline.handles import held_out_positions, training_positions
        from .store import check_writable_dir, open_store

        check_writable_dir(out, "--out")  # before the training, not after it
        st = open_store(store, "r")
        spec = st.spec(from_)
        base = make_theory(spec.theory, spec.shape, **spec.params)
        target = base.replace(**_parse_assignments(to))
        kind_ = kind
        if kind_ == "auto":
            explicit = loops is not None or degree is not None or net_width or smear
            kind_ = "residual" if explicit else default_kind(base.group, base.shape)
        flow_opts: dict[str, Any] = {"kind": kind_}
        if kind_ == "plaquette":
            if loops is not None or degree is not None or net_width or smear:
                raise CLIError("--loops, --degree, --net-width and --smear belong to --kind residual, not to plaquette "
                               "flows")
            flow_opts.update(n_sweeps=1 if sweeps is None else sweeps, harmonics=harmonics)
        else:
            flow_opts.update(loops=tuple(x.strip() for x in (loops or "plaquette").split(",") if x.strip()),
                             n_sweeps=2 if sweeps is None else sweeps, degree=degree or 0, net_width=net_width,
                             net_depth=net_depth, smear=smear)
        new_flow = make_flow(base.group, base.shape, **flow_opts)  # ValueError for options that do not fit
        if held_out < 0:
            raise CLIError(f"--held-out must be >= 0, got {held_out}")
        cfg = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=lr, target_ess=target_ess, seed=seed,
                          optimizer=resolve_optimizer(optimizer, len(base.shape), getattr(new_flow, "kind", kind_)),
                          patience=patience if held_out else 0)
        ds = st.open_ensemble(from_)
        n = int(ds.sizes["traj"])
        pos = training_positions(n, spec.n_chains, n_train)  # spread over the run (the pipeline's rule)
        configs = np.concatenate([st.load_configs(from_, c, pos) for c in range(spec.n_chains)])
        held = None
        if held_out:  # the configurations between the training ones (the pipeline's rule)
            hpos = held_out_positions(n, pos, spec.n_chains, held_out)
            if len(hpos):
                held = np.concatenate([st.load_configs(from_, c, hpos) for c in range(spec.n_chains)])[:held_out]
            if held is None or len(held) < 2:
                held = None
                cfg = dataclasses.replace(cfg, patience=0)
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
                                 **kwargs)
            except FlowTrainingError as exc:
                raise CLIError(str(exc)) from None
        h = res.history
        ck = load_checkpoint(out)
        held_msg = ""
        if "held_ess" in h[-1]:
            best = min(h, key=lambda r: r["held_var_logw"])
            held_msg = (f", held-out ESS {h[0]['held_ess']:.3f} -> {best['held_ess']:.3f} (epoch {best['epoch']} kept, "
                        f"var log w {h[0]['held_var_logw']:.3g} -> {best['held_var_logw']:.3g})")
        console.print(f"[green]done[/] {flow.kind} flow, {len(h) - 1} epochs ({res.stopped}): weight ESS "
                      f"{h[0]['ess']:.3f} -> {h[-1]['ess']:.3f}{held_msg}, checkpoint {out} (id {ck['id']})")

    _run(body)


@app.command(epilog="""
**Examples**

    corrflow correlate --store data/runs.zarr --from u1_16x16_beta2 --flow flows/b2_to_b2.2 --name flowed_b2.2

    corrflow correlate --store data/runs.zarr --from u1_16x16_beta2 --identity --to beta=2.2 --name direct_b2.2
""")
def correlate(
    store: Path = typer.Option(..., help="zarr store"),
    from_: str = typer.Option(..., "--from", help="base ensemble"),
    name: str = typer.Option(..., help="name of the flowed ensemble to write"),
    flow: Optional[Path] = typer.Option(None, help="flow checkpoint directory (from `corrflow train`)"),
    identity: bool = typer.Option(False, "--identity", help="identity flow: direct reweighting baseline (needs --to)"),
    to: List[str] = typer.Option([], help="target parameters for --identity, e.g. beta=2.2"),
    batch: int = typer.Option(64, help="base configurations per batch (and per stored chunk)"),
    seed: int = typer.Option(0, help="seed of the flowed Metropolis chain"),
) -> None:
    """Flow every base configuration; store f(U), log weights, log Jacobians and the pairing (resumable)."""

    def body() -> None:
        from .pipeline import correlate_to_store, direct_to_store
        from .store import check_name, open_store

        if (flow is None) == (not identity):
            raise CLIError("give exactly one of --flow CHECKPOINT or --identity")
        if batch < 1:
            raise CLIError(f"--batch must be >= 1, got {batch}")
        check_name(name)
        if name == from_:
            raise CLIError(f"--name {name!r} is the base ensemble (--from); the flowed ensemble needs a name of its own")
        st = open_store(store, "a")  # created at the first write only
        with _stage(f"correlate {from_} -> {name}", "cfg/s") as lp:
            prog = lambda d, t: lp(d, t)  # noqa: E731
            if identity:
                res = direct_to_store(st, from_, name, _parse_assignments(to), batch=batch, seed=seed, progress=prog)
            else:
                res = correlate_to_store(st, from_, name, checkpoint=flow, batch=batch, seed=seed, progress=prog)
        console.print(f"[green]done[/] {res.name}: +{res.n_new} -> {res.committed} paired configurations per chain, "
                      f"weight ESS {res.weight_ess_fraction:.3f}, flowed-chain acceptance {res.acceptance:.3f}, "
                      f"log<w> {res.log_mean_weight:.5f}")

    _run(body)


@app.command(epilog="""
**Example**

    corrflow compare --store data/runs.zarr --base u1_16x16_beta2 flowed_b2.2 direct_b2.2 u1_16x16_beta2.2 --obs plaquette
""")
def compare(
    ensembles: List[str] = typer.Argument(..., help="flowed ensembles and/or independent ensembles at a'"),
    store: Path = typer.Option(..., help="zarr store"),
    base: str = typer.Option(..., help="base ensemble"),
    obs: List[str] = typer.Option(["plaquette"], help="observables (repeat the option)"),
) -> None:
    """The estimators side by side: <O>_a', the difference and derivative, errors, ESS, variance reduction."""

    def body() -> None:
        from .compare import compare_ensembles, parameter_shift
        from .store import open_store

        st = open_store(store, "r")
        rows = compare_ensembles(st, base, ensembles, obs)
        pname, shift = parameter_shift(st.spec(base).params, st.spec(ensembles[0]).params)
        table = Table(title=f"{base} -> {pname} {'+' if shift >= 0 else ''}{shift:g}")
        for col in ("observable", "estimator", "ensemble", "<O>(a')", "difference", f"d<O>/d{pname}", "weight ESS",
                    "var. red. vs indep."):
            table.add_column(col, justify="right")
        for r in rows:
            table.add_row(r.observable, r.estimator, r.ensemble, "" if r.value_at_target is None else str(r.value_at_target),
                          str(r.difference), "" if r.derivative is None else str(r.derivative),
                          "" if r.weight_ess is None else f"{r.weight_ess:.3f}",
                          "" if r.variance_reduction is None else f"{r.variance_reduction:.1f}")
        console.print(table)

    _run(body)


@app.command(epilog="""
**Example**

    corrflow report --store data/runs.zarr --base u1_16x16_beta2 flowed_b2.2 direct_b2.2 u1_16x16_beta2.2 --out reports/

    corrflow report --store data/mass_dependence.zarr --out reports/   # analysis sections only
""")
def report(
    ensembles: Optional[List[str]] = typer.Argument(None, help="flowed and/or independent ensembles compared with "
                                                    "the base"),
    store: Path = typer.Option(..., help="zarr store"),
    base: Optional[str] = typer.Option(None, help="base ensemble (omit to report only the analysis results)"),
    out: Path = typer.Option(Path("reports"), help="output directory (PNG figures + report.md)"),
    obs: List[str] = typer.Option(["plaquette"], help="observables (repeat the option)"),
    analysis: Optional[List[str]] = typer.Option(None, help="analysis results to include (repeat; default: all "
                                                 "recorded in the store by `python -m analysis.<name>`)"),
    tangent: bool = typer.Option(False, help="also the tangent-flow and connected derivative estimators on the base "
                                             "ensemble (pure gauge; smooth observables; fitted field kept in OUT)"),
) -> None:
    """Variance-reduction report: error bars per estimator, variance reduction and ESS vs shift, loss curves, and
    a section per analysis (continuum limit, mass dependence, Feynman–Hellmann) recorded in the store."""

    def body() -> None:
        from .report import write_report
        from .store import open_store

        if base is not None and not ensembles:
            raise CLIError("--base needs at least one ensemble to compare with")
        if base is None and ensembles:
            raise CLIError("ensembles given without --base; name the base ensemble they are compared with")
        if tangent and base is None:
            raise CLIError("--tangent needs --base: the tangent-flow estimators are computed on the base ensemble")
        path = write_report(open_store(store, "r"), base, ensembles or [], out, obs, analysis, tangent=tangent)
        console.print(f"[green]done[/] report written to {path} ({len(list(out.glob('*.png')))} figures)")

    _run(body)


# ----------------------------------------------------------------------------------------
# derivative (tangent-flow estimators, corrflow.tangent)
# ----------------------------------------------------------------------------------------


@app.command(epilog="""
**Examples**

    corrflow derivative --store data/runs.zarr u1_16x16_beta2 --param beta --obs plaquette,wilson_2x2

    corrflow derivative --store data/su3.zarr su3_4x4x4x4_beta5.8 --param beta --obs plaquette --field gradient --json

    corrflow derivative --store data/demo.zarr u1_16x16_beta2 --obs plaquette,wilson_2x2 --compare flowed_beta2.2 --compare direct_beta2.2 --compare u1_16x16_beta2.2

    corrflow derivative --store data/schwinger.zarr schwinger_8x8_beta2_m0.2 --param mass --obs plaquette,condensate,pion@1,pion@2

    corrflow derivative --store data/su3.zarr su3_8x8x8x8_beta6 --obs t2E@2.6,t2E@2.8,t2E@3.0,t2E@3.2 --field gradient

--compare adds the finite-shift estimators of ensembles at param + delta already in the store (flowed, direct
reweighting, independent HMC) as (<O>(param + delta) - <O>(param)) / delta: biased by O(delta), shown for comparison.
The fitted field is saved (pickle-free) in --out (default: STORE_tangent/ENSEMBLE-PARAM-HASH next to the store) and
reused when the ensemble content and every fit setting match. Ensembles with Wilson fermions need traces of D^-1
for d/dmass and for the fermion part of v.grad S: exact on small lattices, else stochastic (--noise vectors per
configuration; their noise is in the errors).
""")
def derivative(
    ensemble: str = typer.Argument(..., help="ensemble in the store (pure gauge or with Wilson fermions)"),
    store: Path = typer.Option(..., help="zarr store (only read)"),
    param: str = typer.Option("beta", help="action parameter: beta, xi or lam; mass for ensembles with fermions"),
    obs: str = typer.Option("plaquette", help="observables, comma-separated: plaquette, wilson_RxT, t2E@T (SU(N)); "
                                              "with fermions also condensate, pion@T"),
    field: str = typer.Option("auto", help="tangent field: auto (plaquette for 2D U(1), gradient otherwise) | "
                                           "plaquette | gradient | none (connected estimator only)"),
    harmonics: int = typer.Option(6, help="plaquette field: sine harmonics of h(phi)"),
    features: str = typer.Option("plaquette,rectangle,flowed@0.1,flowed@0.2,flowed@0.4",
                                 help="gradient field: features, comma-separated (plaquette, rectangle, flowed@T)"),
    probes: int = typer.Option(4, help="gradient field: Hutchinson probes per configuration for the divergence"),
    folds: int = typer.Option(2, help="cross-fitting folds (each block of a chain gets coefficients fitted on the "
                                      "others; 1: fit and evaluate on everything)"),
    held_out: float = typer.Option(0.25, help="fraction of the fit configurations held out to select the ridge"),
    out: Optional[Path] = typer.Option(None, help="checkpoint directory of the fitted field"),
    seed: int = typer.Option(0, help="seed of the Hutchinson probes and trace noise"),
    traces: str = typer.Option("auto", help="fermion ensembles: traces of D^-1 exact (dense, small lattices) | "
                                            "stochastic (noise vectors, one CG each) | auto (exact up to a Schur "
                                            "dimension of 512)"),
    noise: int = typer.Option(4, help="fermion ensembles, stochastic traces: noise vectors per configuration"),
    t0_ref: float = typer.Option(0.3, help="t^2 E(t0) that defines t0: with two or more t2E@T observables whose mean "
                                           "crosses it, the derivative of t0/a^2 joins the table"),
    w0_ref: float = typer.Option(0.3, help="W(w0^2) = t d/dt t^2 E that defines w0: with four or more t2E@T whose W "
                                           "crosses it, the derivative of w0/a joins the table"),
    batch: int = typer.Option(32, help="configurations per jitted batch"),
    compare: Optional[List[str]] = typer.Option(None, help="ensemble at param + delta (flowed, identity-flow or "
                                                "independent; repeat or comma-separate) whose finite-shift "
                                                "derivative joins the table"),
    json_: bool = typer.Option(False, "--json", help="print one JSON object (for scripts) instead of the table"),
) -> None:
    """Derivatives d<O>/d(param) by the tangent-flow estimator (unbiased, no weights) and the connected estimator,
    with value(error), tau_int and the variance reduction."""

    def body() -> None:
        import json

        from .pipeline.tangent import derivative_from_store
        from .stats import format_value_error
        from .store import open_store
        from .store.checkpoints import check_writable_dir

        if batch < 1:
            raise CLIError(f"--batch must be >= 1, got {batch}")
        if probes < 1:
            raise CLIError(f"--probes must be >= 1, got {probes}")
        from .tangent import TRACE_METHODS, FermionTraces

        if traces not in TRACE_METHODS:
            raise CLIError(f"--traces must be one of {', '.join(TRACE_METHODS)}, got {traces!r}")
        if noise < 1:
            raise CLIError(f"--noise must be >= 1, got {noise}")
        if not t0_ref > 0 or not w0_ref > 0:
            raise CLIError(f"--t0-ref and --w0-ref must be > 0, got {t0_ref}, {w0_ref}")
        trace_opts = FermionTraces(method=traces, n_noise=noise)
        if out is not None:
            check_writable_dir(out, "--out")
        st = open_store(store, "r")
        if ensemble not in st.ensembles():
            raise CLIError(f"no ensemble {ensemble!r} in {store}; available: {', '.join(st.ensembles()) or 'none'}")
        opts: dict[str, Any] = {}
        kind = field.strip().lower()
        spec = st.spec(ensemble)
        is_u1_2d = spec.group == "u1" and len(spec.shape) == 2
        if kind == "plaquette" or (kind == "auto" and is_u1_2d):
            opts = {"harmonics": harmonics}
        elif kind in ("gradient", "auto"):
            opts = {"features": features, "n_probes": probes}
        names = [o.strip() for o in obs.split(",") if o.strip()]
        others = [c.strip() for item in (compare or []) for c in item.split(",") if c.strip()]
        settings = dict(field=kind, field_options=opts, n_folds=folds, held_out=held_out, seed=seed, batch=batch,
                        out=out, compare=others, traces=trace_opts, t0_reference=t0_ref, w0_reference=w0_ref)
        if json_:
            res = derivative_from_store(st, store, ensemble, param, names, **settings)
            typer.echo(json.dumps({"ensemble": ensemble, **res.as_dict()}, default=float))
            return
        with _stage(f"tangent terms {ensemble}", "cfg/s") as lp:
            res = derivative_from_store(st, store, ensemble, param, names, progress=lambda d, t: lp(d, t),
                                        **settings)
        r = res.result
        reductions = r.reductions()
        tr_msg = ""
        if res.traces:
            tr_msg = (", exact fermion traces" if res.traces["method"] == "exact" else
                      f", stochastic fermion traces ({res.traces['n_noise']} noise vectors)")
        table = Table(title=f"d<O>/d{param} on {ensemble} ({res.n_chains} x {res.n_traj} configurations, "
                            f"{r.field.get('kind')} field{tr_msg})")
        for col in ("observable", "estimator", "value(error)", "tau_int", "variance reduction"):
            table.add_column(col)
        for o, est in r.estimates.items():
            for k, s in est.items():
                label = f"{k} ({res.shifts[k][0]}, d{param} {res.shifts[k][1]:+g})" if k in res.shifts else k
                table.add_row(o, label, format_value_error(s.value, s.error), f"{s.tau_int:.2f}",
                              f"{reductions[o][k]:.3g}x")
        console.print(table)
        fit_msg = "reused" if res.reused else ("fitted" if r.fits else "none")
        extra = ""
        if r.fits:
            extra = ", Var[R_v] reduced " + "/".join(f"{f.reduction:.1f}x" for f in r.fits) + " per fold"
        console.print(f"[green]done[/] tangent field {fit_msg}{extra}; checkpoint {res.checkpoint}")

    _run(body)


# ----------------------------------------------------------------------------------------
# analyses (registered by the installed packages through the "corrflow.analyses" entry points)
# ----------------------------------------------------------------------------------------


def _register_analyses() -> None:
    """``corrflow analyse <name>``: one command per :class:`corrflow.pipeline.Analysis` declared under the
    ``corrflow.analyses`` entry-point group (pyproject.toml); corrflow itself imports no analysis by name."""
    from importlib.metadata import entry_points

    from .pipeline.analysis import command

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
    from .runtime import tune_allocator

    tune_allocator()  # before JAX starts its threads (see corrflow.runtime)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
