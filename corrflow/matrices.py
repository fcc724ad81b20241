"""Small-matrix algebra for the gauge groups: products, adjoints and traces of batched ``(..., N, N)`` matrices, the
su(N) basis, and the closed-form exponential maps of su(2) and su(3) (a Taylor series with squarings for other N).

Conventions as in :mod:`corrflow.groups` (anti-Hermitian traceless algebra, ``tr(T^a T^b) = -delta^{ab} / 2``). Every
function broadcasts over leading axes and is pure JAX (jit/vmap/grad-able). :mod:`corrflow.groups` re-exports
``matmul``, ``dagger``, ``trace``, ``exp_left_taylor4`` and ``su_n_generators``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .fastmath import cos_poly, sin_poly

Array = jax.Array

__all__ = ["matmul", "dagger", "trace", "exp_left_taylor4", "su_n_generators", "exp_su2", "exp_su3", "exp_taylor",
           "det3"]


# ----------------------------------------------------------------------------------------
# small-matrix algebra (broadcast multiply-sums beat `@` for 2x2 / 3x3 on CPU)
# ----------------------------------------------------------------------------------------


def matmul(a: Array, b: Array) -> Array:
    """Product of (..., N, N) matrices written as a broadcast multiply-sum."""
    return jnp.sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)


def dagger(a: Array) -> Array:
    """Conjugate transpose of (..., N, N) matrices."""
    return jnp.conj(jnp.swapaxes(a, -1, -2))


def trace(a: Array) -> Array:
    """Trace of (..., N, N) matrices."""
    return jnp.trace(a, axis1=-2, axis2=-1)


def exp_left_taylor4(x: Array, u: Array) -> Array:
    """``exp(X) U`` with the exponential by its 4th-order Taylor series, for SU(N) matrices ``(..., N, N)``: gauge
    covariant and cheap to differentiate, unitary to ``O(|X|^5)`` -- for smoothing flows (the tangent fields' flowed
    features, the flows' smoothing terms), not for molecular dynamics."""
    eye = jnp.eye(x.shape[-1], dtype=x.dtype)
    x2 = matmul(x, x)
    return matmul(eye + x + matmul(x2, eye / 2 + x / 6 + x2 / 24), u)


def su_n_generators(n: int) -> np.ndarray:
    """Basis ``T^a = i lambda^a / 2`` of su(N), shape ``(N^2 - 1, N, N)``, complex128.

    ``lambda^a`` are the generalised Gell-Mann matrices (symmetric, antisymmetric, diagonal),
    so that ``tr(T^a T^b) = -delta^{ab} / 2``.
    """
    if n < 2:
        raise ValueError(f"su_n_generators: N must be >= 2, got N={n}")
    lams = []
    for j in range(n):
        for k in range(j + 1, n):
            s = np.zeros((n, n), complex)
            s[j, k] = s[k, j] = 1.0
            lams.append(s)
            a = np.zeros((n, n), complex)
            a[j, k] = -1j
            a[k, j] = 1j
            lams.append(a)
    for l in range(1, n):
        d = np.zeros((n, n), complex)
        d[np.arange(l), np.arange(l)] = 1.0
        d[l, l] = -l
        lams.append(d * math.sqrt(2.0 / (l * (l + 1))))
    return 0.5j * np.stack(lams)


# ----------------------------------------------------------------------------------------
# exponential maps
# ----------------------------------------------------------------------------------------


def exp_su2(x: Array) -> Array:
    """``exp(X)`` for X in su(2): ``X^2 = -a^2 1`` so ``exp X = cos a + X sin(a)/a``."""
    a2 = -0.5 * jnp.real(trace(matmul(x, x)))
    a2 = jnp.maximum(a2, 0.0)
    small = a2 < 1e-8
    a2s = jnp.where(small, 1.0, a2)
    a = jnp.sqrt(a2s)
    c = jnp.where(small, 1.0 - a2 / 2 + a2 * a2 / 24, jnp.cos(a))
    s = jnp.where(small, 1.0 - a2 / 6 + a2 * a2 / 120, jnp.sin(a) / a)
    eye = jnp.eye(2, dtype=x.dtype)
    return c[..., None, None].astype(x.dtype) * eye + s[..., None, None].astype(x.dtype) * x


def exp_su3(x: Array, libm: bool = False) -> Array:
    """``exp(X)`` for X in su(3) by Cayley–Hamilton: ``exp(iQ) = f0 + f1 Q + f2 Q^2``.

    ``Q = -i X`` is Hermitian traceless, ``c0 = det Q``, ``c1 = tr(Q^2)/2``; the coefficients
    ``f_j`` follow Morningstar & Peardon, Phys. Rev. D 69 (2004) 054501, eqs. (23)-(34).
    Nearly-zero ``Q`` (``c1 < 1e-3``) uses a Taylor series; both branches are NaN-free so the
    map is safe under autodiff.

    No library transcendentals (XLA:CPU calls libm element by element, 10–20 ns each, and the formula has nine):
    ``cos(theta/3)`` with ``cos theta = c0 / c0_max`` is the root of ``4y^3 - 3y = cos theta`` in ``[sqrt(3)/2, 1]``
    (a cubic start, then Newton steps), ``u`` and ``w^2 = c1 (1 - y^2)`` follow without ``arccos``, ``sin`` or
    square roots of ``w``, and the sines and cosines of ``u``, ``2u`` and ``w`` are the vectorised polynomials of
    :mod:`corrflow.fastmath` (within 4e-16 of libm in float64).  ``libm=True``: the same formula through
    ``arccos``/``sin``/``cos``/``exp`` (the previous kernel, kept as the reference of tests and benchmarks).
    """
    q = -1j * x
    q2 = matmul(q, q)
    c1 = 0.5 * jnp.real(trace(q2))
    # c0 = det Q = tr(Q^3) / 3 = -Im det X: from the matrix elements, one elementwise pass over X instead of a
    # product with Q^2 (1.13-1.18x for the whole exponential; the libm reference keeps the trace)
    c0 = jnp.real(trace(matmul(q2, q))) / 3.0 if libm else -jnp.imag(det3(x))
    small = c1 < 1e-3
    c1s = jnp.where(small, 1.0, c1)
    c0s = jnp.where(small, 0.0, c0)
    neg = c0s < 0
    c0a = jnp.abs(c0s)
    c0max = 2.0 * (c1s / 3.0) ** 1.5
    if libm:
        # clip slightly inside [-1, 1] to keep arccos differentiable at degenerate spectra
        theta = jnp.arccos(jnp.clip(c0a / c0max, 0.0, 1.0 - 1e-15))
        u = jnp.sqrt(c1s / 3.0) * jnp.cos(theta / 3.0)
        w = jnp.sqrt(c1s) * jnp.sin(theta / 3.0)
        w2 = w * w
        wsmall = jnp.abs(w) < 0.05
        wsafe = jnp.where(wsmall, 1.0, w)
        xi0 = jnp.where(wsmall, 1.0 - w2 / 6.0 * (1.0 - w2 / 20.0 * (1.0 - w2 / 42.0)), jnp.sin(wsafe) / wsafe)
        cosw = jnp.cos(w)
        e2iu, emiu = jnp.exp(2j * u), jnp.exp(-1j * u)
    else:
        y = _cos_third_arccos(jnp.clip(c0a / c0max, 0.0, 1.0))  # cos(theta / 3)
        u = jnp.sqrt(c1s / 3.0) * y
        w2 = c1s * jnp.maximum(1.0 - y * y, 0.0)  # w = sqrt(c1) sin(theta / 3); the f_j depend on w^2 only
        wsmall = w2 < 0.0025
        wsafe = jnp.sqrt(jnp.where(wsmall, 1.0, w2))
        xi0 = jnp.where(wsmall, 1.0 - w2 / 6.0 * (1.0 - w2 / 20.0 * (1.0 - w2 / 42.0 * (1.0 - w2 / 72.0))),
                        sin_poly(wsafe) / wsafe)
        cosw = jnp.where(wsmall, 1.0 - w2 / 2.0 * (1.0 - w2 / 12.0 * (1.0 - w2 / 30.0 * (1.0 - w2 / 56.0))),
                         cos_poly(wsafe))
        cu, su = cos_poly(u), sin_poly(u)
        e2iu = jax.lax.complex(2.0 * cu * cu - 1.0, 2.0 * su * cu)
        emiu = jax.lax.complex(cu, -su)
    u2 = u * u
    h0 = (u2 - w2) * e2iu + emiu * (8.0 * u2 * cosw + 2j * u * (3.0 * u2 + w2) * xi0)
    h1 = 2.0 * u * e2iu - emiu * (2.0 * u * cosw - 1j * (3.0 * u2 - w2) * xi0)
    h2 = e2iu - emiu * (cosw + 3j * u * xi0)
    den = 9.0 * u2 - w2
    f0, f1, f2 = h0 / den, h1 / den, h2 / den
    # c0 -> -c0 symmetry: f_j(-c0) = (-1)^j conj(f_j(c0))
    f0 = jnp.where(neg, jnp.conj(f0), f0)
    f1 = jnp.where(neg, -jnp.conj(f1), f1)
    f2 = jnp.where(neg, jnp.conj(f2), f2)
    # Taylor branch for small Q, using Q^3 = c1 Q + c0 1 (Cayley–Hamilton)
    # exp(iQ) = sum_k (iQ)^k / k!; reduce powers: track Q^k = a_k 1 + b_k Q + g_k Q^2
    a, b, g = jnp.ones_like(c1), jnp.zeros_like(c1), jnp.zeros_like(c1)
    t0 = jnp.zeros_like(c1, dtype=f0.dtype)
    t1 = jnp.zeros_like(t0)
    t2 = jnp.zeros_like(t0)
    coef = 1.0 + 0j
    for k in range(0, 13):
        t0 = t0 + coef * a
        t1 = t1 + coef * b
        t2 = t2 + coef * g
        # multiply Q^k by Q: Q^{k+1} = a Q + b Q^2 + g Q^3 = g c0 + (a + g c1) Q + b Q^2
        a, b, g = g * c0, a + g * c1, b
        coef = coef * 1j / (k + 1)
    f0 = jnp.where(small, t0, f0).astype(x.dtype)
    f1 = jnp.where(small, t1, f1).astype(x.dtype)
    f2 = jnp.where(small, t2, f2).astype(x.dtype)
    eye = jnp.eye(3, dtype=x.dtype)
    return f0[..., None, None] * eye + f1[..., None, None] * q + f2[..., None, None] * q2


def det3(a: Array) -> Array:
    """Determinant of batched ``(..., 3, 3)`` matrices by cofactors along the first row."""
    return (a[..., 0, 0] * (a[..., 1, 1] * a[..., 2, 2] - a[..., 1, 2] * a[..., 2, 1])
            - a[..., 0, 1] * (a[..., 1, 0] * a[..., 2, 2] - a[..., 1, 2] * a[..., 2, 0])
            + a[..., 0, 2] * (a[..., 1, 0] * a[..., 2, 1] - a[..., 1, 1] * a[..., 2, 0]))


def _cos_third_arccos(c: Array) -> Array:
    """``cos(arccos(c) / 3)`` for ``c`` in ``[0, 1]``: the largest root of ``4y^3 - 3y = c`` (in ``[sqrt(3)/2, 1]``),
    from a cubic fit (error < 7e-5) refined by three Newton steps (``4y^3 - 3y - c`` is convex and increasing there,
    ``f' >= 6``: quadratic convergence, below rounding after two steps).  Smooth in ``c``, so autodiff through it
    is finite also at ``c = 1`` (degenerate spectra), where ``arccos`` is not."""
    y = 0.86609252 + c * (0.16521472 + c * (-0.04063051 + c * 0.00937448))
    for _ in range(3):
        y = y - (4.0 * y * y * y - 3.0 * y - c) / (12.0 * y * y - 3.0)
    return y


def exp_taylor(x: Array, order: int = 14, squarings: int = 6) -> Array:
    """Generic matrix exponential: Taylor series of ``X / 2^s`` followed by ``s`` squarings.

    ``s`` is fixed (``squarings``); accurate to double precision for ``|X| <~ 2^s / 2``.
    """
    n = x.shape[-1]
    y = x / (2.0 ** squarings)
    eye = jnp.eye(n, dtype=x.dtype)
    out = eye + y / order
    for k in range(order - 1, 0, -1):
        out = eye + matmul(y, out) / k
    for _ in range(squarings):
        out = matmul(out, out)
    return out
