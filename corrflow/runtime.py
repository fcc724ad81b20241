"""Process settings of the command line: the memory allocator (faster XLA:CPU programs, no number changed) and
Ctrl-C (:func:`catch_interrupts`).

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
import signal
import sys
from collections.abc import Callable

__all__ = ["tune_allocator", "apply_allocator_setting", "catch_interrupts", "check_interrupt", "exit_now", "run_entry"]

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


# ----------------------------------------------------------------------------------------
# Ctrl-C
# ----------------------------------------------------------------------------------------

_interrupt: dict[str, bool] = {"pressed": False, "cli": False}


def _on_sigint(signum: int, frame: object) -> None:
    _interrupt["pressed"] = True
    raise KeyboardInterrupt


def catch_interrupts() -> None:
    """What the command-line entries call first: Ctrl-C (SIGINT) is remembered as well as raised.

    Python raises ``KeyboardInterrupt`` wherever the main thread happens to be, and when that is a callback it
    cannot propagate from -- JAX's garbage-collection hook, which runs often while programs compile -- the exception
    is printed as "Exception ignored in ..." and lost: the command ran to its end, exit 0.  With this handler the
    press is kept (and Python's traceback of the lost exception is not printed), and :func:`check_interrupt` (called
    by every progress update, and by the command runner when the body returns) raises it again.  Marks the process
    as a command-line process: :func:`exit_now` ends it without the interpreter's shutdown.  Not for library use (it
    replaces the process's SIGINT handler and unraisable hook)."""
    signal.signal(signal.SIGINT, _on_sigint)
    _interrupt["cli"] = True
    default_hook = sys.unraisablehook

    def quiet_lost_interrupt(info: object) -> None:  # Python's "Exception ignored in ...: KeyboardInterrupt" traceback
        exc_type = getattr(info, "exc_type", None)
        if not (isinstance(exc_type, type) and issubclass(exc_type, KeyboardInterrupt)):
            default_hook(info)  # type: ignore[arg-type]

    sys.unraisablehook = quiet_lost_interrupt


def check_interrupt() -> None:
    """``KeyboardInterrupt`` if Ctrl-C was pressed under :func:`catch_interrupts` (whether or not Python delivered
    it); nothing otherwise -- always nothing in library use."""
    if _interrupt["pressed"]:
        raise KeyboardInterrupt


def exit_now(code: int) -> None:
    """In a command-line process (:func:`catch_interrupts`): flush stdout/stderr and end the process with ``code``
    at once, skipping the interpreter's shutdown -- which crashed (SIGSEGV, exit 139) when Ctrl-C came while XLA's
    threads were still compiling.  Everything the command writes is committed by then (the store's writes are
    atomic and its locks are released as the exception unwinds).  Returns without doing anything elsewhere (tests,
    library use), where the caller exits the usual way."""
    if not _interrupt["cli"]:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def run_entry(call: Callable[[], object], *, own_process: bool = True) -> None:
    """The frame of a command-line entry (``corrflow``, ``python -m analysis.*``): :func:`apply_allocator_setting`,
    then ``call()`` (the typer app).  ``own_process`` (the entry of the process itself, not a test calling
    ``main(args)`` in its own process): Ctrl-C is caught (:func:`catch_interrupts`), and one that came before a
    command's body ran -- during the imports or the option parsing, which typer answers with "Aborted!" and exit 1 --
    ends the process with exit 130 and a line that says nothing was started."""
    apply_allocator_setting()  # CORRFLOW_MALLOC=tuned, before JAX starts its threads
    if own_process:
        catch_interrupts()
    try:
        call()
    except (SystemExit, KeyboardInterrupt):
        if _interrupt["pressed"]:
            print("interrupted: before the command started; nothing was written", file=sys.stderr)
            exit_now(130)
        raise
