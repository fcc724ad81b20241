"""Figures of the continuum analyses, drawn from their records alone (a stored record can be re-rendered)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .estimators import fit_band

__all__ = ["render_su3", "render_u1"]


def _fmt(v: float, e: float, digits: int = 2) -> str:
    from corrflow.stats import format_value_error

    return format_value_error(float(v), float(e), digits)


def _data_and_fits(ax: Any, x: np.ndarray, r: Mapping[str, Any], xs: np.ndarray, labels: tuple[str, str]) -> None:
    dx = 0.006 * float(xs[-1])
    for (key, col, mk, off), label in zip((("flowed", "C0", "o", -dx), ("independent", "C3", "s", dx)), labels):
        d = r[key]
        band_v, band_e = fit_band(d["params"], d["param_cov"], xs)
        ax.fill_between(xs, band_v - band_e, band_v + band_e, color=col, alpha=0.18, lw=0)
        ax.plot(xs, band_v, color=col, lw=1.0, ls="--")
        ax.errorbar(x + off, d["values"], yerr=d["errors"], fmt=mk, color=col, ms=4.5, capsize=2.5,
                    mfc="white" if mk == "s" else col, label=label)
        c0, e0 = d["continuum"], d["continuum_error"]
        gof = (f"$\\chi^2/$dof {d['chi2']:.1f}/{d['dof']}" if d["dof"] else
               "interpolation, no dof")  # (a chi^2 of 0/0 tests nothing)
        ax.errorbar([2 * off], [c0], yerr=[e0], fmt=mk, color=col, ms=6.5, capsize=3.5, lw=1.6, mfc=col,
                    label=f"  continuum fit: {_fmt(c0, e0)} ({gof})")


def render_u1(record: Mapping[str, Any]) -> bytes:
    """The 2D U(1) continuum figure: data, fit bands and the exact curve; correlation matrix of the flowed
    estimates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    from corrflow.pipeline.record import figure_png

    from .u1_quantities import make_quantity

    s, r = record["settings"], record["results"]
    q = make_quantity(r["quantity"], s["creutz_size"])
    x = np.asarray(r["x"], float)
    fl = r["flowed"]
    fig = plt.figure(figsize=(10.0, 4.6))
    gs = GridSpec(1, 2, width_ratios=[2.6, 1.0], wspace=0.32, figure=fig)
    ax = fig.add_subplot(gs[0])
    xmax = float(x.max()) * 1.08
    xs = np.linspace(0.0, xmax, 200)
    xe = np.linspace(max(xmax / 400, 1e-3), xmax, 200)
    ax.plot(xe, [q.exact_infinite(1.0 / t) for t in xe], color="k", lw=1.0, label="exact, infinite volume")
    if not s["fv_correct"]:
        sector = ", Q = 0" if s["topology"] == "fixed" else ""
        ax.plot(x, r["exact_reference"], color="k", ls="none", marker="_", ms=14, mew=1.5,
                label=f"exact, {s['L']}x{s['L']} torus{sector}")
    ax.plot([0.0], [q.continuum], marker="*", ms=13, color="k", ls="none", zorder=5,
            label=f"exact continuum value ${q.continuum_label}$")
    _data_and_fits(ax, x, r, xs, ("flowed (one base, correlated)", "independent HMC ensembles"))
    ax.set_xlim(-0.04 * xmax, xmax)
    ax.set_xlabel(r"$a^2 g^2 = 1/\beta$")
    ax.set_ylabel(q.label)
    ind = r["independent"]
    vals = np.concatenate([np.asarray(fl["values"]) - fl["errors"], np.asarray(fl["values"]) + fl["errors"],
                           np.asarray(ind["values"]) - ind["errors"], np.asarray(ind["values"]) + ind["errors"],
                           [q.continuum, fl["continuum"] - fl["continuum_error"],
                            fl["continuum"] + fl["continuum_error"]]])
    lo, hi = float(np.min(vals)), float(np.max(vals))
    ax.set_ylim(lo - 0.35 * (hi - lo), hi + 0.35 * (hi - lo))
    ax.grid(alpha=0.25)
    order_txt = {0: "constant", 1: "linear", 2: "quadratic", 3: "cubic"}.get(s["order"], f"degree {s['order']}")
    corr_txt = ("data shifted by the exact (torus" + (", Q = 0" if s["topology"] == "fixed" else "")
                + " $-$ infinite volume) difference" if s["fv_correct"] else "")
    ax.set_title(f"2D U(1), L = {s['L']}: {order_txt} extrapolation in $a^2g^2$, correlated $\\chi^2$ fits"
                 + ("\n" + corr_txt if corr_txt else ""), fontsize=9.5)
    ax.legend(fontsize=7.5, loc="best", framealpha=0.9)
    cov = np.asarray(fl["cov"], float)
    err = np.sqrt(np.diag(cov))
    ax2 = fig.add_subplot(gs[1])
    im = ax2.imshow(cov / np.outer(err, err), vmin=-1, vmax=1, cmap="RdBu_r")
    ticks = [f"{b:g}" for b in r["betas"]]
    ax2.set_xticks(range(len(x)), ticks, fontsize=7, rotation=45)
    ax2.set_yticks(range(len(x)), ticks, fontsize=7)
    ax2.set_xlabel(r"$\beta$")
    ax2.set_ylabel(r"$\beta$")
    ax2.set_title("correlation of the flowed estimates\n(joint binned jackknife)", fontsize=9)
    fig.colorbar(im, ax=ax2, fraction=0.046, pad=0.04)
    return figure_png(fig, dpi=150)


def render_su3(record: Mapping[str, Any]) -> bytes:
    """The 4D SU(3) continuum figure: flowed and independent data with their fit bands in ``(a/r0)^2``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from corrflow.pipeline.record import figure_png

    s, r = record["settings"], record["results"]
    x = np.asarray(r["x"], float)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    xmax = float(x.max()) * 1.1
    xs = np.linspace(0.0, xmax, 200)
    _data_and_fits(ax, x, r, xs, ("flowed (one base, correlated)", "independent ensembles"))
    ax.set_xlim(-0.04 * xmax, xmax)
    ax.set_xlabel(r"$(a/r_0)^2$ (Necco–Sommer)")
    ax.set_ylabel({"sqrt_t0_over_w0": r"$\sqrt{t_0}/w_0$", "t0_over_r0sq": r"$t_0/r_0^2$"}[r["quantity"]])
    ax.set_title(f"quenched SU(3), {s['T']}x{s['L']}^3, E(t) {s['definition']}", fontsize=10)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7.5, loc="best")
    return figure_png(fig, dpi=140)
