"""The mass-dependence figure, drawn from the record alone (a stored record can be re-rendered)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .estimators import Estimate
from .settings import ESTIMATORS

__all__ = ["render"]

OBS_LABELS = {"pion_mass": r"$m_\pi$", "condensate": r"$\Sigma$", "plaquette": r"$\langle P\rangle$",
              "chi_top": r"$\chi_{\rm top}$"}
COLORS = {"flowed": "C0", "tangent": "C4", "direct": "C1", "independent": "C2", "connected": "C3"}
MARKERS = {"flowed": "o", "tangent": "v", "direct": "s", "independent": "^", "connected": "D"}


def _est(d: Mapping[str, Any]) -> Estimate:
    """An :class:`Estimate` from its record entry (None -> NaN)."""
    def f(x: Any) -> float:
        return math.nan if x is None else float(x)

    return Estimate(f(d.get("value")), f(d.get("error")), f(d.get("tau_int")))


def _derivatives(fig: Any, gs: Any, record: Mapping[str, Any], obs: list[str]) -> None:
    for j, o in enumerate(obs):
        ax = fig.add_subplot(gs[0, 2 * j:2 * (j + 1)])
        der = {e: _est(v) for e, v in record["estimates"][o]["derivative"].items()}
        xs = [e for e in ESTIMATORS if e in der and math.isfinite(der[e].value)]
        for i, e in enumerate(xs):
            ax.errorbar([i], [der[e].value], yerr=[der[e].error], fmt=MARKERS[e], color=COLORS[e], capsize=4, ms=6)
        if "connected" in xs:
            c = der["connected"]
            ax.axhspan(c.value - c.error, c.value + c.error, color=COLORS["connected"], alpha=0.12, lw=0,
                       label=r"connected $\pm1\sigma$")
            if j == 0:  # (the band is otherwise unexplained)
                ax.legend(fontsize=8, loc="best")
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels(xs, rotation=30, fontsize=9)
        ax.set_title(f"d{OBS_LABELS[o]}/dm", fontsize=11)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.grid(alpha=0.3, axis="y")


def _pion(ax: Any, record: Mapping[str, Any]) -> None:
    s, pion = record["settings"], record["pion"]
    est = record["estimates"]["pion_mass"]
    t_min, t_max = pion["t_min"], pion["t_max"]
    t_lo = max(0, t_min - 1)  # earlier points (excited states) would squash the scale
    t = np.asarray(pion["t"][t_lo:], float)
    ts = np.array([t_min - 0.3, t_max + 0.3])
    for k, lab, off in (("base", f"m = {s['mass']:g} (base)", -0.12), ("flowed", "m + dm (flowed)", -0.04),
                        ("direct", "m + dm (direct)", 0.04), ("independent", "m + dm (independent)", 0.12)):
        curve = pion["effective_mass"][k]
        y = np.array([np.nan if v is None else v for v in curve["value"][t_lo:]], float)
        dy = np.array([np.nan if v is None else v for v in curve["error"][t_lo:]], float)
        e = _est(est["value_base"] if k == "base" else est["value_target"][k])
        col = "k" if k == "base" else COLORS[k]
        ax.errorbar(t + off, y, yerr=dy, fmt=MARKERS.get(k, "x"), color=col, capsize=3, ms=4, label=f"{lab}: {e}")
        if k in ("base", "flowed", "independent"):
            ax.fill_between(ts, e.value - e.error, e.value + e.error, color=col, alpha=0.15, lw=0)
            ax.plot(ts, [e.value, e.value], color=col, lw=1.0, alpha=0.8)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # (time slices)
    ax.set_xlabel("t")
    ax.set_ylabel(r"cosh effective mass $m_{\rm eff}(t)$")
    ax.set_title(f"pion effective mass, dm = {s['dm']:g}", fontsize=11)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _variance_reductions(ax: Any, vr: Mapping[str, Any], obs: list[str]) -> None:
    """Bars of ``vr[observable][estimator][key]`` (the record's ``variance_reduction``)."""
    bars = [("flowed", "vs_independent", "flowed vs independent", "C2", 1.0),
            ("flowed", "cost_adjusted_vs_independent", "flowed vs independent, cost-adjusted", "C2", 0.5),
            ("flowed", "vs_direct", "flowed vs direct", "C1", 1.0),
            ("flowed", "cost_adjusted_vs_direct", "flowed vs direct, cost-adjusted", "C1", 0.5),
            ("tangent", "vs_connected", "tangent vs connected", "C4", 1.0),
            ("tangent", "cost_adjusted_vs_connected", "tangent vs connected, cost-adjusted", "C4", 0.5)]
    rated = {o: {e: v for e, v in (vr.get(o) or {}).items() if isinstance(v, Mapping)} for o in obs}
    bars = [b for b in bars if any(b[1] in rated[o].get(b[0], {}) for o in obs)]
    if not bars:  # (a record without them)
        return
    width = 0.8 / len(bars)
    xs = np.arange(len(obs))
    for i, (e, k, lab, col, alpha) in enumerate(bars):
        vals = [rated[o].get(e, {}).get(k) for o in obs]
        vals = [np.nan if v is None else v for v in vals]
        ax.bar(xs + (i - (len(bars) - 1) / 2) * width, vals, width, label=lab, color=col, alpha=alpha)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    finite = [v for o in obs for entry in rated[o].values() for v in entry.values()
              if isinstance(v, (int, float)) and v > 0]
    if finite:
        ax.set_ylim(min(finite) / 3, max(finite) * 40)
    ax.set_xticks(xs)
    ax.set_xticklabels([OBS_LABELS[o] for o in obs])
    ax.set_ylabel("variance reduction")
    ax.legend(fontsize=8, ncol=2, loc="upper center")
    ax.grid(alpha=0.3, axis="y")


def render(record: Mapping[str, Any]) -> bytes:
    """PNG: ``dO/dm`` by estimator per observable (top), the pion effective masses with their plateau bands and
    the variance reductions of the flowed and tangent estimators (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from corrflow.pipeline.record import figure_png

    s = record["settings"]
    obs = list(record["estimates"])
    n = max(3, len(obs))
    fig = plt.figure(figsize=(3.2 * n, 7.4), constrained_layout=True)
    gs = fig.add_gridspec(2, 2 * n)
    _derivatives(fig, gs, record, obs)
    if "pion" in record:
        _pion(fig.add_subplot(gs[1, :n]), record)
        ax2 = fig.add_subplot(gs[1, n:])
    else:
        ax2 = fig.add_subplot(gs[1, :])
    _variance_reductions(ax2, record["variance_reduction"], obs)
    fig.suptitle(f"Schwinger model, $N_f=2$ Wilson, {s['T']}x{s['L']}, beta = {s['beta']:g}, m = {s['mass']:g}, "
                 f"dm = {s['dm']:g}", fontsize=12)
    return figure_png(fig, dpi=130)
