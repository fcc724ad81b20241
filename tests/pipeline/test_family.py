"""corrflow.pipeline steps and family: pairing, weights, reuse through the store, costs, bad input (tiny 2D U(1))."""

from __future__ import annotations

import io
import math
import re

import jax.numpy as jnp
import numpy as np
import pytest
from rich.console import Console

import corrflow as cf
from corrflow.pipeline import (
    EnsembleSettings,
    FlowSettings,
    MarkovSettings,
    Pipeline,
    Progress,
    TrainingSettings,
    family,
    parameter_shift,
    training_configs,
)

GROUPS = dict(ensemble=EnsembleSettings(n_configs=24, n_therm=10, seed=3, n_chains=2, block_size=24),
              markov=MarkovSettings(step_size=0.25, n_steps=4, integrator="leapfrog"), flow=FlowSettings(),
              training=TrainingSettings(epochs=2, n_train=16, batch_size=8, held_out=0))


def _family(path, progress=None, **kw):
    base = cf.make_theory("u1", (4, 4), beta=1.5)
    pipe = Pipeline(path, progress=progress)
    return pipe, family(pipe, base, [base.replace(beta=1.8)], direct=True, **{**GROUPS, **kw})


@pytest.fixture(scope="module")
def fam(tmp_path_factory):
    d = tmp_path_factory.mktemp("fam")
    events = []
    log = io.StringIO()
    pipe, f = _family(d / "wf.zarr", progress=Progress(Console(file=log, width=200), lambda *a: events.append(a)))
    return d, pipe, f, events, log.getvalue()


def test_shapes_names_and_costs(fam):
    _, pipe, f, events, log = fam
    m = f.members[0]
    n, c = GROUPS["ensemble"].n_configs, GROUPS["ensemble"].n_chains
    shape = (c, n) + cf.make_theory("u1", (4, 4), beta=1.5).link_shape
    assert f.base.links().shape == shape == m.flowed.links().shape == m.independent.links().shape
    assert m.flowed.log_weights().shape == m.direct.log_weights().shape == (c, n)
    assert f.base.name == "u1_4x4_beta1.5_seed3" and m.independent.name == "u1_4x4_beta1.8_seed4"
    assert m.flowed.name.startswith(f.base.name + "__flow_") and m.direct.name == f.base.name + "__direct_beta1.8"
    assert parameter_shift(f.base.theory, m.target) == ("beta", pytest.approx(0.3))
    steps = f.step_costs()
    assert set(steps) == {"hmc_base", "hmc_training", "train", "flow", "direct", "hmc_independent"}
    assert steps["hmc_training"] == 0.0 and all(math.isfinite(v) and v > 0 for k, v in steps.items()
                                                if k != "hmc_training")
    # the one definition of the path costs (corrflow.pipeline.family), measurements added where given
    p = f.path_costs({"base": 1.0, "flowed": 2.0, "independent": 4.0, "direct": 8.0})
    assert p["flowed"] == pytest.approx(steps["hmc_base"] + steps["train"] + steps["flow"] + 3.0)
    assert p["direct"] == pytest.approx(steps["hmc_base"] + steps["direct"] + 9.0)
    assert p["independent"] == pytest.approx(steps["hmc_base"] + steps["hmc_independent"] + 5.0)
    assert p["connected"] == pytest.approx(steps["hmc_base"] + 1.0)
    assert f.path_costs(independent_uses_base=False)["independent"] == pytest.approx(steps["hmc_independent"])
    assert {e[0] for e in events} >= {"hmc_base", "hmc_independent", "train", "flow", "direct"}
    # the log line of a training without held-out set (it used to end in "configurationsNone")
    assert re.search(r"train: 2 epochs on 16 configurations, weight ESS [0-9.]+ -> [0-9.]+", log), log
    assert "None" not in log, log
    assert 0 < m.flowed.weight_ess_fraction() <= 1 and 0 < m.direct.weight_ess_fraction() <= 1
    assert not np.allclose(f.base.links(), m.independent.links())


def test_pairing_and_weights_recomputed(fam):
    """Row i of the flowed ensemble is f(U_i) with its weight (recomputed from the checkpoint)."""
    from corrflow.flows.train import load_checkpoint

    _, _, f, _, _ = fam
    m = f.members[0]
    base, target = f.base.theory, m.target
    ck = load_checkpoint(m.flow.checkpoint)
    u = jnp.asarray(f.base.links().reshape((-1,) + base.link_shape))
    uf, logj = ck["flow"].forward(ck["params"], u)
    np.testing.assert_allclose(np.asarray(uf), m.flowed.links().reshape(uf.shape), atol=1e-12)
    lw = -target.action(uf) + base.action(u) + logj
    np.testing.assert_allclose(np.asarray(lw), m.flowed.log_weights().ravel(), rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(np.asarray(-target.action(u) + base.action(u)), m.direct.log_weights().ravel(),
                               rtol=1e-10, atol=1e-9)
    assert np.any(np.abs(np.asarray(logj)) > 0)  # the flow is not the identity
    # the training set: spread over each chain of the base ensemble, chain-major
    tc = training_configs(f.base.links(), 16)
    np.testing.assert_array_equal(tc[:8], f.base.links()[0, np.unique(np.linspace(0, 23, 8).astype(int))])


def test_reuse_through_the_store(fam):
    d, pipe, f, _, _ = fam
    events = []
    _, again = _family(d / "wf.zarr", progress=lambda *a: events.append(a))
    assert not events  # nothing was generated, trained or flowed again
    np.testing.assert_array_equal(again.members[0].flowed.log_weights(), f.members[0].flowed.log_weights())
    assert again.step_costs() == pytest.approx(f.step_costs())  # charged from the ledger
    # a smaller request reuses the first configurations of each chain, its costs scaled down
    fewer = _family(d / "wf.zarr", ensemble=EnsembleSettings(n_configs=12, n_therm=10, seed=3, n_chains=2,
                                                              block_size=24))[1]
    np.testing.assert_array_equal(fewer.base.links(), f.base.links()[:, :12])
    assert fewer.base.cost == pytest.approx(f.base.cost / 2)
    # the flow is identified by its settings and training source, not by how much of the base a run uses: reused
    assert fewer.members[0].flow.id == f.members[0].flow.id


def test_bad_input(tmp_path):
    base = cf.make_theory("u1", (4, 4), beta=1.5)
    pipe = Pipeline(tmp_path / "a.zarr")
    kw = dict(GROUPS)
    with pytest.raises(ValueError, match="same parameters"):
        family(pipe, base, [base], **kw)
    with pytest.raises(ValueError, match="same kind of theory"):
        family(pipe, base, [cf.make_theory("schwinger", (4, 4), beta=1.5, mass=0.1)], **kw)
    with pytest.raises(ValueError, match="same group and lattice"):
        family(pipe, base, [cf.make_theory("u1", (4, 8), beta=1.8)], **kw)
    with pytest.raises(ValueError, match="at least one target"):
        family(pipe, base, [], **kw)
    with pytest.raises(ValueError, match="stochastic"):
        family(pipe, base, [base.replace(beta=2.0)], weights="stochastic", **kw)
    assert pipe.store.ensembles() == []  # nothing generated before the input was checked
    with pytest.raises(ValueError, match="nothing to correlate"):
        parameter_shift(base, base)


def test_ensemble_cost_from_the_store_record(fam, tmp_path):
    """An ensemble the pipeline did not make itself (no ledger entry: another flow directory, `corrflow generate`) is
    charged the generation cost in its commit record, in the ledger's definition (thermalisation added at the
    production rate), scaled to the configurations used; without a record it stays unknown."""
    from corrflow.pipeline import generate_to_store
    from corrflow.pipeline.ensembles import recorded_cost

    _, pipe, f, _, _ = fam
    fresh = Pipeline(pipe.store, flow_dir=tmp_path / "other_flows")  # an empty ledger
    name, theory = f.base.name, f.base.theory
    info = pipe.store.info(name)
    n, n_therm, cost = info["committed"], info["n_therm"], info["cost_s"]
    assert cost is not None and cost > 0
    kw = dict(name=name, n_chains=2, seed=3, n_therm=n_therm)
    upd = GROUPS["markov"].config()
    full = fresh.ensemble(theory, upd, n=n, **kw)
    assert full.cost == pytest.approx(cost * (n_therm + n) / n) == pytest.approx(recorded_cost(pipe.store, name))
    assert fresh.ensemble(theory, upd, n=n // 2, **kw).cost == pytest.approx(full.cost / 2)
    assert pipe.ensemble(theory, upd, n=n, **kw).cost == pytest.approx(pipe.ledger.cost(f"hmc/{name}", n))  # own record
    # a block appended without a cost (an import, an older corrflow): unknown, not a guess
    store = cf.open_store(tmp_path / "s.zarr", "a")
    generate_to_store(store, "e", theory, upd, n_traj=4, n_chains=2, n_therm=2, block_size=4)
    assert math.isfinite(recorded_cost(store, "e"))
    with store.writer("e") as w:
        w.append([100], np.zeros((2, 1, 4, 4, 2)), {k: np.zeros((2, 1)) for k in w._per_traj_vars()}, 101)
    assert math.isnan(recorded_cost(store, "e"))
    assert math.isnan(Pipeline(store, flow_dir=tmp_path / "f")._stored_cost("hmc/e", "e", 4))


def test_paired_cost_from_the_store_record(fam, tmp_path):
    """A paired ensemble records the cost of its flowed configurations in its commit record (flow application,
    weights, measurements), so a pipeline that reuses it without a ledger entry (made by `corrflow correlate` or in
    another flow directory) is charged that cost, scaled to the configurations used, not NaN."""
    _, pipe, f, _, _ = fam
    m = f.members[0]
    for paired, key in ((m.flowed, "flow"), (m.direct, "direct")):
        cost = pipe.store.info(paired.name)["cost_s"]
        assert cost is not None and cost > 0
        # the store's record and the ledger's entry measure the same run (both steady state, compilation excluded)
        assert math.isfinite(pipe.ledger.cost(f"{key}/{paired.name}"))
        fresh = Pipeline(pipe.store, flow_dir=tmp_path / f"other_{key}")  # an empty ledger
        assert math.isnan(fresh.ledger.cost(f"{key}/{paired.name}"))
        n = f.base.n
        assert fresh._stored_cost(f"{key}/{paired.name}", paired.name, n) == pytest.approx(cost)
        assert fresh._stored_cost(f"{key}/{paired.name}", paired.name, n // 2) == pytest.approx(cost / 2)


def test_interrupted_training_keeps_its_cost(fam):
    """Training interrupted after some epochs resumes from its checkpoint, and the cost ledger charges the epochs
    of both runs (it used to record nothing for the interrupted run, so the resumed flow's cost was NaN: "cost of
    train unknown (made outside the pipeline)")."""
    d, _, _, _, _ = fam
    training = TrainingSettings(epochs=4, n_train=16, batch_size=8, learning_rate=2e-3, optimizer="adam", held_out=0)

    def stop_at_epoch_2(stage, done, total, msg):
        if stage == "train" and done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _family(d / "wf.zarr", progress=stop_at_epoch_2, training=training)
    pipe, f = _family(d / "wf.zarr", training=training)
    key = f"train/{f.members[0].flow.checkpoint.name}"
    assert f.members[0].flow.epochs == 4
    cost = pipe.ledger.seconds(key)
    assert math.isfinite(cost) and cost > 0 and math.isfinite(f.step_costs()["train"])
