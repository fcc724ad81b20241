"""corrflow: correlated ensembles from gauge-equivariant flows for lattice field theory.

Importing corrflow switches on JAX's 64-bit mode (``jax_enable_x64``): lattice physics needs
float64 for reversibility, Metropolis tests and reweighting.  Arrays keep the dtype you give
them, so float32 fields still run in single precision (with sums accumulated in double).
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

from . import exact, groups, hmc, lattice, observables, stats, theories  # noqa: E402
from .groups import SUN, U1, get_group  # noqa: E402
from .hmc import HMCConfig, HMCInfo, HMCState  # noqa: E402
from .store import open_store  # noqa: E402
from .theories import WilsonFermionAction, WilsonGaugeAction, make_theory  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "SUN",
    "U1",
    "HMCConfig",
    "HMCInfo",
    "HMCState",
    "WilsonFermionAction",
    "WilsonGaugeAction",
    "exact",
    "get_group",
    "groups",
    "hmc",
    "lattice",
    "make_theory",
    "observables",
    "open_store",
    "stats",
    "theories",
    "__version__",
]
