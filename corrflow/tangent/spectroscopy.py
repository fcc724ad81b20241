"""``d m_eff / dα`` of the pion from tangent (or connected) estimates of ``d<C(t)>/dα`` at two time separations.

The pion correlator on a periodic time extent ``T`` (:func:`corrflow.observables.fermions.pion_correlator`) is
``C(t) ∝ cosh(m (t − T/2))`` for one state, so the cosh effective mass at ``t`` solves

    r(m) = cosh(m (t − T/2)) / cosh(m (t + 1 − T/2)) = <C(t)> / <C(t+1)>,        t + 1 <= T/2,

and differentiating that condition gives ``dm/dα = (dr/dα) / r'(m)`` with
``dr/dα = (d<C(t)>/dα) / <C(t+1)> − <C(t)> (d<C(t+1)>/dα) / <C(t+1)>^2``.  ``m_eff`` and its derivative are derived
quantities of the per-configuration series (``C(t)``, ``C(t+1)``, their ``∂_α C + v·∇C``, ``R_v``, and products), so
one Gamma-method analysis (chains as replicas) gives errors with autocorrelations and the correlation between the two
time slices.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import brentq

from ..stats import Stats, Windowing, gamma_method
from .estimator import derived_series

if TYPE_CHECKING:
    from .terms import TangentTerms

__all__ = ["cosh_effective_mass", "effective_mass_derivative", "effective_mass_pairs"]

_PION = re.compile(r"^pion@(\d+)$")


def cosh_effective_mass(ratio: float, t: int, time_extent: int) -> float:
    """``m`` with ``cosh(m (t − T/2)) / cosh(m (t + 1 − T/2)) = ratio`` (``ratio > 1``, ``t + 1 <= T/2``)."""
    a, b = t - time_extent / 2, t + 1 - time_extent / 2
    if not ratio > 1:
        raise ValueError(f"C({t})/C({t + 1}) = {ratio:.4g} <= 1: no effective mass at t = {t}")

    def f(m: float) -> float:
        return float(np.log(np.cosh(m * a)) - np.log(np.cosh(m * b)) - np.log(ratio))

    hi = 1.0
    while f(hi) < 0 and hi < 1e3:
        hi *= 2
    return float(brentq(f, 1e-12, hi, xtol=1e-14))


def _dlogr_dm(m: float, t: int, time_extent: int) -> float:
    a, b = t - time_extent / 2, t + 1 - time_extent / 2
    return float(a * np.tanh(m * a) - b * np.tanh(m * b))


def effective_mass_pairs(names: tuple[str, ...], time_extent: int) -> list[tuple[int, int, int]]:
    """``[(t, index of pion@t, index of pion@t+1)]`` for every usable pair in ``names`` (``t + 1 <= T/2``)."""
    idx = {int(m.group(1)): i for i, n in enumerate(names) if (m := _PION.match(n))}
    return [(t, idx[t], idx[t + 1]) for t in sorted(idx) if t + 1 in idx and t + 1 <= time_extent / 2]


def effective_mass_derivative(terms: TangentTerms, coef: Any, t: int, time_extent: int,
                              S: float | Windowing = 1.5) -> dict[str, Stats]:
    """``{"m_eff": m_eff(t), "tangent": d m_eff(t)/dα, "connected": the same with v = 0, "difference": tangent minus
    connected with the error of the difference}`` as :class:`Stats`.

    ``terms`` must hold ``pion@t`` and ``pion@t+1`` (``t + 1 <= T/2``, ``T = time_extent``); ``coef`` as for
    :func:`corrflow.tangent.estimate`.  ``ValueError`` otherwise, or when ``<C(t)> <= <C(t+1)>``.
    """
    pairs = {p[0]: p for p in effective_mass_pairs(terms.names, time_extent)}
    if t not in pairs:
        raise ValueError(f"m_eff at t = {t} needs pion@{t} and pion@{t + 1} with t + 1 <= {time_extent // 2} "
                         f"(got {', '.join(terms.names)})")
    _, i0, i1 = pairs[t]
    ds = derived_series(terms, coef, [i0, i1])
    cosh_effective_mass(ds.shift[0] / ds.shift[1], t, time_extent)  # the clear error up front

    def parts(m: np.ndarray) -> tuple[float, float]:
        c, dc = ds.unpack(m)
        mass = cosh_effective_mass(c[0] / c[1], t, time_extent)
        dr = dc[0] / c[1] - c[0] * dc[1] / c[1] ** 2
        return mass, dr / (_dlogr_dm(mass, t, time_extent) * c[0] / c[1])

    return {"m_eff": gamma_method(ds.with_field, lambda m: parts(m)[0], S=S),
            "tangent": gamma_method(ds.with_field, lambda m: parts(m)[1], S=S),
            "connected": gamma_method(ds.connected, lambda m: parts(m)[1], S=S),
            "difference": ds.difference(lambda m: parts(m)[1], S=S)}
