"""Shared fixtures.  Importing corrflow enables float64 in JAX.

XLA programs compiled by the tests go to a persistent compilation cache (``.jax_cache/tests`` in the checkout,
or ``$CORRFLOW_TEST_JAX_CACHE``; empty disables it), shared by the pytest-xdist workers: many tests compile the
same kernels (HMC and heat-bath updates, flow training steps, the Wilson flow) inside fresh closures, which JAX
retraces but then finds compiled in the cache.  It changes no result, only the compile time.
"""

import os
from pathlib import Path

import jax
import numpy as np
import pytest

import corrflow  # noqa: F401  (enables x64)
from corrflow import lattice

_CACHE = os.environ.get("CORRFLOW_TEST_JAX_CACHE", str(Path(__file__).resolve().parent.parent / ".jax_cache" / "tests"))
if _CACHE:
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def random_gauge_transform(key, group, shape):
    """Haar-random site field Omega(x) of the group, shape (*shape, *elem)."""
    return group.random(key, tuple(shape))


def gauge_transform(u, omega, group):
    """U_mu(x) -> Omega(x) U_mu(x) Omega(x + mu)^dag for a link field u (no batch axis)."""
    d = len(u.shape) - 1 - group.elem_ndim
    links = []
    for mu in range(d):
        um = lattice.link(u, mu, group)
        links.append(group.mul(group.mul(omega, um), group.adj(lattice.shift(omega, mu, 1, d, group))))
    return jax.numpy.stack(links, axis=-1 - group.elem_ndim)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
