"""Held-out smoothing terms for residual layers: move each active link towards its Wilson-flowed value, with the
flowed value computed from frozen links only.

A layer with smoothing terms adds to its effective staple (:mod:`corrflow.flows.layers`)::

    Sigma_l += -sum_k c_k B_k(l)^dag,   B_1 = V_1,  B_k = V_k - V_{k-1},   V_k = Ṽ(t_k)_l,

so that ``g_l = P_TA(U_l Sigma_l)`` gains ``sum_k c_k P_TA(B_k U_l^dag)``: the active link moves towards the
smoothed links (the gauge-covariant ultraviolet part of the field around it).  ``Ṽ(t)`` is the Wilson flow (Euler
steps ``flow_eps`` of the flow that :class:`corrflow.tangent.SmoothingField` uses, times in the same units) of the
*held-out* configuration: the active links replaced by the SU(N) projection of their plaquette staple sum (the
link that maximises ``Re tr(U Sigma_plaq)``), which is built from frozen links only.  So ``Ṽ`` depends on frozen
links only, the layer stays block-triangular, and its per-link Jacobian is the closed form of the staple layers
(``W = U_l Sigma_l``).  Telescoped differences ``B_k`` span the same space as the ``V_k`` and keep the raw
coefficients of successive times apart (the fitted combinations are band-pass filters with large cancelling
weights on the ``V_k`` themselves).

Why (BENCHMARKS.md, issue 14): the tangent of a flow made of such layers is the held-out smoothing field, whose
divergence is the closed form per link (no stochastic trace); in the linearised picture its best coefficients
remove 2.3–2.5x of the variance of ``∂S/∂β`` at β = 5.7 on 4^4 (local staple potentials: 1.3–1.4x), which bounds
the finite flow's ``var(log w)`` against direct reweighting.

The coefficients ``c_k`` are unbounded; the layer bounds the whole effective staple instead
(:func:`soft_clip`): ``|Sigma|_op <= 0.95`` keeps the update a contraction, the Jacobian positive and the
fixed-point inverse convergent.  The projection onto SU(N) is a Newton–Schulz polar iteration with the determinant
phase removed (no LAPACK), covariant under ``Sigma -> g Sigma h^dag``.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from .. import lattice
from ..groups import Group, dagger, exp_left_taylor4, matmul
from .spec import check_times

Array = jax.Array

__all__ = ["project_sun", "held_out_flow", "soft_clip", "check_times", "POLAR_ITERATIONS"]

POLAR_ITERATIONS = 24
_BOUND = 0.95


def _det(x: Array, n: int) -> Array:
    if n == 2:
        return x[..., 0, 0] * x[..., 1, 1] - x[..., 0, 1] * x[..., 1, 0]
    return (x[..., 0, 0] * (x[..., 1, 1] * x[..., 2, 2] - x[..., 1, 2] * x[..., 2, 1])
            - x[..., 0, 1] * (x[..., 1, 0] * x[..., 2, 2] - x[..., 1, 2] * x[..., 2, 0])
            + x[..., 0, 2] * (x[..., 1, 0] * x[..., 2, 1] - x[..., 1, 1] * x[..., 2, 0]))


def project_sun(a: Array, n: int) -> Array:
    """SU(N) projection (N = 2, 3) of matrices ``(..., N, N)``: the unitary polar factor by Newton–Schulz
    (``X <- X (3 - X^dag X) / 2`` from ``a / |a|_F``, :data:`POLAR_ITERATIONS` steps), times ``det^{-1/N}`` (principal
    branch).  Covariant: ``project(g a h^dag) = g project(a) h^dag`` for ``g, h`` in SU(N)."""
    x = a / jnp.sqrt(jnp.sum(jnp.abs(a) ** 2, axis=(-2, -1), keepdims=True))
    eye = jnp.eye(n, dtype=a.dtype)

    def body(x: Array, _: None) -> tuple[Array, None]:
        return 0.5 * matmul(x, 3.0 * eye - matmul(dagger(x), x)), None

    x, _ = jax.lax.scan(body, x, None, length=POLAR_ITERATIONS)
    phase = jnp.exp(-1j * jnp.angle(_det(x, n)) / n).astype(a.dtype)
    return x * phase[..., None, None]


def _flow_step(u: Array, group: Group, eps: float) -> Array:
    """``U <- exp(-eps F) U`` with ``F = P_TA(U Sigma) / (2N)`` (the Wilson force at β = 1) and the exponential by its
    4th-order Taylor series (gauge covariant; unitary to ``O(eps^5)``), as the tangent package's feature flow."""
    return exp_left_taylor4(-eps * lattice.staple_force(u, group) / (2.0 * group.N), u)


def held_out_flow(u_flat: Array, links: Array, plaquette_sums: Array, group: Group, shape: Sequence[int],
                  times: Sequence[float], eps: float) -> list[Array]:
    """``[Ṽ(t_k)]`` at the active ``links``: the Wilson flow of the field with the active links replaced by
    ``project_sun(plaquette_sums^dag)``.  ``u_flat`` ``(*batch, V d, N, N)``; ``links`` ``(n,)`` flat link indices
    (may be traced); ``plaquette_sums`` ``(*batch, n, N, N)``; returns ``K`` arrays ``(*batch, n, N, N)``."""
    nb = u_flat.ndim - 3
    sub = u_flat.at[(slice(None),) * nb + (links,)].set(project_sun(dagger(plaquette_sums), group.N),
                                                      indices_are_sorted=True, unique_indices=True)
    d = len(shape)
    w = sub.reshape(u_flat.shape[:nb] + tuple(shape) + (d,) + tuple(group.elem_shape))
    step = jax.checkpoint(lambda w, _: (_flow_step(w, group, eps), None))
    out, done = [], 0
    for t in times:
        n_steps = int(round(t / eps)) - done
        w, _ = jax.lax.scan(step, w, None, length=n_steps)
        done += n_steps
        out.append(jnp.take(w.reshape(u_flat.shape), links, axis=nb, mode="clip"))
    return out


def soft_clip(sigma: Array) -> Array:
    """``Sigma r(m)`` with ``m = |Sigma^dag Sigma|_F >= |Sigma|_op^2`` and ``r = (1 + (m / 0.95^2)^4)^{-1/8}``:
    the identity to ``O((m / 0.9)^4)`` for small ``Sigma`` and ``|r Sigma|_op < 0.95`` always (smooth, gauge
    invariant factor built from ``Sigma`` alone, so a layer's Jacobian formula is unchanged)."""
    m2 = jnp.sum(jnp.abs(matmul(dagger(sigma), sigma)) ** 2, axis=(-2, -1))
    r = (1.0 + (m2 / _BOUND**4) ** 2) ** (-1.0 / 8)
    return sigma * r[..., None, None].astype(sigma.real.dtype)
