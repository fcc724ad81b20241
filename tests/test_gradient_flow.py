"""Wilson flow: normalisation (heat-equation decay), third-order convergence, exact values on a constant abelian
field (E and the clover charge), gauge covariance, single precision, and the t0 / w0 interpolation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gauge_helpers import gauge_transform

from corrflow import lattice
from corrflow.groups import get_group
from corrflow.observables import gradient_flow as gf

SU3 = get_group("su3")
H = jnp.diag(jnp.array([1j, -1j, 0.0]))  # anti-Hermitian traceless: exp(phi H) = diag(e^{i phi}, e^{-i phi}, 1)


def _expH(phi):
    phi = jnp.asarray(phi, jnp.float64)
    return jnp.exp(phi[..., None, None] * H) * jnp.eye(3)  # H diagonal: entrywise exp on the diagonal


def _abelian_links(shape, angles):
    """Link field with U_mu(x) = exp(angles[mu](x) H); ``angles`` is a list of d site arrays."""
    d = len(shape)
    links = [jnp.broadcast_to(_expH(a), shape + (3, 3)) for a in angles]
    return jnp.stack(links, axis=len(shape)).astype(jnp.complex128).reshape(shape + (d, 3, 3))


def _flux_config(shape, n01, n23):
    """Constant field strength f01 = 2 pi n01/(L0 L1), f23 = 2 pi n23/(L2 L3) along H (twisted-free torus)."""
    L0, L1, L2, L3 = shape
    x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    f01, f23 = 2 * np.pi * n01 / (L0 * L1), 2 * np.pi * n23 / (L2 * L3)
    a0 = np.where(x[0] == L0 - 1, -f01 * L0 * x[1], 0.0)
    a1 = f01 * x[0]
    a2 = np.where(x[2] == L2 - 1, -f23 * L2 * x[3], 0.0)
    a3 = f23 * x[2]
    return _abelian_links(shape, [a0, a1, a2, a3]), f01, f23


@pytest.fixture(scope="module")
def rough_config():
    """A rough 4^4 SU(3) configuration: Haar-random links flowed to t = 0.1 (the compiled flow is shared)."""
    u = SU3.random(jax.random.PRNGKey(3), (4, 4, 4, 4, 4))
    return gf.wilson_flow(u, SU3, t_max=0.1, eps=0.05, measure_every=0.1).links


def test_weak_field_decays_like_the_heat_equation():
    """A transverse plane wave A_1(x) = a cos(p x_0) is damped by exp(-p_hat^2 t): fixes the flow normalisation."""
    shape = (8, 2, 2, 2)
    x0 = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")[0]
    p = 2 * np.pi / 8
    amp = 1e-4
    zero = np.zeros(shape)
    u = _abelian_links(shape, [zero, amp * np.cos(p * x0), zero, zero])
    hist = gf.wilson_flow(u, SU3, t_max=0.5, eps=0.01, measure_every=0.5)
    angle = np.angle(np.asarray(hist.links[..., 1, 0, 0]))
    phat2 = 4 * np.sin(p / 2) ** 2
    expected = amp * np.cos(p * x0) * np.exp(-phat2 * 0.5)
    np.testing.assert_allclose(angle, expected, atol=1e-9 * amp * 10, rtol=1e-6)
    # E decays twice as fast as the amplitude
    np.testing.assert_allclose(hist.E_plaq[-1] / hist.E_plaq[0], np.exp(-2 * phat2 * 0.5), rtol=1e-5)


def test_integrator_is_third_order(rough_config):
    u = rough_config
    t = 0.4

    def run(eps):
        return np.asarray(gf.wilson_flow(u, SU3, t_max=t, eps=eps, measure_every=t).links)

    ref = run(0.00625)
    e1 = np.max(np.abs(run(0.05) - ref))
    e2 = np.max(np.abs(run(0.025) - ref))
    order = np.log2(e1 / e2)
    assert 2.7 < order < 3.3, f"observed order {order:.2f} of the global error: expected 3"


def test_constant_abelian_field_exact_values_and_stationary():
    shape = (4, 4, 4, 4)
    u, f01, f23 = _flux_config(shape, 1, 1)
    # plaquettes: exp(f H) in planes (0,1), (2,3); identity elsewhere
    e_plaq = 2 * 2 * (2 - 2 * np.cos(f01))  # two planes, Re tr(1 - P) = 2 - 2 cos f
    np.testing.assert_allclose(gf.energy_density_plaquette(u, SU3), e_plaq, rtol=1e-12)
    e_clov = 2 * (2 * np.sin(f01) ** 2)  # G = i sin f diag(1,-1,0): -tr G^2 = 2 sin^2 f
    np.testing.assert_allclose(gf.energy_density_clover(u, SU3), e_clov, rtol=1e-12)
    q_expected = 2 * (np.sin(f01) / f01) * (np.sin(f23) / f23)
    np.testing.assert_allclose(gf.topological_charge_clover(u, SU3), q_expected, rtol=1e-12)
    # two flux quanta in one plane: Q doubles; opposite flux flips the sign
    u2, g01, g23 = _flux_config(shape, 2, -1)
    np.testing.assert_allclose(gf.topological_charge_clover(u2, SU3),
                               -4 * (np.sin(g01) / g01) * (np.sin(g23) / g23), rtol=1e-12)
    # a constant field strength solves the flow equation: E and Q do not change
    hist = gf.wilson_flow(u, SU3, t_max=0.2, eps=0.02, measure_every=0.2)
    np.testing.assert_allclose(np.asarray(hist.E_clov), e_clov, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(hist.Q), q_expected, rtol=1e-10)


def test_gauge_invariance_and_flow_covariance(rough_config):
    u = rough_config
    omega = SU3.random(jax.random.PRNGKey(7), (4, 4, 4, 4))
    ug = gauge_transform(u, omega, SU3)
    for fn in (gf.energy_density_plaquette, gf.energy_density_clover, gf.topological_charge_clover):
        np.testing.assert_allclose(fn(ug, SU3), fn(u, SU3), rtol=1e-11, atol=1e-12)
    flowed = gf.wilson_flow(u, SU3, t_max=0.1, eps=0.05, measure_every=0.1).links
    flowed_g = gf.wilson_flow(ug, SU3, t_max=0.1, eps=0.05, measure_every=0.1).links
    np.testing.assert_allclose(flowed_g, gauge_transform(flowed, omega, SU3), atol=1e-11)


def test_single_precision_agrees_and_keeps_unitarity(rough_config):
    u64 = rough_config
    h64 = gf.wilson_flow(u64, SU3, t_max=0.4, eps=0.05, measure_every=0.4)
    h32 = gf.wilson_flow(u64.astype(jnp.complex64), SU3, t_max=0.4, eps=0.05, measure_every=0.4)
    assert h32.links.dtype == jnp.complex64
    np.testing.assert_allclose(np.asarray(h32.E_plaq), np.asarray(h64.E_plaq), rtol=2e-5)
    np.testing.assert_allclose(np.asarray(h32.E_clov), np.asarray(h64.E_clov), rtol=2e-5)
    assert float(SU3.unitarity_violation(h32.links)) < 1e-5
    assert float(SU3.unitarity_violation(h64.links)) < 1e-12


def test_batches_flow_like_single_configurations_and_action_decreases(rough_config):
    u = rough_config
    batch = jnp.stack([u, lattice.shift(u, 0, 1, 4, SU3)])  # a translated copy: same E, Q
    h = gf.wilson_flow(batch, SU3, t_max=0.2, eps=0.05, measure_every=0.1)
    assert h.E_clov.shape == (2, 3) and h.Q.shape == (2, 3)
    np.testing.assert_allclose(h.E_clov[0], h.E_clov[1], rtol=1e-12)
    np.testing.assert_allclose(h.Q[0], h.Q[1], atol=1e-10)
    assert np.all(np.diff(np.asarray(h.E_plaq), axis=-1) < 0), "the flow is a gradient descent of S_w"
    single = gf.wilson_flow(u, SU3, t_max=0.2, eps=0.05, measure_every=0.2)
    np.testing.assert_allclose(h.E_clov[0, -1], single.E_clov[-1], rtol=1e-12)


def test_a_batch_flows_one_configuration_after_the_other_on_cpus(rough_config, monkeypatch):
    """Where :mod:`corrflow.batching` says so (8^4 and up on CPUs; forced here) a batch of configurations (two
    batch axes) flows with ``lax.map`` over them: the numbers of the batch flowed as one field, to rounding."""
    from corrflow import batching

    u = rough_config
    batch = jnp.stack([jnp.stack([u, lattice.shift(u, 1, 1, 4, SU3)]), jnp.stack([lattice.shift(u, 2, 1, 4, SU3), u])])
    args = dict(t_max=0.1, eps=0.05, measure_every=0.05)
    jax.clear_caches()
    whole = gf.wilson_flow(batch, SU3, **args)
    asked = []
    monkeypatch.setattr(batching, "one_at_a_time", lambda nbytes, n: asked.append((nbytes, n)) or True)
    jax.clear_caches()
    one_by_one = gf.wilson_flow(batch, SU3, **args)
    assert asked == [(u.nbytes, 4)]
    for a, b in ((whole.E_clov, one_by_one.E_clov), (whole.Q, one_by_one.Q), (whole.links, one_by_one.links)):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12, atol=1e-12)
    jax.clear_caches()


def test_flow_scale_interpolation():
    t = np.linspace(0, 3, 61)
    y = 0.05 * t**2 + 0.02 * t  # smooth monotone; crossing at 0.3 solved exactly
    exact = (-0.02 + np.sqrt(0.02**2 + 4 * 0.05 * 0.3)) / (2 * 0.05)
    assert gf.flow_scale(t, y, 0.3) == pytest.approx(exact, rel=1e-10)
    tm, w = gf.w_function(t, y)
    # W = t (0.1 t + 0.02) = 0.3  ->  t = (-0.02 + sqrt(0.0004 + 0.12)) / 0.2
    tw = (-0.02 + np.sqrt(0.02**2 + 4 * 0.1 * 0.3)) / (2 * 0.1)
    assert gf.flow_scale(tm, w, 0.3) == pytest.approx(tw, rel=1e-6)
    with pytest.raises(ValueError, match="never reaches"):
        gf.flow_scale(t, y, 10.0)


def test_bad_input():
    with pytest.raises(ValueError, match="U\\(1\\)"):
        gf.wilson_flow(jnp.zeros((4, 4, 2)), "u1", 1.0)
    u = SU3.identity((2, 2, 2, 2, 4))
    with pytest.raises(ValueError, match="multiple of eps"):
        gf.wilson_flow(u, SU3, t_max=1.0, eps=0.03, measure_every=0.05)
    with pytest.raises(ValueError, match="4 dimensions"):
        gf.topological_charge_clover(SU3.identity((2, 2, 2)), SU3)
