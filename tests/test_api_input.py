"""Bad input to the Python API: a clear one-line error, raised early, or a warning -- never a silent mistake.

From a user audit (2026-12-07): ``GaugeMeasurements``, ``generate``, ``make_theory`` / ``replace`` and
``gamma_method``.  Tiny 2D U(1) lattices, a handful of trajectories.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from corrflow.generate import GaugeMeasurements, generate, initial_links, run_blocks
from corrflow.groups import get_group
from corrflow.hmc import HMCConfig
from corrflow.stats import gamma_method
from corrflow.theories import make_theory

KEY = jax.random.PRNGKey(7)
U1 = make_theory("u1", (4, 4), beta=2.0)
CFG = HMCConfig(0.2, 5, jitter=0.0)


# 1. GaugeMeasurements ------------------------------------------------------------------------------------------


def test_gauge_measurements_normalises_and_refuses_malformed_input():
    m = GaugeMeasurements("u1", [[2, 1], (np.int64(1), 1)])
    assert m.group == get_group("u1")
    assert m.wilson_loops == ((2, 1), (1, 1)) and all(type(x) is int for p in m.wilson_loops for x in p)
    assert m == GaugeMeasurements(get_group("u1"), ((2, 1), (1, 1))) and hash(m)  # a static argument of jitted code
    with pytest.raises(ValueError, match=r"sequence of \(R, T\) pairs.*got \(2, 2\) \(for one loop write"):
        GaugeMeasurements(U1.group, (2, 2))
    with pytest.raises(ValueError, match=r"sequence of \(R, T\) pairs.*got \[\(1, 2, 3\)\]"):
        GaugeMeasurements(U1.group, [(1, 2, 3)])
    with pytest.raises(ValueError, match=r"sequence of \(R, T\) pairs.*got \[\(1.5, 2\)\]"):
        GaugeMeasurements(U1.group, [(1.5, 2)])
    with pytest.raises(ValueError, match=r"wilson_0x2: Wilson loop extents must be >= 1"):
        GaugeMeasurements(U1.group, [(0, 2)])
    with pytest.raises(ValueError, match="unknown group 'o3'"):
        GaugeMeasurements("o3")


def test_gauge_measurements_refuses_loops_that_wrap_the_lattice():
    u = initial_links(KEY, U1, 2)
    too_big = GaugeMeasurements(U1.group, ((4, 1),))
    msg = r"wilson_4x1 does not fit on the 4x4 lattice.*smaller than the shortest extent \(4\)"
    with pytest.raises(ValueError, match=msg):  # at trace time: a Python check on the static shape
        jax.jit(too_big)(u[0])
    with pytest.raises(ValueError, match=msg):  # generate: before the thermalisation
        generate(KEY, U1, CFG, n_traj=2, n_therm=2, measure=too_big)
    # a list of loops and a group name measure what the tuple and the group object do
    by_list = list(run_blocks(KEY, U1, CFG, u, 3, measure=GaugeMeasurements("u1", [(2, 2), (1, 3)])))[0]
    by_tuple = list(run_blocks(KEY, U1, CFG, u, 3, measure=GaugeMeasurements(U1.group, ((2, 2), (1, 3)))))[0]
    assert set(by_list.measurements) == {"plaquette", "wilson_2x2", "wilson_1x3"}
    for k, v in by_tuple.measurements.items():
        np.testing.assert_array_equal(by_list.measurements[k], v)


# 2. n_traj -----------------------------------------------------------------------------------------------------


def test_generate_needs_a_trajectory():
    for bad in (0, -3):
        with pytest.raises(ValueError, match=f"n_traj must be >= 1, got {bad}"):
            generate(KEY, U1, CFG, n_traj=bad, n_therm=0)
    with pytest.raises(ValueError, match="thin must be >= 1, got 0"):
        generate(KEY, U1, CFG, n_traj=2, n_therm=2, thin=0)


# 3. chains that do not move ------------------------------------------------------------------------------------


def test_generate_warns_when_the_chains_do_not_move():
    with pytest.warns(RuntimeWarning, match=r"acceptance 0\.0\d\d: the chains hardly move.*lower the step size"):
        out = generate(KEY, make_theory("u1", (4, 4), beta=8.0), HMCConfig(3.0, 5, jitter=0.0), n_traj=4, n_therm=0)
    assert out["accepted"].mean() < 0.05
    with pytest.warns(RuntimeWarning, match=r"delta_H is not finite in 4 of 4 trajectories .*check the theory"):
        generate(KEY, U1, HMCConfig(1e200, 5, jitter=0.0), n_traj=2, n_chains=2, n_therm=0)
    with warnings.catch_warnings():  # a healthy chain: no warning
        warnings.simplefilter("error", RuntimeWarning)
        out = generate(KEY, U1, CFG, n_traj=4, n_therm=0, measure=GaugeMeasurements("u1"))
    assert out["accepted"].mean() > 0.5 and out["plaquette"].shape == (1, 4)
    assert set(generate(KEY, U1, CFG, n_traj=2, n_therm=0)) == {"delta_H", "accepted", "traj", "links"}


def test_one_threshold_and_wording_for_chains_that_hardly_move():
    """`generate` (a warning) and `corrflow generate` (a line) share the threshold and the wording; an acceptance of
    0.15 was a CLI warning but no library warning (0.05 there)."""
    from corrflow.generate import LOW_ACCEPTANCE, _warn_if_stuck, low_acceptance_message

    assert low_acceptance_message(LOW_ACCEPTANCE) is None and low_acceptance_message(0.9) is None
    msg = low_acceptance_message(0.15, "--step-size", "--n-steps")
    assert msg.startswith("acceptance 0.150: the chains hardly move") and "lower --step-size, with more --n-steps" in msg
    with pytest.warns(RuntimeWarning, match="generate: acceptance 0.150: the chains hardly move"):
        _warn_if_stuck(np.array([1.0, 0, 0, 0, 0, 0, 0, 0.2]), np.zeros(8))


# 4. theory parameters ------------------------------------------------------------------------------------------


def test_theory_parameters_are_numbers():
    with pytest.raises(TypeError, match=r"beta must be a number, got the string '2.0'; pass beta=2.0"):
        make_theory("u1", (4, 4), beta="2.0")
    with pytest.raises(TypeError, match="xi must be a number"):
        make_theory("u1", (4, 4), beta=2.0, xi="one")
    with pytest.raises(ValueError, match="beta must be finite, got nan"):
        make_theory("u1", (4, 4), beta=np.array(np.nan))
    with pytest.raises(ValueError, match="lam must be finite, got inf"):
        U1.replace(lam=jnp.array(np.inf))
    with pytest.raises(TypeError, match="beta must be a real number"):
        make_theory("u1", (4, 4), beta=np.array(2.0 + 1j))
    with pytest.raises(ValueError, match="mass must be finite"):
        make_theory("schwinger", (4, 4), beta=2.0, mass=np.float32(np.nan))
    with pytest.raises(TypeError, match="mass must be a number"):
        make_theory("schwinger", (4, 4), beta=2.0, mass="0.1")
    schwinger = make_theory("schwinger", (4, 4), beta=2.0, kappa=0.24)
    for make in (lambda k: make_theory("schwinger", (4, 4), beta=2.0, kappa=k), lambda k: schwinger.replace(kappa=k)):
        with pytest.raises(TypeError, match=r"kappa must be a number, got the string '0.24'; pass kappa=0.24"):
            make("0.24")
        assert make(np.float32(0.25)).mass == pytest.approx(0.0)  # kappa = 1/(2m + 2d): m = 0 at kappa 1/4 in 2D
    assert schwinger.replace(kappa=0.24) == schwinger
    u = initial_links(KEY, U1, 1)[0]
    for beta in (np.array(2.0), np.float32(2.0), jnp.array(2.0), np.int64(2)):
        th = make_theory("u1", (4, 4), beta=beta)
        assert type(th.beta) is float and th == U1
        np.testing.assert_array_equal(th.action(u), U1.action(u))
    assert type(make_theory("schwinger", (4, 4), beta=2.0, mass=np.array(0.1)).mass) is float
    # traced and batched values are left alone: derivatives and vmaps in beta still work
    grad = jax.grad(lambda b: U1.replace(beta=b).action(u))(2.0)
    np.testing.assert_allclose(grad, U1.action(u) / 2.0, rtol=1e-12)
    np.testing.assert_allclose(jax.jit(lambda th: th.action(u))(U1), U1.action(u))
    np.testing.assert_allclose(jax.vmap(lambda b: U1.replace(beta=b).action(u))(jnp.array([1.0, 2.0]))[1],
                               U1.action(u))


# 5. parameter names and the shape ------------------------------------------------------------------------------


def test_make_theory_names_the_parameter():
    with pytest.raises(ValueError, match=r"^unknown parameter 'b' for theory 'su3'; allowed: beta, xi, lam$"):
        make_theory("su3", (6, 6), b=6)
    with pytest.raises(ValueError, match=r"unknown parameter 'm' for theory 'schwinger'; allowed: beta, xi, lam, "
                                         r"mass, kappa, nf"):
        make_theory("schwinger", (4, 4), beta=2.0, m=0.1)
    with pytest.raises(ValueError, match=r"^theory 'su3' needs beta"):
        make_theory("su3", (6, 6))
    with pytest.raises(ValueError, match=r"^shape must be a tuple of lattice extents, e.g. \(8, 8\), got 8$"):
        make_theory("u1", 8, beta=2)
    with pytest.raises(ValueError, match=r"^unknown parameter 'b' for theory 'u1'; allowed: beta, xi, lam"):
        U1.replace(b=2.2)
    fermions = make_theory("schwinger", (4, 4), beta=2.0, mass=0.1)
    with pytest.raises(ValueError, match=r"^unknown parameter 'b' for theory 'schwinger'; allowed: beta, xi, lam, "
                                         r"mass"):
        fermions.replace(b=2.2)
    assert U1.replace(beta=2.2).beta == 2.2 and fermions.replace(beta=2.5, kappa=0.2).params()["beta"] == 2.5
    assert make_theory("u1", [4, 4], beta=2.0) == U1


# 6. gamma_method input ------------------------------------------------------------------------------------------


def test_gamma_method_refuses_complex_and_hints_at_transposed_data():
    rng = np.random.default_rng(3)
    z = np.exp(1j * rng.random(100))
    with pytest.raises(TypeError, match=r"complex data: pass the real part, imaginary part or modulus explicitly, "
                                        r"e.g. np.real\(x\)"):
        gamma_method(z)
    assert gamma_method(np.real(z)).value == pytest.approx(np.mean(np.real(z)))
    x = rng.random((2, 100))
    with pytest.raises(ValueError, match=r"got n=2; did you pass \(n_traj, n_chains\)\? replicas go first: "
                                         r"\(n_chains, n_traj\)"):
        gamma_method(x.T)
    with pytest.raises(ValueError, match=r"got n=2; did you pass \(n, n_obs\)\? observables go first"):
        gamma_method(x.T, lambda a: a[0] / a[1])
    with pytest.raises(ValueError, match=r"got n=5$"):  # short, not transposed: no hint
        gamma_method(rng.random((2, 5)))
    assert gamma_method(x).n == 200


# 7. docstrings -------------------------------------------------------------------------------------------------


def test_generate_docstrings():
    import corrflow.generate as gen  # the function (the module's name clashes with it)

    doc = " ".join(gen.__doc__.split())
    assert gen is generate
    assert "from corrflow.generate import run_blocks" in doc
    assert "unbatched" in doc and "not even the plaquette" in doc


def test_generate_names_argument_mix_ups_in_one_line():
    """An int seed, a batch of keys, the arguments swapped, a dict for the config, complex64 for U(1) links: each
    failed deep inside JAX (12 frames); now one line at the top of `generate` (and `flowed_metropolis`)."""
    import jax

    import corrflow as cf

    th = cf.make_theory("u1", (4, 4), beta=1.0)
    cfg = cf.HMCConfig(0.2, 5)
    key = jax.random.PRNGKey(0)
    one_key = r"key must be one JAX PRNG key, e.g. jax.random.PRNGKey\(0\) or jax.random.key\(0\); got int"
    cases = [((0, th, cfg), {}, one_key),
             ((jax.random.split(key, 2), th, cfg), {}, r"got a batch of keys of shape \(2, 2\)"),
             ((th, key, cfg), {}, r"theory must be a theory.*generate\(key, theory, config"),
             ((key, th, {"step_size": 0.2}), {}, r"config must be corrflow.HMCConfig"),
             ((key, th, cfg), {"dtype": "complex64"}, "dtype complex64 does not hold u1 links: real angles")]
    for args, kw, msg in cases:
        with pytest.raises(TypeError, match=msg):
            cf.generate(*args, n_traj=1, n_therm=0, **kw)
    with pytest.raises(TypeError, match="key must be one JAX PRNG key"):
        cf.flowed_metropolis(np.zeros(3), 7)
    out = cf.generate(jax.random.key(0), th, cfg, n_traj=2, n_therm=0, measure=cf.GaugeMeasurements("u1"))
    ref = cf.generate(key, th, cfg, n_traj=2, n_therm=0, measure=cf.GaugeMeasurements("u1"))
    np.testing.assert_array_equal(out["plaquette"], ref["plaquette"])  # typed keys: the same chain


# 8. measurements of another group or lattice, counts that are not integers (user audit, 2026-12-07, second) ----


def test_measure_of_another_group_or_lattice_and_fractional_counts_are_refused():
    """GaugeMeasurements('su2') on SU(3) links gave a plaquette off by 3/2, 'u1' on them complex garbage, 'su3' on
    U(1) links 'axis -10 is out of bounds'; FermionMeasurements of another lattice failed deep in the Dirac operator,
    n_sources=0 at trace time; n_traj=2.5 ran 3 trajectories with float indices."""
    from corrflow.observables.fermions import FermionMeasurements

    su3 = make_theory("su3", (4, 4), beta=4.0)
    for g, th in (("su2", su3), ("u1", su3), ("su3", U1)):
        with pytest.raises(ValueError, match=rf"measure is GaugeMeasurements\('{g}'\) but the theory's links are "
                                             rf"{th.group.name}: use GaugeMeasurements\(theory.group"):
            generate(KEY, th, CFG, n_traj=1, n_therm=0, measure=GaugeMeasurements(g))
    u = np.asarray(initial_links(KEY, su3, 1)[0])
    for g in ("su2", "u1"):  # called directly (as flowed_reweighting does): refused at trace time
        with pytest.raises(ValueError, match=rf"GaugeMeasurements\('{g}'\) got links that are not {g} links: .*"
                                             r"GaugeMeasurements\(theory.group\)"):
            GaugeMeasurements(g)(u)
    from corrflow.observables import plaquette

    assert float(GaugeMeasurements("su3")(u)["plaquette"]) == pytest.approx(float(plaquette(u, su3.group)))
    with pytest.raises(TypeError, match="n_traj must be an integer, got 2.5"):
        generate(KEY, U1, CFG, n_traj=2.5, n_therm=0)
    with pytest.raises(TypeError, match="n_chains must be an integer, got True"):
        generate(KEY, U1, CFG, n_traj=2, n_chains=True, n_therm=0)
    assert generate(KEY, U1, CFG, n_traj=np.int64(2), n_therm=0)["accepted"].shape == (1, 2)
    sch = make_theory("schwinger", (4, 2), beta=2.0, mass=0.5)
    for n in (0, 3):
        with pytest.raises(ValueError, match=rf"n_sources must be a divisor of L_0 = 4 .*got {n}"):
            FermionMeasurements(sch, n_sources=n)
    fm = FermionMeasurements(sch)
    with pytest.raises(ValueError, match=r"measure was built for the lattice \(4, 2\), the theory's is \(4, 4\)"):
        generate(KEY, make_theory("schwinger", (4, 4), beta=2.0, mass=0.5), CFG, n_traj=1, n_therm=0, measure=fm)
    with pytest.raises(ValueError, match=r"links have shape \(4, 4, 2\); for group u1 on lattice \(4, 2\)"):
        fm(jnp.zeros((4, 4, 2)))


def test_measure_is_a_function_and_gauge_measurements_take_a_theory():
    """measure=['plaquette'] (the names of `corrflow generate --observables`) failed as a 'non-hashable static
    argument'; GaugeMeasurements(theory) said 'unknown group WilsonGaugeAction(...)' (make_flow takes a theory too)."""
    with pytest.raises(TypeError, match=r"measure must be a function of one configuration .*got \['plaquette'\]"):
        generate(KEY, U1, CFG, n_traj=1, n_therm=0, measure=["plaquette"])
    assert GaugeMeasurements(U1, ((2, 2),)) == GaugeMeasurements("u1", ((2, 2),))


def test_action_and_observables_check_their_links():
    """`theory.action` of links on another lattice returned a number and complex U(1) links a complex action;
    `observables.plaquette(u, "u1")` failed with an AttributeError (a group name) and accepted complex U(1) links."""
    import jax.numpy as jnp

    from corrflow import make_theory
    from corrflow.observables import plaquette, wilson_loop

    th = make_theory("u1", (8, 8), beta=2.0)
    with pytest.raises(ValueError, match=r"links have shape \(8, 4, 2\); for group u1 on lattice \(8, 8\)"):
        th.action(jnp.zeros((8, 4, 2)))
    with pytest.raises(ValueError, match="U\\(1\\) links are real angles"):
        th.action(jnp.zeros((8, 8, 2), complex))
    with pytest.raises(ValueError, match="U\\(1\\) links are real angles"):
        th.source_operator(jnp.zeros((8, 8, 2), complex))
    assert float(th.action(jnp.zeros((8, 8, 2)))) == -128.0  # cold start: -beta V n_planes
    assert float(plaquette(jnp.zeros((8, 8, 2)), "u1")) == 1.0
    assert wilson_loop(jnp.zeros((3, 8, 8, 2)), "u1", 2, 2).shape == (3,)
    with pytest.raises(ValueError, match="U\\(1\\) links are real angles"):
        plaquette(jnp.zeros((8, 8, 2), complex), "u1")
    with pytest.raises(ValueError, match="su3 links must be complex matrices"):
        plaquette(jnp.zeros((4, 4, 4, 4, 4, 3, 3)), "su3")


def test_generate_to_store_takes_a_path_and_refuses_a_key_as_seed(tmp_path):
    """`generate_to_store("path.zarr", ...)` failed with "'str' object has no attribute 'writer'", and a PRNG key
    passed as `seed` failed deep inside JAX; make_field('auto') without a theory fell back to a gradient field."""
    import jax

    from corrflow import HMCConfig, make_theory, open_store
    from corrflow import tangent as tg
    from corrflow.pipeline import generate_to_store

    th = make_theory("u1", (4, 4), beta=1.0)
    cfg = HMCConfig(0.2, 2, jitter=0.0)
    with pytest.raises(TypeError, match="seed must be an integer"):
        generate_to_store(str(tmp_path / "s.zarr"), "e", th, cfg, n_traj=1, seed=jax.random.PRNGKey(0))
    assert not (tmp_path / "s.zarr").exists()  # refused before the store was created
    out = generate_to_store(str(tmp_path / "s.zarr"), "e", th, cfg, n_traj=1, n_therm=0, block_size=1)
    assert out.committed == 1 and open_store(tmp_path / "s.zarr").info("e")["committed"] == 1
    with pytest.raises(ValueError, match=r"make_field\('auto'\) chooses the field for a theory"):
        tg.make_field("auto")
