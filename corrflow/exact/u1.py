"""U(1) on the 2D torus: Bessel-ratio sector sums, partition function, plaquette, Wilson loops
(see :mod:`corrflow.exact`)."""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from ._common import _MAX_SECTORS, _PAD, _REL_TOL, _check_beta, _check_positive_int, _check_shape, _volume


# --------------------------------------------------------------------------------------------
# U(1): Bessel ratios and sector sums
# --------------------------------------------------------------------------------------------
def _log_i0(beta: float) -> float:
    """``log I_0(beta)`` without overflow."""
    return math.log(special.ive(0, beta)) + beta


def _bessel_ratios(beta: float, power: float, tol: float) -> np.ndarray:
    """``r_n = I_n(beta) / I_0(beta)`` for ``n = 0 .. n_max + 2``.

    ``n_max >= 1`` is the first ``n`` with ``r_n ** power < tol``; since ``r_n`` decreases in ``n``
    all sectors ``|n| > n_max`` are negligible at this relative tolerance.  ``_PAD`` extra entries
    serve the shifted indices ``n +- 1, n +- 2`` of derivatives and Wilson loops.
    """
    if beta == 0.0:
        r = np.zeros(1 + 1 + _PAD)
        r[0] = 1.0
        return r
    log_tol = math.log(tol)
    size = 32
    while True:
        n = np.arange(size + 1)
        r = special.ive(n, beta) / special.ive(0, beta)
        with np.errstate(divide="ignore"):
            log_terms = power * np.log(r)
        below = np.flatnonzero(log_terms[1:] < log_tol)
        if below.size and below[0] + 1 + _PAD <= size:
            n_max = int(below[0]) + 1
            return r[: n_max + 1 + _PAD]
        size *= 2
        if size > _MAX_SECTORS:  # pragma: no cover - only for absurd beta
            raise RuntimeError(f"U(1) sector sum did not converge for beta={beta}")


def _sector_grid(r: np.ndarray, extra: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sector labels ``n = -(n_max+extra) .. n_max+extra`` and ``r_|n|`` for them."""
    m = len(r) - 1 - _PAD + extra
    n = np.arange(-m, m + 1)
    return n, r[np.abs(n)]


def _u1_sector_sum(beta: float, volume: int) -> float:
    """``sum_n (I_n / I_0)^V`` (the trivial sector contributes exactly 1)."""
    r = _bessel_ratios(beta, volume, _REL_TOL)
    _, rn = _sector_grid(r)
    return float(np.sum(np.power(rn, volume)))


def u1_log_partition(beta: float, shape: tuple[int, int]) -> float:
    """Exact ``log Z`` of 2D U(1) Wilson gauge theory on the periodic ``L0 x L1`` torus.

    ``Z = sum_n I_n(beta)^V`` with Haar measure ``d theta / 2pi`` per link, so that
    ``log Z(0) = 0``.  Returned as ``V log I_0(beta) + log sum_n (I_n/I_0)^V``.

    Args:
        beta: inverse coupling, finite and ``>= 0``.
        shape: ``(L0, L1)``, positive integers.
    """
    beta = _check_beta(beta)
    volume = _volume(shape)
    return volume * _log_i0(beta) + math.log(_u1_sector_sum(beta, volume))


def _log_bessel_increment(n: np.ndarray, beta: float, beta_prime: float) -> np.ndarray:
    """``log I_n(beta') - log I_n(beta)`` for ``0 < beta, beta'``, by quadrature of ``I_n'/I_n``.

    ``I_n'/I_n = (I_{n-1} + I_{n+1}) / (2 I_n)`` is analytic away from ``b = 0`` and the imaginary
    zeros of ``I_n`` (``|Im b| >= 2.40``), so 16-point Gauss-Legendre on panels of length ``<= 1``
    converges to round-off whenever the interval stays well away from ``b = 0``.  Unlike a
    difference of logarithms, the result has a small *relative* error even for tiny steps.
    """
    nodes, wts = np.polynomial.legendre.leggauss(16)
    panels = max(1, math.ceil(abs(beta_prime - beta)))
    edges = np.linspace(beta, beta_prime, panels + 1)
    total = np.zeros(len(n))
    for a, b in zip(edges[:-1], edges[1:]):
        x = 0.5 * (a + b) + 0.5 * (b - a) * nodes
        i_n = special.ive(n[:, None], x[None, :])
        i_pm = special.ive(np.abs(n[:, None] - 1), x[None, :]) + special.ive(n[:, None] + 1, x[None, :])
        total += 0.5 * (b - a) * np.sum(wts[None, :] * 0.5 * i_pm / i_n, axis=1)
    return total


def u1_log_partition_ratio(beta: float, beta_prime: float, shape: tuple[int, int]) -> float:
    """``log Z(beta') - log Z(beta)`` on the torus: the log of the mean reweighting factor.

    ``<exp((beta' - beta) sum_p cos P_p)>_beta = Z(beta') / Z(beta)``.  For nearby couplings
    (``|beta' - beta| <= min(beta, beta') / 4``) it is evaluated as
    ``V Delta_0 + log1p(sum_n w_n expm1(V (Delta_n - Delta_0)))`` with
    ``Delta_n = log(I_n(beta') / I_n(beta))`` integrated by quadrature and ``w_n`` the sector
    weights at ``beta``; this keeps a small relative error even when ``V |beta' - beta|`` is tiny
    and ``V`` is large (a plain difference of two ``O(V beta)`` numbers would not).  Otherwise
    the two ``log Z`` are subtracted, which then loses at most about one digit.

    Args:
        beta: reference inverse coupling (``>= 0``).
        beta_prime: target inverse coupling (``>= 0``).
        shape: ``(L0, L1)``.
    """
    beta = _check_beta(beta, "beta")
    beta_prime = _check_beta(beta_prime, "beta_prime")
    volume = _volume(shape)
    if beta == beta_prime:
        return 0.0
    lo, hi = min(beta, beta_prime), max(beta, beta_prime)
    if lo == 0.0 or hi - lo > 0.25 * lo:
        return u1_log_partition(beta_prime, shape) - u1_log_partition(beta, shape)
    r_hi = _bessel_ratios(hi, volume, _REL_TOL)
    n = np.arange(len(r_hi) - _PAD)  # sectors 0 .. n_max (sector -n equals sector n)
    mult = np.where(n == 0, 1.0, 2.0)
    delta = _log_bessel_increment(n, beta, beta_prime)
    with np.errstate(divide="ignore"):
        log_w = volume * np.log(special.ive(n, beta) / special.ive(0, beta)) + np.log(mult)
    log_w = log_w - special.logsumexp(log_w)
    x = volume * (delta - delta[0])
    change = float(np.sum(np.exp(log_w) * np.expm1(x)))
    return volume * float(delta[0]) + math.log1p(change)


def u1_plaquette_infinite_volume(beta: float) -> float:
    """Infinite-volume U(1) plaquette ``<cos P> = I_1(beta) / I_0(beta)``."""
    beta = _check_beta(beta)
    return float(special.ive(1, beta) / special.ive(0, beta))


def u1_plaquette(beta: float, shape: tuple[int, int]) -> float:
    """Exact torus plaquette ``<cos P> = (1/V) d log Z / d beta``.

    ``= sum_n I_n^(V-1) (I_{n-1} + I_{n+1}) / 2  /  sum_n I_n^V``.

    Args:
        beta: inverse coupling, ``>= 0``.
        shape: ``(L0, L1)``.
    """
    beta = _check_beta(beta)
    volume = _volume(shape)
    r = _bessel_ratios(beta, volume, _REL_TOL)
    n, rn = _sector_grid(r)
    d1 = 0.5 * (r[np.abs(n - 1)] + r[np.abs(n + 1)])
    num = np.sum(np.power(rn, volume - 1) * d1)
    den = np.sum(np.power(rn, volume))
    return float(num / den)


def u1_plaquette_derivative(beta: float, shape: tuple[int, int]) -> float:
    """``d<cos P>/d beta = (1/V) d^2 log Z / d beta^2 = V * Var(volume-averaged cos P)``.

    For ``V >= 3`` this is evaluated in the cancellation-free form
    ``sum_n w_n h_n + V sum_n w_n (g_n - <g>)^2`` with sector weights ``w_n ~ I_n^V``,
    ``g_n = I_n'/I_n`` and ``h_n = I_n''/I_n - g_n^2``; for ``V <= 2`` (where sectors with
    ``I_n = 0`` still contribute through ``I_n'`` and ``I_n''``) the direct formula is used.

    Args:
        beta: inverse coupling, ``>= 0``.
        shape: ``(L0, L1)``.
    """
    beta = _check_beta(beta)
    volume = _volume(shape)
    r = _bessel_ratios(beta, volume, _REL_TOL)
    # for V <= 2, sectors with negligible I_n still enter through I_n' and I_n''
    n, rn = _sector_grid(r, extra=2 if volume <= 2 else 0)
    d1 = 0.5 * (r[np.abs(n - 1)] + r[np.abs(n + 1)])
    d2 = 0.25 * (r[np.abs(n - 2)] + 2.0 * rn + r[np.abs(n + 2)])
    if volume <= 2:
        den = np.sum(np.power(rn, volume))
        p = np.sum(np.power(rn, volume - 1) * d1) / den
        z2 = np.sum(np.power(rn, volume - 1) * d2) / den
        if volume == 2:
            z2 += np.sum(d1 * d1) / den
        return float(z2 - volume * p * p)
    w = np.power(rn, volume)
    keep = w > 0.0  # sectors whose weight underflows are negligible for V >= 3
    rn, d1, d2, w = rn[keep], d1[keep], d2[keep], w[keep]
    w = w / np.sum(w)
    g = d1 / rn
    h = d2 / rn - g * g
    g_mean = np.sum(w * g)
    return float(np.sum(w * h) + volume * np.sum(w * (g - g_mean) ** 2))


def u1_wilson_loop(beta: float, shape: tuple[int, int], R: int, T: int) -> float:
    """``<Re W>`` of a planar ``R x T`` rectangular Wilson loop on the torus.

    The loop bounds a region of ``A = R * T`` plaquettes (Stokes), and
    ``<W> = sum_n I_{n+1}^A I_n^(V-A) / sum_n I_n^V``.  ``R = L0`` (or ``T = L1``) is allowed: the
    loop then becomes a correlator of two oppositely oriented Polyakov lines, still equal to
    the product of the ``A`` plaquettes of the strip between them.  ``A = V`` is rejected.

    Args:
        beta: inverse coupling, ``>= 0``.
        shape: ``(L0, L1)``.
        R: extent along axis 0, ``1 <= R <= L0``.
        T: extent along axis 1, ``1 <= T <= L1``, with ``R * T < L0 * L1``.
    """
    beta = _check_beta(beta)
    l0, l1 = _check_shape(shape)
    volume = l0 * l1
    R = _check_positive_int(R, "R")
    T = _check_positive_int(T, "T")
    if R > l0:
        raise ValueError(f"R must satisfy 1 <= R <= L0 = {l0}, got R={R}")
    if T > l1:
        raise ValueError(f"T must satisfy 1 <= T <= L1 = {l1}, got T={T}")
    area = R * T
    if area >= volume:
        raise ValueError(
            f"R and T must enclose fewer than V = {volume} plaquettes (R*T < V), got R*T = {area}"
        )
    r = _bessel_ratios(beta, volume, _REL_TOL)
    n, rn = _sector_grid(r, extra=1)
    num = np.sum(np.power(r[np.abs(n + 1)], area) * np.power(rn, volume - area))
    den = np.sum(np.power(rn, volume))
    return float(num / den)
