"""Ensemble generation into the store: the driver behind ``corrflow generate`` and the pipeline's
ensure-ensemble step.

The Markov chains themselves are :func:`corrflow.generate.run_blocks` (pure, jitted blocks); this module
creates / validates the stored ensemble, checkpoints thermalisation, appends and commits each block, and
resumes bit-identically after an interruption.  Each commit also records the generation cost of the stored
configurations (``cost_s`` in the commit record: steady-state seconds of the production blocks, compilation
excluded, as the cost ledger defines costs; summed over resumed runs, unknown once a run did not record it).
:func:`recorded_cost` turns it into the ledger's charge for an ensemble the pipeline did not make itself.
"""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import hmc
from ..generate import initial_links, measurements_from_names, run_blocks
from .ledger import Clock

__all__ = ["GenerationSummary", "generate_to_store", "recorded_cost"]


class GenerationSummary(NamedTuple):
    """What :func:`generate_to_store` did."""

    name: str
    n_new: int
    committed: int
    acceptance: float
    plaquette: float
    seconds: float


def recorded_cost(store: Any, name: str, n_used: int | None = None) -> float:
    """The cost ledger's charge (:mod:`corrflow.pipeline.ledger`) for the first ``n_used`` configurations per chain
    of a stored ensemble, from the generation cost in its commit record (``cost_s``, written by ``corrflow generate``
    and every :func:`generate_to_store`): the production seconds plus the thermalisation at the production rate per
    trajectory, ``cost_s (n_therm + n thin) / (n thin)`` for ``n`` committed configurations, scaled by
    ``min(1, n_used / n)`` -- what the ledger records for an ensemble the pipeline generates.  NaN when the cost was
    not recorded (imports, ensembles older than the record, appends without it)."""
    return _ledger_charge(store.info(name), n_used)


def _ledger_charge(info: dict[str, Any], n_used: int | None = None) -> float:
    n, cost = int(info["committed"]), info["cost_s"]
    if cost is None or n <= 0:
        return float("nan")
    production = n * int(info["thin"])
    total = float(cost) * (int(info["n_therm"]) + production) / production
    return total if n_used is None else total * min(1.0, n_used / n)


def recorded_cost_per_configuration(info: dict[str, Any]) -> float:
    """:func:`recorded_cost` of a stored ensemble divided by its configurations (all chains), from its
    ``EnsembleStore.info`` record: the seconds the cost ledger charges for one configuration (thermalisation
    included at the production rate); NaN when not recorded.  ``corrflow info`` and the derivative's cost at equal
    cost use this one definition."""
    n = int(info["committed"]) * int(info["n_chains"])
    return _ledger_charge(info) / n if n > 0 else float("nan")


# the `corrflow generate` option behind each field of an ensemble's recipe (EnsembleSpec.differences), so that a
# refused --resume says which option to change
_GENERATE_OPTIONS = {"n_therm": "--therm", "thin": "--thin", "seed": "--seed", "n_chains": "--chains",
                     "dtype": "--precision", "measurements": "--observables", "shape": "--shape",
                     "hmc.step_size": "--step-size", "hmc.n_steps": "--n-steps", "hmc.integrator": "--integrator",
                     "hmc.jitter": "--jitter",
                     "hmc.algorithm": "--algorithm", "hmc.n_overrelax": "--overrelax",
                     "hmc.fermion_det": "--fermion-det",
                     "beta": "--beta", "xi": "--xi", "lam": "--lam", "mass": "--mass", "kappa": "--kappa"}


def _with_option(difference: str) -> str:
    """``"n_therm: stored 10 vs requested 100"`` -> ``"n_therm (--therm): stored 10 vs requested 100"``."""
    key, _, rest = difference.partition(":")
    opt = _GENERATE_OPTIONS.get(key)
    return f"{key} ({opt}):{rest}" if opt else difference


def generate_to_store(
    store: Any,
    name: str,
    theory: Any,
    config: hmc.HMCConfig,
    *,
    n_traj: int,
    n_chains: int = 1,
    seed: int = 0,
    n_therm: int = 100,
    thin: int = 1,
    block_size: int = 100,
    start: str = "hot",
    dtype: Any = None,
    observables: Sequence[str] = ("plaquette",),
    resume: bool = False,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> GenerationSummary:
    """Generate (or resume / extend) ensemble ``name`` in ``store`` (an open store, or a path that
    :func:`corrflow.open_store` opens for writing) until it holds ``n_traj`` stored trajectories per chain.

    The ensemble is created on first use.  If it exists, every defining parameter (theory, shape,
    action parameters, chains, seed, dtype, HMC settings, thermalisation, thinning, observables)
    must match, and ``resume=True`` is required; the run then continues from the last committed
    trajectory and is bit-identical to an uninterrupted run; one that already holds ``n_traj`` or more is
    left as it is (``n_new == 0``, NaN acceptance and plaquette), so a requeued job may rerun the command.
    Each block is appended and committed before the next one starts.  ``progress(done, total, stats)``
    receives the trajectory counts (thermalisation included) and the block's acceptance and mean plaquette.
    ``mesh``: run the chains sharded over devices (see :func:`run_blocks`); it is not part of the ensemble's
    definition (a ``"chains"`` mesh gives bit-identical results), so a run may be resumed with or without one.
    """
    import time as _time

    from ..store import EnsembleSpec, StoreError, check_name, open_store

    if isinstance(store, (str, os.PathLike)):  # a path: the store there ('str' object has no attribute 'writer')
        store = open_store(store, "a")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):  # a PRNG key failed deep in JAX
        raise TypeError(f"seed must be an integer (the chains' keys derive from it), got {type(seed).__name__}")
    if n_traj < 1:
        raise ValueError(f"n_traj must be >= 1, got {n_traj}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if start not in ("hot", "cold"):
        raise ValueError(f"start must be 'hot' or 'cold', got {start!r}")
    if not isinstance(config, hmc.HMCConfig):
        from ..heatbath import HeatbathConfig, _check_theory

        if not isinstance(config, HeatbathConfig):
            raise TypeError(f"config must be an HMCConfig or a HeatbathConfig, got {type(config).__name__}")
        _check_theory(theory)  # before the store is touched
    check_name(name)
    stored = store.spec(name) if name in store else None  # (read once: the jitter below, the refusal further on)
    if isinstance(config, hmc.HMCConfig) and config.jitter is None:  # new ensemble: the default; else the stored
        config = hmc.resolve_jitter(config, None if stored is None else stored.hmc)
    obs_names = tuple(dict.fromkeys(("plaquette",) + tuple(observables)))
    measure = measurements_from_names(theory.group, obs_names, theory.ndim, shape=theory.shape)
    if dtype is None:
        dtype = jnp.float64 if theory.group.is_abelian else jnp.complex128
    hmc_settings = config.as_dict()
    if not isinstance(config, hmc.HMCConfig):
        hmc_settings["algorithm"] = "heatbath"
    if hasattr(theory, "det"):  # fermion algorithm settings are part of the HMC recipe
        hmc_settings.update(fermion_det=theory.det, even_odd=bool(theory.even_odd), cg_tol=float(theory.cg_tol))
    spec = EnsembleSpec(theory=theory.theory_name, group=theory.group.name, shape=theory.shape,
                        params=theory.params(), n_chains=n_chains, seed=seed, dtype=np.dtype(dtype).name,
                        hmc=hmc_settings, n_therm=n_therm, thin=thin, measurements=obs_names)

    def refuse_existing(stored: EnsembleSpec, rec: dict) -> None:
        diffs = [_with_option(d) for d in stored.differences(spec)]
        if diffs:
            raise StoreError(f"ensemble {name!r} exists with different settings: " + "; ".join(diffs)
                             + ". Use the stored settings to extend it, or choose another --name.")
        started = int(rec["committed"]) > 0 or int(rec.get("slot", -1)) >= 0
        if started and not resume:
            raise StoreError(f"ensemble {name!r} already exists with {rec['committed']} trajectories per chain; pass "
                             "--resume to continue or extend it, or choose another --name")

    def up_to_date(committed: int) -> GenerationSummary:
        return GenerationSummary(name, 0, committed, float("nan"), float("nan"), _time.perf_counter() - t_start)

    t_start = _time.perf_counter()
    if stored is not None:  # refuse before taking the lock: a refused command changes nothing
        rec = store.commit(name)
        refuse_existing(stored, rec)
        if int(rec["committed"]) >= n_traj:  # a finished run resumed again (e.g. a requeued job): nothing to do
            return up_to_date(int(rec["committed"]))
    # one block per chunk (up to 64 MB): appends write whole chunks, no read-modify-write
    cfg_bytes = int(np.prod(theory.link_shape)) * np.dtype(dtype).itemsize
    chunk_traj = max(1, min(block_size, (64 << 20) // cfg_bytes))
    key = jax.random.PRNGKey(seed)
    # created (atomically) under the writer lock if absent; the remains of an interrupted creation are removed
    with store.writer(name, create=spec, chunk_traj=chunk_traj) as w:
        if not w.created:  # checked again under the lock (another process may have written meanwhile)
            refuse_existing(w.spec, w.commit_record)
            if w.committed >= n_traj:
                return up_to_date(w.committed)
        committed0 = w.committed
        w.set_target(n_traj)
        w.reserve(n_traj)
        state = w.resume_state()
        if state is None:
            links, action, next_traj = initial_links(key, theory, n_chains, start, dtype), None, 0
        else:
            links, action, next_traj = state
        total = n_therm + n_traj * thin
        # thermalisation (checkpointed after every block)
        if next_traj < n_therm:
            for blk in run_blocks(key, theory, config, links, n_therm - next_traj, block_size=block_size,
                                  first_index=next_traj, action=action, mesh=mesh):
                links, action = blk.state.links, blk.state.action
                next_traj = int(blk.traj[-1]) + 1
                w.save_checkpoint(np.asarray(links), np.asarray(action), next_traj,
                                  "therm" if next_traj < n_therm else "production")
                if progress is not None:
                    progress(next_traj, total, {"acceptance": float(np.mean(blk.info.accepted)),
                                                "plaquette": float("nan")})
        acc, plaq = [], []
        remaining = n_traj - w.committed
        cost0 = w.recorded_cost  # of the stored configurations; NaN if an earlier run did not record it
        clock, done = Clock(), 0
        for blk in run_blocks(key, theory, config, links, remaining, block_size=block_size, first_index=next_traj,
                              measure=measure, thin=thin, keep_links=True, action=action, mesh=mesh):
            per = {k: np.asarray(v) for k, v in blk.measurements.items()}
            per["action"] = np.asarray(blk.action)
            per["delta_H"] = np.asarray(blk.info.delta_H)
            per["accepted"] = np.asarray(blk.info.accepted)
            per["step_size"] = np.asarray(blk.info.step_size, np.float64)  # each trajectory's (jitter: drawn)
            blk_links = np.asarray(blk.links)
            if not np.all(np.isfinite(blk_links)):
                raise FloatingPointError(f"non-finite links in the block starting at trajectory {blk.first}; "
                                         "nothing of this block was stored. Reduce the step size.")
            next_traj = int(blk.traj[-1]) + 1
            done += len(blk.traj)
            clock.tick(done)
            cost = cost0 + clock.cost(done)
            w.append(blk.traj, blk_links, per, next_traj, cost_s=cost if np.isfinite(cost) else None)
            acc.append(per["accepted"].mean())
            plaq.append(per["plaquette"].mean())
            if progress is not None:
                progress(next_traj, total, {"acceptance": float(acc[-1]), "plaquette": float(plaq[-1])})
        committed = w.committed
    return GenerationSummary(name, committed - committed0, committed, float(np.mean(acc)) if acc else float("nan"),
                             float(np.mean(plaq)) if plaq else float("nan"), _time.perf_counter() - t_start)
