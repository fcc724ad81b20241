"""``python -m analysis.mass_dependence ...`` (the command line of :data:`analysis.mass_dependence.MASS_DEPENDENCE`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    from corrflow.pipeline.analysis import app
    from corrflow.runtime import tune_allocator

    from . import MASS_DEPENDENCE

    tune_allocator()  # before JAX starts its threads
    args = list(sys.argv[1:] if argv is None else argv)
    app(MASS_DEPENDENCE)(args=args, prog_name="python -m analysis.mass_dependence")


if __name__ == "__main__":
    main()
