r"""Exact reference values for two-dimensional lattice gauge theory on a periodic torus.

Pure numpy/scipy (no JAX).  Every function works on a periodic ``L0 x L1`` lattice with
``V = L0 * L1`` plaquettes, passed as ``shape = (L0, L1)``.  In two dimensions the plaquettes of
a torus are independent apart from one global constraint, so the partition function reduces
to a one-dimensional sum over characters (a "character expansion"), which is evaluated here to
double precision.  Use these values as oracles for Monte Carlo / flow samplers.

Conventions
-----------
U(1)
    Links ``U = exp(i theta)``, Haar measure ``d theta / (2 pi)`` per link (so ``Z(beta=0) = 1``),
    Wilson action ``S = -beta * sum_p cos(P_p)`` with ``P_p`` the plaquette angle.  The plaquette
    observable is ``<cos P>``.  On the torus

    .. math:: Z(\beta) = \sum_{n\in\mathbb Z} I_n(\beta)^V .

    Derivatives use ``I_n' = (I_{n-1} + I_{n+1}) / 2`` and
    ``I_n'' = (I_{n-2} + 2 I_n + I_{n+2}) / 4``.

SU(N)
    ``S = -(beta / N) * sum_p Re tr U_p``; plaquette observable ``<(1/N) Re tr U_p>``.  With the
    one-plaquette character expansion ``exp((beta/N) Re tr U) = sum_r c_r chi_r(U)``,
    ``c_r = d_r a_r``, the torus partition function is ``Z = sum_r a_r^V``.  For the irrep with
    highest weight ``lambda = (lambda_1 >= ... >= lambda_{N-1} >= lambda_N = 0)``

    .. math:: c_\lambda(\beta) = \sum_{q\in\mathbb Z}
              \det\big[I_{\lambda_j - j + i + q}(\beta/N)\big]_{i,j=1..N},
       \qquad d_\lambda = \prod_{i<j} \frac{\lambda_i - \lambda_j + j - i}{j - i}.

Geometric topological charge (U(1))
    ``Q = (1/2pi) sum_p wrap(P_p)`` with ``wrap`` into ``(-pi, pi]`` (which end of the interval is
    closed is a measure-zero choice and does not affect any value here); ``Q`` is an integer on
    a torus and ``|Q| < V/2``.  ``chi_top = <Q^2> / V``.  With the theta term ``exp(i theta Q)``

    .. math:: Z(\theta) = \sum_Q e^{i\theta Q} Z_Q = \sum_{n\in\mathbb Z} F_{n+\theta/2\pi}(\beta)^V,
       \qquad F_\nu(\beta) = \frac1\pi\int_0^\pi e^{\beta\cos\phi}\cos(\nu\phi)\,d\phi ,

    which is *not* the modified Bessel function ``I_nu`` for non-integer ``nu`` (it coincides with
    ``I_n`` at integers).  Derivation: write each plaquette angle as ``x_p = wrap(P_p)``; then
    ``sum_p x_p = 2 pi Q`` exactly, the periodic delta function of the torus constraint is
    ``sum_n exp(i n sum_p x_p)`` and ``exp(i theta Q) = exp(i theta sum_p x_p / 2pi)``, so the
    integral factorises over plaquettes into ``F_{n + theta/2pi}``.  Expanding
    ``exp(beta cos phi) = sum_k eps_k I_k(beta) cos(k phi)`` (``eps_0 = 1``, ``eps_k = 2``) gives the
    exact, rapidly convergent representation used here,

    .. math:: F_\nu(\beta) = \sum_{k\ge 0} \epsilon_k I_k(\beta)\,
              \tfrac12\big[\mathrm{sinc}(\nu-k) + \mathrm{sinc}(\nu+k)\big],
              \qquad \mathrm{sinc}(x) = \frac{\sin \pi x}{\pi x}.

    ``<Q^2> = -Z''(0)/Z(0)`` (with ``d/dtheta = (1/2pi) d/dnu``) and
    ``Z_Q = int dnu cos(2 pi nu Q) F_nu^V = (1/V) sum_{j=0}^{V-1} cos(2 pi j Q / V) Z(2 pi j / V)``;
    the last (exact) form holds because ``Z(theta)`` is a trigonometric polynomial of degree
    below ``V/2``.

    (:func:`corrflow.observables.gauge.topological_charge` wraps into ``[-pi, pi)``; the two
    conventions differ only on a set of measure zero.)

Infinite-volume limits
    The trivial sector / irrep dominates as ``V -> infinity``: ``<cos P> -> I_1/I_0`` (U(1)),
    ``<(1/N) Re tr U> -> d log c_0 / d beta`` (SU(N); ``I_2(beta)/I_1(beta)`` for SU(2)) and
    ``chi_top -> <phi^2>/(4 pi^2)`` in the single-plaquette measure ``exp(beta cos phi)``, with
    ``4 pi^2 beta chi_top = 1 + 1/(2 beta) + O(beta^-2)``.

Numerics
--------
All Bessel functions are exponentially scaled (:func:`scipy.special.ive`) and sums are taken
relative to their largest term (the trivial sector), so nothing overflows for ``V`` up to
(at least) ``128 * 128`` and ``beta`` up to (at least) 20.  Infinite sums are truncated
adaptively once the terms fall below ``1e-18`` of the leading one.  ``beta = 0`` is allowed.
``F_nu`` and its ``nu``-derivatives come from the exact sinc series above (checked against
direct quadrature in the tests) rather than from numerical quadrature.  Typical accuracy is
1e-13 relative or better; quantities built from ``F_nu^V`` (the charge distribution) carry an
extra round-off factor ~``V`` (absolute accuracy ~1e-14 for ``V = 128 * 128``).  The cost grows
with ``beta`` (number of Bessel orders ~ ``beta``) and, for SU(N), like ``lambda_max^(N-1)`` times
the number of ``q`` terms; SU(4) at ``beta = 20`` on a ``1 x 1`` torus takes a few seconds.

Examples
--------
>>> from corrflow import exact
>>> round(exact.u1_plaquette(1.0, (64, 64)), 12) == round(exact.u1_plaquette_infinite_volume(1.0), 12)
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations_with_replacement
from numbers import Integral, Real

import numpy as np
from scipy import special

__all__ = [
    "SUN_SUPPORTED_N",
    "sun_character_coefficient",
    "sun_irrep_dimension",
    "sun_log_partition",
    "sun_plaquette",
    "sun_plaquette_infinite_volume",
    "u1_charge_distribution",
    "u1_log_partition",
    "u1_log_partition_ratio",
    "u1_plaquette",
    "u1_plaquette_derivative",
    "u1_plaquette_infinite_volume",
    "u1_topological_susceptibility",
    "u1_topological_susceptibility_infinite_volume",
    "u1_wilson_loop",
    "wilson_dirac_free_spectrum",
    "wilson_free_propagator",
    "wilson_free_pion_correlator",
]

#: Relative size below which terms of the sector / irrep sums are dropped.
_REL_TOL = 1e-18
#: Truncation of the Fourier (Bessel) series of exp(beta cos phi), relative to I_0.
_FOURIER_TOL = 1e-20
#: Truncation of Bessel tables used inside SU(N) determinants, relative to I_0.
_SUN_BESSEL_TOL = 1e-22
#: Number of orders kept in the large-nu expansion of F_nu (tail of the theta-vacuum sum).
_TAIL_ORDERS = 16
#: Values of N accepted by the SU(N) functions (the irrep sum grows like lambda_max^(N-1)).
SUN_SUPPORTED_N: tuple[int, ...] = (2, 3, 4)
_MAX_SECTORS = 1 << 20
#: Extra Bessel ratios kept beyond the truncation order (for shifted indices n +- 1, n +- 2).
_PAD = 4


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------
def _check_beta(beta: object, name: str = "beta") -> float:
    """Return ``beta`` as a float, or raise ValueError unless it is a finite real ``>= 0``."""
    if isinstance(beta, bool) or not isinstance(beta, Real):
        raise ValueError(f"{name} must be a finite real number >= 0, got {beta!r}")
    value = float(beta)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"{name} must be a finite real number >= 0, got {beta!r}")
    return value


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_shape(shape: object) -> tuple[int, int]:
    """Validate ``shape = (L0, L1)`` (two positive integers) and return it as a tuple of ints."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, np.ndarray)):
        raise ValueError(f"shape must be a tuple (L0, L1) of two positive integers, got {shape!r}")
    if len(shape) != 2:
        raise ValueError(
            f"shape must be a tuple (L0, L1) of two positive integers (length 2), got length "
            f"{len(shape)}: {shape!r}"
        )
    out = []
    for axis, length in enumerate(shape):
        if isinstance(length, bool) or not isinstance(length, Integral) or int(length) < 1:
            raise ValueError(
                f"shape must be a tuple (L0, L1) of two positive integers; shape[{axis}] = {length!r}"
            )
        out.append(int(length))
    return out[0], out[1]


def _volume(shape: object) -> int:
    l0, l1 = _check_shape(shape)
    return l0 * l1


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, Integral) or int(n) not in SUN_SUPPORTED_N:
        raise ValueError(f"N must be one of {SUN_SUPPORTED_N} (SU(N) gauge group), got {n!r}")
    return int(n)


def _check_weights(n: int, weights: object) -> tuple[int, ...]:
    """Validate a highest weight ``(lambda_1 >= ... >= lambda_N = 0)`` of SU(N)."""
    msg = (
        f"weights must be N = {n} non-increasing non-negative integers with weights[-1] == 0 "
        f"(an SU({n}) highest weight), got {weights!r}"
    )
    if isinstance(weights, (str, bytes)) or not isinstance(weights, (Sequence, np.ndarray)):
        raise ValueError(msg)
    if len(weights) != n:
        raise ValueError(msg)
    lam = []
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, Integral):
            raise ValueError(msg)
        lam.append(int(w))
    if lam[-1] != 0 or any(a < b for a, b in zip(lam[:-1], lam[1:])):
        raise ValueError(msg)
    return tuple(lam)


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


# --------------------------------------------------------------------------------------------
# U(1) topology: the theta-vacuum function F_nu
# --------------------------------------------------------------------------------------------
def _fourier_weights(beta: float) -> np.ndarray:
    """``eps_k I_k(beta) / I_0(beta)`` for ``k = 0 .. k_max`` (Fourier series of exp(beta cos))."""
    r = _bessel_ratios(beta, 1.0, _FOURIER_TOL)
    k_max = len(r) - 1 - _PAD
    w = 2.0 * r[: k_max + 1]
    w[0] = 1.0
    return w


def _f_hat(nu: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``F_nu(beta) / I_0(beta)`` for real ``nu`` (any shape), from the exact sinc series."""
    nu = np.asarray(nu, dtype=float)
    out = weights[0] * np.sinc(nu)
    for k in range(1, len(weights)):
        out = out + 0.5 * weights[k] * (np.sinc(nu - k) + np.sinc(nu + k))
    return out


def _f_hat_derivatives_at_integers(
    n: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``F_n / I_0``, ``F'_n / I_0``, ``F''_n / I_0`` (nu-derivatives) at integer ``n``.

    Uses ``sinc(m) = delta_m0``, ``sinc'(m) = (-1)^m / m`` (0 at ``m = 0``) and
    ``sinc''(m) = -2 (-1)^m / m^2`` (``-pi^2/3`` at ``m = 0``) for integer ``m``.
    """
    k = np.arange(len(weights))

    def derivs(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sign = np.where(m % 2 == 0, 1.0, -1.0)
        safe = np.where(m == 0, 1, m).astype(float)
        s0 = (m == 0).astype(float)
        s1 = np.where(m == 0, 0.0, sign / safe)
        s2 = np.where(m == 0, -(math.pi**2) / 3.0, -2.0 * sign / safe**2)
        return s0, s1, s2

    minus = derivs(n[:, None] - k[None, :])
    plus = derivs(n[:, None] + k[None, :])
    half_w = 0.5 * weights[None, :]
    return tuple(np.sum(half_w * (a + b), axis=1) for a, b in zip(minus, plus))  # type: ignore[return-value]


def _series_power(coeffs: np.ndarray, exponent: int) -> np.ndarray:
    """Coefficients of ``(sum_p coeffs[p] x^p)^exponent`` truncated at ``len(coeffs)`` terms."""
    size = len(coeffs)
    result = np.zeros(size)
    result[0] = 1.0
    base = np.asarray(coeffs, dtype=float)
    e = exponent
    while e:
        if e & 1:
            result = np.convolve(result, base)[:size]
        e >>= 1
        if e:
            base = np.convolve(base, base)[:size]
    return result


def _theta_tail(s: np.ndarray, volume: int, n0: int, weights: np.ndarray) -> np.ndarray:
    """``sum_{n >= n0} (F_{n+s} / I_0)^V`` for ``s`` in ``[0, 1]`` and even ``n0 >= 4 k_max``.

    For ``nu > k_max`` the sinc series gives ``F_nu / I_0 = sinc(nu) S(nu)`` with the convergent
    expansion ``S(nu) = sum_p M_p nu^(-2p)``, ``M_p = sum_k eps_k (-1)^k (I_k/I_0) k^(2p)``.
    Hence ``F^V = (sin(pi s)/pi)^V (-1)^(nV) sum_q b_q nu^(-V-2q)`` and the ``n``-sums are
    Hurwitz zeta functions (alternating ones for odd ``V``).
    """
    k = np.arange(len(weights), dtype=float)
    sign = np.where(np.arange(len(weights)) % 2 == 0, 1.0, -1.0)
    moments = np.array([np.sum(weights * sign * k ** (2 * p)) for p in range(_TAIL_ORDERS + 1)])
    b = _series_power(moments, volume)
    total = np.zeros_like(s)
    for q, bq in enumerate(b):
        x = float(volume + 2 * q)
        if volume % 2 == 0:
            h = special.zeta(x, n0 + s)
        else:
            h = 2.0**-x * (special.zeta(x, 0.5 * (n0 + s)) - special.zeta(x, 0.5 * (n0 + 1 + s)))
        total = total + bq * h
    return (np.sin(math.pi * s) / math.pi) ** volume * total


def _theta_partition_samples(beta: float, volume: int) -> np.ndarray:
    """``Z(theta_j) / I_0(beta)^V`` at ``theta_j = 2 pi j / V``, ``j = 0 .. V-1`` (``V >= 3``)."""
    weights = _fourier_weights(beta)
    k_max = len(weights) - 1
    s = np.arange(volume) / volume
    r = _bessel_ratios(beta, volume, _REL_TOL)
    n_half = max(len(r) - _PAD, 2)  # n_max + 1
    n_half += n_half % 2
    n_asym = max(4 * k_max + 4, 16)
    n_asym += n_asym % 2
    while True:
        n = np.arange(-n_half, n_half)
        f = _f_hat(n[None, :] + s[:, None], weights)
        direct = np.sum(np.power(f, volume), axis=1)
        edge = max(np.max(np.abs(f[:, 0])), np.max(np.abs(f[:, -1]))) ** volume
        if edge * (2.0 + 2.0 * n_half / (volume - 1)) < _REL_TOL * direct[0]:
            return direct
        if n_half >= n_asym:
            tail = _theta_tail(s, volume, n_half, weights) + _theta_tail(
                1.0 - s, volume, n_half, weights
            )
            return direct + tail
        n_half = min(2 * n_half, n_asym)


def u1_charge_distribution(beta: float, shape: tuple[int, int], qmax: int) -> np.ndarray:
    """Probabilities ``P(Q)`` of the geometric topological charge for ``Q = -qmax .. qmax``.

    Returns an array of length ``2 * qmax + 1`` with entry ``i`` equal to ``P(Q = i - qmax)``.
    Exact up to round-off: ``Z_Q`` is the discrete Fourier transform of
    ``Z(theta) = sum_n F_{n + theta/2pi}^V`` sampled at ``theta = 2 pi j / V``; for small ``V`` the
    slowly (power-law) convergent ``n``-sum is completed analytically (Hurwitz zeta).  The
    absolute accuracy is ~1e-15; probabilities below that are round-off (tiny negative values
    are clipped to 0).  ``P(Q) = 0`` exactly for ``|Q| >= V/2``; ``V <= 2`` has ``Q = 0`` always.

    Args:
        beta: inverse coupling, ``>= 0``.
        shape: ``(L0, L1)``.
        qmax: largest ``|Q|`` returned, integer ``>= 0``.
    """
    beta = _check_beta(beta)
    volume = _volume(shape)
    if isinstance(qmax, bool) or not isinstance(qmax, Integral) or int(qmax) < 0:
        raise ValueError(f"qmax must be a non-negative integer, got {qmax!r}")
    qmax = int(qmax)
    out = np.zeros(2 * qmax + 1)
    if volume <= 2:
        out[qmax] = 1.0
        return out
    samples = _theta_partition_samples(beta, volume)
    z_q = np.fft.fft(samples).real / volume  # Z(theta) is real and even, so Z_Q = Z_-Q real
    q_top = min(qmax, (volume - 1) // 2)
    q = np.arange(-q_top, q_top + 1)
    probs = z_q[q % volume] / samples[0]
    out[qmax - q_top : qmax + q_top + 1] = np.maximum(probs, 0.0)
    return out


def u1_topological_susceptibility(beta: float, shape: tuple[int, int]) -> float:
    """Exact ``chi_top = <Q^2> / V`` of the geometric charge on the torus.

    ``<Q^2> = -Z''(0) / Z(0) = -(1/4pi^2) sum_n [V(V-1) F_n^(V-2) F_n'^2 + V F_n^(V-1) F_n''] /
    sum_n F_n^V`` with ``F_n = I_n(beta)`` and ``'`` the derivative in ``nu`` at integer ``nu = n``.
    For ``V <= 2``, ``Q = 0`` identically and 0 is returned.  The absolute accuracy is
    ~1e-16 (relevant only where topology is frozen: small ``V`` at large ``beta``).

    Args:
        beta: inverse coupling, ``>= 0``.
        shape: ``(L0, L1)``.
    """
    beta = _check_beta(beta)
    volume = _volume(shape)
    if volume <= 2:
        return 0.0
    weights = _fourier_weights(beta)
    r = _bessel_ratios(beta, volume - 2, _REL_TOL * 1e-2)
    n, _ = _sector_grid(r)
    f0, f1, f2 = _f_hat_derivatives_at_integers(n, weights)
    num = volume * (volume - 1) * np.power(f0, volume - 2) * f1**2 + volume * np.power(
        f0, volume - 1
    ) * f2
    q2 = -np.sum(num) / np.sum(np.power(f0, volume)) / (4.0 * math.pi**2)
    # for small V at large beta the sectors cancel almost completely; clip round-off below 0
    return max(float(q2 / volume), 0.0)


def u1_topological_susceptibility_infinite_volume(beta: float) -> float:
    """``V -> infinity`` limit of :func:`u1_topological_susceptibility`.

    Plaquettes decouple, so ``chi_top = <phi^2> / (4 pi^2)`` in the single-plaquette measure
    ``exp(beta cos phi) d phi`` on ``(-pi, pi]``, i.e.
    ``(1/4pi^2) [pi^2/3 + 4 sum_{k>=1} (-1)^k I_k(beta) / (k^2 I_0(beta))]``.
    For large ``beta``: ``4 pi^2 beta chi_top = 1 + 1/(2 beta) + O(beta^-2)``.
    """
    beta = _check_beta(beta)
    weights = _fourier_weights(beta)
    _, _, f2 = _f_hat_derivatives_at_integers(np.array([0]), weights)
    return float(-f2[0] / (4.0 * math.pi**2))


# --------------------------------------------------------------------------------------------
# SU(N)
# --------------------------------------------------------------------------------------------
def _dimensions(lams: np.ndarray) -> np.ndarray:
    """Weyl dimension formula for an array of highest weights, shape ``(L, N)``."""
    n = lams.shape[1]
    dims = np.ones(lams.shape[0])
    for i in range(n):
        for j in range(i + 1, n):
            dims *= (lams[:, i] - lams[:, j] + j - i) / (j - i)
    return np.rint(dims)


def _shell(n: int, lam1: int) -> np.ndarray:
    """All SU(n) highest weights with ``lambda_1 = lam1`` (and ``lambda_N = 0``), shape ``(L, n)``."""
    rows = []
    for middle in combinations_with_replacement(range(lam1, -1, -1), n - 2):
        rows.append((lam1, *middle, 0))
    return np.array(rows, dtype=np.int64).reshape(-1, n)


def _bessel_cutoff(x: float, tol: float) -> int:
    """Smallest ``m >= 1`` with ``I_m(x) / I_0(x) < tol``."""
    return len(_bessel_ratios(x, 1.0, tol)) - 1 - _PAD


def _sun_coefficients(n: int, beta: float, lams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scaled ``e^-beta c_lambda`` and ``e^-beta d c_lambda / d beta`` for weights ``lams (L, N)``.

    Bessel determinant with ``x = beta / N``; each entry carries ``e^-x`` (``ive``), so a
    determinant carries ``e^-(N x) = e^-beta``.  The derivative replaces one column at a time by
    ``I_m' = (I_{m-1} + I_{m+1}) / 2`` and uses ``d/d beta = (1/N) d/dx``.
    """
    x = beta / n
    cutoff = _bessel_cutoff(x, _SUN_BESSEL_TOL)
    lam_top = int(lams[:, 0].max())
    q = np.arange(-(lam_top + cutoff + n), cutoff + n + 1)
    size = lam_top + cutoff + 3 * n + 2
    table = special.ive(np.arange(size + 2), x)
    dtable = 0.5 * (table[np.abs(np.arange(size + 1) - 1)] + table[1 : size + 2])
    table = table[: size + 1]
    i = np.arange(1, n + 1)[:, None]
    j = np.arange(1, n + 1)[None, :]
    idx = lams[:, None, None, :] - j[None, None] + i[None, None] + q[None, :, None, None]
    idx = np.abs(idx)
    mat = table[idx]
    dmat = dtable[idx]
    coeff = np.linalg.det(mat).sum(axis=1)
    dcoeff = np.zeros_like(coeff)
    for col in range(n):
        replaced = mat.copy()
        replaced[..., :, col] = dmat[..., :, col]
        dcoeff += np.linalg.det(replaced).sum(axis=1)
    return coeff, dcoeff / n


def sun_irrep_dimension(N: int, weights: Sequence[int]) -> int:
    """Dimension ``d_lambda = prod_{i<j} (lambda_i - lambda_j + j - i) / (j - i)`` of an SU(N) irrep.

    Args:
        N: gauge group SU(N), one of :data:`SUN_SUPPORTED_N`.
        weights: highest weight ``(lambda_1 >= ... >= lambda_N = 0)``, length ``N``.
    """
    N = _check_n(N)
    lam = np.array([_check_weights(N, weights)])
    return int(_dimensions(lam)[0])


def sun_character_coefficient(N: int, weights: Sequence[int], beta: float) -> float:
    """One-plaquette character coefficient ``c_lambda = d_lambda a_lambda`` of SU(N).

    ``exp((beta/N) Re tr U) = sum_lambda c_lambda chi_lambda(U)``, i.e.
    ``c_lambda = int dU exp((beta/N) Re tr U) chi_lambda(U)^*`` (Haar, total mass 1), computed as
    ``sum_q det[I_{lambda_j - j + i + q}(beta/N)]``.  Overflows (inf) for ``beta`` beyond ~700.

    Args:
        N: gauge group SU(N), one of :data:`SUN_SUPPORTED_N`.
        weights: highest weight ``(lambda_1 >= ... >= lambda_N = 0)``, length ``N``.
        beta: inverse coupling, ``>= 0``.
    """
    N = _check_n(N)
    lam = np.array([_check_weights(N, weights)], dtype=np.int64)
    beta = _check_beta(beta)
    coeff, _ = _sun_coefficients(N, beta, lam)
    return float(coeff[0] * math.exp(beta))


def _sun_sectors(n: int, beta: float, volume: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Trivial-irrep data and per-irrep ratios for the torus sum.

    Returns ``(log a_0, rho, drho)`` with ``rho_lambda = a_lambda / a_0`` and
    ``drho_lambda = a_lambda' / a_0`` (``'`` = d/d beta) over all irreps kept; irreps are added
    shell by shell in ``lambda_1`` until two consecutive shells have ``|rho|^V < 1e-18``.
    """
    zero = np.zeros((1, n), dtype=np.int64)
    c0, dc0 = _sun_coefficients(n, beta, zero)
    rho, drho = [np.array([1.0])], [dc0 / c0[0]]
    quiet = 0
    lam1 = 0
    while quiet < 2:
        lam1 += 1
        if lam1 > 4096:  # pragma: no cover - only for absurd beta
            raise RuntimeError(f"SU({n}) irrep sum did not converge for beta={beta}")
        lams = _shell(n, lam1)
        c, dc = _sun_coefficients(n, beta, lams)
        dims = _dimensions(lams)
        shell_rho = c / (dims * c0[0])
        rho.append(shell_rho)
        drho.append(dc / (dims * c0[0]))
        quiet = quiet + 1 if np.max(np.abs(shell_rho)) ** volume < _REL_TOL else 0
    log_a0 = math.log(c0[0]) + beta
    return log_a0, np.concatenate(rho), np.concatenate(drho)


def sun_log_partition(N: int, beta: float, shape: tuple[int, int]) -> float:
    """Exact ``log Z`` of 2D SU(N) Wilson gauge theory on the torus, ``Z = sum_lambda a_lambda^V``.

    Haar measure of total mass 1 per link, so ``log Z(0) = 0``.

    Args:
        N: gauge group SU(N), one of :data:`SUN_SUPPORTED_N`.
        beta: inverse coupling (action ``-(beta/N) sum_p Re tr U_p``), ``>= 0``.
        shape: ``(L0, L1)``.
    """
    N = _check_n(N)
    beta = _check_beta(beta)
    volume = _volume(shape)
    log_a0, rho, _ = _sun_sectors(N, beta, volume)
    return volume * log_a0 + math.log(float(np.sum(np.power(rho, volume))))


def sun_plaquette(N: int, beta: float, shape: tuple[int, int]) -> float:
    """Exact torus plaquette ``<(1/N) Re tr U_p> = (1/V) d log Z / d beta``.

    ``= sum_lambda a_lambda^(V-1) a_lambda' / sum_lambda a_lambda^V`` with ``' = d/d beta``.

    Args:
        N: gauge group SU(N), one of :data:`SUN_SUPPORTED_N`.
        beta: inverse coupling, ``>= 0``.
        shape: ``(L0, L1)``.
    """
    N = _check_n(N)
    beta = _check_beta(beta)
    volume = _volume(shape)
    _, rho, drho = _sun_sectors(N, beta, volume)
    return float(np.sum(np.power(rho, volume - 1) * drho) / np.sum(np.power(rho, volume)))


def sun_plaquette_infinite_volume(N: int, beta: float) -> float:
    """``V -> infinity`` plaquette ``<(1/N) Re tr U> = d log c_0 / d beta``.

    ``c_0 = int dU exp((beta/N) Re tr U)`` is the trivial-irrep coefficient (the single-plaquette
    partition function); the trivial irrep dominates ``Z = sum a^V`` at large ``V``.  For SU(2)
    ``c_0 = 2 I_1(beta) / beta`` and the plaquette is ``I_2(beta) / I_1(beta)``.

    Args:
        N: gauge group SU(N), one of :data:`SUN_SUPPORTED_N`.
        beta: inverse coupling, ``>= 0``.
    """
    N = _check_n(N)
    beta = _check_beta(beta)
    c0, dc0 = _sun_coefficients(N, beta, np.zeros((1, N), dtype=np.int64))
    return float(dc0[0] / c0[0])


# --------------------------------------------------------------------------------------------
# free Wilson fermions (all links 1), antiperiodic in time
# --------------------------------------------------------------------------------------------


def _free_momenta(shape: Sequence[int]) -> list[np.ndarray]:
    """Allowed momenta per direction: ``2 pi (n + 1/2) / L_0`` in time (antiperiodic), ``2 pi n / L`` in space."""
    return [2 * np.pi * (np.arange(L) + (0.5 if mu == 0 else 0.0)) / L for mu, L in enumerate(shape)]


def wilson_dirac_free_spectrum(shape: Sequence[int], mass: float) -> np.ndarray:
    """Eigenvalues of the free Wilson–Dirac operator (one colour) in closed form, sorted by (real, imag).

    ``D(p) = m + sum_mu (1 - cos p_mu) + i sum_mu gamma_mu sin p_mu`` has eigenvalues
    ``m + sum_mu (1 - cos p_mu) +- i sqrt(sum_mu sin^2 p_mu)``, each ``Ns/2``-fold (``Ns = 2`` in d = 2,
    4 in d = 4); ``p_0 = 2 pi (n + 1/2) / L_0`` (antiperiodic), ``p_i = 2 pi n / L_i``.
    Returns ``V * Ns`` complex numbers.
    """
    shape = tuple(int(s) for s in shape)
    d = len(shape)
    if d not in (2, 4):
        raise ValueError(f"free Wilson spectrum implemented for d = 2, 4; got shape {shape}")
    grids = np.meshgrid(*_free_momenta(shape), indexing="ij")
    m = float(mass) + sum(1 - np.cos(p) for p in grids)
    s = np.sqrt(sum(np.sin(p) ** 2 for p in grids))
    mult = (2 if d == 2 else 4) // 2
    ev = np.concatenate([np.repeat((m + 1j * s).ravel(), mult), np.repeat((m - 1j * s).ravel(), mult)])
    return ev[np.lexsort((ev.imag.round(12), ev.real.round(12)))]


def wilson_free_propagator(shape: Sequence[int], mass: float) -> np.ndarray:
    """Free point-source propagator ``S(x; 0) = (1/V) sum_p e^{i p x} D(p)^{-1}`` (one colour), from the
    momentum-space closed form ``D(p)^{-1} = (M(p) - i sum gamma_mu sin p_mu) / (M(p)^2 + sum sin^2 p_mu)``.

    Returns ``(L..., Ns, Ns)`` (sink spin, source spin); gamma matrices of
    :func:`corrflow.theories.fermions.gamma_matrices`.
    """
    from .theories.fermions import gamma_matrices

    shape = tuple(int(s) for s in shape)
    d = len(shape)
    gam, _ = gamma_matrices(d)
    grids = np.meshgrid(*_free_momenta(shape), indexing="ij")
    m = float(mass) + sum(1 - np.cos(p) for p in grids)
    s2 = sum(np.sin(p) ** 2 for p in grids)
    ns = gam.shape[-1]
    num = m[..., None, None] * np.eye(ns) - 1j * sum(np.sin(p)[..., None, None] * gam[mu] for mu, p in enumerate(grids))
    sp = num / (m ** 2 + s2)[..., None, None]
    # (1/V) sum_p e^{i p x}: inverse FFT over the integer part, times e^{i pi t / L_0} for the half-integer shift
    axes = tuple(range(d))
    sx = np.fft.ifftn(sp, axes=axes)
    t = np.arange(shape[0]).reshape((-1,) + (1,) * (d - 1) + (1, 1))
    return sx * np.exp(1j * np.pi * t / shape[0])


def wilson_free_pion_correlator(shape: Sequence[int], mass: float) -> np.ndarray:
    """Free pion correlator ``C(t) = sum_{vec x} tr[S(x; 0) S(x; 0)^dag]`` (one colour), shape ``(L_0,)``."""
    sx = wilson_free_propagator(shape, mass)
    dens = np.sum(np.abs(sx) ** 2, axis=(-2, -1))
    return dens.reshape(dens.shape[0], -1).sum(axis=1)
