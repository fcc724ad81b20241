"""Residual layers with held-out smoothing terms (:mod:`corrflow.flows.smoothing`): the SU(N) projection, the bound on
the effective staple, exact log-Jacobian against dense autodiff (SU(2) 3D, SU(3) 4D), inverse, gauge equivariance,
the held-out property (the flowed links do not depend on the active links), bad options, and the tangent of one
sweep against the tangent package's held-out field."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gauge_helpers import gauge_transform
from test_flows import dense_logdet
from test_flows_4d import dense_jacobian, logdet_positive

from corrflow.flows import make_flow
from corrflow.flows.build import flow_from_description
from corrflow.flows.smoothing import held_out_flow, project_sun, soft_clip
from corrflow.flows.staples import staple_sums_at
from corrflow.groups import SUN, U1, dagger, matmul

KEY = jax.random.PRNGKey(0)
TIMES = (0.1, 0.3)


@pytest.mark.parametrize("n", [2, 3])
def test_projection_is_special_unitary_covariant_and_maximises_the_overlap(n):
    g = SUN(n)
    k = jax.random.split(KEY, 4)
    # a staple-like sum: a few group elements added
    a = sum(g.random(kk, (50,)) for kk in jax.random.split(k[0], 6))
    p = project_sun(a, n)
    eye = np.eye(n)
    np.testing.assert_allclose(np.asarray(matmul(dagger(p), p)), np.broadcast_to(eye, p.shape), atol=1e-12)
    np.testing.assert_allclose(np.asarray(jnp.linalg.det(p)), 1.0, atol=1e-12)
    om, om2 = g.random(k[1], (50,)), g.random(k[2], (50,))
    np.testing.assert_allclose(np.asarray(project_sun(matmul(matmul(om, a), dagger(om2)), n)),
                               np.asarray(matmul(matmul(om, p), dagger(om2))), atol=1e-11)
    # for SU(2) the polar factor is the maximiser of Re tr(U^dag a); for SU(3) it beats random elements
    overlap = lambda u: np.real(np.trace(np.asarray(matmul(dagger(u), a)), axis1=-2, axis2=-1))  # noqa: E731
    assert np.all(overlap(p) >= np.stack([overlap(g.random(kk, (50,))) for kk in jax.random.split(k[3], 20)],
                                                  -1).max(-1))


def test_soft_clip_bounds_the_operator_norm_and_is_the_identity_for_small_staples():
    a = jnp.asarray(np.random.default_rng(0).normal(size=(200, 3, 3)) + 1j * np.random.default_rng(1).normal(
        size=(200, 3, 3))) * jnp.logspace(-3, 2, 200)[:, None, None]
    c = np.asarray(soft_clip(a))
    assert np.linalg.norm(c, ord=2, axis=(-2, -1)).max() < 0.95
    small = np.linalg.norm(np.asarray(a), ord=2, axis=(-2, -1)) < 0.2
    np.testing.assert_allclose(c[small], np.asarray(a)[small], rtol=1e-4)


@pytest.mark.parametrize("g,shape", [(SUN(2), (2, 2, 2)), (SUN(3), (2, 2, 2, 2))])
def test_logj_matches_dense_jacobian_inverse_and_equivariance(g, shape):
    """Strong coefficients (the soft clip active on many links); two sweeps."""
    flow = make_flow(g, shape, n_sweeps=2 if len(shape) == 3 else 1, smoothing=TIMES)
    assert flow.param_shape[-1] == 1 + len(TIMES)
    params = flow.init_params(scale=3.0, key=KEY)
    u = g.random(KEY, shape + (len(shape),))
    fwd = jax.jit(flow.forward)
    out, lj = fwd(params, u)
    assert abs(float(lj)) > 0.1
    if len(shape) == 3:
        np.testing.assert_allclose(float(lj), float(dense_logdet(flow, params, u, g)), atol=1e-10)
    else:  # 512 coordinates
        jac, (_, lj2) = dense_jacobian(lambda v: flow.forward(params, v), u)
        np.testing.assert_allclose(float(lj2), logdet_positive(jac), atol=1e-10)
    back, ljr = jax.jit(flow.reverse)(params, out)
    assert float(g.distance(back, u)) < 1e-10 and abs(float(ljr + lj)) < 1e-9
    om = g.random(jax.random.PRNGKey(4), shape)
    a, lja = fwd(params, gauge_transform(u, om, g))
    np.testing.assert_allclose(np.asarray(a), np.asarray(gauge_transform(out, om, g)), atol=1e-11)
    np.testing.assert_allclose(float(lja), float(lj), atol=1e-10)
    assert flow_from_description(flow.describe()) == flow
    assert flow.with_shape(tuple(2 * s for s in shape)).smoothing == TIMES


def test_flowed_links_do_not_depend_on_the_active_links():
    """The held-out property that keeps the Jacobian per link: changing the active links leaves Ṽ unchanged, changing
    a frozen one does not (negative control)."""
    g = SUN(3)
    shape = (4, 4, 4, 4)
    flow = make_flow(g, shape, smoothing=TIMES)
    sites = jnp.asarray(flow.sites()[1, 0])  # direction 1, first mask
    links = sites * 4 + 1
    u = g.random(KEY, shape + (4,))
    flat = u.reshape(-1, 3, 3)

    def v_of(f):
        sums = staple_sums_at(f, sites, 1, ("plaquette",), g, shape)[0]
        return jnp.stack(held_out_flow(f, links, sums, g, shape, TIMES, 0.05))

    v0 = v_of(flat)
    kicked = flat.at[links].set(g.random(jax.random.PRNGKey(3), (links.shape[0],)))
    np.testing.assert_allclose(np.asarray(v_of(kicked)), np.asarray(v0), atol=1e-13)
    frozen = int(np.setdiff1d(np.arange(flat.shape[0]), np.asarray(links))[5])
    assert float(jnp.max(jnp.abs(v_of(flat.at[frozen].set(g.random(jax.random.PRNGKey(5), ()))) - v0))) > 1e-3


def test_bad_smoothing_options():
    for kwargs, msg in (({"smoothing": (0.1, 0.1)}, "increasing"), ({"smoothing": (0.12,)}, "multiples"),
                        ({"smoothing": ("a",)}, "numbers"), ({"smoothing": (0.1,), "degree": 1}, "degree 0"),
                        ({"smoothing": (0.1,), "loops": ("rectangle",)}, "plaquette loop")):
        with pytest.raises(ValueError, match=msg):
            make_flow(SUN(3), (4, 4, 4, 4), **kwargs)
    with pytest.raises(ValueError, match="SU\\(2\\) or SU\\(3\\).*--smoothing none"):
        make_flow(U1(), (4, 4), smoothing=(0.1,))
    with pytest.raises(ValueError, match="takes no"):
        make_flow(U1(), (4, 4), kind="plaquette", smoothing=(0.1,))


@pytest.mark.parametrize("name,shape", [("su2", (4, 4, 4)), ("su3", (2, 2, 2, 2))])
def test_flow_tangent_is_the_held_out_smoothing_field(name, shape):
    """Two implementations of one object: the derivative of a smoothing flow's log-weights with respect to its
    (tied) smoothing coefficients at zero, by autodiff through the layers and their log-Jacobians, equals
    ``-SMOOTHING_SCALE (v_k·∇S_target - ∇·v_k)`` of the tangent package's held-out smoothing field (telescoped
    basis), whose divergence is the closed form per link (so this also checks that closed form: the flow side
    differentiates its per-link log-Jacobians)."""
    from corrflow import make_theory
    from corrflow import tangent as tg
    from corrflow.flows.layers import SMOOTHING_SCALE
    from corrflow.flows.linear import _logw_and_jacobian, tie_matrix
    from corrflow.tangent.core import gradient

    base = make_theory(name, shape, beta=2.0)
    target = base.replace(beta=2.3)
    g = base.group
    u = g.random(jax.random.PRNGKey(8), tuple(base.link_index_shape))
    flow = make_flow(g, shape, smoothing=TIMES)
    p0 = flow.init_params()
    _, jac = _logw_and_jacobian(flow, base, target, p0, jnp.asarray(tie_matrix(flow, base, target)), u[None])
    f = tg.SmoothingField(times=TIMES, flow_eps=0.05, held_out=True)

    @jax.jit
    def tangent_r(u):
        v = f.held_out_flowed(u, base)
        x = f.field_coords(u, base)
        vs = jnp.sum(x * gradient(target.action, u, g), axis=tuple(range(1, x.ndim)))
        return vs - f.explicit_divergence(v, u, base)

    r = np.asarray(tangent_r(u))
    r_b = np.concatenate([r[:1], np.diff(r)])
    np.testing.assert_allclose(np.asarray(jac)[0, 1:], -SMOOTHING_SCALE * r_b, rtol=1e-7, atol=1e-9)
