"""Settings of the Feynman–Hellmann analysis (``python -m analysis.feynman_hellmann --help``), and the theories
they define."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

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
from corrflow.stats import FIT_WEIGHTS, MIN_BINS

__all__ = ["ANALYSIS_NAME", "ESTIMATORS", "FIT_WEIGHTS", "KINDS", "TANGENT_FIELDS", "THEORY_CHOICES", "FHSettings",
           "describe_theory", "header", "theories"]

ANALYSIS_NAME = "feynman_hellmann"
#: the estimators of dE/dlambda, in table order (``tangent`` unless ``tangent = False``)
ESTIMATORS = ("flowed", "tangent", "connected", "direct", "independent")
#: fields of the tangent-flow estimator (:func:`corrflow.tangent.make_field`; ``none`` would repeat the connected one)
TANGENT_FIELDS = ("auto", "plaquette", "gradient", "preconditioned", "smoothing")
#: effective-mass kinds with a lambda-derivative (:func:`corrflow.stats.effective_mass_slope`)
KINDS = ("cosh", "log")
THEORY_CHOICES = ("schwinger", "su3")


#: smallest beta the su3 analysis accepts: below it 4D SU(3) is at strong coupling, far from any continuum physics
SU3_MIN_BETA = 5.0


@dataclass(frozen=True)
class FHSettings(AnalysisSettings):
    """Everything that defines a Feynman–Hellmann run (``python -m analysis.feynman_hellmann --help``).

    ``theory``: ``"schwinger"`` (2D ``T x L``, ``N_f = 2`` dynamical Wilson quarks of mass ``mass``) or ``"su3"``
    (quenched 4D SU(3), ``T x L^3``, valence Wilson quarks of mass ``mass``; the source is the gluonic
    energy-momentum-tensor component and the record adds the bare ``<x>_g`` of the pion).  ``t_max = 0`` means
    ``T/2`` (cosh) or ``T/2 - 1`` (log).  ``bin_size = 0`` chooses the jackknife bin size automatically.
    Base ensemble at ``lambda = 0``: seed ``seed``; independent ensembles at ``+lambda`` (and ``-lambda``): seeds
    ``seed + 1`` (``seed + 2``).
    """

    name: ClassVar[str] = ANALYSIS_NAME
    cli_hidden: ClassVar[frozenset[str]] = frozenset({"algorithm", "n_overrelax", "step_scaling", "method"})
    cli_overrides: ClassVar[dict[str, dict[str, str]]] = {
        "seed": {"help": "seed of the base ensemble (independent ensembles: seed + 1, + 2)"},
        "bin_size": {"help": f"jackknife bin size [0: ceil(bin-tau-factor x tau_int), at least {MIN_BINS} bins]"},
    }

    io: StoreSettings = setting(StoreSettings(store="data/feynman_hellmann.zarr", out="reports/feynman_hellmann"), "")
    ensemble: EnsembleSettings = setting(EnsembleSettings(n_configs=500, n_chains=2, n_therm=100, thin=1), "")
    markov: MarkovSettings = setting(MarkovSettings(step_size=0.4, n_steps=3, hmc_det="exact"), "")
    flow: FlowSettings = setting(FlowSettings(sweeps=2, loops=("plaquette",), degree=0), "")
    training: TrainingSettings = setting(TrainingSettings(epochs=15, n_train=256, batch_size=64, learning_rate=0.02,
                                                          optimizer="auto", sample="base"), "")
    errors: ErrorSettings = setting(ErrorSettings(method="jackknife"), "")
    theory: str = setting("schwinger", "schwinger (2D, N_f = 2) | su3 (quenched 4D SU(3), valence quarks; reports "
                                       "the pion's bare gluon momentum fraction)", choices=THEORY_CHOICES)
    T: int = setting(16, "time extent (even; the pion correlator runs along it)", flag="--T")
    L: int = setting(4, "spatial extent (even; su3: L^3)", flag="--L")
    beta: float = setting(2.0, "gauge coupling beta")
    mass: float = setting(0.1, "bare quark mass m (schwinger: N_f = 2 sea quarks; su3: valence)")
    lam: float = setting(0.2, "source strength lambda of S + lambda O (non-zero; schwinger: O = -sum cos P; su3: "
                              "O = (1/3) sum [spatial - temporal] Re tr P)")
    symmetric: bool = setting(False, "flows to +lambda and -lambda (central difference) or 0 -> lambda",
                              flag="--symmetric/--one-sided")
    n_sources: int = setting(2, "point sources per configuration (must divide T)")
    kind: str = setting("cosh", "effective mass: cosh (periodic, default) | log (plain exponential)", choices=KINDS)
    t_min: int = setting(4, "first t of the plateau fit")
    t_max: int = setting(0, "last t of the plateau fit [0: T/2 for cosh, T/2 - 1 for log]")
    fit_weights: str = setting("diagonal", "plateau weights: diagonal (1/sigma^2) | correlated (C^-1; needs many "
                                           "bins); errors always jackknife", choices=FIT_WEIGHTS)
    measure_batch: int = setting(64, "configurations per correlator batch")
    tangent: bool = setting(True, "also the tangent-flow estimator (base ensemble only: no flow, no weights; "
                                  "dC(t)/dlambda = mean of v.grad C minus the covariance of C with R_v, for a "
                                  "cross-fitted field v)",
                            flag="--tangent/--no-tangent")
    tangent_field: str = setting("auto", "field of the tangent estimator (auto: plaquette field in 2D U(1), smoothing "
                                         "field in 4D SU(3))", choices=TANGENT_FIELDS)
    tangent_batch: int = setting(16, "configurations per batch of tangent terms")

    def check(self) -> None:
        from corrflow.stats import effective_times

        nd = len(self.shape)
        if any(x < 4 or x % 2 for x in (self.T, self.L)):
            raise ValueError(f"theory {self.theory!r} needs {nd} even extents >= 4 (time first), got {self.shape}")
        self.flow.check_lattice("u1" if self.theory == "schwinger" else "su3", self.shape)  # refused before any HMC
        if not (math.isfinite(self.lam) and self.lam != 0.0):
            raise ValueError(f"lam must be finite and non-zero (the Feynman-Hellmann source strength), got {self.lam}")
        if self.symmetric and self.lam < 0:
            raise ValueError(f"with symmetric=True give lam > 0 (flows to +lam and -lam), got {self.lam}")
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"beta must be positive, got {self.beta}")
        if self.theory == "su3" and self.beta < SU3_MIN_BETA:  # the default beta = 2 is the Schwinger model's
            raise ValueError(f"beta = {self.beta:g} is deep in the strong-coupling region of 4D SU(3) (below the "
                             f"bulk crossover near 5.6; the default 2 is the Schwinger model's): give a 4D coupling "
                             f">= {SU3_MIN_BETA:g}, e.g. --beta 5.8")
        for b, what in ((self.beta + self.lam, "beta + lam"), (self.beta - abs(self.lam), "beta - |lam|")):
            if b <= 0:
                raise ValueError(f"{what} = {b} must stay positive (in 2D the source shifts beta)")
        if not math.isfinite(self.mass) or self.mass + 2 <= 0:
            raise ValueError(f"mass = {self.mass} must be finite and > -2 (kappa > 0)")
        if self.theory == "schwinger":  # exact determinant ratios in the flowed weights: refused before any HMC
            check_dense_size(self.shape, 2, 1,  # two-component spinors, one colour
                             f"a {self.T}x{self.L} Schwinger lattice is too large for this analysis: the flowed "
                             "weights take exact determinant ratios of",
                             remedy=f"choose T*L <= {DENSE_MAX_DIM // 2}, or take dE/dlam on larger lattices from "
                                    "the tangent estimator (`corrflow derivative STORE ENSEMBLE --param lam`)")
        if self.n_sources < 1 or self.T % self.n_sources:
            raise ValueError(f"n_sources = {self.n_sources} must divide the time extent T = {self.T}")
        times = effective_times(self.T, self.kind)
        tmax = self.resolved_t_max
        if not (times[0] <= self.t_min <= tmax <= times[-1]):
            raise ValueError(f"plateau range t_min = {self.t_min}, t_max = {tmax} is outside the lattice: the "
                             f"{self.kind} effective mass of T = {self.T} is defined for {times[0]} <= t <= "
                             f"{times[-1]} (and t_min <= t_max)")
        if self.ensemble.n_configs < 20:
            raise ValueError(f"n_configs must be >= 20 per chain, got {self.ensemble.n_configs}")
        if self.measure_batch < 1:
            raise ValueError(f"measure_batch must be >= 1, got {self.measure_batch}")
        from .measure import tangent_field

        check_tangent_settings(self, tangent_field)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(T, L)`` (schwinger) or ``(T, L, L, L)`` (su3): time extent first."""
        return (self.T, self.L) if self.theory == "schwinger" else (self.T, self.L, self.L, self.L)

    @property
    def resolved_t_max(self) -> int:
        """Last time of the plateau (``t_max``, or ``T/2`` (cosh) / ``T/2 - 1`` (log) for 0)."""
        if self.t_max:
            return int(self.t_max)
        return self.T // 2 if self.kind == "cosh" else self.T // 2 - 1

    @property
    def lam_targets(self) -> tuple[float, ...]:
        """The source strengths of the flows' targets: ``(lam,)`` or ``(lam, -lam)`` (symmetric)."""
        return (self.lam, -self.lam) if self.symmetric else (self.lam,)


def theories(s: FHSettings) -> tuple[Any, Any]:
    """``(base theory at lambda = 0 (det = hmc_det for fermions), theory whose Dirac operator measures the
    pion)``."""
    import corrflow as cf
    from corrflow.observables.fermions import valence_quarks

    if s.theory == "schwinger":
        base = cf.make_theory("schwinger", s.shape, beta=s.beta, mass=s.mass, det=s.markov.hmc_det)
        return base, base.replace(det="exact")  # the correlator depends neither on lam nor on the HMC algorithm
    base = cf.make_theory("su3", s.shape, beta=s.beta)
    return base, valence_quarks(base, mass=s.mass)


def describe_theory(s: FHSettings) -> str:
    """One line naming the theory, lattice and source (for summaries and titles)."""
    geom = "x".join(str(x) for x in s.shape)
    if s.theory == "schwinger":
        return (f"Schwinger model {geom}, beta = {s.beta:g}, m = {s.mass:g} (N_f = 2 Wilson), source "
                "O = -sum_x cos P(x)")
    return (f"quenched SU(3) {geom}, beta = {s.beta:g}, valence Wilson m = {s.mass:g}, source "
            "O = (1/3) sum_x [spatial - temporal] Re tr P (gluonic T_44 / beta)")


def header(s: FHSettings) -> str:
    """The first line of a run."""
    from rich.markup import escape

    algo = f"{s.markov.hmc_det} HMC, exact weights" if s.theory == "schwinger" else "HMC, quenched"
    return (f"[bold]Feynman-Hellmann[/]: {escape(describe_theory(s))}, lam = {'+-' if s.symmetric else ''}{s.lam:g} "
            f"({algo})")
