"""Stored configurations read on demand: training sets larger than memory.

:class:`StoredConfigs` stands for the configurations ``(chain_k, position_k)`` of one ensemble as an ``(n,
*config_shape)`` array whose items are read from the store only when indexed, e.g. one mini-batch at a time by
:func:`corrflow.flows.train.train`.  Each read touches every needed links chunk once (positions in the same chunk
are read together) and returns the configurations in the requested order; a damaged chunk raises
:class:`~corrflow.store.StoreError` naming it, as every read of the store does.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .spec import StoreError

__all__ = ["StoredConfigs"]


class StoredConfigs:
    """Configurations ``k = 0 .. n-1`` = links ``[chains[k], positions[k]]`` of ensemble ``name``, read when indexed.

    ``source[i]`` (one configuration), ``source[a:b]`` and ``source[index_array]`` return NumPy arrays in the order
    asked; ``shape``, ``dtype``, ``ndim``, ``len``, ``nbytes`` are those of the whole set, which is never held in
    memory (``load()`` reads it all).  ``chains`` / ``positions``: stored positions (not global trajectory indices),
    checked against the committed count when the source is made.
    """

    def __init__(self, store: Any, name: str, chains: Sequence[int], positions: Sequence[int]) -> None:
        chains_a, pos_a = np.asarray(chains, np.int64).ravel(), np.asarray(positions, np.int64).ravel()
        if chains_a.shape != pos_a.shape:
            raise StoreError(f"{len(chains_a)} chain indices for {len(pos_a)} positions")
        com = store.commit(name)
        n, n_chains = int(com["committed"]), int(store.spec(name).n_chains)
        bad_c = chains_a[(chains_a < 0) | (chains_a >= n_chains)]
        bad_p = pos_a[(pos_a < 0) | (pos_a >= n)]
        if len(bad_c):
            raise StoreError(f"chains {bad_c[:5].tolist()} out of range 0..{n_chains - 1} of ensemble {name!r}")
        if len(bad_p):
            raise StoreError(f"trajectory positions {bad_p[:5].tolist()} out of range 0..{n - 1} of ensemble {name!r}")
        self.store, self.name = store, name
        self.chains, self.positions = chains_a, pos_a
        self._links = store.array(name, "links")
        self.dtype = np.dtype(self._links.dtype)
        self.shape = (len(pos_a),) + tuple(self._links.shape[2:])
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __repr__(self) -> str:
        return f"StoredConfigs({self.name!r}, {len(self)} configurations of shape {self.shape[1:]}, {self.dtype})"

    def subset(self, index: Any) -> "StoredConfigs":
        """The configurations ``index`` (slice or index array) as another on-demand source (nothing read)."""
        k = np.arange(len(self))[index]
        return StoredConfigs(self.store, self.name, self.chains[k], self.positions[k])

    def load(self) -> np.ndarray:
        """Every configuration, read now: ``(n, *config_shape)``."""
        return self[:]

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self[np.asarray([index])][0]
        k = np.arange(len(self))[index]  # slices, index arrays, negative indices (IndexError when out of range)
        out = np.empty((len(k),) + self.shape[1:], self.dtype)
        if not len(k):
            return out
        ct = int(self._links.chunks[1])
        chain, pos = self.chains[k], self.positions[k]
        # one read per (chain, chunk): the range of the requested positions inside that chunk
        group = chain * (int(pos.max()) // ct + 1) + pos // ct
        for g in np.unique(group):
            rows = np.flatnonzero(group == g)
            c, p = int(chain[rows[0]]), pos[rows]
            lo, hi = int(p.min()), int(p.max()) + 1
            block = self._links[c, lo:hi]
            out[rows] = block[p - lo]
        return out
