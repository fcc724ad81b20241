"""Tests of corrflow.stats.fits: correlated least squares, resampled errors, Bayesian (numpyro) fits.

Synthetic data: a known line ``y = A + B x`` at ``k = 7`` points with a known, strongly correlated
covariance (AR-type correlation ``0.8^|i-j|``, errors growing with ``x``), Gaussian noise from fixed seeds.
Tolerances are stated at each assertion; statistical ones are pulls in units of their own sigma.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from scipy import stats

from corrflow.stats import FitError, bayesian_fit, correlated_fit, jackknife_samples, polynomial_basis, resampled_fit

A_TRUE, B_TRUE = 0.5, 0.3
X = np.linspace(0.1, 0.5, 7)
SIG = 0.01 * (1.0 + 2.0 * X)
COV = 0.8 ** np.abs(np.subtract.outer(np.arange(7), np.arange(7))) * np.outer(SIG, SIG)


def draw(rng, n=None):
    return A_TRUE + B_TRUE * X + rng.multivariate_normal(np.zeros(len(X)), COV, size=n)


def test_single_fit_pulls_and_band():
    y = draw(np.random.default_rng(11))
    fit = correlated_fit(X, y, COV, order=1)
    assert fit.dof == 5 and fit.params.shape == (2,) and fit.cov.shape == (2, 2)
    # |pull| < 4 sigma against the true parameters
    assert abs(fit.pull(0, A_TRUE)) < 4 and abs(fit.pull(1, B_TRUE)) < 4, fit
    # the band at x = 0 is the intercept with its error; the band is the linear propagation B cov B^T
    v, e = fit.evaluate([0.0, 0.3])
    assert v[0] == pytest.approx(fit.params[0], rel=1e-12) and e[0] == pytest.approx(fit.errors[0], rel=1e-12)
    b = np.array([1.0, 0.3])
    assert e[1] == pytest.approx(math.sqrt(b @ fit.cov @ b), rel=1e-12)
    # chi2 is r^T C^-1 r at the minimum; p-value from the chi2 distribution
    r = y - (fit.params[0] + fit.params[1] * X)
    assert fit.chi2 == pytest.approx(r @ np.linalg.solve(COV, r), rel=1e-10)
    assert fit.p_value == pytest.approx(stats.chi2.sf(fit.chi2, 5), rel=1e-12)
    assert "c0 = " in str(fit) and "chi2/dof" in str(fit)


def test_generalised_least_squares_closed_form_and_plateau():
    """Against the textbook formulas: (X^T C^-1 X)^-1 X^T C^-1 y, and order 0 = correlated weighted mean."""
    y = draw(np.random.default_rng(3))
    ci = np.linalg.inv(COV)
    for order in (0, 1, 2):
        Xd = np.vander(X, order + 1, increasing=True)
        pcov = np.linalg.inv(Xd.T @ ci @ Xd)
        fit = correlated_fit(X, y, COV, order=order)
        np.testing.assert_allclose(fit.params, pcov @ Xd.T @ ci @ y, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(fit.cov, pcov, rtol=1e-9)
    plateau = correlated_fit(X, y, COV, order=0)
    one = np.ones(len(X))
    assert plateau.params[0] == pytest.approx((one @ ci @ y) / (one @ ci @ one), rel=1e-10)
    # a custom linear basis reproduces the polynomial fit
    custom = correlated_fit(X, y, COV, basis=lambda x: np.stack([np.ones_like(x), x], axis=-1), names=("a", "b"))
    np.testing.assert_allclose(custom.params, correlated_fit(X, y, COV, order=1).params, rtol=1e-12)
    assert custom.names == ("a", "b")
    # variances only (uncorrelated data) equal a diagonal matrix
    d1 = correlated_fit(X, y, np.diag(COV), order=1)
    d2 = correlated_fit(X, y, np.diag(np.diag(COV)), order=1)
    np.testing.assert_allclose(d1.params, d2.params, rtol=1e-12)


def test_ensemble_of_fits_chi2_and_errors():
    """Over R = 4000 synthetic data sets: <chi2> = dof, parameter spread = quoted error, p-values uniform."""
    R = 4000
    ys = draw(np.random.default_rng(2024), R)
    fits = [correlated_fit(X, y, COV, order=1) for y in ys]
    chi2 = np.array([f.chi2 for f in fits])
    dof = fits[0].dof
    # mean of R chi2_5 variables: sigma = sqrt(2 dof / R); 4 sigma
    assert abs(chi2.mean() - dof) < 4 * math.sqrt(2 * dof / R), chi2.mean()
    params = np.array([f.params for f in fits])
    err = fits[0].errors  # the same covariance for every set
    # pulls against the truth are unit normal: mean within 4/sqrt(R), spread/quoted error within 4/sqrt(2R) (~4.5%)
    for j, truth in enumerate((A_TRUE, B_TRUE)):
        pulls = (params[:, j] - truth) / err[j]
        assert abs(pulls.mean()) < 4 / math.sqrt(R), pulls.mean()
        assert abs(pulls.std(ddof=1) - 1) < 4 / math.sqrt(2 * R), pulls.std(ddof=1)
    # p-values uniform (Kolmogorov-Smirnov, not rejected at 1e-3)
    assert stats.kstest([f.p_value for f in fits], "uniform").pvalue > 1e-3
    # negative control: ignoring the correlations gives a wrong chi2 distribution (mean far from dof)
    diag = np.array([correlated_fit(X, y, np.diag(COV), order=1).chi2 for y in ys[:500]])
    assert abs(diag.mean() - dof) > 8 * math.sqrt(2 * dof / 500), diag.mean()


def test_resampled_fit_jackknife():
    """Jackknife over per-sample data: the replica spread with the jackknife covariance as weights equals the
    least-squares parameter covariance exactly (linear model); with diagonal weights it is the correct
    (sandwich) covariance, larger than the naive diagonal-weight error; it covers the truth."""
    rng = np.random.default_rng(5)
    n = 400
    samples = draw(rng, n) - (A_TRUE + B_TRUE * X)  # fluctuations, (n, k); per-sample covariance COV
    samples = A_TRUE + B_TRUE * X + samples
    reps = jackknife_samples(samples.T, func=lambda a: a, bin_size=1)  # (n, k) leave-one-out means
    y = samples.mean(axis=0)
    jk = resampled_fit(X, y, reps, kind="jackknife", order=1)
    lsq = correlated_fit(X, y, jk.data_cov, order=1)
    np.testing.assert_allclose(jk.cov, lsq.cov, rtol=1e-8)
    np.testing.assert_allclose(jk.params, lsq.params, rtol=1e-12)
    assert jk.method == "jackknife" and jk.param_replicas.shape == (n, 2)
    # the jackknife covariance of the mean estimates COV / n (n = 400 samples: within 30% element-wise on the diagonal)
    np.testing.assert_allclose(np.diag(jk.data_cov), np.diag(COV) / n, rtol=0.3)
    assert abs(jk.pull(0, A_TRUE)) < 4 and abs(jk.pull(1, B_TRUE)) < 4
    # diagonal weights: the naive error ignores the correlations; the replica error accounts for them
    naive = correlated_fit(X, y, np.diag(jk.data_cov), order=1)
    robust = resampled_fit(X, y, reps, np.diag(jk.data_cov), kind="jackknife", order=1)
    np.testing.assert_allclose(robust.params, naive.params, rtol=1e-12)
    Xd = np.vander(X, 2, increasing=True)
    Wi = np.diag(1 / np.diag(jk.data_cov))
    Amat = np.linalg.solve(Xd.T @ Wi @ Xd, Xd.T @ Wi)
    np.testing.assert_allclose(robust.cov, Amat @ jk.data_cov @ Amat.T, rtol=1e-8)  # the sandwich formula
    assert robust.errors[0] > 1.1 * naive.errors[0]  # positive correlations: ~1.19 for this covariance
    # bootstrap normalisation: 1/(n-1) sum of squared deviations
    boot = samples[rng.integers(0, n, size=(300, n))].mean(axis=1)
    bs = resampled_fit(X, y, boot, kind="bootstrap", order=1)
    assert bs.errors[0] == pytest.approx(jk.errors[0], rel=0.25)


def test_ill_conditioned_covariance_and_svd_cut():
    rng = np.random.default_rng(9)
    y = draw(rng)
    # nearly singular: the last point almost a copy of the one before (correlation 1 - 1e-14)
    c = COV.copy()
    k = len(X)
    rho = c / np.outer(SIG, SIG)
    rho[k - 1, :] = rho[k - 2, :]
    rho[:, k - 1] = rho[:, k - 2]
    rho[k - 1, k - 1] = 1.0
    rho[k - 1, k - 2] = rho[k - 2, k - 1] = 1 - 1e-14
    bad = rho * np.outer(SIG, SIG)
    with pytest.raises(FitError, match="ill-conditioned.*svd_cut"):
        correlated_fit(X, y, bad, order=1)
    fit = correlated_fit(X, y, bad, order=1, svd_cut=1e-6)
    assert fit.n_svd_modified >= 1 and np.all(np.isfinite(fit.errors))
    # the cut only enlarges the covariance: errors are not smaller than with a mildly regularised matrix
    assert np.all(np.linalg.eigvalsh(fit.data_cov - bad) > -1e-15)
    # indefinite covariance: clear error without a cut
    indefinite = COV.copy()
    indefinite[0, 1] = indefinite[1, 0] = 2 * SIG[0] * SIG[1]
    with pytest.raises(FitError, match="not positive definite"):
        correlated_fit(X, y, indefinite, order=1)
    assert np.all(np.isfinite(correlated_fit(X, y, indefinite, order=1, svd_cut=1e-3).errors))


def test_bad_input():
    y = draw(np.random.default_rng(1))
    with pytest.raises(FitError, match="same length"):
        correlated_fit(X, y[:-1], COV)
    with pytest.raises(FitError, match="shape"):
        correlated_fit(X, y, COV[:-1, :-1])
    with pytest.raises(FitError, match="too few points for order 3"):
        correlated_fit(X[:3], y[:3], COV[:3, :3], order=3)
    with pytest.raises(FitError, match="non-finite"):
        correlated_fit(X, np.where(X > 0.3, np.nan, y), COV)
    with pytest.raises(FitError, match="non-positive variances"):
        correlated_fit(X, y, np.diag(np.r_[-1.0, np.ones(6)]))
    with pytest.raises(FitError, match="symmetric"):
        correlated_fit(X, y, COV + np.triu(np.full_like(COV, 1e-3), 1))
    with pytest.raises(FitError, match="non-negative integer"):
        correlated_fit(X, y, COV, order=-1)
    with pytest.raises(FitError, match="either order"):
        correlated_fit(X, y, COV, order=1, basis=polynomial_basis(1))
    with pytest.raises(FitError, match="rank-deficient"):
        correlated_fit(np.r_[0.1, 0.1, 0.1], y[:3], COV[:3, :3], order=1)
    with pytest.raises(FitError, match="svd_cut must lie"):
        correlated_fit(X, y, COV, svd_cut=2.0)
    with pytest.raises(FitError, match="n_rep, k"):
        resampled_fit(X, y, y)
    with pytest.raises(FitError, match="columns"):
        resampled_fit(X, y, np.ones((5, 3)))
    # k == p: exact interpolation, dof 0 and no p-value
    exact = correlated_fit(X[:2], y[:2], COV[:2, :2], order=1)
    assert exact.dof == 0 and math.isnan(exact.p_value) and exact.chi2 == pytest.approx(0, abs=1e-20)


def test_bayesian_fit_agrees_with_least_squares():
    """NUTS posterior of the same linear model with weakly informative priors (width 10 max|y| / max|B_j|):
    posterior mean within 0.2 sigma of the least-squares estimate, posterior sd within 15% of its error."""
    y = draw(np.random.default_rng(21))
    lsq = correlated_fit(X, y, COV, order=1)
    bay = bayesian_fit(X, y, COV, order=1, key=jax.random.PRNGKey(0), num_warmup=400, num_samples=1000)
    assert bay.samples.shape == (1000, 2) and bay.divergences == 0
    for j in range(2):
        assert abs(bay.mean[j] - lsq.params[j]) < 0.2 * lsq.errors[j], (bay, lsq)
        assert bay.std[j] == pytest.approx(lsq.errors[j], rel=0.15)
    np.testing.assert_allclose(bay.prior_width, [10 * np.max(np.abs(y)), 10 * np.max(np.abs(y)) / X.max()])
    # arviz summary of az.from_numpyro: one row per parameter, with the posterior moments
    summ = bay.summary
    assert list(summ.index) == ["c0", "c1"]
    assert summ.loc["c0", "mean"] == pytest.approx(bay.mean[0], rel=1e-6)
    assert summ.loc["c1", "ess_bulk"] > 200
    v, e = bay.evaluate([0.0])
    assert v[0] == pytest.approx(bay.mean[0], rel=1e-9) and e[0] == pytest.approx(bay.std[0], rel=1e-9)
    # convergence flags (Vehtari et al.): none here; a threshold out of reach, divergences and (with 4 chains) a bad
    # R-hat are named
    assert bay.convergence_problems() == []
    assert bay.convergence_problems(min_ess_per_chain=1e6)[0].startswith("ess_bulk < 1e+06 (c0 ")
    import dataclasses
    import types

    bad = summ.copy()
    bad.loc["c1", "r_hat"] = 1.2
    four = dataclasses.replace(bay, summary=bad, divergences=3,
                               idata=types.SimpleNamespace(posterior=types.SimpleNamespace(sizes={"chain": 4})))
    problems = four.convergence_problems()
    assert problems[0] == "3 divergent transitions" and problems[-1] == "r_hat > 1.01 (c1 1.200)", problems
    # the key makes it deterministic
    again = bayesian_fit(X, y, COV, order=1, key=jax.random.PRNGKey(0), num_warmup=400, num_samples=1000)
    np.testing.assert_array_equal(again.samples, bay.samples)
    with pytest.raises(FitError, match="prior"):
        bayesian_fit(X, y, COV, order=1, key=jax.random.PRNGKey(0), prior_width=0.0)
