"""Ensemble generation driver: many chains, many trajectories per jit call, measurements on the fly.

This is the layer between the pure HMC kernel (:mod:`corrflow.hmc`) and user-facing tools (CLI,
store, demo).  It runs trajectories in blocks; each block is one call of a jitted, vmapped
``lax.scan``, so the Python overhead is paid once per block.  Chain ``c`` uses the key
``fold_in(key, c)`` and trajectory ``t`` of it ``fold_in(fold_in(key, c), t)``: any split of the
run into blocks gives bit-identical results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import hmc
from . import observables as obs
from .groups import Group

Array = jax.Array

__all__ = ["GaugeMeasurements", "Block", "chain_keys", "initial_links", "run_blocks", "generate"]


@dataclass(frozen=True)
class GaugeMeasurements:
    """Hashable measurement function ``links -> dict`` used inside the HMC scan.

    Records ``plaquette`` always, ``wilson_RxT`` for each ``(R, T)`` in ``wilson_loops`` (averaged
    over planes and orientations), ``topological_charge`` (2D U(1) only) and ``polyakov_loop``
    (``|P|`` of the temporal Polyakov loop) when requested.
    """

    group: Group
    wilson_loops: tuple[tuple[int, int], ...] = ()
    topological_charge: bool = False
    polyakov_loop: bool = False

    def __call__(self, u: Array) -> dict[str, Array]:
        out = {"plaquette": obs.plaquette(u, self.group)}
        for r, t in self.wilson_loops:
            out[f"wilson_{r}x{t}"] = obs.wilson_loop(u, self.group, r, t)
        if self.topological_charge:
            out["topological_charge"] = obs.topological_charge(u, self.group)
        if self.polyakov_loop:
            out["polyakov_loop"] = jnp.abs(obs.polyakov_loop(u, self.group))
        return out

    @property
    def names(self) -> list[str]:
        names = ["plaquette"] + [f"wilson_{r}x{t}" for r, t in self.wilson_loops]
        if self.topological_charge:
            names.append("topological_charge")
        if self.polyakov_loop:
            names.append("polyakov_loop")
        return names


def chain_keys(key: Array, n_chains: int, first_chain: int = 0) -> Array:
    """Per-chain keys ``fold_in(key, c)`` for ``c = first_chain .. first_chain + n_chains - 1``."""
    return jax.vmap(lambda c: jax.random.fold_in(key, c))(jnp.arange(first_chain, first_chain + n_chains))


def initial_links(key: Array, theory: Any, n_chains: int, start: str = "hot", dtype: Any = None) -> Array:
    """Starting links ``(n_chains, *link_shape)``: ``"hot"`` (Haar random) or ``"cold"`` (unit)."""
    if start == "hot":
        keys = chain_keys(jax.random.fold_in(key, 2**31 - 1), n_chains)
        return jax.vmap(lambda k: hmc.hot_start(k, theory, dtype=dtype))(keys)
    if start == "cold":
        return hmc.cold_start(theory, (n_chains,), dtype=dtype)
    raise ValueError(f"start must be 'hot' or 'cold', got {start!r}")


@jax.jit
def _init_states(theory: Any, links: Array) -> hmc.HMCState:
    return hmc.HMCState(links, theory.action(links))


def _run_block(keys, states, theory, config, n_traj, first_index, measure):  # noqa: ANN001, ANN202
    return hmc.sample_chains(keys, states, theory, config, n_traj, first_index, measure)


_run_block_jit = jax.jit(_run_block, static_argnames=("n_traj", "measure"))


class Block(NamedTuple):
    """One block of trajectories for all chains.

    ``first``: global index of the block's first trajectory; ``links``: final links (chains, ...);
    ``info``: :class:`~corrflow.hmc.HMCInfo` with leading axes (chains, n); ``measurements``: dict of
    (chains, n) arrays; ``state``: the chain states after the block (for continuing).
    """

    first: int
    state: hmc.HMCState
    info: hmc.HMCInfo
    measurements: dict[str, np.ndarray]


def run_blocks(
    key: Array,
    theory: Any,
    config: hmc.HMCConfig,
    links: Array,
    n_traj: int,
    *,
    block_size: int = 100,
    first_index: int = 0,
    measure: Callable[[Array], Any] | None = None,
) -> Iterator[Block]:
    """Yield :class:`Block` s until ``n_traj`` trajectories (from ``first_index``) are done.

    ``links`` has a leading chain axis.  Keys: chain ``c`` uses ``fold_in(key, c)``.  Every block
    has the same length (the last may be shorter, compiling once more).
    """
    if n_traj < 0:
        raise ValueError(f"n_traj must be >= 0, got {n_traj}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    theory.check_links(links)
    n_chains = links.shape[0]
    keys = chain_keys(key, n_chains)
    state = _init_states(theory, links)
    done = 0
    while done < n_traj:
        n = min(block_size, n_traj - done)
        first = first_index + done
        state, info, meas = _run_block_jit(keys, state, theory, config, n, first, measure)
        meas_np = {k: np.asarray(v) for k, v in (meas or {}).items()}
        yield Block(first, state, info, meas_np)
        done += n


def generate(
    key: Array,
    theory: Any,
    config: hmc.HMCConfig,
    *,
    n_chains: int = 1,
    n_traj: int = 1000,
    n_therm: int = 100,
    start: str = "hot",
    measure: Callable[[Array], Any] | None = None,
    block_size: int = 100,
    dtype: Any = None,
    progress: Callable[[int, int, Block], None] | None = None,
) -> dict[str, np.ndarray]:
    """Thermalise and run ``n_chains`` chains for ``n_traj`` trajectories, returning measurements.

    Thermalisation trajectories (``n_therm``, indices ``0 .. n_therm-1``) are discarded; recorded
    trajectories carry indices ``n_therm ..``.  Returns numpy arrays of shape ``(n_chains, n_traj)``
    for every measurement plus ``delta_H``, ``accepted``; and ``links`` with the final configurations.
    ``progress(done, total, block)`` is called after every block (thermalisation included).
    """
    if n_chains < 1:
        raise ValueError(f"n_chains must be >= 1, got {n_chains}")
    if n_therm < 0:
        raise ValueError(f"n_therm must be >= 0, got {n_therm}")
    links = initial_links(key, theory, n_chains, start, dtype)
    total = n_therm + n_traj
    out: dict[str, list[np.ndarray]] = {}
    done = 0
    for blk in run_blocks(key, theory, config, links, total, block_size=block_size, measure=measure):
        n = blk.info.delta_H.shape[1]
        links = blk.state.links
        keep = slice(max(0, n_therm - blk.first), n)
        if keep.start < n:
            cols = dict(blk.measurements)
            cols["delta_H"] = np.asarray(blk.info.delta_H)
            cols["accepted"] = np.asarray(blk.info.accepted)
            for k, v in cols.items():
                out.setdefault(k, []).append(v[:, keep])
        done += n
        if progress is not None:
            progress(done, total, blk)
    result = {k: np.concatenate(v, axis=1) for k, v in out.items()}
    result["links"] = np.asarray(links)
    return result
