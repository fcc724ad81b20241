"""Where things are in a store, read without zarr's member listing.

Conventions
-----------
* The store root is a zarr v3 group with ``attrs["corrflow"] = {"format": "corrflow-store", "version": 1}``.
  Each child group whose name does not start with ``_`` is an ensemble; ``_analyses`` holds analysis
  records; ``_corrflow`` is corrflow's internal area (local stores only): an *empty zarr array*, so that
  zarr and xarray never list what its directory holds -- ``locks/<key>.lock`` (writer locks) and
  ``staging/<name>.<token>/`` (ensembles being created, published by one rename).
* A published ensemble is a group whose ``zarr.json`` carries both ``corrflow_ensemble`` and a valid
  ``corrflow_commit``.  A child group without them is an interrupted creation (stores written by an
  older corrflow, or remote stores where creation cannot be a rename); so is a staging directory.
* Members are listed here by reading each child's ``zarr.json`` directly, never through zarr's
  ``group_keys()``: that would warn about every stray file (``zarr.<uuid>.partial`` left by a killed
  write, a lock area) and fail on one truncated ``zarr.json``.  Here a stray file is skipped and a
  damaged ``zarr.json`` is reported for that member only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .spec import INTERNAL

__all__ = ["Node", "children", "read_node", "internal_dir", "staging_entries", "is_url", "chunk_key"]


def is_url(path: str) -> bool:
    """True for an fsspec URL (``memory://x``, ``s3://bucket/x``), False for a local path."""
    return "://" in str(path)


@dataclass
class Node:
    """One entry of a group: ``kind`` is ``group``, ``array``, ``damaged`` (unreadable ``zarr.json``), ``absent``
    (nothing, a plain file or an empty directory) or ``other`` (a directory without ``zarr.json``:
    ``partial_only`` when it holds nothing but ``*.partial`` files, i.e. a creation killed before its
    first metadata file was renamed into place)."""

    name: str
    kind: str
    attrs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None
    partial_only: bool = False


def _sync(coro: Any) -> Any:
    from zarr.core.sync import sync

    return sync(coro)


def _get(zstore: Any, key: str) -> bytes | None:
    from zarr.core.buffer import default_buffer_prototype

    buf = _sync(zstore.get(key, prototype=default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def _list_dir(zstore: Any, prefix: str) -> list[str]:
    async def collect() -> list[str]:
        return [k async for k in zstore.list_dir(prefix)]

    return _sync(collect())


def read_node(zstore: Any, key: str) -> Node:
    """The node at ``key`` (``"name"`` or ``"a/b"``) of a zarr store, from its ``zarr.json``."""
    name = key.rsplit("/", 1)[-1]
    try:
        raw = _get(zstore, f"{key}/zarr.json")
    except (OSError, ValueError) as exc:
        return Node(name, "damaged", problem=f"{key}/zarr.json cannot be read ({exc})")
    if raw is None:
        try:
            inside = _list_dir(zstore, key)
        except (OSError, ValueError):
            inside = []
        if not inside:  # nothing there (or a plain file, or an empty directory)
            return Node(name, "absent")
        return Node(name, "other", partial_only=all(k.endswith(".partial") for k in inside))
    try:
        meta = json.loads(raw.decode())
        kind = meta["node_type"]
        attrs = meta.get("attributes", {}) or {}
        if kind not in ("group", "array") or not isinstance(attrs, dict):
            raise ValueError(f"node_type {kind!r}")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        what = "truncated or invalid JSON" if isinstance(exc, json.JSONDecodeError) else f"not zarr v3 metadata: {exc}"
        return Node(name, "damaged", problem=f"{key}/zarr.json is unreadable ({what}, {len(raw)} bytes)")
    return Node(name, kind, attrs=attrs, meta=meta)


def children(zstore: Any, prefix: str = "") -> dict[str, Node]:
    """Every member of the group at ``prefix``: ``{name: Node}``; stray ``*.partial`` files and plain files
    are skipped, directories without ``zarr.json`` are returned as ``other``."""
    out: dict[str, Node] = {}
    try:
        keys = _list_dir(zstore, prefix)
    except (OSError, ValueError):
        return out
    for k in sorted(keys):
        if k == "zarr.json" or k.endswith(".partial"):
            continue
        key = f"{prefix}/{k}" if prefix else k
        node = read_node(zstore, key)
        if node.kind != "absent":
            out[k] = node
    return out


def internal_dir(store_path: str | os.PathLike) -> Path:
    """``<store>/_corrflow``: corrflow's internal area of a local store (see the module docstring)."""
    return Path(store_path) / INTERNAL


def staging_entries(store_path: str | os.PathLike) -> dict[str, list[Path]]:
    """``{ensemble name: [staging directories]}`` of creations that have not been published (local stores)."""
    out: dict[str, list[Path]] = {}
    d = internal_dir(store_path) / "staging"
    try:
        entries = list(d.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return out
    for p in entries:
        name, dot, token = p.name.rpartition(".")
        if dot and name:
            out.setdefault(name, []).append(p)
    return out


def chunk_key(name: str, var: str, idx: tuple[int, ...]) -> str:
    """Store key of chunk ``idx`` of array ``var`` of ensemble ``name`` (zarr v3 default encoding)."""
    return f"{name}/{var}/c/" + "/".join(str(int(i)) for i in idx)
