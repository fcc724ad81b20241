"""Unbiasedness of T_v against the exact 2D U(1) torus derivatives (pulls with Gamma-method errors), agreement
with the connected estimator, variance reduction, and negative controls.  Fixed seeds; |pull| < 4."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from corrflow import lattice
from corrflow import tangent as tg

OBS = ("plaquette", "wilson_2x2")  # as in conftest.py
SHAPE = (8, 8)

PULL = 4.0


def _diff_pull(a, b):
    """Pull of the difference of two estimates from the same samples, with the larger error as a conservative
    bound (their correlation is unknown here)."""
    return (a.value - b.value) / max(a.error, b.error)


@pytest.fixture(scope="module")
def fitted(plaquette_terms):
    fits, coef = tg.cross_fit(plaquette_terms.a, plaquette_terms.ds, n_folds=2)
    return fits, coef


def test_plaquette_field_unbiased_and_reduces_variance(plaquette_terms, fitted, exact_u1):
    fits, coef = fitted
    res = tg.estimate(plaquette_terms, coef, fits)
    for name in OBS:
        tan, con = res.estimates[name]["tangent"], res.estimates[name]["connected"]
        assert abs(tan.pull(exact_u1[name])) < PULL, f"{name}: tangent {tan!r} vs exact {exact_u1[name]:.6f}"
        assert abs(con.pull(exact_u1[name])) < PULL, f"{name}: connected {con!r} vs exact {exact_u1[name]:.6f}"
        assert abs(_diff_pull(tan, con)) < PULL
        # the paired difference (error of tangent - connected, their correlation included) agrees with zero, and its
        # error is that of the control variates alone: Var[T_0 - T_v] = Var[T_0] - Var[T_v] for a least-squares field
        agree = res.agreement[name]
        assert agree.value == pytest.approx(tan.value - con.value, rel=1e-12, abs=1e-15)
        assert abs(agree.pull(0.0)) < PULL
        assert agree.error == pytest.approx(np.sqrt(con.error**2 - tan.error**2), rel=0.1)
        # the fitted field must actually help (~30x measured at 8x8; a broken fit gives ~1)
        assert res.reduction[name] > 8, f"{name}: variance reduction only {res.reduction[name]:.2f}"
    for f in fits:
        assert f.reduction > 10 and not f.regularised


@pytest.mark.parametrize("coef", [np.zeros(6), np.array([2.0, -1.0, 0.5, 0.3, 0.0, 0.0]),
                                  np.array([-0.7, 0.3, -0.1, 0.0, 0.0, 0.0])])
def test_any_fixed_field_is_unbiased(plaquette_terms, exact_u1, coef):
    """E[T_v] = d<O>/dbeta for every v: zero, a deliberately bad field (variance *increased*) and a fixed good one."""
    res = tg.estimate(plaquette_terms, coef)
    for name in OBS:
        tan = res.estimates[name]["tangent"]
        assert abs(tan.pull(exact_u1[name])) < PULL, f"{name} with c={coef}: {tan!r} vs {exact_u1[name]:.6f}"
    if coef[0] == 2.0:
        assert res.reduction["wilson_2x2"] < 0.5  # the bad field really is bad


def test_zero_field_is_the_connected_estimator(plaquette_terms):
    res = tg.estimate(plaquette_terms, np.zeros(6))
    for name in OBS:
        tan, con = res.estimates[name]["tangent"], res.estimates[name]["connected"]
        assert tan.value == pytest.approx(con.value, rel=1e-12) and tan.error == pytest.approx(con.error, rel=1e-12)
    # and the connected estimator is minus the connected correlator of O and dS/dbeta
    o, ds = plaquette_terms.o[..., 0], plaquette_terms.ds
    assert res.estimates["plaquette"]["connected"].value == pytest.approx(
        -(np.mean(o * ds) - o.mean() * ds.mean()), rel=1e-10)


def test_the_two_variance_reductions_agree_and_cannot_be_swapped():
    """corrflow.stats.variance_reduction(improved, reference) and corrflow.tangent's (reference first) gave inverse
    numbers for the same positional call; the tangent one is keyword-only."""
    import corrflow as cf
    from corrflow.stats import Stats

    better, worse = Stats(1.0, 0.1, 0.5, 0.0, 100, 1, 1), Stats(1.0, 0.3, 0.5, 0.0, 100, 1, 1)
    assert tg.variance_reduction(reference=worse, improved=better) == pytest.approx(9.0)
    assert cf.stats.variance_reduction(better, worse) == pytest.approx(9.0)
    with pytest.raises(TypeError):
        tg.variance_reduction(worse, better)


def test_paired_difference_error_of_a_half_field(plaquette_terms, fitted):
    """Half the fitted field: tangent and connected errors are comparable, so the error of their difference from
    one set of primaries (``agreement``) must be far below the sum in quadrature of the two errors (the correlation
    matters) and equal the Gamma-method error of the per-configuration differences ``T_v - T_0`` (the same
    linearisation written out); a field with zero coefficients gives exactly zero."""
    from corrflow.stats import gamma_method

    _, coef = fitted
    res = tg.estimate(plaquette_terms, 0.5 * coef)
    explicit = plaquette_terms.explicit()
    for i, name in enumerate(OBS):
        tan, con, agree = res.estimates[name]["tangent"], res.estimates[name]["connected"], res.agreement[name]
        assert agree.error < 0.8 * np.hypot(tan.error, con.error), (name, agree, tan, con)
        o = plaquette_terms.o[..., i]
        r = plaquette_terms.ds + np.sum(plaquette_terms.a * 0.5 * coef, axis=-1)
        dvo = np.sum(plaquette_terms.b[..., i, :] * 0.5 * coef, axis=-1) + explicit[..., i]
        per_config = tg.tangent_values(o, dvo, r) - tg.tangent_values(o, explicit[..., i], plaquette_terms.ds)
        direct = gamma_method(per_config)
        assert agree.value == pytest.approx(direct.value, rel=1e-10)
        assert agree.error == pytest.approx(direct.error, rel=0.05)
        assert abs(agree.pull(0.0)) < PULL
    zero = tg.estimate(plaquette_terms, np.zeros(6))
    assert all(s.value == 0 and s.error == 0 for s in zero.agreement.values())


def test_wrong_divergence_sign_is_detected(u1_theory, u1_configs, plaquette_terms, fitted, exact_u1):
    """Negative control: flipping the sign of ∇·v in R_v biases T_v by many sigma."""
    _, coef = fitted
    phi = np.asarray(lattice.plaquette(jnp.asarray(u1_configs), 0, 1, u1_theory.group))
    vol = SHAPE[0] * SHAPE[1]
    n = np.arange(1, 7)[:, None, None]
    div = (1 - 1 / vol) * np.sum(n * np.cos(n * phi[..., None, :, :]), axis=(-2, -1))
    bad = dataclasses.replace(plaquette_terms, a=plaquette_terms.a + 2 * div)  # a = v·∇S + ∇·v
    res = tg.estimate(bad, coef)
    for name in OBS:
        assert abs(res.estimates[name]["tangent"].pull(exact_u1[name])) > 2 * PULL
        # ... and the paired comparison with the connected estimator flags it without the exact result
        assert abs(res.agreement[name].pull(0.0)) > 2 * PULL


@pytest.mark.parametrize("features,divergence", [(("plaquette", "rectangle"), "auto"),
                                                 (("plaquette",), "hutchinson")])
def test_gradient_field_unbiased(u1_theory, u1_configs, exact_u1, features, divergence):
    """The general machinery on the same ensemble: closed-form ΔΦ, and Hutchinson (1 probe, noise included)."""
    field = tg.GradientField(features=features, divergence=divergence, n_probes=1)
    sub = u1_configs[:, ::2]
    res = tg.derivative(u1_theory, sub, "beta", OBS, field, jax.random.PRNGKey(3), batch=500)
    for name in OBS:
        tan, con = res.estimates[name]["tangent"], res.estimates[name]["connected"]
        assert abs(tan.pull(exact_u1[name])) < PULL, f"{name} {features}: {tan!r} vs {exact_u1[name]:.6f}"
        assert abs(_diff_pull(tan, con)) < PULL
        assert res.reduction[name] > 1.5


def test_per_observable_fit_unbiased_and_at_least_as_good(plaquette_terms, fitted, exact_u1):
    """target="observable": each observable's own Var[T_v] minimised (its v_k terms as control variates).  The
    control variates have mean zero (pull), the estimates agree with the exact torus derivatives (|pull| < 4), and
    the variance reduction is at least about that of the one-field Var[R_v] fit (it is the optimum for each
    observable).  One coefficient set broadcast to every observable reproduces the one-field estimate exactly."""
    from corrflow.stats import gamma_method

    for i in range(len(OBS)):
        c, _ = tg.control_variates(plaquette_terms, i)
        for k in range(c.shape[-1]):
            assert abs(gamma_method(c[..., k]).pull(0.0)) < PULL
    fits, coef = tg.observable_cross_fit(plaquette_terms, n_folds=2)
    assert coef.shape == (len(OBS),) + plaquette_terms.a.shape and len(fits) == len(OBS)
    res = tg.estimate(plaquette_terms, coef, fits)
    ref = tg.estimate(plaquette_terms, fitted[1], fitted[0])
    assert res.target == "observable" and set(res.observable_fits) == set(OBS) and res.fits == []
    for name in OBS:
        tan = res.estimates[name]["tangent"]
        assert abs(tan.pull(exact_u1[name])) < PULL, f"{name}: {tan!r} vs exact {exact_u1[name]:.6f}"
        assert res.reduction[name] > 0.8 * ref.reduction[name], (name, res.reduction[name], ref.reduction[name])
    same = tg.estimate(plaquette_terms, np.stack([fitted[1]] * len(OBS)))
    for name in OBS:
        assert same.estimates[name]["tangent"].value == pytest.approx(ref.estimates[name]["tangent"].value, rel=1e-12)
        assert same.estimates[name]["tangent"].error == pytest.approx(ref.estimates[name]["tangent"].error, rel=1e-9)
    with pytest.raises(ValueError, match="per-observable coefficients must have shape"):
        tg.estimate(plaquette_terms, np.stack([fitted[1]] * 3))
    with pytest.raises(ValueError, match="unknown fit target 'both'"):
        tg.fit_coefficients(plaquette_terms, "both")


def _skewed_terms(n: int, seed: int = 0) -> "tg.TangentTerms":
    """Synthetic terms whose per-configuration tangent − connected difference is ``0.5 (O − Ō)(∂S − mean)`` with
    ``∂S = 5 O + noise``: a χ²₁-like product (skewness ~2.8), and nonzero on average (the terms are not from
    ``e^{-S}``), so its pull is large once the error is."""
    rng = np.random.default_rng(seed)
    o = rng.normal(size=(2, n))
    ds = 5 * o + 0.5 * rng.normal(size=(2, n))
    return tg.TangentTerms(o=o[..., None], ds=ds, a=(-0.5 * ds)[..., None], b=np.zeros((2, n, 1, 1)), names=("x",),
                           param="beta")


def test_the_agreement_check_knows_when_its_error_is_not_gaussian():
    """The tangent − connected difference is a product of fluctuations (skewed); on few configurations its pull is
    flagged as not conclusive (``unreliable_agreement``, the CLI's verdict), on many it points at the field.  The
    skewness and the size rule are scipy's skewness and 28 + 25 γ1² (checked on χ²₁ and normal samples)."""
    from corrflow.cli.tangent import _agreement_verdict
    from corrflow.stats import gaussian_sample_size

    rng = np.random.default_rng(1)
    g, need = gaussian_sample_size(rng.chisquare(1, 200_000))
    assert g == pytest.approx(2 * np.sqrt(2), rel=0.05) and need == pytest.approx(28 + 25 * g * g)
    g, need = gaussian_sample_size(rng.normal(size=200_000))
    assert abs(g) < 0.03 and need == pytest.approx(28, abs=0.1)
    assert gaussian_sample_size(np.ones(10)) == (0.0, 28.0)

    small = tg.estimate(_skewed_terms(40), np.ones(1))
    size = small.agreement_size["x"]
    assert size["skewness"] > 1.5 and size["n_needed"] > size["n_effective"], size
    assert abs(small.agreement["x"].pull(0.0)) > 3
    assert set(small.unreliable_agreement()) == {"x"}
    assert "not conclusive on this many configurations" in _agreement_verdict(small, 4.0)
    assert small.as_dict()["tangent_minus_connected"]["x"]["n_needed"] == size["n_needed"]
    large = tg.estimate(_skewed_terms(4000), np.ones(1))  # negative control: the same bias, enough configurations
    assert large.agreement_size["x"]["n_effective"] > large.agreement_size["x"]["n_needed"]
    assert abs(large.agreement["x"].pull(0.0)) > 3 and not large.unreliable_agreement()
    assert "points at the field or its divergence" in _agreement_verdict(large, 4.0)
    assert _agreement_verdict(large, 2.0) == ""
