r"""Estimators of ``dO/dm`` on plain arrays (chains as replicas, Monte Carlo order along each chain).

Scalar observables (:func:`scalar_estimates`): Wolff's Gamma method or the binned jackknife on the paired
primaries of one base configuration (``O(U_i)``, ``w_i O(f(U_i))``, ``w_i``, ...), ratios as derived quantities.
Pion mass (:func:`pion_mass_estimates`): one binned jackknife over the base configurations carrying all paired
correlators; every sample recomputes the reweighted correlators, the ``cosh_ratio`` effective masses
(:func:`corrflow.stats.effective_mass`, ``t = 0 .. T/2 - 1``) and a correlated plateau fit.

Array conventions: scalar observables and log weights ``(R, n)``; correlators ``(R, n, T)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from corrflow.stats import normalised_weights
from corrflow.stats import MIN_BINS

__all__ = ["Estimate", "PionFit", "TangentSeries", "independent_bin_size", "pion_bin_size", "pion_mass_estimates",
           "scalar_estimates", "tangent_series", "variance_reduction"]


class Estimate(NamedTuple):
    """One estimate of ``dO/dm`` (or of ``O``): value, error, ``tau_int`` (NaN where not defined)."""

    value: float
    error: float
    tau_int: float = math.nan

    def __str__(self) -> str:
        from corrflow.stats import format_value_error

        if not math.isfinite(self.value):
            return "n/a"
        return format_value_error(self.value, self.error) if self.error > 0 else f"{self.value:.6g}"


class TangentSeries(NamedTuple):
    """The tangent estimator's per-configuration series of one observable (``(R, n)``; ``(R, n, T)`` for the pion
    correlator): ``o`` the observable, ``d`` = ``v.grad O + dO/dm`` (explicit, at fixed links), ``r`` = ``R_v =
    dS/dm + v.grad S - div v`` (``(R, n)``), and for the connected estimator of the pion mass ``d0`` = ``dO/dm`` alone
    and ``ds`` = ``dS/dm``."""

    o: np.ndarray
    d: np.ndarray
    r: np.ndarray
    d0: np.ndarray
    ds: np.ndarray


def tangent_series(tan: Any, names: tuple[str, ...]) -> tuple[dict[str, TangentSeries], list[Any], float]:
    """The series per observable (``pion``: the ``pion@t`` columns stacked ``(R, n, T)``) from the two-pass
    measurement ``tan`` (:class:`corrflow.pipeline.TangentMeasurement` of
    :func:`analysis.mass_dependence.measure.prepare`: the field cross-fitted by least squares of ``Var[R_v]``, no
    configuration in its own coefficients), the per-fold fits and the fit's seconds."""
    ds, do, o, r = (np.asarray(x, float) for x in (tan.ds, tan.do, tan.o, tan.r))
    d = np.asarray(tan.dvo, float) + do
    out: dict[str, TangentSeries] = {}
    pion = [i for i, n in enumerate(names) if n.startswith("pion@")]
    for i, n in enumerate(names):
        if i not in pion:
            out[n] = TangentSeries(o[..., i], d[..., i], r, do[..., i], ds)
    if pion:
        out["pion"] = TangentSeries(o[..., pion], d[..., pion], r, do[..., pion], ds)
    return out, list(tan.fits), float(tan.fit_s)


def _pull(a: Estimate, b: Estimate) -> float:
    """``(a - b) / sqrt(sigma_a^2 + sigma_b^2)``: independent estimates."""
    err = math.hypot(a.error, b.error)
    return (a.value - b.value) / err if err > 0 else math.nan


def _stats(prims: list[np.ndarray], func: Callable[[np.ndarray], float], method: str,
           bin_size: int | None, S: Any = 1.5) -> Estimate:
    from corrflow.stats import binned_jackknife, gamma_method

    data = np.stack(prims)  # (n_obs, R, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        st = gamma_method(data, func=func, S=S) if method == "gamma" else binned_jackknife(data, func=func,
                                                                                      bin_size=bin_size, S=S)
    return Estimate(float(st.value), float(st.error), float(st.tau_int))


def scalar_estimates(obs: str, base: dict[str, np.ndarray], flowed: dict[str, np.ndarray],
                     direct: dict[str, np.ndarray], independent: dict[str, np.ndarray], log_w: np.ndarray,
                     log_w_direct: np.ndarray, dm: float, n_flavors: int, volume: int, *, method: str = "gamma",
                     bin_size: int | None = None, tangent: TangentSeries | None = None, S: Any = 1.5
                     ) -> dict[str, Any]:
    """All estimators of ``dO/dm`` for a scalar observable ``obs`` (``condensate``, ``plaquette``, ``chi_top``).

    Inputs are ``(R, n)`` arrays (chains as replicas): ``base[obs]`` = ``O_m(U_i)``, ``flowed[obs]`` =
    ``O_{m+dm}(f(U_i))``, ``direct[obs]`` = ``O_{m+dm}(U_i)``, ``independent[obs]`` on the target ensemble
    ``(R', n')``; ``base["condensate"]`` (and ``base["dcondensate_dm"]`` for the condensate) for the connected
    estimator ``d<O>/dm = <dO/dm> - <O dS/dm> + <O><dS/dm>`` with ``dS_eff/dm = -n_f V Sigma``.  Returns
    ``{"derivative": {estimator: Estimate}, "value_base", "value_target": {estimator: Estimate}, "pulls":
    {"a-b": float}}``; pulls of paired estimators use the derived difference (their correlation included).
    ``tangent``: the tangent estimator's series of ``obs`` (:func:`tangent_series`) on the same base configurations:
    ``d<O>/dm = <d> - (<o r> - <o><r>)``, estimator ``tangent``.  ``S``: the Gamma method's windowing (Wolff's
    ``S`` or a :class:`corrflow.stats.Windowing` with the exponential tail of a slow mode).
    """
    w, wd = normalised_weights(log_w), normalised_weights(log_w_direct)
    ob, of, od = base[obs], flowed[obs], direct[obs]
    s = -n_flavors * volume * base["condensate"]  # dS_eff/dm per configuration
    prims = [ob, w * of, w, wd * od, wd, ob * s, s]
    explicit = obs == "condensate"
    if explicit:
        prims.append(base["dcondensate_dm"])
    it = len(prims)
    if tangent is not None:  # centred (the connected correlation is shift invariant): well-scaled products
        oc, rc = tangent.o - tangent.o.mean(), tangent.r - tangent.r.mean()
        prims += [tangent.d, oc, rc, oc * rc]

    def f_flowed(a: np.ndarray) -> float:
        return (a[1] / a[2] - a[0]) / dm

    def f_direct(a: np.ndarray) -> float:
        return (a[3] / a[4] - a[0]) / dm

    def f_conn(a: np.ndarray) -> float:
        return (a[7] if explicit else 0.0) - a[5] + a[0] * a[6]

    def f_tan(a: np.ndarray) -> float:
        return a[it] - (a[it + 3] - a[it + 1] * a[it + 2])

    funcs = {"flowed": f_flowed, "direct": f_direct, "connected": f_conn}
    if tangent is not None:
        funcs["tangent"] = f_tan
    der = {k: _stats(prims, f, method, bin_size, S) for k, f in funcs.items()}
    vb = _stats([ob], lambda a: a[0], method, bin_size, S)
    vi = _stats([independent[obs]], lambda a: a[0], method, bin_size, S)
    der["independent"] = Estimate((vi.value - vb.value) / dm, math.hypot(vi.error, vb.error) / abs(dm), math.nan)
    targets = {"flowed": _stats(prims, lambda a: a[1] / a[2], method, bin_size, S),
               "direct": _stats(prims, lambda a: a[3] / a[4], method, bin_size, S), "independent": vi}
    pulls = {}
    pairs = [("flowed", "direct"), ("flowed", "connected"), ("direct", "connected")]
    if tangent is not None:
        pairs += [("tangent", "flowed"), ("tangent", "connected")]
    for a, b in pairs:
        fa, fb = funcs[a], funcs[b]
        d = _stats(prims, lambda x, fa=fa, fb=fb: fa(x) - fb(x), method, bin_size, S)
        pulls[f"{a}-{b}"] = d.value / d.error if d.error > 0 else math.nan
    for a in ("flowed", "direct", "connected") + (("tangent",) if tangent is not None else ()):
        pulls[f"{a}-independent"] = _pull(der[a], der["independent"])
    return {"derivative": der, "value_base": vb, "value_target": targets, "pulls": pulls}


def _jackknife_means(prims: np.ndarray, bin_size: int) -> np.ndarray:
    """Leave-one-bin-out means ``(B, n_obs)`` of primaries ``(n_obs, R, n)`` (bins along each chain)."""
    from corrflow.stats import jackknife_samples

    return np.asarray(jackknife_samples(prims, func=lambda a: a, bin_size=bin_size))


def _jk_error(samples: np.ndarray) -> float:
    b = len(samples)
    return float(math.sqrt((b - 1) / b * np.sum((samples - samples.mean()) ** 2)))


class PionFit(NamedTuple):
    """Plateau fit of the ``cosh_ratio`` effective mass: central mass, jackknife samples ``(B,)``, ``m_eff(t)``
    central ``(T/2,)`` (``t = 0 .. T/2 - 1``) and its jackknife error, chi^2/dof of the correlated fit."""

    mass: float
    samples: np.ndarray
    m_eff: np.ndarray
    m_eff_error: np.ndarray
    chi2_dof: float


def _plateau(corr_central: np.ndarray, corr_samples: np.ndarray, t_min: int, t_max: int) -> PionFit:
    """Effective masses of a correlator (central ``(T,)`` and jackknife samples ``(B, T)``) and a correlated
    constant fit over ``t_min .. t_max`` with the jackknife covariance fixed (errors from refitting samples)."""
    from corrflow.stats import effective_mass

    return _fit_curve(effective_mass(corr_central, "cosh_ratio"), effective_mass(corr_samples, "cosh_ratio"),
                      t_min, t_max, "the cosh effective mass is undefined (C(t) <= C(t+1))")


def _fit_curve(mc: np.ndarray, ms: np.ndarray, t_min: int, t_max: int, undefined: str) -> PionFit:
    """Correlated constant fit of a curve over ``t_min .. t_max`` (central ``(k,)``, jackknife samples ``(B, k)``,
    the jackknife covariance held fixed, errors from refitting every sample)."""
    from corrflow.stats import FitError, resampled_fit

    ts = np.arange(t_min, t_max + 1)
    if not np.all(np.isfinite(mc[ts])) or not np.all(np.isfinite(ms[:, ts])):
        raise ValueError(f"{undefined} somewhere in t = {t_min}..{t_max}; the correlator is too noisy there: lower "
                         "--t-max or use more configurations")
    b = len(ms)
    err = np.sqrt((b - 1) / b * np.sum((ms - ms.mean(0)) ** 2, axis=0))
    try:
        fit = resampled_fit(ts, mc[ts], ms[:, ts], order=0, kind="jackknife")
    except FitError:
        fit = resampled_fit(ts, mc[ts], ms[:, ts], order=0, kind="jackknife", svd_cut=1e-6)
    chi2_dof = fit.chi2 / fit.dof if fit.dof > 0 else math.nan
    return PionFit(float(fit.params[0]), np.asarray(fit.param_replicas)[:, 0], mc, err, float(chi2_dof))


def _slope_fits(tangent: TangentSeries, bin_size: int, t_min: int, t_max: int,
                which: tuple[str, ...] = ("tangent", "connected")) -> dict[str, PionFit]:
    """``dm_eff(t)/dm`` (cosh_ratio) by the tangent estimator (``dC/dm = <d> - <C R_v>_c``) and the connected one
    (``v = 0``: ``<dC/dm> - <C dS/dm>_c``), both from one binned jackknife over the base configurations, each sample
    recomputing the means, the effective-mass slopes (:func:`corrflow.stats.effective_mass_slope`) and the plateau
    fit; the samples are paired with those of :func:`pion_mass_estimates` (same bins).  ``which``: the estimators
    to fit."""
    from corrflow.stats import effective_mass_slope

    c = np.moveaxis(tangent.o, -1, 0)  # (T, R, n)
    T = c.shape[0]
    rc, sc = tangent.r - tangent.r.mean(), tangent.ds - tangent.ds.mean()
    prims = np.concatenate([c, np.moveaxis(tangent.d, -1, 0), c * rc, rc[None], np.moveaxis(tangent.d0, -1, 0),
                            c * sc, sc[None]])
    jk = _jackknife_means(prims, bin_size)
    central = jk.mean(axis=0)
    out = {}
    for name, lo in (("tangent", T), ("connected", 3 * T + 1)):
        if name not in which:
            continue

        def dc(m: np.ndarray, lo: int = lo) -> tuple[np.ndarray, np.ndarray]:
            cm = m[..., :T]
            return cm, m[..., lo:lo + T] - (m[..., lo + T:lo + 2 * T] - cm * m[..., lo + 2 * T:lo + 2 * T + 1])

        out[name] = _fit_curve(effective_mass_slope(*dc(central), "cosh_ratio"),
                               effective_mass_slope(*dc(jk), "cosh_ratio"), t_min, t_max,
                               f"the {name} slope of the cosh effective mass is undefined")
    return out


def pion_bin_size(c_base: np.ndarray, c_flowed: np.ndarray, c_direct: np.ndarray, log_w: np.ndarray,
                  log_w_direct: np.ndarray, t: int, factor: float, S: Any = 1.5) -> tuple[int, float]:
    """Automatic jackknife bin size ``ceil(factor * tau)`` with ``tau`` the largest Gamma-method ``tau_int`` of
    ``C(t)`` on the base and of its flowed and direct correlated differences; capped so that at least
    ``MIN_BINS`` bins remain.  Inputs ``(R, n, T)`` and ``(R, n)``; returns ``(bin size, tau)``."""
    from corrflow.stats import correlated_difference, gamma_method

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        taus = [gamma_method(c_base[..., t], S=S).tau_int,
                correlated_difference(c_base[..., t], c_flowed[..., t], log_w, S=S).tau_int,
                correlated_difference(c_base[..., t], c_direct[..., t], log_w_direct, S=S).tau_int]
    tau = float(max(taus))
    r, n = c_base.shape[:2]
    cap = max(1, (r * n) // MIN_BINS)
    return max(1, min(cap, math.ceil(factor * tau))), tau


def independent_bin_size(c_independent: np.ndarray, t: int, factor: float, S: Any = 1.5) -> int:
    """Bin size of the independent ensemble: ``ceil(factor * tau_int(C(t)))``, capped to keep ``MIN_BINS`` bins."""
    from corrflow.stats import gamma_method

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tau = gamma_method(c_independent[..., t], S=S).tau_int
    r, n = c_independent.shape[:2]
    return max(1, min(max(1, r * n // MIN_BINS), math.ceil(factor * tau)))


def pion_mass_estimates(c_base: np.ndarray, c_flowed: np.ndarray, c_direct: np.ndarray, c_independent: np.ndarray,
                        log_w: np.ndarray, log_w_direct: np.ndarray, dm: float, *, t_min: int, t_max: int,
                        bin_size: int, bin_size_independent: int, tangent: TangentSeries | None = None,
                        connected: TangentSeries | None = None) -> dict[str, Any]:
    """Estimators of ``dm_pi/dm`` from pion correlators: ``c_base`` ``(R, n, T)`` = ``C_m(U_i)``, ``c_flowed`` =
    ``C_{m+dm}(f(U_i))``, ``c_direct`` = ``C_{m+dm}(U_i)``, ``c_independent`` ``(R', n', T)`` on the target
    ensemble; log weights ``(R, n)``.

    One binned jackknife over the base configurations carries all paired primaries (``C_b``, ``w C_f``, ``w``,
    ``w_d C_d``, ``w_d``): every sample recomputes the reweighted correlators, effective masses and plateau fits
    of base, flowed and direct, so their differences keep the pairing.  Returns ``derivative`` and
    ``value_target`` ``{estimator: Estimate}``, ``value_base``, ``pulls``, ``fits`` ``{name: PionFit}`` (effective
    masses), ``slopes`` ``{tangent, connected: PionFit}`` (effective-mass slopes; empty without ``tangent``),
    ``n_bins``.  With ``tangent`` (the tangent series of the correlator, :func:`tangent_series`) also the tangent
    and connected estimators, the derivative at ``m`` through the slope of the effective mass (:func:`_slope_fits`,
    same bins: pulls against flowed and direct keep the pairing); without it, ``connected`` (the series of the
    zero field: ``o = C``, ``d = d0 = dC/dm`` at fixed links, ``r = ds = dS/dm``) gives the connected estimator alone;
    with neither, the connected estimator is NaN.
    """
    T = c_base.shape[-1]
    w, wd = normalised_weights(log_w), normalised_weights(log_w_direct)
    cb = np.moveaxis(c_base, -1, 0)  # (T, R, n)
    prims = np.concatenate([cb, w[None] * np.moveaxis(c_flowed, -1, 0), w[None],
                            wd[None] * np.moveaxis(c_direct, -1, 0), wd[None]])
    jk = _jackknife_means(prims, bin_size)  # (B, 3T + 2)
    central = jk.mean(axis=0)  # = mean over the used samples

    def split(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (m[..., :T], m[..., T:2 * T] / m[..., 2 * T:2 * T + 1],
                m[..., 2 * T + 1:3 * T + 1] / m[..., 3 * T + 1:3 * T + 2])

    (cb_c, cf_c, cd_c), (cb_s, cf_s, cd_s) = split(central), split(jk)
    fits = {"base": _plateau(cb_c, cb_s, t_min, t_max), "flowed": _plateau(cf_c, cf_s, t_min, t_max),
            "direct": _plateau(cd_c, cd_s, t_min, t_max)}
    jk_i = _jackknife_means(np.moveaxis(c_independent, -1, 0), bin_size_independent)
    fits["independent"] = _plateau(jk_i.mean(axis=0), jk_i, t_min, t_max)

    def est(f: PionFit) -> Estimate:
        return Estimate(f.mass, _jk_error(f.samples))

    der: dict[str, Estimate] = {}
    diff_samples = {}
    for k in ("flowed", "direct"):
        d = (fits[k].samples - fits["base"].samples) / dm
        diff_samples[k] = d
        der[k] = Estimate((fits[k].mass - fits["base"].mass) / dm, _jk_error(d))
    vb, vi = est(fits["base"]), est(fits["independent"])
    der["independent"] = Estimate((vi.value - vb.value) / dm, math.hypot(vi.error, vb.error) / abs(dm))
    der["connected"] = Estimate(math.nan, math.nan)
    slopes = (_slope_fits(tangent, bin_size, t_min, t_max) if tangent is not None else
              _slope_fits(connected, bin_size, t_min, t_max, ("connected",)) if connected is not None else {})
    for k, f in slopes.items():
        der[k] = Estimate(f.mass, _jk_error(f.samples))
        diff_samples[k] = f.samples

    def paired(a: str, b: str) -> float:
        e = _jk_error(diff_samples[a] - diff_samples[b])
        return (der[a].value - der[b].value) / e if e > 0 else math.nan

    pulls = {"flowed-direct": paired("flowed", "direct"),
             "flowed-independent": _pull(der["flowed"], der["independent"]),
             "direct-independent": _pull(der["direct"], der["independent"])}
    if slopes:
        pulls.update({"flowed-connected": paired("flowed", "connected"),
                      "connected-independent": _pull(der["connected"], der["independent"])})
    if tangent is not None:
        pulls.update({"tangent-flowed": paired("tangent", "flowed"),
                      "tangent-connected": paired("tangent", "connected"),
                      "tangent-independent": _pull(der["tangent"], der["independent"])})
    return {"derivative": der, "value_base": vb,
            "value_target": {k: est(fits[k]) for k in ("flowed", "direct", "independent")},
            "pulls": pulls, "fits": fits, "slopes": slopes, "n_bins": len(jk)}


def variance_reduction(flowed: Estimate, other: Estimate, cost_flowed: float, cost_other: float
                       ) -> tuple[float, float]:
    """``((sigma_other / sigma_flowed)^2, the same x cost_other / cost_flowed)``; NaN where undefined."""
    if not (math.isfinite(other.error) and flowed.error > 0):
        return math.nan, math.nan
    v = (other.error / flowed.error) ** 2
    return v, v * cost_other / cost_flowed if cost_flowed > 0 else math.nan
