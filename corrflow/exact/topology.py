"""U(1) topology on the 2D torus: the theta-vacuum function F_nu, charge distribution, susceptibility
(see :mod:`corrflow.exact`)."""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
from scipy import special

from ._common import _FOURIER_TOL, _PAD, _REL_TOL, _TAIL_ORDERS, _check_beta, _volume
from .u1 import _bessel_ratios, _sector_grid


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


def u1_plaquette_in_sector(beta: float, shape: tuple[int, int], charge: int = 0) -> float:
    """Exact mean plaquette ``<cos P>_Q`` of 2D U(1) on the torus restricted to topological charge ``Q = charge``: the
    reference for an ensemble whose topology is frozen (cold starts at weak coupling, where HMC never changes ``Q``).

    ``Z_Q = P(Q) Z`` with the exact charge distribution ``P(Q)`` (:func:`u1_charge_distribution`), so
    ``V <P>_Q = d ln Z_Q / d beta = V <P> + d ln P(Q) / d beta``; the derivative is a five-point central difference
    with step ``h = 5e-3`` (truncation ``~h^4``, round-off ``~1e-15 / h``: about 1e-11 absolute).
    """
    from .u1 import u1_plaquette

    beta = _check_beta(beta)
    q = abs(int(charge))
    volume = _volume(shape)

    def log_p(b: float) -> float:
        return math.log(u1_charge_distribution(b, shape, q)[0 if q == 0 else 2 * q])

    h = 5e-3 if beta > 0.02 else beta / 4
    d = (-log_p(beta + 2 * h) + 8 * log_p(beta + h) - 8 * log_p(beta - h) + log_p(beta - 2 * h)) / (12 * h)
    return u1_plaquette(beta, shape) + d / volume
