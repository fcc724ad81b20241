"""The package's import contract: 64-bit JAX whichever is imported first, the public names, and a command line that
answers ``--help`` and bad input without starting JAX.  Each case runs in a fresh interpreter (the test process has
long imported everything)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> str:
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


@pytest.mark.parametrize("first", ["corrflow", "jax"])
def test_x64_whichever_is_imported_first(first):
    second = "jax" if first == "corrflow" else "corrflow"
    out = _run(f"import {first}, {second}; import jax.numpy as jnp; print(jnp.zeros(1).dtype, jnp.arange(2).dtype)")
    assert out == "float64 int64"


def test_public_names_resolve():
    out = _run("import corrflow as cf, inspect\n"
               "import corrflow.generate  # binds the submodule on the package: the function must stay\n"
               "missing = [n for n in cf.__all__ if not hasattr(cf, n)]\n"
               "print(missing, inspect.isfunction(cf.generate), inspect.ismodule(cf.stats), 'generate' in dir(cf))")
    assert out == "[] True True True"


def test_command_line_starts_without_jax():
    """`corrflow --help` took ~4 s (JAX, scipy and every analysis imported to list the commands); the analyses are
    loaded when asked for, JAX when a command runs."""
    out = _run("import sys\n"
               "from typer.testing import CliRunner\n"
               "from corrflow.cli import app\n"
               "r = CliRunner().invoke(app, ['--help'])\n"
               "print(r.exit_code, 'analyse' in r.output, 'mass-dependence' in r.output, 'jax' in sys.modules)")
    assert out == "0 True True False"


def test_analysis_help_starts_without_jax():
    """`corrflow analyse --help` and each analysis's `--help` took 2.3-2.5 s (the pipeline, JAX and scipy imported to
    build the options); the settings, their defaults and the Analysis declarations load neither, and the names of the
    lazily loaded packages (corrflow.pipeline, corrflow.stats, corrflow.flows, the analyses) still resolve."""
    out = _run("import sys\n"
               "from typer.testing import CliRunner\n"
               "from corrflow.cli import app\n"
               "r = [CliRunner().invoke(app, ['analyse', *a, '--help']).exit_code for a in ([], ['mass-dependence'],\n"
               "     ['feynman-hellmann'], ['continuum-limit'], ['continuum-limit-su3'])]\n"
               "print(r, sorted(m for m in ('jax', 'scipy', 'numpyro') if m in sys.modules))\n"
               "import corrflow.pipeline as p, corrflow.stats as st, corrflow.flows as fl\n"
               "import analysis.feynman_hellmann as fh\n"
               "import corrflow.pipeline.family  # binds the submodule on the package: the function must stay\n"
               "missing = [f'{m.__name__}.{n}' for m in (p, st, fl, fh) for n in m.__all__ if not hasattr(m, n)]\n"
               "print(missing, callable(p.family) and not isinstance(p.family, type(sys)), 'family' in dir(p))")
    assert out.splitlines() == ["[0, 0, 0, 0, 0] []", "[] True True"]


def test_version_matches_the_project_and_names_the_dependencies():
    import tomllib
    from pathlib import Path

    from typer.testing import CliRunner

    import corrflow
    from corrflow.cli import app

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["version"]
    assert corrflow.__version__ == project
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.output.startswith(f"corrflow {project} (jax ") and "jaxlib " in res.output and "python " in res.output
    from corrflow.store.spec import versions  # what every ensemble records: the same, and the kernel choice

    recorded = versions()
    assert recorded["corrflow"] == project and {"jax", "jaxlib", "numpy", "zarr", "python", "CORRFLOW_NATIVE"} <= set(
        recorded)


def test_a_broken_analysis_plugin_breaks_only_itself(monkeypatch):
    """An analysis entry point that fails to import (a plug-in with a bug, a missing dependency) gets a command that
    says so (exit 2, no traceback); the other analyses and commands work."""
    from typer.testing import CliRunner

    import corrflow.cli as cli

    class Broken:
        name = "broken"

        def load(self):
            raise ImportError("No module named 'missing_dependency'")

    real = cli._analysis_entry_points()
    monkeypatch.setattr(cli, "_analysis_entry_points", lambda: {**real, "broken": Broken()})
    runner = CliRunner()
    res = runner.invoke(cli.app, ["analyse", "broken"])
    assert res.exit_code == 2 and "analysis 'broken' cannot be loaded (ImportError: No module named" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(cli.app, ["analyse", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "broken" in res.output and "mass-dependence" in res.output
    assert runner.invoke(cli.app, ["analyse", "mass-dependence", "--help"]).exit_code == 0
