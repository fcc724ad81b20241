"""Process settings that make XLA:CPU programs faster without changing a number: the memory allocator.

XLA:CPU asks ``malloc`` for every buffer of every execution, including one temporary block per program that
holds all its intermediates (70 MB for the 4D SU(3) force at 16^4).  glibc serves blocks above its mmap
threshold (at most 32 MiB), and any block too large for a worker thread's arena, with a fresh ``mmap`` and
returns them with ``munmap``: every execution then touches new pages, one page fault per 4 KiB (38,000 faults
and ~40% of the time of that force on a 2-core KVM guest, measured with ``getrusage``).  :func:`tune_allocator`
keeps freed memory in the process instead (one arena, no mmap, no trimming), so the pages stay mapped and are
reused.  The price: the process keeps its peak heap until it exits, as most lattice codes do.

Called by the ``corrflow`` command line and the benchmarks before JAX starts its threads; a library user calls
it once at the start of a program (it is a no-op off glibc, and ``CORRFLOW_MALLOC=default`` turns it off).
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["tune_allocator"]

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
