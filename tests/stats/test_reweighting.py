"""Tests of corrflow.stats.reweighting and corrflow.stats.pyerrors_export.

Toy model with exact answers
----------------------------
Base samples ``x`` come from a stationary AR(1) chain
``x_t = rho x_{t-1} + sqrt(1 - rho^2) eps_t`` (N(0, 1) marginal, exact
``tau_int = (1 + rho) / (2 (1 - rho))``), i.e. the action is
``S_a(x) = (x - a)^2 / 2`` with ``a = 0`` (or ``a`` added to the chain).
The target is ``N(a', 1)``, ``S_{a'}(y) = (y - a')^2 / 2``.  A shift flow
``f(x) = x + c`` has unit Jacobian, so::

    log w = -(x + c - a')^2 / 2 + (x - a)^2 / 2,

and ``Z_{a'} = Z_a`` (exact ``log <w> = 0``), ``<x>_{a'} = a'``.

* ``c = 0``: direct reweighting;  ``c = a' - a``: exact flow (``w = 1``);
  ``c = 0.8 (a' - a)``: approximate flow with the correct weights.

All seeds are fixed.  Statistical checks are pulls ``|value - exact| /
error < 4`` (a 4-sigma band: false-alarm rate ~6e-5 per check, while any
missing normalisation, sign or factor-2 error shifts the value by many
sigma); other tolerances are stated at the assertion.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from scipy.signal import lfilter

from corrflow.stats import (
    ReweightingResult,
    Stats,
    correlated_difference,
    finite_difference_derivative,
    independent_difference,
    log_mean_weight,
    reweighted_mean,
    reweighted_obs,
    symmetric_derivative,
    to_pyerrors,
    variance_reduction,
    weight_ess,
    weight_ess_fraction,
)

METHODS = ["gamma", "jackknife"]


def ar1(rng: np.random.Generator, rho: float, shape: tuple[int, ...]) -> np.ndarray:
    """Stationary unit-variance AR(1) series along the last axis of ``shape``."""
    eps = rng.normal(size=shape)
    x_prev = rng.normal(size=shape[:-1] + (1,))
    out, _ = lfilter([math.sqrt(1.0 - rho**2)], [1.0, -rho], eps, axis=-1, zi=rho * x_prev)
    return out


def shift_flow_log_w(x: np.ndarray, a: float, a_target: float, c: float) -> np.ndarray:
    """Log weights of the flow ``f(x) = x + c`` from N(a, 1) to N(a_target, 1)."""
    return -0.5 * (x + c - a_target) ** 2 + 0.5 * (x - a) ** 2


# ---------------------------------------------------------------------------
# direct reweighting (f = identity)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mu", [0.2, 0.5, 1.0])
def test_direct_reweighting_mean_and_log_z(mu: float, method: str) -> None:
    x = ar1(np.random.default_rng(100 + int(10 * mu)), 0.5, (4, 10_000))
    offset = 800.0  # exp(800) overflows: checks the max-shift; exact log<w> = offset
    log_w = shift_flow_log_w(x, 0.0, mu, 0.0) + offset  # = mu x - mu^2/2 + offset
    res = reweighted_mean(x, log_w, method)
    assert isinstance(res, ReweightingResult)
    assert res.n == x.size and res.stats.method == method
    assert abs(res.pull(mu)) < 4.0, repr(res)
    lz = log_mean_weight(log_w, method)
    assert isinstance(lz, Stats)
    assert abs(lz.pull(offset)) < 4.0, repr(lz)
    # the errors are non-trivial (a zero/huge error would make the pulls meaningless):
    # the reweighted mean cannot beat the unweighted sigma_naive = 1/sqrt(N)
    assert 1.0 / math.sqrt(x.size) < res.error < 0.1


@pytest.mark.parametrize("mu", [0.3, 0.7])
def test_weight_ess_fraction_matches_exact(mu: float) -> None:
    # exact: <w>^2 / <w^2> = exp(-mu^2) for w = exp(mu x - mu^2/2), x ~ N(0, 1)
    x = ar1(np.random.default_rng(7), 0.5, (4, 20_000))
    log_w = mu * x
    frac = weight_ess_fraction(log_w)
    assert weight_ess(log_w) == pytest.approx(frac * x.size, rel=1e-12)
    # relative scatter of the sample ratio is ~2% for mu=0.7 (var(w^2)/<w^2>^2
    # = exp(4 mu^2) - 1, N_eff ~ 3e4); 10% is a > 4 sigma band
    assert frac == pytest.approx(math.exp(-(mu**2)), rel=0.10)


# ---------------------------------------------------------------------------
# exact and approximate flows
# ---------------------------------------------------------------------------


# With w = 1 the projected fluctuations are pure rounding noise, whose
# "tau_int" is meaningless; the jackknife then warns about its bin size.
@pytest.mark.filterwarnings("ignore:jackknife. default bin size:RuntimeWarning")
@pytest.mark.parametrize("method", METHODS)
def test_exact_flow_has_zero_error(method: str) -> None:
    mu = 0.7
    x = ar1(np.random.default_rng(3), 0.8, (2, 5_000))
    # the formula gives 0 up to rounding; the exact flow has log w = 0 exactly
    assert np.max(np.abs(shift_flow_log_w(x, 0.0, mu, mu))) < 1e-12
    log_w = np.zeros_like(x)
    assert weight_ess(log_w) == x.size
    res = correlated_difference(x, x + mu, log_w, method)
    # "exact" up to float rounding of x + mu: the paired fluctuations cancel
    # identically; the rounding residue is ~1e-17, vs ~3e-2 for the baseline
    assert res.value == pytest.approx(mu, abs=1e-12)
    assert res.error < 1e-12
    assert res.weight_ess == x.size
    base = independent_difference(
        mu + ar1(np.random.default_rng(4), 0.8, x.shape), x, method
    )
    assert base.error > 1e-2
    assert variance_reduction(res, base) > 1e18


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mu", [0.5, 1.0])
def test_approximate_flow_variance_reduction(mu: float, method: str) -> None:
    rng = np.random.default_rng(11 + int(10 * mu))
    shape = (4, 5_000)
    x = ar1(rng, 0.8, shape)
    c = 0.8 * mu
    log_w = shift_flow_log_w(x, 0.0, mu, c)
    res = correlated_difference(x, x + c, log_w, method)
    assert abs(res.pull(mu)) < 4.0, repr(res)
    assert res.weight_ess is not None and res.weight_ess < x.size
    # baseline: two independent chains of the same length, target and base
    base = independent_difference(mu + ar1(rng, 0.8, shape), ar1(rng, 0.8, shape), method)
    assert abs(base.pull(mu)) < 4.0, repr(base)
    assert base.weight_ess is None
    # expected: the projected fluctuation is ~ w (x - 0.2 mu) - x ~ 0.2 mu x^2,
    # variance ~ 0.08 mu^2 vs 2 for the independent difference, with a tau
    # about half that of x; measured reduction ~200 (mu=0.5) and ~40 (mu=1).
    # We require > 5x, far below that yet far above 1 (no pairing).
    assert variance_reduction(res, base) > 5.0, (repr(res), repr(base))
    # forward derivative is the same estimator divided by delta
    der = finite_difference_derivative(x, x + c, log_w, mu, method)
    assert der.value == pytest.approx(res.value / mu, rel=1e-12)
    assert der.error == pytest.approx(res.error / mu, rel=1e-6)


# ---------------------------------------------------------------------------
# error calibration over independent repetitions
# ---------------------------------------------------------------------------

N_REP = 200


def _calibration(estimates: list[ReweightingResult]) -> float:
    values = np.array([r.value for r in estimates])
    errors = np.array([r.error for r in estimates])
    return float(np.std(values, ddof=1) / np.mean(errors))


@pytest.fixture(scope="module")
def calibration_chains() -> np.ndarray:
    """200 independent repetitions of 2 chains x 2000 samples, rho = 0.8."""
    return ar1(np.random.default_rng(2024), 0.8, (N_REP, 2, 2_000))


# Tolerance: the sample standard deviation of 200 estimates has a relative
# statistical uncertainty of 1/sqrt(2 * 199) = 5%; the binned jackknife has a
# known few-percent underestimate (see jackknife.py).  A 20% band is 4 sigma
# of the former plus room for the latter, and it still rejects the errors
# that ignore autocorrelations (too small by ~x2-2.5 at rho = 0.8, checked
# below as a negative control) or the pairing (too large by ~x10).
CALIBRATION_TOL = 0.20


@pytest.mark.parametrize("method", METHODS)
def test_error_calibration_correlated_difference(
    calibration_chains: np.ndarray, method: str
) -> None:
    mu = 0.5
    c = 0.8 * mu
    log_w = shift_flow_log_w(calibration_chains, 0.0, mu, c)
    res = [
        correlated_difference(x, x + c, lw, method)
        for x, lw in zip(calibration_chains, log_w)
    ]
    ratio = _calibration(res)
    assert abs(ratio - 1.0) < CALIBRATION_TOL, ratio
    # mean of the estimates is unbiased (pull of the average over 200 reps)
    mean = np.mean([r.value for r in res])
    assert abs(mean - mu) / (np.mean([r.error for r in res]) / math.sqrt(N_REP)) < 4.0
    if method == "jackknife":
        # negative control: unbinned (bin_size=1) errors ignore autocorrelations
        naive = [
            correlated_difference(x, x + c, lw, method, bin_size=1)
            for x, lw in zip(calibration_chains[:50], log_w[:50])
        ]
        naive_ratio = np.std([r.value for r in res[:50]], ddof=1) / np.mean(
            [r.error for r in naive]
        )
        assert naive_ratio > 1.0 + CALIBRATION_TOL, naive_ratio


@pytest.mark.parametrize("method", METHODS)
def test_error_calibration_reweighted_mean(calibration_chains: np.ndarray, method: str) -> None:
    mu = 0.5
    log_w = shift_flow_log_w(calibration_chains, 0.0, mu, 0.0)
    res = [reweighted_mean(x, lw, method) for x, lw in zip(calibration_chains, log_w)]
    ratio = _calibration(res)
    assert abs(ratio - 1.0) < CALIBRATION_TOL, ratio
    mean = np.mean([r.value for r in res])
    assert abs(mean - mu) / (np.mean([r.error for r in res]) / math.sqrt(N_REP)) < 4.0
    if method == "jackknife":
        naive = [
            reweighted_mean(x, lw, method, bin_size=1)
            for x, lw in zip(calibration_chains[:50], log_w[:50])
        ]
        naive_ratio = np.std([r.value for r in res[:50]], ddof=1) / np.mean(
            [r.error for r in naive]
        )
        assert naive_ratio > 1.0 + CALIBRATION_TOL, naive_ratio


# ---------------------------------------------------------------------------
# derivatives
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("c_frac", [0.0, 0.8])  # direct reweighting / approximate flow
def test_symmetric_derivative(method: str, c_frac: float) -> None:
    a, delta = 0.3, 0.2
    x = a + ar1(np.random.default_rng(55), 0.5, (4, 10_000))
    cp, cm = c_frac * delta, -c_frac * delta
    lwp = shift_flow_log_w(x, a, a + delta, cp)
    lwm = shift_flow_log_w(x, a, a - delta, cm)
    xp, xm = x + cp, x + cm
    # O = x: <x>_{a'} = a', derivative 1
    d1 = symmetric_derivative(xp, lwp, xm, lwm, delta, method)
    assert abs(d1.pull(1.0)) < 4.0, repr(d1)
    # O = x^2: <x^2>_{a'} = 1 + a'^2; the symmetric difference is exactly 2a,
    # the forward difference has expectation 2a + delta (O(delta) bias)
    d2 = symmetric_derivative(xp**2, lwp, xm**2, lwm, delta, method)
    assert abs(d2.pull(2 * a)) < 4.0, repr(d2)
    fwd = finite_difference_derivative(x**2, xp**2, lwp, delta, method)
    assert abs(fwd.pull(2 * a + delta)) < 4.0, repr(fwd)
    # power check: the forward-difference bias delta is resolved (> 4 sigma)
    assert abs(fwd.pull(2 * a)) > 4.0, repr(fwd)
    assert d1.weight_ess == pytest.approx(min(weight_ess(lwp), weight_ess(lwm)))


# ---------------------------------------------------------------------------
# pyerrors cross-check
# ---------------------------------------------------------------------------

# pyerrors' default windowing parameter is Obs.S_global = 2.0; corrflow's is
# 1.5.  Both are run with S = 1.5 here.
S_COMMON = 1.5


@pytest.mark.parametrize("c_frac", [0.0, 0.8])
def test_pyerrors_reweighted_ratio(c_frac: float) -> None:
    pytest.importorskip("pyerrors")
    mu = 0.7
    x = ar1(np.random.default_rng(77), 0.7, (3, 4_000))
    c = c_frac * mu
    log_w = shift_flow_log_w(x, 0.0, mu, c) + 50.0
    ours = reweighted_mean(x + c, log_w, "gamma", S=S_COMMON)
    pe_obs = reweighted_obs(x + c, log_w, "toy")
    pe_obs.gamma_method(S=S_COMMON)
    assert pe_obs.value == pytest.approx(ours.value, rel=1e-12, abs=1e-12)
    # same estimator (Wolff, S=1.5, replicas summed); differences come from
    # the numerical vs automatic gradient and window details: 5%
    assert pe_obs.dvalue == pytest.approx(ours.error, rel=0.05)


def test_pyerrors_correlated_difference_and_names() -> None:
    pytest.importorskip("pyerrors")
    mu = 0.5
    c = 0.8 * mu
    x = ar1(np.random.default_rng(78), 0.7, (3, 4_000))
    log_w = shift_flow_log_w(x, 0.0, mu, c)
    w = np.exp(log_w - log_w.max())
    obs = to_pyerrors({"wOf": w * (x + c), "w": w, "Ob": x}, "toy")
    assert set(obs) == {"wOf", "w", "Ob"}
    assert obs["Ob"].names == ["toy|r0", "toy|r1", "toy|r2"]
    assert obs["Ob"].e_names == ["toy"]
    diff = obs["wOf"] / obs["w"] - obs["Ob"]
    diff.gamma_method(S=S_COMMON)
    ours = correlated_difference(x, x + c, log_w, "gamma", S=S_COMMON)
    assert diff.value == pytest.approx(ours.value, rel=1e-12)
    assert diff.dvalue == pytest.approx(ours.error, rel=0.05)
    # correlations are kept: an observable minus itself has zero error, and
    # the paired difference is far more precise than its parts
    zero = obs["Ob"] - obs["Ob"]
    zero.gamma_method(S=S_COMMON)
    assert zero.dvalue == 0.0
    ob = obs["Ob"]
    ob.gamma_method(S=S_COMMON)
    assert diff.dvalue < 0.5 * ob.dvalue


def test_to_pyerrors_single_chain_and_bad_input() -> None:
    pytest.importorskip("pyerrors")
    x = ar1(np.random.default_rng(1), 0.0, (100,))
    o = to_pyerrors({"x": x}, "ens")["x"]
    assert o.names == ["ens|r0"]
    assert o.value == pytest.approx(float(x.mean()), rel=1e-12)
    with pytest.raises(ValueError, match=r"\|"):
        to_pyerrors({"x": x}, "a|b")
    with pytest.raises(ValueError, match="same shape"):
        to_pyerrors({"x": x, "y": x[:50]}, "ens")
    with pytest.raises(ValueError, match="NaN"):
        to_pyerrors({"x": np.full(20, np.nan)}, "ens")


# ---------------------------------------------------------------------------
# result type, helpers
# ---------------------------------------------------------------------------


def test_result_formatting() -> None:
    st = Stats(0.0123, 0.0045, 1.2, 0.1, 1000, 1, 5)
    r = ReweightingResult(st, 530.2, 1000)
    assert str(r) == "0.0123(45)"
    assert repr(r) == "ReweightingResult(0.0123(45), tau_int=1.2(1), ess=417, weight_ess=530/1000)"
    assert f"{r}" == "0.0123(45)"
    assert r.value == 0.0123 and r.error == 0.0045 and r.tau_int == 1.2
    assert r.pull(0.0033) == pytest.approx(2.0)
    assert r.weight_ess_fraction == pytest.approx(0.5302)
    r0 = ReweightingResult(st, None, 1000)
    assert repr(r0).endswith("weight_ess=None)")
    with pytest.raises(AttributeError):
        r.n = 3  # type: ignore[misc]


def test_variance_reduction_and_independent_difference() -> None:
    st = lambda e: Stats(0.0, e, 0.5, 0.0, 100, 1, 1)  # noqa: E731
    assert variance_reduction(st(0.1), st(0.3)) == pytest.approx(9.0)
    assert variance_reduction(st(0.0), st(0.3)) == math.inf
    assert math.isnan(variance_reduction(st(0.0), st(0.0)))
    rng = np.random.default_rng(5)
    a = ar1(rng, 0.0, (2, 1_000))
    b = ar1(rng, 0.0, (3_000,))  # independent ensembles may differ in shape
    res = independent_difference(a + 1.0, b)
    from corrflow.stats import gamma_method

    ga, gb = gamma_method(a + 1.0), gamma_method(b)
    assert res.value == pytest.approx(ga.value - gb.value, rel=1e-12)
    assert res.error == pytest.approx(math.hypot(ga.error, gb.error), rel=1e-12)
    assert res.n == 5_000 and res.stats.n_replicas == 3
    assert abs(res.pull(1.0)) < 4.0


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------


GOOD = np.linspace(-1.0, 1.0, 50)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: reweighted_mean(GOOD, GOOD[:40]), "log_w has shape"),
        (lambda: correlated_difference(GOOD, GOOD.reshape(2, 25), GOOD), "obs_flowed has shape"),
        (lambda: reweighted_mean(GOOD, GOOD[None, :]), "log_w has shape"),
        (lambda: reweighted_mean(np.where(GOOD > 0.5, np.nan, GOOD), GOOD), "obs contains NaN"),
        (lambda: reweighted_mean(GOOD, np.where(GOOD > 0.5, np.nan, GOOD)), "log_w contains NaN"),
        (lambda: reweighted_mean(GOOD, np.where(GOOD > 0.5, np.inf, GOOD)), r"log_w contains \+inf"),
        (lambda: log_mean_weight(np.where(GOOD > 0.5, np.inf, GOOD)), r"log_w contains \+inf"),
        (lambda: weight_ess(np.full(20, -np.inf)), "log_w has no finite entries"),
        (lambda: correlated_difference(np.where(GOOD > 0, np.inf, GOOD), GOOD, GOOD), "obs_base contains infinite"),
        (lambda: reweighted_mean(GOOD[:9], GOOD[:9]), "obs: need at least 10 samples"),
        (lambda: weight_ess_fraction(GOOD.reshape(10, 5)), "log_w: need at least 10 samples"),
        (lambda: reweighted_mean(GOOD.reshape(1, 5, 10), GOOD.reshape(1, 5, 10)), r"obs must have shape \(n,\)"),
        (lambda: reweighted_mean(GOOD, GOOD, method="bootstrap"), "method must be one of"),
        (lambda: symmetric_derivative(GOOD, GOOD, GOOD, GOOD[:30], 0.1), "log_w_minus has shape"),
        (lambda: symmetric_derivative(GOOD, GOOD, GOOD, GOOD, 0.0), "delta must be finite and non-zero"),
        (lambda: finite_difference_derivative(GOOD, GOOD, GOOD, math.nan), "delta must be finite"),
        (lambda: independent_difference(GOOD, GOOD[:5]), "obs_base: need at least 10"),
    ],
)
def test_bad_input(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_minus_inf_log_weights_are_zero_weights() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=(2, 500))
    log_w = np.where(x > 0, 0.0, -np.inf)  # keep only x > 0: <x | x > 0> = sqrt(2/pi)
    res = reweighted_mean(x, log_w)
    assert res.weight_ess == pytest.approx(np.count_nonzero(x > 0))
    assert res.value == pytest.approx(float(x[x > 0].mean()), rel=1e-12)
    assert abs(res.pull(math.sqrt(2.0 / math.pi))) < 4.0
    assert log_mean_weight(log_w).value == pytest.approx(math.log(np.mean(x > 0)), rel=1e-12)
    assert re.fullmatch(r"0\.\d+\(\d+\)", str(res))
