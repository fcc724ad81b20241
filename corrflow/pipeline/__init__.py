"""The pipeline layer: store-backed, resumable steps that analyses and the command line compose.

Layers: ``corrflow.cli`` and ``analysis/`` (entry points) -> ``corrflow.pipeline`` -> ``corrflow.store`` -> the pure
physics core (``correlate``, ``flows``, ``hmc``, ``heatbath``, ``observables``, ``stats``, ``theories``, ``groups``,
``lattice``).  Nothing here is imported by the layers below.

* drivers: :func:`generate_to_store`, :func:`correlate_to_store` / :func:`direct_to_store`,
  :func:`measure_stored` (each resumable through the store);
* steps: :class:`Pipeline` (ensure an :class:`Ensemble`, a :class:`TrainedFlow`, a :class:`PairedEnsemble`,
  a measurement) and :func:`family` (base + flows + paired + independent ensembles for several targets);
* :class:`CostLedger` -- the one cost definition (:data:`COST_DEFINITION`); :class:`Progress` -- the one progress
  protocol; :mod:`~corrflow.pipeline.model` -- the one settings model (TOML run files) and
  :mod:`~corrflow.pipeline.settings` -- its groups;
  :mod:`~corrflow.pipeline.cli` -- the one settings-to-command adapter and error runner;
* :class:`Analysis`, :func:`run_analysis` -- settings + prepare + estimate + render, run the same way for every
  analysis; :mod:`~corrflow.pipeline.record` -- records, Markdown, publishing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy_names import install

# {submodule: names}, loaded on first use (PEP 562): importing the package loads neither JAX nor scipy
_NAMES = {
    "command": ("Analysis", "check_tangent_settings", "deferred"),
    "analysis": ("TangentMeasurement", "measure_tangent", "run_analysis"),
    "ensembles": ("GenerationSummary", "generate_to_store"),
    "family": ("TRAIN_SEED_OFFSET", "Family", "Member", "auto_block_size", "family", "hmc_ensemble_name"),
    "ledger": ("COST_DEFINITION", "Clock", "CostLedger"),
    "measurements": ("FLOW_OBSERVABLE", "MeasureSummary", "WilsonFlowGrid", "flow_observable_names", "map_batches",
                     "measure_stored"),
    "paired": ("CorrelateSummary", "correlate_to_store", "direct_to_store"),
    "progress": ("Progress",),
    "settings": ("AnalysisSettings", "EnsembleSettings", "ErrorSettings", "FlowSettings", "MarkovSettings",
                 "Settings", "StoreSettings", "TrainingSettings", "setting"),
    "steps": ("Pipeline",),
    "handles": ("Ensemble", "PairedEnsemble", "TrainedFlow", "check_exact_weights", "exact_theory",
                "held_out_positions", "parameter_shift", "training_configs", "training_positions", "training_size",
                "validate_shift"),
}
install(__name__, _NAMES)

if TYPE_CHECKING:  # the names for type checkers and editors
    from .analysis import TangentMeasurement, measure_tangent, run_analysis
    from .command import Analysis, check_tangent_settings, deferred
    from .ensembles import GenerationSummary, generate_to_store
    from .family import TRAIN_SEED_OFFSET, Family, Member, auto_block_size, family, hmc_ensemble_name
    from .ledger import COST_DEFINITION, Clock, CostLedger
    from .measurements import (
        FLOW_OBSERVABLE,
        MeasureSummary,
        WilsonFlowGrid,
        flow_observable_names,
        map_batches,
        measure_stored,
    )
    from .paired import CorrelateSummary, correlate_to_store, direct_to_store
    from .progress import Progress
    from .settings import (
        AnalysisSettings,
        EnsembleSettings,
        ErrorSettings,
        FlowSettings,
        MarkovSettings,
        Settings,
        StoreSettings,
        TrainingSettings,
        setting,
    )
    from .steps import Pipeline
    from .handles import (
        Ensemble,
        PairedEnsemble,
        TrainedFlow,
        check_exact_weights,
        exact_theory,
        held_out_positions,
        parameter_shift,
        training_configs,
        training_positions,
        training_size,
        validate_shift,
    )

__all__ = [
    "COST_DEFINITION",
    "FLOW_OBSERVABLE",
    "TRAIN_SEED_OFFSET",
    "Analysis",
    "AnalysisSettings",
    "Clock",
    "CorrelateSummary",
    "CostLedger",
    "Ensemble",
    "EnsembleSettings",
    "ErrorSettings",
    "Family",
    "FlowSettings",
    "GenerationSummary",
    "MarkovSettings",
    "MeasureSummary",
    "Member",
    "PairedEnsemble",
    "Pipeline",
    "Progress",
    "Settings",
    "StoreSettings",
    "TrainedFlow",
    "TrainingSettings",
    "WilsonFlowGrid",
    "auto_block_size",
    "check_tangent_settings",
    "deferred",
    "measure_tangent",
    "TangentMeasurement",
    "correlate_to_store",
    "direct_to_store",
    "exact_theory",
    "family",
    "flow_observable_names",
    "generate_to_store",
    "held_out_positions",
    "hmc_ensemble_name",
    "map_batches",
    "measure_stored",
    "check_exact_weights",
    "parameter_shift",
    "run_analysis",
    "setting",
    "training_configs",
    "training_positions",
    "training_size",
    "validate_shift",
]
