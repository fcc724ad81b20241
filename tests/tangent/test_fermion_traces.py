"""Fermion parts of the tangent estimator (corrflow.tangent.fermions) on one configuration at a time:

* exact traces against independent computations: ``∂_m S_f`` against the dense-inverse ``dS_dmass``, ``v·∇S_f``
  against a central finite difference of the fermion action along the field, the explicit mass derivative and the
  directional derivative of the pion correlator (through the CG solver) against finite differences;
* stochastic traces unbiased: the mean over independent noise vectors matches the exact trace within 4 sigma of the
  noise, for Z2 and Gaussian noise, in the Schwinger model and in 4D SU(3) with Wilson fermions; negative control:
  the same test against the exact trace at another mass fails by far.

The ensemble-level check (tangent and connected estimates against a finite difference by exact reweighting) is in
tests/test_fermions.py, on its exact-determinant HMC ensemble.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from corrflow import hmc, make_theory
from corrflow import tangent as tg
from corrflow.observables.fermions import dS_dmass, pion_correlator
from corrflow.tangent.fermions import fermion_derivatives

PULL = 4.0


def _schwinger_config(seed=0):
    th = make_theory("schwinger", (4, 4), beta=2.0, mass=0.3)
    u = jax.random.uniform(jax.random.PRNGKey(seed), th.link_shape, jnp.float64, -1.2, 1.2)
    return th, u


def test_exact_traces_match_dense_inverse_and_finite_differences():
    th, u = _schwinger_config()
    fld = tg.PlaquetteField(2)
    vks = fld.vectors(u, th.gauge)
    dm, vs = fermion_derivatives(th, u, vks, jax.random.PRNGKey(0), tg.FermionTraces("exact"))
    assert float(dm) == pytest.approx(float(dS_dmass(th, u)), rel=1e-10)
    h = 1e-5
    for k in range(vks.shape[0]):
        fd = (th.fermion_action(u + h * vks[k, ..., 0]) - th.fermion_action(u - h * vks[k, ..., 0])) / (2 * h)
        assert float(vs[k]) == pytest.approx(float(fd), rel=1e-6, abs=1e-8) and abs(float(vs[k])) > 1e-3


def test_pion_and_condensate_derivatives_match_finite_differences():
    th, u = _schwinger_config(1)
    names = ("condensate", "pion@1", "pion@2")
    vec_of = lambda t: tg.observables_vector(names, th.group, th.shape, t)  # noqa: E731
    from corrflow.tangent.fermions import value_and_derivatives, value_and_mass_derivative

    o, got = value_and_mass_derivative(vec_of, th, u)
    np.testing.assert_allclose(np.asarray(o), np.asarray(vec_of(th)(u)), rtol=1e-12)  # two programs: rounding
    h = 1e-5
    fd = (np.asarray(vec_of(th.replace(mass=0.3 + h))(u)) - np.asarray(vec_of(th.replace(mass=0.3 - h))(u))) / (2 * h)
    np.testing.assert_allclose(got, fd, rtol=1e-6)
    c = pion_correlator(th, u, 1, "bicgstab+cg")  # the tangent estimator's solver
    assert float(vec_of(th)(u)[1]) == pytest.approx(float(c[1]), rel=1e-12)
    assert float(c[1]) == pytest.approx(float(pion_correlator(th, u)[1]), rel=1e-9)  # = CG on the normal equations
    v = jax.random.normal(jax.random.PRNGKey(2), tg.coords_shape(th))
    dv = np.asarray(tg.directional_derivative(vec_of(th), u, v, th.group))
    fdv = (np.asarray(vec_of(th)(u + h * v[..., 0])) - np.asarray(vec_of(th)(u - h * v[..., 0]))) / (2 * h)
    np.testing.assert_allclose(dv, fdv, rtol=1e-6)
    assert np.all(np.abs(dv) > 1e-4)
    # both derivatives from one linearisation (the contracted pass): the same as the two forward passes
    o2, dv2, dm2 = value_and_derivatives(vec_of, th, u, v)
    np.testing.assert_allclose(np.asarray(o2), np.asarray(o), rtol=1e-11)  # solver rounding of two programs
    np.testing.assert_allclose(np.asarray(dv2), dv, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(dm2), np.asarray(got), rtol=1e-10)


def _noise_samples(th, u, vks, n, kind, dilution="none"):
    tr = tg.FermionTraces("stochastic", 1, kind, tol=1e-12, dilution=dilution)
    f = jax.jit(jax.vmap(lambda k: fermion_derivatives(th, u, vks, k, tr)))
    dm, vs = f(jax.random.split(jax.random.PRNGKey(7), n))
    return np.concatenate([np.asarray(dm)[:, None], np.asarray(vs)], axis=1)


@pytest.mark.parametrize("kind,dilution", [("z2", "none"), ("gaussian", "none"), ("z2", "even-odd"), ("z2", "full"),
                                            ("gaussian", "spin-color")])
def test_stochastic_traces_are_unbiased_schwinger(kind, dilution):
    th, u = _schwinger_config(2)
    vks = tg.PlaquetteField(2).vectors(u, th.gauge)
    dm, vs = fermion_derivatives(th, u, vks, jax.random.PRNGKey(0), tg.FermionTraces("exact"))
    exact = np.concatenate([[float(dm)], np.asarray(vs)])
    s = _noise_samples(th, u, vks, 400, kind, dilution)
    if dilution != "none" and kind == "z2":  # Z2 noise has no diagonal noise, so removing the couplings between the
        # pieces shrinks the spread of ∂_m S (Gaussian noise keeps its diagonal part: dilution helps it little)
        s0 = _noise_samples(th, u, vks, 400, kind)
        assert s[:, 0].std() < 0.8 * s0[:, 0].std(), (s[:, 0].std(), s0[:, 0].std())
    err = s.std(0, ddof=1) / np.sqrt(len(s))
    pulls = (s.mean(0) - exact) / err
    assert np.all(np.abs(pulls) < PULL), pulls
    assert np.all(s.std(0) > 0)  # really stochastic
    # negative control: the exact traces at another mass are many sigma away
    dm2, _ = fermion_derivatives(th.replace(mass=0.6), u, vks, jax.random.PRNGKey(0), tg.FermionTraces("exact"))
    assert abs((s[:, 0].mean() - float(dm2)) / err[0]) > 2 * PULL


def test_stochastic_traces_are_unbiased_su3_wilson():
    th = make_theory("su3-wilson", (2, 2, 2, 2), beta=5.5, mass=0.5)
    u = hmc.hot_start(jax.random.PRNGKey(3), th.gauge)
    vks = jax.random.normal(jax.random.PRNGKey(4), (1,) + tg.coords_shape(th), jnp.float64)
    dm, vs = fermion_derivatives(th, u, vks, jax.random.PRNGKey(0), tg.FermionTraces("exact"))
    exact = np.array([float(dm), float(vs[0])])
    s = _noise_samples(th, u, vks, 64, "z2")
    pulls = (s.mean(0) - exact) / (s.std(0, ddof=1) / np.sqrt(len(s)))
    assert np.all(np.abs(pulls) < PULL), (pulls, exact)
    assert tg.FermionTraces().resolve(th) == "exact"  # 2^4 x 4 x 3 / 2 = 96 <= 512
    big = make_theory("su3-wilson", (4, 4, 4, 4), beta=5.5, mass=0.5)
    assert tg.FermionTraces().resolve(big) == "stochastic"


def test_stochastic_condensate_is_unbiased_with_its_derivatives():
    """The noise-vector condensate (for lattices where the dense inverse does not fit) and its forward-mode
    derivatives in the mass and along a field: their means over noise match the dense condensate's (pull < 4);
    negative control: the dense value at another mass is many sigma away."""
    from corrflow.observables.fermions import chiral_condensate, chiral_condensate_stochastic
    from corrflow.tangent.fermions import trace_noise

    th, u = _schwinger_config(3)
    # along the condensate's own gradient (U(1) links are angles), so the directional derivative is far from zero
    v = jax.grad(lambda w: chiral_condensate(th, w))(u).reshape(tg.coords_shape(th))

    def triple(f):  # (value, d/dm, v.grad) of f(theory, links)
        val, dm = jax.jvp(lambda m: f(th.replace(mass=m), u), (th.mass,), (1.0,))
        dv = tg.directional_derivative(lambda w: jnp.atleast_1d(f(th, w)), u, v, th.group)[0]
        return jnp.stack([val, dm, dv])

    exact = np.asarray(triple(lambda t, w: chiral_condensate(t, w)))

    def one(key):
        eta = trace_noise(key, 1, th.fermion_shape, "z2", jnp.complex128)
        return triple(lambda t, w: chiral_condensate_stochastic(t, w, eta, tol=1e-12))

    s = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(11), 300)))
    err = s.std(0, ddof=1) / np.sqrt(len(s))
    pulls = (s.mean(0) - exact) / err
    assert np.all(np.abs(pulls) < PULL), (pulls, exact)
    assert np.all(s.std(0) > 0) and np.all(np.abs(exact) > 10 * err)  # stochastic, and a test that can fail
    other = float(chiral_condensate(th.replace(mass=0.6), u))
    assert abs((s[:, 0].mean() - other) / err[0]) > 2 * PULL


def test_dense_algebra_refused_on_large_lattices():
    """4^4 SU(3) Wilson (V Ns Nc = 3072): exact traces and the dense condensate raise a one-line ValueError that
    names the way out, instead of allocating hundreds of GB."""
    from corrflow.observables.fermions import FermionMeasurements, chiral_condensate

    big = make_theory("su3-wilson", (4, 4, 4, 4), beta=5.5, mass=0.5)
    u = jnp.zeros(big.link_shape, jnp.complex64)
    for call in (lambda: tg.FermionTraces("exact").resolve(big), lambda: chiral_condensate(big, u),
                 lambda: FermionMeasurements(big, condensate=True)):
        with pytest.raises(ValueError, match="V\\*Ns\\*Nc = 3072 > 2048.*stochastic") as e:
            call()
        assert "\n" not in str(e.value)
    assert tg.FermionTraces("stochastic").resolve(big) == "stochastic"


def test_dilution_masks_partition_the_index_set():
    th = make_theory("su3-wilson", (2, 2, 2, 2), beta=5.5, mass=0.5)
    from corrflow.tangent.fermions import dilution_masks

    for dilution, p in (("none", 1), ("even-odd", 2), ("spin-color", 12), ("full", 24)):
        m = dilution_masks(th, dilution)
        assert m.shape == (p,) + th.fermion_shape and set(np.unique(m)) <= {0.0, 1.0}
        np.testing.assert_array_equal(m.sum(0), 1.0)
    with pytest.raises(ValueError, match="unknown dilution 'time'"):
        tg.FermionTraces("stochastic", dilution="time")
