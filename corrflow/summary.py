"""Per-ensemble summary: every stored observable with Gamma-method errors, next to the exact
finite-torus value where one is known (2D U(1): plaquette, Wilson loops, chi_top; 2D SU(N): plaquette).

In two dimensions the only plaquette plane is temporal, so anisotropy and Feynman–Hellmann source
act as ``beta_eff = beta * xi + lam`` (see :mod:`corrflow.theories.gauge`); exact values use it.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, NamedTuple, Sequence

import numpy as np

from . import exact
from .stats import (SlowModeCheck, Stats, TauExpFit, Windowing, fit_tau_exp, format_value_error, gamma_method,
                    sample_size_check, slow_mode_check)
from .stats.reweighting import reweighted_mean
from .stats.equilibration import EquilibrationCut, check_kept, equilibration_cut
from .store.spec import FLOWED_FIELDS

__all__ = ["SlowestDecay", "SummaryRow", "common_thermalisation_cut", "exact_derivative", "exact_value",
           "ensemble_summary", "frozen_charge", "observable_series", "slowest_decay", "thermalisation_cut"]


class SummaryRow(NamedTuple):
    """One observable's estimate, its exact value where known, and what it takes to read its pull as Gaussian:
    ``skewness`` of the per-configuration values, ``n_effective`` = samples / (2 tau_int) and ``n_needed`` =
    ``28 + 25 skewness^2`` (:func:`corrflow.stats.gaussian_sample_size`); ``slow_mode``: block means against the
    Gamma window (:func:`corrflow.stats.slow_mode_check`; None where there are too few blocks)."""

    observable: str
    stats: Stats
    exact: float | None
    skewness: float = 0.0
    n_effective: float = float("inf")
    n_needed: float = 28.0
    slow_mode: SlowModeCheck | None = None

    @property
    def pull(self) -> float | None:
        return None if self.exact is None else self.stats.pull(self.exact)

    def slow_mode_note(self) -> str | None:
        """One line when the block means vary far more than the Gamma window allows (:attr:`SlowModeCheck.slow`),
        saying what to do; None otherwise."""
        c = self.slow_mode
        if c is None or not c.slow:
            return None
        return (f"{self.observable}: block means of {c.block} trajectories give 2 tau_int = "
                f"{format_value_error(c.blocked, c.error)}, the Gamma window {c.gamma:.3g}: a slow mode the window "
                "misses, so the error above is too small (a trajectory length resonant with slow modes: generate with "
                "--jitter; a frozen mode: its exponential autocorrelation time as --tau-exp -- --tau-exp auto "
                "estimates it --, or longer chains)")

    @property
    def conclusive(self) -> bool:
        """False when the per-configuration values are too skewed for this many effective samples: the mean then
        lies on the short side of the tail with too small an error more often than a Gaussian says (a quantity
        like Q^2 / V at 2 x 200 configurations: 3% of replicas beyond 3 sigma, measured in BENCHMARKS.md)."""
        return self.n_effective >= self.n_needed


def exact_value(spec: Any, observable: str, charge: int | None = None) -> float | None:
    """Exact torus value of ``observable`` for the ensemble ``spec``, or None if not known (pure gauge theories in
    two dimensions only: with dynamical quarks -- the Schwinger model, ``su3-wilson`` -- there is no closed form).
    ``charge``: the 2D U(1) ensemble stays in the topological sector ``Q = charge`` (:func:`frozen_charge`): the
    plaquette's value in that sector, None for the rest (no closed form in a sector; ``chi_top`` not estimable)."""
    if len(spec.shape) != 2 or spec.theory != spec.group:
        return None
    p = spec.params
    beta = p["beta"] * p.get("xi", 1.0) + p.get("lam", 0.0)
    shape = tuple(spec.shape)
    if spec.group == "u1" and charge is not None:
        return exact.u1_plaquette_in_sector(beta, shape, charge) if observable == "plaquette" else None
    if spec.group == "u1":
        if observable == "plaquette":
            return exact.u1_plaquette(beta, shape)
        m = re.fullmatch(r"wilson_(\d+)x(\d+)", observable)
        if m:
            r, t = int(m.group(1)), int(m.group(2))
            if r * t < shape[0] * shape[1] and max(r, t) <= min(shape):
                return exact.u1_wilson_loop(beta, shape, r, t)
        if observable == "chi_top":
            return exact.u1_topological_susceptibility(beta, shape)
        return None
    if observable == "plaquette" and spec.group.startswith("su") and int(spec.group[2:]) in exact.SUN_SUPPORTED_N:
        return exact.sun_plaquette(int(spec.group[2:]), beta, shape)
    return None


def exact_derivative(spec: Any, observable: str, param: str) -> float | None:
    """Exact torus value of ``d<observable>/d(param)`` at the parameters of ``spec`` (pure gauge theories in two
    dimensions, where :func:`exact_value` is known), or None.  The exact values are smooth in the couplings and
    accurate to rounding, so a central difference with step ``1e-4`` is exact to ~1e-9 (tested against the
    fluctuation formula ``V (<P^2> - <P>^2)`` of the plaquette)."""
    if exact_value(spec, observable) is None or param not in spec.params:
        return None
    h = 1e-4 * max(1.0, abs(float(spec.params[param])))

    def at(x: float) -> float | None:
        return exact_value(replace(spec, params={**spec.params, param: x}), observable)

    hi, lo = at(spec.params[param] + h), at(spec.params[param] - h)
    return None if hi is None or lo is None else (hi - lo) / (2 * h)


def frozen_charge(store: Any, name: str, discard: int = 0) -> int | None:
    """The topological charge ``Q`` of a pure-gauge 2D U(1) ensemble that has it stored and never changes it (the same
    integer on every configuration of every chain after the first ``discard``: a cold start at weak coupling, where
    HMC does not tunnel), or None.  Such an ensemble samples one sector, not the torus: its plaquette is compared
    with the sector's exact value (:func:`exact_value` with ``charge``) and ``chi_top`` is not estimable."""
    spec = store.spec(name)
    if spec.group != "u1" or spec.theory != "u1" or len(spec.shape) != 2:
        return None
    ds = store.open_ensemble(name)
    if "topological_charge" not in ds.data_vars or ds["topological_charge"].dims != ("chain", "traj"):
        return None
    q = np.asarray(ds["topological_charge"].values[:, discard:], dtype=float)
    if q.size == 0 or not np.all(np.isfinite(q)):
        return None
    r = np.rint(q)
    return int(r.flat[0]) if np.ptp(r) == 0 and float(np.max(np.abs(q - r))) < 1e-6 else None


def thermalisation_cut(store: Any, name: str, observables: Sequence[str] = (), n: int | None = None
                       ) -> EquilibrationCut:
    """The automatic thermalisation cut of ensemble ``name`` (:func:`corrflow.stats.equilibration.equilibration_cut`)
    from its stored plaquette (the gauge action density: what relaxes from a hot or cold start) and those of
    ``observables`` that are stored per configuration, over its first ``n`` configurations per chain (all if None);
    ``ValueError`` if none of them is stored."""
    ds = store.open_ensemble(name)
    if n is not None:
        ds = ds.isel(traj=slice(0, int(n)))
    series = {}
    for v in dict.fromkeys(("plaquette", *observables)):
        if v in ds.data_vars and ds[v].dims == ("chain", "traj"):
            data = np.asarray(ds[v].values, dtype=float)
            if np.all(np.isfinite(data)):
                series[v] = data
    if not series:
        raise ValueError(f"ensemble {name!r} stores none of {', '.join(dict.fromkeys(('plaquette', *observables)))} "
                         "for every configuration: give --discard as a number")
    return equilibration_cut(series)


def common_thermalisation_cut(store: Any, names: Sequence[str], observables: Sequence[str] = ()) -> EquilibrationCut:
    """The longest :func:`thermalisation_cut` of the Markov-chain ensembles among ``names`` (flowed ensembles share
    their base's configurations, and its cut), its ``series`` labelled ``"<ensemble>'s <series>"``: one cut for
    estimators that compare several ensembles trajectory by trajectory (``compare_ensembles(..., discard=)``)."""
    cuts = [replace(c, series=f"{n}'s {c.series}") for n in dict.fromkeys(names) if store.spec(n).kind != "flowed"
            for c in [thermalisation_cut(store, n, observables)]]
    if not cuts:
        raise ValueError("--discard auto needs a Markov-chain ensemble among " + ", ".join(names))
    return max(cuts, key=lambda c: c.n_discard)


def observable_series(spec: Any, ds: Any) -> list[str]:
    """The per-trajectory observables of an ensemble (``spec``, its dataset ``ds``): every ``(chain, traj)`` series but
    the HMC bookkeeping (``accepted``, ``step_size``, ``action``) and, in a flowed ensemble, the flow's (weights,
    Jacobians, pairing)."""
    skip = {"accepted", "step_size", "action"} | (set(FLOWED_FIELDS) if spec.kind == "flowed" else set())
    return [v for v in ds.data_vars if ds[v].dims == ("chain", "traj") and v not in skip]


class SlowestDecay(NamedTuple):
    """:func:`slowest_decay`: the ``observable`` (of ensemble ``ensemble``) whose ``rho(t)`` decays slowest and its
    :class:`~corrflow.stats.TauExpFit` ``fit`` (unresolved where the chains are too short to give it an error), and
    how many series were tried (``n_tried``) and gave a decay (``n_fitted``)."""

    observable: str
    ensemble: str
    fit: TauExpFit
    n_tried: int
    n_fitted: int

    @property
    def tau_exp(self) -> float:
        """``fit.tau_exp`` to three significant digits: what ``--tau-exp auto`` uses, as the user would type it."""
        return float(f"{self.fit.tau_exp:.3g}")

    def __str__(self) -> str:
        what = (f"tau_exp = {self.fit} of {self.observable} in {self.ensemble}, the slowest decay among the "
                f"{self.n_fitted} of {self.n_tried} observables whose rho(t) decays measurably")
        if not self.fit.resolved:
            what += (" -- slower than these chains resolve (rho(t) stays significant too long for an error): a rough "
                     "estimate, at most a chain's length; longer chains pin it down")
        return what


def slowest_decay(store: Any, names: str | Sequence[str], discard: int | None = 0) -> SlowestDecay | None:
    """Schaefer, Sommer and Virotta's ``tau_exp`` for the ensembles ``names`` (one name or several): the largest
    :func:`~corrflow.stats.fit_tau_exp` over their per-trajectory observables (the stored series, the topological
    charge itself rather than its square; a flowed ensemble's bookkeeping left out), without the first ``discard``
    trajectories of every chain (None: each ensemble's :func:`thermalisation_cut`), in stored trajectories.  Fits with
    an error count where ``tau_exp`` is at least twice the error; fits the chains cannot give an error (a decay slower
    than they resolve) count always -- the slow mode is there, its time is uncertain.  None where no observable's
    ``rho(t)`` decays measurably (it drops into the noise at once)."""
    fits, tried = {}, 0
    for name in dict.fromkeys([names] if isinstance(names, str) else names):
        cut = thermalisation_cut(store, name).n_discard if discard is None else discard
        ds = store.open_ensemble(name).isel(traj=slice(cut, None))
        frozen = frozen_charge(store, name, cut) is not None  # Q a constant up to rounding: nothing decays
        for v in observable_series(store.spec(name), ds):
            if frozen and v == "topological_charge":
                continue
            data = np.asarray(ds[v].values, dtype=float)
            if data.shape[1] < 10 or not np.all(np.isfinite(data)):
                continue
            tried += 1
            fit = fit_tau_exp(data)
            if fit is not None and (not fit.resolved or fit.tau_exp >= 2.0 * fit.error):
                fits[name, v] = fit
    if not fits:
        return None
    slowest = max(fits, key=lambda k: fits[k].tau_exp)
    return SlowestDecay(slowest[1], slowest[0], fits[slowest], tried, len(fits))


def ensemble_summary(store: Any, name: str, discard: int = 0, windowing: Windowing | None = None
                     ) -> list[SummaryRow]:
    """Gamma-method estimates (chains as replicas) of every per-trajectory observable of ``name``, without the first
    ``discard`` trajectories of every chain, summed as ``windowing`` says (default Wolff's window; a
    :class:`~corrflow.stats.Windowing` with ``tau_exp`` adds the exponential tail of a slow mode).  A flowed
    ensemble's observables are reweighted to its parameters
    (:func:`corrflow.stats.reweighted_mean` with its stored log weights: unweighted, its configurations follow the
    base distribution pushed forward, not its own), and its bookkeeping (weights, Jacobians, pairing) is left out."""
    ds = store.open_ensemble(name)
    spec = store.spec(name)
    check_kept(int(ds.sizes["traj"]), discard, name)
    ds = ds.isel(traj=slice(discard, None))
    vol = int(np.prod(spec.shape))
    rows = []
    flowed = spec.kind == "flowed"
    log_w = np.asarray(ds["log_weight"].values, dtype=float) if flowed else None

    S = Windowing() if windowing is None else windowing

    def estimate(x: np.ndarray) -> Stats:
        return reweighted_mean(x, log_w, S=S).stats if flowed else gamma_method(x, S=S)

    def row(obs: str, x: np.ndarray, stats: Stats, exact: float | None) -> SummaryRow:
        size = sample_size_check(x, stats.tau_int)
        return SummaryRow(obs, stats, exact, size["skewness"], size["n_effective"], size["n_needed"],
                          slow_mode_check(x, S=S))

    charge = None if flowed else frozen_charge(store, name, discard)
    names = observable_series(spec, ds)
    order = {"plaquette": 0, "topological_charge": 2, "polyakov_loop": 3, "delta_H": 9}
    names.sort(key=lambda v: (order.get(v, 1 if v.startswith("wilson_") else 5), v))
    for v in names:
        data = np.asarray(ds[v].values, dtype=float)
        if not np.all(np.isfinite(data)):
            continue  # partially measured observable
        if v == "topological_charge":
            if charge is None:  # frozen: Q^2 / V is a constant, not an estimate
                rows.append(row("chi_top", data**2 / vol, estimate(data**2 / vol), exact_value(spec, "chi_top")))
            continue
        if v == "delta_H":
            rows.append(row("exp(-dH)", np.exp(-data), gamma_method(np.exp(-data), S=S), 1.0))
            continue
        rows.append(row(v, data, estimate(data), exact_value(spec, v, charge)))
    acc = np.asarray(ds["accepted"].values, dtype=float)
    if np.all(np.isfinite(acc)) and np.ptp(acc) > 0:
        rows.append(SummaryRow("acceptance", gamma_method(acc, S=S), None))
    return rows
