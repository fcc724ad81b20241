"""Checkpoint directories (:mod:`corrflow.store.checkpoints`): one atomic unit per write, checked on read, no pickle.
(kill -9 during a write: ``test_store_crash.py``.)"""

from __future__ import annotations

import fcntl
import json
import os

import numpy as np
import pytest

from corrflow.store import CheckpointError, check_writable_dir, has_checkpoint, read_checkpoint, write_checkpoint
from corrflow.store.faults import FAULT_ACTION_ENV, FAULT_ENV, InjectedFault, reset


def _versions(d):
    return sorted(p.name for p in d.iterdir() if p.name.startswith("v"))


def test_round_trip_and_one_version_kept(tmp_path):
    d = tmp_path / "ck"
    arrays = {"params": np.linspace(0, 1, 7), "opt_0": np.arange(6, dtype=np.int32).reshape(2, 3),
              "c": np.array([1 + 2j], np.complex64), "flag": np.array(True), "empty": np.zeros((0, 3))}
    meta = {"epoch": 1, "history": [{"loss": float("nan")}], "nested": {"a": [1, 2]}}
    assert not has_checkpoint(d)
    write_checkpoint(d, meta, arrays)
    assert has_checkpoint(d) and len(_versions(d)) == 1
    got_meta, got = read_checkpoint(d)
    assert got_meta["epoch"] == 1 and np.isnan(got_meta["history"][0]["loss"]) and got_meta["nested"] == {"a": [1, 2]}
    assert got.keys() == arrays.keys()
    for k, v in arrays.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape and np.array_equal(got[k], v), k
    first = _versions(d)
    write_checkpoint(d, {"epoch": 2}, {"params": np.ones(3)})
    assert read_checkpoint(d)[0] == {"epoch": 2} and _versions(d) != first and len(_versions(d)) == 1
    assert int(_versions(d)[0][1:7]) == 1  # versions are numbered


def test_bad_input_leaves_the_previous_checkpoint(tmp_path):
    d = tmp_path / "ck"
    write_checkpoint(d, {"epoch": 1}, {"w": np.ones(2)})
    before = sorted(os.listdir(d))
    for meta, arrays, match in (({"x": object()}, {}, "not JSON-serialisable"),
                                ({}, {"a/b": np.ones(1)}, "invalid checkpoint array name"),
                                ({}, {"o": np.array([object()])}, "dtype object")):
        with pytest.raises(CheckpointError, match=match):
            write_checkpoint(d, meta, arrays)
    assert sorted(os.listdir(d)) == before and read_checkpoint(d)[0] == {"epoch": 1}
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(CheckpointError, match="is a file; give a directory"):
        write_checkpoint(f, {}, {})
    with pytest.raises(CheckpointError, match="cannot write the checkpoint"):
        write_checkpoint(f / "sub", {}, {})
    assert f.read_text() == "x"


def test_damage_is_reported_in_one_line(tmp_path):
    d = tmp_path / "ck"
    write_checkpoint(d, {"epoch": 1}, {"w": np.arange(100.0)})
    v = d / _versions(d)[0]
    good = (v / "w.npy").read_bytes()
    (v / "w.npy").write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(CheckpointError, match=r"array 'w' \(v\d+-\w+/w\.npy\) is damaged \(SHA-256 mismatch"):
        read_checkpoint(d)
    (v / "w.npy").write_bytes(good)
    (v / "manifest.json").write_text("{")
    with pytest.raises(CheckpointError, match=r"manifest\.json is corrupt"):
        read_checkpoint(d)
    os.rename(v, d / "elsewhere")
    with pytest.raises(CheckpointError, match=r"version v\d+-\w+ named by checkpoint\.json is missing"):
        read_checkpoint(d, what="flow checkpoint")
    (d / "checkpoint.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"checkpoint\.json is corrupt \(not a JSON object\)"):
        read_checkpoint(d)
    with pytest.raises(CheckpointError, match=r"no flow checkpoint at .*nowhere \(checkpoint\.json missing\)"):
        read_checkpoint(tmp_path / "nowhere", what="flow checkpoint")
    (tmp_path / "f").write_text("")
    with pytest.raises(CheckpointError, match=r"is a file, not a checkpoint directory"):
        read_checkpoint(tmp_path / "f")
    assert issubclass(CheckpointError, ValueError)  # callers that caught the old ValueError still do


def test_one_writer_per_directory(tmp_path):
    d = tmp_path / "ck"
    write_checkpoint(d, {"epoch": 1}, {"w": np.ones(1)})
    fd = os.open(d / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # (another open file description: like another process)
        with pytest.raises(CheckpointError, match="being written by another process"):
            write_checkpoint(d, {"epoch": 2}, {"w": np.ones(1)})
    finally:
        os.close(fd)
    assert read_checkpoint(d)[0] == {"epoch": 1}


def test_a_run_holds_its_directory_from_the_start(tmp_path):
    """A second training / derivative run on one directory was refused only at its first checkpoint write, after
    computing for a while (and the one that died was whichever wrote second); now it is refused at once."""
    import corrflow as cf
    from corrflow.store import hold_checkpoint_dir

    d = tmp_path / "ck"
    with hold_checkpoint_dir(d, "flow checkpoint directory"):
        with hold_checkpoint_dir(d):  # re-entrant in the holding process
            write_checkpoint(d, {"epoch": 1}, {"w": np.ones(1)})  # the holder writes under its own lock
        fd = os.open(d / ".lock", os.O_RDWR)  # another open file description: like another process
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(d / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another job holds it now
        with pytest.raises(CheckpointError, match="flow checkpoint directory .* is in use by another process"):
            with hold_checkpoint_dir(d, "flow checkpoint directory"):
                pass
        th = cf.make_theory("u1", (4, 4), beta=2.0)
        u = np.random.default_rng(0).uniform(-np.pi, np.pi, (4, 4, 4, 2))
        with pytest.raises(CheckpointError, match="in use by another process"):  # before any epoch
            cf.train(cf.make_flow(th), th, th.replace(beta=2.1), u, cf.TrainConfig(epochs=1), checkpoint=d)
    finally:
        os.close(fd)
    assert read_checkpoint(d)[0] == {"epoch": 1}
    with pytest.raises(CheckpointError, match="is a file"):
        with hold_checkpoint_dir(tmp_path / "ck" / "checkpoint.json"):
            pass


def test_interrupted_write_leaves_the_previous_one_and_is_cleaned_up(tmp_path, monkeypatch):
    d = tmp_path / "ck"
    write_checkpoint(d, {"epoch": 1}, {"w": np.ones(1)})
    monkeypatch.setenv(FAULT_ENV, "checkpoint:data")
    monkeypatch.setenv(FAULT_ACTION_ENV, "raise")
    reset()
    with pytest.raises(InjectedFault):
        write_checkpoint(d, {"epoch": 2}, {"w": np.ones(1)})
    assert read_checkpoint(d)[0] == {"epoch": 1} and len(_versions(d)) == 2
    monkeypatch.delenv(FAULT_ENV)
    (d / ".checkpoint.json.abc.tmp").write_text("left by a killed pointer write")
    write_checkpoint(d, {"epoch": 3}, {"w": np.ones(1)})
    assert sorted(p for p in os.listdir(d) if p != ".lock") == sorted(["checkpoint.json"] + _versions(d))
    assert len(_versions(d)) == 1 and json.loads((d / "checkpoint.json").read_text())["current"] == _versions(d)[0]


def test_check_writable_dir(tmp_path):
    check_writable_dir(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()  # nothing left behind
    check_writable_dir(tmp_path)
    assert os.listdir(tmp_path) == []
    (tmp_path / "f").write_text("")
    with pytest.raises(CheckpointError, match=r"--out .*f is a file"):
        check_writable_dir(tmp_path / "f", "--out")
    with pytest.raises(CheckpointError, match=r"cannot be created: .*f is a file, not a directory"):
        check_writable_dir(tmp_path / "f" / "x")
