"""Shared helpers for the tests of :mod:`corrflow.store` and of the commands that write through it.

Cost control: every HMC block size / thinning / measurement combination is a separate XLA compilation
(~3 s each), so the HMC runs here use one theory (U(1) on 4x4) and two generation settings (``BASE``:
thin 3, ``THIN1``: thin 1), shared through session-scoped fixtures.  Tests that damage a store work on
a ``shutil.copytree`` copy of a shared one; tests that need no HMC use :func:`dummy_block`.

Bad-input tests check three things: the exception type (or CLI exit status 2), a message naming the
problem, and that the store is byte-for-byte unchanged afterwards with no writer lock left behind.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

import corrflow
from corrflow import observables as cobs
from corrflow.cli import app
from corrflow.generate import initial_links, measurements_from_names, run_blocks
from corrflow.store import EnsembleSpec

THEORY = corrflow.make_theory("u1", (4, 4), beta=2.0)
CONFIG = corrflow.HMCConfig(0.2, 5, "omelyan", jitter=0.0)  # fixed lengths, as the legacy store was written
U1 = corrflow.get_group("u1")

# thin 3: production blocks of 3 and 1 stored trajectories (4 = 3 + 1), one thermalisation block
BASE = dict(n_chains=2, seed=7, n_therm=3, thin=3, block_size=3)
N_BASE = 4
N_EXTENDED = 7  # resume target: one more block of 3 (same compiled function)
# thin 1: thermalisation 3 + 1, production 3 + 3 + 1 (block size 3 does not divide 7)
THIN1 = dict(n_chains=2, seed=11, n_therm=4, thin=1, block_size=3)
N_THIN1 = 7

PER_TRAJ = ("links", "traj", "action", "delta_H", "accepted", "step_size", "plaquette")

runner = CliRunner()


def reference_run(seed, n_chains, n_therm, thin, block_size, n, start=None, n_stored=0):
    """The chain the store driver should produce, computed with run_blocks directly (in memory).

    ``start = (links, action, next_traj)`` continues a chain from a saved state (a thermalisation checkpoint, or the
    last stored configuration with ``n_stored`` configurations already stored) instead of the hot start; the
    result then holds only the configurations produced from there.
    """
    key = jax.random.PRNGKey(seed)
    if start is None:
        links, action, next_traj = initial_links(key, THEORY, n_chains, "hot", jnp.float64), None, 0
    else:
        links, action, next_traj = jnp.asarray(start[0]), jnp.asarray(start[1]), int(start[2])
    if next_traj < n_therm:
        for blk in run_blocks(key, THEORY, CONFIG, links, n_therm - next_traj, block_size=block_size,
                              first_index=next_traj, action=action):
            links, action = blk.state.links, blk.state.action
        next_traj = n_therm
    measure = measurements_from_names(THEORY.group, ("plaquette",), THEORY.ndim)
    cols = {k: [] for k in ("links", "plaquette", "action", "delta_H", "accepted", "traj")}
    for blk in run_blocks(key, THEORY, CONFIG, links, n - n_stored, block_size=block_size, first_index=next_traj,
                          measure=measure, thin=thin, keep_links=True, action=action):
        cols["links"].append(np.asarray(blk.links))
        cols["plaquette"].append(blk.measurements["plaquette"])
        cols["action"].append(np.asarray(blk.action))
        cols["delta_H"].append(np.asarray(blk.info.delta_H))
        cols["accepted"].append(np.asarray(blk.info.accepted))
        cols["traj"].append(np.asarray(blk.traj))
    return {k: np.concatenate(v, axis=0 if k == "traj" else 1) for k, v in cols.items()}


_REFERENCES: dict = {}


def reference(settings, n):
    key = (tuple(sorted(settings.items())), n)
    if key not in _REFERENCES:
        _REFERENCES[key] = reference_run(n=n, **settings)
    return _REFERENCES[key]


def bitwise_equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def snapshot(path) -> dict[str, str]:
    """{relative path: sha256} of every file below ``path`` (or of ``path`` itself if it is a file)."""
    p = Path(path)
    if not p.exists():
        return {"<absent>": ""}
    if p.is_file():
        return {".": hashlib.sha256(p.read_bytes()).hexdigest()}
    out = {}
    for f in sorted(p.rglob("*")):
        if f.is_file():
            out[str(f.relative_to(p))] = hashlib.sha256(f.read_bytes()).hexdigest()
        else:
            out[str(f.relative_to(p)) + "/"] = "dir"
    return out


def locks_left(path) -> list[str]:
    d = Path(path) / "_corrflow" / "locks"
    return sorted(x.name for x in d.iterdir()) if d.is_dir() else []


def assert_unchanged(path, before) -> None:
    assert snapshot(path) == before, "the store was modified by a refused operation"
    assert not locks_left(path), f"lock left behind: {locks_left(path)}"


def refused(path, exc, match, fn) -> None:
    """``fn()`` raises ``exc`` matching ``match`` and leaves the store at ``path`` untouched."""
    before = snapshot(path)
    with pytest.raises(exc, match=match):
        fn()
    assert_unchanged(path, before)


def cli(*args):
    res = runner.invoke(app, [str(a) for a in args])
    return res.exit_code, " ".join(res.output.split())


def cli_refused(path, match, *args) -> str:
    """The CLI exits with status 2 and a one-line message matching ``match``; the store is untouched."""
    before = snapshot(path)
    res = runner.invoke(app, [str(a) for a in args])
    out = " ".join(res.output.split())
    assert res.exit_code == 2, out
    assert "error:" in out, out  # (a progress bar may precede the message)
    assert "Traceback" not in res.output, out
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    line = [x for x in res.output.splitlines() if "error:" in x]
    assert len(line) == 1 and res.output.rstrip().endswith(line[0].rstrip()), res.output  # one line, the last
    assert re.search(match, out), out
    assert_unchanged(path, before)
    return out


def cli_up_to_date(path, match, *args) -> str:
    """The CLI finds nothing to do: exit status 0, a message matching ``match``, no error; the store is untouched."""
    before = snapshot(path)
    res = runner.invoke(app, [str(a) for a in args])
    out = " ".join(res.output.split())
    assert res.exit_code == 0, out
    assert "error:" not in out and "Traceback" not in res.output, out
    assert re.search(match, out), out
    assert_unchanged(path, before)
    return out


def dummy_block(n_chains, n, t0, *, dtype="float64", shape=(4, 4), rng=None, extra=()):
    """A valid append block of random U(1) links with correct plaquettes (no HMC)."""
    rng = rng or np.random.default_rng(t0)
    links = rng.uniform(-np.pi, np.pi, (n_chains, n) + tuple(shape) + (len(shape),)).astype(dtype)
    plaq = np.stack([np.asarray(cobs.plaquette(jnp.asarray(links[c]), U1)) for c in range(n_chains)])
    per = {"plaquette": plaq, "action": np.full((n_chains, n), 1.5), "delta_H": np.full((n_chains, n), 0.01),
           "accepted": np.ones((n_chains, n), bool), "step_size": np.full((n_chains, n), 0.2)}
    for k in extra:
        per[k] = np.zeros((n_chains, n))
    return np.arange(t0, t0 + n), links, per, t0 + n


def u1_spec(**kw):
    d = dict(theory="u1", group="u1", shape=(4, 4), params={"beta": 2.0, "xi": 1.0, "lam": 0.0}, n_chains=2,
             seed=0, dtype="float64")
    d.update(kw)
    return EnsembleSpec(**d)


def copy_store(src, tmp_path, name="copy.zarr") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def su3_config(seed):
    return np.asarray(corrflow.get_group("su3").random(jax.random.PRNGKey(seed), (2, 2, 2, 2, 4)))
