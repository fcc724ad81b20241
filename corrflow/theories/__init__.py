"""Lattice actions.  Only :class:`WilsonGaugeAction` (pure gauge) for now.

``make_theory(name, shape, **params)`` builds a theory from a name used on the command line:
``u1``, ``su2``, ``su3`` or ``suN`` (Wilson gauge action in the dimension given by ``shape``).
"""

from __future__ import annotations

from typing import Any, Sequence

from ..groups import get_group
from .gauge import WilsonGaugeAction, accumulate

THEORIES: dict[str, str] = {
    "u1": "U(1) Wilson gauge action, links stored as angles",
    "su2": "SU(2) Wilson gauge action",
    "su3": "SU(3) Wilson gauge action",
    "suN": "SU(N) Wilson gauge action for any N >= 2 (e.g. su4)",
}


def make_theory(name: str, shape: Sequence[int], **params: Any) -> WilsonGaugeAction:
    """Theory from its name (see ``THEORIES``); raises ``ValueError`` listing the allowed names."""
    try:
        group = get_group(name)
    except ValueError:
        raise ValueError(f"unknown theory {name!r}; allowed: {', '.join(THEORIES)}") from None
    return WilsonGaugeAction(group=group, shape=tuple(shape), **params)


__all__ = ["WilsonGaugeAction", "THEORIES", "make_theory", "accumulate"]
