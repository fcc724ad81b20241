"""Wilson fermions: operator algebra, free field vs closed forms, determinants, forces, CG, HMC paths.

Statistical test: the exact-determinant and the pseudofermion HMC sample the same Schwinger-model
distribution (plaquette and pion correlator agree within |pull| < 4, Gamma-method errors).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import corrflow  # noqa: F401  (x64)
from corrflow import HMCConfig, exact, hmc, make_theory
from corrflow.groups import get_group
from corrflow.observables.fermions import chiral_condensate, dS_dmass, pion_correlator, propagator
from corrflow.stats import effective_mass
from corrflow.stats import gamma_method
from corrflow.theories.fermions import (
    WilsonFermionAction,
    conjugate_gradient,
    dirac_matrix,
    gamma_matrices,
    kappa_from_mass,
    log_det_ratio_estimate,
    mass_from_kappa,
)


def _random_u1(key: int, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.uniform(jax.random.PRNGKey(key), shape + (len(shape),), minval=-np.pi, maxval=np.pi)


@pytest.mark.parametrize("d", [2, 4])
def test_gamma_algebra(d: int) -> None:
    g, g5 = gamma_matrices(d)
    ns = g.shape[-1]
    for mu in range(d):
        np.testing.assert_allclose(g[mu], g[mu].conj().T, atol=1e-15)
        for nu in range(d):
            np.testing.assert_allclose(g[mu] @ g[nu] + g[nu] @ g[mu], 2 * (mu == nu) * np.eye(ns), atol=1e-15)
        np.testing.assert_allclose(g5 @ g[mu] + g[mu] @ g5, 0, atol=1e-15)
    np.testing.assert_allclose(g5 @ g5, np.eye(ns), atol=1e-15)
    with pytest.raises(ValueError, match="d = 2 and d = 4"):
        gamma_matrices(3)


def test_kappa_mass_roundtrip() -> None:
    assert kappa_from_mass(0.1, 2) == pytest.approx(1 / 4.2)
    assert mass_from_kappa(kappa_from_mass(-0.3, 4), 4) == pytest.approx(-0.3)
    th = make_theory("schwinger", (4, 4), beta=1.0, kappa=0.24)
    assert th.mass == pytest.approx(1 / 0.48 - 2)
    assert th.replace(kappa=0.25).mass == pytest.approx(0.0)


def test_free_spectrum_matches_closed_form() -> None:
    th = make_theory("schwinger", (8, 4), beta=1.0, mass=0.25)
    v = th.links(jnp.zeros((8, 4, 2)))
    ev = np.linalg.eigvals(np.asarray(dirac_matrix(v, th.mass, 2)))
    ex = exact.wilson_dirac_free_spectrum((8, 4), 0.25)
    key = lambda z: np.lexsort((z.imag.round(9), z.real.round(9)))  # noqa: E731
    np.testing.assert_allclose(ev[key(ev)], ex, atol=1e-10)


@pytest.mark.parametrize("theory, shape, solver", [("schwinger", (8, 4), "cg"), ("su3-wilson", (4, 2, 2, 4), "cg"),
                                                   ("su3-wilson", (4, 2, 2, 4), "bicgstab+cg")])
def test_free_propagator_and_pion_correlator(theory: str, shape: tuple[int, ...], solver: str) -> None:
    th = make_theory(theory, shape, beta=1.0, mass=0.3)
    u = jnp.zeros(shape + (len(shape),)) if th.group.is_abelian else th.group.identity(shape + (len(shape),))
    s = np.asarray(propagator(th, u, solver=solver))
    sx = exact.wilson_free_propagator(shape, 0.3)
    np.testing.assert_allclose(s[..., :, 0, :, 0], sx, atol=1e-11)
    if th.n_color > 1:  # colour-diagonal in free field
        np.testing.assert_allclose(s[..., :, 1, :, 0], 0, atol=1e-11)
    c = np.asarray(pion_correlator(th, u, n_sources=2, solver=solver))
    np.testing.assert_allclose(c, th.n_color * exact.wilson_free_pion_correlator(shape, 0.3), rtol=1e-10)
    # cosh effective mass is constant only asymptotically; but it must be positive and finite at large t
    meff = effective_mass(c, "cosh_ratio")
    assert np.all(np.isfinite(meff)) and np.all(meff > 0)


@pytest.mark.parametrize("gname", ["u1", "su2"])
def test_gamma5_hermiticity_and_dagger(gname: str) -> None:
    shape = (4, 4)
    g = get_group(gname)
    u = _random_u1(1, shape) if g.is_abelian else g.random(jax.random.PRNGKey(1), shape + (2,))
    th = make_theory("schwinger" if g.is_abelian else f"{gname}-wilson", shape, beta=1.0, mass=0.1)
    v = th.links(u)
    d = np.asarray(dirac_matrix(v, th.mass, 2))
    g5 = np.kron(np.eye(16), np.kron(gamma_matrices(2)[1], np.eye(th.n_color)))
    np.testing.assert_allclose(g5 @ d @ g5, d.conj().T, atol=1e-13)
    psi = jax.random.normal(jax.random.PRNGKey(2), th.fermion_shape) + 0j
    np.testing.assert_allclose(np.asarray(th.dirac_dagger(u, psi)).ravel(), d.conj().T @ np.asarray(psi).ravel(),
                               atol=1e-12)


def test_log_det_even_odd_dense_and_gauge_invariant() -> None:
    shape = (4, 4)
    u = _random_u1(3, shape)
    th = make_theory("schwinger", shape, beta=1.0, mass=0.05)
    full = th.replace(even_odd=False)
    ref = 2 * np.linalg.slogdet(np.asarray(dirac_matrix(full.links(u), 0.05, 2)))[1]
    np.testing.assert_allclose(float(th.log_det(u)), ref, rtol=1e-12)
    np.testing.assert_allclose(float(full.log_det(u)), ref, rtol=1e-12)
    # gauge transformation theta_mu(x) -> theta_mu(x) + a(x) - a(x + mu)
    a = jax.random.normal(jax.random.PRNGKey(4), shape)
    ug = jnp.stack([u[..., mu] + a - jnp.roll(a, -1, axis=mu) for mu in range(2)], axis=-1)
    np.testing.assert_allclose(float(th.log_det(ug)), ref, rtol=1e-12)
    # batched
    ub = jnp.stack([u, ug])
    np.testing.assert_allclose(np.asarray(th.log_det(ub)), [ref, ref], rtol=1e-12)


def _directional(action, u: jax.Array, g, direction: jax.Array, eps: float = 1e-5) -> float:  # noqa: ANN001
    if g.is_abelian:
        return float((action(u + eps * direction) - action(u - eps * direction)) / (2 * eps))
    x = g.from_coords(direction)
    return float((action(g.exp_left(eps * x, u)) - action(g.exp_left(-eps * x, u))) / (2 * eps))


@pytest.mark.parametrize("det, even_odd, gname", [("exact", True, "u1"), ("pseudofermion", True, "u1"),
                                                  ("pseudofermion", False, "u1"), ("exact", True, "su2"),
                                                  ("pseudofermion", True, "su2")])
def test_force_is_derivative_of_action(det: str, even_odd: bool, gname: str) -> None:
    """Force contracted with a random algebra direction = central finite difference of the action."""
    shape = (4, 4)
    g = get_group(gname)
    u = _random_u1(5, shape) if g.is_abelian else g.random(jax.random.PRNGKey(5), shape + (2,))
    th = make_theory("schwinger" if g.is_abelian else f"{gname}-wilson", shape, beta=1.3, mass=0.2, det=det,
                     even_odd=even_odd, cg_tol=1e-13)
    th = th.refresh(jax.random.PRNGKey(6), u)
    f = th.force(u)
    coords = jax.random.normal(jax.random.PRNGKey(7), u.shape if g.is_abelian else u.shape[:-2] + (g.n_generators,))
    fc = f if g.is_abelian else g.algebra_coords(f)
    pred = float(jnp.sum(fc * coords))
    fd = _directional(th.action, u, g, coords)
    assert abs(pred - fd) < 1e-6 * max(1.0, abs(fd))


def test_conjugate_gradient_converges_and_reports() -> None:
    th = make_theory("schwinger", (4, 4), beta=1.0, mass=0.1, det="pseudofermion")
    u = jnp.stack([_random_u1(8, (4, 4)), _random_u1(9, (4, 4))])
    th = th.refresh(jax.random.PRNGKey(10), u)
    res = th.solve_normal(u, th.phi)
    assert res.x.shape == th.phi.shape
    assert np.all(np.asarray(res.residual) < 1e-9) and 0 < int(res.iterations) < th.cg_maxiter
    capped = conjugate_gradient(lambda x: th.replace(even_odd=True)._normal(th.links(u))(x), th.phi, 4, tol=1e-14,
                                maxiter=2)
    assert int(capped.iterations) == 2 and np.all(np.asarray(capped.residual) > 1e-6)  # honest about non-convergence


def test_stochastic_det_ratio_is_unbiased() -> None:
    shape = (4, 4)
    u = _random_u1(11, shape)[None]
    a = make_theory("schwinger", shape, beta=1.0, mass=0.2)
    b = a.replace(mass=0.23)
    exact_log = float((b.log_det(u) - a.log_det(u))[0])
    samples = np.array([float(np.exp(log_det_ratio_estimate(jax.random.PRNGKey(k), a, u, b, u, n_noise=50)[0]))
                        for k in range(40)])
    mean, err = samples.mean(), samples.std(ddof=1) / np.sqrt(len(samples))
    assert abs(mean - np.exp(exact_log)) < 4 * err, (mean, err, np.exp(exact_log))
    assert err < 0.05 * np.exp(exact_log)  # the estimate is informative, not only unbiased


def test_condensate_and_dS_dmass_against_finite_difference() -> None:
    shape = (4, 4)
    u = _random_u1(12, shape)
    th = make_theory("schwinger", shape, beta=1.0, mass=0.2)
    h = 1e-5
    fd = (th.replace(mass=0.2 + h).action(u) - th.replace(mass=0.2 - h).action(u)) / (2 * h)
    np.testing.assert_allclose(float(dS_dmass(th, u)), float(fd), rtol=1e-7)
    assert np.isfinite(float(chiral_condensate(th, u)))


def test_make_theory_errors() -> None:
    with pytest.raises(ValueError, match="quark mass"):
        make_theory("schwinger", (4, 4), beta=1.0)
    with pytest.raises(ValueError, match="pure gauge"):
        make_theory("u1", (4, 4), beta=1.0, mass=0.1)
    with pytest.raises(ValueError, match="either mass or kappa"):
        make_theory("schwinger", (4, 4), beta=1.0, mass=0.1, kappa=0.2)
    with pytest.raises(ValueError, match="unknown theory"):
        make_theory("qed-wilson", (4, 4), beta=1.0, mass=0.1)
    with pytest.raises(ValueError, match="n_flavors"):
        make_theory("schwinger", (4, 4), beta=1.0, mass=0.1, nf=1)
    with pytest.raises(ValueError, match="m \\+ d <= 0"):
        make_theory("schwinger", (4, 4), beta=1.0, mass=-2.5)
    with pytest.raises(ValueError, match="d = 2 and d = 4"):
        make_theory("su2-wilson", (4, 4, 4), beta=1.0, mass=0.1)
    th = make_theory("schwinger", (4, 4), beta=1.5, mass=0.1)
    assert th.params() == {"beta": 1.5, "xi": 1.0, "lam": 0.0, "mass": 0.1, "nf": 2.0}
    assert isinstance(th, WilsonFermionAction) and th.theory_name == "schwinger"
    rebuilt = make_theory(th.theory_name, th.shape, **th.params())
    assert rebuilt.params() == th.params()


def test_pseudofermion_trajectory_is_reversible() -> None:
    th = make_theory("schwinger", (4, 4), beta=2.0, mass=0.1, det="pseudofermion", cg_tol=1e-14)
    u = _random_u1(13, (4, 4))
    th = th.refresh(jax.random.PRNGKey(14), u)
    cfg = HMCConfig(step_size=0.1, n_steps=5)
    p = jax.random.normal(jax.random.PRNGKey(15), u.shape)
    u1, p1 = hmc.integrate(th, cfg, u, p)
    u2, p2 = hmc.integrate(th, cfg, u1, -p1)
    assert float(jnp.max(jnp.abs(u2 - u))) < 1e-10 and float(jnp.max(jnp.abs(p2 + p))) < 1e-10


# ----------------------------------------------------------------------------------------
# statistical: exact-determinant HMC and pseudofermion HMC sample the same distribution
# ----------------------------------------------------------------------------------------

SHAPE = (8, 4)
N_TRAJ = 300


@pytest.fixture(scope="module")
def two_paths() -> dict[str, dict[str, np.ndarray]]:
    from corrflow.generate import generate
    from corrflow.observables.fermions import FermionMeasurements

    out = {}
    for det in ("exact", "pseudofermion"):
        th = make_theory("schwinger", SHAPE, beta=2.0, mass=0.2, det=det, cg_tol=1e-10)
        meas = FermionMeasurements(th)
        cfg = HMCConfig(step_size=0.25, n_steps=4, jitter=0.0)  # fixed lengths: the samples these tests were sized on
        res = generate(jax.random.PRNGKey(20), th, cfg, n_chains=2, n_traj=N_TRAJ, n_therm=50, thin=2,
                       measure=meas, block_size=N_TRAJ, keep_configs=(det == "exact"))
        out[det] = res
    return out


def test_exact_and_pseudofermion_hmc_agree(two_paths: dict[str, dict[str, np.ndarray]]) -> None:
    pl = {k: v["plaquette"] for k, v in two_paths.items()}
    acc = {k: float(np.mean(v["accepted"])) for k, v in two_paths.items()}
    assert min(acc.values()) > 0.6, acc
    s = {k: gamma_method(v) for k, v in pl.items()}
    pull = (s["exact"].value - s["pseudofermion"].value) / np.hypot(s["exact"].error, s["pseudofermion"].error)
    assert abs(pull) < 4, (s, pull)
    # the fermions matter: the plaquette differs from the quenched value on the same torus
    quenched = exact.u1_plaquette(2.0, SHAPE)
    assert abs(s["exact"].value - quenched) > 3 * s["exact"].error, (s["exact"], quenched)
    # pion: log-effective mass log(C(1)/C(2)) from the two algorithms
    m = {}
    for k, v in two_paths.items():
        c = np.moveaxis(v["pion"], -1, 0)  # (L0, chains, n)
        m[k] = gamma_method(c[1:3], lambda a: np.log(a[0] / a[1]))
    pull = (m["exact"].value - m["pseudofermion"].value) / np.hypot(m["exact"].error, m["pseudofermion"].error)
    assert abs(pull) < 4, (m, pull)
    assert m["exact"].error < 0.1 * m["exact"].value  # a real measurement, not noise


def test_flowed_reweighting_with_stochastic_determinant_ratio(two_paths: dict[str, dict[str, np.ndarray]]) -> None:
    """Mass reweighting m = 0.2 -> 0.23 of exact-HMC configurations: the stochastic determinant ratio gives the
    same reweighted plaquette as the exact ratio (within the combined error), and its weights are unbiased."""
    from corrflow.correlate import direct_reweighting, flowed_reweighting
    from corrflow.flows import make_flow
    from corrflow.generate import measurements_from_names
    from corrflow.stats.reweighting import reweighted_mean

    links = two_paths["exact"]["configs"]
    base = make_theory("schwinger", SHAPE, beta=2.0, mass=0.2)
    target = base.replace(mass=0.23)
    meas = measurements_from_names(base.group, ["plaquette"], 2)
    u = np.asarray(links[0, ::4])  # 75 configurations of chain 0
    ex = direct_reweighting(base, target, u, meas, batch=50)
    flow = make_flow(base.group, SHAPE)
    st = flowed_reweighting(flow, flow.init_params(), base, target, u, meas, batch=50, det_noise=8,
                            key=jax.random.PRNGKey(3))
    # the identity flow: stochastic log weights scatter around the exact ones, and exp() agrees on average
    d = np.exp(st.log_w - ex.log_w)
    assert abs(d.mean() - 1) < 4 * d.std(ddof=1) / np.sqrt(len(d)), d.mean()
    a = reweighted_mean(ex.flowed["plaquette"], ex.log_w)
    b = reweighted_mean(st.flowed["plaquette"], st.log_w)
    assert abs(a.value - b.value) < 4 * b.error, (a, b)


@pytest.mark.parametrize("param, delta", [("mass", 0.02), ("lam", 0.05)])
def test_tangent_derivatives_match_exact_reweighting(two_paths: dict[str, dict[str, np.ndarray]], param: str,
                                                     delta: float) -> None:
    """d<P>/dalpha and d m_eff(1)/dalpha on the exact-determinant ensemble (8x4, m = 0.2) for the quark mass and for
    the Feynman–Hellmann source lam (d m_eff/dlam = dE_pi/dlam), by the connected estimator and (mass) the tangent
    estimator (plaquette-space field, exact traces; stochastic ones are checked per configuration in
    tests/tangent/test_fermion_traces.py), against a central finite difference alpha +- delta by exact direct
    reweighting of the same configurations: an independent route (action and log-determinant differences, valence
    propagators at the shifted mass, no derivatives).  The connected estimator and the finite difference measure the
    same linear response (to O(delta^2)), so they must agree far inside one error."""
    from corrflow import tangent as tg
    from corrflow.correlate import direct_reweighting
    from corrflow.observables.fermions import FermionMeasurements

    u = np.asarray(two_paths["exact"]["configs"])[:, ::2]  # 2 x 150: each configuration costs tangent CG solves
    th = make_theory("schwinger", SHAPE, beta=2.0, mass=0.2)
    names = ["plaquette", "pion@1", "pion@2"]
    # the field's value is measured in benchmarks/tangent.py; here 2 harmonics (each costs a tangent CG solve of the
    # pion correlator) for the mass, the connected estimator alone for lam
    field = tg.PlaquetteField(2) if param == "mass" else tg.NoField()
    terms = tg.compute_terms(field, th, param, names, u, jax.random.PRNGKey(1), batch=200)
    assert terms.traces == {"method": "exact"}
    _, coef = tg.cross_fit(terms.a, terms.ds) if field.n_coef else (None, np.zeros(terms.a.shape))
    res = tg.estimate(terms, coef)
    p0 = float(getattr(th, param) if param == "mass" else th.gauge.lam)
    shifted = {s: th.replace(**{param: p0 + s * delta}) for s in (1, -1)}
    rw = {s: direct_reweighting(th, t, u, FermionMeasurements(t), batch=200) for s, t in shifted.items()}
    w = {s: np.exp(r.log_w - r.log_w.max()) for s, r in rw.items()}

    def fd(values: dict[int, list], func) -> object:
        data = np.stack([w[1], *(w[1] * x for x in values[1]), w[-1], *(w[-1] * x for x in values[-1])])
        k = len(values[1])
        return gamma_method(data, lambda m: (func(m[1:k + 1] / m[0]) - func(m[k + 2:] / m[k + 1])) / (2 * delta))

    ref = {"plaquette": fd({s: [r.flowed["plaquette"]] for s, r in rw.items()}, lambda a: a[0]),
           "m_eff@1": fd({s: [r.flowed["pion"][..., 1], r.flowed["pion"][..., 2]] for s, r in rw.items()},
                         lambda a: tg.cosh_effective_mass(a[0] / a[1], 1, SHAPE[0]))}
    for o, r in ref.items():
        est = res.estimates[o]
        assert abs(est["connected"].value - r.value) < 0.25 * est["connected"].error, (o, est, r)
        assert abs(est["tangent"].value - r.value) < 4 * est["tangent"].error, (o, est, r)
        if param == "mass" or o == "plaquette":  # dE_pi/dlam: ~2 sigma here
            assert abs(r.value) > 4 * r.error  # a real derivative, not noise
