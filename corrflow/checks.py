"""Physics checks of stored configurations, passed to :meth:`corrflow.store.EnsembleStore.verify`.

The store checks bytes (presence, size, CRC32C of every chunk); whether the bytes are a gauge field
that matches the numbers stored with it is physics, decided here:

* every link value is finite;
* SU(N) links are unitary with unit determinant within ``1e-10`` (``1e-5`` for single precision);
* the plaquette recomputed from the links equals the stored ``plaquette`` within the same relative
  tolerance (it was computed from these very links when they were stored).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["DENSE_MAX_DIM", "check_dense_size", "gauge_config_check"]

#: largest ``V Ns Nc`` for which the dense ``D^{-1}`` (the exact condensate, exact determinants) is built: its
#: ``(V Ns Nc)^2`` complex entries, times the batch and the intermediates of the inversion, must fit in memory (4^4
#: SU(3) Wilson: 3072, about 220 GB for a batch of 16 with its forward-mode derivative)
DENSE_MAX_DIM = 2048


def check_dense_size(shape: tuple[int, ...], n_spin: int, n_color: int, what: str, remedy: str) -> None:
    """``ValueError`` (one line, with the way out ``remedy``) when the Dirac matrix of Wilson fermions with ``n_spin``
    spin and ``n_color`` colour components on a lattice of extents ``shape`` is too large for dense algebra (``what``:
    the computation and its verb, e.g. "the exact chiral condensate inverts").  Needs no theory object (no JAX): the
    analyses' settings check their lattice with it before anything runs."""
    dim = int(np.prod(shape)) * n_spin * n_color
    if dim > DENSE_MAX_DIM:
        raise ValueError(f"{what} the dense Dirac matrix, of dimension V*Ns*Nc = {dim} > {DENSE_MAX_DIM} on "
                         f"this {'x'.join(map(str, shape))} lattice (hours of dense algebra and GBs per "
                         f"configuration); {remedy}")


def gauge_config_check(spec: Any, links: np.ndarray, values: Mapping[str, float]) -> str | None:
    """``None`` if configuration ``links`` (one configuration of ensemble ``spec``) passes, else the problem.

    ``values``: the per-trajectory numbers stored for this configuration (``plaquette``, ...).
    """
    import jax.numpy as jnp

    from .groups import get_group
    from .observables import plaquette

    u = np.asarray(links)
    if not np.all(np.isfinite(u)):
        return "non-finite link values"
    tol = 1e-5 if np.dtype(spec.dtype) in (np.dtype("float32"), np.dtype("complex64")) else 1e-10
    group = get_group(spec.group)
    if not group.is_abelian:
        n = u.shape[-1]
        dev = float(np.max(np.abs(np.einsum("...ij,...kj->...ik", u, u.conj()) - np.eye(n))))
        if not dev <= tol * 10:
            return f"links are not unitary: max |U U^dag - 1| = {dev:.2e}"
        det = float(np.max(np.abs(np.linalg.det(u) - 1.0)))
        if not det <= tol * 10:
            return f"links are not special unitary: max |det U - 1| = {det:.2e}"
    stored = values.get("plaquette")
    if stored is not None and np.isfinite(stored):
        val = float(plaquette(jnp.asarray(u), group))
        if not abs(val - stored) <= tol * max(1.0, abs(stored)):
            return f"stored plaquette {stored!r}, recomputed {val!r}"
    return None
