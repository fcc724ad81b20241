r"""Quark-mass dependence of the Schwinger model from flow-correlated ensembles.

    python -m analysis.mass_dependence                 # defaults: a few minutes on 2 CPU cores
    python -m analysis.mass_dependence --help          # every option with its default

Physics
-------
2D U(1) gauge theory with ``n_f = 2`` degenerate Wilson fermions (:mod:`corrflow.theories.fermions`:
``S_eff(U; m) = S_g(U) - n_f log|det D(U, m)|``, bare mass ``m``, antiperiodic in time).  For a small shift
``m -> m + dm`` the analysis estimates ``dO/dm`` for

``pion_mass``
    ``m_pi`` from the isovector pseudoscalar correlator ``C(t)`` (:func:`corrflow.observables.fermions.pion_correlator`,
    ``n_sources`` point sources): cosh effective mass ``m_eff(t)`` (``C(t)/C(t+1) = cosh(m (t - L_0/2)) /
    cosh(m (t + 1 - L_0/2))``) and a correlated plateau fit (order 0) over ``t_min <= t <= t_max``.
``condensate``
    ``Sigma = (1/V) Re tr D^{-1}`` per flavour (``-<psibar psi>`` in the convention of
    :mod:`corrflow.observables.fermions`), computed from the even-odd Schur complement
    ``Dhat = (m+2) - H_eo H_oe / (4 (m+2))``: ``tr D^{-1} = 2 tr Dhat^{-1}`` (equal even and odd sites) and
    ``dSigma/dm = -(1/V) Re tr D^{-2} = (1/V) Re[-4 tr Dhat^{-2} + 2 tr Dhat^{-1} / (m+2)]``.
``plaquette``
    mean plaquette ``<cos P>``.
``chi_top``
    topological susceptibility ``<Q^2> / V`` of the geometric charge.

Estimators of ``dO/dm`` (each ``[O(m + dm) - O(m)] / dm`` except the last)
-------------------------------------------------------------------------
``flowed``
    correlated difference: ``O(m + dm) = <w O_{m+dm}(f(U))> / <w>`` on the base configurations ``U_i`` pushed
    through a flow ``f`` trained for ``m -> m + dm`` (``log w = -S_{m+dm}(f(U)) + S_m(U) + log J``, exact
    determinants), minus ``O(m) = <O_m(U)>`` on the *same* ``U_i``.
``direct``
    the same with ``f`` the identity (direct reweighting: ``log w = -S_{m+dm}(U) + S_m(U)``).  Fermionic
    observables are evaluated at the target mass on the base configurations.
``independent``
    independent HMC ensembles at ``m`` (the base) and ``m + dm``; errors added in quadrature.
``connected``
    the derivative at ``m`` itself from the base ensemble alone:
    ``d<O>/dm = <dO/dm> - <O dS/dm> + <O><dS/dm>`` with ``dS_eff/dm = -n_f V Sigma``
    (:func:`corrflow.observables.fermions.dS_dmass`); ``dO/dm = 0`` for the gauge observables and
    ``dSigma/dm`` above for the condensate.  Not available for the pion mass.  It differs from the finite
    differences by ``O(dm)`` (``dm/2 * d^2O/dm^2``), small against the errors for the defaults.

Errors
------
Scalar observables: Wolff's Gamma method (``--method gamma``, default) or the binned jackknife on the paired
primaries of one base configuration (``O(U_i)``, ``w_i O(f(U_i))``, ``w_i``, ...), chains as replicas, ratios
as derived quantities, so pairing and autocorrelation along the base chains are accounted for.  The pulls
between two estimators that use the same base ensemble are computed from the derived *difference* (their
correlation included); with the independent ensemble errors add in quadrature.

Pion mass: binned jackknife over the base configurations in Monte Carlo order (bins of
``ceil(bin_tau_factor * tau_int)`` configurations, ``tau_int`` the largest Gamma-method autocorrelation time
of ``C(t_max)`` and its flowed / direct differences; at least ``MIN_BINS`` bins).  Every leave-one-bin-out
sample recomputes the reweighted correlators (ratios), the effective masses and the plateau fit; the plateau
is a correlated fit (:func:`corrflow.stats.resampled_fit`, order 0) with the jackknife covariance of
``m_eff(t)`` held fixed.  The independent ensemble is binned on its own.

Costs and variance reduction
----------------------------
``variance reduction`` of the flowed estimator over another = ``(error_other / error_flowed)^2``;
cost-adjusted = ``(var_other * cost_other) / (var_flowed * cost_flowed)`` with wall-clock costs from
:func:`analysis.workflow.prepare`: flowed path = base HMC + training + flow application (flow, Jacobian, exact
determinants of both actions); independent = base HMC + target HMC; direct = base HMC + weights;
connected = base HMC.  Costs are steady-state seconds (JIT compilation excluded, see :mod:`analysis.workflow`);
measurement costs are not included (they are about the same for all paths).  Measurements are cached per
configuration set (``<flow_dir>/measurements/``), so a re-analysis (other ``t_min``, ``method``, ...) is quick.

What the defaults show (8 x 8, beta = 2, m = 0.2, dm = 0.02, 2 x 1000 configurations)
--------------------------------------------------------------------------------------
All correlated estimators beat independent ensembles by two orders of magnitude in variance (about 100x
cost-adjusted).  Direct reweighting is *better* than the flowed difference here: its weights are almost
constant (ESS fraction 0.9996), while the flow trained on 128 base configurations lowers the ESS (0.988): the
reverse-KL loss gradient is dominated by sampling noise for so small a shift and the flow overfits it.
For the topological susceptibility the flow also moves some configurations across a charge boundary, which
adds noise to ``Q(f(U))^2 - Q(U)^2``.  Flows are worth their cost when the direct weights degrade.  On
``T = 8`` the pion effective mass is still falling at ``t = 2, 3`` (chi^2/dof ~ 10 for the plateau); use
``--T 16`` for a true plateau (the exact determinants then cost about 10x more).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "ESTIMATORS",
    "OBSERVABLES",
    "Estimate",
    "MassSettings",
    "app",
    "condensate_and_slope",
    "main",
    "measure",
    "pion_mass_estimates",
    "run",
    "scalar_estimates",
]

ANALYSIS_NAME = "mass_dependence"
OBSERVABLES = ("pion_mass", "condensate", "plaquette", "chi_top")
ESTIMATORS = ("flowed", "direct", "independent", "connected")
OBS_LABELS = {"pion_mass": r"$m_\pi$", "condensate": r"$\Sigma$", "plaquette": r"$\langle P\rangle$",
              "chi_top": r"$\chi_{\rm top}$"}
#: fewest jackknife bins (in all chains together) used for the pion-mass covariance
MIN_BINS = 20


# ----------------------------------------------------------------------------------------------
# settings
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MassSettings:
    """Settings of :func:`run` (the command line options, same names; see ``--help``).

    ``shape = (T, L)``: time extent first.  ``t_max = 0`` means ``T/2 - 1``.  ``bin_size = 0`` chooses the
    pion-mass jackknife bin size automatically.  ``flow_dir = ""``: ``<store stem>_flows`` next to the store.
    """

    store: str = "data/mass_dependence.zarr"
    out: str = "reports/mass_dependence"
    flow_dir: str = ""
    theory: str = "schwinger"
    shape: tuple[int, int] = (8, 8)
    beta: float = 2.0
    mass: float = 0.2
    dm: float = 0.02
    n_configs: int = 1000
    n_chains: int = 2
    n_therm: int = 100
    start: str = "hot"
    thin: int = 1
    step_size: float = 0.2
    n_steps: int = 5
    hmc_det: str = "pseudofermion"
    seed: int = 0
    epochs: int = 10
    n_train: int = 128
    batch_size: int = 32
    learning_rate: float = 0.005
    sweeps: int = 2
    loops: tuple[str, ...] = ("plaquette",)
    train_seed: int = 0
    n_sources: int = 2
    t_min: int = 2
    t_max: int = 0
    observables: tuple[str, ...] = OBSERVABLES
    method: str = "gamma"
    bin_size: int = 0
    bin_tau_factor: float = 20.0
    measure_batch: int = 64

    def validate(self) -> None:
        """Raise ``ValueError`` with a clear message for bad settings."""
        th = str(self.theory).strip().lower()
        if th != "schwinger":
            raise ValueError(f"theory {self.theory!r} is not supported: the mass dependence needs dynamical fermions "
                             "and the geometric topological charge of 2D U(1); use theory 'schwinger'")
        bad = [o for o in self.observables if o not in OBSERVABLES]
        if bad:
            raise ValueError(f"unknown observable(s) {', '.join(map(repr, bad))}; allowed: {', '.join(OBSERVABLES)}")
        if not self.observables:
            raise ValueError(f"no observables selected; allowed: {', '.join(OBSERVABLES)}")
        if len(self.shape) != 2 or any(int(s) != s or s < 2 or s % 2 for s in self.shape):
            raise ValueError(f"shape must be two even extents (T, L) >= 2, got {self.shape}")
        if not (math.isfinite(self.dm) and self.dm != 0.0):
            raise ValueError(f"dm must be finite and non-zero (it is the mass shift of the derivative), got {self.dm}")
        for m, what in ((self.mass, "mass"), (self.mass + self.dm, "mass + dm")):
            if not math.isfinite(m) or m + 2 <= 0:
                raise ValueError(f"{what} = {m} must be finite and > -2 (kappa > 0)")
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"beta must be positive, got {self.beta}")
        if self.hmc_det not in ("exact", "pseudofermion"):
            raise ValueError(f"hmc_det must be 'exact' or 'pseudofermion', got {self.hmc_det!r}")
        if self.start not in ("hot", "cold"):
            raise ValueError(f"start must be 'hot' or 'cold', got {self.start!r}")
        if self.n_therm < 0:
            raise ValueError(f"n_therm must be >= 0, got {self.n_therm}")
        if self.method not in ("gamma", "jackknife"):
            raise ValueError(f"method must be 'gamma' or 'jackknife', got {self.method!r}")
        t0 = self.shape[0]
        if self.n_sources < 1 or t0 % self.n_sources:
            raise ValueError(f"n_sources = {self.n_sources} must divide the time extent T = {t0}")
        tmax = self.resolved_t_max
        if not (0 <= self.t_min < tmax <= t0 // 2 - 1):
            raise ValueError(f"need 0 <= t_min < t_max <= T/2 - 1 = {t0 // 2 - 1} for the cosh plateau, got "
                             f"t_min = {self.t_min}, t_max = {tmax}")
        if self.n_configs < 20:
            raise ValueError(f"n_configs must be >= 20 per chain, got {self.n_configs}")
        if self.bin_size < 0 or self.bin_tau_factor <= 0 or self.measure_batch < 1:
            raise ValueError("bin_size must be >= 0, bin_tau_factor > 0 and measure_batch >= 1")

    @property
    def resolved_t_max(self) -> int:
        return int(self.t_max) if self.t_max else self.shape[0] // 2 - 1

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        d["loops"] = list(self.loops)
        d["observables"] = list(self.observables)
        d["t_max"] = self.resolved_t_max
        return d


# ----------------------------------------------------------------------------------------------
# measurements
# ----------------------------------------------------------------------------------------------


def condensate_and_slope(theory: Any, u: Any) -> tuple[Any, Any]:
    """``(Sigma, dSigma/dm)`` per flavour, shape ``batch`` (exact, from the even-odd Schur complement).

    ``Sigma = (1/V) Re tr D^{-1} = (2/V) Re tr Dhat^{-1}`` and
    ``dSigma/dm = -(1/V) Re tr D^{-2} = (1/V) Re[-4 tr Dhat^{-2} + 2 tr Dhat^{-1} / (m + d)]``
    (module docstring; needs equal numbers of even and odd sites, i.e. even extents).
    """
    import jax
    import jax.numpy as jnp

    from corrflow.theories.fermions import dirac_matrix

    v = theory.links(u)
    nb = u.ndim - len(theory.link_shape)
    flat = v.reshape((-1,) + v.shape[nb:])
    a = theory.mass + theory.ndim

    def one(vv: Any) -> Any:
        x = jnp.linalg.inv(dirac_matrix(vv, theory.mass, theory.n_spin, even_odd=True))
        tr1 = jnp.trace(x)
        tr2 = jnp.sum(x * x.T)
        return jnp.real(2.0 * tr1), jnp.real(-4.0 * tr2 + 2.0 * tr1 / a)

    s, ds = jax.vmap(one)(flat)
    vol = theory.volume
    return s.reshape(u.shape[:nb]) / vol, ds.reshape(u.shape[:nb]) / vol


def _measure_fn(n_sources: int, with_pion: bool) -> Callable[[Any, Any], dict[str, Any]]:
    import jax

    from corrflow import observables as gobs
    from corrflow.observables.fermions import pion_correlator

    @jax.jit
    def fn(theory: Any, u: Any) -> dict[str, Any]:
        q = gobs.topological_charge(u, theory.group)
        sig, dsig = condensate_and_slope(theory, u)
        out = {"plaquette": gobs.plaquette(u, theory.group), "chi_top": q * q / theory.volume,
               "condensate": sig, "dcondensate_dm": dsig}
        if with_pion:
            out["pion"] = pion_correlator(theory, u, n_sources)
        return out

    return fn


_MEASURE_CACHE: dict[tuple[int, bool], Callable] = {}


def measure(theory: Any, links: np.ndarray, *, n_sources: int = 2, with_pion: bool = True, batch: int = 64,
            progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """Observables of every configuration ``links`` ``(n, *link_shape)`` at ``theory``'s mass.

    Returns ``plaquette``, ``chi_top`` (``Q^2 / V``), ``condensate`` (``Sigma``), ``dcondensate_dm``: ``(n,)``;
    ``pion``: ``(n, T)`` correlators (with ``with_pion``).  Batches are padded to ``batch`` so one compiled
    program serves every call (the mass is traced: base and target share it).
    """
    import jax.numpy as jnp

    from analysis.workflow import exact_theory

    theory = exact_theory(theory)
    key = (int(n_sources), bool(with_pion))
    if key not in _MEASURE_CACHE:
        _MEASURE_CACHE[key] = _measure_fn(*key)
    fn = _MEASURE_CACHE[key]
    n = len(links)
    parts: list[dict[str, np.ndarray]] = []
    for lo in range(0, n, batch):
        blk = np.asarray(links[lo:lo + batch])
        k = len(blk)
        if k < batch:  # pad with copies of the last configuration (fixed shapes: no recompilation)
            blk = np.concatenate([blk, np.repeat(blk[-1:], batch - k, axis=0)])
        out = fn(theory, jnp.asarray(blk))
        parts.append({name: np.asarray(v)[:k] for name, v in out.items()})
        if progress is not None:
            progress(min(n, lo + batch), n)
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


# ----------------------------------------------------------------------------------------------
# estimators
# ----------------------------------------------------------------------------------------------


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


def _weights(log_w: np.ndarray) -> np.ndarray:
    lw = np.asarray(log_w, float)
    return np.exp(lw - np.max(lw))


def _pull(a: Estimate, b: Estimate) -> float:
    err = math.hypot(a.error, b.error)
    return (a.value - b.value) / err if err > 0 else math.nan


def _stats(prims: list[np.ndarray], func: Callable[[np.ndarray], float], method: str,
           bin_size: int | None) -> Estimate:
    from corrflow.stats import binned_jackknife, gamma_method

    data = np.stack(prims)  # (n_obs, R, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        st = gamma_method(data, func=func) if method == "gamma" else binned_jackknife(data, func=func,
                                                                                      bin_size=bin_size)
    return Estimate(float(st.value), float(st.error), float(st.tau_int))


def _plain(x: np.ndarray, method: str, bin_size: int | None) -> Estimate:
    return _stats([x], lambda a: a[0], method, bin_size)


def scalar_estimates(obs: str, base: dict[str, np.ndarray], flowed: dict[str, np.ndarray],
                     direct: dict[str, np.ndarray], independent: dict[str, np.ndarray], log_w: np.ndarray,
                     log_w_direct: np.ndarray, dm: float, n_flavors: int, volume: int, *, method: str = "gamma",
                     bin_size: int | None = None) -> dict[str, Any]:
    """All estimators of ``dO/dm`` for a scalar observable ``obs`` (``condensate``, ``plaquette``, ``chi_top``).

    Inputs are ``(R, n)`` arrays (chains as replicas): ``base[obs]`` = ``O_m(U_i)``, ``flowed[obs]`` =
    ``O_{m+dm}(f(U_i))``, ``direct[obs]`` = ``O_{m+dm}(U_i)``, ``independent[obs]`` on the target ensemble
    ``(R', n')``; ``base["condensate"]`` (and ``base["dcondensate_dm"]`` for the condensate) for the connected
    estimator.  Returns ``{"derivative": {estimator: Estimate}, "value_base", "value_target": {estimator:
    Estimate}, "pulls": {"a-b": float}}``; pulls of paired estimators use the derived difference.
    """
    w, wd = _weights(log_w), _weights(log_w_direct)
    ob, of, od = base[obs], flowed[obs], direct[obs]
    s = -n_flavors * volume * base["condensate"]  # dS_eff/dm per configuration
    prims = [ob, w * of, w, wd * od, wd, ob * s, s]
    explicit = obs == "condensate"
    if explicit:
        prims.append(base["dcondensate_dm"])

    def f_flowed(a: np.ndarray) -> float:
        return (a[1] / a[2] - a[0]) / dm

    def f_direct(a: np.ndarray) -> float:
        return (a[3] / a[4] - a[0]) / dm

    def f_conn(a: np.ndarray) -> float:
        return (a[7] if explicit else 0.0) - a[5] + a[0] * a[6]

    funcs = {"flowed": f_flowed, "direct": f_direct, "connected": f_conn}
    der = {k: _stats(prims, f, method, bin_size) for k, f in funcs.items()}
    vb = _plain(ob, method, bin_size)
    vi = _plain(independent[obs], method, bin_size)
    der["independent"] = Estimate((vi.value - vb.value) / dm, math.hypot(vi.error, vb.error) / abs(dm), math.nan)
    targets = {"flowed": _stats(prims, lambda a: a[1] / a[2], method, bin_size),
               "direct": _stats(prims, lambda a: a[3] / a[4], method, bin_size), "independent": vi}
    pulls = {}
    for a, b in (("flowed", "direct"), ("flowed", "connected"), ("direct", "connected")):
        fa, fb = funcs[a], funcs[b]
        d = _stats(prims, lambda x, fa=fa, fb=fb: fa(x) - fb(x), method, bin_size)
        pulls[f"{a}-{b}"] = d.value / d.error if d.error > 0 else math.nan
    for a in ("flowed", "direct", "connected"):
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
    """Plateau fit of the cosh effective mass: central mass, jackknife samples ``(B,)``, ``m_eff(t)`` central
    ``(T/2,)`` and its jackknife error, chi^2/dof of the correlated fit."""

    mass: float
    samples: np.ndarray
    m_eff: np.ndarray
    m_eff_error: np.ndarray
    chi2_dof: float


def _plateau(corr_central: np.ndarray, corr_samples: np.ndarray, t_min: int, t_max: int) -> PionFit:
    """Cosh effective masses of a correlator (central ``(T,)`` and jackknife samples ``(B, T)``) and a correlated
    constant fit over ``t_min .. t_max`` with the jackknife covariance fixed (errors from refitting samples)."""
    from corrflow.observables.fermions import effective_mass
    from corrflow.stats import FitError, resampled_fit

    mc = effective_mass(corr_central)
    ms = effective_mass(corr_samples)
    ts = np.arange(t_min, t_max + 1)
    if not np.all(np.isfinite(mc[ts])) or not np.all(np.isfinite(ms[:, ts])):
        raise ValueError(f"the cosh effective mass is undefined (C(t) <= C(t+1)) somewhere in t = {t_min}..{t_max}; "
                         "the correlator is too noisy there: lower --t-max or use more configurations")
    b = len(ms)
    err = np.sqrt((b - 1) / b * np.sum((ms - ms.mean(0)) ** 2, axis=0))
    try:
        fit = resampled_fit(ts, mc[ts], ms[:, ts], order=0, kind="jackknife")
    except FitError:
        fit = resampled_fit(ts, mc[ts], ms[:, ts], order=0, kind="jackknife", svd_cut=1e-6)
    chi2_dof = fit.chi2 / fit.dof if fit.dof > 0 else math.nan
    return PionFit(float(fit.params[0]), np.asarray(fit.param_replicas)[:, 0], mc, err, float(chi2_dof))


def pion_bin_size(c_base: np.ndarray, c_flowed: np.ndarray, c_direct: np.ndarray, log_w: np.ndarray,
                  log_w_direct: np.ndarray, t: int, factor: float) -> tuple[int, float]:
    """Automatic jackknife bin size ``ceil(factor * tau)`` with ``tau`` the largest Gamma-method ``tau_int`` of
    ``C(t)`` on the base and of its flowed and direct correlated differences; capped so that at least
    ``MIN_BINS`` bins remain.  Inputs ``(R, n, T)`` and ``(R, n)``; returns ``(bin size, tau)``."""
    from corrflow.stats import correlated_difference, gamma_method

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        taus = [gamma_method(c_base[..., t]).tau_int,
                correlated_difference(c_base[..., t], c_flowed[..., t], log_w).tau_int,
                correlated_difference(c_base[..., t], c_direct[..., t], log_w_direct).tau_int]
    tau = float(max(taus))
    r, n = c_base.shape[:2]
    cap = max(1, (r * n) // MIN_BINS)
    return max(1, min(cap, math.ceil(factor * tau))), tau


def pion_mass_estimates(c_base: np.ndarray, c_flowed: np.ndarray, c_direct: np.ndarray, c_independent: np.ndarray,
                        log_w: np.ndarray, log_w_direct: np.ndarray, dm: float, *, t_min: int, t_max: int,
                        bin_size: int, bin_size_independent: int) -> dict[str, Any]:
    """Estimators of ``dm_pi/dm`` from pion correlators: ``c_base`` ``(R, n, T)`` = ``C_m(U_i)``, ``c_flowed`` =
    ``C_{m+dm}(f(U_i))``, ``c_direct`` = ``C_{m+dm}(U_i)``, ``c_independent`` ``(R', n', T)`` on the target
    ensemble; log weights ``(R, n)``.

    One binned jackknife over the base configurations carries all paired primaries (``C_b``, ``w C_f``, ``w``,
    ``w_d C_d``, ``w_d``): every sample recomputes the reweighted correlators, effective masses and plateau fits
    of base, flowed and direct, so their differences keep the pairing.  Returns ``derivative`` and
    ``value_target`` ``{estimator: Estimate}``, ``value_base``, ``pulls``, ``fits`` ``{name: PionFit}``,
    ``n_bins``.
    """
    T = c_base.shape[-1]
    w, wd = _weights(log_w), _weights(log_w_direct)
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
    dd = diff_samples["flowed"] - diff_samples["direct"]
    pdiff = der["flowed"].value - der["direct"].value
    pulls = {"flowed-direct": pdiff / _jk_error(dd) if _jk_error(dd) > 0 else math.nan,
             "flowed-independent": _pull(der["flowed"], der["independent"]),
             "direct-independent": _pull(der["direct"], der["independent"])}
    return {"derivative": der, "value_base": vb,
            "value_target": {k: est(fits[k]) for k in ("flowed", "direct", "independent")},
            "pulls": pulls, "fits": fits, "n_bins": len(jk)}


# ----------------------------------------------------------------------------------------------
# variance reduction, tables, figure
# ----------------------------------------------------------------------------------------------


def path_costs(costs: dict[str, float]) -> dict[str, float]:
    """Seconds of each estimator's path (module docstring) from the workflow's stage costs."""
    hb = costs.get("hmc_base", math.nan)
    return {"flowed": hb + costs.get("train", math.nan) + costs.get("flow", math.nan),
            "direct": hb + costs.get("direct", math.nan),
            "independent": hb + costs.get("hmc_independent", math.nan),
            "connected": hb}


def _vr(flow: Estimate, other: Estimate, c_flow: float, c_other: float) -> tuple[float, float]:
    if not (math.isfinite(other.error) and flow.error > 0):
        return math.nan, math.nan
    v = (other.error / flow.error) ** 2
    return v, v * c_other / c_flow if c_flow > 0 else math.nan


def _num(x: float, digits: int = 3) -> float | None:
    return float(f"{x:.{digits}g}") if math.isfinite(x) else None


def _figure(results: dict[str, dict[str, Any]], s: MassSettings, vr: dict[str, dict[str, float]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    obs = list(results)
    colors = {"flowed": "C0", "direct": "C1", "independent": "C2", "connected": "C3"}
    markers = {"flowed": "o", "direct": "s", "independent": "^", "connected": "D"}
    fig = plt.figure(figsize=(3.2 * max(3, len(obs)), 7.4), constrained_layout=True)
    gs = fig.add_gridspec(2, max(3, len(obs)) * 2)
    per = 2
    for j, o in enumerate(obs):
        ax = fig.add_subplot(gs[0, per * j:per * (j + 1)])
        der = results[o]["derivative"]
        xs = [e for e in ESTIMATORS if math.isfinite(der[e].value)]
        for i, e in enumerate(xs):
            ax.errorbar([i], [der[e].value], yerr=[der[e].error], fmt=markers[e], color=colors[e], capsize=4, ms=6)
        if "connected" in xs:
            c = der["connected"]
            ax.axhspan(c.value - c.error, c.value + c.error, color=colors["connected"], alpha=0.12, lw=0)
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels(xs, rotation=30, fontsize=9)
        ax.set_title(f"d{OBS_LABELS[o]}/dm", fontsize=11)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.grid(alpha=0.3, axis="y")
    nb = max(3, len(obs)) * 2
    if "pion_mass" in results:
        ax = fig.add_subplot(gs[1, :nb // 2])
        fits = results["pion_mass"]["fits"]
        pion = results["pion_mass"]
        t_lo = max(0, s.t_min - 1)  # earlier points (excited states) would squash the scale
        t = np.arange(t_lo, len(fits["base"].m_eff))
        ts = np.array([s.t_min - 0.3, s.resolved_t_max + 0.3])
        for k, lab, off in (("base", f"m = {s.mass:g} (base)", -0.12), ("flowed", "m + dm (flowed)", -0.04),
                            ("direct", "m + dm (direct)", 0.04), ("independent", "m + dm (independent)", 0.12)):
            f = fits[k]
            est = pion["value_base"] if k == "base" else pion["value_target"][k]
            col = "k" if k == "base" else colors[k]
            ax.errorbar(t + off, f.m_eff[t_lo:], yerr=f.m_eff_error[t_lo:], fmt=markers.get(k, "x"), color=col,
                        capsize=3, ms=4, label=f"{lab}: {est}")
            if k in ("base", "flowed", "independent"):
                ax.fill_between(ts, est.value - est.error, est.value + est.error, color=col, alpha=0.15, lw=0)
                ax.plot(ts, [est.value, est.value], color=col, lw=1.0, alpha=0.8)
        ax.set_xlabel("t")
        ax.set_ylabel(r"cosh effective mass $m_{\rm eff}(t)$")
        ax.set_title(f"pion effective mass, dm = {s.dm:g}", fontsize=11)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        ax2 = fig.add_subplot(gs[1, nb // 2:])
    else:
        ax2 = fig.add_subplot(gs[1, :])
    width = 0.2
    xs = np.arange(len(obs))
    for i, (k, lab) in enumerate((("vs_independent", "vs independent"), ("cost_adjusted_vs_independent",
                                                                         "vs independent, cost-adjusted"),
                                  ("vs_direct", "vs direct"), ("cost_adjusted_vs_direct", "vs direct, cost-adjusted"))):
        vals = [vr[o][k] if vr[o][k] is not None else np.nan for o in obs]
        ax2.bar(xs + (i - 1.5) * width, vals, width, label=lab, color=("C2", "C2", "C1", "C1")[i],
                alpha=(1.0, 0.5, 1.0, 0.5)[i])
    ax2.axhline(1.0, color="k", lw=0.8)
    ax2.set_yscale("log")
    finite = [v for o in obs for v in vr[o].values() if v is not None and v > 0]
    if finite:
        ax2.set_ylim(min(finite) / 3, max(finite) * 40)
    ax2.set_xticks(xs)
    ax2.set_xticklabels([OBS_LABELS[o] for o in obs])
    ax2.set_ylabel("variance reduction of the flowed estimator")
    ax2.legend(fontsize=8, ncol=2, loc="upper center")
    ax2.grid(alpha=0.3, axis="y")
    fig.suptitle(f"Schwinger model, $N_f=2$ Wilson, {s.shape[0]}x{s.shape[1]}, beta = {s.beta:g}, m = {s.mass:g}, "
                 f"dm = {s.dm:g}", fontsize=12)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    plt.close(fig)
    return buf.getvalue()


def _markdown(record: dict[str, Any], png_name: str) -> str:
    lines = [f"# {record['title']}", ""]
    lines += record["summary"] + [""]
    for caption, tab in record["tables"].items():
        lines += [f"**{caption}**", "", "| " + " | ".join(tab["columns"]) + " |",
                  "|" + "|".join("---" for _ in tab["columns"]) + "|"]
        for row in tab["rows"]:
            lines.append("| " + " | ".join("" if v is None else str(v) for v in row) + " |")
        lines.append("")
    lines += [f"![mass dependence]({png_name})", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# the analysis
# ----------------------------------------------------------------------------------------------


def _cached(directory: Path, key: dict[str, Any], compute: Callable[[], dict[str, np.ndarray]]
            ) -> dict[str, np.ndarray]:
    """Measurements of one configuration set, cached as ``<directory>/<hash of key>.npz`` (the key holds a
    digest of the configurations themselves, so a regenerated ensemble is never matched with stale values)."""
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = directory / f"{h}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: np.asarray(z[k]) for k in z.files}
        except (OSError, ValueError):
            pass  # unreadable cache entry: recompute
    out = compute()
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f"{h}.tmp.npz"
    np.savez(tmp, **out)
    tmp.replace(path)
    return out


class _Silent:
    def print(self, *a: Any) -> None:
        pass


def run(settings: MassSettings | None = None, *, console: Any = None, write: bool = True,
        **overrides: Any) -> dict[str, Any]:
    """Run the whole analysis and return the record (also written to the store and ``settings.out``).

    Parameters
    ----------
    settings : MassSettings, optional
        Defaults if omitted; ``overrides`` replace single fields (``run(n_configs=200, dm=0.05)``).
    console : rich.console.Console, optional
        Progress bars and the result table; silent if None.
    write : bool
        Write ``mass_dependence.png / .md / .json`` to ``settings.out`` and the record (with the figure) to the
        store (``write_analysis("mass_dependence", ...)``).

    Returns
    -------
    dict
        ``{"title", "summary", "tables", "settings", "variance_reduction", "costs", "estimates", "pulls",
        "weight_ess", "info"}`` (JSON-serialisable).
    """
    import corrflow as cf
    from analysis.workflow import RichWorkflowProgress, WorkflowProgress, prepare

    s = dataclasses.replace(settings or MassSettings(), **overrides)
    if isinstance(s.shape, (list, tuple)):
        s = dataclasses.replace(s, shape=tuple(int(x) for x in s.shape), observables=tuple(s.observables),
                                loops=tuple(s.loops))
    s.validate()
    out = console.print if console is not None else _Silent().print
    t_start = time.perf_counter()
    base = cf.make_theory(s.theory, s.shape, beta=s.beta, mass=s.mass, det=s.hmc_det)
    target = base.replace(mass=s.mass + s.dm)
    prog = RichWorkflowProgress(console) if console is not None else WorkflowProgress()
    out(f"[bold]mass dependence[/]: Schwinger {s.shape[0]}x{s.shape[1]}, beta={s.beta:g}, m={s.mass:g} -> "
        f"{s.mass + s.dm:g} ({s.hmc_det} HMC, exact weights)")
    pe = prepare(s.store, base, target, n_configs=s.n_configs, n_therm=s.n_therm, seed=s.seed,
                 hmc=cf.HMCConfig(step_size=s.step_size, n_steps=s.n_steps, integrator="omelyan"),
                 flow_epochs=s.epochs, n_chains=s.n_chains, thin=s.thin, hmc_det=s.hmc_det,
                 flow_loops=s.loops, flow_sweeps=s.sweeps, n_train=s.n_train, batch_size=s.batch_size,
                 learning_rate=s.learning_rate, train_seed=s.train_seed, flow_dir=s.flow_dir or None,
                 start=s.start, progress=prog)

    # --- measurements --------------------------------------------------------------------------
    with_pion = "pion_mass" in s.observables
    meas: dict[str, dict[str, np.ndarray]] = {}
    m_costs: dict[str, float] = {}
    cache = Path(pe.info["flow"]["checkpoint"]).parent / "measurements"
    names = pe.info["names"]
    for key, th, links, ens in (("base", pe.base, pe.base_links, names["base"]),
                                ("flowed", pe.target, pe.flowed_links, names["flowed"]),
                                ("direct", pe.target, pe.base_links, names["direct"]),
                                ("independent", pe.target, pe.independent_links, names["independent"])):
        t0 = time.perf_counter()
        digest = hashlib.sha256(np.ascontiguousarray(links).tobytes()).hexdigest()[:16]
        raw = _cached(cache, {"ensemble": ens, "links": digest, "mass": float(th.mass), "n_sources": s.n_sources,
                              "pion": with_pion},
                      lambda th=th, links=links, key=key: measure(
                          th, links, n_sources=s.n_sources, with_pion=with_pion, batch=s.measure_batch,
                          progress=lambda d, t: prog.update(f"measure {key}", d, t)))
        prog.finish(f"measure {key}")
        m_costs[key] = time.perf_counter() - t0
        meas[key] = {k: pe.chains(v) for k, v in raw.items()}
    out(f"  measured pion correlators, condensate, plaquette, Q on 4 x {len(pe.base_links)} configurations "
        f"({sum(m_costs.values()):.1f} s; cached in {cache})")
    lw, lwd = pe.chains(pe.log_w), pe.chains(pe.log_w_direct)

    # --- estimators ----------------------------------------------------------------------------
    results: dict[str, dict[str, Any]] = {}
    bin_info: dict[str, Any] = {}
    for o in s.observables:
        if o == "pion_mass":
            if s.bin_size:
                bs, tau = int(s.bin_size), math.nan
            else:
                bs, tau = pion_bin_size(meas["base"]["pion"], meas["flowed"]["pion"], meas["direct"]["pion"], lw, lwd,
                                        s.resolved_t_max, s.bin_tau_factor)
            ci = meas["independent"]["pion"]
            if s.bin_size:
                bsi = int(s.bin_size)
            else:
                from corrflow.stats import gamma_method

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    taui = gamma_method(ci[..., s.resolved_t_max]).tau_int
                bsi = max(1, min(max(1, ci.shape[0] * ci.shape[1] // MIN_BINS), math.ceil(s.bin_tau_factor * taui)))
            results[o] = pion_mass_estimates(meas["base"]["pion"], meas["flowed"]["pion"], meas["direct"]["pion"], ci,
                                             lw, lwd, s.dm, t_min=s.t_min, t_max=s.resolved_t_max, bin_size=bs,
                                             bin_size_independent=bsi)
            bin_info = {"bin_size": bs, "bin_size_independent": bsi, "tau_int": _num(tau),
                        "n_bins": results[o]["n_bins"]}
        else:
            results[o] = scalar_estimates(o, meas["base"], meas["flowed"], meas["direct"], meas["independent"], lw,
                                          lwd, s.dm, base.n_flavors, base.volume, method=s.method,
                                          bin_size=s.bin_size or None)

    # --- variance reduction, tables -------------------------------------------------------------
    pc = path_costs(pe.costs)
    ess = pe.info["weight_ess_fraction"]
    vr: dict[str, dict[str, float | None]] = {}
    rows = []
    for o in s.observables:
        der = results[o]["derivative"]
        fl = der["flowed"]
        vi, vic = _vr(fl, der["independent"], pc["flowed"], pc["independent"])
        vd, vdc = _vr(fl, der["direct"], pc["flowed"], pc["direct"])
        vr[o] = {"vs_independent": _num(vi), "vs_direct": _num(vd), "cost_adjusted_vs_independent": _num(vic),
                 "cost_adjusted_vs_direct": _num(vdc)}
        for e in ESTIMATORS:
            est = der[e]
            if not math.isfinite(est.value):
                rows.append([o, e, "n/a", None, None, None, None, None, None])
                continue
            v, vc = (1.0, 1.0) if e == "flowed" else _vr(fl, est, pc["flowed"], pc[e])
            pull = None if e == "flowed" else results[o]["pulls"].get(f"flowed-{e}")
            rows.append([o, e, str(est), _num(est.error), _num(v), _num(vc),
                         _num(ess[e], 3) if e in ("flowed", "direct") else None,
                         _num(est.tau_int, 2), _num(pull, 2) if pull is not None else None])
    table = {"columns": ["observable", "estimator", "dO/dm", "error", "var. red. (flowed over this)",
                         "cost-adjusted var. red.", "weight ESS fraction", "tau_int", "pull vs flowed"],
             "rows": rows}
    vrows = []
    for o in s.observables:
        r = results[o]
        vt = r["value_target"]
        vrows.append([o, str(r["value_base"]), str(vt["flowed"]), str(vt["direct"]), str(vt["independent"])])
    values = {"columns": ["observable", f"O(m={s.mass:g}) base", "O(m+dm) flowed", "O(m+dm) direct",
                          "O(m+dm) independent"], "rows": vrows}

    runtime = time.perf_counter() - t_start
    summary = [
        (f"Schwinger model (2D U(1), N_f = 2 Wilson fermions), {s.shape[0]} x {s.shape[1]}, beta = {s.beta:g}, "
         f"m = {s.mass:g}, dm = {s.dm:g}; {s.n_chains} x {s.n_configs} base and independent configurations "
         f"({s.hmc_det} HMC), flow: {pe.info['flow']['epochs']} epochs, {s.sweeps} sweeps, loops "
         f"{','.join(s.loops)}."),
        (f"Weight ESS fraction: flowed {ess['flowed']:.4f}, direct {ess['direct']:.4f}; training-set ESS "
         f"{pe.info['flow']['train_ess_initial']:.4f} -> {pe.info['flow']['train_ess_final']:.4f}."),
        "Path costs (s): " + ", ".join(f"{k} {v:.1f}" for k, v in pc.items()) + ".",
    ]
    for o in s.observables:
        d = results[o]["derivative"]
        summary.append(f"d{o}/dm: flowed {d['flowed']}, direct {d['direct']}, independent {d['independent']}"
                       + (f", connected {d['connected']}" if math.isfinite(d["connected"].value) else "")
                       + f"; variance reduction vs independent {vr[o]['vs_independent']}, vs direct "
                         f"{vr[o]['vs_direct']} (cost-adjusted {vr[o]['cost_adjusted_vs_independent']}, "
                         f"{vr[o]['cost_adjusted_vs_direct']}).")
    if "plaquette" in results:
        p = results["plaquette"]["pulls"]
        d = results["plaquette"]["derivative"]
        summary.append(f"Cross-check d<P>/dm = n_f V cov(P, Sigma) on the base ensemble (connected) "
                       f"{d['connected']}: pull vs flowed {p['flowed-connected']:+.2f} sigma (paired), vs independent "
                       f"{p['connected-independent']:+.2f} sigma; direct - connected is the O(dm) finite-difference "
                       f"term (paired pull {p['direct-connected']:+.2f}).")
    if "pion_mass" in results:
        c2 = {k: f.chi2_dof for k, f in results["pion_mass"]["fits"].items()}
        summary.append(f"Pion plateau t = {s.t_min}..{s.resolved_t_max}: correlated chi^2/dof base {c2['base']:.2f}, "
                       f"flowed {c2['flowed']:.2f}, independent {c2['independent']:.2f}"
                       + (" (the effective mass is still falling: a longer time extent --T gives a true plateau; "
                          "the estimators then compare an effective mass at these t)." if c2["base"] > 3 else "."))
    if ess["flowed"] < ess["direct"]:
        summary.append(f"The trained flow has a lower weight ESS than the identity ({ess['flowed']:.4f} < "
                       f"{ess['direct']:.4f}): for this small shift the reverse-KL training on {s.n_train} base "
                       "configurations is dominated by sampling noise (the loss gradient fluctuates like sqrt(V / "
                       "n_train) while the gain is ~ var(log w_direct) / 2), so direct reweighting is the better "
                       "correlated estimator here; flows pay off when direct weights degrade (larger dm or volume).")
    summary.append(f"Runtime of this invocation {runtime:.0f} s (measurements {sum(m_costs.values()):.0f} s; steps found "
                   "in the store or the measurement cache are reused, their costs come from the timing ledger).")

    def est_json(e: Estimate) -> dict[str, float | None]:
        return {"value": _num(e.value, 8), "error": _num(e.error, 4), "tau_int": _num(e.tau_int, 3)}

    record = {
        "title": "Quark-mass dependence of the Schwinger model from flow-correlated ensembles",
        "summary": summary,
        "tables": {"dO/dm by estimator": table, "O at m and m + dm": values},
        "settings": s.as_dict(),
        "variance_reduction": vr,
        "costs": {**{k: _num(v, 4) for k, v in pe.costs.items()}, **{f"path_{k}": _num(v, 4) for k, v in pc.items()},
                  **{f"measure_{k}": _num(v, 4) for k, v in m_costs.items()}, "runtime": _num(runtime, 4)},
        "estimates": {o: {"derivative": {e: est_json(v) for e, v in results[o]["derivative"].items()},
                          "value_base": est_json(results[o]["value_base"]),
                          "value_target": {e: est_json(v) for e, v in results[o]["value_target"].items()}}
                      for o in s.observables},
        "pulls": {o: {k: _num(v, 3) for k, v in results[o]["pulls"].items()} for o in s.observables},
        "weight_ess": {k: _num(v, 4) for k, v in ess.items()},
        "info": {"ensembles": pe.info["names"], "flow": pe.info["flow"],
                 "tau_int_plaquette": {k: _num(v, 3) for k, v in pe.info["tau_int_plaquette"].items()},
                 "acceptance": pe.info["acceptance"], "pion_jackknife": bin_info},
    }
    if "pion_mass" in results:
        f = results["pion_mass"]["fits"]
        record["info"]["pion_fit_chi2_dof"] = {k: _num(v.chi2_dof, 3) for k, v in f.items()}
    png = _figure(results, s, vr)
    if write:
        odir = Path(s.out)
        odir.mkdir(parents=True, exist_ok=True)
        (odir / "mass_dependence.png").write_bytes(png)
        (odir / "mass_dependence.md").write_text(_markdown(record, "mass_dependence.png"))
        (odir / "mass_dependence.json").write_text(json.dumps(record, indent=1))
        cf.open_store(s.store, "a").write_analysis(ANALYSIS_NAME, record, figures={"mass_dependence.png": png})
    if console is not None:
        _print_table(console, record)
        if write:
            console.print(f"[green]done[/] in {runtime:.0f} s: {Path(s.out) / 'mass_dependence.md'}, figure and record "
                          f"{ANALYSIS_NAME!r} in {s.store}")
    return record


def _print_table(console: Any, record: dict[str, Any]) -> None:
    from rich.table import Table

    for caption, tab in record["tables"].items():
        t = Table(title=caption)
        for c in tab["columns"]:
            t.add_column(c, justify="right")
        for row in tab["rows"]:
            t.add_row(*["" if v is None else str(v) for v in row])
        console.print(t)
    for line in record["summary"][-2:]:
        console.print(line)


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------


def _make_app() -> Any:
    import typer

    d = MassSettings()
    app = typer.Typer(add_completion=False, rich_markup_mode="markdown",
                      help="dO/dm in the Schwinger model: flowed correlated differences vs direct reweighting vs "
                           "independent ensembles (and the connected correlator).")

    @app.command(epilog="""
**Examples**

    python -m analysis.mass_dependence                                      # defaults (a few minutes)

    python -m analysis.mass_dependence --n-configs 4000 --dm 0.05 --out reports/md_dm0.05

    python -m analysis.mass_dependence --observables plaquette,condensate --method jackknife
""")
    def main(
        store: str = typer.Option(d.store, help="zarr store (created if absent; every step is resumable)"),
        out: str = typer.Option(d.out, help="output directory for mass_dependence.png / .md / .json"),
        flow_dir: str = typer.Option(d.flow_dir, help="flow checkpoints, timing ledger and measurement cache [default: empty = STORE-stem_flows next to the store]"),
        theory: str = typer.Option(d.theory, help="theory (only 'schwinger': 2D U(1) + N_f = 2 Wilson fermions)"),
        L: int = typer.Option(d.shape[1], "--L", help="spatial extent (even)"),
        T: int = typer.Option(d.shape[0], "--T", help="time extent (even; the pion correlator runs along it)"),
        beta: float = typer.Option(d.beta, help="gauge coupling beta"),
        mass: float = typer.Option(d.mass, help="bare quark mass m of the base ensemble"),
        dm: float = typer.Option(d.dm, help="mass shift of the target (non-zero; derivative = difference / dm)"),
        n_configs: int = typer.Option(d.n_configs, help="stored configurations per chain (base and independent)"),
        chains: int = typer.Option(d.n_chains, help="HMC chains per ensemble (run in parallel, vmapped)"),
        therm: int = typer.Option(d.n_therm, help="thermalisation trajectories"),
        start: str = typer.Option(d.start, help="initial links of the HMC chains: hot (random) | cold (unit)"),
        thin: int = typer.Option(d.thin, help="trajectories per stored configuration"),
        step_size: float = typer.Option(d.step_size, help="MD step size (Omelyan integrator)"),
        n_steps: int = typer.Option(d.n_steps, help="MD steps per trajectory"),
        hmc_det: str = typer.Option(d.hmc_det, help="fermion algorithm of the HMC: pseudofermion | exact "
                                                    "(weights always use exact determinants)"),
        seed: int = typer.Option(d.seed, help="seed of the base ensemble (independent ensemble: seed + 1)"),
        epochs: int = typer.Option(d.epochs, help="flow training epochs"),
        n_train: int = typer.Option(d.n_train, help="base configurations used for training"),
        batch_size: int = typer.Option(d.batch_size, help="training batch size"),
        lr: float = typer.Option(d.learning_rate, help="initial learning rate (cosine decay)"),
        sweeps: int = typer.Option(d.sweeps, help="flow sweeps over all links"),
        loops: str = typer.Option(",".join(d.loops), help="flow staple shapes: plaquette[,rectangle]"),
        train_seed: int = typer.Option(d.train_seed, help="seed of the training shuffles"),
        n_sources: int = typer.Option(d.n_sources, help="point sources per configuration for the pion correlator"),
        t_min: int = typer.Option(d.t_min, help="first t of the effective-mass plateau"),
        t_max: int = typer.Option(d.t_max, help="last t of the plateau [0: T/2 - 1]"),
        observables: str = typer.Option(",".join(d.observables), help="comma-separated: " + ", ".join(OBSERVABLES)),
        method: str = typer.Option(d.method, help="error analysis of the scalar observables: gamma | jackknife"),
        bin_size: int = typer.Option(d.bin_size, help="jackknife bin size [0: ceil(bin-tau-factor x tau_int)]"),
        bin_tau_factor: float = typer.Option(d.bin_tau_factor, help="automatic bin size in units of tau_int"),
    ) -> None:
        """Quark-mass derivatives dO/dm of the pion mass, the chiral condensate, the plaquette and the topological
        susceptibility in the Schwinger model, from one HMC base ensemble and a flow m -> m + dm (correlated
        difference), compared with direct reweighting, independent ensembles and the connected correlator."""
        from rich.console import Console

        console = Console()

        def body() -> None:
            settings = MassSettings(
                store=store, out=out, flow_dir=flow_dir, theory=theory, shape=(T, L), beta=beta, mass=mass, dm=dm,
                n_configs=n_configs, n_chains=chains, n_therm=therm, start=start, thin=thin, step_size=step_size,
                n_steps=n_steps, hmc_det=hmc_det, seed=seed, epochs=epochs, n_train=n_train, batch_size=batch_size,
                learning_rate=lr, sweeps=sweeps, loops=tuple(x.strip() for x in loops.split(",") if x.strip()),
                train_seed=train_seed, n_sources=n_sources, t_min=t_min, t_max=t_max,
                observables=tuple(x.strip() for x in observables.split(",") if x.strip()), method=method,
                bin_size=bin_size, bin_tau_factor=bin_tau_factor)
            settings.validate()
            run(settings, console=console)

        from analysis.workflow import run_cli

        run_cli(body, console, (ValueError, TypeError, FloatingPointError))

    return app


app = _make_app()


def main() -> None:
    """Entry point of ``python -m analysis.mass_dependence``."""
    app()


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
        main()
