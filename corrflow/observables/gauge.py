"""Gauge observables: plaquettes, Wilson loops, Polyakov loops, geometric topological charge.

All take a link field ``u`` of shape ``(*batch, L_0, ..., L_{d-1}, d, *elem)`` and the group (or its name), and
return arrays of shape ``batch`` (or ``batch + (n_planes,)`` for per-plane values).  Normalisation:
traces are divided by ``N`` so that every loop observable is 1 on the cold (unit) configuration;
for U(1) ``Re tr U / N = cos(theta)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import lattice
from ..groups import Group, get_group
from ..theories.gauge import accumulate

Array = jax.Array

__all__ = [
    "plaquette_per_plane",
    "plaquette",
    "wilson_loop",
    "polyakov_loop",
    "topological_charge",
    "topological_charge_density",
]


def _links_group(u: Array, group: Group | str) -> Group:
    """The group of ``group`` (a :class:`~corrflow.groups.Group` or its name), after checking that ``u`` holds its
    links (trailing axes ``(d, *elem)`` after ``d`` lattice axes, real angles for U(1), complex matrices for SU(N)):
    complex U(1) links gave a plaquette of the wrong kind without a word.  Static: raised at trace time."""
    g = get_group(group)
    nd = g.elem_ndim
    if len(u.shape) < 2 + nd:
        raise ValueError(f"links have shape {tuple(u.shape)}: too few axes for {g.name} links (L_0, ..., L_{{d-1}}, d"
                         f"{', N, N' if nd else ''})")
    lattice.check_links(u, g, lattice.lattice_shape(u, g))
    return g


def _site_mean(x: Array, d: int) -> Array:
    axes = tuple(range(-d, 0))
    n = 1
    for a in axes:
        n *= x.shape[a]
    return accumulate(x, axes) / n


def plaquette_per_plane(u: Array, group: Group | str) -> Array:
    """``<Re tr P_{mu nu}> / N`` averaged over sites, for each plane; shape ``batch + (n_planes,)``."""
    group = _links_group(u, group)
    d = u.shape[-1 - group.elem_ndim]
    vals = [_site_mean(group.retr(lattice.plaquette(u, m, n, group)) / group.N, d)
            for m, n in lattice.planes(d)]
    return jnp.stack(vals, axis=-1)


def plaquette(u: Array, group: Group | str) -> Array:
    """Mean plaquette ``<Re tr P> / N`` over all sites and planes; shape ``batch``."""
    return jnp.mean(plaquette_per_plane(u, group), axis=-1)


def wilson_loop(u: Array, group: Group | str, r: int, t: int, plane: tuple[int, int] | None = None) -> Array:
    """Mean ``Re tr W_{r x t} / N`` of rectangular loops, shape ``batch``.

    ``r`` is the extent along the first direction of the plane, ``t`` along the second.  With
    ``plane=None`` the average runs over all planes and both orientations (``r x t`` and ``t x r``).
    """
    group = _links_group(u, group)
    d = u.shape[-1 - group.elem_ndim]
    if plane is not None:
        mu, nu = plane
        if not (0 <= mu < d and 0 <= nu < d and mu != nu):
            raise ValueError(f"wilson_loop: plane must be two distinct directions in 0..{d - 1}, got {plane}")
        combos = [(mu, nu)]
    else:
        combos = [(m, n) for m, n in lattice.planes(d)]
        if r != t:
            combos += [(n, m) for m, n in lattice.planes(d)]
    vals = [_site_mean(group.retr(lattice.wilson_loop(u, m, n, r, t, group)) / group.N, d) for m, n in combos]
    return sum(vals) / len(vals)


def polyakov_loop(u: Array, group: Group | str, mu: int = 0) -> Array:
    """Spatially averaged Polyakov loop ``tr L(x) / N`` around direction ``mu`` (complex), shape ``batch``."""
    group = _links_group(u, group)
    d = u.shape[-1 - group.elem_ndim]
    line = lattice.polyakov_loop(u, group, mu)
    tr = group.to_matrix(line) if group.is_abelian else jnp.trace(line, axis1=-2, axis2=-1) / group.N
    axes = tuple(range(-(d - 1), 0))
    return jnp.mean(tr, axis=axes)


def topological_charge_density(u: Array, group: Group | str) -> Array:
    """Geometric charge density ``wrap(P_01(x)) / (2 pi)`` of 2D U(1), with ``wrap`` into ``[-pi, pi)``.

    Shape ``(*batch, L_0, L_1)``.
    """
    group = _links_group(u, group)
    if not group.is_abelian:
        raise ValueError(f"the geometric topological charge is defined for U(1); got group {group.name}")
    d = u.shape[-1]
    if d != 2:
        raise ValueError(f"the geometric topological charge is defined in 2 dimensions; got d={d}")
    p = lattice.plaquette(u, 0, 1, group)
    return group.normalize(p) / (2 * jnp.pi)


def topological_charge(u: Array, group: Group | str) -> Array:
    """Geometric topological charge ``Q = sum_x wrap(P_01(x)) / (2 pi)`` of 2D U(1); integer-valued
    on a periodic lattice (up to rounding); shape ``batch``."""
    q = topological_charge_density(u, group)
    return accumulate(q, (-2, -1))
