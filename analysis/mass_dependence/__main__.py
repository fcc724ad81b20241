"""``python -m analysis.mass_dependence ...`` (the command line of :data:`analysis.mass_dependence.MASS_DEPENDENCE`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    from corrflow.runtime import run_entry

    run_entry(lambda: _command(argv), own_process=argv is None)  # the allocator setting, Ctrl-C


def _command(argv: Sequence[str] | None) -> None:
    from corrflow.pipeline.command import app

    from . import MASS_DEPENDENCE

    args = list(sys.argv[1:] if argv is None else argv)
    app(MASS_DEPENDENCE)(args=args, prog_name="python -m analysis.mass_dependence")


if __name__ == "__main__":
    main()
