"""``python -m analysis.mass_dependence ...`` (the command line of :data:`analysis.mass_dependence.MASS_DEPENDENCE`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    from corrflow.pipeline.analysis import app
    from corrflow.runtime import apply_allocator_setting

    from . import MASS_DEPENDENCE

    apply_allocator_setting()  # CORRFLOW_MALLOC=tuned, before JAX starts its threads
    args = list(sys.argv[1:] if argv is None else argv)
    app(MASS_DEPENDENCE)(args=args, prog_name="python -m analysis.mass_dependence")


if __name__ == "__main__":
    main()
