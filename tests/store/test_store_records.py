"""Analysis results in the store and their sections in `corrflow report` (no JAX work: fast)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from corrflow.cli import app
from corrflow.report import write_report
from corrflow.store import StoreError, open_store

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


def _record(title: str) -> dict:
    return {"title": title, "summary": ["The flowed estimator wins.", "- a bullet"],
            "tables": {"derivatives": {"columns": ["observable", "estimator", "value", "VR"],
                                       "rows": [["plaquette", "flowed", "0.123(4)", 12.5],
                                                ["plaquette", "independent", "0.12(2)", 1.0]]}},
            "settings": {"L": 8, "beta": 2.0}, "variance_reduction": {"definition": "VR vs X = var(X) / var(estimator)",
                                                                 "plaquette": {"flowed": {"vs_independent": 12.5}}},
            "costs": {"hmc_seconds": 1.5}, "nan_is_fine": float("nan")}


def test_write_read_replace_analysis(tmp_path):
    st = open_store(tmp_path / "s.zarr", "a")
    assert st.analyses() == []
    st.write_analysis("mass_dependence", _record("Mass dependence"), figures={"fig.png": PNG})
    rec, figs = st.read_analysis("mass_dependence")
    assert rec["title"] == "Mass dependence" and np.isnan(rec["nan_is_fine"]) and figs == {"fig.png": PNG}
    st.write_analysis("mass_dependence", {"title": "again"})  # replaces, figures included
    assert st.read_analysis("mass_dependence") == ({"title": "again"}, {})
    assert st.ensembles() == [] and st.analyses() == ["mass_dependence"]  # not mistaken for an ensemble
    ro = open_store(tmp_path / "s.zarr", "r")
    with pytest.raises(StoreError, match="read-only"):
        ro.write_analysis("x", {})
    with pytest.raises(StoreError, match="no analysis result 'nope'.*mass_dependence"):
        ro.read_analysis("nope")
    with pytest.raises(StoreError, match="not JSON-serialisable"):
        st.write_analysis("bad", {"x": object()})
    with pytest.raises(StoreError, match="invalid"):
        st.write_analysis("bad/name", {})
    with pytest.raises(StoreError, match="invalid ensemble name"):  # the analyses group can never clash
        st.create_ensemble("_analyses", None)  # type: ignore[arg-type]


def test_report_renders_analysis_sections(tmp_path):
    st = open_store(tmp_path / "s.zarr", "a")
    st.write_analysis("feynman_hellmann", _record("Feynman–Hellmann"), figures={"eff.png": PNG})
    st.write_analysis("continuum_limit", _record("Continuum limit"), figures={"cl.png": PNG})
    path = write_report(st, None, [], tmp_path / "rep")
    text = path.read_text()
    assert "## Continuum limit" in text and "## Feynman–Hellmann" in text
    assert "| plaquette | flowed | 0.123(4) | 12.5 |" in text
    assert (tmp_path / "rep" / "continuum_limit_cl.png").read_bytes() == PNG
    only = write_report(st, None, [], tmp_path / "rep2", analyses=["continuum_limit"]).read_text()
    assert "Continuum limit" in only and "Feynman" not in only


def test_report_cli_analysis_only_and_errors(tmp_path):
    store = tmp_path / "s.zarr"
    st = open_store(store, "a")
    res = runner.invoke(app, ["report", "--store", str(store), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "no store at" in res.output  # opening for writing creates nothing by itself
    st.materialise()
    res = runner.invoke(app, ["report", "--store", str(store), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "nothing to report" in res.output
    st.write_analysis("mass_dependence", _record("Mass dependence"), figures={"f.png": PNG})
    res = runner.invoke(app, ["report", "--store", str(store), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert "Mass dependence" in (tmp_path / "r" / "report.md").read_text()
    res = runner.invoke(app, ["report", "--store", str(store), "ens_a"])
    assert res.exit_code == 2 and "without --base" in res.output
    res = runner.invoke(app, ["report", "--store", str(store), "--out", str(tmp_path / "r2"), "--tau-exp", "5"])
    assert res.exit_code == 2 and "--tau-exp applies to the comparison with --base" in res.output
    assert not (tmp_path / "r2").exists()
