import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.linalg import expm

from corrflow.groups import SUN, U1, dagger, get_group, matmul, su_n_generators

KEY = jax.random.PRNGKey(7)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_generators_normalisation(n):
    t = su_n_generators(n)
    assert t.shape == (n * n - 1, n, n)
    np.testing.assert_allclose(np.einsum("aij,bji->ab", t, t), -0.5 * np.eye(n * n - 1), atol=1e-14)
    np.testing.assert_allclose(t + np.conj(np.swapaxes(t, -1, -2)), 0, atol=1e-15)  # anti-Hermitian
    np.testing.assert_allclose(np.trace(t, axis1=1, axis2=2), 0, atol=1e-15)


# the closed forms (N = 2, 3) for any size; the generic Taylor series with 6 squarings for |X| <~ 32
@pytest.mark.parametrize("n,scale", [(n, s) for n in (2, 3, 4) for s in (1e-5, 1e-2, 0.5, 2.0, 10.0)]
                         + [(2, 40.0), (3, 40.0)])
def test_exp_matches_expm(n, scale):
    g = SUN(n)
    x = g.random_algebra(KEY, (64,)) * scale
    ref = jax.vmap(expm)(x)
    np.testing.assert_allclose(g.exp(x), ref, atol=1e-12 * max(1.0, scale))
    assert float(g.unitarity_violation(g.exp(x))) < 1e-13


def test_exp_su3_single_precision_and_near_degenerate_spectra():
    """complex64 against expm in double (SU(3) uses polynomial sines and a Newton cube root instead of libm), and
    spectra near the degenerate points c0 = +-c0_max, where cos(theta/3) -> 1 and w -> 0."""
    g = SUN(3)
    x = g.random_algebra(KEY, (256,)) * 1.5
    np.testing.assert_allclose(g.exp(x.astype(jnp.complex64)), jax.vmap(expm)(x), atol=3e-6)
    assert g.exp(x.astype(jnp.complex64)).dtype == jnp.complex64
    base = jnp.asarray(np.diag([1j, 1j, -2j]))
    pert = g.random_algebra(jax.random.PRNGKey(2), (64,))
    for eps in (1e-9, 1e-6, 1e-3, 3e-2):
        for sign in (1.0, -1.0):
            y = sign * 0.8 * base + eps * pert
            np.testing.assert_allclose(g.exp(y), jax.vmap(expm)(y), atol=2e-14)


def test_exp_su3_matches_libm_reference_values_and_gradients():
    """The polynomial/Newton SU(3) exponential against the previous libm one (``libm=True``): same numbers to
    rounding, and the same derivatives along the algebra (flows differentiate through it; the Cayley–Hamilton form
    holds on su(3) only -- ``det Q`` and ``tr Q^3 / 3`` agree there, not off it -- so only those directions mean
    anything, and every caller reaches the exponential through ``P_TA``)."""
    from corrflow.matrices import exp_su3

    g = SUN(3)
    x = g.random_algebra(jax.random.PRNGKey(4), (128,)) * 0.7
    np.testing.assert_allclose(exp_su3(x), exp_su3(x, libm=True), atol=2e-15)
    f = lambda y, libm: jnp.sum(jnp.real(exp_su3(y, libm) * jnp.conj(jnp.flip(y, 0))))  # noqa: E731
    np.testing.assert_allclose(g.project_algebra(jax.grad(f)(x, False)), g.project_algebra(jax.grad(f)(x, True)),
                               atol=1e-13)
    dx = g.random_algebra(jax.random.PRNGKey(5), (128,))
    tangents = [jax.jvp(lambda y: exp_su3(y, libm), (x,), (dx,))[1] for libm in (False, True)]
    np.testing.assert_allclose(tangents[0], tangents[1], atol=1e-13)
    # P_TA in front, as every caller has it: the full gradients agree
    h = lambda m, libm: f(g.project_algebra(m), libm)  # noqa: E731
    np.testing.assert_allclose(jax.grad(h)(x, False), jax.grad(h)(x, True), atol=1e-13)


def test_exp_su3_degenerate_spectrum_and_gradient():
    g = SUN(3)
    x = jnp.asarray(np.diag([1j, 1j, -2j])) * 0.7  # two equal eigenvalues: c0 = -c0_max
    np.testing.assert_allclose(g.exp(x), expm(x), atol=1e-14)
    for s0 in (0.0, 1.0):
        grad = jax.grad(lambda s: jnp.real(jnp.trace(g.exp(s * x))))(s0)
        fd = (jnp.real(jnp.trace(expm((s0 + 1e-6) * x))) - jnp.real(jnp.trace(expm((s0 - 1e-6) * x)))) / 2e-6
        assert np.isfinite(grad) and abs(grad - fd) < 1e-6


@pytest.mark.parametrize("n", [2, 3, 4])
def test_exp_inverse_is_exp_of_minus(n):
    g = SUN(n)
    x = g.random_algebra(KEY, (32,))
    eye = jnp.eye(n)
    np.testing.assert_allclose(matmul(g.exp(-x), g.exp(x)), jnp.broadcast_to(eye, x.shape), atol=1e-13)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_algebra_coords_roundtrip_and_projection(n):
    g = SUN(n)
    c = jax.random.normal(KEY, (10, n * n - 1))
    np.testing.assert_allclose(g.algebra_coords(g.from_coords(c)), c, atol=1e-14)
    m = jax.random.normal(KEY, (10, n, n)) + 1j * jax.random.normal(jax.random.PRNGKey(3), (10, n, n))
    p = g.project_algebra(m)
    np.testing.assert_allclose(p, -dagger(p), atol=1e-15)
    np.testing.assert_allclose(jnp.trace(p, axis1=-2, axis2=-1), 0, atol=1e-14)
    np.testing.assert_allclose(g.project_algebra(p), p, atol=1e-15)  # idempotent


@pytest.mark.parametrize("n", [2, 3, 4])
def test_haar_moments(n):
    """Haar SU(N): <tr U> = 0 and <|tr U|^2> = 1 (N >= 2), checked as pulls < 4."""
    g = SUN(n)
    u = g.random(KEY, (20000,))
    assert float(g.unitarity_violation(u)) < 1e-13
    tr = np.asarray(jnp.trace(u, axis1=-2, axis2=-1))
    m = len(tr)
    for val, exact in ((tr.real, 0.0), (tr.imag, 0.0), (np.abs(tr) ** 2, 1.0)):
        pull = (val.mean() - exact) / (val.std(ddof=1) / np.sqrt(m))
        assert abs(pull) < 4, pull


def test_haar_u1_uniform():
    g = U1()
    th = np.asarray(g.random(KEY, (50000,)))
    assert th.min() >= -np.pi and th.max() < np.pi
    for k in (1, 2):
        c = np.cos(k * th)
        assert abs(c.mean() / (c.std() / np.sqrt(len(c)))) < 4


@pytest.mark.parametrize("n", [2, 3, 5])
def test_normalize_restores_group(n):
    g = SUN(n)
    u = g.random(KEY, (100,))
    noisy = u + 1e-6 * (jax.random.normal(KEY, u.shape) + 0j)
    assert float(g.unitarity_violation(noisy)) > 1e-8
    fixed = g.normalize(noisy)
    assert float(g.unitarity_violation(fixed)) < 1e-13
    assert float(g.distance(fixed, u)) < 1e-5
    np.testing.assert_allclose(g.normalize(u), u, atol=1e-13)  # no-op on group elements


def test_u1_normalize_wraps():
    g = U1()
    th = jnp.array([-7.0, -np.pi, 0.3, np.pi, 10.0])
    w = g.normalize(th)
    assert np.all((w >= -np.pi) & (w < np.pi))
    np.testing.assert_allclose(np.cos(w), np.cos(th), atol=1e-14)
    np.testing.assert_allclose(np.sin(w), np.sin(th), atol=1e-14)


def test_get_group_names_and_errors():
    assert get_group("u1") == U1()
    assert get_group("SU3") == SUN(3)
    assert get_group("su(2)") == SUN(2)
    assert get_group("su5").N == 5
    for bad in ("so3", "su1", "u2", "", "su"):
        with pytest.raises(ValueError, match="allowed"):
            get_group(bad)
    with pytest.raises(ValueError, match="N must be"):
        SUN(1)
