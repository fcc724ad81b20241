"""Residual layers with network coefficients (:mod:`corrflow.flows.network`): exact log-Jacobian against dense
autodiff (U(1), SU(2), SU(3); 2D and 4D), inverse, gauge equivariance, translation equivariance and volume
transfer, bad options; and training with held-out model selection, patience and bit-identical resume."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gauge_helpers import gauge_transform
from test_flows import dense_logdet
from test_flows_4d import dense_jacobian, logdet_positive

from corrflow import make_theory
from corrflow.flows import make_flow
from corrflow.flows.train import TrainConfig, load_checkpoint, resume_kwargs, train
from corrflow.groups import SUN, U1

KEY = jax.random.PRNGKey(0)


class _Stop(Exception):
    pass


def _stop_at(epoch_to_stop):
    def progress(epoch, rec):
        if epoch == epoch_to_stop:
            raise _Stop
    return progress
CASES = [(U1(), (4, 4), ("plaquette", "rectangle")), (SUN(2), (2, 2, 2), ("plaquette",)), (SUN(3), (2, 2), ("plaquette",))]


def net_flow(g, shape, loops=("plaquette",), n_sweeps=2):
    return make_flow(g, shape, loops=loops, n_sweeps=n_sweeps, net_width=3, net_depth=2)


@pytest.mark.parametrize("g,shape,loops", CASES)
def test_logj_matches_dense_autodiff_jacobian(g, shape, loops):
    flow = net_flow(g, shape, loops)
    params = flow.init_params(scale=0.5, key=KEY)
    u = g.random(KEY, shape + (len(shape),))
    _, lj = jax.jit(flow.forward)(params, u)
    assert abs(float(lj)) > 0.1
    np.testing.assert_allclose(float(lj), float(dense_logdet(flow, params, u, g)), atol=1e-10)


def test_logj_in_4d_su3_matches_dense_jacobian():
    """One sweep on 2^4 with a one-convolution network: 512 coordinates."""
    g = SUN(3)
    flow = make_flow(g, (2, 2, 2, 2), n_sweeps=1, net_width=2, net_depth=1)
    params = flow.init_params(scale=0.3, key=KEY)
    u = g.random(KEY, (2, 2, 2, 2, 4))
    jac, (_, lj) = dense_jacobian(lambda v: flow.forward(params, v), u)
    assert abs(float(lj)) > 0.1
    np.testing.assert_allclose(float(lj), logdet_positive(jac), atol=1e-10)


@pytest.mark.parametrize("g,shape,loops", CASES[::2])
def test_inverse_and_gauge_equivariance(g, shape, loops):
    flow = net_flow(g, shape, loops)
    params = flow.init_params(scale=0.5, key=KEY)
    u = g.random(jax.random.PRNGKey(1), (2,) + shape + (len(shape),))
    u2, lj = jax.jit(flow.forward)(params, u)
    back, ljr = jax.jit(flow.reverse)(params, u2)
    assert float(g.distance(back, u)) < 1e-10
    np.testing.assert_allclose(ljr, -lj, atol=1e-9)
    om = g.random(jax.random.PRNGKey(4), shape)
    transformed = jax.vmap(lambda x: gauge_transform(x, om, g))
    a, lja = jax.jit(flow.forward)(params, transformed(u))
    np.testing.assert_allclose(np.asarray(g.to_matrix(a)), np.asarray(g.to_matrix(transformed(u2))), atol=1e-11)
    np.testing.assert_allclose(lja, lj, atol=1e-10)


def test_translation_equivariance_and_volume_transfer():
    """The network is a periodic convolution: shifting the links by a period of the masks (2 sites) shifts the
    output, and a flow made for 4x4 gives on a tiled 8x8 configuration the tiled output and 4x the log-Jacobian."""
    g = U1()
    small = net_flow(g, (4, 4))
    params = small.init_params(scale=0.5, key=KEY)
    u = g.random(KEY, (4, 4, 2))
    out, lj = small.forward(params, u)
    shifted, ljs = small.forward(params, jnp.roll(u, 2, axis=1))
    np.testing.assert_allclose(np.asarray(shifted), np.asarray(jnp.roll(out, 2, axis=1)), atol=1e-12)
    np.testing.assert_allclose(float(ljs), float(lj), atol=1e-11)
    big = small.with_shape((8, 8))
    assert big.param_shape == small.param_shape and big.describe()["net_width"] == 3
    ub, ljb = big.forward(params, jnp.tile(u, (2, 2, 1)))
    np.testing.assert_allclose(np.asarray(ub), np.asarray(jnp.tile(out, (2, 2, 1))), atol=1e-12)
    np.testing.assert_allclose(float(ljb), 4 * float(lj), rtol=1e-11)
    zero, lz = small.forward(small.init_params(), u)  # the last convolution starts at zero: the identity
    np.testing.assert_allclose(np.asarray(zero), np.asarray(u), atol=1e-15)
    assert float(lz) == 0.0


@pytest.mark.parametrize("g,shape", [(U1(), (4, 4, 4)), (SUN(2), (2, 2, 2))])
def test_smeared_staples_jacobian_inverse_and_equivariance(g, shape):
    """Staples from stout-smeared transverse links (frozen only): dense-Jacobian check, inverse, gauge equivariance."""
    flow = make_flow(g, shape, n_sweeps=2, smear=2, smear_rho=0.2)
    assert flow.param_shape[-1] == 2 and flow.describe()["smear"] == 2
    params = flow.init_params(scale=1.5, key=KEY)
    u = g.random(KEY, shape + (3,))
    out, lj = jax.jit(flow.forward)(params, u)
    assert abs(float(lj)) > 0.1
    np.testing.assert_allclose(float(lj), float(dense_logdet(flow, params, u, g)), atol=1e-10)
    back, ljr = jax.jit(flow.reverse)(params, out)
    assert float(g.distance(back, u)) < 1e-10 and abs(float(ljr + lj)) < 1e-9
    om = g.random(jax.random.PRNGKey(4), shape)
    a, lja = jax.jit(flow.forward)(params, gauge_transform(u, om, g))
    np.testing.assert_allclose(np.asarray(g.to_matrix(a)), np.asarray(g.to_matrix(gauge_transform(out, om, g))),
                               atol=1e-11)
    np.testing.assert_allclose(float(lja), float(lj), atol=1e-10)


def test_bad_network_options():
    for kwargs, match in [(dict(net_width=-1), "net_width"), (dict(net_width=2.5), "net_width"),
                          (dict(net_width=4, net_depth=0), "net_depth"), (dict(net_width=4, degree=2), "degree 0"),
                          (dict(net_width=4, loops=("rectangle",)), "plaquette loop shape"),
                          (dict(smear=2), "d >= 3"), (dict(smear=-1), "smear"), (dict(smear=1, net_width=2), "no network")]:
        with pytest.raises(ValueError, match=match):
            make_flow("u1", (4, 4), **kwargs)


@pytest.fixture(scope="module")
def data():
    """4x4 U(1) beta 1 -> 1.2: 96 training and 64 held-out configurations (exact enough for a smoke test: Haar links
    are beta = 0 samples; the flow still has a well-defined reverse-KL objective for them)."""
    base = make_theory("u1", (4, 4), beta=1.0)
    target = base.replace(beta=1.2)
    u = U1().random(jax.random.PRNGKey(9), (160, 4, 4, 2))
    return base, target, np.asarray(u[:96]), np.asarray(u[96:])


def test_held_out_selection_patience_and_bitwise_resume(data, tmp_path):
    base, target, train_set, held = data
    flow = make_flow("u1", (4, 4), n_sweeps=1)
    conf = TrainConfig(epochs=8, batch_size=16, learning_rate=0.3, patience=3)
    full = train(flow, base, target, train_set, conf, held_out=held, checkpoint=tmp_path / "full")
    h = full.history
    assert all("held_ess" in r and "held_var_logw" in r for r in h)
    best = min(range(len(h)), key=lambda i: h[i]["held_var_logw"])
    ck = load_checkpoint(tmp_path / "full")
    assert ck["epoch"] == len(h) - 1
    # lr 0.3 overshoots at once (held-out var 0.26 -> 13): the identity stays best and patience stops at epoch 3
    assert full.stopped == "patience" and best == 0 and len(h) - 1 == 3
    # the selected parameters are those of the best held-out epoch: recompute that epoch's held-out variance
    from corrflow.flows.train import log_weights
    lw = log_weights(flow, full.params, base, target, jnp.asarray(held))[0]
    np.testing.assert_allclose(float(jnp.var(lw)), h[best]["held_var_logw"], rtol=1e-10)
    np.testing.assert_array_equal(np.asarray(ck["params"]), np.asarray(full.params))
    # interrupted after 2 epochs and resumed: bit-identical history and parameters
    with pytest.raises(_Stop):
        train(flow, base, target, train_set, conf, held_out=held, checkpoint=tmp_path / "part",
              progress=_stop_at(2))
    kw = resume_kwargs(load_checkpoint(tmp_path / "part"), len(train_set), conf)
    assert kw["start_epoch"] == 2
    resumed = train(flow, base, target, train_set, conf, held_out=held, checkpoint=tmp_path / "part", **kw)
    assert resumed.history == h and resumed.stopped == full.stopped
    np.testing.assert_array_equal(np.asarray(resumed.params), np.asarray(full.params))


def test_lbfgs_with_held_out_selection(data):
    base, target, train_set, held = data
    flow = make_flow("u1", (4, 4), n_sweeps=1, net_width=2, net_depth=1)
    res = train(flow, base, target, train_set, TrainConfig(epochs=4, batch_size=48, optimizer="lbfgs", patience=2),
                held_out=held)
    h = res.history
    assert h[0]["held_var_logw"] > 0 and all(np.isfinite(r["held_ess"]) for r in h)
    assert min(r["held_var_logw"] for r in h) <= h[0]["held_var_logw"]
    with pytest.raises(ValueError, match="patience"):
        TrainConfig(patience=-1)
    with pytest.raises(ValueError, match="held-out"):
        train(flow, base, target, train_set, TrainConfig(epochs=1, optimizer="lbfgs"), held_out=held[:1])
