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
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from .. import lattice
from ..groups import Group

Array = jax.Array
Step = tuple[int, int]

LOOPS = ("plaquette", "rectangle")

__all__ = ["LOOPS", "loop_paths", "path_product", "staple_sums", "layer_masks", "n_staples"]


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
