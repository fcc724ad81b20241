"""Heat-bath ensembles through the store and the CLI: resumable bit for bit, validated before the store is
touched, and measurable with the Wilson flow (``corrflow measure ... wilson_flow`` + ``corrflow scales``)."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

import corrflow  # noqa: F401  (x64)
from corrflow.cli import app
from corrflow.store import open_store

runner = CliRunner()
ARGS = ["generate", "su3", "--algorithm", "heatbath", "--overrelax", "2", "--beta", "5.7", "--shape", "4,4,4,4",
        "--chains", "2", "--therm", "0", "--start", "cold", "--block", "4", "--name", "hb"]


def test_heatbath_generate_resume_bitwise_measure_and_scales(tmp_path):
    full, split = tmp_path / "full.zarr", tmp_path / "split.zarr"
    res = runner.invoke(app, ARGS + ["--n", "12", "--store", str(full)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ARGS + ["--n", "4", "--store", str(split)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ARGS + ["--n", "12", "--store", str(split), "--resume"])
    assert res.exit_code == 0, res.output
    a, b = open_store(full), open_store(split)
    np.testing.assert_array_equal(np.asarray(a.open_ensemble("hb")["links"]),
                                  np.asarray(b.open_ensemble("hb")["links"]))
    spec = a.spec("hb")
    assert spec.hmc["algorithm"] == "heatbath" and spec.hmc["n_overrelax"] == 2
    ds = a.open_ensemble("hb")
    assert bool(np.all(ds["accepted"].values)) and 0.5 < float(ds["plaquette"].mean()) < 0.8
    # a different algorithm setting is a different recipe: refused on resume
    res = runner.invoke(app, ARGS[:5] + ["3"] + ARGS[6:] + ["--n", "16", "--store", str(full), "--resume"])
    assert res.exit_code == 2 and "different settings" in res.output
    # Wilson flow measurement and scales from the CLI
    res = runner.invoke(app, ["measure", str(full), "hb", "wilson_flow", "--flow-t-max", "0.5", "--flow-eps", "0.05"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["scales", str(full), "hb", "--t0-ref", "0.03", "--w0-ref", "0.03"])
    assert res.exit_code == 0, res.output
    assert "t0/a^2" in res.output and "sqrt(t0)/w0" in res.output and "flow step 0.05" in res.output
    res = runner.invoke(app, ["scales", str(full), "hb"])  # 0.3 is out of reach on 4^4 at t <= 0.5
    assert res.exit_code == 2 and "never reaches" in res.output
    # a longer flow replaces the stored one from the CLI; `info` says how the configurations were made
    res = runner.invoke(app, ["measure", str(full), "hb", "wilson_flow", "--flow-t-max", "0.6", "--flow-eps", "0.05"])
    assert res.exit_code == 2 and "--replace" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["measure", str(full), "hb", "wilson_flow", "--flow-t-max", "0.6", "--flow-eps", "0.05",
                              "--replace"])
    assert res.exit_code == 0 and "flow_E_clov +12" in res.output, res.output
    res = runner.invoke(app, ["info", str(full), "hb"], terminal_width=200)
    assert res.exit_code == 0 and "heatbath" in res.output
    assert "heat bath: 1 Cabibbo-Marinari sweep(s) + 2" in res.output
    assert "flow_E_clov (12 measured, flow_eps 0.05)" in " ".join(res.output.split())  # how E(t) was integrated


def test_heatbath_refuses_u1_and_fermions_before_touching_the_store(tmp_path):
    st = tmp_path / "s.zarr"
    res = runner.invoke(app, ["generate", "u1", "--algorithm", "heatbath", "--beta", "1", "--shape", "4,4", "--n", "2",
                              "--store", str(st)])
    assert res.exit_code == 2 and "U(1)" in res.output
    assert not st.exists() or open_store(st).ensembles() == []
    res = runner.invoke(app, ["generate", "su3", "--algorithm", "metropolis", "--beta", "1", "--shape", "4,4",
                              "--n", "2", "--store", str(st)])
    assert res.exit_code == 2 and "--algorithm" in res.output
