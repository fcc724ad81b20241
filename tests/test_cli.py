"""The corrflow command line: kill -9 / resume bit-identity, help texts, summary and errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from corrflow.cli import app
from corrflow.store import open_store

runner = CliRunner()
GEN_ARGS = ["u1", "--beta", "2.0", "--shape", "32,32", "--n", "300", "--chains", "2", "--therm", "40", "--thin", "2",
            "--n-steps", "20", "--step-size", "0.05", "--block", "4", "--observables", "wilson_2x2,topological_charge",
            "--seed", "7"]
NAME = "u1_32x32_beta2"


def _committed(store: Path) -> int:
    """Committed count read straight from the group metadata (atomic file), -1 if not there yet."""
    try:
        meta = json.loads((store / NAME / "zarr.json").read_text())
        return int(meta["attributes"]["corrflow_commit"]["committed"])
    except (OSError, ValueError, KeyError):
        return -1


def _arrays(store: Path) -> dict:
    ds = open_store(store).open_ensemble(NAME)
    return {k: np.asarray(ds[k].values) for k in list(ds.data_vars) + ["traj"]}


@pytest.mark.slow
def test_kill_minus_9_and_resume_is_bitwise_identical(tmp_path):
    ref = tmp_path / "ref.zarr"
    res = runner.invoke(app, ["generate", *GEN_ARGS, "--store", str(ref)])
    assert res.exit_code == 0, res.output
    killed = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-m", "corrflow", "generate", *GEN_ARGS, "--store", str(killed), "--resume"]
    # restarts share one persistent compilation cache, so each resume compiles only once
    env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    rng = np.random.default_rng(2024)
    n_kills = 0
    seen = []
    for attempt in range(8):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        start = _committed(killed)
        # kill after a random number of new commits (or during thermalisation on the first attempt),
        # plus a random delay so that some kills land in the middle of a block write
        target = start + int(rng.integers(1, 12))
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline:
            if attempt == 0 and (tmp_path / "killed.zarr" / "_corrflow" / "locks" / f"{NAME}.lock").exists():
                time.sleep(float(rng.uniform(0.0, 0.5)))
                break
            if attempt > 0 and _committed(killed) >= target:
                time.sleep(float(rng.uniform(0.0, 0.02)))
                break
            time.sleep(0.005)
        if proc.poll() is not None:  # finished before we killed it
            assert proc.returncode == 0, proc.stderr.read().decode()
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        n_kills += 1
        seen.append(_committed(killed))
        # the store is readable after every kill, shows only committed data and verifies
        st = open_store(killed)
        if NAME in st:
            ds = st.open_ensemble(NAME)
            assert ds.sizes["traj"] == max(seen[-1], 0)
            assert st.verify(NAME, n_sample=2).ok
    print(f"kills: {n_kills}, committed counts at the kills: {seen}")
    assert n_kills >= 3, f"only {n_kills} kills happened (commits seen: {seen})"
    if proc.poll() is None or n_kills == 8:
        done = subprocess.run(cmd, capture_output=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr.decode()
    a, b = _arrays(ref), _arrays(killed)
    assert set(a) == set(b)
    for k in a:
        assert a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # nothing duplicated, nothing padded, no stray files
    assert np.all(np.diff(b["traj"]) == 2) and b["traj"][0] == 41
    assert not list(killed.rglob("*.partial"))
    assert not list((tmp_path / "killed.zarr" / "_corrflow" / "locks").glob("*.lock"))


@pytest.mark.parametrize("command", ["generate", "info", "measure", "verify", "summary", "export-ildg", "import-ildg"])
def test_every_command_has_help_with_examples(command):
    res = runner.invoke(app, [command, "--help"])
    assert res.exit_code == 0
    assert "Example" in res.output


def test_generate_measure_summary_roundtrip(tmp_path):
    store = tmp_path / "s.zarr"
    res = runner.invoke(app, ["generate", "u1", "--beta", "1.5", "--shape", "6,6", "--n", "400", "--chains", "2",
                              "--therm", "50", "--store", str(store), "--observables", "topological_charge"])
    assert res.exit_code == 0, res.output
    assert "done u1_6x6_beta1.5" in res.output
    res = runner.invoke(app, ["measure", str(store), "u1_6x6_beta1.5", "wilson_2x1", "plaquette"])
    assert res.exit_code == 0, res.output
    assert "plaquette: recorded during generation" in res.output
    res = runner.invoke(app, ["summary", str(store), "u1_6x6_beta1.5"])
    assert res.exit_code == 0, res.output
    assert "wilson_2x1" in res.output and "chi_top" in res.output
    # the pulls printed are those of corrflow.summary (checked against exact values there)
    from corrflow.summary import ensemble_summary

    rows = {r.observable: r for r in ensemble_summary(open_store(store), "u1_6x6_beta1.5")}
    for obs in ("plaquette", "wilson_2x1", "chi_top"):
        assert rows[obs].exact is not None and abs(rows[obs].pull) < 4, rows[obs]
    res = runner.invoke(app, ["info", str(store), "u1_6x6_beta1.5"])
    assert res.exit_code == 0 and "2 x 400" in res.output


@pytest.mark.parametrize(
    "args,match",
    [
        (["generate", "o3", "--beta", "1", "--shape", "4,4", "--n", "10"], "unknown theory"),
        (["generate", "u1", "--beta", "1", "--shape", "4", "--n", "10"], "malformed --shape"),
        (["generate", "u1", "--beta", "1", "--shape", "4,4", "--n", "-5"], "--n must be >= 1"),
        (["generate", "u1", "--beta", "1", "--shape", "4,4", "--n", "10", "--integrator", "rk4"], "unknown integrator"),
        (["generate", "u1", "--beta", "1", "--shape", "4,4", "--n", "10", "--observables", "bogus"], "unknown observable"),
        (["generate", "su3", "--beta", "1", "--shape", "4,4", "--n", "10", "--observables", "topological_charge"],
         "2D U\\(1\\) only"),
    ],
)
def test_cli_bad_input_exit_2(tmp_path, args, match):
    res = runner.invoke(app, args + ["--store", str(tmp_path / "s.zarr")])
    assert res.exit_code == 2
    assert __import__("re").search(match, res.output.replace("\n", " ")), res.output
