"""Evaluations in batches that survive interruption, for the long per-configuration passes of the tangent estimator
(:mod:`corrflow.tangent.terms`) in ``corrflow derivative`` and in the analyses.

``run_in_batches(path, key, outputs, compute)`` calls ``compute(resume, on_batch)``; ``on_batch(stop, flat)`` saves
the flat ``outputs`` of configurations ``0 .. stop - 1`` as one atomic checkpoint (:mod:`corrflow.store.checkpoints`,
pickle-free) with ``key`` and the seconds they cost (the ledger's definition, :mod:`corrflow.pipeline.ledger`;
resumed seconds kept) -- at most every :data:`SAVE_EVERY` seconds, and when ``compute`` returns or is interrupted
(Ctrl-C, an error), so an interruption keeps every finished batch and a ``kill -9`` at most the last
:data:`SAVE_EVERY` seconds.  (Saving after every batch rewrote all terms each time: quadratic in the ensemble, 40000
configurations of 2D U(1) took 2.5-4x their compute time.)  Called again with the same ``key`` after an interruption it
passes the saved arrays as ``resume``, so the evaluation continues at the first configuration not done.  Outputs
saved under another key are recomputed and replaced; a damaged checkpoint is recomputed with a warning.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..store.checkpoints import CheckpointError, has_checkpoint, read_checkpoint, write_checkpoint
from .ledger import Clock

__all__ = ["SAVE_EVERY", "run_in_batches", "saved_batches"]

#: seconds between two checkpoints of the terms (module docstring)
SAVE_EVERY = 20.0


def saved_batches(path: Path, key: dict[str, Any], outputs: tuple[str, ...]) -> tuple[tuple[np.ndarray, ...], float]:
    """The flat ``outputs`` of the first configurations saved in ``path`` under the same ``key``, and the seconds they
    cost (NaN if not recorded); ``((), 0.0)`` when there are none, they belong to another key, or the checkpoint is
    damaged (warned)."""
    none: tuple[tuple[np.ndarray, ...], float] = ((), 0.0)
    if not has_checkpoint(path):
        return none
    try:
        meta, arrays = read_checkpoint(path, "checkpoint of batched terms")
    except CheckpointError as exc:
        warnings.warn(f"{exc}; computing the terms again", RuntimeWarning, stacklevel=3)
        return none
    if {k: meta.get(k) for k in key} != json.loads(json.dumps(key)) or set(arrays) != set(outputs):
        return none
    flat = tuple(arrays[k] for k in outputs)
    if len({a.shape[0] if a.ndim else -1 for a in flat}) != 1 or flat[0].shape[0] != meta.get("done"):
        return none
    cost = meta.get("cost_s")
    return flat, float(cost) if isinstance(cost, (int, float)) else float("nan")


def run_in_batches(path: Path, key: dict[str, Any], outputs: tuple[str, ...],
                   compute: Callable[[tuple[np.ndarray, ...], Callable[[int, list[np.ndarray]], None]], Any]
                   ) -> tuple[Any, float, int]:
    """Run ``compute(resume, on_batch)`` (module docstring), resuming from the outputs saved in ``path`` under
    ``key``.  Returns ``(what compute returned, seconds of all its configurations, configurations resumed)``."""
    resume, resumed_cost = saved_batches(path, key, outputs)
    first = len(resume[0]) if resume else 0
    clock = Clock()
    batches = [0]  # run here

    # the clock counts batches, not configurations: a padded last batch costs a whole batch (counted as its few
    # configurations it made the rate -- and every cost -- up to batch/k times too high)
    def seconds(n_batches: int) -> float:  # cost of the configurations done after ``n_batches`` batches
        return resumed_cost + (clock.cost(n_batches) if n_batches > 0 else 0.0)

    pending: list[tuple[int, int, list[np.ndarray]]] = []
    last_save = [time.monotonic()]

    def save() -> None:
        stop, n_batches, flat = pending.pop()
        cost = seconds(n_batches)
        write_checkpoint(path, {**key, "done": int(stop), "cost_s": cost if np.isfinite(cost) else None},
                         dict(zip(outputs, flat)))
        last_save[0] = time.monotonic()

    def on_batch(stop: int, flat: list[np.ndarray]) -> None:
        batches[0] += 1
        clock.tick(batches[0])
        pending[:] = [(stop, batches[0], flat)]
        if time.monotonic() - last_save[0] >= SAVE_EVERY:
            save()

    try:
        result = compute(resume, on_batch)
    finally:  # the last finished batch, also after Ctrl-C or an error
        if pending:
            save()
    return result, seconds(batches[0]), first
