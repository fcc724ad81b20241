"""SU(N) on the 2D torus: character expansion, partition function, plaquette (see :mod:`corrflow.exact`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations_with_replacement

import numpy as np
from scipy import special

from ._common import _PAD, _REL_TOL, _SUN_BESSEL_TOL, _check_beta, _check_n, _check_weights, _volume
from .u1 import _bessel_ratios


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
