r"""Autocorrelation analysis: Wolff's Gamma method.

Implements the error analysis of

    U. Wolff, "Monte Carlo errors with less errors",
    Comput. Phys. Commun. 156 (2004) 143, hep-lat/0306017,

written from the equations of that paper.  Notation (Wolff sec. 2-3):

* ``R`` replicas (independent Markov chains) of length ``N_r`` each, here
  all equal to ``n``; ``N = sum_r N_r`` is the total number of samples.
* primary observables ``a_alpha``; overall means
  ``abar_alpha = (1/N) sum_{r,i} a_alpha^r(i)``.
* autocorrelation function of the (projected) fluctuations ``delta(i)``::

      Gamma(t) = 1/(N - R t) * sum_r sum_{i=1}^{N_r - t} delta^r(i) delta^r(i+t)

  (sum over replicas, Wolff eq. 31), ``rho(t) = Gamma(t) / Gamma(0)``.
* for a derived quantity ``F = f(abar)`` the fluctuations are projected with
  the gradient ``f_alpha = df/da_alpha`` at ``abar`` (eq. 37):
  ``delta(i) = sum_alpha f_alpha (a_alpha(i) - abar_alpha)``.
* windowed sums ``C(W) = Gamma(0) + 2 sum_{t=1}^W Gamma(t)``,
  ``tau_int(W) = C(W) / (2 Gamma(0))``; the variance of ``F`` is ``C(W)/N``.
* automatic windowing (eqs. 50-52): with
  ``tau(W) = S / ln((2 tau_int(W) + 1) / (2 tau_int(W) - 1))`` (``tau`` -> 0
  if ``tau_int(W) <= 1/2``) and
  ``g(W) = exp(-W/tau(W)) - tau(W)/sqrt(W N)``, the window is the first
  ``W = 1, 2, ...`` with ``g(W) < 0``.
* bias correction (eq. 49): ``Gamma(t) -> Gamma(t) + C(W)/N`` for all ``t``,
  i.e. ``C(W) -> C(W) (1 + (2W + 1)/N)``; ``error = sqrt(C(W)/N)`` and
  ``tau_int = C(W) / (2 Gamma(0))`` are computed from the corrected values.
* error of ``tau_int`` (Madras-Sokal approximation, eq. 42):
  ``delta tau_int = tau_int * sqrt((4W + 2)/N)``.
* for chains with a slow mode that the automatic window cuts off, the exponential-tail correction of Schaefer,
  Sommer and Virotta (``S=Windowing(tau_exp=...)``): :mod:`corrflow.stats.windowing`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import scipy.fft

from .result import Stats
from .windowing import Windowing, as_windowing, automatic_window, rho_error, tail_window

__all__ = [
    "MIN_SAMPLES",
    "Windowing",
    "autocorrelation_function",
    "blocked_two_tau",
    "gamma_method",
    "integrated_autocorrelation_time",
    "SlowModeCheck",
    "slow_mode_check",
]

#: Minimal number of samples per replica accepted by the estimators.
MIN_SAMPLES = 10

DerivedFunc = Callable[[np.ndarray], float]


# ---------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------


def _check_finite(arr: np.ndarray) -> None:
    """Raise ValueError if ``arr`` contains NaN or infinities."""
    if not np.all(np.isfinite(arr)):
        n_nan = int(np.count_nonzero(np.isnan(arr)))
        n_inf = int(np.count_nonzero(np.isinf(arr)))
        raise ValueError(
            f"data contains non-finite values ({n_nan} NaN, {n_inf} inf); "
            "remove or repair them before the error analysis"
        )


def _as_float_array(data: object) -> np.ndarray:
    try:
        arr = np.asarray(data)
        complex_data = np.iscomplexobj(arr)
        if not complex_data:
            arr = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:  # ragged lists, strings, ...
        raise ValueError(f"data must be convertible to a float array: {exc}") from exc
    if complex_data:  # a float conversion would drop the imaginary part with only a ComplexWarning
        raise TypeError("complex data: pass the real part, imaginary part or modulus explicitly, e.g. np.real(x)")
    return arr


def _as_observables(
    data: object, with_func: bool, min_samples: int = MIN_SAMPLES
) -> np.ndarray:
    """Normalise the accepted input layouts to shape ``(n_obs, R, n)``.

    Without ``func`` (``with_func=False``): ``(n,)`` or ``(R, n)``, a single
    observable.  With ``func``: ``(n,)`` (one observable), ``(n_obs, n)`` or
    ``(n_obs, R, n)``.
    """
    arr = _as_float_array(data)
    ndim = arr.ndim
    if with_func:
        if arr.ndim == 1:
            arr = arr[None, None, :]
        elif arr.ndim == 2:
            arr = arr[:, None, :]
        elif arr.ndim != 3:
            raise ValueError(
                "with func, data must have ndim 1 (n,), 2 (n_obs, n) or "
                f"3 (n_obs, n_replicas, n); got ndim={arr.ndim}, shape={arr.shape}"
            )
    else:
        if arr.ndim == 1:
            arr = arr[None, None, :]
        elif arr.ndim == 2:
            arr = arr[None, :, :]
        else:
            raise ValueError(
                "without func, data must have ndim 1 (n,) or 2 (n_replicas, n) "
                f"for a single observable; got ndim={arr.ndim}, shape={arr.shape}. "
                "Several observables need func (shape (n_obs, [n_replicas,] n))."
            )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"data has an empty observable/replica axis: shape {arr.shape}")
    n = arr.shape[-1]
    if n < min_samples:
        obs_first = with_func and ndim == 2  # (n_obs, n): the axis before n holds the observables
        hint = ""
        if ndim >= 2 and arr.shape[0 if obs_first else 1] >= min_samples:  # a long axis before a short one
            hint = ("; did you pass (n, n_obs)? observables go first: (n_obs, n)" if obs_first
                    else "; did you pass (n_traj, n_chains)? replicas go first: (n_chains, n_traj)")
        raise ValueError(
            f"need at least {min_samples} samples per replica, got n={n}{hint}"
        )
    _check_finite(arr)
    return arr


# ---------------------------------------------------------------------------
# autocorrelation function
# ---------------------------------------------------------------------------


def _autocovariance(dev: np.ndarray, t_max: int) -> np.ndarray:
    """Replica-summed autocovariance ``Gamma(t)``, ``t = 0 .. t_max``.

    Parameters
    ----------
    dev : ndarray, shape (R, n)
        Fluctuations about the overall mean, one row per replica.
    t_max : int
        Largest lag returned (``< n``).

    Returns
    -------
    ndarray, shape (t_max + 1,)
        ``Gamma(t) = sum_r sum_i dev_r(i) dev_r(i+t) / (N - R t)``, computed
        with zero-padded FFTs (exact linear, not circular, correlation).
    """
    n_rep, n = dev.shape
    acov = _lagged_sums(dev, t_max).sum(axis=0)
    t = np.arange(t_max + 1)
    return acov / (n_rep * (n - t))


def _lagged_sums(dev: np.ndarray, t_max: int) -> np.ndarray:
    """``sum_i dev_r(i) dev_r(i + t)`` for every row ``r`` of ``dev`` ``(R, n)``, ``t = 0 .. t_max``; shape
    ``(R, t_max + 1)``.  Zero-padded FFTs: exact linear (not circular) correlation in ``O(n log n)``."""
    n_fft = scipy.fft.next_fast_len(2 * dev.shape[1] - 1, real=True)
    spec = scipy.fft.rfft(dev, n=n_fft, axis=-1)
    return scipy.fft.irfft((spec * spec.conj()).real, n=n_fft, axis=-1)[:, : t_max + 1]


def autocorrelation_function(x: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation function ``rho(t) = Gamma(t) / Gamma(0)``.

    Parameters
    ----------
    x : array_like, shape (n,) or (n_replicas, n)
        One observable; a 2-D input is a set of replicas of equal length,
        whose fluctuations are taken about the common mean and whose
        autocovariances are summed as in Wolff eq. 31.

    Returns
    -------
    ndarray, shape (n,)
        ``rho(t)`` for ``t = 0 .. n-1`` (``rho(0) = 1``), without Wolff's
        bias correction.  For constant data ``rho = (1, 0, 0, ...)``.
        Computed with FFTs in ``O(n log n)``.
    """
    obs = _as_observables(x, with_func=False, min_samples=2)[0]
    dev = obs - obs.mean()
    gamma = _autocovariance(dev, obs.shape[-1] - 1)
    rho = np.zeros_like(gamma)
    if gamma[0] > 0 and np.ptp(dev) > 0:
        rho = gamma / gamma[0]
    else:
        rho[0] = 1.0
    return rho


# ---------------------------------------------------------------------------
# Gamma method
# ---------------------------------------------------------------------------


def _gamma_projected(dev: np.ndarray, value: float, windowing: Windowing) -> Stats:
    """Gamma-method analysis of projected fluctuations ``dev`` (shape (R, n))."""
    n_rep, n = dev.shape
    n_total = n_rep * n
    if np.ptp(dev) == 0:
        # Constant (projected) data: no fluctuations at all.
        return Stats(float(value), 0.0, 0.5, 0.0, n_total, n_rep, 0)

    w_max = max(1, n // 2)
    tail = windowing.tau_exp is not None
    # the tail window needs rho beyond W_max (its error sums lags past t, and rho(W + 1))
    gamma = _autocovariance(dev, n - 1 if tail else w_max)
    if not gamma[0] > 0:  # cannot happen for non-constant data; be safe
        return Stats(float(value), 0.0, 0.5, 0.0, n_total, n_rep, 0)
    rho = gamma / gamma[0]
    if tail:
        window, found = tail_window(rho, n_total, min(w_max, n - 2), windowing.tau_exp, windowing.n_sigma)
        reason = f"rho stays above {windowing.n_sigma:g} of its errors"
    else:
        window, found = automatic_window(rho, n_total, windowing.S)
        reason = "automatic windowing found no window"
    if not found:
        warnings.warn(
            f"Gamma method: {reason} up to "
            f"W_max={w_max} (n={n} per replica); using W=W_max. The chain is "
            "probably too short compared to its autocorrelation time and "
            "tau_int/error are likely underestimated.",
            RuntimeWarning,
            stacklevel=3,
        )
    c_w = gamma[0] + 2.0 * gamma[1 : window + 1].sum()
    # bias correction Gamma(t) -> Gamma(t) + C(W)/N  (Wolff eq. 49)
    gamma0 = gamma[0] + c_w / n_total
    c_w = c_w * (1.0 + (2 * window + 1) / n_total)
    if c_w < 0:
        warnings.warn(
            "Gamma method: windowed autocovariance sum C(W) is negative "
            "(strongly anti-correlated data); clamping the error to 0.",
            RuntimeWarning,
            stacklevel=3,
        )
        c_w = 0.0
    tau_int = c_w / (2.0 * gamma0)
    tau_int_error = tau_int * math.sqrt((4 * window + 2) / n_total)
    if tail:  # Schaefer, Sommer, Virotta: the exponential tail beyond W, an upper bound
        tau_exp = windowing.tau_exp
        tau_int += tau_exp * abs(rho[window + 1])
        tau_int_error = math.hypot(tau_int_error, tau_exp * rho_error(rho, window + 1, n_total, tau_exp))
        c_w = 2.0 * tau_int * gamma0
    error = math.sqrt(c_w / n_total)
    return Stats(
        value=float(value),
        error=error,
        tau_int=float(tau_int),
        tau_int_error=float(tau_int_error),
        n=int(n_total),
        n_replicas=int(n_rep),
        window=int(window),
    )


def _eval_scalar(func: DerivedFunc, a: np.ndarray, where: str) -> float:
    """Evaluate ``func(a)``; require a finite scalar (ValueError otherwise)."""
    with np.errstate(all="ignore"):  # non-finite results are reported below
        out = np.asarray(func(a), dtype=np.float64)
    if out.ndim != 0:
        raise ValueError(f"func must return a scalar, got shape {out.shape}")
    val = float(out)
    if not math.isfinite(val):
        raise ValueError(f"func returned a non-finite value ({val}) {where}")
    return val


#: How often the step of the numerical gradient is halved when ``func`` fails a step away from the means (down to
#: ``2**-10`` of the error scale) before the failure is reported.
_MAX_STEP_HALVINGS = 10


def _numerical_gradient(
    func: DerivedFunc, means: np.ndarray, steps: np.ndarray
) -> np.ndarray:
    """Central-difference gradient of ``func`` at ``means``.

    Parameters
    ----------
    func : callable
        ``func(a) -> float`` with ``a`` of shape ``(n_obs,)``.
    means : ndarray, shape (n_obs,)
        Point of evaluation.
    steps : ndarray, shape (n_obs,)
        Step per observable; a zero step (non-fluctuating observable) gives
        a zero gradient component, which is irrelevant for the projection.
        Where ``func`` raises ``ValueError`` or is non-finite at ``means +- h``
        the step is halved (at most ``_MAX_STEP_HALVINGS`` times), since
        the derivative is local.

    Returns
    -------
    ndarray, shape (n_obs,)
    """
    grad = np.zeros_like(means)
    for alpha, h in enumerate(steps):
        if h <= 0:
            continue
        for attempt in range(_MAX_STEP_HALVINGS + 1):
            up = means.copy()
            dn = means.copy()
            up[alpha] += h
            dn[alpha] -= h
            try:
                f_up = _eval_scalar(func, up, "in the numerical gradient")
                f_dn = _eval_scalar(func, dn, "in the numerical gradient")
                break
            except ValueError:
                # func is defined at the means but not a step away (e.g. a reweighted ratio whose denominator has a
                # relative error near 1): the gradient is a local quantity, so shrink the step rather than fail
                if attempt == _MAX_STEP_HALVINGS:
                    raise
                h *= 0.5
        grad[alpha] = (f_up - f_dn) / (2.0 * h)
    return grad


def _project(obs: np.ndarray, func: DerivedFunc | None) -> tuple[float, np.ndarray]:
    """Value and projected fluctuations of ``f`` for ``obs`` of shape (n_obs, R, n).

    Returns ``(f(abar), delta)`` with ``delta`` of shape ``(R, n)``:
    ``delta = sum_alpha f_alpha (a_alpha - abar_alpha)``.  Gradient steps are
    half the naive (uncorrelated) error of each observable's mean,
    ``h_alpha = sqrt(Gamma_alpha,alpha(0) / N) / 2``, following Wolff's
    prescription of steps on the scale of the statistical errors.
    """
    n_total = obs.shape[1] * obs.shape[2]
    means = obs.mean(axis=(1, 2))
    dev = obs - means[:, None, None]
    if func is None:
        return float(means[0]), dev[0]
    value = _eval_scalar(func, means.copy(), "at the sample means")
    naive_err = np.sqrt(np.mean(dev**2, axis=(1, 2)) / n_total)
    naive_err[np.ptp(obs, axis=(1, 2)) == 0] = 0.0  # constant observables
    grad = _numerical_gradient(func, means, 0.5 * naive_err)
    return value, np.tensordot(grad, dev, axes=(0, 0))


def gamma_method(
    data: np.ndarray, func: DerivedFunc | None = None, S: float | Windowing = 1.5
) -> Stats:
    """Error of a Monte Carlo estimate with Wolff's Gamma method.

    Parameters
    ----------
    data : array_like
        Layout depends on ``func``:

        * ``func is None`` -- a single observable:

          - shape ``(n,)``: one replica (Markov chain) of length ``n``;
          - shape ``(n_replicas, n)``: several independent replicas of equal
            length; their autocorrelation functions are summed (Wolff sec. 3).
            **A 2-D array without func is always interpreted as replicas.**

        * ``func`` given -- several primary observables:

          - shape ``(n_obs, n)``: one replica;
          - shape ``(n_obs, n_replicas, n)``: several replicas;
          - shape ``(n,)`` is accepted as a single observable (``n_obs = 1``).

        Samples must be finite and ``n >= 10`` per replica.
    func : callable, optional
        Derived quantity ``F = func(a)`` where ``a`` is the 1-D array (shape
        ``(n_obs,)``) of the primary observables' means; must return a scalar.
        The fluctuations are projected on the gradient of ``func`` at the
        means (central differences with steps of half the naive error of
        each mean) and the Gamma method is applied to the projection.
    S : float or Windowing, default 1.5
        Wolff's windowing parameter ``S`` (ratio of window to ``tau``);
        ``S`` in ``[1, 2]`` is usually fine.  A :class:`Windowing` with
        ``tau_exp`` sums up to where ``rho`` is compatible with zero and adds
        the exponential tail of the slow mode beyond (Schaefer, Sommer,
        Virotta 2011; :mod:`corrflow.stats.windowing`): for chains whose
        slowest mode is cut off by Wolff's window.

    Returns
    -------
    Stats
        ``value = func(abar)`` (or the mean), ``error``, bias-corrected
        ``tau_int`` of the (projected) observable with its Madras-Sokal error,
        ``n`` (total samples ``R * n``), ``n_replicas`` and ``window`` ``W``.
        No O(1/N) bias correction of nonlinear ``func`` is applied to
        ``value``.  Constant data give ``error = 0``, ``tau_int = 0.5`` and
        ``window = 0``.

    Raises
    ------
    ValueError
        Wrong dimensionality, fewer than 10 samples per replica, NaN/inf in
        the data, ``S <= 0`` (or ``tau_exp``, ``n_sigma``), or ``func``
        returning non-scalar/non-finite.
    TypeError
        Complex data (pass ``np.real(x)``, ``np.imag(x)`` or ``np.abs(x)``).

    Warns
    -----
    RuntimeWarning
        If no window satisfies the criterion up to ``W_max = n // 2``
        (chain too short) or if the windowed sum is negative.
    """
    windowing = as_windowing(S)
    obs = _as_observables(data, with_func=func is not None)
    value, dev = _project(obs, func)
    return _gamma_projected(dev, value, windowing)


def integrated_autocorrelation_time(x: np.ndarray, S: float | Windowing = 1.5) -> float:
    """Integrated autocorrelation time of one observable (convention 1/2 for iid).

    Parameters
    ----------
    x : array_like, shape (n,) or (n_replicas, n)
        One observable, one or several replicas.
    S : float or Windowing, default 1.5
        Windowing of :func:`gamma_method`.

    Returns
    -------
    float
        ``gamma_method(x, S=S).tau_int``.
    """
    return gamma_method(x, S=S).tau_int


def blocked_two_tau(x: np.ndarray, block: int) -> float:
    """``2 tau_int`` of the mean of ``x`` ``(n_replicas, n)`` from the variance of block means of ``block``
    consecutive values (deviations from the overall mean, so offsets frozen between replicas count too):
    ``block var(block means) / var(x)``.  It levels off at ``2 tau_int`` once blocks are longer than every
    autocorrelation; a value still growing at the largest blocks is a slow mode that the Gamma method's automatic
    window (:func:`gamma_method`) stops short of.  Values past the last whole block are left out."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    dev = x - x.mean()
    means = dev[:, : dev.shape[1] // block * block].reshape(dev.shape[0], -1, block).mean(-1)
    return float(means.var() * block / dev.var())


class SlowModeCheck(NamedTuple):
    """:func:`slow_mode_check`: ``2 tau_int`` of the mean from block means (``blocked``, with its ``error``) against
    the Gamma method's (``gamma``); ``pull = (blocked - gamma) / error``; ``block`` the block length."""

    blocked: float
    error: float
    gamma: float
    pull: float
    block: int

    @property
    def slow(self) -> bool:
        """True when the block means vary more than the Gamma window allows, by more than 3 errors: a slow mode."""
        return self.pull > 3.0


def slow_mode_check(x: np.ndarray, S: float | Windowing = 1.5, n_blocks: int = 32) -> SlowModeCheck | None:
    """Does the Gamma method's window miss a slow mode?  ``x`` ``(n,)`` or ``(n_replicas, n)``: ``2 tau_int`` from the
    variance of about ``n_blocks`` block means (:func:`blocked_two_tau`, blocks of ``n_replicas n / n_blocks``
    consecutive values, at most ``n / 8`` of a chain; it sees every autocorrelation shorter than the blocks, the window
    only those it reaches) against ``2 tau_int`` of :func:`gamma_method` with windowing ``S``.  The blocked value's
    error is that of a variance from ``B`` block means, ``blocked sqrt(2 / (B - 1))``, so with 32 blocks only a gross
    miss (the block value 4x the window's) reaches 3 errors: a check for resonances and frozen modes, not a
    measurement.  None for fewer than 16 blocks of at least 20 values (too few or too short to tell)."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    n_rep, n = x.shape
    block = min(n_rep * n // n_blocks, n // 8)
    total = n_rep * (n // block) if block else 0
    if total < 16 or block < 20 or np.ptp(x) == 0:
        return None
    blocked = blocked_two_tau(x, block)
    err = blocked * math.sqrt(2.0 / (total - 1))
    gamma = 2.0 * gamma_method(x, S=S).tau_int
    return SlowModeCheck(blocked, err, gamma, (blocked - gamma) / err if err > 0 else 0.0, block)
