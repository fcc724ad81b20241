"""``python -m analysis.feynman_hellmann ...`` (the command line of
:data:`analysis.feynman_hellmann.FEYNMAN_HELLMANN`; ``--one-sided`` is kept as the old spelling of
``--no-symmetric``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    from corrflow.pipeline.analysis import app

    from . import FEYNMAN_HELLMANN

    args = ["--no-symmetric" if a == "--one-sided" else a for a in (sys.argv[1:] if argv is None else argv)]
    app(FEYNMAN_HELLMANN)(args=args, prog_name="python -m analysis.feynman_hellmann")


if __name__ == "__main__":
    main()
