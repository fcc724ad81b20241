"""Analysis records: the results of the analyses, stored in the store and rendered by ``corrflow report``.

Layout
------
``_analyses/<name>`` is a group whose ``zarr.json`` carries the record (``corrflow_analysis``: a JSON
dict) and the name of the version group holding its figures (``corrflow_figures``: ``v<token>``, one
uint8 array per figure file).  A record written by an older corrflow has its figure arrays directly in
``_analyses/<name>`` and no ``corrflow_figures``; it is read the same way.

Replacing a record is one transaction: the figures go into a new version group first, then one metadata
write replaces record and version name together, then the old version is removed.  A writer killed
before that write leaves the previous record intact (the unused version is removed by the next write);
readers never see a record with another record's figures.  Writers of one record name are serialised
by a lock (``_analysis.<name>``, :mod:`.locks`).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Mapping

import numpy as np

from .faults import fault_point
from .layout import _sync, children, read_node
from .locks import WriterLock
from .spec import ANALYSES_GROUP, StoreError, check_name, crc_codecs

__all__ = ["list_analyses", "read_analysis", "write_analysis"]


def list_analyses(store: Any) -> list[str]:
    """Names of the complete analysis records of ``store``."""
    if not store.exists:
        return []
    return sorted(n for n, node in children(store.root.store, ANALYSES_GROUP).items()
                  if node.kind == "group" and isinstance(node.attrs.get("corrflow_analysis"), dict))


def write_analysis(store: Any, name: str, record: Mapping[str, Any], figures: Mapping[str, bytes] | None = None) -> None:
    """Record the result of an analysis, replacing an earlier result of the same name (see the module docstring).

    ``record`` is a JSON-serialisable dict; by convention it holds ``title`` (str), ``summary``
    (list of markdown lines), ``tables`` (``{caption: {"columns": [...], "rows": [[...], ...]}}``)
    and ``settings`` (dict).  ``figures`` maps a file name (``*.png``) to its bytes; they are written out
    next to ``report.md`` by :func:`corrflow.report.write_report`.
    """
    if store.mode != "a":
        raise StoreError(f"{store.path} is open read-only; open it with mode='a' to record an analysis")
    check_name(name, "analysis")
    try:
        payload = json.loads(json.dumps(dict(record), allow_nan=True))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"analysis record {name!r} is not JSON-serialisable: {exc}") from None
    figs = {}
    for fname, data in (figures or {}).items():
        check_name(fname, "figure")
        figs[fname] = np.frombuffer(bytes(data), dtype=np.uint8)
    lock = WriterLock(store, f"_analysis.{name}", f"analysis record {name!r}") if store.is_local else None
    if lock is not None:
        lock.acquire()
    try:
        parent = store.root.require_group(ANALYSES_GROUP)
        node = read_node(store.root.store, f"{ANALYSES_GROUP}/{name}")
        if node.kind not in ("group", "absent"):
            _delete(store, f"{ANALYSES_GROUP}/{name}")  # damaged or unfinished: replaced below
        g = parent.require_group(name)
        version = f"v{uuid.uuid4().hex[:12]}"
        vg = g.create_group(version)
        for fname, arr in figs.items():
            a = vg.create_array(fname, shape=arr.shape, dtype=np.uint8, chunks=(max(1, arr.size),), **crc_codecs())
            a[...] = arr
        fault_point("analysis:data")
        g.attrs.update({"corrflow_analysis": payload, "corrflow_figures": version})  # one metadata write
        for old in children(store.root.store, f"{ANALYSES_GROUP}/{name}"):
            if old != version:
                _delete(store, f"{ANALYSES_GROUP}/{name}/{old}")
    finally:
        if lock is not None:
            lock.release()


def _delete(store: Any, key: str) -> None:
    _sync(store.root.store.delete_dir(key))


def read_analysis(store: Any, name: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """``(record, figures)`` of an analysis result written by :func:`write_analysis` (or an older corrflow)."""
    have = list_analyses(store)
    if name not in have:
        node = read_node(store.root.store, f"{ANALYSES_GROUP}/{name}") if store.exists else None
        if node is not None and node.kind != "absent":
            raise StoreError(f"analysis result {name!r} in {store.path} is incomplete (no record); rerun the analysis")
        raise StoreError(f"no analysis result {name!r} in {store.path}; available: {', '.join(have) or 'none'}")
    g = store.root[ANALYSES_GROUP][name]
    attrs = dict(g.attrs)
    version = attrs.get("corrflow_figures")
    src = f"{ANALYSES_GROUP}/{name}/{version}" if version else f"{ANALYSES_GROUP}/{name}"
    holder = g[version] if version else g
    figs = {}
    for fname, node in children(store.root.store, src).items():
        if node.kind == "array":
            try:
                figs[fname] = np.asarray(holder[fname][...]).tobytes()
            except Exception as exc:  # noqa: BLE001 - checksum or decode failure
                raise StoreError(f"figure {fname!r} of analysis result {name!r} in {store.path} is damaged "
                                 f"({type(exc).__name__}: {exc}); rerun the analysis") from None
    return dict(attrs["corrflow_analysis"]), figs
