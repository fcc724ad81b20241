"""Shared 2D U(1) ensemble and tangent terms for tests/tangent (compiled once per session)."""

import jax
import numpy as np
import pytest

from corrflow import HMCConfig, exact, make_theory
from corrflow import tangent as tg
from corrflow.generate import generate

BETA, SHAPE = 2.0, (8, 8)
OBS = ("plaquette", "wilson_2x2")
N_THERM, N_KEEP, BLOCK = 200, 3000, 800


def exact_derivatives(beta=BETA, shape=SHAPE):
    """Exact torus d<P>/dbeta and d<W_2x2>/dbeta (the latter by a central difference of the exact <W>)."""
    h = 1e-4
    dw = (exact.u1_wilson_loop(beta + h, shape, 2, 2) - exact.u1_wilson_loop(beta - h, shape, 2, 2)) / (2 * h)
    return {"plaquette": exact.u1_plaquette_derivative(beta, shape), "wilson_2x2": dw}


@pytest.fixture(scope="session")
def u1_theory():
    return make_theory("u1", SHAPE, beta=BETA)


@pytest.fixture(scope="session")
def u1_configs(u1_theory):
    """(2 chains, 3000 configurations) at beta = 2 on 8x8; one block length so that HMC compiles once."""
    n = N_THERM + N_KEEP
    out = generate(jax.random.PRNGKey(11), u1_theory, HMCConfig(0.25, 4, "omelyan"), n_chains=2,
                   n_traj=n + (-n) % BLOCK, n_therm=0, keep_configs=True, block_size=BLOCK)
    return out["configs"][:, N_THERM:N_THERM + N_KEEP]


@pytest.fixture(scope="session")
def plaquette_terms(u1_theory, u1_configs):
    return tg.compute_terms(tg.PlaquetteField(6), u1_theory, "beta", OBS, u1_configs, jax.random.PRNGKey(0),
                            batch=500)


@pytest.fixture(scope="session")
def exact_u1():
    return exact_derivatives()
