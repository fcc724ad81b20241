"""Plaquette-space flows (2D U(1)): exact log-Jacobian, inverse, gauge and charge-conjugation equivariance, volume
transfer, checkpoints, bad input, and that training one is cheap and beats direct reweighting."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gauge_helpers import gauge_transform

from corrflow import make_theory
from corrflow.flows import PlaquetteFlow, default_kind, flow_from_description, make_flow
from corrflow.flows.train import (TrainConfig, load_checkpoint, log_weights, resolve_optimizer, save_checkpoint,
                                  train)
from corrflow.groups import U1

G = U1()
KEY = jax.random.PRNGKey(3)


def plaquette_angles(u):
    return PlaquetteFlow._plaquette(u)


@pytest.mark.parametrize("shape,n_maps", [((4, 4), 2), ((4, 6), 1)])
def test_logj_matches_dense_autodiff_jacobian(shape, n_maps):
    flow = make_flow("u1", shape, kind="plaquette", n_sweeps=n_maps, harmonics=3)
    params = flow.init_params(scale=3.0, key=KEY)
    u = G.random(KEY, shape + (2,))
    out, lj = jax.jit(flow.forward)(params, u)
    jac = jax.jit(jax.jacfwd(lambda th: flow.forward(params, th)[0].ravel()))(u)
    sign, ref = np.linalg.slogdet(np.asarray(jac).reshape(u.size, u.size))
    assert sign > 0 and abs(float(lj)) > 0.05  # orientation preserving and far from the identity
    np.testing.assert_allclose(float(lj), ref, atol=1e-10)


def test_each_plaquette_moves_by_its_own_map():
    """phi'_P = phi_P + h(phi_P) - mean h: the defining property, checked on the plaquettes of the output."""
    flow = make_flow("u1", (6, 4), kind="plaquette", harmonics=2)
    params = jnp.array([[0.3, -0.2]])
    u = G.random(KEY, (6, 4, 2))
    out, _ = flow.forward(params, u)
    phi = plaquette_angles(u)
    c = flow.coefficients(params[0])
    h = c[0] * jnp.sin(phi) + c[1] * jnp.sin(2 * phi)
    want = phi + h - jnp.mean(h)
    diff = plaquette_angles(out) - want
    np.testing.assert_allclose(np.asarray(diff - 2 * np.pi * np.round(diff / (2 * np.pi))), 0.0, atol=1e-12)


def test_inverse_and_equivariance():
    flow = make_flow("u1", (4, 6), kind="plaquette", n_sweeps=2, harmonics=4)
    params = flow.init_params(scale=2.0, key=KEY)  # strong: close to the bound
    u = G.random(jax.random.PRNGKey(1), (3, 4, 6, 2))
    u2, lj = jax.jit(flow.forward)(params, u)
    assert lj.shape == (3,)
    back, ljr = jax.jit(flow.reverse)(params, u2)
    assert float(G.distance(back, u)) < 1e-10
    np.testing.assert_allclose(ljr, -lj, atol=1e-10)
    om = G.random(jax.random.PRNGKey(4), (4, 6))
    transformed = jax.vmap(lambda x: gauge_transform(x, om, G))
    a, lja = flow.forward(params, transformed(u))
    np.testing.assert_allclose(np.asarray(jnp.cos(a - transformed(u2))), 1.0, atol=1e-12)
    np.testing.assert_allclose(lja, lj, atol=1e-11)
    c, ljc = flow.forward(params, -u)  # charge conjugation: h is odd
    np.testing.assert_allclose(np.asarray(c), -np.asarray(u2), atol=1e-12)
    np.testing.assert_allclose(ljc, lj, atol=1e-11)


def test_zero_parameters_give_identity_and_saturated_ones_stay_invertible():
    flow = make_flow("u1", (4, 4), kind="plaquette", harmonics=5)
    u = G.random(KEY, (4, 4, 2))
    out, lj = flow.forward(flow.init_params(), u)
    np.testing.assert_allclose(np.asarray(out), np.asarray(u), atol=1e-15)
    assert float(lj) == 0.0
    sat = jnp.full(flow.param_shape, 1e3)
    c = flow.coefficients(sat[0])
    assert float(jnp.sum(jnp.arange(1, 6) * jnp.abs(c))) < 0.95
    out, lj = flow.forward(sat, u)
    back, _ = flow.reverse(sat, out)
    assert np.isfinite(float(lj)) and float(G.distance(back, u)) < 1e-9


def test_volume_transfer():
    """A flow made for 4x4 applies to 8x8: on a configuration tiling the small one it gives the tiled output; the
    per-plaquette part of log J is extensive, the mean term is not."""
    small = make_flow("u1", (4, 4), kind="plaquette", harmonics=3)
    big = small.with_shape((8, 8))
    assert big.describe() == {**small.describe(), "shape": [8, 8]}
    params = small.init_params(scale=1.0, key=KEY)
    u = G.random(KEY, (4, 4, 2))
    us, ljs = small.forward(params, u)
    ub, ljb = big.forward(params, jnp.tile(u, (2, 2, 1)))
    np.testing.assert_allclose(np.asarray(ub), np.asarray(jnp.tile(us, (2, 2, 1))), atol=1e-12)
    n = jnp.arange(1, 4)
    dh = jnp.sum(small.coefficients(params[0]) * n * jnp.cos(plaquette_angles(u)[..., None] * n), -1)
    mean_term = float(jnp.log1p(-jnp.mean(dh / (1 + dh))))
    np.testing.assert_allclose(float(ljb), 4 * (float(ljs) - mean_term) + mean_term, rtol=1e-12)


def test_default_kind_and_bad_options():
    assert default_kind("u1", (8, 8)) == "plaquette"
    assert default_kind("su3", (4, 4, 4, 4)) == "residual" and default_kind("u1", (4, 4, 4)) == "residual"
    assert resolve_optimizer("auto", 2, "plaquette") == "lbfgs" and resolve_optimizer("auto", 2) == "linear"
    assert resolve_optimizer("auto", 2, network=True) == "adam"
    assert resolve_optimizer("auto", 4, network=True) == "lbfgs"
    for kwargs, match in [(dict(group="su3"), "2D U\\(1\\) only"), (dict(shape=(4, 4, 4)), "2D U\\(1\\) only"),
                          (dict(loops=("plaquette", "rectangle")), "no loops"), (dict(degree=1), "no loops"), (dict(net_width=4), "net options"),
                          (dict(harmonics=0), "harmonics"), (dict(harmonics=2.5), "harmonics"),
                          (dict(n_sweeps=0), "n_sweeps"), (dict(kind="spline"), "unknown flow kind 'spline'")]:
        opts = {"group": "u1", "shape": (4, 4), "kind": "plaquette", **kwargs}
        with pytest.raises(ValueError, match=match):
            make_flow(opts.pop("group"), opts.pop("shape"), **opts)
    with pytest.raises(ValueError, match="malformed flow description"):
        flow_from_description({"kind": "plaquette", "group": "u1", "shape": [4, 4]})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A plaquette flow beta 2 -> 2.2 on 8x8 trained by L-BFGS on 100 HMC configurations (checkpointed); 100 more
    held out."""
    from corrflow import HMCConfig
    from corrflow.generate import initial_links, run_blocks

    base = make_theory("u1", (8, 8), beta=2.0)
    target = base.replace(beta=2.2)
    key = jax.random.PRNGKey(5)
    links = initial_links(key, base, 4)
    out = []
    for blk in run_blocks(key, base, HMCConfig(0.2, 5, "omelyan"), links, 80, block_size=80, thin=3,
                          keep_links=True):
        out.append(np.asarray(blk.links))
    cfgs = np.concatenate(out, axis=1)[:, 30:].reshape((-1, 8, 8, 2))  # 200 configurations after thermalisation
    flow = make_flow("u1", (8, 8), kind="plaquette")
    ckpt = tmp_path_factory.mktemp("plaq") / "flow"
    res = train(flow, base, target, cfgs[::2], TrainConfig(epochs=20, optimizer="lbfgs"), checkpoint=ckpt)
    return dict(flow=flow, base=base, target=target, res=res, held=cfgs[1::2], ckpt=ckpt)


def test_training_beats_direct_reweighting_on_held_out_configurations(trained):
    f = jax.jit(lambda p, u: log_weights(trained["flow"], p, trained["base"], trained["target"], u)[0])
    var_direct = float(jnp.var(f(trained["flow"].init_params(), trained["held"])))
    var_flow = float(jnp.var(f(trained["res"].params, trained["held"])))
    assert var_flow < var_direct / 5, (var_flow, var_direct)  # measured ~1/80 at L = 16 with 400 configurations


def test_checkpoint_roundtrip_and_bad_checkpoints(trained, tmp_path):
    ck = load_checkpoint(trained["ckpt"])
    assert ck["flow"] == trained["flow"] and ck["flow"].describe()["kind"] == "plaquette"
    np.testing.assert_array_equal(np.asarray(ck["params"]), np.asarray(trained["res"].params))
    # another architecture: the description no longer fits the stored parameters
    from corrflow.flows.train import checkpoint_id
    from corrflow.store.checkpoints import read_checkpoint, write_checkpoint

    meta, arrays = read_checkpoint(trained["ckpt"])
    meta["flow"]["harmonics"] = 4
    meta["id"] = checkpoint_id(meta, np.asarray(ck["params"]))
    bad = tmp_path / "other"
    write_checkpoint(bad, meta, arrays)
    with pytest.raises(ValueError, match="do not fit its flow"):
        load_checkpoint(bad)
    npy = sorted(bad.rglob("*.npy"))
    assert npy
    npy[0].write_bytes(npy[0].read_bytes()[:40])  # a damaged array file: one-line error
    with pytest.raises(ValueError, match="checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(ValueError, match="parameters of shape"):
        train(make_flow("u1", (8, 8), kind="plaquette", harmonics=4), trained["base"], trained["target"],
              trained["held"][:4], TrainConfig(epochs=1, optimizer="lbfgs"), params=ck["params"])


def test_cli_train_defaults_to_the_plaquette_flow_with_held_out_selection(tmp_path):
    """`corrflow train` with no architecture options: a plaquette-space flow, L-BFGS, 64 held-out configurations;
    options that do not fit the theory are refused before anything is written."""
    from test_flow_pipeline import cli

    store = tmp_path / "s.zarr"
    code, out = cli("generate", "u1", "--beta", 2.0, "--shape", "8,8", "--n", 120, "--chains", 2, "--thin", 2,
                    "--store", store)
    assert code == 0, out
    code, out = cli("train", "--store", store, "--from", "u1_8x8_beta2", "--to", "beta=2.2", "--out", tmp_path / "f",
                    "--n-train", 100, "--epochs", 15)
    assert code == 0 and "plaquette flow" in out and "held-out ESS" in out, out
    ck = load_checkpoint(tmp_path / "f")
    assert ck["flow"].kind == "plaquette" and ck["config"].optimizer == "lbfgs" and ck["config"].patience == 5
    assert "held_var_logw" in ck["history"][-1]
    code, out = cli("correlate", "--store", store, "--from", "u1_8x8_beta2", "--flow", tmp_path / "f", "--name", "fl")
    assert code == 0 and "weight ESS" in out, out
    from corrflow.store import open_store
    assert open_store(store).spec("fl").flow["flow_id"] == ck["id"]
    for args, match in [(("--kind", "plaquette", "--loops", "plaquette,rectangle"), "belong to --kind residual"),
                        (("--kind", "plaquette", "--harmonics", 0), "harmonics"), (("--kind", "spline"), "unknown flow kind"),
                        (("--kind", "residual", "--net-width", 4, "--degree", 1), "degree 0"),
                        (("--smear", 1), "d >= 3"),
                        (("--held-out", -1), "--held-out")]:
        code, out = cli("train", "--store", store, "--from", "u1_8x8_beta2", "--to", "beta=2.2", "--out",
                        tmp_path / "bad", *args)
        assert code == 2 and match in out, (args, out)
        assert not (tmp_path / "bad").exists()


def test_checkpoint_of_the_old_format_loads_unchanged(tmp_path):
    """A checkpoint as written before flow kinds existed (no "kind", no network fields) rebuilds the same residual
    flow, with the same id."""
    from corrflow.flows.train import CHECKPOINT_FORMAT, checkpoint_id

    params = np.arange(8.0).reshape(2, 2, 2, 1) / 100
    meta = {"format": CHECKPOINT_FORMAT, "version": 1,
            "flow": {"group": "u1", "shape": [4, 4], "loops": ["plaquette"], "n_sweeps": 2, "n_layers": 8},
            "base": {"group": "u1", "shape": [4, 4], "params": {"beta": 1.0, "xi": 1.0, "lam": 0.0}},
            "target": {"group": "u1", "shape": [4, 4], "params": {"beta": 1.2, "xi": 1.0, "lam": 0.0}},
            "train": {"epochs": 3, "batch_size": 16, "learning_rate": 0.05, "target_ess": 1.0, "seed": 0,
                      "init_scale": 0.0, "optimizer": "adam"}, "epoch": 3, "history": []}
    meta["id"] = checkpoint_id(meta, params)
    (tmp_path / "checkpoint.json").write_text(json.dumps(meta))
    np.savez(tmp_path / "arrays.npz", params=params)
    ck = load_checkpoint(tmp_path)
    assert ck["flow"] == make_flow("u1", (4, 4), n_sweeps=2) and ck["id"] == meta["id"]
    assert ck["flow"].describe() == meta["flow"] and ck["config"].patience == 0 and ck["resume_params"] is None
    u = G.random(KEY, (4, 4, 2))
    np.testing.assert_array_equal(np.asarray(ck["flow"].forward(ck["params"], u)[0]),
                                  np.asarray(make_flow("u1", (4, 4), n_sweeps=2).forward(jnp.asarray(params), u)[0]))
