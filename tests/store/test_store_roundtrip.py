"""The store round trip: bit-identical to in-memory chains, resume, the committed view and rollback, post-hoc
observables, flowed ensembles, fsspec URLs, repr and tree."""

from __future__ import annotations

import uuid

import dask.array
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
import zarr

import corrflow
from corrflow import observables as cobs
from corrflow.pipeline import generate_to_store, measure_stored
from corrflow.store import StoreError, open_store

from .store_helpers import (BASE, CONFIG, N_BASE, N_EXTENDED, N_THIN1, PER_TRAJ, THEORY, THIN1, U1, bitwise_equal, cli,
                            dummy_block, locks_left, reference, refused, snapshot, u1_spec)


# ----------------------------------------------------------------------------------------
# 1. round trip against run_blocks
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["thin3", "thin1"])
def test_round_trip_bitwise(which, base_path, thin1_path):
    path, name, settings, n = ((base_path, "base", BASE, N_BASE) if which == "thin3"
                               else (thin1_path, "t1", THIN1, N_THIN1))
    assert n % settings["block_size"] != 0  # several blocks, the last one short
    ref = reference(settings, n)
    st = open_store(path, "r")
    ds = st.open_ensemble(name)
    assert bitwise_equal(ds.links.values, ref["links"])
    for var in ("plaquette", "action", "delta_H", "accepted"):
        assert bitwise_equal(ds[var].values, ref[var]), var
    assert bitwise_equal(ds.traj.values, ref["traj"].astype(np.int64))
    assert np.all(ds.step_size.values == CONFIG.step_size)
    # load_configs reads the same bytes
    assert bitwise_equal(st.load_configs(name, 1, slice(None)), ref["links"][1])
    assert bitwise_equal(st.load_configs(name, 0, [n - 1, 0]), ref["links"][0, [n - 1, 0]])
    info = st.info(name)
    assert info["committed"] == n and info["n_chains"] == settings["n_chains"]
    assert info["next_traj"] == settings["n_therm"] + n * settings["thin"]
    assert info["links_bytes"] == ref["links"].nbytes


def test_resume_after_interruption_is_bitwise_identical(thin1_path, tmp_path):
    """Interrupt once during thermalisation and once during production; the resumed ensemble equals the
    uninterrupted one bit for bit (nothing lost, nothing duplicated)."""

    class Crash(Exception):
        pass

    def crash_at(k):
        calls = []

        def progress(done, total, stats):
            calls.append(done)
            if len(calls) == k:
                raise Crash

        return progress

    path = tmp_path / "r.zarr"
    st = open_store(path, "a")
    with pytest.raises(Crash):  # after the first thermalisation block (3 of 4 trajectories)
        generate_to_store(st, "t1", THEORY, CONFIG, n_traj=N_THIN1, progress=crash_at(1), **THIN1)
    assert st.commit("t1")["phase"] == "therm" and st.commit("t1")["next_traj"] == 3
    assert st.open_ensemble("t1").sizes["traj"] == 0
    with pytest.raises(Crash):  # after thermalisation end + first production block
        generate_to_store(st, "t1", THEORY, CONFIG, n_traj=N_THIN1, resume=True, progress=crash_at(2), **THIN1)
    assert st.commit("t1")["committed"] == 3
    s = generate_to_store(st, "t1", THEORY, CONFIG, n_traj=N_THIN1, resume=True, **THIN1)
    assert s.n_new == N_THIN1 - 3 and s.committed == N_THIN1
    a = st.open_ensemble("t1")
    b = open_store(thin1_path).open_ensemble("t1")
    for var in PER_TRAJ:
        assert bitwise_equal(a[var].values, b[var].values), var
    assert not locks_left(path)


# ----------------------------------------------------------------------------------------
# 2. lazy open, committed view, rollback
# ----------------------------------------------------------------------------------------


def test_open_is_lazy_and_indexed_by_global_trajectory(base_path):
    ds = open_store(base_path).open_ensemble("base")
    assert isinstance(ds, xr.Dataset)
    for var in ("links", "plaquette", "action", "delta_H", "accepted", "step_size"):
        assert isinstance(ds[var].data, dask.array.Array), var
    k = np.arange(N_BASE)
    n_therm, thin = BASE["n_therm"], BASE["thin"]
    np.testing.assert_array_equal(ds.traj.values, n_therm + thin * k + thin - 1)
    np.testing.assert_array_equal(ds.chain.values, np.arange(BASE["n_chains"]))
    assert ds.links.dims == ("chain", "traj", "t", "x", "mu")
    assert ds.links.shape == (2, N_BASE, 4, 4, 2)
    assert "checkpoint_links" not in ds.variables and "checkpoint_action" not in ds.variables
    assert ds.attrs["name"] == "base" and ds.attrs["thin"] == thin and ds.attrs["kind"] == "hmc"


def test_uncommitted_tail_is_hidden_and_rolled_back(store_copy):
    st = open_store(store_copy, "a")
    good = {v: st.open_ensemble("base")[v].values for v in PER_TRAJ}
    # a writer that died after growing the arrays and writing data, but before its commit record
    grp = zarr.open_group(store_copy, mode="a")["base"]
    for var in PER_TRAJ:
        arr = grp[var]
        ax = 0 if var == "traj" else 1
        shape = list(arr.shape)
        shape[ax] = N_BASE + 2
        arr.resize(tuple(shape))
        sel = (slice(N_BASE, None),) if ax == 0 else (slice(None), slice(N_BASE, None))
        arr[sel] = {"traj": 999, "accepted": True}.get(var, 123.0)
    assert grp["links"].shape[1] == N_BASE + 2
    ds = st.open_ensemble("base")
    assert ds.sizes["traj"] == N_BASE
    for var in PER_TRAJ:
        assert bitwise_equal(ds[var].values, good[var]), var
    assert 999 not in ds.traj.values and not np.any(ds.links.values == 123.0)
    with st.writer("base") as w:
        assert w.committed == N_BASE
    grp = zarr.open_group(store_copy, mode="r")["base"]
    for var in PER_TRAJ:
        assert grp[var].shape[0 if var == "traj" else 1] == N_BASE, var
        assert bitwise_equal(grp[var][...], good[var]), var
    # the chain continues exactly as if nothing had happened
    generate_to_store(st, "base", THEORY, CONFIG, n_traj=N_EXTENDED, resume=True, **BASE)
    ref = reference(BASE, N_EXTENDED)
    ds = st.open_ensemble("base")
    assert bitwise_equal(ds.links.values, ref["links"])
    assert bitwise_equal(ds.traj.values, ref["traj"].astype(np.int64))


def test_open_ensemble_survives_crash_between_resizes(store_copy):
    """append() resizes the arrays one after the other before writing; a writer killed half way through
    that loop leaves arrays of different lengths.  Readers must still see the committed part."""
    grp = zarr.open_group(store_copy, mode="a")["base"]
    grp["links"].resize((2, N_BASE + 3, 4, 4, 2))  # first array of the loop resized, the others not yet
    ds = open_store(store_copy, "r").open_ensemble("base")
    assert ds.sizes["traj"] == N_BASE


# ----------------------------------------------------------------------------------------
# 5. post-hoc measurement
# ----------------------------------------------------------------------------------------


@jax.jit
def _wilson_2x2(links):
    return jax.vmap(lambda u: cobs.wilson_loop(u, U1, 2, 2))(links)


def test_measure_then_extend_then_measure(store_copy):
    st = open_store(store_copy, "a")
    res = measure_stored(st, "base", ["wilson_2x2", "plaquette"])
    assert res.measured == {"wilson_2x2": N_BASE * 1} and res.skipped == ["plaquette"]
    ds = st.open_ensemble("base")
    first = ds.wilson_2x2.values
    assert first.shape == (2, N_BASE) and np.all(np.isfinite(first))
    expect = np.stack([np.asarray(_wilson_2x2(jnp.asarray(ds.links.values[c]))) for c in range(2)])
    np.testing.assert_allclose(first, expect, rtol=1e-12, atol=1e-14)
    assert st.info("base")["observables"] == {"wilson_2x2": N_BASE}
    assert measure_stored(st, "base", ["wilson_2x2"]).measured == {}  # nothing new

    generate_to_store(st, "base", THEORY, CONFIG, n_traj=N_EXTENDED, resume=True, **BASE)
    ds = st.open_ensemble("base")
    assert ds.sizes["traj"] == N_EXTENDED
    w = ds.wilson_2x2.values
    assert bitwise_equal(w[:, :N_BASE], first)
    assert np.isnan(w[:, N_BASE:]).all()
    assert st.info("base")["observables"] == {"wilson_2x2": N_BASE}

    before = {k: v for k, v in snapshot(store_copy).items() if "/wilson_2x2/" not in "/" + k and "zarr.json" not in k}
    res = measure_stored(st, "base", ["wilson_2x2"], batch=2)
    assert res.measured == {"wilson_2x2": N_EXTENDED - N_BASE}
    after = {k: v for k, v in snapshot(store_copy).items() if "/wilson_2x2/" not in "/" + k and "zarr.json" not in k}
    assert before == after  # only the observable (and metadata) changed
    ds = st.open_ensemble("base")
    w2 = ds.wilson_2x2.values
    assert bitwise_equal(w2[:, :N_BASE], first)
    expect = np.stack([np.asarray(_wilson_2x2(jnp.asarray(ds.links.values[c]))) for c in range(2)])
    np.testing.assert_allclose(w2, expect, rtol=1e-12, atol=1e-14)
    assert st.info("base")["observables"] == {"wilson_2x2": N_EXTENDED}
    assert st.verify("base").ok
    code, out = cli("info", store_copy, "base")
    assert code == 0 and "wilson_2x2 (7 measured)" in out


def test_crash_in_first_measurement_then_extend(store_copy, monkeypatch):
    import zarr.core.attributes as zattrs

    class Crash(Exception):
        pass

    real = zattrs.Attributes.__setitem__

    def setitem(self, key, value):
        if key == "corrflow_observables":
            raise Crash  # the process dies right before recording the measured count
        return real(self, key, value)

    st = open_store(store_copy, "a")
    with monkeypatch.context() as m:
        m.setattr(zattrs.Attributes, "__setitem__", setitem)
        with pytest.raises(Crash):
            measure_stored(st, "base", ["wilson_1x1"])
    with st.writer("base") as w:
        w.append(*dummy_block(2, 2, 100))
    ds = st.open_ensemble("base")
    assert ds.sizes["traj"] == N_BASE + 2
    measure_stored(st, "base", ["wilson_1x1"])
    assert np.isfinite(st.open_ensemble("base").wilson_1x1.values).all()


# ----------------------------------------------------------------------------------------
# 6. flowed ensembles
# ----------------------------------------------------------------------------------------


def test_flowed_ensemble_schema(store_copy):
    st = open_store(store_copy, "a")
    spec = u1_spec(kind="flowed", flow={"source": "base", "flow_id": "abc"}, seed=7)
    st.create_ensemble("flowed", spec)
    grp = zarr.open_group(store_copy, mode="r")["flowed"]
    for var, dt in (("source_chain", "int64"), ("source_traj", "int64"), ("log_weight", "float64"),
                    ("log_jacobian", "float64")):
        assert var in grp.array_keys()
        assert grp[var].dtype == np.dtype(dt) and grp[var].shape == (2, 0)
        assert tuple(grp[var].metadata.dimension_names) == ("chain", "traj")
    traj, links, per, nxt = dummy_block(2, 3, 5)

    def append_without():
        with st.writer("flowed") as w:
            w.append(traj, links, per, nxt)

    refused(store_copy, StoreError,
            r"missing \['log_jacobian', 'log_weight', 'source_chain', 'source_traj'\]", append_without)
    full = dict(per, source_chain=np.array([[0, 0, 0], [1, 1, 1]]), source_traj=np.array([[5, 8, 11]] * 2),
                log_weight=np.full((2, 3), -0.5), log_jacobian=np.full((2, 3), 0.25))
    with st.writer("flowed") as w:
        w.append(traj, links, full, nxt)
    ds = st.open_ensemble("flowed")
    np.testing.assert_array_equal(ds.source_traj.values, full["source_traj"])
    np.testing.assert_array_equal(ds.log_weight.values, full["log_weight"])
    assert ds.attrs["kind"] == "flowed"
    info = st.info("flowed")
    assert info["kind"] == "flowed" and info["flow"] == {"source": "base", "flow_id": "abc"}
    assert info["committed"] == 3
    code, out = cli("info", store_copy)
    assert code == 0 and "paired with base via flow abc" in out
    # an hmc ensemble has no flow fields and refuses them
    def append_to_hmc():
        with st.writer("base") as w:
            w.append(*dummy_block(2, 1, 100, extra=("log_jacobian",)))

    refused(store_copy, StoreError, r"unexpected \['log_jacobian'\]", append_to_hmc)


def test_flowed_without_source_refused(store_copy):
    refused(store_copy, StoreError, r"a flowed ensemble needs flow\['source'\]",
            lambda: open_store(store_copy, "a").create_ensemble(
                "f", u1_spec(kind="flowed", flow={"flow_id": "abc"})))


# ----------------------------------------------------------------------------------------
# 7. fsspec URL (in-memory)
# ----------------------------------------------------------------------------------------


def test_memory_url_store(base_path, tmp_path, monkeypatch):
    import fsspec

    monkeypatch.chdir(tmp_path)  # a lock path derived from the URL would appear here
    url = f"memory://corrflow-test-{uuid.uuid4().hex}"
    try:
        st = open_store(url, "a")
        assert not st.is_local
        generate_to_store(st, "base", THEORY, CONFIG, n_traj=N_BASE, **BASE)
        ds = open_store(url, "r").open_ensemble("base")
        assert isinstance(ds.links.data, dask.array.Array)
        ref = open_store(base_path).open_ensemble("base")
        for var in PER_TRAJ:
            assert bitwise_equal(ds[var].values, ref[var].values), var
        assert st.verify("base").ok
        assert "base: hmc u1 4x4" in repr(st)
        with pytest.raises(StoreError, match="different settings"):
            generate_to_store(st, "base", corrflow.make_theory("u1", (4, 4), beta=3.0), CONFIG, n_traj=N_EXTENDED,
                              resume=True, **BASE)
        assert list(tmp_path.iterdir()) == []  # no lock directory for a non-local store
    finally:
        fs = fsspec.filesystem("memory")
        path = url[len("memory://"):]
        if fs.exists(path):
            fs.rm(path, recursive=True)


# ----------------------------------------------------------------------------------------
# 8. repr and tree
# ----------------------------------------------------------------------------------------


def test_repr_and_tree(store_copy):
    st = open_store(store_copy, "a")
    st.create_ensemble("second", u1_spec(n_chains=1))
    with st.writer("second") as w:
        w.append(*dummy_block(1, 2, 0))
    text = repr(st)
    assert text.splitlines()[0] == f"EnsembleStore({str(store_copy)!r}, mode='a')"
    assert "base: hmc u1 4x4 {'beta': 2.0, 'xi': 1.0, 'lam': 0.0}  2 chains x 4 traj" in text
    assert "second: hmc u1 4x4" in text and "1 chains x 2 traj" in text
    tree = st.tree()
    assert isinstance(tree, xr.DataTree)
    assert set(tree.children) == {"base", "second"} == set(st.ensembles())
    assert tree["base"].to_dataset().sizes["traj"] == N_BASE
    assert isinstance(tree["base"].to_dataset().links.data, dask.array.Array)
    assert tree["second"].to_dataset().sizes["chain"] == 1
    assert "base" in st and "nope" not in st
    code, out = cli("info", store_copy)
    assert code == 0 and "base" in out and "second" in out


def test_empty_store_repr_and_tree(tmp_path):
    st = open_store(tmp_path / "empty.zarr", "a")
    assert st.ensembles() == [] and repr(st) == f"EnsembleStore({str(tmp_path / 'empty.zarr')!r}, mode='a')"
    assert len(st.tree().children) == 0
    assert not (tmp_path / "empty.zarr").exists()  # nothing is created before the first write
    st.materialise()
    code, out = cli("info", tmp_path / "empty.zarr")
    assert code == 0 and "empty corrflow store" in out


