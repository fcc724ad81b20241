"""The ``t2E@T`` observable (t^2 E(t) of the Wilson-flowed links) in the tangent estimators: its directional
derivative through the flow against a finite difference, and on a 2D SU(2) HMC ensemble the tangent and connected
estimates of d<t^2 E>/dbeta agreeing (and the plaquette's matching the exact torus derivative)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from corrflow import exact, hmc, make_theory
from corrflow import tangent as tg
from corrflow.groups import matmul

PULL = 4.0


def test_directional_derivative_through_the_flow_matches_finite_difference():
    th = make_theory("su2", (4, 4), beta=2.0)
    u = hmc.hot_start(jax.random.PRNGKey(0), th)
    f = tg.observable_function("t2E@0.1", th.group, th.shape)
    v = jax.random.normal(jax.random.PRNGKey(1), tg.coords_shape(th))
    got = float(tg.directional_derivative(f, u, v, th.group))
    x, h = th.group.from_coords(v), 1e-4
    fd = float(f(matmul(th.group.exp(h * x), u)) - f(matmul(th.group.exp(-h * x), u))) / (2 * h)
    assert got == pytest.approx(fd, rel=1e-6, abs=1e-10) and abs(got) > 1e-4


def test_bad_flow_times_and_u1_are_refused():
    su2 = make_theory("su2", (4, 4), beta=2.0)
    with pytest.raises(ValueError, match="multiple of 0.02"):
        tg.observable_function("t2E@0.03", su2.group, su2.shape)
    u1 = make_theory("u1", (4, 4), beta=2.0)
    with pytest.raises(ValueError, match="implemented for SU"):
        tg.observable_function("t2E@0.1", u1.group, u1.shape)


def test_flowed_energy_derivative_on_su2_ensemble():
    beta, shape = 3.0, (6, 6)
    th = make_theory("su2", shape, beta=beta)
    cfg = hmc.HMCConfig(0.2, 5, "omelyan")
    keys = jax.random.split(jax.random.PRNGKey(5), 2)
    st = hmc.init(th, hmc.hot_start(jax.random.PRNGKey(6), th, batch=(2,)))
    run = jax.jit(lambda k, s, n: hmc.sample_chains(k, s, th, cfg, n, measure=lambda u: u), static_argnums=2)
    st, _, _ = run(keys, st, 200)
    _, info, links = run(keys, st, 1500)
    assert float(jnp.mean(info.accepted)) > 0.7
    field = tg.GradientField(features=("plaquette",))
    res = tg.derivative(th, np.asarray(links), "beta", ["plaquette", "t2E@0.1"], field, jax.random.PRNGKey(0),
                        batch=250)
    h = 1e-4
    dp = (exact.sun_plaquette(2, beta + h, shape) - exact.sun_plaquette(2, beta - h, shape)) / (2 * h)
    for k in ("tangent", "connected"):
        s = res.estimates["plaquette"][k]
        assert abs(s.value - dp) / s.error < PULL, (k, s, dp)
    t, c = res.estimates["t2E@0.1"]["tangent"], res.estimates["t2E@0.1"]["connected"]
    assert c.value != 0 and abs(t.value - c.value) / np.hypot(t.error, c.error) < PULL, (t, c)
    assert res.reduction["t2E@0.1"] > 1.0  # the fitted plaquette field lowers Var[R_v]: it must help here too
