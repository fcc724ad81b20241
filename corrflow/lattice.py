"""Lattice geometry in any dimension: shifts, plaquettes, staples, Wilson and Polyakov loops, masks.

Array layout (used everywhere in corrflow)
-------------------------------------------
* A **link field** has shape ``(*batch, L_0, ..., L_{d-1}, d, *elem)``: ``U[..., x_0, ..., x_{d-1}, mu]``
  is the link ``U_mu(x)`` from site ``x`` to ``x + mu_hat``; ``elem`` is ``()`` for U(1) angles and
  ``(N, N)`` for SU(N).  Direction ``mu = 0`` is (Euclidean) time.
* A **site field** has shape ``(*batch, L_0, ..., L_{d-1}, *elem)``.
* Boundary conditions are periodic.  ``shift(f, mu, n)(x) = f(x + n mu_hat)``.
* ``P_{mu nu}(x) = U_mu(x) U_nu(x + mu) U_mu(x + nu)^dag U_nu(x)^dag`` (for U(1):
  ``theta_mu(x) + theta_nu(x+mu) - theta_mu(x+nu) - theta_nu(x)``); planes are ordered
  ``(0,1), (0,2), ..., (d-2, d-1)``.

Functions take the :class:`~corrflow.groups.Group` explicitly and never loop over sites: every
operation is a whole-array roll / product, so any number of leading batch axes works unchanged.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import combinations
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import native, pallas_force
from .groups import Group

Array = jax.Array

__all__ = [
    "validate_shape",
    "check_links",
    "planes",
    "shift",
    "link",
    "plaquette",
    "plaquettes",
    "staple",
    "staple_sum",
    "staple_force",
    "staple_force_xla",
    "staple_force_reference",
    "wall",
    "wilson_loop",
    "polyakov_loop",
    "checkerboard",
    "link_mask",
]


# ----------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------


def validate_shape(shape: Sequence[int], *, even: bool = False, name: str = "shape") -> tuple[int, ...]:
    """Check a lattice shape ``(L_0, ..., L_{d-1})``; return it as a tuple of ints.

    Raises ``ValueError`` naming the parameter for non-integer or non-positive extents, fewer
    than two dimensions, or (with ``even=True``) odd extents.
    """
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of positive integers like (16, 16); got {shape!r}") from None
    if any(int(s) != s for s in shape):  # reject 4.5 etc.
        raise ValueError(f"{name} must contain integers; got {shape!r}")
    if len(dims) < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (a plaquette needs two); got {shape!r}")
    bad = [s for s in dims if s < 1]
    if bad:
        raise ValueError(f"{name} must have positive extents; got {shape!r}")
    if even and any(s % 2 for s in dims):
        raise ValueError(f"{name} must have even extents for checkerboard masks; got {shape!r}")
    return dims


def lattice_shape(u: Array, group: Group) -> tuple[int, ...]:
    """The lattice extents ``(L_0, ..., L_{d-1})`` that a (batch of) link field(s) ``u`` claims: ``d`` read from its
    direction axis (the one before the group element's axes), then the ``d`` axes before it (fewer where ``u`` has
    fewer).  For :func:`check_links` where the lattice is not known otherwise (static shapes: no array work)."""
    s = tuple(u.shape)
    k = len(s) - 1 - group.elem_ndim
    return s[max(k - s[k], 0): k] if k >= 0 else ()


def check_links(u: Array, group: Group, shape: Sequence[int]) -> None:
    """Raise ``ValueError`` unless ``u`` is a link field of ``group`` on the lattice ``shape``.

    Accepts any number of leading batch axes.  Checks trailing axes and the dtype kind.
    """
    shape = tuple(shape)
    d = len(shape)
    expected_tail = shape + (d,) + tuple(group.elem_shape)
    u_shape = tuple(np.shape(u))
    if len(u_shape) < len(expected_tail) or u_shape[len(u_shape) - len(expected_tail):] != expected_tail:
        raise ValueError(
            f"links have shape {u_shape}; for group {group.name} on lattice {shape} the trailing axes must be "
            f"{expected_tail} = (L_0, ..., L_{{d-1}}, d{', N, N' if group.elem_ndim else ''}), after any batch axes"
        )
    kind = np.dtype(u.dtype if hasattr(u, "dtype") else np.asarray(u).dtype).kind  # no array conversion of tracers
    if group.elem_ndim == 0 and kind != "f":
        raise ValueError(f"U(1) links are real angles; got dtype {u.dtype}. Pass angles theta, not exp(i theta).")
    if group.elem_ndim == 2 and kind != "c":
        raise ValueError(f"{group.name} links must be complex matrices; got dtype {u.dtype}")


# ----------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------


def planes(d: int) -> list[tuple[int, int]]:
    """Ordered list of planes ``(mu, nu)`` with ``mu < nu`` in ``d`` dimensions."""
    return list(combinations(range(d), 2))


def _site_axis(mu: int, d: int, group: Group) -> int:
    return mu - d - group.elem_ndim


def shift(f: Array, mu: int, n: int, d: int, group: Group) -> Array:
    """Site field translated so that ``shift(f, mu, n)(x) = f(x + n mu_hat)`` (periodic)."""
    return jnp.roll(f, -n, axis=_site_axis(mu, d, group))


def link(u: Array, mu: int, group: Group) -> Array:
    """Site field ``U_mu(x)`` extracted from a link field."""
    return jax.lax.index_in_dim(u, mu, axis=u.ndim - 1 - group.elem_ndim, keepdims=False)


def _ndim(u: Array, group: Group) -> int:
    return u.shape[-1 - group.elem_ndim]


def plaquette(u: Array, mu: int, nu: int, group: Group) -> Array:
    """Plaquette field ``P_{mu nu}(x)`` (group elements), shape of a site field."""
    d = _ndim(u, group)
    um, un = link(u, mu, group), link(u, nu, group)
    a = group.mul(um, shift(un, mu, 1, d, group))
    b = group.mul(un, shift(um, nu, 1, d, group))
    return group.mul(a, group.adj(b))


def plaquettes(u: Array, group: Group) -> Array:
    """All plaquette fields stacked on a new axis in front of the site axes.

    Shape ``(*batch, n_planes, L_0, ..., L_{d-1}, *elem)`` with planes ordered as :func:`planes`.
    """
    d = _ndim(u, group)
    axis = -(d + group.elem_ndim) - 1
    return jnp.stack([plaquette(u, m, n, group) for m, n in planes(d)], axis=axis)


def staple(u: Array, mu: int, nu: int, group: Group) -> tuple[Array, Array]:
    """Upper and lower staples of link ``U_mu(x)`` in the plane ``(mu, nu)``, as group elements.

    ``upper(x) = U_nu(x+mu) U_mu(x+nu)^dag U_nu(x)^dag`` and
    ``lower(x) = U_nu(x+mu-nu)^dag U_mu(x-nu)^dag U_nu(x-nu)``, so that
    ``Re tr[U_mu(x) upper(x)] = Re tr P_{mu nu}(x)`` and ``Re tr[U_mu(x) lower(x)] = Re tr P_{mu nu}(x - nu)``.
    """
    d = _ndim(u, group)
    um, un = link(u, mu, group), link(u, nu, group)
    un_xmu = shift(un, mu, 1, d, group)
    upper = group.mul(group.mul(un_xmu, group.adj(shift(um, nu, 1, d, group))), group.adj(un))
    lower_at_x_plus_nu = group.mul(group.mul(group.adj(un_xmu), group.adj(um)), un)
    return upper, shift(lower_at_x_plus_nu, nu, -1, d, group)


def staple_sum(u: Array, mu: int, group: Group, weights: Array | None = None) -> Array:
    """Weighted staple sum ``Sigma_mu(x) = sum_{nu != mu} w_{mu nu} (upper + lower)`` in matrix form.

    Returned as complex numbers for U(1) (``exp(i angle)``) and complex ``(N, N)`` matrices for
    SU(N).  ``weights`` is an optional symmetric ``(d, d)`` array of plane weights (default 1).
    With it, ``sum_x Re tr[U_mu(x) Sigma_mu(x)] = 2 x (weighted plaquettes containing the
    links mu)`` summed appropriately; it is the quantity whose projection gives the Wilson force.
    """
    d = _ndim(u, group)
    total = 0.0
    for nu in range(d):
        if nu == mu:
            continue
        up, lo = staple(u, mu, nu, group)
        s = group.to_matrix(up) + group.to_matrix(lo)
        if weights is not None:
            w = weights[mu, nu]
            s = s * w
        total = total + s
    return total


# ----------------------------------------------------------------------------------------
# the SU(N) staple kernel (force, Wilson-flow generator)
# ----------------------------------------------------------------------------------------
# Inside the kernel a site field of matrices is held "blocked": ``(*batch, L_0, ..., L_{d-2}, N, N, L_{d-1})``,
# colour between the last two site axes.  XLA:CPU then vectorises every product over the innermost run of sites
# (with colour innermost, ``(..., N, N)``, a product touches 3 contiguous numbers and runs at a third to a half of
# the speed), shifts stay whole-array rolls, and each product is its own reduction kernel, materialised once
# instead of recomputed inside a consumer's fused loop.


# A transposition fused into the products that read it makes them read across the whole field; once a
# direction's field outgrows the caches (4.7 MB at 16^4 in complex64) it is cheaper to write it transposed
# first.  XLA:CPU drops optimisation barriers, but the outputs of a loop are materialised: hence lax.map over the
# directions above this size (measured on a 2-core Xeon with 4 MiB L2 per core: 16^4 force 115 -> 83 ms,
# 8^4 4.7 -> 5.9 ms the other way).
_MATERIALISE_BYTES = 2 * 2**20


def _site_to_blocked(f: Array) -> Array:
    """Site field ``(..., L_{d-1}, N, N)`` -> ``(..., N, N, L_{d-1})``."""
    return jnp.moveaxis(f, -3, -1)


def _to_blocked(u: Array) -> list[Array]:
    """Link field ``(*batch, L_0..L_{d-1}, d, N, N)`` -> the ``d`` blocked site fields ``U_mu``."""
    v = jnp.moveaxis(u, -3, 0)
    v = jax.lax.map(_site_to_blocked, v) if v.nbytes // v.shape[0] > _MATERIALISE_BYTES else _site_to_blocked(v)
    return [v[mu] for mu in range(v.shape[0])]


def _from_blocked(fs: list[Array]) -> Array:
    """The inverse of :func:`_to_blocked`: ``d`` blocked site fields -> a link field."""
    return jnp.moveaxis(jnp.moveaxis(jnp.stack(fs), -1, -3), 0, -3)


def _bmul(a: Array, b: Array) -> Array:
    return jnp.sum(a[..., :, :, None, :] * b[..., None, :, :, :], axis=-3)


def _bdag(a: Array) -> Array:
    return jnp.conj(jnp.swapaxes(a, -3, -2))


def staple_force(u: Array, group: Group, weights: Array | None = None) -> Array:
    """``P_TA[U_mu(x) Sigma_mu(x)]`` for every link, SU(N) only (algebra field, the link-field shape).

    ``Sigma_mu`` is the weighted staple sum of :func:`staple_sum` (``weights``: symmetric ``(d, d)`` plane
    weights, default 1); the Wilson gauge force is this divided by ``2N`` (with the plane couplings as weights) and
    the Wilson-flow generator is minus it (weights 1).  The XLA kernel :func:`staple_force_xla`; with
    ``CORRFLOW_PALLAS=auto`` on GPUs one fused Pallas kernel (:func:`corrflow.pallas_force.staple_force`); on CPUs,
    for 4D SU(3), the native kernel (:func:`corrflow.native.staple_force`, ``CORRFLOW_NATIVE``, on by default).  The
    choice is made when the program is traced (:func:`corrflow.pallas_force.use_pallas`,
    :func:`corrflow.native.use_native`).
    """
    if not group.is_abelian and pallas_force.use_pallas():
        return pallas_force.staple_force(u, group, weights, derivative=staple_force_xla)
    if native.use_native(u, group):
        return native.staple_force(u, group, weights, derivative=staple_force_xla)
    if not group.is_abelian and jax.default_backend() == "cpu":
        return _chain_by_chain(group)(u, *(() if weights is None else (weights,)))
    return staple_force_xla(u, group, weights)


@lru_cache(maxsize=32)
def _chain_by_chain(group: Group):  # noqa: ANN202 - (u[, weights]) -> force
    """:func:`staple_force_xla` whose ``vmap`` over chains (``corrflow generate`` vmaps its chains) runs the chains
    one after the other (``lax.map``) once the batch reaches ``_SLAB_BYTES`` per direction: each chain's
    intermediates then stay in cache instead of streaming 40 batched fields through memory (CPU, 16 chains of 8^4:
    45 against 76 ms).  Smaller batches, and batched weights, are vectorised as before.  Derivatives are those of
    the kernel itself (``custom_jvp``; ``custom_vmap`` alone has none)."""

    def kernel(u: Array, *w: Array) -> Array:
        return staple_force_xla(u, group, *w)

    chained = jax.custom_batching.custom_vmap(kernel)

    @chained.def_vmap
    def _rule(axis_size: int, in_batched: list, u: Array, *w: Array) -> tuple[Array, bool]:
        if not in_batched[0]:
            u = jnp.broadcast_to(u, (axis_size,) + u.shape)
        if any(in_batched[1:]):  # per-chain weights: vectorise
            return jax.vmap(kernel, in_axes=(0,) + tuple(0 if b else None for b in in_batched[1:]))(u, *w), True
        if u.nbytes // _ndim(u, group) < _SLAB_BYTES:
            return kernel(u, *w), True  # the kernel takes leading batch axes
        return jax.lax.map(lambda x: chained(x, *w), u), True

    force = jax.custom_jvp(chained)
    force.defjvp(lambda primals, tangents: jax.jvp(kernel, primals, tangents))
    return force


def staple_force_xla(u: Array, group: Group, weights: Array | None = None, slabs: bool | None = None) -> Array:
    """:func:`staple_force` as XLA array operations (the kernel on CPUs).  Same numbers as
    ``P_TA(U_mu staple_sum(u, mu))`` for each ``mu`` up to rounding, with less work: the two halves
    ``U_mu(x) U_nu(x+mu)`` and ``U_nu(x) U_mu(x+nu)`` of each plaquette are built once and shared by the staples of
    its four links (6 products per plane and one per direction, 40 per site in 4D instead of 52), in the blocked
    layout above; ``group.project_algebra`` acts after the transposition back.

    ``slabs``: compute one time slice ``x_0`` after the other (:func:`_staple_force_slabs`) instead of whole
    fields; ``None`` (the default) chooses slabs on CPUs for ``d >= 3`` once one direction's field reaches
    ``_SLAB_BYTES`` (16^4 in complex64; under ``vmap`` the size of one chain counts).
    """
    if group.is_abelian:
        raise ValueError("staple_force is for SU(N) links; the U(1) force is built from plaquette sines")
    d = _ndim(u, group)
    if slabs is None:
        slabs = d >= 3 and u.nbytes // d >= _SLAB_BYTES and jax.default_backend() == "cpu"
    if slabs:
        return _staple_force_slabs(u, group, weights)
    us = _to_blocked(u)
    sh = _blocked_shift(d)
    sigma: list = [0.0] * d
    for m, n in planes(d):
        s_m, up_n, q = _plane_staples(us[m], us[n], sh(us[n], m, 1), n, sh)
        w = 1.0 if weights is None else weights[m, n]
        sigma[m] = sigma[m] + w * s_m
        sigma[n] = sigma[n] + w * (up_n + sh(q, m, -1))
    return group.project_algebra(_from_blocked([_bmul(us[mu], sigma[mu]) for mu in range(d)]))


# One direction's field from this size on (a 4.5 MiB 16^4 complex64 field, 9 MiB in complex128) the whole-field
# kernel's 40 intermediate fields no longer fit the caches and every product is a pass through memory; slab by
# slab they stay in L2.  Measured on a 2-core Xeon (4 MiB L2 per core), the slab kernel against the whole-field
# one: 16^4 complex64 2.1x, complex128 2.2x, 12^4 1.3x / 2.2x, 8^4 complex128 0.63x, 16 chains of 8^4 (one
# array) 1.6x, 4 chains 0.86x (per-slab kernel launches dominate small slabs).
_SLAB_BYTES = 5 * 2**18


def _blocked_shift(d: int):  # noqa: ANN202 - (field, mu, n) -> field
    """``shift`` for blocked site fields ``(..., L_0.., L_{d-2}, N, N, L_{d-1})`` (also slabs without ``L_0``)."""
    axis = {mu: mu - d - 2 for mu in range(d - 1)} | {d - 1: -1}
    return lambda f, mu, n: jnp.roll(f, -n, axis=axis[mu])


def _plane_staples(um: Array, un: Array, un_xm: Array, n: int, sh) -> tuple[Array, Array, Array]:  # noqa: ANN001
    """The staples of plane ``(m, n)`` from blocked ``U_m``, ``U_n`` and ``U_n(x+m)``: ``(upper + lower of the
    m links, upper of the n links, q)`` with ``q = c^dag U_m`` the lower staple of ``U_n(x + m)`` (the caller
    shifts it by ``-m``, or carries it to the next slab)."""
    um_xn = sh(um, n, 1)
    a = _bmul(um, un_xm)  # U_m(x) U_n(x+m)
    c = _bmul(un, um_xn)  # U_n(x) U_m(x+n);  P_{mn}(x) = a c^dag
    s_m = _bmul(un_xm, _bdag(c)) + sh(_bmul(_bdag(a), un), n, -1)
    return s_m, _bmul(um_xn, _bdag(a)), _bmul(_bdag(c), um)


def _staple_force_slabs(u: Array, group: Group, weights: Array | None = None) -> Array:
    """:func:`staple_force_xla` one time slice at a time: a ``fori_loop`` over ``x_0`` whose step transposes slice
    ``x_0 + 1`` into the blocked layout, builds the staples of slice ``x_0`` (40 products per site in 4D, as the
    whole-field kernel; every intermediate is a slab and stays in cache) and writes its projected force in place.
    Planes ``(0, n)`` need ``U_n(x + 0)`` (the next slice, carried to the next step as its own) and the lower
    staple of ``U_n`` built on the previous slice (carried; the last slice's is built before the loop)."""
    d = _ndim(u, group)
    t_axis = u.ndim - 3 - d  # the x_0 axis, after the batch axes
    extent = u.shape[t_axis]
    sh = _blocked_shift(d)

    def slab(t: Array) -> list[Array]:
        s = jax.lax.dynamic_index_in_dim(u, t % extent, axis=t_axis, keepdims=False)
        v = _site_to_blocked(jnp.moveaxis(s, -3, 0))
        return [v[mu] for mu in range(d)]

    def step(t: Array, carry: tuple) -> tuple:
        us, q_prev, out = carry
        nxt = slab(t + 1)
        sigma: list = [0.0] * d
        q_next = []
        for m, n in planes(d):
            s_m, up_n, q = _plane_staples(us[m], us[n], nxt[n] if m == 0 else sh(us[n], m, 1), n, sh)
            if m == 0:
                q_next.append(q)
                lo_n = q_prev[n - 1]
            else:
                lo_n = sh(q, m, -1)
            w = 1.0 if weights is None else weights[m, n]
            sigma[m] = sigma[m] + w * s_m
            sigma[n] = sigma[n] + w * (up_n + lo_n)
        f = jnp.stack([_bmul(us[mu], sigma[mu]) for mu in range(d)])  # (d, *batch, L_1.., N, N, L_{d-1})
        f = group.project_algebra(jnp.moveaxis(jnp.moveaxis(f, -1, -3), 0, -3))
        return nxt, q_next, jax.lax.dynamic_update_index_in_dim(out, f, t, axis=t_axis)

    last, first = slab(jnp.asarray(extent - 1)), slab(jnp.asarray(0))
    q_last = [_plane_staples(last[0], last[n], first[n], n, sh)[2] for n in range(1, d)]
    dtype = u.dtype if weights is None else jnp.result_type(u, weights)  # as the whole-field kernel
    _, _, out = jax.lax.fori_loop(0, extent, step, (first, q_last, jnp.zeros(u.shape, dtype)))
    return out


def staple_force_reference(u: Array, group: Group, weights: Array | None = None) -> Array:
    """:func:`staple_force` the direct way, ``P_TA(U_mu staple_sum(u, mu))`` direction by direction in the link
    field's own layout (the kernel before issue 16; kept as the reference of the tests and benchmarks)."""
    d = _ndim(u, group)
    return jnp.stack([group.project_algebra(group.mul(link(u, mu, group), staple_sum(u, mu, group, weights)))
                      for mu in range(d)], axis=-3)


def wall(u: Array, mu: int, length: int, group: Group) -> Array:
    """Straight line of ``length`` links in direction ``mu`` starting at each site (site field)."""
    d = _ndim(u, group)
    um = link(u, mu, group)
    out = um
    for k in range(1, length):
        out = group.mul(out, shift(um, mu, k, d, group))
    return out


def wilson_loop(u: Array, mu: int, nu: int, r: int, t: int, group: Group) -> Array:
    """Rectangular ``r x t`` Wilson loop field with extent ``r`` along ``mu`` and ``t`` along ``nu``.

    ``W(x) = L_mu(x; r) L_nu(x + r mu; t) [L_nu(x; t) L_mu(x + t nu; r)]^dag`` (group elements);
    ``r = t = 1`` gives :func:`plaquette`.
    """
    if r < 1 or t < 1:
        raise ValueError(f"wilson_loop: extents must be >= 1, got r={r}, t={t}")
    d = _ndim(u, group)
    lm = wall(u, mu, r, group)
    ln = wall(u, nu, t, group)
    a = group.mul(lm, shift(ln, mu, r, d, group))
    b = group.mul(ln, shift(lm, nu, t, d, group))
    return group.mul(a, group.adj(b))


def polyakov_loop(u: Array, group: Group, mu: int = 0) -> Array:
    """Polyakov line ``prod_{k} U_mu(x + k mu)`` wound around direction ``mu`` (default time).

    Returns the site field restricted to the slice ``x_mu = 0`` (the ``mu`` axis removed):
    shape ``(*batch, L_0, ..(no L_mu).., L_{d-1}, *elem)``.
    """
    d = _ndim(u, group)
    length = u.shape[_site_axis(mu, d, group) - 1]  # link field has the extra mu axis
    line = wall(u, mu, length, group)
    return jax.lax.index_in_dim(line, 0, axis=line.ndim + _site_axis(mu, d, group), keepdims=False)


# ----------------------------------------------------------------------------------------
# masks (used by flows)
# ----------------------------------------------------------------------------------------


def checkerboard(shape: Sequence[int]) -> np.ndarray:
    """Parity ``(sum_mu x_mu) mod 2`` of every site, int array of ``shape`` (extents must be even)."""
    shape = validate_shape(shape, even=True)
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return (sum(grids) % 2).astype(np.int8)


def link_mask(shape: Sequence[int], mu: int, parity: int) -> np.ndarray:
    """Boolean link mask ``(L_0, ..., L_{d-1}, d)`` of the links ``U_mu(x)`` with
    ``(sum_{nu != mu} x_nu) mod 2 == parity``.

    This is a checkerboard in the coordinates orthogonal to ``mu``: the plaquette staples of an
    active link (``U_mu(x +- nu_hat)``, ``U_nu(...)``) are all frozen, so a layer that updates
    the active links from their plaquette staples has a block-diagonal Jacobian.  The two
    parities for each of the ``d`` directions together update every link once.  Extents
    orthogonal to ``mu`` must be even.
    """
    shape = validate_shape(shape)
    d = len(shape)
    if not 0 <= mu < d:
        raise ValueError(f"link_mask: mu must be in 0..{d - 1}, got {mu}")
    if parity not in (0, 1):
        raise ValueError(f"link_mask: parity must be 0 or 1, got {parity}")
    odd = [k for k in range(d) if k != mu and shape[k] % 2]
    if odd:
        raise ValueError(f"link_mask: extents orthogonal to mu={mu} must be even; L_{odd[0]}={shape[odd[0]]}")
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    orth = sum(g for k, g in enumerate(grids) if k != mu) % 2
    mask = np.zeros(shape + (d,), bool)
    mask[..., mu] = orth == parity
    return mask
