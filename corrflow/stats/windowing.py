r"""Where the Gamma method stops summing the autocorrelation function, and what it adds for the tail beyond.

Two rules, chosen with :class:`Windowing` (or a bare number ``S`` for the first):

* **Wolff's automatic window** (U. Wolff, Comput. Phys. Commun. 156 (2004) 143, hep-lat/0306017, eqs. 50-52): with
  ``tau(W) = S / ln((2 tau_int(W) + 1) / (2 tau_int(W) - 1))`` and ``g(W) = exp(-W/tau(W)) - tau(W)/sqrt(W N)``
  the window is the first ``W`` with ``g(W) < 0``.  It balances the truncation bias of a single exponential decay
  against the statistical error of the sum; a slow mode with a small amplitude, whose part of ``rho(t)`` is buried
  in the noise at the window, is cut off and ``tau_int`` and the error come out small.
* **The exponential-tail correction** (S. Schaefer, R. Sommer, F. Virotta, Nucl. Phys. B 845 (2011) 93,
  arXiv:1009.5228, sec. 4) for chains with such a slow mode of known exponential autocorrelation time
  ``tau_exp`` (from the slowest observable, e.g. the topological charge, or a longer run): sum up to the first
  ``W_u`` at which ``rho`` is compatible with zero, ``rho(W_u) < n_sigma * delta rho(W_u)``, and bound the rest
  by a single exponential of that time, ``sum_{t > W_u} rho(t) ~ tau_exp rho(W_u + 1)``::

      tau_int,u = tau_int(W_u) + tau_exp |rho(W_u + 1)|,
      (delta tau_int,u)^2 = (delta tau_int(W_u))^2 + tau_exp^2 (delta rho(W_u + 1))^2,

  meant as an upper bound for ``tau_int``: slow modes faster than ``tau_exp`` are over-counted, and the magnitude
  of ``rho(W_u + 1)`` is taken so that the tail never lowers it.  It is a bound only where ``rho(W_u + 1)`` is not
  itself a low fluctuation -- ``n_sigma`` below.  The error of ``tau_exp`` itself is not included.  The error of
  the mean becomes ``sqrt(2 tau_int,u Gamma(0) / N)``.
* ``delta rho(t)`` is Wolff's eq. E.11 (Madras-Sokal form),
  ``(delta rho(t))^2 = (1/N) sum_{k=1}^{t+Lambda} [rho(k+t) + rho(|k-t|) - 2 rho(k) rho(t)]^2``, with
  ``Lambda = max(100, 10 tau_exp)`` lags beyond ``t`` (terms vanish once ``k - t`` exceeds the slowest decay; more
  lags only add noise), capped at the lags available.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Windowing", "as_windowing"]


@dataclass(frozen=True)
class Windowing:
    """How :func:`corrflow.stats.gamma_method` sums the autocorrelation function (module docstring).

    Attributes
    ----------
    S : float
        Wolff's ``S`` (ratio of window to ``tau``) of the automatic window; ``S`` in ``[1, 2]`` is usually fine.
        Unused with ``tau_exp``.
    tau_exp : float or None
        Exponential autocorrelation time of the slowest mode of the chain, in units of the spacing of the data
        (measurements, not trajectories, when only every k-th trajectory is measured).  None: Wolff's window, no
        tail.  Given: the window where ``rho`` is compatible with zero and the exponential tail beyond it.
    n_sigma : float
        The tail window is the first ``W`` with ``rho(W) < n_sigma * delta rho(W)``.  Larger values stop earlier,
        where ``rho(W + 1)`` carries more of the slow mode and less noise, and give larger (more conservative)
        ``tau_int``.  Default 2: on six mixtures of a fast and a slow AR(1) process of known ``tau_int``
        (``benchmarks/gamma_tail.py``, BENCHMARKS.md) ``n_sigma = 1`` (pyerrors' default) stopped where the noise hid
        part of the slow mode and came out up to 25% low; 2 stayed within -13% / +36%, 3 within -4% / +57%.  On
        short chains the noise of ``rho(W + 1)``, multiplied by ``tau_exp``, dominates: 2 x 400 chains of the 2D U(1)
        plaquette (no slow mode to speak of) get errors ~1.4x too large with ``tau_exp = 25``.
    """

    S: float = 1.5
    tau_exp: float | None = None
    n_sigma: float = 2.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.S) and self.S > 0):
            raise ValueError(f"S must be positive, got {self.S}")
        if self.tau_exp is not None and not (math.isfinite(self.tau_exp) and self.tau_exp > 0):
            raise ValueError(f"tau_exp must be a positive number of measurements (or None), got {self.tau_exp}")
        if not (math.isfinite(self.n_sigma) and self.n_sigma > 0):
            raise ValueError(f"n_sigma must be a positive number, got {self.n_sigma}")

    @classmethod
    def from_tau_exp(cls, tau_exp: float) -> "Windowing":
        """The windowing of a user's ``tau_exp`` setting (``--tau-exp``, ``ErrorSettings.tau_exp``): ``0`` is Wolff's
        window, a positive number the exponential tail; anything else a one-line ``ValueError``."""
        if not (tau_exp >= 0 and math.isfinite(tau_exp)):
            raise ValueError(f"tau_exp must be a number >= 0 (0: no tail), got {tau_exp}")
        return cls(tau_exp=float(tau_exp) or None)

    @property
    def tail_note(self) -> str:
        """``"errors with the exponential tail of tau_exp = T"`` for the titles of results, or ``""`` without one."""
        return "" if self.tau_exp is None else f"errors with the exponential tail of tau_exp = {self.tau_exp:g}"

    def __str__(self) -> str:
        if self.tau_exp is None:
            return f"Wolff's window (S = {self.S:g})"
        return f"window where rho < {self.n_sigma:g} sigma plus an exponential tail with tau_exp = {self.tau_exp:g}"


def as_windowing(S: float | Windowing) -> Windowing:
    """A :class:`Windowing` from what the estimators accept as ``S``: a number (Wolff's ``S``) or a Windowing."""
    if isinstance(S, Windowing):
        return S
    try:
        return Windowing(S=float(S))
    except (TypeError, ValueError):
        raise ValueError(f"S must be positive (a number) or a Windowing, got {S!r}") from None


def automatic_window(rho: np.ndarray, n_total: int, S: float) -> tuple[int, bool]:
    """Wolff's automatic window.

    Parameters
    ----------
    rho : ndarray, shape (w_max + 1,)
        Normalised autocorrelation function for lags ``0 .. w_max``.
    n_total : int
        Total number of samples ``N``.
    S : float
        Wolff's ``S = tau / tau_exp`` guess (> 0).

    Returns
    -------
    (W, found)
        First ``W in 1..w_max`` with ``g(W) < 0``; if there is none, ``(w_max, False)``.
    """
    w_max = rho.shape[0] - 1
    w = np.arange(1, w_max + 1, dtype=np.float64)
    tau_int_w = 0.5 + np.cumsum(rho[1:])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # ln((2t+1)/(2t-1)) = log1p(2/(2t-1)), accurate for large t
        tau_w = np.where(
            tau_int_w > 0.5,
            S / np.log1p(2.0 / (2.0 * tau_int_w - 1.0)),
            np.finfo(np.float64).tiny,
        )
        g = np.exp(-w / tau_w) - tau_w / np.sqrt(w * n_total)
    negative = np.flatnonzero(g < 0)
    if negative.size == 0:
        return w_max, False
    return int(negative[0]) + 1, True


def rho_error(rho: np.ndarray, t: int, n_total: int, tau_exp: float) -> float:
    """Wolff's eq. E.11 error of ``rho(t)`` from ``rho`` (shape ``(t_max + 1,)``), summing ``k = 1 .. t + Lambda``
    with ``Lambda = max(100, 10 tau_exp)`` (capped so that ``k + t <= t_max``)."""
    n_lags = t + int(math.ceil(max(100.0, 10.0 * tau_exp)))
    k = np.arange(1, min(n_lags, rho.shape[0] - 1 - t) + 1)
    terms = rho[k + t] + rho[np.abs(k - t)] - 2.0 * rho[k] * rho[t]
    return float(math.sqrt(np.sum(terms**2) / n_total))


def tail_window(rho: np.ndarray, n_total: int, w_max: int, tau_exp: float, n_sigma: float) -> tuple[int, bool]:
    """First ``W in 1..w_max`` with ``rho(W) < n_sigma * delta rho(W)`` (``rho`` of shape ``(>= w_max + 2,)``, lags
    ``0 ..``); ``(w_max, False)`` when ``rho`` stays significant up to ``w_max``."""
    for w in range(1, w_max + 1):
        if rho[w] < n_sigma * rho_error(rho, w, n_total, tau_exp):
            return w, True
    return w_max, False
