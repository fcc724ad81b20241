"""``estimate(settings, inputs) -> record`` of the mass-dependence analysis: estimators, variance reductions, costs,
summary and tables (everything the figure needs is in the record, see :mod:`.render`)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from corrflow.pipeline import COST_DEFINITION
from corrflow.pipeline.record import VARIANCE_REDUCTION_DEFINITION, variance_reduction_entry

from .estimators import (
    Estimate,
    TangentSeries,
    independent_bin_size,
    pion_bin_size,
    pion_mass_estimates,
    scalar_estimates,
    tangent_series,
    variance_reduction,
)
from .measure import MassInputs, tangent_names
from .settings import ESTIMATORS, MassSettings

#: the references every estimator of the table is set against (FH's table has the same columns)
REFERENCES = ("independent", "direct", "connected")

__all__ = ["estimate"]

TITLE = "Quark-mass dependence of the Schwinger model from flow-correlated ensembles"
COST_CAPTION = ("costs in seconds (" + COST_DEFINITION + "; path costs include the measurements on each path's "
                "configurations; the tangent path: base HMC + its terms, observables included + the fit)")


def _num(x: float, digits: int = 3) -> float | None:
    return float(f"{x:.{digits}g}") if x is not None and math.isfinite(x) else None


def _g(x: float | None) -> str:
    """A rounded variance reduction (:func:`_num`) as text: ``163``, not ``163.0``; None -> n/a."""
    from corrflow.pipeline.record import table_cell

    return "n/a" if x is None else table_cell(x)


def _tau(x: np.ndarray, S: Any = 1.5) -> float:
    from corrflow.stats import gamma_method

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(gamma_method(np.asarray(x, float), S=S).tau_int)
    except ValueError:
        return math.nan


def _estimates(s: MassSettings, inputs: MassInputs, series: dict[str, Any]
               ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per observable the estimator results (:func:`scalar_estimates` / :func:`pion_mass_estimates`, with the tangent
    estimator's ``series`` where given) and the pion jackknife binning."""
    from corrflow.pipeline import exact_theory

    fam, meas = inputs.family, inputs.measurements
    member = fam.members[0]
    base = exact_theory(fam.base.theory)
    lw, lwd = member.flowed.log_weights(), member.direct.log_weights()
    tmax = s.resolved_t_max
    results: dict[str, dict[str, Any]] = {}
    bin_info: dict[str, Any] = {}
    for o in s.observables:
        if o != "pion_mass":
            results[o] = scalar_estimates(o, meas["base"], meas["flowed"], meas["direct"], meas["independent"], lw,
                                          lwd, s.dm, base.n_flavors, base.volume, method=s.errors.method,
                                          bin_size=s.errors.bin_size or None, tangent=series.get(o),
                                          S=s.errors.windowing)
            continue
        cb, cf, cd, ci = (meas[k]["pion"] for k in ("base", "flowed", "direct", "independent"))
        if s.errors.bin_size:
            bs, bsi, tau = int(s.errors.bin_size), int(s.errors.bin_size), math.nan
        else:
            bs, tau = pion_bin_size(cb, cf, cd, lw, lwd, tmax, s.errors.bin_tau_factor, S=s.errors.windowing)
            bsi = independent_bin_size(ci, tmax, s.errors.bin_tau_factor, S=s.errors.windowing)
        connected = None
        if "pion" not in series and "dpion_dm" in meas["base"]:  # the zero field's series from the base measurement
            dc, ds = meas["base"]["dpion_dm"], -base.n_flavors * base.volume * meas["base"]["condensate"]
            connected = TangentSeries(cb, dc, ds, dc, ds)
        results[o] = pion_mass_estimates(cb, cf, cd, ci, lw, lwd, s.dm, t_min=s.t_min, t_max=tmax, bin_size=bs,
                                         bin_size_independent=bsi, tangent=series.get("pion"), connected=connected)
        bin_info = {"bin_size": bs, "bin_size_independent": bsi, "tau_int": _num(tau), "n_bins": results[o]["n_bins"]}
    return results, bin_info


def estimate(s: MassSettings, inputs: MassInputs) -> dict[str, Any]:
    """The record of a run: estimates of ``dO/dm`` by estimator, pulls, variance reductions (plain and
    cost-adjusted with :meth:`corrflow.pipeline.Family.path_costs`, measurements included), tables, summary."""
    fam = inputs.family
    member = fam.members[0]
    series: dict[str, Any] = {}
    tan_fits: list[Any] = []
    fit_s = 0.0
    if inputs.tangent is not None:
        series, tan_fits, fit_s = tangent_series(inputs.tangent, tangent_names(s))
    results, bin_info = _estimates(s, inputs, series)
    steps = fam.step_costs()
    pc = fam.path_costs(inputs.measurement_costs)
    if series:  # base HMC + the tangent terms (observables included) + the fit; no flow, no weights
        pc["tangent"] = steps["hmc_base"] + inputs.measurement_costs["tangent"] + fit_s
    ess = {"flowed": member.flowed.weight_ess_fraction(), "direct": member.direct.weight_ess_fraction()}
    flow_info = fam.info()["flows"][0]

    def rated(der: dict[str, Estimate], this: str, refs: tuple[str, ...]) -> dict[str, float | None]:
        """``this`` estimator's entry of the record's variance reductions, against ``refs``."""
        pairs = {r: variance_reduction(der[this], der[r], pc[this], pc[r]) for r in refs}
        return variance_reduction_entry({r: (_num(v), _num(vc)) for r, (v, vc) in pairs.items()})

    vr: dict[str, dict[str, dict[str, float | None]]] = {}  # {observable: {estimator: {"vs_<reference>": ...}}}
    rows = []
    for o in s.observables:
        der = results[o]["derivative"]
        vr[o] = {"flowed": rated(der, "flowed", ("independent", "direct"))}
        if "tangent" in der:
            vr[o]["tangent"] = rated(der, "tangent", ("connected", "flowed", "direct", "independent"))
        for e in (e for e in ESTIMATORS if e in der):
            est = der[e]
            if not math.isfinite(est.value):
                rows.append([o, e, "n/a"] + [None] * 11)
                continue
            # this row's estimator against each reference: var(reference) / var(this), also at equal cost
            red = [variance_reduction(est, der[ref], pc[e], pc[ref]) for ref in REFERENCES]
            pull = None if e == "flowed" else results[o]["pulls"].get(f"flowed-{e}",
                                                                      -results[o]["pulls"].get(f"{e}-flowed", np.nan))
            rows.append([o, e, str(est), _num(est.error)] + [_num(v) for v, _ in red] + [_num(pc[e], 4)]
                        + [_num(c) for _, c in red]
                        + [_num(ess[e], 4) if e in ("flowed", "direct") else None,  # (as the summary: 0.9996)
                           _num(est.tau_int, 2), _num(pull, 2) if pull is not None else None])
    columns = (["observable", "estimator", "dO/dm", "error"] + [f"VR vs {r}" for r in REFERENCES] + ["cost [s]"]
               + [f"cost-adj. VR vs {r}" for r in REFERENCES] + ["weight ESS fraction", "tau_int", "pull vs flowed"])
    table = {"columns": columns, "rows": rows,
             "caption": "dO/dm by estimator (VR = variance of the other estimator / this one's, as in every analysis; "
                        "cost: the estimator's path, measurements included)"}
    vrows = []
    for o in s.observables:
        r = results[o]
        vt = r["value_target"]
        vrows.append([o, str(r["value_base"]), str(vt["flowed"]), str(vt["direct"]), str(vt["independent"])])
    values = {"columns": ["observable", f"O(m={s.mass:g}) base", "O(m+dm) flowed", "O(m+dm) direct",
                          "O(m+dm) independent"], "rows": vrows}
    m_costs = inputs.measurement_costs
    cost_rows = ([[k, _num(v, 4)] for k, v in steps.items()]
                 + [[f"measure {k}", _num(v, 4)] for k, v in m_costs.items()]
                 + [[f"path {k}", _num(v, 4)] for k, v in pc.items()])

    summary, headline = _summary(s, results, vr, ess, pc, flow_info, m_costs, tan_fits)

    def est_json(e: Estimate) -> dict[str, float | None]:
        return {"value": _num(e.value, 8), "error": _num(e.error, 4), "tau_int": _num(e.tau_int, 3)}

    indep = member.independent
    record: dict[str, Any] = {
        "title": TITLE,
        "summary": summary,
        "headline": headline,
        "tables": {"dO/dm by estimator": table, "O at m and m + dm": values,
                   "costs": {"columns": ["step", "seconds"], "rows": cost_rows, "caption": COST_CAPTION}},
        "variance_reduction": {"definition": VARIANCE_REDUCTION_DEFINITION, **vr},
        "costs": {**{k: _num(v, 4) for k, v in steps.items()}, **{f"path_{k}": _num(v, 4) for k, v in pc.items()},
                  **{f"measure_{k}": _num(v, 4) for k, v in m_costs.items()}, "definition": COST_CAPTION},
        "estimates": {o: {"derivative": {e: est_json(v) for e, v in results[o]["derivative"].items()},
                          "value_base": est_json(results[o]["value_base"]),
                          "value_target": {e: est_json(v) for e, v in results[o]["value_target"].items()}}
                      for o in s.observables},
        "pulls": {o: {k: _num(v, 3) for k, v in results[o]["pulls"].items()} for o in s.observables},
        "weight_ess": {k: _num(v, 4) for k, v in ess.items()},
        "info": {"ensembles": {"base": fam.base.name, "flowed": member.flowed.name, "direct": member.direct.name,
                               "independent": indep.name},
                 "flow": {**flow_info, "architecture": s.flow.to_dict()},
                 "tau_int_plaquette": {k: _num(_tau(inputs.measurements[k]["plaquette"], s.errors.windowing), 3)
                                       for k in ("base", "independent")},
                 "acceptance": {"base": fam.base.acceptance(), "independent": indep.acceptance()},
                 "pion_jackknife": bin_info,
                 "tangent": None if not series else {
                     "field": inputs.tangent_field, "fit_seconds": _num(fit_s, 4),
                     "var_reduction_R": _num(float(np.mean([f.reduction for f in tan_fits])) if tan_fits else 1.0),
                     "fits": [{"ridge": f.ridge, "n_basis": f.n_basis, "var_reduction_R": _num(f.reduction),
                               "condition": _num(f.condition)} for f in tan_fits]}},
    }
    if "pion_mass" in results:
        fits = results["pion_mass"]["fits"]
        record["info"]["pion_fit_chi2_dof"] = {k: _num(v.chi2_dof, 3) for k, v in fits.items()}
        record["info"]["pion_slope_chi2_dof"] = {k: _num(v.chi2_dof, 3)
                                                 for k, v in results["pion_mass"]["slopes"].items()}
        record["pion"] = {"t": list(range(len(fits["base"].m_eff))), "t_min": s.t_min, "t_max": s.resolved_t_max,
                          "effective_mass": {k: {"value": [_num(x, 6) for x in f.m_eff],
                                                 "error": [_num(x, 4) for x in f.m_eff_error]}
                                             for k, f in fits.items()}}
    return record


def _summary(s: MassSettings, results: dict[str, dict[str, Any]], vr: dict[str, dict[str, dict[str, Any]]],
             ess: dict[str, float], pc: dict[str, float], flow_info: dict[str, Any],
             m_costs: dict[str, float], tan_fits: list[Any]) -> tuple[list[str], list[int]]:
    """The summary lines and the indices of its headline (the derivatives and their variance reductions)."""
    e = s.ensemble
    out = [
        (f"Schwinger model (2D U(1), N_f = 2 Wilson fermions), {s.T} x {s.L}, beta = {s.beta:g}, m = {s.mass:g}, "
         f"dm = {s.dm:g}; {e.n_chains} x {e.n_configs} base and independent configurations ({s.markov.hmc_det} HMC), "
         f"flow: {s.flow.describe('u1', s.shape)}, {flow_info['epochs']} epochs on {flow_info['n_train']} "
         "configurations."),
        (f"Weight ESS fraction: flowed {ess['flowed']:.4f}, direct {ess['direct']:.4f}; training-set ESS "
         f"{flow_info['train_ess_initial']:.4f} -> {flow_info['train_ess_final']:.4f}"
         + (f", held-out {flow_info['held_out_ess_initial']:.4f} -> {flow_info['held_out_ess_final']:.4f} (epoch "
            f"{flow_info['kept_epoch']} kept"
            + (": the identity, training gained nothing on held-out configurations)" if not flow_info["kept_epoch"]
               else ")")
            if "held_out_ess_final" in flow_info else "") + "."),
        "Path costs (s, measurements included): " + ", ".join(f"{k} {v:.1f}" for k, v in pc.items()) + ".",
    ]
    headline = []
    for o in s.observables:
        d, vf = results[o]["derivative"], vr[o]["flowed"]
        headline.append(len(out))
        out.append(f"d{o}/dm: flowed {d['flowed']}, direct {d['direct']}, independent {d['independent']}"
                   + (f", connected {d['connected']}" if math.isfinite(d["connected"].value) else "")
                   + f"; variance reduction vs independent {_g(vf['vs_independent'])}, vs direct "
                     f"{_g(vf['vs_direct'])} (cost-adjusted {_g(vf['cost_adjusted_vs_independent'])}, "
                     f"{_g(vf['cost_adjusted_vs_direct'])}).")
    if tan_fits:
        k = tan_fits[0].n_basis
        red = float(np.mean([f.reduction for f in tan_fits]))
        line = (f"Tangent-flow estimator (base ensemble only: no flow, no weights; plaquette-space field, {k} "
                f"coefficients cross-fitted, the variance of R_v {red:.3g}x below that of dS/dm):")
        worst = 0.0
        for o in s.observables:
            d, v = results[o]["derivative"], vr[o]["tangent"]
            p = results[o]["pulls"].get("tangent-connected", math.nan)
            worst = max(worst, abs(p)) if math.isfinite(p) else worst
            line += (f" d{o}/dm = {d['tangent']} ({_g(v['vs_connected'])}x vs connected, "
                     f"{_g(v['vs_flowed'])}x vs flowed, {_g(v['vs_direct'])}x vs direct; "
                     f"cost-adjusted {_g(v['cost_adjusted_vs_connected'])}x, "
                     f"{_g(v['cost_adjusted_vs_flowed'])}x, {_g(v['cost_adjusted_vs_direct'])}x; "
                     f"tangent - connected {p:+.2f} sigma, paired);")
        headline.append(len(out))
        out.append(line[:-1] + ".")
        if worst > 3:  # both estimators are unbiased on the same configurations
            out.append(f"WARNING: tangent - connected differ by {worst:.1f} sigma on the same configurations; both "
                       "are unbiased, so the tangent field (or its divergence) is wrong, or the base chains drift at "
                       "their start (more thermalisation: --therm).")
    if "plaquette" in results:
        p = results["plaquette"]["pulls"]
        d = results["plaquette"]["derivative"]
        out.append(f"Cross-check d<P>/dm = n_f V cov(P, Sigma) on the base ensemble (connected) "
                   f"{d['connected']}: pull vs flowed {p['flowed-connected']:+.2f} sigma (paired), vs independent "
                   f"{p['connected-independent']:+.2f} sigma; direct - connected is the O(dm) finite-difference "
                   f"term (paired pull {p['direct-connected']:+.2f})"
                   + ("; so is flowed - connected here, the flow being the identity (held-out selection kept epoch "
                      "0)." if flow_info.get("kept_epoch") == 0 and "held_out_ess_final" in flow_info else "."))
    if "pion_mass" in results:
        c2 = {k: f.chi2_dof for k, f in results["pion_mass"]["fits"].items()}
        out.append(f"Pion plateau t = {s.t_min}..{s.resolved_t_max}: correlated chi^2/dof base {c2['base']:.2f}, "
                   f"flowed {c2['flowed']:.2f}, independent {c2['independent']:.2f}"
                   + (" (the effective mass is still falling: a longer time extent --T gives a true plateau; "
                      "the estimators then compare an effective mass at these t)." if c2["base"] > 3 else "."))
    if ess["flowed"] < ess["direct"]:
        out.append(f"The trained flow has a lower weight ESS than the identity ({ess['flowed']:.4f} < "
                   f"{ess['direct']:.4f}): for this small shift the reverse-KL training on {flow_info['n_train']} base "
                   "configurations is dominated by sampling noise (the loss gradient fluctuates like sqrt(V / "
                   "n_train) while the gain is ~ var(log w_direct) / 2), so direct reweighting is the better "
                   "correlated estimator here; flows pay off when direct weights degrade (larger dm or volume).")
    out.append(f"Measurements cost {sum(m_costs.values()):.0f} s (steady state; steps found in the store or the "
               "measurement cache are reused and charged their recorded costs from the ledger).")
    return out, headline
