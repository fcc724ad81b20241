"""`corrflow derivative` on a small stored 2D U(1) ensemble: JSON shape, values against the exact derivatives,
checkpoint reuse, and user errors (one line, exit status 2, no traceback, store unchanged)."""

import json
import math
import os
import shutil

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
    assert out["exact"] == {k: pytest.approx(v, abs=1e-7) for k, v in exact_u1.items()}  # pure gauge 2D: known
    for name, est in out["observables"].items():
        assert set(est) == {"tangent", "connected"}
        for e in est.values():
            assert set(e) == {"value", "error", "tau_int"} and e["error"] > 0 and e["tau_int"] > 0
            assert abs(e["value"] - exact_u1[name]) / e["error"] < 4
        assert out["variance_reduction"][name]["tangent"]["vs_connected"] > 8
        # tangent - connected from the same configurations: the error of the difference, and its pull
        d = out["tangent_minus_connected"][name]
        assert d["value"] == pytest.approx(est["tangent"]["value"] - est["connected"]["value"], rel=1e-9)
        assert d["error"] > 0
        assert d["pull"] == pytest.approx(d["value"] / d["error"]) and abs(d["pull"]) < 4
    assert (ck / "checkpoint.json").exists()
    again = json.loads(_invoke(args).stdout)
    assert again["reused"] is True
    assert again["observables"] == out["observables"]  # same coefficients, same probes: identical numbers
    # --tau-exp: the same estimates (the saved field is reused) with the exponential tail in every error
    tail = json.loads(_invoke(args + ["--tau-exp", "20"]).stdout)
    assert tail["reused"] is True and tail["tau_exp"] == 20 and "tau_exp" not in out
    for name, est in tail["observables"].items():
        for k, e in est.items():
            assert e["value"] == out["observables"][name][k]["value"]
        assert est["tangent"]["error"] != out["observables"][name]["tangent"]["error"]
    # --tau-exp auto with --json: the estimate goes into the JSON (as "tau_exp"), nothing else onto stdout
    from corrflow.store import open_store
    from corrflow.summary import slowest_decay

    auto = _invoke(args + ["--tau-exp", "auto"])
    assert auto.exit_code == 0, auto.output
    decay = slowest_decay(open_store(u1_store), ENSEMBLE)
    assert json.loads(auto.stdout).get("tau_exp") == (None if decay is None else decay.tau_exp), auto.stdout
    # the table form prints every estimator and says the field was reused
    res = _invoke(args[:-5] + ["--batch", "500", "--out", str(ck)])
    assert res.exit_code == 0, res.output
    assert "tangent" in res.stdout and "connected" in res.stdout and "reused" in res.stdout
    assert "tangent - connected (same configurations" in res.stdout and "sigma)" in res.stdout
    one = _invoke(args[:-5] + ["--batch", "500", "--folds", "1", "--out", str(tmp_path / "one_fold")])
    assert one.exit_code == 0, one.output  # one fold: the reduction is in-sample and says so (not "per fold")
    assert "(in-sample: --folds 1 fits and evaluates on the same configurations)" in " ".join(one.stdout.split())
    assert f"exact d<O>/dbeta on this finite torus: plaquette {exact_u1['plaquette']:.6g} (tangent " in res.stdout
    # --fit observable: each observable's own Var[T_v] fit, saved per observable and reused like the field's
    ck2 = tmp_path / "per_obs"
    per = json.loads(_invoke(args[:-1] + [str(ck2), "--fit", "observable"]).stdout)
    assert per["fit_target"] == "observable" and set(per["observable_fit"]) == {"plaquette", "wilson_2x2"}
    assert per["fit"] == [] and per["reused"] is False
    for name, est in per["observables"].items():
        t = est["tangent"]
        assert abs(t["value"] - exact_u1[name]) / t["error"] < 4
        assert per["variance_reduction"][name]["tangent"]["vs_connected"] > (
            0.8 * out["variance_reduction"][name]["tangent"]["vs_connected"])
    assert json.loads(_invoke(args[:-1] + [str(ck2), "--fit", "observable"]).stdout)["observables"] == per["observables"]


@pytest.mark.parametrize("extra,message", [
    (["--obs", "plaq"], "unknown observable 'plaq'"),
    (["--param", "mass"], "has no parameter 'mass'"),
    (["--obs", "topological_charge"], "not smooth"),
    (["--folds", "0"], "--folds must be between 1 and 10"),
    (["--field", "plaquette", "--harmonics", "0"], "harmonics must be a positive integer"),
    (["--field", "magic"], "unknown tangent field"),
    (["--held-out", "1.5"], "--held-out must be a fraction"),
    (["--fit", "both"], "--fit must be one of field, observable"),
    (["--field", "preconditioned", "--masses", "abc"], "masses must be numbers"),
    (["--field", "preconditioned", "--masses", "-1"], "masses must be finite and >= 0"),
    (["--field", "preconditioned", "--probe-period", "0"], "--probe-period must be >= 1"),
    (["--field", "preconditioned", "--features", "plaquette^1"], "unknown feature 'plaquette^1'"),
    (["--field", "smoothing", "--times", "0.12"], "multiples of flow_eps"),
    (["--field", "smoothing", "--times", "abc"], "times must be numbers"),
    (["--field", "smoothing", "--features", "plaquette"], "--features does not apply to --field smoothing"),
    (["--field", "gradient", "--times", "0.2"], "--times applies to --field smoothing (or auto) only"),
    (["--field", "gradient", "--anisotropy", "0.5"], "--anisotropy applies to --field smoothing (or auto) only"),
    (["--times", "0.2"], "only for smoothing fields, and the auto field chooses plaquette here"),
    (["--field", "smoothing", "--anisotropy", "0.5"], "anisotropy needs spatial planes"),
    (["--field", "smoothing", "--anisotropy", "1.5"], "anisotropy must be in [0, 1)"),
    (["--tau-exp", "-2"], "--tau-exp must be a number >= 0"),
    (["--contract", "--no-contract"], "--contract and --no-contract exclude each other"),
    (["--valence-mass", "0.1"], "--valence-mass gives quenched quarks to the fermionic observables"),
])
def test_user_errors(u1_store, tmp_path, extra, message):
    before = _snapshot(u1_store)
    res = _invoke(["--store", str(u1_store), ENSEMBLE, "--out", str(tmp_path / "ck"), *extra])
    assert res.exit_code == 2
    lines = [x for x in res.output.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in res.output, res.output
    assert _snapshot(u1_store) == before
    assert not (tmp_path / "ck").exists()


def test_preconditioned_field_from_the_cli(u1_store, exact_u1, tmp_path):
    """The general non-local field (--field preconditioned, diluted probes) through the CLI: unbiased, and far above
    the local gradient field's reduction on the same configurations."""
    args = ["--store", str(u1_store), ENSEMBLE, "--obs", "plaquette,wilson_2x2", "--json", "--batch", "400",
            "--thin", "8", "--field", "preconditioned", "--features", "plaquette,plaquette^2", "--probes", "1",
            "--probe-period", "4", "--out", str(tmp_path / "pc")]
    res = _invoke(args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["field"]["kind"] == "preconditioned" and out["field"]["probe_period"] == 4
    for name, est in out["observables"].items():
        t = est["tangent"]
        assert abs(t["value"] - exact_u1[name]) / t["error"] < 4
        assert out["variance_reduction"][name]["tangent"]["vs_connected"] > 8


def test_smoothing_field_from_the_cli(u1_store, exact_u1, tmp_path):
    """--field smoothing with its flow times and the default diluted probe: unbiased, saved with its settings."""
    args = ["--store", str(u1_store), ENSEMBLE, "--obs", "plaquette,wilson_2x2", "--json", "--batch", "400",
            "--thin", "8", "--field", "smoothing", "--times", "0.2,0.6", "--out", str(tmp_path / "sm")]
    res = _invoke(args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["field"]["kind"] == "smoothing" and out["field"]["times"] == [0.2, 0.6]
    assert out["field"]["n_probes"] == 1 and out["field"]["probe_period"] == 2
    for name, est in out["observables"].items():
        t = est["tangent"]
        assert abs(t["value"] - exact_u1[name]) / t["error"] < 4


def test_unknown_ensemble(u1_store):
    res = _invoke(["--store", str(u1_store), "nope"])
    assert res.exit_code == 2 and "no ensemble 'nope'" in res.output and ENSEMBLE in res.output


def test_compare_adds_finite_shift_estimators_and_report(u1_store, exact_u1, tmp_path):
    """--compare: the direct-reweighting and independent finite-shift derivatives join the table (estimator names,
    shift, variance reductions against the connected estimator), agreeing with the exact finite difference; user
    errors in --compare leave the store unchanged; `corrflow report --tangent` adds the tangent and connected rows."""
    from corrflow import exact

    store = tmp_path / "runs.zarr"
    shutil.copytree(u1_store, store)
    res = runner.invoke(app, ["generate", "u1", "--beta", "2.1", "--shape", "8,8", "--n", "800", "--chains", "2",
                              "--therm", "200", "--step-size", "0.25", "--n-steps", "4", "--block", "800", "--seed",
                              "12", "--store", str(store)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["correlate", "--store", str(store), "--from", ENSEMBLE, "--identity", "--to", "beta=2.1",
                              "--name", "direct_b2.1", "--batch", "800"])
    assert res.exit_code == 0, res.output
    args = ["--store", str(store), ENSEMBLE, "--obs", "plaquette", "--batch", "500", "--out", str(tmp_path / "ck")]
    res = _invoke(args + ["--json", "--compare", "u1_8x8_beta2.1,direct_b2.1"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    est = out["observables"]["plaquette"]
    assert set(est) == {"tangent", "connected", "direct", "independent"}
    assert out["finite_shift"] == {"direct": {"ensemble": "direct_b2.1", "shift": pytest.approx(0.1)},
                                   "independent": {"ensemble": "u1_8x8_beta2.1", "shift": pytest.approx(0.1)}}
    fd = (exact.u1_plaquette(2.1, (8, 8)) - exact.u1_plaquette(2.0, (8, 8))) / 0.1
    for k in ("direct", "independent"):
        assert abs(est[k]["value"] - fd) / est[k]["error"] < 4, (k, est[k], fd)
    red = {k: v["vs_connected"] for k, v in out["variance_reduction"]["plaquette"].items()}
    assert red["connected"] == pytest.approx(1.0)
    assert red["tangent"] > red["direct"] > 0 and red["tangent"] > red["independent"]
    # the analyses' shape: a definition, and every estimator with its cost-adjusted figure (None where unknown)
    assert "var(connected)" in out["variance_reduction"]["definition"]
    assert out["variance_reduction"]["plaquette"]["direct"]["cost_adjusted_vs_connected"] is None
    # --discard drops the same leading trajectories of the base, the independent and the paired flowed ensemble
    from corrflow.compare import compare_ensembles
    from corrflow.stats import correlated_difference, independent_difference
    from corrflow.store import open_store

    st = open_store(store, "r")
    rows = {r.estimator: r for r in compare_ensembles(st, ENSEMBLE, ["u1_8x8_beta2.1", "direct_b2.1"], ["plaquette"],
                                                      discard=300)}
    p0 = st.open_ensemble(ENSEMBLE)["plaquette"].values
    p1 = st.open_ensemble("u1_8x8_beta2.1")["plaquette"].values
    dd = st.open_ensemble("direct_b2.1")
    assert rows["independent"].difference.value == pytest.approx(independent_difference(p1[:, 300:], p0[:, 300:]).value)
    pr = correlated_difference(p0[:, 300:], dd["plaquette"].values[:, 300:], dd["log_weight"].values[:, 300:])
    assert rows["direct reweighting"].difference.value == pytest.approx(pr.value)
    assert rows["direct reweighting"].difference.value != pytest.approx(
        correlated_difference(p0, dd["plaquette"].values, dd["log_weight"].values).value)
    table = _invoke(args + ["--compare", "direct_b2.1", "--compare", "u1_8x8_beta2.1"])
    assert table.exit_code == 0 and "direct_b2.1" in table.stdout and "independent" in table.stdout, table.stdout
    # bad --compare input: one line, exit 2, nothing written
    before = _snapshot(store)
    for extra, message in [(["--compare", "nope"], "no ensemble 'nope'"),
                           (["--param", "lam", "--compare", "direct_b2.1"], "differs from 'u1_8x8_beta2' in beta"),
                           (["--compare", "direct_b2.1,direct_b2.1"], "both direct estimators"),
                           (["--obs", "wilson_2x2", "--compare", "direct_b2.1"], "corrflow measure"),
                           (["direct_b2.1", "--obs", "plaquette"], "is a flowed ensemble")]:
        bad = _invoke(["--store", str(store), extra[0] if extra[0] == "direct_b2.1" else ENSEMBLE, "--out",
                       str(tmp_path / "ck_bad"), *extra[extra[0] == "direct_b2.1":]])
        lines = [x for x in bad.output.strip().splitlines() if x.strip()]
        assert bad.exit_code == 2 and len(lines) == 1 and message in lines[0], (extra, bad.output)
    assert _snapshot(store) == before and not (tmp_path / "ck_bad").exists()
    # the report with the tangent-flow rows
    rep = runner.invoke(app, ["report", "--store", str(store), "--base", ENSEMBLE, "u1_8x8_beta2.1", "direct_b2.1",
                              "--obs", "plaquette", "--tangent", "--out", str(tmp_path / "rep")])
    assert rep.exit_code == 0, rep.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Tangent-flow estimator" in md and "| plaquette | tangent |" in md and "| plaquette | connected |" in md
    assert "at equal cost" in md and "to generate one): plaquette" in md  # the ensemble recorded its cost
    assert "Tangent minus connected, from the same configurations" in md and "sigma)." in md
    # (Markdown: `<O>` written with entities, corrflow.markdown, or CommonMark takes it for an HTML tag)
    assert f"Exact d&lt;O&gt;/dbeta at the base on this finite torus: plaquette {exact_u1['plaquette']:.6g} " \
        "(tangent" in md
    # --second-order: the tangent rows with the control variate, smaller errors for the plaquette (along the action)
    rep = runner.invoke(app, ["report", "--store", str(store), "--base", ENSEMBLE, "u1_8x8_beta2.1", "--obs",
                              "plaquette", "--tangent", "--second-order", "--out", str(tmp_path / "rep_so")])
    assert rep.exit_code == 0, rep.output
    md2 = (tmp_path / "rep_so" / "report.md").read_text()
    assert "with its second-order control variate" in md2 and "| plaquette | tangent |" not in md2

    def reduction(text, estimator):  # the last column of the row: variance reduction against independent
        row = next(x for x in text.splitlines() if x.startswith(f"| plaquette | {estimator} |"))
        return float(row.rstrip(" |").rsplit("|", 1)[1])

    # measured 2098 against 1667 (the default 2D field, 6 harmonics, already removes almost all of Var[R_v])
    assert reduction(md2, "tangent (second order)") > 1.1 * reduction(md, "tangent"), (md, md2)
    assert reduction(md2, "connected") == pytest.approx(reduction(md, "connected"))
    assert _snapshot(store) == before
    bad = runner.invoke(app, ["report", "--store", str(store), "--tangent", "--out", str(tmp_path / "rep2")])
    assert bad.exit_code == 2 and "--tangent needs --base" in bad.output


# ----------------------------------------------------------------------------------------
# ensembles with dynamical fermions (Schwinger model): mass derivatives, fermionic observables
# ----------------------------------------------------------------------------------------

SCHWINGER = "schwinger_4x4_beta2_m0.3"  # the schwinger_store fixture of conftest.py


def test_mass_derivative_of_fermionic_observables(schwinger_store, tmp_path):
    args = ["--store", str(schwinger_store), SCHWINGER, "--param", "mass", "--obs", "plaquette,condensate,pion@1,pion@2",
            "--json", "--harmonics", "2", "--out", str(tmp_path / "f")]
    res = _invoke(args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["traces"] == {"method": "exact"}
    assert set(out["observables"]) == {"plaquette", "condensate", "pion@1", "pion@2", "m_eff@1"}
    obs = out["observables"]
    # signs a lattice physicist knows: heavier quarks -> smaller condensate and correlator, heavier pion
    assert obs["condensate"]["connected"]["value"] < -4 * obs["condensate"]["connected"]["error"]
    assert obs["pion@1"]["connected"]["value"] < -4 * obs["pion@1"]["connected"]["error"]
    assert obs["m_eff@1"]["tangent"]["value"] > 4 * obs["m_eff@1"]["tangent"]["error"]
    for est in obs.values():  # same configurations, unbiased estimators of the same derivative
        t, c = est["tangent"], est["connected"]
        assert abs(t["value"] - c["value"]) < 4 * max(t["error"], c["error"])
    # stochastic traces, the condensate from noise vectors of its own (the estimator for lattices where the dense
    # inverse does not fit), 20 thermalisation trajectories discarded: the same derivatives within the errors
    res = _invoke(["--store", str(schwinger_store), SCHWINGER, "--param", "mass", "--obs", "plaquette,condensate",
                   "--json", "--harmonics", "2", "--traces", "stochastic", "--noise", "2", "--discard", "20",
                   "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    sto = json.loads(res.stdout)
    assert sto["traces"]["method"] == "stochastic" and sto["n_traj"] == 40 and sto["discard"] == 20
    for o in ("plaquette", "condensate"):
        for k in ("tangent", "connected"):
            a, b = sto["observables"][o][k], obs[o][k]
            assert abs(a["value"] - b["value"]) < 4 * math.hypot(a["error"], b["error"]), (o, k, a, b)
    assert sto["observables"]["condensate"]["connected"]["value"] < 0
    thin = _invoke(["--store", str(schwinger_store), SCHWINGER, "--param", "mass", "--field", "none", "--json",
                    "--discard", "1", "--thin", "3", "--out", str(tmp_path / "t")])
    assert thin.exit_code == 0, thin.output
    assert json.loads(thin.stdout)["n_traj"] == 20 and json.loads(thin.stdout)["thin"] == 3  # trajectories 1, 4, ..., 58
    # beta derivative on the fermion ensemble with stochastic traces in the fermion part of v.grad S
    res = _invoke(["--store", str(schwinger_store), SCHWINGER, "--param", "beta", "--obs", "plaquette", "--json",
                   "--traces", "stochastic", "--noise", "2", "--out", str(tmp_path / "g")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["traces"]["method"] == "stochastic" and out["traces"]["n_noise"] == 2
    assert out["variance_reduction"]["plaquette"]["tangent"]["vs_connected"] > 1.5


@pytest.mark.parametrize("extra, message", [
    (["--param", "kappa"], "no parameter 'kappa' for tangent derivatives; allowed: beta, xi, lam, mass"),
    (["--param", "mass", "--obs", "pion@4"], "pion@4: the time separation must be in 0 .. 3"),
    (["--param", "mass", "--traces", "dense"], "--traces must be one of auto, exact, stochastic"),
    (["--param", "mass", "--noise", "0"], "--noise must be >= 1"),
    (["--param", "mass", "--discard", "60"], "--discard must be in 0 .. 59"),
    (["--param", "mass", "--discard", "55"], "too few for a held-out fit"),
    # enough in all, but a fold's held-out part too small: refused before any per-configuration term is computed
    (["--param", "mass", "--thin", "2"], "(each fold fits 22 and holds out 8, needs >= "),
    (["--param", "mass", "--thin", "2"], "and >= 10); generate more with `corrflow generate ... --resume` and a larger "
                                         "--n or thin less than 2 or use --folds 1 (no cross-fitting)"),
    (["--param", "mass", "--thin", "0"], "--thin must be >= 1"),
])
def test_fermion_user_errors(schwinger_store, extra, message):
    before = _snapshot(schwinger_store)
    res = _invoke(["--store", str(schwinger_store), SCHWINGER, *extra])
    assert res.exit_code == 2
    assert message in " ".join(res.output.split()) and "Traceback" not in res.output
    assert _snapshot(schwinger_store) == before
    assert not (schwinger_store.parent / "s_tangent").exists()


def test_condensate_needs_fermions(u1_store):
    res = _invoke(["--store", str(u1_store), ENSEMBLE, "--obs", "condensate"])
    assert res.exit_code == 2 and "needs an ensemble with dynamical fermions" in " ".join(res.output.split())


def test_scale_notes_under_the_table_and_in_json(u1_store, tmp_path, monkeypatch):
    """A t0/a^2 or w0/a row that the t2E@T observables ask for but that cannot be made: its note
    (``DerivativeResult.notes``) is printed under the table and given in --json.  The estimates are stand-ins (no
    tangent terms are computed); the notes themselves are tested in test_flowed_observable.py."""
    import numpy as np

    from corrflow import tangent as tg
    from corrflow.pipeline import tangent as pipeline
    from corrflow.stats import Stats

    note = "w0/a: needs t2E@T observables at four or more flow times around w0, got 3"
    s = Stats(value=1.0, error=0.1, tau_int=0.5, tau_int_error=0.01, n=100, n_replicas=2, window=1)
    result = tg.DerivativeResult(estimates={"plaquette": {"tangent": s, "connected": s}}, reduction={"plaquette": 1.0},
                                 fits=[], coef=np.zeros(1), param="beta", notes={"w0/a": note})
    stored = pipeline.StoredDerivative(result=result, checkpoint=tmp_path, reused=False, n_chains=2, n_traj=50,
                                       cost={"terms_s": 0.1, "fit_s": 0.0})
    monkeypatch.setattr(pipeline, "derivative_from_store", lambda *args, **kwargs: stored)
    args = ["--store", str(u1_store), ENSEMBLE, "--param", "beta", "--obs", "plaquette"]
    res = _invoke(args)
    assert res.exit_code == 0 and f"\n{note}\n" in res.output, res.output
    out = _invoke(args + ["--json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["notes"] == {"w0/a": note}, out.output
