"""The settings model (corrflow.pipeline.settings) and its command-line adapter (corrflow.pipeline.cli)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from corrflow.pipeline import (
    AnalysisSettings,
    EnsembleSettings,
    FlowSettings,
    MarkovSettings,
    StoreSettings,
    TrainingSettings,
    setting,
)


@dataclass(frozen=True)
class ToySettings(AnalysisSettings):
    """A small analysis: two groups with their own defaults and three fields of its own."""

    name: ClassVar[str] = "toy"
    cli_hidden: ClassVar[frozenset[str]] = frozenset({"start"})
    cli_overrides: ClassVar[dict[str, dict[str, str]]] = {"step_size": {"flag": "--eps", "help": "MD step"}}

    io: StoreSettings = setting(StoreSettings(store="data/toy.zarr", out="reports/toy"), "")
    ensemble: EnsembleSettings = setting(EnsembleSettings(n_configs=40), "")
    markov: MarkovSettings = setting(MarkovSettings(step_size=0.1), "")
    betas: tuple[float, ...] = setting((2.0, 2.2), "couplings")
    L: int = setting(8, "extent", flag="--L")
    bayes: bool = setting(True, "Bayesian fits")

    def check(self) -> None:
        if len(self.betas) < 2:
            raise ValueError(f"need at least 2 betas, got {self.betas}")


def test_groups_validate_on_construction():
    cases = [(lambda: EnsembleSettings(n_configs=5), ">= 10"), (lambda: EnsembleSettings(n_chains=0), "n_chains"),
             (lambda: EnsembleSettings(start="warm"), "unknown start 'warm'; allowed: hot, cold"),
             (lambda: MarkovSettings(step_size=-0.1), "step_size must be positive"),
             (lambda: MarkovSettings(algorithm="metropolis"), "unknown algorithm"),
             (lambda: FlowSettings(loops=("hexagon",)), "unknown flow loop shape"),
             (lambda: FlowSettings(degree=-1), "degree"),
             (lambda: TrainingSettings(optimizer="sgd"), "unknown optimizer 'sgd'"),
             (lambda: TrainingSettings(n_train=1), "n_train"), (lambda: TrainingSettings(stream="maybe"), "stream"),
             (lambda: StoreSettings(store=""), "store")]
    for make, msg in cases:
        with pytest.raises(ValueError, match=msg):
            make()


def test_flat_names_route_to_their_group():
    s = ToySettings.make(n_configs=60, step_size=0.2, L=12, betas="2,2.3,2.6")
    assert s.ensemble.n_configs == 60 and s.markov.step_size == 0.2 and s.L == 12
    assert s.betas == (2.0, 2.3, 2.6) and s.get("n_configs") == 60
    assert s.replace(thin=3).ensemble.thin == 3 and s.ensemble.thin == 1  # frozen: a copy
    with pytest.raises(ValueError, match="did you mean 'n_configs'"):
        s.replace(n_confgs=3)
    with pytest.raises(ValueError, match="must be an integer"):
        s.replace(L="twelve")
    with pytest.raises(ValueError, match="setting 'betas' must be a comma-separated list of numbers; 'x' is not one"):
        s.replace(betas="2,x")
    with pytest.raises(ValueError, match="at least 2 betas"):  # the analysis's own check runs on every copy
        s.replace(betas=(2.0,))
    assert ToySettings().markov.step_size == 0.1  # analysis defaults of a group


def test_toml_and_dict_round_trip(tmp_path):
    s = ToySettings.make(n_configs=60, betas=(1.0, 1.5), bayes=False, store=str(tmp_path / "t.zarr"))
    assert ToySettings.from_dict(s.to_dict()) == s
    path = tmp_path / "run.toml"
    path.write_text(s.to_toml({"analysis": "toy"}))
    text = path.read_text()
    assert "[ensemble]" in text and "start" not in text  # fixed settings are not written
    assert ToySettings.from_toml(path) == s
    flat = tmp_path / "flat.toml"
    flat.write_text('n_configs = 80\nL = 4\n[markov]\nn_steps = 7\n')
    f = ToySettings.from_toml(flat)
    assert (f.ensemble.n_configs, f.L, f.markov.n_steps) == (80, 4, 7)
    bad = {"unknown.toml": ('[ensemble]\nn_config = 3\n', "unknown setting 'n_config' in \\[ensemble\\]"),
           "fixed.toml": ('start = "cold"\n', "start is fixed to 'hot'"),
           "broken.toml": ('n_configs = \n', "not valid TOML"),
           "type.toml": ('L = "x"\n', "must be an integer")}
    for name, (content, msg) in bad.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(ValueError, match=msg):
            ToySettings.from_toml(tmp_path / name)
    with pytest.raises(ValueError, match="does not exist"):
        ToySettings.from_toml(tmp_path / "missing.toml")
    # the fixed value itself is accepted (a record's settings hold it)
    assert ToySettings.from_dict({"ensemble": {"start": "hot"}}) == ToySettings()


def _app(seen: list):
    import typer

    from corrflow.pipeline.cli import settings_command

    app = typer.Typer(add_completion=False)
    settings_command(app, ToySettings, lambda s, console: seen.append(s), name="toy", help="A toy analysis.")
    return app


def test_cli_options_config_and_precedence(tmp_path):
    seen: list[ToySettings] = []
    app, runner = _app(seen), CliRunner()
    res = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    text = " ".join(res.output.split())
    assert res.exit_code == 0
    for opt in ("--config", "--store", "--n-configs", "--chains", "--therm", "--eps", "--L", "--betas", "--bayes",
                "--no-bayes"):
        assert opt in text, opt
    assert "--start" not in text and "--step-size" not in text and "data/toy.zarr" in text
    assert runner.invoke(app, []).exit_code == 0 and seen[-1] == ToySettings()
    res = runner.invoke(app, ["--n-configs", "50", "--eps", "0.3", "--betas", "1,2,3", "--no-bayes"])
    assert res.exit_code == 0, res.output
    assert seen[-1] == ToySettings.make(n_configs=50, step_size=0.3, betas=(1.0, 2.0, 3.0), bayes=False)
    # run file < command line; options not given keep the run file's values
    cfg = tmp_path / "run.toml"
    cfg.write_text('L = 4\n[ensemble]\nn_configs = 70\nthin = 2\n')
    assert runner.invoke(app, ["--config", str(cfg), "--n-configs", "90"]).exit_code == 0
    assert (seen[-1].L, seen[-1].ensemble.n_configs, seen[-1].ensemble.thin) == (4, 90, 2)
    # bad input: one line, exit 2, no traceback, nothing run
    n = len(seen)
    for args, msg in ((["--n-configs", "3"], ">= 10"), (["--betas", "2"], "at least 2 betas"),
                      (["--config", str(tmp_path / "nope.toml")], "does not exist")):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and msg in " ".join(res.output.split()) and "Traceback" not in res.output, args
    assert len(seen) == n


def test_cli_accepts_the_corrflow_spelling_of_a_setting():
    """An option the ``corrflow`` commands spell otherwise (``generate --n``, ``--block``, ``--fermion-det``,
    ``--overrelax``) is accepted under that name too; an override of the flag keeps its own name only once."""
    seen: list[ToySettings] = []
    app, runner = _app(seen), CliRunner()
    text = " ".join(runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output.split())
    assert "(also --n)" in text and "(also --block)" in text and "(also --fermion-det)" in text  # (hidden options:
    assert "--n-configs,--n" not in text  # the option column keeps its width, the help fits 80 columns)
    res = runner.invoke(app, ["--n", "50", "--block", "5", "--fermion-det", "pseudofermion", "--overrelax", "2"])
    assert res.exit_code == 0, res.output
    assert seen[-1] == ToySettings.make(n_configs=50, block_size=5, hmc_det="pseudofermion", n_overrelax=2)
    res = runner.invoke(app, ["--n", "3"])  # the same checks under either name
    assert res.exit_code == 2 and ">= 10" in res.output
    assert runner.invoke(app, ["--n", "50", "--n-configs", "50"]).exit_code == 0  # the same value twice: fine
    res = runner.invoke(app, ["--n", "50", "--n-configs", "60"])
    assert res.exit_code == 2 and "give n_configs two values" in res.output


def test_flow_and_training_groups():
    import corrflow as cf

    u1 = cf.make_theory("u1", (8, 8), beta=2.0)
    su3 = cf.make_theory("su3", (4, 4, 4, 4), beta=5.7)
    auto = FlowSettings()  # flow_kind auto, the default
    assert auto.flow_kind == "auto"
    assert auto.resolved_kind("u1", (8, 8)) == "plaquette" and auto.resolved_kind("su3", (4, 4, 4, 4)) == "residual"
    assert auto.make(u1).kind == "plaquette" and auto.make(u1).n_sweeps == 1
    assert FlowSettings().make(su3).n_sweeps == 2  # sweeps 0: two residual sweeps
    assert auto.describe("u1", (8, 8)) == "plaquette-space flow, 1 map of 6 harmonics"
    residual = FlowSettings(flow_kind="residual")
    assert "residual flow, 2 sweeps of plaquette layers" in residual.describe("u1", (8, 8))
    with pytest.raises(ValueError, match="2D U\\(1\\) only"):
        FlowSettings(flow_kind="plaquette").make(su3)  # an architecture that does not fit the theory: one line
    # options of the other kind are refused, not ignored
    with pytest.raises(ValueError, match="loops, degree apply to residual flows, but the flows here are plaquette "
                                         "flows \\(flow_kind auto\\): leave them out, or set flow_kind residual"):
        FlowSettings(loops=("plaquette", "rectangle"), degree=1).make(u1)
    with pytest.raises(ValueError, match="harmonics applies to plaquette flows"):
        FlowSettings(harmonics=3).make(su3)
    assert FlowSettings(flow_kind="residual", loops=("plaquette", "rectangle")).make(u1).loops == ("plaquette",
                                                                                                 "rectangle")
    # the analyses check the lattice up front (an odd extent used to fail after the base ensemble was generated)
    residual.check_lattice("u1", (8, 8))
    with pytest.raises(ValueError, match="the flows do not fit the 3x3 lattice: plaquette layers need even extents"):
        residual.check_lattice("u1", (3, 3))
    with pytest.raises(ValueError, match="8x6x6x6 lattice: rectangle layers need extents divisible by 4"):
        FlowSettings(loops=("plaquette", "rectangle")).check_lattice("su3", (8, 6, 6, 6))
    with pytest.raises(ValueError, match="patience needs held-out"):
        TrainingSettings(held_out=0, patience=3)
    assert TrainingSettings(held_out=16, patience=3).config(2, "plaquette").optimizer == "lbfgs"
    assert TrainingSettings().config(2).optimizer == "linear" and TrainingSettings().config(4).optimizer == "linear"
    assert TrainingSettings().config(2, network=True).optimizer == "adam"
    assert TrainingSettings().config(4, network=True).optimizer == "lbfgs"
    assert [TrainingSettings(stream=s).streamed for s in ("auto", "yes", "no")] == [None, True, False]


def test_flat_names_are_unique():
    @dataclass(frozen=True)
    class Clash(AnalysisSettings):
        name: ClassVar[str] = "clash"
        ensemble: EnsembleSettings = setting(EnsembleSettings(), "")
        seed: int = setting(1, "a second seed")

    with pytest.raises(TypeError, match="'seed' is defined twice"):
        Clash()
