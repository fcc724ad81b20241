"""Observables measured on gauge configurations (see :mod:`corrflow.observables.gauge`)."""

from .gauge import (
    plaquette,
    plaquette_per_plane,
    polyakov_loop,
    topological_charge,
    topological_charge_density,
    wilson_loop,
)

__all__ = [
    "plaquette",
    "plaquette_per_plane",
    "polyakov_loop",
    "topological_charge",
    "topological_charge_density",
    "wilson_loop",
]
