"""`corrflow derivative` on a small stored 2D U(1) ensemble: JSON shape, values against the exact derivatives,
checkpoint reuse, and user errors (one line, exit status 2, no traceback, store unchanged)."""

import json
import os

import pytest
from typer.testing import CliRunner

from corrflow.cli import app

ENSEMBLE = "u1_8x8_beta2"  # as in conftest.py
runner = CliRunner()


def _snapshot(path):
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            st = os.stat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def _invoke(args):
    return runner.invoke(app, ["derivative", *args])


def test_derivative_json_and_checkpoint_reuse(u1_store, exact_u1, tmp_path):
    ck = tmp_path / "field"
    args = ["--store", str(u1_store), ENSEMBLE, "--param", "beta", "--obs", "plaquette,wilson_2x2", "--json",
            "--batch", "500", "--out", str(ck)]
    res = _invoke(args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["observables"]) == {"plaquette", "wilson_2x2"} and out["reused"] is False
    for name, est in out["observables"].items():
        assert set(est) == {"tangent", "connected"}
        for e in est.values():
            assert set(e) == {"value", "error", "tau_int"} and e["error"] > 0 and e["tau_int"] > 0
            assert abs(e["value"] - exact_u1[name]) / e["error"] < 4
        assert out["variance_reduction"][name] > 8
    assert (ck / "checkpoint.json").exists()
    again = json.loads(_invoke(args).stdout)
    assert again["reused"] is True
    assert again["observables"] == out["observables"]  # same coefficients, same probes: identical numbers
    # the table form prints every estimator and says the field was reused
    res = _invoke(args[:-5] + ["--batch", "500", "--out", str(ck)])
    assert res.exit_code == 0, res.output
    assert "tangent" in res.stdout and "connected" in res.stdout and "reused" in res.stdout


@pytest.mark.parametrize("extra,message", [
    (["--obs", "plaq"], "unknown observable 'plaq'"),
    (["--param", "mass"], "has no parameter 'mass'"),
    (["--obs", "topological_charge"], "not smooth"),
    (["--folds", "0"], "--folds must be between 1 and 10"),
    (["--field", "plaquette", "--harmonics", "0"], "harmonics must be a positive integer"),
    (["--field", "magic"], "unknown tangent field"),
    (["--held-out", "1.5"], "--held-out must be a fraction"),
])
def test_user_errors(u1_store, tmp_path, extra, message):
    before = _snapshot(u1_store)
    res = _invoke(["--store", str(u1_store), ENSEMBLE, "--out", str(tmp_path / "ck"), *extra])
    assert res.exit_code == 2
    lines = [x for x in res.output.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in res.output, res.output
    assert _snapshot(u1_store) == before
    assert not (tmp_path / "ck").exists()


def test_unknown_ensemble(u1_store):
    res = _invoke(["--store", str(u1_store), "nope"])
    assert res.exit_code == 2 and "no ensemble 'nope'" in res.output and ENSEMBLE in res.output
