"""The continuum-limit analysis (analysis/continuum_limit/, 2D U(1)): estimators on synthetic data, the exact
fixed-topology reference, and one small end-to-end run through the store (8 x 8, four betas, 2 x 400
configurations per ensemble, tiny flow training).  Statistical checks are pulls against exact values with
|pull| < 4; the fixed seeds are those of the default settings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from typer.testing import CliRunner

import corrflow as cf
from analysis.continuum_limit import (
    CONTINUUM_LIMIT,
    ContinuumSettings,
    exact_plaquette_sector,
    flowed_estimates,
    independent_estimates,
    make_quantity,
    run,
)
from corrflow.pipeline.analysis import app as analysis_app
from corrflow.stats import reweighted_mean

app = analysis_app(CONTINUUM_LIMIT)

# calibrated offline: over 30 independent base ensembles of this size, with flows of this quality (weight ESS
# 0.6-0.9, Pareto k-hat < 0.5), the pulls of the continuum value had mean +0.2 and standard deviation 1.1
SMALL = dict(L=8, betas=(5.0, 5.3, 5.6, 5.9), n_configs=500, n_chains=2, n_therm=100, epochs=6, n_train=200,
             order=2, bayes_warmup=100, bayes_samples=300)


# ---------------------------------------------------------------------------------------------
# exact reference and estimators (no HMC)
# ---------------------------------------------------------------------------------------------


def test_sector_plaquette_sum_rule():
    """sum_Q P(Q) <P>_Q = <P> (exact torus values), and the Q = 0 sector lies below the average at large beta."""
    for beta, shape, qmax in ((2.0, (6, 6), 7), (8.0, (12, 12), 5)):
        probs = cf.exact.u1_charge_distribution(beta, shape, qmax)
        assert probs[0] < 1e-10 and probs.sum() == pytest.approx(1.0, abs=1e-10)  # the sectors kept exhaust P(Q)
        total = sum(probs[qmax + q] * exact_plaquette_sector(beta, shape, q) for q in range(-qmax, qmax + 1))
        assert total == pytest.approx(cf.exact.u1_plaquette(beta, shape), abs=1e-9)
    q = make_quantity("plaquette")
    shift = q.reference(8.0, (12, 12), "fixed") - q.reference(8.0, (12, 12), "sampled")
    assert -5e-3 < shift < -2e-3  # beta (1 - <P>) is smaller in the sector Q = 0 (no charge to spread)
    with pytest.raises(ValueError, match="creutz-size 1"):
        make_quantity("string_tension", 2).reference(8.0, (12, 12), "fixed")


def _synthetic(rng, correlated: bool, R=2, n=2000):
    """Paired synthetic plaquettes: base P ~ 0.9 + noise (AR(1), rho = 0.5); 'flowed' copies close to the base
    (correlated) or independent; small random log weights."""
    def ar1(shape):
        e = rng.normal(size=shape)
        x = np.empty(shape)
        x[..., 0] = e[..., 0]
        for t in range(1, shape[-1]):  # short synthetic series
            x[..., t] = 0.5 * x[..., t - 1] + math.sqrt(1 - 0.25) * e[..., t]
        return x

    base = 0.9 + 0.01 * ar1((R, n))
    obs = [{"plaquette": base}]
    lws = [None]
    for k in range(1, 3):
        noise = 0.01 * ar1((R, n))
        p = base + 0.002 * k + (0.1 * noise if correlated else noise - (base - 0.9))
        obs.append({"plaquette": p})
        lws.append(0.2 * rng.normal(size=(R, n)))
    return obs, lws


def test_joint_jackknife_covariance():
    rng = np.random.default_rng(7)
    q = make_quantity("plaquette")
    betas = (2.0, 2.1, 2.2)
    obs, lws = _synthetic(rng, correlated=True)
    est = flowed_estimates(q, betas, obs, lws, volume=64, bin_size=20)
    assert est.cov.shape == (3, 3) and est.replicas.shape == (2 * 2000 // 20, 3) and est.n_bins == 200
    np.testing.assert_allclose(est.cov, est.cov.T)
    # strongly correlated flowed estimates: positive correlations across beta
    off = est.correlation[np.triu_indices(3, 1)]
    assert np.all(off > 0.9), est.correlation
    # the diagonal is exactly the binned jackknife of each reweighted ratio on its own (same bins)
    for k in (1, 2):
        rw = reweighted_mean(obs[k]["plaquette"], lws[k], method="jackknife", bin_size=20)
        assert est.values[k] == pytest.approx(betas[k] * (1 - rw.value), rel=1e-12)
        assert est.errors[k] == pytest.approx(betas[k] * rw.error, rel=1e-10)
    # and it agrees with the Gamma method within 20% (AR(1) with tau_int = 1.5; bins of 20)
    np.testing.assert_allclose(est.errors, est.gamma_errors, rtol=0.2)
    assert est.weight_ess[0] == 1.0 and np.all(est.weight_ess[1:] > 0.9)
    # negative control: independent 'flowed' data are uncorrelated with the base (|corr| < 4 / sqrt(B))
    obs_i, lws_i = _synthetic(rng, correlated=False)
    ind = flowed_estimates(q, betas, obs_i, lws_i, volume=64, bin_size=20)
    assert abs(ind.correlation[0, 1]) < 4 / math.sqrt(ind.n_bins) and abs(ind.correlation[0, 2]) < 4 / math.sqrt(ind.n_bins)
    # independent estimator: Gamma-method errors; zero weights (log w = -inf) drop configurations exactly
    ie = independent_estimates(q, betas, obs, volume=64)
    assert ie.values[0] == pytest.approx(est.values[0], rel=1e-12)
    drop = np.zeros((2, 2000))
    drop[:, ::2] = -np.inf
    half = independent_estimates(q, betas[:1], obs[:1], volume=64, log_weights=[drop])
    assert half.values[0] == pytest.approx(betas[0] * (1 - obs[0]["plaquette"][:, 1::2].mean()), rel=1e-12)


def test_tail_windowing_reaches_the_estimators():
    """``--tau-exp`` (ErrorSettings.tau_exp): the Gamma method's exponential tail reaches both estimators -- the same
    values, the Gamma errors and tau_int of corrflow.stats with that windowing, and automatic bins that follow the
    larger tau_int."""
    from corrflow.pipeline import ErrorSettings
    from corrflow.stats import Windowing, gamma_method

    rng = np.random.default_rng(3)
    q = make_quantity("plaquette")
    betas = (2.0, 2.1, 2.2)
    obs, lws = _synthetic(rng, correlated=True)
    tail = ErrorSettings(tau_exp=40.0).windowing
    assert tail == Windowing(tau_exp=40.0) and ErrorSettings().windowing == Windowing()
    wolff, slow = (flowed_estimates(q, betas, obs, lws, volume=64, S=S) for S in (1.5, tail))
    np.testing.assert_array_equal(wolff.values, slow.values)
    assert np.all(slow.tau_int >= wolff.tau_int) and slow.bin_size >= wolff.bin_size
    ie = independent_estimates(q, betas[:1], obs[:1], volume=64, S=tail)
    assert ie.errors[0] == pytest.approx(betas[0] * gamma_method(obs[0]["plaquette"], S=tail).error, rel=1e-6)
    with pytest.raises(ValueError, match="tau_exp must be"):
        ErrorSettings(tau_exp=-1.0)


def test_estimator_bad_input():
    q = make_quantity("plaquette")
    obs = [{"plaquette": np.full((2, 100), 0.9)}, {"plaquette": np.full((2, 90), 0.9)}]
    with pytest.raises(ValueError, match="paired"):
        flowed_estimates(q, (2.0, 2.2), obs, [None, np.zeros((2, 90))], volume=64)
    with pytest.raises(ValueError, match="same length"):
        flowed_estimates(q, (2.0, 2.2, 2.4), obs, [None, None], volume=64)
    with pytest.raises(ValueError, match="not measured"):
        flowed_estimates(make_quantity("string_tension", 2), (2.0,), [{"plaquette": np.ones((1, 50))}], [None], 64)
    with pytest.raises(ValueError, match="unknown quantity"):
        make_quantity("energy")
    with pytest.raises(ValueError, match="at least 2 betas"):
        ContinuumSettings(betas=(8.0,))
    with pytest.raises(ValueError, match="topology sampled"):
        ContinuumSettings(quantity="topological_susceptibility")
    with pytest.raises(ValueError, match="order 4 needs at least 5 betas"):
        ContinuumSettings(betas=(8.0, 9.0), order=4)
    with pytest.raises(ValueError, match="order must be >= 0"):
        ContinuumSettings(betas=(8.0, 9.0), order=-1)
    with pytest.raises(ValueError, match="creutz_size must be 1 or 2, got 5"):  # (accepted for the plaquette before)
        ContinuumSettings(creutz_size=5)
    for bad in (0.0, -1.0, float("nan")):  # (checked before anything is generated; it used to fail after the fits)
        with pytest.raises(ValueError, match="prior_scale must be a finite width > 0"):
            ContinuumSettings(betas=(8.0, 9.0, 10.0), prior_scale=bad)


# ---------------------------------------------------------------------------------------------
# end to end through the store
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_run_console(tmp_path_factory):
    """The small run with its console output (a 200-column rich console into a string)."""
    import io

    from rich.console import Console

    d = tmp_path_factory.mktemp("cl")
    settings = ContinuumSettings.make(store=str(d / "cl.zarr"), out=str(d / "out"), **SMALL)
    buf = io.StringIO()
    rec = run(settings, console=Console(file=buf, width=200, color_system=None))
    return settings, rec, buf.getvalue()


@pytest.fixture(scope="module")
def small_run(small_run_console):
    return small_run_console[:2]


def test_per_beta_estimates_agree_with_exact(small_run):
    settings, rec = small_run
    r = rec["results"]
    assert r["betas"] == list(settings.betas) and r["topology"] == "fixed"
    # flowed-reweighting and independent estimates against the exact values (Q = 0 torus, corrected to
    # infinite volume by the exact shift): |pull| < 4 at every beta
    assert np.all(np.abs(r["flowed"]["pulls_per_beta"]) < 4), r["flowed"]["pulls_per_beta"]
    assert np.all(np.abs(r["independent"]["pulls_per_beta"]) < 4), r["independent"]["pulls_per_beta"]
    # directly against the exact Q = 0 torus values (undoing the shift)
    vals = np.array(r["flowed"]["values"]) + np.array(r["finite_volume_shift"])
    pulls = (vals - np.array(r["exact_reference"])) / np.array(r["flowed"]["errors"])
    assert np.all(np.abs(pulls) < 4), pulls
    # weights are usable and the flowed estimates are positively correlated across beta
    assert min(r["flowed"]["weight_ess"][1:]) > 0.3 and max(r["flowed"]["pareto_k"][1:]) < 0.7
    cov = np.array(r["flowed"]["cov"])
    corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    assert np.all(corr[np.triu_indices(len(settings.betas), 1)] > 0.3), corr


def test_correlated_continuum_error_smaller(small_run, assert_vr_shape):
    _, rec = small_run
    r = rec["results"]
    assert r["flowed"]["continuum_error"] < r["independent"]["continuum_error"]
    assert_vr_shape(rec["variance_reduction"])
    vr = rec["variance_reduction"]["plaquette"]["flowed"]
    assert vr["vs_independent"] > 1.5 and math.isfinite(vr["cost_adjusted_vs_independent"])
    # both continuum values against the exact 1/2, corrected for the (exactly known) truncation bias of the fit
    assert abs(r["flowed"]["pull_vs_exact_fit"]) < 4 and abs(r["independent"]["pull_vs_exact_fit"]) < 4
    assert abs(r["flowed"]["pull"]) < 4
    # the Bayesian fit (weak priors) agrees with the least-squares one within a third of its error
    b = r["flowed"]["bayes"]
    assert abs(b["mean"][0] - r["flowed"]["continuum"]) < 0.35 * r["flowed"]["continuum_error"]
    assert b["divergences"] == 0


def test_record_in_store_and_figure(small_run, assert_vr_shape):
    from pathlib import Path

    from corrflow.store import open_store

    settings, rec = small_run
    stored, figs = open_store(settings.io.store).read_analysis("continuum_limit")
    assert stored["title"] == rec["title"] and stored["summary"] == rec["summary"]
    for key in ("title", "summary", "tables", "settings", "variance_reduction", "costs"):
        assert key in stored
    assert_vr_shape(stored["variance_reduction"])
    for key in ("hmc_seconds", "train_seconds", "flow_seconds", "flowed_path_seconds", "independent_path_seconds"):
        assert stored["costs"][key] > 0
    # tables under short names that stay from run to run, headed by their captions
    assert list(stored["tables"])[:3] == ["per-beta estimates", "continuum fits", "correlation matrix"]
    assert stored["tables"]["arviz summary (flowed)"]["caption"] == "ArviZ summary of the Bayesian fit (flowed)"
    assert figs["continuum_limit.png"][:8] == b"\x89PNG\r\n\x1a\n"
    out = Path(settings.io.out)
    assert (out / "continuum_limit.png").stat().st_size > 10_000
    assert "](continuum_limit.png)" in (out / "continuum_limit.md").read_text()
    # the run file repeats the run, and the stored record re-renders the figure on its own
    assert ContinuumSettings.from_toml(out / "continuum_limit.toml") == settings
    assert ContinuumSettings.from_dict(stored["settings"]) == settings
    assert CONTINUUM_LIMIT.render(stored)[:8] == b"\x89PNG\r\n\x1a\n"


def test_terminal_shows_the_continuum_values(small_run_console):
    """The run ends with its headline -- both continuum values, the pulls against the exact value, the variance
    reduction -- then the notes; only the notes used to be printed.  The per-beta table leaves out tau_int(Q) where
    Q is frozen in every ensemble (a column of nan)."""
    from corrflow.stats import format_value_error

    settings, rec, text = small_run_console
    r = rec["results"]
    flat = " ".join(text.split())
    fmt = {x: format_value_error(r[x]["continuum"], r[x]["continuum_error"], 2) for x in ("flowed", "independent")}
    assert f"continuum value {fmt['flowed']}," in flat, fmt
    assert f"- independent HMC ensembles (diagonal covariance): {fmt['independent']}," in flat, fmt
    assert "exact continuum value 1/2 = 0.5: pulls" in flat and "variance reduction of the continuum value" in flat
    assert "- autocorrelation:" in flat and "**" not in flat
    assert flat.index("variance reduction of the continuum value") < flat.index("- autocorrelation:")
    assert flat.rstrip().split(" ")[-4] == "done"
    tq = r["tau_int_topological_charge"]
    columns = next(iter(rec["tables"].values()))["columns"]
    assert ("tau_int(Q)" in columns) == any(math.isfinite(x) for x in tq if x is not None)
    assert " nan " not in text
    # the flowed and independent columns are told apart; at the base beta both are one ensemble under two error
    # methods, so no variance reduction is quoted there (it read 0.82)
    assert len(set(columns)) == len(columns) and "pull (flowed)" in columns and "tau_int (indep.)" in columns
    rows = next(iter(rec["tables"].values()))["rows"]
    vr = columns.index("var. red.")
    assert rows[0][vr] == "" and all(float(r[vr]) > 0 for r in rows[1:]), rows


def test_markdown_has_no_raw_html(small_run):
    """`<P>` in `beta (1 - <P>) -> 1/2` is an HTML tag to a Markdown renderer (the text vanished): escaped."""
    from pathlib import Path

    from corrflow.markdown import html_outside_code

    settings, _ = small_run
    md = (Path(settings.io.out) / "continuum_limit.md").read_text()
    assert "beta (1 - &lt;P&gt;) -> 1/2" in md
    assert html_outside_code(md) == []


def test_rerun_reuses_the_store(small_run):
    """Nothing is regenerated or retrained; the same estimates come back (fits without the Bayesian part)."""
    import dataclasses

    settings, rec = small_run
    from corrflow.store import open_store

    store = open_store(settings.io.store)
    before = {n: store.commit(n)["committed"] for n in store.ensembles()}
    again = run(dataclasses.replace(settings, bayes=False), write=False)
    assert {n: store.commit(n)["committed"] for n in store.ensembles()} == before  # nothing generated again
    assert again["results"]["flowed"]["values"] == rec["results"]["flowed"]["values"]
    assert again["results"]["independent"]["continuum"] == rec["results"]["independent"]["continuum"]
    assert again["costs"]["train_seconds"] == pytest.approx(rec["costs"]["train_seconds"])  # from the ledger


def test_cli_help_and_bad_input(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    for opt in ("--store", "--betas", "--L", "--n-configs", "--seed", "--epochs", "--quantity", "--order", "--out",
                "--topology", "--fv-correct", "--bayes-samples", "--svd-cut"):
        assert opt in text, opt
    assert "data/continuum_limit.zarr" in text
    res = runner.invoke(app, ["--betas", "8", "--store", str(tmp_path / "x.zarr")])
    assert res.exit_code == 2 and "at least 2 betas" in " ".join(res.output.split())
    # an odd L does not fit the residual flows' plaquette layers: refused before anything is generated (it used to
    # fail after the base ensemble and the training chain were in the store)
    res = runner.invoke(app, ["--L", "3", "--flow-kind", "residual", "--store", str(tmp_path / "x.zarr"), "--out",
                              str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert "the flows do not fit the 3x3 lattice: plaquette layers need even extents" in " ".join(res.output.split())
    assert not (tmp_path / "x.zarr").exists() and not (tmp_path / "o").exists()


def test_goodness_of_fit_text_for_an_interpolating_fit():
    """Three betas and --order 2 printed "chi2/dof = 0.00/0, p = nan" beside the continuum value; an interpolating
    fit now says that nothing tests it, and how to get a chi^2 test."""
    from analysis.continuum_limit.common import goodness_of_fit

    assert goodness_of_fit(1.234, 2, 0.54) == "chi2/dof = 1.23/2, p = 0.54"
    assert goodness_of_fit(1.234, 2) == "chi2/dof = 1.23/2"
    text = goodness_of_fit(0.0, 0, float("nan"))
    assert "no degrees of freedom" in text and "lower --order" in text and "nan" not in text


def test_off_sector_counts_name_every_ensemble():
    """A base ensemble that left Q = 0 crashed the record's summary line (IndexError: its key had no beta), after every
    step had run: nothing was written."""
    from analysis.continuum_limit.u1_record import off_sector_text

    text = off_sector_text({"base 2": 3, "flowed 2.2": 0, "independent 2.2": 1})
    assert text == "3 in the base ensemble at beta 2, 1 in the independent ensemble at beta 2.2"
    assert off_sector_text({"base": 2}) == "2 in the base ensemble"  # a key without a beta is named, not a crash


def test_capped_jackknife_bins_are_said():
    """Short chains cap the bin size below the ceil(bin_tau_factor x tau_int) the help promises (so that enough bins
    remain for the covariance); the record said "50 bins of 2" at tau_int 1.64 without a word (a 4D audit)."""
    from analysis.continuum_limit.estimators import CorrelatedEstimates, short_bins_note

    est = CorrelatedEstimates(*([None] * len(CorrelatedEstimates._fields)))._replace(
        tau_int=np.array([0.6, 1.64]), bin_size=2, n_bins=50)
    assert "shorter than 2 tau_int = 3.3" in short_bins_note(est) and "underestimated" in short_bins_note(est)
    assert short_bins_note(est._replace(bin_size=33)) == ""
