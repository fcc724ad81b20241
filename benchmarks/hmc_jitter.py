"""Randomised trajectory lengths (`HMCConfig.jitter`, `corrflow generate --jitter`): autocorrelations at weak coupling.

    python benchmarks/hmc_jitter.py                         # 2D U(1) 8x8, beta = 9, cold start (Q = 0), 8 chains
    python benchmarks/hmc_jitter.py --beta 2 --L 16 --start hot --tau 1 --jitters 0,0.2

A fixed HMC trajectory length ``tau`` is nearly resonant with near-harmonic modes of a weakly coupled theory
(``omega tau`` close to a multiple of ``2 pi``: a mode then barely moves in a trajectory whatever its fresh momentum),
and such modes decorrelate only over thousands of trajectories (Mackenzie 1989).  The Gamma method's automatic window
stops long before that tail, so the quoted errors are too small.  This script runs the same chains (same keys, same
cold start) with and without jitter and prints ``2 tau_int`` of the plaquette from the variance of block means
(deviations from the overall mean, so differences frozen between chains count too) for growing blocks, next to the
Gamma method's ``2 tau_int``: the blocked value should level off at the Gamma value when nothing is slow.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import corrflow  # noqa: F401  (x64 on)
from corrflow import HMCConfig, make_theory
from corrflow.generate import GaugeMeasurements, initial_links, run_blocks
from corrflow.stats import blocked_two_tau, gamma_method

from _machine import cpu_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--L", type=int, default=8)
    ap.add_argument("--beta", type=float, default=9.0)
    ap.add_argument("--tau", type=str, default="1,0.333", help="trajectory lengths, comma-separated")
    ap.add_argument("--steps", type=int, default=10, help="Omelyan steps per trajectory")
    ap.add_argument("--jitters", type=str, default="0,0.2,0.5")
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--n", type=int, default=8000, help="trajectories per chain after 200 of thermalisation")
    ap.add_argument("--start", default="cold", choices=("cold", "hot"))
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args()
    import jax

    th = make_theory("u1", (a.L, a.L), beta=a.beta)
    key = jax.random.PRNGKey(a.seed)
    links = initial_links(key, th, a.chains, start=a.start)
    blocks = [b for b in (1, 10, 50, 250, 1000, 4000) if b <= a.n // 2]
    print(f"2D U(1) {a.L}x{a.L}, beta = {a.beta:g}, {a.chains} chains x {a.n} trajectories ({a.start} start), Omelyan "
          f"{a.steps} steps; {cpu_model()}")
    print("2 tau_int of the plaquette: Gamma method | from blocks of " + ", ".join(map(str, blocks)))
    for tau in (float(t) for t in a.tau.split(",")):
        base = None
        for j in (float(x) for x in a.jitters.split(",")):
            t0 = time.perf_counter()
            cfg = HMCConfig(tau / a.steps, a.steps, "omelyan", jitter=j)
            blk = list(run_blocks(key, th, cfg, links, a.n + 200, block_size=a.n + 200,
                                  measure=GaugeMeasurements(th.group)))[0]
            p = np.asarray(blk.measurements["plaquette"])[:, 200:]
            acc = float(np.mean(np.asarray(blk.info.accepted)))
            gam = 2 * gamma_method(p).tau_int
            bl = [blocked_two_tau(p, b) for b in blocks]
            base = bl[-1] if base is None else base
            print(f"tau {tau:g}, jitter {j:g}: acceptance {acc:.3f}, Gamma {gam:.2f} | "
                  + " ".join(f"{x:7.2f}" for x in bl)
                  + f"  | first jitter / this at the largest block: {base / bl[-1]:.1f}x  ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
