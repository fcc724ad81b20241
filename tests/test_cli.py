"""The corrflow command line: help texts, summary and errors (kill -9 / resume at every phase: tests/store)."""

import pytest
from typer.testing import CliRunner

from corrflow.cli import app
from corrflow.store import open_store

runner = CliRunner()


@pytest.mark.parametrize("command", ["generate", "info", "measure", "verify", "summary", "export-ildg", "import-ildg"])
def test_every_command_has_help_with_examples(command):
    res = runner.invoke(app, [command, "--help"])
    assert res.exit_code == 0
    assert "Example" in res.output


def test_generate_measure_summary_roundtrip(tmp_path):
    store = tmp_path / "s.zarr"
    res = runner.invoke(app, ["generate", "u1", "--beta", "1.5", "--shape", "6,6", "--n", "400", "--chains", "2",
                              "--therm", "50", "--store", str(store), "--observables", "topological_charge"])
    assert res.exit_code == 0, res.output
    assert "done u1_6x6_beta1.5" in res.output
    res = runner.invoke(app, ["measure", str(store), "u1_6x6_beta1.5", "wilson_2x1", "plaquette"])
    assert res.exit_code == 0, res.output
    assert "plaquette: recorded during generation" in res.output
    res = runner.invoke(app, ["summary", str(store), "u1_6x6_beta1.5"])
    assert res.exit_code == 0, res.output
    assert "wilson_2x1" in res.output and "chi_top" in res.output
    # the pulls printed are those of corrflow.summary (checked against exact values there)
    from corrflow.summary import ensemble_summary

    rows = {r.observable: r for r in ensemble_summary(open_store(store), "u1_6x6_beta1.5")}
    for obs in ("plaquette", "wilson_2x1", "chi_top"):
        assert rows[obs].exact is not None and abs(rows[obs].pull) < 4, rows[obs]
    res = runner.invoke(app, ["info", str(store), "u1_6x6_beta1.5"])
    assert res.exit_code == 0 and "2 x 400" in res.output


@pytest.mark.parametrize(
    "args,match",
    [
        (["generate", "o3", "--beta", "1", "--shape", "4,4", "--n", "10"], "unknown theory"),
        (["generate", "u1", "--beta", "1", "--shape", "4", "--n", "10"], "malformed --shape"),
        (["generate", "u1", "--beta", "1", "--shape", "4,4", "--n", "-5"], "--n must be >= 1"),
        (["generate", "u1", "--beta", "1", "--shape", "4,4", "--n", "10", "--integrator", "rk4"], "unknown integrator"),
        (["generate", "u1", "--beta", "1", "--shape", "4,4", "--n", "10", "--observables", "bogus"], "unknown observable"),
        (["generate", "su3", "--beta", "1", "--shape", "4,4", "--n", "10", "--observables", "topological_charge"],
         "2D U\\(1\\) only"),
    ],
)
def test_cli_bad_input_exit_2(tmp_path, args, match):
    res = runner.invoke(app, args + ["--store", str(tmp_path / "s.zarr")])
    assert res.exit_code == 2
    assert __import__("re").search(match, res.output.replace("\n", " ")), res.output


def test_bad_environment_setting_refused_before_the_store_is_touched(tmp_path, monkeypatch):
    """CORRFLOW_PALLAS is read when programs are traced; a bad value is refused up front (one line, exit 2), so
    no empty ensemble is left behind."""
    monkeypatch.setenv("CORRFLOW_PALLAS", "sometimes")
    store = tmp_path / "s.zarr"
    res = runner.invoke(app, ["generate", "su3", "--beta", "6", "--shape", "2,2,2,2", "--n", "2", "--store", str(store)])
    assert res.exit_code == 2
    assert "CORRFLOW_PALLAS='sometimes'" in res.output and "Traceback" not in res.output
    assert not store.exists()
