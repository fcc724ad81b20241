"""The flow workflow through the store and the CLI: train -> correlate -> compare, pairing, resume,
NaN guard, volume transfer and bad input."""

import numpy as np
import pytest
from typer.testing import CliRunner

import corrflow as cf
from corrflow.cli import app
from corrflow.flows import make_flow
from corrflow.flows.train import (FlowTrainingError, TrainConfig, load_checkpoint, log_weights, resume_kwargs,
                                  train)
from corrflow.stats import weight_ess_fraction
from corrflow.store import open_store

runner = CliRunner()


def cli(*args):
    import corrflow.cli

    corrflow.cli.console.width = 250  # wide tables: no truncated cells, whatever ran before in this process
    res = runner.invoke(app, [str(a) for a in args])
    return res.exit_code, " ".join(res.output.split())


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipe")
    store = d / "s.zarr"
    for beta, seed in ((2.0, 0), (2.2, 1)):
        code, out = cli("generate", "u1", "--beta", beta, "--shape", "8,8", "--n", 300, "--chains", 2, "--thin", 2,
                        "--seed", seed, "--store", store, "--observables", "topological_charge")
        assert code == 0, out
    code, out = cli("train", "--store", store, "--from", "u1_8x8_beta2", "--to", "beta=2.2", "--out", d / "flow",
                    "--epochs", 8, "--n-train", 200, "--loops", "plaquette")
    assert code == 0, out
    # why training stopped, in words (it printed the raw "(epochs)" / "(patience)")
    assert __import__("re").search(r"\d+ epochs? \((all --epochs run|stopped: no held-out gain for --patience "
                                   r"epochs|stopped: --target-ess reached|converged)\)", " ".join(out.split())), out
    for args in (("--flow", d / "flow", "--name", "flowed"), ("--identity", "--to", "beta=2.2", "--name", "direct")):
        code, out = cli("correlate", "--store", store, "--from", "u1_8x8_beta2", *args, "--batch", 100)
        assert code == 0, out
    return d, store


def test_pairing_and_provenance(pipeline):
    d, store = pipeline
    st = open_store(store)
    base, fl = st.open_ensemble("u1_8x8_beta2"), st.open_ensemble("flowed")
    np.testing.assert_array_equal(fl.traj.values, base.traj.values)
    np.testing.assert_array_equal(fl.source_traj.values, np.broadcast_to(base.traj.values, (2, 300)))
    np.testing.assert_array_equal(fl.source_chain.values, np.repeat([[0], [1]], 300, axis=1))
    info = st.info("flowed")
    ck = load_checkpoint(d / "flow")
    assert info["flow"]["source"] == "u1_8x8_beta2" and info["flow"]["flow_id"] == ck["id"]
    assert info["params"]["beta"] == 2.2
    # the stored flowed links and weights are exactly the flow applied to the stored base links
    u = st.load_configs("u1_8x8_beta2", 1, [7, 8])
    uf, lj = ck["flow"].forward(ck["params"], u)
    np.testing.assert_allclose(np.asarray(uf), st.load_configs("flowed", 1, [7, 8]), atol=1e-13)
    np.testing.assert_allclose(np.asarray(lj), fl.log_jacobian.values[1, 7:9], atol=1e-10)
    lw = -ck["target"].action(uf) + ck["base"].action(u) + lj
    np.testing.assert_allclose(np.asarray(lw), fl.log_weight.values[1, 7:9], atol=1e-9)
    code, out = cli("info", store)
    assert code == 0 and "paired with u1_8x8_beta2 via flow " + ck["id"] in out


def test_compare_table_and_exact(pipeline):
    _, store = pipeline
    code, out = cli("compare", "--store", store, "--base", "u1_8x8_beta2", "flowed", "direct", "u1_8x8_beta2.2")
    assert code == 0, out
    for label in ("independent", "flowed reweighting", "flowed chain", "direct reweighting"):
        assert label in out
    from corrflow.compare import compare_ensembles

    exact_diff = cf.exact.u1_plaquette(2.2, (8, 8)) - cf.exact.u1_plaquette(2.0, (8, 8))
    rows = compare_ensembles(open_store(store), "u1_8x8_beta2", ["flowed", "direct", "u1_8x8_beta2.2"])
    for r in rows:
        assert abs(r.difference.pull(exact_diff)) < 4, r
    flowed = next(r for r in rows if r.estimator == "flowed reweighting")
    assert flowed.variance_reduction > 3, flowed
    # --tau-exp: every error with the exponential tail of a slow mode (corrflow.stats.windowing), said in the title
    from corrflow.stats import Windowing

    code, out = cli("compare", "--store", store, "--base", "u1_8x8_beta2", "flowed", "u1_8x8_beta2.2", "--tau-exp", "15")
    assert code == 0 and "tau_exp = 15" in out, out
    tail = compare_ensembles(open_store(store), "u1_8x8_beta2", ["flowed", "direct", "u1_8x8_beta2.2"],
                             windowing=Windowing(tau_exp=15.0))
    assert [(r.estimator, r.ensemble) for r in tail] == [(r.estimator, r.ensemble) for r in rows]
    assert all(t.difference.value == r.difference.value for t, r in zip(tail, rows))
    assert any(t.difference.error != r.difference.error for t, r in zip(tail, rows))
    code, out = cli("compare", "--store", store, "--base", "u1_8x8_beta2", "flowed", "--tau-exp", "nan")
    assert code == 2 and "--tau-exp must be" in out and "Traceback" not in out, out


def test_summary_of_a_flowed_ensemble_is_reweighted(pipeline):
    """`summary` of a flowed ensemble reweights its observables to its parameters (it used to average the flowed
    configurations without their weights and compare that with the exact value at the target) and leaves out its
    bookkeeping; the reweighted plaquette agrees with the exact beta = 2.2 value (|pull| < 4)."""
    from corrflow.stats import reweighted_mean
    from corrflow.summary import ensemble_summary

    _, store = pipeline
    st = open_store(store)
    rows = {r.observable: r for r in ensemble_summary(st, "flowed")}
    assert not {"log_weight", "log_jacobian", "source_chain", "source_traj"} & set(rows)
    fl = st.open_ensemble("flowed")
    ref = reweighted_mean(fl.plaquette.values, fl.log_weight.values).stats
    assert rows["plaquette"].stats.value == pytest.approx(ref.value, rel=1e-12)
    assert rows["plaquette"].exact == pytest.approx(cf.exact.u1_plaquette(2.2, (8, 8)))
    assert abs(rows["plaquette"].pull) < 4, rows["plaquette"]
    assert rows["chi_top"].exact is not None and abs(rows["chi_top"].pull) < 4, rows["chi_top"]
    code, out = cli("summary", store, "flowed")
    assert code == 0 and "observables reweighted to its parameters with its log weights (weight ESS" in out, out
    code, every = cli("summary", store)  # no ensemble: every ensemble of the store, one table each
    assert code == 0 and all(f"{name}: " in every for name in st.ensembles()), every
    assert "observables reweighted to its parameters" in every


def test_correlate_extends_with_the_base(pipeline, tmp_path):
    d, store = pipeline
    import shutil

    s2 = tmp_path / "s.zarr"
    shutil.copytree(store, s2)
    code, out = cli("generate", "u1", "--beta", 2.0, "--shape", "8,8", "--n", 350, "--chains", 2, "--thin", 2,
                    "--seed", 0, "--store", s2, "--observables", "topological_charge", "--resume")
    assert code == 0, out
    cost300 = open_store(s2).info("flowed")["cost_s"]
    assert cost300 is not None and cost300 > 0  # flow application, steady state, recorded with the commit
    code, out = cli("correlate", "--store", s2, "--from", "u1_8x8_beta2", "--flow", d / "flow", "--name", "flowed")
    assert code == 0 and "+50 -> 350" in out, out
    st = open_store(s2)
    assert st.info("flowed")["cost_s"] > cost300  # the extension's cost added to the recorded one
    code, out = cli("info", s2, "flowed")
    assert code == 0 and "flow application cost" in out and "generation cost" not in out, out
    np.testing.assert_array_equal(st.open_ensemble("flowed").traj.values, st.open_ensemble("u1_8x8_beta2").traj.values)
    code, out = cli("correlate", "--store", s2, "--from", "u1_8x8_beta2", "--flow", d / "flow", "--name", "flowed")
    assert code == 0 and "up to date flowed: all 350 base configurations per chain paired; nothing to do" in out, out


def test_train_streamed_from_the_store_gives_the_same_flow(pipeline, tmp_path):
    """`corrflow train --stream` reads the training and held-out configurations one batch at a time: the same
    checkpoint (content id) as the flow trained from them in memory."""
    d, store = pipeline
    args = ("train", "--store", store, "--from", "u1_8x8_beta2", "--to", "beta=2.2", "--epochs", 2, "--n-train", 64,
            "--held-out", 32, "--loops", "plaquette")
    code, out = cli(*args, "--out", tmp_path / "streamed", "--stream")
    assert code == 0 and "streaming 64 training and 32 held-out configurations" in out, out
    code, out2 = cli(*args, "--out", tmp_path / "loaded", "--no-stream")
    assert code == 0 and "streaming" not in out2, out2
    assert load_checkpoint(tmp_path / "streamed")["id"] == load_checkpoint(tmp_path / "loaded")["id"]


def test_default_training_set_size_follows_the_optimiser(pipeline, tmp_path):
    """Without --n-train, Gauss-Newton (the residual flows' default optimiser: a handful of tied coefficients) trains on
    128 configurations, the other optimisers on 512 (BENCHMARKS.md: 128 pin the tied 4D flow as well as 272)."""
    d, store = pipeline
    args = ("train", "--store", store, "--from", "u1_8x8_beta2", "--to", "beta=2.2", "--epochs", 1, "--loops",
            "plaquette", "--stream")
    code, out = cli(*args, "--out", tmp_path / "linear")
    assert code == 0 and "streaming 128 training and 64 held-out configurations" in out, out
    code, out = cli(*args, "--out", tmp_path / "lbfgs", "--optimizer", "lbfgs")
    assert code == 0 and "streaming 512 training and 64 held-out configurations" in out, out


def test_volume_transfer_through_the_store(pipeline, tmp_path):
    """A flow trained at 8x8 correlates a 16x16 ensemble (same parameters, local layers)."""
    d, _ = pipeline
    s = tmp_path / "big.zarr"
    code, out = cli("generate", "u1", "--beta", 2.0, "--shape", "16,16", "--n", 60, "--chains", 1, "--store", s)
    assert code == 0, out
    code, out = cli("correlate", "--store", s, "--from", "u1_16x16_beta2", "--flow", d / "flow", "--name", "f16")
    assert code == 0, out
    info = open_store(s).info("f16")
    assert info["flow"]["trained_shape"] == [8, 8] and info["shape"] == [16, 16]


class Stop(Exception):
    """Raised by :func:`stop_at` to interrupt training after a given epoch."""


def stop_at(epoch_to_stop):
    def progress(epoch, rec):
        if epoch == epoch_to_stop:
            raise Stop
    return progress


def test_training_resume_is_bitwise_and_nan_guard_keeps_checkpoint(tmp_path):
    th = cf.make_theory("u1", (4, 4), beta=1.0)
    tgt = th.replace(beta=1.2)
    cfgs = np.asarray(th.group.random(__import__("jax").random.PRNGKey(0), (64, 4, 4, 2)))
    flow = make_flow("u1", (4, 4))
    conf = TrainConfig(epochs=6, batch_size=16, learning_rate=0.05)
    full = train(flow, th, tgt, cfgs, conf)

    with pytest.raises(Stop):
        train(flow, th, tgt, cfgs, conf, checkpoint=tmp_path / "ck", progress=stop_at(3))
    ck = load_checkpoint(tmp_path / "ck")
    assert ck["epoch"] == 3
    resumed = train(flow, th, tgt, cfgs, conf, checkpoint=tmp_path / "ck", **resume_kwargs(ck, len(cfgs)))
    np.testing.assert_array_equal(np.asarray(resumed.params), np.asarray(full.params))
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    # NaN guard: poisoned data stops training with a clear error; the checkpoint keeps epoch 6
    bad = cfgs.copy()
    bad[5, 0, 0, 0] = np.nan
    with pytest.raises(FlowTrainingError, match="diverged in epoch 7.*last good parameters"):
        train(flow, th, tgt, bad, TrainConfig(epochs=8, batch_size=16), params=resumed.params, start_epoch=6,
              history=resumed.history, checkpoint=tmp_path / "ck")
    assert load_checkpoint(tmp_path / "ck")["epoch"] == 6


def test_lbfgs_training_decreases_loss_resumes_and_guards_nans(tmp_path):
    """Full-batch L-BFGS on Haar-random links (exact samples of beta = 0) -> beta = 0.8, staple-norm coefficients of
    degree 2: the full-batch loss never rises, the held-out weight ESS beats the identity flow's, training resumes
    from its checkpoint, stops at target_ess, and poisoned data raises with the last good checkpoint kept."""
    import jax

    th = cf.make_theory("u1", (4, 4), beta=0.0)
    tgt = th.replace(beta=0.8)
    cfgs = np.asarray(th.group.random(jax.random.PRNGKey(0), (160, 4, 4, 2)))
    train_set, held_out = cfgs[:64], cfgs[64:]
    flow = make_flow("u1", (4, 4), n_sweeps=2, degree=2)
    conf = TrainConfig(epochs=12, batch_size=32, optimizer="lbfgs")
    full = train(flow, th, tgt, train_set, conf, checkpoint=tmp_path / "full")
    losses = [h["loss"] for h in full.history]
    assert np.all(np.diff(losses) <= 1e-12), losses
    assert all(h["evals"] >= h["epoch"] for h in full.history)
    logw = jax.jit(lambda p, u: log_weights(flow, p, th, tgt, u)[0])
    ess_id, ess_trained = (weight_ess_fraction(np.asarray(logw(p, held_out))[None]) for p in (flow.init_params(),
                                                                                              full.params))
    assert ess_trained > ess_id + 0.1, (ess_id, ess_trained)
    assert load_checkpoint(tmp_path / "full")["flow"].degree == 2

    with pytest.raises(Stop):
        train(flow, th, tgt, train_set, conf, checkpoint=tmp_path / "ck", progress=stop_at(2))
    ck = load_checkpoint(tmp_path / "ck")
    assert ck["epoch"] == 2 and ck["config"].optimizer == "lbfgs"
    resumed = train(flow, th, tgt, train_set, conf, checkpoint=tmp_path / "ck", **resume_kwargs(ck, len(train_set)))
    # the checkpoint's evaluation log replays the interrupted run: the resumed run is the uninterrupted one, bit for
    # bit (it was only close: scipy's L-BFGS-B restarted with an empty memory), and so is a second interruption
    np.testing.assert_array_equal(np.asarray(resumed.params), np.asarray(full.params))
    assert resumed.history == full.history and resumed.stopped == full.stopped
    assert load_checkpoint(tmp_path / "ck")["id"] == load_checkpoint(tmp_path / "full")["id"]
    with pytest.raises(Stop):
        train(flow, th, tgt, train_set, conf, checkpoint=tmp_path / "ck2", progress=stop_at(1))
    with pytest.raises(Stop):
        train(flow, th, tgt, train_set, conf, checkpoint=tmp_path / "ck2", progress=stop_at(4),
              **resume_kwargs(load_checkpoint(tmp_path / "ck2"), len(train_set)))
    again = train(flow, th, tgt, train_set, conf, checkpoint=tmp_path / "ck2",
                  **resume_kwargs(load_checkpoint(tmp_path / "ck2"), len(train_set)))
    np.testing.assert_array_equal(np.asarray(again.params), np.asarray(full.params))
    assert again.history == full.history
    early = train(flow, th, tgt, train_set, TrainConfig(epochs=12, optimizer="lbfgs", target_ess=0.0),
                  checkpoint=tmp_path / "early")
    assert early.stopped == "target_ess" and len(early.history) == 2
    assert load_checkpoint(tmp_path / "early")["stopped"] == "target_ess"  # complete: analyses reuse it as is
    assert load_checkpoint(tmp_path / "ck")["stopped"] in (None, "converged")
    bad = train_set.copy()
    bad[5, 0, 0, 0] = np.nan
    with pytest.raises(FlowTrainingError, match="diverged.*last good parameters"):
        train(flow, th, tgt, bad, conf, checkpoint=tmp_path / "bad")
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match=r"target_ess is a weight ESS fraction in \[0, 1\], got 2"):
        TrainConfig(target_ess=2.0)  # (it used to be accepted: never reached)


def test_flow_bad_inputs(pipeline, tmp_path):
    d, store = pipeline
    code, out = cli("correlate", "--store", store, "--from", "u1_8x8_beta2.2", "--flow", d / "flow", "--name", "x")
    assert code == 2 and "trained from parameters" in out
    code, out = cli("correlate", "--store", store, "--from", "u1_8x8_beta2", "--identity", "--name", "x")
    assert code == 2 and "target parameters" in out
    code, out = cli("correlate", "--store", store, "--from", "u1_8x8_beta2", "--name", "x")
    assert code == 2 and "exactly one of --flow" in out
    code, out = cli("correlate", "--store", store, "--from", "u1_8x8_beta2", "--flow", tmp_path, "--name", "x")
    assert code == 2 and "no flow checkpoint" in out
    code, out = cli("train", "--store", store, "--from", "u1_8x8_beta2", "--to", "gamma=1", "--out", tmp_path / "f")
    assert code == 2 and "unknown action parameter 'gamma'" in out
    code, out = cli("compare", "--store", store, "--base", "u1_8x8_beta2.2", "flowed")
    assert code == 2 and "pairs with 'u1_8x8_beta2'" in out
    assert "x" not in open_store(store).ensembles()


def test_report_writes_figures_and_markdown(pipeline, tmp_path):
    d, store = pipeline
    out = tmp_path / "rep"
    code, text = cli("report", "--store", store, "--base", "u1_8x8_beta2", "flowed", "direct", "u1_8x8_beta2.2",
                     "--out", out, "--obs", "plaquette", "--obs", "topological_charge")
    assert code == 0, text
    md = (out / "report.md").read_text()
    ck = load_checkpoint(d / "flow")
    for name in ("derivative_plaquette.png", "derivative_topological_charge.png", "shift_scan.png",
                 f"training_{ck['id']}.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
        assert f"]({name})" in md
    assert "| plaquette | flowed reweighting | `flowed` |" in md
    assert "| plaquette | independent | `u1_8x8_beta2.2` |" in md
    # `<O>(a')`, `### d<plaquette>/dbeta` are raw HTML to a Markdown renderer (they vanished): escaped outside code
    from corrflow.markdown import html_outside_code

    assert html_outside_code(md) == [] and "| &lt;O&gt;(a') |" in md and "### d&lt;plaquette&gt;/dbeta" in md
    code, text = cli("report", "--store", store, "--base", "u1_8x8_beta2", "flowed", "u1_8x8_beta2.2", "--out",
                     tmp_path / "tail", "--tau-exp", "15")
    assert code == 0, text
    assert "exponential tail of a slow mode with tau_exp = 15" in (tmp_path / "tail" / "report.md").read_text()


def test_report_flow_line_exact_pulls_and_figures_say_what_they_show(monkeypatch, tmp_path):
    """Report parts without a store: the flow line quotes the ESS of the epoch held-out selection kept (not the last
    epoch's) and counts in the singular where it is one; the exact finite difference the derivative figures mark is
    in the text with each shift estimator's pull; the training figure has integer epochs, the held-out ESS and the
    kept epoch; the shift scan labels its points (a log axis over a decade or two has too few ticks to read them)."""
    import matplotlib.pyplot as plt

    from corrflow import report
    from corrflow.compare import ComparisonRow
    from corrflow.stats.result import Stats

    hist = [{"epoch": e, "loss": -e, "ess": 0.3 + 0.1 * e, "held_ess": 0.4 + 0.1 * e - 0.3 * (e == 4),
             "held_var_logw": 1.0 - 0.2 * e + 0.9 * (e == 4)} for e in range(5)]
    flow = make_flow("u1", (4, 4), n_sweeps=1)
    line = report._flow_line("fl", {"flow": flow, "history": hist, "id": "abc", "epoch": 4})
    assert "1 sweep of plaquette layers" in line and "for 4 epochs" in line
    assert line.endswith("0.300 -> 0.600 (epoch 3 kept by held-out selection)"), line

    def stats(v, e):
        return Stats(v, e, 0.5, 0.0, 100, 1, 1)

    rows = [ComparisonRow("plaquette", "independent", "ind", None, stats(0.2, 0.1), stats(1.0, 0.5), None, None),
            ComparisonRow("plaquette", "flowed reweighting", "fl", None, stats(0.2, 0.1), stats(0.4, 0.2), 0.9, 6.2),
            ComparisonRow("plaquette", "connected", "base", None, stats(0.2, 0.1), stats(9.0, 0.1), None, None)]
    text = " ".join(report._exact_lines(rows, {"plaquette": 0.5}, "beta"))
    assert "plaquette 0.5 (pulls in sigma: independent +1.0, flowed reweighting -0.5)" in text, text
    assert report._exact_lines(rows, {}, "beta") == []

    figs = []
    monkeypatch.setattr(plt, "close", figs.append)
    report._training_figure(hist, "t", tmp_path / "train.png")
    ax = figs[-1].axes[0]
    labels = [h.get_label() for a in figs[-1].axes for h in a.get_legend_handles_labels()[0]]
    assert "kept: epoch 3" in labels and "weight ESS / N (held out)" in labels
    assert all(float(t).is_integer() for t in ax.get_xticks())
    report._shift_figure([{"estimator": "flowed reweighting", "shift": 0.2, "vr": 54.12, "ess": 0.972},
                          {"estimator": "direct reweighting", "shift": 0.2, "vr": 1.01, "ess": 0.255}], "beta",
                         tmp_path / "shift.png")
    a1, a2 = figs[-1].axes
    assert {t.get_text() for t in a1.texts} == {"54.1", "1.0"} and {t.get_text() for t in a2.texts} == {"0.972",
                                                                                                         "0.255"}
    assert a1.get_ylim()[1] > 54.12 * 3 and a1.get_ylim()[0] < 1.0
    monkeypatch.undo()
    for f in figs:
        plt.close(f)
