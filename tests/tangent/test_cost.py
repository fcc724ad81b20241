"""What a configuration costs: `corrflow generate` records the steady-state generation cost in the commit record
(summed over resumed runs, unknown once a run did not record it), and `corrflow derivative` sets the cost of its
terms and fit against it -- the variance reduction at equal cost."""

import json
import shutil

import numpy as np
from typer.testing import CliRunner

from corrflow import HMCConfig, make_theory, open_store
from corrflow.cli import app
from corrflow.pipeline import generate_to_store
from corrflow.pipeline.tangent import derivative_from_store
from corrflow.store.checkpoints import read_checkpoint, write_checkpoint

ENSEMBLE = "u1_8x8_beta2"  # as in conftest.py


def test_generation_cost_is_recorded_summed_and_dropped_when_unknown(tmp_path):
    th = make_theory("u1", (4, 4), beta=2.0)
    store = open_store(tmp_path / "s.zarr", "a")
    run = dict(n_chains=2, n_therm=4, block_size=4)
    generate_to_store(store, "e", th, HMCConfig(0.25, 4), n_traj=8, **run)
    first = store.commit("e")["cost_s"]
    assert np.isfinite(first) and first > 0
    generate_to_store(store, "e", th, HMCConfig(0.25, 4), n_traj=16, resume=True, **run)
    second = store.commit("e")["cost_s"]
    assert second > first  # the extension adds its own seconds
    assert store.info("e")["cost_s"] == second
    shown = CliRunner().invoke(app, ["info", str(tmp_path / "s.zarr"), "e"])
    text = " ".join(shown.output.split())
    assert shown.exit_code == 0 and f"generation cost {second / 32:.3g} s per configuration" in text
    assert f"{second / 32 * (4 + 16) / 16:.3g} s with the thermalisation" in text  # n_therm 4, 16 per chain
    # a block appended without a cost (an older corrflow, an import) makes the total unknown, and it stays unknown
    with store.writer("e") as w:
        w.append([100], np.zeros((2, 1, 4, 4, 2)), {k: np.zeros((2, 1)) for k in w._per_traj_vars()}, 101)
    assert "cost_s" not in store.commit("e")
    generate_to_store(store, "e", th, HMCConfig(0.25, 4), n_traj=21, resume=True, **run)
    assert store.commit("e")["committed"] == 21 and "cost_s" not in store.commit("e")
    assert store.info("e")["cost_s"] is None
    assert "generation cost not recorded" in CliRunner().invoke(app, ["info", str(tmp_path / "s.zarr"), "e"]).output


def test_derivative_reports_the_reduction_at_equal_cost(u1_store, tmp_path):
    st = open_store(u1_store, "r")
    res = derivative_from_store(st, u1_store, ENSEMBLE, "beta", ["plaquette"], batch=1000, out=tmp_path / "ck", thin=2)
    c = res.cost
    info = st.info(ENSEMBLE)
    n_cfg = info["committed"] * res.n_chains
    production = info["cost_s"] / n_cfg  # the ledger's charge adds the thermalisation at the production rate
    charged = production * (info["n_therm"] + info["committed"] * info["thin"]) / (info["committed"] * info["thin"])
    assert info["n_therm"] > 0 and charged > production
    assert np.isclose(c["generation_s"], 2 * charged)  # every 2nd configuration used: twice the generation cost
    assert c["terms_s"] > 0 and c["fit_s"] >= 0
    adj = res.cost_adjusted()
    g, t = c["generation_s"], c["terms_s"] + c["fit_s"]
    assert np.isclose(adj["plaquette"], res.result.reduction["plaquette"] * g / (g + t))
    out = json.loads(json.dumps(res.as_dict(), default=float))
    assert out["variance_reduction"]["plaquette"]["tangent"]["cost_adjusted_vs_connected"] == adj["plaquette"]
    assert out["variance_reduction"]["plaquette"]["connected"]["cost_adjusted_vs_connected"] == 1.0
    assert out["cost_per_configuration"]["terms_s"] == c["terms_s"]
    # a repeated run computes no terms: their cost comes from the terms checkpoint
    again = derivative_from_store(st, u1_store, ENSEMBLE, "beta", ["plaquette"], batch=1000, out=tmp_path / "ck",
                                  thin=2)
    assert again.terms_resumed == again.n_chains * again.n_traj and again.cost["terms_s"] == c["terms_s"]
    # terms saved by an older corrflow (no cost in the checkpoint): unknown, said so, not guessed
    meta, arrays = read_checkpoint(tmp_path / "ck" / "terms")
    meta.pop("cost_s")
    write_checkpoint(tmp_path / "ck" / "terms", meta, arrays)
    args = ["derivative", "--store", str(u1_store), ENSEMBLE, "--obs", "plaquette", "--batch", "1000", "--thin", "2",
            "--out", str(tmp_path / "ck")]
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0, text.output
    assert "tangent terms unknown (terms read from a checkpoint written without their cost)" in " ".join(
        text.output.split())


def test_unrecorded_generation_cost_is_said_not_guessed(u1_store, tmp_path):
    copy = tmp_path / "old.zarr"
    shutil.copytree(u1_store, copy)
    st = open_store(copy, "a")
    with st.writer(ENSEMBLE) as w:  # an ensemble from before corrflow recorded costs
        rec = w.commit_record
        rec.pop("cost_s")
        w.group.attrs["corrflow_commit"] = rec
    args = ["derivative", "--store", str(copy), ENSEMBLE, "--obs", "plaquette", "--batch", "1000", "--thin", "2",
            "--out", str(tmp_path / "ck")]
    res = CliRunner().invoke(app, args + ["--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["cost_per_configuration"]["generation_s"] is None
    assert all(e["cost_adjusted_vs_connected"] is None for e in out["variance_reduction"]["plaquette"].values())
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0, text.output
    assert "generation cost is not recorded" in " ".join(text.output.split())


def test_fit_targets_share_their_terms_in_the_default_checkpoints(u1_store):
    """Without --out, --fit observable after --fit field reads the per-configuration terms (the cost) instead of
    computing them again; each target keeps its own coefficients."""
    st = open_store(u1_store, "r")
    home = u1_store.parent / f"{u1_store.name.split('.')[0]}_tangent"
    had = home.exists()
    try:
        field = derivative_from_store(st, u1_store, ENSEMBLE, "beta", ["plaquette"], batch=1000, thin=8,
                                      held_out=0.3)
        per_obs = derivative_from_store(st, u1_store, ENSEMBLE, "beta", ["plaquette"], batch=1000, thin=8,
                                        held_out=0.3, target="observable")
        assert field.terms_resumed == 0 and per_obs.terms_resumed == per_obs.n_chains * per_obs.n_traj
        assert per_obs.checkpoint != field.checkpoint and per_obs.result.target == "observable"
        a, b = (r.result.estimates["plaquette"]["connected"] for r in (per_obs, field))
        assert (a.value, a.error) == (b.value, b.error)  # the same terms
    finally:
        if not had:
            shutil.rmtree(home, ignore_errors=True)
