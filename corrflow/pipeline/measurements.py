"""Post-hoc measurement of observables on stored configurations (``corrflow measure``).

Reads committed configurations chunk by chunk, evaluates the observables with one jitted, vmapped
function, and appends the results to the store.  Resumable: each observable records how many
trajectories it covers, so a rerun (after an interruption or after the ensemble was extended)
measures only what is missing.

``wilson_flow`` (SU(N)) integrates the Wilson flow of every configuration (:mod:`corrflow.observables.gradient_flow`)
and stores ``flow_E_plaq``, ``flow_E_clov`` (and, in 4D, ``flow_Q``) with dims ``(chain, traj, flow_time)``;
the flow-time grid is set by :class:`WilsonFlowGrid` (default: up to ``sqrt(8 t) = L_min / 2``; with
``at_least`` a longer grid already stored is used as it is, :func:`choose_flow_grid`).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..flows.batches import pad_rows
from ..generate import measurements_from_names
from ..groups import get_group

__all__ = ["map_batches", "measure_stored", "MeasureSummary", "WilsonFlowGrid", "choose_flow_grid", "describe_grid",
           "FLOW_OBSERVABLE", "flow_observable_names"]

FLOW_OBSERVABLE = "wilson_flow"


class WilsonFlowGrid(NamedTuple):
    """Flow-time grid of the ``wilson_flow`` measurement: step ``eps``, a measurement every ``every`` and the
    end ``t_max`` (``None``: the largest multiple of ``every`` with ``sqrt(8 t) <= L_min / 2``, i.e. the smoothing
    radius reaches half the shortest extent).  ``at_least``: ``t_max`` is a minimum (an automatic flow length, e.g.
    the analyses' ``--flow-t-max 0``): an ensemble that already stores the flow on a grid with the same spacing that
    reaches at least as far keeps it (:func:`choose_flow_grid`; the integrator step must still agree)."""

    t_max: float | None = None
    eps: float = 0.02
    every: float = 0.1
    at_least: bool = False

    def grid(self, shape: Sequence[int]) -> np.ndarray:
        """Flow times of the measurements ``(n + 1,)``: ``0, every, ..., n every``.  Raises ``ValueError`` (in the
        terms of ``corrflow measure``'s ``--flow-*`` options) for settings the integrator cannot follow."""
        for flag, x in (("--flow-t-max", self.t_max), ("--flow-eps", self.eps), ("--flow-every", self.every)):
            if x is not None and not (np.isfinite(x) and x > 0):
                raise ValueError(f"wilson_flow: {flag} must be a finite flow time > 0, got {x}")
        t_max = self.t_max if self.t_max is not None else min(shape) ** 2 / 32.0
        n = int(np.floor(t_max / self.every + 1e-9))
        if n < 2:
            raise ValueError(f"wilson_flow: --flow-t-max {t_max:g} gives fewer than 2 measurements with --flow-every "
                             f"{self.every:g}")
        steps = self.every / self.eps
        if abs(steps - round(steps)) > 1e-9:
            raise ValueError(f"wilson_flow: --flow-every {self.every:g} must be a multiple of --flow-eps {self.eps:g} "
                             "(the measurements sit on integrator steps)")
        return np.arange(n + 1) * self.every


def choose_flow_grid(flow: WilsonFlowGrid, shape: Sequence[int], stored: Sequence[float] | None = None) -> np.ndarray:
    """The flow-time grid to measure on for an ensemble of ``shape`` whose stored ``wilson_flow`` (if any) sits on
    the flow times ``stored``: ``flow.grid(shape)``, or -- with ``flow.at_least`` -- the stored grid where it starts
    at 0, has the spacing ``flow.every`` and reaches at least ``flow.grid(shape)[-1]``.  Any other stored grid is
    left to :func:`measure_stored` to refuse; the integrator step is checked there too."""
    grid = flow.grid(shape)
    if not flow.at_least or stored is None or len(stored) < 2:
        return grid
    t = np.asarray(stored, float)
    uniform = np.allclose(t, np.arange(t.size) * flow.every, rtol=0, atol=1e-9)
    return t if uniform and t[-1] >= grid[-1] - 1e-9 else grid


def describe_grid(t: Sequence[float]) -> str:
    """``t = 0 .. 0.5 every 0.1`` for a uniform flow-time grid."""
    t = np.asarray(t, float)
    return f"t = {t[0]:g} .. {t[-1]:g} every {t[1] - t[0]:g}" if t.size > 1 else f"t = {t.tolist()}"


def flow_observable_names(ndim: int) -> list[str]:
    """Stored names of the ``wilson_flow`` measurement."""
    return ["flow_E_plaq", "flow_E_clov"] + (["flow_Q"] if ndim == 4 else [])


def _expand(observables: Sequence[str], ndim: int) -> list[str]:
    out: list[str] = []
    for o in observables:
        out += flow_observable_names(ndim) if o == FLOW_OBSERVABLE else [o]
    return list(dict.fromkeys(out))


def _flow_measure(u: jax.Array, group: Any, flow: WilsonFlowGrid, t_max: float) -> dict[str, jax.Array]:
    from ..observables.gradient_flow import wilson_flow

    h = wilson_flow(u, group, t_max, eps=flow.eps, measure_every=flow.every)
    out = {"flow_E_plaq": h.E_plaq, "flow_E_clov": h.E_clov}
    if u.shape[-3] == 4:
        out["flow_Q"] = h.Q
    return out


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
    flow: WilsonFlowGrid | None = None,
    replace: bool = False,
) -> MeasureSummary:
    """Measure ``observables`` on every committed configuration of ensemble ``name`` not yet measured.

    ``observables``: names accepted by :func:`corrflow.generate.measurements_from_names`, or ``wilson_flow``
    (SU(N); settings ``flow``, see the module docstring).  Scalar values are stored as ``(chain, traj)`` arrays
    named after the observable.  ``progress(done, total)`` counts configurations.  ``replace``: discard what is
    stored of ``observables`` (post-hoc measurements only) and measure every configuration anew, e.g. the Wilson
    flow on a longer flow-time grid; the discarded values are gone once the writer opens, the new ones are
    committed batch by batch as usual (an interrupted run resumes on the new grid).
    """
    spec = store.spec(name)
    group = get_group(spec.group)
    ndim = len(spec.shape)
    flow = flow or WilsonFlowGrid()
    gauge_names = [o for o in observables if o != FLOW_OBSERVABLE]
    measurements_from_names(group, gauge_names, ndim, shape=spec.shape)  # validate names early
    grid = None
    if FLOW_OBSERVABLE in observables:
        if group.is_abelian:
            raise ValueError("wilson_flow is implemented for SU(N) gauge fields, not U(1)")
        grid = flow.grid(spec.shape)
    flow_names = set(flow_observable_names(ndim)) if grid is not None else set()
    wanted = _expand(observables, ndim)
    skipped = [o for o in wanted if o in spec.measurements]
    todo = [o for o in wanted if o not in spec.measurements]
    new: dict[str, int] = {}
    if not todo:
        return MeasureSummary(name, new, skipped)
    with store.writer(name) as w:
        n = w.committed
        done = w.measured_observables()
        have = [o for o in todo if o in flow_names and done.get(o, 0)]
        if have and not replace:  # an automatic flow length keeps a longer stored grid
            grid = choose_flow_grid(flow, spec.shape, w.observable_coords(have[0]).get("flow_time"))
        for o in todo:  # a different flow-time grid or step than the stored one: refuse before computing anything
            if o in flow_names and done.get(o, 0) and not replace:
                stored = w.observable_coords(o).get("flow_time", [])
                if len(stored) != len(grid) or not np.allclose(stored, grid, rtol=0, atol=1e-12):
                    ask = f"{'need at least' if flow.at_least else 'ask for'} {describe_grid(grid)}"
                    every = f"{stored[1] - stored[0]:g}" if len(stored) > 1 else f"{flow.every:g}"
                    raise ValueError(f"{o} of {name!r} is stored on the flow-time grid {describe_grid(stored)}; these "
                                     f"settings {ask}: rerun with --flow-t-max {stored[-1]:g} --flow-every {every} "
                                     f"(the stored grid), or measure anew in a new store or with `corrflow measure "
                                     f"... wilson_flow --replace` (discards its {done[o]} stored measurements)")
                was = w.observable_settings(o)  # None: measured before the step was recorded, takes any
                if was is not None and was.get("flow_eps") != flow.eps:
                    eps = was.get("flow_eps")
                    raise ValueError(f"{o} of {name!r} was integrated with --flow-eps {eps}; these settings ask for "
                                     f"{flow.eps:g}: rerun with --flow-eps {eps} (the stored step), or measure anew "
                                     "in a new store or with `corrflow measure ... wilson_flow --replace` (discards "
                                     f"its {done[o]} stored measurements)")
        if replace:
            for o in todo:
                if done.get(o, 0):
                    w.remove_observable(o)
            done = w.measured_observables()
        starts = {o: done.get(o, 0) for o in todo}
        first = min(starts.values())
        total = (n - first) * spec.n_chains
        counted = 0
        links_arr = store.array(name, "links")  # a damaged chunk raises naming chain and trajectories
        size = min(batch, n - first)  # a short last block is padded: one compiled program (the Wilson flow's too)
        for lo in range(first, n, batch):
            hi = min(n, lo + batch)
            need = [o for o in todo if starts[o] < hi]
            g_need = [o for o in need if o not in flow_names]
            measure = measurements_from_names(group, g_need, ndim) if g_need else None

            def run(u: jax.Array) -> dict[str, jax.Array]:
                out = dict(_eval(u, measure)) if measure is not None else {}
                if any(o in flow_names for o in need):
                    out.update(_flow_measure(u, group, flow, float(grid[-1])))
                return out

            vals: dict[str, list[np.ndarray]] = {o: [] for o in need}
            for c in range(spec.n_chains):
                out = map_batches(run, links_arr[c, lo:hi], batch=size)
                for o in need:
                    vals[o].append(np.asarray(out[o]))
                counted += hi - lo
                if progress is not None:
                    progress(counted, total)
            for o in need:
                block = np.stack(vals[o])  # (chains, hi - lo[, n_flow_times])
                s = starts[o]
                flowed = o in flow_names
                w.write_observable(o, block[:, s - lo:], s, extra={"flow_time": grid} if flowed else None,
                                   settings={"flow_eps": float(flow.eps)} if flowed else None)
                new[o] = new.get(o, 0) + hi - s
                starts[o] = hi
    return MeasureSummary(name, new, skipped)


def map_batches(fn: Callable[[jax.Array], Any], links: np.ndarray, *, batch: int = 64,
                progress: Callable[[int, int], None] | None = None, resume: Sequence[np.ndarray] = (),
                on_batch: Callable[[int, list[np.ndarray]], None] | None = None,
                outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """``fn`` (jitted, ``(batch, ...) -> {name: (batch, ...)}`` or a tuple) over configurations ``links``
    ``(n, ...)`` in batches padded to ``batch`` with copies of the last configuration (fixed shapes: one compiled
    program for every call), results concatenated to ``(n, ...)`` (a tuple comes back as ``{"0": ..., "1": ...}``).
    ``progress(done, n)`` reports equal shares per padded batch (equal work, so a steady-state rate is exact).

    Interruption and resumption (the protocol of :mod:`corrflow.tangent.terms`, used by
    :meth:`corrflow.pipeline.Pipeline.measure_batches`): ``on_batch(stop, flat)`` after every batch with the
    results of configurations ``0 .. stop - 1`` in the order of the names ``outputs``; ``resume``, those results for
    the first ``m`` configurations, continues at configuration ``m`` (``fn`` must give each configuration's results
    from that configuration alone)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    n = len(links)
    names = None if outputs is None else tuple(outputs)
    if (len(resume) or on_batch is not None) and names is None:
        raise ValueError("resume and on_batch need the names of the outputs (outputs=...)")
    first = 0
    parts: list[dict[str, np.ndarray]] = []
    if len(resume):
        first = int(np.shape(resume[0])[0])
        if len(resume) != len(names) or any(np.shape(r)[0] != first for r in resume) or first > n:
            raise ValueError(f"resume needs the {len(names)} outputs {names} of the same first m <= {n} "
                             "configurations")
        parts.append({k: np.asarray(r) for k, r in zip(names, resume)})
    starts = range(first, n, batch)
    for i, lo in enumerate(starts):
        k = min(batch, n - lo)
        out = fn(jnp.asarray(pad_rows(links[lo:lo + batch], batch)))
        if not isinstance(out, dict):
            out = {str(j): v for j, v in enumerate(out)}
        parts.append({name: np.asarray(v)[:k] for name, v in out.items()})
        if on_batch is not None:  # everything so far as one array per output
            parts[:] = [{name: np.concatenate([p[name] for p in parts]) for name in parts[-1]}]
            on_batch(lo + k, [parts[0][name] for name in names])
        if progress is not None:
            progress(first + (n - first) * (i + 1) // len(starts), n)
    if not parts:
        raise ValueError("map_batches needs at least one configuration")
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[-1]}
