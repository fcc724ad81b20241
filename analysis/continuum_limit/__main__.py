"""``python -m analysis.continuum_limit [--theory u1|su3] ...`` (the same as ``corrflow analyse continuum-limit`` /
``corrflow analyse continuum-limit-su3``)."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from typing import Any

THEORIES = ("u1", "su3")


def split_theory(argv: Sequence[str]) -> tuple[str, list[str]]:
    """``(theory, remaining arguments)`` from a command line with an optional ``--theory X`` / ``--theory=X``."""
    rest, theory, it = [], "u1", iter(argv)
    for a in it:
        if a == "--theory":
            theory = next(it, "")
        elif a.startswith("--theory="):
            theory = a.split("=", 1)[1]
        else:
            rest.append(a)
    return theory, rest


def main(argv: Sequence[str] | None = None) -> None:
    from corrflow.runtime import run_entry

    run_entry(lambda: _command(argv), own_process=argv is None)  # the allocator setting, Ctrl-C


def _command(argv: Sequence[str] | None) -> None:
    from corrflow.pipeline.command import app

    from . import CONTINUUM_LIMIT, CONTINUUM_LIMIT_SU3

    theory, rest = split_theory(sys.argv[1:] if argv is None else argv)
    if theory not in THEORIES:
        print(f"error: unknown --theory {theory!r}; choose one of {', '.join(THEORIES)} (u1: 2D U(1), exact continuum "
              "values; su3: quenched 4D SU(3), gradient-flow scales)", file=sys.stderr)
        raise SystemExit(2)
    analysis = CONTINUUM_LIMIT_SU3 if theory == "su3" else CONTINUUM_LIMIT
    suffix = " --theory su3" if theory == "su3" else ""
    app(analysis, extra={"theory": theory_option()})(args=rest, prog_name=f"python -m analysis.continuum_limit{suffix}")


def theory_option() -> Any:
    """The ``--theory`` switch as a typer option, so that ``--help`` lists it (:func:`split_theory` has taken it off
    the command line and chosen the analysis already)."""
    import typer

    return typer.Option(THEORIES[0], "--theory", metavar="|".join(THEORIES),
                        help="the theory: u1 (2D U(1), exact continuum values) or su3 (quenched 4D SU(3), "
                             "gradient-flow scales); each has its own options (--theory su3 --help lists those of "
                             "su3)")


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
        main()
