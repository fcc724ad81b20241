"""End-to-end test of analysis.mass_dependence on a tiny Schwinger lattice (fixed seeds; pulls in sigma).

One module-scoped run (compile time dominates) feeds the statistical checks: the estimators of dO/dm agree
with each other (|pull| < 4, autocorrelation-aware errors), the flowed correlated difference beats
independent ensembles for the plaquette, and the connected-correlator cross-check agrees.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import corrflow as cf
from analysis import mass_dependence as md

# Cold start without thermalisation trajectories: the thermalisation program is a second HMC compilation (~20 s);
# a cold 6x4 lattice at beta = 2 relaxes within a few trajectories, and every estimator sees the same configurations.
TINY = dict(shape=(6, 4), beta=2.0, mass=0.2, dm=0.05, n_configs=60, n_chains=2, n_therm=0, start="cold", epochs=2,
            n_train=16, batch_size=16, n_sources=1, t_min=1, t_max=2, measure_batch=60, hmc_det="pseudofermion")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    d = tmp_path_factory.mktemp("md")
    s = md.MassSettings(store=str(d / "md.zarr"), out=str(d / "out"), **TINY)
    rec = md.run(s)
    return s, rec


def _der(rec, obs, est):
    e = rec["estimates"][obs]["derivative"][est]
    return e["value"], e["error"]


def test_record_shape_and_store(result):
    s, rec = result
    for k in ("title", "summary", "tables", "settings", "variance_reduction", "costs"):
        assert k in rec
    assert set(rec["variance_reduction"]) == set(md.OBSERVABLES)
    for v in rec["variance_reduction"].values():
        assert set(v) == {"vs_independent", "vs_direct", "cost_adjusted_vs_independent", "cost_adjusted_vs_direct"}
    tab = rec["tables"]["dO/dm by estimator"]
    assert len(tab["rows"]) == len(md.OBSERVABLES) * len(md.ESTIMATORS)
    assert all(len(r) == len(tab["columns"]) for r in tab["rows"])
    stored, figs = cf.open_store(s.store).read_analysis("mass_dependence")
    assert stored["estimates"] == rec["estimates"]
    assert figs["mass_dependence.png"][:8] == b"\x89PNG\r\n\x1a\n"
    from pathlib import Path

    out = Path(s.out)
    assert (out / "mass_dependence.png").stat().st_size > 10_000
    assert "mass_dependence.png" in (out / "mass_dependence.md").read_text()
    for k in ("hmc_base", "hmc_independent", "train", "flow", "direct", "path_flowed", "path_independent"):
        assert rec["costs"][k] is not None and rec["costs"][k] > 0


def test_estimators_agree(result):
    _, rec = result
    for obs, pulls in rec["pulls"].items():
        for name, p in pulls.items():
            if name == "direct-connected":  # paired and O(dm) apart by construction: a curvature, not noise
                continue
            assert p is None or abs(p) < 4, (obs, name, p)
    for obs in md.OBSERVABLES:
        for est in ("flowed", "direct", "independent"):
            v, e = _der(rec, obs, est)
            assert math.isfinite(v) and e > 0, (obs, est)


def test_errors_are_autocorrelation_aware(result):
    _, rec = result
    # the Gamma-method tau_int is reported (>= ~0.5) and the pion jackknife bins are >= 1 configuration
    for obs in ("plaquette", "condensate", "chi_top"):
        tau = rec["estimates"][obs]["derivative"]["flowed"]["tau_int"]
        assert tau is not None and tau > 0.3
    pj = rec["info"]["pion_jackknife"]
    assert pj["bin_size"] >= 1 and pj["n_bins"] >= md.MIN_BINS - 1


def test_flowed_beats_independent_for_plaquette(result):
    _, rec = result
    _, ef = _der(rec, "plaquette", "flowed")
    _, ei = _der(rec, "plaquette", "independent")
    assert ef < ei
    assert rec["variance_reduction"]["plaquette"]["vs_independent"] > 1


def test_connected_cross_check(result):
    _, rec = result
    vc, ec = _der(rec, "plaquette", "connected")
    assert math.isfinite(vc) and ec > 0
    p = rec["pulls"]["plaquette"]
    assert abs(p["flowed-connected"]) < 4 and abs(p["connected-independent"]) < 4
    # negative control: a wrong sign of dS/dm would put the connected estimate far from the flowed one
    vf, ef = _der(rec, "plaquette", "flowed")
    assert abs((-vc - vf) / math.hypot(ec, ef)) > abs((vc - vf) / math.hypot(ec, ef))


def test_condensate_and_slope_match_reference(result):
    """Sigma from the Schur complement equals chiral_condensate (dense D^{-1}); dSigma/dm equals a central
    difference.  Uses the measurement program compiled by the end-to-end run (same lattice and batch)."""
    from corrflow.observables.fermions import chiral_condensate

    s, _ = result
    th = cf.make_theory("schwinger", s.shape, beta=2.0, mass=0.3)
    u = cf.open_store(s.store).load_configs("schwinger_6x4_beta2_m0.2_seed0_pf", 0, [5, 40])
    m = md.measure(th, u, n_sources=s.n_sources, batch=s.measure_batch)
    np.testing.assert_allclose(m["condensate"], chiral_condensate(th, u), rtol=1e-10)
    h = 1e-5
    sp = md.measure(th.replace(mass=0.3 + h), u, n_sources=s.n_sources, batch=s.measure_batch)["condensate"]
    sm = md.measure(th.replace(mass=0.3 - h), u, n_sources=s.n_sources, batch=s.measure_batch)["condensate"]
    np.testing.assert_allclose(m["dcondensate_dm"], (sp - sm) / (2 * h), rtol=1e-6)
    assert np.all(np.diff(m["pion"], axis=-1)[:, : s.shape[0] // 2 - 1] < 0)  # C(t) falls towards T/2


@pytest.mark.parametrize("change, match", [
    (dict(observables=("plaquette", "pion_radius")), "unknown observable"),
    (dict(dm=0.0), "dm must be finite and non-zero"),
    (dict(theory="u1"), "needs dynamical fermions"),
    (dict(mass=-2.5), "kappa > 0"),
    (dict(t_max=5), "t_max"),
    (dict(n_sources=4), "must divide"),
])
def test_bad_input(tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        md.run(md.MassSettings(store=str(tmp_path / "x.zarr"), out=str(tmp_path / "o"), **{**TINY, **change}))
    assert not (tmp_path / "x.zarr").exists()  # rejected before anything is generated


def test_cli_help_and_errors(tmp_path):
    from typer.testing import CliRunner

    runner = CliRunner()
    res = runner.invoke(md.app, ["--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for opt in ("--store", "--L", "--T", "--beta", "--mass", "--dm", "--n-configs", "--seed", "--epochs", "--out",
                "--observables", "--hmc-det"):
        assert opt in res.output
    assert "data/mass_dependence.zarr" in res.output and "reports/mass_dependence" in res.output
    res = runner.invoke(md.app, ["--dm", "0", "--store", str(tmp_path / "s.zarr")], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "dm must be finite and non-zero" in res.output
    res = runner.invoke(md.app, ["--observables", "plaquette,foo", "--store", str(tmp_path / "s.zarr")],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "unknown observable" in res.output
