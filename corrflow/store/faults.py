"""Deterministic fault injection for crash tests: die exactly at a named point of a write protocol.

Set ``CORRFLOW_FAULT=<point>[@<n>]`` in the environment of a process; the ``n``-th time (default: the
first) that process reaches :func:`fault_point` with that name, it kills itself with ``SIGKILL`` --
no ``finally`` blocks, no ``atexit``, no buffered writes flushed, exactly like ``kill -9`` from outside.
With ``CORRFLOW_FAULT_ACTION=raise`` it raises :class:`InjectedFault` instead (a ``BaseException``, so
ordinary ``except Exception`` handlers do not swallow it), for cheaper in-process tests; context
managers then still run their exit code, so only a real kill tests what ``kill -9`` leaves behind.

Points (``corrflow.store`` and the drivers):

========================  ====================================================================
``create``                the new ensemble is fully built but not yet published
``create:published``      the new ensemble is published (commit record 0), nothing appended
``therm:data``            a thermalisation checkpoint slot is written, its commit record not yet
``therm:commit``          a thermalisation checkpoint is committed
``append:data``           a block's data are written (arrays grown), its commit record not yet
``append:commit``         a block is committed
``observable:data``       post-hoc observable values are written, their count not yet recorded
``observable:removed``    a replaced observable's count is dropped, its array not yet deleted
``analysis:data``         an analysis record's figures are written, the record not yet
``checkpoint:data``       a new checkpoint version is written, the pointer to it not yet
``checkpoint:published``  the pointer names the new version; old versions not yet removed
========================  ====================================================================
"""

from __future__ import annotations

import os
import signal

__all__ = ["InjectedFault", "fault_point", "FAULT_ENV", "FAULT_ACTION_ENV"]

FAULT_ENV = "CORRFLOW_FAULT"
FAULT_ACTION_ENV = "CORRFLOW_FAULT_ACTION"
_counts: dict[str, int] = {}


class InjectedFault(BaseException):
    """Raised at a fault point when ``CORRFLOW_FAULT_ACTION=raise``."""


def fault_point(point: str) -> None:
    """Die here if ``CORRFLOW_FAULT`` names ``point`` and this is its ``n``-th occurrence (see module doc)."""
    want = os.environ.get(FAULT_ENV)
    if not want:
        return
    name, _, nth = want.partition("@")
    if name != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] != int(nth or 1):
        return
    if os.environ.get(FAULT_ACTION_ENV) == "raise":
        raise InjectedFault(f"injected fault at {point!r} (occurrence {_counts[point]})")
    os.kill(os.getpid(), signal.SIGKILL)


def reset() -> None:
    """Forget the occurrence counts (for in-process tests that inject several faults)."""
    _counts.clear()
