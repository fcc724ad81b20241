"""Quenched (valence) quarks in the tangent estimator, and reverse-mode derivatives of solver-based observables.

On pure-gauge ensembles ``pion@T`` and ``condensate`` come from valence Wilson quarks (``--valence-mass``); the
quenched measure has no determinant, so ``∂_α S`` and ``R_v`` stay gluonic and only ``v·∇O`` goes through the
solves -- by reverse mode, one adjoint solve per correlator slice instead of one tangent solve per basis field.
"""

import json

import jax
import numpy as np
import pytest
from typer.testing import CliRunner

from corrflow import make_theory
from corrflow import tangent as tg
from corrflow.cli import app
from corrflow.observables.fermions import valence_quarks
from corrflow.tangent.core import REVERSE_SPLIT
from corrflow.tangent.fermions import condensate_noise

ENSEMBLE = "u1_8x8_beta2"  # as in conftest.py
SCHWINGER = "schwinger_4x4_beta2_m0.3"
runner = CliRunner()


def _config(shape=(4, 4), beta=2.0, seed=0):
    th = make_theory("u1", shape, beta=beta)
    u = th.group.random(jax.random.PRNGKey(seed), tuple(shape) + (len(shape),))
    return th, u


@pytest.mark.parametrize("names, noise, sources", [(("plaquette", "pion@1", "pion@2"), False, 1),
                                                   (("pion@1", "condensate", "wilson_1x2"), True, 1),
                                                   (("pion@0", "pion@1", "pion@3"), False, 2)])
def test_reverse_mode_equals_forward_mode(names, noise, sources):
    """The (K, n) contraction by adjoint solves equals K forward-mode derivatives to the solver's rounding (also for
    the correlator averaged over two sources, which equals pion_correlator's)."""
    th, u = _config()
    q = valence_quarks(th, mass=0.4)
    eta = condensate_noise(q, jax.random.PRNGKey(3), tg.FermionTraces("stochastic", 2)) if noise else None
    vec = tg.observables_vector(names, th.group, th.shape, q, eta, pion_sources=sources)
    if sources > 1:
        from corrflow.observables.fermions import pion_correlator

        t = [int(n.split("@")[1]) for n in names]
        np.testing.assert_allclose(np.asarray(vec(u)), np.asarray(pion_correlator(q, u, sources))[t], rtol=1e-8)
        assert not np.allclose(np.asarray(vec(u)), np.asarray(pion_correlator(q, u, 1))[t], rtol=1e-3)
    fwd_idx, _, rev_idx, _ = getattr(vec, REVERSE_SPLIT)
    assert set(rev_idx) == {i for i, n in enumerate(names) if n.startswith("pion") or n == "condensate"}
    assert set(fwd_idx) | set(rev_idx) == set(range(len(names)))
    vs = jax.random.normal(jax.random.PRNGKey(1), (6,) + tg.coords_shape(th))
    got = np.asarray(jax.jit(lambda u, vs: tg.directional_derivatives(vec, u, vs, th.group))(u, vs))
    ref = np.asarray(jax.vmap(lambda v: tg.directional_derivative(vec, u, v, th.group))(vs))
    assert got.shape == (6, len(names))
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-10 * np.abs(ref).max())
    # fewer directions than reverse outputs: plain forward mode, the same numbers
    few = np.asarray(tg.directional_derivatives(vec, u, vs[:1], th.group))
    np.testing.assert_allclose(few, ref[:1], rtol=1e-7, atol=1e-10 * np.abs(ref).max())
    # the dense condensate (Gauss-Jordan) stays forward-mode
    dense = tg.observables_vector(("pion@1", "condensate"), th.group, th.shape, q)
    assert getattr(dense, REVERSE_SPLIT, None) is None


@pytest.fixture(scope="module")
def valence_terms(u1_theory, u1_configs):
    """Plaquette-field terms of d/dbeta with valence quarks of mass 0.3 on every 8th configuration of the shared
    2D U(1) ensemble (2 x 400)."""
    cf = u1_configs[:, ::8]
    return tg.compute_terms(tg.PlaquetteField(3), u1_theory, "beta", ("plaquette", "pion@1", "pion@2"), cf,
                            jax.random.PRNGKey(0), batch=200, valence_mass=0.3)


def test_quenched_tangent_agrees_with_connected_and_needs_its_flow_term(valence_terms):
    """Tangent and connected estimators of d<C(t)>/dbeta on the same quenched configurations agree (both unbiased;
    |pull| < 4 with the smaller error); the tangent one is much more precise (the connected term carries the
    volume-extensive dS/dbeta); and dropping the v.grad C term (negative control) makes it disagree."""
    terms = valence_terms
    assert terms.traces == {"valence_mass": 0.3} and terms.do is None
    fits, coef = tg.fit_coefficients(terms, "field", n_folds=2, held_out=0.25)
    res = tg.estimate(terms, coef, fits)
    for name in ("plaquette", "pion@1", "pion@2", "m_eff@1"):
        t, c = res.estimates[name]["tangent"], res.estimates[name]["connected"]
        assert abs(t.value - c.value) < 4 * max(t.error, c.error), (name, t, c)
        d = res.agreement[name]  # the same with the error of the difference (m_eff@1: a derived row)
        assert d.value == pytest.approx(t.value - c.value, rel=1e-9, abs=1e-14) and abs(d.pull(0.0)) < 4, (name, d)
    assert res.reduction["pion@1"] > 3 and res.reduction["pion@2"] > 3
    # a larger beta (smoother links): a larger correlator at short distance and a lighter pion
    assert res.estimates["pion@1"]["tangent"].value > 4 * res.estimates["pion@1"]["tangent"].error
    assert res.estimates["m_eff@1"]["tangent"].value < -4 * res.estimates["m_eff@1"]["tangent"].error
    blind = tg.estimate(type(terms)(**{**terms.__dict__, "b": np.zeros_like(terms.b)}), coef, fits)
    t, c = blind.estimates["pion@1"]["tangent"], res.estimates["pion@1"]["connected"]
    assert abs(t.value - c.value) > 5 * t.error, "without v.grad C the tangent estimator must be biased"
    for name in ("pion@1", "m_eff@1"):  # ... and the paired check flags it, for the derived row too
        assert abs(blind.agreement[name].pull(0.0)) > 5, (name, blind.agreement[name])


def test_valence_mass_from_the_cli(u1_store, tmp_path):
    res = runner.invoke(app, ["derivative", "--store", str(u1_store), ENSEMBLE, "--obs", "pion@1,pion@2",
                              "--valence-mass", "0.3", "--thin", "16", "--harmonics", "2", "--json",
                              "--out", str(tmp_path / "v")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["valence_mass"] == 0.3 and "traces" not in out
    assert set(out["observables"]) == {"pion@1", "pion@2", "m_eff@1"}
    # at equal cost the connected estimator is charged the correlators too (measured alone, cheaper than the terms)
    c = out["cost_per_configuration"]
    assert 0 < c["observables_s"] < c["terms_s"]
    g, t = c["generation_s"], c["terms_s"] + c["fit_s"]
    for o, per in out["variance_reduction"].items():
        if o == "definition":
            continue
        tangent = per["tangent"]
        assert tangent["cost_adjusted_vs_connected"] == pytest.approx(
            tangent["vs_connected"] * (g + c["observables_s"]) / (g + t))
    table = runner.invoke(app, ["derivative", "--store", str(u1_store), ENSEMBLE, "--obs", "pion@1,pion@2",
                                "--valence-mass", "0.3", "--thin", "16", "--harmonics", "2",
                                "--out", str(tmp_path / "v")])
    text = " ".join(table.output.split())
    assert table.exit_code == 0 and "valence quarks m = 0.3 (quenched)" in text
    assert "paid by the connected estimator too" in text and "(two passes: the field" in text


@pytest.mark.parametrize("store, ensemble, extra, message", [
    ("u1", ENSEMBLE, ["--obs", "pion@1"], "or valence quarks on a pure-gauge one (--valence-mass)"),
    ("u1", ENSEMBLE, ["--obs", "pion@1", "--valence-mass", "-2.5"], "gives m + d <= 0"),
    ("schwinger", SCHWINGER, ["--obs", "pion@1", "--valence-mass", "0.3"], "--valence-mass is for pure-gauge"),
    ("u1", ENSEMBLE, ["--obs", "pion@1", "--valence-mass", "0.3", "--sources", "3"],
     "must be >= 1 and divide the time"),
    ("u1", ENSEMBLE, ["--obs", "pion@1,plaquete", "--valence-mass", "0.3"],
     "unknown observable 'plaquete'; allowed: plaquette,"),  # ... and, with quarks, the fermionic ones:
    ("u1", ENSEMBLE, ["--obs", "plaquete", "--valence-mass", "0.3"], "condensate, pion@T (pion correlator"),
])
def test_valence_user_errors(u1_store, tmp_path, store, ensemble, extra, message, request):
    path = u1_store if store == "u1" else request.getfixturevalue("schwinger_store")
    res = runner.invoke(app, ["derivative", "--store", str(path), ensemble, "--out", str(tmp_path / "ck"), *extra])
    assert res.exit_code == 2
    lines = [x for x in res.output.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and message in " ".join(lines[0].split()) and "Traceback" not in res.output, res.output
    assert not (tmp_path / "ck").exists()


def test_two_pass_evaluation_equals_the_full_terms(u1_theory, u1_configs, valence_terms):
    """The two-pass evaluation (field terms -> fit -> v.grad O along the fitted field only: one solve per source
    instead of one adjoint solve per correlator slice) reproduces the full terms: the same dS, a and O (same keys),
    v.grad O = sum_k coef_k b_k to the solver's rounding, and hence the same estimates; `derivative` takes it by
    default for pion correlators."""
    terms, cf = valence_terms, u1_configs[:, ::8]
    fld, key, names = tg.PlaquetteField(3), jax.random.PRNGKey(0), ("plaquette", "pion@1", "pion@2")
    ds, a = tg.field_terms(fld, u1_theory, "beta", cf, key, batch=200, valence_mass=0.3)
    np.testing.assert_array_equal(ds, terms.ds)
    np.testing.assert_array_equal(a, terms.a)
    fits, coef = tg.cross_fit(a, ds)
    o, dvo, do = tg.contracted_derivatives(fld, u1_theory, "beta", names, cf, key, coef, batch=200, valence_mass=0.3)
    np.testing.assert_allclose(o, terms.o, rtol=1e-12)  # another program than the full terms': equal to rounding
    assert not do.any()
    ref = np.einsum("...ik,...k->...i", terms.b, coef)
    np.testing.assert_allclose(dvo, ref, rtol=1e-7, atol=1e-9 * np.abs(ref).max())
    full = tg.estimate(terms, coef, fits)
    assert tg.contraction_pays(names, fld) and not tg.contraction_pays(("plaquette", "wilson_2x2"), fld)
    two = tg.derivative(u1_theory, cf, "beta", names, fld, key, batch=200, valence_mass=0.3)
    assert np.array_equal(two.coef, coef) and len(two.fits) == 2
    for name in (*names, "m_eff@1"):
        for est in ("tangent", "connected"):
            assert two.estimates[name][est].value == pytest.approx(full.estimates[name][est].value, rel=1e-8)
            assert two.estimates[name][est].error == pytest.approx(full.estimates[name][est].error, rel=1e-6)
    with pytest.raises(ValueError, match="coefficients must have shape"):
        tg.contracted_derivatives(fld, u1_theory, "beta", names, cf, key, coef[..., :2], valence_mass=0.3)


def test_two_pass_evaluation_with_sea_quarks(schwinger_store):
    """Dynamical quarks, mass derivative with stochastic traces: the field pass gives the full terms' dS_eff/dm and a
    (trace noise from the same keys), the contracted pass their O and explicit dO/dm, and v.grad O along the field."""
    from corrflow import open_store
    from corrflow.pipeline.tangent import load_all_configs

    st = open_store(schwinger_store, "r")
    cf = load_all_configs(st, SCHWINGER)[:, :24]
    th = make_theory("schwinger", (4, 4), beta=2.0, mass=0.3)
    fld, key, tr = tg.PlaquetteField(2), jax.random.PRNGKey(5), tg.FermionTraces("stochastic", 2)
    names = ("plaquette", "condensate", "pion@1")
    full = tg.compute_terms(fld, th, "mass", names, cf, key, batch=16, traces=tr)
    ds, a = tg.field_terms(fld, th, "mass", cf, key, batch=16, traces=tr)
    np.testing.assert_allclose(ds, full.ds, rtol=1e-11)  # the CG solves of two programs: rounding
    np.testing.assert_allclose(a, full.a, rtol=1e-10, atol=1e-12 * np.abs(full.a).max())
    coef = np.random.default_rng(0).normal(size=a.shape)
    o, dvo, do = tg.contracted_derivatives(fld, th, "mass", names, cf, key, coef, batch=16, traces=tr)
    np.testing.assert_allclose(o, full.o, rtol=1e-12)
    np.testing.assert_allclose(do, full.do, rtol=1e-9, atol=1e-12)
    ref = np.einsum("...ik,...k->...i", full.b, coef)
    np.testing.assert_allclose(dvo, ref, rtol=1e-7, atol=1e-9 * np.abs(ref).max())


def test_two_pass_derivative_from_the_store_resumes_and_matches_one_pass(u1_store, tmp_path):
    """`corrflow derivative` with pion correlators takes the two passes by default: the same estimates as the one-pass
    run (--no-contract), both passes checkpointed; interrupted in the second pass it resumes to identical numbers, and
    a repeated run computes nothing."""
    from corrflow import open_store
    from corrflow.pipeline.tangent import derivative_from_store

    class Stop(KeyboardInterrupt):
        pass

    def run(out, contract=None, calls=None, stop=None):
        def progress(done, total):
            if calls is not None:
                calls.append((done, total))
            if stop is not None and stop(calls):
                raise Stop
        return derivative_from_store(open_store(u1_store, "r"), u1_store, ENSEMBLE, "beta", ["pion@1", "pion@2"],
                                     batch=100, out=out, thin=16, valence_mass=0.3, progress=progress,
                                     contract=contract, field_options={"harmonics": 2})

    def values(res):
        return {o: {k: (s.value, s.error) for k, s in est.items()} for o, est in res.result.estimates.items()}

    two = run(tmp_path / "two")
    one = run(tmp_path / "one", contract=False)
    assert (tmp_path / "two" / "terms-field").is_dir() and (tmp_path / "two" / "terms-contracted").is_dir()
    assert not (tmp_path / "two" / "terms").exists() and (tmp_path / "one" / "terms").is_dir()
    for o, est in values(one).items():
        for k, (v, e) in est.items():
            assert values(two)[o][k] == (pytest.approx(v, rel=1e-8), pytest.approx(e, rel=1e-6)), (o, k)
    assert two.cost["terms_s"] > 0 and two.result.coef.shape == one.result.coef.shape
    assert two.as_dict()["terms_passes"] == 2 and one.as_dict()["terms_passes"] == 1
    n = two.n_chains * two.n_traj
    calls = []
    with pytest.raises(Stop):  # the field pass completes, the second pass stops after its second batch
        run(tmp_path / "ck", calls=calls, stop=lambda c: c.count((n, n)) == 1 and c[-1] == (200, n))
    calls = []
    resumed = run(tmp_path / "ck", calls=calls)
    assert calls[0] == (n, n) and calls[1] == (200, n) and values(resumed) == values(two)
    calls = []
    again = run(tmp_path / "ck", calls=calls)
    assert again.reused and calls == [(n, n), (n, n)] and values(again) == values(two)
