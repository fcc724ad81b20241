"""Interrupted `corrflow derivative` runs: the per-configuration terms are saved after every batch and a rerun with
the same settings continues where the interrupted one stopped, with the same numbers as an uninterrupted run; terms
saved under other settings or damaged are recomputed, never mixed in."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from corrflow import open_store
from corrflow.cli import app
from corrflow.pipeline.tangent import derivative_from_store

ENSEMBLE = "u1_8x8_beta2"  # as in conftest.py


class Stop(KeyboardInterrupt):
    pass


def _run(store, out, *, obs=("plaquette",), stop_at=None, calls=None):
    def progress(done, total):
        if calls is not None:
            calls.append((done, total))
        if stop_at is not None and done >= stop_at:
            raise Stop
    return derivative_from_store(open_store(store, "r"), store, ENSEMBLE, "beta", list(obs), batch=1000, out=out,
                                 progress=progress, thin=2)


def _values(res):
    return {o: {k: (s.value, s.error) for k, s in est.items()} for o, est in res.result.estimates.items()}


def test_interrupted_terms_resume_to_the_uninterrupted_result(u1_store, exact_u1, tmp_path):
    fresh = _run(u1_store, tmp_path / "fresh")
    assert fresh.terms_resumed == 0
    n = fresh.n_chains * fresh.n_traj  # 3200 configurations, batches of 1000
    ck = tmp_path / "ck"
    with pytest.raises(Stop):
        _run(u1_store, ck, stop_at=2000)
    assert (ck / "terms" / "checkpoint.json").exists() and not (ck / "checkpoint.json").exists()  # no fit yet
    calls = []
    resumed = _run(u1_store, ck, calls=calls)
    assert resumed.terms_resumed == 2000 and calls[0] == (2000, n) and calls[-1] == (n, n)
    assert _values(resumed) == _values(fresh)  # same keys per configuration, same batches: identical numbers
    s = resumed.result.estimates["plaquette"]["tangent"]
    assert abs(s.value - exact_u1["plaquette"]) / s.error < 4
    # a repeated run reads every term and the fitted field: nothing is computed
    calls = []
    again = _run(u1_store, ck, calls=calls)
    assert again.terms_resumed == n and again.reused and calls == [(n, n)] and _values(again) == _values(fresh)
    assert again.as_dict()["terms_resumed"] == n
    # ... and reports the fit figures of the run that fitted (a rerun said "Var[R_v] reduced none")
    assert [f.reduction for f in again.result.fits] == [f.reduction for f in resumed.result.fits] != []
    # other observables: the saved terms do not apply and are replaced
    other = _run(u1_store, ck, obs=("plaquette", "wilson_2x2"))
    assert other.terms_resumed == 0 and _values(other)["plaquette"] == _values(fresh)["plaquette"]


def test_damaged_terms_are_recomputed_with_a_warning(u1_store, tmp_path):
    ck = tmp_path / "ck"
    with pytest.raises(Stop):
        _run(u1_store, ck, stop_at=1000)
    meta = json.loads((ck / "terms" / "checkpoint.json").read_text())
    victim = next(Path(ck / "terms" / meta["current"]).glob("a.npy"))
    victim.write_bytes(victim.read_bytes()[:-8] + b"\0" * 8)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = _run(u1_store, ck)
    assert res.terms_resumed == 0
    assert any("damaged" in str(x.message) and "computing the terms again" in str(x.message) for x in w)


def test_cli_reports_resumed_terms(u1_store, tmp_path):
    args = ["derivative", "--store", str(u1_store), ENSEMBLE, "--obs", "plaquette", "--batch", "1000", "--thin", "2",
            "--out", str(tmp_path / "ck")]
    first = CliRunner().invoke(app, args + ["--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["terms_resumed"] == 0
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "terms of 3200 of 3200 configurations read from the checkpoint" in " ".join(res.output.split())


def test_resume_arrays_that_do_not_fit_are_rejected(u1_theory, u1_configs):
    from corrflow import tangent as tg
    import jax

    with pytest.raises(ValueError, match="resume needs the 5 flat outputs"):
        tg.compute_terms(tg.PlaquetteField(1), u1_theory, "beta", ("plaquette",), u1_configs[:, :10],
                         jax.random.PRNGKey(0), resume=(np.zeros(3), np.zeros(4)))
