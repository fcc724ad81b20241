import jax
import jax.numpy as jnp
import numpy as np
import pytest

from corrflow import lattice, observables as obs
from corrflow.groups import SUN, U1
from gauge_helpers import gauge_transform

KEY = jax.random.PRNGKey(11)
CASES = [(U1(), (6, 4)), (U1(), (4, 4, 2)), (SUN(2), (4, 6)), (SUN(3), (4, 4)), (SUN(3), (2, 2, 2, 4))]


def hot(group, shape, key=KEY):
    return group.random(key, tuple(shape) + (len(shape),))


@pytest.mark.parametrize("group,shape", CASES)
def test_shift_convention(group, shape):
    d = len(shape)
    f = jnp.arange(np.prod(shape), dtype=float).reshape(shape)
    for mu in range(d):
        g = lattice.shift(f, mu, 1, d, U1())
        idx = tuple(1 if k == mu else 0 for k in range(d))
        assert g[(0,) * d] == f[idx]  # f(x + mu) at x = 0


@pytest.mark.parametrize("group,shape", CASES)
def test_cold_configuration_loops_are_one(group, shape):
    u = group.identity(tuple(shape) + (len(shape),))
    np.testing.assert_allclose(obs.plaquette_per_plane(u, group), 1.0)
    np.testing.assert_allclose(obs.wilson_loop(u, group, 2, 1), 1.0)
    np.testing.assert_allclose(obs.polyakov_loop(u, group), 1.0)


@pytest.mark.parametrize("group,shape", CASES)
def test_gauge_invariance_of_loops(group, shape):
    u = hot(group, shape)
    om = group.random(jax.random.PRNGKey(5), tuple(shape))
    v = gauge_transform(u, om, group)
    for f in (lambda w: obs.plaquette_per_plane(w, group),
              lambda w: obs.wilson_loop(w, group, 2, 1),
              lambda w: obs.wilson_loop(w, group, 1, 2, plane=(1, 0)),
              lambda w: obs.polyakov_loop(w, group)):
        np.testing.assert_allclose(f(v), f(u), atol=1e-12)
    # a non-invariant quantity changes (guards against a vacuous transform)
    assert float(jnp.max(jnp.abs(group.retr(v) - group.retr(u)))) > 1e-3


@pytest.mark.parametrize("group,shape", CASES)
def test_staples_reproduce_plaquettes(group, shape):
    u = hot(group, shape)
    d = len(shape)
    for mu in range(d):
        for nu in range(d):
            if mu == nu:
                continue
            up, lo = lattice.staple(u, mu, nu, group)
            um = lattice.link(u, mu, group)
            p = lattice.plaquette(u, mu, nu, group)
            np.testing.assert_allclose(group.retr(group.mul(um, up)), group.retr(p), atol=1e-12)
            np.testing.assert_allclose(group.retr(group.mul(um, lo)),
                                       group.retr(lattice.shift(p, nu, -1, d, group)), atol=1e-12)


@pytest.mark.parametrize("group,shape", CASES)
def test_wilson_loop_1x1_is_plaquette(group, shape):
    u = hot(group, shape)
    np.testing.assert_allclose(obs.wilson_loop(u, group, 1, 1), obs.plaquette(u, group), atol=1e-13)


def test_plaquette_orientation_su3():
    """P_{nu mu} = P_{mu nu}^dag traced at the shifted corner: Re tr equal, Im tr opposite."""
    g = SUN(3)
    u = hot(g, (4, 4))
    p01 = lattice.plaquette(u, 0, 1, g)
    p10 = lattice.plaquette(u, 1, 0, g)
    np.testing.assert_allclose(g.retr(p10), g.retr(p01), atol=1e-12)
    np.testing.assert_allclose(jnp.imag(jnp.trace(p10, axis1=-2, axis2=-1)),
                               -jnp.imag(jnp.trace(p01, axis1=-2, axis2=-1)), atol=1e-12)


def test_u1_wilson_loop_is_sum_of_enclosed_plaquettes():
    g = U1()
    u = hot(g, (8, 8))
    w = lattice.wilson_loop(u, 0, 1, 3, 2, g)
    p = lattice.plaquette(u, 0, 1, g)
    enclosed = sum(lattice.shift(lattice.shift(p, 0, i, 2, g), 1, j, 2, g) for i in range(3) for j in range(2))
    np.testing.assert_allclose(np.cos(w), np.cos(enclosed), atol=1e-12)


def test_batch_axes_are_transparent():
    g = SUN(3)
    u = g.random(KEY, (3, 4, 4, 2))
    batched = obs.plaquette(u, g)
    single = jnp.stack([obs.plaquette(u[i], g) for i in range(3)])
    np.testing.assert_allclose(batched, single, atol=1e-14)


@pytest.mark.parametrize("shape", [(4, 4), (4, 6, 2), (2, 2, 2, 2)])
def test_link_masks_partition_and_are_independent(shape):
    """Masks (mu, parity) cover every link once; no active link lies in another active link's staple."""
    g = SUN(2)
    d = len(shape)
    masks = [lattice.link_mask(shape, mu, p) for mu in range(d) for p in (0, 1)]
    np.testing.assert_array_equal(sum(m.astype(int) for m in masks), 1)
    u = hot(g, shape)
    for mask in masks:
        mu = int(np.argmax(mask.reshape(-1, d).any(0)))
        idx = np.argwhere(mask)[0]
        # perturb one active link; the staple sum of every active link must stay the same
        bump = g.random(jax.random.PRNGKey(99), ())
        v = u.at[tuple(idx)].set(g.mul(bump, u[tuple(idx)]))
        s_u = lattice.staple_sum(u, mu, g)
        s_v = lattice.staple_sum(v, mu, g)
        active_sites = mask[..., mu]
        diff = jnp.max(jnp.abs(s_u - s_v), axis=(-2, -1))
        assert float(jnp.max(jnp.where(active_sites, diff, 0.0))) < 1e-13
        assert float(jnp.max(diff)) > 1e-3  # the perturbation is visible to frozen links' staples


def test_checkerboard():
    cb = lattice.checkerboard((4, 6))
    assert cb.shape == (4, 6) and cb.sum() == 12 and cb[0, 0] == 0 and cb[0, 1] == 1


@pytest.mark.parametrize(
    "shape,match",
    [((0, 4), "positive"), ((4,), "at least 2"), ((4, -2), "positive"), ("ab", "sequence of positive"),
     ((4.5, 4), "integers")],
)
def test_validate_shape_errors(shape, match):
    with pytest.raises(ValueError, match=match):
        lattice.validate_shape(shape)


def test_mask_errors():
    with pytest.raises(ValueError, match="even"):
        lattice.link_mask((4, 5), 0, 0)
    with pytest.raises(ValueError, match="even"):
        lattice.checkerboard((3, 4))
    with pytest.raises(ValueError, match="mu must be"):
        lattice.link_mask((4, 4), 2, 0)
    with pytest.raises(ValueError, match="parity"):
        lattice.link_mask((4, 4), 0, 2)


def test_check_links_errors():
    with pytest.raises(ValueError, match="trailing axes"):
        lattice.check_links(jnp.zeros((4, 4, 3)), U1(), (4, 4))
    with pytest.raises(ValueError, match="angles"):
        lattice.check_links(jnp.zeros((4, 4, 2), complex), U1(), (4, 4))
    with pytest.raises(ValueError, match="complex"):
        lattice.check_links(jnp.zeros((4, 4, 2, 3, 3)), SUN(3), (4, 4))
    with pytest.raises(ValueError, match="trailing axes"):
        lattice.check_links(jnp.zeros((4, 4, 2, 2, 2), complex), SUN(3), (4, 4))


@pytest.mark.parametrize("group,shape,batch,dtype,slabs", [
    (SUN(2), (4, 2, 6), (3,), jnp.complex128, False), (SUN(3), (2, 2, 2, 4), (2,), jnp.complex64, False),
    (SUN(2), (4, 2, 6), (3,), jnp.complex128, True), (SUN(3), (3, 2, 2, 4), (2,), jnp.complex64, True)])
def test_staple_force_matches_reference_kernel(group, shape, batch, dtype, slabs):
    """The shared-staple blocked kernel (issue 16), whole-field and slab by slab (an odd time extent too), gives
    the reference kernel's P_TA(U_mu Sigma_mu) to rounding, on Haar-random and on smooth links (``exp(0.3 X)`` with
    random algebra X, plaquettes near 1 as on fine lattices), with plane weights, in double and single precision;
    the weights matter (negative control: the unweighted kernel differs).  Force = autodiff of the action:
    tests/test_theories.py."""
    d = len(shape)
    links = batch + tuple(shape) + (d,)
    hot_u = group.random(KEY, links)
    smooth = group.exp(0.3 * group.random_algebra(jax.random.PRNGKey(2), links))
    w = np.arange(1.0, 1.0 + d * d).reshape(d, d)
    w = (w + w.T) / 7.0

    @jax.jit
    def both(u):
        ww = jnp.asarray(w, u.real.dtype)
        return (lattice.staple_force_xla(u, group, ww, slabs=slabs), lattice.staple_force_reference(u, group, ww),
                lattice.staple_force_xla(u, group, slabs=slabs))

    tol = 1e-12 if dtype == jnp.complex128 else 2e-5
    for u in (hot_u.astype(dtype), smooth.astype(dtype)):
        new_w, ref_w, new = both(u)
        assert new_w.shape == u.shape and new_w.dtype == dtype
        scale = float(jnp.max(jnp.abs(ref_w)))
        assert scale > 0.1
        assert float(jnp.max(jnp.abs(new_w - ref_w))) < tol * scale
        assert float(jnp.max(jnp.abs(new_w - new))) > 0.1 * scale
    with pytest.raises(ValueError, match="SU\\(N\\)"):
        lattice.staple_force(U1().random(KEY, tuple(shape) + (d,)), U1())


def test_staple_force_slabs_dispatch_vmap_and_gradient(monkeypatch):
    """The slab kernel (a loop over time slices) is what ``staple_force`` runs on CPUs once a direction's field
    reaches ``lattice._SLAB_BYTES`` (its jaxpr has the loop; not below); under ``vmap`` over chains and in reverse
    mode (the tangent fields differentiate through Wilson-flow steps) it gives the whole-field kernel's numbers."""
    g = SUN(3)
    u = g.random(KEY, (2, 3, 2, 2, 2, 4))
    x = g.random_algebra(jax.random.PRNGKey(5), u.shape[1:-2])

    def has_loop(fn):
        jaxpr = str(jax.make_jaxpr(fn)(u))
        return "scan" in jaxpr or "while" in jaxpr

    assert not has_loop(lambda v: lattice.staple_force(v, g))
    monkeypatch.setattr(lattice, "_SLAB_BYTES", 0)
    assert has_loop(lambda v: lattice.staple_force(v, g))
    ref = lattice.staple_force_xla(u, g, slabs=False)
    np.testing.assert_allclose(np.asarray(jax.vmap(lambda v: lattice.staple_force(v, g))(u)), np.asarray(ref),
                               atol=1e-13)

    def loss(v, slabs):
        return jnp.sum(jnp.real(lattice.staple_force_xla(v, g, slabs=slabs) * x) ** 2)

    grads = [jax.grad(loss)(u[0], s) for s in (False, True)]
    assert float(jnp.max(jnp.abs(grads[0]))) > 0.1
    np.testing.assert_allclose(np.asarray(grads[1]), np.asarray(grads[0]), atol=1e-12)


def test_staple_force_vmapped_chains_run_one_after_the_other(monkeypatch):
    """Under ``vmap`` over chains (as ``corrflow generate`` runs them) ``staple_force`` on CPUs loops over the
    chains once the batch reaches ``lattice._SLAB_BYTES`` per direction (a ``custom_vmap`` rule; its jaxpr has the
    loop of the chain count): the vectorised kernel's numbers, with plane weights and with per-chain weights, and
    the kernel's own derivatives in forward and reverse mode."""
    g = SUN(3)
    u = g.random(KEY, (2, 2, 2, 2, 2, 4))
    x = g.random_algebra(jax.random.PRNGKey(6), u.shape[:-2])
    w = jnp.asarray(np.arange(16.0).reshape(4, 4) / 10 + 1)
    w = (w + w.T) / 2
    forces = {"plain": lambda v: lattice.staple_force(v, g), "weighted": lambda v: lattice.staple_force(v, g, w)}

    def has_chain_loop(fn):
        return "length=2" in str(jax.make_jaxpr(jax.vmap(fn))(u))

    assert not has_chain_loop(forces["plain"])
    monkeypatch.setattr(lattice, "_SLAB_BYTES", 4000)  # one chain below (no slabs), both above
    assert u[0].nbytes // 4 < lattice._SLAB_BYTES <= u.nbytes // 4
    for name, fn in forces.items():
        assert has_chain_loop(fn), name
        ref = lattice.staple_force_xla(u, g, w if name == "weighted" else None)
        np.testing.assert_allclose(np.asarray(jax.vmap(fn)(u)), np.asarray(ref), atol=1e-13)
    ws = jnp.stack([w, 2 * w])  # per-chain weights: vectorised
    np.testing.assert_allclose(np.asarray(jax.vmap(lambda v, b: lattice.staple_force(v, g, b))(u, ws)),
                               np.asarray(jax.vmap(lambda v, b: lattice.staple_force_xla(v, g, b))(u, ws)), atol=1e-13)

    def loss(fn):
        return lambda v: jnp.sum(jnp.real(jax.vmap(fn)(v) * x) ** 2)

    kernel = lambda v: lattice.staple_force_xla(v, g)  # noqa: E731
    grad_ref = jax.grad(loss(kernel))(u)
    assert float(jnp.max(jnp.abs(grad_ref))) > 0.1
    np.testing.assert_allclose(np.asarray(jax.grad(loss(forces["plain"]))(u)), np.asarray(grad_ref), atol=1e-12)
    t = g.random_algebra(jax.random.PRNGKey(7), u.shape[:-2])
    jvp = jax.jvp(jax.vmap(forces["plain"]), (u,), (t,))[1]
    np.testing.assert_allclose(np.asarray(jvp), np.asarray(jax.jvp(jax.vmap(kernel), (u,), (t,))[1]), atol=1e-12)


def test_staple_force_materialised_transposition(monkeypatch):
    """Large fields go through the lax.map transposition (lattice._MATERIALISE_BYTES): same numbers."""
    g = SUN(3)
    u = g.random(KEY, (2, 2, 2, 2, 4, 4))
    ref = lattice.staple_force(u, g)
    monkeypatch.setattr(lattice, "_MATERIALISE_BYTES", 0)
    np.testing.assert_allclose(np.asarray(lattice.staple_force(u, g)), np.asarray(ref), atol=1e-13)
    np.testing.assert_allclose(np.asarray(lattice.staple_force_reference(u, g)), np.asarray(ref), atol=1e-12)
