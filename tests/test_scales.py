"""Gradient-flow measurements in the store and the scales t0, w0, sqrt(t0)/w0 with Gamma-method errors."""

from __future__ import annotations

import numpy as np
import pytest

import corrflow  # noqa: F401  (x64)
from corrflow import make_theory
from corrflow.pipeline import WilsonFlowGrid, measure_stored
from corrflow.pipeline.measurements import choose_flow_grid
from corrflow.observables.gradient_flow import flow_scale, w_function, wilson_flow
from corrflow.scales import flow_scales, scales_from_store
from corrflow.store import StoreError, open_store

FLOW = WilsonFlowGrid(t_max=0.6, eps=0.05, every=0.1)
SHAPE = (4, 4, 4, 4)
N = 10  # configurations per chain (the Gamma method needs >= 10 per replica)


@pytest.fixture(scope="module")
def su3_store(tmp_path_factory):
    """2 chains x N smooth-ish 4^4 SU(3) configurations (Haar random, flowed to t = 0.6) written through the
    store's append API (no HMC compilation: this file tests the flow measurement, not the sampler)."""
    import jax

    from corrflow.store import EnsembleSpec

    path = tmp_path_factory.mktemp("scales") / "runs.zarr"
    st = open_store(path, "a")
    th = make_theory("su3", SHAPE, beta=5.8)
    g = th.group
    u = g.random(jax.random.PRNGKey(0), (2, N) + SHAPE + (4,))
    u = np.stack([np.asarray(wilson_flow(u[c], g, 0.6, eps=0.05, measure_every=0.1).links) for c in range(2)])
    spec = EnsembleSpec(theory="su3", group="su3", shape=SHAPE, params=th.params(), n_chains=2, seed=-1,
                        dtype="complex128", hmc={}, n_therm=0, thin=1, measurements=("plaquette",), kind="imported")
    st.create_ensemble("su3", spec)
    from corrflow.observables import plaquette

    per = {"plaquette": np.asarray(plaquette(u, g)), "action": np.asarray(th.action(u)),
           "delta_H": np.full((2, N), np.nan), "accepted": np.ones((2, N), bool), "step_size": np.full((2, N), np.nan)}
    with st.writer("su3") as w:
        w.append(list(range(N)), u, per, N)
    return path


def test_wilson_flow_measurement_is_stored_resumable_and_checked(su3_store):
    from corrflow.observables import gradient_flow

    st = open_store(su3_store, "a")
    before = gradient_flow._flow_jit._cache_size()
    res = measure_stored(st, "su3", ["wilson_flow"], batch=4, flow=FLOW)  # blocks of 4, 4 and 2 (padded)
    assert gradient_flow._flow_jit._cache_size() - before <= 1  # one compiled flow for the short last block too
    assert res.measured == {"flow_E_plaq": N, "flow_E_clov": N, "flow_Q": N}
    ds = st.open_ensemble("su3")
    assert ds["flow_E_clov"].dims == ("chain", "traj", "flow_time")
    np.testing.assert_allclose(ds["flow_time"].values, np.arange(7) * 0.1)
    assert ds["flow_E_clov"].attrs == {"flow_eps": 0.05} and ds["plaquette"].attrs == {}  # the integrator step
    # the stored values are the flow of the stored configurations
    u = st.load_configs("su3", 1, range(N))
    h = wilson_flow(u, "su3", 0.6, eps=0.05, measure_every=0.1)
    np.testing.assert_allclose(ds["flow_E_clov"].values[1], np.asarray(h.E_clov), rtol=1e-10)
    np.testing.assert_allclose(ds["flow_Q"].values[1], np.asarray(h.Q), atol=1e-10)
    assert measure_stored(st, "su3", ["wilson_flow"], flow=FLOW).measured == {}  # nothing new
    with pytest.raises((ValueError, StoreError), match="grid"):  # a different grid cannot be appended
        w = st.writer("su3")
        with w:
            w.write_observable("flow_E_clov", np.zeros((2, 0, 3)), N, extra={"flow_time": [0, 0.2, 0.4]})
    with pytest.raises(ValueError, match="fewer than 2"):
        measure_stored(st, "su3", ["wilson_flow"], flow=WilsonFlowGrid(t_max=0.05, every=0.1))


def test_scales_before_the_flow_is_measured_say_what_to_run(tmp_path):
    from corrflow.store import EnsembleSpec

    path = tmp_path / "s.zarr"  # (not su3_store: other tests of this module measure the flow there)
    st = open_store(path, "a")
    for group, shape, dtype in (("su3", SHAPE, "complex128"), ("u1", (4, 4), "float64")):
        st.create_ensemble(group, EnsembleSpec(theory=group, group=group, shape=shape, params={"beta": 2.0},
                                               n_chains=1, seed=-1, dtype=dtype, hmc={}, n_therm=0, thin=1,
                                               measurements=("plaquette",), kind="imported"))
    with pytest.raises(ValueError, match=f"has no flow_E_clov: run `corrflow measure {path} su3 wilson_flow`"):
        scales_from_store(st, "su3")
    with pytest.raises(ValueError, match="is u1: the gradient-flow scales t0 and w0 are for SU.N. gauge fields"):
        scales_from_store(st, "u1")


def test_scales_from_store_match_the_direct_computation(su3_store, tmp_path):
    import shutil

    # a copy measured here: tests of this module may run in any order and on different xdist workers
    path = tmp_path / "copy.zarr"
    shutil.copytree(su3_store, path)
    measure_stored(open_store(path, "a"), "su3", ["wilson_flow"], batch=N, flow=FLOW)
    st = open_store(path, "r")
    ds = st.open_ensemble("su3")
    t, e = ds["flow_time"].values, ds["flow_E_clov"].values
    mean = e.mean(axis=(0, 1))
    # references inside the measured range (a 4^4 lattice does not reach 0.3 before sqrt(8t) = L/2)
    ref_t0 = 0.5 * (t[3] ** 2 * mean[3] + t[4] ** 2 * mean[4])
    ref_w0 = float(np.median(w_function(t, t**2 * mean)[1]))
    res = scales_from_store(st, "su3", t0_ref=ref_t0, w0_ref=ref_w0)
    assert res["t0"].value == pytest.approx(flow_scale(t, t**2 * mean, ref_t0), rel=1e-12)
    tm, w = w_function(t, t**2 * mean)
    assert res["w0"].value == pytest.approx(np.sqrt(flow_scale(tm, w, ref_w0)), rel=1e-12)
    assert res["sqrt_t0_over_w0"].value == pytest.approx(np.sqrt(res["t0"].value) / res["w0"].value, rel=1e-12)
    assert res["t0"].error > 0 and "chi_top" in res
    # `corrflow scales --tau-exp`: the same values, errors with the exponential tail (corrflow.stats.Windowing)
    from typer.testing import CliRunner

    from corrflow.cli import app
    from corrflow.stats import Windowing

    tail = scales_from_store(st, "su3", t0_ref=ref_t0, w0_ref=ref_w0, S=Windowing(tau_exp=10.0))
    assert tail["t0"].value == res["t0"].value and tail["t0"].error != res["t0"].error
    out = CliRunner().invoke(app, ["scales", str(path), "su3", "--t0-ref", str(ref_t0), "--w0-ref", str(ref_w0),
                                   "--tau-exp", "10"])
    assert out.exit_code == 0 and "tail of tau_exp = 10" in out.output, out.output
    with pytest.raises(ValueError, match=r"t0: t\^2 E\(t\) never reaches t0_ref \(--t0-ref\) = 10 \(at most "):
        scales_from_store(st, "su3", t0_ref=10.0)  # out of reach: a clear error naming the scale, not a number
    with pytest.raises(ValueError, match=r"w0: W\(t\) = t d/dt t\^2 E never reaches w0_ref"):
        scales_from_store(st, "su3", t0_ref=ref_t0, w0_ref=10.0)
    # `corrflow scales` with only w0 out of reach: t0 (and chi_top) printed, w0 said to be unavailable, exit 0
    part = scales_from_store(st, "su3", t0_ref=ref_t0, w0_ref=10.0, partial=True)
    assert part["t0"].value == res["t0"].value and "w0" not in part and "chi_top" in part
    assert "never reaches w0_ref" in part["unavailable"]["w0"]
    out = CliRunner().invoke(app, ["scales", str(path), "su3", "--t0-ref", str(ref_t0), "--w0-ref", "10"])
    assert out.exit_code == 0 and "w0/a          : not available -- w0: W(t)" in out.output, out.output
    with pytest.raises(ValueError, match="t0: the reference t0_ref"):  # a wrong reference stays an error
        scales_from_store(st, "su3", t0_ref=-1.0, w0_ref=ref_w0, partial=True)
    with pytest.raises(ValueError, match="never reaches"):  # neither reached: an error
        scales_from_store(st, "su3", t0_ref=10.0, w0_ref=10.0, partial=True)
    with pytest.raises(ValueError, match=r"t0: the reference t0_ref \(--t0-ref\) must be > 0, got -1"):
        scales_from_store(st, "su3", t0_ref=-1.0)


def test_a_longer_flow_replaces_the_stored_one_and_bad_grids_are_refused(su3_store, tmp_path):
    """measure on another flow-time grid: refused naming both grids; --replace discards the stored E(t) and
    measures anew (the common flow times agree with the first measurement); grids the integrator cannot
    follow are refused before the store is touched."""
    import shutil

    path = tmp_path / "copy.zarr"
    shutil.copytree(su3_store, path)
    st = open_store(path, "a")
    measure_stored(st, "su3", ["wilson_flow"], batch=N, flow=FLOW)
    before = open_store(path).open_ensemble("su3")["flow_E_clov"].values
    with pytest.raises(ValueError, match=r"flow_E_plaq of 'su3' was integrated with --flow-eps 0\.05; these settings "
                       r"ask for 0\.025: rerun with --flow-eps 0\.05 \(the stored step\), or measure anew in a new "
                       r"store or with `corrflow measure \.\.\. wilson_flow --replace` \(discards its 10 stored "
                       r"measurements\)$"):  # same grid, another step
        measure_stored(st, "su3", ["wilson_flow"], flow=FLOW._replace(eps=0.025))
    with pytest.raises(StoreError, match=r"computed with \{'flow_eps': 0\.05\}, these with \{'flow_eps': 0\.1\}"):
        with st.writer("su3") as w:  # the writer keeps the step too
            w.write_observable("flow_E_clov", np.zeros((2, 0, 7)), N, extra={"flow_time": FLOW.grid(SHAPE)},
                               settings={"flow_eps": 0.1})
    longer = WilsonFlowGrid(t_max=0.8, eps=0.05, every=0.1)
    with pytest.raises(ValueError, match=r"stored on the flow-time grid t = 0 \.\. 0\.6 every 0\.1; these settings ask "
                       r"for t = 0 \.\. 0\.8 every 0\.1: rerun with --flow-t-max 0\.6 --flow-every 0\.1 \(the stored "
                       r"grid\), or measure anew in a new store or with `corrflow measure \.\.\. wilson_flow "
                       r"--replace` \(discards its 10 stored measurements\)$"):
        measure_stored(st, "su3", ["wilson_flow"], flow=longer)
    with pytest.raises(ValueError, match=r"these settings need at least t = 0 \.\. 0\.8 every 0\.1: rerun with "
                       r"--flow-t-max 0\.6 --flow-every 0\.1 \(the stored grid\)"):  # an automatic t_max too short
        measure_stored(st, "su3", ["wilson_flow"], flow=longer._replace(at_least=True))
    res = measure_stored(st, "su3", ["wilson_flow"], batch=N, flow=longer, replace=True)
    assert res.measured == {"flow_E_plaq": N, "flow_E_clov": N, "flow_Q": N}
    ds = open_store(path).open_ensemble("su3")
    np.testing.assert_allclose(ds["flow_time"].values, np.arange(9) * 0.1)
    np.testing.assert_allclose(ds["flow_E_clov"].values[..., :7], before, rtol=1e-12)
    assert st.verify("su3").ok
    # an automatic (minimum) t_max that the longer stored grid reaches: kept as it is, nothing measured or refused
    assert measure_stored(st, "su3", ["wilson_flow"], flow=FLOW._replace(at_least=True)).measured == {}
    with pytest.raises(ValueError, match="integrated with --flow-eps 0.05; these settings ask for 0.025"):
        measure_stored(st, "su3", ["wilson_flow"], flow=FLOW._replace(at_least=True, eps=0.025))  # the step must agree
    for bad, what in ((WilsonFlowGrid(t_max=float("inf")), "--flow-t-max must be a finite flow time > 0, got inf"),
                      (WilsonFlowGrid(t_max=float("nan")), "--flow-t-max must be a finite flow time > 0, got nan"),
                      (WilsonFlowGrid(eps=0.0), "--flow-eps must be a finite flow time > 0, got 0.0"),
                      (WilsonFlowGrid(eps=0.02, every=0.05),
                       "--flow-every 0.05 must be a multiple of --flow-eps 0.02")):
        with pytest.raises(ValueError, match=what):
            measure_stored(st, "su3", ["wilson_flow"], flow=bad, replace=True)
    after = open_store(path).open_ensemble("su3")["flow_E_clov"].values
    assert np.array_equal(after, ds["flow_E_clov"].values)  # a refused --replace discarded nothing


def test_an_automatic_flow_length_keeps_a_longer_stored_grid():
    """choose_flow_grid: with at_least, a stored grid of the same spacing that reaches t_max is used as it is;
    a shorter one, another spacing or an explicit t_max give the requested grid (which measure_stored refuses)."""
    auto = WilsonFlowGrid(t_max=0.6, eps=0.05, every=0.1, at_least=True)
    stored = np.arange(11) * 0.1  # 0 .. 1.0
    np.testing.assert_array_equal(choose_flow_grid(auto, SHAPE, stored), stored)
    np.testing.assert_allclose(choose_flow_grid(auto, SHAPE, stored[:7]), np.arange(7) * 0.1)  # exactly t_max
    for flow, t in ((auto, stored[:5]), (auto, np.arange(6) * 0.2), (auto._replace(at_least=False), stored),
                    (auto, None)):
        np.testing.assert_allclose(choose_flow_grid(flow, SHAPE, t), np.arange(7) * 0.1)


def test_flow_scale_errors_have_correct_coverage():
    """Synthetic E(t) = f(t) (1 + s z_i + noise): the Gamma-method error of t0 and w0 matches the scatter of the
    estimates over independent replicas (pulls with unit spread)."""
    rng = np.random.default_rng(5)
    t = np.linspace(0, 3, 31)
    f = (0.1 + 0.25 * t) / (1 + t**2) * 1.5 + 0.05  # t^2 f crosses 0.3 near t ~ 1.3

    def sample(n: int) -> np.ndarray:
        z = rng.normal(size=(n, 1))
        return f * (1 + 0.05 * z + 0.01 * rng.normal(size=(n, t.size)))

    truth = {k: v.value for k, v in flow_scales(t, f[None].repeat(20, 0)).items()}
    pulls = {k: [] for k in truth}
    for _ in range(100):
        res = flow_scales(t, sample(60))
        for k in truth:
            pulls[k].append((res[k].value - truth[k]) / res[k].error)
    for k, p in pulls.items():
        p = np.asarray(p)
        assert abs(p.mean()) < 0.35, f"{k}: mean pull {p.mean():.2f}"
        assert 0.75 < p.std() < 1.3, f"{k}: pull spread {p.std():.2f} (errors mis-estimated)"


def test_flow_scales_input_errors():
    t = np.linspace(0, 1, 11)
    with pytest.raises(ValueError, match="n_chains"):
        flow_scales(t, np.ones((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="NaN"):
        flow_scales(t, np.full((12, 11), np.nan))


def test_a_curve_that_turns_over_is_not_fixed_by_a_longer_flow():
    """On a small volume t^2 E(t) can peak inside the measured flow; the message advised a longer flow, which cannot
    help there (a 4D workflow audit)."""
    t = np.linspace(0.0, 3.0, 31)
    rng = np.random.default_rng(1)
    curve = 0.08 * np.sin(np.pi * t / 3.0) ** 2  # t^2 E: maximum 0.08 at t = 1.5, inside the grid
    energy = curve / np.maximum(t, 1e-9) ** 2 * (1 + 0.01 * rng.normal(size=(40, 1)))
    energy[:, 0] = 0.0
    with pytest.raises(ValueError, match=r"maximum is 0\.08.*before the measured flow ends.*longer flow does not help"):
        flow_scales(t, energy, t0_ref=0.3, w0_ref=0.01)
    rising = 0.08 * t / 3.0  # still rising at the end: a longer flow is the advice
    with pytest.raises(ValueError, match=r"or measure a longer flow"):
        flow_scales(t, rising / np.maximum(t, 1e-9) ** 2 * np.ones((40, 1)) * (1 + 0.01 * rng.normal(size=(40, 1))),
                    t0_ref=0.3, w0_ref=0.01)
