"""Lazy, chunked analysis of stored ensembles with dask (bounded memory).

:func:`open_links` gives the links of an ensemble as a dask-backed ``xarray.DataArray`` with dims
``(chain, traj, t, x[, y, z], mu[, row, col])``, chunked as ``(1, chunk, <whole configuration>)``:
one chain and ``chunk`` stored trajectories per dask chunk, aligned with the zarr chunks by default.
Nothing is read until ``.compute()``.

:func:`measure_lazy` maps a JAX observable over those chunks and returns a lazy ``xarray.Dataset``
of ``(chain, traj)`` arrays.  Each dask task reads one chunk of configurations, evaluates the
observable on it (one jitted call on a batch of ``chunk`` configurations) and keeps only the
``chunk`` numbers per observable, so the memory in use is about ``num_workers`` chunks of links::

    ds = measure_lazy(store, "u1_16x16_beta2", lambda u: {"plaq": plaquette(u, group), "q": charge(u, group)})
    vals = ds.compute(scheduler="threads", num_workers=2)    # or scheduler="synchronous": one chunk at a time
    corrflow.stats.gamma_method(vals["plaq"].values)          # (chain, traj) = (replicas, n)

JAX releases the GIL while it computes, so the threaded scheduler runs chunks in parallel.  The
result's ``(chain, traj)`` layout is the replica layout of the :mod:`corrflow.stats` estimators.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["open_links", "measure_lazy"]

Array = jax.Array


def _as_store(store: Any) -> Any:
    """An :class:`~corrflow.store.EnsembleStore` (opened read-only if a path or URL is given)."""
    from .store import EnsembleStore, open_store

    if isinstance(store, EnsembleStore):
        return store
    if isinstance(store, (str, os.PathLike)):
        return open_store(store, "r")
    raise TypeError(f"store must be an EnsembleStore or a path/URL, got {type(store).__name__}")


def open_links(store: Any, name: str, chunks: int | None = None, *, verify: bool = True) -> Any:
    """Links of ensemble ``name`` as a lazy, dask-backed ``xarray.DataArray`` (nothing is loaded).

    Parameters
    ----------
    store : an :class:`~corrflow.store.EnsembleStore` or the path/URL of a store (opened read-only)
    name : ensemble name (an unknown name raises the store's :class:`~corrflow.store.StoreError`)
    chunks : stored trajectories per dask chunk (default: the zarr chunk length along ``traj``).  Each
        chunk holds one chain; values that divide or are multiples of the zarr chunk length avoid
        reading a zarr chunk more than once.
    verify : check first that every committed links chunk exists (zarr would silently read a missing
        chunk as zeros) and read the small per-trajectory arrays (CRC-checked); no configuration is
        read.  Damaged chunks raise :class:`~corrflow.store.StoreError`.

    Returns
    -------
    ``xarray.DataArray`` of the committed configurations, dims ``(chain, traj, <lattice dims>, mu[, row,
    col])``, coordinates ``chain`` and ``traj`` (global trajectory indices), dask chunks
    ``(1, chunks, <whole configuration>)``; attrs: the ensemble spec and ``name``.
    """
    import dask.array as da
    import xarray as xr

    from .store import StoreError

    st = _as_store(store)
    st.spec(name)  # unknown names: the store's error
    if chunks is not None and (not isinstance(chunks, (int, np.integer)) or isinstance(chunks, bool) or chunks < 1):
        raise ValueError(f"chunks must be a positive number of trajectories per chunk, got {chunks!r}")
    if verify:
        report = st.verify(name, n_sample=0)
        if not report.ok:
            raise StoreError(f"integrity check failed for {name!r} in {st.path}: {report.first_problem()}; "
                             "pass verify=False to read what is intact")
    ds = st.open_ensemble(name, verify=False)  # committed length, coordinates, metadata checks
    arr = st.array(name, "links")  # reads that meet a damaged chunk raise StoreError naming chain and trajectories
    n = ds.sizes["traj"]
    ct = int(chunks) if chunks is not None else int(arr.chunks[1])
    data = da.from_array(arr, chunks=(1, ct) + tuple(arr.shape[2:]), asarray=False, fancy=False, lock=False,
                         name=f"corrflow-links-{id(arr)}-{ct}", meta=np.empty((0,) * arr.ndim, arr.dtype))[:, :n]
    links = ds["links"]
    return xr.DataArray(data, dims=links.dims, coords={"chain": ds["chain"], "traj": ds["traj"]},
                        name="links", attrs=dict(ds.attrs))


def _check_output(out: Any, batch: int, var_name: str) -> dict[str, Any]:
    """``fn``'s output as ``{name: leaf}``; raises ``ValueError`` unless every leaf has shape ``(batch,)``."""
    if isinstance(out, Mapping):
        if not out:
            raise ValueError("fn returned an empty dict; return an array of shape (batch,) or a dict of such")
        items = dict(out)
    elif hasattr(out, "shape") and hasattr(out, "dtype"):
        items = {var_name: out}
    else:
        raise ValueError(f"fn must return an array of shape (batch,) or a dict of such, got {type(out).__name__}")
    for k, v in items.items():
        if not isinstance(k, str):
            raise ValueError(f"fn returned a dict with a non-string key {k!r}; use observable names")
        if not (hasattr(v, "shape") and hasattr(v, "dtype")):
            raise ValueError(f"fn returned {type(v).__name__} for {k!r}; expected an array of shape ({batch},)")
        if tuple(v.shape) != (batch,):
            raise ValueError(f"fn returned shape {tuple(v.shape)} for {k!r} on a batch of {batch} configurations; "
                             f"expected ({batch},): one value per configuration (reduce any other axes; "
                             "wrap a function of a single configuration in jax.vmap)")
    return items


def measure_lazy(
    store: Any,
    name: str,
    fn: Callable[[Array], Any],
    *,
    chunk: int | None = None,
    jit: bool = True,
    var_name: str = "value",
    verify: bool = True,
) -> Any:
    """Lazy measurement of ``fn`` on every committed configuration of ensemble ``name``.

    Parameters
    ----------
    store, name : as for :func:`open_links`
    fn : JAX observable ``fn(u) -> array (batch,)`` or ``-> {name: array (batch,)}``, where ``u`` holds
        ``batch`` configurations ``(batch, L_0, ..., L_{d-1}, d, *elem)`` in the stored dtype (e.g.
        ``lambda u: corrflow.observables.plaquette(u, group)``).  It is called once per chunk with
        ``batch`` = the chunk's length (at most ``chunk``) and never sees more configurations at once.
    chunk : stored trajectories per call (default: the zarr chunk length, see :func:`open_links`)
    jit : wrap ``fn`` in ``jax.jit`` (one compilation per distinct chunk length)
    var_name : name of the result variable when ``fn`` returns a single array
    verify : see :func:`open_links`

    Returns
    -------
    Lazy ``xarray.Dataset`` with one ``(chain, traj)`` variable per observable (coordinates as in the
    store); nothing is read or computed until ``.compute()`` / ``.values``.  Computing all variables
    together (``ds.compute()``) evaluates ``fn`` once per chunk.  Memory: about one chunk of links per
    dask worker (``scheduler="synchronous"``: one chunk).

    Raises
    ------
    StoreError for an unknown or damaged ensemble; ValueError when ``fn`` does not return one value
    per configuration (checked up front with ``jax.eval_shape`` on a chunk-sized batch, and again per
    chunk).
    """
    import xarray as xr

    links = open_links(store, name, chunk, verify=verify)
    core = [d for d in links.dims if d not in ("chain", "traj")]
    cfg_shape = tuple(links.shape[2:])
    batch = int(links.chunks[1][0]) if links.shape[1] else int(chunk or 1)
    f = jax.jit(fn) if jit else fn
    probe = jax.ShapeDtypeStruct((batch,) + cfg_shape, np.dtype(links.dtype))
    try:
        shapes = jax.eval_shape(f, probe)
    except Exception as exc:  # not traceable, or fails on a batch of configurations
        raise ValueError(f"fn failed on an abstract batch {probe.shape} {probe.dtype} of configurations: "
                         f"{type(exc).__name__}: {exc}") from exc
    items = _check_output(shapes, batch, var_name)
    keys = list(items)
    dtypes = [np.dtype(items[k].dtype) for k in keys]

    def block(x: np.ndarray) -> Any:
        lead = x.shape[:2]
        m = int(np.prod(lead))
        if m == 0:  # dask probing with empty blocks: never call fn
            outs = [np.zeros(lead, dt) for dt in dtypes]
        else:
            got = _check_output(f(jnp.asarray(x.reshape((m,) + cfg_shape))), m, var_name)
            if set(got) != set(keys):
                raise ValueError(f"fn returned observables {sorted(got)} on one chunk and {sorted(keys)} on another")
            outs = [np.asarray(got[k]).astype(dt, copy=False).reshape(lead) for k, dt in zip(keys, dtypes)]
        return tuple(outs) if len(outs) > 1 else outs[0]

    with warnings.catch_warnings():  # dask casts an empty complex meta array to the output dtypes
        warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
        res = xr.apply_ufunc(block, links, input_core_dims=[core], output_core_dims=[[] for _ in keys],
                             dask="parallelized", output_dtypes=dtypes)
    res = res if isinstance(res, tuple) else (res,)
    ds = xr.Dataset({k: r.rename(k) for k, r in zip(keys, res)})
    ds.attrs = {**links.attrs, "chunk": batch}
    return ds
