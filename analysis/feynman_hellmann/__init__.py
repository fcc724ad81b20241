r"""Feynman–Hellmann matrix element of a gluonic operator in the pion: the Schwinger model (dynamical quarks) and
quenched 4D SU(3) (the gluon momentum fraction ``<x>_g``).

    python -m analysis.feynman_hellmann                 # defaults: Schwinger model, a few minutes on 2 CPU cores
    python -m analysis.feynman_hellmann --theory su3 --T 8 --L 4 --beta 5.8 --mass 0.5 --lam 0.05 \
        --step-size 0.1 --n-steps 10 --t-min 1 --t-max 3                        # quenched 4D SU(3) (~20 min)
    python -m analysis.feynman_hellmann --help          # every option with its default

Quenched 4D SU(3) (``--theory su3``)
-----------------------------------
Wilson gauge action with the source ``lam * O``, ``O = (1/3) sum_x [sum_spatial - sum_temporal] Re tr P`` (see
:mod:`corrflow.theories.gauge`; ``beta O = sum_x T_44`` with the Euclidean gluonic energy-momentum tensor
``T_44 = (E^2 - B^2)/2``), flows ``0 -> lam`` between pure-gauge ensembles, and the pion correlator of *valence*
Wilson quarks of mass ``--mass`` (:func:`corrflow.observables.fermions.valence_quarks`; no determinant, so the
weights are purely gluonic).  With ``<h| int d^3x T_44 |h> = -(3/4) m_h <x>_g`` for a unit-normalised hadron at
rest, the bare gluon momentum fraction is ``<x>_g = -(4/3) beta (dE_pi/dlam) / m_pi``
(:func:`gluon_momentum_fraction`; unrenormalised: ``Z_gg`` and the mixing with the quark operator are not applied).
Everything below applies unchanged with ``O_t`` the 4D time-slice operator.  The defaults are the Schwinger
model's: in 4D give a smaller source (``--lam 0.05``: direct-reweighting ESS 0.70 on 8x4^3 at beta = 5.8, 0.02 at
0.2) and MD steps for SU(3) (``--step-size 0.1 --n-steps 10``: acceptance 0.97, 0.36 with the defaults).  That run
(2 x 200, 2 CPU cores, 20 min): tangent -0.0251(33), 8.6x less variance than the connected estimator, 7.1x at equal
cost (BENCHMARKS.md "The tangent terms in two passes").

Physics
-------
2D U(1) gauge theory with ``n_f = 2`` degenerate Wilson fermions (:mod:`corrflow.theories.fermions`) and the
Feynman–Hellmann source of :mod:`corrflow.theories.gauge`::

    S_lam(U) = S_g(U) - n_f log|det D(U)| + lam * O(U),     O(U) = theory.source_operator(U).

In two dimensions the only plane is temporal, so ``O = -sum_x cos P_01(x)``: the (negative) field-energy /
plaquette operator summed over the volume, a sum of time-slice operators ``O = sum_t O_t``.  (In 2D ``S_lam`` is
the Schwinger model at ``beta + lam``; the code does not use that and works unchanged for any source.)

Feynman–Hellmann: the pion energy ``E_pi(lam)`` (zero momentum, the ground state of the correlator) obeys

    dE_pi/dlam = <pi| O_t |pi> - <0| O_t |0>,

the matrix element of the *time-slice* operator ``O_t`` between unit-normalised states of the finite spatial
box, vacuum subtracted (relativistic normalisation: ``2 E_pi dE/dlam``).

Correlator: ``C(t)`` = isovector pseudoscalar correlator of :func:`corrflow.observables.fermions.pion_correlator`
(``n_sources`` point sources; propagators by BiCGStab polished by CG), *folded*
(:func:`corrflow.stats.fold_correlator`) before anything else.  The Dirac
operator does not depend on ``lam`` (a gluonic source), so ``C`` is measured with the same operator on every
ensemble.  Effective masses (``--kind``, :func:`corrflow.stats.effective_mass`): ``cosh`` (default; three-point
``arccosh[(C(t-1) + C(t+1)) / (2 C(t))]``, ``t = 1 .. T/2``, exact for one state of the periodic correlator) or
``log`` (``log[C(t)/C(t+1)]``, ``t = 0 .. T/2 - 1``, biased near ``T/2``).  The effective ``dE/dlam(t)`` of an
estimator is the ``lam``-derivative (or difference) of ``m_eff(t)``; a plateau fit (order 0,
:func:`corrflow.stats.plateau_fit`) over ``t_min <= t <= t_max`` gives ``dE/dlam``, by default with ``1/sigma_t^2``
weights (``--fit-weights diagonal``), its error from the jackknife, its chi-square correlated.

Estimators of dE/dlam
---------------------
``flowed``
    A flow ``f`` trained for ``0 -> lam``; ``C_0(t)`` on the base configurations ``U_i``, ``C_lam(t) = <w C(f(U))> /
    <w>`` on the *same* configurations pushed through the flow (exact determinants);
    ``[m_eff(C_lam) - m_eff(C_0)] / lam`` (:func:`corrflow.stats.flowed_curve`).  With ``--symmetric``, two flows
    ``0 -> +-lam`` and ``[m_eff(C_+lam) - m_eff(C_-lam)] / (2 lam)`` (:func:`corrflow.stats.symmetric_curve`;
    removes the ``O(lam)`` bias, at twice the flow cost).
``tangent``
    The derivative at ``lam = 0`` from the base ensemble alone, without flow or weights (:mod:`corrflow.tangent`,
    :func:`corrflow.stats.tangent_curve`): ``dC(t)/dlam = <v.grad C(t)> - (<C(t) R_v> - <C(t)><R_v>)`` with
    ``R_v = O + v.grad S - div v``, unbiased for any vector field ``v`` (``v = 0`` is ``connected``).  ``v`` is fitted
    by cross-fitted least squares of ``Var[R_v]`` (two folds, each with coefficients fitted on the other; ridge and
    basis size chosen on a held-out quarter), ``v.grad C`` by forward- or reverse-mode differentiation through the
    propagator solves (all ``T`` time slices, ``n_sources`` sources, folded like every correlator).  Field
    (``--tangent-field``, default ``auto``): in the Schwinger model the exact plaquette-space field (the sea quarks'
    ``v.grad S_f`` from exact traces of ``D^-1`` on these small lattices), in quenched SU(3) the held-out smoothing
    field (``R_v`` purely gluonic, the quarks are valence quarks).  ``--no-tangent`` leaves it out.
``connected``
    The derivative at ``lam = 0`` from the base ensemble alone: ``dC(t)/dlam = -(<C(t) O> - <C(t)><O>)`` through
    :func:`corrflow.stats.effective_mass_slope` (:func:`corrflow.stats.connected_curve`).
``direct``
    Direct reweighting (the identity flow): ``C_lam = <w_d C(U)> / <w_d>``, ``log w_d = -S_lam(U) + S_0(U)``.
``independent``
    An independent HMC ensemble at ``lam`` against the base ensemble at 0 (``--symmetric``: independent ensembles
    at ``+lam`` and ``-lam``), :func:`corrflow.stats.independent_curve`.

Errors
------
Binned jackknife over the base configurations in Monte Carlo order, chains pooled as replicas; every
leave-one-bin-out sample recomputes the reweighted correlators, the effective masses and the plateau value.
Independent ensembles are jackknifed on their own, and every result keeps its deviations per ensemble, so pulls
between estimators sharing the base ensemble include their correlation (:func:`corrflow.stats.pull`).  Bin size
(:func:`binning`): ``ceil(bin_tau_factor * tau_max)``, ``tau_max`` the largest Gamma-method ``tau_int`` of
``C(t_min)``, ``O``, ``w`` and ``w C_lam(t_min)`` on the base chains (``C(t_min)`` on the independent ones), reduced
to keep at least ``MIN_BINS`` bins.

Steps, costs and variance reduction
-----------------------------------
:func:`corrflow.pipeline.family` with the targets ``lam`` (and ``-lam``) and direct reweighting: base ensemble
(seed ``seed``), flows trained on ``n_train`` base configurations, flowed and direct paired ensembles, independent
ensembles (seeds ``seed + 1``, ``seed + 2``); correlators measured on the base, flowed and independent
configurations (cached in ``<flow_dir>/measurements/``).  Path costs (:meth:`corrflow.pipeline.Family.path_costs`,
one definition, :data:`corrflow.pipeline.COST_DEFINITION`) include the correlator measurements of each path:
flowed = base HMC + training + flow application + correlators on ``U_i`` and ``f(U_i)``; direct = base HMC +
weights + correlators on ``U_i``; connected = base HMC + correlators on ``U_i``; tangent = base HMC + its
per-configuration terms (correlators and their derivatives) + the fit; independent = base + independent HMC and their
correlators (symmetric: the two independent ensembles only).  (Before the pipeline redesign the
path costs excluded the measurements.)  ``variance reduction vs X = var_X / var_flowed``; cost-adjusted =
``var_X cost_X / (var_flowed cost_flowed)``.

Defaults and what was measured (2 CPU cores; BENCHMARKS.md "Feynman–Hellmann")
-------------------------------------------------------------------------------
16 x 4 lattice (the exact determinant costs ``~V^3``), ``beta = 2``, ``m = 0.1`` (``m_pi = 0.973(14)``), 2 chains x
500 configurations, Omelyan ``eps = 0.4``, 3 steps (acceptance 0.92), flow of 2 plaquette sweeps trained 15 epochs
on 256 configurations (lr 0.02), plateau ``t = 4..8`` (2026-12-05, 73 s): tangent -0.068(12), flowed -0.064(32),
connected -0.092(42), direct -0.103(39), independent -0.11(11).  The tangent estimator has 13.4x less variance than
the connected one, 7.6x less than the flowed one and 85x less than independent ensembles (cost-adjusted 8.3x, 13.2x,
104x: it needs no training and no weights); the flowed estimator 11.1x vs independent, 1.53x vs direct.  At
``lam = 0.1`` direct reweighting is still good (weight ESS 0.92); at ``lam = 0.2`` it degrades (ESS 0.73) while the
flow keeps its error: the default.  Symmetric ``+-0.1`` halved the flowed variance at 1.7x the flowed cost; no
``O(lam)`` bias was visible one-sided, so one-sided is the default.

Python API
----------
``run(FHSettings.make(n_configs=200, lam=0.05)) -> record`` (or ``run(n_configs=200, lam=0.05)``); the record is
also written to the store (``store.read_analysis("feynman_hellmann")``) and ``render(record)`` redraws its figure.
The estimators work on plain arrays: :func:`dE_dlambda`, :func:`binning`, :func:`corrflow.stats.effective_mass_curve`, and the
generic curves and plateau fits of :mod:`corrflow.stats`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from corrflow._lazy_names import install
from corrflow.pipeline import Analysis, deferred

from .settings import (
    ANALYSIS_NAME,
    ESTIMATORS,
    FIT_WEIGHTS,
    KINDS,
    TANGENT_FIELDS,
    THEORY_CHOICES,
    FHSettings,
    describe_theory,
    header,
    theories,
)

# the rest on first use (PEP 562): `--help` and the settings load neither JAX nor scipy
_NAMES = {
    "estimators": ("Binning", "FHEstimates", "TangentSeries", "binning", "dE_dlambda", "gluon_momentum_fraction",
                   "tangent_series"),
    "measure": ("FHInputs", "measure", "prepare", "tangent_field", "tangent_names"),
    "record": ("estimate",),
    "render": ("render",),
}
install(__name__, _NAMES)

if TYPE_CHECKING:  # the names for type checkers and editors
    from .estimators import (Binning, FHEstimates, TangentSeries, binning, dE_dlambda, gluon_momentum_fraction,
                             tangent_series)
    from .measure import FHInputs, measure, prepare, tangent_field, tangent_names
    from .record import estimate
    from .render import render

__all__ = [
    "ANALYSIS_NAME",
    "ESTIMATORS",
    "FEYNMAN_HELLMANN",
    "FIT_WEIGHTS",
    "KINDS",
    "TANGENT_FIELDS",
    "THEORY_CHOICES",
    "Binning",
    "FHEstimates",
    "FHInputs",
    "FHSettings",
    "TangentSeries",
    "binning",
    "dE_dlambda",
    "describe_theory",
    "estimate",
    "gluon_momentum_fraction",
    "measure",
    "prepare",
    "render",
    "run",
    "tangent_field",
    "tangent_names",
    "tangent_series",
    "theories",
]

FEYNMAN_HELLMANN = Analysis(
    name=ANALYSIS_NAME, command="feynman-hellmann", settings=FHSettings, header=header,
    prepare=deferred("analysis.feynman_hellmann.measure:prepare"),
    estimate=deferred("analysis.feynman_hellmann.record:estimate"),
    render=deferred("analysis.feynman_hellmann.render:render"), summary_lines=1, tables_printed=1,
    help="Feynman-Hellmann dE_pi/dlambda = <pi|O_t|pi> - <0|O_t|0> for the source S + lambda O: the plaquette source "
         "O = -sum_x cos P(x) in the Schwinger model, or the gluonic T_44 in quenched SU(3) (the bare gluon momentum "
         "fraction of the pion). One HMC base ensemble at lambda = 0 pushed through a flow 0 -> lambda (correlated "
         "two-point functions, reweighted), compared with the tangent-flow estimator (the derivative at lambda = 0 "
         "from the base ensemble with a cross-fitted vector field, no weights), the connected correlator <C(t) O>_c "
         "of the base ensemble, direct reweighting and independent ensembles.",
    epilog="""
**Examples**

    python -m analysis.feynman_hellmann   # defaults (a few minutes)

    python -m analysis.feynman_hellmann --n-configs 2000 --lam 0.05 \\
        --out reports/fh_lam0.05

    python -m analysis.feynman_hellmann --symmetric --t-min 3 --t-max 7 \\
        --kind log

    python -m analysis.feynman_hellmann --theory su3 --T 8 --L 4 --beta 5.8 \\
        --mass 0.5 --lam 0.05 --step-size 0.1 --n-steps 10 --t-min 1 --t-max 3
""")


def run(settings: FHSettings | None = None, *, console: Any = None, write: bool = True, progress: Any = None,
        **overrides: Any) -> dict[str, Any]:
    """Run the whole analysis (:func:`corrflow.pipeline.run_analysis`) and return the record.

    ``settings`` default to :class:`FHSettings`; ``overrides`` replace single settings by their flat names
    (``run(n_configs=200, lam=0.05)``).  ``console`` (rich) shows progress and the result table; with ``write``
    the record, figure, Markdown, JSON and run file go to the store and ``settings.io.out``.
    """
    from corrflow.pipeline import run_analysis

    s = (settings or FHSettings()).replace(**overrides)
    return run_analysis(FEYNMAN_HELLMANN, s, console=console, write=write, progress=progress)
