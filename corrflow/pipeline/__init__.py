"""The pipeline layer: store-backed, resumable steps that analyses and the command line compose.

Drivers (each resumable through the store):

* :func:`generate_to_store` -- HMC / heat-bath ensembles;
* :func:`correlate_to_store`, :func:`direct_to_store` -- flowed and direct-reweighting ensembles paired with a base;
* :func:`measure_stored` -- observables on stored configurations.
"""

from __future__ import annotations

from .ensembles import GenerationSummary, generate_to_store
from .measurements import FLOW_OBSERVABLE, WilsonFlowGrid, MeasureSummary, flow_observable_names, measure_stored
from .paired import CorrelateSummary, correlate_to_store, direct_to_store

__all__ = [
    "FLOW_OBSERVABLE",
    "CorrelateSummary",
    "WilsonFlowGrid",
    "GenerationSummary",
    "MeasureSummary",
    "correlate_to_store",
    "direct_to_store",
    "flow_observable_names",
    "generate_to_store",
    "measure_stored",
]
