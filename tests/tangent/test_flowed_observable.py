"""The ``t2E@T`` observable (t^2 E(t) of the Wilson-flowed links) in the tangent estimators: its directional
derivative through the flow against a finite difference, and on a 2D SU(2) HMC ensemble the tangent and connected
estimates of d<t^2 E>/dbeta agreeing (and the plaquette's matching the exact torus derivative)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from corrflow import exact, hmc, make_theory
from corrflow import tangent as tg
from corrflow.groups import matmul
from corrflow.tangent.core import observables_vector

PULL = 4.0


def test_directional_derivative_through_the_flow_matches_finite_difference():
    th = make_theory("su2", (4, 4), beta=2.0)
    u = hmc.hot_start(jax.random.PRNGKey(0), th)
    f = tg.observable_function("t2E@0.1", th.group, th.shape)
    v = jax.random.normal(jax.random.PRNGKey(1), tg.coords_shape(th))
    got = float(tg.directional_derivative(f, u, v, th.group))
    x, h = th.group.from_coords(v), 1e-4
    fd = float(f(matmul(th.group.exp(h * x), u)) - f(matmul(th.group.exp(-h * x), u))) / (2 * h)
    assert got == pytest.approx(fd, rel=1e-6, abs=1e-10) and abs(got) > 1e-4


def test_bad_flow_times_and_u1_are_refused():
    su2 = make_theory("su2", (4, 4), beta=2.0)
    with pytest.raises(ValueError, match="multiple of 0.02"):
        tg.observable_function("t2E@0.03", su2.group, su2.shape)
    u1 = make_theory("u1", (4, 4), beta=2.0)
    with pytest.raises(ValueError, match="implemented for SU"):
        tg.observable_function("t2E@0.1", u1.group, u1.shape)


BETA, SHAPE, FLOW_TIMES = 3.0, (6, 6), (0.1, 0.2, 0.3, 0.4)
NAMES = ["plaquette"] + [f"t2E@{t}" for t in FLOW_TIMES]
CFG = hmc.HMCConfig(0.2, 5, "omelyan")


@jax.jit
def _chains(key, theory):
    st = hmc.init(theory, hmc.hot_start(jax.random.fold_in(key, 1), theory, batch=(2,)))
    keys = jax.random.split(key, 2)
    st, _, _ = hmc.sample_chains(keys, st, theory, CFG, 200)
    _, info, links = hmc.sample_chains(keys, st, theory, CFG, 600, first_index=200, measure=lambda u: u)
    return info.accepted, links


def _ensemble(beta, seed):
    acc, links = _chains(jax.random.PRNGKey(seed), make_theory("su2", SHAPE, beta=beta))
    assert float(jnp.mean(acc)) > 0.7
    return np.asarray(links)


@pytest.fixture(scope="module")
def su2_terms():
    """Tangent terms of the plaquette and t^2 E at four flow times on 2 x 600 HMC configurations (2D SU(2), 6x6,
    beta = 3), with the plaquette-gradient field cross-fitted."""
    th = make_theory("su2", SHAPE, beta=BETA)
    terms = tg.compute_terms(tg.GradientField(features=("plaquette",)), th, "beta", NAMES, _ensemble(BETA, 5),
                             jax.random.PRNGKey(0), batch=400)
    _, coef = tg.cross_fit(terms.a, terms.ds)
    return terms, coef


def test_flowed_energy_derivative_on_su2_ensemble(su2_terms):
    terms, coef = su2_terms
    res = tg.estimate(terms, coef)
    h = 1e-4
    dp = (exact.sun_plaquette(2, BETA + h, SHAPE) - exact.sun_plaquette(2, BETA - h, SHAPE)) / (2 * h)
    for k in ("tangent", "connected"):
        s = res.estimates["plaquette"][k]
        assert abs(s.value - dp) / s.error < PULL, (k, s, dp)
    for name in NAMES[1:]:
        t, c = res.estimates[name]["tangent"], res.estimates[name]["connected"]
        assert c.value != 0 and abs(t.value - c.value) / np.hypot(t.error, c.error) < PULL, (name, t, c)
        assert res.reduction[name] > 1.5, name  # the fitted plaquette field lowers Var[R_v]: it helps here too


def test_t0_derivative_against_finite_difference(su2_terms):
    """d(t0/a^2)/dbeta (reference t^2 E = 0.015, inside the grid) and d(w0/a)/dbeta (reference W between its two
    interior grid values) by the tangent and connected estimators against the central differences of t0 and w0 on
    two independent ensembles at beta -+ 0.15 (O(dbeta^2) bias, far below the errors); the tangent error must be the
    smaller one."""
    terms, coef = su2_terms
    ref = 0.015
    res = tg.flow_scale_derivative(terms, coef, reference=ref)
    assert set(res) == {"t0", "tangent", "connected", "difference"} and 0.2 < res["t0"].value < 0.4
    diff = res["difference"]  # tangent - connected with the error of the difference: agrees with zero
    assert diff.value == pytest.approx(res["tangent"].value - res["connected"].value, rel=1e-9)
    assert abs(diff.pull(0.0)) < 4 and diff.error > 0
    # the same derivative as a row of the estimates (what `corrflow derivative --t0-ref` prints)
    row = tg.estimate(terms, coef, t0_reference=ref).estimates["t0/a^2"]
    assert row["tangent"].value == pytest.approx(res["tangent"].value, rel=1e-12)
    assert "t0/a^2" not in tg.estimate(terms, coef).estimates  # 0.3 is not crossed on this 2D grid
    # w0: W = t d<t^2 E>/dt on the interior grid points (0.2, 0.3); a reference between the two
    w_mean = (np.asarray(FLOW_TIMES)[:, None] * np.gradient(np.eye(len(FLOW_TIMES)), np.asarray(FLOW_TIMES),
                                                            axis=0))[1:-1] @ terms.o[..., 1:].reshape(-1, 4).mean(0)
    w_ref = float(w_mean.mean())
    resw = tg.flow_scale_derivative(terms, coef, reference=w_ref, scale="w0")
    assert set(resw) == {"w0", "tangent", "connected", "difference"} and 0.2 ** 0.5 < resw["w0"].value < 0.3 ** 0.5
    roww = tg.estimate(terms, coef, w0_reference=w_ref).estimates["w0/a"]
    assert roww["tangent"].value == pytest.approx(resw["tangent"].value, rel=1e-12)
    t0, w0 = {}, {}
    vec = jax.jit(jax.vmap(observables_vector(tuple(NAMES[1:]), make_theory("su2", SHAPE, beta=BETA).group,
                                                 SHAPE)))
    for db, seed in ((-0.15, 7), (0.15, 9)):
        links = _ensemble(BETA + db, seed)
        o = np.concatenate([np.asarray(vec(jnp.asarray(x))) for x in links.reshape((-1, 400) + links.shape[2:])])
        o = o.reshape(2, -1, len(FLOW_TIMES))
        zero = np.zeros(o.shape[:2])
        shifted = tg.TangentTerms(o=o, ds=zero, a=zero[..., None], b=np.zeros(o.shape + (1,)), names=tuple(NAMES[1:]),
                                  param="beta")
        t0[db] = tg.flow_scale_derivative(shifted, np.zeros(1), reference=ref)["t0"]
        w0[db] = tg.flow_scale_derivative(shifted, np.zeros(1), reference=w_ref, scale="w0")["w0"]
    for scale, r, x in (("t0", res, t0), ("w0", resw, w0)):
        fd = (x[0.15].value - x[-0.15].value) / 0.3
        fd_err = np.hypot(x[0.15].error, x[-0.15].error) / 0.3
        for k in ("tangent", "connected"):
            s = r[k]
            assert abs(s.value - fd) / np.hypot(s.error, fd_err) < PULL, (scale, k, s, fd, fd_err)
        assert r["tangent"].error < r["connected"].error, scale
    with pytest.raises(ValueError, match="two or more flow times"):
        tg.flow_scale_derivative(tg.TangentTerms(terms.o[..., :2], terms.ds, terms.a, terms.b[..., :2, :],
                                                 tuple(NAMES[:2]), "beta"), coef)
    with pytest.raises(ValueError, match=r"^t0/a\^2: t\^2 E\(t\) stays below --t0-ref 1 up to t = 0.4"):
        tg.flow_scale_derivative(terms, coef, reference=1.0)
    with pytest.raises(ValueError, match=r"^w0/a: W\(t\) = .* is already .* >= --w0-ref 1e-06 at t = 0.2, the first "
                                         "interior flow time: measure t2E@T at smaller T, or raise --w0-ref$"):
        tg.flow_scale_derivative(terms, coef, reference=1e-6, scale="w0")
    with pytest.raises(ValueError, match="four or more flow times"):
        tg.flow_scale_derivative(tg.TangentTerms(terms.o[..., :4], terms.ds, terms.a, terms.b[..., :4, :],
                                                 tuple(NAMES[:4]), "beta"), coef, scale="w0")
    with pytest.raises(ValueError, match="unknown flow scale"):
        tg.flow_scale_derivative(terms, coef, scale="r0")


def _columns(terms, k):
    """The first ``k`` observables of ``terms`` (plaquette, then t2E@T at the smallest flow times)."""
    return tg.TangentTerms(terms.o[..., :k], terms.ds, terms.a, terms.b[..., :k, :], tuple(NAMES[:k]), "beta")


def test_missing_scale_rows_come_with_a_note(su2_terms):
    """With two or more t2E@T observables a t0/a^2 or w0/a row that cannot be made is not dropped without a word:
    ``notes[row]`` says why in one line (``corrflow derivative`` prints it under the table and in --json); with fewer
    t2E@T observables the scales are not asked for and there is no note."""
    terms, coef = su2_terms
    res = tg.estimate(terms, coef)  # the default references 0.3 are out of reach on this 2D grid (t <= 0.4)
    assert "t0/a^2" not in res.estimates and "w0/a" not in res.estimates
    assert res.notes["t0/a^2"].startswith("t0/a^2: t^2 E(t) stays below --t0-ref 0.3 up to t = 0.4, the last flow "
                                          "time (max "), res.notes
    assert res.notes["w0/a"].startswith("w0/a: W(t) = t d/dt t^2 E stays below --w0-ref 0.3 up to t = 0.3, the last "
                                        "interior flow time (max "), res.notes
    assert res.notes["w0/a"].endswith("): measure t2E@T at larger T, or lower --w0-ref")
    assert res.as_dict()["notes"] == res.notes
    # three flow times: t0 at a reference inside the grid is there, w0 needs four
    three = tg.estimate(_columns(terms, 4), coef, t0_reference=0.01)
    assert "t0/a^2" in three.estimates and "w0/a" not in three.estimates
    assert three.notes == {"w0/a": "w0/a: needs t2E@T observables at four or more flow times around w0, got 3"}
    for k in (1, 2):  # no t2E@T, or a single one: no scale asked for, nothing said
        few = tg.estimate(_columns(terms, k), coef)
        assert "t0/a^2" not in few.estimates and few.notes == {} and few.as_dict()["notes"] == {}
