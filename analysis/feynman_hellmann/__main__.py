"""``python -m analysis.feynman_hellmann ...`` (the command line of
:data:`analysis.feynman_hellmann.FEYNMAN_HELLMANN`, the same as ``corrflow analyse feynman-hellmann``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    from corrflow.pipeline.analysis import app
    from corrflow.runtime import apply_allocator_setting

    from . import FEYNMAN_HELLMANN

    apply_allocator_setting()  # CORRFLOW_MALLOC=tuned, before JAX starts its threads
    app(FEYNMAN_HELLMANN)(args=list(sys.argv[1:] if argv is None else argv), prog_name="python -m analysis.feynman_hellmann")


if __name__ == "__main__":
    main()
