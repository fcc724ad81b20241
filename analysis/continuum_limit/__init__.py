"""Continuum limits from flow-correlated ensembles, against independent ensembles.

* 2D U(1) (:mod:`.u1`): ``beta (1 - <P>)``, Creutz ratios, ``beta chi_top`` with exact continuum values;
  ``corrflow analyse continuum-limit`` / ``python -m analysis.continuum_limit``.
* quenched 4D SU(3) (:mod:`.su3`): ``sqrt(t0)/w0`` or ``t0/r0^2`` from the Wilson flow;
  ``corrflow analyse continuum-limit-su3`` / ``python -m analysis.continuum_limit --theory su3``.

Both run through :func:`corrflow.pipeline.run_analysis` (settings -> :func:`corrflow.pipeline.family` ->
``estimate`` -> ``render``); the estimators (:mod:`.estimators`) work on plain arrays.
"""

from __future__ import annotations

from typing import Any

from corrflow.pipeline import Analysis, deferred

from . import su3, u1
from .estimators import (
    ContinuumFits,
    CorrelatedEstimates,
    IndependentEstimates,
    Quantity,
    bayesian_fits,
    continuum_fits,
    flowed_estimates,
    independent_estimates,
)
from .su3 import SU3_QUANTITIES, SU3ContinuumSettings, flow_quantity, necco_sommer_r0
from .u1 import ContinuumSettings
from .u1_quantities import MEASURED, QUANTITIES, exact_plaquette_sector, make_quantity

__all__ = [
    "CONTINUUM_LIMIT",
    "CONTINUUM_LIMIT_SU3",
    "MEASURED",
    "QUANTITIES",
    "SU3_QUANTITIES",
    "ContinuumFits",
    "ContinuumSettings",
    "CorrelatedEstimates",
    "IndependentEstimates",
    "Quantity",
    "SU3ContinuumSettings",
    "bayesian_fits",
    "continuum_fits",
    "exact_plaquette_sector",
    "flow_quantity",
    "flowed_estimates",
    "independent_estimates",
    "make_quantity",
    "necco_sommer_r0",
    "run",
]

CONTINUUM_LIMIT = Analysis(
    name=u1.ANALYSIS_NAME, command="continuum-limit", settings=ContinuumSettings, prepare=u1.prepare,
    estimate=u1.estimate, header=u1.header, summary_lines=4,
    render=deferred("analysis.continuum_limit.render:render_u1"),
    help="Continuum limit (a^2 g^2 = 1/beta -> 0) of a dimensionless 2D U(1) quantity from flow-correlated ensembles "
         "(one HMC base ensemble, flows to the other betas, reweighting, joint-jackknife covariance, correlated chi^2 "
         "and Bayesian fits) against independent HMC ensembles, with the exact result.",
    epilog="""
**Examples**

    corrflow analyse continuum-limit   # defaults (a few minutes)

    corrflow analyse continuum-limit --n-configs 8000 --betas 8,8.5,9,9.5,10 \\
        --out reports/cl_big

    corrflow analyse continuum-limit --quantity string_tension \\
        --creutz-size 1   # reuses the store

    corrflow analyse continuum-limit \\
        --config reports/continuum_limit/continuum_limit.toml   # repeat a run
""")

CONTINUUM_LIMIT_SU3 = Analysis(
    name=su3.ANALYSIS_NAME, command="continuum-limit-su3", settings=SU3ContinuumSettings, prepare=su3.prepare,
    estimate=su3.estimate, header=su3.header, summary_lines=2,
    render=deferred("analysis.continuum_limit.render:render_su3"),
    help="Continuum limit of sqrt(t0)/w0 (or t0/r0^2) in quenched 4D SU(3): one base ensemble, residual flows to the "
         "other betas, reweighting, joint-jackknife covariance and correlated fits, against independent ensembles.",
    epilog="""
**Examples**

    corrflow analyse continuum-limit-su3   # defaults (8^4, beta 5.7 .. 5.8)

    corrflow analyse continuum-limit-su3 --T 16 --L 16 \\
        --betas 5.96,6.07,6.21 --n-configs 200
""")


def run(settings: Any = None, *, console: Any = None, write: bool = True, progress: Any = None) -> dict[str, Any]:
    """Run the 2D U(1) (:class:`ContinuumSettings`, default) or 4D SU(3) (:class:`SU3ContinuumSettings`) continuum
    analysis and return its record."""
    from corrflow.pipeline import run_analysis

    analysis = CONTINUUM_LIMIT_SU3 if isinstance(settings, SU3ContinuumSettings) else CONTINUUM_LIMIT
    return run_analysis(analysis, settings, console=console, write=write, progress=progress)
