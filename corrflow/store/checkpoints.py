"""Checkpoint directories written as one atomic unit: a generic ``(meta, arrays)`` interface, no pickle.

Layout of a checkpoint directory ``D``
--------------------------------------
* ``D/checkpoint.json``: the pointer ``{"format": "corrflow-checkpoint", "version": 2, "current": "v000012-..."}``;
* ``D/v000012-<token>/``: one complete version -- ``manifest.json`` (``{"meta": ..., "arrays": {name:
  {"file", "sha256", "shape", "dtype"}}}``) and one ``.npy`` file per array;
* ``D/.lock``: held (``flock``) while a checkpoint is being written, and for a whole run by the process that
  :func:`hold_checkpoint_dir` (a flow training, a derivative run), so a second job on the same directory is refused at
  its start instead of at its first write (where one of the two died after computing for a while).

Writing: the new version directory is written completely (files flushed to disk), then the pointer is
replaced with one ``rename``, then older versions are removed.  A process killed at any point leaves
either the previous checkpoint or the new one readable, never a mixture; leftovers are removed by the
next write.  Reading checks every array's SHA-256, so a damaged or truncated file is reported, never
loaded.  Arrays are read with ``allow_pickle=False``.

A directory written by corrflow before this layout (``checkpoint.json`` holding the metadata itself, with
``arrays.npz`` beside it) is read as well; the next write replaces it with the new layout.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .faults import fault_point
from .spec import StoreError

__all__ = ["CheckpointError", "write_checkpoint", "read_checkpoint", "has_checkpoint", "check_writable_dir",
           "hold_checkpoint_dir"]

POINTER = "checkpoint.json"
POINTER_FORMAT = "corrflow-checkpoint"
POINTER_VERSION = 2
LEGACY_ARRAYS = "arrays.npz"
_ARRAY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_VERSION_RE = re.compile(r"^v(\d{6,})-[0-9a-f]+$")


class CheckpointError(StoreError, ValueError):
    """A checkpoint directory that is missing, unreadable, damaged or not writable."""


def has_checkpoint(path: str | os.PathLike) -> bool:
    """True if ``path`` holds a checkpoint (of either layout)."""
    return (Path(path) / POINTER).is_file()


def zarr_store_around(path: str | os.PathLike) -> Path | None:
    """The zarr store (the outermost directory with a ``zarr.json``: groups have one too) that ``path`` is or lies
    inside, if any."""
    p = Path(path).resolve()
    found = None
    for d in (p, *p.parents):
        if (d / "zarr.json").is_file():
            found = d
    return found


def check_writable_dir(path: str | os.PathLike, what: str = "checkpoint directory") -> None:
    """Raise :class:`CheckpointError` unless ``path`` is (or can be created as) a writable directory.

    Nothing is left behind: the check creates and removes a temporary file in ``path`` or in its nearest
    existing ancestor.  A directory inside a zarr store (:func:`zarr_store_around`) is refused: outputs written
    there would mix with the store's own files.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise CheckpointError(f"{what} {p} is a file; give a directory (it is created if absent)")
    store = zarr_store_around(p)
    if store is not None:
        raise CheckpointError(f"{what} {p} is inside the zarr store {store}; give a directory of its own (the store's "
                              "directory holds the store only)")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise CheckpointError(f"{what} {p} cannot be created: {probe} is a file, not a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".corrflow-probe-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise CheckpointError(f"{what} {p} is not writable ({exc.strerror} in {probe}); choose a writable "
                              "location") from None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _current(path: Path) -> tuple[str | None, dict[str, Any] | None]:
    """(name of the current version or None, pointer or legacy metadata dict or None)."""
    try:
        data = json.loads((path / POINTER).read_text())
    except (OSError, ValueError):
        return None, None
    if isinstance(data, dict) and data.get("format") == POINTER_FORMAT and isinstance(data.get("current"), str):
        return data["current"], data
    return None, data if isinstance(data, dict) else None


def write_checkpoint(path: str | os.PathLike, meta: Mapping[str, Any], arrays: Mapping[str, Any]) -> None:
    """Write checkpoint ``(meta, arrays)`` to directory ``path`` atomically (see the module docstring).

    ``meta``: a JSON-serialisable dict; ``arrays``: ``{name: array}`` with names of letters, digits and
    ``_ . -``.  Raises :class:`CheckpointError` for bad input or an unwritable / busy directory; in that
    case the previous checkpoint is untouched.
    """
    path = Path(path)
    try:
        meta_json = json.loads(json.dumps(dict(meta), allow_nan=True))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint metadata is not JSON-serialisable: {exc}") from None
    arrs = {}
    for k, v in arrays.items():
        if not isinstance(k, str) or not _ARRAY_NAME.match(k):
            raise CheckpointError(f"invalid checkpoint array name {k!r}: use letters, digits and _ . -")
        a = np.asarray(v)
        if a.dtype.hasobject:
            raise CheckpointError(f"checkpoint array {k!r} has dtype object; only numeric arrays are stored")
        arrs[k] = a
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} is a file; give a directory (it is created if absent)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        _write_locked(path, meta_json, arrs)
    except OSError as exc:
        raise CheckpointError(f"cannot write the checkpoint to {path}: {exc.strerror or exc}"
                              f"{' (' + str(exc.filename) + ')' if exc.filename else ''}; the previous checkpoint "
                              "is unchanged") from None


#: checkpoint directories this process holds for a run (:func:`hold_checkpoint_dir`), by real path
_HELD: set[str] = set()


@contextmanager
def hold_checkpoint_dir(path: str | os.PathLike | None, what: str = "checkpoint directory") -> Iterator[None]:
    """Hold the lock of checkpoint directory ``path`` (created if absent) for the ``with`` block: a run that writes
    checkpoints there (a training, a derivative run) excludes every other process from the start -- a second job is
    refused at once with :class:`CheckpointError` -- and writes its own checkpoints under the lock it holds.
    ``None``: nothing to hold.  Re-entrant within a process."""
    if path is None:
        yield
        return
    import fcntl

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{what} {path} is a file; give a directory (it is created if absent)")
    key = os.path.realpath(path)
    if key in _HELD:
        yield
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as exc:
        raise CheckpointError(f"cannot use {path} as the {what}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise CheckpointError(f"{what} {path} is in use by another process (a flow training or derivative run "
                              "writing there); wait for it to finish or give another directory") from None
    _HELD.add(key)
    try:
        yield
    finally:
        _HELD.discard(key)
        os.close(fd)


def _write_locked(path: Path, meta_json: dict[str, Any], arrs: dict[str, np.ndarray]) -> None:
    import fcntl

    lock_fd = os.open(path / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            if os.path.realpath(path) not in _HELD:  # held for the whole run by this process: ours already
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CheckpointError(f"checkpoint directory {path} is being written by another process; do not "
                                  "run two jobs (flow trainings, derivative runs) on one directory at once") from None
        cur, _ = _current(path)
        m = _VERSION_RE.match(cur or "")
        version = f"v{(int(m.group(1)) + 1) if m else 0:06d}-{uuid.uuid4().hex[:8]}"
        vdir = path / version
        vdir.mkdir()
        manifest: dict[str, Any] = {"meta": meta_json, "arrays": {}}
        for k, a in arrs.items():
            buf = io.BytesIO()
            np.save(buf, a, allow_pickle=False)
            data = buf.getvalue()
            _write_file(vdir / f"{k}.npy", data)
            manifest["arrays"][k] = {"file": f"{k}.npy", "sha256": hashlib.sha256(data).hexdigest(),
                                     "shape": list(a.shape), "dtype": a.dtype.str}
        _write_file(vdir / "manifest.json", json.dumps(manifest, indent=1).encode())
        _fsync_dir(vdir)
        fault_point("checkpoint:data")
        tmp = path / f".{POINTER}.{uuid.uuid4().hex}.tmp"
        _write_file(tmp, json.dumps({"format": POINTER_FORMAT, "version": POINTER_VERSION, "current": version}).encode())
        os.replace(tmp, path / POINTER)  # publish: one rename
        _fsync_dir(path)
        fault_point("checkpoint:published")
        for p in path.iterdir():  # older versions and leftovers of interrupted writes
            if p.name == version:
                continue
            if _VERSION_RE.match(p.name) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.name in (LEGACY_ARRAYS, "arrays.tmp.npz", "checkpoint.tmp.json") or (
                    p.name.startswith(f".{POINTER}.") and p.name.endswith(".tmp")):
                p.unlink(missing_ok=True)
    finally:
        os.close(lock_fd)


def read_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(meta, arrays)`` of the checkpoint in directory ``path`` (either layout, see the module docstring).

    Raises :class:`CheckpointError` with a one-line reason for a missing, incomplete, damaged or foreign
    checkpoint.  ``what`` names the checkpoint in messages (e.g. ``"flow checkpoint"``).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path} is a file, not a {what} directory")
    for _attempt in range(3):  # a concurrent writer may remove the version between our two reads
        try:
            text = (path / POINTER).read_text()
        except FileNotFoundError:
            raise CheckpointError(f"no {what} at {path} ({POINTER} missing)") from None
        except OSError as exc:
            raise CheckpointError(f"{what} {path}: cannot read {POINTER} ({exc.strerror})") from None
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            raise CheckpointError(f"{what} {path}: {POINTER} is corrupt ({exc}); the checkpoint cannot be used") from None
        if data.get("format") != POINTER_FORMAT or "current" not in data:
            return data, _read_legacy(path, what)
        vdir = path / str(data["current"])
        if not vdir.is_dir() and _current(path)[0] != data["current"]:
            continue  # replaced meanwhile: read the new pointer
        return _read_version(vdir, path, what)
    raise CheckpointError(f"{what} {path} keeps changing while being read; is a training run writing it?")


def _read_version(vdir: Path, path: Path, what: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        manifest = json.loads((vdir / "manifest.json").read_text())
        meta, entries = manifest["meta"], manifest["arrays"]
        if not isinstance(meta, dict) or not isinstance(entries, dict):
            raise ValueError("malformed manifest")
    except FileNotFoundError:
        raise CheckpointError(f"{what} {path}: version {vdir.name} named by {POINTER} is missing; the directory "
                              "was modified by hand") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{what} {path}: {vdir.name}/manifest.json is corrupt ({exc})") from None
    arrays = {}
    for k, e in entries.items():
        f = vdir / str(e.get("file", ""))
        try:
            data = f.read_bytes()
        except OSError:
            raise CheckpointError(f"{what} {path}: array {k!r} ({f.name}) is missing") from None
        if hashlib.sha256(data).hexdigest() != e.get("sha256"):
            raise CheckpointError(f"{what} {path}: array {k!r} ({vdir.name}/{f.name}) is damaged (SHA-256 mismatch, "
                                  f"{len(data)} bytes); restore the checkpoint or train again")
        try:
            arrays[k] = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise CheckpointError(f"{what} {path}: array {k!r} cannot be read ({exc})") from None
    return meta, arrays


def _read_legacy(path: Path, what: str) -> dict[str, np.ndarray]:
    f = path / LEGACY_ARRAYS
    try:
        with np.load(f, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except FileNotFoundError:
        raise CheckpointError(f"{what} {path} is incomplete: {LEGACY_ARRAYS} is missing") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise CheckpointError(f"{what} {path}: {LEGACY_ARRAYS} is truncated or corrupt ({type(exc).__name__}: "
                              f"{exc}); the checkpoint cannot be used") from None
