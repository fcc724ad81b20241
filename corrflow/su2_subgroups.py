r"""Cabibbo–Marinari SU(2)-subgroup updates of SU(N) links, given their staple sums: the SU(2) heat-bath draw
(Kennedy–Pendleton above ``a = KP_SWITCH``, Creutz below) and over-relaxation, in quaternion form.

The algorithms, their exactness (including the cap on accept/reject rounds) and the conventions are described in
:mod:`corrflow.heatbath`, which builds the sweeps (parities, directions, layout) on :func:`update_links`.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .groups import matmul

Array = jax.Array

__all__ = ["update_links", "draw_x", "heatbath_factor", "overrelax_factor", "project", "qmul", "apply_left", "unit"]

#: Above this effective coupling ``a`` Kennedy–Pendleton accepts more often than Creutz's method.
KP_SWITCH = 1.7
#: Staple projections ``k`` below this count as zero (uniform SU(2) draw, ``V = 1``).
K_SMALL = 1e-10
#: Guard against a hang on non-finite input; with >= 70 % acceptance per round a finite site reaches
#: it with probability < 0.3**1000.
MAX_ROUNDS = 1000


# ----------------------------------------------------------------------------------------
# SU(2) algebra in quaternions: q = q0 + i (q1 s1 + q2 s2 + q3 s3) = [[a, b], [-b*, a*]],
# a = q0 + i q3, b = q2 + i q1
# ----------------------------------------------------------------------------------------


def qmul(a: tuple, b: tuple) -> tuple:
    """Product of two quaternions (tuples of 4 real arrays) in the SU(2) convention above."""
    a0, a1, a2, a3 = a
    b0, b1, b2, b3 = b
    return (
        a0 * b0 - a1 * b1 - a2 * b2 - a3 * b3,
        a0 * b1 + b0 * a1 - (a2 * b3 - a3 * b2),
        a0 * b2 + b0 * a2 - (a3 * b1 - a1 * b3),
        a0 * b3 + b0 * a3 - (a1 * b2 - a2 * b1),
    )


def project(w_ii: Array, w_ij: Array, w_ji: Array, w_jj: Array) -> tuple:
    """Quaternion ``k V`` of the block ``w = [[w_ii, w_ij], [w_ji, w_jj]]``: ``Re tr[r w] = Re tr[r kV]`` for all
    r in SU(2) (``alpha = (w_ii + w_jj^*) / 2``, ``beta = (w_ij - w_ji^*) / 2``)."""
    alpha = 0.5 * (w_ii + jnp.conj(w_jj))
    beta = 0.5 * (w_ij - jnp.conj(w_ji))
    return (jnp.real(alpha), jnp.imag(beta), jnp.real(beta), jnp.imag(alpha))


def apply_left(r: tuple, m: Array, i: Any, j: Any) -> Array:
    """``R m`` with the SU(2) quaternion ``r`` embedded in rows/columns ``(i, j)`` (``i``, ``j`` may be traced)."""
    ra = jax.lax.complex(r[0], r[3])[..., None]
    rb = jax.lax.complex(r[2], r[1])[..., None]
    mi, mj = row(m, i), row(m, j)
    ni = ra * mi + rb * mj
    nj = -jnp.conj(rb) * mi + jnp.conj(ra) * mj
    ax = m.ndim - 2
    m = jax.lax.dynamic_update_index_in_dim(m, ni, i, ax)
    return jax.lax.dynamic_update_index_in_dim(m, nj, j, ax)


def unit(q: tuple) -> tuple[tuple, Array, Array]:
    """``(V, k, ok)``: unit quaternion ``V = q / k`` (``V = 1`` where ``k < K_SMALL``), ``k = |q|``."""
    k = jnp.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
    ok = k > K_SMALL
    inv = jnp.where(ok, 1.0 / jnp.where(ok, k, 1.0), 0.0)
    v = (jnp.where(ok, q[0] * inv, 1.0), q[1] * inv, q[2] * inv, q[3] * inv)
    return v, k, ok


def uniform(key: Array, shape: tuple[int, ...], dtype: Any) -> Array:
    """Uniform numbers in [0, 1) drawn as a flat vector and reshaped (jax's partitionable threefry compiles
    several seconds per call for a many-axis shape on CPU, a flat one in well under a second)."""
    return jax.random.uniform(key, (int(np.prod(shape)),), dtype).reshape(shape)


def draw_x(key: Array, a: Array, max_rounds: int = MAX_ROUNDS) -> tuple[tuple, Array]:
    """SU(2) element ``x`` (quaternion) with density ``∝ exp(a x_0)`` in the Haar measure, independently per
    element of ``a``: ``x_0`` from ``sqrt(1 - x_0^2) exp(a x_0)`` (Kennedy–Pendleton for ``a > KP_SWITCH``,
    Creutz below), ``(x_1, x_2, x_3)`` uniform on the sphere of radius ``sqrt(1 - x_0^2)``.

    Every round draws six uniform numbers per site from ``fold_in(key, round)``: four for the proposal
    and its acceptance, two for the direction (kept from the accepting round).  Returns ``(x, done)``;
    ``done`` is False where ``max_rounds`` rounds did not suffice (with the default, non-finite ``a`` only).
    """
    dtype = a.dtype
    use_kp = a > KP_SWITCH
    a = jnp.maximum(a, K_SMALL)
    em = jnp.expm1(-2.0 * a)  # Creutz: x = 1 + log(1 - u (1 - e^{-2a})) / a has density ∝ exp(a x)
    two_pi = jnp.asarray(2.0 * np.pi, dtype)
    finite = jnp.isfinite(a)

    def body(state: tuple[Array, Array, Array, Array]) -> tuple[Array, Array, Array, Array]:
        it, x0, angles, done = state
        u = uniform(jax.random.fold_in(key, it), (6,) + a.shape, dtype)
        c = jnp.cos(two_pi * u[1])
        lam2 = -(jnp.log1p(-u[0]) + c * c * jnp.log1p(-u[2])) / (2.0 * a)  # log of 1-u in (0, 1]
        x_kp = 1.0 - 2.0 * lam2
        x_cr = 1.0 + jnp.log1p(u[0] * em) / a
        x = jnp.where(use_kp, x_kp, x_cr)
        # accept with probability sqrt(1 - lam^2) (Kennedy–Pendleton) or sqrt(1 - x^2) (Creutz)
        acc = u[3] * u[3] <= jnp.where(use_kp, 1.0 - lam2, 1.0 - x * x)
        new = acc & ~done
        return it + 1, jnp.where(new, x, x0), jnp.where(new, u[4:], angles), done | acc

    def cond(state: tuple[Array, Array, Array, Array]) -> Array:
        return (state[0] < max_rounds) & ~jnp.all(state[3])

    x0 = jnp.where(finite, jnp.ones_like(a), jnp.nan)
    init = (jnp.zeros((), jnp.int32), x0, jnp.zeros((2,) + a.shape, dtype), ~finite)
    _, x0, angles, done = jax.lax.while_loop(cond, body, init)
    cos_t = 1.0 - 2.0 * angles[0]
    sin_t = jnp.sqrt(jnp.maximum(1.0 - cos_t * cos_t, 0.0))
    phi = two_pi * angles[1]
    s = jnp.sqrt(jnp.maximum(1.0 - x0 * x0, 0.0))
    return (x0, s * sin_t * jnp.cos(phi), s * sin_t * jnp.sin(phi), s * cos_t), done


def heatbath_factor(key: Array, q: tuple, n: int, max_rounds: int) -> tuple:
    """Heat-bath SU(2) factor ``r = x V^dag`` for the subgroup with staple projection ``q = k V``
    (``Re tr[r w] = Re tr[r q]``), with ``x`` from :func:`draw_x` at ``a = 2 k / N``.  Where no round of
    ``max_rounds`` accepted (or the input is not finite) ``r = 1``: the link keeps its value (exact,
    module docstring)."""
    v, k, _ = unit(q)
    x, done = draw_x(key, 2.0 * k / n, max_rounds)
    r = qmul(x, (v[0], -v[1], -v[2], -v[3]))
    one, zero = jnp.ones_like(k), jnp.zeros_like(k)
    return tuple(jnp.where(done, ri, ei) for ri, ei in zip(r, (one, zero, zero, zero)))


def overrelax_factor(q: tuple) -> tuple:
    """Over-relaxation factor ``r = (V^dag)^2`` (identity where ``k`` is ~0)."""
    v, _, ok = unit(q)
    vv = v[1] * v[1] + v[2] * v[2] + v[3] * v[3]
    r0 = jnp.where(ok, v[0] * v[0] - vv, 1.0)
    return (r0, -2.0 * v[0] * v[1], -2.0 * v[0] * v[2], -2.0 * v[0] * v[3])


def row(m: Array, i: Any) -> Array:
    return jax.lax.dynamic_index_in_dim(m, i, axis=m.ndim - 2, keepdims=False)


def update_links(key: Array | None, u: Array, sigma: Array, n: int, hb: Any, max_rounds: int) -> Array:
    """Cabibbo–Marinari update of links ``u`` (..., N, N) with staple sums ``sigma``: heat bath (``hb``
    True, needs ``key``) or over-relaxation (``hb`` False); a traced ``hb`` selects with ``lax.cond``, so
    one traced sweep serves both.  Subgroups ``(i, j)``, ``i < j``, in lexicographic order."""
    subgroups = np.array(list(combinations(range(n), 2)), dtype=np.int32)
    w = matmul(u, sigma)

    def one(s: Any, i: Any, j: Any, u: Array, w: Array) -> tuple[Array, Array]:
        wi, wj = row(w, i), row(w, j)
        q = project(wi[..., i], wi[..., j], wj[..., i], wj[..., j])
        if hb is False:
            r = overrelax_factor(q)
        elif hb is True:
            r = heatbath_factor(jax.random.fold_in(key, s), q, n, max_rounds)
        else:
            r = jax.lax.cond(hb, lambda q: heatbath_factor(jax.random.fold_in(key, s), q, n, max_rounds),
                             overrelax_factor, q)
        return apply_left(r, u, i, j), apply_left(r, w, i, j)

    if n == 2:
        return one(0, 0, 1, u, w)[0]

    def body(s: Array, carry: tuple[Array, Array]) -> tuple[Array, Array]:
        ij = jnp.asarray(subgroups)[s]
        return one(s, ij[0], ij[1], *carry)

    return jax.lax.fori_loop(0, len(subgroups), body, (u, w))[0]
