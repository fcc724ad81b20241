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
element axes (``elem_shape``) are interpreted.  Everything is pure JAX and jit/vmap-able.  The small-matrix algebra
and the closed-form exponentials live in :mod:`corrflow.matrices` (``matmul``, ``dagger``, ``trace``,
``su_n_generators`` and ``exp_left_taylor4`` are re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import native, rng
from .matrices import dagger, exp_left_taylor4, exp_su2, exp_su3, exp_taylor, matmul, su_n_generators, trace

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
    "exp_left_taylor4",
]


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
            return exp_su2(x)
        if self.N == 3:
            return exp_su3(x)
        return exp_taylor(x)

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
