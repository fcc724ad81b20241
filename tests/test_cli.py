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


def _commands(group, path=()):
    """``(argv prefix, click command)`` of every command under ``group``, analyses included."""
    for name in group.list_commands(None):  # the analyses' group loads its commands on request
        cmd = group.get_command(None, name)
        if hasattr(cmd, "commands"):  # a group (typer may bring a click of its own: no isinstance)
            yield from _commands(cmd, path + (name,))
        else:
            yield path + (name,), cmd


def test_help_texts_survive_the_markdown_rendering(monkeypatch):
    """The help is rendered as markdown, where `<O>` reads as an HTML tag and `a*b*c` as emphasis: `compare --help`
    said "side by side: _a'", `derivative --help` "(P - )(R - )" and "spin-color (NsNc)".  Every command's first
    paragraph and every option's help must reach the rendered help word for word (whitespace, box lines and code-span
    backticks aside; a wide terminal, so that nothing is cut)."""
    import re

    import typer

    def norm(text):
        return re.sub(r"[\s│`]", "", text)

    monkeypatch.setattr("typer.rich_utils.MAX_WIDTH", 3000)  # (what TERMINAL_WIDTH=3000 sets at import)
    checked = 0
    for argv, cmd in _commands(typer.main.get_command(app)):
        out = norm(runner.invoke(app, [*argv, "--help"]).output)
        texts = [(cmd.help or "").split("\n\n")[0]] + [getattr(p, "help", None) or "" for p in cmd.params]
        for text in filter(None, texts):
            assert norm(text) in out, (argv, [w for w in text.split() if norm(w) not in out])
            checked += 1
    assert checked > 100


def test_help_fits_an_80_column_terminal():
    """At 80 columns `derivative --help` cut its own option name (`--held-out-smoothi…`: the `--contract/--no-contract`
    pair took a column of its own) and comma lists without spaces (`plaquette,rectangle…`); no command's help may cut
    a word.  Flags have no type column (typer wrote `--help <bool>`, `--resume <bool>`)."""
    import typer

    commands = list(_commands(typer.main.get_command(app)))
    helps = {" ".join(argv): runner.invoke(app, [*argv, "--help"], env={"COLUMNS": "80"}).output
             for argv, _ in [((), None), *commands]}
    cut = [argv for argv, out in helps.items() if "…" in out]
    assert not cut, cut
    typed_flags = [argv for argv, out in helps.items() if "<bool>" in out or "Show this message" not in out]
    assert not typed_flags, typed_flags
    # the examples (indented code in the epilogs) fit too, continued with a backslash: a line wrapped by the terminal
    # in the middle of a command cannot be pasted
    long = [(" ".join(argv), line) for argv, cmd in commands for line in (cmd.epilog or "").splitlines()
            if line.startswith("    ") and len(line) - 4 > 74]
    assert not long, long


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
    # the slow-mode check (block means against the Gamma window) runs on every observable; nothing slow here
    assert all(r.slow_mode is not None and r.slow_mode_note() is None for o, r in rows.items() if o != "acceptance")
    from corrflow.stats import SlowModeCheck

    flagged = rows["plaquette"]._replace(slow_mode=SlowModeCheck(18.4, 4.6, 3.3, 3.3, 500))
    assert flagged.slow_mode_note().startswith("plaquette: block means of 500 trajectories give 2 tau_int = 18.4(4.6)")
    assert "--jitter" in flagged.slow_mode_note() and "--tau-exp" in flagged.slow_mode_note()
    # the exponential tail of a slow mode (corrflow.stats.windowing): never a smaller tau_int, said in the title
    res = runner.invoke(app, ["summary", str(store), "u1_6x6_beta1.5", "--tau-exp", "20"])
    assert res.exit_code == 0 and "tau_exp = 20" in res.output, res.output
    from corrflow.stats import Windowing

    tail = {r.observable: r for r in ensemble_summary(open_store(store), "u1_6x6_beta1.5",
                                                      windowing=Windowing(tau_exp=20.0))}
    assert all(tail[o].stats.tau_int >= rows[o].stats.tau_int - rows[o].stats.tau_int_error for o in rows), tail
    res = runner.invoke(app, ["summary", str(store), "u1_6x6_beta1.5", "--tau-exp", "-1"])
    assert res.exit_code == 2 and "--tau-exp must be" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["info", str(store), "u1_6x6_beta1.5"])
    assert res.exit_code == 0 and "2 x 400" in res.output


@pytest.mark.parametrize(
    "args,match",
    [
        (["generate", "o3", "--beta", "1", "--shape", "4,4", "--n", "10"], "unknown theory"),
        (["generate", "u1", "--beta", "1", "--shape", "4", "--n", "10"], "malformed --shape"),
        (["generate", "u1", "--beta", "1", "--shape", "4,4", "--n", "-5"], "--n must be >= 1"),
        # the analyses' names of --n and --block
        (["generate", "u1", "--beta", "1", "--shape", "4,4", "--n-configs", "-5"], "--n must be >= 1"),
        (["generate", "u1", "--beta", "1", "--shape", "4,4", "--n", "10", "--block-size", "0"], "--block must be >= 1"),
        (["generate", "u1", "--beta", "1", "--shape", "4,4", "--n", "10", "--integrator", "rk4"], "unknown integrator"),
        (["generate", "u1", "--beta", "1", "--shape", "4,4", "--n", "10", "--observables", "bogus"], "unknown observable"),
        (["generate", "su3", "--beta", "1", "--shape", "4,4", "--n", "10", "--observables", "topological_charge"],
         "2D U\\(1\\) only"),
        (["generate", "u1", "--beta", "1", "--shape", "4,4", "--n", "10", "--devices", "-1"], "--devices must be >= 0"),
        (["generate", "u1", "--beta", "1", "--shape", "4,4", "--n", "10", "--jitter", "1"], "--jitter must be in"),
        (["generate", "su3", "--beta", "6", "--shape", "4,4,4,4", "--n", "10", "--algorithm", "heatbath", "--jitter",
          "0.2"], "^error: --jitter: HMC molecular-dynamics settings; the heat bath has no trajectories"),
        # HMC settings with the heat bath were accepted without a word (and --overrelax with HMC)
        (["generate", "su3", "--beta", "6", "--shape", "4,4,4,4", "--n", "10", "--algorithm", "heatbath",
          "--step-size", "0.1", "--n-steps", "8"], "^error: --step-size, --n-steps: HMC molecular-dynamics settings"),
        (["generate", "su3", "--beta", "6", "--shape", "4,4,4,4", "--n", "10", "--overrelax", "2"],
         "^error: --overrelax sets the over-relaxation sweeps of --algorithm heatbath; HMC has none"),
        # library messages said with the options the user typed (they named HMCConfig fields, ...)
        (["generate", "u1", "--beta", "1", "--shape", "4,4", "--n", "10", "--step-size", "0"], "^error: --step-size must"),
        (["generate", "u1", "--beta", "nan", "--shape", "4,4", "--n", "10"], "^error: --beta must be finite"),
        (["generate", "u1", "--beta", "-1", "--shape", "4,4", "--n", "10"], "^error: --beta must be >= 0"),
        (["generate", "su3", "--beta", "6", "--shape", "4,4,4,4", "--n", "10", "--algorithm", "heatbath",
          "--overrelax", "-1"], "^error: --overrelax must"),
        (["generate", "u1", "--beta", "1", "--shape", "4,4", "--n", "10", "--mass", "0.1"],
         "theory 'u1' is pure gauge: --mass and --kappa belong to theories with dynamical quarks"),
        # the exact determinant on 4^4 SU(3) (V Ns Nc = 3072) ran for hours without a word; auto takes pseudofermions
        (["generate", "su3-wilson", "--beta", "5.8", "--mass", "0.1", "--shape", "4,4,4,4", "--n", "2",
          "--fermion-det", "exact"], "^error: HMC with --fermion-det exact .* 3072 > 2048 .* use --fermion-det "
                                     "pseudofermion"),
        (["generate", "schwinger", "--beta", "2", "--mass", "0.1", "--shape", "4,4", "--n", "2", "--fermion-det",
          "dense"], "^error: --fermion-det must be auto, exact or pseudofermion"),
    ],
)
def test_cli_bad_input_exit_2(tmp_path, args, match):
    res = runner.invoke(app, args + ["--store", str(tmp_path / "s.zarr")])
    assert res.exit_code == 2
    assert __import__("re").search(match, res.output.replace("\n", " ")), res.output


def test_store_given_either_way_on_every_command(tmp_path):
    """`corrflow info STORE` and `corrflow train --store STORE` were the only forms, so `corrflow generate STORE u1`
    said "Missing option '--store'"; both forms work on every command now, and a refused --resume names the option
    whose value differs from the stored recipe."""
    from corrflow.cli.base import normalise_store_argument

    kind = {"generate": "option", "info": "argument"}.get
    assert normalise_store_argument(["generate", "a.zarr", "u1"], kind) == ["generate", "--store", "a.zarr", "u1"]
    assert normalise_store_argument(["generate", "u1", "--store", "a.zarr"], kind) == ["generate", "u1", "--store",
                                                                                      "a.zarr"]
    assert normalise_store_argument(["generate", "u1"], kind) == ["generate", "u1"]  # no store: typer says so
    assert normalise_store_argument(["info", "--store", "a.zarr", "e"], kind) == ["info", "a.zarr", "e"]
    assert normalise_store_argument(["info", "e", "--store=a.zarr"], kind) == ["info", "a.zarr", "e"]
    assert normalise_store_argument(["info", "--store"], kind) == ["info", "--store"]  # typer reports the error
    assert normalise_store_argument(["--help"], kind) == ["--help"]

    store = tmp_path / "s.zarr"
    res = runner.invoke(app, ["generate", str(store), "u1", "--beta", "1", "--shape", "4,4", "--n", "4", "--therm",
                              "0", "--jitter", "0.2"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["info", "--store", str(store), "u1_4x4_beta1"])
    assert res.exit_code == 0 and "1 x 4" in res.output, res.output
    assert "5 steps of 0.2 +- 20% (randomised trajectory length 0.8 .. 1.2)" in " ".join(res.output.split())
    eps = open_store(store).array("u1_4x4_beta1", "step_size")[:]  # each trajectory's own step size
    assert eps.min() >= 0.16 and eps.max() <= 0.24 and len(set(eps.ravel().tolist())) == 4, eps
    res = runner.invoke(app, ["measure", f"--store={store}", "u1_4x4_beta1", "wilson_1x1"])
    assert res.exit_code == 0, res.output
    before = open_store(store).info("u1_4x4_beta1")["committed"]
    res = runner.invoke(app, ["generate", str(store), "u1", "--beta", "1", "--shape", "4,4", "--n", "8", "--therm",
                              "0", "--step-size", "0.1", "--resume"])
    assert res.exit_code == 2
    out = " ".join(res.output.split())
    assert "hmc.step_size (--step-size): stored 0.2 vs requested 0.1" in out, res.output
    assert "jitter" not in out  # without --jitter a resume takes the stored one
    assert open_store(store).info("u1_4x4_beta1")["committed"] == before
    # the default: randomised lengths (0.2) for a new ensemble; a fixed-length recipe (--jitter 0, or an ensemble
    # from before the option existed) is continued as it was made
    for n, extra in (("2", ["--jitter", "0"]), ("3", ["--resume"])):
        res = runner.invoke(app, ["generate", str(store), "u1", "--beta", "1.5", "--shape", "4,4", "--n", n,
                                  "--therm", "0", "--name", "fixed", *extra])
        assert res.exit_code == 0, res.output
    assert open_store(store).spec("fixed").hmc == {"step_size": 0.2, "n_steps": 5, "integrator": "omelyan"}
    res = runner.invoke(app, ["generate", str(store), "u1", "--beta", "1.5", "--shape", "4,4", "--n", "2", "--therm",
                              "0", "--name", "new"])
    assert res.exit_code == 0 and open_store(store).spec("new").hmc["jitter"] == 0.2, res.output
    # --resume without the recipe's options takes the stored ones (it said "stored 2 vs requested 1" for --chains, ...)
    recipe = ["--chains", "2", "--seed", "3", "--therm", "1", "--thin", "2", "--step-size", "0.25", "--n-steps", "4",
              "--integrator", "leapfrog", "--jitter", "0", "--observables", "wilson_1x1", "--precision", "single"]
    res = runner.invoke(app, ["generate", str(store), "u1", "--beta", "1.5", "--shape", "4,4", "--n", "2", "--name",
                              "recipe", *recipe])
    assert res.exit_code == 0, res.output
    spec = open_store(store).spec("recipe")
    res = runner.invoke(app, ["generate", str(store), "u1", "--beta", "1.5", "--shape", "4,4", "--n", "3", "--name",
                              "recipe", "--resume"])
    assert res.exit_code == 0 and "+1 -> 3 trajectories x 2 chains" in res.output, res.output
    assert open_store(store).spec("recipe") == spec


def test_bad_environment_setting_refused_before_the_store_is_touched(tmp_path, monkeypatch):
    """CORRFLOW_PALLAS is read when programs are traced; a bad value is refused up front (one line, exit 2), so
    no empty ensemble is left behind."""
    monkeypatch.setenv("CORRFLOW_PALLAS", "sometimes")
    store = tmp_path / "s.zarr"
    res = runner.invoke(app, ["generate", "su3", "--beta", "6", "--shape", "2,2,2,2", "--n", "2", "--store", str(store)])
    assert res.exit_code == 2
    assert "CORRFLOW_PALLAS='sometimes'" in res.output and "Traceback" not in res.output
    assert not store.exists()


def test_consoles_follow_columns_when_piped(monkeypatch):
    """Output into a pipe or file is 160 columns wide (rich's default 80 cut the tables), unless COLUMNS asks for
    another width (`COLUMNS=80 corrflow info S | cat` gave an 88-column table and notes wrapped at 160)."""
    from corrflow.console import make_console

    monkeypatch.delenv("COLUMNS", raising=False)
    assert make_console().width == 160  # (pytest captures stdout: not a terminal)
    monkeypatch.setenv("COLUMNS", "100")
    assert make_console().width == 100


def test_result_tables_never_cut_numbers():
    """`make demo` printed `compare` at rich's default 80 columns with every value cut ("0.7282…"): consoles are 160
    wide where the output is not a terminal, and on a narrow terminal the number columns keep their widest cell while
    names fold -- no ellipsis anywhere, every value(error) whole."""
    from rich.console import Console

    from corrflow.console import results_table
    from corrflow.console import make_console

    assert make_console().width == 160  # pytest's captured stdout is not a terminal
    rows = [("plaquette", "flowed reweighting", "flowed_beta2.2", "0.72737(38)", "0.030307(59)", "0.15153(29)",
             "0.980", "93.4"),
            ("wilson_2x2", "independent", "u1_16x16_beta2.2", "0.28151(52)", "0.04503(77)", "0.2252(39)", "", "")]
    numbers = ("<O>(a')", "difference", "d<O>/dbeta", "weight ESS", "var. red. vs indep.")
    for width in (80, 160):
        console = Console(width=width, record=True, color_system=None)
        console.print(results_table("t", ("observable", "estimator", "ensemble", *numbers), rows, numbers=numbers))
        text = console.export_text()
        assert "…" not in text and max(len(line) for line in text.splitlines()) <= width, text
        for row in rows:
            assert all(cell in text for cell in row[3:]), text
    # the analyses' record tables leave it to the cells: the columns whose cells all read as numbers
    auto = results_table("t", ("observable", "estimator", "ensemble", *numbers), rows)
    assert [c.no_wrap for c in auto.columns] == [False] * 3 + [True] * 5


def test_info_parameters_quote_kappa_with_dynamical_quarks():
    """`corrflow info` showed the bare mass alone for su3-wilson / schwinger ensembles; the hopping parameter that a
    lattice QCD user quotes (kappa = 1 / (2 m + 2 d)) stands next to it, and pure-gauge ensembles are unchanged."""
    from corrflow.cli.ensembles import _parameters

    qcd = {"theory": "su3-wilson", "shape": [4, 4, 4, 4], "params": {"beta": 5.8, "mass": 0.1, "xi": 1.0}}
    assert _parameters(qcd) == "beta=5.8, mass=0.1, kappa=0.121951, xi=1"  # 1 / (0.2 + 8)
    two = {"theory": "schwinger", "shape": [8, 8], "params": {"beta": 2.0, "mass": -0.1}}
    assert _parameters(two) == "beta=2, mass=-0.1, kappa=0.263158"  # 1 / (-0.2 + 4)
    assert _parameters({"theory": "su3", "shape": [4] * 4, "params": {"beta": 6.0}}) == "beta=6"


def test_usage_errors_in_one_line(tmp_path, capsys):
    """typer answered a malformed or missing option with its usage text and a boxed panel (6 lines); the standards
    ask for one line saying what was wrong, exit status 2 -- on `corrflow` and on the analyses' own entries."""
    store = str(tmp_path / "s.zarr")
    for args, line in (
            (["generate", "u1", "--beta", "1", "--shape", "4,4", "--n", "abc", "--store", store],
             "error: invalid value for '--n' / '--n-configs': .* \\(got 'abc'\\) \\(corrflow generate --help\\)$"),
            (["generate", "u1", "--beta", "1", "--shape", "4,4", "--store", store],
             "error: missing option '--n' / '--n-configs'. \\(corrflow generate --help\\)$"),
            (["generat", "u1"], "error: no such command 'generat'. Did you mean 'generate'\\? \\(corrflow --help\\)$"),
            (["info", store, "--bogus"], "error: no such option: --bogus \\(corrflow info --help\\)$")):
        res = runner.invoke(app, args, prog_name="corrflow")
        out = res.output.strip()
        assert res.exit_code == 2 and len(out.splitlines()) == 1, out
        assert __import__("re").match(line, out), out
    assert not (tmp_path / "s.zarr").exists()  # nothing written
    res = runner.invoke(app, ["info", "--help"])  # help and its exit status unchanged
    assert res.exit_code == 0 and "Usage" in res.output
    from analysis.feynman_hellmann.__main__ import main as fh_main

    with pytest.raises(SystemExit) as exc:
        fh_main(["--n-configs", "x"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: invalid value for '--n-configs'") and len(err.splitlines()) == 1, err
    assert err.endswith("(python -m analysis.feynman_hellmann --help)"), err
