"""``verify``: check every committed chunk of an ensemble, and optionally a physics check of configurations.

What is checked (see :mod:`.integrity` for the chunk format):

* the metadata of every array the ensemble must have (links, ``traj``, ``chain``, the per-trajectory
  arrays of its kind, the recorded post-hoc observables, the checkpoint arrays);
* every chunk holding committed data: present, of the right size, CRC32C intact -- for ``links`` only a
  random sample of ``sample`` chunks (their presence is still checked, all of them) when ``sample`` is
  given; post-hoc observables up to their measured count; checkpoint arrays only in the slot in use;
* with ``check``, ``n_check`` configurations (random, from intact chunks) are passed to
  ``check(spec, links, values)``, where ``values`` maps every per-trajectory scalar stored for that
  configuration (``plaquette``, ``action``, ...) to its value; a returned string is a failure.  The store
  itself knows no physics: ``corrflow verify`` passes a plaquette and unitarity check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .integrity import ArrayChunks, ChunkProblem, ConfigCheck, VerifyReport
from .layout import _sync, children
from .spec import CHECKPOINT_ARRAYS, EnsembleSpec

__all__ = ["verify_ensemble"]


def _exists(store: Any, key: str) -> bool:
    if store.is_local:
        return (Path(store.path) / key).is_file()
    return bool(_sync(store.root.store.exists(key)))


def verify_ensemble(store: Any, name: str, *, sample: int | None = None, check: ConfigCheck | None = None,
                    n_check: int = 8, seed: int = 0) -> VerifyReport:
    """Verify ensemble ``name`` of ``store`` (see the module docstring); never modifies the store.

    Raises :class:`StoreError` only when the ensemble cannot be read at all (absent, creation interrupted,
    damaged group metadata); everything else is reported in the returned :class:`VerifyReport`.
    """
    node = store._node(name)
    spec = EnsembleSpec.from_json(node.attrs["corrflow_ensemble"])
    com = dict(node.attrs["corrflow_commit"])
    n = int(com["committed"])
    measured = {k: int(v) for k, v in dict(node.attrs.get("corrflow_observables", {})).items()}
    report = VerifyReport(name=name, committed=n, sampled=sample is not None)
    target = com.get("target")
    if target is not None and n < int(target):
        what = "configurations imported" if spec.kind == "imported" else "trajectories per chain committed"
        report.incomplete = f"{n} of {target} {what}"
    members = children(store.root.store, name)
    expected = ["traj", "chain", "links", *spec.per_traj, *sorted(measured), *CHECKPOINT_ARRAYS]
    present = []
    for var in dict.fromkeys(expected):
        m = members.get(var)
        if m is None or m.kind != "array":
            gone = m is None or m.kind in ("other", "absent")
            problem = "array metadata (zarr.json) is missing" if gone else (m.problem or f"not an array ({m.kind})")
            report.problems.append(ChunkProblem(f"{name}/{var}/zarr.json", f"ensemble {name!r}, array {var}", problem,
                                                missing=gone))
        else:
            present.append(var)
    traj = None
    if "traj" in present:
        try:
            traj = np.asarray(store.root[name]["traj"][:n])
        except Exception:  # noqa: BLE001 - reported chunk by chunk below
            traj = None
    slot = int(com.get("slot", -1))
    bad_links: set[tuple[int, ...]] = set()
    rng = np.random.default_rng(seed)
    for var in present:
        if var in CHECKPOINT_ARRAYS:
            if com["phase"] != "therm" or slot < 0:
                continue  # no thermalisation state in use
            slots: list[int] | None = [slot]
        else:
            slots = None
        n_valid = min(n, measured[var]) if var in measured else n
        try:
            ac = ArrayChunks(store, name, var, store.root[name][var], n_valid, traj, slots)
        except Exception as exc:  # noqa: BLE001 - metadata zarr cannot parse
            report.problems.append(ChunkProblem(f"{name}/{var}/zarr.json", f"ensemble {name!r}, array {var}",
                                                f"unreadable array metadata ({type(exc).__name__}: {exc})"))
            continue
        idxs = list(ac.indices())
        if sample is not None and var == "links":
            for idx in idxs:
                if not _exists(store, ac.key(idx)):
                    report.problems.append(ChunkProblem(ac.key(idx), ac.where(idx), "missing", missing=True))
                    bad_links.add(idx)
            rest = [i for i in idxs if i not in bad_links]
            picks = rng.choice(len(rest), size=min(sample, len(rest)), replace=False) if rest and sample else []
            idxs = [rest[int(i)] for i in sorted(picks)]
        for idx in idxs:
            problem, nbytes = ac.check(idx)
            report.chunks += 1
            report.nbytes += nbytes
            if problem is not None:
                report.problems.append(problem)
                if var == "links":
                    bad_links.add(idx)
    if check is not None and n_check != 0 and n > 0 and "links" in present:
        _physics(store, name, spec, n, check, n_check, rng, bad_links, traj, report)
    return report


def _physics(store: Any, name: str, spec: EnsembleSpec, n: int, check: ConfigCheck, n_check: int,
             rng: np.random.Generator, bad_links: set[tuple[int, ...]], traj: np.ndarray | None,
             report: VerifyReport) -> None:
    links = store.root[name]["links"]
    ct = links.chunks[1]
    bad = {(i[0], i[1]) for i in bad_links}
    pairs = [(c, t) for c in range(spec.n_chains) for t in range(n) if (c, t // ct) not in bad]
    if n_check > 0 and len(pairs) > n_check:
        pairs = [pairs[int(i)] for i in sorted(rng.choice(len(pairs), size=n_check, replace=False))]
    values: dict[str, np.ndarray] = {}
    for var in spec.per_traj:
        try:
            arr = np.asarray(store.root[name][var][:, :n])
        except Exception:  # noqa: BLE001 - damaged: already reported
            continue
        if arr.dtype.kind in "fiub":
            values[var] = arr
    for c, t in pairs:
        try:
            u = np.asarray(links[c, t])
        except Exception:  # noqa: BLE001 - damaged chunk outside the checksummed sample
            continue
        where = f"chain {c}, " + (f"trajectory {int(traj[t])} " if traj is not None else "") + f"(stored position {t})"
        problem = check(spec, u, {k: float(v[c, t]) for k, v in values.items()})
        report.checked += 1
        if problem:
            report.mismatched.append(f"{where}: {problem}")

