"""Appending to an ensemble: the commit protocol, post-hoc observables, thermalisation checkpoints.

Write protocol (crash safety)
-----------------------------
Data are written first, then the commit record ``corrflow_commit`` (one atomic write of the group's
``zarr.json`` on local stores).  Readers only show the committed trajectories.  A writer opening an
ensemble (under its lock, :mod:`.locks`) first rolls it back to the committed state: every array is cut
to the committed length, observable arrays whose first measurement was never recorded are removed, and
stray ``*.partial`` files of killed writes are deleted -- so a run killed at any point resumes with
nothing lost and nothing duplicated.  The chain state for resuming is the last committed configuration
and its action (production) or the active checkpoint slot (thermalisation, a double buffer); random keys
are derived from the seed and the global trajectory index, so a resumed chain is bit-identical to an
uninterrupted one.

Commit record: ``committed`` (stored trajectories per chain), ``next_traj`` (global index the chain
continues from), ``phase`` (``therm`` / ``production``), ``slot`` (active checkpoint slot, -1: none) and,
when a run announced it (:meth:`EnsembleWriter.set_target`), ``target`` (trajectories per chain, or
files of an import, that run was asked for: fewer committed means an interrupted, incomplete run) and, when the
generator measured it, ``cost_s`` (steady-state seconds, JIT compilation excluded, that the committed production
trajectories of all chains took; see :mod:`corrflow.pipeline.ledger`): the cost of a configuration, which derivative
estimators weigh their own cost against.
"""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .creation import create_ensemble
from .faults import fault_point
from .layout import _sync, children
from .locks import WriterLock
from .spec import CHECKPOINT_ARRAYS, EnsembleSpec, StoreError, crc_codecs

__all__ = ["EnsembleWriter"]


class EnsembleWriter:
    """Appends trajectory blocks to one ensemble with the commit protocol (see the module docstring).

    Use as a context manager: entering takes the exclusive writer lock (local stores), creates the
    ensemble if ``create`` is given and it does not exist (``created`` tells), and rolls it back to its
    committed state; leaving trims unused reserved capacity and releases the lock.
    """

    def __init__(self, store: Any, name: str, *, create: EnsembleSpec | None = None,
                 chunk_traj: int | None = None) -> None:
        self.store = store
        self.name = name
        self.created = False
        self._create = create
        self._chunk_traj = chunk_traj
        self._lock: WriterLock | None = None
        self._arrays: dict[str, Any] = {}
        self._capacity = -1  # current length of the traj axis of every array (after rollback)
        self._reserved = 0
        self.group: Any = None
        self.spec: EnsembleSpec | None = None  # type: ignore[assignment]

    def _array(self, var: str) -> Any:
        """Cached zarr array handle (opening one re-reads its metadata)."""
        if var not in self._arrays:
            # write_empty_chunks is run-time configuration (not stored): set it on every handle we write with
            self._arrays[var] = self.group[var].with_config({"write_empty_chunks": True})
        return self._arrays[var]

    # --- entering and leaving --------------------------------------------------------------
    def __enter__(self) -> "EnsembleWriter":
        if self.store.is_local:
            self._lock = WriterLock(self.store, self.name, f"ensemble {self.name!r}")
            self._lock.acquire()
        try:
            if self._create is not None and self.name not in self.store:
                create_ensemble(self.store, self.name, self._create, self._chunk_traj)
                self.created = True
            self.group = self.store._group(self.name)
            self.spec = self.store.spec(self.name)
            self._rollback()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.group is not None and self._capacity > self.committed:
                self._resize_all(self.committed)  # trim reserved capacity: no padding left behind
        finally:
            self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # --- state ---------------------------------------------------------------------------
    @property
    def commit_record(self) -> dict[str, Any]:
        return dict(self.group.attrs["corrflow_commit"])

    @property
    def committed(self) -> int:
        return int(self.commit_record["committed"])

    @property
    def next_traj(self) -> int:
        return int(self.commit_record["next_traj"])

    @property
    def recorded_cost(self) -> float:
        """``cost_s`` of the committed trajectories (0 when none are committed, NaN when an earlier run did not
        record it): what a run that appends adds its own cost to."""
        com = self.commit_record
        return float(com.get("cost_s", 0.0 if int(com["committed"]) == 0 else float("nan")))

    def _per_traj_vars(self) -> list[str]:
        """Per-trajectory variables every append must provide."""
        return list(self.spec.per_traj)

    def measured_observables(self) -> dict[str, int]:
        """Observables added after generation (``corrflow measure``) and how many trajectories each covers."""
        return {k: int(v) for k, v in dict(self.group.attrs.get("corrflow_observables", {})).items()}

    def _members(self) -> dict[str, Any]:
        return children(self.store.root.store, self.name)

    def _all_traj_vars(self) -> list[str]:
        """Every array with a ``traj`` dimension except the checkpoint arrays."""
        out = []
        for var, node in self._members().items():
            if node.kind == "array" and var not in CHECKPOINT_ARRAYS and "traj" in (node.meta.get("dimension_names") or ()):
                out.append(var)
        return out

    def set_target(self, n: int) -> None:
        """Record that the current run is to reach ``n`` stored trajectories per chain (files, for an import);
        until it does, ``info`` and ``verify`` call the ensemble incomplete."""
        if self.commit_record.get("target") != int(n):
            self._write_commit(target=int(n))

    # --- rollback --------------------------------------------------------------------------
    def _rollback(self) -> None:
        """Undo everything after the last commit (see the module docstring)."""
        known = {"links", "traj", "chain", *CHECKPOINT_ARRAYS, *self.spec.per_traj, *self.measured_observables()}
        members = self._members()
        lost = sorted(known - set(members))
        if lost:
            raise StoreError(f"arrays {lost} of ensemble {self.name!r} in {self.store.path} are missing; the "
                             "ensemble is damaged (run `corrflow verify`). Writing into it is refused.")
        for var, node in members.items():
            if var in known:
                if node.kind != "array":
                    raise StoreError(f"array {var!r} of ensemble {self.name!r} in {self.store.path} is damaged "
                                     f"({node.problem or 'metadata missing'}); run `corrflow verify`. Writing "
                                     "into a damaged ensemble is refused.")
                continue
            if node.kind == "array" and "traj" in (node.meta.get("dimension_names") or ()):
                self._delete(var)  # an observable whose first measurement was never recorded
            elif node.kind == "other" and node.partial_only:
                self._delete(var)
        self._resize_all(self.committed)
        if self.store.is_local:
            for p in (Path(self.store.path) / self.name).rglob("*.partial"):
                p.unlink(missing_ok=True)

    def _delete(self, var: str) -> None:
        self._arrays.pop(var, None)
        if self.store.is_local:
            from .creation import _discard

            _discard(self.store, Path(self.store.path) / self.name / var)
        else:
            _sync(self.store.root.store.delete_dir(f"{self.name}/{var}"))

    def _resize_all(self, n: int) -> None:
        for var in self._all_traj_vars():
            arr = self._array(var)
            taxis = 0 if var == "traj" else 1
            if arr.shape[taxis] != n:
                shape = list(arr.shape)
                shape[taxis] = n
                arr.resize(tuple(shape))
        self._capacity = n

    def reserve(self, n_total: int) -> None:
        """Announce that the ensemble will grow to ``n_total`` trajectories per chain in this session:
        arrays are then resized once instead of on every append.  Unused capacity is trimmed when the
        writer closes (an interrupted run's spare room is trimmed by the next writer's rollback, and
        readers only ever see the committed length)."""
        self._reserved = max(self._reserved, int(n_total))

    # --- post-hoc observables --------------------------------------------------------------
    def write_observable(self, obs: str, values: np.ndarray, start: int,
                         extra: Mapping[str, Sequence[float]] | None = None,
                         settings: Mapping[str, float | int | str] | None = None) -> None:
        """Write post-hoc measurements ``values`` ``(chains, n, *k)`` for stored positions ``start .. start+n-1``
        and record the measured count (data first, then the count).  Measurements must be contiguous:
        ``start`` equals the count already measured.  A new observable's array is created with its
        coordinates in one metadata write; until its count is recorded it is not part of the ensemble (the
        next writer removes it).

        ``extra`` names the trailing axes of a non-scalar observable and gives their coordinates, e.g.
        ``{"flow_time": t}`` for ``E(t)`` along the Wilson flow; it is stored with the array and must be the same
        for every later append (a different grid raises ``StoreError``).  ``settings`` records how the values were
        computed, e.g. ``{"flow_eps": 0.02}`` (the Wilson-flow integrator step), likewise with the array and the same
        for every later append (an array measured before settings were recorded takes any)."""
        if obs in self._per_traj_vars() or obs in ("links", "traj", "chain") or obs in CHECKPOINT_ARRAYS:
            raise StoreError(f"{obs!r} is recorded during generation of {self.name!r}; it cannot be re-measured")
        from .spec import check_name

        check_name(obs, "observable")
        values = np.asarray(values, dtype=np.float64)
        extra = {str(k): [float(x) for x in v] for k, v in (extra or {}).items()}
        settings = {str(k): v for k, v in (settings or {}).items()}
        k_shape = tuple(len(v) for v in extra.values())
        n = values.shape[1] if values.ndim >= 2 else -1
        if values.ndim != 2 + len(k_shape) or values.shape[0] != self.spec.n_chains or values.shape[2:] != k_shape:
            raise StoreError(f"{obs} values have shape {values.shape}, expected ({self.spec.n_chains}, n"
                             f"{''.join(', ' + str(k) for k in k_shape)})")
        done = self.measured_observables()
        have = done.get(obs, 0)
        if start != have:
            raise StoreError(f"{obs}: measurements must continue at position {have}, got start={start}")
        if start + n > self.committed:
            raise StoreError(f"{obs}: positions up to {start + n} exceed the {self.committed} committed trajectories")
        length = max(self.committed, self._capacity)  # every traj-aligned array has the same length
        if obs not in self._members():
            self.group.create_array(obs, shape=(self.spec.n_chains, length) + k_shape, chunks=(1, 1024) + k_shape,
                                    dtype="float64", fill_value=np.nan, dimension_names=("chain", "traj") + tuple(extra),
                                    attributes={"corrflow_coords": extra, "corrflow_settings": settings},
                                    **crc_codecs())
        arr = self._array(obs)
        stored = self.observable_coords(obs)
        if stored != extra:
            raise StoreError(f"{obs}: the stored array has trailing coordinates {list(stored) or 'none'} "
                             f"{'(grid differs)' if list(stored) == list(extra) else ''}; these values have "
                             f"{list(extra) or 'none'}.  Measure the same grid, or remove {obs!r} first.")
        was = self.observable_settings(obs)
        if was is not None and was != settings:
            raise StoreError(f"{obs}: the stored values were computed with {was or 'no settings'}, these with "
                             f"{settings or 'none'}.  Measure with the stored settings, or remove {obs!r} first.")
        if arr.shape[1] != length:
            arr.resize((self.spec.n_chains, length) + k_shape)
        arr[:, start:start + n] = values
        fault_point("observable:data")
        done[obs] = start + n
        self.group.attrs["corrflow_observables"] = done

    def remove_observable(self, obs: str) -> None:
        """Discard a post-hoc observable (``corrflow measure --replace``).  Crash-safe order: its count is dropped
        from the record first (from then on it is not part of the ensemble, and a writer's rollback would remove
        the array), then the array is deleted."""
        done = self.measured_observables()
        if obs not in done:
            raise StoreError(f"{obs!r} is not a measured observable of {self.name!r}; measured: "
                             f"{', '.join(done) or 'none'}")
        del done[obs]
        self.group.attrs["corrflow_observables"] = done
        fault_point("observable:removed")
        self._delete(obs)

    def observable_coords(self, obs: str) -> dict[str, list[float]]:
        """Coordinates of the trailing axes of a post-hoc observable (``{}`` for a scalar one)."""
        return dict(self._array(obs).attrs.get("corrflow_coords", {}))

    def observable_settings(self, obs: str) -> dict[str, Any] | None:
        """How a post-hoc observable was computed (``write_observable``'s ``settings``); None if measured before
        settings were recorded."""
        was = self._array(obs).attrs.get("corrflow_settings")
        return None if was is None else dict(was)

    # --- data ------------------------------------------------------------------------------
    def _write_traj_block(self, arr: Any, start: int, data: np.ndarray) -> None:
        """``arr[:, start:start+n] = data`` for a ``(chain, traj, ...)`` array.

        On local stores, whole chunks (aligned on the traj grid, one chain each, the full configuration)
        are written straight from the array's memory: the chunk format of these arrays is the raw
        little-endian bytes followed by their CRC32C (``BytesCodec`` + ``Crc32cCodec``), exactly what zarr
        writes (checked in the tests), and the file is written to a temporary name and renamed, as zarr's
        LocalStore does.  This avoids zarr's codec pipeline and its copies (about 5x faster for complex
        links).  Partial chunks, other codecs and remote stores go through zarr.
        """
        n = data.shape[1]
        ct = arr.chunks[1]
        codecs = arr.metadata.codecs
        fast = (self.store.is_local and len(codecs) == 2 and type(codecs[0]).__name__ == "BytesCodec"
                and type(codecs[1]).__name__ == "Crc32cCodec" and arr.chunks[2:] == arr.shape[2:]
                and arr.chunks[0] == 1 and (codecs[0].endian is None or codecs[0].endian.value == "little")
                and data.dtype == arr.dtype and data.dtype.byteorder in ("=", "<", "|")
                and np.little_endian)
        first_full = -(-start // ct) * ct  # first chunk boundary at or after start
        last_full = ((start + n) // ct) * ct
        if not fast or last_full <= first_full:
            arr[:, start:start + n] = data
            return
        import google_crc32c

        if first_full > start:
            arr[:, start:first_full] = data[:, : first_full - start]
        tail = "/0" * (arr.ndim - 2)
        root = Path(self.store.path)
        for c in range(arr.shape[0]):
            for t0 in range(first_full, last_full, ct):
                block = np.ascontiguousarray(data[c, t0 - start:t0 - start + ct]).reshape(-1).view(np.uint8)
                crc = int(google_crc32c.value(block)).to_bytes(4, "little")  # as zarr's Crc32cCodec, no copy
                view = memoryview(block)
                path = root / f"{arr.path}/c/{c}/{t0 // ct}{tail}"
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
                try:
                    with open(tmp, "wb") as f:
                        f.write(view)
                        f.write(crc)
                    os.replace(tmp, path)
                finally:
                    tmp.unlink(missing_ok=True)
        if last_full < start + n:
            arr[:, last_full:start + n] = data[:, last_full - start:]

    def resume_state(self) -> tuple[np.ndarray, np.ndarray, int] | None:
        """``(links (chains, ...), action (chains,), next_traj)`` to continue the chain, or None if
        nothing has been run yet."""
        rec = self.commit_record
        if rec["phase"] == "production" and self.committed > 0:
            links = self.store.array(self.name, "links")[:, self.committed - 1]
            action = self.store.array(self.name, "action")[:, self.committed - 1]
            return links, action, int(rec["next_traj"])
        if int(rec.get("slot", -1)) >= 0:
            s = int(rec["slot"])
            return (np.asarray(self.group["checkpoint_links"][s]), np.asarray(self.group["checkpoint_action"][s]),
                    int(rec["next_traj"]))
        return None

    def _write_commit(self, **changes: Any) -> None:
        """Update the commit record in one atomic metadata write; a change to ``None`` removes that field."""
        rec = self.commit_record
        rec.update(changes)
        self.group.attrs["corrflow_commit"] = {k: v for k, v in rec.items() if v is not None}

    def save_checkpoint(self, links: np.ndarray, action: np.ndarray, next_traj: int, phase: str) -> None:
        """Store the chain state (thermalisation) in the inactive slot, then commit it."""
        self._check_config_block(links[:, None], "checkpoint links")
        rec = self.commit_record
        if next_traj < rec["next_traj"]:
            raise StoreError(f"checkpoint at trajectory {next_traj} is older than the committed {rec['next_traj']}")
        slot = 1 - int(rec.get("slot", -1)) if int(rec.get("slot", -1)) >= 0 else 0
        self._array("checkpoint_links")[slot] = np.asarray(links)
        self._array("checkpoint_action")[slot] = np.asarray(action, dtype=np.float64)
        fault_point("therm:data")
        self._write_commit(slot=slot, next_traj=int(next_traj), phase=phase)
        fault_point("therm:commit")

    def _check_config_block(self, links: np.ndarray, what: str = "links") -> None:
        spec = self.spec
        expect = (spec.n_chains,) + (None,) + spec.config_shape
        shape = tuple(np.shape(links))
        if len(shape) != len(expect) or shape[0] != spec.n_chains or shape[2:] != spec.config_shape:
            raise StoreError(f"{what} have shape {shape}; ensemble {self.name!r} stores "
                             f"(chains={spec.n_chains}, n, {', '.join(map(str, spec.config_shape))})")
        if np.dtype(links.dtype) != np.dtype(spec.dtype):
            raise StoreError(f"{what} have dtype {links.dtype}; ensemble {self.name!r} stores {spec.dtype}. "
                             "Cast explicitly if a precision change is intended.")

    def append(self, traj: Sequence[int], links: np.ndarray, per_traj: Mapping[str, np.ndarray],
               next_traj: int, *, cost_s: float | None = None) -> None:
        """Append a block of stored trajectories and commit it.

        ``traj``: global indices ``(n,)`` of the stored configurations, strictly increasing and larger
        than every stored index; ``links``: ``(chains, n, ...)``; ``per_traj``: every per-trajectory
        variable of the ensemble as ``(chains, n)``; ``next_traj``: the global index the chain continues
        from.  ``cost_s``: the generation cost of every committed trajectory after this block (cumulative, all
        chains), committed with it; ``None`` drops a cost recorded before (the cost of the whole is then unknown).
        Validates everything before writing anything.
        """
        traj = np.asarray(traj, dtype=np.int64)
        links = np.asarray(links)
        n = len(traj)
        self._check_config_block(links)
        if links.shape[1] != n:
            raise StoreError(f"links hold {links.shape[1]} trajectories but {n} trajectory indices were given")
        if n and np.any(np.diff(traj) <= 0):
            raise StoreError("trajectory indices within a block must be strictly increasing")
        committed = self.committed
        if n and committed:
            try:
                last = int(self._array("traj")[committed - 1])
            except Exception as exc:  # a damaged chunk: name it
                raise self.store.array(self.name, "traj").error((committed - 1,), exc) from None
            if traj[0] <= last:
                dup = traj[traj <= last]
                raise StoreError(f"trajectory indices {dup[:5].tolist()} are already stored in {self.name!r} "
                                 f"(last stored index {last}); refusing to append duplicates")
        need = set(self._per_traj_vars())
        got = set(per_traj)
        if need != got:
            raise StoreError(f"per-trajectory data mismatch for {self.name!r}: missing {sorted(need - got)}, "
                             f"unexpected {sorted(got - need)}")
        for k, v in per_traj.items():
            if np.shape(v) != (self.spec.n_chains, n):
                raise StoreError(f"{k} has shape {np.shape(v)}, expected ({self.spec.n_chains}, {n})")
        if next_traj < (traj[-1] + 1 if n else self.next_traj):
            raise StoreError(f"next_traj={next_traj} is not after the last appended trajectory")
        if n == 0:
            return
        new = committed + n
        # 1) data (arrays grow if the reserved capacity is exceeded; the commit record still says
        #    `committed`).  The links chunks are written on a worker thread meanwhile.
        if self._capacity < new:
            self._resize_all(max(new, self._reserved))
        with ThreadPoolExecutor(max_workers=1) as pool:
            links_done = pool.submit(self._write_traj_block, self._array("links"), committed, links)
            self._array("traj")[committed:new] = traj
            for k, v in per_traj.items():
                self._array(k)[:, committed:new] = np.asarray(v)
            links_done.result()
        fault_point("append:data")
        # 2) commit
        known = cost_s is not None and bool(np.isfinite(cost_s))
        self._write_commit(committed=new, next_traj=int(next_traj), phase="production",
                           cost_s=float(cost_s) if known else None)
        fault_point("append:commit")
