"""Smoothing fields ``v_k = P_TA(V(t_k) U^†)`` (:class:`corrflow.tangent.SmoothingField`).

Checked: the closed-form explicit divergence and the split ``∇·v = D + I`` against dense autodiff (U(1), SU(2),
SU(3)); the diluted Hutchinson estimate of ``I`` unbiased (pull); gauge equivariance; on the shared 2D U(1) ensemble
the control variates have zero mean and the tangent estimates agree with the exact torus derivatives, while a field
with the flow's part of the divergence left out (negative control) is caught; bad options.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gauge_helpers import gauge_transform, random_gauge_transform

from corrflow import make_theory
from corrflow import tangent as tg
from corrflow.stats import gamma_method
from corrflow.tangent.fields import _flow_update

PULL = 4.0
OBS = ("plaquette", "wilson_2x2")  # as the shared ensemble's (tests/tangent/conftest.py)


@pytest.mark.parametrize("name,shape,split,aniso", [("u1", (4, 4), False, 0.0), ("su2", (4, 4), False, 0.0),
                                                    ("u1", (3, 3, 3), True, 0.0), ("u1", (3, 3, 3), True, 0.5),
                                                    ("su3", (2, 2, 2, 2), False, 0.0), ("su3", (2, 2, 2, 2), True, 0.0)])
def test_divergence_split_against_dense(name, shape, split, aniso):
    th = make_theory(name, shape, beta=2.0)
    g = th.group
    u = g.random(jax.random.PRNGKey(1), tuple(th.link_index_shape))
    f = tg.SmoothingField(times=(0.1, 0.3), flow_eps=0.05, split=split, anisotropy=aniso)
    assert f.n_coef == 2 * (2 if split else 1) * (2 if aniso else 1)

    @jax.jit
    def parts(u):
        v = f.flowed(u, th)
        total = tg.divergence_dense(lambda uu: f.field_coords(uu, th), u, g)
        explicit = tg.divergence_dense(lambda uu: f._expand(f._coords(v, uu, th)), u, g)
        through = tg.divergence_dense(lambda uu: f._expand(f._coords(f.flowed(uu, th), u, th)), u, g)
        hut = tg.divergence_hutchinson(lambda uu: f._expand(f._coords(f.flowed(uu, th), u, th)), u, g,
                                       jax.random.PRNGKey(2), 64, "rademacher", 2)
        return f.explicit_divergence(v, u, th), explicit, through, total, hut

    closed, explicit, through, total, hut = (np.asarray(x) for x in parts(u))
    np.testing.assert_allclose(closed, explicit, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(closed + through, total, rtol=1e-9, atol=1e-9)
    if split:  # the temporal and spatial parts add up to the isotropic field's divergence
        iso = tg.SmoothingField(times=(0.1, 0.3), flow_eps=0.05, anisotropy=aniso)
        whole = np.asarray(jax.jit(lambda u: tg.divergence_dense(lambda uu: iso.field_coords(uu, th), u, g))(u))
        np.testing.assert_allclose(total[0::2] + total[1::2], whole, rtol=1e-9, atol=1e-9)
    pull = (hut.mean(0) - through) / (hut.std(0, ddof=1) / np.sqrt(hut.shape[0]) + 1e-12)
    assert np.all(np.abs(pull) < PULL), (hut.mean(0), through, pull)


@pytest.mark.parametrize("name,shape", [("u1", (4, 4)), ("su3", (2, 2, 2, 2))])
def test_gauge_equivariance(name, shape):
    th = make_theory(name, shape, beta=2.0)
    g = th.group
    u = g.random(jax.random.PRNGKey(3), tuple(th.link_index_shape))
    omega = random_gauge_transform(jax.random.PRNGKey(4), g, shape)
    f = tg.SmoothingField(times=(0.2,), flow_eps=0.05)
    x, xg = f.field_coords(u, th)[0], f.field_coords(gauge_transform(u, omega, g), th)[0]
    if g.is_abelian:  # U(1): the field is gauge invariant
        np.testing.assert_allclose(np.asarray(xg), np.asarray(x), atol=1e-10)
        return
    om = jnp.broadcast_to(omega[..., None, :, :], x.shape[:-1] + (g.N, g.N))  # Omega(x) for every link from x
    rotated = g.algebra_coords(g.mul(g.mul(om, g.from_coords(x)), g.adj(om)))
    np.testing.assert_allclose(np.asarray(xg), np.asarray(rotated), atol=1e-10)


class _WithoutFlowDivergence(tg.SmoothingField):
    """Negative control: ``∇·v`` without its part through ``V(U)``."""

    def terms(self, u, theory, obs_vec, key):
        g = theory.group
        v = self.flowed(u, theory)
        x = self._coords(v, u, theory)
        g_s = tg.gradient(theory.action, u, g)
        vs = jnp.sum(x * g_s, axis=tuple(range(1, x.ndim)))
        b = jax.vmap(lambda xk: tg.directional_derivative(obs_vec, u, xk, g))(x)
        return vs - self.explicit_divergence(v, u, theory), b.T


def _cv_pulls(terms):
    """Pulls of the means of the control variates c_k (zero by integration by parts), per observable and k."""
    out = []
    for i in range(len(terms.names)):
        c, _ = tg.control_variates(terms, i)
        for k in range(c.shape[-1]):
            s = gamma_method(c[..., k])
            out.append(s.value / s.error)
    return np.asarray(out)


def test_unbiased_against_exact_u1(u1_theory, u1_configs, exact_u1):
    """2D U(1) 8x8, beta = 2, 2 x 800 configurations (every 4th of the shared ensemble)."""
    configs = u1_configs[:, ::4]
    f = tg.SmoothingField(times=(0.2, 0.6), flow_eps=0.1)
    terms = tg.compute_terms(f, u1_theory, "beta", OBS, configs, jax.random.PRNGKey(5), batch=400)
    pulls = _cv_pulls(terms)
    assert np.all(np.abs(pulls) < PULL), pulls
    fits, coef = tg.cross_fit(terms.a, terms.ds, n_folds=2)
    res = tg.estimate(terms, coef, fits, f.describe())
    ex = exact_u1
    for o in OBS:
        t = res.estimates[o]["tangent"]
        assert abs(t.pull(ex[o])) < PULL, (o, t, ex[o])
    assert min(f.reduction for f in fits) > 1.5, [f.reduction for f in fits]
    # negative control: leaving out the divergence through the flow biases the control variates
    wrong = tg.compute_terms(_WithoutFlowDivergence(times=(0.2, 0.6), flow_eps=0.1), u1_theory, "beta", OBS, configs,
                             jax.random.PRNGKey(5), batch=400)
    assert np.max(np.abs(_cv_pulls(wrong))) > PULL


def test_split_by_default_for_the_anisotropic_parameters():
    th4 = make_theory("su3", (2, 2, 2, 2), beta=5.8)
    assert tg.make_field("smoothing", th4, param="lam").split
    assert tg.make_field("smoothing", th4, param="xi").split
    assert not tg.make_field("smoothing", th4, param="beta").split
    assert not tg.make_field("smoothing", make_theory("u1", (4, 4), beta=2.0), param="lam").split  # as the features
    # and anisotropic flows for them, isotropic ones for beta and in 2D; an explicit choice is kept
    assert tg.make_field("smoothing", th4, param="lam").anisotropy == tg.fields.SMOOTHING_ANISOTROPY == 0.5
    assert tg.make_field("smoothing", th4, param="xi").n_coef == 4 * 2 * 2
    assert tg.make_field("smoothing", th4, param="beta").anisotropy == 0.0
    assert tg.make_field("smoothing", make_theory("u1", (4, 4), beta=2.0), param="lam").anisotropy == 0.0
    assert tg.make_field("smoothing", th4, param="lam", anisotropy=0.0).anisotropy == 0.0
    # auto: the held-out anisotropic smoothing field for xi / lam on pure-gauge SU(2)/SU(3) with even extents
    auto = tg.make_field("auto", th4, param="lam")
    assert isinstance(auto, tg.SmoothingField) and auto.held_out and auto.split and auto.anisotropy == 0.5
    assert auto.times == (0.1, 0.2, 0.4) and auto.flow_eps == 0.1  # pure gauge: PURE_GAUGE_SMOOTHING
    assert isinstance(tg.make_field("auto", make_theory("su2", (2, 2, 2), beta=2.0), param="xi"), tg.SmoothingField)
    # with Wilson fermions too for lam (N_f = 2 QCD 4^4: 10x for d<P>/dlam, 5.4x for dE_pi/dlam), not for beta
    qcd = tg.make_field("auto", make_theory("su3-wilson", (2, 2, 2, 2), beta=5.8, mass=0.3), param="lam")
    assert isinstance(qcd, tg.SmoothingField) and qcd.held_out and qcd.split and qcd.anisotropy == 0.5
    assert qcd.times == (0.1, 0.2, 0.4, 0.8) and qcd.flow_eps == 0.05  # with fermions: the flows measured there
    # for beta the isotropic held-out field (the gradient field's gain or more at a fraction of its cost), with the
    # shorter, coarser flows of PURE_GAUGE_SMOOTHING
    auto = tg.make_field("auto", th4, param="beta")
    assert isinstance(auto, tg.SmoothingField) and auto.held_out and not auto.split and auto.anisotropy == 0.0
    assert auto.times == (0.1, 0.2, 0.4) and auto.flow_eps == 0.1  # PURE_GAUGE_SMOOTHING: a third of the cost
    given = tg.make_field("auto", th4, param="beta", times="0.05,0.15")  # the user's times keep their own step
    assert given.times == (0.05, 0.15) and given.flow_eps == 0.05
    for th, param, opts in ((th4, "beta", {"features": "plaquette,rectangle"}),
                            (th4, "lam", {"features": "plaquette_t,plaquette_s"}),
                            (make_theory("su3", (2, 2), beta=5.8), "beta", {}),
                            (make_theory("su3-wilson", (2, 2, 2, 2), beta=5.8, mass=0.3), "beta", {}),
                            (make_theory("su3", (3, 2, 2, 2), beta=5.8), "lam", {}),
                            (make_theory("u1", (4, 4, 4), beta=1.0), "lam", {})):
        assert isinstance(tg.make_field("auto", th, param=param, **opts), tg.GradientField), (th, param, opts)
    assert tg.make_field("smoothing", th4, times="0.2,0.4").times == (0.2, 0.4)
    # the smoothing options with another field (chosen or named): one clear error, not a TypeError of its constructor
    with pytest.raises(ValueError, match="times: only for smoothing fields, and the auto field chooses gradient here"):
        tg.make_field("auto", make_theory("su3", (2, 2), beta=5.8), param="beta", times="0.1")
    with pytest.raises(ValueError, match="anisotropy: only for smoothing fields, and the field is gradient here"):
        tg.make_field("gradient", th4, param="beta", anisotropy=0.5)


def test_bad_options():
    for kw, msg in (({"times": ()}, "at least one"), ({"times": (0.1, 0.1)}, "duplicate"),
                    ({"times": (0.12,)}, "multiples of flow_eps"), ({"times": (-0.1,)}, "multiples"),
                    ({"n_probes": 0}, "n_probes"), ({"probes": "x"}, "probes"), ({"probe_period": 0}, "probe_period"),
                    ({"times": ("a",)}, "numbers"), ({"anisotropy": 1.0}, "anisotropy must be in"),
                    ({"anisotropy": -0.1}, "anisotropy must be in"),
                    ({"anisotropy": "x"}, "anisotropy must be a number")):
        with pytest.raises(ValueError, match=msg):
            tg.SmoothingField(**kw)


def test_held_out_needs_su2_or_su3_and_even_extents():
    f = tg.SmoothingField(times=(0.1,), held_out=True)
    assert f.describe()["held_out"] is True and "held_out" not in tg.SmoothingField().describe()
    with pytest.raises(ValueError, match="SU\\(2\\) or SU\\(3\\)"):
        f.check(make_theory("u1", (4, 4), beta=2.0))
    with pytest.raises(ValueError, match="even extents"):
        f.check(make_theory("su2", (3, 4), beta=2.0))
    f.check(make_theory("su3", (2, 2, 2, 2), beta=6.0))
    with pytest.raises(ValueError, match="anisotropy needs spatial planes"):
        tg.SmoothingField(anisotropy=0.5).check(make_theory("su2", (4, 4), beta=2.0))


def test_anisotropic_flows_and_held_out_divergence():
    """With an anisotropy ``a`` the basis fields come from the flows of the Wilson action with source ``λ = ±a``
    (compared with Euler steps of that action's force), and the held-out field's divergence is its closed form
    (dense autodiff, SU(2) 2^3: ``V_l`` does not depend on ``U_l``)."""
    th = make_theory("su2", (2, 2, 2), beta=2.0)
    g = th.group
    u = g.random(jax.random.PRNGKey(7), tuple(th.link_index_shape))
    f = tg.SmoothingField(times=(0.05, 0.1), flow_eps=0.05, split=True, anisotropy=0.4)
    ws = np.asarray(jax.jit(lambda u: f.flowed(u, th))(u))
    assert ws.shape == (4,) + u.shape  # (t_1 +a, t_1 -a, t_2 +a, t_2 -a)
    for i, lam in enumerate((0.4, -0.4)):
        src = th.replace(beta=1.0, lam=lam)
        w = u
        for k in range(2):
            w = _flow_update(-0.05 * src.force(w), w, g)  # the feature flow's Euler step
            np.testing.assert_allclose(ws[2 * k + i], np.asarray(w), atol=1e-12)
    assert np.abs(ws[0] - ws[1]).max() > 1e-3  # the two anisotropies differ
    # the basis: mean and difference of the +-a fields, telescoped over the times (same span, better conditioned)
    plain = tg.SmoothingField(times=(0.05, 0.1), flow_eps=0.05, anisotropy=0.4)
    raw = np.asarray(plain._coords(jnp.asarray(ws), u, th))
    x = np.asarray(jax.jit(lambda u: plain.field_coords(u, th))(u))
    mean, diff = (raw[0::2] + raw[1::2]) / 2, raw[0::2] - raw[1::2]
    want = np.stack([mean[0], diff[0], mean[1] - mean[0], diff[1] - diff[0]])
    np.testing.assert_allclose(x, want, atol=1e-12)

    ho = tg.SmoothingField(times=(0.1,), flow_eps=0.05, split=True, anisotropy=0.4, held_out=True)
    assert ho.n_coef == 4

    @jax.jit
    def both(u):
        return ho.explicit_divergence(ho.held_out_flowed(u, th), u, th), \
            tg.divergence_dense(lambda uu: ho.field_coords(uu, th), u, g)

    closed, dense = (np.asarray(x) for x in both(u))
    np.testing.assert_allclose(closed, dense, rtol=1e-9, atol=1e-9)
