"""``d(t0/a^2)/dα`` and ``d(w0/a)/dα`` from tangent (or connected) estimates of ``d<t^2 E(t)>/dα`` on a grid of
flow times.

``t0`` solves ``g(t0) = reference`` for ``g(t) = <t^2 E(t)>`` (:func:`corrflow.observables.gradient_flow.flow_scale`:
cubic interpolation through the grid points around the crossing), so differentiating the condition gives

    d t0 / dα = − (∂_α g)(t0) / g'(t0),

with ``∂_α g`` at the grid points from the estimators of :mod:`.estimator` (observables ``t2E@T``) and both
interpolated by the same local cubic.  ``t0`` and its derivative are derived quantities of the per-configuration
series (``t^2 E`` at every grid time, ``v·∇(t^2 E)``, ``R_v``, their products), so one Gamma-method analysis
(gradient projection, chains as replicas) gives errors that include autocorrelations and every correlation between
flow times.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..observables.gradient_flow import T0_REFERENCE, W0_REFERENCE, flow_scale
from ..stats import Stats, Windowing, gamma_method
from .core import _T2E_RE
from .estimator import derived_series

if TYPE_CHECKING:
    from .terms import TangentTerms

__all__ = ["flow_scale_derivative"]


def _local_cubic(t: np.ndarray, y: np.ndarray, i: int) -> np.poly1d:
    lo, hi = max(i - 2, 0), min(i + 2, t.size)
    deg = min(3, hi - lo - 1)
    return np.poly1d(np.polyfit(t[lo:hi] - t[i], y[lo:hi], deg=deg))


def _check_crossing(t: np.ndarray, g: np.ndarray, reference: float, row: str, scale: str) -> None:
    """``ValueError`` (one line, starting with ``row``) unless the mean curve ``g`` on the flow times ``t`` crosses
    ``reference`` after the first grid point."""
    curve, knob = ("t^2 E(t)", "--t0-ref") if scale == "t0" else ("W(t) = t d/dt t^2 E", "--w0-ref")
    grid = "" if scale == "t0" else " interior"  # W by central differences: not at the ends of the grid
    above = np.nonzero(g >= reference)[0]
    if above.size == 0:
        k = int(np.nanargmax(g))
        raise ValueError(f"{row}: {curve} stays below {knob} {reference:g} up to t = {t[-1]:g}, the last{grid} flow "
                         f"time (max {g[k]:.3g} at t = {t[k]:g}): measure t2E@T at larger T, or lower {knob}")
    if above[0] == 0:
        raise ValueError(f"{row}: {curve} is already {g[0]:.3g} >= {knob} {reference:g} at t = {t[0]:g}, the "
                         f"first{grid} flow time: measure t2E@T at smaller T, or raise {knob}")


def flow_scale_derivative(terms: TangentTerms, coef: Any, reference: float | None = None,
                          S: float | Windowing = 1.5, scale: str = "t0") -> dict[str, Stats]:
    """``{"t0": t0/a^2, "tangent": d(t0/a^2)/dα, "connected": the same with v = 0}`` as :class:`Stats`; with
    ``scale="w0"``: ``{"w0": w0/a, "tangent": d(w0/a)/dα, "connected": ...}``.

    ``terms``: :class:`TangentTerms` whose observables include ``t2E@T`` at two or more flow times (four or more for
    ``w0``; the others are ignored); ``coef``: per-configuration field coefficients as for
    :func:`corrflow.tangent.estimate`; ``reference``: 0.3 by default for both scales.  ``w0^2`` solves
    ``W(t) = t d/dt <t^2 E> = reference`` with ``W`` from central differences on the grid, exactly as
    :func:`corrflow.observables.gradient_flow.w_function` (a linear map of the ``t^2 E`` columns, so it applies to the
    derivative columns too), and ``d(w0/a)/dα = d(w0^2)/dα / (2 w0)``.  ``ValueError`` if too few ``t2E@T``
    observables are given or the mean curve does not cross ``reference`` inside the grid: one line that starts with
    the row (``"t0/a^2: "``, ``"w0/a: "``) and says what to change (the ``corrflow derivative`` options named).
    """
    if scale not in ("t0", "w0"):
        raise ValueError(f"unknown flow scale {scale!r}; allowed: t0, w0")
    reference = (T0_REFERENCE if scale == "t0" else W0_REFERENCE) if reference is None else float(reference)
    cols = [(float(m.group(1)), k) for k, n in enumerate(terms.names) if (m := _T2E_RE.match(n))]
    need = 2 if scale == "t0" else 4
    row = "t0/a^2" if scale == "t0" else "w0/a"
    if len(cols) < need:
        raise ValueError(f"{row}: needs t2E@T observables at {'two' if need == 2 else 'four'} or more flow times "
                         f"around {scale}, got {len(cols)}")
    cols.sort()
    t = np.array([c[0] for c in cols])
    lin = None
    if scale == "w0":  # W(t_k) = t_k (d/dt)(t^2 E)(t_k) at the interior grid points: one linear map for every column
        lin = (t[:, None] * np.gradient(np.eye(t.size), t, axis=0))[1:-1]
        t = t[1:-1]
    ds = derived_series(terms, coef, [c[1] for c in cols], lin)
    g_mean = ds.shift
    _check_crossing(t, g_mean, reference, row, scale)
    i = int(np.nonzero(g_mean >= reference)[0][0])

    def parts(m: np.ndarray) -> tuple[float, float, float]:
        g, dg = ds.unpack(m)
        t0 = flow_scale(t, g, reference)
        pg, pd = _local_cubic(t, g, i), _local_cubic(t, dg, i)
        z = t0 - t[i]
        return t0, float(pd(z)), float(pg.deriv()(z))

    def t0_of(m: np.ndarray) -> float:
        t0 = parts(m)[0]
        return t0 if scale == "t0" else float(np.sqrt(t0))

    def dt0_of(m: np.ndarray) -> float:
        t0, dg, slope = parts(m)
        return -dg / slope if scale == "t0" else -dg / slope / (2.0 * np.sqrt(t0))

    return {scale: gamma_method(ds.with_field, t0_of, S=S),
            "tangent": gamma_method(ds.with_field, dt0_of, S=S),
            "connected": gamma_method(ds.connected, dt0_of, S=S),
            "difference": ds.difference(dt0_of, S=S)}
