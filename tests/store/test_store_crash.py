"""kill -9 at every phase of every write protocol, driven by the deterministic fault-injection hook
(``CORRFLOW_FAULT``, :mod:`corrflow.store.faults`): after each kill the store lists and reads every other
ensemble, shows what was interrupted, and the next run finishes bit-identical to an uninterrupted one.

Cost: one subprocess (``kill_driver.py``) imports corrflow once and forks one child per kill (each child
SIGKILLs itself at its fault point); the resumes and checks run in this process with its compiled kernels.
All kills are checked by one test, so that pytest-xdist never runs the driver on both workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from corrflow.store import open_store, read_checkpoint, write_checkpoint
from corrflow.store.faults import FAULT_ACTION_ENV, FAULT_ENV, InjectedFault

from .store_helpers import bitwise_equal, cli, copy_store, dummy_block, locks_left, su3_config, u1_spec

GEN = ["u1", "--beta", "2", "--shape", "4,4", "--n", "6", "--chains", "2", "--therm", "4", "--block", "2", "--seed", "5"]
NAME = "u1_4x4_beta2"
# fault point -> (what the store holds after the kill: committed, phase, slot), or None: not published
GEN_PHASES = {
    "create": None,  # creation: every array built, not yet published
    "create:published": (0, "therm", -1),
    "therm:data@1": (0, "therm", -1),  # thermalisation: slot written, not committed
    "therm:commit@1": (0, "therm", 0),
    "append:data@2": (2, "production", 1),  # production: the second block written, not committed
    "append:commit@2": (4, "production", 1),  # right after a commit
}
CKPT_PHASES = {"checkpoint:data": 1, "checkpoint:published": 2}  # fault -> epoch readable after the kill


def _arrays(path, name):
    ds = open_store(path).open_ensemble(name)
    return {k: np.asarray(ds[k].values) for k in list(ds.data_vars) + ["traj"]}


def _jax_cache_env() -> dict[str, str]:
    cache = os.environ.get("CORRFLOW_TEST_JAX_CACHE", str(Path(__file__).resolve().parents[2] / ".jax_cache" / "tests"))
    if not cache:
        return {}
    return {"JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def _run_kills(d: Path) -> None:
    """Run every kill once (one driver subprocess) in directory ``d``."""
    template = d / "template.zarr"
    st = open_store(template, "a")
    st.create_ensemble("other", u1_spec())
    with st.writer("other") as w:
        w.append(*dummy_block(2, 3, 0))
    ref = d / "ref.zarr"
    code, out = cli("generate", *GEN, "--store", ref)
    assert code == 0, out
    files = []
    for i in range(3):
        f = d / f"cfg{i}.lime"
        from corrflow.ildg import write_ildg

        write_ildg(f, su3_config(i))
        files.append(str(f))
    jobs = []
    for i, fault in enumerate(GEN_PHASES):
        copy_store(template, d, f"gen{i}.zarr")
        jobs.append({"fault": fault, "argv": ["generate", *GEN, "--store", str(d / f"gen{i}.zarr")]})
    copy_store(template, d, "imp.zarr")
    jobs.append({"fault": "append:commit@2", "argv": ["import-ildg", str(d / "imp.zarr"), *files, "--name", "imp",
                                                      "--beta", "6"]})
    copy_store(ref, d, "meas.zarr")
    jobs.append({"fault": "observable:data@1", "argv": ["measure", str(d / "meas.zarr"), NAME, "wilson_1x1"]})
    copy_store(ref, d, "repl.zarr")
    assert cli("measure", d / "repl.zarr", NAME, "wilson_1x1")[0] == 0
    jobs.append({"fault": "observable:removed@1", "argv": ["measure", str(d / "repl.zarr"), NAME, "wilson_1x1",
                                                           "--replace"]})
    copy_store(ref, d, "corr.zarr")
    jobs.append({"fault": "create", "argv": ["correlate", "--store", str(d / "corr.zarr"), "--from", NAME,
                                             "--identity", "--to", "beta=2.1", "--name", "direct"]})
    for fault in CKPT_PHASES:
        ck = d / f"ck_{fault.replace(':', '_')}"
        write_checkpoint(ck, {"epoch": 1}, {"w": np.full(1000, 1.0)})
        jobs.append({"fault": fault, "checkpoint": str(ck), "epoch": 2})
    (d / "jobs.json").write_text(json.dumps(jobs))
    env = dict(os.environ, **_jax_cache_env())
    env.pop(FAULT_ENV, None)
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("kill_driver.py")), str(d / "jobs.json"),
                           str(d / "results.json")], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((d / "results.json").read_text())
    assert results == [-9] * len(jobs), (list(zip([j["fault"] for j in jobs], results, strict=True)), proc.stderr[-3000:])


def test_kill_minus_9_at_every_phase(tmp_path):
    _run_kills(tmp_path)
    checks = [(f"generate killed at {f!r}", _check_generate, (i, f)) for i, f in enumerate(GEN_PHASES)]
    checks += [("import-ildg killed at 'append:commit@2'", _check_import, ()),
               ("measure killed at 'observable:data'", _check_measure, ()),
               ("measure --replace killed at 'observable:removed'", _check_replace, ()),
               ("correlate killed at 'create'", _check_correlate, ())]
    checks += [(f"checkpoint write killed at {f!r}", _check_checkpoint, (f,)) for f in CKPT_PHASES]
    for what, check, args in checks:
        try:
            check(tmp_path, *args)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from exc


def _check_generate(killed: Path, i: int, fault: str) -> None:
    """generate killed at ``fault`` (creation, thermalisation, production, commit) resumes bit for bit."""
    path = killed / f"gen{i}.zarr"
    st = open_store(path)
    # the other ensemble is untouched and readable; the store lists and verifies
    assert bitwise_equal(open_store(path).open_ensemble("other").links.values,
                         open_store(killed / "template.zarr").open_ensemble("other").links.values)
    assert st.verify("other").ok
    expect = GEN_PHASES[fault]
    code, out = cli("info", path)
    assert code == 0 and "other" in out, out
    if expect is None:  # an interrupted creation: listed as incomplete, never as an ensemble
        assert st.ensembles() == ["other"] and NAME in st.incomplete(), st.incomplete()
        assert "INCOMPLETE" in out and "creation interrupted" in out
        code, out = cli("verify", path)
        assert code == 0 and f"{NAME}: INCOMPLETE" in out, out
    else:
        rec = st.commit(NAME)
        assert (rec["committed"], rec["phase"], rec["slot"]) == expect, rec
        assert st.verify(NAME).ok
        assert st.open_ensemble(NAME).sizes["traj"] == expect[0]
    # the same command finishes the job (--resume once anything was run), bit for bit
    resume = [] if expect is None or expect == (0, "therm", -1) else ["--resume"]
    code, out = cli("generate", *GEN, "--store", path, *resume)
    assert code == 0, out
    a, b = _arrays(killed / "ref.zarr", NAME), _arrays(path, NAME)
    assert a.keys() == b.keys()
    for k in a:
        assert bitwise_equal(a[k], b[k]), k
    assert not list(path.rglob("*.partial")) and not locks_left(path)
    assert not list((path / "_corrflow" / "staging").iterdir())
    assert open_store(path).info(NAME)["complete"]


def _check_import(killed: Path) -> None:
    """import-ildg killed after two of three files: incomplete, and the same command continues it."""
    path = killed / "imp.zarr"
    st = open_store(path)
    info = st.info("imp")
    assert info["committed"] == 2 and info["target"] == 3 and not info["complete"]
    code, out = cli("info", path)
    assert code == 0 and "2 of 3 files imported; rerun the same import-ildg command" in out
    rep = st.verify("imp")
    assert rep.ok and rep.incomplete == "2 of 3 configurations imported" and "INCOMPLETE" in str(rep)
    files = [killed / f"cfg{i}.lime" for i in range(3)]
    code, out = cli("import-ildg", path, *files[:2], "--name", "imp", "--beta", 6)
    assert code == 2 and "source files: 3 stored, the first" in out and "2 given" in out, out  # another ensemble
    code, out = cli("import-ildg", path, *files, "--name", "imp", "--beta", 6)
    assert code == 0, out
    fresh = copy_store(killed / "template.zarr", killed, "imp_ref.zarr")
    assert cli("import-ildg", fresh, *files, "--name", "imp", "--beta", 6)[0] == 0
    a, b = _arrays(fresh, "imp"), _arrays(path, "imp")
    for k in a:
        assert bitwise_equal(a[k], b[k]), k
    assert open_store(path).info("imp")["complete"]
    before = _arrays(path, "imp")
    code, out = cli("import-ildg", path, *files, "--name", "imp", "--beta", 6)  # a rerun: nothing to do, not an error
    assert code == 0 and "up to date imp holds all 3 imported configurations; nothing to do" in out, out
    after = _arrays(path, "imp")
    assert all(bitwise_equal(before[k], after[k]) for k in before)


def _check_measure(killed: Path) -> None:
    """measure killed after writing a new observable's values, before recording its count."""
    path = killed / "meas.zarr"
    st = open_store(path)
    assert "wilson_1x1" in os.listdir(path / NAME)  # the array was created and filled ...
    assert "wilson_1x1" not in st.open_ensemble(NAME) and st.info(NAME)["observables"] == {}  # ... but not committed
    assert st.verify(NAME).ok
    code, out = cli("measure", path, NAME, "wilson_1x1")
    assert code == 0 and "wilson_1x1 +6" in out, out
    ref = copy_store(killed / "ref.zarr", killed, "meas_ref.zarr")
    assert cli("measure", ref, NAME, "wilson_1x1")[0] == 0
    assert bitwise_equal(_arrays(ref, NAME)["wilson_1x1"], _arrays(path, NAME)["wilson_1x1"])


def _check_replace(killed: Path) -> None:
    """measure --replace killed after dropping the observable's count, before deleting its array: the observable
    is gone from the ensemble, the next writer removes the array, the rerun measures it anew."""
    path = killed / "repl.zarr"
    st = open_store(path)
    assert "wilson_1x1" not in st.open_ensemble(NAME) and st.info(NAME)["observables"] == {}
    assert st.verify(NAME).ok
    code, out = cli("measure", path, NAME, "wilson_1x1", "--replace")
    assert code == 0 and "wilson_1x1 +6" in out, out
    assert bitwise_equal(_arrays(killed / "meas_ref.zarr", NAME)["wilson_1x1"], _arrays(path, NAME)["wilson_1x1"])


def _check_correlate(killed: Path) -> None:
    """correlate killed while creating the flowed ensemble."""
    path = killed / "corr.zarr"
    st = open_store(path)
    assert st.ensembles() == [NAME] and "direct" in st.incomplete()
    code, out = cli("correlate", "--store", path, "--from", NAME, "--identity", "--to", "beta=2.1", "--name", "direct")
    assert code == 0, out
    st = open_store(path)
    assert st.ensembles() == ["direct", NAME] and not st.incomplete() and st.info("direct")["complete"]


def _check_checkpoint(killed: Path, fault: str) -> None:
    """A checkpoint write killed at ``fault`` leaves a good checkpoint (the old one or the new one)."""
    ck = killed / f"ck_{fault.replace(':', '_')}"
    meta, arrays = read_checkpoint(ck)
    epoch = CKPT_PHASES[fault]
    assert meta == {"epoch": epoch} and np.all(arrays["w"] == epoch)
    assert len([p for p in ck.iterdir() if p.name.startswith("v")]) == 2  # the leftover of the killed write
    write_checkpoint(ck, {"epoch": 3}, {"w": np.full(1000, 3.0)})
    assert read_checkpoint(ck)[0] == {"epoch": 3}
    assert sorted(p.name for p in ck.iterdir() if not p.name.startswith(".")) == \
        sorted(["checkpoint.json", json.loads((ck / "checkpoint.json").read_text())["current"]])


# ----------------------------------------------------------------------------------------
# in-process crashes (CORRFLOW_FAULT_ACTION=raise): analysis records
# ----------------------------------------------------------------------------------------


def test_analysis_record_interrupted_keeps_the_previous_record(tmp_path, monkeypatch):
    from corrflow.store import faults

    st = open_store(tmp_path / "s.zarr", "a")
    st.write_analysis("cl", {"title": "first"}, figures={"a.png": b"one"})
    monkeypatch.setenv(FAULT_ENV, "analysis:data")
    monkeypatch.setenv(FAULT_ACTION_ENV, "raise")
    faults.reset()
    with pytest.raises(InjectedFault):
        st.write_analysis("cl", {"title": "second"}, figures={"b.png": b"two"})
    faults.reset()
    with pytest.raises(InjectedFault):  # a first record that never completes is not listed
        st.write_analysis("new", {"title": "x"})
    monkeypatch.delenv(FAULT_ENV)
    st = open_store(tmp_path / "s.zarr", "a")
    assert st.analyses() == ["cl"] and st.read_analysis("cl") == ({"title": "first"}, {"a.png": b"one"})
    st.write_analysis("cl", {"title": "third"}, figures={"c.png": b"three"})
    assert st.read_analysis("cl") == ({"title": "third"}, {"c.png": b"three"})
    assert sorted(os.listdir(tmp_path / "s.zarr" / "_analyses" / "cl")) == \
        sorted(["zarr.json", json.loads((tmp_path / "s.zarr" / "_analyses" / "cl" / "zarr.json").read_text())
                ["attributes"]["corrflow_figures"]])
    assert not locks_left(tmp_path / "s.zarr")
