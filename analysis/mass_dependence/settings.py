"""Settings of the mass-dependence analysis (``python -m analysis.mass_dependence --help``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from corrflow.checks import DENSE_MAX_DIM, check_dense_size
from corrflow.pipeline import (
    AnalysisSettings,
    EnsembleSettings,
    ErrorSettings,
    FlowSettings,
    MarkovSettings,
    StoreSettings,
    TrainingSettings,
    check_tangent_settings,
    setting,
)

__all__ = ["ANALYSIS_NAME", "ESTIMATORS", "OBSERVABLES", "MassSettings", "header"]

ANALYSIS_NAME = "mass_dependence"
#: the observables whose mass derivative the analysis estimates
OBSERVABLES = ("pion_mass", "condensate", "plaquette", "chi_top")
#: the estimators of dO/dm, in table order (``tangent`` only with ``tangent = True``)
ESTIMATORS = ("flowed", "tangent", "direct", "independent", "connected")


@dataclass(frozen=True)
class MassSettings(AnalysisSettings):
    """Everything that defines a mass-dependence run (``python -m analysis.mass_dependence --help``).

    The lattice is ``T x L`` (time first; the pion correlator runs along ``T``).  ``t_max = 0`` means ``T/2 - 1``.
    ``bin_size = 0`` chooses the jackknife bin size automatically.  The base ensemble at ``mass`` uses seed
    ``seed``, the independent one at ``mass + dm`` seed ``seed + 1``; the flow ``m -> m + dm`` is trained on
    ``n_train`` base configurations spread over the chains (``--train-sample base``).
    """

    name: ClassVar[str] = ANALYSIS_NAME
    cli_hidden: ClassVar[frozenset[str]] = frozenset({"algorithm", "n_overrelax", "step_scaling"})
    cli_overrides: ClassVar[dict[str, dict[str, str]]] = {
        "seed": {"help": "seed of the base ensemble (independent ensemble: seed + 1)"},
    }

    io: StoreSettings = setting(StoreSettings(store="data/mass_dependence.zarr", out="reports/mass_dependence"), "")
    ensemble: EnsembleSettings = setting(EnsembleSettings(n_configs=1000, n_chains=2, n_therm=100, thin=1), "")
    markov: MarkovSettings = setting(MarkovSettings(step_size=0.2, n_steps=5, hmc_det="pseudofermion"), "")
    flow: FlowSettings = setting(FlowSettings(flow_kind="residual", sweeps=2, loops=("plaquette",)), "")
    training: TrainingSettings = setting(TrainingSettings(epochs=10, n_train=128, batch_size=32,
                                                          learning_rate=0.005, sample="base"), "")
    errors: ErrorSettings = setting(ErrorSettings(method="gamma"), "")
    theory: str = setting("schwinger", "theory (only 'schwinger': 2D U(1) + N_f = 2 Wilson fermions)")
    L: int = setting(8, "spatial extent (even)", flag="--L")
    T: int = setting(8, "time extent (even; the pion correlator runs along it)", flag="--T")
    beta: float = setting(2.0, "gauge coupling beta")
    mass: float = setting(0.2, "bare quark mass m of the base ensemble")
    dm: float = setting(0.02, "mass shift of the target (non-zero; derivative = difference / dm)")
    n_sources: int = setting(2, "point sources per configuration for the pion correlator")
    t_min: int = setting(2, "first t of the effective-mass plateau")
    t_max: int = setting(0, "last t of the plateau [0: T/2 - 1]")
    observables: tuple[str, ...] = setting(OBSERVABLES, "comma-separated: " + ", ".join(OBSERVABLES))
    measure_batch: int = setting(64, "configurations per measurement batch (pion correlators, condensate)")
    tangent: bool = setting(False, "also the tangent-flow estimator and the connected one for the pion mass (base "
                                   "ensemble only: no flow, no weights; cross-fitted plaquette-space field, the sea "
                                   "quarks' part by exact traces; ~2.4x the run time at the defaults for 1.0-1.6x less "
                                   "variance than the connected estimator)", flag="--tangent/--no-tangent")
    tangent_batch: int = setting(32, "configurations per batch of tangent terms")

    def check(self) -> None:
        th = str(self.theory).strip().lower()
        if th != "schwinger":
            raise ValueError(f"theory {self.theory!r} is not supported: the mass dependence needs dynamical fermions "
                             "and the geometric topological charge of 2D U(1); use theory 'schwinger'")
        bad = [o for o in self.observables if o not in OBSERVABLES]
        if bad:
            raise ValueError(f"unknown observable(s) {', '.join(map(repr, bad))}; allowed: {', '.join(OBSERVABLES)}")
        if not self.observables:
            raise ValueError(f"no observables selected; allowed: {', '.join(OBSERVABLES)}")
        if any(x < 2 or x % 2 for x in self.shape):
            raise ValueError(f"T and L must be even extents >= 2, got T = {self.T}, L = {self.L}")
        self.flow.check_lattice("u1", self.shape)  # refused before any HMC
        if not (math.isfinite(self.dm) and self.dm != 0.0):
            raise ValueError(f"dm must be finite and non-zero (it is the mass shift of the derivative), got {self.dm}")
        for m, what in ((self.mass, "mass"), (self.mass + self.dm, "mass + dm")):
            if not math.isfinite(m) or m + 2 <= 0:
                raise ValueError(f"{what} = {m} must be finite and > -2 (kappa > 0)")
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"beta must be positive, got {self.beta}")
        # the weights and the condensate's mass slope are exact (dense): a lattice beyond that is refused before HMC
        check_dense_size(self.shape, 2, 1,  # two-component spinors, one colour
                         f"a {self.T}x{self.L} lattice is too large for this analysis: its weights and condensate use",
                         remedy=f"choose T*L <= {DENSE_MAX_DIM // 2}, or take mass derivatives on larger lattices "
                                "with `corrflow derivative STORE ENSEMBLE --param mass` (tangent estimator, stochastic "
                                "traces)")
        if self.n_sources < 1 or self.T % self.n_sources:
            raise ValueError(f"n_sources = {self.n_sources} must divide the time extent T = {self.T}")
        tmax = self.resolved_t_max
        if not (0 <= self.t_min < tmax <= self.T // 2 - 1):
            raise ValueError(f"need 0 <= t_min < t_max <= T/2 - 1 = {self.T // 2 - 1} for the cosh plateau, got "
                             f"t_min = {self.t_min}, t_max = {tmax}")
        if self.ensemble.n_configs < 20:
            raise ValueError(f"n_configs must be >= 20 per chain, got {self.ensemble.n_configs}")
        if self.measure_batch < 1:
            raise ValueError(f"measure_batch must be >= 1, got {self.measure_batch}")
        from .measure import tangent_field

        check_tangent_settings(self, tangent_field)

    @property
    def shape(self) -> tuple[int, int]:
        """``(T, L)``: time extent first."""
        return (self.T, self.L)

    @property
    def resolved_t_max(self) -> int:
        """Last time of the plateau (``t_max``, or ``T/2 - 1`` for 0)."""
        return int(self.t_max) if self.t_max else self.T // 2 - 1


def header(s: MassSettings) -> str:
    """The first line of a run."""
    return (f"[bold]mass dependence[/]: Schwinger {s.T}x{s.L}, beta={s.beta:g}, m={s.mass:g} -> {s.mass + s.dm:g} "
            f"({s.markov.hmc_det} HMC, exact weights), store {s.io.store}")
