"""Sharding of Markov-chain batches (and of large lattices) over several devices with ``jax.sharding``.

Two layouts are supported, chosen by the axis names of a :class:`jax.sharding.Mesh`:

* ``"chains"`` (:func:`chain_mesh`): the leading chain axis of every array of a chain batch
  (links ``(chains, L_0, ..., L_{d-1}, d, *elem)``, keys ``(chains, 2)``, actions ``(chains,)``) is
  split across the devices.  Chains never talk to each other, so the jitted HMC block runs SPMD with
  no communication at all, and the results are bit-identical to the single-device run with the JAX kernels
  (with several devices the native CPU kernels of :mod:`corrflow.native` are not used; a one-device CPU run
  uses them by default, ``CORRFLOW_NATIVE=0`` restores the JAX kernels).
* ``"sites"`` (:func:`site_mesh`): one (or a few) large configuration(s) are split along the time
  axis ``L_0`` (``PartitionSpec(..., "sites")``).  ``jnp.roll`` across the split becomes a halo
  exchange that XLA inserts by itself; sums over sites become cross-device reductions (and XLA may
  fuse the pieces differently), so results agree with the unsharded ones to rounding, not bitwise.

A two-dimensional mesh ``("chains", "sites")`` (:func:`make_mesh`) combines both.  Every function
here only *places* data; jitted functions (e.g. :func:`corrflow.generate.run_blocks` with
``mesh=...``) follow the placement of their inputs.

On a CPU-only machine, several devices can be simulated for tests with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (set before JAX is imported).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Array = jax.Array

CHAINS = "chains"
SITES = "sites"

__all__ = [
    "CHAINS",
    "SITES",
    "make_mesh",
    "chain_mesh",
    "site_mesh",
    "chain_sharding",
    "links_sharding",
    "shard_chains",
    "shard_sites",
    "shard_links",
]


def _devices(devices: Sequence[Any] | int | None) -> list[Any]:
    local = jax.local_devices()
    if devices is None:
        return list(local)
    if isinstance(devices, (int, np.integer)):
        n = int(devices)
        if not 1 <= n <= len(local):
            raise ValueError(f"asked for {n} devices, but {len(local)} local device(s) are available "
                             f"({local[0].platform}); on CPU simulate more with "
                             f"XLA_FLAGS=--xla_force_host_platform_device_count={max(n, 1)}")
        return list(local[:n])
    devs = list(devices)
    if not devs:
        raise ValueError("devices must not be empty")
    return devs


def make_mesh(devices: Sequence[Any] | int | None = None, axes: Sequence[str] = (CHAINS,),
              shape: Sequence[int] | None = None) -> Mesh:
    """Device mesh with named ``axes`` (``"chains"`` and/or ``"sites"``).

    ``devices``: a sequence of devices, a number ``n`` (the first ``n`` local devices) or None (all
    local devices).  ``shape``: the mesh shape (product = number of devices); default: all devices
    along a single axis.
    """
    devs = _devices(devices)
    axes = tuple(axes)
    bad = [a for a in axes if a not in (CHAINS, SITES)]
    if bad or len(set(axes)) != len(axes) or not axes:
        raise ValueError(f"mesh axes must be distinct names among {CHAINS!r}, {SITES!r}; got {axes}")
    if shape is None:
        if len(axes) != 1:
            raise ValueError(f"give the mesh shape for the axes {axes} (e.g. shape=(2, {len(devs) // 2 or 1}))")
        shape = (len(devs),)
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(axes) or int(np.prod(shape)) != len(devs):
        raise ValueError(f"mesh shape {shape} does not fit {len(devs)} devices with axes {axes}")
    return Mesh(np.array(devs, dtype=object).reshape(shape), axes)


def chain_mesh(devices: Sequence[Any] | int | None = None) -> Mesh:
    """One-dimensional mesh with axis ``"chains"`` over ``devices`` (default: all local devices)."""
    return make_mesh(devices, (CHAINS,))


def site_mesh(devices: Sequence[Any] | int | None = None) -> Mesh:
    """One-dimensional mesh with axis ``"sites"`` (split of the time axis ``L_0``) over ``devices``."""
    return make_mesh(devices, (SITES,))


def _axis_size(mesh: Mesh, axis: str) -> int:
    return int(mesh.shape[axis]) if axis in mesh.axis_names else 1


def chain_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """``NamedSharding`` that splits the leading axis of an ``ndim``-dimensional array over the mesh's
    ``"chains"`` axis (replicated if the mesh has none)."""
    if ndim < 1:
        return NamedSharding(mesh, PartitionSpec())
    return NamedSharding(mesh, PartitionSpec(CHAINS if CHAINS in mesh.axis_names else None))


def links_sharding(mesh: Mesh, batch_ndim: int = 1) -> NamedSharding:
    """Sharding of link arrays ``(*batch, L_0, ..., L_{d-1}, d, *elem)`` with ``batch_ndim`` batch axes.

    The first batch axis goes over ``"chains"`` and ``L_0`` over ``"sites"`` (whichever the mesh has).
    """
    spec: list[str | None] = [None] * (batch_ndim + 1)
    if batch_ndim >= 1 and CHAINS in mesh.axis_names:
        spec[0] = CHAINS
    if SITES in mesh.axis_names:
        spec[batch_ndim] = SITES
    return NamedSharding(mesh, PartitionSpec(*spec))


def shard_chains(x: Any, mesh: Mesh) -> Any:
    """Place every leaf of the pytree ``x`` with its leading (chain) axis split over the mesh.

    Leaves are arrays with a common leading axis ``n_chains`` (links, keys, actions, ...); scalars
    (0-d leaves) are replicated.  Raises ``ValueError`` if ``n_chains`` is not a multiple of the number
    of devices along ``"chains"``.  On a mesh without a ``"chains"`` axis the leaves are replicated.
    """
    n_dev = _axis_size(mesh, CHAINS)

    def place(leaf: Any) -> Any:
        leaf = leaf if isinstance(leaf, jax.Array) else jax.numpy.asarray(leaf)
        if leaf.ndim >= 1 and leaf.shape[0] % n_dev:
            n = leaf.shape[0]
            lo, hi = (n // n_dev) * n_dev, -(-n // n_dev) * n_dev
            hint = f"{lo} or {hi}" if lo else f"{hi}"
            raise ValueError(f"cannot shard {n} chains over {n_dev} devices: the number of chains must be a "
                             f"multiple of {n_dev} (use {hint} chains), or use fewer devices")
        return jax.device_put(leaf, chain_sharding(mesh, leaf.ndim))

    return jax.tree_util.tree_map(place, x)


def shard_sites(u: Any, mesh: Mesh, batch_ndim: int = 0) -> Array:
    """Place a link field ``(*batch, L_0, ..., d, *elem)`` split along the time axis ``L_0`` over the
    mesh's ``"sites"`` axis (and its first batch axis over ``"chains"`` if the mesh has one).

    ``L_0`` must be a multiple of the number of devices along ``"sites"``.  The communication that
    shifts across the split need (halo exchange) is inserted by XLA.
    """
    return shard_links(u, mesh, batch_ndim)


def shard_links(u: Any, mesh: Mesh, batch_ndim: int = 1) -> Array:
    """Place links ``(*batch, L_0, ..., d, *elem)`` with :func:`links_sharding` (chains and/or sites)."""
    u = u if isinstance(u, jax.Array) else jax.numpy.asarray(u)
    if u.ndim <= batch_ndim:
        raise ValueError(f"links of shape {u.shape} have no time axis after {batch_ndim} batch axes")
    n_sites = _axis_size(mesh, SITES)
    if u.shape[batch_ndim] % n_sites:
        raise ValueError(f"cannot split the time extent L_0={u.shape[batch_ndim]} over {n_sites} devices: "
                         f"L_0 must be a multiple of {n_sites}")
    n_chains = _axis_size(mesh, CHAINS)
    if batch_ndim >= 1 and u.shape[0] % n_chains:
        return shard_chains(u, mesh)  # raises the explanatory error
    return jax.device_put(u, links_sharding(mesh, batch_ndim))
