"""Shared 2D U(1) ensemble (written once per session by `corrflow generate` into a temporary store, so the CLI
tests read the same data) and the plaquette-field tangent terms on it."""

import jax
import pytest
from typer.testing import CliRunner

from corrflow import exact, make_theory, open_store
from corrflow import tangent as tg
from corrflow.cli import app
from corrflow.pipeline.tangent import load_all_configs

BETA, SHAPE = 2.0, (8, 8)
OBS = ("plaquette", "wilson_2x2")
ENSEMBLE = "u1_8x8_beta2"
N_TRAJ, BLOCK = 3200, 800


def exact_derivatives(beta=BETA, shape=SHAPE):
    """Exact torus d<P>/dbeta and d<W_2x2>/dbeta (the latter by a central difference of the exact <W>)."""
    h = 1e-4
    dw = (exact.u1_wilson_loop(beta + h, shape, 2, 2) - exact.u1_wilson_loop(beta - h, shape, 2, 2)) / (2 * h)
    return {"plaquette": exact.u1_plaquette_derivative(beta, shape), "wilson_2x2": dw}


@pytest.fixture(scope="session")
def u1_theory():
    return make_theory("u1", SHAPE, beta=BETA)


@pytest.fixture(scope="session")
def u1_store(tmp_path_factory):
    """Store with 2 HMC chains x 3200 configurations at beta = 2 on 8x8 (one block length: HMC compiles once)."""
    path = tmp_path_factory.mktemp("tangent") / "runs.zarr"
    res = CliRunner().invoke(app, ["generate", "u1", "--beta", str(BETA), "--shape", "8,8", "--n", str(N_TRAJ),
                                   "--chains", "2", "--therm", "200", "--step-size", "0.25", "--n-steps", "4",
                                   "--block", str(BLOCK), "--seed", "11", "--jitter", "0", "--store", str(path)])
    assert res.exit_code == 0, res.output
    return path


@pytest.fixture(scope="session")
def schwinger_store(tmp_path_factory):
    """Store with a small Schwinger-model ensemble (2 x 60 exact-determinant HMC configurations, 4x4, m = 0.3)."""
    path = tmp_path_factory.mktemp("schwinger") / "s.zarr"
    res = CliRunner().invoke(app, ["generate", "schwinger", "--beta", "2.0", "--mass", "0.3", "--shape", "4,4",
                                   "--n", "60", "--chains", "2", "--therm", "20", "--step-size", "0.25",
                                   "--n-steps", "4", "--seed", "3", "--jitter", "0", "--store", str(path)])
    assert res.exit_code == 0, res.output
    return path


@pytest.fixture(scope="session")
def u1_configs(u1_store):
    return load_all_configs(open_store(u1_store, "r"), ENSEMBLE)


@pytest.fixture(scope="session")
def plaquette_terms(u1_theory, u1_configs):
    return tg.compute_terms(tg.PlaquetteField(6), u1_theory, "beta", OBS, u1_configs, jax.random.PRNGKey(0),
                            batch=500)


@pytest.fixture(scope="session")
def exact_u1():
    return exact_derivatives()
