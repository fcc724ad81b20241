"""``python -m analysis.feynman_hellmann ...`` (the command line of
:data:`analysis.feynman_hellmann.FEYNMAN_HELLMANN`, the same as ``corrflow analyse feynman-hellmann``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    from corrflow.runtime import run_entry

    run_entry(lambda: _command(argv), own_process=argv is None)  # the allocator setting, Ctrl-C


def _command(argv: Sequence[str] | None) -> None:
    from corrflow.pipeline.command import app

    from . import FEYNMAN_HELLMANN

    args = list(sys.argv[1:] if argv is None else argv)
    app(FEYNMAN_HELLMANN)(args=args, prog_name="python -m analysis.feynman_hellmann")


if __name__ == "__main__":
    main()
