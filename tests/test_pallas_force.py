"""The fused Pallas staple force (corrflow.pallas_force) against the reference kernel, on CPU through Pallas'
interpreter: the same arithmetic that Triton compiles on GPUs (the GPU itself is checked by
``benchmarks/su3.py --check-pallas``).  Each interpreted kernel takes ~20 s to compile, so the cases are few and
combine what they check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from corrflow import lattice, pallas_force
from corrflow.groups import SUN
from corrflow.observables import gradient_flow as gf
from corrflow.theories import WilsonGaugeAction


def test_su3_4d_two_chains_anisotropic_weights_match_reference():
    # extents 3 and 4 tell x + mu from x - mu and one axis from another; the volume 96 is 6 blocks of 16 sites
    th = WilsonGaugeAction("su3", (3, 4, 2, 4), beta=5.9, xi=1.3, lam=0.2)
    u = th.group.random(jax.random.PRNGKey(3), (2, *th.shape, 4), jnp.complex128)
    w = th.plane_couplings()
    f = jax.jit(lambda uu: pallas_force.staple_force(uu, th.group, w, interpret=True))(u)
    ref = lattice.staple_force_reference(u, th.group, w)
    assert f.shape == ref.shape and f.dtype == u.dtype
    np.testing.assert_allclose(np.asarray(f), np.asarray(ref), atol=1e-12 * float(jnp.max(jnp.abs(ref))))
    # negative control: another chain's force differs at this scale
    assert float(jnp.max(jnp.abs(f[0] - ref[1]))) > 1e-2


def test_dispatch_and_derivatives_su2_3d(monkeypatch):
    """CORRFLOW_PALLAS=1 routes lattice.staple_force (hence the Wilson flow) through the kernel; values and the
    gradient of a flow step agree with the XLA kernel (derivatives come from it through custom_jvp), in complex64."""
    g = SUN(2)
    u = g.random(jax.random.PRNGKey(5), (4, 2, 4, 3), jnp.complex64)
    v = jax.random.normal(jax.random.PRNGKey(6), u.shape[:-2])
    calls = []
    real = pallas_force.staple_force

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    def obs(uu):
        return jnp.sum(jnp.real(gf.flow_step(uu, g, 0.05)[..., 0, 0]) * v)

    monkeypatch.setattr(pallas_force, "staple_force", spy)
    monkeypatch.setenv(pallas_force.ENV, "1")
    f_p, g_p = jax.jit(lambda uu: (lattice.staple_force(uu, g), jax.grad(obs)(uu)))(u)
    assert calls
    monkeypatch.setenv(pallas_force.ENV, "0")
    calls.clear()
    f_x, g_x = jax.jit(lambda uu: (lattice.staple_force(uu, g), jax.grad(obs)(uu)))(u)
    assert not calls
    np.testing.assert_allclose(np.asarray(f_p), np.asarray(f_x), atol=2e-6 * float(jnp.max(jnp.abs(f_x))))
    np.testing.assert_allclose(np.asarray(g_p), np.asarray(g_x), atol=2e-6 * float(jnp.max(jnp.abs(g_x))))


def test_loop_variant_matches_reference():
    """``loop=True`` (the planes in a ``fori_loop``: less code for Triton to compile) gives the same force."""
    g = SUN(2)
    u = g.random(jax.random.PRNGKey(8), (3, 4, 2, 3), jnp.complex128)
    w = jnp.asarray([[0.0, 1.5, 2.0], [1.5, 0.0, 0.7], [2.0, 0.7, 0.0]])
    f = pallas_force.staple_force(u, g, w, interpret=True, loop=True)
    ref = lattice.staple_force_reference(u, g, w)
    np.testing.assert_allclose(np.asarray(f), np.asarray(ref), atol=1e-12 * float(jnp.max(jnp.abs(ref))))


def test_use_pallas_modes(monkeypatch):
    monkeypatch.delenv(pallas_force.ENV, raising=False)
    assert pallas_force.use_pallas() is False  # opt-in
    monkeypatch.setenv(pallas_force.ENV, "auto")
    assert pallas_force.use_pallas() is (jax.default_backend() == "gpu")
    monkeypatch.setenv(pallas_force.ENV, "yes")
    assert pallas_force.use_pallas() is True
    monkeypatch.setenv(pallas_force.ENV, "sometimes")
    with pytest.raises(ValueError, match="CORRFLOW_PALLAS='sometimes': use 1"):
        pallas_force.use_pallas()


def test_bad_inputs():
    g = SUN(3)
    u = g.random(jax.random.PRNGKey(0), (3, 4, 2, 4, 4), jnp.complex64)
    with pytest.raises(ValueError, match="not a multiple of block = 64"):
        pallas_force.staple_force(u, g, block=64, interpret=True)
    with pytest.raises(ValueError, match="SU\\(N\\) links"):
        pallas_force.staple_force(jnp.zeros((4, 4, 2)), __import__("corrflow").groups.U1())


def test_neighbour_tables():
    fwd, bwd = pallas_force.neighbour_tables((3, 4))
    idx = np.arange(12).reshape(3, 4)
    assert fwd[0, idx[2, 1]] == idx[0, 1] and fwd[1, idx[2, 3]] == idx[2, 0]
    assert bwd[1, idx[1, 0]] == idx[1, 3] and np.all(fwd[0][bwd[0]] == np.arange(12))
