"""Transcendentals as short polynomials that XLA vectorises (pure ``jax.numpy``).

XLA's CPU backend evaluates ``sin`` and ``cos`` element by element through a library call: on a 2-core Xeon
(AVX-512) ``jnp.sin`` costs ~18 ns per float64 element inside a compiled loop, 6x more than the polynomial
below and more than NumPy's.  On GPUs both are fast; the polynomial is used everywhere so that a kernel gives
the same numbers on every platform up to the platform's rounding.

Accuracy, for ``sin_poly`` and ``cos_poly`` alike: within ``4e-16`` of libm in float64 and ``3e-7`` in float32
for ``|x| <= 64`` (range reduction by ``2 pi`` split in two parts; the error grows slowly with ``|x|`` beyond).  Uses:
molecular-dynamics forces, where HMC stays exact for *any* force field (a kick ``pi -> pi - eps F(U)`` has unit
Jacobian and the integrator stays reversible; only the acceptance depends on the force's accuracy), and the
U(1) Wilson action, which then *is* the action sampled (it differs from the one with library ``cos`` by less
than ``4e-16 beta`` per plaquette, far below statistical resolution; library ``cos`` is not exact either).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["sin_poly", "cos_poly"]

# Taylor coefficients of sin(r)/r in r^2: after reduction to |r| <= pi/2 the truncation error of 11 (float64) or
# 7 (float32) terms is below (pi/2)^23/23! ~ 1e-18 resp. (pi/2)^15/15! ~ 7e-10.
_COEFFS = {n: tuple((-1) ** j / math.factorial(2 * j + 1) for j in range(n)) for n in (7, 11)}
# Taylor coefficients of cos(r) in r^2, 12 (float64) or 8 (float32) terms: truncation below (pi/2)^24/24! ~ 1e-19
# resp. (pi/2)^16/16! ~ 7e-11.
_COS_COEFFS = {n: tuple((-1) ** j / math.factorial(2 * j) for j in range(n)) for n in (8, 12)}
# 2 pi split so that k * hi is exact for |k| < 2^20 (float64) / 2^8 (float32)
_TWO_PI = {jnp.dtype(jnp.float64): (6.283185307179586, 2.4492935982947064e-16),
           jnp.dtype(jnp.float32): (6.28125, 0.0019353071795864769)}


def _reduce(x: Array) -> Array:
    """``x - 2 pi k`` in ``[-pi, pi]`` with the integer ``k`` nearest to ``x / (2 pi)``."""
    hi, lo = _TWO_PI[jnp.dtype(x.dtype)]
    k = jnp.round(x * (1.0 / (2.0 * math.pi)))
    return (x - k * hi) - k * lo


def _horner(r2: Array, coeffs: tuple[float, ...]) -> Array:
    acc = jnp.full_like(r2, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = acc * r2 + c
    return acc


def sin_poly(x: Array) -> Array:
    """``sin(x)`` for a real float32/float64 array of any shape (same shape and dtype)."""
    dt = jnp.dtype(x.dtype)
    if dt not in _TWO_PI:
        return jnp.sin(x)
    r = _reduce(x)  # r in [-pi, pi]
    half = math.pi / 2
    r = jnp.where(r > half, math.pi - r, jnp.where(r < -half, -math.pi - r, r))  # sin(pi - r) = sin(r)
    return r * _horner(r * r, _COEFFS[11 if dt == jnp.dtype(jnp.float64) else 7])


def cos_poly(x: Array) -> Array:
    """``cos(x)`` for a real float32/float64 array of any shape (same shape and dtype; accuracy as
    :func:`sin_poly`)."""
    dt = jnp.dtype(x.dtype)
    if dt not in _TWO_PI:
        return jnp.cos(x)
    a = jnp.abs(_reduce(x))  # in [0, pi]
    far = a > math.pi / 2
    r = jnp.where(far, math.pi - a, a)  # cos(a) = -cos(pi - a)
    c = _horner(r * r, _COS_COEFFS[12 if dt == jnp.dtype(jnp.float64) else 8])
    return jnp.where(far, -c, c)
