r"""Estimators for correlated (flowed) ensembles: reweighting with paired samples.

Setting
-------
A base ensemble ``U_i ~ p_a`` (``i`` along one or several Markov chains) is
mapped by a flow ``f`` towards the parameter ``a'``.  With the log weights::

    log w_i = -S_{a'}(f(U_i)) + S_a(U_i) + log J_f(U_i)

one has ``<w>_a = Z_{a'} / Z_a`` and ``<O>_{a'} = <w O(f(U))>_a / <w>_a``.
For ``f`` = identity this is ordinary reweighting.

The triple ``(O(U_i), O(f(U_i)), w_i)`` is **one** Monte Carlo measurement.
All estimators here therefore form the per-sample primary observables
(``w O_f``, ``w``, ``O_b``, ...) on the *same* samples and compute the
requested ratio or difference as a single derived quantity, so that the
error analysis (:func:`~corrflow.stats.gamma_method` with gradient
projection, or :func:`~corrflow.stats.binned_jackknife` with ``func``)
resamples/projects the pairs together and accounts for autocorrelations
along the base chains.  Correlations between ``O_b`` and ``O_f`` cancel a
large part of the fluctuations of differences; this is the point of
flowed ensembles.

Conventions
-----------
* Every array argument has shape ``(n,)`` (one chain) or ``(R, n)`` (``R``
  independent chains of equal length, treated as replicas); all arrays of
  one call must have the same shape, ``n >= 10`` samples per chain.
* Observables must be finite.  Log weights may contain ``-inf`` (zero
  weight) but not NaN or ``+inf``, and at least one must be finite.
* Weights are exponentiated as ``w~ = exp(log_w - max(log_w))`` (values in
  ``[0, 1]``, no overflow).  The shift cancels in all ratios and is added
  back only for :func:`log_mean_weight`.
* ``method`` is ``"gamma"`` (Wolff's Gamma method, windowing ``S``: Wolff's
  parameter or a :class:`~corrflow.stats.Windowing`) or ``"jackknife"``
  (binned jackknife, bin size ``bin_size`` or the default rule of
  :func:`~corrflow.stats.binned_jackknife` with the same ``S``).

Differences and derivatives built on the same validation and result type (:func:`correlated_difference`,
:func:`symmetric_derivative`, :func:`independent_difference`, ...) are in :mod:`corrflow.stats.differences`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from .autocorr import MIN_SAMPLES, gamma_method
from .jackknife import binned_jackknife
from .result import Stats, format_value_error
from .windowing import Windowing

__all__ = [
    "ReweightingResult",
    "log_mean_weight",
    "reweighted_mean",
    "weight_ess",
    "weight_ess_fraction",
]

_METHODS = ("gamma", "jackknife")


# ---------------------------------------------------------------------------
# result type
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReweightingResult:
    """Estimate from (flowed) reweighting, with its diagnostics.

    Attributes
    ----------
    stats : Stats
        Value, error and autocorrelation information of the derived quantity
        (from :func:`~corrflow.stats.gamma_method` or
        :func:`~corrflow.stats.binned_jackknife`).  ``stats.ess`` is the
        Monte Carlo effective sample size ``stats.n / (2 tau_int)``.
    weight_ess : float or None
        Kish effective sample size of the reweighting factors,
        ``(sum w)^2 / sum w^2`` over all ``n`` samples (for several weight
        sets the smallest); ``None`` when no weights are involved
        (:func:`independent_difference`).
    n : int
        Total number of samples given (summed over chains; for
        :func:`independent_difference` over both ensembles).
    """

    stats: Stats
    weight_ess: float | None
    n: int

    @property
    def value(self) -> float:
        """Central value."""
        return self.stats.value

    @property
    def error(self) -> float:
        """Statistical error (one standard deviation)."""
        return self.stats.error

    @property
    def tau_int(self) -> float:
        """Integrated autocorrelation time of the (projected) estimator."""
        return self.stats.tau_int

    @property
    def ess(self) -> float:
        """Monte Carlo effective sample size ``stats.n / (2 tau_int)``."""
        return self.stats.ess

    @property
    def weight_ess_fraction(self) -> float | None:
        """``weight_ess / n`` (``None`` without weights)."""
        if self.weight_ess is None:
            return None
        return self.weight_ess / self.n

    def pull(self, exact: float) -> float:
        """``(value - exact) / error``; see :meth:`Stats.pull`."""
        return self.stats.pull(exact)

    def __str__(self) -> str:
        return str(self.stats)

    def __format__(self, spec: str) -> str:
        """Same format specs as :class:`Stats` (``"r"`` gives ``repr``)."""
        if spec == "r":
            return repr(self)
        return format(self.stats, spec)

    def __repr__(self) -> str:
        tau = format_value_error(self.stats.tau_int, self.stats.tau_int_error, digits=1)
        ess = self.stats.ess
        ess_str = "inf" if math.isinf(ess) else f"{ess:.0f}"
        if self.weight_ess is None:
            w_str = "None"
        else:
            w_str = f"{self.weight_ess:.0f}/{self.n}"
        return (
            f"ReweightingResult({self}, tau_int={tau}, ess={ess_str}, "
            f"weight_ess={w_str})"
        )


# ---------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------


def _as_samples(arr: object, name: str, *, log_weight: bool = False) -> np.ndarray:
    """Validate one argument; return a float64 array of shape (R, n).

    ``log_weight=True`` allows ``-inf`` entries (zero weight) but requires at
    least one finite entry.
    """
    try:
        a = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be convertible to a float array: {exc}") from exc
    if a.ndim not in (1, 2):
        raise ValueError(
            f"{name} must have shape (n,) or (n_chains, n); got shape {a.shape}"
        )
    if a.ndim == 1:
        a = a[None, :]
    if a.shape[0] == 0:
        raise ValueError(f"{name} has no chains: shape {a.shape}")
    if a.shape[1] < MIN_SAMPLES:
        raise ValueError(
            f"{name}: need at least {MIN_SAMPLES} samples per chain, got n={a.shape[1]}"
        )
    if np.any(np.isnan(a)):
        raise ValueError(f"{name} contains NaN ({int(np.count_nonzero(np.isnan(a)))} entries)")
    if log_weight:
        if np.any(a == np.inf):
            raise ValueError(f"{name} contains +inf (infinite weight)")
        if not np.any(np.isfinite(a)):
            raise ValueError(f"{name} has no finite entries (all weights are zero)")
    elif not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains infinite values")
    return a


def _check_same_shape(arrays: dict[str, object]) -> None:
    """Raise ValueError naming the arguments if the shapes differ."""
    shapes = {name: np.shape(a) for name, a in arrays.items()}
    first_name, first_shape = next(iter(shapes.items()))
    for name, shape in shapes.items():
        if shape != first_shape:
            raise ValueError(
                f"{name} has shape {shape} but {first_name} has shape {first_shape}; "
                "paired samples must have the same shape"
            )


def _validated(
    observables: dict[str, object], log_weights: dict[str, object]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Validate individual arrays and their common shape; return (R, n) arrays."""
    obs = {k: _as_samples(v, k) for k, v in observables.items()}
    lw = {k: _as_samples(v, k, log_weight=True) for k, v in log_weights.items()}
    _check_same_shape({**observables, **log_weights})
    return obs, lw


def _normalised_weights(log_w: np.ndarray) -> tuple[np.ndarray, float]:
    """``(exp(log_w - shift), shift)`` with ``shift = max(log_w)`` (finite)."""
    shift = float(np.max(log_w))
    return np.exp(log_w - shift), shift


def _check_method(method: str) -> None:
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")


def _check_delta(delta: float) -> float:
    d = float(delta)
    if not (math.isfinite(d) and d != 0.0):
        raise ValueError(f"delta must be finite and non-zero, got {delta!r}")
    return d


def _derived(
    primaries: list[np.ndarray],
    func: Callable[[np.ndarray], float],
    method: str,
    S: float | Windowing,
    bin_size: int | None,
) -> Stats:
    """Error analysis of ``func(means of primaries)``; primaries of shape (R, n)."""
    data = np.stack(primaries)  # (n_obs, R, n)
    if method == "gamma":
        return gamma_method(data, func=func, S=S)
    return binned_jackknife(data, func=func, bin_size=bin_size, S=S)


def _ess_of(w: np.ndarray) -> float:
    """Kish ESS of non-negative weights (any shape)."""
    s1 = float(np.sum(w))
    s2 = float(np.sum(w * w))
    return s1 * s1 / s2


# ---------------------------------------------------------------------------
# weight diagnostics
# ---------------------------------------------------------------------------


def weight_ess(log_w: np.ndarray) -> float:
    """Kish effective sample size of the reweighting factors.

    Parameters
    ----------
    log_w : array_like, shape (n,) or (R, n)
        Log weights (``-inf`` allowed for zero weight).

    Returns
    -------
    float
        ``(sum_i w_i)^2 / sum_i w_i^2`` over all ``R * n`` samples, in
        ``[1, R n]``; ``R n`` for constant weights.  It ignores
        autocorrelations (see ``ReweightingResult.ess`` for those).
    """
    lw = _as_samples(log_w, "log_w", log_weight=True)
    w, _ = _normalised_weights(lw)
    return _ess_of(w)


def weight_ess_fraction(log_w: np.ndarray) -> float:
    """:func:`weight_ess` divided by the total number of samples ``R * n``."""
    lw = _as_samples(log_w, "log_w", log_weight=True)
    w, _ = _normalised_weights(lw)
    return _ess_of(w) / w.size


# ---------------------------------------------------------------------------
# estimators
# ---------------------------------------------------------------------------


def log_mean_weight(
    log_w: np.ndarray,
    method: str = "gamma",
    *,
    S: float | Windowing = 1.5,
    bin_size: int | None = None,
) -> Stats:
    """``log <w>``, the estimate of ``log(Z_{a'} / Z_a)``, with its error.

    Parameters
    ----------
    log_w : array_like, shape (n,) or (R, n)
        Log weights on the base samples.
    method : {"gamma", "jackknife"}
        Error analysis.
    S : float or Windowing, default 1.5
        Gamma-method windowing (Wolff's ``S``, or a :class:`~corrflow.stats.Windowing` with the exponential tail).
    bin_size : int, optional
        Jackknife bin size (default rule of ``binned_jackknife`` if omitted).

    Returns
    -------
    Stats
        ``value = log(mean(w~)) + max(log_w)`` with ``w~ = exp(log_w -
        max(log_w))``; the error is that of the derived quantity
        ``log(mean(w~))`` (the shift is a constant).  Not corrected for the
        O(1/N) bias ``-var(w)/(2 N <w>^2)`` of the logarithm.
    """
    _check_method(method)
    lw = _as_samples(log_w, "log_w", log_weight=True)
    w, shift = _normalised_weights(lw)
    st = _derived([w], lambda a: float(np.log(a[0])), method, S, bin_size)
    return replace(st, value=st.value + shift)


def reweighted_mean(
    obs: np.ndarray,
    log_w: np.ndarray,
    method: str = "gamma",
    *,
    S: float | Windowing = 1.5,
    bin_size: int | None = None,
) -> ReweightingResult:
    """``<O>_{a'} = <w O>_a / <w>_a`` from paired samples.

    Parameters
    ----------
    obs : array_like, shape (n,) or (R, n)
        ``O(f(U_i))``, the observable on the (flowed) base samples.
    log_w : array_like, same shape
        Log weights of the same samples.
    method, S, bin_size
        As in :func:`log_mean_weight`.

    Returns
    -------
    ReweightingResult
        Ratio of the means of ``w~ O`` and ``w~`` as one derived quantity.
    """
    _check_method(method)
    o, lw = _validated({"obs": obs}, {"log_w": log_w})
    w, _ = _normalised_weights(lw["log_w"])
    st = _derived([w * o["obs"], w], lambda a: a[0] / a[1], method, S, bin_size)
    return ReweightingResult(st, _ess_of(w), int(w.size))
