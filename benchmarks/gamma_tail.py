"""The Gamma method's exponential-tail correction (`--tau-exp`, corrflow.stats.Windowing): tau_int and error coverage.

    python benchmarks/gamma_tail.py                 # AR(1) mixtures of known tau_int, then 2D U(1) HMC chains
    python benchmarks/gamma_tail.py --no-hmc --datasets 400
    python benchmarks/gamma_tail.py --only-fit      # tau_exp from rho(t) (`--tau-exp auto`): mixtures, topology

A chain with a slow mode of small amplitude is modelled as a fast plus a slow stationary AR(1) process (variances 1
and ``v``, slow ``phi = exp(-1/tau_exp)``): exact ``tau_int`` and exact mean 0.  For each case, over independent
datasets, the mean estimated ``tau_int`` against the exact one and ``chi^2 / M`` of the pulls of the mean (1 for
right errors; its own error sqrt(2/M)), for Wolff's automatic window (the baseline, same data) and the tail
correction with ``n_sigma`` = 1, 2 (the default), 3.  Then real chains: 2D U(1) 8x8 at beta = 9 (the continuum
analysis's base ensemble: cold start, tau = 1/3 with 2 Omelyan steps, jitter 0.2, thin 2): ``2 tau_int`` of the
plaquette from the Gamma method, with tails of several ``tau_exp``, and from block means on 64 chains of 4000; and the
pulls of 80 pairs of 2 x 400 chains against the grand mean (the analysis's ensemble size).

``tau_exp`` estimated from the decay of ``rho(t)`` (corrflow.stats.fit_tau_exp, ``corrflow summary --tau-exp auto``):
on the mixtures (and mixtures whose slow mode carries as much variance as the fast one) the fraction of datasets with
a fit, the median and 10-90% range of the estimate over the true ``tau_exp``, and ``chi^2 / M`` of its pulls (resolved
fits); then the whole recipe on 2D U(1) 8x8 at beta = 5 (hot starts, tau = 0.3, jitter 0.2, 8 x 4000 per ensemble:
topology tunnels every few hundred trajectories and drags the plaquette with it), several independent ensembles:
pulls of the plaquette and the 2x2 Wilson loop against the exact torus values with Wolff's window and with the
exponential tail of the slowest decay among plaquette, Wilson loop and topological charge.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
from scipy.signal import lfilter

from corrflow.stats import Windowing, blocked_two_tau, fit_tau_exp, gamma_method

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


#: mixtures whose slow mode stands above the noise of rho (slow variance comparable to the fast one)
VISIBLE = ((1.0, 30.0, 1.0, 2000, 1), (1.0, 30.0, 1.0, 20000, 1), (1.0, 30.0, 1.0, 400, 2), (5.0, 50.0, 1.0, 2000, 4),
           (2.0, 100.0, 1.0, 5000, 4), (2.0, 100.0, 0.3, 20000, 1))


def fit_cases(m: int, seed: int) -> None:
    print(f"tau_exp from rho(t) (fit_tau_exp), {m} datasets each: datasets with a fit | median (10%-90%) of estimate / "
          "tau_exp | chi^2/M of the pulls of the resolved fits")
    for i, (ta, texp, vb, n, r) in enumerate(CASES + VISIBLE):
        rng = np.random.default_rng([seed, 100 + i])
        fits = [fit_tau_exp(ar1(rng, math.exp(-1 / ta), 1.0, (r, n)) + ar1(rng, math.exp(-1 / texp), vb, (r, n)))
                for _ in range(m)]
        truth = texp if vb > 0 else ta  # without a slow mode the chain's tau_exp is the fast one's
        ok = [f for f in fits if f is not None]
        if not ok:
            print(f"  fast {ta:g}, tau_exp {texp:g}, slow variance {vb:g}, {r} x {n}: no fit")
            continue
        ratio = np.array([f.tau_exp for f in ok]) / truth
        res = [f for f in ok if f.resolved]
        chi2 = float(np.mean([((f.tau_exp - truth) / f.error) ** 2 for f in res])) if res else float("nan")
        print(f"  fast {ta:g}, tau_exp {texp:g}, slow variance {vb:g}, {r} x {n}: {len(ok)}/{m} | "
              f"{np.median(ratio):.2f} ({np.percentile(ratio, 10):.2f}-{np.percentile(ratio, 90):.2f}) | "
              f"{chi2:.2f} ({len(res)} resolved)", flush=True)


def u1_topology(seed: int, n_ens: int) -> None:
    import jax

    import corrflow  # noqa: F401  (x64 on)
    from corrflow import HMCConfig, exact, make_theory
    from corrflow.generate import GaugeMeasurements, initial_links, run_blocks

    th = make_theory("u1", (8, 8), beta=5.0)
    cfg = HMCConfig(0.1, 3, "omelyan", jitter=0.2)
    meas = GaugeMeasurements(th.group, wilson_loops=((2, 2),), topological_charge=True)
    ref = {"plaquette": exact.u1_plaquette(5.0, (8, 8)), "wilson_2x2": exact.u1_wilson_loop(5.0, (8, 8), 2, 2)}
    print(f"2D U(1) 8x8, beta = 5, {n_ens} ensembles of 8 x 4000 (cold starts, 500 discarded): pulls against the exact "
          "torus values, Wolff's window -> tail of the slowest decay (its tau_exp, from which observable)")
    chi2 = {k: [0.0, 0.0] for k in ref}
    for e in range(n_ens):
        t0 = time.perf_counter()
        key = jax.random.PRNGKey(1000 * seed + e)
        links = initial_links(key, th, 8, start="cold")  # Q = 0, the likeliest sector: a hot start's |Q| takes
        blk = next(iter(run_blocks(key, th, cfg, links, 4500, block_size=4500, measure=meas)))  # thousands to relax
        data = {k: np.asarray(blk.measurements[k])[:, 500:] for k in (*ref, "topological_charge")}
        fits = {k: f for k, x in data.items() for f in [fit_tau_exp(x)]
                if f is not None and (not f.resolved or f.tau_exp >= 2 * f.error)}
        slowest = max(fits, key=lambda k: fits[k].tau_exp) if fits else None
        tail = Windowing(tau_exp=float(f"{fits[slowest].tau_exp:.3g}")) if slowest else Windowing()
        cells = []
        for k, v in ref.items():
            p0, p1 = gamma_method(data[k]).pull(v), gamma_method(data[k], S=tail).pull(v)
            chi2[k][0] += p0**2
            chi2[k][1] += p1**2
            cells.append(f"{k} {p0:+.2f} -> {p1:+.2f}")
        tunnel = int(np.sum(np.abs(np.diff(np.rint(data["topological_charge"]), axis=1)) > 0))
        what = f"tau_exp {tail.tau_exp:g} ({slowest}{'' if fits[slowest].resolved else ', unresolved'})" if slowest \
            else "no decay"
        print(f"  ensemble {e}: {' | '.join(cells)} | {what}; {tunnel} changes of Q ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    print("  chi^2 for " + str(n_ens) + ": " + " | ".join(f"{k} {a:.1f} -> {b:.1f}" for k, (a, b) in chi2.items()))


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
    ap.add_argument("--only-fit", action="store_true", help="only the tau_exp estimate (mixtures, then topology)")
    ap.add_argument("--topology-ensembles", type=int, default=16, help="independent beta = 5 ensembles (~2 s each)")
    a = ap.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)
    print(cpu_model())
    if not a.only_fit:
        ar_cases(a.datasets, a.seed)
    fit_cases(min(a.datasets, 100), a.seed)
    if not a.no_hmc:
        if not a.only_fit:
            u1_chains(a.seed)
        u1_topology(a.seed, a.topology_ensembles)


if __name__ == "__main__":
    main()
