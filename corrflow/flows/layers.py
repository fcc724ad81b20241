"""Masked gauge-equivariant residual layers and flows built from them.

Layer (docs/physics.md section 4).  For the active links ``l = (x, mu)`` of a mask::

    U'_l = exp(g_l) U_l,   g_l = P_TA[ U_l Sigma_l ],   Sigma_l = sum_k c_k Sigma^(k)_l

where ``Sigma^(k)_l`` is the staple sum of loop shape ``k`` (:mod:`corrflow.flows.staples`), built only from
frozen links, and ``c_k`` are the layer's coefficients (U(1): ``theta' = theta + Im(e^{i theta} Sigma)``).
``g_l`` is the gradient of the gauge-invariant potential ``-Re tr(U_l Sigma_l)`` times ``c_k``, so the
layer is gauge equivariant: ``f(U^Omega) = f(U)^Omega``.

Coefficients (``degree``):

* ``degree = 0``: ``c_k = b_k tanh(a_k)``, one learned constant per loop shape (raw parameters ``a_k``);
* ``degree = p > 0``: ``c_k(l) = b_k tanh( sum_{j<=p} a_kj P_j(2 q_k(l) - 1) )``, a function of the
  normalised staple norm ``q_k(l) = tr(Sigma^(k)_l^dag Sigma^(k)_l) / (N n_k^2)`` in ``[0, 1]`` (U(1):
  ``|Sigma^(k)_l|^2 / n_k^2``), ``P_j`` the Legendre polynomials.  ``q_k`` is gauge invariant and built from
  frozen links only, so equivariance, the block-diagonal Jacobian and its per-link formula are unchanged (``c``
  is a constant for the link it moves).  Physically: given its staple, a link's conditional distribution
  ``exp(beta/N Re tr U Sigma)`` depends on the staple only through such invariants, so the best local map
  between two couplings depends on them too.  ``a_k0`` alone reproduces ``degree = 0``.

* ``net_width = w > 0``: one coefficient per *individual* staple and site, ``c_j(x) = (0.95 / n_S) tanh(o_j(x))``,
  from a periodic CNN (equinox) of gauge-invariant features of the frozen links (:mod:`corrflow.flows.network`);
* ``smear = s > 0`` (``d >= 3``): each loop shape also enters with its staples built from transverse links after
  ``s`` stout steps inside the planes without ``mu`` (all frozen), with their own constants
  (:func:`~corrflow.flows.staples.transverse_smear`).
* ``smoothing = (t_1, ..., t_K)`` (SU(2), SU(3)): held-out smoothing terms ``-sum_k c_k B_k^dag``, the active link
  moved towards the Wilson-flowed links of the configuration with the active links replaced by their staple
  projection (frozen links only; :mod:`corrflow.flows.smoothing`), one unbounded constant ``c_k`` per time; the
  whole effective staple is then bounded by :func:`~corrflow.flows.smoothing.soft_clip` instead of the bounds below.

Invertibility: ``|c_k| <= b_k`` with bounds ``b_k = 0.95 / (K n_k)`` (``n_k`` staples of shape k per link,
``K`` shapes), so ``sum_k |c_k| n_k < 0.95``: the update is a contraction in ``U_l``, its Jacobian is
positive, and :meth:`ResidualLayer.reverse` inverts it by the fixed-point iteration
``U_l <- exp(-g(U_l)) U'_l``.

Jacobian (Haar measure, right-trivialised coordinates ``U -> e^{w^a T^a} U``): the layer is block
diagonal over active links, and per link ``J_l = det[1 + ((1 - e^{-ad g}) / ad g) M]`` with
``M^{ab} = d g^a / d w^b = coords P_TA(T^b W)``, ``W = U_l Sigma_l`` (U(1): ``J_l = 1 + Re W``).
The ``(N^2-1) x (N^2-1)`` determinants use an unrolled LU in plain XLA (no LAPACK: batched LAPACK calls
inside jit/scan can deadlock jaxlib 0.10 on CPU); ``J_l > 0`` because the update is a contraction.

Cost: a layer gathers only its active links and the links of their staples from the flattened field,
computes ``g`` and ``J`` there, and scatters the updated links back, so a layer costs in proportion to its
active links (1/2 of a direction for plaquette masks, 1/8 with rectangles), not to the volume.

A :class:`Flow` is a sequence of layers (static structure) with one parameter array
``(n_sweeps, d, n_masks, K)`` (``degree = 0``) or ``(n_sweeps, d, n_masks, K, degree + 1)``:
``forward(params, U) -> (U', log J)`` and
``reverse(params, U') -> (U, log J_inverse)`` with ``log J_inverse(U') = -log J_forward(U)``.
Everything works on batches (leading axes) and any dimension; parameters are translation invariant,
so a flow trained on one volume applies to any other volume with compatible extents.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..groups import Group
from ..theories.gauge import accumulate
from .jacobian import algebra_and_logj
from .network import coefficient_net, frozen_features
from .smoothing import held_out_flow, soft_clip
from .spec import MAX_DEGREE
from .staples import (GatherPlan, gather_plan, gathered_staple_sums, gathered_staples, layer_masks, n_staples,
                      transverse_smear)

Array = jax.Array

__all__ = ["ResidualLayer", "Flow", "INVERSE_TOL", "MAX_DEGREE", "SMOOTHING_SCALE"]

INVERSE_TOL = 1e-12  # fixed-point tolerance (max abs change of a link element) in float64
_BOUND_TOTAL = 0.95
SMOOTHING_SCALE = 0.1  # raw parameter -> smoothing coefficient c_k (unbounded; soft_clip bounds the staple)


@dataclass(frozen=True)
class ResidualLayer:
    """Residual update of the links in direction ``mu`` with the given loop shapes (static); the active
    sites are passed at call time (so layers differing only in their mask share one compiled body).

    The active sites may be given as a boolean site mask (lattice shape; must be concrete) or as an integer
    array of flat (row-major) site indices (may be traced; this is what :class:`Flow` passes).  Only the
    active links are touched: their staples are gathered (:func:`~corrflow.flows.staples.staple_sums_at`),
    their ``g`` and Jacobians computed, and the results scattered back.
    """

    group: Group
    shape: tuple[int, ...]
    mu: int
    loops: tuple[str, ...] = ("plaquette",)
    degree: int = 0
    net_width: int = 0
    net_depth: int = 2
    smear: int = 0
    smear_rho: float = 0.1
    smoothing: tuple[float, ...] = ()
    smoothing_eps: float = 0.05

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def n_staple_shapes(self) -> int:
        """Staple coefficients per layer: one per loop shape, twice that with smeared staples."""
        return len(self.loops) * (2 if self.smear else 1)

    @property
    def n_shapes(self) -> int:
        """Coefficients per layer (``degree = 0``): the staple shapes' and one per smoothing time."""
        return self.n_staple_shapes + len(self.smoothing)

    @property
    def n_staples_total(self) -> int:
        """``n_S``: individual staples of all loop shapes per link (outputs of a coefficient network)."""
        return sum(n_staples(lp, self.ndim) for lp in self.loops)

    def bounds(self) -> np.ndarray:
        """``b_k``: ``sum_k b_k n_k = 0.95`` (over the loop shapes, and their smeared copies when ``smear > 0``)."""
        k = self.n_staple_shapes
        loops = self.loops * (2 if self.smear else 1)
        return np.array([_BOUND_TOTAL / (k * n_staples(lp, self.ndim)) for lp in loops])

    def coefficients(self, raw: Array) -> Array:
        """Constant coefficients ``c_k = b_k tanh(a_k)`` from raw parameters ``(K,)`` (``degree = 0``)."""
        return jnp.asarray(self.bounds(), raw.dtype) * jnp.tanh(raw)

    def staple_norm(self, sigma_k: Array, k: int) -> Array:
        """``q_k = tr(Sigma^dag Sigma) / (N n_k^2)`` in ``[0, 1]`` of staple sums ``(*batch, n[, N, N])`` of loop
        shape ``k`` (gauge invariant); shape ``(*batch, n)``."""
        g = self.group
        axes = tuple(range(-g.elem_ndim, 0)) if g.elem_ndim else ()
        sq = jnp.abs(sigma_k) ** 2
        sq = jnp.sum(sq, axis=axes) if axes else sq
        return sq / (g.N * n_staples(self.loops[k], self.ndim) ** 2)

    # --- flat layout helpers ---------------------------------------------------------------
    def _flatten(self, u: Array) -> tuple[Array, int]:
        """``(*batch, L..., d, *elem) -> (*batch, V d, *elem)`` and the number of batch axes."""
        g = self.group
        nb = u.ndim - self.ndim - 1 - g.elem_ndim
        if nb < 0 or tuple(u.shape[nb:nb + self.ndim]) != tuple(self.shape):
            raise ValueError(f"links of shape {tuple(u.shape)} do not fit the layer's lattice {self.shape}")
        return u.reshape(u.shape[:nb] + (-1,) + tuple(g.elem_shape)), nb

    def _sites(self, mask: Array) -> Array:
        """Flat active-site indices from a boolean site mask (concrete) or pass integer indices through."""
        if jnp.issubdtype(jnp.asarray(mask).dtype, jnp.integer):
            return jnp.asarray(mask, jnp.int32).reshape(-1)
        if isinstance(mask, jax.core.Tracer):
            raise TypeError("a traced boolean mask cannot select sites (its size is dynamic); pass flat site "
                            "indices instead, e.g. np.flatnonzero(mask)")
        m = np.asarray(mask, bool)
        if m.shape != tuple(self.shape):
            raise ValueError(f"mask has shape {m.shape}, expected the lattice shape {self.shape}")
        return jnp.asarray(np.flatnonzero(m.reshape(-1)), jnp.int32)

    def _plan(self, mu: Any = None, offsets: Any = None, nus: Any = None) -> tuple[Any, GatherPlan]:
        """``(mu, plan)``: this layer's static direction and gather plan, or the given (traced) direction with the
        plan's ``offsets``/``nus`` replaced by the given (traced) ones of that direction (the static parts of a
        :class:`~corrflow.flows.staples.GatherPlan` are the same for all directions)."""
        plan = gather_plan(self.mu, self.ndim, tuple(self.loops))
        if mu is None:
            return self.mu, plan
        return mu, plan._replace(offsets=offsets, nus=nus)

    def _sigma(self, u_flat: Array, sites: Array, raw: Array, plan: GatherPlan, mu: Any = None) -> Array:
        """``Sigma_l = sum_k c_k Sigma^(k)_l`` (matrix form) at the active sites ``(*batch, n, ...)``; ``raw`` is
        ``(K,)`` or ``(K, degree + 1)`` (or flat), or the flat parameters of the coefficient network."""
        if self.net_width:
            return self._sigma_net(u_flat, sites, raw, plan, self.mu if mu is None else mu)
        sums = gathered_staple_sums(u_flat, sites, plan, self.group, self.shape)
        if self.smear:
            smeared = transverse_smear(u_flat, self.mu if mu is None else mu, self.group, self.shape, self.smear_rho,
                                       self.smear)
            sums = sums + gathered_staple_sums(smeared, sites, plan, self.group, self.shape)
        raw = jnp.reshape(raw, (self.n_shapes, self.degree + 1))
        if self.degree == 0:
            c = self.coefficients(raw[: self.n_staple_shapes, 0])
            out = sum(c[k].astype(s.real.dtype) * s for k, s in enumerate(sums))
            if self.smoothing:
                out = self._smoothing_sigma(out, u_flat, sites, raw[self.n_staple_shapes:, 0],
                                            sums[self.loops.index("plaquette")], self.mu if mu is None else mu)
            return out
        b = self.bounds()
        out = 0.0
        for k, s in enumerate(sums):
            x = 2.0 * self.staple_norm(s, k) - 1.0
            c = b[k] * jnp.tanh(_legendre_series(raw[k].astype(x.dtype), x))
            out = out + c.reshape(c.shape + (1,) * (s.ndim - c.ndim)).astype(s.real.dtype) * s
        return out

    def _smoothing_sigma(self, sigma: Array, u_flat: Array, sites: Array, raw: Array, plaquette_sums: Array,
                         mu: Any) -> Array:
        """``soft_clip(sigma - sum_k c_k B_k^dag)`` with ``c_k = SMOOTHING_SCALE raw_k`` and ``B_k`` the telescoped
        held-out flowed links (:mod:`corrflow.flows.smoothing`)."""
        g = self.group
        vs = held_out_flow(u_flat, sites * self.ndim + mu, plaquette_sums, g, self.shape, self.smoothing,
                           self.smoothing_eps)
        c = SMOOTHING_SCALE * raw.astype(sigma.real.dtype)
        for k, v in enumerate(vs):
            b = v if k == 0 else v - vs[k - 1]
            sigma = sigma - c[k] * g.adj(b)
        return soft_clip(sigma)

    def _sigma_net(self, u_flat: Array, sites: Array, raw: Array, plan: GatherPlan, mu: Any) -> Array:
        """``Sigma_l = sum_j c_j(x) S_j(x)`` over the individual staples, ``c`` from the coefficient network of
        :mod:`corrflow.flows.network` fed with frozen features."""
        g = self.group
        nb = u_flat.ndim - 1 - g.elem_ndim
        staples = gathered_staples(u_flat, sites, plan, g, self.shape)
        feats = frozen_features(u_flat, sites, mu, staples[self.loops.index("plaquette")], g, self.shape)
        n_s = self.n_staples_total
        _, unravel, _ = coefficient_net(self.ndim, self.net_width, self.net_depth, n_s)
        net = unravel(raw)
        flat_feats = feats.reshape((-1,) + feats.shape[nb:])
        out = jax.vmap(net)(flat_feats).reshape(feats.shape[:nb] + (n_s, -1))
        out = jnp.take(out, sites, axis=nb + 1)  # (*batch, n_S, n)
        c = (_BOUND_TOTAL / n_s) * jnp.tanh(out)
        s_all = jnp.concatenate(staples, axis=nb)  # (*batch, n_S, n, ...)
        c = c.reshape(c.shape + (1,) * (s_all.ndim - c.ndim)).astype(s_all.real.dtype)
        return jnp.sum(c * s_all, axis=nb)

    # --- per-link algebra element and Jacobian ---------------------------------------------
    def _algebra(self, ul: Array, sigma: Array) -> Array:
        """``g = P_TA(U_l Sigma_l)`` (U(1): ``Im(e^{i theta} Sigma)``)."""
        g = self.group
        if g.is_abelian:
            return jnp.imag(jnp.exp(1j * ul) * sigma).astype(ul.dtype)
        return g.project_algebra(g.mul(ul, sigma))

    def _g_and_logj(self, ul: Array, sigma: Array) -> tuple[Array, Array]:
        """Algebra element ``g`` and per-link ``log J`` for links ``ul`` with effective staple ``sigma``
        (U(1): ``Im W``, ``log(1 + Re W)`` with ``W = e^{i theta} Sigma``; SU(N): :func:`.jacobian.algebra_and_logj`)."""
        g = self.group
        if g.is_abelian:
            w = jnp.exp(1j * ul) * sigma
            return jnp.imag(w).astype(ul.dtype), jnp.log1p(jnp.real(w))
        return algebra_and_logj(g, g.mul(ul, sigma))

    # --- layer on the flat link field (used by Flow) ---------------------------------------
    def forward_flat(self, raw: Array, sites: Array, u_flat: Array, mu: Any = None, offsets: Any = None,
                     nus: Any = None) -> tuple[Array, Array]:
        """:meth:`forward` on the flattened field ``(*batch, V d, *elem)`` with flat active sites ``sites``.
        ``mu``, ``offsets``, ``nus`` (a :class:`~corrflow.flows.staples.GatherPlan`'s, may be traced) apply the
        layer to another direction than ``self.mu``: :class:`Flow` runs every direction through one body."""
        g = self.group
        nb = u_flat.ndim - 1 - g.elem_ndim
        mu, plan = self._plan(mu, offsets, nus)
        links = sites * self.ndim + mu
        ul = jnp.take(u_flat, links, axis=nb, mode="clip")
        x, logj = self._g_and_logj(ul, self._sigma(u_flat, sites, raw, plan, mu))
        new = g.exp_left(x, ul)
        return _scatter(u_flat, links, new, nb), accumulate(logj, -1)

    def reverse_flat(self, raw: Array, sites: Array, u_flat: Array, mu: Any = None, offsets: Any = None,
                     nus: Any = None, tol: float | None = None, max_iter: int = 1000) -> tuple[Array, Array]:
        """:meth:`reverse` on the flattened field (arguments as :meth:`forward_flat`)."""
        g = self.group
        nb = u_flat.ndim - 1 - g.elem_ndim
        mu, plan = self._plan(mu, offsets, nus)
        links = sites * self.ndim + mu
        ul_new = jnp.take(u_flat, links, axis=nb, mode="clip")
        # staples involve frozen links only: the same before and after the layer
        sigma = self._sigma(u_flat, sites, raw, plan, mu)
        rdt = jnp.finfo(ul_new.real.dtype)
        if tol is None:
            tol = INVERSE_TOL if rdt.bits == 64 else 32 * float(rdt.eps)

        def body(state):  # noqa: ANN001, ANN202
            ul, _, it = state
            nxt = g.exp_left(-self._algebra(ul, sigma), ul_new)
            return nxt, jnp.max(jnp.abs(nxt - ul)), it + 1

        def cond(state):  # noqa: ANN001, ANN202
            _, delta, it = state
            return (delta > tol) & (it < max_iter)

        init = (ul_new, jnp.asarray(jnp.inf, ul_new.real.dtype), 0)
        ul, _, _ = jax.lax.while_loop(cond, body, init)
        if not g.is_abelian:
            ul = g.normalize(ul)
        _, logj = self._g_and_logj(ul, sigma)
        return _scatter(u_flat, links, ul, nb), -accumulate(logj, -1)

    # --- public API on the lattice layout ---------------------------------------------------
    def forward(self, raw: Array, mask: Array, u: Array) -> tuple[Array, Array]:
        """``(U', log J)`` for active sites ``mask`` (see class docstring); ``log J`` has the batch shape."""
        flat, _ = self._flatten(u)
        out, logj = self.forward_flat(raw, self._sites(mask), flat)
        return out.reshape(u.shape), logj

    def reverse(self, raw: Array, mask: Array, u_new: Array, tol: float | None = None,
                max_iter: int = 1000) -> tuple[Array, Array]:
        """Inverse by the fixed-point iteration ``U_l <- exp(-g(U_l)) U'_l`` (to ``tol``: max abs change of a
        link element; default 1e-12 in float64, ``32 eps`` in lower precision); returns ``(U, -log J_forward(U))``."""
        flat, _ = self._flatten(u_new)
        out, logj = self.reverse_flat(raw, self._sites(mask), flat, tol=tol, max_iter=max_iter)
        return out.reshape(u_new.shape), logj


def _legendre_series(a: Array, x: Array) -> Array:
    """``sum_j a_j P_j(x)`` (Legendre polynomials, three-term recurrence) for coefficients ``a`` ``(p + 1,)``."""
    p_prev, p_cur = jnp.ones_like(x), x
    out = a[0] * p_prev
    for j in range(1, a.shape[0]):
        out = out + a[j] * p_cur
        p_prev, p_cur = p_cur, ((2 * j + 1) * x * p_cur - j * p_prev) / (j + 1)
    return out


def _scatter(u_flat: Array, links: Array, value: Array, nb: int) -> Array:
    """``u_flat`` with the links ``links`` (sorted, unique flat link indices) replaced by ``value``."""
    return u_flat.at[(slice(None),) * nb + (links,)].set(value, indices_are_sorted=True, unique_indices=True)


@dataclass(frozen=True)
class Flow:
    """``n_sweeps`` sweeps; in each, for every direction ``mu``, one layer per mask of
    :func:`~corrflow.flows.staples.layer_masks` (static structure).

    Parameters are one array of raw coefficients, shape :attr:`param_shape`: ``(n_sweeps, d, n_masks, K)``
    (``K`` loop shapes) for constant coefficients, ``(n_sweeps, d, n_masks, K, degree + 1)`` for coefficients
    that are polynomials of the staple norm (module docstring); see :meth:`init_params`.  All layers share one
    compiled body (``lax.scan`` over the ``d * n_masks`` layers of a sweep, with direction, active sites and
    staple gather plan as data, inside a ``lax.scan`` over sweeps), so compile time grows neither with depth nor
    with the dimension.
    """

    group: Group
    shape: tuple[int, ...]
    loops: tuple[str, ...]
    n_sweeps: int = 1
    degree: int = 0
    net_width: int = 0
    net_depth: int = 2
    smear: int = 0
    smear_rho: float = 0.1
    smoothing: tuple[float, ...] = ()
    smoothing_eps: float = 0.05

    kind = "residual"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def layers(self) -> tuple[ResidualLayer, ...]:
        """One :class:`ResidualLayer` per direction (the masks are data)."""
        return tuple(self._layer(mu) for mu in range(self.ndim))

    def _layer(self, mu: int) -> ResidualLayer:
        return ResidualLayer(self.group, self.shape, mu, self.loops, self.degree, self.net_width, self.net_depth,
                             self.smear, self.smear_rho, self.smoothing, self.smoothing_eps)

    @property
    def n_net_params(self) -> int:
        """Parameters of one layer's coefficient network (0 without one)."""
        if not self.net_width:
            return 0
        n_s = sum(n_staples(lp, self.ndim) for lp in self.loops)
        return coefficient_net(self.ndim, self.net_width, self.net_depth, n_s)[0]

    @property
    def param_shape(self) -> tuple[int, ...]:
        """``(n_sweeps, d, n_masks, K)``, with a trailing ``degree + 1`` when ``degree > 0``; with a coefficient
        network ``(n_sweeps, d, n_masks, n_net_params)`` (each layer's network weights, flattened)."""
        shp = (self.n_sweeps, self.ndim, self.masks().shape[1])
        if self.net_width:
            return shp + (self.n_net_params,)
        return shp + (self._layer(0).n_shapes,) + ((self.degree + 1,) if self.degree else ())

    def masks(self) -> np.ndarray:
        """``(d, n_masks, *shape)`` boolean array of active sites."""
        return np.stack([np.stack(layer_masks(self.shape, mu, self.loops)) for mu in range(self.ndim)])

    @property
    def n_layers(self) -> int:
        return self.n_sweeps * int(np.prod(self.masks().shape[:2]))

    def init_params(self, scale: float = 0.0, key: Array | None = None) -> Array:
        """Raw parameters :attr:`param_shape`; ``scale = 0`` gives the identity map.  With a coefficient network the
        hidden layers are random (``key``, default ``PRNGKey(0)``) and the last layer zero (the identity map), plus
        ``scale`` times standard normal noise on every parameter when ``scale > 0``."""
        from .build import check_init_scale

        check_init_scale(scale)
        shp = self.param_shape
        if self.net_width:
            key = jax.random.PRNGKey(0) if key is None else key
            n_s = sum(n_staples(lp, self.ndim) for lp in self.loops)
            init_flat = coefficient_net(self.ndim, self.net_width, self.net_depth, n_s)[2]
            n_layers = int(np.prod(shp[:-1]))
            p = jnp.stack([init_flat(jax.random.fold_in(key, i)) for i in range(n_layers)]).reshape(shp)
            if scale:
                p = p + scale * jax.random.normal(jax.random.fold_in(key, 10**6), shp)
            return p
        if key is None or scale == 0.0:
            return jnp.zeros(shp)
        return scale * jax.random.normal(key, shp)

    def _check(self, params: Array) -> None:
        shp = self.param_shape
        if tuple(params.shape) != shp:
            last = "n_net_params" if self.net_width else "n_loops" + (", degree + 1" if self.degree else "")
            raise ValueError(f"flow parameters have shape {tuple(params.shape)}, expected {shp} "
                             f"(n_sweeps, d, n_masks, {last})")

    def sites(self) -> np.ndarray:
        """``(d, n_masks, n_active)`` int32 flat (row-major) indices of the active sites of every layer."""
        return _site_table(tuple(self.shape), tuple(self.loops))

    def _sweeps(self, params: Array, u: Array, inverse: bool) -> tuple[Array, Array]:
        """Apply all layers (``inverse=False``) or their inverses in reverse order; sum the log-Jacobians.

        The link field is flattened once to ``(*batch, V d, *elem)``; :meth:`scan_layers` runs the layers."""
        self._check(params)
        layer = self._layer(0)
        flat, nb = layer._flatten(u)

        def one(c: tuple[Array, Array], xs: tuple[Any, ...]) -> tuple[Array, Array]:
            u_, t_ = c
            raw, st, mu, off, nus = xs
            if inverse:
                u_, lj = layer.reverse_flat(raw, st, u_, mu, off, nus)
            else:
                u_, lj = layer.forward_flat(raw, st, u_, mu, off, nus)
            return u_, t_ + lj

        flat, total = self.scan_layers(params, (flat, self.logj_zeros(u, nb)), one, reverse=inverse)
        return flat.reshape(u.shape), total

    def scan_layers(self, params: Array, carry: Any, body: Callable[[Any, tuple[Any, ...]], Any],
                    reverse: bool = False) -> Any:
        """Fold ``body(carry, xs) -> carry`` over every layer of every sweep (in reverse order with ``reverse``),
        ``xs = (raw, sites, mu, offsets, nus)``: the layer's raw parameters, flat active sites, direction and
        gather plan, the arguments of :meth:`ResidualLayer.forward_flat` / ``reverse_flat`` around the links (one
        compiled body for all layers, class docstring)."""
        d = self.ndim
        n_masks = params.shape[2]
        sites = self.sites()
        plans = [gather_plan(mu, d, tuple(self.loops)) for mu in range(d)]
        rep = lambda a: np.repeat(np.asarray(a), n_masks, axis=0)  # noqa: E731  (per direction -> per layer)
        xs_static = (jnp.asarray(sites.reshape((d * n_masks,) + sites.shape[2:])),
                     jnp.asarray(rep(np.arange(d, dtype=np.int32))),
                     tuple(jnp.asarray(rep(np.stack([p.offsets[k] for p in plans]))) for k in range(len(self.loops))),
                     tuple(jnp.asarray(rep(np.stack([p.nus[k] for p in plans]))) for k in range(len(self.loops))))

        def sweep(c: Any, p_sweep: Array) -> tuple[Any, None]:
            one = lambda c_, xs: (body(c_, xs), None)  # noqa: E731
            return jax.lax.scan(one, c, (p_sweep.reshape(d * n_masks, -1),) + xs_static, reverse=reverse)[0], None

        return jax.lax.scan(sweep, carry, params, reverse=reverse)[0]

    @staticmethod
    def logj_zeros(u: Array, nb: int) -> Array:
        """Zero log-Jacobians of the batch shape ``u.shape[:nb]`` (float64 under x64, else the links' real type)."""
        return jnp.zeros(u.shape[:nb], jnp.float64 if jax.config.jax_enable_x64 else u.real.dtype)

    def forward(self, params: Array, u: Array) -> tuple[Array, Array]:
        """``(f(U), log J_f(U))``; ``U`` may carry batch axes; ``log J`` has the batch shape."""
        return self._sweeps(params, u, inverse=False)

    def reverse(self, params: Array, u: Array) -> tuple[Array, Array]:
        """``(f^{-1}(U'), log J_{f^{-1}}(U'))`` with ``log J_{f^{-1}} = -log J_f`` at the preimage."""
        return self._sweeps(params, u, inverse=True)

    def with_shape(self, shape: Sequence[int]) -> "Flow":
        """The same flow on another lattice (volume transfer: parameters are translation invariant)."""
        from .build import make_flow

        return make_flow(self.group, shape, loops=self.loops, n_sweeps=self.n_sweeps, degree=self.degree,
                         net_width=self.net_width, net_depth=self.net_depth, smear=self.smear, smear_rho=self.smear_rho,
                         smoothing=self.smoothing, smoothing_eps=self.smoothing_eps)

    def describe(self) -> dict[str, Any]:
        """JSON-able structure (for checkpoints); ``degree`` only when > 0, so constant-coefficient flows keep the
        description (and checkpoint ids) they had before coefficient functions existed."""
        d = {"group": self.group.name, "shape": list(self.shape), "loops": list(self.loops),
             "n_sweeps": self.n_sweeps, "n_layers": self.n_layers}
        if self.degree:
            d["degree"] = self.degree
        if self.net_width:
            d["net_width"], d["net_depth"] = self.net_width, self.net_depth
        if self.smear:
            d["smear"], d["smear_rho"] = self.smear, self.smear_rho
        if self.smoothing:
            d["smoothing"], d["smoothing_eps"] = list(self.smoothing), self.smoothing_eps
        return d


@lru_cache(maxsize=64)
def _site_table(shape: tuple[int, ...], loops: tuple[str, ...]) -> np.ndarray:
    table = []
    for mu in range(len(shape)):
        table.append(np.stack([np.flatnonzero(m.reshape(-1)) for m in layer_masks(shape, mu, loops)]))
    out = np.stack(table).astype(np.int32)
    out.setflags(write=False)
    return out
