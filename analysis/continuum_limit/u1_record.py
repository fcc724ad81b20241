"""The record of the 2D U(1) continuum analysis: summary, tables, numbers, costs (:func:`u1_record`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from corrflow.pipeline import COST_DEFINITION
from corrflow.pipeline.record import VARIANCE_REDUCTION_DEFINITION, variance_reduction_entry

from .common import goodness_of_fit
from .estimators import bayes_warnings, short_bins_note

__all__ = ["u1_record"]


def _fmt(v: float, e: float, digits: int = 2) -> str:
    from corrflow.stats import format_value_error

    return format_value_error(float(v), float(e), digits)


def off_sector_text(leaks: dict[str, int]) -> str:
    """``"3 in the base ensemble at beta 2, 1 in the flowed ensemble at beta 2.2"`` from the counts of
    configurations that left the sector ``Q = 0``, keyed ``"<ensemble> <beta>"`` (zero counts left out)."""
    parts = []
    for key, count in leaks.items():
        if count:
            kind, _, beta = key.partition(" ")
            parts.append(f"{count} in the {kind} ensemble" + (f" at beta {beta}" if beta else ""))
    return ", ".join(parts)


def u1_record(s: Any, q: Any, fam: Any, x: np.ndarray, flowed: Any, indep: Any, fit_f: Any, fit_i: Any,
              exact_ref: np.ndarray, exact_inf: np.ndarray, exact_target: np.ndarray, fv_shift: np.ndarray,
              leaks: dict[str, int], tau_q: list[float], steps: dict[str, float], paths: dict[str, float], vr: float,
              vr_cost: float, vr_amort: float, vr_bayes: float | None, vr_beta: np.ndarray) -> dict[str, Any]:
    """Summary lines, tables and numbers of a 2D U(1) continuum run (see :mod:`analysis.continuum_limit.u1`)."""
    n = s.ensemble.n_configs
    hmc_base = steps["hmc_base"]
    train_total = steps["train"] + steps["hmc_training"]
    flow_total = steps["flow"]
    hmc_ind_total = steps["hmc_independent"]
    cost_flow, cost_ind = paths["flowed"], paths["independent"]
    c = q.continuum
    # PDG-style scale factor sqrt(chi2/dof) when the fit is poor (the record keeps both errors)
    scale_f = math.sqrt(max(1.0, fit_f.lsq.chi2_per_dof)) if fit_f.lsq.dof > 0 else 1.0
    scale_i = math.sqrt(max(1.0, fit_i.lsq.chi2_per_dof)) if fit_i.lsq.dof > 0 else 1.0
    pull_f = fit_f.lsq.pull(0, c)
    pull_i = fit_i.lsq.pull(0, c)
    bias_f = fit_f.exact_fit.params[0] - c
    bias_i = fit_i.exact_fit.params[0] - c
    stat_pull_f = fit_f.lsq.pull(0, fit_f.exact_fit.params[0])
    stat_pull_i = fit_i.lsq.pull(0, fit_i.exact_fit.params[0])
    pulls_beta_f = (flowed.values - exact_target) / flowed.errors
    # the flowed estimates share the base's fluctuation; the correlated differences q_k - q_0 isolate the flows
    var_d = np.diag(flowed.cov) + flowed.cov[0, 0] - 2.0 * flowed.cov[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        pulls_diff_f = np.where(var_d > 0, ((flowed.values - flowed.values[0]) - (exact_target - exact_target[0]))
                                / np.sqrt(np.maximum(var_d, 0.0)), np.nan)
    pulls_beta_i = (indep.values - exact_target) / indep.errors
    max_fv = float(np.max(np.abs(fv_shift) / flowed.errors))

    # record
    fmt_f = _fmt(fit_f.lsq.params[0], fit_f.lsq.errors[0])
    fmt_i = _fmt(fit_i.lsq.params[0], fit_i.lsq.errors[0])
    order_txt = {0: "constant", 1: "linear", 2: "quadratic", 3: "cubic"}.get(s.order, f"degree-{s.order}")
    summary = [
        f"Continuum limit of **{q.description}** in 2D U(1) on {s.L}x{s.L} tori at beta = "
        f"{', '.join(f'{b:g}' for b in s.betas)} ({s.ensemble.n_chains} chains x {n} configurations per ensemble, thin "
        f"{s.ensemble.thin}); {order_txt} extrapolation in a^2 g^2 = 1/beta by correlated chi^2.",
        f"- **flowed** (one HMC base ensemble at beta = {s.base_beta:g}, flows to the other betas, reweighting; full "
        f"covariance from a joint binned jackknife, {flowed.n_bins} bins of {flowed.bin_size}"
        f"{short_bins_note(flowed)}): continuum value "
        f"**{fmt_f}**, {goodness_of_fit(fit_f.lsq.chi2, fit_f.lsq.dof, fit_f.lsq.p_value)}"
        + (f" (error x sqrt(chi2/dof) = {_fmt(fit_f.lsq.params[0], scale_f * fit_f.lsq.errors[0])})."
           if scale_f > 1.0 else "."),
        f"- **independent** HMC ensembles (diagonal covariance): **{fmt_i}**, "
        f"{goodness_of_fit(fit_i.lsq.chi2, fit_i.lsq.dof, fit_i.lsq.p_value)}"
        + (f" (error x sqrt(chi2/dof) = {_fmt(fit_i.lsq.params[0], scale_i * fit_i.lsq.errors[0])})."
           if scale_i > 1.0 else "."),
        f"- exact continuum value {q.continuum_label.replace(chr(92), '')} = {c:.6g}: pulls {pull_f:+.2f} (flowed), "
        f"{pull_i:+.2f} (independent).  Truncation bias of the fit model (the same fit with the same covariance "
        f"to the exact {'infinite-volume' if s.fv_correct else 'reference'} values): {bias_f:+.2e}; pulls against "
        f"that exact-data fit {stat_pull_f:+.2f} / {stat_pull_i:+.2f}.",
        f"- variance reduction of the continuum value: **{vr:.1f}x** at equal numbers of configurations; cost-adjusted "
        f"(variance x cost) **{vr_cost:.2f}x** (flowed path {cost_flow:.1f} s = HMC {hmc_base:.1f} + training "
        f"{train_total:.1f} + flows {flow_total:.1f}; independent path {cost_ind:.1f} s); without training (flows "
        f"reused) {vr_amort:.1f}x.",
    ]
    if s.bayes:
        summary.append(f"- Bayesian fits (numpyro NUTS, normal priors of width {s.prior_scale:g} max|q|/max|x^j|): "
                       f"flowed {fit_f.bayes.format_param(0)}, independent {fit_i.bayes.format_param(0)} "
                       f"(posterior mean and sd of c0; one NUTS run for both, {s.bayes_samples} draws after {s.bayes_warmup} warm-up, "
                       f"{fit_f.bayes.divergences} divergences).")
        summary += bayes_warnings([("flowed", fit_f), ("independent", fit_i)])
    headline = list(range(1, len(summary)))  # the continuum values, pulls, variance reduction (and Bayesian fits)
    ref_txt = ("finite-torus values in the sector Q = 0" if s.topology == "fixed" else "finite-torus values")
    if s.fv_correct:
        summary.append(
            f"- finite volume{' and fixed topology' if s.topology == 'fixed' else ''}: every estimate is corrected by "
            f"the exact shift (exact {ref_txt} minus infinite volume), between {fv_shift.min():+.2e} and "
            f"{fv_shift.max():+.2e} ({np.max(np.abs(fv_shift) / flowed.errors):.2g} sigma at most); L^2/beta >= "
            f"{s.L**2 / max(s.betas):.1f}.")
    else:
        summary.append(
            f"- no finite-volume correction: the per-beta reference is the exact {ref_txt}; it differs from infinite "
            f"volume by {max_fv:.2g} sigma at most (L^2/beta >= {s.L**2 / max(s.betas):.1f}).")
    kmax = np.nanmax(flowed.pareto_k) if np.any(np.isfinite(flowed.pareto_k)) else math.nan
    bad = [f"{b:g}" for b, k in zip(s.betas, flowed.pareto_k) if k > 0.7]
    summary.append(
        f"- reweighting diagnostics: weight ESS fraction {np.min(flowed.weight_ess):.2f} .. "
        f"{np.max(flowed.weight_ess[1:]):.2f}, PSIS Pareto k-hat <= {kmax:.2f}"
        + (f" -- k-hat > 0.7 at beta {', '.join(bad)}: heavy-tailed weights, those estimates and their errors are "
           "unreliable (use smaller shifts or better flows)." if bad else
           " (< 0.5: reliable; 0.5-0.7: usable)." if kmax > 0.5 else " (< 0.5: reliable)."))
    tq = np.array(tau_q)
    if s.topology == "fixed":
        n_leak = sum(leaks.values())
        summary.append(
            "- topology: all HMC chains start cold in the sector Q = 0; every estimate is conditioned on Q = 0 "
            "(weight 0 for a configuration with Q != 0) and compared with the exact Q = 0 values; "
            + ("no configuration left the sector." if n_leak == 0 else
               "configurations that left it (weighted 0): " + off_sector_text(leaks) + "."))
    summary.append(f"- autocorrelation: tau_int of q (Gamma method) {np.nanmin(flowed.tau_int):.2f} .. "
                   f"{np.nanmax(flowed.tau_int):.2f} (flowed), {np.nanmin(indep.tau_int):.2f} .. "
                   f"{np.nanmax(indep.tau_int):.2f} (independent), in stored configurations; tau_int of the "
                   "topological charge " + ("not defined (Q constant in every ensemble)" if np.all(np.isnan(tq)) else
                                            f"{np.nanmin(tq):.1f} .. {np.nanmax(tq):.1f}")
                   + (" -- topology is slow: use --topology fixed, lower betas or longer runs."
                      if s.topology == "sampled" and np.nanmax(tq) > 0.01 * n * s.ensemble.n_chains else "."))

    show_tq = not np.all(np.isnan(tq))  # the column is left out where Q is frozen everywhere (fixed topology)
    rows = []
    for k, b in enumerate(s.betas):
        rows.append([f"{b:g}", f"{1 / b:.5f}", _fmt(flowed.values[k], flowed.errors[k]), f"{pulls_beta_f[k]:+.2f}",
                     "" if k == 0 else f"{pulls_diff_f[k]:+.2f}",
                     f"{flowed.weight_ess[k]:.3f}", "" if math.isnan(flowed.pareto_k[k]) else f"{flowed.pareto_k[k]:.2f}",
                     f"{flowed.tau_int[k]:.2f}",
                     _fmt(indep.values[k], indep.errors[k]), f"{pulls_beta_i[k]:+.2f}", f"{indep.tau_int[k]:.2f}",
                     f"{exact_target[k]:.6f}",
                     "" if k == 0 else f"{vr_beta[k]:.2f}"]  # base beta: one ensemble under two error methods
                    + ([("-" if math.isnan(tau_q[k]) else f"{tau_q[k]:.1f}")] if show_tq else []))
    fit_rows = []
    for label, fr in (("flowed, correlated chi^2 (jackknife errors)", fit_f), ("independent, chi^2", fit_i)):
        fit_rows.append([label] + [fr.lsq.format_param(j) for j in range(s.order + 1)]
                        + [f"{fr.lsq.chi2:.2f}/{fr.lsq.dof}", f"{fr.lsq.p_value:.3f}",
                           f"{fr.lsq.pull(0, c):+.2f}"])
        if fr.bayes is not None:
            fit_rows.append([label.split(",")[0] + ", Bayesian (NUTS)"]
                            + [fr.bayes.format_param(j) for j in range(s.order + 1)]
                            + ["", "", f"{(fr.bayes.mean[0] - c) / fr.bayes.std[0]:+.2f}"])
    tables = {
        "per-beta estimates": {
            "caption": "Per-beta estimates (value(error); pulls against the exact "
                       + ("infinite-volume values, after the exact finite-volume correction" if s.fv_correct
                          else ref_txt) + ")",
            "columns": ["beta", "a^2 g^2", "flowed", "pull (flowed)", "pull of q-q0", "weight ESS", "Pareto k",
                        "tau_int (flowed)", "independent", "pull (indep.)", "tau_int (indep.)", "exact", "var. red."]
                       + (["tau_int(Q)"] if show_tq else []),
            "rows": rows},
        "continuum fits": {
            "caption": "Continuum fits (c0 = continuum value)",
            "columns": ["fit"] + [f"c{j}" for j in range(s.order + 1)] + ["chi2/dof", "p", "pull of c0"],
            "rows": fit_rows},
        "correlation matrix": {
            "caption": "Correlation matrix of the flowed estimates",
            "columns": ["beta"] + [f"{b:g}" for b in s.betas],
            "rows": [[f"{b:g}"] + [f"{v:+.3f}" for v in flowed.correlation[k]] for k, b in enumerate(s.betas)]},
    }
    if s.bayes:
        for label, fr in (("flowed", fit_f), ("independent", fit_i)):
            summ = fr.bayes.summary
            tables[f"arviz summary ({label})"] = {
                "caption": f"ArviZ summary of the Bayesian fit ({label})",
                "columns": ["parameter"] + [str(col) for col in summ.columns],
                "rows": [[str(idx)] + [f"{float(v):.6g}" for v in summ.loc[idx]] for idx in summ.index]}
    costs = {
        "hmc_seconds": hmc_base + hmc_ind_total, "hmc_base_seconds": hmc_base,
        "hmc_independent_seconds": hmc_ind_total, "train_seconds": train_total,
        "hmc_training_sample_seconds": steps["hmc_training"], "flow_seconds": flow_total,
        "flowed_path_seconds": cost_flow, "independent_path_seconds": cost_ind,
        "per_beta": {f"{m.target.params()['beta']:g}": {"hmc_independent": m.independent.cost, "train": m.flow.cost,
                                                        "flow": m.flowed.cost} for m in fam.members},
        "definition": COST_DEFINITION + "; the base HMC ensemble counts for both paths; train_seconds includes the "
                      "HMC run of the separate training sample (hmc_training_sample_seconds)",
    }
    results = {
        "quantity": q.name, "continuum_exact": c, "x": x.tolist(), "betas": list(s.betas),
        "flowed": {"values": flowed.values.tolist(), "errors": flowed.errors.tolist(), "cov": flowed.cov.tolist(),
                   "gamma_errors": flowed.gamma_errors.tolist(), "tau_int": flowed.tau_int.tolist(),
                   "weight_ess": flowed.weight_ess.tolist(), "pareto_k": flowed.pareto_k.tolist(),
                   "bin_size": flowed.bin_size, "n_bins": flowed.n_bins,
                   "continuum": float(fit_f.lsq.params[0]), "continuum_error": float(fit_f.lsq.errors[0]),
                   "continuum_error_scaled": float(scale_f * fit_f.lsq.errors[0]),
                   "params": fit_f.lsq.params.tolist(), "param_cov": fit_f.lsq.cov.tolist(),
                   "chi2": fit_f.lsq.chi2, "dof": fit_f.lsq.dof, "p_value": fit_f.lsq.p_value,
                   "pull": float(pull_f), "pull_vs_exact_fit": float(stat_pull_f), "pulls_per_beta": pulls_beta_f.tolist(),
                   "pulls_of_differences": [None] + pulls_diff_f[1:].tolist(),
                   "svd_modified": fit_f.lsq.n_svd_modified, "condition": fit_f.lsq.condition},
        "independent": {"values": indep.values.tolist(), "errors": indep.errors.tolist(),
                        "tau_int": indep.tau_int.tolist(), "continuum": float(fit_i.lsq.params[0]),
                        "continuum_error": float(fit_i.lsq.errors[0]),
                        "continuum_error_scaled": float(scale_i * fit_i.lsq.errors[0]),
                        "params": fit_i.lsq.params.tolist(),
                        "param_cov": fit_i.lsq.cov.tolist(), "chi2": fit_i.lsq.chi2, "dof": fit_i.lsq.dof,
                        "p_value": fit_i.lsq.p_value, "pull": float(pull_i), "pull_vs_exact_fit": float(stat_pull_i),
                        "pulls_per_beta": pulls_beta_i.tolist()},
        "exact_reference": exact_ref.tolist(), "exact_reference_kind": ref_txt,
        "exact_infinite_volume": exact_inf.tolist(), "finite_volume_shift": fv_shift.tolist(),
        "fv_corrected": s.fv_correct, "topology": s.topology, "off_sector_configurations": leaks,
        "fit_truncation_bias": {"flowed_weights": float(bias_f), "independent_weights": float(bias_i)},
        "tau_int_topological_charge": tau_q,
    }
    if s.bayes:
        for label, fr in (("flowed", fit_f), ("independent", fit_i)):
            results[label]["bayes"] = {"mean": fr.bayes.mean.tolist(), "std": fr.bayes.std.tolist(),
                                       "divergences": fr.bayes.divergences,
                                       "prior_width": fr.bayes.prior_width.tolist()}
    record = {
        "title": f"Continuum limit of {q.name} (2D U(1), flow-correlated vs independent ensembles)",
        "summary": summary,
        "headline": headline,
        "tables": tables,
        "results": results,
        "variance_reduction": {
            "definition": VARIANCE_REDUCTION_DEFINITION,
            q.name: {"flowed": variance_reduction_entry(
                {"independent": (vr, vr_cost)},
                cost_adjusted_without_training=float(vr_amort),
                bayesian_vs_independent=None if vr_bayes is None else float(vr_bayes),
                per_beta_vs_independent={f"{b:g}": float(v) for b, v in zip(s.betas, vr_beta)},
                what="variance of the continuum value (intercept of the fit)")}},
        "costs": costs,
        "ensembles": {"base": fam.base.name, "training": fam.training.name,
                      "flowed": [m.flowed.name for m in fam.members],
                      "independent": [m.independent.name for m in fam.members],
                      "flow_checkpoints": {f"{m.target.params()['beta']:g}": m.flow.id for m in fam.members}},
    }
    return record
