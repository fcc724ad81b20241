"""Per-link Jacobian algebra of the residual layers, without LAPACK (:func:`algebra_and_logj`, used by
:meth:`ResidualLayer._g_and_logj`).

``F(ad g) = (1 - e^{-ad g}) / ad g`` by a Paterson–Stockmeyer Taylor polynomial (its degree by precision), ``log det``
by unrolled LU with a custom JVP, and the real linear maps ``(Re W, Im W) -> M, g`` and ``g -> ad g`` of SU(N).
Batched LAPACK calls inside jit/scan can deadlock jaxlib 0.10 on CPU, so everything here is plain XLA.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import native
from ..groups import su_n_generators

Array = jax.Array


def _bmm(a: Array, b: Array) -> Array:
    """Batched product of small ``(..., n, n)`` matrices."""
    return jnp.einsum("...ab,...bc->...ac", a, b)


# F(A) = (1 - e^{-A}) / A = sum_k (-A)^k / (k+1)!, truncated by precision: |ad g| <= 1.9 gives a remainder below
# 1.9^24 / 25! ~ 3e-19 at degree 23 (float64) and 1.9^16 / 17! ~ 8e-11 at degree 15 (float32, eps 6e-8).
_PHI_DEGREE = 23
_PHI_DEGREE_F32 = 15


def _phi_degree(dtype: Any) -> int:
    """Degree of the Taylor polynomial of ``F`` for real ``dtype`` (remainder far below its rounding)."""
    return _PHI_DEGREE_F32 if jnp.finfo(dtype).bits <= 32 else _PHI_DEGREE


def _phi(a: Array, degree: int | None = None) -> Array:
    """``(1 - e^{-A}) / A`` for batched ``(..., n, n)`` matrices by Paterson–Stockmeyer: powers ``A..A^4``
    (3 products) and Horner in ``A^4`` over ``(degree + 1) / 4`` blocks (5 products at degree 23, the float64
    default; 3 at degree 15, the float32 default: :func:`_phi_degree`)."""
    degree = _phi_degree(a.dtype) if degree is None else int(degree)
    if (degree + 1) % 4:
        raise ValueError(f"degree + 1 must be a multiple of 4, got degree {degree}")
    coeffs = [(-1.0) ** k / math.factorial(k + 1) for k in range(degree + 1)]
    n = a.shape[-1]
    eye = jnp.eye(n, dtype=a.dtype)
    a2 = _bmm(a, a)
    a3 = _bmm(a2, a)
    a4 = _bmm(a2, a2)
    powers = (eye, a, a2, a3)

    def block(j: int) -> Array:
        return sum(coeffs[4 * j + i] * powers[i] for i in range(4))

    nblocks = (degree + 1) // 4
    out = block(nblocks - 1)
    for j in range(nblocks - 2, -1, -1):
        out = block(j) + _bmm(a4, out)
    return out


@jax.custom_jvp
def _logdet_lu(a: Array) -> Array:
    """``log |det a|`` of batched real ``(..., n, n)`` matrices by unrolled LU elimination without pivoting, in
    plain XLA.  Only for matrices whose leading minors are safely nonzero, like the per-link Jacobians
    ``1 + F M`` with ``|F M| < 1`` (see :meth:`ResidualLayer._g_and_logj`).  Differentiable:
    ``d log|det a| = tr(a^{-1} da)`` with the inverse from unrolled Gauss–Jordan (a custom JVP keeps the
    backward pass small; autodiff through the elimination compiles to a much larger program)."""
    n = a.shape[-1]
    logdet = jnp.zeros(a.shape[:-2], a.dtype)
    for k in range(n):
        piv = a[..., 0, 0]
        logdet = logdet + jnp.log(jnp.abs(piv))
        if k < n - 1:
            a = a[..., 1:, 1:] - a[..., 1:, :1] * (a[..., :1, 1:] / piv[..., None, None])
    return logdet


def _logdet_and_inverse(a: Array) -> tuple[Array, Array]:
    """``(log |det a|, a^{-1})`` by unrolled Gauss–Jordan without pivoting (same caveat as :func:`_logdet_lu`)."""
    n = a.shape[-1]
    aug = jnp.concatenate([a, jnp.broadcast_to(jnp.eye(n, dtype=a.dtype), a.shape)], axis=-1)
    logdet = jnp.zeros(a.shape[:-2], a.dtype)
    rows = jnp.arange(n)[:, None]
    for k in range(n):
        piv = aug[..., k, k]
        logdet = logdet + jnp.log(jnp.abs(piv))
        row = aug[..., k, :] / piv[..., None]
        aug = jnp.where(rows == k, row[..., None, :], aug - aug[..., :, k:k + 1] * row[..., None, :])
    return logdet, aug[..., n:]


@_logdet_lu.defjvp
def _logdet_lu_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    (a,), (da,) = primals, tangents
    logdet, inv = _logdet_and_inverse(a)
    return logdet, jnp.einsum("...ij,...ji->...", inv, da)


@lru_cache(maxsize=None)
def _jacobian_constants(n_color: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real linear maps for SU(N): ``(Re W, Im W) -> M`` ``(2N^2, n^2)``, ``(Re W, Im W) -> g`` ``(2N^2, n)``
    and ``g -> ad g`` ``(n, n^2)`` (see :meth:`ResidualLayer._g_and_logj`)."""
    t = su_n_generators(n_color)
    n = len(t)
    nn = n_color * n_color
    # M^{ab} = -2 Re sum_{ik} W_ik (T^a T^b)_ki ;  Re(W C) = Re W Re C - Im W Im C
    c = np.einsum("akj,bji->ikab", t, t).reshape(nn, n * n)
    k_m = -2.0 * np.concatenate([c.real, -c.imag], axis=0)
    cx = np.einsum("aki->ika", t).reshape(nn, n)  # g^a = -2 Re sum_{ik} W_ik T^a_ki
    k_x = -2.0 * np.concatenate([cx.real, -cx.imag], axis=0)
    comm = np.einsum("cij,bjk->cbik", t, t) - np.einsum("bij,cjk->cbik", t, t)  # [T^c, T^b]
    k_ad = -2.0 * np.real(np.einsum("aki,cbik->cab", t, comm)).reshape(n, n * n)  # coords_a([T^c, T^b])
    return k_m, k_x, k_ad


def algebra_and_logj(group: Any, w: Array) -> tuple[Array, Array]:
    """``(g, log J)`` of one stout-like SU(N) link update ``U' = exp(g) U`` with ``g = P_TA(W)``, ``W = U Sigma``
    (``Sigma`` frozen), for batched ``w`` ``(..., N, N)``: ``g`` ``(..., N, N)`` and the per-link ``log J`` ``(...)``.

    With ``n = N^2 - 1`` all ``n x n`` matrices come from real linear maps of ``(Re W, Im W)`` (precomputed from the
    generators, :func:`_jacobian_constants`): ``M^{ab} = -2 Re tr(T^a T^b W)``, ``g^a = -2 Re tr(T^a W)``,
    ``(ad g)_{ab} = g^c coords_a([T^c, T^b])``, and ``J = det(1 + F(ad g) M)``.  ``F(ad g)`` is a degree-23 (float64;
    degree 15 in float32) Taylor polynomial (Paterson–Stockmeyer, 8 / 6 matrix products) and the determinant an
    unpivoted LU, which is safe for the layers' ``|W| <= 0.95``: ``|M| <= |W|`` and ``|F(ad g)| <= 1`` (``ad g`` is
    antisymmetric) in the operator 2-norm, so ``1 + F M`` is a contraction away from 1, every leading minor is
    positive, and so is ``J``.  No LAPACK call: batched LAPACK inside jit/scan can deadlock jaxlib 0.10 on CPU.
    For SU(3) on CPUs the values come from the native kernel (:func:`corrflow.native.algebra_and_logj`, same
    algorithm), the derivatives from this code.
    """
    if native.use_native_jacobian(w, group):
        return native.algebra_and_logj(w, _jacobian_constants(group.N), lambda v: _algebra_and_logj_jax(group, v))
    return _algebra_and_logj_jax(group, w)


def _algebra_and_logj_jax(group: Any, w: Array) -> tuple[Array, Array]:
    """:func:`algebra_and_logj` in JAX (the reference, and its derivatives)."""
    x = group.project_algebra(w)
    n = group.n_generators
    k_m, k_x, k_ad = (jnp.asarray(c, w.real.dtype) for c in _jacobian_constants(group.N))
    nn = group.N * group.N
    wr = jnp.concatenate([jnp.real(w).reshape(w.shape[:-2] + (nn,)),
                          jnp.imag(w).reshape(w.shape[:-2] + (nn,))], axis=-1)
    m = (wr @ k_m).reshape(w.shape[:-2] + (n, n))
    ad = ((wr @ k_x) @ k_ad).reshape(w.shape[:-2] + (n, n))
    jac = jnp.eye(n, dtype=m.dtype) + _bmm(_phi(ad), m)
    return x, _logdet_lu(jac)
