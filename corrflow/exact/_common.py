"""Input validation and numerical constants shared by :mod:`corrflow.exact` (see its docstring)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from numbers import Integral, Real

import numpy as np


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
