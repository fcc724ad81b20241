"""`--discard auto` on a chain with a start-up drift (2D U(1) 8x8, beta = 2, hot start, no thermalisation, short
trajectories): `corrflow summary` and `corrflow derivative` cut the drift off, and the estimates then agree with the
exact torus values; without the cut the drift inflates the connected estimator's error (negative control)."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from corrflow import exact, open_store
from corrflow.cli import app
from corrflow.summary import ensemble_summary, thermalisation_cut

ENSEMBLE = "u1_8x8_beta2"
runner = CliRunner()


@pytest.fixture(scope="module")
def hot_store(tmp_path_factory):
    """2 chains x 2000 HMC trajectories of length 0.2 from a hot start, none discarded at generation: the plaquette
    relaxes from ~0 to ~0.7 over the first ~30 trajectories; and 2 x 1000 the same way at beta = 2.2.  Randomised
    trajectory lengths (the default): the automatic cut is 50 (with --jitter 0, 200); the effective-sample-size rule
    it replaced kept this chain whole (its tau_int barely changes: a variance-blind rule misses it)."""
    path = tmp_path_factory.mktemp("hot") / "hot.zarr"
    res = runner.invoke(app, ["generate", "u1", "--beta", "2.0", "--shape", "8,8", "--n", "2000", "--chains", "2",
                              "--therm", "0", "--step-size", "0.1", "--n-steps", "2", "--seed", "5",
                              "--store", str(path)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["generate", "u1", "--beta", "2.2", "--shape", "8,8", "--n", "1000", "--chains", "2",
                              "--therm", "0", "--step-size", "0.1", "--n-steps", "2", "--seed", "6",
                              "--store", str(path)])  # an independent ensemble at beta + 0.2, hot-started too
    assert res.exit_code == 0, res.output
    return path


def test_summary_cuts_the_start_up_drift(hot_store):
    st = open_store(hot_store, "r")
    p_exact = exact.u1_plaquette(2.0, (8, 8))
    start = np.asarray(st.open_ensemble(ENSEMBLE)["plaquette"].values)[:, :10]
    assert start.mean() < p_exact - 0.2  # the chains start far from equilibrium (fluctuations ~0.05)
    cut = thermalisation_cut(st, ENSEMBLE)
    assert 10 <= cut.n_discard <= 1000 and not cut.at_limit
    row = next(r for r in ensemble_summary(st, ENSEMBLE, discard=cut.n_discard) if r.observable == "plaquette")
    assert abs(row.pull) < 3
    res = runner.invoke(app, ["summary", str(hot_store), ENSEMBLE, "--discard", "auto"])
    assert res.exit_code == 0, res.output
    assert f"first {cut.n_discard} per chain discarded" in " ".join(res.output.split())


def test_derivative_with_discard_auto_agrees_with_exact(hot_store, exact_u1):
    exact_d = exact_u1  # (conftest: beta = 2 on 8x8, as here)
    out = {}
    for d in ("0", "auto"):
        res = runner.invoke(app, ["derivative", "--store", str(hot_store), ENSEMBLE, "--param", "beta", "--obs",
                                  "plaquette,wilson_2x2", "--json", "--batch", "1000", "--discard", d])
        assert res.exit_code == 0, res.output
        out[d] = json.loads(res.stdout)
    auto = out["auto"]
    assert auto["discard"] == auto["thermalisation"]["n_discard"] > 0 and "thermalisation" not in out["0"]
    for o, ex in exact_d.items():
        for est in ("tangent", "connected"):
            e = auto["observables"][o][est]
            assert abs(e["value"] - ex) < 3 * e["error"], (o, est, e, ex)
        assert abs(auto["tangent_minus_connected"][o]["pull"]) < 3
    # negative control: uncut, the drift at the start dominates the connected estimator's error (5x measured)
    assert out["0"]["observables"]["plaquette"]["connected"]["error"] > 2.5 * auto["observables"]["plaquette"][
        "connected"]["error"]


@pytest.mark.parametrize("command", ["summary", "derivative"])
def test_bad_discard_is_one_line(hot_store, command):
    args = ([str(hot_store), ENSEMBLE] if command == "summary" else
            ["--store", str(hot_store), ENSEMBLE, "--param", "beta", "--obs", "plaquette"])
    res = runner.invoke(app, [command, *args, "--discard", "some"])
    assert res.exit_code == 2 and "--discard must be a number of configurations or 'auto'" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    if command == "summary":  # more than the chains hold: how many may go
        res = runner.invoke(app, [command, *args, "--discard", "5000"])
        out = " ".join(res.output.split())
        assert res.exit_code == 2 and "cannot discard 5000 of the 2000 trajectories per chain of ensemble" in out \
            and "an error needs at least 10 left; use --discard 1990 or less" in out and len(res.output.strip().splitlines()) <= 2, res.output


def test_analyses_flag_an_ensemble_that_drifts(hot_store, u1_store, tmp_path):
    """Every analysis record gets the thermalisation cut of the Markov ensembles its pipeline used, and a summary
    warning for one that drifts at its start (the hot-started chain); none for the thermalised one (--therm 200)."""
    from corrflow import HMCConfig, make_theory
    from corrflow.pipeline import Pipeline
    from corrflow.pipeline.analysis import DRIFT_SIGMA, thermalisation_check

    theory = make_theory("u1", (8, 8), beta=2.0)
    for store, n, drifts in ((hot_store, 2000, True), (u1_store, 3200, False)):
        copy = tmp_path / store.name
        shutil.copytree(store, copy)
        pipe = Pipeline(copy)
        pipe.ensemble(theory, HMCConfig(step_size=0.1, n_steps=2), name=ENSEMBLE, n=n, n_chains=2, seed=0,
                      n_therm=0)  # (reused: the store holds them)
        record = {"summary": ["the analysis's own line"]}
        thermalisation_check(pipe, record)
        cut = record["thermalisation"][ENSEMBLE]
        warned = [line for line in record["summary"] if line.startswith("WARNING: ensemble")]
        assert bool(warned) is drifts, (store, cut)
        assert bool(cut["drift_sigma"] > DRIFT_SIGMA) is drifts
        if drifts:
            assert f"first {cut['n_discard']} configurations" in warned[0] and "--therm" in warned[0]
        shutil.rmtree(copy)


def test_compare_with_discard_auto(hot_store):
    """`corrflow compare --discard auto` cuts the longest drift of the base and independent ensembles; the finite
    difference then agrees with the exact torus one."""
    from corrflow.compare import compare_ensembles

    res = runner.invoke(app, ["compare", "--store", str(hot_store), "--base", ENSEMBLE, "u1_8x8_beta2.2",
                              "--discard", "auto"], terminal_width=200)
    assert res.exit_code == 0, res.output
    cut = max(thermalisation_cut(open_store(hot_store, "r"), n).n_discard for n in (ENSEMBLE, "u1_8x8_beta2.2"))
    assert f"the first {cut} of every chain discarded" in res.output and "thermalisation (--discard auto)" in res.output
    (row,) = compare_ensembles(open_store(hot_store, "r"), ENSEMBLE, ["u1_8x8_beta2.2"], ["plaquette"], discard=cut)
    fd = (exact.u1_plaquette(2.2, (8, 8)) - exact.u1_plaquette(2.0, (8, 8))) / 0.2
    assert abs(row.derivative.pull(fd)) < 3


def test_report_with_discard_auto(hot_store, tmp_path):
    """`corrflow report --discard auto` states the cut and applies it to the comparison and the tangent rows."""
    res = runner.invoke(app, ["report", "--store", str(hot_store), "--base", ENSEMBLE, "u1_8x8_beta2.2", "--tangent",
                              "--discard", "auto", "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "rep" / "report.md").read_text()
    cut = max(thermalisation_cut(open_store(hot_store, "r"), n).n_discard for n in (ENSEMBLE, "u1_8x8_beta2.2"))
    assert f"Thermalisation (automatic cut): first {cut} per chain discarded" in text
    assert "Tangent minus connected" in text
    res = runner.invoke(app, ["report", "--store", str(hot_store), "--discard", "10", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "--discard applies to the comparison with --base" in res.output
