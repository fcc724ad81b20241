"""Variance-reduction report: PNG figures and a Markdown page (``corrflow report``).

For a base ensemble and the ensembles compared with it (flowed, direct-reweighting and independent):

* ``derivative_<obs>.png``: d<O>/d(parameter) from every estimator with error bars (and the exact
  finite-torus value where :mod:`corrflow.summary` knows one);
* ``shift_scan.png``: variance reduction against independent ensembles and weight ESS as functions of the
  parameter shift, over all flowed ensembles of the base (one point per ensemble);
* ``training_<flow id>.png``: loss and weight ESS per epoch of every flow used;
* ``report.md``: the comparison table, the figures and the provenance (ensembles, parameters, versions); ``<O>``
  is written ``&lt;O&gt;`` outside code (a bare ``<O>`` is raw HTML in Markdown;
  :func:`corrflow.markdown.escape_angle_brackets`).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .compare import ComparisonRow, compare_ensembles, parameter_shift
from .console import ordinal
from .groups import get_group
from .markdown import escape_angle_brackets
from .stats import Windowing, format_value_error
from .summary import common_thermalisation_cut, exact_derivative, exact_value

__all__ = ["write_report"]

_COLOURS = {"flowed reweighting": "C0", "flowed chain": "C2", "direct reweighting": "C1", "independent": "C3",
            "tangent": "C4", "tangent (second order)": "C6", "connected": "C5"}


def _plt():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _derivative_figure(rows: list[ComparisonRow], obs: str, pname: str, exact: float | None, path: Path,
                       exact_derivative: float | None = None) -> None:
    """Every estimator's ``d<obs>/d pname`` with its error; ``exact``: the exact finite difference over the shift,
    ``exact_derivative``: the exact derivative at the base (what the tangent and connected rows estimate)."""
    plt = _plt()
    sel = [r for r in rows if r.observable == obs and r.derivative is not None]
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.55 * len(sel)))
    for i, r in enumerate(sel):
        ax.errorbar(r.derivative.value, i, xerr=r.derivative.error, fmt="o", capsize=4,
                    color=_COLOURS.get(r.estimator, "k"))
    ax.set_yticks(range(len(sel)), [f"{r.estimator}\n({r.ensemble})" for r in sel], fontsize=8)
    tangent = any(r.estimator in ("tangent", "tangent (second order)", "connected") for r in sel)
    if exact is not None:
        ax.axvline(exact, color="k", ls="--", lw=1, label="exact finite difference (finite torus)")
    if exact_derivative is not None and tangent:
        ax.axvline(exact_derivative, color="0.45", ls=":", lw=1.2, label="exact derivative at the base")
    if exact is not None or (exact_derivative is not None and tangent):
        ax.legend(fontsize=8, loc="best")
    ax.set_xlabel(f"d<{obs}>/d{pname}" + ("\n(finite difference; tangent and connected: derivative at the base)"
                                          if tangent else "  (finite difference)"), fontsize=9)
    ax.invert_yaxis()
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _shift_figure(points: list[dict[str, Any]], pname: str, path: Path) -> None:
    """Variance reduction (log scale) and weight ESS against the shift, every point labelled with its value (a log
    axis over one or two decades has too few ticks to read a value from)."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for label, marker in (("flowed reweighting", "o"), ("direct reweighting", "s")):
        pts = sorted([p for p in points if p["estimator"] == label], key=lambda p: p["shift"])
        if not pts:
            continue
        x = [p["shift"] for p in pts]
        vr = [p["vr"] if p["vr"] is not None else np.nan for p in pts]
        ess = [p["ess"] if p["ess"] is not None else np.nan for p in pts]
        a1.plot(x, vr, marker=marker, color=_COLOURS[label], label=label)
        a2.plot(x, ess, marker=marker, color=_COLOURS[label], label=label)
        for ax, ys, fmt in ((a1, vr, "{:.1f}"), (a2, ess, "{:.3f}")):  # (as the table writes them)
            for xi, yi in zip(x, ys):
                if np.isfinite(yi) and (ax is a2 or yi > 0):
                    ax.annotate(fmt.format(yi), (xi, yi), textcoords="offset points", xytext=(6, 4), fontsize=8,
                                color=_COLOURS[label])
    a1.set_yscale("log")
    a1.axhline(1.0, color="k", lw=0.8)
    shown = [p["vr"] for p in points if p["vr"] is not None and np.isfinite(p["vr"]) and p["vr"] > 0]
    if shown:  # room above the largest value for its label and the legend, 1 always in view
        a1.set_ylim(min(min(shown), 1.0) / 2, max(max(shown), 1.0) * 6)
    a1.set_xlabel(f"shift in {pname}")
    a1.set_ylabel("variance reduction vs independent")
    a2.set_xlabel(f"shift in {pname}")
    a2.set_ylabel("weight ESS / N")
    a2.set_ylim(0, 1.05)
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _training_figure(history: list[dict[str, float]], title: str, path: Path) -> None:
    """Loss and weight ESS per epoch (integer epochs; epoch 0 is the starting flow), the held-out ESS where
    configurations were held out, and the epoch whose parameters were kept
    (:func:`~corrflow.flows.train.kept_epoch`)."""
    from matplotlib.ticker import MaxNLocator

    from .flows.train import kept_epoch

    plt = _plt()
    ep = [h["epoch"] for h in history]
    fig, a1 = plt.subplots(figsize=(6.4, 3.6))
    a1.plot(ep, [h["loss"] for h in history], "C0-o", ms=3, label="loss")
    a1.set_xlabel("epoch (0: starting flow)")
    a1.xaxis.set_major_locator(MaxNLocator(integer=True))
    a1.set_ylabel("loss  mean[S'(f(U)) - log J]", color="C0")
    a2 = a1.twinx()
    a2.plot(ep, [h["ess"] for h in history], "C1-s", ms=3, label="weight ESS / N (training)")
    if all("held_ess" in h for h in history):
        a2.plot(ep, [h["held_ess"] for h in history], "C1--^", ms=3, alpha=0.7, label="weight ESS / N (held out)")
    kept = kept_epoch(history)
    a1.axvline(kept["epoch"], color="0.4", ls=":", lw=1.2, label=f"kept: epoch {kept['epoch']}")
    a2.set_ylabel("weight ESS / N", color="C1")
    a2.set_ylim(0, 1.05)
    a1.set_title(title, fontsize=9)
    a1.grid(alpha=0.3)
    handles = [h for a in (a1, a2) for h in a.get_legend_handles_labels()[0]]
    a2.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cell(x: Any) -> str:
    from .pipeline.record import markdown_cell

    if isinstance(x, float) and np.isfinite(x):
        return f"{x:.4g}"
    return markdown_cell(x)  # (None -> empty, NaN -> n/a, `|` escaped)


def analysis_sections(store: Any, out: Path, names: Sequence[str] | None = None) -> list[str]:
    """Markdown sections (one per analysis result recorded in the store by ``analysis/*``), with their
    figures written into ``out``.  ``names`` selects results (default: all)."""
    from .pipeline.record import table_caption

    lines: list[str] = []
    for name in (store.analyses() if names is None else names):
        rec, figs = store.read_analysis(name)
        lines += [f"## {rec.get('title', name)}", ""]
        lines += [str(x) for x in rec.get("summary", [])] + [""]
        for tname, tab in (rec.get("tables") or {}).items():
            cols = list(tab.get("columns", []))
            lines += [f"**{table_caption(tname, tab)}**", "", "| " + " | ".join(map(_cell, cols)) + " |",
                      "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in tab.get("rows", [])]
            lines.append("")
        for fname, data in sorted(figs.items()):
            target = out / f"{name}_{fname}"
            target.write_bytes(data)
            lines += [f"![{name}: {fname}]({target.name})", ""]
        settings = rec.get("settings") or {}
        if settings:
            lines += ["Settings: " + ", ".join(f"{k} = {v}" for k, v in settings.items()), ""]
    return lines


def _tangent_rows(store: Any, base: str, pname: str, observables: Sequence[str], out: Path, discard: int = 0,
                  second_order: bool = False, tau_exp: float | None = None) -> tuple[list[ComparisonRow], list[str]]:
    """Tangent and connected estimators of ``d<O>/d pname`` on the base ensemble (:mod:`corrflow.tangent`, default
    field, fitted field kept in ``out/tangent_field``) as comparison rows, and the report lines that explain them.
    ``second_order``: the tangent rows with their second-order control variate
    (:func:`corrflow.tangent.second_order_estimate`, pure-gauge ensembles).  Observables the tangent estimator
    cannot take (not smooth) are listed, not estimated."""
    from .pipeline.tangent import derivative_from_store
    from .tangent import observable_function

    spec = store.spec(base)
    smooth, skipped = [], []
    for o in observables:
        try:
            observable_function(o, get_group(spec.group), tuple(spec.shape))
            smooth.append(o)
        except ValueError:
            skipped.append(o)
    if not smooth:
        return [], [f"Tangent-flow estimator: none of {', '.join(observables)} is a smooth observable it takes.", ""]
    stored = derivative_from_store(store, store.path, base, pname, smooth, out=out / "tangent_field", discard=discard,
                                   second_order=second_order, tau_exp=tau_exp)
    res, adjusted = stored.result, stored.cost_adjusted()
    label = "tangent (second order)" if second_order else "tangent"
    rows = [ComparisonRow(o, label if k == "tangent" else k, base, None, s, s, None, None)
            for o in smooth for k, s in res.estimates[o].items() if k in ("tangent", "connected")]
    fit = "/".join(f"{f.reduction:.1f}x" for f in res.fits) or "none"
    so = (" with its second-order control variate (the identity again with h = R_v: for an observable along the "
          "action the product (O - <O>)(R_v - <R_v>) becomes (R_v - <R_v>)^2, whose variance falls like Var[R_v]^2)"
          if second_order else "")
    lines = [f"Tangent-flow estimator{so} ({res.field.get('kind')} field; Var[R_v] reduced {fit} per fold) and the "
             f"connected estimator -<O dS/d{pname}>_c, both on the base ensemble alone (unbiased, no weights, no "
             "shift; 'difference' and 'd<O>' columns both hold the derivative). Variance reduction of the tangent "
             "estimator against the connected one: "
             + ", ".join(f"{o} {res.reduction[o]:.1f}x" for o in smooth) + "; at equal cost (terms and fit "
             f"{stored.cost['terms_s'] + stored.cost['fit_s']:.3g} s per configuration"
             + (f" against {stored.cost['generation_s']:.3g} s to generate one): "
                + ", ".join(f"{o} {adjusted[o]:.1f}x" for o in smooth) if adjusted
                else "; the generation cost of the ensemble is not recorded") + ")."
             + (f" Not smooth, not estimated: {', '.join(skipped)}." if skipped else ""), ""]
    exact = {o: exact_derivative(spec, o, pname) for o in smooth}
    if any(x is not None for x in exact.values()):
        lines += [f"Exact d<O>/d{pname} at the base on this finite torus: " + "; ".join(
            f"{o} {x:.6g} (tangent {res.estimates[o]['tangent'].pull(x):+.1f} sigma, connected "
            f"{res.estimates[o]['connected'].pull(x):+.1f} sigma)" for o, x in exact.items() if x is not None) + ".",
                  ""]
    if any(s.error > 0 for s in res.agreement.values()):
        lines += ["Tangent minus connected, from the same configurations with the error of the difference (both "
                  "are unbiased, so this checks the field): " + ", ".join(
                      f"{o} {format_value_error(s.value, s.error)} ({s.pull(0.0):+.1f} sigma)"
                      for o, s in res.agreement.items() if o in smooth) + "."
                  + "".join(f" {o}: not conclusive on this many configurations (the difference per configuration is "
                            f"skewed; {why})." for o, why in res.unreliable_agreement().items() if o in smooth), ""]
    return rows, lines


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _flow_line(name: str, ck: dict[str, Any]) -> str:
    """The Markdown bullet of a flow used: its layers, training and the weight ESS of the parameters it kept (held-out
    selection can keep an earlier epoch than the last; :func:`~corrflow.flows.train.kept_epoch`)."""
    from .flows.train import kept_epoch

    f, h = ck["flow"], ck["history"]
    kept = kept_epoch(h)
    degree = f", coefficients of degree {f.degree} in the staple norm" if f.degree else ""
    chosen = f" (epoch {kept['epoch']} kept by held-out selection)" if "held_ess" in kept else ""
    return (f"- `{name}`: flow `{ck['id']}`, {_plural(f.n_sweeps, 'sweep')} of {', '.join(f.loops)} layers "
            f"({_plural(f.n_layers, 'layer')}{degree}), trained on {'x'.join(map(str, f.shape))} for "
            f"{_plural(ck['epoch'], 'epoch')}; weight ESS on the training configurations {h[0]['ess']:.3f} -> "
            f"{kept['ess']:.3f}{chosen}")


def _exact_lines(rows: Sequence[ComparisonRow], exact_fd: dict[str, float], pname: str) -> list[str]:
    """The exact finite-torus finite difference the derivative figures mark, with every shift estimator's pull
    (the tangent and connected rows estimate the derivative at the base: their pulls are in the tangent lines)."""
    at_base = ("tangent", "tangent (second order)", "connected")
    parts = []
    for obs, ex in exact_fd.items():
        pulls = [f"{r.estimator} {r.derivative.pull(ex):+.1f}" for r in rows
                 if r.observable == obs and r.derivative is not None and r.estimator not in at_base]
        parts.append(f"{obs} {ex:.6g}" + (f" (pulls in sigma: {', '.join(pulls)})" if pulls else ""))
    if not parts:
        return []
    return [f"Exact finite difference (<O>(a') - <O>(a)) / (shift in {pname}) on this finite torus: "
            + "; ".join(parts) + ".", ""]


def write_report(store: Any, base: str | None, ensembles: Sequence[str], out: str | Path,
                 observables: Sequence[str] = ("plaquette",), analyses: Sequence[str] | None = None,
                 tangent: bool = False, discard: int | None = 0, second_order: bool = False,
                 tau_exp: float | None = None) -> Path:
    """Write the report into directory ``out``; return the path of ``report.md``.

    With ``base``: the variance-reduction comparison of ``base`` with ``ensembles``; with ``tangent`` also the
    tangent-flow and connected derivative estimators on ``base`` (pure-gauge ensembles; :mod:`corrflow.tangent`), and
    with ``second_order`` the tangent rows with their second-order control variate (``ValueError`` without
    ``tangent`` or on an ensemble with dynamical quarks).  Bad input raises before anything is written: ``out`` is
    created only once the report's content stands.
    ``discard``: leading trajectories of every chain left out of all of them (``None``: the longest automatic cut of
    the base and the independent ensembles, :func:`corrflow.summary.common_thermalisation_cut`).  ``tau_exp``: every
    error with the exponential tail of a slow mode of that autocorrelation time (stored trajectories;
    :class:`corrflow.stats.Windowing`).
    Every analysis result recorded in the store (``python -m analysis.<name> ...``; select with ``analyses``) adds
    a section.
    """
    from .flows.train import load_checkpoint

    if second_order and not (tangent and base is not None):
        raise ValueError("--second-order adds the control variate to the tangent rows: use it with --tangent (and "
                         "--base)")
    out = Path(out)
    if base is None:
        found = store.analyses() if analyses is None else list(analyses)
        if not found:
            raise ValueError(f"nothing to report: no --base ensemble given and no analysis results in {store.path} "
                             "(run e.g. `python -m analysis.mass_dependence --store ...` first)")
        out.mkdir(parents=True, exist_ok=True)
        lines = ["# corrflow analyses", "",
                 f"Generated {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')} from store "
                 f"`{store.path}`.", ""] + analysis_sections(store, out, found)
        path = out / "report.md"
        path.write_text(escape_angle_brackets("\n".join(lines) + "\n"))
        return path
    bspec = store.spec(base)
    cut_lines: list[str] = []
    if discard is None:
        cut = common_thermalisation_cut(store, (base, *ensembles), observables)
        discard = cut.n_discard
        cut_lines = [f"Thermalisation (automatic cut): {cut.describe()}.", ""]
    elif discard:
        cut_lines = [f"The first {discard} trajectories of every chain are left out (thermalisation).", ""]
    windowing = Windowing.from_tau_exp(tau_exp or 0.0)
    if windowing.tau_exp is not None:
        cut_lines += [f"Errors include the exponential tail of a slow mode with tau_exp = {tau_exp:g} trajectories "
                      "(Schaefer, Sommer, Virotta 2011).", ""]
    rows = compare_ensembles(store, base, ensembles, observables, discard=discard, windowing=windowing)
    pname, shift = parameter_shift(bspec.params, store.spec(ensembles[0]).params)
    tangent_lines: list[str] = []
    if tangent:  # (its checks -- e.g. --second-order with dynamical quarks -- come before it writes its checkpoint)
        trows, tangent_lines = _tangent_rows(store, base, pname, observables, out, discard, second_order, tau_exp)
        indep = {r.observable: r.derivative.error for r in rows if r.estimator == "independent" and r.derivative}
        rows = rows + [r._replace(variance_reduction=(indep[r.observable] / r.derivative.error) ** 2)
                       if r.observable in indep and r.derivative.error > 0 else r for r in trows]
    out.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, str]] = []
    exact_fd: dict[str, float] = {}
    for obs in observables:
        ex = None
        e0, e1 = exact_value(bspec, obs), None
        if e0 is not None:
            tspec = store.spec(ensembles[0])
            e1 = exact_value(tspec, obs)
        if e0 is not None and e1 is not None:
            ex = exact_fd[obs] = (e1 - e0) / shift
        name = f"derivative_{obs}.png"
        _derivative_figure(rows, obs, pname, ex, out / name, exact_derivative(bspec, obs, pname))
        figures.append((f"d<{obs}>/d{pname} from each estimator", name))
    # shift scan over every flowed ensemble of this base (and independent ensembles at the same shift)
    points = []
    all_names = store.ensembles()
    indep = {n for n in all_names if store.spec(n).kind == "hmc" and n != base and store.spec(n).shape == bspec.shape}
    for n in all_names:
        s = store.spec(n)
        if s.kind != "flowed" or s.flow.get("source") != base:
            continue
        try:
            _, sh = parameter_shift(bspec.params, s.params)
        except ValueError:
            continue
        partners = [m for m in indep if store.spec(m).params == s.params]
        r = [x for x in compare_ensembles(store, base, [n] + partners[:1], observables[:1], discard=discard,
                                          windowing=windowing)
             if x.ensemble == n and x.estimator != "flowed chain"]
        if r:
            points.append({"estimator": r[0].estimator, "shift": sh, "vr": r[0].variance_reduction, "ess": r[0].weight_ess})
    if points:
        _shift_figure(points, pname, out / "shift_scan.png")
        figures.append((f"variance reduction and weight ESS vs shift of {pname} ({observables[0]})", "shift_scan.png"))
    # training curves of the flows used
    flows_used = []
    for n in ensembles:
        s = store.spec(n)
        ck = s.flow.get("checkpoint") if s.kind == "flowed" else None
        if ck and Path(ck).exists():
            c = load_checkpoint(ck)
            name = f"training_{c['id']}.png"
            bp, tp = c["base"].params(), c["target"].params()
            change = ", ".join(f"{k} {bp[k]:g} -> {tp[k]:g}" for k in tp if tp[k] != bp.get(k))
            _training_figure(c["history"], f"flow {c['id']}: {change}", out / name)
            figures.append((f"training of flow {c['id']} (used by {n})", name))
            flows_used.append((n, c))
    # markdown
    lines = [f"# Variance-reduction report: {base}", "",
             f"Generated {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')} from store `{store.path}`.", "",
             f"Base ensemble `{base}`: {bspec.theory} on {'x'.join(map(str, bspec.shape))}, parameters {bspec.params}, "
             f"{bspec.n_chains} chains x {store.info(base)['committed']} stored configurations"
             + (f" (every {ordinal(bspec.thin)} trajectory)" if bspec.thin > 1 else "") + ".", "",
             f"Shift: {pname} {shift:+g} (a: the base parameters, a': the shifted ones). Errors: Gamma method over "
             "paired samples, chains as replicas. Variance reduction: (error of the independent-ensemble "
             "difference / error of the estimator)^2 at equal numbers of configurations.", "", *cut_lines,
             *tangent_lines,
             f"| observable | estimator | ensemble | <O>(a') | difference | d<O>/d{pname} | weight ESS | var. red. |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.observable} | {r.estimator} | `{r.ensemble}` | {r.value_at_target or ''} | {r.difference} | "
                     f"{r.derivative or ''} | {'' if r.weight_ess is None else f'{r.weight_ess:.3f}'} | "
                     f"{'' if r.variance_reduction is None else f'{r.variance_reduction:.1f}'} |")
    lines.append("")
    lines += _exact_lines(rows, exact_fd, pname)
    if figures:
        lines += ["## Figures", ""]
    for caption, name in figures:
        lines += [f"### {caption}", "", f"![{caption}]({name})", ""]
    if flows_used:
        lines += ["## Flows", ""] + [_flow_line(n, c) for n, c in flows_used] + [""]
    lines += analysis_sections(store, out, analyses)
    versions = store.info(base).get("versions") or {}
    lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    path = out / "report.md"
    path.write_text(escape_angle_brackets("\n".join(lines) + "\n"))
    return path
