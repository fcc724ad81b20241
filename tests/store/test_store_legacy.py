"""Stores and flow checkpoints written before issue 17 (``data/legacy_v1.zip``, made by ``data/make_legacy.py`` with
corrflow at commit 73a9915) open, verify, resume bit for bit and are written to with the new protocols.

"Bit for bit" is per version: the stored configurations stay untouched, and what a resume adds is exactly what
today's code produces from the stored state (the U(1) kernels have changed at rounding level since the store was
written, so the old prefix is not today's uninterrupted chain; HMC chains are reproducible per version and
platform, not across kernel changes)."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr

from corrflow.checks import gauge_config_check
from corrflow.flows.train import load_checkpoint, save_checkpoint
from corrflow.pipeline import generate_to_store
from corrflow.store import open_store

from .store_helpers import (BASE, CONFIG, N_BASE, N_EXTENDED, N_THIN1, THEORY, THIN1, bitwise_equal, cli, locks_left,
                            reference, reference_run)

DATA = Path(__file__).with_name("data")


@pytest.fixture
def legacy(tmp_path):
    with zipfile.ZipFile(DATA / "legacy_v1.zip") as z:
        z.extractall(tmp_path)
    return tmp_path


def test_legacy_store_opens_verifies_and_resumes_bitwise(legacy):
    path = legacy / "legacy.zarr"
    st = open_store(path, "a")
    assert st.ensembles() == ["base", "t1"] and not st.incomplete()
    assert not (path / "_corrflow").exists()  # opening writes nothing
    info = st.info("base")
    assert info["committed"] == N_BASE and info["observables"] == {"wilson_1x1": N_BASE} and info["complete"]
    assert st.commit("t1")["phase"] == "therm" and st.commit("t1")["slot"] == 0  # killed in thermalisation
    for name in ("base", "t1"):
        rep = st.verify(name, check=gauge_config_check, n_check=-1)
        assert rep.ok, str(rep)
    base = st.open_ensemble("base")
    old = {var: np.asarray(base[var].values) for var in ("links", "plaquette", "action", "delta_H", "accepted")}
    # the states a resume starts from: the last stored configuration, the thermalisation checkpoint
    with st.writer("base") as w:
        base_state = w.resume_state()
    with st.writer("t1") as w:
        t1_state = w.resume_state()
    assert base_state[2] == BASE["n_therm"] + N_BASE * BASE["thin"] and t1_state[2] < THIN1["n_therm"]
    old_w = np.asarray(base.wilson_1x1.values)
    # resume both with today's code: the old prefix untouched, the rest bit-identical to today's chain from there
    generate_to_store(st, "base", THEORY, CONFIG, n_traj=N_EXTENDED, resume=True, **BASE)
    generate_to_store(st, "t1", THEORY, CONFIG, n_traj=N_THIN1, resume=True, **THIN1)
    ds = open_store(path).open_ensemble("base")
    ref = reference_run(n=N_EXTENDED, start=base_state, n_stored=N_BASE, **BASE)
    for var in ("links", "plaquette", "action", "delta_H", "accepted"):
        assert bitwise_equal(ds[var].values[:, :N_BASE], old[var]), ("base prefix", var)
        assert bitwise_equal(ds[var].values[:, N_BASE:], ref[var]), ("base", var)
    ds = open_store(path).open_ensemble("t1")
    ref = reference_run(n=N_THIN1, start=t1_state, **THIN1)
    for var in ("links", "plaquette", "action", "delta_H", "accepted"):
        assert bitwise_equal(ds[var].values, ref[var]), ("t1", var)
    code, out = cli("measure", path, "base", "wilson_1x1")
    assert code == 0 and "wilson_1x1 +3" in out, out
    assert bitwise_equal(open_store(path).open_ensemble("base").wilson_1x1.values[:, :N_BASE], old_w)
    code, out = cli("verify", path)
    assert code == 0 and "base: OK" in out and "t1: OK" in out, out
    assert not locks_left(path) and (path / "_corrflow" / "zarr.json").is_file()
    assert not any(Path(str(path) + ".locks").iterdir())  # the old lock directory is left alone (and unused)


def test_legacy_analysis_record_reads_and_is_replaced(legacy):
    path = legacy / "legacy.zarr"
    st = open_store(path, "a")
    assert st.analyses() == ["continuum_limit"]
    rec, figs = st.read_analysis("continuum_limit")
    assert rec["summary"] == ["old"] and figs == {"fig.png": b"\x89PNG\r\n\x1a\nold"}
    st.write_analysis("continuum_limit", {"title": "new"}, figures={"new.png": b"new"})
    assert st.read_analysis("continuum_limit") == ({"title": "new"}, {"new.png": b"new"})
    left = os.listdir(path / "_analyses" / "continuum_limit")
    assert "fig.png" not in left and len(left) == 2  # zarr.json and the one version group


def test_legacy_flow_checkpoint_loads_correlates_and_is_rewritten_atomically(legacy):
    ck_dir = legacy / "legacy_flow"
    ck = load_checkpoint(ck_dir)
    assert ck["epoch"] == 3 and (ck_dir / "arrays.npz").exists()
    code, out = cli("correlate", "--store", legacy / "legacy.zarr", "--from", "base", "--flow", ck_dir, "--name", "fl",
                    "--batch", 4)
    assert code == 0, out
    assert open_store(legacy / "legacy.zarr").info("fl")["flow"]["flow_id"] == ck["id"]
    # the next save writes the new layout into the same directory and removes the old files
    new_id = save_checkpoint(ck_dir, ck["flow"], ck["params"], ck["base"], ck["target"], ck["config"], 4,
                             ck["history"])
    assert new_id == ck["id"]  # same parameters, same id
    assert not (ck_dir / "arrays.npz").exists()
    assert json.loads((ck_dir / "checkpoint.json").read_text())["format"] == "corrflow-checkpoint"
    assert load_checkpoint(ck_dir)["epoch"] == 4


def test_crashed_creation_of_an_older_corrflow_is_listed_and_cleaned(legacy):
    """The reproduction of issue 17: an older corrflow killed between creating the group and writing its metadata left
    a group without corrflow metadata, which broke `info` for the whole store and could not be regenerated."""
    path = legacy / "legacy.zarr"
    g = zarr.open_group(path, mode="a").create_group("crashed")
    g.create_array("links", shape=(2, 0, 4, 4, 2), chunks=(1, 3, 4, 4, 2), dtype="float64")
    st = open_store(path, "a")
    assert st.ensembles() == ["base", "t1"] and "crashed" in st.incomplete()
    code, out = cli("info", path)
    assert code == 0 and "base" in out and "crashed: creation interrupted" in out, out
    generate_to_store(st, "crashed", THEORY, CONFIG, n_traj=N_BASE, **BASE)  # no --resume needed: nothing was run
    assert bitwise_equal(open_store(path).open_ensemble("crashed").links.values, reference(BASE, N_BASE)["links"])
    assert not open_store(path).incomplete()
