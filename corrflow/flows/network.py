"""Coefficients of residual layers from a small convolutional network of frozen gauge-invariant features.

For a layer that moves the links ``U_mu(x)`` at the active sites ``x`` of a mask, the network sees, on every site of
the lattice (``C_in`` channels)::

    Re tr P_{nu rho}(x) / N        for the (d-1)(d-2)/2 planes without mu (every link of them is frozen)
    Re tr(S_j S_k^dag)(x) / N      for the pairs j < k of the individual plaquette staples of U_mu(x), at active
                                   sites (closed loops through frozen links only; 0 elsewhere)
    1                              at active sites (0 elsewhere)

and returns, per site, one number per individual staple of the layer's loop shapes (``n_S`` channels).  At the active
sites the coefficient of staple ``j`` is ``c_j(x) = (0.95 / n_S) tanh(o_j(x))``, so ``sum_j |c_j| < 0.95`` (a
contraction, as for constant coefficients) and ``Sigma_l = sum_j c_j(x) S_j(x)``.

Every input is built from frozen links (none contains an active link: masks of
:func:`~corrflow.flows.staples.layer_masks`), so ``c`` is a constant for the link it moves and the per-link Jacobian
formula of :class:`~corrflow.flows.layers.ResidualLayer` stays exact.  Features are gauge invariant and even under
charge conjugation (real parts of traces), so the layer stays gauge equivariant and C-symmetric.  The network is
translation equivariant (periodic ``3^d`` convolutions, :class:`equinox.nn.Conv` with circular padding; depth ``D``
gives a receptive field of ``2D + 1`` sites), so the same parameters apply to any volume whose extents fit the masks.

The network of one layer: ``depth - 1`` hidden convolutions of ``width`` channels with ``tanh``, then a convolution
to ``n_S`` channels whose weights and bias start at zero (the layer starts as the identity while the hidden layers
start random, so gradients reach them).  Its parameters travel as one flat float vector (``jax.flatten_util``), so a
flow's parameters stay one array and checkpoints stay plain npz.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import combinations
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .. import lattice
from ..groups import Group

Array = jax.Array

__all__ = ["CoefficientNet", "coefficient_net", "frozen_features", "n_feature_channels", "MAX_WIDTH", "MAX_DEPTH"]

MAX_WIDTH = 64
MAX_DEPTH = 6


class CoefficientNet(eqx.Module):
    """Periodic convolutions ``(C_in, L_0, ..., L_{d-1}) -> (n_S, L_0, ..., L_{d-1})`` (module docstring)."""

    convs: tuple

    def __call__(self, x: Array) -> Array:
        for conv in self.convs[:-1]:
            x = jnp.tanh(conv(x))
        return self.convs[-1](x)


def n_feature_channels(d: int) -> int:
    """``C_in``: frozen planes, pairs of the ``2(d-1)`` plaquette staples, and the active-site indicator."""
    n_staples = 2 * (d - 1)
    return (d - 1) * (d - 2) // 2 + n_staples * (n_staples - 1) // 2 + 1


def _build(d: int, width: int, depth: int, n_out: int, key: Array) -> CoefficientNet:
    chans = [n_feature_channels(d)] + [width] * (depth - 1) + [n_out]
    keys = jax.random.split(key, depth)
    convs = [eqx.nn.Conv(d, chans[i], chans[i + 1], 3, padding=1, padding_mode="CIRCULAR", dtype=jnp.float64,
                         key=keys[i]) for i in range(depth)]
    last = convs[-1]
    last = eqx.tree_at(lambda c: (c.weight, c.bias), last, (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))
    return CoefficientNet(tuple(convs[:-1]) + (last,))


@lru_cache(maxsize=32)
def coefficient_net(d: int, width: int, depth: int, n_out: int) -> tuple[int, Callable[[Array], CoefficientNet],
                                                                           Callable[[Array], Array]]:
    """``(n_params, unravel, init_flat)`` for the network of one layer: ``unravel(flat)`` gives the
    :class:`CoefficientNet`, ``init_flat(key)`` a fresh flat parameter vector (last layer zero)."""
    template = _build(d, width, depth, n_out, jax.random.PRNGKey(0))
    params, static = eqx.partition(template, eqx.is_array)
    flat, unravel_params = ravel_pytree(params)

    def unravel(v: Array) -> CoefficientNet:
        return eqx.combine(unravel_params(v), static)

    def init_flat(key: Array) -> Array:
        return ravel_pytree(eqx.filter(_build(d, width, depth, n_out, key), eqx.is_array))[0]

    return int(flat.size), unravel, init_flat


def _frozen_plane_table(d: int) -> np.ndarray:
    """``(d, (d-1)(d-2)/2)``: for each ``mu`` the indices (in :func:`corrflow.lattice.planes` order) of the planes
    without ``mu``."""
    pl = lattice.planes(d)
    return np.array([[i for i, (a, b) in enumerate(pl) if mu not in (a, b)] for mu in range(d)], dtype=np.int32)


def frozen_features(u_flat: Array, sites: Array, mu: Any, plaquette_staples: Array, group: Group,
                    shape: tuple[int, ...]) -> Array:
    """Input channels ``(*batch, C_in, *shape)`` of the layer moving ``U_mu`` at the flat ``sites`` (module
    docstring).  ``u_flat`` ``(*batch, V d, *elem)``; ``plaquette_staples`` the individual plaquette staples of the
    active links ``(*batch, 2(d-1), n, ...)`` in matrix form; ``mu`` may be traced."""
    d = len(shape)
    nb = u_flat.ndim - 1 - group.elem_ndim
    batch = u_flat.shape[:nb]
    vol = int(np.prod(shape))
    chans = []
    if d > 2:
        u = u_flat.reshape(batch + tuple(shape) + (d,) + tuple(group.elem_shape))
        plaq = group.retr(lattice.plaquettes(u, group)) / group.N  # (*batch, n_planes, *shape)
        idx = jnp.take(jnp.asarray(_frozen_plane_table(d)), mu, axis=0)
        chans.append(jnp.take(plaq, idx, axis=nb))
    s = plaquette_staples
    pairs = list(combinations(range(s.shape[nb]), 2))
    a = jnp.stack([s[(slice(None),) * nb + (j,)] for j, _ in pairs], axis=nb)
    b = jnp.stack([s[(slice(None),) * nb + (k,)] for _, k in pairs], axis=nb)
    if group.elem_ndim:
        inv = jnp.sum(jnp.real(a * jnp.conj(b)), axis=(-2, -1)) / group.N  # Re tr(S_j S_k^dag) / N
    else:
        inv = jnp.real(a * jnp.conj(b))
    ind = jnp.ones(inv.shape[:nb] + (1,) + inv.shape[nb + 1:], inv.dtype)
    at_sites = jnp.concatenate([inv, ind], axis=nb)  # (*batch, n_pairs + 1, n)
    full = jnp.zeros(batch + (at_sites.shape[nb], vol), at_sites.dtype)
    full = full.at[(slice(None),) * (nb + 1) + (sites,)].set(at_sites, unique_indices=True)
    chans.append(full.reshape(batch + (at_sites.shape[nb],) + tuple(shape)))
    return jnp.concatenate(chans, axis=nb) if len(chans) > 1 else chans[0]
