"""Post-hoc measurement of observables on stored configurations (``corrflow measure``).

Reads committed configurations chunk by chunk, evaluates the observables with one jitted, vmapped
function, and appends the results to the store.  Resumable: each observable records how many
trajectories it covers, so a rerun (after an interruption or after the ensemble was extended)
measures only what is missing.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .generate import measurements_from_names
from .groups import get_group

__all__ = ["measure_stored", "MeasureSummary"]


class MeasureSummary(NamedTuple):
    name: str
    measured: dict[str, int]  # observable -> new trajectories measured
    skipped: list[str]  # observables recorded during generation


@partial(jax.jit, static_argnames=("measure",))
def _eval(links: jax.Array, measure: Any) -> Any:
    return measure(links)


def measure_stored(
    store: Any,
    name: str,
    observables: Sequence[str],
    *,
    batch: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> MeasureSummary:
    """Measure ``observables`` on every committed configuration of ensemble ``name`` not yet measured.

    ``observables``: names accepted by :func:`corrflow.generate.measurements_from_names`.  Values are
    stored as ``(chain, traj)`` arrays named after the observable.  ``progress(done, total)`` counts
    configurations.
    """
    spec = store.spec(name)
    group = get_group(spec.group)
    measurements_from_names(group, observables, len(spec.shape))  # validate names early
    skipped = [o for o in observables if o in spec.measurements]
    todo = [o for o in dict.fromkeys(observables) if o not in spec.measurements]
    new: dict[str, int] = {}
    if not todo:
        return MeasureSummary(name, new, skipped)
    with store.writer(name) as w:
        n = w.committed
        done = w.measured_observables()
        starts = {o: done.get(o, 0) for o in todo}
        first = min(starts.values())
        total = (n - first) * spec.n_chains
        counted = 0
        links_arr = w.group["links"]
        for lo in range(first, n, batch):
            hi = min(n, lo + batch)
            need = [o for o in todo if starts[o] < hi]
            measure = measurements_from_names(group, need, len(spec.shape))
            vals: dict[str, list[np.ndarray]] = {o: [] for o in need}
            for c in range(spec.n_chains):
                u = jnp.asarray(links_arr[c, lo:hi])
                out = _eval(u, measure)
                for o in need:
                    vals[o].append(np.asarray(out[o]))
                counted += hi - lo
                if progress is not None:
                    progress(counted, total)
            for o in need:
                block = np.stack(vals[o])  # (chains, hi - lo)
                s = starts[o]
                w.write_observable(o, block[:, s - lo:], s)
                new[o] = new.get(o, 0) + hi - s
                starts[o] = hi
    return MeasureSummary(name, new, skipped)
