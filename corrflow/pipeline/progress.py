"""One progress protocol for every entry point: rich bars and log lines on a terminal, quiet in tests.

    progress = Progress(console)            # rich.console.Console: bars (terminal only) and log lines
    progress = Progress()                   # quiet (tests, library use)
    progress.update("hmc_base", done, total, "acc 0.91")
    progress.finish("hmc_base")             # closes the bar of that stage
    progress.log("  train: 10 epochs ...")  # one line (rich markup)
    with progress.stage("measure base") as tick:   # the same as a context manager
        tick(done, total)

Bars appear on the first ``update`` of a stage (so early errors print cleanly), are transient, and are shown only
when the console is a terminal; log lines always go to the console.  Off a terminal (a batch job's log file) a stage
that runs longer than ``log_every`` seconds (30) prints a plain line ``<stage>: done/total (p%) ...`` every
``log_every`` seconds and one when it finishes; shorter stages print nothing.  ``on_update(stage, done, total, extra)``
receives every update as well (for callers that keep their own accounting, e.g. tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..runtime import check_interrupt

__all__ = ["Progress"]

_LABELS = {"hmc_base": "HMC base", "hmc_independent": "HMC independent", "hmc_training": "HMC training chain",
           "train": "train flow", "flow": "apply flow", "direct": "direct weights"}


class Progress:
    """Progress bars per stage and log lines (see the module docstring).

    Parameters
    ----------
    console : rich.console.Console, optional
        Where bars and log lines go; ``None``: silent.
    on_update : callable ``(stage, done, total, extra)``, optional
        Called on every update (also when silent).
    transient : bool
        Remove a stage's bar when it finishes (analyses) or keep it (single commands).
    log_every : float
        Off a terminal: seconds between the plain progress lines of a stage (module docstring).
    """

    def __init__(self, console: Any = None, on_update: Callable[[str, int, int, str], None] | None = None, *,
                 transient: bool = True, log_every: float = 30.0) -> None:
        self.console = console
        self.on_update = on_update
        self.transient = transient
        self.log_every = float(log_every)
        self._logged: dict[str, tuple[float, bool, str]] = {}  # off a terminal: last line's time, any line, last text
        self._prog: Any = None
        self._tasks: dict[str, Any] = {}
        self._units: dict[str, str] = {}
        self._start: dict[str, tuple[float, int]] = {}

    @property
    def quiet(self) -> bool:
        return self.console is None

    def _bars(self) -> Any:
        if self._prog is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._prog = RichProgress(TextColumn("  [bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[extra]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                      console=self.console, transient=self.transient,
                                      disable=not self.console.is_terminal)
            self._prog.start()
        return self._prog

    def update(self, stage: str, done: int, total: int, extra: str = "") -> None:
        """``done`` of ``total`` units of ``stage`` are finished (``extra``: a short status text).  Raises
        ``KeyboardInterrupt`` after a Ctrl-C that Python lost (:func:`corrflow.runtime.check_interrupt`)."""
        check_interrupt()
        if self.on_update is not None:
            self.on_update(stage, done, total, extra)
        if self.console is None:
            return
        unit = self._units.get(stage)
        if unit:  # the rate since the first update of the stage (which may include compilation)
            t0, d0 = self._start.setdefault(stage, (time.perf_counter(), done))
            if done > d0:  # two significant digits below 10/s (a slow 4D step showed "0 traj/s")
                rate = (done - d0) / max(time.perf_counter() - t0, 1e-9)
                extra = f"{rate:.0f} {unit}  {extra}" if rate >= 10 else f"{rate:.2g} {unit}  {extra}"
        if not self.console.is_terminal:
            self._log_line(stage, done, total, extra)
            return
        prog = self._bars()
        if stage not in self._tasks:
            self._tasks[stage] = prog.add_task(_LABELS.get(stage, stage), total=total, extra=extra)
        prog.update(self._tasks[stage], completed=done, total=total, extra=extra)

    def _log_line(self, stage: str, done: int, total: int, extra: str) -> None:
        """Off a terminal: a plain line every ``log_every`` seconds of a stage (none in its first ``log_every``)."""
        now = time.perf_counter()
        text = f"  {_LABELS.get(stage, stage)}: {done}/{total}" + (f" ({100 * done / total:.0f}%)" if total else "")
        text += f"  {extra}" if extra else ""
        last, any_line, _ = self._logged.setdefault(stage, (now, False, ""))
        if now - last >= self.log_every:
            self.console.print(text, highlight=False)
            self._logged[stage] = (now, True, "")
        else:
            self._logged[stage] = (last, any_line, text)

    def finish(self, stage: str) -> None:
        """Close the bar of ``stage`` (no-op if it has none); off a terminal, the stage's last state when it printed
        progress lines."""
        _, any_line, pending = self._logged.pop(stage, (0.0, False, ""))
        if any_line and pending and self.console is not None:
            self.console.print(pending, highlight=False)
        self._units.pop(stage, None)
        self._start.pop(stage, None)
        if self._prog is not None and stage in self._tasks:
            task = self._tasks.pop(stage)
            if self.transient:
                self._prog.remove_task(task)
        if self._prog is not None and not self._tasks:
            self._prog.stop()
            self._prog = None

    def log(self, message: str) -> None:
        """One line (rich markup) on the console."""
        if self.console is not None:
            self.console.print(message)

    @contextmanager
    def stage(self, stage: str, unit: str = "") -> Iterator[Callable[..., None]]:
        """``with progress.stage(name) as tick: tick(done, total[, extra])``; the bar closes on exit.  With
        ``unit`` (e.g. ``"traj/s"``) the bar shows the rate."""
        if unit:
            self._units[stage] = unit
        try:
            yield lambda done, total, extra="": self.update(stage, done, total, extra)
        finally:
            self.finish(stage)


def as_progress(progress: Any) -> Progress:
    """``None`` (quiet), a :class:`Progress`, a ``rich.console.Console`` or a callable ``(stage, done, total,
    extra)`` as a :class:`Progress`."""
    if progress is None:
        return Progress()
    if isinstance(progress, Progress):
        return progress
    if hasattr(progress, "print") and hasattr(progress, "is_terminal"):
        return Progress(progress)
    if callable(progress):
        return Progress(on_update=progress)
    raise TypeError("progress must be None, a corrflow.pipeline.Progress, a rich Console or a callable "
                    "(stage, done, total, extra)")
