"""``estimate(settings, inputs) -> record`` of the Feynman–Hellmann analysis: estimators, variance reductions,
costs, summary and tables (everything the figure needs is in the record, see :mod:`.render`)."""

from __future__ import annotations

import math
from typing import Any

from corrflow.pipeline import COST_DEFINITION
from corrflow.pipeline.record import VARIANCE_REDUCTION_DEFINITION, variance_reduction_entry
from corrflow.stats import Plateau, pull
from corrflow.stats import MIN_BINS

from .estimators import FHEstimates, TangentSeries, binning, dE_dlambda, gluon_momentum_fraction, tangent_series
from .measure import FHInputs
from .settings import ESTIMATORS, FHSettings, describe_theory

__all__ = ["estimate"]

COST_CAPTION = ("costs in seconds (" + COST_DEFINITION + "; path costs include the measurements on each path's "
                "configurations; the tangent path: base HMC + its terms, correlators included + the fit)")
NORMALISATION = ("dE/dlambda = <pi|O_t|pi> - <0|O_t|0>, O_t = source operator on one time slice (2D: -sum_x1 "
                 "cos P01(t, x1); 4D: (1/3) sum_x [spatial - temporal] Re tr P), unit-normalised states; O = sum_t O_t "
                 "= theory.source_operator")


def _num(x: Any, digits: int = 4) -> float | None:
    x = float(x)
    return float(f"{x:.{digits}g}") if math.isfinite(x) else None


def _fmt(p: Plateau) -> str:
    return str(p) if math.isfinite(p.value) else "n/a"


def _training(flows: list[dict[str, Any]]) -> str:
    """``15 epochs on 200 configurations``: what the flows were trained with (the recorded epochs and training
    configurations, which can be fewer than ``--n-train`` asks for; with held-out selection the epoch kept and its
    held-out weight ESS; one entry per distinct flow, ``+-lambda``)."""
    done = dict.fromkeys(f"{f['epochs']} epochs on {f['n_train']} configurations"
                         + (f" (epoch {f['kept_epoch']} kept on {f['held_out_ess_final']:.3f} held-out ESS)"
                            if "held_out_ess_final" in f else "") for f in flows)
    return "trained " + " and ".join(done) if done else "not trained"


def estimate(s: FHSettings, inputs: FHInputs) -> dict[str, Any]:
    """The record of a run: plateau estimates of ``dE/dlambda`` by estimator, pulls, variance reductions (plain and
    cost-adjusted with :meth:`corrflow.pipeline.Family.path_costs`, measurements included), tables, summary, and the
    effective curves for the figure."""
    fam = inputs.family
    lws = [m.flowed.log_weights() for m in fam.members]
    lwds = [m.direct.log_weights() for m in fam.members]
    tmax = s.resolved_t_max
    tan = tangent_series(inputs.tangent) if inputs.tangent is not None else None
    bins = binning(inputs.correlators, inputs.source["base"], lws, lwds, int(s.t_min), bin_size=s.errors.bin_size,
                   factor=s.errors.bin_tau_factor, tangent=tan, S=s.errors.windowing)
    est = dE_dlambda(inputs.correlators, inputs.source["base"], lws, lwds, s.lam, bins, kind=s.kind, t_min=s.t_min,
                     t_max=tmax, fit_weights=s.fit_weights, symmetric=s.symmetric, tangent=tan)
    plateaus = est.plateaus
    shown = [k for k in ESTIMATORS if k in plateaus]

    steps = fam.step_costs()
    m_cost = inputs.measurement_costs
    per_kind = {k: sum(v for name, v in m_cost.items() if name.startswith(k)) for k in ("base", "flowed",
                                                                                         "independent")}
    # symmetric: the independent estimator uses the ensembles at +-lam only, not the base ensemble
    path = fam.path_costs(per_kind, independent_uses_base=not s.symmetric)
    if tan is not None:  # base HMC + the tangent terms (correlators included) + the fit; no flow, no weights
        path["tangent"] = steps["hmc_base"] + m_cost["tangent"] + tan.fit_s
    var = {k: plateaus[k].error ** 2 for k in shown}

    def vr(this: str, other: str, cost: bool) -> float:
        num = var[other] * (path[other] if cost else 1.0)
        den = var[this] * (path[this] if cost else 1.0)
        return num / den if den > 0 else math.nan

    def entry(this: str, refs: tuple[str, ...]) -> dict[str, Any]:
        return variance_reduction_entry({o: (_num(vr(this, o, False)), _num(vr(this, o, True))) for o in refs})

    rated = {"flowed": entry("flowed", ("independent", "direct", "connected"))}
    pairs = [("flowed", "connected"), ("flowed", "independent"), ("flowed", "direct"), ("connected", "independent")]
    if tan is not None:
        rated["tangent"] = entry("tangent", ("connected", "flowed", "independent", "direct"))
        pairs += [("tangent", "connected"), ("tangent", "flowed"), ("tangent", "independent")]
    vr_rec = {"definition": VARIANCE_REDUCTION_DEFINITION, "dE_dlambda": rated}
    pulls = {f"{a}-{b}": pull(plateaus[a], plateaus[b]) for a, b in pairs}
    ess = {"flowed": [m.flowed.weight_ess_fraction() for m in fam.members],
           "direct": [m.direct.weight_ess_fraction() for m in fam.members]}
    rows = []
    for k in shown:
        p = plateaus[k]
        rows.append([k, _fmt(p), f"{p.chi2:.2f}/{p.dof}", _num(p.p_value, 3), _num(p.error**2, 3),
                     _num(vr(k, "independent", False), 3), _num(vr(k, "direct", False), 3),
                     _num(vr(k, "connected", False), 3), _num(path[k], 3),
                     _num(vr(k, "independent", True), 3), _num(vr(k, "direct", True), 3),
                     _num(vr(k, "connected", True), 3)])
    columns = ["estimator", "dE/dlambda", "chi2/dof", "p", "variance", "VR vs independent", "VR vs direct",
               "VR vs connected", "cost [s]", "cost-adj. VR vs independent", "cost-adj. VR vs direct",
               "cost-adj. VR vs connected"]
    lam_txt = f"+-{s.lam:g} (symmetric)" if s.symmetric else f"{s.lam:g}"
    caption = (f"dE_pi/dlambda = <pi|O_t|pi> - <0|O_t|0> from a {s.kind} plateau fit over t = {s.t_min}..{tmax} "
               f"({s.fit_weights} weights, jackknife errors, correlated chi2; lambda = {lam_txt}; VR = variance of "
               "the other estimator / this one's)")
    cost_rows = ([[k, _num(v, 4)] for k, v in steps.items()]
                 + [[f"measure {k}", _num(v, 4)] for k, v in m_cost.items()]
                 + [[f"path {k}", _num(v, 4)] for k, v in path.items()])
    summary, x_g = _summary(s, est, pulls, vr, ess, bins, tan, inputs.tangent_field, fam.info()["flows"])
    # the headline: everything between the introduction and the closing ESS / binning line (the pion mass, dE/dlambda,
    # <x>_g, pulls, variance reductions, the tangent estimator)
    headline = list(range(1, len(summary) - 1))
    curves = est.curves
    return {
        "title": ("Feynman-Hellmann: dE_pi/dlambda of the plaquette source in the Schwinger model"
                  if s.theory == "schwinger" else
                  "Feynman-Hellmann: gluon momentum fraction of the pion in quenched SU(3)"),
        "summary": summary,
        "headline": headline,
        "tables": {"dE/dlambda by estimator": {"columns": columns, "rows": rows, "caption": caption},
                   "costs": {"columns": ["step", "seconds"], "rows": cost_rows, "caption": COST_CAPTION}},
        "variance_reduction": vr_rec,
        "costs": {"steps": {k: _num(v) for k, v in steps.items()}, "paths": {k: _num(v) for k, v in path.items()},
                  "measurement": {k: _num(v) for k, v in m_cost.items()}, "definition": COST_CAPTION},
        "estimates": {k: {"value": _num(p.value, 6), "error": _num(p.error, 4), "chi2": _num(p.chi2), "dof": p.dof,
                          "p_value": _num(p.p_value, 3), "weights": p.weights, "svd_cut": p.svd_cut,
                          "t_min": p.t_min, "t_max": p.t_max} for k, p in plateaus.items()},
        "effective": {k: {"t": [int(x) for x in cv.t], "value": [_num(x, 6) for x in cv.value],
                          "error": [_num(x, 4) for x in cv.error]} for k, cv in curves.items()},
        "pion_mass": {"value": _num(est.m_pi.value, 6), "error": _num(est.m_pi.error, 4),
                      "effective": [_num(x, 6) for x in est.m_eff_base]},
        "pulls": {k: _num(v, 3) for k, v in pulls.items()},
        "gluon_momentum_fraction": x_g,
        "lattice": list(s.shape),
        "info": {"bin_size": bins.size, "bin_size_independent": bins.size_independent, "tau_int_max": _num(bins.tau),
                 "tau_int_independent": _num(bins.tau_independent), "bins_capped": bool(bins.capped),
                 "n_bins": {k: cv.n_bins for k, cv in curves.items()}, "weight_ess_fraction": ess,
                 "acceptance": {"base": fam.base.acceptance(),
                                "independent": [m.independent.acceptance() for m in fam.members]},
                 "ensembles": fam.info(), "normalisation": NORMALISATION,
                 "tangent": None if tan is None else {
                     "field": inputs.tangent_field, "fit_seconds": _num(tan.fit_s),
                     "var_reduction_R": _num(tan.var_reduction_r),
                     "fits": [{"ridge": f.ridge, "n_basis": f.n_basis, "var_reduction_R": _num(f.reduction),
                               "condition": _num(f.condition)} for f in tan.fits]}},
    }


def _summary(s: FHSettings, est: FHEstimates, pulls: dict[str, float], vr: Any, ess: dict[str, list[float]],
             bins: Any, tan: TangentSeries | None, field: dict[str, Any] | None, flows: list[dict[str, Any]]
             ) -> tuple[list[str], dict[str, Any] | None]:
    plateaus, m_pi = est.plateaus, est.m_pi
    tmax = s.resolved_t_max
    lam_txt = f"+-{s.lam:g} (symmetric)" if s.symmetric else f"{s.lam:g}"
    f_dir = plateaus["flowed"]
    summary = [
        (f"{describe_theory(s)} (O_t: one time slice), lambda = {lam_txt}; {s.ensemble.n_chains} x "
         f"{s.ensemble.n_configs} base configurations, flow: "
         f"{s.flow.describe('u1' if s.theory == 'schwinger' else 'su3', s.shape)}, {_training(flows)}."),
        f"Pion mass ({s.kind} plateau t = {s.t_min}..{tmax}): m_pi = {_fmt(m_pi)}.",
        (f"**dE_pi/dlambda = <pi|O_t|pi> - <0|O_t|0> = {_fmt(f_dir)}** (flowed), "
         + (f"{_fmt(plateaus['tangent'])} (tangent), " if tan is not None else "")
         + f"{_fmt(plateaus['connected'])} (connected), {_fmt(plateaus['direct'])} (direct), "
         f"{_fmt(plateaus['independent'])} (independent)."),
        (f"Pulls: flowed - connected {pulls['flowed-connected']:+.2f} sigma (correlated), flowed - independent "
         f"{pulls['flowed-independent']:+.2f} sigma."),
        (f"Variance reduction of the flowed estimator: {vr('flowed', 'independent', False):.3g}x vs independent "
         f"ensembles, {vr('flowed', 'direct', False):.3g}x vs direct reweighting; cost-adjusted "
         f"{vr('flowed', 'independent', True):.3g}x and {vr('flowed', 'direct', True):.3g}x (path costs include "
         "the correlator measurements)."),
        (f"Against the connected correlator (base ensemble only, no flow): variance reduction "
         f"{vr('flowed', 'connected', False):.3g}x, cost-adjusted {vr('flowed', 'connected', True):.3g}x."),
        *([] if tan is None else [
            f"Tangent-flow estimator (base ensemble only: no flow, no weights; {(field or {}).get('kind', '?')} field, "
            f"{tan.fits[0].n_basis if tan.fits else 0} coefficients cross-fitted; the variance of R_v "
            f"{tan.var_reduction_r:.3g}x below that of dS/dlambda): variance reduction "
            f"{vr('tangent', 'connected', False):.3g}x vs connected "
            f"(cost-adjusted {vr('tangent', 'connected', True):.3g}x), {vr('tangent', 'flowed', False):.3g}x vs "
            f"flowed (cost-adjusted {vr('tangent', 'flowed', True):.3g}x); pull tangent - connected "
            f"{pulls['tangent-connected']:+.2f} sigma, tangent - independent {pulls['tangent-independent']:+.2f} "
            "sigma."]),
        (f"Weight ESS fraction: flowed {', '.join(f'{x:.3f}' for x in ess['flowed'])}, direct "
         f"{', '.join(f'{x:.3f}' for x in ess['direct'])}; jackknife bins of {bins.size} base configurations "
         f"({est.curves['flowed'].n_bins['base']} bins"
         f"{', capped to keep ' + str(MIN_BINS) + ' bins' if bins.capped else ''})."),
    ]
    if s.theory != "su3":
        return summary, None
    from corrflow.stats import format_value_error

    def x_of(p: Plateau) -> tuple[float, float, str]:
        xv, xe = gluon_momentum_fraction(p.value, p.error, m_pi.value, m_pi.error, s.beta)
        return xv, xe, format_value_error(xv, xe) if math.isfinite(xv) and math.isfinite(xe) else "n/a"

    xv, xe, txt = x_of(f_dir)
    x_g: dict[str, Any] = {
        "value": _num(xv, 6), "error": _num(xe, 4),
        "convention": "bare <x>_g = -(4/3) beta (dE/dlambda) / m_pi (flowed estimator; unrenormalised)"}
    also = ""
    if tan is not None:
        tv, te, ttxt = x_of(plateaus["tangent"])
        x_g["tangent"] = {"value": _num(tv, 6), "error": _num(te, 4)}
        also = f"; tangent: {ttxt}"
    summary.insert(3, f"**Bare gluon momentum fraction of the pion <x>_g = -(4/3) beta dE/dlambda / m_pi = "
                      f"{txt}** (flowed{also}; unrenormalised, quenched).")
    return summary, x_g
