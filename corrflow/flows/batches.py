"""Training configurations in memory or read on demand, one batch at a time.

Training (:mod:`corrflow.flows.train`, :mod:`corrflow.flows.linear`) only ever uses its configurations in batches:
mini-batches for Adam, micro-batches of the full-batch loss and gradient for L-BFGS and Gauss–Newton, batches of the
held-out log-weights.  :func:`full_batches` pads a short last batch with copies of its last configuration
(:func:`pad_rows`, also used by ``correlate`` and the measurements), so every batch has one shape and each jitted
program compiles once (a ragged last batch would compile the Gauss–Newton or L-BFGS program, tens of seconds for a
4D flow with smoothing terms, a second time).  The set need not be in memory: any object with ``shape``, ``dtype``
and ``__getitem__`` (slices and index arrays, returning arrays) serves, e.g. :class:`corrflow.store.StoredConfigs`,
which reads the configurations from the store when indexed.  :func:`batches` reads the next batch on a worker
thread while the current one is computed, so streaming costs little more than the reads themselves.  Nothing here
touches disk.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Sequence

import jax
import numpy as np

__all__ = ["training_set", "streamed", "batches", "chunks", "pad_rows", "full_batches", "valid_rows"]


def streamed(configs: Any) -> bool:
    """Whether ``configs`` is an on-demand source (not an array in memory)."""
    return not isinstance(configs, (np.ndarray, jax.Array)) and all(
        hasattr(configs, a) for a in ("shape", "dtype", "__getitem__"))


def training_set(configs: Any) -> Any:
    """``configs`` as training uses it: NumPy and JAX arrays and on-demand sources unchanged (a NumPy set is indexed
    batch by batch on the host, so no second copy of it is made), anything else as a NumPy array."""
    if streamed(configs) or isinstance(configs, (np.ndarray, jax.Array)):
        return configs
    return np.asarray(configs)


def batches(configs: Any, selections: Sequence[Any]) -> Iterator[Any]:
    """``configs[s]`` for each of ``selections`` (slices or index arrays), in order; for an on-demand source the
    next batch is read on a worker thread while the caller works on the current one."""
    if not streamed(configs):
        for s in selections:
            yield configs[s]
        return
    if not len(selections):
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(configs.__getitem__, selections[0])
        for nxt in list(selections[1:]) + [None]:
            current = pending.result()
            if nxt is not None:
                pending = pool.submit(configs.__getitem__, nxt)
            yield current


def chunks(n: int, batch: int) -> list[slice]:
    """``[0:batch], [batch:2 batch], ...`` covering ``0 .. n - 1``."""
    return [slice(i, min(i + batch, n)) for i in range(0, n, batch)]


def pad_rows(x: Any, size: int) -> np.ndarray:
    """``x`` ``(m, ...)`` with copies of its last row appended up to ``size`` rows (unchanged when ``m >= size``): a
    short last batch of configurations (or of their keys) in the shape of the others, so a jitted program compiles
    once."""
    x = np.asarray(x)
    return np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)]) if len(x) < size else x


def full_batches(configs: Any, n: int, batch: int) -> Iterator[tuple[Any, int]]:
    """``(x, m)`` for the batches of :func:`chunks`, each ``x`` with ``min(batch, n)`` rows: a short last batch is
    padded with copies of its last configuration, and ``m`` says how many rows are real (the first ``m``).  Results
    per configuration are trimmed with :func:`valid_rows`; sums over a batch need the weights ``arange(len(x)) < m``."""
    size = min(batch, n)
    sel = chunks(n, size)
    for s, x in zip(sel, batches(configs, sel)):
        yield pad_rows(x, size), s.stop - s.start


def valid_rows(parts: Sequence[tuple[Any, int]]) -> np.ndarray:
    """The per-configuration results ``(result, m)`` of padded batches, trimmed to their real rows and concatenated
    along the first axis (float64)."""
    return np.concatenate([np.asarray(r, np.float64)[:m] for r, m in parts])
