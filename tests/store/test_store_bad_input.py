"""Bad input to the store, its drivers and the CLI: refused with a one-line message, exit status 2 on the
command line, and the store byte-for-byte unchanged with no lock left behind."""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest
import zarr

import corrflow
from corrflow.ildg import IldgFormatError
from corrflow.pipeline import generate_to_store, measure_stored
from corrflow.store import StoreError, open_store

from .store_helpers import (BASE, CONFIG, N_BASE, N_EXTENDED, THEORY, assert_unchanged, cli_refused, cli_up_to_date,
                            dummy_block, refused, snapshot, u1_spec)


# ----------------------------------------------------------------------------------------
# 3. bad inputs: refused with a clear message, store unchanged, no lock left
# ----------------------------------------------------------------------------------------


def test_bad_mismatched_beta(store_copy):
    st = open_store(store_copy, "a")
    th = corrflow.make_theory("u1", (4, 4), beta=2.5)
    refused(store_copy, StoreError, r"different settings: .*beta \(--beta\): stored 2\.0 vs requested 2\.5",
            lambda: generate_to_store(st, "base", th, CONFIG, n_traj=N_EXTENDED, resume=True, **BASE))


def test_bad_mismatched_shape(store_copy):
    st = open_store(store_copy, "a")
    th = corrflow.make_theory("u1", (4, 6), beta=2.0)
    refused(store_copy, StoreError, r"shape \(--shape\): stored \[4, 4\] vs requested \[4, 6\]",
            lambda: generate_to_store(st, "base", th, CONFIG, n_traj=N_EXTENDED, resume=True, **BASE))


def test_bad_mismatched_hmc_settings_and_dtype(store_copy):
    st = open_store(store_copy, "a")
    refused(store_copy, StoreError, r"hmc\.step_size \(--step-size\): stored 0\.2 vs requested 0\.1",
            lambda: generate_to_store(st, "base", THEORY, corrflow.HMCConfig(0.1, 5, "omelyan"),
                                      n_traj=N_EXTENDED, resume=True, **BASE))
    refused(store_copy, StoreError, r"dtype \(--precision\): stored float64 vs requested float32",
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


def test_bad_path_inside_a_store(store_copy):
    """An ensemble's directory, one of its arrays, the lock area or a new path below the store root given as the
    store: one line naming the store (and the ensemble) to pass instead; nothing is created inside the store (a
    new path there used to become a store inside the store)."""
    ens = store_copy / "base"
    for mode in ("a", "r"):
        refused(store_copy, StoreError, r"is the ensemble 'base' of the corrflow store .*: pass the store path "
                r".* and the ensemble name 'base'", lambda: open_store(ens, mode))
    cli_refused(store_copy, r"lies inside the corrflow store .* and the ensemble name 'base'", "verify", ens / "links")
    cli_refused(store_copy, r"--configs must be a count >= 0, or -1 for all, got -5", "verify", store_copy,
                "--configs", -5)  # (it used to check all of them)
    cli_refused(store_copy, r"lies inside the corrflow store .*a store cannot hold another store", "info",
                store_copy / "_corrflow")
    cli_refused(store_copy, r"nested lies inside the corrflow store", "generate", "u1", "--beta", 1, "--shape", "4,4",
                "--n", 2, "--store", store_copy / "nested")
    assert not (store_copy / "nested").exists()


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


def test_full_range_already_present_is_up_to_date(store_copy):
    """Resuming a finished ensemble (a requeued job, or --n at or below what is stored) is not an error: nothing is
    run, nothing written, exit status 0; without --resume an existing ensemble is still refused."""
    st = open_store(store_copy, "a")
    for n in (N_BASE, N_BASE - 2):
        before = snapshot(store_copy)
        s = generate_to_store(st, "base", THEORY, CONFIG, n_traj=n, resume=True, **BASE)
        assert (s.n_new, s.committed) == (0, N_BASE) and np.isnan(s.acceptance)
        assert_unchanged(store_copy, before)
    refused(store_copy, StoreError, r"already exists with 4 trajectories per chain; pass --resume",
            lambda: generate_to_store(st, "base", THEORY, CONFIG, n_traj=N_EXTENDED, **BASE))
    refused(store_copy, StoreError, r"exists with different settings: seed \(--seed\)",
            lambda: generate_to_store(st, "base", THEORY, CONFIG, n_traj=N_BASE, resume=True, **{**BASE, "seed": 8}))
    cli_up_to_date(store_copy, r"up to date base: 4 trajectories x 2 chains stored \(--n 4\); nothing to do",
                   "generate", "u1", "--beta", 2, "--shape", "4,4", "--n", 4, "--chains", 2, "--seed", 7, "--therm", 3,
                   "--thin", 3, "--block", 3, "--name", "base", "--resume", "--store", store_copy)


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
    refused(store_copy, ValueError, r"wilson_flow is measured on stored configurations, not during generation: run "
            r"`corrflow measure STORE ENSEMBLE wilson_flow` afterwards",
            lambda: generate_to_store(st, "fresh", THEORY, CONFIG, n_traj=N_BASE, observables=("wilson_flow",), **BASE))
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
