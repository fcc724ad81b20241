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

import importlib
import importlib.util
import os
import sys
import types
from typing import Any

# 64-bit mode before any corrflow module touches JAX: JAX reads JAX_ENABLE_X64 when it is first imported; where it
# already was (the user imported it first), the flag is switched on directly.  Importing corrflow itself does not
# import JAX: the submodules and the names below load on first use (PEP 562), so ``corrflow --help`` and the command
# line's refusals of bad input answer without JAX's start-up.
os.environ["JAX_ENABLE_X64"] = "1"
if "jax" in sys.modules:
    sys.modules["jax"].config.update("jax_enable_x64", True)

_NAMES = {
    "MetropolisChain": "correlate", "PairedSamples": "correlate", "direct_reweighting": "correlate",
    "flowed_metropolis": "correlate", "flowed_reweighting": "correlate",
    "Flow": "flows", "make_flow": "flows",
    "TrainConfig": "flows.train", "TrainResult": "flows.train", "load_checkpoint": "flows.train",
    "save_checkpoint": "flows.train", "train": "flows.train",
    "GaugeMeasurements": "generate", "generate": "generate",
    "SUN": "groups", "U1": "groups", "get_group": "groups",
    "HMCConfig": "hmc", "HMCInfo": "hmc", "HMCState": "hmc",
    "correlated_difference": "stats", "gamma_method": "stats", "independent_difference": "stats",
    "reweighted_mean": "stats", "variance_reduction": "stats", "weight_ess_fraction": "stats",
    "open_store": "store",
    "WilsonFermionAction": "theories", "WilsonGaugeAction": "theories", "make_theory": "theories",
}


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
        globals()[name] = value  # once
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)  # any submodule, as after an eager import
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    import pkgutil

    submodules = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    return sorted(set(__all__) | submodules)


class _Package(types.ModuleType):
    """``corrflow.generate`` is the function, as it was when the names were imported eagerly: the import system binds
    a submodule on its package when it loads it (here the module ``corrflow.generate``), which must not shadow the
    function of the same name (``from corrflow.generate import run_blocks`` still finds the module's names, through
    ``sys.modules``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _NAMES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


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
