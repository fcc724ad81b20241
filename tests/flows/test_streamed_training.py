"""Training from configurations read on demand (``corrflow.store.StoredConfigs``, ``corrflow.flows.batches``): the
source reads what it is asked, chunk by chunk; training from it gives bit for bit the flow trained from the same
configurations in memory (Adam, L-BFGS, Gauss–Newton, held-out selection) while never asking for more than one batch;
``training_sets`` streams by size or on request; bad positions are a one-line error."""

import jax
import numpy as np
import pytest

from corrflow import make_theory
from corrflow.flows import make_flow
from corrflow.flows import linear as linear_mod
from corrflow.flows import train as train_mod
from corrflow.flows.batches import batches, full_batches, streamed, valid_rows
from corrflow.flows.train import TrainConfig, train
from corrflow.groups import get_group
from corrflow.pipeline import handles
from corrflow.store import EnsembleSpec, StoredConfigs, StoreError, open_store

N = 40  # configurations per chain, in chunks of 3


def _store(path, group, shape, key):
    g = get_group(group)
    spec = EnsembleSpec(theory=group, group=group, shape=shape, params={"beta": 1.0}, n_chains=2, seed=0,
                        dtype="float64" if g.is_abelian else "complex128")
    links = np.asarray(g.random(jax.random.PRNGKey(key), (2, N) + tuple(shape) + (len(shape),)))
    st = open_store(path, "a")
    st.create_ensemble("e", spec, chunk_traj=3)
    per = {k: np.zeros((2, N)) for k in ("action", "delta_H", "step_size", "plaquette")}
    per["accepted"] = np.ones((2, N), bool)
    with st.writer("e") as w:
        w.append(np.arange(N), links, per, N)
    return st, links


@pytest.fixture(scope="module")
def u1(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("stream") / "u1.zarr", "u1", (4, 4), 0)


class Spy:
    """An on-demand source that records the size of every request."""

    def __init__(self, source):
        self.source, self.sizes = source, []
        self.shape, self.dtype = source.shape, source.dtype

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        out = self.source[index]
        self.sizes.append(len(out))
        return out


def test_reads_what_is_asked_in_order(u1, monkeypatch):
    st, links = u1
    chains = np.array([1, 0, 1, 1, 0, 0, 1])
    pos = np.array([39, 0, 2, 3, 5, 5, 17])  # across chunks and chains, unsorted, a duplicate, the last partial chunk
    src = st.stored_configs("e", chains, pos)
    assert isinstance(src, StoredConfigs) and streamed(src) and not streamed(links)
    assert src.shape == (7, 4, 4, 2) and src.dtype == np.float64 and src.nbytes == 7 * 4 * 4 * 2 * 8
    want = links[chains, pos]
    np.testing.assert_array_equal(src.load(), want)
    np.testing.assert_array_equal(src[[6, 0, 3]], want[[6, 0, 3]])
    np.testing.assert_array_equal(src[2:5], want[2:5])
    np.testing.assert_array_equal(src[-1], want[-1])
    np.testing.assert_array_equal(src.subset(slice(1, 4))[:], want[1:4])
    assert src[[]].shape == (0, 4, 4, 2)
    # one read per (chain, chunk) touched: chain 1 chunks 13, 0, 1, 5 and chain 0 chunks 0, 1
    reads = []
    real = type(src._links).__getitem__
    monkeypatch.setattr(type(src._links), "__getitem__", lambda self, sel: reads.append(sel) or real(self, sel))
    src.load()
    assert len(reads) == 6
    for c, p in [([2], [0]), ([0], [40])]:
        with pytest.raises(StoreError, match="out of range"):
            st.stored_configs("e", c, p)


def test_batches_prefetch_in_order(u1):
    st, links = u1
    src = st.stored_configs("e", np.zeros(N, int), np.arange(N))
    sel = [np.arange(5), slice(5, 9), np.array([30, 1])]
    for got, s in zip(batches(src, sel), sel, strict=True):
        np.testing.assert_array_equal(got, links[0][s])
    assert [len(b) for b in batches(links[0], sel)] == [5, 4, 2]


def test_full_batches_pad_the_last_one(u1):
    _, links = u1
    got = list(full_batches(links[0], 11, 4))
    assert [(len(x), m) for x, m in got] == [(4, 4), (4, 4), (4, 3)]
    np.testing.assert_array_equal(got[2][0][3], links[0][10])  # padded with the last configuration
    np.testing.assert_array_equal(valid_rows([(x, m) for x, m in got]), links[0][:11])
    assert [len(x) for x, _ in full_batches(links[0], 3, 8)] == [3]  # one batch: not padded


@pytest.mark.parametrize("optimizer,fn", [("lbfgs", "_loss_terms_and_grad"), ("linear", "_logw_and_jacobian"),
                                         ("linear", "_logw_and_jacobian_at_identity")])
def test_a_short_last_batch_compiles_nothing_more_and_changes_nothing(u1, optimizer, fn):
    """20 training and 10 held-out configurations in batches of 8 (short last batches of 4 and 2, padded): the same
    flow as one batch of everything, and one compiled program of the expensive kernel for the three batches (a
    ragged last batch used to compile it a second time: tens of seconds for a 4D flow with smoothing terms); the
    returned parameters are those of the epoch with the best held-out variance."""
    _, links = u1
    base = make_theory("u1", (4, 4), beta=0.0)
    target = base.replace(beta=0.5)
    flow = make_flow("u1", (4, 4), kind="residual")
    kernel = getattr(train_mod if optimizer == "lbfgs" else linear_mod, fn)
    train_set, held = links[0][:20], links[1][:10]
    out = {}
    kernel.clear_cache()  # another test's run may have compiled it for these shapes: then nothing here would
    for bs in (8, 20):
        before = kernel._cache_size()
        conf = TrainConfig(epochs=3, batch_size=bs, optimizer=optimizer, learning_rate=0.05)
        out[bs] = train(flow, base, target, train_set, conf, held_out=held)
        assert kernel._cache_size() - before == 1, bs  # run, and compiled once
        # the returned flow is the held-out selection's (L-BFGS once returned a later line-search point: scipy
        # moves its iterate in place and the selection held a view of it)
        lw = np.asarray(train_mod._eval_logw(flow, base, target, out[bs].params, held)[0])
        assert np.var(lw) == pytest.approx(min(h["held_var_logw"] for h in out[bs].history), rel=1e-9)
    np.testing.assert_allclose(np.asarray(out[8].params), np.asarray(out[20].params), rtol=1e-7, atol=1e-9)
    for a, b in zip(out[8].history, out[20].history, strict=True):
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-7, abs=1e-9) for k in a), (a, b)
    assert out[8].history[-1]["loss"] < out[8].history[0]["loss"]  # it trained


@pytest.mark.parametrize("kind,optimizer", [("residual", "adam"), ("plaquette", "lbfgs")])
def test_training_from_the_store_equals_training_in_memory(u1, kind, optimizer):
    st, links = u1
    base = make_theory("u1", (4, 4), beta=0.0)  # Haar-random links: exact samples
    target = base.replace(beta=0.5)
    train_src, held_src, was_streamed = handles.training_sets(st, "e", N, 2, 48, held_out=16, stream=True)
    assert was_streamed and isinstance(train_src, StoredConfigs) and len(train_src) == 48 and len(held_src) == 16
    flow = make_flow("u1", (4, 4), kind=kind)
    conf = TrainConfig(epochs=3, batch_size=16, optimizer=optimizer, learning_rate=0.05)
    spy, held_spy = Spy(train_src), Spy(held_src)
    a = train(flow, base, target, spy, conf, held_out=held_spy)
    b = train(flow, base, target, train_src.load(), conf, held_out=held_src.load())
    np.testing.assert_array_equal(np.asarray(a.params), np.asarray(b.params))
    assert a.history == b.history and "held_var_logw" in a.history[-1]
    assert max(spy.sizes) <= 16 and max(held_spy.sizes) <= 16 and sum(spy.sizes) >= 3 * 48
    # in memory by default at this size; the same sets
    t2, h2, s2 = handles.training_sets(st, "e", N, 2, 48, held_out=16)
    assert not s2 and isinstance(t2, np.ndarray)
    np.testing.assert_array_equal(t2, train_src.load())
    np.testing.assert_array_equal(h2, held_src.load())


def test_gauss_newton_from_the_store_and_streaming_by_size(tmp_path, monkeypatch):
    st, _ = _store(tmp_path / "su2.zarr", "su2", (4, 4, 4), 1)
    base = make_theory("su2", (4, 4, 4), beta=0.0)
    target = base.replace(beta=0.6)
    monkeypatch.setattr(handles, "STREAM_BYTES", 2**19)  # 64 configurations of 4^3 SU(2) links: 768 KiB
    train_src, held, was_streamed = handles.training_sets(st, "e", N, 2, 64)
    assert was_streamed and held is None and isinstance(train_src, StoredConfigs)
    flow = make_flow("su2", (4, 4, 4), n_sweeps=2)
    conf = TrainConfig(epochs=1, batch_size=32, optimizer="linear")
    spy = Spy(train_src)
    a = train(flow, base, target, spy, conf)
    b = train(flow, base, target, train_src.load(), conf)
    np.testing.assert_array_equal(np.asarray(a.params), np.asarray(b.params))
    assert a.history == b.history and max(spy.sizes) <= 32


def test_short_ensembles_keep_a_held_out_set():
    """`training_size`: the requested training set unless the chains are too short for it and the held-out set
    together; then the held-out set keeps up to a quarter of each chain (it used to be silently empty, so `corrflow
    train` on an ensemble of at most --n-train configurations had no held-out selection)."""
    assert handles.training_size(40, 2, 48, 16) == 48  # 24 + 8 per chain fit in 40
    assert handles.training_size(40, 2, 512, 0) == 512  # nothing held out: all 40 per chain (training_positions)
    assert handles.training_size(200, 2, 512, 64) == 2 * 168  # 200 - 32 per chain
    assert handles.training_size(60, 2, 512, 64) == 2 * 45  # a quarter of 60 held out
    assert handles.training_size(10, 1, 512, 64) == 8  # at least two held out in all
    assert handles.training_size(2, 1, 512, 64) == 512  # too short to hold anything out
    # a training set that fits but leaves too few for the held-out one keeps its size (it grew to 2 x 18 = 36): the
    # held-out set takes the other 16 per chain
    assert handles.training_size(24, 2, 16, 64) == 16
    assert len(handles.held_out_positions(24, handles.training_positions(24, 2, 16), 2, 64)) == 16
    for n, c, t, h in ((200, 2, 512, 64), (60, 2, 512, 64), (10, 1, 512, 64), (7, 3, 100, 5)):
        pos = handles.training_positions(n, c, handles.training_size(n, c, t, h))
        held = handles.held_out_positions(n, pos, c, h)
        assert len(held) >= 1 and not set(held) & set(pos) and len(pos) + len(held) <= n, (n, c, t, h)
