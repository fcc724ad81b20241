"""Cabibbo–Marinari heat bath and over-relaxation (corrflow.heatbath).

Statistical checks use fixed seeds and Gamma-method (autocorrelation-aware) errors; tolerances are
pulls in sigma.  Compilation dominates the run time, so each jitted kernel (one per lattice shape,
group, dtype, ``n_updates`` and ``measure``) is compiled once: runs are made of blocks of one fixed
length, the measurement functions are module-level objects, couplings are traced (changing beta does
not recompile) and starts are drawn in numpy.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gauge_helpers import gauge_transform

from corrflow import HMCConfig, exact, heatbath, hmc, lattice, make_theory, su2_subgroups
from corrflow.heatbath import HeatbathConfig
from corrflow.observables.gauge import plaquette
from corrflow.stats import gamma_method

KEY = jax.random.PRNGKey(11)
CONFIG = HeatbathConfig(n_heatbath=1, n_overrelax=4)
SU2 = make_theory("su2", (8, 8), beta=2.0).group
SU3 = make_theory("su3", (8, 8), beta=4.0).group


def _plaq_su2(u):
    return plaquette(u, SU2)


def _plaq_su3(u):
    return plaquette(u, SU3)


def _haar(seed, group, shape, dtype=np.complex128):
    """Haar-random SU(N) matrices of shape ``shape + (N, N)`` in numpy (QR of a Ginibre matrix, phases and
    determinant fixed).  Cheaper here than ``group.random``, whose multi-axis jax.random draw takes
    seconds to compile per shape."""
    n = group.N
    rng = np.random.default_rng(seed)
    z = rng.normal(size=tuple(shape) + (n, n)) + 1j * rng.normal(size=tuple(shape) + (n, n))
    q, r = np.linalg.qr(z)
    d = np.diagonal(r, axis1=-2, axis2=-1)
    q = q * (d / np.abs(d))[..., None, :]
    q = q * np.exp(-1j * np.angle(np.linalg.det(q)) / n)[..., None, None]
    return jnp.asarray(q.astype(dtype))


def _hot(seed, theory, n_chains, dtype=np.complex128):
    return _haar(seed, theory.group, (n_chains,) + theory.link_index_shape, dtype)


_action = jax.jit(lambda theory, u: theory.action(u))


def _pull(a, b):
    return (a.value - b.value) / math.hypot(a.error, b.error)


# ----------------------------------------------------------------------------------------
# normalisation of the local action (the heat bath's target distribution)
# ----------------------------------------------------------------------------------------


@jax.jit
def _normalisation_check(u, new, theory):
    """``(dS, pred, dev)``: per direction mu, ``dS = S(U with U_mu(x0) -> new[mu]) - S(U)`` and
    ``pred = -(1/N) Re tr[(new[mu] - U_mu(x0)) Sigma_mu(x0)]`` at x0 = (1, ..., 1); ``dev`` is the largest
    difference between the active-site staples used by the sweep (direction 0 of the rotated lattice) and
    staple_sum on the active sites."""
    g, d = theory.group, theory.ndim
    b = theory.plane_couplings()
    site = (1,) * d
    s = theory.action(jnp.stack([u] + [u.at[site + (mu,)].set(new[mu]) for mu in range(d)]))
    sigmas = [lattice.staple_sum(u, mu, g, weights=b) for mu in range(d)]
    pred = jnp.stack([-g.retr((new[mu] - u[site + (mu,)]) @ sigmas[mu][site]) / g.N for mu in range(d)])
    flat = (-1, g.N, g.N)
    us = [u[..., mu, :, :].reshape(flat) for mu in range(d)]
    dev = 0.0
    for t in heatbath._parity_tables(theory.shape):
        active = heatbath._staples_active(us, b, t)
        dev = jnp.maximum(dev, jnp.max(jnp.abs(active - sigmas[0].reshape(flat)[t.active])))
    return s[1:] - s[0], pred, dev


@pytest.mark.parametrize("name,shape,xi,lam", [("su2", (4, 6), 1.3, 0.2), ("su3", (4, 4, 2, 2), 1.2, -0.3)])
def test_local_action_normalisation(name, shape, xi, lam):
    """S(U with U_mu(x) -> U') - S(U) = -(1/N) Re tr[(U' - U_mu(x)) Sigma_mu(x)] with Sigma from staple_sum
    weighted by plane_couplings() (anisotropy and Feynman–Hellmann source included), so the heat bath's
    local weight exp((1/N) Re tr[U Sigma]) is exp(-S); the active-site staples used by the update equal
    staple_sum on the active sites."""
    th = make_theory(name, shape, beta=2.5, xi=xi, lam=lam)
    u = _hot(1, th, 1)[0]
    ds, pred, dev = _normalisation_check(u, _haar(2, th.group, (th.ndim,)), th)
    assert float(jnp.min(jnp.abs(ds))) > 1e-3  # the changes are not trivially zero
    np.testing.assert_allclose(np.asarray(ds), np.asarray(pred), rtol=1e-12, atol=1e-12)
    assert float(dev) < 1e-13


def test_su2_draw_moments():
    """x ~ exp(a x0) dHaar(x): <x0> = I_2(a)/I_1(a) and <x0^2> = 1 - 3 I_2(a)/(a I_1(a)) (|pull| < 4), x on
    the unit sphere, isotropic direction; on both sides of the Kennedy–Pendleton / Creutz switch and at
    a = 0 (Haar)."""
    from scipy import special

    n = 40_000
    a_values = np.array([0.0, 0.4, 1.6, 1.8, 6.0, 40.0])
    a = jnp.asarray(np.repeat(a_values[:, None], n, 1))
    (x0, x1, x2, x3), done = jax.jit(su2_subgroups.draw_x)(jax.random.PRNGKey(7), a)
    assert bool(jnp.all(done))
    x0, xv = np.asarray(x0), np.stack([np.asarray(x1), np.asarray(x2), np.asarray(x3)])
    assert np.max(np.abs(x0**2 + np.sum(xv**2, 0) - 1)) < 1e-12
    for i, av in enumerate(a_values):
        r = special.ive(2, av) / special.ive(1, av) if av > 0 else 0.0
        moments = ((x0[i], r), (x0[i] ** 2, 1 - 3 * r / av if av > 0 else 0.25))
        moments += tuple((c[i], 0.0) for c in xv)
        for obs, ref in moments:
            pull = (obs.mean() - ref) / (obs.std() / math.sqrt(n))
            assert abs(pull) < 4, (av, pull)


# ----------------------------------------------------------------------------------------
# over-relaxation: exact micro-canonical and (SU(2)) gauge covariant
# ----------------------------------------------------------------------------------------

OR_CASES = [("su2", (8, 6), 2.0), ("su3", (4, 4, 4, 4), 5.5)]  # (8, 6): unequal extents, unrolled sweep


@jax.jit
def _or_diagnostics(u, u1, u2, theory):
    """Actions of U, U1, U2, how far U1 moved from U, and the unitarity violation of U2."""
    g = theory.group
    return theory.action(jnp.stack([u, u1, u2])), g.distance(u1, u), g.unitarity_violation(u2)


@pytest.mark.parametrize("name,shape,beta", OR_CASES)
def test_overrelaxation_preserves_action(name, shape, beta):
    """Two OR sweeps leave the action unchanged to 1e-12 (relative) and the links in SU(N) to 1e-12;
    with anisotropy and a Feynman–Hellmann source."""
    th = make_theory(name, shape, beta=beta, xi=1.1, lam=0.1)
    u = _hot(3, th, 2)
    u1 = heatbath.overrelax_sweep(u, th)
    u2 = heatbath.overrelax_sweep(u1, th)
    actions, moved, violation = _or_diagnostics(u, u1, u2, th)
    assert float(moved) > 0.1
    np.testing.assert_allclose(np.asarray(actions[1:]), np.broadcast_to(actions[0], (2, 2)), rtol=1e-12)
    assert float(violation) < 1e-12


def test_overrelaxation_su2_gauge_covariant():
    """OR(U^Omega) = OR(U)^Omega for SU(2) (one subgroup: the reflection U -> V^dag U^dag V^dag).

    Not for SU(3): the Cabibbo–Marinari subgroups (fixed rows/columns) do not transform covariantly, so
    SU(3) over-relaxation, and the heat bath for every N (its draws live in a fixed local frame), are
    gauge covariant only in distribution; no exact test is possible for them."""
    th = make_theory("su2", (8, 6), beta=2.0, xi=1.1, lam=0.1)
    g = th.group
    u = _hot(4, th, 2)
    omega = _haar(5, g, th.shape)
    gt = jax.jit(jax.vmap(lambda x: gauge_transform(x, omega, g)))
    lhs = heatbath.overrelax_sweep(gt(u), th)
    rhs = gt(heatbath.overrelax_sweep(u, th))
    assert float(jnp.max(jnp.abs(lhs - rhs))) < 1e-12


# ----------------------------------------------------------------------------------------
# heat bath against exact 2D results
# ----------------------------------------------------------------------------------------

BLOCK = 50  # updates per compiled sample / sample_chains call (one kernel per lattice, group, dtype)


def _run(theory, measure, n_chains, n_blocks, seed, dtype=np.complex128, vmap=True, config=CONFIG):
    """One block of thermalisation from a hot start, then ``n_blocks`` measured blocks; chains by
    sample_chains (``vmap``) or as a batch axis of sample (one key).  Returns the final links and the
    measurements ``(n_chains, n_blocks * BLOCK)``."""
    u = _hot(seed, theory, n_chains, dtype)
    key = jax.random.PRNGKey(seed)
    keys = jax.random.split(key, n_chains)
    meas = []
    for blk in range(n_blocks + 1):
        if vmap:
            u, p = heatbath.sample_chains(keys, u, theory, config, BLOCK, first_index=blk * BLOCK, measure=measure)
        else:
            u, p = heatbath.sample(key, u, theory, config, BLOCK, first_index=blk * BLOCK, measure=measure)
            p = p.T
        meas.append(np.asarray(p, np.float64))
    return u, np.concatenate(meas[1:], axis=1)


@pytest.mark.parametrize("name,shape,beta,measure", [
    ("su2", (8, 6), 2.0, _plaq_su2), ("su2", (8, 6), 5.0, _plaq_su2),  # unequal extents: unrolled sweep
    ("su3", (8, 8), 4.0, _plaq_su3), ("su3", (8, 8), 9.0, _plaq_su3),  # equal extents: scanned sweep
])
def test_heatbath_exact_2d_plaquette(name, shape, beta, measure):
    """4 chains (a batch axis of sample) x 150 updates: plaquette within 4 sigma of exact.sun_plaquette."""
    th = make_theory(name, shape, beta=beta)
    u, p = _run(th, measure, n_chains=4, n_blocks=3, seed=int(10 * beta), vmap=False)
    res = gamma_method(p)
    ref = exact.sun_plaquette(th.group.N, beta, shape)
    assert abs(res.pull(ref)) < 4, (res, ref, res.pull(ref))
    assert res.tau_int < 3  # heat bath + over-relaxation decorrelates the 2D plaquette within ~1 update
    assert float(th.group.unitarity_violation(u)) < 1e-12


def test_round_cap_is_exact():
    """One accept/reject round per SU(2)-subgroup update (``max_rounds=1``: a site still rejected keeps its link in
    that subgroup, ~15-20% of the updates) and no over-relaxation: still the exact 2D plaquette (4 sigma).  The cap
    mixes the exact heat bath with the identity with a weight that is constant on each subgroup orbit, so it stays
    exact; the default (3 rounds) is the same algorithm with 0.5% skipped updates, and the cap is recorded in the
    ensemble settings only when it is not the default."""
    th = make_theory("su3", (8, 8), beta=4.0)
    cfg = HeatbathConfig(n_heatbath=1, n_overrelax=0, max_rounds=1)
    _, p = _run(th, _plaq_su3, n_chains=4, n_blocks=3, seed=41, config=cfg)
    res = gamma_method(p)
    ref = exact.sun_plaquette(3, 4.0, (8, 8))
    assert abs(res.pull(ref)) < 4, (res, ref, res.pull(ref))
    assert cfg.as_dict() == {"n_heatbath": 1, "n_overrelax": 0, "max_rounds": 1}
    assert HeatbathConfig().as_dict() == {"n_heatbath": 1, "n_overrelax": 4}  # stored settings of older ensembles
    with pytest.raises(ValueError, match="max_rounds"):
        HeatbathConfig(max_rounds=0)


def test_complex64_update():
    """complex64 links stay complex64 and in SU(3) to 1e-5 through update() (batch axis, one key per update),
    and still sample the exact 2D plaquette (4 sigma)."""
    beta, shape = 4.0, (8, 8)
    th = make_theory("su3", shape, beta=beta)
    u = _hot(6, th, 4, np.complex64)
    plaq = jax.jit(_plaq_su3)
    key = jax.random.PRNGKey(6)
    p = []
    for t in range(160):
        u = heatbath.update(jax.random.fold_in(key, t), u, th, CONFIG)
        if t >= 20:
            p.append(np.asarray(plaq(u), np.float64))
    assert u.dtype == jnp.complex64
    assert float(th.group.unitarity_violation(u)) < 1e-5
    res = gamma_method(np.stack(p, axis=1))
    assert abs(res.pull(exact.sun_plaquette(3, beta, shape))) < 4, res


# ----------------------------------------------------------------------------------------
# 4D SU(3): against HMC and against the strong-coupling expansion
# ----------------------------------------------------------------------------------------

SHAPE_4D = (4, 4, 4, 4)
HMC_BLOCK = 50
_hmc_chains = jax.jit(hmc.sample_chains, static_argnames=("n_traj", "measure", "config"))


@pytest.mark.slow
def test_su3_4d_agrees_with_hmc():
    """4^4, beta = 5.5: heat bath (2 chains x 100 updates after 50 from a hot start) and HMC (2 chains x 150
    Omelyan trajectories of length 1 after 50, started from the heat-bath chains' final configurations)
    agree within 4 combined sigma.  Marked slow: compiling the HMC kernel alone takes ~20 s CPU."""
    th = make_theory("su3", SHAPE_4D, beta=5.5)
    u_hb, p_hb = _run(th, _plaq_su3, n_chains=2, n_blocks=2, seed=21)
    hb_res = gamma_method(p_hb)

    cfg = HMCConfig(step_size=0.2, n_steps=5, integrator="omelyan")
    keys = jax.random.split(jax.random.PRNGKey(22), 2)
    st = hmc.init(th, u_hb)
    p_hmc, acc = [], []
    for blk in range(4):  # the first block is discarded
        st, info, p = _hmc_chains(keys, st, th, cfg, n_traj=HMC_BLOCK, first_index=blk * HMC_BLOCK, measure=_plaq_su3)
        if blk:
            p_hmc.append(np.asarray(p))
            acc.append(np.asarray(info.accepted))
    assert np.mean(acc) > 0.6
    hmc_res = gamma_method(np.concatenate(p_hmc, axis=1))
    assert abs(_pull(hb_res, hmc_res)) < 4, (hb_res, hmc_res)
    assert 0.45 < hb_res.value < 0.55, hb_res


def _weyl_su3_link_expectation(beta, n=240):
    """(1/3)<Re tr U> in exp((beta/3) Re tr U) dU by the Weyl integration formula on an n x n grid of
    eigenphases (theta_3 = -theta_1 - theta_2); the trapezoid rule is spectrally accurate here."""
    t = 2 * np.pi * np.arange(n) / n
    t1, t2 = np.meshgrid(t, t, indexing="ij")
    t3 = -t1 - t2
    z = [np.exp(1j * t1), np.exp(1j * t2), np.exp(1j * t3)]
    vdm = np.abs(z[0] - z[1]) ** 2 * np.abs(z[0] - z[2]) ** 2 * np.abs(z[1] - z[2]) ** 2
    retr = np.cos(t1) + np.cos(t2) + np.cos(t3)
    w = vdm * np.exp(beta / 3 * (retr - 3))
    return float(np.sum(w * retr / 3) / np.sum(w))


def test_su3_4d_strong_coupling():
    """4^4, beta = 1: plaquette = u + 4 u^5 + O(u^6) (u ~ 0.056, so the truncation is ~1e-8), u the one-link
    expectation (1/3)<Re tr U> from Weyl quadrature (= d log c_0 / d beta of corrflow.exact.sun); 4 sigma."""
    beta = 1.0
    u_link = _weyl_su3_link_expectation(beta)
    assert abs(u_link - exact.sun_plaquette_infinite_volume(3, beta)) < 1e-12
    th = make_theory("su3", SHAPE_4D, beta=beta)
    _, p = _run(th, _plaq_su3, n_chains=2, n_blocks=1, seed=31)
    res = gamma_method(p)
    assert abs(res.pull(u_link + 4 * u_link**5)) < 4, (res, u_link)


# ----------------------------------------------------------------------------------------
# reproducibility, batching and errors
# ----------------------------------------------------------------------------------------


def test_resumable_bit_for_bit_and_batch_axes():
    """sample(n=2B) == sample(n=B) then sample(n=B, first_index=B), bit for bit (B = BLOCK, the kernel of
    the 2D SU(2) tests); a batch axis with one key gives independent chains (copies of one start diverge)."""
    th = make_theory("su2", (8, 6), beta=2.0)
    u0 = jnp.broadcast_to(_hot(7, th, 1), (4,) + th.link_shape)
    key = jax.random.PRNGKey(99)
    u_long, p_long = heatbath.sample(key, u0, th, CONFIG, 2 * BLOCK, measure=_plaq_su2)
    u_half, p_a = heatbath.sample(key, u0, th, CONFIG, BLOCK, measure=_plaq_su2)
    u_half, p_b = heatbath.sample(key, u_half, th, CONFIG, BLOCK, first_index=BLOCK, measure=_plaq_su2)
    assert u_long.shape == u0.shape and p_long.shape == (2 * BLOCK, 4)
    assert np.array_equal(np.asarray(u_long), np.asarray(u_half))
    assert np.array_equal(np.asarray(p_long), np.concatenate([p_a, p_b]))
    assert float(jnp.max(jnp.abs(u_long[0] - u_long[1]))) > 0.1


def test_errors():
    th = make_theory("su3", (4, 4), beta=2.0)
    u = hmc.cold_start(th)
    u1 = make_theory("u1", (4, 4), beta=1.0)
    with pytest.raises(ValueError, match="U\\(1\\).*HMC"):
        heatbath.heatbath_sweep(KEY, hmc.cold_start(u1), u1)
    with pytest.raises(ValueError, match="even"):
        odd = make_theory("su3", (4, 3), beta=2.0)
        heatbath.overrelax_sweep(hmc.cold_start(odd), odd)
    with pytest.raises(ValueError, match="positive plane couplings"):
        heatbath.update(KEY, u, th.replace(lam=-2.5), CONFIG)  # temporal plane: beta*xi + lam < 0
    with pytest.raises(ValueError, match="positive plane couplings"):
        th4 = make_theory("su3", (2, 2, 2, 2), beta=1.0, lam=1.0)  # spatial planes: beta/xi - lam = 0
        heatbath.sample(KEY, hmc.cold_start(th4), th4, CONFIG, 2)
    with pytest.raises(ValueError, match="trailing axes"):
        heatbath.heatbath_sweep(KEY, u[..., :2, :, :, :], th)
    with pytest.raises(ValueError, match="one key per chain"):
        heatbath.sample_chains(jax.random.split(KEY, 3), jnp.stack([u, u]), th, CONFIG, 2)
    with pytest.raises(ValueError, match="HMC"):
        ferm = make_theory("su3-wilson", (4, 4), beta=2.0, mass=0.1)
        heatbath.heatbath_sweep(KEY, u, ferm)
    with pytest.raises(ValueError, match="n_heatbath"):
        HeatbathConfig(n_heatbath=0)
    with pytest.raises(ValueError, match="n_overrelax"):
        HeatbathConfig(n_overrelax=-1)


def test_int_seed_and_hmc_config_are_named():
    """An int seed failed deep inside jax.random, an HMCConfig with an AttributeError (user audit, 2026-12-07)."""
    th = make_theory("su3", (4, 4), beta=2.0)
    u = hmc.cold_start(th)
    for call in (lambda k: heatbath.heatbath_sweep(k, u, th), lambda k: heatbath.update(k, u, th, CONFIG),
                 lambda k: heatbath.sample(k, u, th, CONFIG, 1)):
        with pytest.raises(TypeError, match=r"key must be one JAX PRNG key, e.g. jax.random.PRNGKey\(0\)"):
            call(0)
    with pytest.raises(TypeError, match=r"config must be corrflow.heatbath.HeatbathConfig\(.*got HMCConfig"):
        heatbath.sample(KEY, u, th, HMCConfig(), 1)
