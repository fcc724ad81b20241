"""Tests of the zarr ensemble store (:mod:`corrflow.store`) and of its drivers and CLI commands.

Cost control: every HMC block size / thinning / measurement combination is a separate XLA
compilation (~3 s each), so all HMC runs below use one theory (U(1) on 4x4) and two generation
settings (``BASE``: thin 3, ``THIN1``: thin 1), shared through module-scoped fixtures.  Tests that
damage a store work on a ``shutil.copytree`` copy of the shared one.

Bad-input tests check three things: the exception type (or CLI exit status 2), a message naming the
problem, and that the store is byte-for-byte unchanged afterwards with no writer lock left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import dask.array
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
import zarr
from typer.testing import CliRunner

import corrflow
import corrflow.store as cstore
from corrflow import observables as cobs
from corrflow.cli import app
from corrflow.generate import initial_links, measurements_from_names, run_blocks
from corrflow.pipeline import generate_to_store
from corrflow.ildg import IldgFormatError, write_ildg
from corrflow.pipeline import measure_stored
from corrflow.store import EnsembleSpec, StoreError, open_store

THEORY = corrflow.make_theory("u1", (4, 4), beta=2.0)
CONFIG = corrflow.HMCConfig(0.2, 5, "omelyan")
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


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------


def reference_run(seed, n_chains, n_therm, thin, block_size, n):
    """The chain the store driver should produce, computed with run_blocks directly (in memory)."""
    key = jax.random.PRNGKey(seed)
    links = initial_links(key, THEORY, n_chains, "hot", jnp.float64)
    action = None
    for blk in run_blocks(key, THEORY, CONFIG, links, n_therm, block_size=block_size, first_index=0):
        links, action = blk.state.links, blk.state.action
    measure = measurements_from_names(THEORY.group, ("plaquette",), THEORY.ndim)
    cols = {k: [] for k in ("links", "plaquette", "action", "delta_H", "accepted", "traj")}
    for blk in run_blocks(key, THEORY, CONFIG, links, n, block_size=block_size, first_index=n_therm,
                          measure=measure, thin=thin, keep_links=True, action=action):
        cols["links"].append(np.asarray(blk.links))
        cols["plaquette"].append(blk.measurements["plaquette"])
        cols["action"].append(np.asarray(blk.action))
        cols["delta_H"].append(np.asarray(blk.info.delta_H))
        cols["accepted"].append(np.asarray(blk.info.accepted))
        cols["traj"].append(np.asarray(blk.traj))
    out = {k: np.concatenate(v, axis=0 if k == "traj" else 1) for k, v in cols.items()}
    return out


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


def assert_unchanged(path, before) -> None:
    assert snapshot(path) == before, "the store was modified by a refused operation"
    locks = Path(str(path) + ".locks")
    assert not locks.exists() or not any(locks.iterdir()), f"lock left behind: {list(locks.iterdir())}"


def refused(path, exc, match, fn) -> None:
    """``fn()`` raises ``exc`` matching ``match`` and leaves the store at ``path`` untouched."""
    before = snapshot(path)
    with pytest.raises(exc, match=match):
        fn()
    assert_unchanged(path, before)


def cli(*args):
    res = runner.invoke(app, [str(a) for a in args])
    return res.exit_code, " ".join(res.output.split())


def cli_refused(path, match, *args) -> None:
    """The CLI exits with status 2 and a one-line message matching ``match``; the store is untouched."""
    before = snapshot(path)
    code, out = cli(*args)
    assert code == 2, out
    assert "error:" in out, out  # (a progress bar may precede the message)
    assert "Traceback" not in out
    assert re.search(match, out), out
    assert_unchanged(path, before)


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


def copy_store(src, tmp_path) -> Path:
    dst = tmp_path / "copy.zarr"
    shutil.copytree(src, dst)
    return dst


def su3_config(seed):
    return np.asarray(corrflow.get_group("su3").random(jax.random.PRNGKey(seed), (2, 2, 2, 2, 4)))


# ----------------------------------------------------------------------------------------
# shared ensembles
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_path(tmp_path_factory):
    """A store with ensemble ``base`` (BASE settings, 4 stored trajectories per chain); never modified."""
    path = tmp_path_factory.mktemp("base") / "runs.zarr"
    st = open_store(path, "a")
    summary = generate_to_store(st, "base", THEORY, CONFIG, n_traj=N_BASE, **BASE)
    assert summary.committed == N_BASE and summary.n_new == N_BASE
    return path


@pytest.fixture(scope="module")
def thin1_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("thin1") / "runs.zarr"
    generate_to_store(open_store(path, "a"), "t1", THEORY, CONFIG, n_traj=N_THIN1, **THIN1)
    return path


@pytest.fixture
def store_copy(base_path, tmp_path):
    """A private copy of the base store (for tests that modify or damage it)."""
    return copy_store(base_path, tmp_path)


@pytest.fixture
def ildg_files(tmp_path):
    good = [tmp_path / "cfg0.lime", tmp_path / "cfg1.lime"]
    for i, f in enumerate(good):
        write_ildg(f, su3_config(i))
    bad = tmp_path / "notlime.lime"
    bad.write_bytes(b"this is a text file, not a LIME container\n" * 8)
    return good, bad


# ----------------------------------------------------------------------------------------
# 1. round trip against run_blocks
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["thin3", "thin1"])
def test_round_trip_bitwise(which, base_path, thin1_path):
    path, name, settings, n = ((base_path, "base", BASE, N_BASE) if which == "thin3"
                               else (thin1_path, "t1", THIN1, N_THIN1))
    assert n % settings["block_size"] != 0  # several blocks, the last one short
    ref = reference(settings, n)
    st = open_store(path, "r")
    ds = st.open_ensemble(name)
    assert bitwise_equal(ds.links.values, ref["links"])
    for var in ("plaquette", "action", "delta_H", "accepted"):
        assert bitwise_equal(ds[var].values, ref[var]), var
    assert bitwise_equal(ds.traj.values, ref["traj"].astype(np.int64))
    assert np.all(ds.step_size.values == CONFIG.step_size)
    # load_configs reads the same bytes
    assert bitwise_equal(st.load_configs(name, 1, slice(None)), ref["links"][1])
    assert bitwise_equal(st.load_configs(name, 0, [n - 1, 0]), ref["links"][0, [n - 1, 0]])
    info = st.info(name)
    assert info["committed"] == n and info["n_chains"] == settings["n_chains"]
    assert info["next_traj"] == settings["n_therm"] + n * settings["thin"]
    assert info["links_bytes"] == ref["links"].nbytes


def test_resume_after_interruption_is_bitwise_identical(thin1_path, tmp_path):
    """Interrupt once during thermalisation and once during production; the resumed ensemble equals the
    uninterrupted one bit for bit (nothing lost, nothing duplicated)."""

    class Crash(Exception):
        pass

    def crash_at(k):
        calls = []

        def progress(done, total, stats):
            calls.append(done)
            if len(calls) == k:
                raise Crash

        return progress

    path = tmp_path / "r.zarr"
    st = open_store(path, "a")
    with pytest.raises(Crash):  # after the first thermalisation block (3 of 4 trajectories)
        generate_to_store(st, "t1", THEORY, CONFIG, n_traj=N_THIN1, progress=crash_at(1), **THIN1)
    assert st.commit("t1")["phase"] == "therm" and st.commit("t1")["next_traj"] == 3
    assert st.open_ensemble("t1").sizes["traj"] == 0
    with pytest.raises(Crash):  # after thermalisation end + first production block
        generate_to_store(st, "t1", THEORY, CONFIG, n_traj=N_THIN1, resume=True, progress=crash_at(2), **THIN1)
    assert st.commit("t1")["committed"] == 3
    s = generate_to_store(st, "t1", THEORY, CONFIG, n_traj=N_THIN1, resume=True, **THIN1)
    assert s.n_new == N_THIN1 - 3 and s.committed == N_THIN1
    a = st.open_ensemble("t1")
    b = open_store(thin1_path).open_ensemble("t1")
    for var in PER_TRAJ:
        assert bitwise_equal(a[var].values, b[var].values), var
    assert not any(Path(str(path) + ".locks").iterdir())


# ----------------------------------------------------------------------------------------
# 2. lazy open, committed view, rollback
# ----------------------------------------------------------------------------------------


def test_open_is_lazy_and_indexed_by_global_trajectory(base_path):
    ds = open_store(base_path).open_ensemble("base")
    assert isinstance(ds, xr.Dataset)
    for var in ("links", "plaquette", "action", "delta_H", "accepted", "step_size"):
        assert isinstance(ds[var].data, dask.array.Array), var
    k = np.arange(N_BASE)
    n_therm, thin = BASE["n_therm"], BASE["thin"]
    np.testing.assert_array_equal(ds.traj.values, n_therm + thin * k + thin - 1)
    np.testing.assert_array_equal(ds.chain.values, np.arange(BASE["n_chains"]))
    assert ds.links.dims == ("chain", "traj", "t", "x", "mu")
    assert ds.links.shape == (2, N_BASE, 4, 4, 2)
    assert "checkpoint_links" not in ds.variables and "checkpoint_action" not in ds.variables
    assert ds.attrs["name"] == "base" and ds.attrs["thin"] == thin and ds.attrs["kind"] == "hmc"


def test_uncommitted_tail_is_hidden_and_rolled_back(store_copy):
    st = open_store(store_copy, "a")
    good = {v: st.open_ensemble("base")[v].values for v in PER_TRAJ}
    # a writer that died after growing the arrays and writing data, but before its commit record
    grp = zarr.open_group(store_copy, mode="a")["base"]
    for var in PER_TRAJ:
        arr = grp[var]
        ax = 0 if var == "traj" else 1
        shape = list(arr.shape)
        shape[ax] = N_BASE + 2
        arr.resize(tuple(shape))
        sel = (slice(N_BASE, None),) if ax == 0 else (slice(None), slice(N_BASE, None))
        arr[sel] = {"traj": 999, "accepted": True}.get(var, 123.0)
    assert grp["links"].shape[1] == N_BASE + 2
    ds = st.open_ensemble("base")
    assert ds.sizes["traj"] == N_BASE
    for var in PER_TRAJ:
        assert bitwise_equal(ds[var].values, good[var]), var
    assert 999 not in ds.traj.values and not np.any(ds.links.values == 123.0)
    with st.writer("base") as w:
        assert w.committed == N_BASE
    grp = zarr.open_group(store_copy, mode="r")["base"]
    for var in PER_TRAJ:
        assert grp[var].shape[0 if var == "traj" else 1] == N_BASE, var
        assert bitwise_equal(grp[var][...], good[var]), var
    # the chain continues exactly as if nothing had happened
    generate_to_store(st, "base", THEORY, CONFIG, n_traj=N_EXTENDED, resume=True, **BASE)
    ref = reference(BASE, N_EXTENDED)
    ds = st.open_ensemble("base")
    assert bitwise_equal(ds.links.values, ref["links"])
    assert bitwise_equal(ds.traj.values, ref["traj"].astype(np.int64))


def test_open_ensemble_survives_crash_between_resizes(store_copy):
    """append() resizes the arrays one after the other before writing; a writer killed half way through
    that loop leaves arrays of different lengths.  Readers must still see the committed part."""
    grp = zarr.open_group(store_copy, mode="a")["base"]
    grp["links"].resize((2, N_BASE + 3, 4, 4, 2))  # first array of the loop resized, the others not yet
    ds = open_store(store_copy, "r").open_ensemble("base")
    assert ds.sizes["traj"] == N_BASE


# ----------------------------------------------------------------------------------------
# 3. bad inputs: refused with a clear message, store unchanged, no lock left
# ----------------------------------------------------------------------------------------


def test_bad_mismatched_beta(store_copy):
    st = open_store(store_copy, "a")
    th = corrflow.make_theory("u1", (4, 4), beta=2.5)
    refused(store_copy, StoreError, r"different settings: .*beta: stored 2\.0 vs requested 2\.5",
            lambda: generate_to_store(st, "base", th, CONFIG, n_traj=N_EXTENDED, resume=True, **BASE))


def test_bad_mismatched_shape(store_copy):
    st = open_store(store_copy, "a")
    th = corrflow.make_theory("u1", (4, 6), beta=2.0)
    refused(store_copy, StoreError, r"shape: stored \[4, 4\] vs requested \[4, 6\]",
            lambda: generate_to_store(st, "base", th, CONFIG, n_traj=N_EXTENDED, resume=True, **BASE))


def test_bad_mismatched_hmc_settings_and_dtype(store_copy):
    st = open_store(store_copy, "a")
    refused(store_copy, StoreError, r"hmc: stored .*0\.2.* vs requested .*0\.1",
            lambda: generate_to_store(st, "base", THEORY, corrflow.HMCConfig(0.1, 5, "omelyan"),
                                      n_traj=N_EXTENDED, resume=True, **BASE))
    refused(store_copy, StoreError, r"dtype: stored float64 vs requested float32",
            lambda: generate_to_store(st, "base", THEORY, CONFIG, n_traj=N_EXTENDED, resume=True,
                                      dtype=jnp.float32, **BASE))


def test_bad_wrong_dtype_append(store_copy):
    st = open_store(store_copy, "a")
    traj, links, per, nxt = dummy_block(2, 2, 100, dtype="float32")

    def go():
        with st.writer("base") as w:
            w.append(traj, links, per, nxt)

    refused(store_copy, StoreError, r"dtype float32; ensemble 'base' stores float64", go)


def test_bad_unknown_theory(store_copy):
    refused(store_copy, ValueError, r"unknown theory 'u7'", lambda: corrflow.make_theory("u7", (4, 4), beta=1.0))
    cli_refused(store_copy, r"unknown theory 'u7'", "generate", "u7", "--beta", 1, "--shape", "4,4", "--n", 2,
                "--store", store_copy)


def test_bad_missing_ensemble(store_copy):
    st = open_store(store_copy, "a")
    msg = r"no ensemble 'nope' in .*available: base"
    refused(store_copy, StoreError, msg, lambda: st.info("nope"))
    refused(store_copy, StoreError, msg, lambda: st.open_ensemble("nope"))
    refused(store_copy, StoreError, msg, lambda: measure_stored(st, "nope", ["wilson_1x1"]))
    refused(store_copy, StoreError, msg, lambda: st.writer("nope"))
    refused(store_copy, StoreError, msg, lambda: st.verify("nope"))
    cli_refused(store_copy, r"no ensemble 'nope'", "info", store_copy, "nope")
    cli_refused(store_copy, r"no ensemble 'nope'", "measure", store_copy, "nope", "wilson_1x1")


def test_bad_foreign_zarr_store(tmp_path):
    path = tmp_path / "foreign.zarr"
    g = zarr.open_group(path, mode="w", zarr_format=3)
    g.create_array("temperature", shape=(3,), dtype="float64")[:] = [1.0, 2.0, 3.0]
    for mode in ("a", "r"):
        refused(path, StoreError, r"zarr store but not a corrflow store", lambda: open_store(path, mode))
    cli_refused(path, r"not a corrflow store", "generate", "u1", "--beta", 1, "--shape", "4,4", "--n", 2,
                "--store", path)


def test_bad_zarr_v2_store(tmp_path):
    path = tmp_path / "v2.zarr"
    g = zarr.open_group(path, mode="w", zarr_format=2)
    g.create_array("x", shape=(2,), dtype="int32")[:] = [1, 2]
    assert (path / ".zgroup").exists()
    for mode in ("a", "r"):
        refused(path, StoreError, r"zarr v2 store; corrflow stores are zarr v3", lambda: open_store(path, mode))
    cli_refused(path, r"zarr v2", "info", path)


def test_bad_directory_that_is_not_a_store(tmp_path):
    path = tmp_path / "stuff"
    path.mkdir()
    (path / "notes.txt").write_bytes(os.urandom(100))
    refused(path, StoreError, r"non-empty directory that is not a zarr store", lambda: open_store(path, "a"))
    cli_refused(path, r"not a zarr store", "generate", "u1", "--beta", 1, "--shape", "4,4", "--n", 2,
                "--store", path)


def test_bad_plain_file_as_store(tmp_path):
    path = tmp_path / "file.zarr"
    path.write_bytes(b"\x00" * 64)
    for mode in ("a", "r"):
        refused(path, StoreError, r"is a file, not a store directory", lambda: open_store(path, mode))
    cli_refused(path, r"is a file", "info", path)


def test_bad_missing_store_path(tmp_path):
    path = tmp_path / "absent.zarr"
    refused(path, StoreError, r"no store at", lambda: open_store(path, "r"))
    cli_refused(path, r"no store at", "info", path)
    cli_refused(path, r"no store at", "verify", path)
    assert not path.exists()


def test_bad_mode(store_copy):
    refused(store_copy, StoreError, r"mode must be 'r' or 'a', got 'w'", lambda: open_store(store_copy, "w"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_bad_read_only_directory(store_copy, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        refused(ro / "new.zarr", StoreError, r"not writable \(permission denied", lambda: open_store(ro / "new.zarr", "a"))
        os.chmod(store_copy, 0o500)
        refused(store_copy, StoreError, r"not writable", lambda: open_store(store_copy, "a"))
    finally:
        os.chmod(ro, 0o700)
        os.chmod(store_copy, 0o700)


def test_bad_writes_to_read_only_store(store_copy):
    """(As root, permissions cannot be tested; a store opened with mode='r' must refuse every write.)"""
    st = open_store(store_copy, "r")
    before = snapshot(store_copy)
    msg = r"open read-only; open with mode='a'"
    refused(store_copy, StoreError, msg, lambda: st.writer("base"))
    refused(store_copy, StoreError, msg, lambda: st.create_ensemble("other", u1_spec()))
    refused(store_copy, StoreError, msg, lambda: measure_stored(st, "base", ["wilson_1x1"]))
    refused(store_copy, StoreError, msg,
            lambda: generate_to_store(st, "other", THEORY, CONFIG, n_traj=N_BASE, **BASE))
    # a zarr-level write through the read-only handle is refused too
    with pytest.raises(ValueError, match="read-only"):
        st.root["base"]["plaquette"][0, 0] = 0.0
    assert_unchanged(store_copy, before)


def test_bad_full_range_already_present(store_copy):
    st = open_store(store_copy, "a")
    for n in (N_BASE, N_BASE - 2):
        refused(store_copy, StoreError, rf"already holds {N_BASE} trajectories per chain \(requested {n}\); nothing to do",
                lambda: generate_to_store(st, "base", THEORY, CONFIG, n_traj=n, resume=True, **BASE))
    refused(store_copy, StoreError, r"already exists with 4 trajectories per chain; pass --resume",
            lambda: generate_to_store(st, "base", THEORY, CONFIG, n_traj=N_EXTENDED, **BASE))
    cli_refused(store_copy, r"already holds 4 trajectories", "generate", "u1", "--beta", 2, "--shape", "4,4",
                "--n", 4, "--chains", 2, "--seed", 7, "--therm", 3, "--thin", 3, "--block", 3, "--name", "base",
                "--resume", "--store", store_copy)


def test_bad_duplicate_trajectories_in_append(store_copy):
    st = open_store(store_copy, "a")
    last = int(st.open_ensemble("base").traj.values[-1])

    def append(traj, n=None):
        t, links, per, _ = dummy_block(2, len(traj), 100)
        with st.writer("base") as w:
            w.append(traj, links, per, n if n is not None else max(traj) + 1)

    refused(store_copy, StoreError, rf"trajectory indices \[{last}\] are already stored in 'base' .*duplicates",
            lambda: append([last, last + 1]))
    refused(store_copy, StoreError, r"strictly increasing", lambda: append([100, 100]))
    refused(store_copy, StoreError, r"strictly increasing", lambda: append([101, 100]))
    refused(store_copy, StoreError, r"next_traj=50 is not after", lambda: append([100, 101], n=50))


def test_bad_create_existing_and_invalid_names(store_copy):
    st = open_store(store_copy, "a")
    refused(store_copy, StoreError, r"ensemble 'base' already exists", lambda: st.create_ensemble("base", u1_spec()))
    for bad in ("a/b", "../up", "with space", "", "_lead"):
        refused(store_copy, StoreError, r"invalid ensemble name", lambda: st.create_ensemble(bad, u1_spec()))
    refused(store_copy, StoreError, r"invalid ensemble name 'a/b'",
            lambda: generate_to_store(st, "a/b", THEORY, CONFIG, n_traj=N_BASE, **BASE))
    cli_refused(store_copy, r"invalid ensemble name", "generate", "u1", "--beta", 2, "--shape", "4,4", "--n", 2,
                "--name", "x/y", "--store", store_copy)


def test_bad_negative_and_zero_counts(store_copy):
    st = open_store(store_copy, "a")

    def gen(**kw):
        args = dict(BASE)
        args.update(kw)
        n = args.pop("n_traj", N_BASE)
        return lambda: generate_to_store(st, "fresh", THEORY, CONFIG, n_traj=n, **args)

    refused(store_copy, ValueError, r"n_traj must be >= 1, got 0", gen(n_traj=0))
    refused(store_copy, ValueError, r"n_traj must be >= 1, got -3", gen(n_traj=-3))
    refused(store_copy, StoreError, r"n_chains must be >= 1, got 0", gen(n_chains=0))
    refused(store_copy, StoreError, r"thin must be >= 1, got 0", gen(thin=0))
    refused(store_copy, ValueError, r"block_size must be >= 1, got 0", gen(block_size=0))
    refused(store_copy, StoreError, r"n_therm must be >= 0, got -1", gen(n_therm=-1))
    for flag, val, msg in (("--n", 0, r"--n must be >= 1"), ("--chains", 0, r"--chains must be >= 1"),
                           ("--thin", 0, r"--thin must be >= 1"), ("--block", 0, r"--block must be >= 1"),
                           ("--therm", -1, r"--therm must be >= 0")):
        args = {"--n": 2, "--chains": 1, "--thin": 1, "--block": 1, "--therm": 0}
        args[flag] = val
        flat = [x for kv in args.items() for x in kv]
        cli_refused(store_copy, msg, "generate", "u1", "--beta", 2, "--shape", "4,4", "--store", store_copy,
                    "--name", "fresh", *flat)


def test_bad_malformed_shape_cli(store_copy):
    for shape in ("8,a", "8", "8,,-1", "0,4", "8;8"):
        cli_refused(store_copy, r"malformed --shape", "generate", "u1", "--beta", 1, "--shape", shape, "--n", 2,
                    "--store", store_copy)


def test_bad_unknown_observable(store_copy):
    st = open_store(store_copy, "a")
    refused(store_copy, ValueError, r"unknown observable 'wilson_zz'",
            lambda: generate_to_store(st, "fresh", THEORY, CONFIG, n_traj=N_BASE, observables=("wilson_zz",), **BASE))
    refused(store_copy, ValueError, r"unknown observable 'bogus'", lambda: measure_stored(st, "base", ["bogus"]))
    refused(store_copy, ValueError, r"unknown observable 'action'", lambda: measure_stored(st, "base", ["action"]))
    cli_refused(store_copy, r"unknown observable 'bogus'", "measure", store_copy, "base", "bogus")


def test_bad_append_per_traj_data(store_copy):
    st = open_store(store_copy, "a")

    def append(mutate):
        traj, links, per, nxt = dummy_block(2, 2, 100)
        traj, links, per, nxt = mutate(traj, links, per, nxt)
        with st.writer("base") as w:
            w.append(traj, links, per, nxt)

    def drop(var):
        def m(t, lk, p, n):
            del p[var]
            return t, lk, p, n

        return m

    def add(t, lk, p, n):
        p["bogus"] = np.zeros((2, 2))
        return t, lk, p, n

    def bad_shape(t, lk, p, n):
        p["plaquette"] = p["plaquette"][:, :1]
        return t, lk, p, n

    def count_mismatch(t, lk, p, n):
        return t[:1], lk, p, n

    refused(store_copy, StoreError, r"per-trajectory data mismatch for 'base': missing \['delta_H'\]",
            lambda: append(drop("delta_H")))
    refused(store_copy, StoreError, r"missing \['plaquette'\]", lambda: append(drop("plaquette")))
    refused(store_copy, StoreError, r"unexpected \['bogus'\]", lambda: append(add))
    refused(store_copy, StoreError, r"plaquette has shape \(2, 1\), expected \(2, 2\)", lambda: append(bad_shape))
    refused(store_copy, StoreError, r"links hold 2 trajectories but 1 trajectory indices", lambda: append(count_mismatch))


def test_bad_append_wrong_number_of_chains_or_lattice(store_copy):
    st = open_store(store_copy, "a")

    def go(n_chains, shape=(4, 4)):
        traj, links, per, nxt = dummy_block(n_chains, 2, 100, shape=shape)
        with st.writer("base") as w:
            w.append(traj, links, per, nxt)

    refused(store_copy, StoreError, r"links have shape \(3, 2, 4, 4, 2\); ensemble 'base' stores \(chains=2",
            lambda: go(3))
    refused(store_copy, StoreError, r"links have shape \(1, 2, 4, 4, 2\)", lambda: go(1))
    refused(store_copy, StoreError, r"links have shape \(2, 2, 4, 6, 2\)", lambda: go(2, (4, 6)))


def test_bad_ildg_import_of_non_lime_file(store_copy, ildg_files):
    _, bad = ildg_files
    cli_refused(store_copy, r"not an ILDG/LIME file: expected LIME magic number", "import-ildg", store_copy, bad,
                "--name", "imp", "--beta", 6)
    new = store_copy.parent / "new.zarr"
    cli_refused(new, r"not an ILDG/LIME file", "import-ildg", new, bad, "--name", "imp", "--beta", 6)
    assert not new.exists()
    with pytest.raises(IldgFormatError, match="not an ILDG/LIME file"):
        corrflow.ildg.read_ildg(bad)


def test_bad_export_ildg_of_u1_ensemble(store_copy, tmp_path):
    out = tmp_path / "exported"
    cli_refused(store_copy, r"ILDG export needs a 4D SU\(3\) ensemble; 'base' is u1", "export-ildg", store_copy,
                "base", "--out", out)
    assert not out.exists()


def test_bad_newer_store_version(store_copy):
    zarr.open_group(store_copy, mode="a").attrs["corrflow"] = {"format": "corrflow-store", "version": 99}
    refused(store_copy, StoreError, r"store format version 99; this corrflow reads up to version 1",
            lambda: open_store(store_copy, "a"))
    zarr.open_group(store_copy, mode="a").attrs["corrflow"] = {"format": "something-else"}
    refused(store_copy, StoreError, r"not a corrflow store header", lambda: open_store(store_copy, "r"))


def test_bad_observable_writes_and_config_positions(store_copy):
    st = open_store(store_copy, "a")

    def write(obs, start, n=2):
        with st.writer("base") as w:
            w.write_observable(obs, np.zeros((2, n)), start)

    refused(store_copy, StoreError, r"'plaquette' is recorded during generation", lambda: write("plaquette", 0))
    refused(store_copy, StoreError, r"measurements must continue at position 0, got start=2",
            lambda: write("wilson_1x1", 2))
    refused(store_copy, StoreError, r"positions up to 6 exceed the 4 committed", lambda: write("wilson_1x1", 0, 6))
    refused(store_copy, StoreError, r"trajectory positions \[4\] out of range 0\.\.3",
            lambda: st.load_configs("base", 0, [0, 4]))
    refused(store_copy, StoreError, r"out of range", lambda: st.load_configs("base", 0, [-1]))


def test_bad_ensemble_spec():
    with pytest.raises(StoreError, match=r"unknown ensemble kind 'weird'"):
        u1_spec(kind="weird")
    with pytest.raises(StoreError, match=r"a flowed ensemble needs flow\['source'\]"):
        u1_spec(kind="flowed", flow={"flow_id": "abc"})


# ----------------------------------------------------------------------------------------
# damaged stores, verify
# ----------------------------------------------------------------------------------------


def test_verify_healthy_recomputes_plaquettes(base_path):
    st = open_store(base_path, "r")
    before = snapshot(base_path)
    rep = st.verify("base")
    assert rep.ok, str(rep)
    assert rep.checked > 0 and rep.committed == N_BASE
    assert "OK" in str(rep)
    code, out = cli("verify", base_path)
    assert code == 0 and "base: OK" in out
    assert_unchanged(base_path, before)


def test_verify_reports_plaquette_mismatch(store_copy):
    grp = zarr.open_group(store_copy, mode="a")["base"]
    stored = float(grp["plaquette"][0, 1])
    grp["plaquette"][0, 1] = stored + 0.25
    st = open_store(store_copy, "r")
    before = snapshot(store_copy)
    rep = st.verify("base", n_sample=32)
    assert not rep.ok and not rep.missing and not rep.corrupt
    assert any(m.startswith("chain 0, position 1: stored plaquette") for m in rep.mismatched), rep.mismatched
    code, out = cli("verify", store_copy, "base", "--sample", 32)
    assert code == 1 and "plaquette mismatch at chain 0, position 1" in out
    assert_unchanged(store_copy, before)


def test_verify_and_read_corrupt_links_chunk(store_copy):
    chunk = store_copy / "base" / "links" / "c" / "0" / "0" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    for i in range(16, 24):
        data[i] ^= 0x5A
    chunk.write_bytes(bytes(data))
    st = open_store(store_copy, "r")
    before = snapshot(store_copy)
    ds = st.open_ensemble("base")  # opening reads no link chunk, so it still works
    rep = st.verify("base", n_sample=32)
    assert not rep.ok
    assert any(c.startswith("base/links/c/0/0/0/0/0 (") for c in rep.corrupt), rep.corrupt
    assert not any("links/c/1/" in c for c in rep.corrupt)
    with pytest.raises(ValueError, match="checksum"):
        ds.links.isel(chain=0).values
    with pytest.raises(ValueError, match="checksum"):
        st.load_configs("base", 0, [0])
    ds.links.isel(chain=1).values  # the other chain is intact
    code, out = cli("verify", store_copy, "--sample", 32)
    assert code == 1 and "corrupt chunk base/links/c/0/0/0/0/0" in out
    assert_unchanged(store_copy, before)


def test_verify_missing_chunk(store_copy):
    (store_copy / "base" / "plaquette" / "c" / "1" / "0").unlink()
    st = open_store(store_copy, "r")
    before = snapshot(store_copy)
    rep = st.verify("base")
    assert rep.missing == ["base/plaquette/c/1/0"] and not rep.ok
    code, out = cli("verify", store_copy)
    assert code == 1 and "missing chunk base/plaquette/c/1/0" in out
    assert_unchanged(store_copy, before)


def test_open_ensemble_verifies_integrity(store_copy):
    """Opening runs a light integrity check: a damaged ensemble raises naming the chunk; verify=False
    reads what is intact."""
    st = open_store(store_copy, "r")
    assert st.open_ensemble("base").sizes["traj"] == N_BASE
    (store_copy / "base" / "delta_H" / "c" / "0" / "0").unlink()
    with pytest.raises(StoreError, match=r"(?s)integrity check failed.*missing chunk base/delta_H/c/0/0"):
        st.open_ensemble("base")
    ds = st.open_ensemble("base", verify=False)
    assert np.all(np.isnan(ds.delta_H.values[0])) and np.all(np.isfinite(ds.delta_H.values[1]))


def test_verify_ok_when_a_chunk_equals_the_fill_value(tmp_path):
    """A chain whose trajectories were all rejected (accepted == fill value False) or an imported ensemble
    (delta_H == fill value NaN) is healthy, but its chunk is absent on disk."""
    st = open_store(tmp_path / "s.zarr", "a")
    st.create_ensemble("e", u1_spec(n_chains=1))
    traj, links, per, nxt = dummy_block(1, 3, 0)
    per["accepted"][:] = False
    per["delta_H"][:] = np.nan
    with st.writer("e") as w:
        w.append(traj, links, per, nxt)
    rep = st.verify("e")
    assert rep.ok, str(rep)


def test_verify_ok_after_ildg_import(tmp_path, ildg_files):
    good, _ = ildg_files
    path = tmp_path / "imp.zarr"
    code, out = cli("import-ildg", path, *good, "--name", "imp", "--beta", 6)
    assert code == 0, out
    assert open_store(path).info("imp")["committed"] == 2
    code, out = cli("verify", path)
    assert code == 0, out


def test_verify_ok_after_extension_past_observable_chunk(tmp_path):
    st = open_store(tmp_path / "s.zarr", "a")
    st.create_ensemble("e", u1_spec(n_chains=1))
    with st.writer("e") as w:
        w.append(*dummy_block(1, 1000, 0))
        w.write_observable("wilson_1x1", np.zeros((1, 1000)), 0)
        w.append(*dummy_block(1, 30, 1000))
    ds = st.open_ensemble("e")
    assert np.isnan(ds.wilson_1x1.values[0, 1000:]).all()
    rep = st.verify("e", n_sample=2)
    assert rep.ok, str(rep)


# ----------------------------------------------------------------------------------------
# locks
# ----------------------------------------------------------------------------------------


def test_concurrent_writer_refused(store_copy):
    st = open_store(store_copy, "a")
    other = open_store(store_copy, "a")
    with st.writer("base") as w:
        lock = st.lock_path("base")
        assert lock.parent == Path(str(store_copy) + ".locks")
        held = json.loads(lock.read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        before = snapshot(store_copy)
        lock_bytes = lock.read_bytes()
        with pytest.raises(StoreError, match=r"this process already holds a writer for ensemble 'base'"):
            with other.writer("base"):
                pass
        # a second process is refused and told who holds the lock
        code = ("import sys; from corrflow.store import open_store, StoreError\n"
                "try:\n    open_store(sys.argv[1], 'a').writer('base').__enter__()\n"
                "except StoreError as e:\n    print(e); sys.exit(3)\n")
        proc = subprocess.run([sys.executable, "-c", code, str(store_copy)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 3, proc.stderr
        assert f"being written by another process (pid {os.getpid()}" in proc.stdout
        with pytest.raises(StoreError, match="already holds a writer"):
            generate_to_store(other, "base", THEORY, CONFIG, n_traj=N_EXTENDED, resume=True, **BASE)
        assert snapshot(store_copy) == before and lock.read_bytes() == lock_bytes  # the holder keeps its lock
        assert w.committed == N_BASE
    assert not lock.exists()


def test_lock_of_live_process_or_other_host_is_respected(store_copy):
    st = open_store(store_copy, "a")
    lock = st.lock_path("base")
    lock.parent.mkdir(exist_ok=True)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        for holder in ({"pid": sleeper.pid, "host": socket.gethostname(), "since": 0},
                       {"pid": 2 ** 22 + 12345, "host": "some-other-host", "since": 0}):
            lock.write_text(json.dumps(holder))
            before = snapshot(store_copy)
            with pytest.raises(StoreError, match=rf"another process \(pid {holder['pid']} on host {holder['host']}"):
                with st.writer("base"):
                    pass
            assert snapshot(store_copy) == before
            assert json.loads(lock.read_text()) == holder  # not stolen
    finally:
        sleeper.kill()
        sleeper.wait()
        lock.unlink(missing_ok=True)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert not cstore._pid_alive(p.pid)
    return p.pid


def test_stale_lock_of_dead_process_is_taken_over(store_copy):
    st = open_store(store_copy, "a")
    lock = st.lock_path("base")
    lock.parent.mkdir(exist_ok=True)
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "since": 0}))
    with st.writer("base") as w:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        w.append(*dummy_block(2, 1, 100))
    assert not lock.exists()
    assert open_store(store_copy).info("base")["committed"] == N_BASE + 1


def test_stale_lock_takeover_is_exclusive(store_copy, monkeypatch):
    st_a, st_b = open_store(store_copy, "a"), open_store(store_copy, "a")
    lock = st_a.lock_path("base")
    lock.parent.mkdir(exist_ok=True)
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "since": 0}))
    a = st_a.writer("base")
    real = cstore._pid_alive
    interleaved = []

    def pid_alive(pid):
        # B has read the stale lock; before B removes it, A takes the lock over completely
        if not interleaved:
            interleaved.append(True)
            a.__enter__()
        return real(pid)

    monkeypatch.setattr(cstore, "_pid_alive", pid_alive)
    try:
        with pytest.raises(StoreError, match="another process"):
            with st_b.writer("base"):
                pass
    finally:
        a.__exit__(None, None, None)


# ----------------------------------------------------------------------------------------
# 5. post-hoc measurement
# ----------------------------------------------------------------------------------------


@jax.jit
def _wilson_2x2(links):
    return jax.vmap(lambda u: cobs.wilson_loop(u, U1, 2, 2))(links)


def test_measure_then_extend_then_measure(store_copy):
    st = open_store(store_copy, "a")
    res = measure_stored(st, "base", ["wilson_2x2", "plaquette"])
    assert res.measured == {"wilson_2x2": N_BASE * 1} and res.skipped == ["plaquette"]
    ds = st.open_ensemble("base")
    first = ds.wilson_2x2.values
    assert first.shape == (2, N_BASE) and np.all(np.isfinite(first))
    expect = np.stack([np.asarray(_wilson_2x2(jnp.asarray(ds.links.values[c]))) for c in range(2)])
    np.testing.assert_allclose(first, expect, rtol=1e-12, atol=1e-14)
    assert st.info("base")["observables"] == {"wilson_2x2": N_BASE}
    assert measure_stored(st, "base", ["wilson_2x2"]).measured == {}  # nothing new

    generate_to_store(st, "base", THEORY, CONFIG, n_traj=N_EXTENDED, resume=True, **BASE)
    ds = st.open_ensemble("base")
    assert ds.sizes["traj"] == N_EXTENDED
    w = ds.wilson_2x2.values
    assert bitwise_equal(w[:, :N_BASE], first)
    assert np.isnan(w[:, N_BASE:]).all()
    assert st.info("base")["observables"] == {"wilson_2x2": N_BASE}

    before = {k: v for k, v in snapshot(store_copy).items() if "/wilson_2x2/" not in "/" + k and "zarr.json" not in k}
    res = measure_stored(st, "base", ["wilson_2x2"], batch=2)
    assert res.measured == {"wilson_2x2": N_EXTENDED - N_BASE}
    after = {k: v for k, v in snapshot(store_copy).items() if "/wilson_2x2/" not in "/" + k and "zarr.json" not in k}
    assert before == after  # only the observable (and metadata) changed
    ds = st.open_ensemble("base")
    w2 = ds.wilson_2x2.values
    assert bitwise_equal(w2[:, :N_BASE], first)
    expect = np.stack([np.asarray(_wilson_2x2(jnp.asarray(ds.links.values[c]))) for c in range(2)])
    np.testing.assert_allclose(w2, expect, rtol=1e-12, atol=1e-14)
    assert st.info("base")["observables"] == {"wilson_2x2": N_EXTENDED}
    assert st.verify("base").ok
    code, out = cli("info", store_copy, "base")
    assert code == 0 and "wilson_2x2 (7 measured)" in out


def test_crash_in_first_measurement_then_extend(store_copy, monkeypatch):
    import zarr.core.attributes as zattrs

    class Crash(Exception):
        pass

    real = zattrs.Attributes.__setitem__

    def setitem(self, key, value):
        if key == "corrflow_observables":
            raise Crash  # the process dies right before recording the measured count
        return real(self, key, value)

    st = open_store(store_copy, "a")
    with monkeypatch.context() as m:
        m.setattr(zattrs.Attributes, "__setitem__", setitem)
        with pytest.raises(Crash):
            measure_stored(st, "base", ["wilson_1x1"])
    with st.writer("base") as w:
        w.append(*dummy_block(2, 2, 100))
    ds = st.open_ensemble("base")
    assert ds.sizes["traj"] == N_BASE + 2
    measure_stored(st, "base", ["wilson_1x1"])
    assert np.isfinite(st.open_ensemble("base").wilson_1x1.values).all()


# ----------------------------------------------------------------------------------------
# 6. flowed ensembles
# ----------------------------------------------------------------------------------------


def test_flowed_ensemble_schema(store_copy):
    st = open_store(store_copy, "a")
    spec = u1_spec(kind="flowed", flow={"source": "base", "flow_id": "abc"}, seed=7)
    st.create_ensemble("flowed", spec)
    grp = zarr.open_group(store_copy, mode="r")["flowed"]
    for var, dt in (("source_chain", "int64"), ("source_traj", "int64"), ("log_weight", "float64"),
                    ("log_jacobian", "float64")):
        assert var in grp.array_keys()
        assert grp[var].dtype == np.dtype(dt) and grp[var].shape == (2, 0)
        assert tuple(grp[var].metadata.dimension_names) == ("chain", "traj")
    traj, links, per, nxt = dummy_block(2, 3, 5)

    def append_without():
        with st.writer("flowed") as w:
            w.append(traj, links, per, nxt)

    refused(store_copy, StoreError,
            r"missing \['log_jacobian', 'log_weight', 'source_chain', 'source_traj'\]", append_without)
    full = dict(per, source_chain=np.array([[0, 0, 0], [1, 1, 1]]), source_traj=np.array([[5, 8, 11]] * 2),
                log_weight=np.full((2, 3), -0.5), log_jacobian=np.full((2, 3), 0.25))
    with st.writer("flowed") as w:
        w.append(traj, links, full, nxt)
    ds = st.open_ensemble("flowed")
    np.testing.assert_array_equal(ds.source_traj.values, full["source_traj"])
    np.testing.assert_array_equal(ds.log_weight.values, full["log_weight"])
    assert ds.attrs["kind"] == "flowed"
    info = st.info("flowed")
    assert info["kind"] == "flowed" and info["flow"] == {"source": "base", "flow_id": "abc"}
    assert info["committed"] == 3
    code, out = cli("info", store_copy)
    assert code == 0 and "paired with base via flow abc" in out
    # an hmc ensemble has no flow fields and refuses them
    def append_to_hmc():
        with st.writer("base") as w:
            w.append(*dummy_block(2, 1, 100, extra=("log_jacobian",)))

    refused(store_copy, StoreError, r"unexpected \['log_jacobian'\]", append_to_hmc)


def test_flowed_without_source_refused(store_copy):
    refused(store_copy, StoreError, r"a flowed ensemble needs flow\['source'\]",
            lambda: open_store(store_copy, "a").create_ensemble(
                "f", u1_spec(kind="flowed", flow={"flow_id": "abc"})))


# ----------------------------------------------------------------------------------------
# 7. fsspec URL (in-memory)
# ----------------------------------------------------------------------------------------


def test_memory_url_store(base_path, tmp_path, monkeypatch):
    import fsspec

    monkeypatch.chdir(tmp_path)  # a lock path derived from the URL would appear here
    url = f"memory://corrflow-test-{uuid.uuid4().hex}"
    try:
        st = open_store(url, "a")
        assert not st.is_local
        generate_to_store(st, "base", THEORY, CONFIG, n_traj=N_BASE, **BASE)
        ds = open_store(url, "r").open_ensemble("base")
        assert isinstance(ds.links.data, dask.array.Array)
        ref = open_store(base_path).open_ensemble("base")
        for var in PER_TRAJ:
            assert bitwise_equal(ds[var].values, ref[var].values), var
        assert st.verify("base").ok
        assert "base: hmc u1 4x4" in repr(st)
        with pytest.raises(StoreError, match="different settings"):
            generate_to_store(st, "base", corrflow.make_theory("u1", (4, 4), beta=3.0), CONFIG, n_traj=N_EXTENDED,
                              resume=True, **BASE)
        assert list(tmp_path.iterdir()) == []  # no lock directory for a non-local store
    finally:
        fs = fsspec.filesystem("memory")
        path = url[len("memory://"):]
        if fs.exists(path):
            fs.rm(path, recursive=True)


# ----------------------------------------------------------------------------------------
# 8. repr and tree
# ----------------------------------------------------------------------------------------


def test_repr_and_tree(store_copy):
    st = open_store(store_copy, "a")
    st.create_ensemble("second", u1_spec(n_chains=1))
    with st.writer("second") as w:
        w.append(*dummy_block(1, 2, 0))
    text = repr(st)
    assert text.splitlines()[0] == f"EnsembleStore({str(store_copy)!r}, mode='a')"
    assert "base: hmc u1 4x4 {'beta': 2.0, 'xi': 1.0, 'lam': 0.0}  2 chains x 4 traj" in text
    assert "second: hmc u1 4x4" in text and "1 chains x 2 traj" in text
    tree = st.tree()
    assert isinstance(tree, xr.DataTree)
    assert set(tree.children) == {"base", "second"} == set(st.ensembles())
    assert tree["base"].to_dataset().sizes["traj"] == N_BASE
    assert isinstance(tree["base"].to_dataset().links.data, dask.array.Array)
    assert tree["second"].to_dataset().sizes["chain"] == 1
    assert "base" in st and "nope" not in st
    code, out = cli("info", store_copy)
    assert code == 0 and "base" in out and "second" in out


def test_empty_store_repr_and_tree(tmp_path):
    st = open_store(tmp_path / "empty.zarr", "a")
    assert st.ensembles() == [] and repr(st) == f"EnsembleStore({str(tmp_path / 'empty.zarr')!r}, mode='a')"
    assert len(st.tree().children) == 0
    code, out = cli("info", tmp_path / "empty.zarr")
    assert code == 0 and "empty corrflow store" in out


# ----------------------------------------------------------------------------------------
# more bugs: failed commands that still change the store
# ----------------------------------------------------------------------------------------


def test_bad_start_leaves_store_unchanged(store_copy):
    st = open_store(store_copy, "a")
    refused(store_copy, ValueError, r"start must be 'hot' or 'cold', got 'lukewarm'",
            lambda: generate_to_store(st, "fresh", THEORY, CONFIG, n_traj=N_BASE, start="lukewarm", **BASE))


def test_cli_import_ildg_bad_second_file_leaves_store_unchanged(store_copy, ildg_files):
    good, bad = ildg_files
    cli_refused(store_copy, r"not an ILDG/LIME file", "import-ildg", store_copy, good[0], bad,
                "--name", "imp", "--beta", 6)


def test_cli_generate_bad_input_creates_no_store(tmp_path):
    new = tmp_path / "new.zarr"
    cli_refused(new, r"unknown observable 'wilson_zz'", "generate", "u1", "--beta", 1, "--shape", "4,4", "--n", 2,
                "--store", new, "--observables", "wilson_zz")
