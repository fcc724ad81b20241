"""Residual flows: exact log-Jacobian, inverse, gauge equivariance, masks, contraction, volume transfer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from corrflow.flows import layer_masks, make_flow, staple_sums
from corrflow.groups import SUN, U1
from gauge_helpers import gauge_transform

KEY = jax.random.PRNGKey(0)
CASES = [  # (group, shape, loops, degree of the coefficient polynomials in the staple norm): U(1) with rectangles,
    # SU(N) plaquette-only masks in 2D and 3D, constant and staple-norm coefficients
    (U1(), (4, 4), ("plaquette", "rectangle"), 0),
    (U1(), (4, 4), ("plaquette", "rectangle"), 3),
    (SUN(3), (2, 2), ("plaquette",), 2),
    (SUN(2), (4, 4), ("plaquette", "rectangle"), 0),
    (SUN(3), (2, 2, 2), ("plaquette",), 0),
]


def dense_logdet(flow, params, u, g):
    """log|det| of the whole map in right-trivialised coordinates, by jax.jacfwd (no structure assumed); the
    Jacobian is built in one jitted program, the determinant by numpy."""
    if g.is_abelian:
        jac = jax.jit(jax.jacfwd(lambda th: flow.forward(params, th)[0].ravel()))(u)
        return np.linalg.slogdet(np.asarray(jac).reshape(u.size, u.size))[1]
    shp = u.shape[:-2] + (g.n_generators,)

    @jax.jit
    def jacobian(u):
        fu = flow.forward(params, u)[0]

        def coords_of_output(w):
            out = flow.forward(params, g.exp_left(g.from_coords(w), u))[0]
            return g.algebra_coords(g.project_algebra(g.mul(out, g.adj(fu)))).ravel()

        return jax.jacfwd(coords_of_output)(jnp.zeros(shp))

    n = int(np.prod(shp))
    return np.linalg.slogdet(np.asarray(jacobian(u)).reshape(n, n))[1]


@pytest.mark.parametrize("g,shape,loops,degree", CASES)
def test_logj_inverse_and_equivariance(g, shape, loops, degree):
    """On a batch of 3 configurations (one compiled forward map): the structured log-Jacobian equals the dense
    autodiff one, the fixed-point inverse undoes the map with the opposite log-Jacobian, and the map commutes
    with gauge transformations (log J gauge invariant)."""
    flow = make_flow(g, shape, loops=loops, n_sweeps=2, degree=degree)
    params = flow.init_params(scale=1.5, key=KEY)
    u = g.random(jax.random.PRNGKey(1), (3,) + shape + (len(shape),))  # batch of 3
    forward = jax.jit(flow.forward)
    u2, lj = forward(params, u)
    assert lj.shape == (3,)
    ref = dense_logdet(flow, params, u[0], g)
    assert abs(float(lj[0])) > 0.1  # a non-trivial map
    np.testing.assert_allclose(float(lj[0]), float(ref), atol=1e-10)
    back, ljr = jax.jit(flow.reverse)(params, u2)
    assert float(g.distance(back, u)) < 1e-10
    np.testing.assert_allclose(ljr, -lj, atol=1e-9)
    om = g.random(jax.random.PRNGKey(4), shape)
    transformed = jax.vmap(lambda x: gauge_transform(x, om, g))
    a, lja = forward(params, transformed(u))
    np.testing.assert_allclose(np.asarray(a), np.asarray(transformed(u2)), atol=1e-12)
    np.testing.assert_allclose(lja, lj, atol=1e-11)  # log J is gauge invariant


@pytest.mark.parametrize("g", [U1(), SUN(3)])
def test_staple_norm_coefficients(g):
    """Degree-p coefficients: the constant Legendre term alone reproduces the constant-coefficient flow; the
    staple norm lies in [0, 1]; the higher terms do change the map; saturated parameters keep it invertible."""
    shape = (4, 4) if g.is_abelian else (2, 2)
    f0 = make_flow(g, shape, n_sweeps=2)
    f3 = make_flow(g, shape, n_sweeps=2, degree=3)
    assert f3.param_shape == f0.param_shape + (4,)
    p0 = f0.init_params(scale=1.0, key=KEY)
    p3 = jnp.zeros(f3.param_shape).at[..., 0].set(p0)
    u = g.random(jax.random.PRNGKey(2), (2,) + shape + (2,))
    a, la = f0.forward(p0, u)
    b, lb = f3.forward(p3, u)
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-14)
    np.testing.assert_allclose(np.asarray(lb), np.asarray(la), atol=1e-12)
    c, lc = f3.forward(p3.at[..., 2].set(1.0), u)
    assert float(jnp.max(jnp.abs(c - a))) > 1e-3 and float(jnp.max(jnp.abs(lc - la))) > 1e-3
    q = f3.layers[0].staple_norm(staple_sums(u[0], 0, ("plaquette",), g)[0], 0)
    assert 0.0 <= float(q.min()) and float(q.max()) <= 1.0 + 1e-12
    one = make_flow(g, shape, n_sweeps=1, degree=3)  # saturated: contraction factor 0.95, inverse ill-conditioned
    sat = jnp.full(one.param_shape, 50.0)
    v, lv = one.forward(sat, u)
    back, _ = one.reverse(sat, v)
    assert np.all(np.isfinite(np.asarray(lv))) and float(g.distance(back, u)) < 1e-8
    assert f3.describe()["degree"] == 3 and "degree" not in f0.describe()
    with pytest.raises(ValueError, match=r"expected \(2, 2, 2, 1, 4\)"):
        f3.forward(p0, u)


def test_zero_parameters_give_identity():
    g = SUN(2)
    flow = make_flow(g, (4, 4), loops=("plaquette", "rectangle"))
    u = g.random(KEY, (4, 4, 2))
    u2, lj = flow.forward(flow.init_params(), u)
    np.testing.assert_allclose(u2, u, atol=1e-15)
    assert float(lj) == 0.0


@pytest.mark.parametrize("loops", [("plaquette",), ("plaquette", "rectangle")])
@pytest.mark.parametrize("shape", [(4, 4), (4, 4, 4)])
def test_masks_partition_and_keep_staples_frozen(shape, loops):
    """Per direction the masks cover every site once, and perturbing one active link changes no
    staple sum of any active link (so the Jacobian is block diagonal)."""
    g = SUN(2)
    d = len(shape)
    u = g.random(KEY, shape + (d,))
    for mu in range(d):
        masks = layer_masks(shape, mu, loops)
        np.testing.assert_array_equal(sum(m.astype(int) for m in masks), 1)
        for m in masks[:3]:
            site = tuple(np.argwhere(m)[0])
            v = u.at[site + (mu,)].set(g.mul(g.random(jax.random.PRNGKey(9), ()), u[site + (mu,)]))
            for su, sv in zip(staple_sums(u, mu, loops, g), staple_sums(v, mu, loops, g)):
                diff = np.asarray(jnp.max(jnp.abs(su - sv), axis=(-2, -1)))
                assert diff[m].max() < 1e-13
                assert diff.max() > 1e-3  # frozen links do see the change


@pytest.mark.parametrize("g", [U1(), SUN(3)])
def test_contraction_bound_keeps_jacobian_positive(g):
    """Even with saturated coefficients (raw parameters +-50) every per-link Jacobian stays positive and
    the inverse converges."""
    shape = (4, 4) if g.is_abelian else (2, 2)
    flow = make_flow(g, shape, loops=("plaquette",))
    for sign in (1.0, -1.0):
        params = jnp.full_like(flow.init_params(), 50.0 * sign)
        for layer in flow.layers:
            assert float(jnp.sum(jnp.abs(layer.coefficients(params[0, 0, 0])) * 2 * (len(shape) - 1))) < 1.0
        u = g.random(KEY, (8,) + shape + (2,))
        u2, lj = flow.forward(params, u)
        assert np.all(np.isfinite(np.asarray(lj)))
        back, _ = flow.reverse(params, u2)
        assert float(g.distance(back, u)) < 1e-9


@pytest.mark.parametrize("g,loops", [(U1(), ("plaquette", "rectangle")), (SUN(2), ("plaquette",))])
def test_volume_transfer(g, loops):
    """Parameters are translation invariant: a flow made for 4x4 applies to 8x8; on a configuration that
    tiles the small one 2x2 times it gives the tiled output and exactly 4x the log-Jacobian."""
    small = make_flow(g, (4, 4), loops=loops)
    big = make_flow(g, (8, 8), loops=loops)
    params = small.init_params(scale=1.0, key=KEY)
    u = g.random(KEY, (4, 4, 2))
    tiled = jnp.tile(u, (2, 2) + (1,) * (u.ndim - 2))
    us, ljs = small.forward(params, u)
    ub, ljb = big.forward(params, tiled)
    np.testing.assert_allclose(np.asarray(ub), np.asarray(jnp.tile(us, (2, 2) + (1,) * (u.ndim - 2))), atol=1e-13)
    np.testing.assert_allclose(float(ljb), 4 * float(ljs), rtol=1e-12)


def test_bad_flow_inputs():
    with pytest.raises(ValueError, match="unknown loop shape 'hexagon'"):
        make_flow(U1(), (4, 4), loops=("hexagon",))
    with pytest.raises(ValueError, match="divisible by 4"):
        make_flow(U1(), (6, 6), loops=("plaquette", "rectangle"))
    with pytest.raises(ValueError, match="even extents"):
        make_flow(U1(), (5, 5))
    with pytest.raises(ValueError, match="n_sweeps"):
        make_flow(U1(), (4, 4), n_sweeps=0)
    with pytest.raises(ValueError, match="degree"):
        make_flow(U1(), (4, 4), degree=-1)
    with pytest.raises(ValueError, match="degree"):
        make_flow(U1(), (4, 4), degree=1.5)


def test_phi_polynomial_by_precision_against_the_spectral_form():
    """``F(A) = (1 - e^{-A}) / A`` of the exact Jacobian: the float64 polynomial (degree 23) and the float32 one
    (degree 15, fewer products) agree with the spectral form of the antisymmetric ``A`` up to ``|A| = 1.9`` (the bound
    of the layers) to their precision; a degree-7 polynomial is visibly worse (negative control)."""
    from corrflow.flows.jacobian import _phi, _phi_degree

    rng = np.random.default_rng(4)
    x = rng.normal(size=(64, 8, 8))
    a = x - np.swapaxes(x, 1, 2)
    a *= (np.linspace(0.01, 1.9, 64) / np.linalg.norm(a, 2, axis=(1, 2)))[:, None, None]
    lam, vec = np.linalg.eig(a)  # purely imaginary eigenvalues i theta
    f = np.where(np.abs(lam) < 1e-12, 1.0, (1 - np.exp(-lam)) / np.where(np.abs(lam) < 1e-12, 1.0, lam))
    exact = np.real(np.einsum("nij,nj,njk->nik", vec, f, np.linalg.inv(vec)))
    assert _phi_degree(jnp.float64) == 23 and _phi_degree(jnp.float32) == 15
    err64 = np.max(np.abs(np.asarray(_phi(jnp.asarray(a))) - exact))
    err32 = np.max(np.abs(np.asarray(_phi(jnp.asarray(a, jnp.float32)), np.float64) - exact))
    err7 = np.max(np.abs(np.asarray(_phi(jnp.asarray(a), degree=7)) - exact))
    assert err64 < 1e-12 and err32 < 5e-7 and err7 > 1e-5, (err64, err32, err7)  # eig itself: ~1e-13
    with pytest.raises(ValueError, match="multiple of 4"):
        _phi(jnp.asarray(a), degree=10)


def test_training_that_ends_worse_than_its_start_is_flagged():
    """Without held-out selection the last epoch is kept: a history that ends more than 2 points of weight ESS
    below its start gets a warning (train and the pipeline print it); with held-out selection, the start is a
    candidate, so there is nothing to flag."""
    from corrflow.flows.train import worse_than_start

    start = {"epoch": 0, "loss": -1.0, "ess": 0.999}
    assert worse_than_start([start, {"epoch": 1, "loss": -1.1, "ess": 0.985}]) is None
    msg = worse_than_start([start, {"epoch": 1, "loss": -0.9, "ess": 0.835}])
    assert msg is not None and "(0.835) is below the starting flow's (0.999)" in msg and "--held-out" in msg
    held = [dict(start, held_ess=0.99, held_var_logw=0.01), {"epoch": 1, "ess": 0.8, "held_ess": 0.7,
                                                              "held_var_logw": 0.3}]
    assert worse_than_start(held) is None


def test_kept_epoch_is_the_one_train_returns():
    """The record of the parameters `train` returns: the last epoch without held-out configurations, with them the
    smallest held-out var(log w), the first of equal ones (the selection replaces only on a strict improvement)."""
    from corrflow.flows.train import held_out_summary, kept_epoch

    plain = [{"epoch": 0, "ess": 0.5}, {"epoch": 1, "ess": 0.7}, {"epoch": 2, "ess": 0.6}]
    assert kept_epoch(plain) is plain[-1] and held_out_summary(plain) is None
    held = [{"epoch": e, "ess": 0.5, "held_ess": 0.5 + e / 10, "held_var_logw": v}
            for e, v in enumerate((0.4, 0.2, 0.3, 0.2))]
    assert kept_epoch(held)["epoch"] == 1
    assert held_out_summary(held) == "held-out ESS 0.500 -> 0.600 (epoch 1 kept, var log w 0.4 -> 0.2)"
