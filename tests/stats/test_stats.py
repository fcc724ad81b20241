"""Tests of corrflow.stats (Gamma method, binned jackknife, formatting).

Statistical checks use AR(1) processes
``x_t = rho x_{t-1} + sqrt(1 - rho^2) eps_t`` (stationary, unit variance),
whose exact integrated autocorrelation time is
``tau_int = (1 + rho) / (2 (1 - rho))`` and whose mean has the asymptotic
error ``sqrt(2 tau_int / n)``.  All seeds are fixed; tolerances are stated
at each assertion (as pulls in units of the estimated sigma where the
quantity is statistical).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.signal import lfilter

from corrflow.stats import (
    DEFAULT_BIN_TAU_FACTOR,
    Stats,
    autocorrelation_function,
    binned_jackknife,
    blocked_two_tau,
    ess_arviz,
    format_value_error,
    gamma_method,
    integrated_autocorrelation_time,
    jackknife_samples,
)


def ar1(rng: np.random.Generator, rho: float, shape: tuple[int, ...]) -> np.ndarray:
    """Stationary unit-variance AR(1) series along the last axis of ``shape``."""
    eps = rng.normal(size=shape)
    x_prev = rng.normal(size=shape[:-1] + (1,))  # stationary start x_{-1}
    out, _ = lfilter([math.sqrt(1.0 - rho**2)], [1.0, -rho], eps, axis=-1, zi=rho * x_prev)
    return out


def tau_exact(rho: float) -> float:
    return (1.0 + rho) / (2.0 * (1.0 - rho))


# ---------------------------------------------------------------------------
# Gamma method on AR(1)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_gamma_ar1_tau_and_error(rho: float) -> None:
    n = 100_000
    x = ar1(np.random.default_rng(1234 + int(10 * rho)), rho, (n,))
    s = gamma_method(x)
    tau = tau_exact(rho)
    # tau_int within 3 of its own (Madras-Sokal) error
    assert abs(s.tau_int - tau) / s.tau_int_error < 3.0, repr(s)
    # error of the mean within 10% of the exact asymptotic sigma
    sigma = math.sqrt(2.0 * tau / n)
    assert abs(s.error / sigma - 1.0) < 0.10, (s.error, sigma)
    # the mean itself is consistent with 0 (pull < 4)
    assert abs(s.pull(0.0)) < 4.0
    assert s.n == n and s.n_replicas == 1 and s.window >= 1
    assert integrated_autocorrelation_time(x) == s.tau_int


def test_gamma_coverage_ar1() -> None:
    """Fraction of |mean| / error < 1 over 400 independent chains.

    Expected 0.683; binomial sigma = sqrt(0.683 * 0.317 / 400) = 0.023.
    Band: 3 binomial sigma, widened by 0.02 on the low side for the known
    small underestimate of the error (window truncation + noise of the
    estimated error, a Student-t-like effect with ~n/(2 tau W) dof).
    Ignoring autocorrelations (tau_int = 4.5 here) would give ~0.35.
    """
    n_series, n, rho = 400, 2000, 0.8
    x = ar1(np.random.default_rng(42), rho, (n_series, n))
    pulls = np.array([gamma_method(row).pull(0.0) for row in x])
    frac = float(np.mean(np.abs(pulls) < 1.0))
    sig = math.sqrt(0.683 * 0.317 / n_series)
    assert 0.683 - 3 * sig - 0.02 < frac < 0.683 + 3 * sig, frac


@pytest.mark.parametrize("rho", [0.0, 0.8])
def test_blocked_two_tau_ar1(rho: float) -> None:
    """Block means of AR(1) chains: ``2 tau_int = (1 + rho) / (1 - rho)`` once blocks are much longer than the
    autocorrelation (640 blocks of 500: relative error ~ (2 / 640)^(1/2) = 5.6%, tolerance 4 sigma); short blocks
    of a correlated chain stay below it (the negative control: the estimator does grow with the block length)."""
    x = ar1(np.random.default_rng(99 + int(10 * rho)), rho, (16, 20_000))
    expect = 2 * tau_exact(rho)
    got = blocked_two_tau(x, 500)
    assert abs(got / expect - 1) < 4 * math.sqrt(2 / 640), (got, expect)
    if rho:
        assert blocked_two_tau(x, 1) == pytest.approx(1.0) and blocked_two_tau(x, 2) < 0.5 * expect


def test_gamma_formulae_deterministic() -> None:
    """Error, tau_int and its error follow Wolff's formulae (bias-corrected)."""
    x = ar1(np.random.default_rng(17), 0.6, (2, 3000))
    s = gamma_method(x)
    big_n, w = x.size, s.window
    gamma0 = np.mean((x - x.mean()) ** 2)
    rho = autocorrelation_function(x)
    c_w = gamma0 * (1.0 + 2.0 * rho[1 : w + 1].sum())
    c_corr = c_w * (1.0 + (2 * w + 1) / big_n)  # Gamma(t) -> Gamma(t) + C(W)/N
    tau = c_corr / (2.0 * (gamma0 + c_w / big_n))
    assert s.error == pytest.approx(math.sqrt(c_corr / big_n), rel=1e-10)
    assert s.tau_int == pytest.approx(tau, rel=1e-10)
    assert s.tau_int_error == pytest.approx(tau * math.sqrt((4 * w + 2) / big_n), rel=1e-10)
    # W is the first window with g(W) < 0 (Wolff eq. 52), S = 1.5
    def g(win: int) -> float:
        ti = 0.5 + rho[1 : win + 1].sum()
        t = 1.5 / math.log((2 * ti + 1) / (2 * ti - 1)) if ti > 0.5 else 1e-300
        return math.exp(-win / t) - t / math.sqrt(win * big_n)
    assert g(w) < 0 and all(g(v) >= 0 for v in range(1, w))


def test_replicas_consistent_with_concatenation() -> None:
    rho, n_rep, n = 0.9, 4, 25_000
    x = ar1(np.random.default_rng(7), rho, (n_rep, n))
    s_rep = gamma_method(x)
    s_cat = gamma_method(x.reshape(-1))
    assert s_rep.n_replicas == n_rep and s_rep.n == n_rep * n
    assert s_rep.value == pytest.approx(s_cat.value, rel=1e-12, abs=1e-15)
    # same data, only 3 chain junctions differ: errors within 15%
    assert abs(s_rep.error / s_cat.error - 1.0) < 0.15, (s_rep, s_cat)
    # and both agree with the exact asymptotic error within 10%
    sigma = math.sqrt(2 * tau_exact(rho) / (n_rep * n))
    assert abs(s_rep.error / sigma - 1.0) < 0.10
    # replica-wise jackknife (bins pooled over replicas) agrees within 15%
    jk = binned_jackknife(x, bin_size=250)
    assert jk.n_replicas == n_rep and jk.n == n_rep * n
    assert abs(jk.error / s_rep.error - 1.0) < 0.15


# ---------------------------------------------------------------------------
# derived quantity: ratio of correlated observables
# ---------------------------------------------------------------------------

# A = MU_A + SIG_A x1,  B = MU_B + SIG_B (C x1 + sqrt(1 - C^2) x2),
# with independent AR(1) processes x1 (RHO1) and x2 (RHO2).  Delta method for
# A/B: fluctuation ALPHA x1 + BETA x2 (gradient (1/MU_B, -MU_A/MU_B^2)).
MU_A, MU_B, SIG_A, SIG_B, C, RHO1, RHO2 = 1.0, 2.0, 0.3, 0.4, 0.6, 0.5, 0.9
ALPHA = SIG_A / MU_B - MU_A * SIG_B * C / MU_B**2
BETA = -MU_A * SIG_B * math.sqrt(1 - C**2) / MU_B**2


def ratio_data(rng: np.random.Generator, lead: tuple[int, ...], n: int) -> np.ndarray:
    """Observables (A, B) stacked on axis -2: shape ``(*lead, 2, n)``."""
    x1 = ar1(rng, RHO1, (*lead, n))
    x2 = ar1(rng, RHO2, (*lead, n))
    a = MU_A + SIG_A * x1
    b = MU_B + SIG_B * (C * x1 + math.sqrt(1 - C**2) * x2)
    return np.stack([a, b], axis=-2)


def ratio_sigma_exact(n: int) -> float:
    return math.sqrt((ALPHA**2 * 2 * tau_exact(RHO1) + BETA**2 * 2 * tau_exact(RHO2)) / n)


def ratio(a: np.ndarray) -> float:
    return a[0] / a[1]


def test_derived_ratio_gamma_vs_jackknife_vs_exact() -> None:
    n = 100_000
    data = ratio_data(np.random.default_rng(11), (), n)  # (2, n)
    g = gamma_method(data, func=ratio)
    # bin_size=200 >> tau_exp(x2) ~ 9.5: binning bias ~ tau/bin ~ 5% in variance
    jk = binned_jackknife(data, func=ratio, bin_size=200)
    sigma = ratio_sigma_exact(n)
    assert abs(jk.error / g.error - 1.0) < 0.15, (g, jk)
    assert abs(g.error / sigma - 1.0) < 0.10, (g.error, sigma)
    assert abs(g.pull(MU_A / MU_B)) < 4.0
    assert jk.value == pytest.approx(g.value, abs=1e-12)
    assert jk.window == 200 and jk.method == "jackknife"


def test_derived_ratio_error_matches_repetition_spread() -> None:
    """Average estimated error vs spread of 200 independent repetitions.

    The std of 200 values is itself known to ~1/sqrt(2*199) = 5%; with the
    per-repetition estimator noise averaged out, 20% is a ~4 sigma band.
    """
    n_rep, n = 200, 20_000
    data = ratio_data(np.random.default_rng(2024), (n_rep,), n)  # (n_rep, 2, n)
    values, err_g, err_j = [], [], []
    for d in data:
        g = gamma_method(d, func=ratio)
        jk = binned_jackknife(d, func=ratio, bin_size=200)
        values.append(g.value)
        err_g.append(g.error)
        err_j.append(jk.error)
    spread = float(np.std(values, ddof=1))
    rms_g = float(np.sqrt(np.mean(np.square(err_g))))
    rms_j = float(np.sqrt(np.mean(np.square(err_j))))
    assert abs(rms_g / spread - 1.0) < 0.20, (rms_g, spread)
    assert abs(rms_j / spread - 1.0) < 0.20, (rms_j, spread)
    assert abs(rms_g / ratio_sigma_exact(n) - 1.0) < 0.10


def test_derived_linear_func_equals_primary() -> None:
    x = ar1(np.random.default_rng(3), 0.7, (3, 5000))  # 3 replicas
    s0 = gamma_method(x)
    s1 = gamma_method(x[None], func=lambda a: a[0])  # (n_obs=1, R, n)
    assert s1.value == pytest.approx(s0.value, rel=1e-12, abs=1e-14)
    assert s1.error == pytest.approx(s0.error, rel=1e-6)
    assert s1.window == s0.window
    # a linear combination with a constant observable: 2 x + 0 * const
    data = np.stack([x, np.full_like(x, 3.0)])
    s2 = gamma_method(data, func=lambda a: 2 * a[0] + a[1])
    assert s2.value == pytest.approx(2 * s0.value + 3.0, rel=1e-12)
    assert s2.error == pytest.approx(2 * s0.error, rel=1e-6)


def test_derived_gradient_step_shrinks_where_func_is_undefined() -> None:
    """A derived quantity defined at the means but not half an error away (a reweighted ratio whose denominator has
    a relative error near 1 behaves so): the numerical gradient halves its step instead of failing, and the error is
    the linear propagation.  Negative control: a function defined only at the means still raises."""
    x = ar1(np.random.default_rng(5), 0.5, (2, 4000))
    s0 = gamma_method(x)
    mean = float(x.mean())

    def narrow(a: np.ndarray) -> float:  # 2 a, but "undefined" beyond 0.3 naive errors from the mean
        if abs(a[0] - mean) > 0.3 * float(x.std()) / math.sqrt(x.size):
            raise ValueError("outside the domain")
        return 2.0 * a[0]

    s = gamma_method(x[None], func=narrow)
    assert s.value == pytest.approx(2 * s0.value, rel=1e-12)
    assert s.error == pytest.approx(2 * s0.error, rel=1e-6)

    def only_at_mean(a: np.ndarray) -> float:
        if a[0] != mean:
            raise ValueError("outside the domain")
        return float(a[0])

    with pytest.raises(ValueError, match="outside the domain"):
        gamma_method(x[None], func=only_at_mean)


# ---------------------------------------------------------------------------
# ESS cross-check, jackknife identities
# ---------------------------------------------------------------------------


def test_ess_arviz_matches_gamma() -> None:
    x = ar1(np.random.default_rng(99), 0.9, (100_000,))
    s = gamma_method(x)
    ess = ess_arviz(x)
    assert abs(ess / s.ess - 1.0) < 0.15, (ess, s.ess)
    # 2-D input: chains
    ess2 = ess_arviz(x.reshape(4, -1))
    assert abs(ess2 / s.ess - 1.0) < 0.15, (ess2, s.ess)


def test_jackknife_iid_equals_naive_error() -> None:
    x = np.random.default_rng(5).normal(size=1001)
    jk = binned_jackknife(x, bin_size=1)
    naive = np.std(x, ddof=1) / math.sqrt(x.size)
    assert abs(jk.error - naive) <= 1e-12 * naive
    assert jk.value == pytest.approx(x.mean(), rel=1e-14)
    assert jk.tau_int == pytest.approx(0.5, rel=1e-10)
    assert jk.n == x.size and jk.window == 1
    samples = jackknife_samples(x, bin_size=1)
    loo = (x.sum() - x) / (x.size - 1)
    np.testing.assert_allclose(samples, loo, rtol=1e-13)


def test_jackknife_binning_rules() -> None:
    x = ar1(np.random.default_rng(8), 0.8, (2, 1003))  # 2 replicas, odd length
    # explicit bin size: remainder (1003 % 10 = 3) dropped per replica
    jk = binned_jackknife(x, bin_size=10)
    assert jk.n == 2 * 1000 and jk.window == 10
    assert jk.value == pytest.approx(x[:, :1000].mean(), rel=1e-12)
    assert jackknife_samples(x, bin_size=10).shape == (200,)
    # n_bins is per replica
    assert jackknife_samples(x, n_bins=25).shape == (50,)
    assert binned_jackknife(x, n_bins=25).window == 1003 // 25
    # default: ceil(4 tau_int) from the Gamma method
    tau = gamma_method(x).tau_int
    assert binned_jackknife(x).window == max(1, math.ceil(DEFAULT_BIN_TAU_FACTOR * tau))
    # vector-valued func in jackknife_samples -> covariance-ready array
    data = np.stack([x, x**2])  # (2 obs, 2 replicas, 1003)
    js = jackknife_samples(data, func=lambda a: np.array([a[0], a[1] - a[0] ** 2]), bin_size=50)
    assert js.shape == (40, 2)
    with pytest.raises(ValueError, match="scalar"):
        binned_jackknife(data, func=lambda a: a, bin_size=50)
    with pytest.raises(ValueError, match="scalar-valued"):
        jackknife_samples(data, func=lambda a: a)  # default bins need scalar func
    with pytest.raises(ValueError, match="at most one"):
        binned_jackknife(x, bin_size=10, n_bins=5)
    with pytest.raises(ValueError, match="fewer than 2 bins"):
        binned_jackknife(x[0], bin_size=600)


def test_jackknife_large_bins_match_gamma() -> None:
    x = ar1(np.random.default_rng(21), 0.9, (100_000,))
    g = gamma_method(x)
    jk = binned_jackknife(x, bin_size=400)  # bias ~ tau/bin ~ 2.5% in variance
    assert abs(jk.error / g.error - 1.0) < 0.10
    # jackknife tau_int = var_jk / (2 var_naive): within 3 of its error of exact
    assert abs(jk.tau_int - tau_exact(0.9)) / jk.tau_int_error < 3.0, repr(jk)


# ---------------------------------------------------------------------------
# autocorrelation function, degenerate data
# ---------------------------------------------------------------------------


def test_autocorrelation_function_matches_direct_sum() -> None:
    x = np.random.default_rng(13).normal(size=(3, 64))
    rho = autocorrelation_function(x)
    dev = x - x.mean()
    n_rep, n = x.shape
    gam = np.array(
        [np.sum(dev[:, : n - t] * dev[:, t:]) / (n_rep * (n - t)) for t in range(n)]
    )
    np.testing.assert_allclose(rho, gam / gam[0], atol=1e-12)
    assert rho.shape == (n,) and rho[0] == 1.0


def test_constant_data() -> None:
    for s in (
        gamma_method(np.full(100, 0.1)),
        gamma_method(np.full((3, 50), -2.0)),
        gamma_method(np.full((2, 100), 0.7), func=lambda a: a[0] / a[1]),
        binned_jackknife(np.full(100, 0.1)),
    ):
        assert s.error == 0.0 and s.tau_int == 0.5
        assert all(math.isfinite(v) for v in (s.value, s.tau_int, s.tau_int_error))
    np.testing.assert_array_equal(autocorrelation_function(np.ones(20))[:3], [1, 0, 0])


def test_uncorrelated_small_sample_window() -> None:
    s = gamma_method(np.random.default_rng(0).normal(size=12))
    assert s.window >= 1 and math.isfinite(s.error) and s.error > 0


def test_short_chain_warns() -> None:
    # 50 replicas of 20 samples with tau ~ 1000: each replica is nearly
    # constant at a different level, so rho(t) ~ 1 up to W_max = 10 and no
    # window satisfies Wolff's criterion.
    x = ar1(np.random.default_rng(1), 0.999, (50, 20))
    with pytest.warns(RuntimeWarning, match="windowing"):
        s = gamma_method(x)
    assert s.window == 10


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 10"):
        gamma_method(np.arange(9.0))
    with pytest.raises(ValueError, match="at least 10"):
        binned_jackknife(np.ones((3, 5)))
    with pytest.raises(ValueError, match="ndim"):
        gamma_method(np.zeros((2, 3, 20)))  # 3-D needs func
    with pytest.raises(ValueError, match="ndim"):
        gamma_method(np.zeros((2, 2, 3, 20)), func=lambda a: a[0])
    with pytest.raises(ValueError, match="ndim"):
        gamma_method(np.float64(1.0))
    bad = np.random.default_rng(0).normal(size=100)
    bad[17] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gamma_method(bad)
    with pytest.raises(ValueError, match="NaN"):
        binned_jackknife(bad)
    with pytest.raises(ValueError, match="NaN"):
        ess_arviz(bad)
    with pytest.raises(ValueError, match="S must be positive"):
        gamma_method(np.ones(20), S=0.0)
    with pytest.raises(ValueError, match="scalar"):
        gamma_method(np.ones((2, 20)), func=lambda a: a)
    with pytest.raises(ValueError, match="non-finite"):
        gamma_method(np.zeros((2, 20)), func=lambda a: a[0] / a[1])


# ---------------------------------------------------------------------------
# formatting and Stats
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, error, digits, expected",
    [
        (0.314976, 0.000723, 2, "0.31498(72)"),
        (12.345, 1.2, 2, "12.3(1.2)"),
        (1234.5, 56.7, 2, "1235(57)"),
        (-0.314976, 0.000723, 2, "-0.31498(72)"),
        (-1234.5, 56.7, 2, "-1235(57)"),
        (0.314976, 0.000723, 1, "0.3150(7)"),
        (1.23456, 0.0999, 2, "1.23(10)"),  # rounding carries into a new digit
        (12345.6, 567.0, 2, "12350(570)"),
        (-0.0001, 0.05, 2, "0.000(50)"),  # no negative zero
        (1.234e-8, 5.6e-10, 2, "1.234(56)e-08"),
        (1.5, 0.0, 2, "1.5"),
        (float("nan"), float("nan"), 2, "nan(nan)"),
    ],
)
def test_format_value_error(value: float, error: float, digits: int, expected: str) -> None:
    assert format_value_error(value, error, digits) == expected


def test_format_value_error_rejects_negative_error() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        format_value_error(1.0, -0.1)


def test_stats_methods() -> None:
    s = Stats(value=0.314976, error=0.000723, tau_int=1.234, tau_int_error=0.081,
              n=2004, n_replicas=1, window=9)
    assert str(s) == "0.31498(72)"
    assert repr(s) == "Stats(0.31498(72), tau_int=1.23(8), ess=812)"
    assert f"{s}" == "0.31498(72)"
    assert f"{s:1}" == "0.3150(7)"
    assert f"{s:.4f}" == "0.3150 +- 0.0007"
    assert s.ess == pytest.approx(2004 / (2 * 1.234))
    assert s.pull(0.315) == pytest.approx((0.314976 - 0.315) / 0.000723)
    assert s.pull(0.314976) == 0.0
    zero = Stats(1.0, 0.0, 0.5, 0.0, 10, 1, 0)
    assert zero.pull(1.0) == 0.0 and zero.pull(0.0) == math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert str(zero) == "1.0"


def test_jackknife_warns_when_the_default_bins_are_few():
    """2 chains of 100 with tau_int ~ 2 gave bins of 43: 4 bins, 14% of the data dropped, and an error that is itself
    uncertain by ~80% -- without a word (only bins beyond n/2 were warned about). Explicit bins stay silent."""
    import warnings

    from corrflow.stats import binned_jackknife

    rng = np.random.default_rng(5)
    x = np.zeros((2, 100))
    for i in range(1, 100):  # AR(1), tau_int = (1 + 0.4) / (2 (1 - 0.4)) = 1.2: bins of ~24, 8 in all
        x[:, i] = 0.4 * x[:, i - 1] + rng.normal(size=2)
    with pytest.warns(RuntimeWarning, match=r"leaves \d bins \(\d+ of 200 samples dropped\): the error is uncertain"):
        binned_jackknife(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        binned_jackknife(x, bin_size=5)  # 40 bins, chosen by the user
        binned_jackknife(np.tile(x, 10))  # 2 x 1000: enough bins
