"""Gauge transformations for equivariance tests (importable from every test directory: the root conftest puts
``tests/`` on ``sys.path``)."""

import jax

from corrflow import lattice


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
