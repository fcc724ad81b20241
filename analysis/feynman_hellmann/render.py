"""The Feynman–Hellmann figure, drawn from the record alone (a stored record can be re-rendered)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .settings import ESTIMATORS

__all__ = ["render"]

LABELS = {"flowed": "flowed (correlated)", "tangent": "tangent flow (no weights)",
          "connected": r"connected $\langle C\,O\rangle_c$",
          "direct": "direct reweighting", "independent": "independent ensembles"}
STYLE = {"flowed": dict(color="#1f5fa8", marker="o", mfc="#1f5fa8"),
         "tangent": dict(color="#8e44ad", marker="v", mfc="#8e44ad"),
         "connected": dict(color="#c0392b", marker="s", mfc="white"),
         "direct": dict(color="#7f7f7f", marker="D", mfc="white"),
         "independent": dict(color="#2e8b57", marker="^", mfc="white")}


def _arr(xs: list[Any]) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in xs], dtype=float)


def _curve(record: Mapping[str, Any], k: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(t, value, error, valid)`` of an effective curve in the record (valid: value and error finite)."""
    e = record["effective"][k]
    t, v, err = np.asarray(e["t"], float), _arr(e["value"]), _arr(e["error"])
    return t, v, err, np.isfinite(v) & np.isfinite(err)


def _plateau(record: Mapping[str, Any], k: str) -> tuple[float, float, int, int, str]:
    """``(value, error, t_min, t_max, formatted)`` of a plateau in the record."""
    from corrflow.stats import format_value_error

    p = record["estimates"][k]
    v = math.nan if p["value"] is None else float(p["value"])
    e = math.nan if p["error"] is None else float(p["error"])
    txt = "n/a" if not math.isfinite(v) else (format_value_error(v, e) if e > 0 else f"{v:.6g}")
    return v, e, int(p["t_min"]), int(p["t_max"]), txt


def _effective(ax: Any, record: Mapping[str, Any]) -> None:
    shown = tuple(k for k in ("flowed", "tangent", "connected", "independent") if k in record["effective"])
    offs = {"flowed": -0.15, "tangent": -0.05, "connected": 0.05, "independent": 0.15}
    band_alpha = {"flowed": 0.30, "tangent": 0.25, "connected": 0.18, "independent": 0.07}
    lo, hi = np.inf, -np.inf
    labels = {}
    for z, k in enumerate(reversed(shown)):  # independent (widest band) at the back, flowed in front
        t, v, err, ok = _curve(record, k)
        pv, pe, t0, t1, txt = _plateau(record, k)
        st = STYLE[k]
        labels[k] = LABELS[k] + f": {txt}"
        ax.errorbar(t[ok] + offs[k], v[ok], err[ok], ls="none", marker=st["marker"], ms=4.5, color=st["color"],
                    mfc=st["mfc"], capsize=2, lw=1, zorder=10 + z, label=labels[k])
        x = np.array([t0 - 0.4, t1 + 0.4])
        ax.fill_between(x, pv - pe, pv + pe, color=st["color"], alpha=band_alpha[k], lw=0, zorder=1 + z)
        for yy, ls_ in ((pv, "-"), (pv - pe, ":"), (pv + pe, ":")):
            ax.plot(x, [yy, yy], color=st["color"], lw=1.2 if ls_ == "-" else 0.8, ls=ls_, zorder=5 + z)
        if k != "independent" and ok.any():
            lo = min(lo, np.nanmin((v - err)[ok]))
            hi = max(hi, np.nanmax((v + err)[ok]))
    if np.isfinite(lo) and np.isfinite(hi):
        pad = 0.25 * (hi - lo)
        pv, pe = _plateau(record, "independent")[:2]
        if math.isfinite(pv) and math.isfinite(pe):
            lo, hi = min(lo, pv - pe), max(hi, pv + pe)
        ax.set_ylim(lo - pad, hi + pad)
    handles, texts = ax.get_legend_handles_labels()
    order = [texts.index(labels[k]) for k in shown]
    ax.legend([handles[i] for i in order], [texts[i] for i in order], loc="lower left", frameon=False)
    ax.axhline(0.0, color="k", lw=0.5, ls=":")
    ax.set_ylabel(r"effective $dE_\pi/d\lambda\,(t)$")


def _errors(ax: Any, record: Mapping[str, Any], t_min: int, t_max: int, kind: str) -> None:
    for k in (k for k in ESTIMATORS if k in record["effective"]):
        t, _, err, ok = _curve(record, k)
        ok &= err > 0
        st = STYLE[k]
        ax.semilogy(t[ok], err[ok], marker=st["marker"], ms=4, color=st["color"], mfc=st["mfc"], lw=1,
                    label=LABELS[k])
    ax.axvspan(t_min - 0.5, t_max + 0.5, color="0.9", zorder=0)
    ax.set_ylabel(r"error $\sigma(t)$")
    ax.set_xlabel(r"$t$" + (" (cosh effective mass)" if kind == "cosh" else " (log effective mass)"))
    y0, y1 = ax.get_ylim()
    ax.set_ylim(y0 / (y1 / y0) ** 0.35, y1 * (y1 / y0) ** 0.6)  # head room for the legend, foot room for the text
    ax.legend(loc="upper left", frameon=False, ncol=2, fontsize=7)
    rated = record["variance_reduction"].get("dE_dlambda") or {}  # {estimator: {"vs_<reference>": ...}}
    vr, vt = rated.get("flowed") or {}, rated.get("tangent") or {}
    lines = []
    if vr.get("vs_independent") is not None and vr.get("vs_direct") is not None:
        lines.append(f"plateau variance reduction (flowed): {vr['vs_independent']:.3g}x vs independent, "
                     f"{vr['vs_direct']:.3g}x vs direct")
    if vt.get("vs_connected") is not None and vt.get("vs_flowed") is not None:
        lines.append(f"(tangent): {vt['vs_connected']:.3g}x vs connected, {vt['vs_flowed']:.3g}x vs flowed")
    if lines:
        ax.text(0.99, 0.04, "\n".join(lines), transform=ax.transAxes, ha="right", va="bottom", fontsize=7)


def render(record: Mapping[str, Any]) -> bytes:
    """PNG: the effective ``dE/dlambda(t)`` of the flowed, tangent, connected and independent estimators with their
    plateau bands (top) and the errors of all estimators against ``t`` (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from corrflow.pipeline.record import figure_png

    s = record["settings"]
    _, _, t_min, t_max, _ = _plateau(record, "flowed")
    with plt.rc_context({"font.size": 9, "axes.labelsize": 10, "legend.fontsize": 8, "mathtext.fontset": "cm"}):
        fig, (ax, ax2) = plt.subplots(2, 1, figsize=(5.4, 6.2), sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
        _effective(ax, record)
        lam_txt = rf"\pm{s['lam']:g}" if s["symmetric"] else f"{s['lam']:g}"
        geom = r"\times".join(str(x) for x in record["lattice"])
        if s["theory"] == "schwinger":
            head = rf"Schwinger model, $N_f=2$ Wilson, ${geom}$, $\beta={s['beta']:g}$, $m={s['mass']:g}$"
            src = r"$O=-\Sigma_x \cos P(x)$"
        else:
            head = rf"quenched SU(3), ${geom}$, $\beta={s['beta']:g}$, valence $m={s['mass']:g}$"
            src = r"$O=\frac{1}{3}\Sigma_x\,\mathrm{Re\,tr}(P_s - P_t)$"
        ax.set_title(head + "\n" + rf"$S+\lambda O$, {src}, $\lambda={lam_txt}$, plateau t = {t_min}..{t_max}",
                     fontsize=9)
        _errors(ax2, record, t_min, t_max, s["kind"])
        fig.tight_layout()
        return figure_png(fig, dpi=160)
