"""Creating an ensemble as one transaction, and removing what an interrupted creation left behind.

Protocol (the caller holds the writer lock of the name, see :mod:`.locks`):

1. Remove the remains of an earlier, interrupted creation of the same name: staging directories
   ``_corrflow/staging/<name>.<token>`` and a group ``<name>`` without corrflow metadata (stores written by
   an older corrflow, remote stores).  A group ``<name>`` with damaged metadata is never removed: that
   is refused with a message.
2. Local stores: build the complete ensemble -- every array, the spec, the versions and the first commit
   record -- as a zarr group of its own in ``_corrflow/staging/<name>.<token>``, then publish it with one
   ``rename`` to ``<name>``.  Readers see nothing or everything.
3. Remote stores (no rename): build the group at ``<name>`` and write its metadata -- spec and commit
   record together, one ``zarr.json`` -- last; until then it is listed as an interrupted creation.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .faults import fault_point
from .layout import internal_dir, staging_entries
from .spec import (CHECKPOINT_ARRAYS, EnsembleSpec, StoreError, check_name, crc_codecs, lattice_dim_names,
                   versions)

__all__ = ["create_ensemble", "default_chunk_traj", "remove_remains"]


def default_chunk_traj(spec: EnsembleSpec) -> int:
    """Stored trajectories per links chunk when not given: about 8 MB chunks, at most 256 configurations."""
    cfg_bytes = int(np.prod(spec.config_shape)) * np.dtype(spec.dtype).itemsize
    return max(1, min(256, (8 << 20) // cfg_bytes))


def _build(grp: Any, spec: EnsembleSpec, chunk_traj: int) -> None:
    """Arrays of an empty ensemble with the schema of ``spec``, then its metadata (one ``zarr.json`` write)."""
    dims = ("chain", "traj") + lattice_dim_names(len(spec.shape)) + ("mu",) + (("row", "col") if spec.elem_shape else ())
    codecs = crc_codecs()
    c = spec.n_chains
    grp.create_array("links", shape=(c, 0) + spec.config_shape, chunks=(1, chunk_traj) + spec.config_shape,
                     dtype=spec.dtype, fill_value=0, dimension_names=dims, **codecs)
    ct = max(chunk_traj, 1024)
    for var in spec.per_traj:
        dt = {"accepted": "bool", "source_chain": "int64", "source_traj": "int64"}.get(var, "float64")
        fill = {"bool": False, "int64": -1}.get(dt, np.nan)
        grp.create_array(var, shape=(c, 0), chunks=(1, ct), dtype=dt, fill_value=fill,
                         dimension_names=("chain", "traj"), **codecs)
    grp.create_array("traj", shape=(0,), chunks=(ct,), dtype="int64", fill_value=-1,
                     dimension_names=("traj",), **codecs)
    ch = grp.create_array("chain", shape=(c,), chunks=(c,), dtype="int64", dimension_names=("chain",), **codecs)
    ch[:] = np.arange(c)
    links_ck, action_ck = CHECKPOINT_ARRAYS
    grp.create_array(links_ck, shape=(2, c) + spec.config_shape, chunks=(1, c) + spec.config_shape,
                     dtype=spec.dtype, fill_value=0, dimension_names=("slot",) + dims[:1] + dims[2:], **codecs)
    grp.create_array(action_ck, shape=(2, c), chunks=(1, c), dtype="float64", fill_value=np.nan,
                     dimension_names=("slot", "chain"), **codecs)
    fault_point("create")
    grp.attrs.update({
        "corrflow_ensemble": spec.to_json(),
        "corrflow_versions": versions(),
        "corrflow_created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "corrflow_commit": {"committed": 0, "next_traj": 0, "phase": "therm" if spec.n_therm else "production",
                            "slot": -1},
    })


def _discard(store: Any, path: Path) -> None:
    """Move ``path`` into ``_corrflow/trash`` (one rename: gone from its place at once), then delete it."""
    trash = internal_dir(store.path) / "trash"
    trash.mkdir(parents=True, exist_ok=True)
    dst = trash / f"{path.name}.{uuid.uuid4().hex}"
    os.rename(path, dst)
    shutil.rmtree(dst, ignore_errors=True)


def remove_remains(store: Any, name: str) -> bool:
    """Remove what interrupted creations of ``name`` left (caller holds the lock); True if anything was removed."""
    removed = False
    if store.is_local:
        for p in staging_entries(store.path).get(name, []):
            shutil.rmtree(p, ignore_errors=True)
            removed = True
        trash = internal_dir(store.path) / "trash"
        if trash.is_dir():  # garbage of anyone's interrupted deletion: nothing refers to it
            for p in trash.iterdir():
                shutil.rmtree(p, ignore_errors=True)
    entry = store._entry(name)
    if entry.status == "creating" and entry.node is not None:
        if store.is_local:
            _discard(store, Path(store.path) / name)
        else:
            from .layout import _sync

            _sync(store.root.store.delete_dir(name))
        removed = True
    return removed


def create_ensemble(store: Any, name: str, spec: EnsembleSpec, chunk_traj: int | None = None) -> None:
    """Create ensemble ``name`` of ``store`` atomically (see the module docstring); the caller holds its lock."""
    check_name(name)
    if not isinstance(spec, EnsembleSpec):
        raise StoreError(f"spec must be an EnsembleSpec, got {type(spec).__name__}")
    chunk_traj = int(chunk_traj) if chunk_traj is not None else default_chunk_traj(spec)
    if chunk_traj < 1:
        raise StoreError(f"chunk_traj must be >= 1, got {chunk_traj}")
    remove_remains(store, name)
    entry = store._entry(name)
    if entry.status == "ok":
        raise StoreError(f"ensemble {name!r} already exists in {store.path}")
    if entry.status == "damaged":
        raise store._not_readable(name, entry)
    if not store.is_local:
        _build(store.root.create_group(name), spec, chunk_traj)
        fault_point("create:published")
        return
    import zarr

    target = Path(store.path) / name
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise StoreError(f"{target} exists and is not an ensemble of this store; remove it or choose another name")
    staging = internal_dir(store.path) / "staging" / f"{name}.{uuid.uuid4().hex[:12]}"
    try:
        grp = zarr.open_group(store=str(staging), mode="w-", zarr_format=3)
        _build(grp, spec, chunk_traj)
        os.rename(staging, target)  # publish: one rename
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fault_point("create:published")
