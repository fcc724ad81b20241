"""analysis.workflow.prepare: pairing, weights, reuse through the store, bad input (tiny 2D U(1))."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

import corrflow as cf
from analysis.workflow import PairedEnsembles, parameter_shift, prepare

KW = dict(n_configs=24, n_therm=10, seed=3, hmc=cf.HMCConfig(0.25, 4), flow_epochs=2, n_chains=2, n_train=16,
          batch_size=8, block_size=24)


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    d = tmp_path_factory.mktemp("wf")
    base = cf.make_theory("u1", (4, 4), beta=1.5)
    target = base.replace(beta=1.8)
    events = []
    pe = prepare(d / "wf.zarr", base, target, progress=lambda *a: events.append(a), **KW)
    return d, base, target, pe, events


def test_shapes_and_info(paired):
    _, base, _, pe, events = paired
    assert isinstance(pe, PairedEnsembles)
    n = KW["n_configs"] * KW["n_chains"]
    assert pe.base_links.shape == (n,) + base.link_shape == pe.flowed_links.shape
    assert pe.log_w.shape == pe.log_w_direct.shape == (n,)
    assert pe.independent_links.shape == (n,) + base.link_shape
    assert pe.chains(pe.log_w).shape == (KW["n_chains"], KW["n_configs"])
    assert pe.shift == ("beta", pytest.approx(0.3))
    assert set(pe.costs) == {"hmc_base", "hmc_independent", "train", "flow", "direct"}
    assert all(math.isfinite(v) and v > 0 for v in pe.costs.values())
    assert 0 < pe.info["weight_ess_fraction"]["flowed"] <= 1 and 0 < pe.info["weight_ess_fraction"]["direct"] <= 1
    assert {e[0] for e in events} >= {"hmc_base", "hmc_independent", "train", "flow", "direct"}
    assert not np.allclose(pe.base_links[: KW["n_configs"]], pe.independent_links[: KW["n_configs"]])


def test_pairing_and_weights_recomputed(paired):
    """Row i of flowed_links / log_w is f(U_i) and its weight (recomputed from the checkpoint)."""
    from corrflow.flows.train import load_checkpoint

    _, base, target, pe, _ = paired
    ck = load_checkpoint(pe.info["flow"]["checkpoint"])
    u = jnp.asarray(pe.base_links)
    uf, logj = ck["flow"].forward(ck["params"], u)
    np.testing.assert_allclose(np.asarray(uf), pe.flowed_links, atol=1e-12)
    lw = -target.action(uf) + base.action(u) + logj
    np.testing.assert_allclose(np.asarray(lw), pe.log_w, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(np.asarray(-target.action(u) + base.action(u)), pe.log_w_direct, rtol=1e-10, atol=1e-9)
    assert np.any(np.abs(np.asarray(logj)) > 0)  # the flow is not the identity


def test_reuse_through_the_store(paired):
    d, base, target, pe, _ = paired
    events = []
    again = prepare(d / "wf.zarr", base, target, progress=lambda *a: events.append(a), **KW)
    assert not events  # nothing was generated, trained or flowed again
    np.testing.assert_array_equal(again.flowed_links, pe.flowed_links)
    np.testing.assert_array_equal(again.log_w, pe.log_w)
    assert again.costs == pytest.approx(pe.costs)
    # a smaller request reuses the first configurations of each chain, with costs scaled down
    fewer = prepare(d / "wf.zarr", base, target, **{**KW, "n_configs": 12})
    np.testing.assert_array_equal(fewer.chains(fewer.base_links), pe.chains(pe.base_links)[:, :12])
    assert fewer.costs["hmc_base"] == pytest.approx(pe.costs["hmc_base"] / 2)


def test_bad_input(tmp_path):
    base = cf.make_theory("u1", (4, 4), beta=1.5)
    with pytest.raises(ValueError, match="same parameters"):
        prepare(tmp_path / "a.zarr", base, base, **KW)
    with pytest.raises(ValueError, match="same kind of theory"):
        prepare(tmp_path / "a.zarr", base, cf.make_theory("schwinger", (4, 4), beta=1.5, mass=0.1), **KW)
    with pytest.raises(ValueError, match="same group and lattice"):
        prepare(tmp_path / "a.zarr", base, cf.make_theory("u1", (4, 8), beta=1.8), **KW)
    with pytest.raises(ValueError, match="n_configs"):
        prepare(tmp_path / "a.zarr", base, base.replace(beta=2.0), **{**KW, "n_configs": 5})
    with pytest.raises(ValueError, match="stochastic"):
        prepare(tmp_path / "a.zarr", base, base.replace(beta=2.0), weights="stochastic", **KW)
    assert not (tmp_path / "a.zarr").exists()
    with pytest.raises(ValueError, match="nothing to correlate"):
        parameter_shift(base, base)
