"""The writer's direct chunk encoding equals zarr's own encoding, byte for byte."""

import jax.numpy as jnp
import numpy as np
import pytest
import zarr

from corrflow.groups import get_group
from corrflow.observables import plaquette

from corrflow.store import EnsembleSpec, open_store


@pytest.mark.parametrize("group,shape,dtype", [("u1", (4, 6), "float64"), ("u1", (4, 6), "float32"),
                                               ("su3", (2, 2, 2, 2), "complex128"), ("su2", (4, 4), "complex64")])
def test_direct_chunks_equal_zarr_encoding(tmp_path, group, shape, dtype):
    spec = EnsembleSpec(theory=group, group=group, shape=shape, params={"beta": 1.0}, n_chains=2, seed=0, dtype=dtype)
    rng = np.random.default_rng(0)
    cfg = spec.config_shape
    st = open_store(tmp_path / "s.zarr", "a")
    st.create_ensemble("e", spec, chunk_traj=3)
    n = 8  # 2 full chunks + a partial one
    links = rng.normal(size=(2, n) + cfg)
    if np.dtype(dtype).kind == "c":
        links = links + 1j * rng.normal(size=links.shape)
    links = links.astype(dtype)
    per = {k: rng.normal(size=(2, n)) for k in ("action", "delta_H", "step_size")}
    per["plaquette"] = np.asarray(plaquette(jnp.asarray(links), get_group(group)))  # so verify() can recompute it
    per["accepted"] = np.ones((2, n), bool)
    with st.writer("e") as w:
        w.append(np.arange(5), links[:, :5], {k: v[:, :5] for k, v in per.items()}, 5)  # start mid-chunk next
        w.append(np.arange(5, n), links[:, 5:], {k: v[:, 5:] for k, v in per.items()}, n)
    got = np.asarray(st.open_ensemble("e").links.values)
    np.testing.assert_array_equal(got, links)
    # re-encode the same data through zarr and compare every chunk file byte for byte
    ref = zarr.open_group(str(tmp_path / "ref.zarr"), mode="w")
    arr = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["e"]["links"]
    r = ref.create_array("links", shape=arr.shape, chunks=arr.chunks, dtype=arr.dtype, fill_value=0,
                         serializer=arr.metadata.codecs[0], compressors=(arr.metadata.codecs[1],), filters=())
    r[...] = links
    tail = "/0" * (arr.ndim - 2)
    for c in range(2):
        for k in range(-(-n // 3)):
            a = (tmp_path / "s.zarr" / "e" / "links" / "c" / str(c) / f"{k}{tail}").read_bytes()
            b = (tmp_path / "ref.zarr" / "links" / "c" / str(c) / f"{k}{tail}").read_bytes()
            assert a == b, (c, k)
    assert st.verify("e", n_sample=-1).ok
