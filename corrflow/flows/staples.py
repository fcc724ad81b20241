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

Array = jax.Array
Step = tuple[int, int]

LOOPS = ("plaquette", "rectangle")

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
    ``dagger[k]`` ``(P_k, L_k)`` (the factor enters as its adjoint).  ``dagger`` is the same for every ``mu``
    (all loops come from one template), so layers of all directions can share one compiled body with
    ``offsets``/``nus`` as data."""

    offsets: tuple
    nus: tuple
    dagger: tuple


@lru_cache(maxsize=None)
def gather_plan(mu: int, d: int, loops: tuple[str, ...]) -> GatherPlan:
    """:class:`GatherPlan` of direction ``mu`` in ``d`` dimensions for the loop shapes ``loops``."""
    offsets, nus, dagger = [], [], []
    for loop in loops:
        steps = [path_links(path, mu, d) for path in loop_paths(loop, mu, d)]
        arrays = (np.array([[off for off, _, _ in s] for s in steps], dtype=np.int32),
                  np.array([[nu for _, nu, _ in s] for s in steps], dtype=np.int32),
                  np.array([[dag for _, _, dag in s] for s in steps], dtype=bool))
        for a, out in zip(arrays, (offsets, nus, dagger)):
            a.setflags(write=False)
            out.append(a)
    return GatherPlan(tuple(offsets), tuple(nus), tuple(dagger))


def gathered_staple_sums(u_flat: Array, sites: Array, offsets: Sequence[Any], nus: Sequence[Any],
                         dagger: Sequence[np.ndarray], group: Group, shape: Sequence[int]) -> list[Array]:
    """Staple sums at ``sites`` from a :class:`GatherPlan`'s parts (``offsets``, ``nus`` may be traced;
    ``dagger`` is static).  Per loop shape, all factors of all its staples are fetched with one gather and
    multiplied as a batch over the staples (``L_k - 1`` batched products), then summed; see
    :func:`staple_sums_at`.  For SU(3) on CPUs the native kernel (:func:`corrflow.native.path_sums`) forms the
    sums, derivatives by this code."""
    nb = u_flat.ndim - 1 - group.elem_ndim
    use_native = native.use_native_paths(u_flat, group)
    out = []
    for off, nu, dag in zip(offsets, nus, dagger):
        dag = np.asarray(dag, bool)
        idx = _path_links(sites, off, nu, dag.shape, shape)

        def jax_sum(uf: Array, ix: Array, dag: np.ndarray = dag) -> Array:
            return jnp.sum(_path_products(uf, ix, dag, group), axis=nb)

        out.append(native.path_sums(u_flat, idx, dag, jax_sum) if use_native else jax_sum(u_flat, idx))
    return out


def gathered_staples(u_flat: Array, sites: Array, offsets: Sequence[Any], nus: Sequence[Any],
                     dagger: Sequence[np.ndarray], group: Group, shape: Sequence[int]) -> list[Array]:
    """The individual staples at ``sites``, per loop shape ``(*batch, P_k, n[, N, N])`` in matrix form (arguments as
    :func:`gathered_staple_sums`)."""
    out = []
    for off, nu, dag in zip(offsets, nus, dagger):
        dag = np.asarray(dag, bool)
        out.append(_path_products(u_flat, _path_links(sites, off, nu, dag.shape, shape), dag, group))
    return out


def _path_links(sites: Array, off: Any, nu: Any, paths_length: tuple[int, int], shape: Sequence[int]) -> Array:
    """Flat link indices ``(P, L, n)`` of the factors ``U_nu(x + offset)`` of every path at every site."""
    d = len(shape)
    n_paths, length = paths_length
    idx = neighbour_sites(sites, jnp.asarray(off).reshape(-1, d), shape) * d
    idx = idx + jnp.asarray(nu, jnp.int32).reshape(-1, 1)
    return idx.reshape(n_paths, length, sites.shape[0])


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
    plan = gather_plan(int(mu), len(shape), tuple(loops))
    return gathered_staple_sums(u_flat, sites, plan.offsets, plan.nus, plan.dagger, group, shape)


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
