"""The cost ledger: one definition of what a step costs, for every analysis and benchmark.

Definition (:data:`COST_DEFINITION`)
------------------------------------
The cost of a step is its **steady-state wall-clock time with JIT compilation excluded**: a step reports
progress after every unit of work (an HMC block, a training epoch, a batch of flowed configurations, a batch
of measurements); the rate between the first and the last report, times the units the step did, is its cost.
The first unit, which pays for compiling the step's program, therefore does not count — compilation is a
one-time cost per program and shape that a production run amortises (and that a shared program, e.g. the
independent HMC reusing the base's, pays only once).  Compilation *between* the first and the last report (a
short last block of an HMC chain runs another compiled program) is subtracted: the process's JAX compile time is
read from ``jax.monitoring`` events (:func:`compile_seconds`).  A step with fewer than two reports is charged its
wall time less the compilation recorded during it.  Wall times with compilation are recorded beside the costs
(``wall``).

Reuse: a step found done in the store (an ensemble, a trained flow, a flowed ensemble, a measurement) is
charged the cost recorded when it ran, scaled by the fraction of its configurations that the analysis uses;
a step extended (more trajectories, more epochs) adds the new cost to the recorded one.  A training run is
always charged in full, also when the flow is reused (the cost of the method includes training it once).
An ensemble made outside the flow directory (``corrflow generate``, another pipeline) is charged the generation
cost its commit record carries (``cost_s``: the same definition, production blocks only; the thermalisation is
added at the production rate per trajectory, :func:`corrflow.pipeline.ensembles.recorded_cost`).  A step whose cost
was never recorded anywhere (an import, an ensemble older than the record) costs NaN and analyses say so.  Costs
persist in ``<flow dir>/workflow_timings.json`` next to the checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["COST_DEFINITION", "Clock", "CostLedger", "compile_seconds"]

COST_DEFINITION = ("steady-state wall-clock seconds with JIT compilation excluded (rate between the first and "
                   "the last progress report of a step, less the compilation between them, times its work); reused "
                   "steps are charged their recorded cost scaled to the configurations used; training is charged in "
                   "full")

LEDGER_FILE = "workflow_timings.json"


#: ``jax.monitoring`` duration events that together are the time spent making a program: tracing, lowering to MLIR
#: and the backend's compilation (each fired once per new program and shape).
COMPILE_EVENTS = frozenset({"/jax/core/compile/jaxpr_trace_duration",
                            "/jax/core/compile/jaxpr_to_mlir_module_duration",
                            "/jax/core/compile/backend_compile_duration"})
_compile_total = [0.0]
_listening = [False]


def _on_duration(event: str, seconds: float, **_: Any) -> None:
    if event in COMPILE_EVENTS:
        _compile_total[0] += float(seconds)


def compile_seconds() -> float:
    """Seconds this process has spent tracing, lowering and compiling JAX programs since the ledger first asked
    (a listener on ``jax.monitoring`` duration events, :data:`COMPILE_EVENTS`, registered on the first call; 0
    growth if a jax version renames the events, which makes the costs the plain rates again)."""
    if not _listening[0]:
        import jax.monitoring

        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        _listening[0] = True
    return _compile_total[0]


class Clock:
    """Wall time of one step and its steady-state cost (compilation excluded; module docstring).

    ``tick(done)`` after each unit of work; ``cost(total)`` = rate between the first and last tick, less the
    compilation between them, x ``total`` (the wall time less its compilation with fewer than two ticks).
    """

    def __init__(self) -> None:
        self.c0 = compile_seconds()
        self.t0 = time.perf_counter()
        self.ticks: list[tuple[float, float, float]] = []  # (time, compile seconds so far, units done)

    def tick(self, done: float) -> None:
        self.ticks.append((time.perf_counter(), compile_seconds(), float(done)))

    @property
    def wall(self) -> float:
        return time.perf_counter() - self.t0

    @property
    def compile(self) -> float:
        """Seconds of JAX compilation since the clock started."""
        return compile_seconds() - self.c0

    def cost(self, total: float) -> float:
        if len(self.ticks) >= 2:
            (ta, ca, da), (tb, cb, db) = self.ticks[0], self.ticks[-1]
            busy = (tb - ta) - (cb - ca)
            if db > da and busy > 0:
                return busy / (db - da) * float(total)
        return max(self.wall - self.compile, 0.0)


class CostLedger:
    """Recorded costs per step key (``hmc/<ensemble>``, ``train/<checkpoint>``, ``flow/<ensemble>``,
    ``direct/<ensemble>``, ``measure/<ensemble>/<what>``), kept in a JSON file.

    Each entry: ``seconds`` (cost, module definition), ``wall`` (with compilation) and ``n`` (configurations per
    chain, or training configurations, that the step covers).
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.data: dict[str, Any] = {}
        if self.path is not None and self.path.exists():
            try:
                self.data = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):
                self.data = {}  # an unreadable ledger only loses cost information

    @classmethod
    def in_directory(cls, directory: str | Path) -> "CostLedger":
        return cls(Path(directory) / LEDGER_FILE)

    def _entry(self, key: str) -> dict[str, Any]:
        v = self.data.get(key)
        return v if isinstance(v, dict) else {}

    def seconds(self, key: str) -> float:
        """Recorded cost of ``key`` (NaN if never recorded)."""
        return float(self._entry(key).get("seconds", math.nan))

    def wall(self, key: str) -> float:
        return float(self._entry(key).get("wall", math.nan))

    def count(self, key: str) -> int:
        return int(self._entry(key).get("n", 0))

    def cost(self, key: str, n_used: int | None = None) -> float:
        """Cost of ``key`` scaled to ``n_used`` of the ``n`` configurations it covers (all if None)."""
        s, n = self.seconds(key), self.count(key)
        if n_used is None or n <= 0:
            return s
        return s * min(1.0, n_used / n)

    def record(self, key: str, seconds: float, wall: float, n: int, *, accumulate: bool = False) -> None:
        """Record the cost of a step that now covers ``n`` configurations (added to the earlier cost when
        ``accumulate``: the step extended an earlier one)."""
        prev, prev_wall = (self.seconds(key), self.wall(key)) if accumulate else (0.0, 0.0)
        self.data[key] = {"seconds": float(seconds) + (prev if math.isfinite(prev) else math.nan),
                          "wall": float(wall) + (prev_wall if math.isfinite(prev_wall) else math.nan),
                          "n": int(n)}
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)
