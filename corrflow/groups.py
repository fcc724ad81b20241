"""Compact gauge groups: U(1) as angles and SU(N) as complex N x N matrices.

Conventions (shared by the whole package)
------------------------------------------
* **U(1)**: a group element is stored as its angle ``theta`` (real, any float dtype),
  ``U = exp(i theta)``; group multiplication is addition of angles and the adjoint is negation.
  The Lie algebra u(1) = i R is stored as the real coordinate ``p`` (``X = i p``); the
  "exponential update" is ``theta <- theta + p``.  Element shape ``()``.
* **SU(N)**: a group element is a complex ``(N, N)`` unitary matrix with unit determinant.
  The algebra su(N) is stored as anti-Hermitian traceless ``(N, N)`` matrices.  The basis
  ``T^a`` (``a = 1..N^2-1``) is normalised as ``tr(T^a T^b) = -delta^{ab} / 2``
  (``T^a = i lambda^a / 2`` with generalised Gell-Mann matrices), coordinates of an algebra
  element are ``X^a = -2 tr(T^a X)``.  Element shape ``(N, N)``.
* Momenta ``pi`` live in the algebra with kinetic energy ``K = 1/2 sum_a (pi^a)^2``,
  i.e. ``K = p^2 / 2`` for U(1) and ``K = -tr(pi^2)`` for SU(N).
* ``retr(U)`` is ``Re tr U`` (``cos theta`` for U(1)); ``N`` is 1 for U(1).

All functions broadcast over arbitrary leading (batch, lattice) axes; only the trailing
element axes (``elem_shape``) are interpreted.  Everything is pure JAX and jit/vmap-able.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import native, rng
from .fastmath import cos_poly, sin_poly

Array = jax.Array

__all__ = [
    "Group",
    "U1",
    "SUN",
    "get_group",
    "matmul",
    "dagger",
    "trace",
    "su_n_generators",
]


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
# groups
# ----------------------------------------------------------------------------------------


class Group:
    """Interface shared by :class:`U1` and :class:`SUN` (see module docstring)."""

    name: str
    N: int
    elem_shape: tuple[int, ...]
    n_generators: int

    @property
    def elem_ndim(self) -> int:
        return len(self.elem_shape)

    @property
    def is_abelian(self) -> bool:
        return self.N == 1

    # The methods below are implemented by the concrete groups.
    def mul(self, a: Array, b: Array) -> Array:  # pragma: no cover - interface
        raise NotImplementedError

    def adj(self, a: Array) -> Array:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class U1(Group):
    """The abelian group U(1), elements stored as angles (element shape ``()``)."""

    name: str = "u1"
    N: int = 1
    elem_shape: tuple[int, ...] = ()
    n_generators: int = 1

    def mul(self, a: Array, b: Array) -> Array:
        return a + b

    def adj(self, a: Array) -> Array:
        return -a

    def retr(self, a: Array) -> Array:
        """``Re tr U = cos(theta)``."""
        return jnp.cos(a)

    def to_matrix(self, a: Array) -> Array:
        """Complex number ``exp(i theta)`` (the 1 x 1 'matrix'), element shape ``()``."""
        return jnp.exp(1j * a)

    def identity(self, shape: tuple[int, ...], dtype: Any = jnp.float64) -> Array:
        return jnp.zeros(shape, dtype)

    def random(self, key: Array, shape: tuple[int, ...], dtype: Any = jnp.float64) -> Array:
        """Haar-random angles, uniform in ``[-pi, pi)``."""
        return jax.random.uniform(key, shape, dtype, minval=-jnp.pi, maxval=jnp.pi)

    def random_algebra(self, key: Array, shape: tuple[int, ...], dtype: Any = jnp.float64) -> Array:
        """Gaussian momenta with density ``exp(-p^2/2)`` (``jax.random.normal``'s numbers, see :mod:`corrflow.rng`)."""
        return rng.normal(key, shape, dtype)

    def exp_left(self, x: Array, u: Array) -> Array:
        """``exp(X) U``: ``theta + p``."""
        return u + x

    def kinetic(self, p: Array) -> Array:
        """Per-link kinetic energy ``p^2 / 2`` (shape: the leading axes)."""
        return 0.5 * p * p

    def algebra_coords(self, x: Array) -> Array:
        """Coordinates ``(..., 1)`` of algebra elements."""
        return x[..., None]

    def from_coords(self, c: Array) -> Array:
        return c[..., 0]

    def project_algebra(self, m: Array) -> Array:
        """Projection of a complex 'matrix' (number) onto u(1) coordinates: ``Im m``."""
        return jnp.imag(m)

    def normalize(self, u: Array) -> Array:
        """Wrap angles into ``[-pi, pi)`` (the U(1) analogue of re-unitarisation; ``floor`` rather than ``mod``,
        which XLA's CPU backend evaluates by a library call per element, 15x slower)."""
        return u - (2 * jnp.pi) * jnp.floor((u + jnp.pi) * (1 / (2 * jnp.pi)))

    def distance(self, a: Array, b: Array) -> Array:
        """Max over all elements of ``|exp(i a) - exp(i b)|`` (scalar)."""
        return jnp.max(jnp.abs(jnp.exp(1j * a) - jnp.exp(1j * b)))

    def unitarity_violation(self, u: Array) -> Array:
        return jnp.zeros((), jnp.asarray(u).dtype)

    def complex_dtype(self, real_dtype: Any) -> Any:
        return real_dtype  # links are real angles

    def real_dtype(self, dtype: Any) -> Any:
        return dtype


@dataclass(frozen=True)
class SUN(Group):
    """The group SU(N), elements stored as complex ``(N, N)`` matrices.

    ``exp`` uses closed forms for N = 2 and N = 3 (Cayley–Hamilton, Morningstar–Peardon
    coefficients) and scaling-and-squaring Taylor series for N > 3.
    """

    N: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.N, (int, np.integer)) or self.N < 2:
            raise ValueError(f"SUN: N must be an integer >= 2, got N={self.N!r}")

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"su{self.N}"

    @property
    def elem_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.N, self.N)

    @property
    def n_generators(self) -> int:  # type: ignore[override]
        return self.N * self.N - 1

    @cached_property
    def generators(self) -> np.ndarray:
        """``(N^2-1, N, N)`` basis, ``tr(T^a T^b) = -delta^{ab}/2``."""
        return su_n_generators(self.N)

    # --- group operations --------------------------------------------------------------
    def mul(self, a: Array, b: Array) -> Array:
        return matmul(a, b)

    def adj(self, a: Array) -> Array:
        return dagger(a)

    def retr(self, a: Array) -> Array:
        return jnp.real(trace(a))

    def to_matrix(self, a: Array) -> Array:
        return a

    def identity(self, shape: tuple[int, ...], dtype: Any = jnp.complex128) -> Array:
        eye = jnp.eye(self.N, dtype=dtype)
        return jnp.broadcast_to(eye, tuple(shape) + (self.N, self.N))

    def random(self, key: Array, shape: tuple[int, ...], dtype: Any = jnp.complex128) -> Array:
        """Haar-random SU(N) matrices of shape ``shape + (N, N)``.

        QR of a complex Ginibre matrix with the phases of ``R``'s diagonal fixed gives Haar
        U(N); dividing by ``det^{1/N}`` maps Haar U(N) to Haar SU(N).
        """
        real = jnp.finfo(dtype).dtype
        k1, k2 = jax.random.split(key)
        z = (jax.random.normal(k1, tuple(shape) + self.elem_shape, real)
             + 1j * jax.random.normal(k2, tuple(shape) + self.elem_shape, real)).astype(dtype)
        q, r = jnp.linalg.qr(z)
        d = jnp.diagonal(r, axis1=-2, axis2=-1)
        q = q * (d / jnp.abs(d))[..., None, :]
        return self._fix_det(q)

    def _fix_det(self, u: Array) -> Array:
        det = jnp.linalg.det(u)
        phase = jnp.angle(det) / self.N
        return u * jnp.exp(-1j * phase)[..., None, None].astype(u.dtype)

    def random_algebra(self, key: Array, shape: tuple[int, ...], dtype: Any = jnp.complex128) -> Array:
        """Gaussian algebra elements ``sum_a xi^a T^a`` with ``xi^a ~ N(0, 1)``."""
        real = jnp.finfo(dtype).dtype
        xi = rng.normal(key, tuple(shape) + (self.n_generators,), real)  # jax.random.normal's numbers
        return self.from_coords(xi).astype(dtype)

    def algebra_coords(self, x: Array) -> Array:
        """``X^a = -2 tr(T^a X)``, shape ``(..., N^2-1)`` (real)."""
        t = jnp.asarray(self.generators, x.dtype)
        return -2.0 * jnp.real(jnp.einsum("aij,...ji->...a", t, x))

    def from_coords(self, c: Array) -> Array:
        """``sum_a c^a T^a`` from real coordinates ``(..., N^2-1)``."""
        cdtype = jnp.result_type(c.dtype, jnp.complex64)
        t = jnp.asarray(self.generators, cdtype)
        return jnp.einsum("...a,aij->...ij", c.astype(cdtype), t)

    def project_algebra(self, m: Array) -> Array:
        """Traceless anti-Hermitian projection ``P_TA(M) = (M - M^dag)/2 - tr(M - M^dag)/(2N)``."""
        a = 0.5 * (m - dagger(m))
        tr = trace(a) / self.N
        return a - tr[..., None, None] * jnp.eye(self.N, dtype=m.dtype)

    def kinetic(self, p: Array) -> Array:
        """Per-link kinetic energy ``-tr(pi^2) = sum |pi_ij|^2 = 1/2 sum_a (pi^a)^2``."""
        return jnp.sum(jnp.real(p * jnp.conj(p)), axis=(-2, -1))

    def exp(self, x: Array) -> Array:
        """Exponential of anti-Hermitian traceless matrices (exact to rounding)."""
        if self.N == 2:
            return _exp_su2(x)
        if self.N == 3:
            return _exp_su3(x)
        return _exp_taylor(x)

    def exp_left(self, x: Array, u: Array) -> Array:
        """``exp(X) U``; for SU(3) on CPUs the native kernel (:func:`corrflow.native.exp_left`, same formula,
        ``CORRFLOW_NATIVE``), derivatives by this JAX code."""
        if native.use_native_exp(x, u, self):
            return native.exp_left(x, u, lambda a, b: matmul(self.exp(a), b))
        return matmul(self.exp(x), u)

    def normalize(self, u: Array) -> Array:
        """Re-unitarise to SU(N) (Gram–Schmidt for N = 3, closest SU(2) for N = 2)."""
        if self.N == 2:
            a = 0.5 * (u[..., 0, 0] + jnp.conj(u[..., 1, 1]))
            b = 0.5 * (u[..., 0, 1] - jnp.conj(u[..., 1, 0]))
            n = jnp.sqrt(jnp.abs(a) ** 2 + jnp.abs(b) ** 2)
            a, b = a / n, b / n
            row0 = jnp.stack([a, b], -1)
            row1 = jnp.stack([-jnp.conj(b), jnp.conj(a)], -1)
            return jnp.stack([row0, row1], -2)
        if self.N == 3:
            r0 = u[..., 0, :]
            r0 = r0 / jnp.sqrt(jnp.sum(jnp.abs(r0) ** 2, -1, keepdims=True))
            r1 = u[..., 1, :]
            r1 = r1 - jnp.sum(jnp.conj(r0) * r1, -1, keepdims=True) * r0
            r1 = r1 / jnp.sqrt(jnp.sum(jnp.abs(r1) ** 2, -1, keepdims=True))
            r2 = jnp.conj(jnp.cross(r0, r1))
            return jnp.stack([r0, r1, r2], -2)
        q, r = jnp.linalg.qr(u)
        d = jnp.diagonal(r, axis1=-2, axis2=-1)
        q = q * (d / jnp.abs(d))[..., None, :]
        return self._fix_det(q)

    def distance(self, a: Array, b: Array) -> Array:
        """Max absolute entry of ``a - b`` (scalar)."""
        return jnp.max(jnp.abs(a - b))

    def unitarity_violation(self, u: Array) -> Array:
        """Max over elements of ``|U U^dag - 1|`` and ``|det U - 1|`` (scalar)."""
        eye = jnp.eye(self.N, dtype=u.dtype)
        dev = jnp.max(jnp.abs(matmul(u, dagger(u)) - eye))
        return jnp.maximum(dev, jnp.max(jnp.abs(jnp.linalg.det(u) - 1.0)))

    def complex_dtype(self, real_dtype: Any) -> Any:
        return jnp.result_type(real_dtype, jnp.complex64)

    def real_dtype(self, dtype: Any) -> Any:
        return jnp.finfo(dtype).dtype


# ----------------------------------------------------------------------------------------
# exponential maps
# ----------------------------------------------------------------------------------------


def _exp_su2(x: Array) -> Array:
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


def _exp_su3(x: Array, libm: bool = False) -> Array:
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
    c0 = jnp.real(trace(matmul(q2, q))) / 3.0 if libm else -jnp.imag(_det3(x))
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


def _det3(a: Array) -> Array:
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


def _exp_taylor(x: Array, order: int = 14, squarings: int = 6) -> Array:
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


# ----------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------

_GROUP_NAMES = ("u1", "su2", "su3", "suN (N >= 2)")


def get_group(name: str | Group) -> Group:
    """Group from a name: ``"u1"``, ``"su2"``, ``"su3"``, or ``"suN"`` for any N >= 2."""
    if isinstance(name, Group):
        return name
    key = str(name).strip().lower().replace("(", "").replace(")", "").replace("_", "")
    if key == "u1":
        return U1()
    if key.startswith("su") and key[2:].isdigit() and int(key[2:]) >= 2:
        return SUN(int(key[2:]))
    raise ValueError(f"unknown group {name!r}; allowed: {', '.join(_GROUP_NAMES)}")
