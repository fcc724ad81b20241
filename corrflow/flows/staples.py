"""Staples of arbitrary closed loops, and the link masks that keep flow layers triangular.

A *staple* of link ``U_mu(x)`` for a loop shape is the product of links along the loop from
``x + mu`` back to ``x``, so that ``U_mu(x) * staple(x)`` is the closed loop.  A path is a sequence of
signed steps ``+nu`` / ``-nu`` (``nu`` in ``0..d-1``, encoded as ``(nu, +1)`` / ``(nu, -1)``); a ``+nu``
step at site ``y`` multiplies ``U_nu(y)``, a ``-nu`` step multiplies ``U_nu(y - nu)^dag``.

Loop shapes (``LOOPS``):

* ``"plaquette"``: per ``nu != mu`` and orientation ``s = +-1``: ``[s nu, -mu, -s nu]``, i.e. ``2(d-1)``
  staples per link (the Wilson staples of :func:`corrflow.lattice.staple`);
* ``"rectangle"``: the 2x1 loops containing the link, per ``nu != mu`` and ``s``:
  ``[s nu, s nu, -mu, -s nu, -s nu]`` (long side along ``nu``), ``[mu, s nu, -mu, -mu, -s nu]`` and
  ``[s nu, -mu, -mu, -s nu, mu]`` (long side along ``mu``): ``6(d-1)`` staples per link.

Masks (``layer_masks``): a layer updating links ``U_mu(x)`` on a mask must never find an active link
inside the staple of another active link.  Plaquette staples of ``U_mu(x)`` touch ``U_mu(x +- nu)``;
rectangles also ``U_mu(x +- 2 nu)`` and ``U_mu(x +- mu)``.  Hence: plaquette layers use the checkerboard
``sum_{nu != mu} x_nu mod 2`` (2 masks per direction); layers with rectangles use
``(sum_{nu != mu} x_nu mod 4, x_mu mod 2)`` (8 masks per direction).

Two ways to evaluate staple sums: :func:`staple_sums` on every site (whole-field rolls; the reference), and
:func:`staple_sums_at` on a list of sites only (gathers from the flattened link field), which the flow layers
use so that a layer touching 1/2 or 1/8 of the links pays for those links only.  :func:`path_links` lists the
links a staple path uses (site offset, direction, daggered); the mask tests check it against the masks.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import lattice, native
from ..groups import Group
from .spec import LOOPS

Array = jax.Array
Step = tuple[int, int]


__all__ = ["LOOPS", "loop_paths", "path_product", "staple_sums", "layer_masks", "n_staples", "path_links",
           "neighbour_sites", "staple_sums_at", "GatherPlan", "gather_plan", "gathered_staple_sums",
           "gathered_staples", "transverse_smear"]


def loop_paths(loop: str, mu: int, d: int) -> list[list[Step]]:
    """Staple paths (from ``x + mu`` back to ``x``) of all loops of shape ``loop`` containing ``U_mu(x)``."""
    if loop not in LOOPS:
        raise ValueError(f"unknown loop shape {loop!r}; allowed: {', '.join(LOOPS)}")
    paths: list[list[Step]] = []
    for nu in range(d):
        if nu == mu:
            continue
        for s in (1, -1):
            if loop == "plaquette":
                paths.append([(nu, s), (mu, -1), (nu, -s)])
            else:
                paths.append([(nu, s), (nu, s), (mu, -1), (nu, -s), (nu, -s)])
                paths.append([(mu, 1), (nu, s), (mu, -1), (mu, -1), (nu, -s)])
                paths.append([(nu, s), (mu, -1), (mu, -1), (nu, -s), (mu, 1)])
    return paths


def n_staples(loop: str, d: int) -> int:
    """Number of staples of shape ``loop`` per link in ``d`` dimensions."""
    return len(loop_paths(loop, 0, d))


def _shift_to(f: Array, offset: Sequence[int], d: int, group: Group) -> Array:
    """Site field ``f(x + offset)``."""
    out = f
    for nu, n in enumerate(offset):
        if n:
            out = lattice.shift(out, nu, n, d, group)
    return out


def path_product(u: Array, mu: int, path: Sequence[Step], group: Group) -> Array:
    """Product of links along ``path`` starting at ``x + mu`` (site field of group elements)."""
    d = u.shape[-1 - group.elem_ndim]
    pos = [0] * d
    pos[mu] = 1
    out = None
    for nu, s in path:
        if s > 0:
            factor = _shift_to(lattice.link(u, nu, group), pos, d, group)
            pos[nu] += 1
        else:
            pos[nu] -= 1
            factor = group.adj(_shift_to(lattice.link(u, nu, group), pos, d, group))
        out = factor if out is None else group.mul(out, factor)
    if any(p != 0 for p in pos):
        raise ValueError(f"path {path} does not close the loop of link mu={mu}")
    return out


def staple_sums(u: Array, mu: int, loops: Sequence[str], group: Group) -> list[Array]:
    """For each loop shape, the sum of its staples of ``U_mu(x)`` in matrix form (complex number for
    U(1), ``(N, N)`` complex matrix for SU(N)); each a site field."""
    d = u.shape[-1 - group.elem_ndim]
    out = []
    for loop in loops:
        total = 0.0
        for path in loop_paths(loop, mu, d):
            total = total + group.to_matrix(path_product(u, mu, path, group))
        out.append(total)
    return out


def path_links(path: Sequence[Step], mu: int, d: int) -> list[tuple[tuple[int, ...], int, bool]]:
    """The links along a staple path of ``U_mu(x)``: ``(offset, nu, daggered)`` per step, meaning the factor
    ``U_nu(x + offset)`` (or its adjoint), in the order of :func:`path_product`."""
    pos = [0] * d
    pos[mu] = 1
    out = []
    for nu, s in path:
        if s > 0:
            out.append((tuple(pos), nu, False))
            pos[nu] += 1
        else:
            pos[nu] -= 1
            out.append((tuple(pos), nu, True))
    if any(p != 0 for p in pos):
        raise ValueError(f"path {path} does not close the loop of link mu={mu}")
    return out


def _strides(shape: Sequence[int]) -> np.ndarray:
    return np.array([int(np.prod(shape[k + 1:])) for k in range(len(shape))], dtype=np.int32)


def neighbour_sites(sites: Array, offsets: Any, shape: Sequence[int]) -> Array:
    """Flat (row-major) site index of ``x + offset`` (periodic) for flat sites ``sites`` ``(n,)`` and each
    offset ``(m, d)``: shape ``(m, n)``.  ``sites`` and ``offsets`` may be traced."""
    shp = np.asarray(shape, dtype=np.int32)
    strides = _strides(shape)
    sites = jnp.asarray(sites, jnp.int32)
    coords = (sites[None, :] // strides[:, None]) % shp[:, None]  # (d, n)
    off = jnp.asarray(offsets, jnp.int32).reshape(-1, len(shape))  # (m, d)
    nbr = (coords[None] + off[:, :, None]) % shp[None, :, None]
    return jnp.sum(nbr * strides[None, :, None], axis=1)


class GatherPlan(NamedTuple):
    """The links along the staples of ``U_mu(x)``, per loop shape ``k`` (``P_k`` staples of ``L_k`` factors):
    ``offsets[k]`` ``(P_k, L_k, d)`` and ``nus[k]`` ``(P_k, L_k)`` (factor ``U_nu(x + offset)``) and
    ``dagger[k]`` ``(P_k, L_k)`` (the factor enters as its adjoint).  A link shared by several staples is one
    *distinct factor*: ``distinct`` ``(F,)`` are the positions of the distinct factors among all shapes' factors
    (flattened and concatenated) and ``factor_ids[k]`` ``(P_k, L_k)`` each factor's index among them.  ``dagger``,
    ``distinct`` and ``factor_ids`` are the same for every ``mu`` (all loops come from one template), so layers of
    all directions can share one compiled body with ``offsets``/``nus`` as data (they may be traced)."""

    offsets: tuple
    nus: tuple
    dagger: tuple
    distinct: np.ndarray
    factor_ids: tuple


@lru_cache(maxsize=None)
def gather_plan(mu: int, d: int, loops: tuple[str, ...]) -> GatherPlan:
    """:class:`GatherPlan` of direction ``mu`` in ``d`` dimensions for the loop shapes ``loops``."""
    offsets, nus, dagger, factor_ids = [], [], [], []
    first: dict[tuple, int] = {}
    distinct: list[int] = []
    position = 0
    for loop in loops:
        steps = [path_links(path, mu, d) for path in loop_paths(loop, mu, d)]
        ids = []
        for s in steps:
            for off, nu, _ in s:
                if (off, nu) not in first:
                    first[(off, nu)] = len(distinct)
                    distinct.append(position)
                ids.append(first[(off, nu)])
                position += 1
        arrays = (np.array([[off for off, _, _ in s] for s in steps], dtype=np.int32),
                  np.array([[nu for _, nu, _ in s] for s in steps], dtype=np.int32),
                  np.array([[dag for _, _, dag in s] for s in steps], dtype=bool),
                  np.array(ids, dtype=np.int32).reshape(len(steps), -1))
        for a, out in zip(arrays, (offsets, nus, dagger, factor_ids)):
            a.setflags(write=False)
            out.append(a)
    distinct_arr = np.array(distinct, dtype=np.int32)
    distinct_arr.setflags(write=False)
    return GatherPlan(tuple(offsets), tuple(nus), tuple(dagger), distinct_arr, tuple(factor_ids))


def _factor_table(plan: GatherPlan, d: int) -> Array:
    """The distinct factors ``(F, d + 1)`` of a plan (offset, then ``nu``) from its (possibly traced) offsets."""
    off = jnp.concatenate([jnp.asarray(o, jnp.int32).reshape(-1, d) for o in plan.offsets])
    nu = jnp.concatenate([jnp.asarray(n, jnp.int32).reshape(-1, 1) for n in plan.nus])
    return jnp.concatenate([off, nu], axis=1)[np.asarray(plan.distinct)]


def _program(plan: GatherPlan) -> np.ndarray:
    """The native kernel's paths ``(P, 1 + L_max)``: loop shape, then ``2 id + dagger`` per factor, ``-1`` after."""
    rows = [[k] + [2 * int(i) + int(g) for i, g in zip(ids, dag)]
            for k, (ids_k, dag_k) in enumerate(zip(plan.factor_ids, plan.dagger)) for ids, dag in zip(ids_k, dag_k)]
    width = max(len(r) for r in rows)
    return np.array([r + [-1] * (width - len(r)) for r in rows], dtype=np.int32)


def _factor_sums(u_flat: Array, sites: Array, table: Array, plan: GatherPlan, group: Group,
                 shape: Sequence[int]) -> list[Array]:
    """Staple sums per loop shape ``(*batch, n[, N, N])`` from the distinct-factor table (JAX)."""
    nb = u_flat.ndim - 1 - group.elem_ndim
    links = _factor_links(sites, table, shape)
    return [jnp.sum(_path_products(u_flat, links[np.asarray(ids)], np.asarray(dag, bool), group), axis=nb)
            for ids, dag in zip(plan.factor_ids, plan.dagger)]


def _factor_links(sites: Array, table: Array, shape: Sequence[int]) -> Array:
    """Flat link indices ``(F, n)`` of the distinct factors ``U_nu(x + offset)`` (rows of ``table``) at ``sites``."""
    d = len(shape)
    return neighbour_sites(sites, table[:, :d], shape) * d + table[:, d:]


def gathered_staple_sums(u_flat: Array, sites: Array, plan: GatherPlan, group: Group,
                         shape: Sequence[int]) -> list[Array]:
    """Staple sums at ``sites`` ``(n,)`` per loop shape, ``(*batch, n[, N, N])``, from a :class:`GatherPlan`
    (its ``offsets``, ``nus`` may be traced).  The link indices of the distinct factors are computed once; per loop
    shape all factors are fetched with one gather, its staples multiplied as a batch (``L_k - 1`` batched products)
    and summed; see :func:`staple_sums_at`.  For SU(3) on CPUs the native kernel (:func:`corrflow.native.path_sums`:
    all shapes in one pass, link indices computed in the kernel) forms the sums, derivatives by this code."""
    table = _factor_table(plan, len(shape))
    if not native.use_native_paths(u_flat, group):
        return _factor_sums(u_flat, sites, table, plan, group, shape)
    nb = u_flat.ndim - 1 - group.elem_ndim

    def jax_sums(uf: Array, st: Array, tb: Array) -> Array:
        return jnp.stack(_factor_sums(uf, st, tb, plan, group, shape), axis=nb)

    out = native.path_sums(u_flat, sites, table, np.asarray(shape, np.int32), _program(plan), jax_sums)
    return [out[(slice(None),) * nb + (k,)] for k in range(len(plan.factor_ids))]


def gathered_staples(u_flat: Array, sites: Array, plan: GatherPlan, group: Group,
                     shape: Sequence[int]) -> list[Array]:
    """The individual staples at ``sites``, per loop shape ``(*batch, P_k, n[, N, N])`` in matrix form (arguments as
    :func:`gathered_staple_sums`)."""
    links = _factor_links(sites, _factor_table(plan, len(shape)), shape)
    return [_path_products(u_flat, links[np.asarray(ids)], np.asarray(dag, bool), group)
            for ids, dag in zip(plan.factor_ids, plan.dagger)]


def _path_products(u_flat: Array, idx: Array, dag: np.ndarray, group: Group) -> Array:
    """``prod_j U[idx[p, j]]^(dag[p, j])`` per path, ``(*batch, P, n[, N, N])`` in matrix form."""
    nb = u_flat.ndim - 1 - group.elem_ndim
    n_paths, length, n = idx.shape
    lead = (slice(None),) * nb
    links = jnp.take(u_flat, idx.reshape(-1), axis=nb, mode="clip")
    links = links.reshape(u_flat.shape[:nb] + (n_paths, length, n) + tuple(group.elem_shape))
    prod = None
    for j in range(length):
        f = links[lead + (slice(None), j)]  # (*batch, P, n, *elem)
        if dag[:, j].all():
            f = group.adj(f)
        elif dag[:, j].any():
            f = jnp.where(dag[:, j].reshape((n_paths,) + (1,) * (1 + group.elem_ndim)), group.adj(f), f)
        prod = f if prod is None else group.mul(prod, f)
    return group.to_matrix(prod)


def staple_sums_at(u_flat: Array, sites: Array, mu: int, loops: Sequence[str], group: Group,
                   shape: Sequence[int]) -> list[Array]:
    """:func:`staple_sums` evaluated at the sites ``sites`` only.

    ``u_flat`` is the link field flattened to ``(*batch, V * d, *elem)`` (link ``(x, nu)`` at ``x * d + nu``
    with ``x`` the row-major site index); ``sites`` ``(n,)`` flat site indices (may be traced).  Returns per
    loop shape ``(*batch, n[, N, N])`` in matrix form.
    """
    return gathered_staple_sums(u_flat, sites, gather_plan(int(mu), len(shape), tuple(loops)), group, shape)


def layer_masks(shape: Sequence[int], mu: int, loops: Sequence[str]) -> list[np.ndarray]:
    """Boolean site masks ``shape`` of the active links ``U_mu(x)`` for successive layers; together they
    cover every site once.  See the module docstring for the patterns and the extents they need."""
    shape = lattice.validate_shape(shape)
    d = len(shape)
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    orth = sum(g for k, g in enumerate(grids) if k != mu)
    if "rectangle" in loops:
        bad = [k for k in range(d) if (k != mu and shape[k] % 4) or (k == mu and shape[k] % 2)]
        if bad:
            raise ValueError(f"rectangle layers need extents divisible by 4 orthogonal to mu={mu} and even along "
                             f"it; got shape {shape}")
        return [(orth % 4 == p) & (grids[mu] % 2 == q) for p in range(4) for q in range(2)]
    bad = [k for k in range(d) if k != mu and shape[k] % 2]
    if bad:
        raise ValueError(f"plaquette layers need even extents orthogonal to mu={mu}; got shape {shape}")
    return [orth % 2 == p for p in range(2)]


def transverse_smear(u_flat: Array, mu: Any, group: Group, shape: Sequence[int], rho: float, steps: int) -> Array:
    """``steps`` stout steps ``U_nu <- exp(-rho P_TA[U_nu C_nu]) U_nu`` (U(1): ``theta -= rho Im(e^{i theta} C)``) of
    the links in the directions ``nu != mu``, with ``C_nu`` the staple sum over the planes ``(nu, rho')`` without
    ``mu`` only; the ``mu`` links are returned unchanged.  Every link it reads is frozen in a layer that moves ``U_mu``
    links, so staples built from the result are frozen too.  ``u_flat`` ``(*batch, V d, *elem)``; ``mu`` may be
    traced."""
    d = len(shape)
    nb = u_flat.ndim - 1 - group.elem_ndim
    u = u_flat.reshape(u_flat.shape[:nb] + tuple(shape) + (d,) + tuple(group.elem_shape))
    dirs = jnp.arange(d)
    w = ((dirs[:, None] != mu) & (dirs[None, :] != mu)).astype(u.real.dtype)  # planes without mu
    for _ in range(steps):
        new = []
        for nu in range(d):
            c = lattice.staple_sum(u, nu, group, w)
            ul = lattice.link(u, nu, group)
            if group.is_abelian:
                x = -rho * jnp.imag(jnp.exp(1j * ul) * c).astype(ul.dtype)
            else:
                x = -rho * group.project_algebra(group.mul(ul, c))
            new.append(group.exp_left(x, ul))
        u = jnp.stack(new, axis=nb + d)
    return u.reshape(u_flat.shape)
