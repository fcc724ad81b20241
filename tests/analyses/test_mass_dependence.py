"""End-to-end test of analysis.mass_dependence on a tiny Schwinger lattice (fixed seeds; pulls in sigma).

One module-scoped run (compile time dominates) feeds the statistical checks: the estimators of dO/dm agree
with each other (|pull| < 4, autocorrelation-aware errors), the flowed correlated difference beats
independent ensembles for the plaquette, and the connected-correlator cross-check agrees.  The run file it writes
repeats it through the command line (everything reused from the store), and the stored record re-renders.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import corrflow as cf
from analysis import mass_dependence as md
from corrflow.pipeline.analysis import app as analysis_app
from corrflow.stats.curves import MIN_BINS

app = analysis_app(md.MASS_DEPENDENCE)

# Cold start without thermalisation trajectories: the thermalisation program is a second HMC compilation (~20 s);
# a cold 6x4 lattice at beta = 2 relaxes within a few trajectories, and every estimator sees the same configurations.
TINY = dict(T=6, L=4, beta=2.0, mass=0.2, dm=0.05, n_configs=60, n_chains=2, n_therm=0, start="cold", epochs=2,
            n_train=16, batch_size=16, n_sources=1, t_min=1, t_max=2, measure_batch=60, hmc_det="pseudofermion",
            tangent=True, jitter="0")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    d = tmp_path_factory.mktemp("md")
    s = md.MassSettings.make(store=str(d / "md.zarr"), out=str(d / "out"), **TINY)
    rec = md.run(s)
    return s, rec


def _der(rec, obs, est):
    e = rec["estimates"][obs]["derivative"][est]
    return e["value"], e["error"]


def test_record_shape_and_store(result, assert_vr_shape):
    s, rec = result
    for k in ("title", "summary", "tables", "settings", "variance_reduction", "costs", "analysis"):
        assert k in rec
    assert_vr_shape(rec["variance_reduction"])
    assert set(rec["variance_reduction"]) == {"definition"} | set(md.OBSERVABLES)
    tangent_keys = {f"{c}vs_{o}" for c in ("", "cost_adjusted_") for o in ("connected", "flowed", "direct",
                                                                          "independent")}
    for o in md.OBSERVABLES:
        v = rec["variance_reduction"][o]
        assert set(v) == {"flowed", "tangent"}
        assert set(v["flowed"]) == {"vs_independent", "vs_direct", "cost_adjusted_vs_independent",
                                    "cost_adjusted_vs_direct"}
        assert set(v["tangent"]) == tangent_keys
    # the flow is chosen on held-out configurations by default (the identity, epoch 0, among the candidates)
    fl = rec["info"]["flow"]
    assert 0 <= fl["kept_epoch"] <= TINY["epochs"] and 0 < fl["held_out_ess_final"] <= 1
    assert any(f"held-out {fl['held_out_ess_initial']:.4f} -> {fl['held_out_ess_final']:.4f} (epoch "
               f"{fl['kept_epoch']} kept" in line for line in rec["summary"]), rec["summary"]
    tab = rec["tables"]["dO/dm by estimator"]
    assert len(tab["rows"]) == len(md.OBSERVABLES) * len(md.ESTIMATORS)
    assert all(len(r) == len(tab["columns"]) for r in tab["rows"])
    assert "path costs include the measurements" in rec["tables"]["costs"]["caption"]
    # the thermalisation check of the two Markov ensembles (base at m, independent at m + dm): the cold 6x4 start
    # relaxes within a few trajectories (the base's cut of noise measured 2.4 sigma), so no warning
    assert set(rec["thermalisation"]) == {rec["info"]["ensembles"]["base"], rec["info"]["ensembles"]["independent"]}
    assert not any(line.startswith("WARNING: ensemble") for line in rec["summary"])
    stored, figs = cf.open_store(s.io.store).read_analysis("mass_dependence")
    assert stored["estimates"] == rec["estimates"]
    assert figs["mass_dependence.png"][:8] == b"\x89PNG\r\n\x1a\n"
    out = Path(s.io.out)
    assert (out / "mass_dependence.png").stat().st_size > 10_000
    assert "mass_dependence.png" in (out / "mass_dependence.md").read_text()
    for k in ("hmc_base", "hmc_independent", "train", "flow", "direct", "path_flowed", "path_independent",
              "measure_base", "measure_flowed"):
        assert rec["costs"][k] is not None and rec["costs"][k] > 0, k
    # one cost definition: every path pays for the measurements on its configurations
    c = rec["costs"]
    assert c["path_flowed"] == pytest.approx(c["hmc_base"] + c["train"] + c["flow"] + c["measure_base"]
                                             + c["measure_flowed"], rel=1e-3)
    assert c["path_independent"] == pytest.approx(c["hmc_base"] + c["hmc_independent"] + c["measure_base"]
                                                  + c["measure_independent"], rel=1e-3)
    # the tangent path: base HMC + its terms (observables included) + the fit; no flow, no weights
    assert c["path_tangent"] == pytest.approx(c["hmc_base"] + c["measure_tangent"]
                                              + rec["info"]["tangent"]["fit_seconds"], rel=1e-3)


def test_estimators_agree(result):
    _, rec = result
    # every pull is defined (finite errors on both sides) and below 4 sigma; the pion mass gets its connected
    # estimator (and the tangent one) through the slope of the effective mass, so only direct-connected is absent
    tangent = {"tangent-flowed", "tangent-connected", "tangent-independent"}
    for obs, pulls in rec["pulls"].items():
        expected = ({"flowed-direct", "flowed-independent", "direct-independent", "flowed-connected",
                     "connected-independent"} if obs == "pion_mass" else
                    {"flowed-direct", "flowed-connected", "direct-connected", "flowed-independent",
                     "direct-independent", "connected-independent"}) | tangent
        assert set(pulls) == expected, obs
        for name, p in pulls.items():
            assert p is not None and math.isfinite(p), (obs, name, p)
            # a finite difference (flowed, direct) against a derivative at m (connected, tangent) on the same
            # configurations: O(dm) apart by construction, a curvature, not noise -- for the flowed estimator too,
            # now that held-out selection may keep the identity (then flowed == direct). The other pulls compare
            # like with like, or carry the independent ensemble's large error
            if set(name.split("-")) in ({"direct", "connected"}, {"flowed", "connected"}, {"flowed", "tangent"}):
                continue
            assert abs(p) < 4, (obs, name, p)
    for obs in md.OBSERVABLES:
        for est in md.ESTIMATORS:
            v, e = _der(rec, obs, est)
            assert math.isfinite(v) and e > 0, (obs, est)


def test_tangent_estimator(result):
    """The tangent-flow estimator at m (plaquette-space field keeping Q, the sea quarks' v.grad S by exact traces,
    cross-fitted) agrees with every other estimator (pulls above) and is no worse than the connected estimator it
    improves on: mass derivatives profit little from gauge-field moves (BENCHMARKS.md: 1.0-1.9x at 8x8, 1.0-1.1x on
    this lattice), but the pion mass gets derivatives at m from one ensemble, which this analysis lacked before."""
    _, rec = result
    vr = rec["variance_reduction"]
    for obs in md.OBSERVABLES:
        assert vr[obs]["tangent"]["vs_connected"] > 0.8, obs
        assert vr[obs]["tangent"]["vs_independent"] > 10, obs  # one ensemble, no shift, against two
    info = rec["info"]["tangent"]
    assert info["field"]["kind"] == "plaquette" and info["field"].get("keep_charge") and len(info["fits"]) == 2
    line = next(line for line in rec["summary"] if line.startswith("Tangent-flow estimator"))
    shown = [float(x) for x in re.findall(r"tangent - connected ([+-]\d+\.\d+) sigma, paired", line)]
    # the paired check is in the summary, as in `corrflow derivative` (the record's pulls have 3 digits)
    assert shown == pytest.approx([rec["pulls"][o]["tangent-connected"] for o in md.OBSERVABLES], abs=0.011)
    assert not any(x.startswith("WARNING: tangent - connected") for x in rec["summary"])  # (all pulls < 3 above)
    # every row is set against the same references, as in the Feynman-Hellmann table: var(reference) / var(row)
    tab = rec["tables"]["dO/dm by estimator"]
    col, cost_col = tab["columns"].index("VR vs connected"), tab["columns"].index("cost-adj. VR vs connected")
    for r in tab["rows"]:
        if r[1] == "tangent":
            assert r[col] == vr[r[0]]["tangent"]["vs_connected"]
            assert r[cost_col] == vr[r[0]]["tangent"]["cost_adjusted_vs_connected"]
        if r[1] == "connected":
            assert r[col] == 1.0 and r[cost_col] == 1.0
        if r[1] == "flowed":
            assert r[tab["columns"].index("VR vs independent")] == vr[r[0]]["flowed"]["vs_independent"]


def test_connected_pion_mass_without_tangent(result, tmp_path):
    """Without the tangent estimator the connected dm_pi/dm comes from dC/dm at fixed links measured on the base
    configurations (a forward-mode derivative through the solves) and dS/dm = -n_f V Sigma: a second code path that
    must give the connected value of the tangent run (its terms) to the solvers' precision."""
    s, rec = result
    off = md.run(s.replace(tangent=False, out=str(tmp_path / "o")), write=False)
    assert "tangent" not in off["estimates"]["pion_mass"]["derivative"] and off["info"]["tangent"] is None
    assert all(set(off["variance_reduction"][o]) == {"flowed"} for o in md.OBSERVABLES)  # no tangent entry
    tab = off["tables"]["dO/dm by estimator"]  # no empty tangent column; the rows keep to the columns
    assert all(r[1] != "tangent" for r in tab["rows"]) and {len(r) for r in tab["rows"]} == {len(tab["columns"])}
    a = off["estimates"]["pion_mass"]["derivative"]["connected"]
    b = rec["estimates"]["pion_mass"]["derivative"]["connected"]
    assert a["value"] == pytest.approx(b["value"], rel=1e-6) and a["error"] == pytest.approx(b["error"], rel=1e-4)
    assert set(off["pulls"]["pion_mass"]) == {"flowed-direct", "flowed-independent", "direct-independent",
                                              "flowed-connected", "connected-independent"}
    assert abs(off["pulls"]["pion_mass"]["flowed-connected"]) < 4


def test_errors_are_autocorrelation_aware(result):
    _, rec = result
    # the Gamma-method tau_int is reported (>= ~0.5) and the pion jackknife bins are >= 1 configuration
    for obs in ("plaquette", "condensate", "chi_top"):
        tau = rec["estimates"][obs]["derivative"]["flowed"]["tau_int"]
        assert tau is not None and tau > 0.3
    pj = rec["info"]["pion_jackknife"]
    assert pj["bin_size"] >= 1 and pj["n_bins"] >= MIN_BINS - 1


def test_flowed_beats_independent_for_plaquette(result):
    _, rec = result
    _, ef = _der(rec, "plaquette", "flowed")
    _, ei = _der(rec, "plaquette", "independent")
    assert ef < ei
    assert rec["variance_reduction"]["plaquette"]["flowed"]["vs_independent"] > 1


def test_connected_cross_check(result):
    _, rec = result
    vc, ec = _der(rec, "plaquette", "connected")
    assert math.isfinite(vc) and ec > 0
    p = rec["pulls"]["plaquette"]
    # the tangent estimator is the other derivative at m (the flowed one a finite difference, O(dm) away: see above)
    assert abs(p["tangent-connected"]) < 4 and abs(p["connected-independent"]) < 4
    # negative control: a wrong sign of dS/dm would put the connected estimate far from the flowed one
    vf, ef = _der(rec, "plaquette", "flowed")
    assert abs((-vc - vf) / math.hypot(ec, ef)) > abs((vc - vf) / math.hypot(ec, ef))


def test_condensate_and_slope_match_reference(result):
    """Sigma from the Schur complement equals chiral_condensate (dense D^{-1}); dSigma/dm equals a central
    difference.  Uses the measurement program compiled by the end-to-end run (same lattice and batch)."""
    from corrflow.observables.fermions import chiral_condensate

    s, _ = result
    th = cf.make_theory("schwinger", s.shape, beta=2.0, mass=0.3)
    u = cf.open_store(s.io.store).load_configs("schwinger_6x4_beta2_m0.2_seed0_pf", 0, [5, 40])
    m = md.measure(th, u, n_sources=s.n_sources, batch=s.measure_batch)
    np.testing.assert_allclose(m["condensate"], chiral_condensate(th, u), rtol=1e-10)
    h = 1e-5
    sp = md.measure(th.replace(mass=0.3 + h), u, n_sources=s.n_sources, batch=s.measure_batch)["condensate"]
    sm = md.measure(th.replace(mass=0.3 - h), u, n_sources=s.n_sources, batch=s.measure_batch)["condensate"]
    np.testing.assert_allclose(m["dcondensate_dm"], (sp - sm) / (2 * h), rtol=1e-6)
    assert np.all(np.diff(m["pion"], axis=-1)[:, : s.T // 2 - 1] < 0)  # C(t) falls towards T/2


def test_run_file_and_stored_record_repeat_the_run(result, tmp_path):
    """The run file written by the run repeats it from the command line (``--config``, with an override of the
    error method): nothing is regenerated, the pion-mass estimates (their jackknife does not depend on the method)
    come back unchanged, the others within their errors; the stored record re-renders its figure on its own."""
    s, rec = result
    run_file = Path(s.io.out) / "mass_dependence.toml"
    assert md.MassSettings.from_toml(run_file) == s
    stored, _ = cf.open_store(s.io.store).read_analysis("mass_dependence")
    assert md.MassSettings.from_dict(stored["settings"]) == s
    assert md.MASS_DEPENDENCE.render(stored)[:8] == b"\x89PNG\r\n\x1a\n"
    store = cf.open_store(s.io.store)
    before = {n: store.commit(n)["committed"] for n in store.ensembles()}
    res = CliRunner().invoke(app, ["--config", str(run_file), "--method", "jackknife", "--out", str(tmp_path / "o")],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert {n: store.commit(n)["committed"] for n in store.ensembles()} == before  # everything reused
    # the headline reaches the terminal: every derivative with its variance reductions, and the tangent estimator
    flat = " ".join(res.output.split())
    for obs in s.observables:
        assert f"d{obs}/dm: flowed " in flat, obs
    assert "Tangent-flow estimator (base ensemble only" in flat and "Measurements cost" in flat
    from corrflow.markdown import html_outside_code

    assert html_outside_code((tmp_path / "o" / "mass_dependence.md").read_text()) == []
    again = md.MassSettings.from_toml(tmp_path / "o" / "mass_dependence.toml")
    assert again == s.replace(method="jackknife", out=str(tmp_path / "o"))
    rec2, _ = cf.open_store(s.io.store).read_analysis("mass_dependence")
    assert rec2["settings"]["errors"]["method"] == "jackknife"
    assert rec2["estimates"]["pion_mass"] == rec["estimates"]["pion_mass"]  # the pion jackknife does not depend on it
    for obs in ("plaquette", "condensate"):
        a, b = rec["estimates"][obs]["derivative"]["flowed"], rec2["estimates"][obs]["derivative"]["flowed"]
        # the same estimator with another error analysis (the jackknife drops the remainders of the bins)
        assert abs(a["value"] - b["value"]) < max(a["error"], b["error"]), (obs, a, b)


def test_settings_round_trip_through_toml(tmp_path):
    s = md.MassSettings.make(observables=("plaquette", "condensate"), T=12, dm=-0.03, n_train=40, method="jackknife")
    path = tmp_path / "run.toml"
    path.write_text(s.to_toml({"analysis": "mass_dependence"}))
    assert md.MassSettings.from_toml(path) == s
    assert md.MassSettings.from_dict(s.to_dict()) == s
    path.write_text('dm = 0.05\n[ensemble]\nn_configs = 30\n')
    assert md.MassSettings.from_toml(path) == md.MassSettings.make(dm=0.05, n_configs=30)
    path.write_text("[markov]\nalgorithm = 'heatbath'\n")  # fixed by the analysis (fermions: HMC)
    with pytest.raises(ValueError, match="algorithm is fixed"):
        md.MassSettings.from_toml(path)


@pytest.mark.parametrize("change, match", [
    (dict(observables=("plaquette", "pion_radius")), "unknown observable"),
    (dict(dm=0.0), "dm must be finite and non-zero"),
    (dict(theory="u1"), "needs dynamical fermions"),
    (dict(mass=-2.5), "kappa > 0"),
    (dict(t_max=5), "t_max"),
    (dict(n_sources=4), "must divide"),
    (dict(T=7), "even extents"),
    (dict(n_configs=15), "n_configs must be >= 20"),
    (dict(T=48, L=48), "48x48 lattice is too large for this analysis.*4608 > 2048.*--param mass"),
    (dict(n_configs=20, n_chains=1), "tangent estimator: too few configurations"),
])
def test_bad_input(tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        md.run(md.MassSettings.make(store=str(tmp_path / "x.zarr"), out=str(tmp_path / "o"), **{**TINY, **change}))
    assert not (tmp_path / "x.zarr").exists()  # rejected before anything is generated


def test_cli_help_config_and_errors(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for opt in ("--store", "--L", "--T", "--beta", "--mass", "--dm", "--n-configs", "--seed", "--epochs", "--out",
                "--observables", "--hmc-det", "--chains", "--therm", "--lr", "--start", "--method", "--config",
                "--tangent"):
        assert opt in res.output, opt
    assert "--algorithm" not in res.output and "--n-overrelax" not in res.output  # fixed by the analysis
    assert "data/mass_dependence.zarr" in res.output and "reports/mass_dependence" in res.output
    store = ["--store", str(tmp_path / "s.zarr")]
    res = runner.invoke(app, ["--dm", "0"] + store, env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "dm must be finite and non-zero" in res.output
    res = runner.invoke(app, ["--observables", "plaquette,foo"] + store, env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "unknown observable" in res.output
    # --config is read and the command line overrides it: T = 6 comes from the run file, n_sources = 4 from the
    # command line (with the default T = 8 it would divide)
    cfg = tmp_path / "run.toml"
    cfg.write_text("T = 6\nt_min = 1\nt_max = 2\n[ensemble]\nn_configs = 30\n")
    res = runner.invoke(app, ["--config", str(cfg), "--n-sources", "4"] + store, env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "n_sources = 4 must divide the time extent T = 6" in " ".join(res.output.split())
    res = runner.invoke(app, ["--config", str(tmp_path / "missing.toml")] + store)
    assert res.exit_code == 2 and "does not exist" in res.output
    assert not (tmp_path / "s.zarr").exists()
