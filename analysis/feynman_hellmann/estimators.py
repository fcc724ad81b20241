r"""The Feynman–Hellmann estimators on plain arrays: effective ``dE/dlambda(t)`` curves of the five estimators and
their plateau fits (generic pieces from :mod:`corrflow.stats`: :func:`~corrflow.stats.flowed_curve`,
:func:`~corrflow.stats.symmetric_curve`, :func:`~corrflow.stats.connected_curve`, :func:`~corrflow.stats.tangent_curve`,
:func:`~corrflow.stats.independent_curve`, :func:`~corrflow.stats.plateau_fit`, :func:`~corrflow.stats.auto_bin_size`).

Array conventions: correlators ``(R, n, T)`` (``R`` chains as replicas, Monte Carlo order along ``n``), log weights
and the source operator ``O`` ``(R, n)``; curves at the times :func:`corrflow.stats.effective_times` of the kind.
The tangent estimator's inputs (:class:`TangentSeries`) come from its per-configuration terms and the cross-fitted
field (:func:`tangent_series`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from corrflow.stats import (
    Curve,
    Plateau,
    auto_bin_size,
    connected_curve,
    effective_mass_curve,
    flowed_curve,
    fold_correlator,
    independent_curve,
    normalised_weights,
    plateau_fit,
    symmetric_curve,
    tangent_curve,
)

__all__ = ["Binning", "FHEstimates", "TangentSeries", "binning", "dE_dlambda", "gluon_momentum_fraction",
           "tangent_series"]


def gluon_momentum_fraction(de_dlam: float, de_err: float, m_pi: float, m_err: float,
                            beta: float) -> tuple[float, float]:
    """Bare ``<x>_g`` of a hadron at rest from ``dE/dlambda`` of the source ``O = (1/3) sum (spatial - temporal)
    Re tr P``: with ``beta O = sum_x T_44`` (Euclidean gluonic EMT, ``T_44 = (E^2 - B^2)/2``) and
    ``<h| int d^3x T_44 |h> = -(3/4) m <x>_g`` (unit-normalised state at rest),
    ``<x>_g = -(4/3) beta (dE/dlambda) / m``.  Errors combined in quadrature (neglecting their correlation).
    Unrenormalised (``Z_gg`` and quark mixing not applied)."""
    x = -(4.0 / 3.0) * beta * de_dlam / m_pi
    err = abs(x) * math.sqrt((de_err / de_dlam) ** 2 + (m_err / m_pi) ** 2) if de_dlam and m_pi else math.nan
    return x, err


@dataclass(frozen=True)
class TangentSeries:
    """The tangent estimator's per-configuration series ``(R, n, ...)``: the pion correlator ``c`` ``(R, n, T)``,
    ``r`` = ``R_v = dS/dlam + v.grad S - div v`` ``(R, n)`` and ``dv_c`` = ``v.grad C(t)`` ``(R, n, T)`` with the
    cross-fitted field; ``fits`` the per-fold least-squares fits (:class:`corrflow.tangent.FieldFit`), ``fit_s`` the
    seconds the fit took."""

    c: np.ndarray
    r: np.ndarray
    dv_c: np.ndarray
    fits: list[Any]
    fit_s: float

    @property
    def var_reduction_r(self) -> float:
        """``Var[dS/dlam] / Var[R_v]`` on the training configurations, averaged over the folds."""
        return float(np.mean([f.reduction for f in self.fits])) if self.fits else 1.0


def tangent_series(tan: Any) -> TangentSeries:
    """The series of :func:`corrflow.stats.tangent_curve` from the two-pass measurement ``tan``
    (:class:`corrflow.pipeline.TangentMeasurement`: ``o`` ``(R, n, T)``, ``r`` ``(R, n)``, ``dvo`` ``(R, n, T)``, the
    field cross-fitted by least squares of ``Var[R_v]``, no configuration in its own coefficients)."""
    return TangentSeries(np.asarray(tan.o, float), np.asarray(tan.r, float), np.asarray(tan.dvo + tan.do, float),
                         list(tan.fits), float(tan.fit_s))


@dataclass(frozen=True)
class Binning:
    """Jackknife bins: ``size`` for the base chains (all paired estimators), ``size_independent`` for the
    independent ensembles, the largest ``tau_int`` behind each (NaN when given) and whether ``size`` was capped to
    keep ``MIN_BINS`` bins."""

    size: int
    size_independent: int
    tau: float = math.nan
    tau_independent: float = math.nan
    capped: bool = False


def binning(correlators: Mapping[str, np.ndarray], source: np.ndarray, log_w: list[np.ndarray],
            log_w_direct: list[np.ndarray], t: int, *, bin_size: int = 0, factor: float = 20.0,
            tangent: TangentSeries | None = None, S: Any = 1.5) -> Binning:
    """Bin sizes (``bin_size > 0``: that one for every ensemble): ``ceil(factor * tau_max)``, ``tau_max`` the
    largest Gamma-method ``tau_int`` of ``C(t)``, ``O``, ``w``, ``w C_lam(t)`` and ``w_d`` on the base chains
    (with ``tangent``: also ``R_v`` and ``v.grad C(t)``; ``C(t)`` on the independent ones); ``correlators`` keyed
    ``base``, ``flowed[_minus]``, ``independent[_minus]``, ``log_w`` / ``log_w_direct`` per flow (``+lam``
    first).  ``S``: the Gamma method's windowing of those ``tau_int`` (:func:`corrflow.stats.auto_bin_size`)."""
    if bin_size:
        return Binning(int(bin_size), int(bin_size))
    series = [fold_correlator(correlators["base"])[..., t], source]
    if tangent is not None:
        series += [tangent.r, fold_correlator(tangent.dv_c)[..., t]]
    for i, (lw, lwd) in enumerate(zip(log_w, log_w_direct)):
        w = normalised_weights(lw)
        ff = fold_correlator(correlators["flowed" + ("" if i == 0 else "_minus")])[..., t]
        series += [w, w * ff, normalised_weights(lwd)]
    bs, tau, capped = auto_bin_size(series, factor=factor, S=S)
    ind = [fold_correlator(v)[..., t] for k, v in correlators.items() if k.startswith("independent")]
    bs_ind, tau_ind, _ = auto_bin_size(ind, factor=factor, S=S)
    return Binning(bs, bs_ind, tau, tau_ind, capped)


@dataclass(frozen=True)
class FHEstimates:
    """Effective curves and plateaus per estimator (``flowed``, [``tangent``,] ``connected``, ``direct``,
    ``independent``), the
    pion-mass plateau (NaN if its effective mass is undefined in the range) and the base effective mass of the
    ensemble-mean correlator ``(k,)``."""

    curves: dict[str, Curve]
    plateaus: dict[str, Plateau]
    m_pi: Plateau
    m_eff_base: np.ndarray


def dE_dlambda(correlators: Mapping[str, np.ndarray], source: np.ndarray, log_w: list[np.ndarray],
               log_w_direct: list[np.ndarray], lam: float, bins: Binning, *, kind: str, t_min: int, t_max: int,
               fit_weights: str, symmetric: bool, tangent: TangentSeries | None = None) -> FHEstimates:
    """The estimators of ``dE/dlambda`` (module docstring of :mod:`analysis.feynman_hellmann`) and their
    plateau fits over ``t_min .. t_max``.  Inputs as in :func:`binning`; ``symmetric``: flows to ``+-lam``
    (central differences; the independent estimator uses the ensembles at ``+-lam``); ``tangent``: the tangent
    estimator's series on the base configurations (``None``: no tangent estimator)."""
    from corrflow.stats import effective_mass

    c = correlators
    kw: dict[str, Any] = dict(kind=kind, bin_size=bins.size)
    curves: dict[str, Curve] = {}
    if symmetric:
        curves["flowed"] = symmetric_curve(c["flowed"], log_w[0], c["flowed_minus"], log_w[1], lam, **kw)
        curves["direct"] = symmetric_curve(c["base"], log_w_direct[0], c["base"], log_w_direct[1], lam, **kw)
        curves["independent"] = independent_curve(c["independent_minus"], c["independent"], 2 * lam, kind=kind,
                                                  bin_size_a=bins.size_independent,
                                                  bin_size_b=bins.size_independent,
                                                  ensembles=("independent_minus", "independent"))
    else:
        curves["flowed"] = flowed_curve(c["base"], c["flowed"], log_w[0], lam, **kw)
        curves["direct"] = flowed_curve(c["base"], c["base"], log_w_direct[0], lam, **kw)
        curves["independent"] = independent_curve(c["base"], c["independent"], lam, kind=kind, bin_size_a=bins.size,
                                                  bin_size_b=bins.size_independent)
    if tangent is not None:
        curves["tangent"] = tangent_curve(tangent.c, tangent.r, tangent.dv_c, **kw)
    curves["connected"] = connected_curve(c["base"], source, **kw)
    order = tuple(k for k in ("flowed", "tangent", "connected", "direct", "independent") if k in curves)
    plateaus = {k: plateau_fit(curves[k], t_min, t_max, weights=fit_weights) for k in order}
    cb = np.asarray(c["base"], dtype=np.float64)
    m_eff = effective_mass(cb.reshape(-1, cb.shape[-1]).mean(axis=0), kind)
    try:  # the pion mass is context for the summary; an undefined effective mass there must not stop the run
        m_pi = plateau_fit(effective_mass_curve(cb, kind, bins.size), t_min, t_max, weights=fit_weights)
    except ValueError:
        m_pi = Plateau(math.nan, math.nan, math.nan, 0, math.nan, t_min, t_max, {})
    return FHEstimates({k: curves[k] for k in order}, plateaus, m_pi, m_eff)
