"""corrflow: correlated ensembles from gauge-equivariant flows for lattice field theory.

Importing corrflow switches on JAX's 64-bit mode (``jax_enable_x64``): lattice physics needs
float64 for reversibility, Metropolis tests and reweighting.  Arrays keep the dtype you give
them, so float32 fields still run in single precision (with sums accumulated in double).  It does so by setting
``JAX_ENABLE_X64=1`` in the process environment before JAX starts (child processes inherit it), or through
``jax.config`` when JAX was imported first; the submodules load on first use.

The method from Python (no store, no command line): :func:`generate` base configurations, :func:`make_flow` and
:func:`train` a flow ``a -> a'``, :func:`flowed_reweighting` / :func:`direct_reweighting` for paired samples and
weights, :func:`flowed_metropolis` for the exact chain at ``a'``, and the estimators (:func:`reweighted_mean`,
:func:`correlated_difference`, :func:`independent_difference`, :func:`variance_reduction`).  Store-backed,
resumable steps and the analyses build on :mod:`corrflow.pipeline`.
"""

from __future__ import annotations

import os
import sys

# 64-bit mode before any corrflow module touches JAX: JAX reads JAX_ENABLE_X64 when it is first imported; where it
# already was (the user imported it first), the flag is switched on directly.  Importing corrflow itself does not
# import JAX: the submodules and the names below load on first use (PEP 562), so ``corrflow --help`` and the command
# line's refusals of bad input answer without JAX's start-up.
os.environ["JAX_ENABLE_X64"] = "1"
if "jax" in sys.modules:
    sys.modules["jax"].config.update("jax_enable_x64", True)

from ._lazy_names import install as _install  # noqa: E402  (after the 64-bit switch; it imports no JAX)

# {submodule: names}, loaded on first use (corrflow._lazy_names).  ``corrflow.generate`` is the function, as it was when
# the names were imported eagerly: loading the module ``corrflow.generate`` does not shadow it (``from
# corrflow.generate import run_blocks`` still finds the module's names, through ``sys.modules``).
_NAMES = {
    "correlate": ("MetropolisChain", "PairedSamples", "direct_reweighting", "flowed_metropolis", "flowed_reweighting"),
    "flows": ("Flow", "make_flow"),
    "flows.train": ("TrainConfig", "TrainResult", "load_checkpoint", "save_checkpoint", "train"),
    "generate": ("GaugeMeasurements", "generate"),
    "groups": ("SUN", "U1", "get_group"),
    "hmc": ("HMCConfig", "HMCInfo", "HMCState"),
    "stats": ("correlated_difference", "gamma_method", "independent_difference", "reweighted_mean",
              "variance_reduction", "weight_ess_fraction"),
    "store": ("open_store",),
    "theories": ("WilsonFermionAction", "WilsonGaugeAction", "make_theory"),
}
_install(__name__, _NAMES)


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
