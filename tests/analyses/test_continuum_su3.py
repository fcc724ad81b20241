"""analysis.continuum_limit.su3 (``corrflow analyse continuum-limit-su3``, ``python -m analysis.continuum_limit --theory su3``): the Necco–Sommer abscissa against
published r0/a, the flow-scale quantities against closed forms, and one end-to-end run on 4^4 lattices
(module fixture; compilation dominates its cost; on 4^4 the flow curves saturate early, so the test uses the
reference values t^2 E = W = 0.03 instead of 0.3) checked statistically: per beta, the flowed estimate of
sqrt(t0)/w0 must agree with the independent ensemble's within 4 sigma (combined error).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from typer.testing import CliRunner

from analysis import continuum_limit as cl
from analysis.continuum_limit import su3 as cs
from corrflow.pipeline.analysis import app as analysis_app

APP = analysis_app(cl.CONTINUUM_LIMIT_SU3)


def test_necco_sommer_matches_published_r0():
    """r0/a of the Wilson action: Guagnelli, Sommer, Wittig, Nucl. Phys. B535 (1998) 389, Table 1 (the data the
    Necco–Sommer interpolation was fitted to, stated accuracy 0.5 % below beta = 6.57)."""
    published = {6.0: (5.368, 0.022), 6.2: (7.380, 0.026), 6.4: (9.740, 0.050)}
    for beta, (r0, err) in published.items():
        got = cs.necco_sommer_r0(beta)
        assert abs(got - r0) < 4 * math.hypot(err, 0.005 * r0), (beta, got, r0)
    # monotone (finer lattices at larger beta) and vectorised
    r = cs.necco_sommer_r0(np.array([5.7, 6.0, 6.5]))
    assert r.shape == (3,) and np.all(np.diff(r) > 0)
    assert cs.necco_sommer_r0(5.8) != pytest.approx(cs.necco_sommer_r0(5.9), rel=0.05)


@pytest.mark.parametrize("a,b", [(0.2, 0.05), (0.1, 0.12)])
def test_flow_quantities_closed_form(a, b):
    """t^2 E = a t + b t^2: t0 and w0^2 solve quadratics; the grid interpolation must reproduce them (cubic
    interpolation and central differences are exact for quadratics)."""
    t = np.arange(0, 81) * 0.05
    e = np.concatenate([[0.0], a / t[1:] + b])  # E(0) does not enter: t^2 E = 0 there
    t0 = (-a + math.sqrt(a * a + 4 * b * 0.3)) / (2 * b)
    w0sq = (-a + math.sqrt(a * a + 8 * b * 0.3)) / (4 * b)
    assert cs.flow_quantity("t0", t, e, 6.0) == pytest.approx(t0, rel=1e-9)
    assert cs.flow_quantity("w0", t, e, 6.0) == pytest.approx(math.sqrt(w0sq), rel=1e-9)
    assert cs.flow_quantity("sqrt_t0_over_w0", t, e, 6.0) == pytest.approx(math.sqrt(t0 / w0sq), rel=1e-9)
    assert cs.flow_quantity("t0_over_r0sq", t, e, 6.0) == pytest.approx(t0 / 5.3678**2, rel=1e-4)
    # another reference value moves the crossing
    t0_02 = (-a + math.sqrt(a * a + 4 * b * 0.2)) / (2 * b)
    assert cs.flow_quantity("t0", t, e, 6.0, t0_ref=0.2) == pytest.approx(t0_02, rel=1e-9)
    with pytest.raises(ValueError, match="unknown quantity"):
        cs.flow_quantity("r0", t, e, 6.0)
    with pytest.raises(ValueError, match="never reaches"):
        cs.flow_quantity("t0", t[:5], e[:5], 6.0)


def test_settings_bad_input(tmp_path):
    ok = dict(store=str(tmp_path / "s.zarr"))
    cases = [({"L": 5}, "even"), ({"betas": (6.0,)}, "at least 2"), ({"quantity": "r0"}, "unknown quantity"),
             ({"algorithm": "metropolis"}, "algorithm"), ({"flow_every": 0.03}, "multiple of flow_eps"),
             ({"definition": "wilson"}, "clover"), ({"n_configs": 10}, ">= 20"),
             ({"order": 3}, "needs at least 4 betas"), ({"optimizer": "sgd"}, "unknown optimizer 'sgd'"),
             ({"degree": -1}, "degree")]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            cs.SU3ContinuumSettings.make(**ok, **kw)
    s = cs.SU3ContinuumSettings.make(**ok)
    # automatic flow length: 1.6 x the t0 that r0/a(5.8) and t0/r0^2 ~ 0.11 suggest, on the grid
    assert s.wilson_flow_grid().t_max == pytest.approx(0.1 * math.ceil(16 * 0.11 * cs.necco_sommer_r0(5.8) ** 2))
    assert s.wilson_flow_grid().at_least  # a minimum: a longer grid already stored is kept
    assert not cs.SU3ContinuumSettings.make(**ok, flow_t_max=2.0).wilson_flow_grid().at_least
    # the estimates use the flow times every ensemble has (the automatic t_max keeps longer stored grids)
    np.testing.assert_array_equal(cs._common_flow_times([np.arange(9) * 0.1, np.arange(6) * 0.1]), np.arange(6) * 0.1)
    with pytest.raises(ValueError, match="different flow-time grids"):
        cs._common_flow_times([np.arange(9) * 0.1, np.arange(6) * 0.2])
    assert s.betas == (5.7, 5.75, 5.8) and s.base_beta == 5.7


@pytest.fixture(scope="module")
def su3_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cl_su3")
    s = cs.SU3ContinuumSettings.make(store=str(tmp / "cl.zarr"), out=str(tmp / "out"), betas=(5.8, 5.85, 5.9), T=4, L=4,
                                n_configs=24, n_chains=2, n_therm=12, n_overrelax=2, n_train=16, epochs=2,
                                batch_size=8, sweeps=1, learning_rate=0.002, t0_ref=0.03, w0_ref=0.03,
                                flow_every=0.02, flow_eps=0.02)
    rec = cl.run(s)
    return s, rec


def test_flowed_agrees_with_independent(su3_run, assert_vr_shape):
    s, rec = su3_run
    r = rec["results"]
    pulls = np.array(r["pulls_flowed_vs_independent"][1:], float)
    assert np.all(np.isfinite(pulls)) and np.all(np.abs(pulls) < 4), pulls
    # the scales themselves: flowed vs independent t0 within 4 sigma, t0 grows with beta (finer lattices)
    t0 = r["scales"]["t0"]
    for k in range(1, len(s.betas)):
        d = t0["flowed"][k] - t0["independent"][k]
        assert abs(d) < 4 * math.hypot(t0["flowed_errors"][k], t0["independent_errors"][k]), (k, d)
    assert t0["independent"][-1] > t0["independent"][0]
    f = r["flowed"]
    assert all(e > 0 for e in f["errors"]) and f["dof"] == 1 and np.isfinite(f["continuum_error"])
    assert 0 < min(f["weight_ess"][1:]) and f["weight_ess"][0] == 1.0
    cov = np.array(f["cov"])
    assert np.allclose(cov, cov.T) and np.all(np.linalg.eigvalsh(cov) > -1e-12)
    assert_vr_shape(rec["variance_reduction"])
    assert rec["variance_reduction"][s.quantity]["flowed"]["vs_independent"] > 0


def test_record_report_and_rerun(su3_run, tmp_path):
    import dataclasses

    from corrflow.report import write_report
    from corrflow.store import open_store

    s, rec = su3_run
    store = open_store(s.io.store)
    stored, figs = store.read_analysis(cs.ANALYSIS_NAME)
    assert stored["title"] == rec["title"] and figs[f"{cs.ANALYSIS_NAME}.png"][:4] == b"\x89PNG"
    for key in ("base", "training_chain", "train", "flow", "independent", "wilson_flow_base", "wilson_flow_flowed"):
        assert rec["costs"][key] > 0, key
    # corrflow report renders the 4D record
    path = write_report(store, None, [], tmp_path / "report")
    text = path.read_text()
    assert "quenched 4D SU(3)" in text and "sqrt(t0)/w0" in text
    from corrflow.markdown import html_outside_code

    assert html_outside_code(text) == []
    # a rerun regenerates nothing and reproduces the estimates
    before = {n: store.commit(n)["committed"] for n in store.ensembles()}
    again = cl.run(dataclasses.replace(s), write=False)
    assert {n: store.commit(n)["committed"] for n in store.ensembles()} == before
    assert again["results"]["flowed"]["values"] == rec["results"]["flowed"]["values"]
    for key in ("wilson_flow_base", "wilson_flow_flowed", "wilson_flow_independent", "train"):
        assert again["costs"][key] == pytest.approx(rec["costs"][key]), key  # from the ledger, not re-timed
    # another flow-time grid on the same store is refused before anything is computed
    with pytest.raises(ValueError, match="flow-time grid"):
        cl.run(dataclasses.replace(s, flow_every=0.04), write=False)
    # the measurement step of a rerun with other reference values (automatic flow_t_max): a shorter automatic grid
    # keeps the stored one; a longer one is refused naming the analysis' own options
    from corrflow.pipeline import measure_stored

    names = [rec["ensembles"]["base"], *rec["ensembles"]["flowed"], *rec["ensembles"]["independent"]]
    lower = dataclasses.replace(s, t0_ref=0.02, w0_ref=0.02)
    assert lower.wilson_flow_grid().t_max < s.wilson_flow_grid().t_max
    rw = open_store(s.io.store, "a")
    for name in names:
        assert measure_stored(rw, name, ["wilson_flow"], flow=lower.wilson_flow_grid()).measured == {}, name
    higher = dataclasses.replace(s, t0_ref=0.05, w0_ref=0.05)
    t_stored = s.wilson_flow_grid().t_max
    with pytest.raises(ValueError, match=rf"these settings need at least t = 0 \.\. \S+ every 0\.02: rerun with "
                       rf"--flow-t-max {t_stored:g} --flow-every 0\.02 \(the stored grid\)"):
        measure_stored(rw, names[0], ["wilson_flow"], flow=higher.wilson_flow_grid())


def test_cli_dispatch_and_help(tmp_path, capsys):
    from analysis.continuum_limit import __main__ as entry

    assert entry.split_theory(["--theory", "su3", "--L", "4"]) == ("su3", ["--L", "4"])
    assert entry.split_theory(["--theory=su3"]) == ("su3", [])
    assert entry.split_theory(["--L", "8"]) == ("u1", ["--L", "8"])
    runner = CliRunner()
    res = runner.invoke(APP, ["--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    for opt in ("--betas", "--T", "--L", "--algorithm", "--t0-ref", "--w0-ref", "--flow-t-max", "--quantity",
                "--order", "--epochs"):
        assert opt in text, opt
    res = runner.invoke(APP, ["--betas", "6", "--store", str(tmp_path / "x.zarr")])
    assert res.exit_code == 2 and "at least 2" in " ".join(res.output.split())
    with pytest.raises(SystemExit) as exc:
        entry.main(["--theory", "su4"])
    assert exc.value.code == 2 and "unknown --theory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        entry.main(["--theory", "su3", "--help"])
    assert exc.value.code == 0
    assert "--theory" in capsys.readouterr().out  # the switch is listed (it was accepted but not in the help)
    with pytest.raises(SystemExit) as exc:
        entry.main(["--help"])
    assert exc.value.code == 0 and "--theory" in capsys.readouterr().out
