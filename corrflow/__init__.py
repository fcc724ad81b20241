"""corrflow: correlated ensembles from gauge-equivariant flows for lattice field theory.

Importing corrflow switches on JAX's 64-bit mode (``jax_enable_x64``): lattice physics needs
float64 for reversibility, Metropolis tests and reweighting.  Arrays keep the dtype you give
them, so float32 fields still run in single precision (with sums accumulated in double).

The method from Python (no store, no command line): :func:`generate` base configurations, :func:`make_flow` and
:func:`train` a flow ``a -> a'``, :func:`flowed_reweighting` / :func:`direct_reweighting` for paired samples and
weights, :func:`flowed_metropolis` for the exact chain at ``a'``, and the estimators (:func:`reweighted_mean`,
:func:`correlated_difference`, :func:`independent_difference`, :func:`variance_reduction`).  Store-backed,
resumable steps and the analyses build on :mod:`corrflow.pipeline`.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

from . import exact, flows, groups, hmc, lattice, observables, stats, theories  # noqa: E402
from .correlate import (  # noqa: E402
    MetropolisChain,
    PairedSamples,
    direct_reweighting,
    flowed_metropolis,
    flowed_reweighting,
)
from .flows import Flow, make_flow  # noqa: E402
from .flows.train import TrainConfig, TrainResult, load_checkpoint, save_checkpoint, train  # noqa: E402
from .generate import GaugeMeasurements, generate  # noqa: E402
from .groups import SUN, U1, get_group  # noqa: E402
from .hmc import HMCConfig, HMCInfo, HMCState  # noqa: E402
from .stats import (  # noqa: E402
    correlated_difference,
    gamma_method,
    independent_difference,
    reweighted_mean,
    variance_reduction,
    weight_ess_fraction,
)
from .store import open_store  # noqa: E402
from .theories import WilsonFermionAction, WilsonGaugeAction, make_theory  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "SUN",
    "U1",
    "Flow",
    "GaugeMeasurements",
    "HMCConfig",
    "HMCInfo",
    "HMCState",
    "MetropolisChain",
    "PairedSamples",
    "TrainConfig",
    "TrainResult",
    "WilsonFermionAction",
    "WilsonGaugeAction",
    "correlated_difference",
    "direct_reweighting",
    "exact",
    "flowed_metropolis",
    "flowed_reweighting",
    "flows",
    "gamma_method",
    "generate",
    "get_group",
    "groups",
    "hmc",
    "independent_difference",
    "lattice",
    "load_checkpoint",
    "make_flow",
    "make_theory",
    "observables",
    "open_store",
    "reweighted_mean",
    "save_checkpoint",
    "stats",
    "theories",
    "train",
    "variance_reduction",
    "weight_ess_fraction",
    "__version__",
]
