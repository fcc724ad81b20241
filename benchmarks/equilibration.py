"""The automatic thermalisation cut (`--discard auto`, corrflow.stats.equilibration): bias left after the cut.

    python benchmarks/equilibration.py                  # AR(1) drifts, 30 seeds each, and hot-started 2D U(1) HMC
    python benchmarks/equilibration.py --seeds 100 --no-hmc

Compares the cut corrflow makes (the marginal standard error rule: the cut minimising the Gamma-method error of the
kept mean, candidates 0, 20 equal steps up to half the chain and the powers of two below the first step) with the
effective-sample-size rule it replaced (the cut maximising R (n - d) / (2 tau_int), equal steps only), measured in
the same run on the same series:
- AR(1) chains (tau_int = 5, unit variance, 2 x 2000) plus an exponential start-up drift ``A e^{-t/decay}``: the mean
  pull of the kept mean against the true mean 0 over the seeds (its own error is 1/sqrt(seeds)), the median and mean
  cut, and on stationary series how much data is thrown away;
- hot-started 2D U(1) HMC chains (16x16, beta = 2, default trajectory with jitter 0.2, no thermalisation): the pull
  of the kept plaquette against the exact torus value.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from scipy.signal import lfilter

from corrflow.stats import gamma_method
from corrflow.stats.equilibration import equilibration_cut

from _machine import cpu_model

DRIFTS = ((0.0, 50.0), (3.0, 50.0), (10.0, 50.0), (10.0, 10.0), (30.0, 10.0), (30.0, 5.0), (100.0, 3.0))


def ar1(rng: np.random.Generator, drift: float, decay: float, tau: float = 5.0, n: int = 2000, r: int = 2
        ) -> np.ndarray:
    """``r`` AR(1) chains ``(r, n)`` with ``tau_int = tau``, unit variance, mean 0, plus ``drift e^{-t/decay}``."""
    a = (2 * tau - 1) / (2 * tau + 1)
    noise = rng.normal(size=(r, n)) * np.sqrt(1 - a * a)
    noise[:, 0] = rng.normal(size=r)
    return lfilter([1.0], [1.0, -a], noise, axis=1) + drift * np.exp(-np.arange(n) / decay)


def effective_sample_size_cut(x: np.ndarray, n_candidates: int = 20) -> int:
    """The replaced rule: the equal-step cut (up to half the chain) maximising ``R (n - d) / (2 tau_int)``."""
    r, n = x.shape
    candidates = np.unique(np.round(np.linspace(0, n // 2, n_candidates + 1)).astype(int))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        n_eff = [r * (n - d) / (2 * max(gamma_method(x[:, d:]).tau_int, 0.5)) for d in candidates]
    return int(candidates[int(np.argmax(n_eff))])


def report(label: str, series: list[np.ndarray], truth: float) -> None:
    """Print both rules' cuts and the mean pull of the kept means over ``series``."""
    rules = {"error (MSER)": lambda x: equilibration_cut(x).n_discard, "effective samples": effective_sample_size_cut}
    uncut = np.mean([gamma_method(x).pull(truth) for x in series])
    print(f"{label}: uncut pull {uncut:+.2f}")
    for name, rule in rules.items():
        cuts = [rule(x) for x in series]
        pull = np.mean([gamma_method(x[:, d:]).pull(truth) for x, d in zip(series, cuts)])
        data = np.mean(cuts) / series[0].shape[1]
        print(f"    {name:>18}: pull {pull:+.2f}, cut median {np.median(cuts):4.0f} mean {np.mean(cuts):6.1f} "
              f"({100 * data:.1f}% of the chain), no cut in {sum(c == 0 for c in cuts)}/{len(cuts)}")


def hmc_series(seeds: int, n: int) -> tuple[list[np.ndarray], float]:
    """Plaquette series ``(2, n)`` of hot-started 2D U(1) HMC chains (16x16, beta = 2, jitter 0.2), one per seed."""
    import jax

    import corrflow  # noqa: F401  (x64 on)
    from corrflow import HMCConfig, make_theory
    from corrflow.exact import u1_plaquette
    from corrflow.generate import GaugeMeasurements, initial_links, run_blocks

    th = make_theory("u1", (16, 16), beta=2.0)
    cfg = HMCConfig(0.2, 5, "omelyan", jitter=0.2)
    out = []
    for s in range(seeds):
        key = jax.random.PRNGKey(1000 + s)
        links = initial_links(key, th, 2, start="hot")
        blk = list(run_blocks(key, th, cfg, links, n, block_size=n, measure=GaugeMeasurements(th.group)))[0]
        out.append(np.asarray(blk.measurements["plaquette"], dtype=float))
    return out, float(u1_plaquette(2.0, (16, 16)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--hmc-seeds", type=int, default=30)
    ap.add_argument("--hmc-n", type=int, default=1000, help="trajectories per hot-started HMC chain")
    ap.add_argument("--no-hmc", action="store_true")
    a = ap.parse_args()
    print(f"thermalisation cut, {a.seeds} seeds per AR(1) case (pull error {1 / np.sqrt(a.seeds):.2f}); "
          f"{cpu_model()}")
    for drift, decay in DRIFTS:
        rng = np.random.default_rng(int(drift * 1000 + decay))
        report(f"AR(1) tau_int 5, 2 x 2000, drift {drift:g} decaying over {decay:g}",
               [ar1(rng, drift, decay) for _ in range(a.seeds)], 0.0)
    if not a.no_hmc:
        series, exact = hmc_series(a.hmc_seeds, a.hmc_n)
        report(f"2D U(1) 16x16 beta 2 HMC, hot start, jitter 0.2, 2 x {a.hmc_n}, {a.hmc_seeds} seeds", series, exact)


if __name__ == "__main__":
    main()
