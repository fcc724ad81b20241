"""Valence (quenched) Wilson quarks on pure-gauge 4D SU(3) fields: BiCGStab against CG and the free field."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import corrflow  # noqa: F401  (x64)
from corrflow import exact, make_theory
from corrflow.observables.fermions import FermionMeasurements, pion_correlator, propagator, valence_quarks
from corrflow.theories.fermions import bicgstab, conjugate_gradient, dirac, dirac_dagger, kappa_from_mass

SHAPE = (4, 2, 2, 2)


@pytest.fixture(scope="module")
def rough_su3():
    th = make_theory("su3", SHAPE, beta=6.0)
    u = th.group.random(jax.random.PRNGKey(1), SHAPE + (4,))
    # soften the Haar-random field so that the Dirac operator is well conditioned at mass 0.5
    from corrflow.observables.gradient_flow import wilson_flow

    return th, wilson_flow(u, "su3", t_max=0.2, eps=0.05, measure_every=0.2).links


def test_bicgstab_solves_the_dirac_equation_like_cg(rough_su3):
    gauge, u = rough_su3
    q = valence_quarks(gauge, kappa=kappa_from_mass(0.5, 4))
    assert q.mass == pytest.approx(0.5) and q.gauge == gauge
    v = q.links(u)
    b = jax.random.normal(jax.random.PRNGKey(2), (3,) + q.fermion_shape) + 0j
    res = bicgstab(lambda x: dirac(v, q.mass, x), b, 6, tol=1e-12, maxiter=500)
    assert np.all(np.asarray(res.residual) < 1e-11)
    normal = lambda x: dirac_dagger(v, q.mass, dirac(v, q.mass, x))  # noqa: E731
    cg = conjugate_gradient(normal, dirac_dagger(v, q.mass, b), 6, tol=1e-13, maxiter=2000)
    np.testing.assert_allclose(res.x, cg.x, atol=1e-9)
    # both use two operator applications per iteration (D, D; or D, D^dag)
    assert int(res.iterations) < int(cg.iterations), "BiCGStab should need fewer operator applications"
    capped = bicgstab(lambda x: dirac(v, q.mass, x), b, 6, tol=1e-14, maxiter=2)
    assert int(capped.iterations) == 2 and np.all(np.asarray(capped.residual) > 1e-8)


def test_cg_from_a_guess_and_the_hybrid_solver(rough_su3):
    """CG started from a guess converges to the same solution (from the solution itself without an iteration),
    and ``bicgstab+cg`` -- BiCGStab polished by CG -- gives CG's propagator."""
    gauge, u = rough_su3
    q = valence_quarks(gauge, mass=0.5)
    v = q.links(u)
    b = jax.random.normal(jax.random.PRNGKey(2), (2,) + q.fermion_shape) + 0j
    normal = lambda x: dirac_dagger(v, q.mass, dirac(v, q.mass, x))  # noqa: E731
    ref = conjugate_gradient(normal, b, 6, tol=1e-13, maxiter=2000)
    rough = bicgstab(lambda x: dirac(v, q.mass, x), dirac_dagger(v, q.mass, b), 6, tol=1e-14, maxiter=3).x
    again = conjugate_gradient(normal, b, 6, tol=1e-13, maxiter=2000, x0=rough)
    np.testing.assert_allclose(again.x, ref.x, atol=1e-10)
    assert 0 < int(again.iterations) and np.all(np.asarray(again.residual) < 1e-12)
    done = conjugate_gradient(normal, b, 6, tol=1e-6, maxiter=2000, x0=ref.x)
    assert int(done.iterations) == 0
    np.testing.assert_allclose(propagator(q, u, solver="bicgstab+cg"), propagator(q, u), atol=1e-10)


def test_quenched_pion_bicgstab_equals_cg_and_free_field(rough_su3):
    gauge, u = rough_su3
    q = valence_quarks(gauge, mass=0.5)
    c_cg = pion_correlator(q, u[None], 2, "cg")
    c_bi = pion_correlator(q, u[None], 2, "bicgstab")
    np.testing.assert_allclose(c_bi, c_cg, rtol=1e-8)
    free = q.group.identity(SHAPE + (4,))
    np.testing.assert_allclose(pion_correlator(q, free, 1, "bicgstab"),
                               3 * exact.wilson_free_pion_correlator(SHAPE, 0.5), rtol=1e-9)
    m = FermionMeasurements(q, n_sources=1, solver="bicgstab")(u[None])
    assert m["pion"].shape == (1, 4) and m["plaquette"].shape == (1,)


def test_valence_and_solver_errors(rough_su3):
    gauge, u = rough_su3
    with pytest.raises(ValueError, match="exactly one"):
        valence_quarks(gauge)
    with pytest.raises(ValueError, match="unknown solver"):
        propagator(valence_quarks(gauge, mass=0.1), u, solver="gmres")
    with pytest.raises(ValueError, match="unknown solver"):
        FermionMeasurements(valence_quarks(gauge, mass=0.1), solver="lu")
