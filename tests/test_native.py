"""The native CPU staple force (corrflow.native, issue 16) against the XLA and reference kernels."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from corrflow import lattice, native  # (importing corrflow enables x64)
from corrflow.groups import SUN
from corrflow.tangent.core import gradient

G = SUN(3)
KEY = jax.random.PRNGKey(11)


def test_native_kernel_builds_where_a_compiler_is():
    """On a machine with a C++ compiler (CI's and ours) the kernel must build: a failed build would silently cost the
    speed (``auto`` falls back with a warning), so here it is an error."""
    lib, why = native.build()
    if native._compiler() is None:
        pytest.skip("no C++ compiler on this machine: the JAX kernels are used")
    assert lib is not None and lib.exists(), why
    assert native._registered() == ""


@pytest.mark.parametrize("shape,batch,dtype", [
    ((4, 4, 4, 4), (), jnp.complex128),          # 4 lanes along x0
    ((8, 2, 2, 2), (2,), jnp.complex64),         # 8 lanes along x0, two chains
    ((3, 2, 2, 8), (), jnp.complex128),          # 8 lanes along x3
    ((2, 6, 4, 2), (2, 1), jnp.complex128),      # 4 lanes along x2, two batch axes
])
def test_native_force_matches_the_reference_kernels(shape, batch, dtype):
    """The native kernel gives ``P_TA(U_mu Sigma_mu)`` of the reference kernel (per-direction staple sums) to
    rounding, on Haar-random and on smooth links, with and without plane weights, for every lane width and axis; the
    weights matter (negative control: the unweighted force differs)."""
    links = batch + shape + (4,)
    w = np.arange(1.0, 17.0).reshape(4, 4)
    w = jnp.asarray((w + w.T) / 9.0)
    hot = G.random(KEY, links)
    smooth = G.exp(0.3 * G.random_algebra(jax.random.PRNGKey(2), links))
    tol = 1e-13 if dtype == jnp.complex128 else 3e-6
    for u in (hot.astype(dtype), smooth.astype(dtype)):
        assert native.applies(u, G)
        for weights in (None, w):
            got = jax.jit(lambda v, ww: native.staple_force(v, G, ww))(u, weights)
            ref = lattice.staple_force_reference(u, G, weights)
            assert got.shape == u.shape and got.dtype == dtype
            scale = float(jnp.max(jnp.abs(ref)))
            assert scale > 0.1
            assert float(jnp.max(jnp.abs(got - ref))) < tol * scale
        assert float(jnp.max(jnp.abs(got - lattice.staple_force_xla(u, G)))) > 0.1 * scale


def test_native_force_is_the_gradient_of_the_action_and_batches():
    """Through ``lattice.staple_force`` (what HMC and the Wilson flow call): on 4^4 with anisotropic plane couplings
    ``c`` as weights, ``P_TA(U Σ) / (2N)`` is the right-trivialised gradient of the Wilson action
    ``Σ_P c_P (1 − Re tr P / N)`` (autodiff, no native code involved); under ``vmap`` with per-chain weights the
    chains get their own weights; and forward- and reverse-mode derivatives through it are the XLA kernel's
    (``custom_jvp``)."""
    u = G.random(KEY, (2, 4, 4, 4, 4, 4))
    assert native.use_native(u[0], G)
    c = jnp.asarray(np.array([[0, 1.0, 1, 1], [1, 0, 0.7, 0.7], [1, 0.7, 0, 0.7], [1, 0.7, 0.7, 0]]) * 5.9)

    def action(v):  # Wilson action with plane couplings c_{mu nu}: sum over planes c (1 - Re tr P / N)
        total = 0.0
        for m in range(4):
            for n in range(m + 1, 4):
                re_tr = jnp.real(jnp.trace(lattice.plaquette(v, m, n, G), axis1=-2, axis2=-1))
                total = total + c[m, n] * jnp.sum(1.0 - re_tr / 3)
        return total

    got = G.algebra_coords(lattice.staple_force(u[0], G, c)) / 6
    grad = gradient(action, u[0], G)
    assert float(jnp.max(jnp.abs(grad))) > 1.0
    np.testing.assert_allclose(np.asarray(got), np.asarray(grad), atol=1e-11)
    ws = jnp.stack([c, 0.5 * c])
    batched = jax.vmap(lambda v, b: lattice.staple_force(v, G, b))(u, ws)
    ref = jax.vmap(lambda v, b: lattice.staple_force_xla(v, G, b))(u, ws)
    np.testing.assert_allclose(np.asarray(batched), np.asarray(ref), atol=1e-12)
    x = G.random_algebra(jax.random.PRNGKey(7), u.shape[1:-2])
    t = G.random_algebra(jax.random.PRNGKey(8), u.shape[1:-2])

    def loss(fn):
        return lambda v: jnp.sum(jnp.real(fn(v) * x) ** 2)

    nat, xla = (lambda v: lattice.staple_force(v, G)), (lambda v: lattice.staple_force_xla(v, G))
    np.testing.assert_allclose(np.asarray(jax.grad(loss(nat))(u[0])), np.asarray(jax.grad(loss(xla))(u[0])),
                               atol=1e-11)
    jvps = [jax.jvp(f, (u[0],), (t,))[1] for f in (nat, xla)]
    np.testing.assert_allclose(np.asarray(jvps[0]), np.asarray(jvps[1]), atol=1e-11)


def test_native_choice(monkeypatch):
    """``CORRFLOW_NATIVE``: ``0`` never, ``auto`` where it applies (not 6^4, not SU(2), not 2D), a bad value is a
    one-line error; a kernel that cannot be built falls back with one warning under ``auto`` and raises under ``1``."""
    u4, u6 = G.random(KEY, (4, 4, 4, 4, 4)), G.random(KEY, (6, 6, 6, 6, 4))
    monkeypatch.setenv(native.ENV, "0")
    assert not native.use_native(u4, G)
    monkeypatch.setenv(native.ENV, "auto")
    assert native.use_native(u4, G)
    assert not native.applies(u6, G)
    assert not native.applies(SUN(2).random(KEY, (4, 4, 4, 4, 4)), SUN(2))
    assert not native.applies(G.random(KEY, (8, 8, 2)), G)
    assert not native.applies(u4.astype(jnp.complex64).real, G)
    monkeypatch.setenv(native.ENV, "fast")
    with pytest.raises(ValueError, match="CORRFLOW_NATIVE='fast'"):
        native.use_native(u4, G)
    monkeypatch.setattr(native, "_registered", lambda: "no C++ compiler (set CXX)")
    monkeypatch.setenv(native.ENV, "auto")
    native._warn_once.cache_clear()
    with pytest.warns(RuntimeWarning, match="native CPU kernels unavailable"):
        assert not native.use_native(u4, G)
    monkeypatch.setenv(native.ENV, "1")
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        native.use_native(u4, G)


def test_native_exp_left_matches_the_jax_kernel_and_libm():
    """``exp(X) U`` by the native kernel (``SUN(3).exp_left`` on CPUs) against the JAX kernel and the libm formula
    over five decades of ``|X|`` (the Taylor branch below ``c1 = 1e-3`` included), with a count of matrices that is
    not a multiple of the 8 lanes; unitary to rounding; under ``vmap`` and in forward / reverse mode the JAX
    kernel's numbers and derivatives.  Negative control: ``exp(X)`` and ``exp(-X)`` differ."""
    from corrflow.matrices import exp_su3, matmul

    u = G.random(jax.random.PRNGKey(4), (2, 13, 3))
    for scale in (1e-3, 0.05, 0.5, 2.0, 10.0):
        x = scale * G.random_algebra(jax.random.PRNGKey(3), (2, 13, 3))
        for dtype, tol in ((jnp.complex128, 4e-15), (jnp.complex64, 4e-6)):
            xx, uu = x.astype(dtype), u.astype(dtype)
            assert native.use_native_exp(xx, uu, G)
            got = jax.jit(G.exp_left)(xx, uu)
            assert got.dtype == dtype
            lib = matmul(exp_su3(x, libm=True), u)
            assert float(jnp.max(jnp.abs(got - lib))) < tol * max(1.0, scale)
            assert float(jnp.max(jnp.abs(got - matmul(exp_su3(xx), uu)))) < tol * max(1.0, scale)
            assert float(G.unitarity_violation(got.astype(jnp.complex128))) < 10 * tol * max(1.0, scale)
        assert float(jnp.max(jnp.abs(G.exp_left(x, u) - G.exp_left(-x, u)))) > 0.1 * min(scale, 1.0)
    x = 0.5 * G.random_algebra(jax.random.PRNGKey(3), (2, 13, 3))
    ref = lambda a, b: matmul(exp_su3(a), b)  # noqa: E731
    np.testing.assert_allclose(np.asarray(jax.vmap(G.exp_left)(x, u)), np.asarray(ref(x, u)), atol=4e-15)
    t = 0.3 * G.random_algebra(jax.random.PRNGKey(9), x.shape[:-2])
    np.testing.assert_allclose(np.asarray(jax.jvp(G.exp_left, (x, u), (t, t))[1]),
                               np.asarray(jax.jvp(ref, (x, u), (t, t))[1]), atol=1e-13)
    loss = lambda f: lambda a: jnp.sum(jnp.real(f(a, u) * jnp.conj(u)))  # noqa: E731
    np.testing.assert_allclose(np.asarray(jax.grad(loss(G.exp_left))(x)), np.asarray(jax.grad(loss(ref))(x)),
                               atol=1e-13)
    assert not native.exp_applies(x, u[0], G)  # shapes must agree (broadcasting stays with JAX)
    assert not native.exp_applies(x[..., :2, :2], u[..., :2, :2], SUN(2))


@pytest.mark.parametrize("shape,chains,dtype", [
    ((4, 4, 4, 4), 1, jnp.complex128),   # 4 lanes, lanes of both parities in a block
    ((8, 4, 4, 6), 2, jnp.complex128),   # 4 lanes along x0, one parity per block; two chains
    ((16, 4, 4, 2), 1, jnp.complex64),   # 8 lanes along x0
])
def test_native_overrelax_sweep_matches_the_jax_sweep(monkeypatch, shape, chains, dtype):
    """An over-relaxation sweep by the native kernel equals the JAX sweep (same directions, parities and subgroups,
    then re-unitarised) to rounding on heat-bath-thermalised anisotropic links, keeps the action to rounding and
    moves the links (negative control); a whole heat-bath update (1 heat-bath + 2 over-relaxation sweeps) equals
    the JAX update to rounding (the heat bath's draws are the same)."""
    from corrflow import heatbath, hmc
    from corrflow.theories import WilsonGaugeAction

    th = WilsonGaugeAction("su3", shape, beta=5.9, xi=1.3)
    u = jnp.stack([hmc.hot_start(jax.random.PRNGKey(i), th, dtype=dtype) for i in range(chains)])
    u = heatbath.heatbath_sweep(jax.random.PRNGKey(3), u, th)
    assert native.use_native_sweeps(u, G)
    cfg = heatbath.HeatbathConfig(n_heatbath=1, n_overrelax=2)
    got = heatbath.overrelax_sweep(u, th)
    got_update = heatbath.update(jax.random.PRNGKey(5), u, th, cfg)
    monkeypatch.setenv(native.ENV, "0")
    assert not native.use_native_sweeps(u, G)
    ref = heatbath._sweep(None, u, th, False)  # traced afresh: the JAX sweep
    ref_update = jax.jit(heatbath._update_impl, static_argnames="config")(jax.random.PRNGKey(5), u, th, cfg)
    tol = 1e-12 if dtype == jnp.complex128 else 1e-4
    assert float(jnp.max(jnp.abs(got - ref))) < tol
    assert float(jnp.max(jnp.abs(got_update - ref_update))) < 10 * tol
    assert float(jnp.max(jnp.abs(got - u))) > 0.5
    for c in range(chains):
        s0, s1 = float(th.action(u[c])), float(th.action(got[c]))
        assert abs(s1 - s0) < (1e-9 if dtype == jnp.complex128 else 1e-2) * abs(s0)


def test_native_heatbath_sweep_samples_the_jax_distribution(monkeypatch):
    """The native heat-bath sweep (its own Threefry stream) against the JAX sweep on 4^4 at β = 5.7 (Kennedy–
    Pendleton) and β = 1.5 (mostly Creutz): the plaquette of 2 chains x 120 sweeps after 30 agrees within 4 combined
    sigma (Gamma-method errors); links stay in SU(3).  Per-chain keys under ``vmap`` give each chain the numbers it
    gets alone (bit for bit: the counters hold chain, site and draw, not the batch position), and a second key
    gives other links (negative control).  The exact references (strong coupling, HMC) are in test_heatbath.py,
    whose 4D tests run through these kernels."""
    from corrflow import heatbath, hmc
    from corrflow.observables.gauge import plaquette
    from corrflow.stats import gamma_method
    from corrflow.theories import WilsonGaugeAction

    th0 = WilsonGaugeAction("su3", (4, 4, 4, 4), beta=5.7)
    u0 = jnp.stack([hmc.hot_start(jax.random.PRNGKey(i), th0) for i in range(2)])
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    sweep = jax.jit(jax.vmap(lambda k, u: heatbath._sweep(k, u, th0, True)))
    both = sweep(keys, u0)
    alone = jax.jit(lambda k, u: heatbath._sweep(k, u, th0, True))(keys[1], u0[1])
    assert np.array_equal(np.asarray(both[1]), np.asarray(alone))
    assert float(jnp.max(jnp.abs(sweep(keys[::-1], u0)[1] - alone))) > 0.1

    def chain(beta):
        th = th0.replace(beta=beta)
        f = jax.jit(jax.vmap(lambda k, u: heatbath._sweep(k, u, th, True)))
        u, p = u0, []
        for t in range(150):
            u = f(jax.vmap(lambda k: jax.random.fold_in(k, t))(keys), u)
            if t >= 30:
                p.append(np.asarray(plaquette(u, G)))  # one value per chain
        assert float(G.unitarity_violation(u)) < 1e-12
        return gamma_method(np.stack(p, axis=1))

    for beta in (5.7, 1.5):
        nat = chain(beta)
        monkeypatch.setenv(native.ENV, "0")
        ref = chain(beta)
        monkeypatch.setenv(native.ENV, "auto")
        pull = (nat.value - ref.value) / np.hypot(nat.error, ref.error)
        assert abs(pull) < 4, (beta, nat, ref)
        assert nat.error < 0.01 * abs(nat.value) and 0.0 < nat.value < 0.7


def test_native_layer_jacobian_matches_the_jax_algebra():
    """``(g, log J)`` of a residual layer's link update (``flows.jacobian.algebra_and_logj``) by the native kernel
    against the JAX code on ``W = U Σ`` with ``|Σ|`` up to the layers' bound, complex128 / complex64, a count not a
    multiple of 8 and under ``vmap``; gradients (training) are the JAX code's; ``log J`` is not a constant
    (negative control: it changes with ``Σ``)."""
    from corrflow.flows import jacobian

    u = G.random(jax.random.PRNGKey(1), (3, 67))
    sigma = 0.3 * G.random(jax.random.PRNGKey(2), (3, 67))
    for dtype, tol in ((jnp.complex128, 1e-13), (jnp.complex64, 2e-6)):
        w = G.mul(u, sigma).astype(dtype)
        assert native.use_native_jacobian(w, G)
        x, logj = jax.jit(lambda v: jacobian.algebra_and_logj(G, v))(w)
        x0, logj0 = jacobian._algebra_and_logj_jax(G, w)
        assert x.dtype == dtype and logj.dtype == w.real.dtype and logj.shape == (3, 67)
        assert float(jnp.max(jnp.abs(x - x0))) < tol and float(jnp.max(jnp.abs(logj - logj0))) < 10 * tol
        assert float(jnp.std(logj0)) > 0.05
    w = G.mul(u, sigma)
    xv, lv = jax.vmap(lambda v: jacobian.algebra_and_logj(G, v))(w)
    np.testing.assert_allclose(np.asarray(lv), np.asarray(jacobian._algebra_and_logj_jax(G, w)[1]), atol=1e-13)

    def loss(fn):
        return lambda s: jnp.sum(fn(G, G.mul(u, s))[1])

    np.testing.assert_allclose(np.asarray(jax.grad(loss(jacobian.algebra_and_logj))(sigma)),
                               np.asarray(jax.grad(loss(jacobian._algebra_and_logj_jax))(sigma)), atol=1e-12)


def test_native_layer_staple_sums_match_the_jax_gathers(monkeypatch):
    """The residual layers' staple sums at their active sites (plaquette and rectangle paths, adjoint patterns of
    every kind) by the native path kernel equal the JAX gathers to rounding, so a whole layer (forward and its
    fixed-point inverse, with ``log J``) gives the JAX layer's numbers; the layer's gradient in its coefficients
    (training) is the JAX code's; chains under ``vmap`` get their own sums (negative control: chains differ)."""
    from corrflow.flows import make_flow
    from corrflow.flows.staples import gathered_staple_sums

    shape = (8, 4, 4, 4)
    u = G.random(KEY, (2,) + shape + (4,))
    flow = make_flow("su3", shape, loops=("plaquette", "rectangle"))
    layer = flow.layers[0]
    mask = jnp.asarray(flow.masks()[0, 0])
    raw = jnp.asarray([0.3, -0.2])
    flat = u.reshape((2, -1, 3, 3))
    sites = layer._sites(mask)
    _, plan = layer._plan(None, None, None)
    assert native.use_native_paths(flat, G)

    def run():
        sums = jax.jit(jax.vmap(lambda f: gathered_staple_sums(f, sites, plan, G, shape)))(flat)
        fwd = jax.jit(jax.vmap(lambda v: layer.forward(raw, mask, v)))(u)
        back = jax.vmap(lambda v: layer.reverse(raw, mask, v))(fwd[0])
        grad = jax.grad(lambda r: jnp.sum(layer.forward(r, mask, u[0])[1]))(raw)
        return sums, fwd, back, grad

    got = run()
    monkeypatch.setenv(native.ENV, "0")
    assert not native.use_native_paths(flat, G)
    ref = run()
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref)):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-11)
    assert float(jnp.max(jnp.abs(got[0][0][0] - got[0][0][1]))) > 0.1
    np.testing.assert_allclose(np.asarray(got[2][0]), np.asarray(u), atol=1e-10)  # the inverse inverts


@pytest.mark.parametrize("shape,dtype,n", [
    ((8, 4, 4, 4), jnp.complex64, 61),   # a tail block of 5 lanes
    ((4, 6, 2), jnp.complex128, 24),     # 3D; rectangles wrap around the extent-2 axis (offsets of +-2)
    ((2, 4), jnp.complex128, 8),         # 2D SU(3)
])
def test_native_path_sums_any_lattice_against_rolled_staples(shape, dtype, n):
    """Every loop shape of a layer in one native pass (distinct factors fetched once, link indices computed in the
    kernel) equals the whole-lattice rolled staple sums (:func:`staple_sums`, an independent construction) at any
    active sites, in 2D, 3D and 4D, with lattice extents the rectangles wrap around; chains with their own sites
    and directions with their own gather plans under ``vmap`` get their own sums (negative control: they differ);
    the gather plan's distinct-factor pattern is the same for every direction (one compiled layer body)."""
    from corrflow.flows.staples import gather_plan, gathered_staple_sums, staple_sums

    loops = ("plaquette", "rectangle")
    d = len(shape)
    u = G.random(jax.random.PRNGKey(5), (2,) + shape + (d,)).astype(dtype)
    flat = u.reshape((2, -1, 3, 3))
    n_sites = int(np.prod(shape))
    rng = np.random.default_rng(3)
    sites = jnp.asarray(np.stack([np.sort(rng.choice(n_sites, n, replace=False)) for _ in range(2)]), jnp.int32)
    plans = [gather_plan(mu, d, loops) for mu in range(d)]
    for p in plans[1:]:
        assert np.array_equal(p.distinct, plans[0].distinct)
        assert all(np.array_equal(a, b) for a, b in zip(p.factor_ids, plans[0].factor_ids))
        assert all(np.array_equal(a, b) for a, b in zip(p.dagger, plans[0].dagger))
    assert native.use_native_paths(flat, G)
    tol = 2e-5 if dtype == jnp.complex64 else 1e-12
    for mu in range(d):
        ref = [s.reshape((2, n_sites, 3, 3)) for s in staple_sums(u, mu, loops, G)]
        got = jax.jit(jax.vmap(lambda f, s: gathered_staple_sums(f, s, plans[mu], G, shape)))(flat, sites)
        for r, g in zip(ref, got):
            want = jnp.stack([r[c, sites[c]] for c in range(2)])
            np.testing.assert_allclose(np.asarray(g), np.asarray(want), atol=tol)
    # one chain, every direction's plan as data under vmap (as the flow's scan passes them)
    offsets = tuple(jnp.asarray(np.stack([p.offsets[k] for p in plans])) for k in range(2))
    nus = tuple(jnp.asarray(np.stack([p.nus[k] for p in plans])) for k in range(2))
    by_dir = jax.jit(jax.vmap(lambda o, v: gathered_staple_sums(flat[0], sites[0],
                                                                 plans[0]._replace(offsets=o, nus=v), G, shape)))
    got = by_dir(offsets, nus)
    for mu in range(d):
        for k, r in enumerate(staple_sums(u[0], mu, loops, G)):
            np.testing.assert_allclose(np.asarray(got[k][mu]), np.asarray(r.reshape(n_sites, 3, 3)[sites[0]]),
                                       atol=tol)
    assert float(jnp.max(jnp.abs(got[1][0] - got[1][1]))) > 0.1


@pytest.mark.parametrize("shape,chains,dtype", [
    ((8, 8), 3, jnp.float64),      # more chains than threads: a chain per work item
    ((5, 7), 1, jnp.float32),      # one chain: the passes in parallel over rows; odd extents, partial vectors
    ((4, 6, 3), 1, jnp.float64),   # 3D
    ((4, 2, 4, 4), 2, jnp.float32),  # 4D, an extent of 2
])
def test_native_u1_force_is_the_gradient_of_the_action(monkeypatch, shape, chains, dtype):
    """The native U(1) force equals the JAX force from the plaquette sines to rounding and the autodiff gradient of
    the Wilson action (anisotropic couplings and a Feynman–Hellmann source: planes of their own ``b``); per-chain
    couplings under ``vmap`` (the theory as data) give each chain its own force; derivatives are the JAX code's
    (``jvp`` in the links and in ``beta``); with ``CORRFLOW_NATIVE=0`` the JAX path runs (negative control: the
    isotropic force differs)."""
    from corrflow.theories import WilsonGaugeAction, gauge

    d = len(shape)
    th = WilsonGaugeAction("u1", shape, beta=1.7, xi=1.3, lam=0.2)
    u = jax.random.uniform(jax.random.PRNGKey(4), (chains,) + shape + (d,), dtype, -7.0, 7.0)
    assert native.use_native_u1(u, th.group)
    tol = 1e-12 if dtype == jnp.float64 else 2e-5
    f = jax.jit(th.force)(u)
    assert f.shape == u.shape and f.dtype == u.dtype
    np.testing.assert_allclose(np.asarray(f), np.asarray(gauge._u1_force_jax(u, th.plane_couplings())), atol=tol)
    grad = jax.grad(lambda v: jnp.sum(th.action(v.astype(jnp.float64))))(u.astype(jnp.float64))
    np.testing.assert_allclose(np.asarray(f), np.asarray(grad), atol=10 * tol)
    iso = WilsonGaugeAction("u1", shape, beta=1.7)
    assert float(jnp.max(jnp.abs(jax.jit(iso.force)(u) - f))) > 0.1
    betas = jnp.asarray([1.0, 2.5])
    def force_at(b, v):
        return WilsonGaugeAction("u1", shape, beta=b).force(v)

    per_chain = jax.jit(jax.vmap(force_at))(betas, u[:1].repeat(2, 0))
    one_field = jax.jit(jax.vmap(force_at, in_axes=(0, None)))(betas, u[0])  # one field, two couplings
    for k in range(2):
        want = WilsonGaugeAction("u1", shape, beta=float(betas[k])).force(u[0])
        np.testing.assert_allclose(np.asarray(per_chain[k]), np.asarray(want), atol=tol)
        np.testing.assert_allclose(np.asarray(one_field[k]), np.asarray(want), atol=tol)
    tangent = jax.random.normal(jax.random.PRNGKey(5), u.shape, dtype)

    def jvp(fn):
        return jax.jvp(lambda v, b: fn(v, b), (u, jnp.asarray(1.7, dtype)), (tangent, jnp.asarray(1.0, dtype)))[1]

    got = jvp(lambda v, b: WilsonGaugeAction("u1", shape, beta=b, xi=1.3, lam=0.2).force(v))
    monkeypatch.setenv(native.ENV, "0")
    assert not native.use_native_u1(u, th.group)
    want = jvp(lambda v, b: WilsonGaugeAction("u1", shape, beta=b, xi=1.3, lam=0.2).force(v))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=10 * tol)
