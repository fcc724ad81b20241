"""Least-squares fit of the tangent field (recovery, held-out selection, singular systems, too little data) and
bad input to the core (a parameter the theory lacks, unknown or non-smooth observables, wrong field)."""


import jax
import numpy as np
import pytest

from corrflow import make_theory
from corrflow import tangent as tg


def _synthetic(n=2000, k=4, seed=0, noise=0.05):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, k)) @ rng.normal(size=(k, k))
    c_true = rng.normal(size=k)
    r0 = -a @ c_true + noise * rng.normal(size=n) + 3.0
    return a, r0, c_true, noise


def test_fit_recovers_coefficients_and_variance():
    a, r0, c_true, noise = _synthetic()
    fit = tg.fit_field(a, r0)
    # least squares with n = 1500 fitted rows: coefficient errors ~ noise / sqrt(n) per unit-variance column
    np.testing.assert_allclose(fit.coef, c_true, atol=20 * noise / np.sqrt(1500) * np.abs(c_true).max() + 1e-3)
    assert fit.var_r == pytest.approx(noise ** 2, rel=0.2)
    assert fit.held_out_var == pytest.approx(noise ** 2, rel=0.3)
    assert fit.reduction > 100


def test_held_out_selects_ridge_and_basis_size():
    rng = np.random.default_rng(1)
    n = 300
    a = rng.normal(size=(n, 40))
    r0 = -a[:, 0] + 0.5 * rng.normal(size=n)  # only the first column matters; 39 are noise to overfit
    fit = tg.fit_field(a, r0, sizes=[1, 5, 40])
    assert fit.n_basis < 40 and fit.coef[fit.n_basis:].tolist() == [0.0] * (40 - fit.n_basis)
    assert abs(fit.coef[0] - 1) < 0.2
    cands = {(s, x): v for s, x, v in fit.candidates}
    assert cands[(1, 0.0)] < cands[(40, 0.0)]  # the overfitted basis is worse on the held-out data


def test_null_field_wins_when_no_fit_generalises():
    """Basis functions unrelated to r0 with almost as many columns as fitted rows: every fit lowers Var[R] in sample
    but raises it on held-out rows, so the null field (the connected estimator, c = 0) is selected.  Control: with
    one informative column among them, a field is fitted."""
    rng = np.random.default_rng(2)
    n, k = 80, 25
    a = rng.normal(size=(n, k))
    r0 = rng.normal(size=n)
    fit = tg.fit_field(a, r0, ridges=[0.0])
    assert fit.n_basis == 0 and not fit.coef.any()
    assert fit.held_out_var == pytest.approx(np.var(r0[-20:]))
    assert all(v > fit.held_out_var for s, _, v in fit.candidates if s > 0)
    a[:, 0] = -r0 + 0.1 * rng.normal(size=n)
    fit = tg.fit_field(a, r0, ridges=[0.0], sizes=[1, k])
    assert fit.n_basis == 1 and abs(fit.coef[0] - 1) < 0.1


def test_singular_system_warns_and_regularises():
    a, r0, _, _ = _synthetic(k=3)
    a = np.concatenate([a, a[:, :1], np.ones((len(a), 1))], axis=1)  # duplicate and constant column
    with pytest.warns(tg.TangentFitWarning, match="singular or ill-conditioned"):
        fit = tg.fit_field(a, r0)
    assert fit.regularised and fit.ridge > 0 and np.all(np.isfinite(fit.coef))
    assert fit.reduction > 100  # still a good fit


def test_too_few_configurations():
    a, r0, _, _ = _synthetic(n=30, k=6)
    with pytest.raises(ValueError, match="too few configurations for a held-out fit.*use more configurations"):
        tg.fit_field(a, r0)
    with pytest.raises(ValueError, match="too few configurations"):
        tg.cross_fit(a.reshape(1, 30, 6), r0.reshape(1, 30), n_folds=2)


def test_cross_fit_never_uses_a_configuration_for_its_own_coefficients():
    a, r0, c_true, _ = _synthetic(n=2000)
    a3, r3 = a.reshape(2, 1000, -1), r0.reshape(2, 1000)
    r3 = r3.copy()
    r3[:, :500] += 1e3 * a3[:, :500, 0]  # fold 0 follows a different law
    fits, coef = tg.cross_fit(a3, r3, n_folds=2)
    assert np.allclose(coef[:, :500], fits[0].coef) and np.allclose(coef[:, 500:], fits[1].coef)
    # fold 0's coefficients come from fold 1 only (the clean law), and vice versa
    assert abs(fits[0].coef[0] - c_true[0]) < 0.05
    assert abs(fits[1].coef[0] - (c_true[0] - 1e3)) < 1.0


def test_bad_input_to_the_core():
    th = make_theory("u1", (4, 4), beta=2.0)
    configs = np.zeros((1, 12) + th.link_shape)
    key = jax.random.PRNGKey(0)
    f = tg.PlaquetteField(2)
    with pytest.raises(ValueError, match="has no parameter 'mass'.*allowed: beta, xi, lam"):
        tg.compute_terms(f, th, "mass", ["plaquette"], configs, key)
    with pytest.raises(ValueError, match="unknown observable 'plaq'.*allowed: plaquette"):
        tg.compute_terms(f, th, "beta", ["plaq"], configs, key)
    with pytest.raises(ValueError, match="not smooth"):
        tg.compute_terms(f, th, "beta", ["topological_charge"], configs, key)
    with pytest.raises(ValueError, match="wilson_4x4.*R, T < 4"):
        tg.compute_terms(f, th, "beta", ["wilson_4x4"], configs, key)
    with pytest.raises(ValueError, match="shape"):
        tg.compute_terms(f, th, "beta", ["plaquette"], configs[0], key)
    with pytest.raises(ValueError, match="2D U\\(1\\) only.*gradient"):
        tg.make_field("plaquette", make_theory("su2", (4, 4), beta=2.0))
    with pytest.raises(ValueError, match="unknown feature"):
        tg.GradientField(features=("plaquette", "hexagon"))
    with pytest.raises(ValueError, match="unknown tangent field"):
        tg.make_field("magic", th)
    fth = make_theory("schwinger", (4, 4), beta=2.0, mass=0.1)
    with pytest.raises(ValueError, match="not a gauge-action parameter.*fermion_derivatives"):
        tg.parameter_derivative(fth, "mass")
    with pytest.raises(ValueError, match="no parameter 'kappa'.*allowed: beta, xi, lam, mass.*2 kappa"):
        tg.compute_terms(f, fth, "kappa", ["plaquette"], configs, key)
    with pytest.raises(ValueError, match="condensate: a fermionic observable needs an ensemble with dynamical"):
        tg.compute_terms(f, th, "beta", ["condensate"], configs, key)
    with pytest.raises(ValueError, match="pion@4: the time separation must be in 0 .. 3"):
        tg.compute_terms(f, fth, "mass", ["pion@4"], configs, key)
    for bad, msg in ((dict(method="dense"), "unknown trace method"), (dict(n_noise=0), "positive integer"),
                     (dict(noise="u1"), "unknown noise"), (dict(tol=0.1), "CG tolerance")):
        with pytest.raises(ValueError, match=msg):
            tg.FermionTraces(**bad)


def test_estimator_input_checks():
    with pytest.raises(ValueError, match="same shape"):
        tg.tangent_estimate(np.ones((1, 20)), np.ones((1, 20)), np.ones((1, 21)))
    with pytest.raises(ValueError, match="non-finite"):
        tg.connected_estimate(np.full(20, np.nan), np.ones(20))
