r"""Continuum limit of 2D U(1) gauge theory from flow-correlated ensembles, against independent ensembles.

    corrflow analyse continuum-limit                         # defaults: a few minutes on 2 CPU cores
    python -m analysis.continuum_limit --help                # the same command, every option with its default

Physics
-------
2D U(1) Wilson gauge theory (``S = -beta sum_p cos P_p``) has one scale, the coupling ``g``, with
``a^2 g^2 = 1/beta``; its continuum limit is known exactly, so the whole chain can be checked.  Dimensionless
quantities ``q(beta)`` (:mod:`analysis.continuum_limit.u1_quantities`) are extrapolated in ``x = 1/beta``.

Why these defaults (``L = 12``, ``beta = 9, 9.75, 10.5, 11.25, 12``, quadratic fit, ``plaquette``)
-------------------------------------------------------------------------------------------------
* Polynomial extrapolation needs small ``x``: on ``beta = 3 .. 5`` the truncation bias of a quadratic fit to
  the exact ``plaquette`` values is -1.7 %, on ``9 .. 12`` it is +0.09 % (the run reports it for its window).
* At such betas HMC does not change the topological charge (``tau_int(Q) ~ 10^3`` at ``beta = 8`` on 16 x 16; no
  tunnelling at all at ``beta >= 9``).  ``topology fixed`` (default) therefore starts every chain cold, in the
  sector ``Q = 0``, conditions every estimate on ``Q = 0`` (weight 0 for a configuration with ``Q != 0``; the run
  counts them) and uses the exact ``Q = 0`` torus values as the reference (:func:`exact_plaquette_sector`).
  Fixing ``Q = 0`` lowers ``beta (1 - <P>)`` by about ``1/(2V)``, a fixed-topology finite-volume effect.
* ``fv_correct`` (default) subtracts the exact shift (reference torus value - infinite volume) from every
  estimate, so that the fit targets the continuum value; the shift carries no error.
* HMC trajectory length ``n_steps * step_scale / sqrt(beta) = 1/sqrt(beta)`` (two Omelyan steps): at large ``beta``
  a fixed trajectory length leaves the modes with ``omega tau ~ pi m`` almost unchanged; with the default the binned
  ``tau_int`` of the plaquette plateaus at ~1 (in stored configurations, thin 2).
* Flows go *upwards* from the smallest beta (the target is narrower than the base); the weight ESS falls roughly
  like ``exp(-c V (Delta ln beta)^2)``.  Flows are *direct* (``beta_0 -> beta_k``): a chain of flows gave the same
  ESS at a cost growing with its length.
* The flows are trained on a *separate* short chain at ``beta_0`` (``training.sample = "separate"``, seed
  ``seed + 1000``), so that each flow is fixed with respect to the estimation sample.
* Reverse-KL training is mode seeking: weights may be heavy-tailed, which biases self-normalised reweighting at
  small ``N * ESS``.  Each beta reports the PSIS Pareto ``k-hat`` of its weights (> 0.7 flagged).  In calibration
  runs the pulls of the continuum value had mean +0.2 and standard deviation 1.1 - 1.2, the correlated chi^2 of
  the flowed fit about twice its ``dof``; the summary also quotes the error scaled by ``sqrt(chi^2/dof)``.

Steps (:func:`corrflow.pipeline.family`): base HMC ensemble at ``beta_0``, training chain, one flow per other beta,
every base configuration through every flow, independent HMC ensembles (seed ``seed + k``); then the estimators of
:mod:`analysis.continuum_limit.estimators`, correlated chi^2 and Bayesian fits, the exact-data fit (truncation
bias of the fit model), pulls against the exact continuum value.

Cost (:mod:`corrflow.pipeline.ledger`, one definition for every analysis): flowed path = base HMC + training chain +
training + flow application; independent path = base HMC + independent HMC.  HMC is cheap in this 2D model, so
training dominates the flowed cost; ``cost_adjusted_without_training`` shows the gain once flows are reused.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from corrflow.pipeline import (
    EnsembleSettings,
    ErrorSettings,
    FlowSettings,
    MarkovSettings,
    StoreSettings,
    TrainingSettings,
    setting,
)

from .common import ContinuumFitSettings
from .estimators import continuum_fits, flowed_estimates, independent_estimates, bayesian_fits
from .u1_quantities import MEASURED, QUANTITIES, make_quantity

__all__ = ["ContinuumSettings", "estimate", "ensemble_names", "prepare"]

ANALYSIS_NAME = "continuum_limit"


@dataclass(frozen=True)
class ContinuumSettings(ContinuumFitSettings):
    """Everything that defines a 2D U(1) continuum run (``corrflow analyse continuum-limit --help``).

    ``betas`` includes the base ``beta_0 = min(betas)``.  The MD step size at ``beta`` is ``step_size / sqrt(beta)``
    (constant acceptance).  The independent ensemble at the ``k``-th beta (sorted, ``k >= 1``) uses seed
    ``seed + k``; the training chain ``seed + 1000``.
    """

    name: ClassVar[str] = ANALYSIS_NAME
    cli_hidden: ClassVar[frozenset[str]] = frozenset({"start", "algorithm", "hmc_det", "n_overrelax", "step_scaling",
                                                     "method"})
    cli_overrides: ClassVar[dict[str, dict[str, str]]] = {
        "step_size": {"flag": "--step-scale", "help": "MD step size x sqrt(beta) (Omelyan integrator)"},
        "n_train": {"help": "configurations of the separate training chain at the base beta (seed + 1000; spread "
                            "over the chains)"},
        "seed": {"help": "seed of the base ensemble; the k-th other beta uses seed + k"},
    }

    io: StoreSettings = setting(StoreSettings(store="data/continuum_limit.zarr", out="reports/continuum_limit"), "")
    ensemble: EnsembleSettings = setting(EnsembleSettings(n_configs=4000, n_chains=2, thin=2, n_therm=250), "")
    markov: MarkovSettings = setting(MarkovSettings(step_size=0.5, n_steps=2, step_scaling="inverse_sqrt_beta"), "")
    flow: FlowSettings = setting(FlowSettings(), "")
    training: TrainingSettings = setting(TrainingSettings(epochs=10, n_train=250, batch_size=64, learning_rate=0.02,
                                                          sample="separate"), "")
    errors: ErrorSettings = setting(ErrorSettings(), "")
    betas: tuple[float, ...] = setting((9.0, 9.75, 10.5, 11.25, 12.0),
                                       "comma-separated betas; the smallest is the base of the flows")
    L: int = setting(12, "lattice extent (L x L torus)", flag="--L")
    quantity: str = setting("plaquette", "plaquette | string_tension | topological_susceptibility",
                            choices=tuple(QUANTITIES))
    creutz_size: int = setting(2, "R of the Creutz ratio chi(R,R) for string_tension (1 or 2)")
    order: int = setting(2, "polynomial degree in a^2 g^2 of the continuum fit")
    topology: str = setting("fixed", "fixed: cold starts, every estimate in the sector Q = 0 and compared with exact "
                                     "Q = 0 values (HMC freezes Q at these betas); sampled: hot starts, all sectors "
                                     "(needs betas where HMC tunnels, e.g. <= 4 at L = 16)", choices=("fixed", "sampled"))
    fv_correct: bool = setting(True, "subtract the exact shift (torus [Q = 0] - infinite volume) from every estimate, "
                                     "so that the fit targets the continuum")
    bayes: bool = setting(True, "also run the Bayesian (numpyro NUTS) fits")

    def check(self) -> None:
        super().check()
        betas = self.betas
        if self.L < 2:
            raise ValueError(f"L must be >= 2, got {self.L}")
        self.flow.check_lattice("u1", self.shape)  # e.g. an odd L: refused before any ensemble is generated
        if self.creutz_size not in (1, 2):  # whatever the quantity: a setting out of range is a mistake
            raise ValueError(f"creutz_size must be 1 or 2, got {self.creutz_size}")
        q = make_quantity(self.quantity, self.creutz_size)  # validates the quantity
        q.reference(betas[0], (self.L, self.L), self.topology)  # raises if no exact reference exists
        if q.name == "topological_susceptibility" and self.topology == "fixed":
            raise ValueError("topological_susceptibility vanishes in the fixed sector Q = 0: use --topology sampled "
                             "(and betas where HMC changes the topology, e.g. 2..4 at L = 16)")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.L, self.L)



def header(s: ContinuumSettings) -> str:
    q = make_quantity(s.quantity, s.creutz_size)
    return (f"[bold]continuum limit[/] of {q.description}: 2D U(1) {s.L}x{s.L}, betas {list(s.betas)} (base "
            f"{s.base_beta:g}), store {s.io.store}")


def ensemble_names(s: ContinuumSettings) -> tuple[str, list[str]]:
    """Base ensemble name and independent-ensemble names (per beta, sorted; the first is the base's)."""
    from corrflow.store import ensemble_name

    tag = "_Q0" if s.topology == "fixed" else ""  # cold-start ensembles (Q = 0 sector) are kept apart
    base = ensemble_name("u1", s.shape, {"beta": s.base_beta}) + tag
    return base, [ensemble_name("u1", s.shape, {"beta": b}) + tag for b in s.betas]


def prepare(pipe: Any, s: ContinuumSettings) -> Any:
    """The family of ensembles: base at ``beta_0`` (cold in ``Q = 0`` for fixed topology), training chain, flows and
    flowed ensembles to every other beta, independent ensembles."""
    from corrflow import make_theory
    from corrflow.pipeline import auto_block_size, family

    base_th = make_theory("u1", s.shape, beta=s.base_beta)
    base, indep = ensemble_names(s)
    ens = dataclasses.replace(s.ensemble, start="cold" if s.topology == "fixed" else "hot")
    block = ens.block_size or auto_block_size(ens.n_configs, ens.n_therm, s.training.chain_length(ens.n_chains))
    return family(pipe, base_th, [base_th.replace(beta=b) for b in s.betas[1:]], ensemble=ens, markov=s.markov,
                  flow=s.flow, training=s.training, base_name=base, independent_names=indep[1:],
                  training_name=f"{base}_train", observables=MEASURED, flow_batch=min(block, 250))


def _fmt(v: float, e: float, digits: int = 2) -> str:
    from corrflow.stats import format_value_error

    return format_value_error(float(v), float(e), digits)


def _off_sector(o: dict[str, np.ndarray]) -> np.ndarray:
    return np.abs(o["topological_charge"]) > 0.5


def estimate(s: ContinuumSettings, fam: Any) -> dict[str, Any]:
    """Estimates, covariance, fits and the record (module docstring)."""
    import jax

    from corrflow.stats import gamma_method

    q = make_quantity(s.quantity, s.creutz_size)
    betas = np.array(s.betas)
    x = 1.0 / betas
    volume = s.L * s.L
    base_obs = fam.base.observables(MEASURED)
    f_obs: list[dict[str, np.ndarray]] = [base_obs] + [m.flowed.observables(MEASURED) for m in fam.members]
    f_lw: list[np.ndarray | None] = [None] + [m.flowed.log_weights() for m in fam.members]
    ind_obs = [base_obs] + [m.independent.observables(MEASURED) for m in fam.members]

    # topology: in the fixed-sector mode every estimate is conditioned on Q = 0 (zero weight otherwise; HMC from a
    # cold start and the flows practically never leave the sector, which the counts below check)
    leaks = {f"base {s.betas[0]:g}": int(_off_sector(base_obs).sum())}  # "<ensemble> <beta>", as below
    ind_lw: list[np.ndarray | None] = [None] * len(s.betas)
    if s.topology == "fixed":
        drop_base = _off_sector(base_obs)
        for k in range(len(s.betas)):
            drop = drop_base if k == 0 else drop_base | _off_sector(f_obs[k])
            if k:
                leaks[f"flowed {s.betas[k]:g}"] = int((_off_sector(f_obs[k]) & ~drop_base).sum())
                f_lw[k] = np.where(drop, -np.inf, f_lw[k])
            elif drop.any():
                f_lw[0] = np.where(drop, -np.inf, 0.0)
        for k in range(1, len(s.betas)):
            d = _off_sector(ind_obs[k])
            leaks[f"independent {s.betas[k]:g}"] = int(d.sum())
            if d.any():
                ind_lw[k] = np.where(d, -np.inf, 0.0)
        if drop_base.any():
            ind_lw[0] = f_lw[0]

    flowed = flowed_estimates(q, s.betas, f_obs, f_lw, volume, bin_size=s.errors.bin_size or None,
                              bin_tau_factor=s.errors.bin_tau_factor, S=s.errors.windowing)
    indep = independent_estimates(q, s.betas, ind_obs, volume, ind_lw, S=s.errors.windowing)
    exact_ref = np.array([q.reference(b, s.shape, s.topology) for b in s.betas])
    exact_inf = np.array([q.exact_infinite(b) for b in s.betas])
    fv_shift = exact_ref - exact_inf
    exact_target = exact_ref
    if s.fv_correct:
        flowed = flowed._replace(values=flowed.values - fv_shift, replicas=flowed.replicas - fv_shift)
        indep = indep._replace(values=indep.values - fv_shift)
        exact_target = exact_inf
    tau_q = [gamma_method(o["topological_charge"], S=s.errors.windowing).tau_int
             if np.ptp(np.round(o["topological_charge"])) > 0 else math.nan for o in ind_obs]  # NaN: Q frozen

    common = dict(order=s.order, svd_cut=s.svd_cut or None)
    fit_f = continuum_fits(x, flowed.values, flowed.cov, exact_target, replicas=flowed.replicas, **common)
    fit_i = continuum_fits(x, indep.values, indep.cov, exact_target, **common)
    if s.bayes:  # both Bayesian fits in one NUTS run (independent blocks; one compilation)
        bf, bi = bayesian_fits(x, [(flowed.values, flowed.cov), (indep.values, indep.cov)], order=s.order,
                               key=jax.random.PRNGKey(s.bayes_seed), num_warmup=s.bayes_warmup,
                               num_samples=s.bayes_samples, prior_scale=s.prior_scale, svd_cut=s.svd_cut or None)
        fit_f, fit_i = fit_f._replace(bayes=bf), fit_i._replace(bayes=bi)

    steps = fam.step_costs()
    paths = fam.path_costs()
    cost_flow, cost_ind = paths["flowed"], paths["independent"]
    vr = fit_i.lsq.errors[0] ** 2 / fit_f.lsq.errors[0] ** 2
    vr_cost = vr * cost_ind / cost_flow if cost_flow > 0 else math.nan
    reused = steps["hmc_base"] + steps["flow"]
    vr_amort = vr * cost_ind / reused if reused > 0 else math.nan
    vr_bayes = (fit_i.bayes.std[0] / fit_f.bayes.std[0]) ** 2 if s.bayes else None
    vr_beta = (indep.errors / flowed.errors) ** 2
    from .u1_record import u1_record

    return u1_record(s, q, fam, x, flowed, indep, fit_f, fit_i, exact_ref, exact_inf, exact_target, fv_shift, leaks,
                     tau_q, steps, paths, vr, vr_cost, vr_amort, vr_bayes, vr_beta)
