"""Lazy, chunked measurement over stored ensembles (:mod:`corrflow.lazy`).

Stores are written directly (random links, no HMC: no expensive compilation), as in
tests/test_store_chunks.py: 2 chains x 12 trajectories in zarr chunks of 4.
"""

from __future__ import annotations

import shutil
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import zarr

import corrflow  # noqa: F401  (x64)
from corrflow import stats
from corrflow.groups import get_group
from corrflow.lazy import measure_lazy, open_links
from corrflow.observables import plaquette, polyakov_loop
from corrflow.store import EnsembleSpec, StoreError, open_store

N_CHAINS, N_TRAJ, ZCHUNK = 2, 12, 4


def _random_links(group_name: str, idx: tuple[int, ...]) -> np.ndarray:
    """Random U(1) angles or SU(2) matrices (unit quaternions) in numpy (no eager JAX dispatch: cheap)."""
    rng = np.random.default_rng(3)
    if group_name == "u1":
        return rng.uniform(-np.pi, np.pi, idx)
    a = rng.normal(size=idx + (4,))
    a /= np.linalg.norm(a, axis=-1, keepdims=True)
    z, w = a[..., 0] + 1j * a[..., 3], a[..., 2] + 1j * a[..., 1]
    return np.stack([np.stack([z, w], -1), np.stack([-w.conj(), z.conj()], -1)], -2)


def _write_store(path, group_name: str, shape: tuple[int, ...], name: str = "e"):
    group = get_group(group_name)
    dtype = "float64" if group.is_abelian else "complex128"
    spec = EnsembleSpec(theory=group_name, group=group_name, shape=shape, params={"beta": 1.0},
                        n_chains=N_CHAINS, seed=0, dtype=dtype)
    links = _random_links(group_name, (N_CHAINS, N_TRAJ) + shape + (len(shape),))
    per = {k: np.zeros((N_CHAINS, N_TRAJ)) for k in ("action", "delta_H", "step_size")}
    per["plaquette"] = np.asarray(jax.jit(plaquette, static_argnums=1)(links, group))
    per["accepted"] = np.ones((N_CHAINS, N_TRAJ), bool)
    st = open_store(path, "a")
    st.create_ensemble(name, spec, chunk_traj=ZCHUNK)
    with st.writer(name) as w:  # two appends: global indices 10, 12, ..., 32
        w.append(10 + 2 * np.arange(5), links[:, :5], {k: v[:, :5] for k, v in per.items()}, 20)
        w.append(10 + 2 * np.arange(5, N_TRAJ), links[:, 5:], {k: v[:, 5:] for k, v in per.items()}, 40)
    return open_store(path, "r"), links, group


@pytest.fixture(scope="module")
def u1_store(tmp_path_factory):
    return _write_store(tmp_path_factory.mktemp("lazy") / "s.zarr", "u1", (4, 4))


class Counter:
    """Wraps an observable; records the batch size of every concrete call and the peak number of
    configurations inside ``fn`` at the same time (tracer calls from ``jax.eval_shape`` are skipped)."""

    def __init__(self, fn):
        self.fn = jax.jit(fn)
        self.sizes: list[int] = []
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, u):
        if isinstance(u, jax.core.Tracer):
            return self.fn(u)
        with self.lock:
            self.sizes.append(u.shape[0])
            self.active += u.shape[0]
            self.peak = max(self.peak, self.active)
        try:
            return jax.block_until_ready(self.fn(u))
        finally:
            with self.lock:
                self.active -= u.shape[0]


def test_open_links_is_lazy_and_chunked(u1_store, monkeypatch):
    st, links, _ = u1_store
    reads = []
    orig = zarr.Array.__getitem__

    def spy(self, sel):
        out = orig(self, sel)
        if self.path.endswith("links") and np.size(out):  # dask's metadata probes read empty slices
            reads.append(sel)
        return out

    monkeypatch.setattr(zarr.Array, "__getitem__", spy)
    lk = open_links(st, "e")
    assert reads == []  # nothing read, not even for the integrity check
    assert lk.dims == ("chain", "traj", "t", "x", "mu")
    assert lk.chunks[:2] == ((1, 1), (ZCHUNK,) * (N_TRAJ // ZCHUNK))  # aligned with the zarr chunks
    assert lk.data.npartitions == N_CHAINS * N_TRAJ // ZCHUNK > 1
    np.testing.assert_array_equal(lk.traj.values, 10 + 2 * np.arange(N_TRAJ))
    assert lk.attrs["group"] == "u1"
    np.testing.assert_array_equal(lk.values, links)
    assert len(reads) == lk.data.npartitions
    assert open_links(str(st.path), "e", chunks=3).chunks[1] == (3,) * 4  # a path opens the store read-only


def test_measure_lazy_equals_eager_and_reads_nothing_before_compute(u1_store):
    st, links, group = u1_store
    fn = Counter(lambda u: {"plaquette": plaquette(u, group), "polyakov": jnp.abs(polyakov_loop(u, group))})
    ds = measure_lazy(st, "e", fn, jit=False)
    assert fn.sizes == []  # nothing evaluated (or read) yet
    assert set(ds.data_vars) == {"plaquette", "polyakov"}
    assert ds["plaquette"].dims == ("chain", "traj") and ds["plaquette"].chunks is not None
    np.testing.assert_array_equal(ds.traj.values, 10 + 2 * np.arange(N_TRAJ))
    res = ds.compute(scheduler="synchronous")
    assert fn.sizes == [ZCHUNK] * (N_CHAINS * N_TRAJ // ZCHUNK)  # one call per chunk for both observables
    flat = jnp.asarray(links.reshape((-1,) + links.shape[2:]))
    eager_p = np.asarray(plaquette(flat, group)).reshape(N_CHAINS, N_TRAJ)
    eager_l = np.asarray(jnp.abs(polyakov_loop(flat, group))).reshape(N_CHAINS, N_TRAJ)
    np.testing.assert_allclose(res["plaquette"].values, eager_p, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res["polyakov"].values, eager_l, rtol=0, atol=1e-12)
    stored = st.open_ensemble("e")["plaquette"].values  # recorded at write time
    np.testing.assert_allclose(res["plaquette"].values, stored, rtol=0, atol=1e-12)
    # feeds corrflow.stats: (chain, traj) = (replicas, n)
    lazy_stats = stats.gamma_method(res["plaquette"].values)
    eager_stats = stats.gamma_method(eager_p)
    assert lazy_stats.value == pytest.approx(eager_stats.value, abs=1e-12)
    assert lazy_stats.error == pytest.approx(eager_stats.error, rel=1e-9)


@pytest.mark.parametrize("chunk", [2, 3, 12])
def test_memory_bound_chunk_size(u1_store, chunk):
    """The store holds 24 configurations; fn never sees more than ``chunk`` of them at once."""
    st, links, group = u1_store
    fn = Counter(lambda u: plaquette(u, group))
    ds = measure_lazy(st, "e", fn, chunk=chunk, jit=False, var_name="plaq")
    assert list(ds.data_vars) == ["plaq"]
    vals = ds["plaq"].compute(scheduler="synchronous").values
    n_chunks = N_CHAINS * -(-N_TRAJ // chunk)
    assert len(fn.sizes) == n_chunks and max(fn.sizes) == chunk == fn.peak
    assert sum(fn.sizes) == N_CHAINS * N_TRAJ
    np.testing.assert_allclose(vals, st.open_ensemble("e")["plaquette"].values, rtol=0, atol=1e-12)
    # threads: at most num_workers chunks in flight
    fn2 = Counter(lambda u: plaquette(u, group))
    vals2 = measure_lazy(st, "e", fn2, chunk=chunk, jit=False, var_name="plaq")["plaq"].compute(
        scheduler="threads", num_workers=2).values
    np.testing.assert_array_equal(vals2, vals)
    assert max(fn2.sizes) == chunk and fn2.peak <= 2 * chunk


def test_matrix_group_and_default_jit(tmp_path):
    st, links, group = _write_store(tmp_path / "s.zarr", "su2", (2, 4))
    lk = open_links(st, "e")
    assert lk.dims == ("chain", "traj", "t", "x", "mu", "row", "col")
    ds = measure_lazy(st, "e", lambda u: plaquette(u, group), chunk=ZCHUNK)  # jitted internally
    np.testing.assert_allclose(ds["value"].values, st.open_ensemble("e")["plaquette"].values, rtol=0, atol=1e-12)


def test_errors(u1_store, tmp_path):
    st, _, group = u1_store
    with pytest.raises(StoreError, match="no ensemble 'nope'.*available: e"):
        open_links(st, "nope")
    with pytest.raises(StoreError, match="no ensemble 'nope'"):
        measure_lazy(st, "nope", lambda u: plaquette(u, group))
    with pytest.raises(ValueError, match=r"shape \(4, 1\) for 'value'.*expected \(4,\)"):
        measure_lazy(st, "e", lambda u: plaquette(u, group)[:, None])
    with pytest.raises(ValueError, match=r"shape \(\) for 'p'"):
        measure_lazy(st, "e", lambda u: {"p": jnp.mean(plaquette(u, group)), "q": plaquette(u, group)})
    with pytest.raises(ValueError, match="got tuple"):
        measure_lazy(st, "e", lambda u: (plaquette(u, group),))
    with pytest.raises(ValueError, match="fn failed on an abstract batch"):
        measure_lazy(st, "e", lambda u: np.asarray(u).sum(axis=(1, 2, 3)))
    with pytest.raises(ValueError, match="chunks must be a positive"):
        open_links(st, "e", chunks=0)
    with pytest.raises(TypeError, match="EnsembleStore or a path"):
        open_links(42, "e")
    # a missing links chunk is refused (zarr would read it as zeros) unless verify=False
    bad = tmp_path / "bad.zarr"
    shutil.copytree(st.path, bad)
    (bad / "e" / "links" / "c" / "1" / "2" / "0" / "0" / "0").unlink()
    with pytest.raises(StoreError, match="missing chunk e/links/c/1/2"):
        measure_lazy(bad, "e", lambda u: plaquette(u, group))
    assert open_links(bad, "e", verify=False).values[1, 8:].max() == 0.0
