"""∇·v against dense autodiff on tiny lattices (U(1), SU(2), SU(3); 2D and 4D), closed-form Laplacians of loop
features, Hutchinson estimates unbiased (pulls), the 2D U(1) plaquette-space formulas against link-space autodiff,
and the right-trivialised gradient against the theories' force."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from corrflow import lattice, make_theory
from corrflow import tangent as tg

PULL = 4.0


def _random_links(theory, seed):
    return theory.group.random(jax.random.PRNGKey(seed), theory.link_index_shape)


@pytest.mark.parametrize("name,shape,features,kind", [
    ("u1", (3, 3), ("plaquette", "rectangle", "flowed@0.1"), "rademacher"),
    ("su3", (2, 2), ("plaquette",), "gaussian"),
    ("su2", (2, 2, 2, 2), ("plaquette",), None),  # 4D: closed form against dense only (compile time)
])
def test_gradient_field_divergence(name, shape, features, kind):
    th = make_theory(name, shape, beta=1.7)
    u = _random_links(th, 5)
    fld = tg.GradientField(features=features, flow_eps=0.05)
    g = th.group
    vfields = lambda uu: fld.field_coords(uu, th)  # noqa: E731  (K, *coords)

    @jax.jit
    def run(u, key):
        dense = tg.divergence_dense(vfields, u, g)
        hut = [tg.divergence_hutchinson(vfields, u, g, key, 256, kind)] if kind else []
        return dense, fld.feature_values(u, th), hut

    dense, phi, huts = run(u, jax.random.PRNGKey(7))
    dense = np.asarray(dense)
    mask, closed = fld.exact_laplacian(phi, th)
    assert mask.sum() >= 1
    np.testing.assert_allclose(np.asarray(closed)[mask], dense[mask], rtol=1e-9, atol=1e-9)
    # Hutchinson: unbiased for every feature, including the flowed one without a closed form
    for vals in huts:
        vals = np.asarray(vals)  # (256, K)
        mean, err = vals.mean(0), vals.std(0, ddof=1) / np.sqrt(len(vals))
        assert np.all(np.abs((mean - dense) / err) < PULL), f"{name}: pulls {(mean - dense) / err}"
        # negative control: the wrong sign is detected wherever the divergence is well resolved
        big = np.abs(dense) > 10 * err
        assert np.all(np.abs((-mean - dense) / err)[big] > PULL)


@pytest.mark.parametrize("name,shape", [("u1", (3, 4)), ("su2", (2, 2, 2)), ("su3", (3, 3))])
def test_gradient_matches_force(name, shape):
    """gradient(S) in right-trivialised coordinates equals the force of the theory (independent code)."""
    th = make_theory(name, shape, beta=1.3, xi=1.2, lam=0.1)
    u = _random_links(th, 2)
    grad, f = jax.jit(lambda u: (tg.gradient(th.action, u, th.group), th.force(u)))(u)
    coords = th.group.algebra_coords(f)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(coords), rtol=1e-9, atol=1e-10)


def test_plaquette_space_formulas_against_link_space():
    """v = curlᵀ G h(φ): curl v = h − mean h, ∇·v = (1 − 1/V) Σ h'(φ) (dense autodiff), v·∇S by jvp, and
    PlaquetteField.terms against link-space autodiff; anisotropic action with a source (coupling b ≠ β)."""
    th = make_theory("u1", (4, 5), beta=1.7, xi=1.3, lam=0.2)
    g = th.group
    u = _random_links(th, 3)
    vol = 20
    c = jnp.array([0.7, -0.4, 0.25])
    fld = tg.PlaquetteField(3)
    n = jnp.arange(1, 4)[:, None, None]
    obs_vec = lambda uu: jnp.stack([tg.observable_function("wilson_2x2", g, th.shape)(uu)])  # noqa: E731

    def h(phi):
        return jnp.sum(c[:, None, None] * jnp.sin(n * phi), 0)

    def field(uu):
        hp = h(lattice.plaquette(uu, 0, 1, g))
        return tg.plaquette_link_field(hp - hp.mean())[..., None]

    @jax.jit
    def run(u):
        phi = lattice.plaquette(u, 0, 1, g)
        v = field(u)
        out = dict(phi=phi, h=h(phi), hprime=jnp.sum(c[:, None, None] * n * jnp.cos(n * phi), 0),
                   dphi=tg.directional_derivative(lambda uu: lattice.plaquette(uu, 0, 1, g), u, v, g),
                   div=tg.divergence_dense(field, u, g), vs=tg.directional_derivative(th.action, u, v, g),
                   dvo=tg.directional_derivative(obs_vec, u, v, g),
                   hut=tg.divergence_hutchinson(field, u, g, jax.random.PRNGKey(1), 400))
        out["a"], out["bo"] = fld.terms(u, th, obs_vec, jax.random.PRNGKey(0))
        return out

    r = {k: np.asarray(x) for k, x in run(u).items()}
    np.testing.assert_allclose(r["dphi"], r["h"] - r["h"].mean(), atol=1e-11)
    assert float(r["div"]) == pytest.approx(float((1 - 1 / vol) * r["hprime"].sum()), rel=1e-10)
    b = float(th.plane_couplings()[0, 1])
    assert float(r["vs"]) == pytest.approx(b * float(np.sum(np.sin(r["phi"]) * (r["h"] - r["h"].mean()))), rel=1e-10)
    # the field's per-harmonic terms, contracted with c, agree with the link-space values
    assert float(r["a"] @ np.asarray(c)) == pytest.approx(float(r["vs"] - r["div"]), rel=1e-10)
    np.testing.assert_allclose(r["bo"] @ np.asarray(c), r["dvo"], rtol=1e-10)
    # Hutchinson on this non-gradient field is unbiased too
    vals = r["hut"]
    assert abs((vals.mean() - float(r["div"])) / (vals.std(ddof=1) / np.sqrt(len(vals)))) < PULL


def test_parameter_derivative():
    th = make_theory("su2", (2, 2, 2), beta=2.1, xi=1.1, lam=0.3)
    u = _random_links(th, 4)
    h = 1e-5

    @jax.jit
    def run(u):
        out = {}
        for p in ("beta", "xi", "lam"):
            fd = (th.replace(**{p: getattr(th, p) + h}).action(u)
                  - th.replace(**{p: getattr(th, p) - h}).action(u)) / (2 * h)
            out[p] = (tg.parameter_derivative(th, p)(u), fd)
        return out, th.source_operator(u)

    out, src = run(u)
    for p, (d, fd) in out.items():
        assert float(d) == pytest.approx(float(fd), rel=1e-7), p
    assert float(out["lam"][0]) == pytest.approx(float(src), rel=1e-10)
