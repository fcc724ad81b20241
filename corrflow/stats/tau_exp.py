r"""The exponential autocorrelation time of a chain, estimated from the decay of ``rho(t)``.

The exponential-tail correction of the Gamma method (:class:`corrflow.stats.Windowing`, Schaefer, Sommer, Virotta,
Nucl. Phys. B 845 (2011) 93) needs ``tau_exp``, the decay time of the chain's slowest mode.  Their recipe: take it
from the observable that couples most strongly to that mode (the topological charge, the Wilson-flow scale), where
the slow decay of ``rho(t)`` stands above the noise, and use it for every observable.  :func:`fit_tau_exp` does the
first half for one observable:

* ``rho(t)`` of the replicas pooled (Wolff eq. 31) and its error ``delta rho(t)`` (Wolff's eq. E.11, as in the tail
  window);
* ``W_u``: the first lag at which ``rho`` is compatible with zero, ``rho(W_u) < n_sigma delta rho(W_u)``;
* a fit of ``log rho(t) = a - t / tau_exp`` over the second half of the significant lags, ``t = W_u / 2 .. W_u - 1``
  (where faster modes have died out), weighted by ``(rho / delta rho)^2``;
* its error from a jackknife over blocks of at least ``4 W_u`` consecutive values (the fit repeated with one block
  left out, lags and weights held fixed).

What it can and cannot see: a slow mode whose share of ``rho`` is below ``n_sigma delta rho`` at every lag is
invisible in this observable (a plaquette with a small topological component); the fit then returns the decay of
the faster modes, which is a valid ``tau_exp`` *of that observable* but not of the chain.  Hence the recipe's
second half, left to the caller: the largest estimate over the observables
(:func:`corrflow.summary.slowest_decay`, ``corrflow summary --tau-exp auto``).  On mixtures of a fast and a slow
AR(1) process (``python benchmarks/gamma_tail.py``, BENCHMARKS.md) the estimate of a visible slow mode scatters by
a factor of about 1.5 either way on chains of 60-200 ``tau_exp``, and the jackknife error covers the scatter only
on long chains: take it as a guide, not a measurement -- which is all the tail needs (it is an upper bound by
construction).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .autocorr import _as_observables, _autocovariance, _lagged_sums
from .windowing import rho_error, tail_window

__all__ = ["TauExpFit", "fit_tau_exp"]

#: fewest jackknife blocks for an error
MIN_BLOCKS = 8


class TauExpFit(NamedTuple):
    """:func:`fit_tau_exp`: ``tau_exp`` (in units of the data's spacing) with its block-jackknife ``error``, from the
    lags ``t_min .. t_max``, the error from ``n_blocks`` blocks.  ``error`` is ``inf`` where the chains are too short
    for an error (fewer than ``MIN_BLOCKS`` blocks of ``4 (t_max + 1)`` values, or ``rho`` still significant at the
    largest lag examined): ``tau_exp`` is then a rough estimate of a mode slower than the chains resolve, at most the
    length of a chain (:attr:`resolved` False)."""

    tau_exp: float
    error: float
    t_min: int
    t_max: int
    n_blocks: int

    @property
    def resolved(self) -> bool:
        """True where the chains resolve the decay (the error is finite)."""
        return math.isfinite(self.error)

    def __str__(self) -> str:
        from .result import format_value_error

        rough = f"{float(f'{self.tau_exp:.3g}'):g} (no error)"  # 1210, not 1.21e+03
        value = format_value_error(self.tau_exp, self.error) if self.resolved else rough
        return f"{value} from rho(t) for t = {self.t_min}..{self.t_max}"


def _decay_time(rho: np.ndarray, t: np.ndarray, weights: np.ndarray) -> float:
    """``-1 / slope`` of the weighted straight-line fit of ``log rho(t)`` over the lags ``t``; ``inf`` where the fit
    does not decay (or ``rho`` is not positive)."""
    r = rho[t]
    if np.any(r <= 0):
        return math.inf
    y = np.log(r)
    sw = weights.sum()
    tm, ym = (weights * t).sum() / sw, (weights * y).sum() / sw
    slope = (weights * (t - tm) * (y - ym)).sum() / (weights * (t - tm) ** 2).sum()
    return -1.0 / slope if slope < 0 else math.inf


def fit_tau_exp(x: np.ndarray, n_sigma: float = 2.0, min_lags: int = 3) -> TauExpFit | None:
    """The exponential autocorrelation time of the slowest mode visible in ``x`` (module docstring).

    Parameters
    ----------
    x : array_like, shape (n,) or (n_replicas, n)
        One observable, one or several replicas (chains) of equal length; lags in units of its spacing.
    n_sigma : float
        ``rho`` counts as significant while ``rho(t) >= n_sigma delta rho(t)`` (as in :class:`Windowing`).
    min_lags : int
        Fewest lags in the fit range.

    Returns
    -------
    TauExpFit or None
        None where ``x`` is constant or where fewer than ``min_lags`` lags are significant in the second half of the
        significant range (no decay to fit: ``rho`` drops into the noise at once).
        An infinite ``error`` (:attr:`TauExpFit.resolved` False) where the chains are too short to resolve the decay:
        ``rho`` still significant at lag ``n / 2``, fewer than ``MIN_BLOCKS`` (8) blocks of ``4 (t_max + 1)`` values,
        a block whose omission leaves no decay, or a significant ``rho`` that does not decay at all (a frozen mode);
        ``tau_exp`` is then capped at ``n`` (a flat ``rho`` fits any longer decay).
    """
    obs = _as_observables(x, with_func=False, min_samples=2)[0]
    n_rep, n = obs.shape
    n_total = n_rep * n
    dev = obs - obs.mean()
    if np.ptp(dev) == 0 or n < 4:
        return None
    gamma = _autocovariance(dev, n - 1)
    rho = gamma / gamma[0]
    w_max = min(max(1, n // 2), n - 2)
    guess = 0.0
    for _ in range(2):  # delta rho sums Lambda = max(100, 10 tau_exp) lags: once more with the first estimate
        w_u, found = tail_window(rho, n_total, w_max, guess, n_sigma)
        t = np.arange(max(1, w_u // 2), w_u)
        if t.size < min_lags:
            return None
        weights = np.array([(rho[k] / rho_error(rho, int(k), n_total, guess)) ** 2 for k in t])
        tau = _decay_time(rho, t, weights)
        if not math.isfinite(tau):  # significant but flat: a frozen mode
            return TauExpFit(float(n), math.inf, int(t[0]), int(t[-1]), 0)
        if guess or 10.0 * tau <= 100.0:
            break
        guess = tau
    t_max = int(t[-1])
    block = max(4 * (t_max + 1), n_total // 32)
    per_chain = n // block
    n_blocks = n_rep * per_chain
    if n_blocks < MIN_BLOCKS or not found:  # a decay slower than the chains resolve; no longer than a chain
        return TauExpFit(float(min(tau, n)), math.inf, int(t[0]), t_max, int(n_blocks))
    sums = _lagged_sums(dev[:, : per_chain * block].reshape(n_blocks, block), t_max)
    total = sums.sum(axis=0)
    counts = block - np.arange(t_max + 1)
    taus = np.empty(n_blocks)
    for b in range(n_blocks):
        g = (total - sums[b]) / counts
        taus[b] = _decay_time(g / g[0], t, weights)
    if not np.all(np.isfinite(taus)):  # a block left out and rho no longer decays: unresolved too
        return TauExpFit(float(min(tau, n)), math.inf, int(t[0]), t_max, int(n_blocks))
    error = math.sqrt((n_blocks - 1) / n_blocks * np.sum((taus - taus.mean()) ** 2))
    return TauExpFit(float(tau), float(error), int(t[0]), t_max, int(n_blocks))
