"""The ``corrflow`` command line: the typer app, the console and the one error runner every command uses.

Every command reads and writes one store, prints progress for long work and a one-line summary, and
exits with status 2 and a one-line explanation (no traceback) on bad input.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import typer
from rich.markup import escape
from typer.core import TyperGroup

from ..console import main_with_one_line_errors, make_console, plain_flags


def _looks_like_store(token: str) -> bool:
    """A command-line token that names a zarr store: ends in ``.zarr`` or is a directory with zarr metadata."""
    p = Path(token)
    return token.rstrip("/").endswith(".zarr") or (p.is_dir() and any((p / f).exists()
                                                                       for f in ("zarr.json", ".zgroup")))


def normalise_store_argument(args: list[str], store_kind: Callable[[str], str | None]) -> list[str]:
    """Accept the store both ways on every command: ``corrflow info STORE`` and ``corrflow info --store STORE``,
    ``corrflow train --store STORE`` and ``corrflow train STORE``.

    ``args``: the words after ``corrflow``; ``store_kind(command)``: ``"option"`` where the command declares
    ``--store``, ``"argument"`` where the store is its first positional argument, None otherwise.  For an option
    command whose first word after the command names a store (:func:`_looks_like_store`) and that has no
    ``--store``, that word becomes ``--store WORD``; for an argument command, ``--store X`` / ``--store=X`` moves
    to the first position.  Anything else is returned unchanged (typer reports what is missing).
    """
    i = next((k for k, a in enumerate(args) if not a.startswith("-")), None)
    if i is None:
        return args
    head, cmd, rest = args[:i], args[i], args[i + 1:]
    kind = store_kind(cmd)
    has_option = [k for k, a in enumerate(rest) if a == "--store" or a.startswith("--store=")]
    if kind == "option" and not has_option and rest and not rest[0].startswith("-") and _looks_like_store(rest[0]):
        return [*head, cmd, "--store", rest[0], *rest[1:]]
    if kind == "argument" and len(has_option) == 1 and "--" not in rest[:has_option[0]]:
        k = has_option[0]
        if rest[k] == "--store":
            if k + 1 >= len(rest):
                return args
            value, rest = rest[k + 1], rest[:k] + rest[k + 2:]
        else:
            value, rest = rest[k].split("=", 1)[1], rest[:k] + rest[k + 1:]
        return [*head, cmd, value, *rest]
    return args


class PlainFlagsGroup(TyperGroup):
    """A command group whose own help and whose commands show their on/off flags without a type
    (:func:`~corrflow.console.plain_flags`)."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        return plain_flags(super().get_command(ctx, cmd_name))

    def format_help(self, ctx: Any, formatter: Any) -> None:
        plain_flags(self)
        super().format_help(ctx, formatter)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        return main_with_one_line_errors(super().main, *args, **kwargs)  # usage errors in one line


class _Commands(PlainFlagsGroup):
    """The top-level command group: the store may be given as ``--store`` or as the first argument on every
    command (:func:`normalise_store_argument`); flags without a type in the help."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        def store_kind(name: str) -> str | None:
            cmd = self.commands.get(name)
            for p in getattr(cmd, "params", ()):
                if p.name == "store":
                    return "option" if p.param_type_name == "option" else "argument"
            return None

        return super().parse_args(ctx, normalise_store_argument(list(args), store_kind))


app = typer.Typer(
    cls=_Commands,
    help="corrflow: correlated ensembles for lattice field theory. Each command works on one zarr store, given as "
         "its first argument or as --store.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
)
console = make_console()
err_console = make_console(stderr=True)


def versions() -> str:
    """``corrflow X (jax Y, jaxlib Z, numpy ..., zarr ..., python ...)``: what a bug report or a run log needs
    (:func:`corrflow.versions.versions`; JAX is not started)."""
    from ..versions import versions as library_versions

    v = library_versions()
    corrflow = v.pop("corrflow")
    return f"corrflow {corrflow} ({', '.join(f'{k} {x}' for k, x in v.items())})"


def _print_version(value: bool) -> None:
    if value:
        console.print(versions(), highlight=False)
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="Print the versions of corrflow, JAX, jaxlib, numpy, zarr and Python, "
                                               "and exit.")) -> None:
    pass


class CLIError(Exception):
    """Bad input detected by the CLI itself."""


def parse_shape(text: str) -> tuple[int, ...]:
    """``"16,16"`` or ``"16x16"`` -> ``(16, 16)``; clear error otherwise."""
    parts = [p.strip() for p in re.split(r"[,x]", text.strip()) if p.strip() != ""]
    if len(parts) < 2 or not all(re.fullmatch(r"\d+", p) for p in parts) or any(int(p) < 1 for p in parts):
        raise CLIError(f"malformed --shape {text!r}: expected at least two comma-separated positive integers, e.g. 16,16 or 8,8,8,8")
    return tuple(int(p) for p in parts)


#: what Ctrl-C leaves, per kind of command (``_run(body, interrupted=...)``)
INTERRUPTED_WRITER = "everything committed so far is safe; rerun the same command to continue"
INTERRUPTED_READER = "nothing was written"


def _run(fn: Callable[[], Any], interrupted: str = INTERRUPTED_WRITER) -> Any:
    """Run a command body with the pipeline's one error runner: expected errors become a message and exit status 2,
    Ctrl-C exits 130 after printing ``interrupted`` (what is kept and how to continue; only commands with a --resume
    option may mention it)."""
    from ..ildg import IldgFormatError
    from ..pipeline.cli import run_cli

    return run_cli(fn, err_console, (CLIError, IldgFormatError), interrupted=interrupted)


def _stage(description: str, unit: str = "") -> Any:
    """A persistent progress bar for one command step (the pipeline's :class:`~corrflow.pipeline.Progress`):
    ``with _stage("HMC x", "traj/s") as tick: tick(done, total, extra)``."""
    from ..pipeline.progress import Progress

    return Progress(console, transient=False).stage(description, unit)


def print_thermalisation(cut: Any) -> None:
    """The line of an automatic thermalisation cut (``--discard auto``; a
    :class:`corrflow.stats.equilibration.EquilibrationCut`), in yellow where the cut is at its limit."""
    warn = cut.at_limit
    console.print(("[yellow]" if warn else "") + "thermalisation (--discard auto): " + cut.describe()
                  + ("[/]" if warn else ""))


#: ``--tau-exp`` of the commands that quote Gamma-method errors (summary, compare, derivative, report, scales)
TAU_EXP_HELP = ("exponential autocorrelation time of the chains' slowest mode, in stored trajectories (e.g. of the "
                "topological charge, from a longer run): sum the autocorrelation function until it is compatible "
                "with zero and add the exponential tail beyond (Schaefer, Sommer, Virotta); conservative on short "
                "chains. auto: the slowest decay of rho(t) among the ensembles' observables (their recipe; a rough "
                "estimate, printed) [0: Wolff's window]")


def tau_exp_option(text: str) -> Any:
    """``--tau-exp``: the :class:`corrflow.stats.Windowing` of a number (0: Wolff's window), ``None`` for ``auto``
    (:func:`auto_windowing` once the data are open); a :class:`CLIError` (one line, exit 2) otherwise -- checked
    before anything is read."""
    from ..stats import Windowing

    if text.strip().lower() == "auto":
        return None
    try:
        return Windowing.from_tau_exp(float(text))
    except ValueError:
        raise CLIError(f"--tau-exp must be a number >= 0 (0: no tail) or auto, got {text!r}") from None


def auto_windowing(st: Any, names: Any, discard: int | None, quiet: bool = False) -> Any:
    """``--tau-exp auto``: the exponential tail of the slowest decay of ``rho(t)`` among the observables of ensembles
    ``names`` (:func:`corrflow.summary.slowest_decay`; ``discard`` None: each ensemble's automatic cut), said in one
    line (not with ``quiet``, e.g. for ``--json``); Wolff's window where nothing decays measurably."""
    from ..stats import Windowing
    from ..summary import slowest_decay

    decay = slowest_decay(st, names, discard)
    if quiet:
        return Windowing() if decay is None else Windowing(tau_exp=decay.tau_exp)
    if decay is None:
        console.print("--tau-exp auto: no observable's rho(t) decays measurably above its noise (it drops at once): "
                      "Wolff's window, no tail")
        return Windowing()
    console.print(f"--tau-exp auto: {escape(str(decay))} (--tau-exp {decay.tau_exp:g} gives the same tail)")
    return Windowing(tau_exp=decay.tau_exp)


#: library messages that name a field, and the option a user of the command line typed for it
OPTION_NAMES = (("HMCConfig: step_size", "--step-size"), ("HMCConfig: n_steps", "--n-steps"),
                ("HMCConfig: unknown integrator", "--integrator: unknown integrator"), ("HMCConfig: jitter", "--jitter"),
                ("HeatbathConfig: n_overrelax", "--overrelax"), ("WilsonGaugeAction: beta", "--beta"),
                ("WilsonGaugeAction: xi", "--xi"), ("WilsonGaugeAction: lam", "--lam"), ("mass must", "--mass must"),
                ("epochs and batch_size", "--epochs and --batch-size"), ("learning_rate", "--lr"),
                ("target_ess", "--target-ess"))


def option_error(exc: Exception) -> CLIError:
    """A :class:`CLIError` of a library ``ValueError`` whose message starts with a field name, said with the command
    line's option name (``HMCConfig: step_size must ...`` -> ``--step-size must ...``)."""
    msg = str(exc)
    for field, option in OPTION_NAMES:
        if msg.startswith(field):
            return CLIError(option + msg[len(field):])
    return CLIError(msg)


def warn_long_tail(windowing: Any, n_traj: int) -> None:
    """A yellow line where ``--tau-exp`` exceeds the ``n_traj`` trajectories of a chain: the tail bound multiplies the
    noise of rho by ``tau_exp``, so the errors come out far too large; such a slow mode needs longer chains."""
    if windowing.tau_exp is not None and windowing.tau_exp > n_traj:
        console.print(f"[yellow]warning: --tau-exp {windowing.tau_exp:g} is longer than the chains ({n_traj} "
                      "trajectories each): the tail then multiplies the noise of rho(t) and the errors come out far "
                      "too large; a mode that slow needs longer chains[/]")


def discard_option(text: str) -> int | None:
    """``--discard`` of a command: a count of leading trajectories, or ``None`` for ``auto``
    (:func:`corrflow.stats.equilibration.parse_discard`); a :class:`CLIError` (one line, exit 2) otherwise."""
    from ..stats.equilibration import parse_discard

    try:
        return parse_discard(text)
    except ValueError as e:
        raise CLIError(str(e)) from None
