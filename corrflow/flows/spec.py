"""The flows' settings that are checked before anything runs -- loop shapes, coefficient degrees, smoothing times --
without JAX (the analyses' settings and ``--help`` use them; :mod:`.build`, :mod:`.layers`, :mod:`.staples` and
:mod:`.smoothing` take them from here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["LOOPS", "MAX_DEGREE", "check_degree", "check_times"]

LOOPS = ("plaquette", "rectangle")
MAX_DEGREE = 8  # highest degree of the coefficient polynomials in the staple norm


def check_degree(degree: Any) -> int:
    """``degree`` of the coefficient polynomials as an int, or ``ValueError`` unless it is an integer in
    ``0..MAX_DEGREE`` (used by :func:`make_flow` and by the analyses' settings, which check it up front)."""
    if isinstance(degree, bool) or not isinstance(degree, (int, np.integer, float)) or int(degree) != degree \
            or not 0 <= degree <= MAX_DEGREE:
        raise ValueError(f"degree (of the coefficient polynomials in the staple norm) must be an integer in "
                         f"0..{MAX_DEGREE}, got {degree!r}")
    return int(degree)


def check_times(times: Sequence[float], eps: float) -> tuple[float, ...]:
    """``times`` as sorted positive multiples of ``eps`` without duplicates, or a one-line ``ValueError``."""
    try:
        out = tuple(float(t) for t in times)
    except (TypeError, ValueError):
        raise ValueError(f"smoothing times must be numbers, got {times!r}") from None
    if not eps > 0:
        raise ValueError(f"smoothing_eps must be > 0, got {eps}")
    bad = [t for t in out if t <= 0 or abs(t / eps - round(t / eps)) > 1e-9]
    if bad:
        raise ValueError(f"smoothing times {bad} must be positive multiples of smoothing_eps={eps}")
    if len(set(out)) != len(out) or list(out) != sorted(out):
        raise ValueError(f"smoothing times must be increasing without duplicates, got {out}")
    return out
