"""Integrity of stored chunks: full verification, and precise errors when a damaged chunk is read.

Every array chunk is the raw bytes of the chunk followed by their CRC32C (see :mod:`.spec`), so a chunk
is checked without decoding it: its size must be ``prod(chunk shape) * itemsize + 4`` and the CRC32C of
all but the last four bytes must equal those four bytes (little-endian).  Arrays with other codecs are
checked by reading them through zarr.

A problem is always reported with its place in the physics: ensemble, array, chain and the range of
trajectories (global indices, and stored positions) the chunk holds -- by :meth:`EnsembleStore.verify`
and by every read through the store (:class:`CheckedArray`), so ``train``, ``measure``, ``correlate``
and ``open_ensemble`` name a damaged chunk the same way ``corrflow verify`` does.

A physics check of configurations (plaquette, unitarity) is not part of the store: the caller passes it
to ``verify`` as ``check(spec, links, values) -> problem or None`` (``values``: the per-trajectory numbers
stored for that configuration).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from .layout import _get, chunk_key
from .spec import StoreError

__all__ = ["ChunkProblem", "VerifyReport", "ArrayChunks", "CheckedArray", "ConfigCheck"]

ConfigCheck = Callable[[Any, np.ndarray, Mapping[str, float]], "str | None"]


@dataclass
class ChunkProblem:
    """A missing or damaged chunk: ``key`` (``ens/array/c/0/1``), ``where`` (chain, trajectories), ``problem``."""

    key: str
    where: str
    problem: str
    missing: bool = False

    def __str__(self) -> str:
        return f"{self.key} ({self.where}): {self.problem}"


@dataclass
class VerifyReport:
    """Result of :meth:`EnsembleStore.verify`; ``ok`` is True when nothing is missing, corrupt or mismatched.

    ``problems``: damaged or missing chunks and arrays; ``mismatched``: configurations that failed the
    physics check; ``chunks``/``nbytes``: what was checked; ``incomplete``: a note when the ensemble holds
    fewer trajectories than its last run was asked for (intact, but not finished).
    """

    name: str
    committed: int
    checked: int = 0
    problems: list[ChunkProblem] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    chunks: int = 0
    nbytes: int = 0
    sampled: bool = False
    incomplete: str | None = None

    @property
    def missing(self) -> list[str]:
        """Keys of missing chunks."""
        return [p.key for p in self.problems if p.missing]

    @property
    def corrupt(self) -> list[str]:
        """Damaged chunks and arrays, as ``key (where): problem``."""
        return [str(p) for p in self.problems if not p.missing]

    @property
    def ok(self) -> bool:
        return not (self.problems or self.mismatched)

    def __str__(self) -> str:
        note = f"; INCOMPLETE: {self.incomplete}" if self.incomplete else ""
        if self.ok:
            what = (f"{self.chunks} chunks ({self.nbytes / 2**20:.1f} MiB) checksummed"
                    + (" (sample)" if self.sampled else "") + f", {self.checked} configurations checked")
            return f"{self.name}: OK ({self.committed} trajectories per chain, {what}){note}"
        parts = [f"{self.name}: PROBLEMS{note}"]
        parts += [f"  {_label(p)} {p}" for p in self.problems]
        parts += [f"  check failed at {k}" for k in self.mismatched]
        return "\n".join(parts)

    def first_problem(self) -> str:
        """The first problem and how many more, on one line (for error messages)."""
        items = [f"{_label(p)} {p}" for p in self.problems] + [f"check failed at {k}" for k in self.mismatched]
        if not items:
            return "no problem"
        return items[0] + (f" (and {len(items) - 1} more)" if len(items) > 1 else "")


def _label(p: ChunkProblem) -> str:
    what = "array metadata" if p.key.endswith("zarr.json") else "chunk"
    return f"{'missing' if p.missing else 'corrupt'} {what}"


def _crc_layout(arr: Any) -> tuple[bool, int | None]:
    """(last codec is CRC32C, expected encoded size of a chunk or None if the codecs do not fix it)."""
    codecs = arr.metadata.codecs
    if not codecs or type(codecs[-1]).__name__ != "Crc32cCodec":
        return False, None
    if len(codecs) == 2 and type(codecs[0]).__name__ == "BytesCodec":
        return True, int(np.prod(arr.chunks)) * arr.dtype.itemsize + 4
    return True, None


class ArrayChunks:
    """The chunks of one array of one ensemble that hold committed data, and how to check and name them.

    ``n_valid``: stored positions holding data along ``traj`` (the committed count, or the measured count
    of a post-hoc observable); ``traj``: global trajectory index of each stored position (for messages;
    ``None`` if unreadable); ``slots``: for checkpoint arrays, the slots that hold state.
    """

    def __init__(self, store: Any, name: str, var: str, arr: Any, n_valid: int,
                 traj: np.ndarray | Callable[[], np.ndarray | None] | None, slots: list[int] | None = None) -> None:
        self.store, self.name, self.var, self.arr = store, name, var, arr
        self.dims = tuple(arr.metadata.dimension_names or ())
        self.n_valid = int(n_valid)
        self._traj = traj  # array, or a function giving it (read only when a message needs it)
        self.slots = slots
        self.taxis = self.dims.index("traj") if "traj" in self.dims else None
        self.caxis = self.dims.index("chain") if "chain" in self.dims else None
        self.saxis = self.dims.index("slot") if "slot" in self.dims else None
        self.crc, self.size = _crc_layout(arr)

    def _grid(self, ax: int) -> range:
        c, s = self.arr.chunks[ax], self.arr.shape[ax]
        if ax == self.taxis:
            s = min(s, self.n_valid)
        return range(-(-s // c))

    def indices(self) -> Iterator[tuple[int, ...]]:
        """Chunk indices holding committed data."""
        axes = []
        for ax in range(self.arr.ndim):
            if ax == self.saxis:
                axes.append(sorted({s // self.arr.chunks[ax] for s in (self.slots or [])}))
            else:
                axes.append(self._grid(ax))
        return itertools.product(*axes)

    def indices_for(self, sel: tuple[Any, ...]) -> list[tuple[int, ...]]:
        """Chunk indices touched by a basic selection (ints and slices)."""
        sel = tuple(sel)
        if any(s is Ellipsis for s in sel):
            i = next(k for k, s in enumerate(sel) if s is Ellipsis)
            sel = sel[:i] + (slice(None),) * (self.arr.ndim - len(sel) + 1) + sel[i + 1:]
        sel = sel + (slice(None),) * (self.arr.ndim - len(sel))
        axes = []
        for ax, (s, c, n) in enumerate(zip(sel, self.arr.chunks, self.arr.shape)):
            if isinstance(s, slice):
                lo, hi, _ = s.indices(n)
                axes.append(range(lo // c, -(-hi // c)) if hi > lo else range(0))
            else:
                i = int(s) + (n if int(s) < 0 else 0)
                axes.append([i // c])
        return list(itertools.product(*axes))

    @property
    def traj(self) -> np.ndarray | None:
        if callable(self._traj):
            self._traj = self._traj()
        return self._traj

    def key(self, idx: tuple[int, ...]) -> str:
        return chunk_key(self.name, self.var, idx)

    def where(self, idx: tuple[int, ...]) -> str:
        """``ensemble 'x', array links, chain 0, trajectories 41..47 (stored positions 0..3)``."""
        parts = [f"ensemble {self.name!r}, array {self.var}"]
        if self.saxis is not None:
            parts.append(f"checkpoint slot {idx[self.saxis]}")
        if self.caxis is not None:
            c = self.arr.chunks[self.caxis]
            lo, hi = idx[self.caxis] * c, min((idx[self.caxis] + 1) * c, self.arr.shape[self.caxis]) - 1
            parts.append(f"chain {lo}" if lo == hi else f"chains {lo}..{hi}")
        if self.taxis is not None:
            c = self.arr.chunks[self.taxis]
            lo = idx[self.taxis] * c
            hi = min(lo + c, max(self.n_valid, lo + 1)) - 1
            pos = f"stored position {lo}" if lo == hi else f"stored positions {lo}..{hi}"
            traj = self.traj
            if traj is not None and hi < len(traj):
                t0, t1 = int(traj[lo]), int(traj[hi])
                parts.append(f"trajectory {t0} ({pos})" if lo == hi else f"trajectories {t0}..{t1} ({pos})")
            else:
                parts.append(pos)
        return ", ".join(parts)

    def _raw(self, key: str) -> bytes | None:
        if self.store.is_local:
            try:
                return (Path(self.store.path) / key).read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                return None
        return _get(self.store.root.store, key)

    def check(self, idx: tuple[int, ...]) -> tuple[ChunkProblem | None, int]:
        """(problem or None, bytes read) for chunk ``idx``."""
        key = self.key(idx)
        try:
            data = self._raw(key)
        except OSError as exc:
            return ChunkProblem(key, self.where(idx), f"cannot be read ({exc})"), 0
        if data is None:
            return ChunkProblem(key, self.where(idx), "missing", missing=True), 0
        if self.crc:
            import google_crc32c

            if self.size is not None and len(data) != self.size:
                how = "truncated" if len(data) < self.size else "too long"
                return ChunkProblem(key, self.where(idx), f"{how}: {len(data)} bytes, expected {self.size}"), len(data)
            if len(data) < 4:
                return ChunkProblem(key, self.where(idx), f"truncated: {len(data)} bytes"), len(data)
            body = np.frombuffer(data, dtype=np.uint8, count=len(data) - 4)  # no copy
            stored = int.from_bytes(data[-4:], "little")
            computed = int(google_crc32c.value(body))
            if stored != computed:
                return ChunkProblem(key, self.where(idx), f"CRC32C checksum mismatch (stored {stored:#010x}, "
                                                          f"computed {computed:#010x})"), len(data)
            return None, len(data)
        sel = tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, self.arr.chunks))
        try:
            self.arr[sel]
        except Exception as exc:  # zarr raises many types for undecodable chunks
            return ChunkProblem(key, self.where(idx), f"cannot be decoded ({type(exc).__name__}: {exc})"), len(data)
        return None, len(data)


class CheckedArray:
    """Read access to one stored array that turns a failed read into a :class:`StoreError` naming the chunk.

    ``CheckedArray[sel]`` reads like the zarr array (basic selections: ints and slices); it also serves as
    the source of dask arrays (``shape``, ``dtype``, ``ndim``, ``chunks``).
    """

    def __init__(self, chunks: ArrayChunks) -> None:
        self._c = chunks
        arr = chunks.arr
        self.shape, self.dtype, self.ndim = arr.shape, arr.dtype, arr.ndim
        self.chunks = arr.chunks

    def __getitem__(self, sel: Any) -> np.ndarray:
        try:
            return np.asarray(self._c.arr[sel])
        except Exception as exc:
            raise self.error(sel if isinstance(sel, tuple) else (sel,), exc) from None

    def error(self, sel: tuple[Any, ...], exc: BaseException) -> StoreError:
        """The :class:`StoreError` for a failed read of ``sel``: the damaged chunk(s) if they can be found."""
        c = self._c
        bad = []
        try:
            for idx in c.indices_for(sel):
                problem, _ = c.check(idx)
                if problem is not None and not problem.missing:
                    bad.append(problem)
        except Exception:  # noqa: BLE001 - locating is best effort; the original error is reported below
            bad = []
        store = c.store.path
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            return StoreError(f"damaged chunk {bad[0]}{more} in store {store}; run `corrflow verify {store} "
                              f"{c.name}` for a full report")
        return StoreError(f"reading {c.name}/{c.var} from store {store} failed ({type(exc).__name__}: {exc}); "
                          f"run `corrflow verify {store} {c.name}`")
