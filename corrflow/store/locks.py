"""Writer locks of a local store: one writer per ensemble (or analysis record), whatever path reaches it.

Convention
----------
The lock of ``key`` (an ensemble name, or ``_analysis.<name>`` for an analysis record) is the file
``<store>/_corrflow/locks/<key>.lock`` *inside* the store directory, locked with ``fcntl.flock``.  Being
inside the store, it is the same file (the same inode) whichever path reaches the store -- a symlink,
``./S.zarr`` against ``/abs/S.zarr``, ``a/../S.zarr``, a bind mount -- so no second spelling of the path
gets a second lock.  ``_corrflow`` is declared as an empty zarr array, so zarr and xarray never list
the lock files (see :mod:`corrflow.store.layout`).

The kernel drops a flock when its process dies (even by SIGKILL), so the lock of a dead writer is free
and is taken over.  The file also records pid, host and start time: a lock recorded by a live process on
this host, or by another host (where flock over a network file system cannot be trusted), is respected
even if no flock is held.  The file is removed when the lock is released.

Stores reached through an fsspec URL have no locks: one writer per ensemble is the user's responsibility.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from .layout import internal_dir
from .spec import INTERNAL, StoreError

__all__ = ["WriterLock", "ensure_internal_area"]

_INTERNAL_ATTRS = {"corrflow_internal": "writer locks (locks/) and ensembles being created (staging/); "
                                        "an empty array so that zarr never lists them"}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ensure_internal_area(root: Any, store_path: str | os.PathLike) -> Path:
    """Create ``<store>/_corrflow`` (an empty zarr array) with ``locks/`` and ``staging/`` if absent; return it.

    ``root`` is the store's root zarr group.  A file where a directory belongs is a clear error.
    """
    d = internal_dir(store_path)
    if d.exists() and not d.is_dir():
        raise StoreError(f"{d} is a file, but corrflow keeps its writer locks in this directory; "
                         f"remove or rename {d}")
    if not (d / "zarr.json").exists():
        from zarr.errors import ContainsArrayError, ContainsGroupError

        try:
            root.create_array(INTERNAL, shape=(0,), chunks=(1,), dtype="uint8", dimension_names=(INTERNAL,),
                              attributes=_INTERNAL_ATTRS)
        except (ContainsArrayError, ContainsGroupError, FileExistsError):
            pass  # created by a concurrent writer
    for sub in ("locks", "staging"):
        p = d / sub
        if p.exists() and not p.is_dir():
            raise StoreError(f"{p} is a file, but corrflow keeps its {sub} in this directory; remove or rename it")
        p.mkdir(exist_ok=True)
    return d


class WriterLock:
    """Exclusive lock of ``key`` in a local store (see the module docstring); ``acquire`` / ``release``."""

    def __init__(self, store: Any, key: str, what: str) -> None:
        self.store = store
        self.key = key
        self.what = what  # e.g. "ensemble 'x'", for messages
        self.path = internal_dir(store.path) / "locks" / f"{key}.lock"
        self._fd = -1

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def acquire(self) -> None:
        """Take the lock or raise :class:`StoreError` naming the holder."""
        import fcntl

        ensure_internal_area(self.store.root, self.store.path)
        path = self.path
        if path.exists() and not path.is_file():
            raise StoreError(f"the lock path {path} exists but is not a regular file; remove it")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
            except IsADirectoryError:
                raise StoreError(f"the lock path {path} is a directory, not a lock file; remove it") from None
            except PermissionError:
                raise StoreError(f"cannot create the writer lock {path} (permission denied); the store is not "
                                 "writable by you") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                other = self._read(fd)
                os.close(fd)
                raise StoreError(self._busy_message(other)) from None
            # the path may have been unlinked and recreated by a releasing writer: retry on the new inode
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            other = self._read(fd)
            pid, host = other.get("pid"), other.get("host")
            live_here = host == me["host"] and isinstance(pid, int) and pid != me["pid"] and _pid_alive(pid)
            foreign = host is not None and host != me["host"]
            if live_here or foreign:
                os.close(fd)
                raise StoreError(self._busy_message(other))
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
            self._fd = fd
            return

    def release(self) -> None:
        """Remove the lock file (while still holding the flock) and release the lock."""
        if self._fd >= 0:
            try:
                self.path.unlink(missing_ok=True)
            finally:
                os.close(self._fd)
                self._fd = -1

    @staticmethod
    def _read(fd: int) -> dict[str, Any]:
        try:
            raw = os.pread(fd, 4096, 0)
            val = json.loads(raw.decode() or "{}")
            return val if isinstance(val, dict) else {}
        except (OSError, ValueError):
            return {}  # empty or half-written lock file: no information

    def _busy_message(self, other: dict[str, Any]) -> str:
        pid, host, since = other.get("pid"), other.get("host"), other.get("since")
        when = _dt.datetime.fromtimestamp(since).isoformat(timespec="seconds") if since else "unknown time"
        if pid == os.getpid() and host == socket.gethostname():
            return f"this process already holds a writer for {self.what}; close it first"
        who = f"pid {pid} on host {host}, since {when}" if pid is not None else "a process that has not yet recorded itself"
        return (f"{self.what} is being written by another process ({who}). Wait for it to finish; if that "
                f"process is dead, delete {self.path}")
