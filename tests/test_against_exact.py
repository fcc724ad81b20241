"""HMC ensembles against exact finite-torus results (corrflow.exact), as pulls with
Gamma-method (autocorrelation-aware) errors.  Fixed seeds; |pull| < 4 required."""

import jax
import numpy as np
import pytest

from corrflow import HMCConfig, exact, make_theory
from corrflow.generate import GaugeMeasurements, generate
from corrflow.stats import gamma_method

PULL = 4.0


def _run(name, shape, beta, cfg, n_chains, n_traj, seed, **meas):
    th = make_theory(name, shape, beta=beta)
    m = GaugeMeasurements(th.group, **meas)
    return generate(jax.random.PRNGKey(seed), th, cfg, n_chains=n_chains, n_traj=n_traj, n_therm=200,
                    measure=m, block_size=500)


@pytest.mark.parametrize("beta,shape,seed", [(2.0, (8, 8), 1), (1.25, (10, 10), 2)])
def test_u1_plaquette_wilson_loop_topology(beta, shape, seed):
    out = _run("u1", shape, beta, HMCConfig(0.2, 5, "omelyan"), 4, 4000, seed,
               wilson_loops=((2, 2),), topological_charge=True)
    vol = shape[0] * shape[1]
    checks = {
        "plaquette": (out["plaquette"], exact.u1_plaquette(beta, shape)),
        "wilson_2x2": (out["wilson_2x2"], exact.u1_wilson_loop(beta, shape, 2, 2)),
        "chi_top": (out["topological_charge"] ** 2 / vol, exact.u1_topological_susceptibility(beta, shape)),
        "exp(-dH)": (np.exp(-out["delta_H"]), 1.0),
    }
    for name, (data, value) in checks.items():
        res = gamma_method(data)  # (chains, traj): replicas
        assert abs(res.pull(value)) < PULL, f"{name}: {res!r} vs exact {value:.6f}, pull {res.pull(value):.2f}"
    # the topological sectors are actually sampled (guards against a frozen chain passing vacuously)
    assert len(np.unique(np.round(out["topological_charge"]))) >= 5


def test_u1_plaquette_pull_detects_wrong_beta():
    """Negative control: the same ensemble against the exact value at a slightly different beta fails."""
    beta, shape = 2.0, (8, 8)
    out = _run("u1", shape, beta, HMCConfig(0.2, 5, "omelyan"), 4, 4000, 1)
    res = gamma_method(out["plaquette"])
    assert abs(res.pull(exact.u1_plaquette(beta + 0.1, shape))) > 2 * PULL


@pytest.mark.parametrize("n,beta,shape,seed", [(2, 2.5, (8, 8), 3), (3, 4.0, (6, 6), 4)])
def test_sun_2d_plaquette(n, beta, shape, seed):
    out = _run(f"su{n}", shape, beta, HMCConfig(0.2, 5, "omelyan"), 4, 1500, seed)
    res = gamma_method(out["plaquette"])
    value = exact.sun_plaquette(n, beta, shape)
    assert abs(res.pull(value)) < PULL, f"SU({n}) plaquette {res!r} vs exact {value:.6f}"
    assert abs(gamma_method(np.exp(-out["delta_H"])).pull(1.0)) < PULL
