"""The Gamma method's exponential-tail correction (`--tau-exp`, corrflow.stats.Windowing): tau_int and error coverage.

    python benchmarks/gamma_tail.py                 # AR(1) mixtures of known tau_int, then 2D U(1) HMC chains
    python benchmarks/gamma_tail.py --no-hmc --datasets 400

A chain with a slow mode of small amplitude is modelled as a fast plus a slow stationary AR(1) process (variances 1
and ``v``, slow ``phi = exp(-1/tau_exp)``): exact ``tau_int`` and exact mean 0.  For each case, over independent
datasets, the mean estimated ``tau_int`` against the exact one and ``chi^2 / M`` of the pulls of the mean (1 for
right errors; its own error sqrt(2/M)), for Wolff's automatic window (the baseline, same data) and the tail
correction with ``n_sigma`` = 1, 2 (the default), 3.  Then real chains: 2D U(1) 8x8 at beta = 9 (the continuum
analysis's base ensemble: cold start, tau = 1/3 with 2 Omelyan steps, jitter 0.2, thin 2): ``2 tau_int`` of the
plaquette from the Gamma method, with tails of several ``tau_exp``, and from block means on 64 chains of 4000; and the
pulls of 80 pairs of 2 x 400 chains against the grand mean (the analysis's ensemble size).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
from scipy.signal import lfilter

from corrflow.stats import Windowing, blocked_two_tau, gamma_method

from _machine import cpu_model

#: (fast tau, slow tau_exp, slow variance, chain length, replicas)
CASES = ((2.0, 100.0, 0.03, 20000, 1), (5.0, 50.0, 0.05, 5000, 1), (5.0, 50.0, 0.05, 2000, 4),
         (1.0, 30.0, 0.1, 2000, 1), (10.0, 100.0, 0.02, 10000, 1), (3.0, 20.0, 0.0, 5000, 1))


def ar1(rng: np.random.Generator, phi: float, var: float, shape: tuple[int, ...]) -> np.ndarray:
    """Stationary AR(1) series of variance ``var`` along the last axis."""
    x_prev = rng.normal(size=shape[:-1] + (1,))
    out, _ = lfilter([math.sqrt(1 - phi**2)], [1.0, -phi], rng.normal(size=shape), axis=-1, zi=phi * x_prev)
    return math.sqrt(var) * out


def tau_ar1(phi: float) -> float:
    return (1 + phi) / (2 * (1 - phi))


def ar_cases(m: int, seed: int) -> None:
    print(f"AR(1) mixtures, {m} datasets each: mean tau_int (its error) / exact | chi^2/M of the mean's pulls "
          f"(error {math.sqrt(2 / m):.2f})")
    rules = [("Wolff", None)] + [(f"tail n_sigma={k}", k) for k in (1, 2, 3)]
    for i, (ta, texp, vb, n, r) in enumerate(CASES):
        pa, pb = math.exp(-1 / ta), math.exp(-1 / texp)
        exact = (tau_ar1(pa) + vb * tau_ar1(pb)) / (1 + vb)
        rng = np.random.default_rng([seed, i])
        xs = [ar1(rng, pa, 1.0, (r, n)) + ar1(rng, pb, vb, (r, n)) for _ in range(m)]
        cells = []
        for label, ns in rules:
            S = 1.5 if ns is None else Windowing(tau_exp=texp, n_sigma=ns)
            st = [gamma_method(x, S=S) for x in xs]
            t = np.array([s.tau_int for s in st])
            chi2 = float(np.mean([s.pull(0.0) ** 2 for s in st]))
            cells.append(f"{label}: {t.mean() / exact:.2f}({t.std() / math.sqrt(m) / exact:.2f}) {chi2:.2f}")
        print(f"  fast {ta:g}, tau_exp {texp:g}, slow variance {vb:g}, {r} x {n} (exact tau_int {exact:.2f}): "
              + " | ".join(cells), flush=True)


def u1_chains(seed: int) -> None:
    import jax

    import corrflow  # noqa: F401  (x64 on)
    from corrflow import HMCConfig, make_theory
    from corrflow.generate import GaugeMeasurements, initial_links, run_blocks

    th = make_theory("u1", (8, 8), beta=9.0)
    cfg = HMCConfig(0.5 / 3, 2, "omelyan", jitter=0.2)

    def chains(key_seed: int, n_chains: int, n_meas: int, therm: int = 250) -> np.ndarray:
        key = jax.random.PRNGKey(key_seed)
        links = initial_links(key, th, n_chains, start="cold")
        n = therm + 2 * n_meas
        blk = next(iter(run_blocks(key, th, cfg, links, n, block_size=n, measure=GaugeMeasurements(th.group))))
        return np.asarray(blk.measurements["plaquette"])[:, therm::2]

    t0 = time.perf_counter()
    long = chains(seed, 64, 4000)
    print(f"2D U(1) 8x8, beta = 9, 64 chains x 4000 (thin 2; {time.perf_counter() - t0:.0f} s): 2 tau_int of the "
          f"plaquette, Gamma {2 * gamma_method(long).tau_int:.2f}; blocks of 16 / 50 / 200 / 500 / 1000: "
          + " / ".join(f"{blocked_two_tau(long, b):.2f}" for b in (16, 50, 200, 500, 1000)))
    for texp in (25, 50, 100, 200):
        s = gamma_method(long, S=Windowing(tau_exp=texp))
        print(f"  tail tau_exp {texp}: 2 tau_int {2 * s.tau_int:.2f} +- {2 * s.tau_int_error:.2f} (window {s.window})")
    pairs = chains(seed + 1, 160, 400).reshape(80, 2, 400)
    ref = pairs.mean()
    cells = []
    for label, S in [("Wolff", 1.5)] + [(f"tail {t}", Windowing(tau_exp=t)) for t in (25, 50, 100, 200)]:
        chi2 = float(np.sum([gamma_method(x, S=S).pull(ref) ** 2 for x in pairs]))
        cells.append(f"{label}: {chi2:.1f}")
    print("  80 pairs of 2 x 400 against the grand mean, chi^2 for 79: " + " | ".join(cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", type=int, default=200)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--no-hmc", action="store_true", help="AR(1) mixtures only")
    a = ap.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)
    print(cpu_model())
    ar_cases(a.datasets, a.seed)
    if not a.no_hmc:
        u1_chains(a.seed)


if __name__ == "__main__":
    main()
