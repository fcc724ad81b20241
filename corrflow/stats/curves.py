r"""Effective-mass curves with jackknife errors from paired and independent samples, and plateau fits.

A :class:`Curve` is an estimate of ``d E / d lambda (t)`` (or any vector quantity) with its scaled jackknife
deviations per independent ensemble, so that estimators sharing an ensemble (paired samples) keep their
correlation: ``cov = sum_e dev_e^T dev_e``, and :func:`pull` of two plateaus uses the deviations of their difference.

* :func:`flowed_curve` -- ``[m_eff(<w C(f(U))>/<w>) - m_eff(<C(U)>)] / lambda`` (flowed or direct reweighting);
* :func:`symmetric_curve` -- the same from two flows ``0 -> +-lambda``;
* :func:`connected_curve` -- ``d m_eff / d lambda`` at ``lambda = 0`` from ``-<C O>_c``;
* :func:`tangent_curve` -- the same by the tangent-flow estimator ``<v.grad C> - <C R_v>_c`` (:mod:`corrflow.tangent`);
* :func:`independent_curve` -- the difference of two independent ensembles;
* :func:`effective_mass_curve` -- the jackknife effective mass of one ensemble;
* :func:`plateau_fit` -- constant fit over ``t_min .. t_max`` (jackknife error, correlated chi^2);
* :func:`auto_bin_size` -- jackknife bin size from the Gamma-method ``tau_int``.

Binning is along each chain (chains pooled as replicas); inputs are ``(n, ...)`` or ``(R, n, ...)`` arrays.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .weights import normalised_weights
from .spectroscopy import _check_kind, _meff_folded, _meff_slope_folded, effective_times, fold_correlator

__all__ = ["FIT_WEIGHTS", "MIN_BINS", "Curve", "Plateau", "auto_bin_size", "connected_curve", "effective_mass_curve",
           "flowed_curve",
           "independent_curve", "plateau_fit", "pull", "symmetric_curve", "tangent_curve"]

#: fewest jackknife bins (all chains together) kept by the automatic bin size
MIN_BINS = 20


@dataclass(frozen=True)
class Curve:
    """An estimate of ``dE/dlam(t)`` (or any vector quantity) with its jackknife deviations per ensemble.

    Attributes
    ----------
    t : ndarray (k,)
        Times.
    value : ndarray (k,)
        Estimate on the full samples (NaN where undefined).
    dev : dict ensemble -> ndarray (B_e, k)
        Scaled jackknife deviations ``sqrt((B_e - 1)/B_e) (J_b - mean_b J_b)`` of the leave-one-bin-out
        estimates of each independent ensemble; the covariance is ``sum_e dev_e^T dev_e``.
    bin_size : dict ensemble -> int
        Configurations per bin.
    """

    t: np.ndarray
    value: np.ndarray
    dev: Mapping[str, np.ndarray]
    bin_size: Mapping[str, int] = field(default_factory=dict)

    @property
    def cov(self) -> np.ndarray:
        """Jackknife covariance ``(k, k)``."""
        k = len(self.value)
        out = np.zeros((k, k))
        for d in self.dev.values():
            out = out + d.T @ d
        return out

    @property
    def error(self) -> np.ndarray:
        """One-sigma errors ``(k,)``."""
        return np.sqrt(np.diag(self.cov))

    @property
    def n_bins(self) -> dict[str, int]:
        return {k: int(v.shape[0]) for k, v in self.dev.items()}

    def valid(self) -> np.ndarray:
        """Bool ``(k,)``: value and all jackknife samples finite."""
        ok = np.isfinite(self.value)
        for d in self.dev.values():
            ok &= np.all(np.isfinite(d), axis=0)
        return ok


def _scaled_dev(samples: np.ndarray) -> np.ndarray:
    b = samples.shape[0]
    return math.sqrt((b - 1) / b) * (samples - samples.mean(axis=0))


def _as_chains(x: Any, name: str, ndim_inner: int) -> np.ndarray:
    """``(n, *inner)`` or ``(R, n, *inner)`` -> ``(R, n, *inner)`` float64, finite."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == ndim_inner + 1:
        a = a[None]
    if a.ndim != ndim_inner + 2:
        raise ValueError(f"{name} must have shape (n{', ...' if ndim_inner else ''}) or (chains, n"
                         f"{', ...' if ndim_inner else ''}), got {a.shape}")
    if a.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 configurations per chain, got {a.shape[1]}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite values")
    return a


def _bins(x: np.ndarray, bin_size: int) -> np.ndarray:
    """Bin means pooled over chains: ``(R, n, ...)`` -> ``(B, ...)`` (remainders dropped)."""
    r, n = x.shape[:2]
    per = n // bin_size
    used = x[:, : per * bin_size]
    return used.reshape((r, per, bin_size) + x.shape[2:]).mean(axis=2).reshape((r * per,) + x.shape[2:])


def _check_bin_size(bin_size: int, r: int, n: int, name: str) -> int:
    if int(bin_size) != bin_size or bin_size < 1:
        raise ValueError(f"bin_size must be a positive integer, got {bin_size!r}")
    bin_size = int(bin_size)
    if r * (n // bin_size) < 2:
        raise ValueError(f"bin_size = {bin_size} leaves fewer than 2 jackknife bins for {name} "
                         f"({r} chain(s) of {n} configurations)")
    return bin_size


def _jackknife(prims: Sequence[np.ndarray], func: Callable[..., np.ndarray], bin_size: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """``(func(means), func(leave-one-bin-out means))`` with ``func`` vectorised over a leading axis;
    ``prims`` are ``(R, n, ...)`` arrays of one ensemble."""
    bins = [_bins(p, bin_size) for p in prims]
    nb = bins[0].shape[0]
    central = [b.mean(axis=0) for b in bins]
    loo = [(b.sum(axis=0, keepdims=True) - b) / (nb - 1) for b in bins]
    return np.asarray(func(*central), float), np.asarray(func(*loo), float)


def _check_lam(lam: float) -> float:
    lam = float(lam)
    if not math.isfinite(lam) or lam == 0.0:
        raise ValueError(f"lam must be finite and non-zero (it divides the difference), got {lam}")
    return lam


def _check_pair(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"{na} {a.shape} and {nb} {b.shape} are not paired configuration by configuration")


def flowed_curve(c_base: Any, c_target: Any, log_w: Any, lam: float, *, kind: str = "cosh", bin_size: int = 1,
                 ensemble: str = "base") -> Curve:
    """Correlated estimate ``[m_eff(C_lam) - m_eff(C_0)] / lam`` from paired samples.

    ``c_base`` ``(n, T)`` / ``(R, n, T)``: ``C(U_i)``; ``c_target`` the same shape: ``C(f(U_i))`` (flowed
    reweighting) or ``C(U_i)`` (direct reweighting); ``log_w`` ``(n,)`` / ``(R, n)`` the matching log weights.
    ``C_lam = <w C_target> / <w>`` and ``C_0 = <C_base>`` are recomputed in every jackknife sample.
    """
    _check_kind(kind, ("cosh", "log"))
    lam = _check_lam(lam)
    cb = _as_chains(c_base, "c_base", 1)
    ct = _as_chains(c_target, "c_target", 1)
    lw = _as_chains(log_w, "log_w", 0)
    _check_pair(cb, ct, "c_base", "c_target")
    _check_pair(cb, lw, "c_base", "log_w")
    if cb.shape != ct.shape:
        raise ValueError(f"c_base {cb.shape} and c_target {ct.shape} must have the same shape")
    bs = _check_bin_size(bin_size, cb.shape[0], cb.shape[1], ensemble)
    w = normalised_weights(lw)
    fb, ft = fold_correlator(cb), fold_correlator(ct)

    def func(wc: np.ndarray, ww: np.ndarray, c0: np.ndarray) -> np.ndarray:
        return (_meff_folded(wc / ww[..., None], kind) - _meff_folded(c0, kind)) / lam

    value, samples = _jackknife([w[..., None] * ft, w, fb], func, bs)
    return Curve(effective_times(cb.shape[-1], kind), value, {ensemble: _scaled_dev(samples)}, {ensemble: bs})


def symmetric_curve(c_plus: Any, log_w_plus: Any, c_minus: Any, log_w_minus: Any, lam: float, *,
                    kind: str = "cosh", bin_size: int = 1, ensemble: str = "base") -> Curve:
    """Symmetric correlated estimate ``[m_eff(C_+lam) - m_eff(C_-lam)] / (2 lam)`` from one base ensemble pushed
    through two flows ``0 -> +lam`` (``c_plus = C(f_+(U_i))``, ``log_w_plus``) and ``0 -> -lam`` (``c_minus``,
    ``log_w_minus``); shapes as in :func:`flowed_curve`.  For ``lam > 0``."""
    _check_kind(kind, ("cosh", "log"))
    lam = _check_lam(lam)
    cp, cm = _as_chains(c_plus, "c_plus", 1), _as_chains(c_minus, "c_minus", 1)
    lp, lm = _as_chains(log_w_plus, "log_w_plus", 0), _as_chains(log_w_minus, "log_w_minus", 0)
    if cp.shape != cm.shape:
        raise ValueError(f"c_plus {cp.shape} and c_minus {cm.shape} must have the same shape")
    _check_pair(cp, lp, "c_plus", "log_w_plus")
    _check_pair(cp, lm, "c_plus", "log_w_minus")
    bs = _check_bin_size(bin_size, cp.shape[0], cp.shape[1], ensemble)
    wp, wm = normalised_weights(lp), normalised_weights(lm)

    def func(a: np.ndarray, wa: np.ndarray, b: np.ndarray, wb: np.ndarray) -> np.ndarray:
        return (_meff_folded(a / wa[..., None], kind) - _meff_folded(b / wb[..., None], kind)) / (2.0 * lam)

    value, samples = _jackknife([wp[..., None] * fold_correlator(cp), wp, wm[..., None] * fold_correlator(cm), wm],
                                func, bs)
    return Curve(effective_times(cp.shape[-1], kind), value, {ensemble: _scaled_dev(samples)}, {ensemble: bs})


def connected_curve(c_base: Any, o_base: Any, *, kind: str = "cosh", bin_size: int = 1,
                    ensemble: str = "base") -> Curve:
    """``dm_eff(t)/dlam`` at ``lam = 0`` from one ensemble: ``dC/dlam = -(<C O> - <C><O>)`` (the source
    operator ``O`` per configuration, ``(n,)`` / ``(R, n)``), through :func:`effective_mass_slope`: the
    :func:`tangent_curve` of the zero field (``R = dS/dlam = O``, no ``v.grad C``)."""
    _check_kind(kind, ("cosh", "log"))
    cb = _as_chains(c_base, "c_base", 1)
    return tangent_curve(cb, o_base, np.zeros_like(cb), kind=kind, bin_size=bin_size, ensemble=ensemble,
                         names=("c_base", "o_base", "dv_c"))


def tangent_curve(c_base: Any, r: Any, dv_c: Any, *, kind: str = "cosh", bin_size: int = 1,
                  ensemble: str = "base", names: tuple[str, str, str] = ("c_base", "r", "dv_c")) -> Curve:
    """``dm_eff(t)/dlam`` at ``lam = 0`` from one ensemble by the tangent-flow estimator (:mod:`corrflow.tangent`):

        dC(t)/dlam = <v.grad C(t)> - (<C(t) R_v> - <C(t)><R_v>),      R_v = dS/dlam + v.grad S - div v,

    unbiased for any vector field ``v`` (``v = 0``: :func:`connected_curve`), through
    :func:`effective_mass_slope`.  ``c_base`` ``(n, T)`` / ``(R, n, T)``: ``C(U_i)``; ``r`` ``(n,)`` / ``(R, n)``:
    ``R_v(U_i)``; ``dv_c`` like ``c_base``: ``v.grad C(U_i)`` (plus any explicit ``dC/dlam`` at fixed links).  The
    means (and the products' means) are recomputed in every jackknife sample; a field fitted on the same
    configurations must be cross-fitted (:func:`corrflow.tangent.cross_fit`) to keep the estimate unbiased."""
    _check_kind(kind, ("cosh", "log"))
    cb = _as_chains(c_base, names[0], 1)
    rr = _as_chains(r, names[1], 0)
    dv = _as_chains(dv_c, names[2], 1)
    _check_pair(cb, rr, names[0], names[1])
    if dv.shape != cb.shape:
        raise ValueError(f"{names[2]} {dv.shape} must have the shape of {names[0]} {cb.shape}")
    bs = _check_bin_size(bin_size, cb.shape[0], cb.shape[1], ensemble)
    rc = rr - rr.mean()  # the connected correlation is shift invariant; centring keeps the products well scaled
    fb = fold_correlator(cb)

    def func(c: np.ndarray, cr: np.ndarray, rm: np.ndarray, d: np.ndarray) -> np.ndarray:
        return _meff_slope_folded(c, d - (cr - c * rm[..., None]), kind)

    value, samples = _jackknife([fb, fb * rc[..., None], rc, fold_correlator(dv)], func, bs)
    return Curve(effective_times(cb.shape[-1], kind), value, {ensemble: _scaled_dev(samples)}, {ensemble: bs})


def independent_curve(c_a: Any, c_b: Any, delta: float, *, kind: str = "cosh", bin_size_a: int = 1,
                      bin_size_b: int = 1, ensembles: tuple[str, str] = ("base", "independent")) -> Curve:
    """``[m_eff(C_b) - m_eff(C_a)] / delta`` from two independent ensembles (``c_a`` at ``lam_a``, ``c_b`` at
    ``lam_b = lam_a + delta``; each ``(n, T)`` / ``(R, n, T)``, their own lengths).  Each ensemble is jackknifed
    with the other at its central value; the covariance is the sum of the two."""
    _check_kind(kind, ("cosh", "log"))
    delta = _check_lam(delta)
    if ensembles[0] == ensembles[1]:
        raise ValueError("the two ensembles of an independent estimate need different names")
    ca, cb = _as_chains(c_a, "c_a", 1), _as_chains(c_b, "c_b", 1)
    if ca.shape[-1] != cb.shape[-1]:
        raise ValueError(f"c_a and c_b have different time extents ({ca.shape[-1]}, {cb.shape[-1]})")
    ba = _check_bin_size(bin_size_a, ca.shape[0], ca.shape[1], ensembles[0])
    bb = _check_bin_size(bin_size_b, cb.shape[0], cb.shape[1], ensembles[1])
    ma, sa = _jackknife([fold_correlator(ca)], lambda c: _meff_folded(c, kind), ba)
    mb, sb = _jackknife([fold_correlator(cb)], lambda c: _meff_folded(c, kind), bb)
    value = (mb - ma) / delta
    dev = {ensembles[0]: _scaled_dev(-sa / delta), ensembles[1]: _scaled_dev(sb / delta)}
    return Curve(effective_times(ca.shape[-1], kind), value, dev, {ensembles[0]: ba, ensembles[1]: bb})


# ----------------------------------------------------------------------------------------------
# plateau fits
# ----------------------------------------------------------------------------------------------


FIT_WEIGHTS = ("diagonal", "correlated")


@dataclass(frozen=True)
class Plateau:
    """Constant fit to a :class:`Curve` over ``t_min <= t <= t_max``.

    ``value``: the fitted constant, a weighted mean ``a . y`` of the points; ``error``: its jackknife error (the
    weights ``a`` applied to every jackknife sample, so the full covariance enters the error whatever the
    weights); ``chi2``, ``dof``, ``p_value``: correlated chi-square of the constant with the jackknife covariance
    (for ``weights="correlated"`` the minimised one); ``weights``: ``"diagonal"`` (``a ~ 1/sigma_t^2``) or
    ``"correlated"`` (``a ~ C^{-1} 1``, generalised least squares); ``dev``: per-ensemble scaled jackknife
    deviations (for pulls); ``svd_cut``: the cut applied to the covariance (None if well conditioned).
    """

    value: float
    error: float
    chi2: float
    dof: int
    p_value: float
    t_min: int
    t_max: int
    dev: Mapping[str, np.ndarray]
    weights: str = "diagonal"
    svd_cut: float | None = None

    def __str__(self) -> str:
        from .result import format_value_error

        return format_value_error(self.value, self.error) if self.error > 0 else f"{self.value:.6g}"


def plateau_fit(curve: Curve, t_min: int, t_max: int, *, weights: str = "diagonal",
                svd_cut: float | None = None) -> Plateau:
    """Constant (order-0) fit of ``curve`` over ``t_min <= t <= t_max`` (:func:`corrflow.stats.correlated_fit`).

    ``weights="correlated"`` minimises the correlated chi-square with the jackknife covariance; it is optimal when
    that covariance is well determined, but with few bins (``n_bins`` not much larger than the number of points)
    the estimated covariance is noisy and the fit can land outside the data with a too-small error (measured on
    the tiny test lattice: 20 bins, 4 points).  ``weights="diagonal"`` (default) uses ``1/sigma_t^2`` weights; the
    error is the jackknife error of the weighted mean in both cases, so correlations between times are always
    propagated.

    Raises ``ValueError`` if the range is empty, outside ``curve.t``, or holds undefined points (NaN in the
    estimate or in a jackknife sample, e.g. an effective mass with ``C(t-1) + C(t+1) < 2 C(t)``: shrink the
    range).  An ill-conditioned covariance is retried once with ``svd_cut = 1e-6`` (recorded in the result).
    """
    from scipy import stats as sps

    from .fits import FitError, correlated_fit

    if weights not in FIT_WEIGHTS:
        raise ValueError(f"weights must be one of {FIT_WEIGHTS}, got {weights!r}")
    t = np.asarray(curve.t)
    if int(t_min) != t_min or int(t_max) != t_max:
        raise ValueError(f"t_min and t_max must be integers, got {t_min!r}, {t_max!r}")
    if t_min > t_max:
        raise ValueError(f"t_min = {t_min} > t_max = {t_max}")
    if t_min < t.min() or t_max > t.max():
        raise ValueError(f"plateau range {t_min}..{t_max} is outside the effective-mass times {t.min()}..{t.max()}")
    sel = (t >= t_min) & (t <= t_max)
    bad = t[sel & ~curve.valid()]
    if len(bad):
        raise ValueError(f"the effective dE/dlambda is undefined (NaN in the estimate or a jackknife sample) at "
                         f"t = {', '.join(map(str, bad))}; choose a plateau range without these times")
    y = curve.value[sel]
    cov = curve.cov[np.ix_(sel, sel)]
    cut = svd_cut
    try:
        full = correlated_fit(t[sel], y, cov, order=0, svd_cut=cut)
    except FitError:
        if cut is not None:
            raise
        cut = 1e-6
        full = correlated_fit(t[sel], y, cov, order=0, svd_cut=cut)
    if weights == "correlated":
        fit = full
        a = np.linalg.solve(full.data_cov, np.ones(len(y)))
    else:
        fit = correlated_fit(t[sel], y, np.diag(cov), order=0)
        a = 1.0 / np.diag(cov)
    a = a / a.sum()  # the constant is the weighted mean a . y
    value = float(fit.params[0])
    r = y - value
    chi2 = float(r @ np.linalg.solve(full.data_cov, r))
    dof = len(y) - 1
    p = float(sps.chi2.sf(chi2, dof)) if dof > 0 else math.nan
    dev = {k: d[:, sel] @ a for k, d in curve.dev.items()}
    err = math.sqrt(sum(float(np.sum(d**2)) for d in dev.values()))
    return Plateau(value, err, chi2, dof, p, int(t_min), int(t_max), dev, weights, cut)


def pull(a: Plateau, b: Plateau) -> float:
    """``(a - b) / sigma(a - b)``, the correlation through shared ensembles included."""
    keys = set(a.dev) | set(b.dev)
    var = 0.0
    for k in keys:
        da = a.dev.get(k)
        db = b.dev.get(k)
        d = da - db if (da is not None and db is not None) else (da if da is not None else -db)
        var += float(np.sum(d**2))
    return (a.value - b.value) / math.sqrt(var) if var > 0 else math.nan


def auto_bin_size(series: Sequence[Any], *, factor: float = 20.0, min_bins: int = MIN_BINS, S: Any = 1.5
                  ) -> tuple[int, float, bool]:
    """``(bin_size, tau_max, capped)``: ``ceil(factor * tau_max)`` with ``tau_max`` the largest Gamma-method
    ``tau_int`` (windowing ``S``: Wolff's ``S`` or a :class:`~corrflow.stats.Windowing`) of the scalar ``series``
    (each ``(n,)`` or ``(R, n)``, the same layout), reduced to keep at least ``min_bins`` bins (``capped`` then
    True)."""
    from .autocorr import gamma_method

    arrs = [_as_chains(s, "series", 0) for s in series]
    r, n = arrs[0].shape
    taus = []
    for a in arrs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                taus.append(float(gamma_method(a, S=S).tau_int))
            except ValueError:
                continue
    tau = max([x for x in taus if math.isfinite(x)], default=0.5)
    bs = max(1, math.ceil(factor * tau))
    cap = max(1, n // max(1, math.ceil(min_bins / r)))
    return min(bs, cap), tau, bs > cap


def effective_mass_curve(c: np.ndarray, kind: str, bin_size: int, ensemble: str = "base") -> Curve:
    """Jackknife effective mass of correlators ``c`` ``(R, n, T)``: :func:`corrflow.stats.effective_mass` of the
    mean, with the scaled deviations of the leave-one-bin-out estimates (bins along each chain)."""
    from .jackknife import jackknife_samples
    from .spectroscopy import effective_mass

    c = np.asarray(c, dtype=np.float64)
    loo = np.asarray(jackknife_samples(np.moveaxis(c, -1, 0), func=lambda a: a, bin_size=bin_size))  # (B, T)
    samples = effective_mass(loo, kind)
    b = len(samples)
    dev = math.sqrt((b - 1) / b) * (samples - samples.mean(axis=0))
    return Curve(effective_times(c.shape[-1], kind), effective_mass(loo.mean(axis=0), kind), {ensemble: dev},
                 {ensemble: int(bin_size)})
