"""Process settings that make XLA:CPU programs faster without changing a number: the memory allocator.

XLA:CPU asks ``malloc`` for every buffer of every execution, including one temporary block per program that
holds all its intermediates (70 MB for the 4D SU(3) force at 16^4).  glibc serves blocks above its mmap
threshold (at most 32 MiB), and any block too large for a worker thread's arena, with a fresh ``mmap`` and
returns them with ``munmap``: every execution then touches new pages, one page fault per 4 KiB (38,000 faults
and ~40% of the time of that force on a 2-core KVM guest, measured with ``getrusage``).  :func:`tune_allocator`
keeps freed memory in the process instead (one arena, no mmap, no trimming), so the pages stay mapped and are
reused.  The price: the process keeps its peak heap until it exits, as most lattice codes do -- and a second
one, measured 2026-12-05 on a 2-core Xeon (jax 0.10.2): with one arena the threads that compile XLA programs
serialise on its lock, so **every compilation takes ~45% longer** (4D SU(3) 8^4 flow layer 0.73 -> 1.10 s, RK3
Wilson-flow step 1.3 -> 1.8 s: the same as compiling on one core) while the run time gains only where a program's
temporaries exceed what a thread arena can hold (64 MiB): the 16^4 SU(3) force 87 -> 62 ms, nothing measurable at 8^4.
Small-lattice runs, which are mostly compilation, lose (the demo's `generate` and `train` 10-15%), so it is opt-in
for the command line: ``CORRFLOW_MALLOC=tuned`` (:func:`apply_allocator_setting`, called by ``corrflow`` and the
analyses' ``python -m`` entries before JAX starts its threads) -- worth it for long CPU runs on 16^4 and larger.
Two arenas, or no mmap with glibc's arenas, do not keep both (page faults return: a large block outside the main
arena is always an ``mmap``).

A library user calls :func:`tune_allocator` once at the start of a program (a no-op off glibc;
``CORRFLOW_MALLOC=default`` turns it off); the SU(3) benchmarks do (``--default-malloc`` to compare).
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["tune_allocator", "apply_allocator_setting"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_state: dict[str, bool] = {}


def tune_allocator() -> bool:
    """Keep freed memory mapped (glibc ``mallopt``: one arena, no mmap, no trimming); returns whether it is active.

    Changes no result, only where buffers come from.  Idempotent; best called before the first JAX computation
    (worker threads created earlier keep their own arenas).
    """
    if "active" in _state:
        return _state["active"]
    active = False
    if os.environ.get("CORRFLOW_MALLOC", "").lower() != "default":
        try:
            libc = ctypes.CDLL("libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
            mallopt = None
        if mallopt is not None:
            settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
            active = all([mallopt(option, value) for option, value in settings])  # every one applied
    _state["active"] = active
    return active


def apply_allocator_setting() -> bool:
    """What the command-line entries call before JAX starts its threads: :func:`tune_allocator` when the environment
    asks for it (``CORRFLOW_MALLOC=tuned``), nothing otherwise (module docstring: the tuned allocator slows every
    compilation, so it pays only for long runs on large lattices).  Returns whether the tuned allocator is active."""
    if os.environ.get("CORRFLOW_MALLOC", "").strip().lower() == "tuned":
        return tune_allocator()
    return _state.get("active", False)
