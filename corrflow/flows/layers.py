"""Masked gauge-equivariant residual layers and flows built from them.

Layer (PHYSICS.md section 4).  For the active links ``l = (x, mu)`` of a mask::

    U'_l = exp(g_l) U_l,   g_l = P_TA[ U_l Sigma_l ],   Sigma_l = sum_k c_k Sigma^(k)_l

where ``Sigma^(k)_l`` is the staple sum of loop shape ``k`` (:mod:`corrflow.flows.staples`), built only from
frozen links, and ``c_k`` are learned constants of the layer (U(1): ``theta' = theta + Im(e^{i theta}
Sigma)``).  ``g_l`` is the gradient of the gauge-invariant potential ``-Re tr(U_l Sigma_l)`` times a
constant, so the layer is gauge equivariant: ``f(U^Omega) = f(U)^Omega``.

Invertibility: ``c_k = b_k tanh(a_k)`` with raw parameters ``a_k`` and bounds ``b_k = 0.95 / (K n_k)``
(``n_k`` staples of shape k per link, ``K`` shapes), so ``sum_k |c_k| n_k < 0.95``: the update is a
contraction in ``U_l``, its Jacobian is positive, and :meth:`ResidualLayer.reverse` inverts it by the
fixed-point iteration ``U_l <- exp(-g(U_l)) U'_l``.

Jacobian (Haar measure, right-trivialised coordinates ``U -> e^{w^a T^a} U``): the layer is block
diagonal over active links, and per link ``J_l = det[1 + ((1 - e^{-ad g}) / ad g) M]`` with
``M^{ab} = d g^a / d w^b = coords P_TA(T^b W)``, ``W = U_l Sigma_l`` (U(1): ``J_l = 1 + Re W``).

A :class:`Flow` is a sequence of layers (static structure) with one parameter array
``(n_sweeps, d, n_masks, K)``: ``forward(params, U) -> (U', log J)`` and
``reverse(params, U') -> (U, log J_inverse)`` with ``log J_inverse(U') = -log J_forward(U)``.
Everything works on batches (leading axes) and any dimension; parameters are translation invariant,
so a flow trained on one volume applies to any other volume with compatible extents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import lattice
from ..groups import Group, get_group
from ..theories.gauge import accumulate
from .staples import LOOPS, layer_masks, n_staples, staple_sums

Array = jax.Array

__all__ = ["ResidualLayer", "Flow", "make_flow", "INVERSE_TOL"]

INVERSE_TOL = 1e-12  # fixed-point tolerance (max abs change of a link element) in float64
_BOUND_TOTAL = 0.95


@dataclass(frozen=True)
class ResidualLayer:
    """Residual update of the links in direction ``mu`` with the given loop shapes (static); the active
    sites are a boolean site mask passed at call time (so layers differing only in their mask share
    one compiled body)."""

    group: Group
    shape: tuple[int, ...]
    mu: int
    loops: tuple[str, ...] = ("plaquette",)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def bounds(self) -> np.ndarray:
        """``b_k``: ``sum_k b_k n_k = 0.95``."""
        k = len(self.loops)
        return np.array([_BOUND_TOTAL / (k * n_staples(lp, self.ndim)) for lp in self.loops])

    def coefficients(self, raw: Array) -> Array:
        return jnp.asarray(self.bounds(), raw.dtype) * jnp.tanh(raw)

    def _sigma(self, u: Array, raw: Array) -> Array:
        """``Sigma_l = sum_k c_k Sigma^(k)_l`` (matrix form) for every site (only active sites are used)."""
        c = self.coefficients(raw)
        sums = staple_sums(u, self.mu, self.loops, self.group)
        return sum(c[k].astype(s.real.dtype) * s for k, s in enumerate(sums))

    def _g_and_logj(self, ul: Array, sigma: Array) -> tuple[Array, Array]:
        """Algebra element ``g`` and per-link ``log J`` for links ``ul`` with effective staple ``sigma``."""
        g = self.group
        w = g.mul(g.to_matrix(ul), sigma) if not g.is_abelian else jnp.exp(1j * ul) * sigma
        if g.is_abelian:
            return jnp.imag(w).astype(ul.dtype), jnp.log1p(jnp.real(w))
        gen = jnp.asarray(g.generators, w.dtype)
        x = g.project_algebra(w)
        # M^{ab} = coords P_TA(T^b W) = -2 tr(T^a P_TA(T^b W)) = -Re[tr(T^a T^b W) + tr(T^a W^dag T^b)]
        t_tw = jnp.einsum("aij,bjk,...ki->...ab", gen, gen, w)
        t_wt = jnp.einsum("aij,...jk,bki->...ab", gen, jnp.conj(jnp.swapaxes(w, -1, -2)), gen)
        m = -jnp.real(t_tw + t_wt)
        # (ad_g)_{ab} = coords([g, T^b])_a = -2 Re tr(T^a (g T^b - T^b g))
        ad = -2.0 * jnp.real(jnp.einsum("aij,...jk,bki->...ab", gen, x, gen)
                             - jnp.einsum("aij,bjk,...ki->...ab", gen, gen, x))
        # F(ad) = (1 - e^{-ad}) / ad = sum_k (-ad)^k / (k+1)!   (|ad| <~ 2: 18 terms reach 1e-16)
        n = g.n_generators
        eye = jnp.eye(n, dtype=m.dtype)
        term = eye
        f = eye
        for k in range(1, 18):
            term = -jnp.einsum("...ab,...bc->...ac", term, ad) / (k + 1)
            f = f + term
        jac = eye + jnp.einsum("...ab,...bc->...ac", f, m)
        _, logdet = jnp.linalg.slogdet(jac)
        return x, logdet

    def forward(self, raw: Array, mask: Array, u: Array) -> tuple[Array, Array]:
        """``(U', log J)`` for active sites ``mask`` (bool, lattice shape); ``log J`` has the batch shape."""
        g = self.group
        ul = lattice.link(u, self.mu, g)
        sigma = self._sigma(u, raw)
        x, logj = self._g_and_logj(ul, sigma)
        new = g.exp_left(x, ul)
        sel = mask.reshape(mask.shape + (1,) * g.elem_ndim)
        new = jnp.where(sel, new, ul)
        logj = accumulate(jnp.where(mask, logj, 0.0), tuple(range(-self.ndim, 0)))
        return _set_link(u, self.mu, new, g), logj

    def reverse(self, raw: Array, mask: Array, u_new: Array, tol: float = INVERSE_TOL,
                max_iter: int = 1000) -> tuple[Array, Array]:
        """Inverse by fixed-point iteration; returns ``(U, -log J_forward(U))``."""
        g = self.group
        ul_new = lattice.link(u_new, self.mu, g)
        sigma = self._sigma(u_new, raw)  # staples involve frozen links only: the same before and after
        sel = mask.reshape(mask.shape + (1,) * g.elem_ndim)

        def body(state):  # noqa: ANN001, ANN202
            ul, _, it = state
            x, _ = self._g_and_logj(ul, sigma)
            nxt = g.exp_left(-x, ul_new)
            nxt = jnp.where(sel, nxt, ul_new)
            return nxt, jnp.max(jnp.abs(nxt - ul)), it + 1

        def cond(state):  # noqa: ANN001, ANN202
            _, delta, it = state
            return (delta > tol) & (it < max_iter)

        init = (ul_new, jnp.asarray(jnp.inf, ul_new.real.dtype), 0)
        ul, _, _ = jax.lax.while_loop(cond, body, init)
        if not g.is_abelian:
            ul = jnp.where(sel, g.normalize(ul), ul_new)
        _, logj = self._g_and_logj(ul, sigma)
        logj = accumulate(jnp.where(mask, logj, 0.0), tuple(range(-self.ndim, 0)))
        return _set_link(u_new, self.mu, ul, g), -logj


def _set_link(u: Array, mu: int, value: Array, group: Group) -> Array:
    axis = u.ndim - 1 - group.elem_ndim
    idx = [slice(None)] * u.ndim
    idx[axis] = mu
    return u.at[tuple(idx)].set(value)


@dataclass(frozen=True)
class Flow:
    """``n_sweeps`` sweeps; in each, for every direction ``mu``, one layer per mask of
    :func:`~corrflow.flows.staples.layer_masks` (static structure).

    Parameters are one array of raw coefficients, shape ``(n_sweeps, d, n_masks, K)`` (``K`` loop
    shapes), see :meth:`init_params`.  Layers of one direction share a compiled body (``lax.scan`` over
    masks) and sweeps share one too (``lax.scan`` over sweeps), so compile time does not grow with depth.
    """

    group: Group
    shape: tuple[int, ...]
    loops: tuple[str, ...]
    n_sweeps: int = 1

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def layers(self) -> tuple[ResidualLayer, ...]:
        """One :class:`ResidualLayer` per direction (the masks are data)."""
        return tuple(ResidualLayer(self.group, self.shape, mu, self.loops) for mu in range(self.ndim))

    def masks(self) -> np.ndarray:
        """``(d, n_masks, *shape)`` boolean array of active sites."""
        return np.stack([np.stack(layer_masks(self.shape, mu, self.loops)) for mu in range(self.ndim)])

    @property
    def n_layers(self) -> int:
        return self.n_sweeps * int(np.prod(self.masks().shape[:2]))

    def init_params(self, scale: float = 0.0, key: Array | None = None) -> Array:
        """Raw parameters ``(n_sweeps, d, n_masks, K)``; ``scale = 0`` gives the identity map."""
        shp = (self.n_sweeps, self.ndim, self.masks().shape[1], len(self.loops))
        if key is None or scale == 0.0:
            return jnp.zeros(shp)
        return scale * jax.random.normal(key, shp)

    def _check(self, params: Array) -> None:
        shp = (self.n_sweeps, self.ndim, self.masks().shape[1], len(self.loops))
        if tuple(params.shape) != shp:
            raise ValueError(f"flow parameters have shape {tuple(params.shape)}, expected {shp} "
                             "(n_sweeps, d, n_masks, n_loops)")

    def _sweeps(self, params: Array, u: Array, inverse: bool) -> tuple[Array, Array]:
        """Apply all layers (``inverse=False``) or their inverses in reverse order; sum the log-Jacobians."""
        self._check(params)
        masks = jnp.asarray(self.masks())
        layers = self.layers
        batch = u.shape[: u.ndim - self.ndim - 1 - self.group.elem_ndim]
        order = list(reversed(range(self.ndim))) if inverse else list(range(self.ndim))

        def sweep(carry, p_sweep):  # noqa: ANN001, ANN202
            for mu in order:
                apply = layers[mu].reverse if inverse else layers[mu].forward

                def one(c, pm, apply=apply):  # noqa: ANN001, ANN202
                    u_, t_ = c
                    u_, lj = apply(pm[0], pm[1], u_)
                    return (u_, t_ + lj), None

                carry, _ = jax.lax.scan(one, carry, (p_sweep[mu], masks[mu]), reverse=inverse)
            return carry, None

        (u, total), _ = jax.lax.scan(sweep, (u, jnp.zeros(batch, u.real.dtype)), params, reverse=inverse)
        return u, total

    def forward(self, params: Array, u: Array) -> tuple[Array, Array]:
        """``(f(U), log J_f(U))``; ``U`` may carry batch axes; ``log J`` has the batch shape."""
        return self._sweeps(params, u, inverse=False)

    def reverse(self, params: Array, u: Array) -> tuple[Array, Array]:
        """``(f^{-1}(U'), log J_{f^{-1}}(U'))`` with ``log J_{f^{-1}} = -log J_f`` at the preimage."""
        return self._sweeps(params, u, inverse=True)

    def with_shape(self, shape: Sequence[int]) -> "Flow":
        """The same flow on another lattice (volume transfer: parameters are translation invariant)."""
        return make_flow(self.group, shape, loops=self.loops, n_sweeps=self.n_sweeps)

    def describe(self) -> dict[str, Any]:
        """JSON-able structure (for checkpoints)."""
        return {"group": self.group.name, "shape": list(self.shape), "loops": list(self.loops),
                "n_sweeps": self.n_sweeps, "n_layers": self.n_layers}


def make_flow(group: Group | str, shape: Sequence[int], *, loops: Sequence[str] = ("plaquette",),
              n_sweeps: int = 1) -> Flow:
    """A flow that updates every link ``n_sweeps`` times: for each sweep, each direction ``mu`` and each
    of its masks (:func:`~corrflow.flows.staples.layer_masks`), one layer."""
    group = get_group(group)
    shape = lattice.validate_shape(shape)
    loops = tuple(loops)
    for lp in loops:
        if lp not in LOOPS:
            raise ValueError(f"unknown loop shape {lp!r}; allowed: {', '.join(LOOPS)}")
    if n_sweeps < 1:
        raise ValueError(f"n_sweeps must be >= 1, got {n_sweeps}")
    for mu in range(len(shape)):
        layer_masks(shape, mu, loops)  # validates the extents
    return Flow(group, shape, loops, int(n_sweeps))
