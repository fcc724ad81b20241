"""analysis.feynman_hellmann: the estimators (corrflow.stats curves and plateau fits) on synthetic correlators with
known dE/dlambda, the settings, and one end-to-end run through the store.

Synthetic tests (numpy only, fast) use periodic correlators ``A cosh(E (t - T/2))`` with Monte Carlo noise and
fixed seeds; recovered slopes must lie within 4 sigma of the truth, and each has a negative control (a wrong
value is rejected) so that it cannot pass vacuously.  The end-to-end test runs the whole pipeline once on a
tiny Schwinger lattice (module fixture: compilation dominates its cost); its run file repeats it through the
command line with everything reused, and its stored record re-renders the figure.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import corrflow.stats as st
from analysis import feynman_hellmann as fh
from corrflow.pipeline.analysis import app as analysis_app

app = analysis_app(fh.FEYNMAN_HELLMANN)

T = 16
TT = np.arange(T)


def cosh_corr(e, amp=1.0, t_ext=T):
    t = np.arange(t_ext)
    return amp * np.cosh(e * (t - t_ext / 2))


def ar1(rng, shape, rho):
    """AR(1) noise along axis -2 (Monte Carlo time) with unit variance."""
    x = rng.standard_normal(shape)
    out = np.empty_like(x)
    out[..., 0, :] = x[..., 0, :]
    for i in range(1, shape[-2]):  # Monte Carlo time, not lattice sites
        out[..., i, :] = rho * out[..., i - 1, :] + math.sqrt(1 - rho**2) * x[..., i, :]
    return out


# ----------------------------------------------------------------------------------------------
# correlator algebra
# ----------------------------------------------------------------------------------------------


def test_effective_mass_exact_for_cosh_and_slope_matches_finite_difference():
    c = cosh_corr(0.7, 3.0)
    m = st.effective_mass(c, "cosh")
    assert m.shape == (T // 2,) and np.allclose(m, 0.7, atol=1e-12)
    assert np.array_equal(st.effective_times(T, "cosh"), np.arange(1, T // 2 + 1))
    assert np.array_equal(st.effective_times(T, "log"), np.arange(0, T // 2))
    # log kind: exact for a plain exponential far from T/2 on a long lattice
    ml = st.effective_mass(cosh_corr(0.7, 1.0, 64), "log")
    assert np.allclose(ml[:12], 0.7, atol=1e-9) and not np.allclose(ml[-1], 0.7, atol=1e-2)
    # folding: C(t) and C(T - t) averaged
    x = np.random.default_rng(0).random(T)
    f = st.fold_correlator(x)
    assert f.shape == (T // 2 + 1,) and f[0] == x[0] and f[T // 2] == x[T // 2]
    assert np.isclose(f[3], 0.5 * (x[3] + x[T - 3]))
    # slope: chain rule vs finite difference of the effective mass, both kinds
    e0, de, db = 0.6, 0.3, 0.2
    for kind in fh.KINDS + ("cosh_ratio",):  # (cosh_ratio: the mass-dependence analysis' kind)
        h = 1e-6
        cp = cosh_corr(e0 + h * de, math.exp(h * db))
        cm = cosh_corr(e0 - h * de, math.exp(-h * db))
        fd = (st.effective_mass(cp, kind) - st.effective_mass(cm, kind)) / (2 * h)
        sl = st.effective_mass_slope(cosh_corr(e0), (cp - cm) / (2 * h), kind)
        assert np.allclose(sl, fd, atol=1e-6), kind
    assert np.allclose(st.effective_mass_slope(cosh_corr(e0), (cp - cm) / (2 * h), "cosh"), de, atol=1e-6)
    with pytest.raises(ValueError, match="kind"):
        st.effective_mass(c, "exp")
    with pytest.raises(ValueError, match="even time extent"):
        st.fold_correlator(np.ones(7))


# ----------------------------------------------------------------------------------------------
# synthetic ensembles with known dE/dlambda
# ----------------------------------------------------------------------------------------------

E0, DE, LAM = 0.5, -0.25, 0.05


def _paired(rng, n_chains=2, n=2000, rho=0.6, shared=0.3, extra=0.01, de=DE):
    """Base and 'flowed' correlators sharing their (autocorrelated) noise, like U_i and f(U_i)."""
    eps = shared * ar1(rng, (n_chains, n, T), rho)
    c0 = cosh_corr(E0) * (1 + eps + extra * rng.standard_normal((n_chains, n, T)))
    cl = cosh_corr(E0 + LAM * de, 1.1) * (1 + eps + extra * rng.standard_normal((n_chains, n, T)))
    log_w = 0.05 * rng.standard_normal((n_chains, n))  # independent of the correlators: unbiased
    ind = cosh_corr(E0 + LAM * de, 1.1) * (1 + shared * ar1(rng, (n_chains, n, T), rho))
    return c0, cl, log_w, ind


def test_flowed_and_independent_recover_dE_on_synthetic_pairs():
    rng = np.random.default_rng(11)
    c0, cl, log_w, ind = _paired(rng)
    bs, tau, _ = st.auto_bin_size([st.fold_correlator(c0)[..., 3], np.exp(log_w)], factor=10)
    assert tau > 1.5 and bs > 10  # AR(1) with rho = 0.6: tau_int = 2; the bins see it
    fl = st.flowed_curve(c0, cl, log_w, LAM, bin_size=bs)
    idp = st.independent_curve(c0, ind, LAM, bin_size_a=bs, bin_size_b=bs)
    assert set(idp.dev) == {"base", "independent"} and set(fl.dev) == {"base"}
    pf, pi = st.plateau_fit(fl, 2, 6, weights="correlated"), st.plateau_fit(idp, 2, 6, weights="correlated")
    assert abs(pf.value - DE) / pf.error < 4 and abs(pi.value - DE) / pi.error < 4
    assert pf.error < pi.error / 5  # the shared noise cancels in the paired difference only
    assert abs(pf.value - (DE + 0.1)) / pf.error > 4  # negative control: a wrong slope is rejected
    assert abs(st.pull(pf, pi)) < 4
    # correlated weights: the jackknife error equals the least-squares error (the covariance is the jackknife one)
    from corrflow.stats import correlated_fit

    sel = (fl.t >= 2) & (fl.t <= 6)
    ref = correlated_fit(fl.t[sel], fl.value[sel], fl.cov[np.ix_(sel, sel)], order=0)
    assert math.isclose(pf.error, ref.errors[0], rel_tol=1e-8) and math.isclose(pf.value, ref.params[0])
    assert math.isclose(pf.chi2, ref.chi2, rel_tol=1e-10)
    # diagonal weights: the 1/sigma^2 mean, its error from the jackknife (>= the GLS error), same data
    pd = st.plateau_fit(fl, 2, 6)
    w = 1 / fl.error[sel] ** 2
    assert pd.weights == "diagonal" and math.isclose(pd.value, np.sum(w * fl.value[sel]) / w.sum())
    assert pd.error >= pf.error * (1 - 1e-9) and abs(pd.value - DE) / pd.error < 4


def test_errors_grow_with_autocorrelation():
    """Binning along Monte Carlo time: strongly autocorrelated chains (AR(1), rho = 0.9, tau_int = 9.5) get a
    larger error with bins of 40 than with bin_size = 1 (naive), close to sqrt(2 tau_int) ~ 4.4 times larger."""
    rng = np.random.default_rng(5)
    c0, _, _, ind = _paired(rng, n=2000, rho=0.9)
    e1 = st.plateau_fit(st.independent_curve(c0, ind, LAM, bin_size_a=1, bin_size_b=1), 2, 6).error
    e40 = st.plateau_fit(st.independent_curve(c0, ind, LAM, bin_size_a=40, bin_size_b=40), 2, 6).error
    assert 2.5 * e1 < e40 < 6 * e1


def _reweightable(rng, n=4000, de=DE, b=0.3, noise=0.02):
    """Configurations with O ~ N(0, 1) and C(t) = F(t) exp(a(t) O - a^2/2) (1 + noise): reweighting by
    e^{-lam O} gives d log C(t)/dlam = -a(t) = dE (t - T/2) tanh(E (t - T/2)) + b exactly (amplitude slope b)."""
    o = rng.standard_normal((2, n))
    a = -(de * (TT - T / 2) * np.tanh(E0 * (TT - T / 2)) + b)
    c = cosh_corr(E0) * np.exp(a * o[..., None] - a**2 / 2) * (1 + noise * rng.standard_normal((2, n, T)))
    return c, o


def test_connected_and_direct_recover_dE_on_synthetic_reweighting():
    rng = np.random.default_rng(3)
    c, o = _reweightable(rng)
    for kind, (t0, t1) in (("cosh", (2, 7)), ("log", (1, 5))):
        con = st.plateau_fit(st.connected_curve(c, o, kind=kind, bin_size=20), t0, t1)
        lam = 0.01  # direct reweighting with the exact weights e^{-lam O}: O(lam) from dE, bias O(lam^2)
        dr = st.plateau_fit(st.flowed_curve(c, c, -lam * o, lam, kind=kind, bin_size=20), t0, t1)
        if kind == "cosh":  # exact for the periodic correlator at every t
            assert abs(con.value - DE) / con.error < 4 and abs(dr.value - DE) / dr.error < 4
            assert abs(con.value) / con.error > 4  # a non-zero slope is resolved (not vacuous)
        # paired on the same configurations: they differ by O(lam) (a curvature), far below the error
        assert abs(con.value - dr.value) < 0.1 * con.error
    # dE = 0: consistent with zero
    c0, o0 = _reweightable(np.random.default_rng(4), de=0.0)
    z = st.plateau_fit(st.connected_curve(c0, o0, bin_size=20), 2, 7)
    assert abs(z.value) / z.error < 4


def test_tangent_curve_unbiased_for_any_field_and_beats_connected():
    """Gaussian 'links' ``x ~ N(0, 1)`` (V coordinates per configuration) with ``S = sum x^2/2 + lam sum x`` (so
    ``x ~ N(-lam, 1)``), the source ``O = dS/dlam = sum x`` and ``C(t) = cosh(E0 (t - T/2)) exp(a(t) x_0 - a^2/2)
    (1 + noise)``: ``d m_eff/dlam = DE`` exactly (``a`` as in :func:`_reweightable`).  The constant field ``v = k``
    on every coordinate has ``v.grad C = k a C``, ``v.grad S = k sum x``, ``div v = 0``, so ``R_v = (1 + k) O``;
    ``k = -1`` is the ideal field (``R_v = 0``), which removes the volume-extensive noise of ``O``."""
    rng = np.random.default_rng(21)
    n, vol = 3000, 64
    x = rng.standard_normal((2, n, vol))
    o = x.sum(axis=-1)
    a = -(DE * (TT - T / 2) * np.tanh(E0 * (TT - T / 2)) + 0.3)
    c = cosh_corr(E0) * np.exp(a * x[..., :1] - a**2 / 2) * (1 + 0.02 * rng.standard_normal((2, n, T)))
    con = st.plateau_fit(st.connected_curve(c, o, bin_size=20), 2, 7)
    assert abs(con.value - DE) / con.error < 4
    fits = {}
    for k in (-1.0, -0.5, 0.0):  # ideal, half-way, zero field (= connected): unbiased all
        cur = st.tangent_curve(c, (1 + k) * o, k * a * c, bin_size=20)
        fits[k] = st.plateau_fit(cur, 2, 7)
        assert abs(fits[k].value - DE) / fits[k].error < 4, k
    assert fits[0.0].value == pytest.approx(con.value, rel=1e-12) and fits[0.0].error == pytest.approx(con.error)
    assert fits[-1.0].error ** 2 * 20 < con.error ** 2  # the ideal field: > 20x less variance
    assert fits[-0.5].error < con.error
    assert abs(st.pull(fits[-1.0], con)) < 4  # same configurations: the pull keeps their correlation
    # negative control: the field's R_v without its v.grad C is biased (half the slope)
    bad = st.plateau_fit(st.tangent_curve(c, 0.5 * o, np.zeros_like(c), bin_size=20), 2, 7)
    assert abs(bad.value - DE) / bad.error > 4
    with pytest.raises(ValueError, match="must have the shape"):
        st.tangent_curve(c, o, c[..., :4])


def test_symmetric_curve_removes_linear_bias():
    rng = np.random.default_rng(8)
    n, lam, d2 = 1500, 0.2, 2.0  # E(lam) = E0 + DE lam + d2 lam^2 / 2: one-sided bias d2 lam / 2 = 0.2
    eps = 0.2 * rng.standard_normal((1, n, T))
    corr = {s: cosh_corr(E0 + s * lam * DE + d2 * (s * lam) ** 2 / 2)
            * (1 + eps + 0.002 * rng.standard_normal((1, n, T))) for s in (-1, 0, 1)}
    lw = np.zeros((1, n))
    sym = st.plateau_fit(st.symmetric_curve(corr[1], lw, corr[-1], lw, lam, bin_size=10), 2, 6)
    one = st.plateau_fit(st.flowed_curve(corr[0], corr[1], lw, lam, bin_size=10), 2, 6)
    assert abs(sym.value - DE) / sym.error < 4
    assert abs(one.value - DE - d2 * lam / 2) / one.error < 4 and abs(one.value - DE) / one.error > 4


def test_estimators_reject_bad_input():
    rng = np.random.default_rng(0)
    c0, cl, log_w, ind = _paired(rng, n=100)
    with pytest.raises(ValueError, match="lam must be finite and non-zero"):
        st.flowed_curve(c0, cl, log_w, 0.0)
    with pytest.raises(ValueError, match="non-zero"):
        st.independent_curve(c0, ind, float("nan"))
    with pytest.raises(ValueError, match="paired"):
        st.flowed_curve(c0, cl[:, :50], log_w, LAM)
    with pytest.raises(ValueError, match="non-finite"):
        st.connected_curve(c0, np.full((2, 100), np.nan))
    with pytest.raises(ValueError, match="fewer than 2 jackknife bins"):
        st.flowed_curve(c0, cl, log_w, LAM, bin_size=101)
    cur = st.flowed_curve(c0, cl, log_w, LAM, bin_size=5)
    with pytest.raises(ValueError, match="outside the effective-mass times 1..8"):
        st.plateau_fit(cur, 2, 9)
    with pytest.raises(ValueError, match="outside"):
        st.plateau_fit(cur, 0, 3)
    with pytest.raises(ValueError, match="t_min = 5 > t_max = 3"):
        st.plateau_fit(cur, 5, 3)
    bad = st.Curve(cur.t, np.where(cur.t == 4, np.nan, cur.value), cur.dev, cur.bin_size)
    with pytest.raises(ValueError, match="undefined .* t = 4"):
        st.plateau_fit(bad, 3, 5)
    with pytest.raises(ValueError, match="weights must be one of"):
        st.plateau_fit(cur, 2, 5, weights="uncorrelated")


def test_summary_names_the_training_the_flows_had():
    """The summary said `15 epochs on 256` (the --n-train asked for) where the flow was trained on the 200
    configurations there were: it quotes the recorded epochs and training configurations of each distinct flow."""
    from analysis.feynman_hellmann.record import _training

    assert _training([{"epochs": 15, "n_train": 200}]) == "trained 15 epochs on 200 configurations"
    assert _training([{"epochs": 15, "n_train": 200}] * 2) == "trained 15 epochs on 200 configurations"  # +-lambda
    assert _training([{"epochs": 15, "n_train": 200}, {"epochs": 12, "n_train": 200}]) == (
        "trained 15 epochs on 200 configurations and 12 epochs on 200 configurations")
    held = {"epochs": 15, "n_train": 200, "kept_epoch": 0, "held_out_ess_final": 0.9991}
    assert _training([held]) == "trained 15 epochs on 200 configurations (epoch 0 kept on 0.999 held-out ESS)"


def test_settings_validation():
    assert fh.FHSettings().resolved_t_max == 8 and fh.FHSettings.make(kind="log").resolved_t_max == 7
    for bad, msg in ((dict(lam=0.0), "lam must be finite and non-zero"),
                     (dict(t_min=0), "outside the lattice"),
                     (dict(t_max=9), "outside the lattice"),
                     (dict(kind="log", t_max=8), "outside the lattice"),
                     (dict(t_min=6, t_max=5), "outside the lattice"),
                     (dict(T=15), "even extents"),
                     (dict(n_sources=3), "must divide"),
                     (dict(beta=0.05, lam=-0.1), "must stay positive"),
                     (dict(symmetric=True, lam=-0.1), "lam > 0"),
                     (dict(fit_weights="full"), "fit_weights"),
                     (dict(kind="cosh_ratio"), "kind"),  # no lambda-derivative of that kind
                     (dict(optimizer="newton"), "optimizer 'newton'"),
                     (dict(degree=-2), "degree"),
                     (dict(n_configs=10), "n_configs must be >= 20"),
                     (dict(n_configs=20, n_chains=1), "tangent estimator: too few configurations .* --no-tangent"),
                     (dict(tangent_field="none"), "unknown tangent_field"),
                     # --theory su3 alone ran 4D SU(3) at the Schwinger model's beta = 2
                     (dict(theory="su3", T=8, L=4), r"beta = 2 is deep in the strong-coupling region .* --beta 5.8")):
        with pytest.raises(ValueError, match=msg):
            fh.FHSettings.make(**bad)


def test_settings_round_trip_through_toml(tmp_path):
    s = fh.FHSettings.make(theory="su3", T=8, L=4, beta=5.8, mass=0.5, t_min=1, t_max=3, symmetric=True, lam=0.05,
                           kind="log", optimizer="lbfgs", loops=("plaquette", "rectangle"))
    path = tmp_path / "run.toml"
    path.write_text(s.to_toml({"analysis": "feynman_hellmann"}))
    assert fh.FHSettings.from_toml(path) == s
    assert fh.FHSettings.from_dict(s.to_dict()) == s
    assert "method" not in path.read_text()  # the jackknife is fixed by the analysis
    path.write_text("[errors]\nmethod = 'gamma'\n")
    with pytest.raises(ValueError, match="method is fixed"):
        fh.FHSettings.from_toml(path)


def test_quenched_su3_settings_theories_and_gluon_momentum_fraction():
    """4D quenched SU(3): the base theory is pure gauge, the pion is measured with valence quarks, the lattice is
    T x L^3, and <x>_g = -(4/3) beta (dE/dlambda) / m_pi (positive for a negative energy shift)."""
    from corrflow.theories import WilsonFermionAction, WilsonGaugeAction

    s = fh.FHSettings.make(theory="su3", T=8, L=4, beta=5.8, mass=0.5, t_min=1, t_max=4)
    assert s.shape == (8, 4, 4, 4)
    base, valence = fh.theories(s)
    assert isinstance(base, WilsonGaugeAction) and base.group.name == "su3" and base.lam == 0.0
    assert isinstance(valence, WilsonFermionAction) and valence.mass == 0.5 and valence.gauge == base
    assert "quenched SU(3) 8x4x4x4" in fh.describe_theory(s)
    # the source is the gluonic T_44 / beta: O = (1/3) sum (spatial - temporal) Re tr P, dS/dlambda = O
    import jax

    from corrflow.hmc import hot_start

    u = hot_start(jax.random.PRNGKey(0), base)
    d = 1e-6
    o = base.source_operator(u)
    assert np.isfinite(o) and abs(o) > 1e-3  # (a wrongly shaped field once gave NaN == NaN here)
    np.testing.assert_allclose((base.replace(lam=d).action(u) - base.action(u)) / d, o, rtol=1e-6)
    x, e = fh.gluon_momentum_fraction(-0.03, 0.01, 0.9, 0.0, 6.0)
    assert x == pytest.approx(4 / 3 * 6.0 * 0.03 / 0.9) and e == pytest.approx(x / 3)
    for bad, msg in ((dict(L=3), "4 even extents"), (dict(theory="qed"), "theory 'qed'")):
        with pytest.raises(ValueError, match=msg):
            fh.FHSettings.make(**{**dict(theory="su3", T=8, L=4, t_min=1, t_max=4), **bad})


def test_effective_mass_curve_matches_direct_jackknife():
    """The pion-mass curve of the summary: the effective mass of the mean with leave-one-bin-out deviations."""
    rng = np.random.default_rng(2)
    c = cosh_corr(0.6) * (1 + 0.05 * rng.standard_normal((2, 200, T)))
    from corrflow.stats import effective_mass_curve

    cur = effective_mass_curve(c, "cosh", 10)
    np.testing.assert_allclose(cur.value, st.effective_mass(c.reshape(-1, T).mean(0), "cosh"), rtol=1e-12)
    assert cur.n_bins == {"base": 40} and np.all(cur.valid())
    p = st.plateau_fit(cur, 2, 7)
    assert abs(p.value - 0.6) / p.error < 4 and abs(p.value - 0.7) / p.error > 4


# ----------------------------------------------------------------------------------------------
# end to end on a tiny lattice
# ----------------------------------------------------------------------------------------------

# Compilation dominates (HMC with the exact determinant, training, flow, correlators): few epochs, and n_therm = 0
# saves compiling the thermalisation program (hot start; every estimator sees the same configurations, and 2D U(1)
# at beta = 2 equilibrates within ~10 of the 100 trajectories per chain).
TINY = dict(T=8, L=4, beta=2.0, mass=0.1, lam=0.1, n_configs=100, n_chains=2, n_therm=0, step_size=0.4,
            n_steps=3, epochs=3, n_train=32, batch_size=32, learning_rate=0.01, n_sources=1, t_min=1, t_max=4,
            measure_batch=50)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    d = tmp_path_factory.mktemp("fh")
    s = fh.FHSettings.make(store=str(d / "fh.zarr"), out=str(d / "out"), **TINY)
    return s, fh.run(s)


def test_end_to_end_record_store_and_figure(result, assert_vr_shape):
    import corrflow as cf

    s, rec = result
    for k in ("title", "summary", "tables", "settings", "variance_reduction", "costs", "analysis"):
        assert k in rec
    assert_vr_shape(rec["variance_reduction"])
    assert set(rec["variance_reduction"]) == {"definition", "dE_dlambda"}
    assert set(rec["variance_reduction"]["dE_dlambda"]) == {"flowed", "tangent"}
    assert set(rec["variance_reduction"]["dE_dlambda"]["flowed"]) >= {"vs_independent", "vs_direct",
                                                                    "cost_adjusted_vs_independent",
                                                                    "cost_adjusted_vs_direct"}
    tab = rec["tables"]["dE/dlambda by estimator"]  # (the caption spells out the plateau and lambda)
    assert [r[0] for r in tab["rows"]] == list(fh.ESTIMATORS) and tab["caption"].startswith("dE_pi/dlambda = ")
    assert all(len(r) == len(tab["columns"]) for r in tab["rows"])
    assert "path costs include the measurements" in rec["tables"]["costs"]["caption"]
    stored, figs = cf.open_store(s.io.store).read_analysis(fh.ANALYSIS_NAME)
    assert stored["estimates"] == rec["estimates"] and stored["variance_reduction"] == rec["variance_reduction"]
    assert figs[f"{fh.ANALYSIS_NAME}.png"][:8] == b"\x89PNG\r\n\x1a\n"
    out = Path(s.io.out)
    assert (out / f"{fh.ANALYSIS_NAME}.png").stat().st_size > 10_000
    md_text = (out / f"{fh.ANALYSIS_NAME}.md").read_text()
    assert f"{fh.ANALYSIS_NAME}.png" in md_text
    from corrflow.markdown import html_outside_code  # `<pi|O_t|pi>` would be raw HTML: escaped

    assert html_outside_code(md_text) == [] and "&lt;pi|O_t|pi&gt; - &lt;0|O_t|0&gt;" in md_text
    for k in ("flowed", "tangent", "independent", "direct", "connected"):
        assert rec["costs"]["paths"][k] > 0
    # one cost definition: each path pays for the correlators it measures
    steps, paths, meas = rec["costs"]["steps"], rec["costs"]["paths"], rec["costs"]["measurement"]
    assert paths["flowed"] == pytest.approx(steps["hmc_base"] + steps["train"] + steps["flow"] + meas["base"]
                                            + meas["flowed"], rel=1e-3)
    assert paths["connected"] == pytest.approx(steps["hmc_base"] + meas["base"], rel=1e-3)
    # the tangent path: base HMC + its terms (correlators included) + the fit; no flow, no weights
    fit_s = rec["info"]["tangent"]["fit_seconds"]
    assert paths["tangent"] == pytest.approx(steps["hmc_base"] + meas["tangent"] + fit_s, rel=1e-3)
    assert rec["info"]["bin_size"] >= 1 and min(rec["info"]["n_bins"]["flowed"].values()) >= 2


def test_end_to_end_estimators_agree_and_flow_beats_independent(result):
    _, rec = result
    est = rec["estimates"]
    for k in fh.ESTIMATORS:
        assert math.isfinite(est[k]["value"]) and est[k]["error"] > 0, k
    assert abs(rec["pulls"]["flowed-connected"]) < 4
    assert abs(rec["pulls"]["flowed-independent"]) < 4
    assert est["flowed"]["error"] < est["independent"]["error"]
    assert rec["variance_reduction"]["dE_dlambda"]["flowed"]["vs_independent"] > 1


def test_end_to_end_tangent_estimator(result):
    """The tangent-flow estimator on the base ensemble (plaquette field with the sea quarks' v.grad S by exact traces,
    cross-fitted): consistent with the connected, flowed and independent estimators (correlated pulls), and with
    far less variance than the connected estimator it improves on (measured 24x here)."""
    _, rec = result
    est, pulls = rec["estimates"], rec["pulls"]
    for other in ("connected", "flowed", "independent"):
        assert abs(pulls[f"tangent-{other}"]) < 4, other
    assert rec["variance_reduction"]["dE_dlambda"]["tangent"]["vs_connected"] > 5
    assert est["tangent"]["error"] < est["connected"]["error"]
    info = rec["info"]["tangent"]
    assert info["field"]["kind"] == "plaquette" and len(info["fits"]) == 2 and info["var_reduction_R"] > 3
    assert any(line.startswith("Tangent-flow estimator") for line in rec["summary"])


def test_run_file_and_stored_record_repeat_the_run(result, tmp_path):
    """The run file repeats the run from the command line (``--config`` plus an override of the plateau weights):
    nothing is regenerated or remeasured, the effective curves come back unchanged; the stored record re-renders."""
    import corrflow as cf

    s, rec = result
    run_file = Path(s.io.out) / f"{fh.ANALYSIS_NAME}.toml"
    assert fh.FHSettings.from_toml(run_file) == s
    store = cf.open_store(s.io.store)
    stored, _ = store.read_analysis(fh.ANALYSIS_NAME)
    assert fh.FHSettings.from_dict(stored["settings"]) == s
    assert fh.FEYNMAN_HELLMANN.render(stored)[:8] == b"\x89PNG\r\n\x1a\n"
    before = {n: store.commit(n)["committed"] for n in store.ensembles()}
    res = CliRunner().invoke(app, ["--config", str(run_file), "--fit-weights", "correlated", "--out",
                                   str(tmp_path / "o")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "cached" in res.output and "(reused)" in res.output and "tangent field terms: cached" in res.output
    assert "tangent derivatives: cached" in res.output
    # the headline reaches the terminal: dE/dlambda by estimator, pulls and variance reductions, then the notes
    flat = " ".join(res.output.split())
    for text in ("dE_pi/dlambda = <pi|O_t|pi> - <0|O_t|0> = ", "Pion mass (", "Pulls: flowed - connected",
                 "Variance reduction of the flowed estimator", "Tangent-flow estimator", "Weight ESS fraction"):
        assert text in flat, text
    assert {n: store.commit(n)["committed"] for n in store.ensembles()} == before
    again, _ = store.read_analysis(fh.ANALYSIS_NAME)
    assert fh.FHSettings.from_toml(tmp_path / "o" / f"{fh.ANALYSIS_NAME}.toml") == s.replace(
        fit_weights="correlated", out=str(tmp_path / "o"))
    assert again["effective"] == rec["effective"] and again["estimates"]["flowed"]["weights"] == "correlated"


def test_without_tangent_estimator(result, tmp_path):
    """``tangent = False``: the record has the four finite-shift and connected estimators only (everything else
    read from the store and the caches), with the same numbers."""
    s, rec = result
    off = fh.run(s.replace(tangent=False, out=str(tmp_path / "o"), bin_size=rec["info"]["bin_size"]), write=False)
    assert set(off["estimates"]) == {"flowed", "connected", "direct", "independent"}
    assert "tangent" not in off["costs"]["paths"] and off["info"]["tangent"] is None
    assert [r[0] for r in off["tables"]["dE/dlambda by estimator"]["rows"]] == ["flowed", "connected", "direct",
                                                                          "independent"]
    for k in off["estimates"]:
        assert off["estimates"][k]["value"] == rec["estimates"][k]["value"], k
    assert fh.render(off)[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_help_config_and_bad_input(tmp_path, capsys):
    runner = CliRunner()
    res = runner.invoke(app, ["--help"], env={"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    assert res.exit_code == 0, res.output
    for opt in ("--lam", "--t-min", "--t-max", "--store", "--symmetric", "--kind", "--n-configs", "--theory", "--T",
                "--L", "--chains", "--therm", "--lr", "--optimizer", "--degree", "--fit-weights", "--config",
                "--no-tangent", "--tangent-field"):
        assert opt in res.output, opt
    assert "--method" not in res.output  # the jackknife is fixed
    assert "data/feynman_hellmann.zarr" in res.output and "default" in res.output.lower()
    common = ["--store", str(tmp_path / "x.zarr"), "--out", str(tmp_path / "o")]
    res = runner.invoke(app, common + ["--lam", "0"])
    assert res.exit_code == 2 and "lam must be finite and non-zero" in res.output
    res = runner.invoke(app, common + ["--t-max", "12"])
    assert res.exit_code == 2 and "outside the lattice" in res.output
    res = runner.invoke(app, common + ["--T", "48", "--L", "48"])  # dense determinant ratios: refused before HMC
    assert res.exit_code == 2 and "V*Ns*Nc = 4608 > 2048" in " ".join(res.output.split()), res.output
    # --config is read and the command line overrides it: T = 8 from the run file, --t-max 5 from the command line
    cfg = tmp_path / "run.toml"
    cfg.write_text("T = 8\nt_min = 1\n[training]\nepochs = 2\n")
    res = runner.invoke(app, common + ["--config", str(cfg), "--t-max", "5"])
    assert res.exit_code == 2 and "T = 8 is defined for 1 <= t <= 4" in " ".join(res.output.split())
    # --one-sided (the old spelling) is the off switch of --symmetric, also under corrflow analyse
    from analysis.feynman_hellmann.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(common + ["--one-sided", "--lam", "0"])
    assert exc.value.code == 2 and "lam must be finite and non-zero" in capsys.readouterr().out
    assert not (tmp_path / "x.zarr").exists()  # rejected before any work
