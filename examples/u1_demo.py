"""2D U(1) HMC ensemble checked against the exact finite-torus results.

    python examples/u1_demo.py [--beta 2.0] [--L 16] [--chains 4] [--n 5000]

Generates chains with the Omelyan integrator, measures the plaquette, a 2x2 Wilson loop and the
geometric topological charge on every trajectory, and prints each estimate (Gamma-method error
with autocorrelation) next to the exact torus value from ``corrflow.exact`` with its pull.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

import corrflow as cf
from corrflow import exact
from corrflow.generate import Block, GaugeMeasurements, generate
from corrflow.stats import gamma_method


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--beta", type=float, default=2.0)
    ap.add_argument("--L", type=int, default=16)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--n", type=int, default=5000, help="trajectories per chain after thermalisation")
    ap.add_argument("--therm", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    console = Console()
    shape = (args.L, args.L)
    theory = cf.make_theory("u1", shape, beta=args.beta)
    config = cf.HMCConfig(step_size=0.2, n_steps=5, integrator="omelyan")
    measure = GaugeMeasurements(theory.group, wilson_loops=((2, 2),), topological_charge=True)
    console.print(f"[bold]corrflow demo[/]: 2D U(1), beta={args.beta}, {args.L}x{args.L}, "
                  f"{args.chains} chains x {args.n} trajectories ({config.integrator}, eps={config.step_size}, "
                  f"{config.n_steps} steps)")

    t0 = time.perf_counter()
    with Progress(TextColumn("HMC {task.fields[phase]}"), BarColumn(), TextColumn("{task.completed}/{task.total} traj"),
                  TextColumn("acc {task.fields[acc]:.2f}  plaq {task.fields[plaq]:.4f}"),
                  TimeRemainingColumn(), console=console, transient=True) as prog:
        task = prog.add_task("hmc", total=args.therm + args.n, phase="therm", acc=0.0, plaq=0.0)

        def progress(done: int, total: int, blk: Block) -> None:
            # Thermalisation blocks are run without measurements (blk.measurements is empty): show the plaquette
            # of the chains' current configurations there, the block's mean of the measured one afterwards.
            if "plaquette" in blk.measurements:
                phase, plaq = "prod ", np.mean(blk.measurements["plaquette"])
            else:
                phase, plaq = "therm", np.mean(cf.observables.plaquette(blk.state.links, theory.group))
            prog.update(task, completed=done, total=total, phase=phase, acc=float(np.mean(blk.info.accepted)),
                        plaq=float(plaq))

        out = generate(jax.random.PRNGKey(args.seed), theory, config, n_chains=args.chains, n_traj=args.n,
                       n_therm=args.therm, measure=measure, block_size=250, progress=progress)
    elapsed = time.perf_counter() - t0

    vol = args.L * args.L
    rows = [
        ("plaquette <cos P>", out["plaquette"], exact.u1_plaquette(args.beta, shape)),
        ("Wilson loop 2x2", out["wilson_2x2"], exact.u1_wilson_loop(args.beta, shape, 2, 2)),
        ("chi_top = <Q^2>/V", out["topological_charge"] ** 2 / vol,
         exact.u1_topological_susceptibility(args.beta, shape)),
        ("<exp(-dH)>", np.exp(-out["delta_H"]), 1.0),
    ]
    table = Table(title="HMC vs exact torus values (errors: Gamma method, all chains)")
    for col in ("observable", "HMC", "exact", "pull", "tau_int"):
        table.add_column(col, justify="right")
    worst = 0.0
    for name, data, value in rows:
        res = gamma_method(data)
        pull = res.pull(value)
        worst = max(worst, abs(pull))
        colour = "green" if abs(pull) < 3 else "red"
        table.add_row(name, str(res), f"{value:.6f}", f"[{colour}]{pull:+.2f}[/]", f"{res.tau_int:.2f}")
    console.print(table)
    console.print(f"acceptance {np.mean(out['accepted']):.3f}, {args.chains * (args.n + args.therm) / elapsed:.0f} "
                  f"traj/s, {elapsed:.1f} s in all; largest |pull| = {worst:.2f}")


if __name__ == "__main__":
    main()
