r"""Continuum limit of a gradient-flow ratio in 4D SU(3) Yang–Mills from flow-correlated ensembles.

    corrflow analyse continuum-limit-su3                       # defaults: about 10 minutes on 2 CPU cores
    python -m analysis.continuum_limit --theory su3 --help     # the same command, every option with its default

Physics
-------
Quenched SU(3) with the Wilson action (``beta = 6/g0^2``) on ``T x L^3`` tori at several ``beta``.  On every
configuration the Wilson flow (Lüscher's RK3 integrator, :mod:`corrflow.observables.gradient_flow`) gives the
action density ``E(t)`` (clover definition by default) on a grid of flow times; with ensemble means ``<E(t)>``

* ``t0``: ``t^2 <E(t)> = t0_ref`` (0.3, Lüscher, JHEP 08 (2010) 071),
* ``w0``: ``W(t) = t d/dt [t^2 <E(t)>] = w0_ref`` at ``t = w0^2`` (0.3, Borsanyi et al., JHEP 09 (2012) 010).

Quantities (``--quantity``), both dimensionless with ``O(a^2)`` lattice artefacts (Wilson action, flow and
clover ``E``):

``sqrt_t0_over_w0`` (default)
    ``sqrt(t0)/w0``.  Needs nothing but the flow.
``t0_over_r0sq``
    ``t0/r0^2 = (t0/a^2) (a/r0)^2`` with ``r0/a`` from the Necco–Sommer parametrisation (below).

The abscissa is ``x = (a/r0)^2`` from the interpolation of the static-potential scale by Necco and Sommer,
Nucl. Phys. B622 (2002) 328, eq. (2.6)::

    ln(a/r0) = -1.6804 - 1.7331 (beta - 6) + 0.7849 (beta - 6)^2 - 0.4428 (beta - 6)^3,   5.7 <= beta <= 6.92

(accurate to 0.5 % for ``beta <= 6.57``, 1 % above).  It depends on ``beta`` only, so ``x`` carries no
statistical error and is the same for the flowed and the independent data (outside its range the run warns).

Workflow (each step goes through the store and is skipped or resumed when already done)
----------------------------------------------------------------------------------------
1. base ensemble at ``beta_0 = min(betas)`` (heat bath + over-relaxation by default, :mod:`corrflow.heatbath`;
   ``--algorithm hmc`` for HMC) and a separate short training chain (seed ``seed + 1000``);
2. one residual flow ``beta_0 -> beta_k`` per other beta (4D masked gauge-equivariant layers with plaquette and
   optionally rectangle staples, :mod:`corrflow.flows`), trained on the training chain so that the flows are fixed
   with respect to the estimation sample;
3. every base configuration through every flow (:func:`corrflow.pipeline.correlate_to_store`): ``f_k(U_i)`` and
   ``log w_k(U_i)``, paired with ``U_i``;
4. independent ensembles at every ``beta_k != beta_0`` (seed ``seed + k``; the baseline);
5. the Wilson flow on every configuration of every ensemble (:func:`corrflow.pipeline.measure_stored` with
   ``wilson_flow``; one flow-time grid for all ensembles -- with the automatic ``--flow-t-max`` an ensemble that
   already stores a longer grid of the same spacing and step keeps it, and the estimates use the common part);
6. estimates, covariance, fits, figure and record (``store.write_analysis("continuum_limit_su3", ...)``;
   ``continuum_limit_su3.png / .md / .json`` in ``--out``).

Flows go upwards in beta (the target is narrower than the base), direct ``beta_0 -> beta_k`` as in the 2D
analysis (:mod:`analysis.continuum_limit` explains why).

Estimators and errors
---------------------
Flowed: ``<E_k(t)> = <w_k E(f_k(U); t)> / <w_k>`` on the *same* base configurations for every ``k``; the scales
are functions of these ratios, and their joint covariance across beta comes from the binned jackknife of
:func:`analysis.continuum_limit.estimators.flowed_estimates` (every leave-one-bin-out sample recomputes every ratio and every
crossing).  Only the grid points around the crossings enter (a window common to all ensembles).  Independent:
Gamma-method errors per ensemble (:func:`corrflow.stats.gamma_method`), diagonal covariance.  The fit is a
polynomial of degree ``--order`` in ``x`` (correlated chi^2; jackknife-propagated errors for the flowed data).

Costs
-----
The pipeline's one definition (:mod:`corrflow.pipeline.ledger`: steady state, compilation excluded).  Flowed path: base
ensemble + training (with its chain) + flow application + Wilson flow on the base and flowed ensembles;
independent path: base ensemble + independent ensembles + Wilson flow on them.  The Wilson-flow measurement is
the same amount of work in both paths, so the cost-adjusted gain is bounded by the measurement cost on coarse,
small lattices.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from corrflow.pipeline import (
    COST_DEFINITION,
    EnsembleSettings,
    ErrorSettings,
    FlowSettings,
    MarkovSettings,
    StoreSettings,
    TrainingSettings,
    setting,
)
from corrflow.pipeline.record import VARIANCE_REDUCTION_DEFINITION, variance_reduction_entry

from .common import ContinuumFitSettings, goodness_of_fit
from .estimators import (Quantity, bayes_warnings, bayesian_fits, continuum_fits, flowed_estimates,
                         independent_estimates, short_bins_note)

__all__ = ["NECCO_SOMMER_RANGE", "SU3_QUANTITIES", "SU3ContinuumSettings", "estimate", "flow_quantity",
           "necco_sommer_r0", "prepare"]

ANALYSIS_NAME = "continuum_limit_su3"
#: Validity range of the Necco–Sommer parametrisation of ``r0/a``.
NECCO_SOMMER_RANGE = (5.7, 6.92)
#: ``t0/r0^2`` used only to guess how far to flow (Lüscher 2010 finds ``t0/r0^2 ~ 0.11`` in the continuum).
_T0_OVER_R0SQ_GUESS = 0.11
#: The automatic flow length is this multiple of the guessed ``t0`` (``w0^2 ~ 1.1 - 1.3 t0`` in quenched QCD).
T_MAX_FACTOR = 1.6

SU3_QUANTITIES: dict[str, str] = {
    "sqrt_t0_over_w0": "sqrt(t0)/w0 (default)",
    "t0_over_r0sq": "t0/r0^2 with r0/a from Necco-Sommer",
}


def necco_sommer_r0(beta: float | np.ndarray) -> float | np.ndarray:
    """``r0/a`` of the Wilson gauge action from the Necco–Sommer interpolation (module docstring); exact to the
    stated 0.5-1 % inside :data:`NECCO_SOMMER_RANGE`, an extrapolation outside."""
    b = np.asarray(beta, dtype=np.float64) - 6.0
    r = np.exp(1.6804 + 1.7331 * b - 0.7849 * b**2 + 0.4428 * b**3)
    return float(r) if np.ndim(r) == 0 else r


def _t0_w0(t: np.ndarray, mean_e: np.ndarray, t0_ref: float, w0_ref: float) -> tuple[float, float]:
    """``(t0/a^2, w0/a)`` from a mean ``E(t)`` on the uniform grid ``t``."""
    from corrflow.observables.gradient_flow import flow_scale, w_function

    y = t**2 * mean_e
    t0 = flow_scale(t, y, t0_ref)
    tm, w = w_function(t, y)
    return t0, math.sqrt(flow_scale(tm, w, w0_ref))


def flow_quantity(name: str, t: np.ndarray, mean_e: np.ndarray, beta: float, *, t0_ref: float = 0.3,
                  w0_ref: float = 0.3) -> float:
    """Value of quantity ``name`` (``sqrt_t0_over_w0``, ``t0_over_r0sq``, ``t0`` or ``w0``) from the mean
    action density ``mean_e`` ``(k,)`` on the uniform flow-time grid ``t`` ``(k,)`` at coupling ``beta``."""
    t0, w0 = _t0_w0(np.asarray(t, float), np.asarray(mean_e, float), t0_ref, w0_ref)
    if name == "sqrt_t0_over_w0":
        return math.sqrt(t0) / w0
    if name == "t0_over_r0sq":
        return t0 / necco_sommer_r0(beta) ** 2
    if name == "t0":
        return t0
    if name == "w0":
        return w0
    raise ValueError(f"unknown quantity {name!r}; allowed: {', '.join(SU3_QUANTITIES)}")



@dataclass(frozen=True)
class SU3ContinuumSettings(ContinuumFitSettings):
    """Everything that defines a 4D SU(3) continuum run (``corrflow analyse continuum-limit-su3 --help``).

    ``betas`` includes the base ``beta_0 = min(betas)``; lattices ``T x L^3``; ``n_configs`` stored configurations
    per chain and ensemble, each the last of ``thin`` updates (heat bath: ``1 + n_overrelax`` sweeps; HMC: one
    trajectory of ``n_steps`` Omelyan steps of size ``step_size``).  Flow-time grid: step ``flow_eps``, a
    measurement every ``flow_every``, up to ``flow_t_max`` (0: at least 1.6 times the ``t0`` that the Necco–Sommer
    ``r0/a`` and ``t0/r0^2 ~ 0.11`` suggest at the largest beta, scaled by the reference values; an ensemble that
    already stores the flow with the same ``flow_every`` and ``flow_eps`` up to a later time keeps that grid, so a
    rerun with other reference values does not measure anew).
    """

    name: ClassVar[str] = ANALYSIS_NAME
    cli_hidden: ClassVar[frozenset[str]] = frozenset({"start", "hmc_det", "step_scaling", "method"})
    cli_overrides: ClassVar[dict[str, dict[str, str]]] = {
        "n_overrelax": {"flag": "--overrelax", "help": "over-relaxation sweeps per heat-bath sweep"},
        "algorithm": {"help": "heatbath (1 heat-bath + N over-relaxation sweeps) | hmc"},
        "step_size": {"help": "HMC step size (--algorithm hmc)"},
        "n_steps": {"help": "HMC steps per trajectory (--algorithm hmc)"},
        "seed": {"help": "seed of the base ensemble; the k-th other beta uses seed + k"},
        "n_train": {"help": "configurations of the separate training chain"},
    }

    io: StoreSettings = setting(StoreSettings(store="data/continuum_su3.zarr", out="reports/continuum_su3"), "")
    ensemble: EnsembleSettings = setting(EnsembleSettings(n_configs=50, n_chains=2, n_therm=200, thin=1), "")
    markov: MarkovSettings = setting(MarkovSettings(algorithm="heatbath", n_overrelax=4, step_size=0.1, n_steps=10), "")
    flow: FlowSettings = setting(FlowSettings(), "")
    training: TrainingSettings = setting(TrainingSettings(epochs=10, n_train=64, batch_size=16, learning_rate=0.002,
                                                          sample="separate"), "")
    errors: ErrorSettings = setting(ErrorSettings(), "")
    betas: tuple[float, ...] = setting((5.7, 5.75, 5.8), "comma-separated betas; the smallest is the base of the flows")
    T: int = setting(8, "time extent (even)", flag="--T")
    L: int = setting(8, "spatial extent (even; L^3)", flag="--L")
    quantity: str = setting("sqrt_t0_over_w0", "sqrt_t0_over_w0 | t0_over_r0sq", choices=tuple(SU3_QUANTITIES))
    definition: str = setting("clover", "E(t) definition: clover | plaquette", choices=("clover", "plaquette"))
    t0_ref: float = setting(0.3, "t^2 E(t0) = t0_ref (lower on small/coarse lattices)")
    w0_ref: float = setting(0.3, "W(w0^2) = w0_ref")
    flow_eps: float = setting(0.05, "Wilson-flow step (RK3)")
    flow_every: float = setting(0.1, "flow-time grid spacing of the E(t) measurement")
    flow_t_max: float = setting(0.0, "flow until t (0: at least 1.6 x the t0 Necco-Sommer suggests; a longer "
                                "grid already stored is kept)")
    order: int = setting(1, "polynomial degree in (a/r0)^2")
    bayes: bool = setting(False, "also run Bayesian (numpyro NUTS) fits")

    def check(self) -> None:
        super().check()
        if self.T < 2 or self.L < 2 or self.T % 2 or self.L % 2:
            raise ValueError(f"T and L must be even and >= 2 (checkerboard updates), got T={self.T}, L={self.L}")
        self.flow.check_lattice("su3", self.shape)  # e.g. rectangle layers on L = 6: refused before any HMC
        if not (self.t0_ref > 0 and self.w0_ref > 0):
            raise ValueError("t0_ref and w0_ref must be positive")
        self.wilson_flow_grid()  # validates the flow-time grid

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.T, self.L, self.L, self.L)


    def wilson_flow_grid(self) -> Any:
        """The flow-time grid (:class:`corrflow.pipeline.WilsonFlowGrid`) of the Wilson-flow measurement; with the
        automatic ``flow_t_max`` (0) its ``t_max`` is a minimum (``at_least``: a longer grid already stored with the
        same spacing and step is kept, :func:`corrflow.pipeline.measurements.choose_flow_grid`)."""
        from corrflow.pipeline import WilsonFlowGrid

        every, eps = float(self.flow_every), float(self.flow_eps)
        if not (eps > 0 and every > 0) or abs(every / eps - round(every / eps)) > 1e-9:
            raise ValueError(f"flow_every={every} must be a positive multiple of flow_eps={eps}")
        t_max = self.flow_t_max
        if not t_max:
            guess = _T0_OVER_R0SQ_GUESS * float(necco_sommer_r0(max(self.betas))) ** 2
            t_max = T_MAX_FACTOR * guess * max(self.t0_ref, self.w0_ref) / 0.3
            t_max = every * math.ceil(t_max / every)
        if not t_max > 2 * every:
            raise ValueError(f"flow_t_max={t_max} must exceed two measurement intervals ({2 * every})")
        return WilsonFlowGrid(t_max=float(t_max), eps=eps, every=every, at_least=not self.flow_t_max)


def header(s: SU3ContinuumSettings) -> str:
    return (f"[bold]continuum limit[/] of {s.quantity}: quenched SU(3) {'x'.join(map(str, s.shape))}, betas "
            f"{list(s.betas)} (base {s.base_beta:g}), {s.markov.algorithm}, store {s.io.store}")


def _ensemble_name(s: SU3ContinuumSettings, beta: float, seed: int) -> str:
    from corrflow.store import ensemble_name

    return f"{ensemble_name('su3', s.shape, {'beta': beta})}_{s.markov.algorithm}_s{seed}"


class SU3Inputs(dict):
    """The family and the Wilson-flow measurement costs (``fam``, ``wilson_flow``)."""


def prepare(pipe: Any, s: SU3ContinuumSettings) -> SU3Inputs:
    """Base ensemble + training chain, flows, flowed and independent ensembles (:func:`corrflow.pipeline.family`),
    then the Wilson flow on every configuration of every ensemble (one grid)."""
    from corrflow import make_theory
    from corrflow.pipeline import TRAIN_SEED_OFFSET, auto_block_size, family

    lo_ns, hi_ns = NECCO_SOMMER_RANGE
    outside = [b for b in s.betas if not lo_ns <= b <= hi_ns]
    if outside:
        warnings.warn(f"betas {outside} lie outside the range {NECCO_SOMMER_RANGE} of the Necco-Sommer r0/a "
                      "parametrisation: the abscissa (a/r0)^2 is extrapolated there", stacklevel=2)
    e = s.ensemble
    base_th = make_theory("su3", s.shape, beta=s.base_beta)
    block = e.block_size or auto_block_size(e.n_configs, e.n_therm, s.training.chain_length(e.n_chains))
    fam = family(pipe, base_th, [base_th.replace(beta=b) for b in s.betas[1:]], ensemble=e, markov=s.markov,
                 flow=s.flow, training=s.training, base_name=_ensemble_name(s, s.base_beta, e.seed),
                 independent_names=[_ensemble_name(s, b, e.seed + k) for k, b in enumerate(s.betas) if k],
                 training_name=_ensemble_name(s, s.base_beta, e.seed + TRAIN_SEED_OFFSET), flow_batch=min(block, 16))
    grid = s.wilson_flow_grid()
    pipe.progress.log(f"  Wilson flow on every configuration (grid every {s.flow_every:g} to t = {grid.t_max:g}"
                      f"{' or a longer one already stored' if grid.at_least else ''}, eps {s.flow_eps:g})")
    wf = {"base": pipe.measure(fam.base, ["wilson_flow"], grid=grid, batch=min(block, 16)),
          "flowed": sum(pipe.measure(m.flowed, ["wilson_flow"], grid=grid, batch=min(block, 16)) for m in fam.members),
          "independent": sum(pipe.measure(m.independent, ["wilson_flow"], grid=grid, batch=min(block, 16))
                             for m in fam.members)}
    return SU3Inputs(fam=fam, wilson_flow=wf)


def _window(t: np.ndarray, curves: Sequence[np.ndarray], s: "SU3ContinuumSettings") -> slice:
    """Grid points needed for the ``t0`` and ``w0`` crossings of every mean curve (with 4 points margin; ``w``
    needs one neighbour on each side)."""
    from corrflow.observables.gradient_flow import w_function

    lo, hi = t.size, 0
    for e in curves:
        y = t**2 * e
        tm, w = w_function(t, y)
        for grid, curve, ref in ((t, y, s.t0_ref), (tm, w, s.w0_ref)):
            above = np.nonzero(curve >= ref)[0]
            if above.size == 0:
                raise ValueError(
                    f"the mean flow curve does not reach the reference {ref} before t = {t[-1]:g} (max "
                    f"{np.max(curve):.3g}); measure with a larger --flow-t-max in a new store, or lower --t0-ref / "
                    "--w0-ref (small or coarse lattices)")
            i = int(np.searchsorted(t, grid[above[0]]))
            lo, hi = min(lo, i - 5), max(hi, i + 5)
    return slice(max(lo, 0), min(hi, t.size))


def _quantity(name: str, tt: np.ndarray, s: "SU3ContinuumSettings") -> Any:
    """A :class:`analysis.continuum_limit.Quantity` whose primaries are ``E`` on the grid points ``tt``."""
    labels = {"sqrt_t0_over_w0": r"$\sqrt{t_0}/w_0$", "t0_over_r0sq": r"$t_0/r_0^2$", "t0": r"$t_0/a^2$",
              "w0": r"$w_0/a$"}
    nan = lambda *a: math.nan  # noqa: E731 (no exact values for 4D SU(3))
    return Quantity(name=name, label=labels[name], description=SU3_QUANTITIES.get(name, name),
                    primaries=tuple(f"E{j}" for j in range(tt.size)),
                    value=lambda b, m, v: flow_quantity(name, tt, np.asarray(m), b, t0_ref=s.t0_ref,
                                                        w0_ref=s.w0_ref),
                    exact=nan, exact_infinite=nan, continuum=math.nan, continuum_label="")


def _primaries(e: np.ndarray, win: slice) -> dict[str, np.ndarray]:
    return {f"E{j}": e[..., i] for j, i in enumerate(range(win.start, win.stop))}




def _energy(ens: Any, s: SU3ContinuumSettings) -> tuple[np.ndarray, np.ndarray]:
    """``(t (k,), E (chains, n, k))`` of the stored Wilson-flow measurement of an ensemble."""
    var = "flow_E_clov" if s.definition == "clover" else "flow_E_plaq"
    ds = ens.store.open_ensemble(ens.name, verify=False)
    if var not in ds:
        raise ValueError(f"ensemble {ens.name!r} has no {var}; the Wilson-flow step did not run")
    e = np.asarray(ds[var].values[:, :s.ensemble.n_configs], dtype=np.float64)
    if e.shape[1] < s.ensemble.n_configs or not np.all(np.isfinite(e)):
        raise ValueError(f"{var} of {ens.name!r} is incomplete or not finite ({e.shape[1]} of "
                         f"{s.ensemble.n_configs} per chain)")
    return np.asarray(ds["flow_time"].values, float), e


def _common_flow_times(grids: Sequence[np.ndarray]) -> np.ndarray:
    """The flow times that every ensemble has: the shortest of their grids (with the automatic ``flow_t_max`` an
    ensemble keeps a longer grid it already stores, which extends the others: the same start and spacing)."""
    t = min(grids, key=len)
    if not all(np.allclose(g[:t.size], t, rtol=0, atol=1e-9) for g in grids):
        raise ValueError("the ensembles store the Wilson flow on different flow-time grids; measure anew in a new "
                         "store (--store)")
    return t


def _fmt(v: float, e: float, digits: int = 2) -> str:
    from corrflow.stats import format_value_error

    return format_value_error(float(v), float(e), digits)


def estimate(s: SU3ContinuumSettings, inputs: SU3Inputs) -> dict[str, Any]:
    """Reweighted E(t) curves, scales, joint-jackknife covariance, fits and the record."""
    import jax

    fam, wf = inputs["fam"], inputs["wilson_flow"]
    n = s.ensemble.n_configs
    base = _energy(fam.base, s)
    flowed = [base] + [_energy(m.flowed, s) for m in fam.members]
    indep = [base] + [_energy(m.independent, s) for m in fam.members]
    t = _common_flow_times([tk for tk, _ in flowed + indep])
    f_e, i_e = [e[..., :t.size] for _, e in flowed], [e[..., :t.size] for _, e in indep]
    f_lw = [None] + [m.flowed.log_weights() for m in fam.members]
    if not all(np.all(np.isfinite(lw)) for lw in f_lw[1:]):
        raise FloatingPointError("a flow produced non-finite log weights; retrain it (lower --lr) or use smaller "
                                 "beta shifts")

    def wmean(e: np.ndarray, lw: np.ndarray | None) -> np.ndarray:
        if lw is None:
            return e.mean(axis=(0, 1))
        w = np.exp(lw - lw.max())
        return np.tensordot(w, e, axes=([0, 1], [0, 1])) / w.sum()

    win = _window(t, [wmean(e, lw) for e, lw in zip(f_e, f_lw)] + [e.mean(axis=(0, 1)) for e in i_e], s)
    tt = t[win]
    f_obs = [_primaries(e, win) for e in f_e]
    i_obs = [_primaries(e, win) for e in i_e]
    volume = int(np.prod(s.shape))
    est: dict[str, Any] = {}
    for qn in (s.quantity, "t0", "w0"):
        q = _quantity(qn, tt, s)
        est[qn] = (flowed_estimates(q, s.betas, f_obs, f_lw, volume, bin_size=s.errors.bin_size or None,
                                    bin_tau_factor=s.errors.bin_tau_factor, S=s.errors.windowing),
                   independent_estimates(q, s.betas, i_obs, volume, S=s.errors.windowing))
    fl, ind = est[s.quantity]
    x = np.array([1.0 / necco_sommer_r0(b) ** 2 for b in s.betas])
    svd = s.svd_cut or None
    fit_f = continuum_fits(x, fl.values, fl.cov, None, order=s.order, replicas=fl.replicas, svd_cut=svd)
    fit_i = continuum_fits(x, ind.values, ind.cov, None, order=s.order, svd_cut=svd)
    if s.bayes:
        bf, bi = bayesian_fits(x, [(fl.values, fl.cov), (ind.values, ind.cov)], order=s.order,
                               key=jax.random.PRNGKey(s.bayes_seed), num_warmup=s.bayes_warmup,
                               num_samples=s.bayes_samples, prior_scale=s.prior_scale, svd_cut=svd)
        fit_f, fit_i = fit_f._replace(bayes=bf), fit_i._replace(bayes=bi)

    steps = fam.step_costs()
    cost = {"base": steps["hmc_base"], "training_chain": steps["hmc_training"], "train": steps["train"],
            "flow": steps["flow"], "independent": steps["hmc_independent"], "wilson_flow_base": wf["base"],
            "wilson_flow_flowed": wf["flowed"], "wilson_flow_independent": wf["independent"]}
    paths = fam.path_costs({"base": wf["base"], "flowed": wf["flowed"], "independent": wf["independent"]})
    path_f, path_i = paths["flowed"], paths["independent"]
    meas_f = wf["base"] + wf["flowed"]
    meas_i = wf["base"] + wf["independent"]
    vr = (fit_i.lsq.errors[0] / fit_f.lsq.errors[0]) ** 2
    vr_cost = vr * path_i / path_f if path_f > 0 else math.nan
    vr_beta = (ind.errors / fl.errors) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        pulls = (fl.values - ind.values) / np.sqrt(fl.errors**2 + ind.errors**2)
    pulls[0] = math.nan  # the same ensemble at beta_0
    ess = fl.weight_ess
    geom = "x".join(str(v) for v in s.shape)

    qlabel = {"sqrt_t0_over_w0": "sqrt(t0)/w0", "t0_over_r0sq": "t0/r0^2"}[s.quantity]
    order_txt = {0: "constant", 1: "linear", 2: "quadratic", 3: "cubic"}.get(s.order, f"degree-{s.order}")
    scale_f = math.sqrt(max(1.0, fit_f.lsq.chi2_per_dof)) if fit_f.lsq.dof > 0 else 1.0
    summary = [
        f"Continuum limit of **{qlabel}** in quenched SU(3) (Wilson action) on {geom} lattices at beta = "
        f"{', '.join(f'{b:g}' for b in s.betas)} ({s.ensemble.n_chains} chains x {n} configurations per ensemble, "
        f"{s.markov.algorithm}); {order_txt} extrapolation in (a/r0)^2 (Necco-Sommer r0/a) by correlated chi^2; "
        f"E(t) {s.definition}, t^2 E(t0) = {s.t0_ref:g}, W(w0^2) = {s.w0_ref:g}.",
        f"- **flowed** (one base ensemble at beta = {s.base_beta:g}, flows to the other betas, reweighting; joint "
        f"jackknife, {fl.n_bins} bins of {fl.bin_size}{short_bins_note(fl)}): continuum value "
        f"**{_fmt(fit_f.lsq.params[0], fit_f.lsq.errors[0])}**"
        f", {goodness_of_fit(fit_f.lsq.chi2, fit_f.lsq.dof)}"
        + (f" (error x sqrt(chi2/dof) = {_fmt(fit_f.lsq.params[0], scale_f * fit_f.lsq.errors[0])})"
           if scale_f > 1 else "") + ".",
        f"- **independent** ensembles: **{_fmt(fit_i.lsq.params[0], fit_i.lsq.errors[0])}**, "
        f"{goodness_of_fit(fit_i.lsq.chi2, fit_i.lsq.dof)}.  Flowed vs independent per beta: pulls "
        + ", ".join(f"{p:+.2f}" for p in pulls[1:]) + ".",
        f"- variance reduction of the continuum value **{vr:.2f}x** at equal numbers of configurations; "
        f"cost-adjusted **{vr_cost:.2f}x** (flowed path {path_f:.1f} s, independent path {path_i:.1f} s; Wilson flow "
        f"{meas_f:.1f} / {meas_i:.1f} s of them).",
        f"- reweighting: weight ESS fraction {', '.join(f'{v:.3f}' for v in ess[1:])}; PSIS Pareto k-hat "
        + ", ".join("n/a" if math.isnan(k) else f"{k:.2f}" for k in fl.pareto_k[1:])
        + (" -- k-hat > 0.7: heavy-tailed weights, those flowed estimates are unreliable (train longer, use smaller "
           "shifts)." if np.nanmax(np.append(fl.pareto_k[1:], 0.0)) > 0.7 else "."),
        f"- scales (flowed): t0/a^2 = {', '.join(_fmt(v, e) for v, e in zip(est['t0'][0].values, est['t0'][0].errors))}"
        f"; w0/a = {', '.join(_fmt(v, e) for v, e in zip(est['w0'][0].values, est['w0'][0].errors))}; "
        f"sqrt(8 t0)/L = {', '.join(f'{math.sqrt(8 * v) / min(s.shape):.2f}' for v in est['t0'][0].values)} "
        "(finite-volume effects grow beyond ~0.3).",
    ]
    summary += bayes_warnings([("flowed", fit_f), ("independent", fit_i)])
    rows = []
    for k, b in enumerate(s.betas):
        rows.append([f"{b:g}", f"{x[k]:.5f}", f"{necco_sommer_r0(b):.3f}", _fmt(fl.values[k], fl.errors[k]),
                     _fmt(ind.values[k], ind.errors[k]), "" if k == 0 else f"{pulls[k]:+.2f}",
                     "" if k == 0 else f"{vr_beta[k]:.2f}",  # base beta: one ensemble under two error methods
                     _fmt(est["t0"][0].values[k], est["t0"][0].errors[k]),
                     _fmt(est["w0"][0].values[k], est["w0"][0].errors[k]), f"{ess[k]:.3f}",
                     "" if math.isnan(fl.pareto_k[k]) else f"{fl.pareto_k[k]:.2f}", f"{fl.tau_int[k]:.2f}",
                     f"{ind.tau_int[k]:.2f}"])
    fit_rows = [[label] + [fr.lsq.format_param(j) for j in range(s.order + 1)]
                + [f"{fr.lsq.chi2:.2f}/{fr.lsq.dof}", f"{fr.lsq.p_value:.3f}"]
                for label, fr in (("flowed (jackknife errors)", fit_f), ("independent", fit_i))]
    if s.bayes:
        fit_rows += [[f"{label}, Bayesian (NUTS)"] + [fr.bayes.format_param(j) for j in range(s.order + 1)] + ["", ""]
                     for label, fr in (("flowed", fit_f), ("independent", fit_i))]
    tables = {
        "per-beta estimates": {
            "caption": f"Per-beta estimates of {qlabel} (flowed vs independent; pull = difference / combined error)",
            "columns": ["beta", "(a/r0)^2", "r0/a", "flowed", "independent", "pull", "var. red.", "t0/a^2 (flowed)",
                        "w0/a (flowed)", "weight ESS", "Pareto k", "tau_int (flowed)", "tau_int (indep.)"],
            "rows": rows},
        "continuum fits": {
            "caption": "Continuum fits (c0 = continuum value)",
            "columns": ["fit"] + [f"c{j}" for j in range(s.order + 1)] + ["chi2/dof", "p"], "rows": fit_rows},
        "correlation matrix": {
            "caption": "Correlation matrix of the flowed estimates",
            "columns": ["beta"] + [f"{b:g}" for b in s.betas],
            "rows": [[f"{b:g}"] + [f"{v:+.3f}" for v in fl.correlation[k]] for k, b in enumerate(s.betas)]},
        "costs": {
            "caption": "Costs in seconds (ledger definition: steady state, compilation excluded)",
            "columns": ["step", "seconds"], "rows": [[k, f"{v:.2f}"] for k, v in cost.items()]
            + [["flowed path", f"{path_f:.2f}"], ["independent path", f"{path_i:.2f}"]]},
    }

    def lst(a: np.ndarray) -> list[float]:
        return [float(v) for v in np.asarray(a)]

    results = {
        "quantity": s.quantity, "betas": list(s.betas), "x": lst(x), "x_definition": "(a/r0)^2, Necco-Sommer r0/a",
        "flowed": {"values": lst(fl.values), "errors": lst(fl.errors), "cov": fl.cov.tolist(),
                   "gamma_errors": lst(fl.gamma_errors), "tau_int": lst(fl.tau_int), "weight_ess": lst(ess),
                   "pareto_k": lst(fl.pareto_k), "bin_size": fl.bin_size, "n_bins": fl.n_bins,
                   "continuum": float(fit_f.lsq.params[0]), "continuum_error": float(fit_f.lsq.errors[0]),
                   "params": lst(fit_f.lsq.params), "param_cov": fit_f.lsq.cov.tolist(), "chi2": fit_f.lsq.chi2, "dof": fit_f.lsq.dof,
                   "p_value": fit_f.lsq.p_value},
        "independent": {"values": lst(ind.values), "errors": lst(ind.errors), "tau_int": lst(ind.tau_int),
                        "continuum": float(fit_i.lsq.params[0]), "continuum_error": float(fit_i.lsq.errors[0]),
                        "params": lst(fit_i.lsq.params), "param_cov": fit_i.lsq.cov.tolist(),
                        "chi2": fit_i.lsq.chi2, "dof": fit_i.lsq.dof,
                        "p_value": fit_i.lsq.p_value},
        "pulls_flowed_vs_independent": [None] + lst(pulls[1:]),
        "scales": {qn: {"flowed": lst(est[qn][0].values), "flowed_errors": lst(est[qn][0].errors),
                        "independent": lst(est[qn][1].values), "independent_errors": lst(est[qn][1].errors)}
                   for qn in ("t0", "w0")},
        "flow_time_window": [float(tt[0]), float(tt[-1])],
    }
    record: dict[str, Any] = {
        "title": f"Continuum limit of {qlabel} (quenched 4D SU(3), flow-correlated vs independent ensembles)",
        "summary": summary,
        "headline": [1, 2, 3],  # the continuum values and the variance reduction
        "tables": tables,
        "results": results,
        "variance_reduction": {
            "definition": VARIANCE_REDUCTION_DEFINITION,
            s.quantity: {"flowed": variance_reduction_entry(
                {"independent": (vr, vr_cost)},
                per_beta_vs_independent={f"{b:g}": float(v) for b, v in zip(s.betas, vr_beta)},
                what="variance of the continuum value (intercept of the fit)")}},
        "costs": {**{k: float(v) for k, v in cost.items()}, "flowed_path_seconds": path_f,
                  "independent_path_seconds": path_i, "definition": COST_DEFINITION},
        "ensembles": {"base": fam.base.name, "training": fam.training.name,
                      "flowed": [m.flowed.name for m in fam.members],
                      "independent": [m.independent.name for m in fam.members],
                      "flow_checkpoints": {f"{b:g}": m.flow.id for b, m in zip(s.betas[1:], fam.members)}},
    }
    return record
