import jax
import jax.numpy as jnp
import numpy as np
import pytest

from corrflow import HMCConfig, hmc, make_theory
from corrflow.generate import GaugeMeasurements, generate, initial_links, run_blocks
from corrflow.stats import blocked_two_tau, gamma_method

KEY = jax.random.PRNGKey(5)
CASES = [("u1", (8, 8), 2.0), ("su2", (4, 4), 2.0), ("su3", (4, 4), 4.0), ("su3", (2, 2, 2, 2), 5.5)]

_integrate = jax.jit(hmc.integrate)
_hamiltonian = jax.jit(hmc.hamiltonian)


def _random_momenta(theory, key, batch=()):
    g = theory.group
    return g.random_algebra(key, tuple(batch) + theory.shape + (theory.ndim,))


@pytest.mark.parametrize("integrator", ["leapfrog", "omelyan"])
@pytest.mark.parametrize("name,shape,beta", CASES)
def test_reversibility(name, shape, beta, integrator):
    th = make_theory(name, shape, beta=beta)
    g = th.group
    u = hmc.hot_start(KEY, th)
    p = _random_momenta(th, jax.random.PRNGKey(1))
    cfg = HMCConfig(step_size=0.1, n_steps=20, integrator=integrator)
    u1, p1 = _integrate(th, cfg, u, p)
    assert float(g.distance(u1, u)) > 0.1  # it moved
    u2, p2 = _integrate(th, cfg, u1, -p1)
    assert float(g.distance(u2, u)) < 1e-10
    assert float(jnp.max(jnp.abs(p2 + p))) < 1e-10


@pytest.mark.parametrize("integrator", ["leapfrog", "omelyan"])
@pytest.mark.parametrize("name,shape,beta", [CASES[0], CASES[2]])
def test_energy_violation_scales_as_eps_squared(name, shape, beta, integrator):
    """At fixed trajectory length, RMS dH ~ eps^2: fitted slope in (1.8, 2.2)."""
    th = make_theory(name, shape, beta=beta)
    u = hmc.hot_start(KEY, th)
    # equilibrate a little so the force is typical
    st = hmc.init(th, u)
    st, _, _ = jax.jit(hmc.sample, static_argnums=(4,))(KEY, st, th, HMCConfig(0.05, 10, "leapfrog"), 20)
    ps = _random_momenta(th, jax.random.PRNGKey(2), (8,))
    eps_list = [0.1, 0.05, 0.025]
    rms = []
    for eps in eps_list:
        cfg = HMCConfig(step_size=eps, n_steps=int(round(0.5 / eps)), integrator=integrator)
        dh = []
        for i in range(ps.shape[0]):
            u1, p1 = _integrate(th, cfg, st.links, ps[i])
            dh.append(_hamiltonian(th, u1, p1) - _hamiltonian(th, st.links, ps[i]))
        rms.append(np.sqrt(np.mean(np.square(dh))))
    slope = np.polyfit(np.log(eps_list), np.log(rms), 1)[0]
    assert 1.8 < slope < 2.2, (rms, slope)


_sample = jax.jit(hmc.sample, static_argnames=("n_traj", "measure"))


def test_exp_minus_dH_is_one_and_unitarity_kept():
    """<exp(-dH)> = 1 within 3 sigma (Gamma-method error) on an equilibrated SU(3) 4^4 chain;
    the links stay in SU(3) to 1e-12 over 300 trajectories."""
    th = make_theory("su3", (4, 4, 4, 4), beta=5.7)
    cfg = HMCConfig(step_size=1 / 12, n_steps=12, integrator="leapfrog")
    st = hmc.init(th, hmc.hot_start(KEY, th))
    dh, acc = [], []
    for block in range(3):  # one compiled block size; the first block is thermalisation
        st, info, _ = _sample(KEY, st, th, cfg, n_traj=100, first_index=100 * block)
        if block:
            dh.append(np.asarray(info.delta_H))
            acc.append(np.asarray(info.accepted))
    w = np.exp(-np.concatenate(dh))
    assert 0.3 < np.mean(acc) < 0.99
    res = gamma_method(w)
    assert abs(res.pull(1.0)) < 3, res
    assert float(th.group.unitarity_violation(st.links)) < 1e-12


def test_exp_minus_dH_u1_omelyan():
    th = make_theory("u1", (16, 16), beta=2.0)
    cfg = HMCConfig(step_size=0.2, n_steps=5, integrator="omelyan")
    st = hmc.init(th, hmc.hot_start(KEY, th))
    st, info, _ = _sample(KEY, st, th, cfg, n_traj=3000)
    w = np.exp(-np.asarray(info.delta_H)[200:])
    assert abs(gamma_method(w).pull(1.0)) < 3


def test_chains_and_blocks_are_bitwise_reproducible():
    """vmapped chains equal single chains; a run split into blocks equals one block (resume property)."""
    th = make_theory("su2", (4, 4), beta=2.0)
    cfg = HMCConfig(0.1, 5, "leapfrog")
    meas = GaugeMeasurements(th.group)
    links = initial_links(KEY, th, 3)
    whole = list(run_blocks(KEY, th, cfg, links, 12, block_size=12, measure=meas))
    split = list(run_blocks(KEY, th, cfg, links, 12, block_size=5, measure=meas))
    np.testing.assert_array_equal(whole[-1].state.links, split[-1].state.links)
    got = np.concatenate([b.measurements["plaquette"] for b in split], axis=1)
    np.testing.assert_array_equal(whole[0].measurements["plaquette"], got)
    # chain 1 alone (keys fold_in(KEY, 1)) reproduces chain 1 of the batch
    st = hmc.init(th, links[1])
    st1, _, _ = _sample(jax.random.fold_in(KEY, 1), st, th, cfg, n_traj=12)
    np.testing.assert_array_equal(st1.links, whole[-1].state.links[1])


def test_chains_one_after_the_other_match_vectorised_chains(monkeypatch):
    """Above ``batching.SEQUENTIAL_BYTES`` of links per chain a CPU runs chains with ``lax.map``:
    the HMC and heat-bath chains of ``run_blocks`` and ``heatbath.sample_chains`` are those of the vectorised
    chains to rounding, and the loop over chains is really there (its jaxpr has a scan of the chain count)."""
    from corrflow import batching, heatbath

    th = make_theory("su3", (2, 2, 2, 4), beta=5.5)
    cfg = HMCConfig(0.1, 3, "omelyan")
    links = initial_links(KEY, th, 3)
    keys = jax.random.split(KEY, 3)
    hb = heatbath.HeatbathConfig(n_heatbath=1, n_overrelax=1)

    def runs():
        jax.clear_caches()  # the module-level jitted blocks were traced under the other setting
        blk = list(run_blocks(KEY, th, cfg, links, 4, block_size=4))[-1]
        u_hb, _ = heatbath.sample_chains(keys, links, th, hb, 2)
        return blk.state.links, blk.info.accepted, u_hb

    def chain_loops():
        fn = lambda k, s: hmc.sample(k, s, th, cfg, 2)  # noqa: E731
        over = lambda k, s: batching.over_leading_axis(fn, (k, s), s.links)  # noqa: E731
        jaxpr = str(jax.make_jaxpr(over)(keys, hmc.init(th, links)))
        return jaxpr.count("length=3")

    size = batching.SEQUENTIAL_BYTES  # the rule (CPU): more than one item, each of at least this many bytes
    assert batching.one_at_a_time(size, 2) and not batching.one_at_a_time(size, 1)
    assert not batching.one_at_a_time(size - 1, 16)
    vec = runs()
    assert chain_loops() == 0
    monkeypatch.setattr(batching, "SEQUENTIAL_BYTES", 0)
    one_by_one = runs()
    assert chain_loops() == 1
    np.testing.assert_allclose(np.asarray(one_by_one[0]), np.asarray(vec[0]), atol=1e-10)
    np.testing.assert_array_equal(np.asarray(one_by_one[1]), np.asarray(vec[1]))
    np.testing.assert_allclose(np.asarray(one_by_one[2]), np.asarray(vec[2]), atol=1e-10)
    jax.clear_caches()


def test_generate_discards_thermalisation():
    th = make_theory("u1", (4, 4), beta=1.0)
    out = generate(KEY, th, HMCConfig(0.2, 5), n_chains=2, n_traj=30, n_therm=7, block_size=8,
                   measure=GaugeMeasurements(th.group, topological_charge=True))
    assert out["plaquette"].shape == (2, 30) and out["accepted"].shape == (2, 30)
    assert out["links"].shape == (2, 4, 4, 2)
    q = out["topological_charge"]
    np.testing.assert_allclose(q, np.round(q), atol=1e-9)  # integer charges on the torus


def test_nan_trajectory_is_rejected():
    th = make_theory("u1", (4, 4), beta=1.0)
    st = hmc.init(th, hmc.hot_start(KEY, th))
    bad = HMCConfig(step_size=1e300, n_steps=3)  # overflows to inf/NaN energies
    st2, info = jax.jit(hmc.step)(KEY, st, th, bad)
    assert not bool(info.accepted)
    np.testing.assert_array_equal(st2.links, st.links)


def test_hmc_config_errors():
    with pytest.raises(ValueError, match="step_size"):
        HMCConfig(step_size=-0.1)
    with pytest.raises(ValueError, match="n_steps"):
        HMCConfig(n_steps=0)
    with pytest.raises(ValueError, match="unknown integrator 'rk4'.*leapfrog"):
        HMCConfig(integrator="rk4")
    th = make_theory("u1", (4, 4), beta=1.0)
    with pytest.raises(ValueError, match="trailing axes"):
        hmc.init(th, jnp.zeros((4, 4)))
    with pytest.raises(ValueError, match="start must be"):
        initial_links(KEY, th, 1, start="warm")


def _reference_integrate(theory, cfg, u, p):
    """The integrator as written before the kick-drift scan (kept as the reference): Python loop, plain force."""
    g = theory.group
    eps = cfg.step_size
    if cfg.integrator == "leapfrog":
        p = p - eps / 2 * theory.force(u)
        for i in range(cfg.n_steps):
            u = g.exp_left(eps * p, u)
            p = p - (eps if i < cfg.n_steps - 1 else eps / 2) * theory.force(u)
        return u, p
    lam = hmc.OMELYAN_LAMBDA
    for _ in range(cfg.n_steps):
        p = p - lam * eps * theory.force(u)
        u = g.exp_left(eps / 2 * p, u)
        p = p - (1 - 2 * lam) * eps * theory.force(u)
        u = g.exp_left(eps / 2 * p, u)
        p = p - lam * eps * theory.force(u)
    return u, p


@pytest.mark.parametrize("name,shape,beta,integrator,dtype", [
    ("u1", (6, 4), 2.0, "leapfrog", "float64"), ("u1", (6, 4), 2.0, "omelyan", "float64"),
    ("u1", (6, 4), 2.0, "omelyan", "float32"), ("u1", (4, 2, 2), 1.0, "leapfrog", "float64"),
    ("su2", (4, 4), 2.0, "omelyan", "float64"), ("su2", (4, 4), 2.0, "leapfrog", "float32")])
def test_kick_drift_scan_matches_the_reference_integrator(name, shape, beta, integrator, dtype):
    """The scanned integrator (U(1): plaquette sines carried between steps) against the plain loop."""
    th = make_theory(name, shape, beta=beta)
    g = th.group
    real = jnp.dtype(dtype)
    cdt = real if g.is_abelian else jnp.result_type(real, jnp.complex64)
    u = hmc.hot_start(jax.random.PRNGKey(3), th, dtype=cdt)
    p = _random_momenta(th, jax.random.PRNGKey(4)).astype(cdt)
    cfg = HMCConfig(step_size=0.15, n_steps=5, integrator=integrator)
    u1, p1 = _integrate(th, cfg, u, p)
    u0, p0 = jax.jit(lambda u, p: _reference_integrate(th, cfg, u, p))(u, p)
    tol = 1e-12 if dtype == "float64" else 2e-4
    assert u1.dtype == u.dtype and p1.dtype == p.dtype
    assert float(g.distance(u1, u0)) < tol and float(jnp.max(jnp.abs(p1 - p0))) < tol * 10


def test_randomised_trajectory_lengths_are_exact_and_unfreeze_resonant_modes():
    """``HMCConfig(jitter=j)``: each trajectory's step size is drawn from ``eps [1 - j, 1 + j]`` (and reported), the
    chain still samples ``exp(-S)`` (plaquette against the exact torus value), and where a fixed trajectory length
    resonates -- 2D U(1), 8x8, beta = 9, cold start, Omelyan tau = 1 -- the jitter unfreezes the modes: the blocked
    ``2 tau_int`` of the plaquette (blocks of 250 trajectories) is 11-20 without jitter (the negative control, same
    seeds) and 3-4 with jitter 0.2 (BENCHMARKS.md, "Randomised trajectory lengths")."""
    from corrflow import exact

    th = make_theory("u1", (8, 8), beta=2.0)
    cfg = HMCConfig(0.2, 5, "omelyan", jitter=0.3)
    blocks = list(run_blocks(KEY, th, cfg, initial_links(KEY, th, 4), 1600, block_size=1600,
                             measure=GaugeMeasurements(th.group)))
    eps = np.asarray(blocks[0].info.step_size)
    assert eps.shape == (4, 1600) and 0.14 <= eps.min() < 0.15 and 0.25 < eps.max() <= 0.26, (eps.min(), eps.max())
    res = gamma_method(blocks[0].measurements["plaquette"][:, 100:])
    assert abs(res.pull(exact.u1_plaquette(2.0, (8, 8)))) < 4, res

    weak = make_theory("u1", (8, 8), beta=9.0)
    links = initial_links(KEY, weak, 4, start="cold")
    two_tau = {}
    for j in (0.0, 0.2):
        blk = list(run_blocks(KEY, weak, HMCConfig(0.1, 10, "omelyan", jitter=j), links, 2200, block_size=2200,
                              measure=GaugeMeasurements(weak.group)))[0]
        two_tau[j] = blocked_two_tau(np.asarray(blk.measurements["plaquette"])[:, 200:], 250)
    assert two_tau[0.0] > 2.5 * two_tau[0.2] and two_tau[0.2] < 6, two_tau  # measured 11.1 / 3.0 (20.0 / 3.9)
    # fixed lengths: the recipe of old ensembles; the default is the command line's
    assert HMCConfig(0.1, 10, jitter=0.0).as_dict() == {"step_size": 0.1, "n_steps": 10, "integrator": "omelyan"}
    assert HMCConfig(0.1, 10).jitter == hmc.DEFAULT_JITTER == 0.2
    with pytest.raises(ValueError, match="jitter must be a number in \\[0, 1\\)"):
        HMCConfig(jitter=1.0)
