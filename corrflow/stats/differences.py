r"""Differences and derivatives from paired (flowed), reweighted and independent ensembles.

:func:`correlated_difference` -- ``<O>_{a'} - <O>_a`` from one base ensemble and its flowed partner (the pairs
resampled together); :func:`finite_difference_derivative` / :func:`symmetric_derivative` -- the same divided by the
shift, one-sided or central; :func:`independent_difference` -- the baseline from two independent ensembles;
:func:`variance_reduction` -- the ratio of their variances.  Conventions (shapes ``(n,)`` or ``(R, n)``, log weights,
``method``) as in :mod:`corrflow.stats.reweighting`, whose validation and result type these share.
"""

from __future__ import annotations

import math

import numpy as np

from .autocorr import gamma_method
from .jackknife import binned_jackknife
from .result import Stats
from .windowing import Windowing
from .reweighting import (ReweightingResult, _as_samples, _check_delta, _check_method, _derived, _ess_of,
                          _normalised_weights, _validated)

__all__ = ["correlated_difference", "finite_difference_derivative", "independent_difference", "symmetric_derivative",
           "variance_reduction"]


def _correlated_difference(
    obs_base: np.ndarray,
    obs_flowed: np.ndarray,
    log_w: np.ndarray,
    scale: float,
    method: str,
    S: float | Windowing,
    bin_size: int | None,
) -> ReweightingResult:
    _check_method(method)
    o, lw = _validated({"obs_base": obs_base, "obs_flowed": obs_flowed}, {"log_w": log_w})
    w, _ = _normalised_weights(lw["log_w"])

    def func(a: np.ndarray) -> float:
        return (a[0] / a[1] - a[2]) / scale

    st = _derived([w * o["obs_flowed"], w, o["obs_base"]], func, method, S, bin_size)
    return ReweightingResult(st, _ess_of(w), int(w.size))


def correlated_difference(
    obs_base: np.ndarray,
    obs_flowed: np.ndarray,
    log_w: np.ndarray,
    method: str = "gamma",
    *,
    S: float | Windowing = 1.5,
    bin_size: int | None = None,
) -> ReweightingResult:
    """``<O>_{a'} - <O>_a = <w O_f>/<w> - <O_b>`` on paired samples.

    Parameters
    ----------
    obs_base : array_like, shape (n,) or (R, n)
        ``O_b = O(U_i)`` on the base samples.
    obs_flowed : array_like, same shape
        ``O_f = O(f(U_i))`` on the flowed images of the same samples.
    log_w : array_like, same shape
        Log weights ``log w_i`` of the flow.
    method, S, bin_size
        As in :func:`log_mean_weight`.

    Returns
    -------
    ReweightingResult
        The difference as one derived quantity of the three means of
        ``w~ O_f``, ``w~`` and ``O_b`` (correlations between them included).
    """
    return _correlated_difference(obs_base, obs_flowed, log_w, 1.0, method, S, bin_size)


def finite_difference_derivative(
    obs_base: np.ndarray,
    obs_flowed: np.ndarray,
    log_w: np.ndarray,
    delta: float,
    method: str = "gamma",
    *,
    S: float | Windowing = 1.5,
    bin_size: int | None = None,
) -> ReweightingResult:
    """Forward difference ``(<O>_{a+delta} - <O>_a) / delta`` on paired samples.

    Same arguments as :func:`correlated_difference`, with ``delta = a' - a``
    (finite, non-zero).  Its systematic error is ``O(delta)``; see
    :func:`symmetric_derivative` for ``O(delta^2)``.
    """
    d = _check_delta(delta)
    return _correlated_difference(obs_base, obs_flowed, log_w, d, method, S, bin_size)


def symmetric_derivative(
    obs_plus: np.ndarray,
    log_w_plus: np.ndarray,
    obs_minus: np.ndarray,
    log_w_minus: np.ndarray,
    delta: float,
    method: str = "gamma",
    *,
    S: float | Windowing = 1.5,
    bin_size: int | None = None,
) -> ReweightingResult:
    """``(<O>_{a+delta} - <O>_{a-delta}) / (2 delta)`` from one base ensemble.

    Parameters
    ----------
    obs_plus, log_w_plus : array_like, shape (n,) or (R, n)
        ``O(f_+(U_i))`` and log weights of the flow towards ``a + delta``.
    obs_minus, log_w_minus : array_like, same shape
        The same for the flow towards ``a - delta``, on the **same** base
        samples ``U_i`` (pairs in the same positions).
    delta : float
        Half the parameter separation (finite, non-zero).
    method, S, bin_size
        As in :func:`log_mean_weight`.

    Returns
    -------
    ReweightingResult
        One derived quantity of the four means of ``w~_+ O_+``, ``w~_+``,
        ``w~_- O_-``, ``w~_-`` (each weight set normalised by its own max).
        ``weight_ess`` is the smaller of the two weight ESS.
    """
    _check_method(method)
    d = _check_delta(delta)
    o, lw = _validated(
        {"obs_plus": obs_plus, "obs_minus": obs_minus},
        {"log_w_plus": log_w_plus, "log_w_minus": log_w_minus},
    )
    wp, _ = _normalised_weights(lw["log_w_plus"])
    wm, _ = _normalised_weights(lw["log_w_minus"])

    def func(a: np.ndarray) -> float:
        return (a[0] / a[1] - a[2] / a[3]) / (2.0 * d)

    st = _derived(
        [wp * o["obs_plus"], wp, wm * o["obs_minus"], wm], func, method, S, bin_size
    )
    return ReweightingResult(st, min(_ess_of(wp), _ess_of(wm)), int(wp.size))


def _naive_variance(st: Stats, x: np.ndarray) -> float:
    """Uncorrelated variance of the mean, consistent with ``st.tau_int``."""
    if st.tau_int > 0:
        return st.error**2 / (2.0 * st.tau_int)
    return float(np.var(x, ddof=1)) / x.size


def independent_difference(
    obs_target: np.ndarray,
    obs_base: np.ndarray,
    method: str = "gamma",
    *,
    S: float | Windowing = 1.5,
    bin_size: int | None = None,
) -> ReweightingResult:
    """``<O>_target - <O>_base`` from two **independent** ensembles (the baseline; the same sign as
    :func:`correlated_difference`, whose arguments come in the other order: base first, as paired data are stored).

    Parameters
    ----------
    obs_target, obs_base : array_like, shape (n,) or (R, n) each
        Samples of the ensemble at the shifted parameters ``a'`` and of the one at ``a``.  Since they are
        independent their shapes may differ (each needs ``n >= 10`` per chain).  They must come from different
        random keys: two chains started from the same key at neighbouring parameters share their momenta and
        accept/reject draws and are correlated (e.g. plaquette series correlation 0.66 at beta 2.0 and 2.2), which
        this estimator does not see.
    method, S, bin_size
        As in :func:`log_mean_weight`, applied to each ensemble separately.

    Returns
    -------
    ReweightingResult
        ``value = mean_target - mean_base``, ``error = sqrt(err_target^2 + err_base^2)``.
        The combined ``tau_int = error^2 / (2 (v_t + v_b))`` with ``v`` the
        uncorrelated variances of the two means (so ``ess`` keeps its
        meaning), its error propagated linearly; ``n``/``n_replicas`` are
        summed, ``window`` is the larger of the two.  ``weight_ess`` is None.
    """
    _check_method(method)
    a = _as_samples(obs_target, "obs_target")
    b = _as_samples(obs_base, "obs_base")
    if method == "gamma":
        sa, sb = gamma_method(a, S=S), gamma_method(b, S=S)
    else:
        sa = binned_jackknife(a, bin_size=bin_size)
        sb = binned_jackknife(b, bin_size=bin_size)
    va, vb = _naive_variance(sa, a), _naive_variance(sb, b)
    error = math.sqrt(sa.error**2 + sb.error**2)
    v = va + vb
    if v > 0 and error > 0:
        tau = error**2 / (2.0 * v)
        tau_err = math.hypot(va * sa.tau_int_error, vb * sb.tau_int_error) / v
    else:
        tau, tau_err = 0.5, 0.0
    st = Stats(
        value=sa.value - sb.value,
        error=error,
        tau_int=float(tau),
        tau_int_error=float(tau_err),
        n=sa.n + sb.n,
        n_replicas=sa.n_replicas + sb.n_replicas,
        window=max(sa.window, sb.window),
        method=method,
    )
    return ReweightingResult(st, None, int(a.size + b.size))


def variance_reduction(
    result_a: ReweightingResult | Stats, result_b: ReweightingResult | Stats
) -> float:
    """Variance-reduction factor ``(error_b / error_a)^2`` of ``a`` over ``b``.

    Values > 1 mean that ``result_a`` is more precise.  ``inf`` if only
    ``error_a`` vanishes, ``nan`` if both do.
    """
    ea, eb = float(result_a.error), float(result_b.error)
    if ea == 0.0:
        return math.nan if eb == 0.0 else math.inf
    return (eb / ea) ** 2
