r"""Continuum limit of a gradient-flow ratio in 4D SU(3) Yang–Mills from flow-correlated ensembles.

    python -m analysis.continuum_limit --theory su3            # defaults: about 15 minutes on 2 CPU cores
    python -m analysis.continuum_limit --theory su3 --help     # every option with its default
    python -m analysis.continuum_su3 ...                       # the same command

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
3. every base configuration through every flow (:func:`corrflow.correlate.correlate_to_store`): ``f_k(U_i)`` and
   ``log w_k(U_i)``, paired with ``U_i``;
4. independent ensembles at every ``beta_k != beta_0`` (seed ``seed + k``; the baseline);
5. the Wilson flow on every configuration of every ensemble (:func:`corrflow.pipeline.measure_stored` with
   ``wilson_flow``; one flow-time grid for all ensembles);
6. estimates, covariance, fits, figure and record (``store.write_analysis("continuum_limit_su3", ...)``;
   ``continuum_limit_su3.png / .md / .json`` in ``--out``).

Flows go upwards in beta (the target is narrower than the base), direct ``beta_0 -> beta_k`` as in the 2D
analysis (:mod:`analysis.continuum_limit` explains why).

Estimators and errors
---------------------
Flowed: ``<E_k(t)> = <w_k E(f_k(U); t)> / <w_k>`` on the *same* base configurations for every ``k``; the scales
are functions of these ratios, and their joint covariance across beta comes from the binned jackknife of
:func:`analysis.continuum_limit.flowed_estimates` (every leave-one-bin-out sample recomputes every ratio and every
crossing).  Only the grid points around the crossings enter (a window common to all ensembles).  Independent:
Gamma-method errors per ensemble (:func:`corrflow.stats.gamma_method`), diagonal covariance.  The fit is a
polynomial of degree ``--order`` in ``x`` (correlated chi^2; jackknife-propagated errors for the flowed data).

Costs
-----
Steady-state seconds of each step (compilation excluded; :mod:`analysis.workflow` ledger).  Flowed path: base
ensemble + training (with its chain) + flow application + Wilson flow on the base and flowed ensembles;
independent path: base ensemble + independent ensembles + Wilson flow on them.  The Wilson-flow measurement is
the same amount of work in both paths, so the cost-adjusted gain is bounded by the measurement cost on coarse,
small lattices.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

__all__ = [
    "SU3ContinuumSettings",
    "SU3_QUANTITIES",
    "necco_sommer_r0",
    "NECCO_SOMMER_RANGE",
    "flow_quantity",
    "run_su3",
    "app",
    "main",
]

ANALYSIS_NAME = "continuum_limit_su3"
TRAIN_SEED_OFFSET = 1000
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
ALGORITHMS = ("heatbath", "hmc")


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
class SU3ContinuumSettings:
    """Everything that defines a 4D SU(3) continuum run (see ``python -m analysis.continuum_limit --theory su3
    --help``).

    ``betas`` includes the base ``beta_0 = min(betas)``; lattices ``T x L^3``; ``n_configs`` stored configurations
    per chain and ensemble, each the last of ``thin`` updates (heat bath: ``1 + n_overrelax`` sweeps; HMC: one
    trajectory of ``n_steps`` Omelyan steps of size ``step_size``).  Flow-time grid: step ``flow_eps``, a
    measurement every ``flow_every``, up to ``flow_t_max`` (None: 1.6 times the ``t0`` that the Necco–Sommer ``r0/a``
    and ``t0/r0^2 ~ 0.11`` suggest at the largest beta, scaled by the reference values).
    """

    store: str = "data/continuum_su3.zarr"
    out: str = "reports/continuum_su3"
    flow_dir: str | None = None
    betas: tuple[float, ...] = (5.7, 5.75, 5.8)
    T: int = 8
    L: int = 8
    n_configs: int = 50
    n_chains: int = 2
    n_therm: int = 50
    thin: int = 1
    algorithm: str = "heatbath"
    n_overrelax: int = 4
    step_size: float = 0.1
    n_steps: int = 10
    seed: int = 0
    quantity: str = "sqrt_t0_over_w0"
    definition: str = "clover"
    t0_ref: float = 0.3
    w0_ref: float = 0.3
    flow_eps: float = 0.05
    flow_every: float = 0.1
    flow_t_max: float | None = None
    order: int = 1
    epochs: int = 10
    sweeps: int = 2
    loops: tuple[str, ...] = ("plaquette",)
    n_train: int = 64
    batch_size: int = 16
    learning_rate: float = 0.002
    optimizer: str = "auto"
    degree: int = 0
    train_seed: int = 0
    bin_size: int | None = None
    bin_tau_factor: float | None = None
    svd_cut: float | None = None
    bayes: bool = False
    bayes_warmup: int = 500
    bayes_samples: int = 1000
    bayes_seed: int = 0
    prior_scale: float = 10.0
    block_size: int | None = None

    def __post_init__(self) -> None:
        betas = tuple(sorted(float(b) for b in self.betas))
        if len(betas) < 2 or len(set(betas)) != len(betas):
            raise ValueError(f"need at least 2 distinct betas (the base and one target), got {self.betas}")
        if any(not (b > 0 and math.isfinite(b)) for b in betas):
            raise ValueError(f"betas must be positive and finite, got {self.betas}")
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "loops", tuple(self.loops))
        for name in ("T", "L", "n_configs", "n_chains", "thin", "n_steps", "epochs", "sweeps", "n_train",
                     "batch_size", "bayes_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.T < 2 or self.L < 2 or self.T % 2 or self.L % 2:
            raise ValueError(f"T and L must be even and >= 2 (checkerboard updates), got T={self.T}, L={self.L}")
        if self.n_configs < 20:
            raise ValueError(f"n_configs must be >= 20 per chain for a binned error analysis, got {self.n_configs}")
        if self.n_therm < 0 or self.n_overrelax < 0 or self.bayes_warmup < 0:
            raise ValueError("n_therm, n_overrelax and bayes_warmup must be >= 0")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        if self.quantity not in SU3_QUANTITIES:
            raise ValueError(f"unknown quantity {self.quantity!r}; allowed: {', '.join(SU3_QUANTITIES)}")
        if self.definition not in ("clover", "plaquette"):
            raise ValueError(f"definition must be 'clover' or 'plaquette', got {self.definition!r}")
        if not (self.t0_ref > 0 and self.w0_ref > 0 and self.step_size > 0 and self.learning_rate > 0):
            raise ValueError("t0_ref, w0_ref, step_size and learning_rate must be positive")
        from corrflow.flows.layers import check_degree
        from corrflow.flows.train import resolve_optimizer

        resolve_optimizer(self.optimizer, 4)
        check_degree(self.degree)
        self.flow_settings()  # validates the flow-time grid
        if self.order < 0 or self.order + 1 > len(betas):
            raise ValueError(f"order {self.order} needs at least {self.order + 1} betas, got {len(betas)}")
        if self.svd_cut is not None and not (0 < self.svd_cut < 1):
            raise ValueError(f"svd_cut must lie in (0, 1), got {self.svd_cut}")
        if self.block_size is not None and (isinstance(self.block_size, bool) or self.block_size < 1):
            raise ValueError(f"block_size must be a positive integer or None, got {self.block_size!r}")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.T, self.L, self.L, self.L)

    @property
    def base_beta(self) -> float:
        return self.betas[0]

    @property
    def n_train_per_chain(self) -> int:
        return -(-self.n_train // self.n_chains)

    @property
    def block(self) -> int:
        """Updates per jitted block: the gcd of ``n_configs``, ``n_train_per_chain`` and ``n_therm`` when >= 10 (one
        compiled program for every ensemble), else ``min(50, n_configs)``."""
        if self.block_size is not None:
            return int(self.block_size)
        g = math.gcd(self.n_configs, self.n_train_per_chain, self.n_therm)
        return g if g >= 10 else min(50, self.n_configs)

    def markov(self) -> Any:
        """The update: :class:`corrflow.heatbath.HeatbathConfig` or :class:`corrflow.HMCConfig`."""
        if self.algorithm == "heatbath":
            from corrflow.heatbath import HeatbathConfig

            return HeatbathConfig(n_heatbath=1, n_overrelax=int(self.n_overrelax))
        from corrflow import HMCConfig

        return HMCConfig(step_size=self.step_size, n_steps=self.n_steps, integrator="omelyan")

    def flow_settings(self) -> Any:
        """The flow-time grid (:class:`corrflow.pipeline.WilsonFlowGrid`) shared by every ensemble."""
        from corrflow.pipeline import WilsonFlowGrid

        every, eps = float(self.flow_every), float(self.flow_eps)
        if not (eps > 0 and every > 0) or abs(every / eps - round(every / eps)) > 1e-9:
            raise ValueError(f"flow_every={every} must be a positive multiple of flow_eps={eps}")
        t_max = self.flow_t_max
        if t_max is None:
            guess = _T0_OVER_R0SQ_GUESS * float(necco_sommer_r0(max(self.betas))) ** 2
            t_max = T_MAX_FACTOR * guess * max(self.t0_ref, self.w0_ref) / 0.3
            t_max = every * math.ceil(t_max / every)
        if not t_max > 2 * every:
            raise ValueError(f"flow_t_max={t_max} must exceed two measurement intervals ({2 * every})")
        return WilsonFlowGrid(t_max=float(t_max), eps=eps, every=every)

    def resolved_flow_dir(self) -> Path:
        if self.flow_dir:
            return Path(self.flow_dir)
        s = Path(self.store)
        return s.with_name(s.name.removesuffix(".zarr") + "_flows")

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["loops"] = list(self.loops)
        d["flow_dir"] = str(self.resolved_flow_dir())
        d["flow_t_max"] = self.flow_settings().t_max
        return d


# ----------------------------------------------------------------------------------------------
# store steps
# ----------------------------------------------------------------------------------------------


def _ensemble_name(s: SU3ContinuumSettings, beta: float, seed: int) -> str:
    from corrflow.store import ensemble_name

    return f"{ensemble_name('su3', s.shape, {'beta': beta})}_{s.algorithm}_s{seed}"


def _ensure_flow_measured(store: Any, name: str, s: SU3ContinuumSettings, ledger: Any, rep: Any) -> float:
    """Wilson flow on every committed configuration of ``name`` (resumable); return its steady-state cost."""
    from analysis.workflow import _Clock
    from corrflow.pipeline import FLOW_OBSERVABLE, measure_stored

    key = f"wilson_flow/{name}"
    spec = store.spec(name)
    n = int(store.commit(name)["committed"])
    clock = _Clock()

    def prog(d: int, t: int) -> None:
        clock.tick(d)
        rep.update(f"wilson flow {name}", d, t)

    summ = measure_stored(store, name, [FLOW_OBSERVABLE], flow=s.flow_settings(), batch=min(s.block, 16),
                          progress=prog)
    rep.finish(f"wilson flow {name}")
    n_new = max(summ.measured.values()) if summ.measured else 0
    if n_new == 0:  # measure_stored measures only what is missing (and checks the flow-time grid)
        rep.log(f"  [dim]wilson flow: {name} measured ({n} per chain) (reused)[/]")
        return ledger.cost(key, n)
    ledger.add(key, clock.cost(n_new * spec.n_chains), clock.wall, n, accumulate=n_new < n)
    rep.log(f"  wilson flow: {name} +{n_new} per chain to t = {s.flow_settings().t_max:g}, {clock.wall:.1f} s")
    return ledger.cost(key, n)


def _energy(store: Any, name: str, s: SU3ContinuumSettings) -> tuple[np.ndarray, np.ndarray]:
    """``(t (k,), E (chains, n, k))`` of the stored Wilson-flow measurement of ``name``."""
    ds = store.open_ensemble(name, verify=False)
    var = "flow_E_clov" if s.definition == "clover" else "flow_E_plaq"
    if var not in ds:
        raise ValueError(f"ensemble {name!r} has no {var}; the Wilson-flow step did not run")
    e = np.asarray(ds[var].values[:, :s.n_configs], dtype=np.float64)
    if e.shape[1] < s.n_configs or not np.all(np.isfinite(e)):
        raise ValueError(f"{var} of {name!r} is incomplete or not finite ({e.shape[1]} of {s.n_configs} per chain)")
    return np.asarray(ds["flow_time"].values, float), e


def _window(t: np.ndarray, curves: Sequence[np.ndarray], s: SU3ContinuumSettings) -> slice:
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


def _quantity(name: str, tt: np.ndarray, s: SU3ContinuumSettings) -> Any:
    """A :class:`analysis.continuum_limit.Quantity` whose primaries are ``E`` on the grid points ``tt``."""
    from analysis.continuum_limit import Quantity

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


# ----------------------------------------------------------------------------------------------
# the analysis
# ----------------------------------------------------------------------------------------------


def run_su3(settings: SU3ContinuumSettings | None = None, *, console: Any = None, write: bool = True,
            progress: Any = None) -> dict[str, Any]:
    """Run the 4D SU(3) continuum-limit analysis (module docstring) and return its record.

    ``console``: a rich console for log lines and progress bars (None: silent); ``progress``: alternatively a
    :class:`analysis.workflow.WorkflowProgress`.  ``write``: store the record and figure
    (``write_analysis("continuum_limit_su3", ...)``) and write PNG / Markdown / JSON to ``settings.out``.
    """
    from analysis.continuum_limit import (
        _fmt,
        _markdown,
        bayesian_fits,
        continuum_fits,
        flowed_estimates,
        independent_estimates,
    )
    from analysis.workflow import (
        RichWorkflowProgress,
        _as_progress,
        _check_pairing,
        _ensure_correlated,
        _ensure_flow,
        _ensure_hmc,
        _Ledger,
    )
    from corrflow import make_theory
    from corrflow.pipeline import correlate_to_store
    from corrflow.store import open_store

    s = settings or SU3ContinuumSettings()
    rep = _as_progress(progress if progress is not None else (RichWorkflowProgress(console) if console else None))
    t_start = time.perf_counter()
    lo_ns, hi_ns = NECCO_SOMMER_RANGE
    outside = [b for b in s.betas if not lo_ns <= b <= hi_ns]
    if outside:
        warnings.warn(f"betas {outside} lie outside the range {NECCO_SOMMER_RANGE} of the Necco-Sommer r0/a "
                      "parametrisation: the abscissa (a/r0)^2 is extrapolated there", stacklevel=2)
    store = open_store(s.store, "a")
    fdir = s.resolved_flow_dir()
    ledger = _Ledger(fdir / "timings.json")
    markov = s.markov()
    geom = "x".join(str(x) for x in s.shape)
    rep.log(f"[bold]continuum limit[/] of {s.quantity}: quenched SU(3) {geom}, betas "
            f"{list(s.betas)} (base {s.base_beta:g}), {s.algorithm}, store {s.store}")

    base_th = make_theory("su3", s.shape, beta=s.base_beta)
    base = _ensemble_name(s, s.base_beta, s.seed)
    train_ens = _ensemble_name(s, s.base_beta, s.seed + TRAIN_SEED_OFFSET)
    indep = {b: _ensemble_name(s, b, s.seed + k) for k, b in enumerate(s.betas) if k}
    common = dict(n_chains=s.n_chains, n_therm=s.n_therm, thin=s.thin, block_size=s.block, start="hot",
                  ledger=ledger, rep=rep)
    cost: dict[str, float] = {}
    rep.log("[bold]1/6[/] base ensemble and training chain")
    cost["base"] = _ensure_hmc(store, "base", base, base_th, markov, n=s.n_configs, seed=s.seed, **common)
    cost["training_chain"] = _ensure_hmc(store, "training chain", train_ens, base_th, markov, n=s.n_train_per_chain,
                                         seed=s.seed + TRAIN_SEED_OFFSET, **common)
    rep.log(f"[bold]2/6[/] flows {s.base_beta:g} -> beta_k ({s.sweeps} sweep(s) of {', '.join(s.loops)} layers)")
    cks, flowed = {}, {}
    cost["train"] = 0.0
    for b in s.betas[1:]:
        ckpt, ck, c = _ensure_flow(store, train_ens, base_th, base_th.replace(beta=b), n=s.n_train_per_chain,
                                   n_chains=s.n_chains, epochs=s.epochs, loops=s.loops, sweeps=s.sweeps,
                                   n_train=s.n_train, batch_size=s.batch_size, learning_rate=s.learning_rate,
                                   train_seed=s.train_seed, flow_dir=fdir, ledger=ledger, rep=rep,
                                   optimizer=s.optimizer, degree=s.degree)
        cks[b] = (ckpt, ck)
        cost["train"] += c
    rep.log("[bold]3/6[/] flowed ensembles (every base configuration through every flow)")
    cost["flow"] = 0.0
    for b in s.betas[1:]:
        ckpt, ck = cks[b]
        flowed[b] = name = f"{base}__flow_{ck['id'][:10]}"
        cost["flow"] += _ensure_correlated(
            store, "flow", base, name, ledger=ledger, rep=rep, n=s.n_configs, expect_flow_id=ck["id"],
            make=lambda pr, ckpt=ckpt, name=name: correlate_to_store(store, base, name, checkpoint=ckpt,
                                                                     batch=min(s.block, 16), seed=s.seed, progress=pr))
        _check_pairing(store, base, name, s.n_configs)
    rep.log("[bold]4/6[/] independent ensembles (baseline)")
    cost["independent"] = 0.0
    for k, b in enumerate(s.betas[1:], start=1):
        cost["independent"] += _ensure_hmc(store, "independent", indep[b], base_th.replace(beta=b), markov,
                                           n=s.n_configs, seed=s.seed + k, **common)
    rep.log(f"[bold]5/6[/] Wilson flow on every configuration (grid every {s.flow_every:g} to "
            f"t = {s.flow_settings().t_max:g}, eps {s.flow_eps:g})")
    cost["wilson_flow_base"] = _ensure_flow_measured(store, base, s, ledger, rep)
    cost["wilson_flow_flowed"] = sum(_ensure_flow_measured(store, flowed[b], s, ledger, rep) for b in s.betas[1:])
    cost["wilson_flow_independent"] = sum(_ensure_flow_measured(store, indep[b], s, ledger, rep)
                                          for b in s.betas[1:])

    rep.log("[bold]6/6[/] estimates, covariance, fits")
    t_an = time.perf_counter()
    n = s.n_configs
    t, e_base = _energy(store, base, s)
    f_e, f_lw, i_e = [e_base], [None], [e_base]
    for b in s.betas[1:]:
        _, e = _energy(store, flowed[b], s)
        f_e.append(e)
        f_lw.append(np.asarray(store.open_ensemble(flowed[b], verify=False)["log_weight"].values[:, :n], float))
        i_e.append(_energy(store, indep[b], s)[1])
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
        est[qn] = (flowed_estimates(q, s.betas, f_obs, f_lw, volume, bin_size=s.bin_size,
                                    bin_tau_factor=s.bin_tau_factor),
                   independent_estimates(q, s.betas, i_obs, volume))
    fl, ind = est[s.quantity]
    x = np.array([1.0 / necco_sommer_r0(b) ** 2 for b in s.betas])
    fit_f = continuum_fits(x, fl.values, fl.cov, None, order=s.order, replicas=fl.replicas, svd_cut=s.svd_cut)
    fit_i = continuum_fits(x, ind.values, ind.cov, None, order=s.order, svd_cut=s.svd_cut)
    if s.bayes:
        bf, bi = bayesian_fits(x, [(fl.values, fl.cov), (ind.values, ind.cov)], order=s.order,
                               key=jax.random.PRNGKey(s.bayes_seed), num_warmup=s.bayes_warmup,
                               num_samples=s.bayes_samples, prior_scale=s.prior_scale, svd_cut=s.svd_cut)
        fit_f, fit_i = fit_f._replace(bayes=bf), fit_i._replace(bayes=bi)
    t_fit = time.perf_counter() - t_an

    # costs (steady state) and variance reduction of the continuum value
    meas_f = cost["wilson_flow_base"] + cost["wilson_flow_flowed"]
    meas_i = cost["wilson_flow_base"] + cost["wilson_flow_independent"]
    path_f = cost["base"] + cost["training_chain"] + cost["train"] + cost["flow"] + meas_f
    path_i = cost["base"] + cost["independent"] + meas_i
    vr = (fit_i.lsq.errors[0] / fit_f.lsq.errors[0]) ** 2
    vr_cost = vr * path_i / path_f if path_f > 0 else math.nan
    vr_beta = (ind.errors / fl.errors) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        pulls = (fl.values - ind.values) / np.sqrt(fl.errors**2 + ind.errors**2)
    pulls[0] = math.nan  # the same ensemble at beta_0
    ess = fl.weight_ess

    qlabel = {"sqrt_t0_over_w0": "sqrt(t0)/w0", "t0_over_r0sq": "t0/r0^2"}[s.quantity]
    order_txt = {0: "constant", 1: "linear", 2: "quadratic", 3: "cubic"}.get(s.order, f"degree-{s.order}")
    scale_f = math.sqrt(max(1.0, fit_f.lsq.chi2_per_dof)) if fit_f.lsq.dof > 0 else 1.0
    summary = [
        f"Continuum limit of **{qlabel}** in quenched SU(3) (Wilson action) on {geom} lattices at beta = "
        f"{', '.join(f'{b:g}' for b in s.betas)} ({s.n_chains} chains x {n} configurations per ensemble, "
        f"{s.algorithm}); {order_txt} extrapolation in (a/r0)^2 (Necco-Sommer r0/a) by correlated chi^2; "
        f"E(t) {s.definition}, t^2 E(t0) = {s.t0_ref:g}, W(w0^2) = {s.w0_ref:g}.",
        f"- **flowed** (one base ensemble at beta = {s.base_beta:g}, flows to the other betas, reweighting; joint "
        f"jackknife, {fl.n_bins} bins of {fl.bin_size}): continuum value "
        f"**{_fmt(fit_f.lsq.params[0], fit_f.lsq.errors[0])}**"
        f", chi2/dof = {fit_f.lsq.chi2:.2f}/{fit_f.lsq.dof}"
        + (f" (error x sqrt(chi2/dof) = {_fmt(fit_f.lsq.params[0], scale_f * fit_f.lsq.errors[0])})"
           if scale_f > 1 else "") + ".",
        f"- **independent** ensembles: **{_fmt(fit_i.lsq.params[0], fit_i.lsq.errors[0])}**, chi2/dof = "
        f"{fit_i.lsq.chi2:.2f}/{fit_i.lsq.dof}.  Flowed vs independent per beta: pulls "
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
    rows = []
    for k, b in enumerate(s.betas):
        rows.append([f"{b:g}", f"{x[k]:.5f}", f"{necco_sommer_r0(b):.3f}", _fmt(fl.values[k], fl.errors[k]),
                     _fmt(ind.values[k], ind.errors[k]), "" if k == 0 else f"{pulls[k]:+.2f}", f"{vr_beta[k]:.2f}",
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
        f"Per-beta estimates of {qlabel} (flowed vs independent; pull = difference / combined error)": {
            "columns": ["beta", "(a/r0)^2", "r0/a", "flowed", "independent", "pull", "var. red.", "t0/a^2 (flowed)",
                        "w0/a (flowed)", "weight ESS", "Pareto k", "tau_int (flowed)", "tau_int (indep.)"],
            "rows": rows},
        "Continuum fits (c0 = continuum value)": {
            "columns": ["fit"] + [f"c{j}" for j in range(s.order + 1)] + ["chi2/dof", "p"], "rows": fit_rows},
        "Correlation matrix of the flowed estimates": {
            "columns": ["beta"] + [f"{b:g}" for b in s.betas],
            "rows": [[f"{b:g}"] + [f"{v:+.3f}" for v in fl.correlation[k]] for k, b in enumerate(s.betas)]},
        "Costs in seconds (steady state, compilation excluded)": {
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
                   "params": lst(fit_f.lsq.params), "chi2": fit_f.lsq.chi2, "dof": fit_f.lsq.dof,
                   "p_value": fit_f.lsq.p_value},
        "independent": {"values": lst(ind.values), "errors": lst(ind.errors), "tau_int": lst(ind.tau_int),
                        "continuum": float(fit_i.lsq.params[0]), "continuum_error": float(fit_i.lsq.errors[0]),
                        "params": lst(fit_i.lsq.params), "chi2": fit_i.lsq.chi2, "dof": fit_i.lsq.dof,
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
        "tables": tables,
        "settings": s.as_dict(),
        "results": results,
        "variance_reduction": {s.quantity: {"vs_independent": float(vr), "cost_adjusted_vs_independent": float(vr_cost),
                                            "per_beta_vs_independent": {f"{b:g}": float(v)
                                                                        for b, v in zip(s.betas, vr_beta)},
                                            "what": "variance of the continuum value (intercept of the fit)"}},
        "costs": {**{k: float(v) for k, v in cost.items()}, "flowed_path_seconds": path_f,
                  "independent_path_seconds": path_i, "analysis_seconds": t_fit},
        "ensembles": {"base": base, "training": train_ens, "flowed": [flowed[b] for b in s.betas[1:]],
                      "independent": [indep[b] for b in s.betas[1:]],
                      "flow_checkpoints": {f"{b:g}": cks[b][1]["id"] for b in s.betas[1:]}},
    }
    png = _figure(s, x, fl, ind, fit_f, fit_i, qlabel)
    if write:
        store.write_analysis(ANALYSIS_NAME, record, figures={f"{ANALYSIS_NAME}.png": png})
        out = Path(s.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{ANALYSIS_NAME}.png").write_bytes(png)
        (out / f"{ANALYSIS_NAME}.md").write_text(_markdown(record, f"{ANALYSIS_NAME}.png"))
        (out / f"{ANALYSIS_NAME}.json").write_text(json.dumps(record, indent=1, allow_nan=True))
    record["costs"]["wall_seconds_this_run"] = time.perf_counter() - t_start
    for line in summary:
        rep.log(line.replace("**", ""))
    return record


def _figure(s: SU3ContinuumSettings, x: np.ndarray, fl: Any, ind: Any, fit_f: Any, fit_i: Any, qlabel: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.continuum_limit import _fmt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    xmax = float(x.max()) * 1.1
    xs = np.linspace(0.0, xmax, 200)
    dx = 0.006 * xmax
    for label, est, fit, col, mk, off in (("flowed (one base, correlated)", fl, fit_f, "C0", "o", -dx),
                                          ("independent ensembles", ind, fit_i, "C3", "s", dx)):
        v, e = fit.lsq.evaluate(xs)
        ax.fill_between(xs, v - e, v + e, color=col, alpha=0.18, lw=0)
        ax.plot(xs, v, color=col, lw=1.0, ls="--")
        ax.errorbar(x + off, est.values, yerr=est.errors, fmt=mk, color=col, ms=4.5, capsize=2.5, label=label,
                    mfc="white" if mk == "s" else col)
        c0, e0 = fit.lsq.params[0], fit.lsq.errors[0]
        ax.errorbar([2 * off], [c0], yerr=[e0], fmt=mk, color=col, ms=6.5, capsize=3.5, lw=1.6,
                    label=f"  continuum: {_fmt(c0, e0)} ($\\chi^2$/dof {fit.lsq.chi2:.1f}/{fit.lsq.dof})")
    ax.set_xlim(-0.04 * xmax, xmax)
    ax.set_xlabel(r"$(a/r_0)^2$ (Necco–Sommer)")
    ax.set_ylabel(qlabel)
    ax.set_title(f"quenched SU(3), {'x'.join(map(str, s.shape))}, E(t) {s.definition}", fontsize=10)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7.5, loc="best")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=140, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------


def _make_app() -> Any:
    import typer

    app = typer.Typer(add_completion=False, rich_markup_mode="markdown",
                      help="Continuum limit of a gradient-flow ratio in quenched 4D SU(3) from flow-correlated "
                           "ensembles vs independent ensembles.")
    d = SU3ContinuumSettings()

    @app.command(epilog="""
**Examples**

    python -m analysis.continuum_limit --theory su3                       # defaults (6^4, beta 5.8 .. 6.0)

    python -m analysis.continuum_limit --theory su3 --T 16 --L 16 --betas 5.96,6.07,6.21 --n-configs 200
""")
    def main(
        store: str = typer.Option(d.store, help="zarr store (created if absent; every step is resumable)"),
        out: str = typer.Option(d.out, help="output directory for continuum_limit_su3.png / .md / .json"),
        flow_dir: str = typer.Option("", help="flow checkpoints and timing ledger (empty: STORE_flows next to the "
                                               "store)"),
        betas: str = typer.Option(",".join(f"{b:g}" for b in d.betas),
                                  help="comma-separated betas; the smallest is the base of the flows"),
        T: int = typer.Option(d.T, "--T", help="time extent (even)"),
        L: int = typer.Option(d.L, "--L", help="spatial extent (even; L^3)"),
        n_configs: int = typer.Option(d.n_configs, help="stored configurations per chain and ensemble"),
        chains: int = typer.Option(d.n_chains, help="Markov chains per ensemble"),
        thin: int = typer.Option(d.thin, help="updates per stored configuration"),
        therm: int = typer.Option(d.n_therm, help="thermalisation updates"),
        algorithm: str = typer.Option(d.algorithm, help="heatbath (1 heat-bath + N over-relaxation sweeps) | hmc"),
        overrelax: int = typer.Option(d.n_overrelax, help="over-relaxation sweeps per heat-bath sweep"),
        step_size: float = typer.Option(d.step_size, help="HMC step size (Omelyan; --algorithm hmc)"),
        n_steps: int = typer.Option(d.n_steps, help="HMC steps per trajectory (--algorithm hmc)"),
        seed: int = typer.Option(d.seed, help="seed of the base ensemble; the k-th other beta uses seed + k"),
        quantity: str = typer.Option(d.quantity, help="sqrt_t0_over_w0 | t0_over_r0sq"),
        definition: str = typer.Option(d.definition, help="E(t) definition: clover | plaquette"),
        t0_ref: float = typer.Option(d.t0_ref, help="t^2 E(t0) = t0_ref (lower on small/coarse lattices)"),
        w0_ref: float = typer.Option(d.w0_ref, help="W(w0^2) = w0_ref"),
        flow_eps: float = typer.Option(d.flow_eps, help="Wilson-flow step (RK3)"),
        flow_every: float = typer.Option(d.flow_every, help="flow-time grid spacing of the E(t) measurement"),
        flow_t_max: float = typer.Option(0.0, help="flow until t (0: 1.6 x the t0 Necco-Sommer suggests)"),
        order: int = typer.Option(d.order, help="polynomial degree in (a/r0)^2"),
        epochs: int = typer.Option(d.epochs, help="flow training epochs (L-BFGS: maximum iterations)"),
        sweeps: int = typer.Option(d.sweeps, help="flow sweeps over all links"),
        loops: str = typer.Option(",".join(d.loops), help="flow staple shapes: plaquette[,rectangle]"),
        n_train: int = typer.Option(d.n_train, help="configurations of the separate training chain"),
        batch_size: int = typer.Option(d.batch_size, help="training batch size"),
        lr: float = typer.Option(d.learning_rate, help="initial learning rate (cosine decay; Adam only)"),
        optimizer: str = typer.Option(d.optimizer, help="flow optimiser: auto (L-BFGS in 4D) | lbfgs | adam"),
        degree: int = typer.Option(d.degree, help="flow coefficients: 0 constant, p polynomial in the staple norm"),
        bin_size: int = typer.Option(0, help="jackknife bin size (0: 20 x max tau_int)"),
        svd_cut: float = typer.Option(0.0, help="SVD cut of the correlation matrix in the fits (0: none)"),
        bayes: bool = typer.Option(d.bayes, help="also run Bayesian (numpyro NUTS) fits"),
    ) -> None:
        """Continuum limit of sqrt(t0)/w0 (or t0/r0^2) in quenched 4D SU(3): one base ensemble, residual flows to
        the other betas, reweighting, joint-jackknife covariance and correlated fits, against independent
        ensembles."""
        import sys

        from rich.console import Console

        console = Console() if sys.stdout.isatty() else Console(width=160)

        def body() -> None:
            settings = SU3ContinuumSettings(
                store=store, out=out, flow_dir=flow_dir or None,
                betas=tuple(float(b) for b in betas.split(",") if b.strip()), T=T, L=L, n_configs=n_configs,
                n_chains=chains, thin=thin, n_therm=therm, algorithm=algorithm, n_overrelax=overrelax,
                step_size=step_size, n_steps=n_steps, seed=seed, quantity=quantity, definition=definition,
                t0_ref=t0_ref, w0_ref=w0_ref, flow_eps=flow_eps, flow_every=flow_every,
                flow_t_max=flow_t_max or None, order=order, epochs=epochs, sweeps=sweeps,
                loops=tuple(v.strip() for v in loops.split(",") if v.strip()), n_train=n_train,
                batch_size=batch_size, learning_rate=lr, optimizer=optimizer, degree=degree,
                bin_size=bin_size or None, svd_cut=svd_cut or None, bayes=bayes)
            run_su3(settings, console=console)

        from analysis.workflow import run_cli

        run_cli(body, console, (ValueError, FloatingPointError))

    return app


app = _make_app()


def main(args: Sequence[str] | None = None, prog_name: str | None = None) -> None:
    """Entry point of ``python -m analysis.continuum_su3`` (and of ``continuum_limit --theory su3``)."""
    app(args=None if args is None else list(args), prog_name=prog_name)


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
        main()
