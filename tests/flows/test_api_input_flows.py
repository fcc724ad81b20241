"""The Python API of flows and reweighting as a new user meets it (a user audit, 2026-12-07): inputs that gave wrong
numbers or deep tracebacks are refused in one line, `measure` takes one configuration everywhere, `make_flow` builds
what `corrflow train` builds with `kind="auto"`.  Random links, no HMC: cheap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import corrflow as cf
from corrflow.flows.plaquette import PlaquetteFlow
from corrflow.groups import SUN

U1_THEORY = cf.make_theory("u1", (4, 4), beta=2.0)


def u1_configs(n: int, shape=(4, 4), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-np.pi, np.pi, (n, *shape, len(shape)))


def su3_configs(n: int, shape=(2, 2)) -> np.ndarray:
    g = SUN(3)
    x = 0.4 * g.random_algebra(jax.random.PRNGKey(0), (n, *shape, len(shape)))
    return np.asarray(g.exp_left(x, g.identity((n, *shape, len(shape)))))


def test_reweighting_refuses_what_gave_wrong_numbers_or_tracebacks():
    th = cf.make_theory("su3", (2, 2), beta=4.0)
    u = su3_configs(3)
    measure = cf.GaugeMeasurements(th.group)
    with pytest.raises(ValueError, match="su3 links must be complex matrices"):  # U.real gave log w off by 2
        cf.direct_reweighting(th, th.replace(beta=4.2), u.real, measure)
    with pytest.raises(ValueError, match="base lattice 2x2 and target lattice 4x4 differ"):
        cf.direct_reweighting(th, cf.make_theory("su3", (4, 4), beta=4.2), u, measure)
    with pytest.raises(ValueError, match="base links are u1, target links su3"):
        cf.direct_reweighting(U1_THEORY, cf.make_theory("su3", (4, 4), beta=4.2), u1_configs(2), measure)
    with pytest.raises(ValueError, match=r"for one configuration pass configs\[None\]"):
        cf.direct_reweighting(th, th.replace(beta=4.2), u[0], measure)
    with pytest.raises(ValueError, match="no configurations"):
        cf.direct_reweighting(th, th.replace(beta=4.2), u[:0], measure)
    with pytest.raises(TypeError, match="measure must be a function of one configuration"):
        cf.direct_reweighting(th, th.replace(beta=4.2), u, None)
    flow = cf.make_flow("u1", (8, 8))
    with pytest.raises(ValueError, match=r"built for the 8x8 lattice.*flow.with_shape\(\(4, 4\)\)"):
        cf.flowed_reweighting(flow, flow.init_params(), U1_THEORY, U1_THEORY.replace(beta=2.2), u1_configs(2),
                              cf.GaugeMeasurements("u1"))
    with pytest.raises(ValueError, match="base lattice 4x4 and target lattice 8x8 differ"):
        cf.train(cf.make_flow(U1_THEORY), U1_THEORY, cf.make_theory("u1", (8, 8), beta=2.2), u1_configs(4))
    with pytest.raises(ValueError, match="same parameters .*nothing to train"):  # Adam moved off the exact identity
        cf.train(cf.make_flow(U1_THEORY), U1_THEORY, U1_THEORY.replace(beta=2.0), u1_configs(4))


def test_measure_takes_one_configuration_as_in_generate():
    """`generate` calls `measure` on one configuration; the reweighting called it on a batch, so a per-configuration
    function failed there (or, reducing over fewer axes, averaged over configurations without a word)."""
    u = u1_configs(5)
    out = cf.direct_reweighting(U1_THEORY, U1_THEORY.replace(beta=2.2), u, lambda x: {"c": jnp.cos(x).mean()})
    np.testing.assert_allclose(out.base["c"], np.cos(u).mean(axis=(1, 2, 3)), rtol=1e-12)
    ref = cf.direct_reweighting(U1_THEORY, U1_THEORY.replace(beta=2.2), u, cf.GaugeMeasurements("u1"))
    plaq = np.asarray(cf.observables.plaquette(jnp.asarray(u), U1_THEORY.group))
    np.testing.assert_allclose(ref.base["plaquette"], plaq, rtol=1e-12)  # the batched observable, config by config
    np.testing.assert_allclose(ref.log_w, -0.2 * np.asarray(jax.vmap(lambda x: U1_THEORY.action(x) / 2.0)(u)),
                               rtol=1e-12)  # identity flow: log w = -(S_2.2 - S_2.0) = -0.2 S_2.0 / 2.0
    assert "MetropolisChain(5 steps" in repr(cf.flowed_metropolis(ref.log_w, jax.random.PRNGKey(0)))


def test_make_flow_auto_is_what_train_builds():
    from corrflow.flows.build import DEFAULT_SMOOTHING

    assert isinstance(cf.make_flow(U1_THEORY, kind="auto"), PlaquetteFlow)
    su3 = cf.make_flow("su3", (4, 4, 4, 4), kind="auto")
    assert su3.smoothing == DEFAULT_SMOOTHING and su3.loops == ("plaquette",)
    assert cf.make_flow("su3", (4, 4, 4, 4), kind="auto", smoothing=()).smoothing == ()
    assert cf.make_flow("su3", (4, 4), kind="auto").smoothing == ()  # 2D: no smoothing terms
    assert cf.make_flow("u1", (4, 4)) == cf.make_flow(U1_THEORY)  # a theory stands for its group and lattice
    two = cf.make_flow("su3", (4, 4, 4, 4), loops="plaquette, rectangle")  # a string, not its characters
    assert two.loops == ("plaquette", "rectangle")
    with pytest.raises(TypeError, match="make_flow needs the lattice shape"):
        cf.make_flow("u1")


def test_derivative_refuses_a_missing_field_and_package_dir_lists_the_submodules():
    from corrflow import tangent

    with pytest.raises(TypeError, match=r"field_obj must be a vector field family, e.g. corrflow.tangent.make_field"):
        tangent.derivative(U1_THEORY, u1_configs(4)[None], "beta", "plaquette", None, jax.random.PRNGKey(0))
    names = dir(cf)
    assert {"tangent", "pipeline", "store", "make_flow", "__version__"} <= set(names) and "os" not in names


def test_init_params_says_the_key_comes_second():
    for flow in (cf.make_flow("u1", (4, 4)), cf.make_flow(U1_THEORY, kind="auto")):
        with pytest.raises(TypeError, match=r"the PRNG key comes second, e.g. flow.init_params\(0.01"):
            flow.init_params(jax.random.PRNGKey(1))
        assert not np.any(np.asarray(flow.init_params()))  # the identity map
        assert np.any(np.asarray(flow.init_params(0.1, jax.random.PRNGKey(1))))


def test_train_names_a_chain_axis_and_a_config_dict():
    """`train` with the (n_chains, n_traj, ...) configurations of `generate(keep_configs=True)` failed with
    'Incompatible shapes for broadcasting' (10 frames), a dict for the config with an AttributeError (user audit)."""
    flow, tc = cf.make_flow(U1_THEORY, kind="auto"), cf.TrainConfig(epochs=1, optimizer="lbfgs")
    target = U1_THEORY.replace(beta=2.2)
    with pytest.raises(ValueError, match=r"configs must have shape \(n, \*\(4, 4, 2\)\), got \(2, 3, 4, 4, 2\); "
                                         r"flatten chains with configs.reshape\(\(-1,\) \+ base.link_shape\)"):
        cf.train(flow, U1_THEORY, target, u1_configs(6).reshape(2, 3, 4, 4, 2), tc)
    with pytest.raises(TypeError, match=r"config must be corrflow.TrainConfig\(epochs=..., ...\), got dict"):
        cf.train(flow, U1_THEORY, target, u1_configs(6), {"epochs": 1})
