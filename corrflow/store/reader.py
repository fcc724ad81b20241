"""Opening a store and reading its ensembles (lazy xarray views of the committed trajectories).

Conventions
-----------
* ``open_store(path, "r")`` never writes.  ``open_store(path, "a")`` on a path that does not exist yet
  creates nothing until the first write (creating an ensemble, recording an analysis): a command
  refused for bad input leaves no empty store behind.
* Readers only ever see the committed part of an ensemble: every array is cut to the committed count of
  the commit record, whatever an interrupted writer left beyond it.  Interrupted creations and damaged
  metadata never stop the other ensembles from being listed and read; :meth:`EnsembleStore.incomplete`
  names them with the reason.
* Every read goes through :class:`~corrflow.store.integrity.CheckedArray`: a damaged chunk raises
  :class:`StoreError` naming ensemble, array, chain and trajectories.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .integrity import ArrayChunks, CheckedArray, ConfigCheck, VerifyReport
from .layout import Node, children, is_url, read_node, staging_entries
from .spec import (STORE_FORMAT, STORE_VERSION, EnsembleSpec, StoreError, check_name)

__all__ = ["EnsembleStore", "open_store"]


@dataclass
class _Entry:
    """What is stored under an ensemble name: ``status`` ``ok``, ``creating`` (interrupted), ``damaged``, ``absent``."""

    status: str
    node: Node | None = None
    reason: str = ""


def _valid_commit(c: Any) -> bool:
    return isinstance(c, dict) and all(isinstance(c.get(k), int) for k in ("committed", "next_traj")) and "phase" in c


def _inside_store_hint(path: str) -> str:
    """For a local ``path`` below the root of a corrflow store (an ensemble's group, one of its arrays, the lock area):
    a one-line error that names the store and what to pass instead; ``""`` otherwise."""
    import json

    p = Path(path).absolute()
    for parent in list(p.parents)[:4]:
        try:
            attrs = json.loads((parent / "zarr.json").read_text()).get("attributes", {})
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(attrs, dict) and isinstance(attrs.get("corrflow"), dict):
            rel = p.relative_to(parent).parts
            store = os.path.relpath(parent) if not os.path.isabs(path) else str(parent)
            ensemble = not rel[0].startswith("_") and (parent / rel[0] / "zarr.json").is_file()
            what = f"is the ensemble {rel[0]!r} of" if ensemble and len(rel) == 1 else "lies inside"
            hint = f" and the ensemble name {rel[0]!r}" if ensemble else " (a store cannot hold another store)"
            return f"{path} {what} the corrflow store {store}: pass the store path {store}{hint}"
    return ""


class EnsembleStore:
    """A corrflow ensemble store.

    ``EnsembleStore(path, mode="r")`` opens an existing store read-only; ``mode="a"`` opens it for
    writing and creates it at the first write if ``path`` does not exist (or is an empty directory).
    ``path`` is a local directory or an fsspec URL.  Raises :class:`StoreError` for a directory that is
    not a zarr store, a zarr store that is not a corrflow store, or a read-only location in ``"a"`` mode.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "r") -> None:
        import zarr

        if mode not in ("r", "a"):
            raise StoreError(f"mode must be 'r' or 'a', got {mode!r}")
        self.path = str(path)
        self.mode = mode
        self.is_local = not is_url(self.path)
        self._root: Any = None
        fresh = False
        if self.is_local:
            p = Path(self.path)
            inside = _inside_store_hint(self.path)  # before anything is created: never a store inside a store
            if inside:
                raise StoreError(inside)
            if p.exists() and not p.is_dir():
                raise StoreError(f"{self.path} is a file, not a store directory; pass a directory path such as runs.zarr")
            fresh = (not p.exists()) or (p.is_dir() and not any(p.iterdir()))
            if p.exists() and not (p / "zarr.json").exists() and not fresh:
                if (p / ".zgroup").exists() or (p / ".zarray").exists():
                    raise StoreError(f"{self.path} is a zarr v2 store; corrflow stores are zarr v3. "
                                     "Convert it or choose a new path.")
                raise StoreError(f"{self.path} is a non-empty directory that is not a zarr store; "
                                 "choose a new path (it will be created) or an existing corrflow store")
            if fresh and mode == "r":
                raise StoreError(f"no store at {self.path}; create one with `corrflow generate ... --store {self.path}`")
            if mode == "a":
                target = p if p.exists() else p.parent
                while not target.exists():
                    target = target.parent
                if not target.is_dir():
                    raise StoreError(f"{self.path} cannot be created: {target} is a file, not a directory")
                if not os.access(target, os.W_OK):
                    raise StoreError(f"{self.path} is not writable (permission denied on {target}); "
                                     "choose a writable location or open with mode='r'")
        else:
            try:
                zarr.open_group(store=self.path, mode="r", zarr_format=3)
            except Exception:  # noqa: BLE001 - not there (or unreadable): decided below
                fresh = mode == "a"
        if not fresh:
            self._open(mode)

    def _open(self, mode: str) -> None:
        import zarr

        try:
            self._root = zarr.open_group(store=self.path, mode=mode, zarr_format=3)
        except Exception as exc:  # zarr raises many different types here
            raise StoreError(f"cannot open {self.path} as a zarr v3 store: {exc}") from None
        meta = dict(self._root.attrs).get("corrflow")
        if meta is None:
            members = children(self._root.store, "")
            if members or dict(self._root.attrs):
                raise StoreError(f"{self.path} is a zarr store but not a corrflow store (no 'corrflow' root "
                                 "attribute); refusing to write into a foreign store. Choose another path.")
            if mode == "r":
                raise StoreError(f"{self.path} is an empty zarr group, not a corrflow store")
            self._root.attrs["corrflow"] = {"format": STORE_FORMAT, "version": STORE_VERSION}
        elif not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
            raise StoreError(f"{self.path}: root attribute 'corrflow' is not a corrflow store header: {meta!r}")
        elif int(meta.get("version", 0)) > STORE_VERSION:
            raise StoreError(f"{self.path} has store format version {meta.get('version')}; this corrflow reads "
                             f"up to version {STORE_VERSION}. Upgrade corrflow.")

    @property
    def root(self) -> Any:
        """The root zarr group (a store opened with ``"a"`` that does not exist yet is created now)."""
        if self._root is None:
            self.materialise()
        return self._root

    @property
    def exists(self) -> bool:
        """False for a store opened with ``"a"`` that nothing has been written to yet."""
        return self._root is not None

    def materialise(self) -> None:
        """Create the store on disk (the first write does this; nothing to do if it exists)."""
        if self._root is not None:
            return
        if self.mode != "a":  # pragma: no cover - read-only stores always exist
            raise StoreError(f"store {self.path} is open read-only")
        if self.is_local:
            self._create_local()
        self._open("a")

    def _create_local(self) -> None:
        """Create a local store atomically: the root group with its header is built in a hidden sibling directory
        and renamed onto ``path`` (absent or an empty directory).  Two processes creating one store at once (a job
        array) then find either nothing or a complete store: the loser of the rename opens the winner's store.  (A
        plain ``open_group(mode="a")`` could read the other's half-written ``zarr.json``, refuse the store as foreign,
        or rewrite its root without the header.)  A process killed here leaves at most the hidden directory, never
        a store without its header."""
        import shutil

        import zarr

        p = Path(os.path.realpath(self.path))  # a link to an empty directory: create the store where it points
        p.parent.mkdir(parents=True, exist_ok=True)
        if (p / "zarr.json").exists():
            return
        tmp = p.parent / f".{p.name}.creating-{uuid.uuid4().hex[:12]}"
        try:
            root = zarr.open_group(store=str(tmp), mode="w", zarr_format=3)
            root.attrs["corrflow"] = {"format": STORE_FORMAT, "version": STORE_VERSION}
            try:
                os.rename(tmp, p)  # atomic; onto an empty directory too
            except OSError:
                if not (p / "zarr.json").exists():  # not a store created meanwhile by another process
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------------------------------
    # listing
    # ------------------------------------------------------------------------------------
    def _survey(self) -> dict[str, _Entry]:
        out: dict[str, _Entry] = {}
        if self._root is None:
            return out
        for name, node in children(self._root.store, "").items():
            if name.startswith("_"):
                continue
            entry = self._classify(node)
            if entry is not None:
                out[name] = entry
        if self.is_local:
            for name, dirs in staging_entries(self.path).items():
                if name not in out:
                    out[name] = _Entry("creating", reason=f"creation interrupted before it was published "
                                                          f"({len(dirs)} unfinished build{'s' if len(dirs) > 1 else ''})")
        return dict(sorted(out.items()))

    def _classify(self, node: Node) -> _Entry | None:
        if node.kind == "damaged":
            return _Entry("damaged", node, node.problem or "unreadable metadata")
        if node.kind == "other":
            if node.partial_only:
                return _Entry("creating", node, "creation interrupted before the group's metadata was written")
            return None  # a directory that is not a zarr node: not ours
        if node.kind != "group":
            return None  # absent, or an array
        if "corrflow_ensemble" in node.attrs and _valid_commit(node.attrs.get("corrflow_commit")):
            return _Entry("ok", node)
        if "corrflow_ensemble" in node.attrs:
            return _Entry("damaged", node, "the commit record corrflow_commit is missing or malformed")
        return _Entry("creating", node, "creation interrupted: the group has no corrflow metadata yet")

    def _entry(self, name: str) -> _Entry:
        if self._root is None or not isinstance(name, str) or not name or "/" in name or name.startswith("_"):
            return _Entry("absent")
        entry = self._classify(read_node(self._root.store, name))
        if entry is None and self.is_local and name in staging_entries(self.path):
            entry = _Entry("creating", reason="creation interrupted before it was published")
        return entry or _Entry("absent")

    def ensembles(self) -> list[str]:
        """Names of the ensembles that can be read (published, with valid metadata)."""
        return [n for n, e in self._survey().items() if e.status == "ok"]

    def incomplete(self) -> dict[str, str]:
        """``{name: reason}`` of ensembles that cannot be read: interrupted creations (the next writer of that
        name removes them) and damaged metadata."""
        return {n: (f"damaged: {e.reason}" if e.status == "damaged" else e.reason)
                for n, e in self._survey().items() if e.status != "ok"}

    def __contains__(self, name: str) -> bool:
        return self._entry(name).status == "ok"

    def __repr__(self) -> str:
        lines = [f"EnsembleStore({self.path!r}, mode={self.mode!r})"]
        for name, entry in self._survey().items():
            if entry.status != "ok":
                lines.append(f"  {name}: {'DAMAGED' if entry.status == 'damaged' else 'INCOMPLETE'} ({entry.reason})")
                continue
            try:
                info = self.info(name)
                lines.append(f"  {name}: {info['kind']} {info['theory']} {'x'.join(map(str, info['shape']))} "
                             f"{info['params']}  {info['n_chains']} chains x {info['committed']} traj")
            except StoreError as exc:
                lines.append(f"  {name}: UNREADABLE ({exc})")
        return "\n".join(lines)

    def _not_readable(self, name: str, entry: _Entry) -> StoreError:
        if entry.status == "creating":
            return StoreError(f"ensemble {name!r} in {self.path} is incomplete: {entry.reason}. Rerun the command "
                              "that creates it (its remains are removed first).")
        if entry.status == "damaged":
            return StoreError(f"ensemble {name!r} in {self.path} is damaged: {entry.reason}. Restore it from a "
                              f"backup, or delete the directory {name} inside the store to create it again.")
        have = ", ".join(self.ensembles()) or "none"
        return StoreError(f"no ensemble {name!r} in {self.path}; available: {have}")

    def _node(self, name: str) -> Node:
        entry = self._entry(name)
        if entry.status != "ok":
            raise self._not_readable(name, entry)
        assert entry.node is not None
        return entry.node

    def _group(self, name: str) -> Any:
        self._node(name)
        return self.root[name]

    def spec(self, name: str) -> EnsembleSpec:
        """The :class:`EnsembleSpec` of ensemble ``name``."""
        return EnsembleSpec.from_json(self._node(name).attrs["corrflow_ensemble"])

    def commit(self, name: str) -> dict[str, Any]:
        """The commit record: ``committed``, ``next_traj``, ``phase``, ``slot`` (and ``target``, if recorded)."""
        return dict(self._node(name).attrs["corrflow_commit"])

    def info(self, name: str) -> dict[str, Any]:
        """Summary of an ensemble: spec fields, committed trajectories, size, provenance, completeness.

        ``target`` is the number of trajectories per chain the last run was asked for (the number of files of
        an import), ``complete`` whether they are all committed (without a target: whether anything is);
        ``cost_s`` the recorded generation seconds of the committed configurations (None if not recorded);
        ``observables`` the post-hoc measurements and how many trajectories each covers, ``observable_settings``
        how they were computed (``{"flow_eps": 0.02}`` for the Wilson flow; empty where nothing was recorded)."""
        node = self._node(name)
        spec = EnsembleSpec.from_json(node.attrs["corrflow_ensemble"])
        com = dict(node.attrs["corrflow_commit"])
        out = spec.to_json()
        target = com.get("target")
        out.update(name=name, committed=int(com["committed"]), next_traj=int(com["next_traj"]),
                   phase=com["phase"], created=node.attrs.get("corrflow_created"),
                   versions=node.attrs.get("corrflow_versions"), target=target,
                   complete=int(com["committed"]) >= int(target) if target is not None else int(com["committed"]) > 0)
        cost = com.get("cost_s")
        out["cost_s"] = float(cost) if isinstance(cost, (int, float)) else None
        out["observables"] = {k: int(v) for k, v in dict(node.attrs.get("corrflow_observables", {})).items()}
        out["observable_settings"] = {k: dict(read_node(self.root.store, f"{name}/{k}").attrs.get("corrflow_settings")
                                              or {}) for k in out["observables"]}  # e.g. the Wilson-flow step
        itemsize = np.dtype(spec.dtype).itemsize
        out["links_bytes"] = int(com["committed"]) * spec.n_chains * int(np.prod(spec.config_shape)) * itemsize
        return out

    # ------------------------------------------------------------------------------------
    # analysis records (corrflow.store.records)
    # ------------------------------------------------------------------------------------
    def analyses(self) -> list[str]:
        """Names of the analysis results recorded in this store (see :meth:`write_analysis`)."""
        from .records import list_analyses

        return list_analyses(self)

    def write_analysis(self, name: str, record: Mapping[str, Any], figures: Mapping[str, bytes] | None = None) -> None:
        """Record the result of an analysis, replacing an earlier one of that name atomically (see
        :func:`corrflow.store.records.write_analysis`)."""
        from .records import write_analysis

        write_analysis(self, name, record, figures)

    def read_analysis(self, name: str) -> tuple[dict[str, Any], dict[str, bytes]]:
        """``(record, figures)`` of an analysis result written by :meth:`write_analysis`."""
        from .records import read_analysis

        return read_analysis(self, name)

    # ------------------------------------------------------------------------------------
    # writing (corrflow.store.writer)
    # ------------------------------------------------------------------------------------
    def create_ensemble(self, name: str, spec: EnsembleSpec, *, chunk_traj: int | None = None) -> None:
        """Create an empty ensemble with the schema of ``spec``, atomically (refuses existing names)."""
        if self.mode != "a":
            raise StoreError(f"store {self.path} is open read-only; open with mode='a' to create ensembles")
        check_name(name)
        if name in self:
            raise StoreError(f"ensemble {name!r} already exists in {self.path}")
        with self.writer(name, create=spec, chunk_traj=chunk_traj) as w:
            if not w.created:
                raise StoreError(f"ensemble {name!r} already exists in {self.path} (created by another process)")

    def lock_path(self, name: str) -> Path:
        """Writer lock of ``name``: ``<store>/_corrflow/locks/<name>.lock`` (see :mod:`corrflow.store.locks`)."""
        from .locks import WriterLock

        return WriterLock(self, name, "").path

    def writer(self, name: str, *, create: EnsembleSpec | None = None, chunk_traj: int | None = None) -> Any:
        """A locked :class:`~corrflow.store.writer.EnsembleWriter` for ``name`` (use as a context manager).

        ``create``: create the ensemble with this spec, under the lock, if it does not exist yet (the
        remains of an interrupted creation are removed first); ``writer.created`` tells whether it did.
        """
        from .writer import EnsembleWriter

        if self.mode != "a":
            raise StoreError(f"store {self.path} is open read-only; open with mode='a' to write")
        check_name(name)
        if create is None:
            self._node(name)
        return EnsembleWriter(self, name, create=create, chunk_traj=chunk_traj)

    # ------------------------------------------------------------------------------------
    # reading data
    # ------------------------------------------------------------------------------------
    def _traj_values(self, name: str, n: int) -> np.ndarray | None:
        try:
            return np.asarray(self.root[name]["traj"][:n])
        except Exception:  # noqa: BLE001 - only used to label messages
            return None

    def _chunks(self, name: str, var: str, *, traj: np.ndarray | None = None, n_valid: int | None = None,
                slots: list[int] | None = None) -> ArrayChunks:
        node = self._node(name)
        sub = read_node(self.root.store, f"{name}/{var}")
        if sub.kind != "array":
            what = sub.problem or f"{name}/{var}/zarr.json is missing"
            raise StoreError(f"array {var!r} of ensemble {name!r} in {self.path} is damaged or missing ({what}); "
                             f"run `corrflow verify {self.path} {name}`")
        n = int(node.attrs["corrflow_commit"]["committed"])
        if n_valid is None:
            measured = dict(node.attrs.get("corrflow_observables", {}))
            n_valid = min(n, int(measured[var])) if var in measured else n
        loader = traj if traj is not None or var == "traj" else (lambda: self._traj_values(name, n))
        return ArrayChunks(self, name, var, self.root[name][var], n_valid, loader, slots)

    def array(self, name: str, var: str) -> CheckedArray:
        """Array ``var`` of ensemble ``name`` for reading (``[...]`` selections), with damaged chunks reported by
        ensemble, array, chain and trajectories.  The array may be longer than the committed count
        (see :meth:`commit`); positions beyond it hold no committed data."""
        return CheckedArray(self._chunks(name, var))

    def open_ensemble(self, name: str, *, verify: bool = True) -> Any:
        """Lazy ``xarray.Dataset`` of the committed part of ``name`` (dask-backed, links not loaded).

        Built array by array from the zarr metadata, each cut to the committed length, so arrays left
        longer by an interrupted append never show (and never conflict).  Checkpoint arrays and observable
        arrays whose measurement was never recorded are omitted; attrs hold the ensemble spec.  With
        ``verify=True`` (default) a light integrity check runs first (every committed chunk present, the
        small per-trajectory arrays checksummed) and a damaged ensemble raises :class:`StoreError` naming the
        missing or corrupt chunks.  Reading a damaged chunk later raises :class:`StoreError` naming it.
        """
        import dask.array as da
        import xarray as xr

        if verify:
            report = self.verify(name, sample=0)
            if not report.ok:
                raise StoreError(f"integrity check failed for {name!r} in {self.path}: {report.first_problem()}; run "
                                 f"`corrflow verify {self.path} {name}` for the full report, or open with verify=False "
                                 "to read what is intact")
        node = self._node(name)
        spec = EnsembleSpec.from_json(node.attrs["corrflow_ensemble"])
        n = int(node.attrs["corrflow_commit"]["committed"])
        recorded = set(dict(node.attrs.get("corrflow_observables", {})))
        wanted = {"links", "traj", "chain"} | set(spec.per_traj) | recorded
        members = children(self.root.store, name)
        for var in sorted(wanted & set(members)):
            if members[var].kind != "array":
                raise StoreError(f"array {var!r} of ensemble {name!r} in {self.path} is damaged "
                                 f"({members[var].problem or 'no zarr.json'}); run `corrflow verify`")
        traj = None
        coords: dict[str, Any] = {}
        data_vars: dict[str, Any] = {}
        for var in ["traj"] + sorted(v for v in wanted & set(members) if v != "traj"):
            if var not in members:
                continue
            chunks = self._chunks(name, var, traj=traj)
            arr = chunks.arr
            dims = chunks.dims
            if len(dims) != arr.ndim:
                raise StoreError(f"array {name}/{var} has no dimension names; the store is corrupt or foreign")
            x = da.from_array(CheckedArray(chunks), chunks=arr.chunks, asarray=False, fancy=False, lock=False,
                              name=f"corrflow-{name}-{var}-{uuid.uuid4().hex}", meta=np.empty((0,) * arr.ndim, arr.dtype))
            if "traj" in dims:
                ax = dims.index("traj")
                if arr.shape[ax] < n:
                    raise StoreError(f"array {name}/{var} holds {arr.shape[ax]} trajectories but {n} are committed; "
                                     "the store is damaged (run `corrflow verify`)")
                x = x[tuple(slice(0, n) if i == ax else slice(None) for i in range(arr.ndim))]
            if var in ("chain", "traj"):
                coords[var] = (dims, np.asarray(x))
                if var == "traj":
                    traj = coords[var][1]
            else:
                data_vars[var] = (dims, x, dict(arr.attrs.get("corrflow_settings") or {}))  # e.g. flow_eps
                for cname, cval in dict(arr.attrs.get("corrflow_coords", {})).items():
                    coords[cname] = ((cname,), np.asarray(cval, float))  # e.g. flow_time of E(t)
        ds = xr.Dataset(data_vars, coords=coords)
        ds.attrs = {"name": name, **spec.to_json()}
        return ds

    def tree(self) -> Any:
        """All readable ensembles as an ``xarray.DataTree`` (lazy), one node per ensemble."""
        import xarray as xr

        return xr.DataTree.from_dict({f"/{n}": self.open_ensemble(n, verify=False) for n in self.ensembles()})

    def stored_configs(self, name: str, chains: Sequence[int], positions: Sequence[int]) -> Any:
        """The links ``[chains[k], positions[k]]`` of ensemble ``name`` as an on-demand ``(n, *config_shape)`` source
        (:class:`corrflow.store.configs.StoredConfigs`): nothing is read until it is indexed."""
        from .configs import StoredConfigs

        return StoredConfigs(self, name, chains, positions)

    def load_configs(self, name: str, chain: int, trajs: Sequence[int] | slice) -> np.ndarray:
        """Links of chain ``chain`` at stored positions ``trajs`` (positions, not global indices), read a chunk at a
        time (:meth:`stored_configs`)."""
        if isinstance(trajs, slice):
            idx = list(range(*trajs.indices(int(self.commit(name)["committed"]))))
        else:
            idx = [int(t) for t in trajs]
        return self.stored_configs(name, [chain] * len(idx), idx).load()

    def verify(self, name: str, *, sample: int | None = None, check: ConfigCheck | None = None, n_check: int = 8,
               seed: int = 0, n_sample: int | None = None) -> VerifyReport:
        """Integrity check of ensemble ``name`` (see :func:`corrflow.store.verify.verify_ensemble`).

        ``sample=None`` (default): every committed chunk of every array is checksummed.  ``sample=k``: every
        chunk's presence is checked, the small arrays are checksummed and ``k`` random links chunks.
        ``check(spec, links, values) -> problem | None`` is run on ``n_check`` configurations (``-1``: all).
        ``n_sample`` is the former name of ``sample`` (``-1``: everything)."""
        from .verify import verify_ensemble

        if n_sample is not None:
            sample = None if n_sample < 0 else n_sample
        return verify_ensemble(self, name, sample=sample, check=check, n_check=n_check, seed=seed)


def open_store(path: str | os.PathLike, mode: str = "r") -> EnsembleStore:
    """Open a corrflow store (``mode="r"`` read-only, ``"a"`` read/write, created at the first write if absent).

    ``repr(store)`` lists the ensembles; ``store.open_ensemble(name)`` gives a lazy xarray Dataset and
    ``store.tree()`` an ``xarray.DataTree`` of all ensembles.
    """
    return EnsembleStore(path, mode)
