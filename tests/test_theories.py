import jax
import jax.numpy as jnp
import numpy as np
import pytest

from corrflow import make_theory
from corrflow.theories import WilsonGaugeAction
from gauge_helpers import gauge_transform

KEY = jax.random.PRNGKey(21)
CASES = [("u1", (6, 4)), ("u1", (4, 4, 4)), ("su2", (4, 4)), ("su3", (4, 4)), ("su3", (2, 2, 2, 2))]


@jax.jit
def autodiff_force(theory, u):
    """F^a = d/dw S(exp(w T^a) U) at w = 0, by jax.grad."""
    g = theory.group

    def s(w):
        x = w if g.is_abelian else g.from_coords(w)
        return theory.action(g.exp_left(x, u))

    shape = u.shape if g.is_abelian else u.shape[:-2] + (g.n_generators,)
    return jax.grad(s)(jnp.zeros(shape))


@pytest.mark.parametrize("name,shape", CASES)
@pytest.mark.parametrize("xi,lam", [(1.0, 0.0), (1.4, 0.3)])
def test_force_equals_autodiff_gradient(name, shape, xi, lam):
    th = make_theory(name, shape, beta=2.3, xi=xi, lam=lam)
    u = th.group.random(KEY, th.shape + (th.ndim,))
    f = jax.jit(lambda t, x: t.force(x))(th, u)
    fc = f if th.group.is_abelian else th.group.algebra_coords(f)
    ref = autodiff_force(th, u)
    assert float(jnp.max(jnp.abs(ref))) > 0.1
    np.testing.assert_allclose(fc, ref, atol=1e-12)


@pytest.mark.parametrize("name,shape", CASES)
def test_action_gauge_invariant(name, shape):
    th = make_theory(name, shape, beta=1.7, xi=1.2, lam=0.1)
    g = th.group
    u = g.random(KEY, th.shape + (th.ndim,))
    v = gauge_transform(u, g.random(jax.random.PRNGKey(3), th.shape), g)
    np.testing.assert_allclose(th.action(v), th.action(u), rtol=1e-12)
    np.testing.assert_allclose(th.source_operator(v), th.source_operator(u), rtol=1e-12, atol=1e-12)


def test_cold_action_value_and_plane_couplings():
    th = make_theory("su3", (2, 2, 2, 2), beta=6.0, xi=2.0, lam=0.5)
    u = th.group.identity(th.link_index_shape)
    b = np.asarray(th.plane_couplings())
    # temporal planes: beta*xi + lam, spatial planes: beta/xi - lam
    assert b[0, 1] == pytest.approx(12.5) and b[1, 2] == pytest.approx(2.5) and b[2, 2] == 0
    expected = -16 * (3 * 12.5 + 3 * 2.5)
    assert float(th.action(u)) == pytest.approx(expected)


@pytest.mark.parametrize("name,shape", [("u1", (4, 4)), ("su3", (2, 2, 2, 2))])
def test_source_operator_is_dS_dlambda(name, shape):
    th = make_theory(name, shape, beta=2.0, lam=0.2)
    u = th.group.random(KEY, th.link_index_shape)
    ds = jax.grad(lambda lam: th.replace(lam=lam).action(u))(0.2)
    np.testing.assert_allclose(ds, th.source_operator(u), rtol=1e-12)


def test_theory_is_pytree_with_traced_beta():
    th = make_theory("u1", (4, 4), beta=1.0)
    u = th.group.random(KEY, th.link_index_shape)
    f = jax.jit(lambda t, x: t.action(x))
    a1, a2 = f(th, u), f(th.replace(beta=2.0), u)
    np.testing.assert_allclose(2 * a1, a2, rtol=1e-13)
    leaves = jax.tree_util.tree_leaves(th)
    assert len(leaves) == 3  # beta, xi, lam


def test_batched_action_and_force():
    th = make_theory("su2", (4, 4), beta=2.0)
    u = th.group.random(KEY, (3,) + th.link_index_shape)
    np.testing.assert_allclose(th.action(u), jnp.stack([th.action(u[i]) for i in range(3)]), rtol=1e-13)
    np.testing.assert_allclose(th.force(u)[1], th.force(u[1]), atol=1e-14)


def test_bad_theory_inputs():
    with pytest.raises(ValueError, match="unknown theory 'o3'.*allowed"):
        make_theory("o3", (4, 4), beta=1.0)
    with pytest.raises(ValueError, match="positive"):
        make_theory("u1", (4, 0), beta=1.0)
    with pytest.raises(ValueError, match="xi"):
        make_theory("u1", (4, 4), beta=1.0, xi=-1.0)
    with pytest.raises(ValueError, match="beta must be finite"):
        make_theory("u1", (4, 4), beta=float("nan"))
    th = make_theory("u1", (4, 4), beta=1.0)
    with pytest.raises(ValueError, match="trailing axes"):
        th.check_links(jnp.zeros((4, 5, 2)))
    assert isinstance(th, WilsonGaugeAction)
