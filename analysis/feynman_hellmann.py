r"""Feynman–Hellmann matrix element of a gluonic operator in the pion: the Schwinger model (dynamical quarks) and
quenched 4D SU(3) (the gluon momentum fraction ``<x>_g``).

    python -m analysis.feynman_hellmann                 # defaults: Schwinger model, a few minutes on 2 CPU cores
    python -m analysis.feynman_hellmann --theory su3 --T 8 --L 4 --beta 5.8 --mass 0.5   # quenched 4D SU(3)
    python -m analysis.feynman_hellmann --help          # every option with its default

Quenched 4D SU(3) (``--theory su3``)
-----------------------------------
Wilson gauge action with the source ``lam * O``, ``O = (1/3) sum_x [sum_spatial - sum_temporal] Re tr P`` (see
:mod:`corrflow.theories.gauge`; ``beta O = sum_x T_44`` with the Euclidean gluonic energy-momentum tensor
``T_44 = (E^2 - B^2)/2``), flows ``0 -> lam`` between pure-gauge ensembles, and the pion correlator of *valence*
Wilson quarks of mass ``--mass`` (:func:`corrflow.observables.fermions.valence_quarks`; no determinant, so the
weights are purely gluonic).  With ``<h| int d^3x T_44 |h> = -(3/4) m_h <x>_g`` for a unit-normalised hadron at
rest, the bare gluon momentum fraction is ``<x>_g = -(4/3) beta (dE_pi/dlam) / m_pi``
(:func:`gluon_momentum_fraction`; unrenormalised: ``Z_gg`` and the mixing with the quark operator are not applied).
Everything below applies unchanged with ``O_t`` the 4D time-slice operator.

Physics
-------
2D U(1) gauge theory with ``n_f = 2`` degenerate Wilson fermions (:mod:`corrflow.theories.fermions`) and the
Feynman–Hellmann source of :mod:`corrflow.theories.gauge`::

    S_lam(U) = S_g(U) - n_f log|det D(U)| + lam * O(U),     O(U) = theory.source_operator(U).

In two dimensions the only plane is temporal, so ``O = -sum_x cos P_01(x)``: the (negative) field-energy /
plaquette operator summed over the volume.  It is a sum of time-slice operators, ``O = sum_t O_t`` with
``O_t = -sum_{x_1} cos P_01(t, x_1)``.  Note that in 2D ``S_lam`` is the Schwinger model at ``beta + lam``,
so ``dE/dlam = dE/dbeta`` here; the code does not use that and works unchanged for any source.

Feynman–Hellmann: the pion energy ``E_pi(lam)`` (zero momentum, the ground state of the correlator) obeys

    dE_pi/dlam = <pi| O_t |pi> - <0| O_t |0>,

the matrix element of the *time-slice* operator ``O_t`` between unit-normalised states of the finite spatial
box (``<pi|pi> = 1``; with the relativistic normalisation ``<pi(p)|pi(p')> = 2 E L delta_pp'`` the element is
``2 E_pi dE/dlam``), vacuum subtracted.  ``O`` summed over the whole volume inserts ``O_t`` on every time slice,
which is why the *energy* (not the amplitude) shifts linearly in ``lam``.

Correlator: ``C(t)`` = isovector pseudoscalar correlator of :func:`corrflow.observables.fermions.pion_correlator`
(``n_sources`` point sources, periodic in time because the fermions are antiperiodic).  It is *folded*,
``C(t) <- (C(t) + C(T - t)) / 2`` for ``t = 0 .. T/2``, before anything else.  The Dirac operator does not depend
on ``lam`` (a gluonic source), so ``C`` is measured with the same operator on every ensemble.

Effective masses (``--kind``):

``cosh`` (default)
    ``m_eff(t) = arccosh[(C(t-1) + C(t+1)) / (2 C(t))]`` for ``t = 1 .. T/2`` (``C(T/2+1) = C(T/2-1)`` by
    symmetry): exact for a single state ``C(t) = A cosh(E (t - T/2))`` of the periodic correlator, at every ``t``
    (no division by a vanishing ``dC/dt`` near ``T/2``).
``log``
    ``m_eff(t) = log[C(t) / C(t+1)]``, ``t = 0 .. T/2 - 1``: the plain exponential of the issue's formula, biased by
    the backward-running state near ``T/2``.

The effective ``dE/dlam(t)`` of the three estimators below is the ``lam``-derivative (or difference) of
``m_eff(t)``; with ``kind="log"`` it is literally
``-(1/lam)[log(C_lam(t+1)/C_lam(t)) - log(C_0(t+1)/C_0(t))]``.  A plateau fit (order 0,
:func:`corrflow.stats.correlated_fit`) over ``t_min <= t <= t_max`` gives ``dE/dlam``: by default with ``1/sigma_t^2``
weights (``--fit-weights diagonal``; the correlated ``C^{-1}`` weights are an option, see :func:`plateau_fit`), its
error from the jackknife (all correlations between times included) and its chi-square correlated.

Estimators of dE/dlam
---------------------
``flowed``
    A flow ``f`` trained for ``0 -> lam`` (:func:`analysis.workflow.prepare`); ``C_0(t)`` on the base
    configurations ``U_i``, ``C_lam(t) = <w C(f(U))> / <w>`` on the *same* configurations pushed through the flow,
    ``log w = -S_lam(f(U)) + S_0(U) + log J_f(U)`` (exact determinants).  ``[m_eff(C_lam) - m_eff(C_0)] / lam``.
    With ``--symmetric``, two flows ``0 -> +-lam`` and ``[m_eff(C_+lam) - m_eff(C_-lam)] / (2 lam)`` (removes the
    ``O(lam)`` bias, at twice the flow cost).
``connected``
    The derivative at ``lam = 0`` from the base ensemble alone:
    ``dC(t)/dlam = -(<C(t) O> - <C(t)><O>)`` (connected correlation of ``O`` with ``C``), and
    ``dm_eff/dlam`` by differentiating the effective mass: ``cosh``: ``dr/dlam / sinh(m_eff)`` with
    ``r = (C(t-1) + C(t+1)) / (2 C(t))``; ``log``: ``C'(t)/C(t) - C'(t+1)/C(t+1)`` (the negative finite difference in
    ``t`` of ``d log C/dlam``).  No flow and no second ensemble; exact at ``lam = 0``.
``direct``
    Direct reweighting (the identity flow): ``C_lam = <w_d C(U)> / <w_d>``, ``log w_d = -S_lam(U) + S_0(U)``.
``independent``
    An independent HMC ensemble at ``lam`` against the base ensemble at 0 (``--symmetric``: independent ensembles
    at ``+lam`` and ``-lam``).

Errors
------
Binned jackknife over the base configurations in Monte Carlo order, chains pooled as replicas (bins never
straddle two chains; remainders at the end of a chain are dropped).  Every leave-one-bin-out sample recomputes
the reweighted correlators (ratios), the effective masses and the plateau value, so pairing, weights and
autocorrelations are accounted for.  Estimators built on several independent ensembles (``independent``) are
jackknifed per ensemble with the others held at their central values; the covariance is the sum over
ensembles.  Every result keeps its jackknife deviations per ensemble (:class:`Curve`), so pulls between
estimators (e.g. ``flowed - connected`` on the same base configurations) include their correlation.
Bin size: ``ceil(bin_tau_factor * tau_max)``, ``tau_max`` the largest Gamma-method ``tau_int`` of ``C(t_min)``,
``O``, ``w`` and ``w C_lam(t_min)`` on the base chains (``C(t_min)`` on the independent ones), reduced when
needed to keep at least ``MIN_BINS`` bins (then the errors may be somewhat underestimated: see
:mod:`corrflow.stats.jackknife`).  The plateau covariance is the jackknife covariance of ``dE/dlam(t)``.

Costs and variance reduction
----------------------------
Steady-state wall-clock seconds from :func:`analysis.workflow.prepare` (compilation excluded):
flowed = base HMC + training + flow application (flow, Jacobian, exact determinants of both actions);
independent = HMC at both ``lam`` values (base + independent; symmetric: the two independent ensembles);
direct = base HMC + weights; connected = base HMC.  Correlator measurements are not part of these path costs
(reported separately; flowed and independent need ``2N`` correlators, direct and connected ``N``).
``variance reduction vs X = var_X / var_flowed``; ``cost-adjusted = var_X cost_X / (var_flowed cost_flowed)``.

Defaults and what was measured (2 shared CPU cores)
---------------------------------------------------
16 x 4 lattice (the long time extent serves the plateau; the exact determinant costs ``~V^3``: 16 x 8 was 5x
slower per force evaluation), ``beta = 2``, ``m = 0.1`` (``m_pi = 0.949(18)``), 2 chains x 500 configurations,
Omelyan ``eps = 0.4``, 3 steps (acceptance 0.91, ``tau_int(plaquette) = 4.7``), flow of 2 plaquette sweeps trained
15 epochs on 256 configurations (lr 0.02).  The default run took 2:04 minutes wall clock on a lightly loaded
2-core machine (3:42 at a load of 5).  Plateau ``t = 4..8``; steady-state costs: base HMC 17 s, independent HMC
17 s, training 28 s, flow application 9 s, direct weights 9 s:

==============  ============  ==========  ==========  =====================  ==================
estimator       dE/dlam       VR vs ind.  VR vs dir.  cost-adj. VR vs ind.   cost-adj. vs dir.
==============  ============  ==========  ==========  =====================  ==================
flowed          -0.080(32)    17.1        4.97        10.7                   2.36
connected       -0.106(53)    6.0         1.76        12.0                   2.65
direct          -0.126(71)    3.4         1           4.5                    1
independent     -0.14(13)     1           0.29        1                      0.22
==============  ============  ==========  ==========  =====================  ==================

``lam`` (measured with the same ensembles, correlated plateau weights): at ``lam = 0.1`` the flowed error was about
the same (0.029) but direct reweighting is still good there (weight ESS 0.92): VR 1.7 vs direct (cost-adjusted
0.85), 66 vs independent (cost-adjusted 42).  At ``lam = 0.2`` direct reweighting degrades (ESS 0.73) while the
flow keeps its error: the default.  Symmetric ``+-0.1`` halved the flowed variance at 1.7x the flowed cost
(cost-adjusted 1.2x better than one-sided; VR 2.97 vs symmetric direct, 29 vs symmetric independent ensembles,
which get the 2 lam lever arm); no ``O(lam)`` bias was visible one-sided (flowed - connected pulls +0.18 at 0.1,
+0.90 at 0.2), so one-sided is the default and ``--symmetric`` an option.  Training: lr 0.05 for 30 epochs reached
a weight ESS of 0.954 vs 0.948 for lr 0.02 / 15 epochs at twice the cost (epoch 1 at lr 0.05 overshot to ESS 0.23);
with 128 training configurations (batch 32) the flow was no better than direct reweighting.  Note the connected
estimator: it is the ``lam -> 0`` limit of direct reweighting and costs only the base ensemble; the flow has 2.8x
less variance, but cost-adjusted the two are about even (0.89 for the flow; training dominates its cost).

Python API
----------
``run(FHSettings(...)) -> record`` (or ``run(n_configs=200, lam=0.05, ...)``) runs everything and returns the record
that is written to the store (``store.read_analysis("feynman_hellmann")``).  The estimators work on plain arrays:
:func:`flowed_curve`, :func:`symmetric_curve`, :func:`connected_curve`, :func:`independent_curve`,
:func:`plateau_fit`, with :func:`fold_correlator`, :func:`effective_mass`, :func:`effective_mass_slope`.

Array conventions: correlators ``(n, T)`` (one chain) or ``(R, n, T)`` (``R`` chains as replicas, Monte Carlo order
along ``n``); log weights and ``O`` ``(n,)`` or ``(R, n)``; effective-mass curves ``(k,)`` at times
:func:`effective_times`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ANALYSIS_NAME", "ESTIMATORS", "KINDS", "MIN_BINS", "FIT_WEIGHTS", "FHSettings", "Curve", "Plateau",
           "fold_correlator", "effective_times", "effective_mass", "effective_mass_slope",
           "flowed_curve", "symmetric_curve", "connected_curve", "independent_curve", "plateau_fit", "pull",
           "auto_bin_size", "measure", "run", "app", "main"]

ANALYSIS_NAME = "feynman_hellmann"
ESTIMATORS = ("flowed", "connected", "direct", "independent")
KINDS = ("cosh", "log")
#: fewest jackknife bins (all chains together) kept by the automatic bin size
MIN_BINS = 20

_LABELS = {"flowed": "flowed (correlated)", "connected": r"connected $\langle C\,O\rangle_c$",
           "direct": "direct reweighting", "independent": "independent ensembles"}
_STYLE = {"flowed": dict(color="#1f5fa8", marker="o", mfc="#1f5fa8"),
          "connected": dict(color="#c0392b", marker="s", mfc="white"),
          "direct": dict(color="#7f7f7f", marker="D", mfc="white"),
          "independent": dict(color="#2e8b57", marker="^", mfc="white")}


# ----------------------------------------------------------------------------------------------
# correlator algebra (numpy, vectorised over leading axes)
# ----------------------------------------------------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def fold_correlator(c: np.ndarray) -> np.ndarray:
    """``(C(t) + C(T - t)) / 2`` for ``t = 0 .. T/2``: ``(..., T) -> (..., T/2 + 1)`` (``T`` even)."""
    c = np.asarray(c, dtype=np.float64)
    t_ext = c.shape[-1]
    if c.ndim < 1 or t_ext < 4 or t_ext % 2:
        raise ValueError(f"correlators need an even time extent T >= 4 on the last axis, got shape {c.shape}")
    rev = np.roll(np.flip(c, axis=-1), 1, axis=-1)  # rev[t] = C((T - t) mod T)
    return 0.5 * (c + rev)[..., : t_ext // 2 + 1]


def effective_times(t_extent: int, kind: str = "cosh") -> np.ndarray:
    """Times ``t`` of the effective-mass curve for time extent ``T``: ``1 .. T/2`` (cosh), ``0 .. T/2 - 1`` (log)."""
    _check_kind(kind)
    h = int(t_extent) // 2
    return np.arange(1, h + 1) if kind == "cosh" else np.arange(0, h)


def _ext(f: np.ndarray) -> np.ndarray:
    """Folded ``(..., h+1)`` -> ``(..., h+2)`` with ``C(h+1) = C(h-1)``."""
    return np.concatenate([f, f[..., -2:-1]], axis=-1)


def _meff_folded(f: np.ndarray, kind: str) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == "log":
            return np.log(f[..., :-1] / f[..., 1:])
        e = _ext(f)
        r = (e[..., :-2] + e[..., 2:]) / (2.0 * e[..., 1:-1])
        return np.arccosh(np.where(r >= 1.0, r, np.nan))


def _meff_slope_folded(f: np.ndarray, df: np.ndarray, kind: str) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == "log":
            return df[..., :-1] / f[..., :-1] - df[..., 1:] / f[..., 1:]
        e, de = _ext(f), _ext(df)
        r = (e[..., :-2] + e[..., 2:]) / (2.0 * e[..., 1:-1])
        dr = (de[..., :-2] + de[..., 2:]) / (2.0 * e[..., 1:-1]) - r * de[..., 1:-1] / e[..., 1:-1]
        m = np.arccosh(np.where(r >= 1.0, r, np.nan))
        return dr / np.sinh(m)


def effective_mass(c: np.ndarray, kind: str = "cosh") -> np.ndarray:
    """Effective mass of periodic correlators ``c`` ``(..., T)`` (folded first), ``(..., k)`` at
    :func:`effective_times`; NaN where undefined (``cosh`` argument below 1, non-positive ``C``)."""
    _check_kind(kind)
    return _meff_folded(fold_correlator(c), kind)


def effective_mass_slope(c: np.ndarray, dc: np.ndarray, kind: str = "cosh") -> np.ndarray:
    """``d m_eff(t) / dlam`` given ``C(t)`` and ``dC(t)/dlam`` (both ``(..., T)``, folded first): the chain rule
    through :func:`effective_mass` (module docstring)."""
    _check_kind(kind)
    return _meff_slope_folded(fold_correlator(c), fold_correlator(dc), kind)


# ----------------------------------------------------------------------------------------------
# jackknife curves
# ----------------------------------------------------------------------------------------------


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


def _weights(log_w: np.ndarray) -> np.ndarray:
    return np.exp(log_w - np.max(log_w))


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
    _check_kind(kind)
    lam = _check_lam(lam)
    cb = _as_chains(c_base, "c_base", 1)
    ct = _as_chains(c_target, "c_target", 1)
    lw = _as_chains(log_w, "log_w", 0)
    _check_pair(cb, ct, "c_base", "c_target")
    _check_pair(cb, lw, "c_base", "log_w")
    if cb.shape != ct.shape:
        raise ValueError(f"c_base {cb.shape} and c_target {ct.shape} must have the same shape")
    bs = _check_bin_size(bin_size, cb.shape[0], cb.shape[1], ensemble)
    w = _weights(lw)
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
    _check_kind(kind)
    lam = _check_lam(lam)
    cp, cm = _as_chains(c_plus, "c_plus", 1), _as_chains(c_minus, "c_minus", 1)
    lp, lm = _as_chains(log_w_plus, "log_w_plus", 0), _as_chains(log_w_minus, "log_w_minus", 0)
    if cp.shape != cm.shape:
        raise ValueError(f"c_plus {cp.shape} and c_minus {cm.shape} must have the same shape")
    _check_pair(cp, lp, "c_plus", "log_w_plus")
    _check_pair(cp, lm, "c_plus", "log_w_minus")
    bs = _check_bin_size(bin_size, cp.shape[0], cp.shape[1], ensemble)
    wp, wm = _weights(lp), _weights(lm)

    def func(a: np.ndarray, wa: np.ndarray, b: np.ndarray, wb: np.ndarray) -> np.ndarray:
        return (_meff_folded(a / wa[..., None], kind) - _meff_folded(b / wb[..., None], kind)) / (2.0 * lam)

    value, samples = _jackknife([wp[..., None] * fold_correlator(cp), wp, wm[..., None] * fold_correlator(cm), wm],
                                func, bs)
    return Curve(effective_times(cp.shape[-1], kind), value, {ensemble: _scaled_dev(samples)}, {ensemble: bs})


def connected_curve(c_base: Any, o_base: Any, *, kind: str = "cosh", bin_size: int = 1,
                    ensemble: str = "base") -> Curve:
    """``dm_eff(t)/dlam`` at ``lam = 0`` from one ensemble: ``dC/dlam = -(<C O> - <C><O>)`` (the source
    operator ``O`` per configuration, ``(n,)`` / ``(R, n)``), through :func:`effective_mass_slope`."""
    _check_kind(kind)
    cb = _as_chains(c_base, "c_base", 1)
    o = _as_chains(o_base, "o_base", 0)
    _check_pair(cb, o, "c_base", "o_base")
    bs = _check_bin_size(bin_size, cb.shape[0], cb.shape[1], ensemble)
    oc = o - o.mean()  # the connected correlation is shift invariant; centring keeps the products well scaled
    fb = fold_correlator(cb)

    def func(c: np.ndarray, co: np.ndarray, om: np.ndarray) -> np.ndarray:
        return _meff_slope_folded(c, -(co - c * om[..., None]), kind)

    value, samples = _jackknife([fb, fb * oc[..., None], oc], func, bs)
    return Curve(effective_times(cb.shape[-1], kind), value, {ensemble: _scaled_dev(samples)}, {ensemble: bs})


def independent_curve(c_a: Any, c_b: Any, delta: float, *, kind: str = "cosh", bin_size_a: int = 1,
                      bin_size_b: int = 1, ensembles: tuple[str, str] = ("base", "independent")) -> Curve:
    """``[m_eff(C_b) - m_eff(C_a)] / delta`` from two independent ensembles (``c_a`` at ``lam_a``, ``c_b`` at
    ``lam_b = lam_a + delta``; each ``(n, T)`` / ``(R, n, T)``, their own lengths).  Each ensemble is jackknifed
    with the other at its central value; the covariance is the sum of the two."""
    _check_kind(kind)
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
        from corrflow.stats import format_value_error

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

    from corrflow.stats import FitError, correlated_fit

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


def auto_bin_size(series: Sequence[Any], *, factor: float = 20.0, min_bins: int = MIN_BINS
                  ) -> tuple[int, float, bool]:
    """``(bin_size, tau_max, capped)``: ``ceil(factor * tau_max)`` with ``tau_max`` the largest Gamma-method
    ``tau_int`` of the scalar ``series`` (each ``(n,)`` or ``(R, n)``, the same layout), reduced to keep at least
    ``min_bins`` bins (``capped`` then True)."""
    from corrflow.stats import gamma_method

    arrs = [_as_chains(s, "series", 0) for s in series]
    r, n = arrs[0].shape
    taus = []
    for a in arrs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                taus.append(float(gamma_method(a).tau_int))
            except ValueError:
                continue
    tau = max([x for x in taus if math.isfinite(x)], default=0.5)
    bs = max(1, math.ceil(factor * tau))
    cap = max(1, n // max(1, math.ceil(min_bins / r)))
    return min(bs, cap), tau, bs > cap


# ----------------------------------------------------------------------------------------------
# settings
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FHSettings:
    """Settings of :func:`run` (the command-line options, same names; see ``--help``).

    ``theory``: ``"schwinger"`` (2D, ``shape = (T, L)``, ``N_f = 2`` dynamical Wilson quarks of mass ``mass``) or
    ``"su3"`` (quenched 4D SU(3), ``shape = (T, L, L, L)``, valence Wilson quarks of mass ``mass``; the source is
    the gluonic energy-momentum-tensor component and the record adds the bare ``<x>_g`` of the pion).
    ``shape``: time extent first.  ``t_max = 0`` means ``T/2`` (cosh) or ``T/2 - 1`` (log).
    ``bin_size = 0`` chooses the jackknife bin size automatically.  ``flow_dir = ""``: ``<store stem>_flows``.
    """

    store: str = "data/feynman_hellmann.zarr"
    out: str = "reports/feynman_hellmann"
    flow_dir: str = ""
    theory: str = "schwinger"
    shape: tuple[int, ...] = (16, 4)
    beta: float = 2.0
    mass: float = 0.1
    lam: float = 0.2
    symmetric: bool = False
    n_configs: int = 500
    n_chains: int = 2
    n_therm: int = 100
    thin: int = 1
    step_size: float = 0.4
    n_steps: int = 3
    hmc_det: str = "exact"
    seed: int = 0
    epochs: int = 15
    n_train: int = 256
    batch_size: int = 64
    learning_rate: float = 0.02
    optimizer: str = "auto"
    degree: int = 0
    sweeps: int = 2
    loops: tuple[str, ...] = ("plaquette",)
    train_seed: int = 0
    n_sources: int = 2
    kind: str = "cosh"
    t_min: int = 4
    t_max: int = 0
    fit_weights: str = "diagonal"
    bin_size: int = 0
    bin_tau_factor: float = 20.0
    measure_batch: int = 64

    @property
    def resolved_t_max(self) -> int:
        if self.t_max:
            return int(self.t_max)
        return self.shape[0] // 2 if self.kind == "cosh" else self.shape[0] // 2 - 1

    def validate(self) -> None:
        """Raise ``ValueError`` with a clear message for bad settings."""
        if self.theory not in THEORY_CHOICES:
            raise ValueError(f"theory must be one of {THEORY_CHOICES}, got {self.theory!r}")
        nd = 2 if self.theory == "schwinger" else 4
        if len(self.shape) != nd or any(int(s) != s or s < 4 or s % 2 for s in self.shape):
            raise ValueError(f"theory {self.theory!r} needs {nd} even extents >= 4 (time first), got {self.shape}")
        if not (math.isfinite(self.lam) and self.lam != 0.0):
            raise ValueError(f"lam must be finite and non-zero (the Feynman-Hellmann source strength), got {self.lam}")
        if self.symmetric and self.lam < 0:
            raise ValueError(f"with symmetric=True give lam > 0 (flows to +lam and -lam), got {self.lam}")
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"beta must be positive, got {self.beta}")
        for b, what in ((self.beta + self.lam, "beta + lam"), (self.beta - abs(self.lam), "beta - |lam|")):
            if b <= 0:
                raise ValueError(f"{what} = {b} must stay positive (in 2D the source shifts beta)")
        if not math.isfinite(self.mass) or self.mass + 2 <= 0:
            raise ValueError(f"mass = {self.mass} must be finite and > -2 (kappa > 0)")
        if self.hmc_det not in ("exact", "pseudofermion"):
            raise ValueError(f"hmc_det must be 'exact' or 'pseudofermion', got {self.hmc_det!r}")
        _check_kind(self.kind)
        if self.fit_weights not in FIT_WEIGHTS:
            raise ValueError(f"fit_weights must be one of {FIT_WEIGHTS}, got {self.fit_weights!r}")
        t0 = self.shape[0]
        if self.n_sources < 1 or t0 % self.n_sources:
            raise ValueError(f"n_sources = {self.n_sources} must divide the time extent T = {t0}")
        times = effective_times(t0, self.kind)
        tmax = self.resolved_t_max
        if not (times[0] <= self.t_min <= tmax <= times[-1]):
            raise ValueError(f"plateau range t_min = {self.t_min}, t_max = {tmax} is outside the lattice: the "
                             f"{self.kind} effective mass of T = {t0} is defined for {times[0]} <= t <= {times[-1]} "
                             "(and t_min <= t_max)")
        if self.n_configs < 20:
            raise ValueError(f"n_configs must be >= 20 per chain, got {self.n_configs}")
        if self.n_chains < 1 or self.n_therm < 0 or self.thin < 1:
            raise ValueError("n_chains and thin must be >= 1 and n_therm >= 0")
        if self.bin_size < 0 or not self.bin_tau_factor > 0 or self.measure_batch < 1:
            raise ValueError("bin_size must be >= 0, bin_tau_factor > 0 and measure_batch >= 1")
        if self.epochs < 1 or self.n_train < 2 or self.batch_size < 1 or not self.learning_rate > 0:
            raise ValueError("epochs >= 1, n_train >= 2, batch_size >= 1 and learning_rate > 0 are required")
        from corrflow.flows.layers import check_degree
        from corrflow.flows.train import resolve_optimizer

        resolve_optimizer(self.optimizer, len(self.shape))
        check_degree(self.degree)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        d["loops"] = list(self.loops)
        d["t_max"] = self.resolved_t_max
        return d


# ----------------------------------------------------------------------------------------------
# measurements
# ----------------------------------------------------------------------------------------------


_MEASURE_CACHE: dict[int, Callable] = {}


THEORY_CHOICES = ("schwinger", "su3")


def theories(s: "FHSettings") -> tuple[Any, Any]:
    """``(base theory at lambda = 0, theory whose Dirac operator measures the pion)`` for the settings."""
    import corrflow as cf
    from corrflow.observables.fermions import valence_quarks

    if s.theory == "schwinger":
        base = cf.make_theory("schwinger", s.shape, beta=s.beta, mass=s.mass, det=s.hmc_det)
        return base, base.replace(det="exact")  # the correlator depends neither on lam nor on the HMC algorithm
    base = cf.make_theory("su3", s.shape, beta=s.beta)
    return base, valence_quarks(base, mass=s.mass)


def describe_theory(s: "FHSettings") -> str:
    """One line naming the theory, lattice and source (for summaries and titles)."""
    geom = "x".join(str(x) for x in s.shape)
    if s.theory == "schwinger":
        return (f"Schwinger model {geom}, beta = {s.beta:g}, m = {s.mass:g} (N_f = 2 Wilson), source "
                "O = -sum_x cos P(x)")
    return (f"quenched SU(3) {geom}, beta = {s.beta:g}, valence Wilson m = {s.mass:g}, source "
            "O = (1/3) sum_x [spatial - temporal] Re tr P (gluonic T_44 / beta)")


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


def _measure_fn(n_sources: int) -> Callable:
    import jax

    from corrflow.observables.fermions import pion_correlator

    @jax.jit
    def fn(theory: Any, u: Any) -> tuple[Any, Any]:
        return pion_correlator(theory, u, n_sources), theory.source_operator(u)

    return fn


def measure(theory: Any, links: np.ndarray, *, n_sources: int = 2, batch: int = 64,
            progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pion correlators ``(n, T)`` and source operator ``O`` ``(n,)`` of configurations ``links``
    ``(n, *link_shape)``.  Batches are padded to ``batch`` (one compiled program for every call; ``theory`` is
    traced, so base and target share it)."""
    import jax.numpy as jnp

    if n_sources not in _MEASURE_CACHE:
        _MEASURE_CACHE[n_sources] = _measure_fn(int(n_sources))
    fn = _MEASURE_CACHE[n_sources]
    n = len(links)
    cs, os_ = [], []
    for lo in range(0, n, batch):
        blk = np.asarray(links[lo:lo + batch])
        k = len(blk)
        if k < batch:
            blk = np.concatenate([blk, np.repeat(blk[-1:], batch - k, axis=0)])
        c, o = fn(theory, jnp.asarray(blk))
        cs.append(np.asarray(c)[:k])
        os_.append(np.asarray(o)[:k])
        if progress is not None:
            progress(min(n, lo + batch), n)
    return np.concatenate(cs), np.concatenate(os_)


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------


def _num(x: Any, digits: int = 4) -> float | None:
    x = float(x)
    return float(f"{x:.{digits}g}") if math.isfinite(x) else None


def _fmt(p: Plateau) -> str:
    return str(p) if math.isfinite(p.value) else "n/a"


class _Silent:
    def print(self, *a: Any, **k: Any) -> None:
        pass


def run(settings: FHSettings | None = None, *, console: Any = None, write: bool = True,
        **overrides: Any) -> dict[str, Any]:
    """Run the whole analysis and return the record (also written to the store and ``settings.out``).

    Parameters
    ----------
    settings : FHSettings, optional
        Defaults if omitted; ``overrides`` replace single fields (``run(n_configs=200, lam=0.05)``).
    console : rich.console.Console, optional
        Progress bars, log lines and the result table; silent if None.
    write : bool
        Write ``feynman_hellmann.png / .md / .json`` to ``settings.out`` and the record (with the figure) to the
        store (``write_analysis("feynman_hellmann", ...)``).

    Returns
    -------
    dict
        ``{"title", "summary", "tables", "settings", "variance_reduction", "costs", "estimates", "effective",
        "pulls", "info"}`` (JSON-serialisable; NaN written as None).
    """
    import corrflow as cf
    from analysis.workflow import RichWorkflowProgress, WorkflowProgress, prepare
    from corrflow.store import open_store

    s = dataclasses.replace(settings or FHSettings(), **overrides)
    s = dataclasses.replace(s, shape=tuple(int(x) for x in s.shape), loops=tuple(s.loops))
    s.validate()
    out = console.print if console is not None else _Silent().print
    t_start = time.perf_counter()
    base, meas_theory = theories(s)
    lam_targets = (s.lam, -s.lam) if s.symmetric else (s.lam,)
    prog = RichWorkflowProgress(console) if console is not None else WorkflowProgress()
    algo = f"{s.hmc_det} HMC, exact weights" if s.theory == "schwinger" else "HMC, quenched"
    out(f"[bold]Feynman-Hellmann[/]: {describe_theory(s)}, lam = {'+-' if s.symmetric else ''}{s.lam:g} ({algo})")
    store = open_store(s.store, "a")
    hmc = cf.HMCConfig(step_size=s.step_size, n_steps=s.n_steps, integrator="omelyan")
    pes = []
    for i, lt in enumerate(lam_targets):
        pes.append(prepare(store, base, base.replace(lam=lt), n_configs=s.n_configs, n_therm=s.n_therm, seed=s.seed,
                           hmc=hmc, flow_epochs=s.epochs, n_chains=s.n_chains, thin=s.thin, hmc_det=s.hmc_det,
                           independent_seed=s.seed + 1 + i, flow_loops=s.loops, flow_sweeps=s.sweeps,
                           n_train=s.n_train, batch_size=s.batch_size, learning_rate=s.learning_rate,
                           optimizer=s.optimizer, flow_degree=s.degree,
                           train_seed=s.train_seed, flow_dir=s.flow_dir or None, progress=prog))
    pe = pes[0]

    # --- measurements: correlators (and O) on U_i, f(U_i) per flow, independent ensembles ----------------
    sets = [("base", pe.base_links)]
    for i, p in enumerate(pes):
        sfx = "" if i == 0 else "_minus"
        sets += [("flowed" + sfx, p.flowed_links), ("independent" + sfx, p.independent_links)]
    corr: dict[str, np.ndarray] = {}
    src: dict[str, np.ndarray] = {}
    m_cost: dict[str, float] = {}
    for name, links in sets:
        t0 = time.perf_counter()
        c, o = measure(meas_theory, links, n_sources=s.n_sources, batch=s.measure_batch,
                       progress=lambda d, t, name=name: prog.update(f"measure {name}", d, t))
        prog.finish(f"measure {name}")
        m_cost[name] = time.perf_counter() - t0
        corr[name], src[name] = pe.chains(c), pe.chains(o)
    out(f"  measured pion correlators on {len(sets)} x {len(pe.base_links)} configurations "
        f"({sum(m_cost.values()):.1f} s)")

    # --- bin sizes ----------------------------------------------------------------------------------
    it = int(s.t_min)  # folded index = time
    fb = fold_correlator(corr["base"])[..., it]
    lws = [pe.chains(p.log_w) for p in pes]
    lwds = [pe.chains(p.log_w_direct) for p in pes]
    if s.bin_size:
        bs, tau, capped = int(s.bin_size), math.nan, False
        bs_ind, tau_ind = int(s.bin_size), math.nan
    else:
        series = [fb, src["base"]]
        for i, lw in enumerate(lws):
            w = _weights(lw)
            ff = fold_correlator(corr["flowed" + ("" if i == 0 else "_minus")])[..., it]
            series += [w, w * ff, _weights(lwds[i])]
        bs, tau, capped = auto_bin_size(series, factor=s.bin_tau_factor)
        ind_series = [fold_correlator(corr[k])[..., it] for k in corr if k.startswith("independent")]
        bs_ind, tau_ind, _ = auto_bin_size(ind_series, factor=s.bin_tau_factor)

    # --- estimators -----------------------------------------------------------------------------------
    kw = dict(kind=s.kind, bin_size=bs)
    curves: dict[str, Curve] = {}
    if s.symmetric:
        curves["flowed"] = symmetric_curve(corr["flowed"], lws[0], corr["flowed_minus"], lws[1], s.lam, **kw)
        curves["direct"] = symmetric_curve(corr["base"], lwds[0], corr["base"], lwds[1], s.lam, **kw)
        curves["independent"] = independent_curve(corr["independent_minus"], corr["independent"], 2 * s.lam,
                                                  kind=s.kind, bin_size_a=bs_ind, bin_size_b=bs_ind,
                                                  ensembles=("independent_minus", "independent"))
    else:
        curves["flowed"] = flowed_curve(corr["base"], corr["flowed"], lws[0], s.lam, **kw)
        curves["direct"] = flowed_curve(corr["base"], corr["base"], lwds[0], s.lam, **kw)
        curves["independent"] = independent_curve(corr["base"], corr["independent"], s.lam, kind=s.kind,
                                                  bin_size_a=bs, bin_size_b=bs_ind)
    curves["connected"] = connected_curve(corr["base"], src["base"], **kw)
    tmax = s.resolved_t_max
    plateaus = {k: plateau_fit(curves[k], s.t_min, tmax, weights=s.fit_weights) for k in ESTIMATORS}
    meff0 = _meff_folded(fold_correlator(corr["base"]).reshape(-1, s.shape[0] // 2 + 1).mean(axis=0), s.kind)
    try:  # the pion mass is context for the summary; an undefined effective mass there must not stop the run
        m_pi = plateau_fit(_jk_meff(corr["base"], s.kind, bs), s.t_min, tmax, weights=s.fit_weights)
    except ValueError:
        m_pi = Plateau(math.nan, math.nan, math.nan, 0, math.nan, s.t_min, tmax, {})

    # --- costs, variance reduction ------------------------------------------------------------------------
    c = {k: sum(float(p.costs.get(k, math.nan)) for p in pes) for k in ("train", "flow", "direct")}
    c["hmc_base"] = float(pe.costs["hmc_base"])
    c["hmc_independent"] = sum(float(p.costs["hmc_independent"]) for p in pes)
    path = {"flowed": c["hmc_base"] + c["train"] + c["flow"],
            "direct": c["hmc_base"] + c["direct"],
            "connected": c["hmc_base"],
            "independent": c["hmc_independent"] if s.symmetric else c["hmc_base"] + c["hmc_independent"]}
    var = {k: plateaus[k].error ** 2 for k in ESTIMATORS}

    def vr(est: str, other: str, cost: bool) -> float:
        num = var[other] * (path[other] if cost else 1.0)
        den = var[est] * (path[est] if cost else 1.0)
        return num / den if den > 0 else math.nan

    vr_rec = {"dE_dlambda": {"vs_independent": _num(vr("flowed", "independent", False)),
                             "vs_direct": _num(vr("flowed", "direct", False)),
                             "vs_connected": _num(vr("flowed", "connected", False)),
                             "cost_adjusted_vs_independent": _num(vr("flowed", "independent", True)),
                             "cost_adjusted_vs_direct": _num(vr("flowed", "direct", True)),
                             "cost_adjusted_vs_connected": _num(vr("flowed", "connected", True))}}
    pulls = {"flowed-connected": pull(plateaus["flowed"], plateaus["connected"]),
             "flowed-independent": pull(plateaus["flowed"], plateaus["independent"]),
             "flowed-direct": pull(plateaus["flowed"], plateaus["direct"]),
             "connected-independent": pull(plateaus["connected"], plateaus["independent"])}

    # --- record -------------------------------------------------------------------------------------
    ess = {"flowed": [p.info["weight_ess_fraction"]["flowed"] for p in pes],
           "direct": [p.info["weight_ess_fraction"]["direct"] for p in pes]}
    rows = []
    for k in ESTIMATORS:
        p = plateaus[k]
        rows.append([k, _fmt(p), f"{p.chi2:.2f}/{p.dof}", _num(p.p_value, 3), _num(p.error**2, 3),
                     _num(vr(k, "independent", False), 3), _num(vr(k, "direct", False), 3), _num(path[k], 3),
                     _num(vr(k, "independent", True), 3), _num(vr(k, "direct", True), 3)])
    columns = ["estimator", "dE/dlambda", "chi2/dof", "p", "variance", "VR vs independent", "VR vs direct",
               "cost [s]", "cost-adj. VR vs independent", "cost-adj. VR vs direct"]
    lam_txt = f"+-{s.lam:g} (symmetric)" if s.symmetric else f"{s.lam:g}"
    caption = (f"dE_pi/dlambda = <pi|O_t|pi> - <0|O_t|0> from a {s.kind} plateau fit over t = {s.t_min}..{tmax} "
               f"({s.fit_weights} weights, jackknife errors, correlated chi2; lambda = {lam_txt}; VR = variance of "
               "the other estimator / this one's)")
    cost_rows = [[k, _num(v, 4)] for k, v in c.items()] + [[f"measure {k}", _num(v, 4)] for k, v in m_cost.items()]
    f_dir = plateaus["flowed"]
    summary = [
        (f"{describe_theory(s)} (O_t: one time slice), lambda = {lam_txt}; {s.n_chains} x {s.n_configs} base "
         f"configurations, flow: {s.sweeps} sweeps of {'+'.join(s.loops)} layers, {s.epochs} epochs on "
         f"{s.n_train}."),
        f"Pion mass ({s.kind} plateau t = {s.t_min}..{tmax}): m_pi = {_fmt(m_pi)}.",
        (f"**dE_pi/dlambda = <pi|O_t|pi> - <0|O_t|0> = {_fmt(f_dir)}** (flowed), {_fmt(plateaus['connected'])} "
         f"(connected), {_fmt(plateaus['direct'])} (direct), {_fmt(plateaus['independent'])} (independent)."),
        (f"Pulls: flowed - connected {pulls['flowed-connected']:+.2f} sigma (correlated), flowed - independent "
         f"{pulls['flowed-independent']:+.2f} sigma."),
        (f"Variance reduction of the flowed estimator: {vr('flowed', 'independent', False):.3g}x vs independent "
         f"ensembles, {vr('flowed', 'direct', False):.3g}x vs direct reweighting; cost-adjusted "
         f"{vr('flowed', 'independent', True):.3g}x and {vr('flowed', 'direct', True):.3g}x."),
        (f"Against the connected correlator (base ensemble only, no flow): variance reduction "
         f"{vr('flowed', 'connected', False):.3g}x, cost-adjusted {vr('flowed', 'connected', True):.3g}x."),
        (f"Weight ESS fraction: flowed {', '.join(f'{x:.3f}' for x in ess['flowed'])}, direct "
         f"{', '.join(f'{x:.3f}' for x in ess['direct'])}; jackknife bins of {bs} base configurations "
         f"({curves['flowed'].n_bins['base']} bins{', capped to keep ' + str(MIN_BINS) + ' bins' if capped else ''})."),
    ]
    x_g = None
    if s.theory == "su3":
        from corrflow.stats import format_value_error

        xv, xe = gluon_momentum_fraction(f_dir.value, f_dir.error, m_pi.value, m_pi.error, s.beta)
        x_g = {"value": _num(xv, 6), "error": _num(xe, 4),
               "convention": "bare <x>_g = -(4/3) beta (dE/dlambda) / m_pi (flowed estimator; unrenormalised)"}
        summary.insert(3, f"**Bare gluon momentum fraction of the pion <x>_g = -(4/3) beta dE/dlambda / m_pi = "
                          f"{format_value_error(xv, xe) if math.isfinite(xv) and math.isfinite(xe) else 'n/a'}** "
                          "(flowed; unrenormalised, quenched).")
    record: dict[str, Any] = {
        "title": ("Feynman-Hellmann: dE_pi/dlambda of the plaquette source in the Schwinger model"
                  if s.theory == "schwinger" else
                  "Feynman-Hellmann: gluon momentum fraction of the pion in quenched SU(3)"),
        "summary": summary,
        "tables": {caption: {"columns": columns, "rows": rows},
                   "costs in seconds (steady state, compilation excluded; measurements not in the path costs)":
                       {"columns": ["step", "seconds"], "rows": cost_rows}},
        "settings": s.as_dict(),
        "variance_reduction": vr_rec,
        "costs": {"steps": {k: _num(v) for k, v in c.items()}, "paths": {k: _num(v) for k, v in path.items()},
                  "measurement": {k: _num(v) for k, v in m_cost.items()}},
        "estimates": {k: {"value": _num(p.value, 6), "error": _num(p.error, 4), "chi2": _num(p.chi2), "dof": p.dof,
                          "p_value": _num(p.p_value, 3), "weights": p.weights,
                          "svd_cut": p.svd_cut} for k, p in plateaus.items()},
        "effective": {k: {"t": [int(x) for x in cv.t], "value": [_num(x, 6) for x in cv.value],
                          "error": [_num(x, 4) for x in cv.error]} for k, cv in curves.items()},
        "pion_mass": {"value": _num(m_pi.value, 6), "error": _num(m_pi.error, 4),
                      "effective": [_num(x, 6) for x in meff0]},
        "pulls": {k: _num(v, 3) for k, v in pulls.items()},
        "gluon_momentum_fraction": x_g,
        "info": {"bin_size": bs, "bin_size_independent": bs_ind, "tau_int_max": _num(tau),
                 "tau_int_independent": _num(tau_ind), "bins_capped": bool(capped),
                 "n_bins": {k: cv.n_bins for k, cv in curves.items()}, "weight_ess_fraction": ess,
                 "acceptance": [p.info["acceptance"] for p in pes], "workflow": [p.info["names"] for p in pes],
                 "normalisation": "dE/dlambda = <pi|O_t|pi> - <0|O_t|0>, O_t = source operator on one time slice "
                                  "(2D: -sum_x1 cos P01(t, x1); 4D: (1/3) sum_x [spatial - temporal] Re tr P), "
                                  "unit-normalised states; O = sum_t O_t = theory.source_operator",
                 "workflow_wall_seconds": [{k: _num(v) for k, v in p.info["wall_seconds"].items()} for p in pes],
                 "runtime_seconds": _num(time.perf_counter() - t_start)},
    }
    png = _figure(curves, plateaus, s, record)
    if write:
        outdir = Path(s.out)
        outdir.mkdir(parents=True, exist_ok=True)
        (outdir / f"{ANALYSIS_NAME}.png").write_bytes(png)
        (outdir / f"{ANALYSIS_NAME}.md").write_text(_markdown(record, f"{ANALYSIS_NAME}.png"))
        (outdir / f"{ANALYSIS_NAME}.json").write_text(json.dumps(record, indent=1))
        store.write_analysis(ANALYSIS_NAME, record, figures={f"{ANALYSIS_NAME}.png": png})
        out(f"  wrote {outdir}/{ANALYSIS_NAME}.md/.png/.json and the store record {ANALYSIS_NAME!r}")
    if console is not None:
        _print_table(console, record)
    return record


def _jk_meff(c: np.ndarray, kind: str, bin_size: int) -> Curve:
    """Jackknife effective mass of the base correlator (for the summary)."""
    cc = _as_chains(c, "c", 1)
    v, smp = _jackknife([fold_correlator(cc)], lambda f: _meff_folded(f, kind), bin_size)
    return Curve(effective_times(cc.shape[-1], kind), v, {"base": _scaled_dev(smp)}, {"base": bin_size})


# ----------------------------------------------------------------------------------------------
# figure, markdown, table
# ----------------------------------------------------------------------------------------------


def _figure(curves: Mapping[str, Curve], plateaus: Mapping[str, Plateau], s: FHSettings,
            record: Mapping[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.labelsize": 10, "legend.fontsize": 8, "mathtext.fontset": "cm"})
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(5.4, 6.2), sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
    shown = ("flowed", "connected", "independent")
    offs = {"flowed": -0.12, "connected": 0.0, "independent": 0.12, "direct": 0.06}
    band_alpha = {"flowed": 0.30, "connected": 0.18, "independent": 0.07}
    lo, hi = np.inf, -np.inf
    for z, k in enumerate(reversed(shown)):  # independent (widest band) at the back, flowed in front
        cv, p = curves[k], plateaus[k]
        ok = cv.valid()
        st = _STYLE[k]
        ax.errorbar(cv.t[ok] + offs[k], cv.value[ok], cv.error[ok], ls="none", marker=st["marker"], ms=4.5,
                    color=st["color"], mfc=st["mfc"], capsize=2, lw=1, zorder=10 + z,
                    label=_LABELS[k] + f": {_fmt(p)}")
        x = np.array([p.t_min - 0.4, p.t_max + 0.4])
        ax.fill_between(x, p.value - p.error, p.value + p.error, color=st["color"], alpha=band_alpha[k], lw=0,
                        zorder=1 + z)
        for yy, ls_ in ((p.value, "-"), (p.value - p.error, ":"), (p.value + p.error, ":")):
            ax.plot(x, [yy, yy], color=st["color"], lw=1.2 if ls_ == "-" else 0.8, ls=ls_, zorder=5 + z)
        if k != "independent":
            lo = min(lo, np.nanmin((cv.value - cv.error)[ok]))
            hi = max(hi, np.nanmax((cv.value + cv.error)[ok]))
    if np.isfinite(lo) and np.isfinite(hi):
        pad = 0.25 * (hi - lo)
        pi = plateaus["independent"]
        lo = min(lo, pi.value - pi.error) - pad
        hi = max(hi, pi.value + pi.error) + pad
        ax.set_ylim(lo, hi)
    handles, labels = ax.get_legend_handles_labels()
    order = [labels.index(_LABELS[k] + f": {_fmt(plateaus[k])}") for k in shown]
    ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="lower left", frameon=False)
    ax.axhline(0.0, color="k", lw=0.5, ls=":")
    ax.set_ylabel(r"effective $dE_\pi/d\lambda\,(t)$")
    lam_txt = rf"\pm{s.lam:g}" if s.symmetric else f"{s.lam:g}"
    geom = r"\times".join(str(x) for x in s.shape)
    if s.theory == "schwinger":
        head = rf"Schwinger model, $N_f=2$ Wilson, ${geom}$, $\beta={s.beta:g}$, $m={s.mass:g}$"
        src = r"$O=-\Sigma_x \cos P(x)$"
    else:
        head = rf"quenched SU(3), ${geom}$, $\beta={s.beta:g}$, valence $m={s.mass:g}$"
        src = r"$O=\frac{1}{3}\Sigma_x\,\mathrm{Re\,tr}(P_s - P_t)$"
    ax.set_title(head + "\n" + rf"$S+\lambda O$, {src}, $\lambda={lam_txt}$, "
                 f"plateau t = {s.t_min}..{s.resolved_t_max}", fontsize=9)
    for k in ("flowed", "connected", "direct", "independent"):
        cv = curves[k]
        ok = cv.valid() & (cv.error > 0)
        st = _STYLE[k]
        ax2.semilogy(cv.t[ok], cv.error[ok], marker=st["marker"], ms=4, color=st["color"], mfc=st["mfc"], lw=1,
                     label=_LABELS[k])
    ax2.axvspan(s.t_min - 0.5, s.resolved_t_max + 0.5, color="0.9", zorder=0)
    ax2.set_ylabel(r"error $\sigma(t)$")
    ax2.set_xlabel(r"$t$" + (" (cosh effective mass)" if s.kind == "cosh" else " (log effective mass)"))
    y0, y1 = ax2.get_ylim()
    ax2.set_ylim(y0, y1 * (y1 / y0) ** 0.6)  # head room for the legend
    ax2.legend(loc="upper left", frameon=False, ncol=2, fontsize=7)
    vr = record["variance_reduction"]["dE_dlambda"]
    if vr["vs_independent"] is not None:
        ax2.text(0.99, 0.04, f"plateau variance reduction (flowed): {vr['vs_independent']:.3g}x vs independent, "
                 f"{vr['vs_direct']:.3g}x vs direct", transform=ax2.transAxes, ha="right", va="bottom", fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=160)
    plt.close(fig)
    return buf.getvalue()


def _markdown(record: Mapping[str, Any], png_name: str) -> str:
    lines = [f"# {record['title']}", ""]
    lines += [f"- {x}" for x in record["summary"]]
    lines += ["", f"![effective dE/dlambda]({png_name})", ""]
    for cap, tab in record["tables"].items():
        lines += [f"**{cap}**", "", "| " + " | ".join(tab["columns"]) + " |",
                  "|" + "---|" * len(tab["columns"])]
        lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in tab["rows"]]
        lines.append("")
    lines += ["Settings:", "", "```json", json.dumps(record["settings"], indent=1), "```", ""]
    return "\n".join(lines)


def _print_table(console: Any, record: Mapping[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    _, tab = next(iter(record["tables"].items()))
    short = {"estimator": "estimator", "dE/dlambda": "dE/dlam", "VR vs independent": "VR ind",
             "VR vs direct": "VR dir", "cost-adj. VR vs independent": "cVR ind", "cost-adj. VR vs direct": "cVR dir",
             "cost [s]": "cost/s"}
    idx = [tab["columns"].index(c) for c in short]
    t = Table(title="dE_pi/dlambda (plateau); VR = variance ratio, cVR = cost-adjusted", title_style="bold",
              box=box.SIMPLE_HEAD, pad_edge=False)
    for c in short.values():
        t.add_column(c, justify="right", no_wrap=True)
    for row in tab["rows"]:
        t.add_row(*["" if row[i] is None else str(row[i]) for i in idx])
    console.print(t)
    for line in record["summary"][2:5]:
        console.print(line.replace("**", ""), markup=False)


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------


def _make_app() -> Any:
    import typer

    d = FHSettings()
    app = typer.Typer(add_completion=False, rich_markup_mode="markdown",
                      help="Feynman-Hellmann dE_pi/dlambda of the plaquette source in the Schwinger model: flowed "
                           "correlated ensembles vs the connected correlator, direct reweighting and independent "
                           "ensembles.")

    @app.command(epilog="""
**Examples**

    python -m analysis.feynman_hellmann                                   # defaults (a few minutes)

    python -m analysis.feynman_hellmann --n-configs 2000 --lam 0.05 --out reports/fh_lam0.05

    python -m analysis.feynman_hellmann --symmetric --t-min 3 --t-max 7 --kind log
""")
    def main(
        store: str = typer.Option(d.store, help="zarr store (created if absent; every step is resumable)"),
        out: str = typer.Option(d.out, help="output directory for feynman_hellmann.png / .md / .json"),
        flow_dir: str = typer.Option(d.flow_dir, help="flow checkpoints and timing ledger [default: the store "
                                                      "path with _flows instead of .zarr]"),
        theory: str = typer.Option(d.theory, help="schwinger (2D, N_f = 2) | su3 (quenched 4D SU(3), valence quarks; "
                                                  "reports the bare <x>_g of the pion)"),
        T: int = typer.Option(d.shape[0], "--T", help="time extent (even; the pion correlator runs along it)"),
        L: int = typer.Option(d.shape[1], "--L", help="spatial extent (even; su3: L^3)"),
        beta: float = typer.Option(d.beta, help="gauge coupling beta"),
        mass: float = typer.Option(d.mass, help="bare quark mass m (schwinger: N_f = 2 sea quarks; su3: valence)"),
        lam: float = typer.Option(d.lam, help="source strength lambda of S + lambda O (non-zero; O = -sum cos P)"),
        symmetric: bool = typer.Option(d.symmetric, "--symmetric/--one-sided",
                                       help="flows to +lambda and -lambda (central difference) or 0 -> lambda"),
        n_configs: int = typer.Option(d.n_configs, help="stored configurations per chain (base and independent)"),
        chains: int = typer.Option(d.n_chains, help="HMC chains per ensemble (vmapped; replicas in the errors)"),
        therm: int = typer.Option(d.n_therm, help="thermalisation trajectories"),
        thin: int = typer.Option(d.thin, help="trajectories per stored configuration"),
        step_size: float = typer.Option(d.step_size, help="MD step size (Omelyan integrator)"),
        n_steps: int = typer.Option(d.n_steps, help="MD steps per trajectory"),
        hmc_det: str = typer.Option(d.hmc_det, help="fermion algorithm of the HMC: exact | pseudofermion "
                                                    "(weights and training always use exact determinants)"),
        seed: int = typer.Option(d.seed, help="seed of the base ensemble (independent ensembles: seed + 1, + 2)"),
        epochs: int = typer.Option(d.epochs, help="flow training epochs"),
        n_train: int = typer.Option(d.n_train, help="base configurations used for training"),
        batch_size: int = typer.Option(d.batch_size, help="training batch size"),
        lr: float = typer.Option(d.learning_rate, help="initial learning rate (cosine decay; Adam only)"),
        optimizer: str = typer.Option(d.optimizer, help="flow optimiser: auto (L-BFGS in 4D, Adam in 2D) | lbfgs | adam"),
        degree: int = typer.Option(d.degree, help="flow coefficients: 0 constant, p polynomial in the staple norm"),
        sweeps: int = typer.Option(d.sweeps, help="flow sweeps over all links"),
        loops: str = typer.Option(",".join(d.loops), help="flow staple shapes: plaquette[,rectangle]"),
        train_seed: int = typer.Option(d.train_seed, help="seed of the training shuffles"),
        n_sources: int = typer.Option(d.n_sources, help="point sources per configuration (must divide T)"),
        kind: str = typer.Option(d.kind, help="effective mass: cosh (periodic, default) | log (plain exponential)"),
        t_min: int = typer.Option(d.t_min, help="first t of the plateau fit"),
        t_max: int = typer.Option(d.t_max, help="last t of the plateau fit [0: T/2 for cosh, T/2 - 1 for log]"),
        fit_weights: str = typer.Option(d.fit_weights, help="plateau weights: diagonal (1/sigma^2) | correlated "
                                                            "(C^-1; needs many bins); errors always jackknife"),
        bin_size: int = typer.Option(d.bin_size, help="jackknife bin size [0: ceil(bin-tau-factor x tau_int), "
                                                      f"at least {MIN_BINS} bins]"),
        bin_tau_factor: float = typer.Option(d.bin_tau_factor, help="automatic bin size in units of tau_int"),
        measure_batch: int = typer.Option(d.measure_batch, help="configurations per correlator batch"),
    ) -> None:
        """dE_pi/dlambda = <pi|O_t|pi> - <0|O_t|0> for the source S + lambda O, O = -sum_x cos P(x), in the
        Schwinger model: one HMC base ensemble at lambda = 0 pushed through a flow 0 -> lambda (correlated
        two-point functions, reweighted), compared with the connected correlator <C(t) O>_c of the base ensemble,
        direct reweighting and an independent ensemble at lambda."""
        from rich.console import Console

        console = Console()

        def body() -> None:
            settings = FHSettings(
                store=store, out=out, flow_dir=flow_dir, theory=theory,
                shape=(T, L) if theory == "schwinger" else (T, L, L, L), beta=beta, mass=mass, lam=lam,
                symmetric=symmetric, n_configs=n_configs, n_chains=chains, n_therm=therm, thin=thin,
                step_size=step_size, n_steps=n_steps, hmc_det=hmc_det, seed=seed, epochs=epochs, n_train=n_train,
                batch_size=batch_size, learning_rate=lr, optimizer=optimizer, degree=degree, sweeps=sweeps,
                loops=tuple(x.strip() for x in loops.split(",") if x.strip()), train_seed=train_seed,
                n_sources=n_sources, kind=kind, t_min=t_min, t_max=t_max, fit_weights=fit_weights, bin_size=bin_size,
                bin_tau_factor=bin_tau_factor, measure_batch=measure_batch)
            settings.validate()
            run(settings, console=console)

        from analysis.workflow import run_cli

        run_cli(body, console, (ValueError, TypeError, FloatingPointError))

    return app


app = _make_app()


def main() -> None:
    """Entry point of ``python -m analysis.feynman_hellmann``."""
    app()


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
        main()
