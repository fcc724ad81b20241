r"""Quark-mass dependence of the Schwinger model from flow-correlated ensembles.

    python -m analysis.mass_dependence                 # defaults: a few minutes on 2 CPU cores
    python -m analysis.mass_dependence --help          # every option with its default
    python -m analysis.mass_dependence --config reports/mass_dependence/mass_dependence.toml   # repeat a run

Physics
-------
2D U(1) gauge theory with ``n_f = 2`` degenerate Wilson fermions (:mod:`corrflow.theories.fermions`:
``S_eff(U; m) = S_g(U) - n_f log|det D(U, m)|``, bare mass ``m``, antiperiodic in time).  For a small shift
``m -> m + dm`` the analysis estimates ``dO/dm`` for

``pion_mass``
    ``m_pi`` from the isovector pseudoscalar correlator ``C(t)``
    (:func:`corrflow.observables.fermions.pion_correlator`, ``n_sources`` point sources): effective mass
    ``m_eff(t)`` of kind ``cosh_ratio`` (:func:`corrflow.stats.effective_mass`: ``C(t)/C(t+1) = cosh(m (t - T/2)) /
    cosh(m (t + 1 - T/2))``, ``t = 0 .. T/2 - 1``) and a correlated plateau fit (order 0) over
    ``t_min <= t <= t_max``.
``condensate``
    ``Sigma = (1/V) Re tr D^{-1}`` per flavour (``-<psibar psi>`` in the convention of
    :mod:`corrflow.observables.fermions`), from the even-odd Schur complement (:func:`condensate_and_slope`).
``plaquette``
    mean plaquette ``<cos P>``.
``chi_top``
    topological susceptibility ``<Q^2> / V`` of the geometric charge.

Estimators of ``dO/dm`` (each ``[O(m + dm) - O(m)] / dm`` except the last)
-------------------------------------------------------------------------
``flowed``
    correlated difference: ``O(m + dm) = <w O_{m+dm}(f(U))> / <w>`` on the base configurations ``U_i`` pushed
    through a flow ``f`` trained for ``m -> m + dm`` (``log w = -S_{m+dm}(f(U)) + S_m(U) + log J``, exact
    determinants), minus ``O(m) = <O_m(U)>`` on the *same* ``U_i``.
``direct``
    the same with ``f`` the identity (direct reweighting: ``log w = -S_{m+dm}(U) + S_m(U)``).  Fermionic
    observables are evaluated at the target mass on the base configurations.
``independent``
    independent HMC ensembles at ``m`` (the base) and ``m + dm``; errors added in quadrature.
``tangent``
    the derivative at ``m`` itself from the base ensemble alone, without flow or weights (:mod:`corrflow.tangent`):
    ``d<O>/dm = <dO/dm + v.grad O> - (<O R_v> - <O><R_v>)``, ``R_v = dS_eff/dm + v.grad S_eff - div v``, unbiased for
    any vector field ``v`` (``v = 0`` is ``connected``); ``v`` is the plaquette-space field of 2D U(1) (keeping the
    topological charge when ``chi_top`` is measured), fitted by cross-fitted least squares of ``Var[R_v]``, with the
    sea quarks' ``v.grad S_f = -n_f Re tr(D^-1 v.grad D)`` from exact traces on these lattices.  The pion mass: the
    same for every ``C(t)``, then the slope of the ``cosh_ratio`` effective mass
    (:func:`corrflow.stats.effective_mass_slope`) and its correlated plateau fit in every jackknife sample.  Where
    the valence part ``dO/dm`` at fixed links dominates the variance (pion mass, condensate) no field can remove it.
    Off by default (``--tangent``): at the defaults its terms (two passes: the field's terms with exact traces, then
    the observables' derivatives along the fitted field, one tangent solve per source) take ~1.4x the rest of the run
    (119 of 202 s) for 1.0-1.6x less variance than the connected estimator (BENCHMARKS.md).
``connected``
    the derivative at ``m`` itself from the base ensemble alone:
    ``d<O>/dm = <dO/dm> - <O dS/dm> + <O><dS/dm>`` with ``dS_eff/dm = -n_f V Sigma``; ``dO/dm = 0`` for the gauge
    observables and ``dSigma/dm`` for the condensate.  For the pion mass the same for every ``C(t)`` (``dC/dm`` at
    fixed links measured on the base configurations, forward mode through the solves), then the slope of the
    effective mass and its plateau fit as for ``tangent``.  It differs from the finite differences by ``O(dm)``
    (``dm/2 * d^2O/dm^2``), small against the errors for the defaults.

Errors
------
Scalar observables: Wolff's Gamma method (``--method gamma``, default) or the binned jackknife on the paired
primaries of one base configuration, chains as replicas, ratios as derived quantities, so pairing and
autocorrelation along the base chains are accounted for.  Pulls between two estimators that use the same base
ensemble are computed from the derived *difference*; with the independent ensemble errors add in quadrature.
Pion mass: binned jackknife over the base configurations in Monte Carlo order (bins of ``ceil(bin_tau_factor *
tau_int)``, ``tau_int`` the largest Gamma-method autocorrelation time of ``C(t_max)`` and its flowed / direct
differences; at least ``MIN_BINS`` bins); every leave-one-bin-out sample recomputes the reweighted correlators,
the effective masses and the plateau fit (:func:`corrflow.stats.resampled_fit`, jackknife covariance of
``m_eff(t)`` held fixed).  The independent ensemble is binned on its own.

Steps, costs and variance reduction
-----------------------------------
:func:`corrflow.pipeline.family` with one target (``m + dm``) and direct reweighting: base HMC ensemble (seed
``seed``), flow trained on ``n_train`` base configurations, flowed and direct paired ensembles, independent HMC
ensemble (seed ``seed + 1``); then the measurements on the four configuration sets (cached in
``<flow_dir>/measurements/``, so a re-analysis with another ``t_min`` or ``method`` is quick).
``variance reduction`` of the flowed estimator over another = ``(error_other / error_flowed)^2``; cost-adjusted =
``(var_other * cost_other) / (var_flowed * cost_flowed)`` with the path costs of
:meth:`corrflow.pipeline.Family.path_costs` (one cost definition, :data:`corrflow.pipeline.COST_DEFINITION`):
flowed = base HMC + training + flow application + measurements on ``U_i`` and ``f(U_i)``; direct = base HMC +
weights + measurements on ``U_i`` at both masses; independent = base HMC + target HMC + measurements on both;
connected = base HMC + measurements on ``U_i``; tangent = base HMC + its terms on ``U_i`` (observables included) +
the fit.  (Before the pipeline redesign the path costs excluded the
measurements.)

What the defaults show (8 x 8, beta = 2, m = 0.2, dm = 0.02, 2 x 1000 configurations)
--------------------------------------------------------------------------------------
All correlated estimators beat independent ensembles by two orders of magnitude in variance.  Direct
reweighting is *better* than the flowed difference here: its weights are almost constant (ESS fraction 0.9996),
while the flow trained on 128 base configurations lowers the ESS (0.988): the reverse-KL loss gradient is
dominated by sampling noise for so small a shift and the flow overfits it.  For the topological susceptibility
the flow also moves some configurations across a charge boundary, which adds noise to ``Q(f(U))^2 - Q(U)^2``.
Flows are worth their cost when the direct weights degrade.  On ``T = 8`` the pion effective mass is still
falling at ``t = 2, 3`` (chi^2/dof ~ 10 for the plateau); use ``--T 16`` for a true plateau (the exact
determinants then cost about 10x more).

Python API
----------
``run(MassSettings.make(n_configs=200, dm=0.05)) -> record`` (or ``run(n_configs=200, dm=0.05)``); the record is also
written to the store (``store.read_analysis("mass_dependence")``) and ``render(record)`` redraws its figure.  The
estimators work on plain arrays: :func:`scalar_estimates`, :func:`pion_mass_estimates`; the measurements:
:func:`measure`, :func:`condensate_and_slope`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from corrflow._lazy_names import install
from corrflow.pipeline import Analysis, deferred

from .settings import (
    ANALYSIS_NAME,
    ESTIMATORS,
    OBSERVABLES,
    MassSettings,
    header,
)

# the rest on first use (PEP 562): `--help` and the settings load neither JAX nor scipy
_NAMES = {
    "estimators": ("Estimate", "PionFit", "TangentSeries", "pion_bin_size", "pion_mass_estimates", "scalar_estimates",
                   "tangent_series"),
    "measure": ("MassInputs", "condensate_and_slope", "measure", "prepare", "tangent_field", "tangent_names"),
    "record": ("estimate",),
    "render": ("render",),
}
install(__name__, _NAMES)

if TYPE_CHECKING:  # the names for type checkers and editors
    from .estimators import (Estimate, PionFit, TangentSeries, pion_bin_size, pion_mass_estimates, scalar_estimates,
                             tangent_series)
    from .measure import MassInputs, condensate_and_slope, measure, prepare, tangent_field, tangent_names
    from .record import estimate
    from .render import render

__all__ = [
    "ANALYSIS_NAME",
    "ESTIMATORS",
    "MASS_DEPENDENCE",
    "OBSERVABLES",
    "Estimate",
    "MassInputs",
    "MassSettings",
    "PionFit",
    "TangentSeries",
    "condensate_and_slope",
    "estimate",
    "measure",
    "pion_bin_size",
    "pion_mass_estimates",
    "prepare",
    "tangent_field",
    "tangent_names",
    "render",
    "run",
    "scalar_estimates",
    "tangent_series",
]

MASS_DEPENDENCE = Analysis(
    name=ANALYSIS_NAME, command="mass-dependence", settings=MassSettings, header=header,
    prepare=deferred("analysis.mass_dependence.measure:prepare"),
    estimate=deferred("analysis.mass_dependence.record:estimate"),
    render=deferred("analysis.mass_dependence.render:render"), summary_lines=2, tables_printed=2,
    help="Quark-mass derivatives dO/dm of the pion mass, the chiral condensate, the plaquette and the topological "
         "susceptibility in the Schwinger model, from one HMC base ensemble and a flow m -> m + dm (correlated "
         "difference), compared with direct reweighting, independent ensembles and the connected correlator.",
    epilog="""
**Examples**

    python -m analysis.mass_dependence   # defaults (a few minutes)

    python -m analysis.mass_dependence --n-configs 4000 --dm 0.05 \\
        --out reports/md_dm0.05

    python -m analysis.mass_dependence --observables plaquette,condensate \\
        --method jackknife

    python -m analysis.mass_dependence \\
        --config reports/mass_dependence/mass_dependence.toml   # repeat a run
""")


def run(settings: MassSettings | None = None, *, console: Any = None, write: bool = True, progress: Any = None,
        **overrides: Any) -> dict[str, Any]:
    """Run the whole analysis (:func:`corrflow.pipeline.run_analysis`) and return the record.

    ``settings`` default to :class:`MassSettings`; ``overrides`` replace single settings by their flat names
    (``run(n_configs=200, dm=0.05)``).  ``console`` (rich) shows progress and the result tables; with ``write``
    the record, figure, Markdown, JSON and run file go to the store and ``settings.io.out``.
    """
    from corrflow.pipeline import run_analysis

    s = (settings or MassSettings()).replace(**overrides)
    return run_analysis(MASS_DEPENDENCE, s, console=console, write=write, progress=progress)
