r"""Continuum limit of 2D U(1) gauge theory from flow-correlated ensembles, against independent ensembles.

    python -m analysis.continuum_limit                      # defaults: a few minutes on 2 CPU cores
    python -m analysis.continuum_limit --help               # every option with its default
    python -m analysis.continuum_limit --theory su3         # quenched 4D SU(3): sqrt(t0)/w0 (analysis.continuum_su3)

Physics
-------
2D U(1) Wilson gauge theory (``S = -beta sum_p cos P_p``) has one scale, the coupling ``g``, with
``a^2 g^2 = 1/beta``; its continuum limit is known exactly, so the whole chain can be checked.  Dimensionless
quantities ``q(beta)``, extrapolated in ``x = a^2 g^2 = 1/beta`` (``--quantity``):

``plaquette`` (default)
    ``q = beta (1 - <P>)`` (``P`` = mean plaquette ``cos P_p``): the action density in units of ``g^2/a^2``;
    ``q -> 1/2`` (each plaquette angle is Gaussian with variance ``g^2 a^2``).  Lattice artefacts
    ``q = 1/2 (1 + x/4 + x^2/4 + O(x^3))``.
``string_tension``
    ``q = beta chi(R, R)`` with the Creutz ratio ``chi(R,R) = -ln[W(R,R) W(R-1,R-1) / W(R,R-1)^2]``
    (``W(0, .) = 1``; ``--creutz-size R`` = 1 or 2): the string tension in units of ``g^2``, ``-> 1/2``.  In
    infinite volume ``sigma a^2 = -ln(I_1/I_0)`` for every ``R``; ``R = 1`` is ``-beta ln<P>`` (twice the
    slope in ``x`` of ``plaquette``), ``R = 2`` is noisier.
``topological_susceptibility``
    ``q = beta chi_top = beta <Q^2>/V`` (geometric charge) ``-> 1/(4 pi^2)``.  Needs ``--topology sampled`` and
    betas where HMC changes the topology (``beta <~ 4`` at ``L = 16``), where its artefacts are large and
    non-polynomial (a quadratic fit on ``beta = 2 .. 4`` is off by ~20 %): an illustration, not a precision result.

Why these defaults (``L = 12``, ``beta = 9, 9.75, 10.5, 11.25, 12``, quadratic fit, ``plaquette``)
-------------------------------------------------------------------------------------------------
* Polynomial extrapolation needs small ``x``: on ``beta = 3 .. 5`` the truncation bias of a quadratic fit to
  the exact ``plaquette`` values is -1.7 %, on ``9 .. 12`` it is +0.09 % (the run reports it for its window).
* At such betas HMC does not change the topological charge (measured on 16 x 16: ``tau_int(Q) ~ 10^3`` at
  ``beta = 8``; no tunnelling at all at ``beta >= 9``).  ``--topology fixed`` (default) therefore starts every
  chain cold, in the sector ``Q = 0``, conditions every estimate on ``Q = 0`` (weight 0 for a configuration
  with ``Q != 0``; the run counts them) and uses the exact ``Q = 0`` torus values as the reference:
  ``<P>_Q = <P> + (1/V) d ln P(Q) / d beta`` from the exact charge distribution (:func:`exact_plaquette_sector`).
  Fixing ``Q = 0`` lowers ``beta (1 - <P>)`` by about ``1/(2V)`` (-0.0036 at ``L = 12``, several sigma), a
  fixed-topology finite-volume effect that does not vanish as ``beta`` grows at fixed ``L``.
* ``--fv-correct`` (default) subtracts the exact shift (reference torus value - infinite volume) from every
  estimate, so that the data estimate the infinite-volume ``q(beta)`` and the fit targets the continuum
  value; the shift carries no error.  (Without the ``Q = 0`` restriction, the torus values at ``L = 12``,
  ``beta <= 12`` differ from infinite volume by < 2e-4 relative; ``L^2/beta >= 12``.)
* HMC trajectory length ``n_steps * step_scale / sqrt(beta) = 1/sqrt(beta)`` (two Omelyan steps): at large
  ``beta`` the theory is nearly free and a fixed trajectory length ``tau`` leaves the modes with
  ``omega tau ~ pi m`` almost unchanged; with twice that length (4 steps) the binned ``tau_int`` of the
  plaquette grew without plateau to ~10 (16 x 16, ``beta = 9.5``; errors underestimated twofold by a windowed
  Gamma method), with the default it plateaus at ~1 (in stored configurations, thin 2).
* Flows go *upwards* from the smallest beta: the target is narrower than the base, and measured weight ESS
  fractions were 0.65 / 0.27 / 0.10 for ``8 -> 9 / 10 / 11`` on 16 x 16 but 0.08 for ``10 -> 8``.  The ESS
  falls roughly like ``exp(-c V (Delta ln beta)^2)``, so ``L = 12`` reaches further in beta than ``L = 16``.
  Flows are *direct* (``beta_0 -> beta_k``), not chained (``beta_0 -> beta_1 -> beta_2 ...``): a chain of such
  flows (parameters concatenated along the sweep axis) gave the same ESS as one direct flow of the same total
  shift (0.015 for ``5 -> 6 -> 7 -> 8`` and for ``5 -> 8``) at a cost growing with the chain length, and deeper
  flows (4 instead of 2 sweeps) did not help either.
* The flows are trained on a *separate* short chain at ``beta_0`` (``n_train`` configurations, seed
  ``seed + 1000``), not on the configurations used for the estimates, so that each flow is fixed with respect
  to the estimation sample, as the exactness of reweighting assumes (costs a few seconds of HMC).
* Reverse-KL training is mode seeking: the pushed-forward ensemble tends to be narrower than the target and
  the weights heavy-tailed, which biases self-normalised reweighting at small ``N * ESS`` and makes its errors
  too small.  Each beta therefore reports the PSIS Pareto ``k-hat`` of its weights (ArviZ): < 0.5 reliable,
  > 0.7 flagged in the summary.  In calibration runs (8 x 8, ``beta = 5 .. 5.9``, 2 x 500 configurations,
  20 - 30 independent base ensembles, ESS 0.6 - 0.9, ``k-hat < 0.5``) the pulls of the continuum value had
  mean +0.2 and standard deviation 1.1 - 1.2 and the per-beta pulls standard deviation 0.95, but the
  correlated chi^2 of the flowed fit averaged about twice its ``dof`` (the differences between betas, which
  the strong correlations make very precise, are the least well estimated part of the covariance); the
  summary therefore also quotes the error scaled by ``sqrt(chi^2/dof)`` when that exceeds one.

Workflow (each step goes through the store and is skipped or resumed when already done)
----------------------------------------------------------------------------------------
1. base HMC ensemble at ``beta_0 = min(betas)`` (:func:`corrflow.generate.generate_to_store`);
2. a short training chain at ``beta_0`` and one flow ``beta_0 -> beta_k`` per other beta
   (:func:`corrflow.flows.train.train`; checkpoints in ``--flow-dir``);
3. every base configuration pushed through every flow (:func:`corrflow.correlate.correlate_to_store`):
   ``f_k(U_i)``, ``log w_k(U_i)`` and the observables on ``f_k(U_i)``, paired with ``U_i``;
4. independent HMC ensembles at every ``beta_k != beta_0`` (the baseline; the base ensemble is the ``beta_0``
   point of both data sets);
5. estimates and covariances, fits, figure, record (``store.write_analysis("continuum_limit", ...)``) and
   ``continuum_limit.png / .md / .json`` in ``--out``.

Estimators and errors
---------------------
Flowed: ``q_k = q(beta_k; <w_k O(f_k(U))> / <w_k>)`` on the *same* base configurations for all ``k``
(``w_0 = 1``, ``f_0`` = identity).  The full covariance across beta comes from a *joint* binned jackknife over
the base configurations (:func:`flowed_estimates`): all primaries (``w_k O_k`` and ``w_k`` for every ``k``) are
binned together along each base chain (chains pooled as replicas), every leave-one-bin-out sample recomputes
every reweighting ratio, ``C = (B-1)/B sum_b (q_b - qbar)(q_b - qbar)^T``.  Bin size ``ceil(20 tau_max)`` with
``tau_max`` the largest Gamma-method ``tau_int`` of the ``q_k`` (``--bin-tau-factor``, ``--bin-size``; at least
``max(8 K, 40)`` bins are kept).  Independent: Gamma-method errors per ensemble, diagonal covariance.

Fits (:mod:`corrflow.stats.fits`): polynomial of degree ``--order`` in ``x`` by correlated chi^2 with the full
covariance; for the flowed data the parameter errors come from refitting every jackknife sample with the fixed
central covariance (:func:`~corrflow.stats.resampled_fit`).  Bayesian fits (numpyro NUTS, the same Gaussian
likelihood, normal priors of width ``10 max|q| / max|x^j|`` per coefficient), summarised with ArviZ.  The same
fit applied to the exact values (same covariance) gives the truncation bias of the fit model; the record
gives pulls against the exact continuum value and against that exact-data fit.

Cost
----
Wall-clock seconds measured when each step ran, JIT compilation included (a ledger ``timings.json`` in the
flow directory keeps them for re-runs that reuse the store).  Flowed path: base HMC + training (with the
training chain) + flow application (``correlate``, which also writes ``f(U)`` to the store); independent path:
HMC at every beta.  ``cost_adjusted_vs_independent = (var_indep cost_indep) / (var_flow cost_flow)`` for the
continuum value (the ratio of the times to reach equal error).  HMC is cheap in this 2D model (thousands of
12 x 12 trajectories per second), so training dominates the flowed cost.

Python API
----------
``run(ContinuumSettings(...)) -> record`` runs everything (see ``examples/continuum_limit.py``); the building
blocks :func:`flowed_estimates`, :func:`independent_estimates` and :func:`continuum_fits` work on plain arrays.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

__all__ = [
    "QUANTITIES",
    "Quantity",
    "ContinuumSettings",
    "CorrelatedEstimates",
    "IndependentEstimates",
    "ContinuumFits",
    "flowed_estimates",
    "independent_estimates",
    "continuum_fits",
    "bayesian_fits",
    "exact_plaquette_sector",
    "make_quantity",
    "pareto_k",
    "run",
    "app",
    "main",
]

ANALYSIS_NAME = "continuum_limit"
#: The training ensemble (a separate short chain at beta_0) uses seed ``seed + TRAIN_SEED_OFFSET``.
TRAIN_SEED_OFFSET = 1000
#: Observables measured on every ensemble of this analysis (fixed, so that every quantity can be
#: evaluated from one store and re-runs with another ``--quantity`` reuse it).
MEASURED = ("plaquette", "topological_charge", "wilson_1x2", "wilson_2x2")


# ----------------------------------------------------------------------------------------------
# quantities
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quantity:
    """A dimensionless quantity ``q(beta)`` with an exact continuum value.

    ``primaries``: store observables whose means enter (in this order); ``squared``: names whose
    per-configuration square is the primary (``Q -> Q^2``); ``value(beta, means, volume)`` maps the primary
    means to ``q``; ``exact(beta, shape)``: exact finite-torus value (all topological sectors);
    ``exact_sector0(beta, shape)``: the same restricted to the sector ``Q = 0`` (None where not available);
    ``exact_infinite(beta)``: infinite volume; ``continuum``: the ``beta -> infinity`` limit.
    """

    name: str
    label: str  # matplotlib label of q
    description: str
    primaries: tuple[str, ...]
    value: Callable[[float, np.ndarray, int], float]
    exact: Callable[[float, tuple[int, int]], float]
    exact_infinite: Callable[[float], float]
    continuum: float
    continuum_label: str
    squared: tuple[str, ...] = ()
    exact_sector0: Callable[[float, tuple[int, int]], float] | None = None

    def primary_samples(self, obs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Per-configuration primaries ``(R, n)`` from measured observables ``{name: (R, n)}``."""
        out = []
        for name in self.primaries:
            if name not in obs:
                raise ValueError(f"observable {name!r} (needed for {self.name}) is not measured on this ensemble")
            a = np.asarray(obs[name], dtype=np.float64)
            out.append(a * a if name in self.squared else a)
        return out

    def reference(self, beta: float, shape: tuple[int, int], topology: str) -> float:
        """Exact torus value for ensembles that sample all sectors (``"sampled"``) or stay in ``Q = 0``
        (``"fixed"``)."""
        if topology == "sampled":
            return self.exact(beta, shape)
        if self.exact_sector0 is None:
            raise ValueError(f"no exact fixed-topology (Q = 0) value for {self.name}"
                             + (" with this Creutz ratio; use --creutz-size 1" if self.name == "string_tension" else "")
                             + ", or use --topology sampled (at betas where HMC changes the topology)")
        return self.exact_sector0(beta, shape)


def _u1_inf_plaquette(beta: float) -> float:
    from corrflow import exact

    return exact.u1_plaquette_infinite_volume(beta)


def exact_plaquette_sector(beta: float, shape: tuple[int, int], charge: int = 0) -> float:
    """Exact mean plaquette ``<cos P>_Q`` of 2D U(1) on the torus restricted to topological charge ``Q``.

    ``Z_Q = P(Q) Z`` with the exact charge distribution ``P(Q)`` (:func:`corrflow.exact.u1_charge_distribution`),
    so ``V <P>_Q = d ln Z_Q / d beta = V <P> + d ln P(Q) / d beta``; the derivative is a five-point central
    difference with step ``h = 5e-3`` (truncation ``~h^4``, round-off ``~1e-15 / h``: about 1e-11 absolute).
    """
    from corrflow import exact

    q = abs(int(charge))
    volume = shape[0] * shape[1]

    def log_p(b: float) -> float:
        return math.log(exact.u1_charge_distribution(b, shape, q)[0 if q == 0 else 2 * q])

    h = 5e-3 if beta > 0.02 else beta / 4
    d = (-log_p(beta + 2 * h) + 8 * log_p(beta + h) - 8 * log_p(beta - h) + log_p(beta - 2 * h)) / (12 * h)
    return exact.u1_plaquette(beta, shape) + d / volume


def _plaquette_quantity() -> Quantity:
    from corrflow import exact

    return Quantity(
        name="plaquette", label=r"$\beta\,(1-\langle P\rangle) = (1-\langle P\rangle)/(a^2 g^2)$",
        description="beta (1 - <P>) -> 1/2 (action density in units of g^2/a^2)",
        primaries=("plaquette",),
        value=lambda b, m, v: b * (1.0 - m[0]),
        exact=lambda b, s: b * (1.0 - exact.u1_plaquette(b, s)),
        exact_sector0=lambda b, s: b * (1.0 - exact_plaquette_sector(b, s, 0)),
        exact_infinite=lambda b: b * (1.0 - _u1_inf_plaquette(b)),
        continuum=0.5, continuum_label="1/2")


def _creutz_from_loops(w_rr: float, w_r1r1: float, w_rr1: float) -> float:
    return -math.log(w_rr * w_r1r1 / (w_rr1 * w_rr1))


def _string_tension_quantity(size: int) -> Quantity:
    from corrflow import exact

    if size == 1:
        return Quantity(
            name="string_tension", label=r"$\beta\,\chi(1,1) = \sigma/g^2$",
            description="beta * Creutz ratio chi(1,1) = -beta ln<P> -> 1/2 (string tension in units of g^2)",
            primaries=("plaquette",),
            value=lambda b, m, v: -b * math.log(m[0]),
            exact=lambda b, s: -b * math.log(exact.u1_wilson_loop(b, s, 1, 1)),
            exact_sector0=lambda b, s: -b * math.log(exact_plaquette_sector(b, s, 0)),
            exact_infinite=lambda b: -b * math.log(_u1_inf_plaquette(b)),
            continuum=0.5, continuum_label="1/2")
    if size == 2:
        return Quantity(
            name="string_tension", label=r"$\beta\,\chi(2,2) = \sigma/g^2$",
            description="beta * Creutz ratio chi(2,2) = -beta ln[W22 W11 / W21^2] -> 1/2 (string tension / g^2)",
            primaries=("wilson_2x2", "plaquette", "wilson_1x2"),
            value=lambda b, m, v: b * _creutz_from_loops(m[0], m[1], m[2]),
            exact=lambda b, s: b * _creutz_from_loops(exact.u1_wilson_loop(b, s, 2, 2), exact.u1_wilson_loop(b, s, 1, 1),
                                                      exact.u1_wilson_loop(b, s, 2, 1)),
            exact_infinite=lambda b: -b * math.log(_u1_inf_plaquette(b)),
            continuum=0.5, continuum_label="1/2")
    raise ValueError(f"creutz_size must be 1 or 2 (loops measured: {', '.join(MEASURED)}), got {size}")


def _topology_quantity() -> Quantity:
    from corrflow import exact

    return Quantity(
        name="topological_susceptibility", label=r"$\beta\,\chi_{\rm top} = \chi_{\rm top}/g^2$",
        description="beta <Q^2>/V -> 1/(4 pi^2) (geometric charge)",
        primaries=("topological_charge",), squared=("topological_charge",),
        value=lambda b, m, v: b * m[0] / v,
        exact=lambda b, s: b * exact.u1_topological_susceptibility(b, s),
        exact_infinite=lambda b: b * exact.u1_topological_susceptibility_infinite_volume(b),
        continuum=1.0 / (4.0 * math.pi**2), continuum_label=r"1/(4\pi^2)")


#: Quantity names accepted by ``--quantity`` with their description.
QUANTITIES: dict[str, str] = {
    "plaquette": "beta (1 - <P>) -> 1/2 (default)",
    "string_tension": "beta * Creutz ratio chi(R,R) -> sigma/g^2 = 1/2 (R = --creutz-size, 1 or 2)",
    "topological_susceptibility": "beta chi_top -> 1/(4 pi^2)",
}


def make_quantity(name: str, creutz_size: int = 2) -> Quantity:
    """The :class:`Quantity` called ``name`` (see :data:`QUANTITIES`)."""
    if name == "plaquette":
        return _plaquette_quantity()
    if name == "string_tension":
        return _string_tension_quantity(creutz_size)
    if name == "topological_susceptibility":
        return _topology_quantity()
    raise ValueError(f"unknown quantity {name!r}; allowed: {', '.join(QUANTITIES)}")


# ----------------------------------------------------------------------------------------------
# estimators (plain arrays)
# ----------------------------------------------------------------------------------------------


class CorrelatedEstimates(NamedTuple):
    """Flowed-reweighting estimates at ``K`` betas from one base ensemble.

    ``values`` ``(K,)``; ``cov`` ``(K, K)`` joint-jackknife covariance; ``replicas`` ``(B, K)`` the
    leave-one-bin-out estimates; ``errors`` ``sqrt(diag cov)``; ``gamma_errors`` / ``tau_int`` ``(K,)``
    per-beta Gamma-method errors and integrated autocorrelation times (cross-check); ``weight_ess``
    ``(K,)`` Kish ESS fraction of the weights (1 at the base); ``pareto_k`` ``(K,)`` the PSIS Pareto shape
    ``k-hat`` of the weights (ArviZ ``psislw``; NaN without weights): below 0.5 the reweighting estimate is
    reliable, 0.5-0.7 usable with care, above 0.7 its error is not trustworthy (heavy-tailed weights; a
    reverse-KL-trained flow is mode seeking, so its push-forward tends to be narrower than the target);
    ``bin_size``; ``n_bins`` = ``B``.
    """

    values: np.ndarray
    cov: np.ndarray
    replicas: np.ndarray
    errors: np.ndarray
    gamma_errors: np.ndarray
    tau_int: np.ndarray
    weight_ess: np.ndarray
    pareto_k: np.ndarray
    bin_size: int
    n_bins: int

    @property
    def correlation(self) -> np.ndarray:
        return self.cov / np.outer(self.errors, self.errors)


class IndependentEstimates(NamedTuple):
    """Estimates from independent ensembles: ``values``, ``errors``, ``tau_int`` ``(K,)``; ``cov`` diagonal."""

    values: np.ndarray
    errors: np.ndarray
    tau_int: np.ndarray

    @property
    def cov(self) -> np.ndarray:
        return np.diag(self.errors**2)


def pareto_k(log_w: np.ndarray) -> float:
    """PSIS Pareto shape ``k-hat`` of importance weights (``arviz.psislw``; zero weights ignored; NaN if it cannot
    be computed).  See :class:`CorrelatedEstimates` for its meaning."""
    lw = np.asarray(log_w, dtype=np.float64).ravel()
    lw = lw[np.isfinite(lw)]
    if lw.size < 20:
        return math.nan
    try:
        import arviz as az

        _, k = az.psislw(lw - lw.max())
        return float(np.asarray(k).ravel()[0])
    except Exception:  # pragma: no cover - arviz API differences (1.x): the diagnostic is optional
        return math.nan


def _normalised_weights(log_w: np.ndarray) -> np.ndarray:
    lw = np.asarray(log_w, dtype=np.float64)
    if np.any(np.isnan(lw)) or np.any(lw == np.inf):
        raise ValueError("log weights contain NaN or +inf")
    return np.exp(lw - np.max(lw))


def _ratio_layout(quantity: Quantity, obs: Mapping[str, np.ndarray], log_w: np.ndarray | None,
                  shape: tuple[int, ...] | None, what: str) -> tuple[list[np.ndarray], bool, float]:
    """Rows ``[w p_1, ..., w p_m, w]`` (weighted) or ``[p_1, ..., p_m]`` and the Kish ESS fraction of ``w``."""
    prims = quantity.primary_samples(obs)
    shape = shape or prims[0].shape
    for p in prims:
        if p.shape != shape or len(shape) != 2:
            raise ValueError(f"{what}: observables have shape {p.shape}, expected (chains, n) = {shape}; flowed and "
                             "base samples must be paired one to one")
    if log_w is None:
        return prims, False, 1.0
    w = _normalised_weights(log_w)
    if w.shape != shape:
        raise ValueError(f"{what}: log weights have shape {w.shape}, observables {shape}; they must be paired")
    return [w * p for p in prims] + [w], True, float(w.sum() ** 2 / (w.size * (w**2).sum()))


def flowed_estimates(
    quantity: Quantity,
    betas: Sequence[float],
    observables: Sequence[Mapping[str, np.ndarray]],
    log_weights: Sequence[np.ndarray | None],
    volume: int,
    *,
    bin_size: int | None = None,
    bin_tau_factor: float | None = None,
    min_bins: int | None = None,
) -> CorrelatedEstimates:
    """Flowed-reweighting estimates ``q(beta_k)`` and their joint-jackknife covariance.

    All inputs are *paired*: entry ``i`` of chain ``r`` of every array belongs to the same base configuration
    ``U_{r,i}``.

    Parameters
    ----------
    quantity : Quantity
    betas : sequence of float (K,)
    observables : sequence (K,) of mappings name -> (R, n)
        Observables on the configurations representing ``beta_k``: ``O(U_i)`` for the base (``k = 0``),
        ``O(f_k(U_i))`` for the flowed ensembles (``R`` chains, treated as replicas; ``n`` per chain).
    log_weights : sequence (K,) of (R, n) arrays or None
        ``log w_k(U_i)``; ``-inf`` drops a configuration (zero weight); None: plain means (the base).
        ``q_k`` is computed from the ratios ``<w_k O_k> / <w_k>``.
    volume : int
        Lattice volume (for ``chi_top``).
    bin_size : int, optional
        Jackknife bin size along each chain.  Default ``ceil(bin_tau_factor * tau_max)`` with ``tau_max``
        the largest Gamma-method ``tau_int`` of the ``q_k``, capped so that ``min_bins`` bins remain.
    bin_tau_factor : float, optional
        Default :data:`corrflow.stats.DEFAULT_BIN_TAU_FACTOR` (20).
    min_bins : int, optional
        Fewest bins in total for the automatic bin size (default ``max(8 K, 40)``).

    Returns
    -------
    CorrelatedEstimates
        Central values from the full sample; covariance ``(B-1)/B sum_b (q_b - qbar)(q_b - qbar)^T`` over the
        ``B`` leave-one-bin-out samples, each of which recomputes every reweighting ratio.
    """
    from corrflow.stats import DEFAULT_BIN_TAU_FACTOR, gamma_method, jackknife_samples

    betas = [float(b) for b in betas]
    K = len(betas)
    if not (len(observables) == len(log_weights) == K):
        raise ValueError(f"betas, observables and log_weights must have the same length, got {K}, "
                         f"{len(observables)}, {len(log_weights)}")
    rows: list[np.ndarray] = []
    layout: list[tuple[int, int, bool]] = []  # per beta: (first row, number of primaries, weighted)
    ess = np.ones(K)
    kh = np.array([math.nan if lw is None else pareto_k(lw) for lw in log_weights])
    shape = None
    for k in range(K):
        block, weighted, ess[k] = _ratio_layout(quantity, observables[k], log_weights[k], shape, f"beta {betas[k]:g}")
        shape = block[0].shape
        layout.append((len(rows), len(block) - int(weighted), weighted))
        rows.extend(block)
    data = np.stack(rows)  # (n_rows, R, n)

    def estimate(means: np.ndarray, k: int) -> float:
        first, n_p, weighted = layout[k]
        m = means[first:first + n_p]
        if weighted:
            m = m / means[first + n_p]
        return quantity.value(betas[k], m, volume)

    def all_estimates(means: np.ndarray) -> np.ndarray:
        return np.array([estimate(means, k) for k in range(K)])

    values = all_estimates(data.mean(axis=(1, 2)))
    gam = [gamma_method(data, func=lambda a, k=k: estimate(a, k)) for k in range(K)]
    tau = np.array([g.tau_int for g in gam])
    n_rep, n = shape
    if min_bins is None:
        min_bins = max(8 * K, 40)
    if bin_size is None:
        factor = DEFAULT_BIN_TAU_FACTOR if bin_tau_factor is None else float(bin_tau_factor)
        bin_size = max(1, math.ceil(factor * float(np.max(tau))))
        bin_size = min(bin_size, max(1, (n_rep * n) // min_bins), n)
    reps = jackknife_samples(data, func=all_estimates, bin_size=int(bin_size))
    n_b = reps.shape[0]
    if n_b <= K:
        raise ValueError(f"only {n_b} jackknife bins for a {K} x {K} covariance; use more configurations or a "
                         "smaller bin size")
    dev = reps - reps.mean(axis=0)
    cov = (n_b - 1) / n_b * dev.T @ dev
    return CorrelatedEstimates(values=values, cov=cov, replicas=reps, errors=np.sqrt(np.diag(cov)),
                               gamma_errors=np.array([g.error for g in gam]), tau_int=tau, weight_ess=ess,
                               pareto_k=kh, bin_size=int(bin_size), n_bins=int(n_b))


def independent_estimates(quantity: Quantity, betas: Sequence[float], observables: Sequence[Mapping[str, np.ndarray]],
                          volume: int, log_weights: Sequence[np.ndarray | None] | None = None) -> IndependentEstimates:
    """``q(beta_k)`` from independent ensembles (``observables[k]``: name -> (R, n)), Gamma-method errors.

    ``log_weights[k]`` (optional, ``-inf`` drops a configuration) turns the means into ratios ``<w O>/<w>``.
    """
    from corrflow.stats import gamma_method

    if log_weights is None:
        log_weights = [None] * len(betas)
    vals, errs, taus = [], [], []
    for b, o, lw in zip(betas, observables, log_weights, strict=True):
        block, weighted, _ = _ratio_layout(quantity, o, lw, None, f"beta {b:g}")
        n_p = len(block) - int(weighted)

        def func(a: np.ndarray, b: float = float(b), n_p: int = n_p, weighted: bool = weighted) -> float:
            m = a[:n_p] / a[n_p] if weighted else a[:n_p]
            return quantity.value(b, m, volume)

        st = gamma_method(np.stack(block), func=func)
        vals.append(st.value)
        errs.append(st.error)
        taus.append(st.tau_int)
    return IndependentEstimates(np.array(vals), np.array(errs), np.array(taus))


def bayesian_fits(x: np.ndarray, datasets: Sequence[tuple[np.ndarray, np.ndarray]], *, order: int, key: Any,
                  num_warmup: int = 500, num_samples: int = 1000, prior_scale: float | None = None,
                  svd_cut: float | None = None) -> list[Any]:
    """Bayesian polynomial fits of several *independent* data sets ``[(values (K,), cov (K, K)), ...]`` at the same
    ``x``, in one NUTS run (one compilation): the joint model has a block-diagonal design and covariance and
    independent priors, so its posterior factorises and each block's marginal is exactly that data set's
    posterior.  Priors per data set as in :func:`corrflow.stats.bayesian_fit` (width
    ``prior_scale * max|values| / max|x^j|``).  Returns one :class:`~corrflow.stats.BayesianFitResult` per data
    set (its ``summary`` rows are that block's, renamed ``c0, c1, ...``; ``idata`` is the joint one)."""
    from corrflow.stats import BayesianFitResult, bayesian_fit, polynomial_basis
    from corrflow.stats.fits import DEFAULT_PRIOR_SCALE, _regularised

    scale = DEFAULT_PRIOR_SCALE if prior_scale is None else prior_scale
    x = np.asarray(x, dtype=np.float64)
    K, p, m = len(x), order + 1, len(datasets)
    X = polynomial_basis(order)(x)
    design = np.zeros((m * K, m * p))
    cov = np.zeros((m * K, m * K))
    ys, widths, covs = [], [], []
    for d, (vals, c) in enumerate(datasets):
        c = np.asarray(c, dtype=np.float64)
        c_used = _regularised(0.5 * (c + c.T), svd_cut, 1e12)[0] if svd_cut is not None else c
        design[d * K:(d + 1) * K, d * p:(d + 1) * p] = X
        cov[d * K:(d + 1) * K, d * K:(d + 1) * K] = c_used
        ys.append(np.asarray(vals, dtype=np.float64))
        covs.append(c_used)
        widths.append(scale * np.max(np.abs(vals)) / np.where(np.max(np.abs(X), 0) > 0, np.max(np.abs(X), 0), 1.0))
    names = tuple(f"d{d}_c{j}" for d in range(m) for j in range(p))
    joint = bayesian_fit(np.arange(m * K, dtype=np.float64), np.concatenate(ys), cov, key=key,
                         basis=lambda idx: design[np.asarray(idx, dtype=int)], names=names,
                         prior_width=np.concatenate(widths), num_warmup=num_warmup, num_samples=num_samples)
    out = []
    own = tuple(f"c{j}" for j in range(p))
    for d in range(m):
        block = list(names[d * p:(d + 1) * p])
        summ = joint.summary.loc[block].copy()
        summ.index = list(own)
        out.append(BayesianFitResult(samples=joint.samples[:, d * p:(d + 1) * p], names=own,
                                     prior_mean=joint.prior_mean[d * p:(d + 1) * p],
                                     prior_width=joint.prior_width[d * p:(d + 1) * p], summary=summ,
                                     idata=joint.idata, basis=polynomial_basis(order), x=x, y=ys[d],
                                     data_cov=covs[d], divergences=joint.divergences))
    return out


class ContinuumFits(NamedTuple):
    """Fits of one data set: ``lsq`` (:class:`~corrflow.stats.FitResult`; jackknife errors when replicas were
    given) and ``bayes`` (:class:`~corrflow.stats.BayesianFitResult` or None); ``exact_fit``: the same model
    and covariance fitted to the exact values (its intercept minus the continuum value is the truncation bias)."""

    lsq: Any
    bayes: Any
    exact_fit: Any


def continuum_fits(x: np.ndarray, values: np.ndarray, cov: np.ndarray, exact_values: np.ndarray | None, *,
                   order: int, replicas: np.ndarray | None = None, svd_cut: float | None = None, bayes_key: Any = None,
                   bayes_warmup: int = 500, bayes_samples: int = 1000, prior_scale: float | None = None) -> ContinuumFits:
    """Polynomial fits of degree ``order`` in ``x``: correlated chi^2 (jackknife-propagated errors when ``replicas``
    ``(B, K)`` are given), the Bayesian fit when ``bayes_key`` is given, and the exact-data fit (None when
    ``exact_values`` is None: theories without exact results, e.g. 4D SU(3))."""
    from corrflow.stats import bayesian_fit, correlated_fit, resampled_fit
    from corrflow.stats.fits import DEFAULT_PRIOR_SCALE

    names = tuple(f"c{j}" for j in range(order + 1))
    if replicas is not None:
        lsq = resampled_fit(x, values, replicas, cov, kind="jackknife", order=order, names=names, svd_cut=svd_cut)
    else:
        lsq = correlated_fit(x, values, cov, order=order, names=names, svd_cut=svd_cut)
    exact_fit = (None if exact_values is None else
                 correlated_fit(x, exact_values, cov, order=order, names=names, svd_cut=svd_cut))
    bayes = None
    if bayes_key is not None:
        bayes = bayesian_fit(x, values, cov, key=bayes_key, order=order, names=names, svd_cut=svd_cut,
                             num_warmup=bayes_warmup, num_samples=bayes_samples,
                             prior_scale=DEFAULT_PRIOR_SCALE if prior_scale is None else prior_scale)
    return ContinuumFits(lsq, bayes, exact_fit)


# ----------------------------------------------------------------------------------------------
# settings
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContinuumSettings:
    """Everything that defines a run (see ``python -m analysis.continuum_limit --help``).

    ``betas`` includes the base ``beta_0 = min(betas)``.  The MD step size at ``beta`` is
    ``step_scale / sqrt(beta)`` (constant acceptance); ``n_configs`` stored configurations per chain, each
    the last of ``thin`` trajectories.  The independent ensemble at the ``i``-th beta (sorted, ``i >= 1``)
    uses seed ``seed + i``.  Flows: ``sweeps`` sweeps of ``loops`` layers, ``epochs`` epochs of Adam on
    ``n_train`` base configurations.
    """

    store: str = "data/continuum_limit.zarr"
    out: str = "reports/continuum_limit"
    flow_dir: str | None = None  # default: <store without .zarr>_flows
    betas: tuple[float, ...] = (9.0, 9.75, 10.5, 11.25, 12.0)
    L: int = 12
    n_configs: int = 4000
    n_chains: int = 2
    thin: int = 2
    n_therm: int = 250
    step_scale: float = 0.5
    n_steps: int = 2
    seed: int = 0
    quantity: str = "plaquette"
    creutz_size: int = 2
    order: int = 2
    epochs: int = 10
    sweeps: int = 2
    loops: tuple[str, ...] = ("plaquette",)
    n_train: int = 250
    batch_size: int = 64
    learning_rate: float = 0.02
    train_seed: int = 0
    bin_size: int | None = None
    bin_tau_factor: float | None = None
    svd_cut: float | None = None
    topology: str = "fixed"
    fv_correct: bool = True
    bayes: bool = True
    bayes_warmup: int = 500
    bayes_samples: int = 1000
    bayes_seed: int = 0
    prior_scale: float = 10.0
    block_size: int | None = None

    def __post_init__(self) -> None:
        betas = tuple(sorted(float(b) for b in self.betas))
        if len(betas) < 2:
            raise ValueError(f"need at least 2 betas (the base and one target), got {self.betas}")
        if len(set(betas)) != len(betas):
            raise ValueError(f"betas must be distinct, got {self.betas}")
        if any(not (b > 0 and math.isfinite(b)) for b in betas):
            raise ValueError(f"betas must be positive and finite, got {self.betas}")
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "loops", tuple(self.loops))
        for name in ("L", "n_configs", "n_chains", "thin", "n_steps", "epochs", "sweeps", "n_train", "batch_size",
                     "bayes_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.block_size is not None and (isinstance(self.block_size, bool) or self.block_size < 1):
            raise ValueError(f"block_size must be a positive integer or None, got {self.block_size!r}")
        if self.n_therm < 0 or self.bayes_warmup < 0:
            raise ValueError("n_therm and bayes_warmup must be >= 0")
        if self.L < 2:
            raise ValueError(f"L must be >= 2, got {self.L}")
        if self.n_configs < 20:
            raise ValueError(f"n_configs must be >= 20 per chain for a binned error analysis, got {self.n_configs}")
        if not (self.step_scale > 0 and self.learning_rate > 0):
            raise ValueError("step_scale and learning_rate must be positive")
        if self.topology not in ("fixed", "sampled"):
            raise ValueError(f"topology must be 'fixed' (cold start, Q = 0 sector) or 'sampled' (hot start), "
                             f"got {self.topology!r}")
        q = make_quantity(self.quantity, self.creutz_size)  # validates both
        q.reference(betas[0], (self.L, self.L), self.topology)  # raises if no exact reference exists
        if q.name == "topological_susceptibility" and self.topology == "fixed":
            raise ValueError("topological_susceptibility vanishes in the fixed sector Q = 0: use --topology sampled "
                             "(and betas where HMC changes the topology, e.g. 2..4 at L = 16)")
        if self.order < 0 or self.order + 1 > len(betas):
            raise ValueError(f"order {self.order} needs at least {self.order + 1} betas, got {len(betas)}")
        if self.svd_cut is not None and not (0 < self.svd_cut < 1):
            raise ValueError(f"svd_cut must lie in (0, 1), got {self.svd_cut}")

    @property
    def block(self) -> int:
        """Trajectories per jitted HMC block (and configurations per flow batch).  Automatic: the greatest common
        divisor of ``n_configs``, ``n_train_per_chain`` and ``n_therm`` when it is >= 20, so that every ensemble
        (base, training sample, independent) runs the same two compiled programs; else ``min(500, n_configs)``."""
        if self.block_size is not None:
            return int(self.block_size)
        g = math.gcd(self.n_configs, self.n_train_per_chain, self.n_therm) if self.n_therm else math.gcd(
            self.n_configs, self.n_train_per_chain)
        return g if g >= 20 else min(500, self.n_configs)

    @property
    def n_train_per_chain(self) -> int:
        """Configurations per chain of the separate training ensemble (``ceil(n_train / n_chains)``)."""
        return -(-self.n_train // self.n_chains)

    @property
    def start(self) -> str:
        """HMC start: ``cold`` (the ``Q = 0`` sector) for ``topology = "fixed"``, ``hot`` otherwise."""
        return "cold" if self.topology == "fixed" else "hot"

    @property
    def base_beta(self) -> float:
        return self.betas[0]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.L, self.L)

    def step_size(self, beta: float) -> float:
        return self.step_scale / math.sqrt(beta)

    def resolved_flow_dir(self) -> Path:
        if self.flow_dir:
            return Path(self.flow_dir)
        s = Path(self.store)
        stem = s.name[:-5] if s.name.endswith(".zarr") else s.name
        return s.with_name(stem + "_flows")

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["loops"] = list(self.loops)
        d["flow_dir"] = str(self.resolved_flow_dir())
        return d


# ----------------------------------------------------------------------------------------------
# workflow steps (store)
# ----------------------------------------------------------------------------------------------


class _Ledger:
    """Seconds each step took when it ran, kept in ``timings.json`` (so re-runs that reuse the store can
    still account for costs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, json.JSONDecodeError):
            self.data = {}

    def get(self, key: str) -> float:
        v = self.data.get(key, {})
        return float(v.get("seconds", math.nan)) if isinstance(v, dict) else math.nan

    def set(self, key: str, seconds: float, **info: Any) -> None:
        self.data[key] = {"seconds": float(seconds), **info}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)


class _Reporter:
    """Console output and progress bars (rich), or silence."""

    def __init__(self, console: Any) -> None:
        self.console = console

    def print(self, *args: Any) -> None:
        if self.console is not None:
            self.console.print(*args)

    def progress(self, description: str) -> Any:
        if self.console is None or not self.console.is_terminal:
            return _NullProgress()
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        prog = Progress(TextColumn("  [bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[extra]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=self.console, transient=True)
        return _RichProgress(prog, description)


class _NullProgress:
    def __enter__(self) -> "_NullProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def update(self, done: int, total: int, extra: str = "") -> None:
        pass


class _RichProgress:
    def __init__(self, prog: Any, description: str) -> None:
        self.prog, self.description, self.task = prog, description, None

    def __enter__(self) -> "_RichProgress":
        self.prog.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.prog.stop()

    def update(self, done: int, total: int, extra: str = "") -> None:
        if self.task is None:
            self.task = self.prog.add_task(self.description, total=total, extra=extra)
        self.prog.update(self.task, completed=done, total=total, extra=extra)


def _ensure_hmc(store: Any, name: str, beta: float, seed: int, s: ContinuumSettings, ledger: _Ledger,
                rep: _Reporter, n_configs: int | None = None) -> float:
    """Generate (or resume / reuse) the HMC ensemble ``name`` with ``n_configs`` (default ``s.n_configs``)
    configurations per chain; return the seconds it cost."""
    from corrflow import HMCConfig, make_theory
    from corrflow.pipeline import generate_to_store

    n_configs = s.n_configs if n_configs is None else n_configs
    have = int(store.commit(name)["committed"]) if name in store else 0
    if have >= n_configs:
        rep.print(f"  [dim]HMC {name}: {have} configurations per chain in the store (reused)[/]")
        return ledger.get(f"hmc/{name}")
    theory = make_theory("u1", s.shape, beta=beta)
    cfg = HMCConfig(step_size=s.step_size(beta), n_steps=s.n_steps, integrator="omelyan")
    with rep.progress(f"HMC beta={beta:g}") as bar:
        summ = generate_to_store(store, name, theory, cfg, n_traj=n_configs, n_chains=s.n_chains, seed=seed,
                                 n_therm=s.n_therm, thin=s.thin, block_size=s.block, observables=MEASURED, start=s.start,
                                 resume=name in store,
                                 progress=lambda d, t, st: bar.update(d, t, f"acc {st['acceptance']:.2f}"))
    seconds = summ.seconds + (ledger.get(f"hmc/{name}") if have and math.isfinite(ledger.get(f"hmc/{name}")) else 0)
    ledger.set(f"hmc/{name}", seconds, n_configs=n_configs, n_chains=s.n_chains)
    rep.print(f"  HMC {name}: +{summ.n_new} -> {summ.committed} per chain, acceptance {summ.acceptance:.3f}, "
              f"{summ.seconds:.1f} s")
    return seconds


def _training_configs(store: Any, name: str, s: ContinuumSettings) -> np.ndarray:
    """All ``n_train`` configurations of the training ensemble ``name``, chains concatenated."""
    per_chain = s.n_train_per_chain
    return np.concatenate([store.load_configs(name, c, slice(0, per_chain)) for c in range(s.n_chains)])


def _ensure_flow(store: Any, train_ens: str, beta: float, s: ContinuumSettings, ckpt: Path, ledger: _Ledger,
                 rep: _Reporter, configs_cache: dict[str, np.ndarray]) -> tuple[float, dict[str, Any]]:
    """Train (or resume / reuse) the flow ``beta_0 -> beta`` on the training ensemble ``train_ens``; return
    (seconds, checkpoint)."""
    from corrflow import make_theory
    from corrflow.flows import make_flow
    from corrflow.flows.train import TrainConfig, load_checkpoint, resume_kwargs, train

    base_th = make_theory("u1", s.shape, beta=s.base_beta)
    target = base_th.replace(beta=beta)
    cfg = TrainConfig(epochs=s.epochs, batch_size=s.batch_size, learning_rate=s.learning_rate, seed=s.train_seed)
    kwargs: dict[str, Any] = {}
    flow = make_flow("u1", s.shape, loops=s.loops, n_sweeps=s.sweeps)
    key = f"train/{ckpt.name}"
    if (ckpt / "checkpoint.json").exists():
        ck = load_checkpoint(ckpt)
        same = (ck["base"].params() == base_th.params() and ck["target"].params() == target.params()
                and ck["flow"].describe() == flow.describe() and ck["config"] == cfg)
        if not same:
            raise ValueError(f"flow checkpoint {ckpt} was trained with other settings (flow {ck['flow'].describe()}, "
                             f"{ck['base'].params()} -> {ck['target'].params()}, {ck['config']}); delete it or choose "
                             "another --flow-dir")
        if ck["epoch"] >= s.epochs:
            rep.print(f"  [dim]flow {ckpt.name}: trained ({ck['epoch']} epochs, weight ESS "
                      f"{ck['history'][-1]['ess']:.3f}) (reused)[/]")
            return ledger.get(key), ck
    if "base" not in configs_cache:
        configs_cache["base"] = _training_configs(store, train_ens, s)
    configs = configs_cache["base"]
    if (ckpt / "checkpoint.json").exists():
        kwargs = resume_kwargs(load_checkpoint(ckpt), len(configs), cfg)
    t0 = time.perf_counter()
    with rep.progress(f"train {s.base_beta:g} -> {beta:g}") as bar:
        res = train(flow, base_th, target, configs, cfg, checkpoint=ckpt,
                    progress=lambda e, r: bar.update(e, s.epochs, f"loss {r['loss']:.3f} ESS {r['ess']:.3f}"),
                    **kwargs)
    seconds = time.perf_counter() - t0
    if kwargs and math.isfinite(ledger.get(key)):
        seconds += ledger.get(key)
    ledger.set(key, seconds, epochs=s.epochs, n_train=len(configs))
    ck = load_checkpoint(ckpt)
    rep.print(f"  flow {ckpt.name}: {len(res.history) - 1} epochs, weight ESS (training set) "
              f"{res.history[0]['ess']:.3f} -> {res.history[-1]['ess']:.3f}, {seconds:.1f} s")
    return seconds, ck


def _ensure_flowed(store: Any, base: str, name: str, ckpt: Path, ck: dict[str, Any], ledger: _Ledger,
                   rep: _Reporter, batch: int) -> float:
    """Push every base configuration through the flow (resumable); return the seconds it cost."""
    from corrflow.pipeline import correlate_to_store

    n_base = int(store.commit(base)["committed"])
    key = f"flow/{name}"
    if name in store:
        fl = store.spec(name).flow
        if fl.get("flow_id") != ck["id"]:
            raise ValueError(f"flowed ensemble {name!r} in the store was made with flow {fl.get('flow_id')}, but the "
                             f"checkpoint {ckpt} is {ck['id']}; delete one of them or use another store/--flow-dir")
        have = int(store.commit(name)["committed"])
        if have >= n_base:
            rep.print(f"  [dim]flowed {name}: {have} configurations per chain in the store (reused)[/]")
            return ledger.get(key)
    t0 = time.perf_counter()
    with rep.progress(f"flow -> {name}") as bar:
        summ = correlate_to_store(store, base, name, checkpoint=ckpt, batch=batch,
                                  progress=lambda d, t: bar.update(d, t))
    seconds = time.perf_counter() - t0
    if name in store and summ.n_new < summ.committed and math.isfinite(ledger.get(key)):
        seconds += ledger.get(key)
    ledger.set(key, seconds, n=summ.committed)
    rep.print(f"  flowed {name}: {summ.committed} per chain, weight ESS {summ.weight_ess_fraction:.3f}, "
              f"{time.perf_counter() - t0:.1f} s")
    return seconds


def _load_obs(store: Any, name: str, n: int) -> dict[str, np.ndarray]:
    """The first ``n`` configurations' observables of every chain, ``{name: (chains, n)}``."""
    ds = store.open_ensemble(name)
    have = int(ds.sizes["traj"])
    if have < n:
        raise ValueError(f"ensemble {name!r} holds {have} configurations per chain, {n} needed")
    out = {}
    for v in MEASURED:
        if v not in ds:
            raise ValueError(f"observable {v!r} is not stored in {name!r}")
        out[v] = np.asarray(ds[v].values[:, :n], dtype=np.float64)
    return out


# ----------------------------------------------------------------------------------------------
# figure and markdown
# ----------------------------------------------------------------------------------------------


def _fmt(v: float, e: float, digits: int = 2) -> str:
    from corrflow.stats import format_value_error

    return format_value_error(float(v), float(e), digits)


def _figure(q: Quantity, s: ContinuumSettings, x: np.ndarray, flowed: CorrelatedEstimates,
            indep: IndependentEstimates, fit_f: ContinuumFits, fit_i: ContinuumFits, exact_ref: np.ndarray) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    fig = plt.figure(figsize=(10.0, 4.6))
    gs = GridSpec(1, 2, width_ratios=[2.6, 1.0], wspace=0.32, figure=fig)
    ax = fig.add_subplot(gs[0])
    xmax = float(x.max()) * 1.08
    xs = np.linspace(0.0, xmax, 200)
    # exact curves: infinite volume (the continuum target) and the finite torus at this L
    xe = np.linspace(max(xmax / 400, 1e-3), xmax, 200)
    ax.plot(xe, [q.exact_infinite(1.0 / t) for t in xe], color="k", lw=1.0, label="exact, infinite volume")
    if not s.fv_correct:
        sector = ", Q = 0" if s.topology == "fixed" else ""
        ax.plot(x, exact_ref, color="k", ls="none", marker="_", ms=14, mew=1.5, label=f"exact, {s.L}x{s.L} torus{sector}")
    ax.plot([0.0], [q.continuum], marker="*", ms=13, color="k", ls="none", zorder=5,
            label=f"exact continuum value ${q.continuum_label}$")
    dx = 0.006 * xmax
    styles = (("flowed (one base, correlated)", flowed.values, flowed.errors, fit_f, "C0", "o", -dx),
              ("independent HMC ensembles", indep.values, indep.errors, fit_i, "C3", "s", +dx))
    for label, vals, errs, fit, col, mk, off in styles:
        band_v, band_e = fit.lsq.evaluate(xs)
        ax.fill_between(xs, band_v - band_e, band_v + band_e, color=col, alpha=0.18, lw=0)
        ax.plot(xs, band_v, color=col, lw=1.0, ls="--")
        ax.errorbar(x + off, vals, yerr=errs, fmt=mk, color=col, ms=4.5, capsize=2.5, mfc="white" if mk == "s" else col,
                    label=label)
        c0, e0 = fit.lsq.params[0], fit.lsq.errors[0]
        ax.errorbar([off * 2], [c0], yerr=[e0], fmt=mk, color=col, ms=6.5, capsize=3.5, lw=1.6, mfc=col,
                    label=f"  continuum fit: {_fmt(c0, e0)} ($\\chi^2/$dof {fit.lsq.chi2:.1f}/{fit.lsq.dof})")
    ax.set_xlim(-0.04 * xmax, xmax)
    ax.set_xlabel(r"$a^2 g^2 = 1/\beta$")
    ax.set_ylabel(q.label)
    # keep the independent band from swamping the plot: y-range from data, exact values and the flowed band
    lo = min(np.min(flowed.values - flowed.errors), np.min(indep.values - indep.errors), q.continuum,
             fit_f.lsq.params[0] - fit_f.lsq.errors[0])
    hi = max(np.max(flowed.values + flowed.errors), np.max(indep.values + indep.errors), q.continuum,
             fit_f.lsq.params[0] + fit_f.lsq.errors[0])
    pad = 0.35 * (hi - lo)
    ax.set_ylim(lo - pad, hi + pad)
    ax.grid(alpha=0.25)
    order_txt = {0: "constant", 1: "linear", 2: "quadratic", 3: "cubic"}.get(s.order, f"degree {s.order}")
    corr_txt = ("; data shifted by the exact (torus" + (", Q = 0" if s.topology == "fixed" else "")
                + " $-$ infinite volume) difference" if s.fv_correct else "")
    ax.set_title(f"2D U(1), L = {s.L}: {order_txt} extrapolation in $a^2g^2$, correlated $\\chi^2$ fits"
                 + ("\n" + corr_txt.lstrip("; ") if corr_txt else ""), fontsize=9.5)
    ax.legend(fontsize=7.5, loc="best", framealpha=0.9)
    # correlation matrix of the flowed estimates
    ax2 = fig.add_subplot(gs[1])
    im = ax2.imshow(flowed.correlation, vmin=-1, vmax=1, cmap="RdBu_r")
    ax2.set_xticks(range(len(x)), [f"{b:g}" for b in 1 / x], fontsize=7, rotation=45)
    ax2.set_yticks(range(len(x)), [f"{b:g}" for b in 1 / x], fontsize=7)
    ax2.set_xlabel(r"$\beta$")
    ax2.set_ylabel(r"$\beta$")
    ax2.set_title("correlation of the flowed estimates\n(joint binned jackknife)", fontsize=9)
    fig.colorbar(im, ax=ax2, fraction=0.046, pad=0.04)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _markdown(record: dict[str, Any], png_name: str) -> str:
    lines = [f"# {record['title']}", ""] + list(record["summary"]) + ["", f"![continuum limit]({png_name})", ""]
    for caption, tab in record["tables"].items():
        lines += [f"### {caption}", "", "| " + " | ".join(tab["columns"]) + " |",
                  "|" + "---|" * len(tab["columns"])]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in tab["rows"]]
        lines.append("")
    lines += ["### Settings", "", "```", json.dumps(record["settings"], indent=1), "```", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# the whole analysis
# ----------------------------------------------------------------------------------------------


def _names(s: ContinuumSettings) -> tuple[str, list[str], list[str]]:
    """Base ensemble name, independent-ensemble names and flowed-ensemble names (per beta, sorted)."""
    from corrflow.store import ensemble_name

    tag = "_Q0" if s.topology == "fixed" else ""  # cold-start ensembles (Q = 0 sector) are kept apart
    base = ensemble_name("u1", s.shape, {"beta": s.base_beta}) + tag
    indep = [ensemble_name("u1", s.shape, {"beta": b}) + tag for b in s.betas]
    flowed = [base if b == s.base_beta else f"{base}_to_beta{b:g}" for b in s.betas]
    return base, indep, flowed


def run(settings: ContinuumSettings | None = None, *, console: Any = None, write: bool = True) -> dict[str, Any]:
    """Run the continuum-limit analysis (module docstring) and return its record.

    An :class:`analysis.continuum_su3.SU3ContinuumSettings` runs the quenched 4D SU(3) analysis instead
    (:func:`analysis.continuum_su3.run_su3`).

    Parameters
    ----------
    settings : ContinuumSettings
        Defaults if omitted.
    console : rich.console.Console, optional
        Where progress goes (``None``: silent).
    write : bool
        Write the record and figure to the store (``write_analysis("continuum_limit", ...)``) and the PNG,
        Markdown and JSON files to ``settings.out``.

    Returns
    -------
    dict
        The record: ``title``, ``summary`` (markdown lines), ``tables``, ``settings``, ``results`` (numbers),
        ``variance_reduction``, ``costs``.
    """
    from corrflow.store import open_store

    if type(settings).__name__ == "SU3ContinuumSettings":  # quenched 4D SU(3): analysis.continuum_su3
        from analysis.continuum_su3 import run_su3

        return run_su3(settings, console=console, write=write)
    s = settings or ContinuumSettings()
    rep = _Reporter(console)
    t_start = time.perf_counter()
    q = make_quantity(s.quantity, s.creutz_size)
    store = open_store(s.store, "a")
    flow_dir = s.resolved_flow_dir()
    ledger = _Ledger(flow_dir / "timings.json")
    base, indep_names, flowed_names = _names(s)
    betas = np.array(s.betas)
    x = 1.0 / betas
    volume = s.L * s.L
    rep.print(f"[bold]continuum limit[/] of {q.description}: 2D U(1) {s.L}x{s.L}, betas {list(s.betas)} "
              f"(base {s.base_beta:g}), store {s.store}")

    # 1. base ensemble
    rep.print("[bold]1/5[/] base HMC ensemble")
    hmc_base = _ensure_hmc(store, base, s.base_beta, s.seed, s, ledger, rep)
    # 2.-3. flows (trained on a separate short chain at beta_0, so the flows do not depend on the estimation
    # sample) and flowed ensembles
    rep.print(f"[bold]2/5[/] flows {s.base_beta:g} -> beta_k ({s.sweeps} sweep(s) of {', '.join(s.loops)} layers), "
              f"trained on {s.n_chains} x {s.n_train_per_chain} separate configurations")
    train_ens = f"{base}_train"
    hmc_train = _ensure_hmc(store, train_ens, s.base_beta, s.seed + TRAIN_SEED_OFFSET, s, ledger, rep,
                            n_configs=s.n_train_per_chain)
    train_s, flow_s, cks = {}, {}, {}
    cache: dict[str, np.ndarray] = {}
    for b, fname in zip(s.betas[1:], flowed_names[1:]):
        ckpt = flow_dir / f"{base}_to_beta{b:g}"
        train_s[b], cks[b] = _ensure_flow(store, train_ens, b, s, ckpt, ledger, rep, cache)
    rep.print("[bold]3/5[/] flowed ensembles (every base configuration through every flow)")
    for b, fname in zip(s.betas[1:], flowed_names[1:]):
        flow_s[b] = _ensure_flowed(store, base, fname, flow_dir / f"{base}_to_beta{b:g}", cks[b], ledger, rep,
                                   batch=min(s.block, 250))
    # 4. independent ensembles
    rep.print("[bold]4/5[/] independent HMC ensembles (baseline)")
    hmc_ind = {}
    for i, (b, name) in enumerate(zip(s.betas[1:], indep_names[1:]), start=1):
        hmc_ind[b] = _ensure_hmc(store, name, b, s.seed + i, s, ledger, rep)

    # 5. estimates
    rep.print("[bold]5/5[/] estimates, covariance, fits")
    t_an = time.perf_counter()
    n = s.n_configs
    base_obs = _load_obs(store, base, n)
    base_traj = np.asarray(store.open_ensemble(base, verify=False).traj.values[:n])
    f_obs: list[dict[str, np.ndarray]] = [base_obs]
    f_lw: list[np.ndarray | None] = [None]
    for b, fname in zip(s.betas[1:], flowed_names[1:]):
        ds = store.open_ensemble(fname)
        st = np.asarray(ds["source_traj"].values[:, :n])
        if st.shape[1] < n or not np.array_equal(st, np.broadcast_to(base_traj, st.shape)):
            raise ValueError(f"{fname!r} is not paired configuration by configuration with {base!r}")
        f_obs.append({v: np.asarray(ds[v].values[:, :n], dtype=np.float64) for v in MEASURED})
        f_lw.append(np.asarray(ds["log_weight"].values[:, :n], dtype=np.float64))
    ind_obs = [base_obs] + [_load_obs(store, name, n) for name in indep_names[1:]]

    # topology: in the fixed-sector mode every estimate is conditioned on Q = 0 (zero weight otherwise; HMC
    # from a cold start and the flows practically never leave the sector, which the counts below check)
    def off_sector(o: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.abs(o["topological_charge"]) > 0.5

    leaks = {"base": int(off_sector(base_obs).sum())}
    ind_lw: list[np.ndarray | None] = [None] * len(s.betas)
    if s.topology == "fixed":
        drop_base = off_sector(base_obs)
        for k in range(len(s.betas)):
            drop = drop_base if k == 0 else drop_base | off_sector(f_obs[k])
            if k:
                leaks[f"flowed {s.betas[k]:g}"] = int((off_sector(f_obs[k]) & ~drop_base).sum())
                f_lw[k] = np.where(drop, -np.inf, f_lw[k])
            elif drop.any():
                f_lw[0] = np.where(drop, -np.inf, 0.0)
        for k in range(1, len(s.betas)):
            d = off_sector(ind_obs[k])
            leaks[f"independent {s.betas[k]:g}"] = int(d.sum())
            if d.any():
                ind_lw[k] = np.where(d, -np.inf, 0.0)
        if drop_base.any():
            ind_lw[0] = f_lw[0]

    flowed = flowed_estimates(q, s.betas, f_obs, f_lw, volume, bin_size=s.bin_size, bin_tau_factor=s.bin_tau_factor)
    indep = independent_estimates(q, s.betas, ind_obs, volume, ind_lw)
    exact_ref = np.array([q.reference(b, s.shape, s.topology) for b in s.betas])
    exact_inf = np.array([q.exact_infinite(b) for b in s.betas])
    fv_shift = exact_ref - exact_inf
    exact_target = exact_ref
    if s.fv_correct:
        flowed = flowed._replace(values=flowed.values - fv_shift, replicas=flowed.replicas - fv_shift)
        indep = indep._replace(values=indep.values - fv_shift)
        exact_target = exact_inf
    # tau_int of the topological charge on the HMC ensembles (freezing check)
    from corrflow.stats import gamma_method

    tau_q = []
    for o in ind_obs:
        qq = o["topological_charge"]
        tau_q.append(gamma_method(qq).tau_int if np.ptp(np.round(qq)) > 0 else math.nan)  # nan: Q constant

    key = jax.random.PRNGKey(s.bayes_seed)
    common = dict(order=s.order, svd_cut=s.svd_cut)
    fit_f = continuum_fits(x, flowed.values, flowed.cov, exact_target, replicas=flowed.replicas, **common)
    fit_i = continuum_fits(x, indep.values, indep.cov, exact_target, **common)
    if s.bayes:  # both Bayesian fits in one NUTS run (independent blocks; one compilation)
        bf, bi = bayesian_fits(x, [(flowed.values, flowed.cov), (indep.values, indep.cov)], order=s.order, key=key,
                               num_warmup=s.bayes_warmup, num_samples=s.bayes_samples, prior_scale=s.prior_scale,
                               svd_cut=s.svd_cut)
        fit_f, fit_i = fit_f._replace(bayes=bf), fit_i._replace(bayes=bi)
    t_fits = time.perf_counter() - t_an

    # costs
    hmc_ind_total = float(sum(hmc_ind.values()))
    train_total = float(sum(train_s.values())) + hmc_train
    flow_total = float(sum(flow_s.values()))
    cost_flow = hmc_base + train_total + flow_total
    cost_ind = hmc_base + hmc_ind_total
    var_f = fit_f.lsq.errors[0] ** 2
    var_i = fit_i.lsq.errors[0] ** 2
    vr = var_i / var_f
    vr_cost = vr * cost_ind / cost_flow if cost_flow > 0 else math.nan
    vr_amort = vr * cost_ind / (hmc_base + flow_total) if hmc_base + flow_total > 0 else math.nan
    vr_bayes = (fit_i.bayes.std[0] / fit_f.bayes.std[0]) ** 2 if s.bayes else None
    # per-beta variance reduction (same N)
    vr_beta = (indep.errors / flowed.errors) ** 2

    c = q.continuum
    # PDG-style scale factor sqrt(chi2/dof) when the fit is poor (the record keeps both errors)
    scale_f = math.sqrt(max(1.0, fit_f.lsq.chi2_per_dof)) if fit_f.lsq.dof > 0 else 1.0
    scale_i = math.sqrt(max(1.0, fit_i.lsq.chi2_per_dof)) if fit_i.lsq.dof > 0 else 1.0
    pull_f = fit_f.lsq.pull(0, c)
    pull_i = fit_i.lsq.pull(0, c)
    bias_f = fit_f.exact_fit.params[0] - c
    bias_i = fit_i.exact_fit.params[0] - c
    stat_pull_f = fit_f.lsq.pull(0, fit_f.exact_fit.params[0])
    stat_pull_i = fit_i.lsq.pull(0, fit_i.exact_fit.params[0])
    pulls_beta_f = (flowed.values - exact_target) / flowed.errors
    # the flowed estimates share the base's fluctuation; the correlated differences q_k - q_0 isolate the flows
    var_d = np.diag(flowed.cov) + flowed.cov[0, 0] - 2.0 * flowed.cov[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        pulls_diff_f = np.where(var_d > 0, ((flowed.values - flowed.values[0]) - (exact_target - exact_target[0]))
                                / np.sqrt(np.maximum(var_d, 0.0)), np.nan)
    pulls_beta_i = (indep.values - exact_target) / indep.errors
    max_fv = float(np.max(np.abs(fv_shift) / flowed.errors))

    # record
    fmt_f = _fmt(fit_f.lsq.params[0], fit_f.lsq.errors[0])
    fmt_i = _fmt(fit_i.lsq.params[0], fit_i.lsq.errors[0])
    order_txt = {0: "constant", 1: "linear", 2: "quadratic", 3: "cubic"}.get(s.order, f"degree-{s.order}")
    summary = [
        f"Continuum limit of **{q.description}** in 2D U(1) on {s.L}x{s.L} tori at beta = "
        f"{', '.join(f'{b:g}' for b in s.betas)} ({s.n_chains} chains x {n} configurations per ensemble, thin "
        f"{s.thin}); {order_txt} extrapolation in a^2 g^2 = 1/beta by correlated chi^2.",
        f"- **flowed** (one HMC base ensemble at beta = {s.base_beta:g}, flows to the other betas, reweighting; full "
        f"covariance from a joint binned jackknife, {flowed.n_bins} bins of {flowed.bin_size}): continuum value "
        f"**{fmt_f}**, chi2/dof = {fit_f.lsq.chi2:.2f}/{fit_f.lsq.dof}, p = {fit_f.lsq.p_value:.2f}"
        + (f" (error x sqrt(chi2/dof) = {_fmt(fit_f.lsq.params[0], scale_f * fit_f.lsq.errors[0])})."
           if scale_f > 1.0 else "."),
        f"- **independent** HMC ensembles (diagonal covariance): **{fmt_i}**, chi2/dof = "
        f"{fit_i.lsq.chi2:.2f}/{fit_i.lsq.dof}, p = {fit_i.lsq.p_value:.2f}"
        + (f" (error x sqrt(chi2/dof) = {_fmt(fit_i.lsq.params[0], scale_i * fit_i.lsq.errors[0])})."
           if scale_i > 1.0 else "."),
        f"- exact continuum value {q.continuum_label.replace(chr(92), '')} = {c:.6g}: pulls {pull_f:+.2f} (flowed), "
        f"{pull_i:+.2f} (independent).  Truncation bias of the fit model (the same fit with the same covariance "
        f"to the exact {'infinite-volume' if s.fv_correct else 'reference'} values): {bias_f:+.2e}; pulls against "
        f"that exact-data fit {stat_pull_f:+.2f} / {stat_pull_i:+.2f}.",
        f"- variance reduction of the continuum value: **{vr:.1f}x** at equal numbers of configurations; cost-adjusted "
        f"(variance x wall time) **{vr_cost:.2f}x** (flowed path {cost_flow:.1f} s = HMC {hmc_base:.1f} + training "
        f"{train_total:.1f} + flows {flow_total:.1f}; independent path {cost_ind:.1f} s); without training (flows "
        f"reused) {vr_amort:.1f}x.",
    ]
    if s.bayes:
        summary.append(f"- Bayesian fits (numpyro NUTS, normal priors of width {s.prior_scale:g} max|q|/max|x^j|): "
                       f"flowed {fit_f.bayes.format_param(0)}, independent {fit_i.bayes.format_param(0)} "
                       f"(posterior mean and sd of c0; one NUTS run for both, {s.bayes_samples} draws after {s.bayes_warmup} warm-up, "
                       f"{fit_f.bayes.divergences} divergences).")
    ref_txt = ("finite-torus values in the sector Q = 0" if s.topology == "fixed" else "finite-torus values")
    if s.fv_correct:
        summary.append(
            f"- finite volume{' and fixed topology' if s.topology == 'fixed' else ''}: every estimate is corrected by "
            f"the exact shift (exact {ref_txt} minus infinite volume), between {fv_shift.min():+.2e} and "
            f"{fv_shift.max():+.2e} ({np.max(np.abs(fv_shift) / flowed.errors):.2g} sigma at most); L^2/beta >= "
            f"{s.L**2 / max(s.betas):.1f}.")
    else:
        summary.append(
            f"- no finite-volume correction: the per-beta reference is the exact {ref_txt}; it differs from infinite "
            f"volume by {max_fv:.2g} sigma at most (L^2/beta >= {s.L**2 / max(s.betas):.1f}).")
    kmax = np.nanmax(flowed.pareto_k) if np.any(np.isfinite(flowed.pareto_k)) else math.nan
    bad = [f"{b:g}" for b, k in zip(s.betas, flowed.pareto_k) if k > 0.7]
    summary.append(
        f"- reweighting diagnostics: weight ESS fraction {np.min(flowed.weight_ess):.2f} .. "
        f"{np.max(flowed.weight_ess[1:]):.2f}, PSIS Pareto k-hat <= {kmax:.2f}"
        + (f" -- k-hat > 0.7 at beta {', '.join(bad)}: heavy-tailed weights, those estimates and their errors are "
           "unreliable (use smaller shifts or better flows)." if bad else
           " (< 0.5: reliable; 0.5-0.7: usable)." if kmax > 0.5 else " (< 0.5: reliable)."))
    tq = np.array(tau_q)
    if s.topology == "fixed":
        n_leak = sum(leaks.values())
        summary.append(
            "- topology: all HMC chains start cold in the sector Q = 0; every estimate is conditioned on Q = 0 "
            "(weight 0 for a configuration with Q != 0) and compared with the exact Q = 0 values; "
            + ("no configuration left the sector." if n_leak == 0 else
               "configurations with Q != 0: " + ", ".join(f"{k} {v}" for k, v in leaks.items() if v) + "."))
    summary.append(f"- autocorrelation: tau_int of q (Gamma method) {np.nanmin(flowed.tau_int):.2f} .. "
                   f"{np.nanmax(flowed.tau_int):.2f} (flowed), {np.nanmin(indep.tau_int):.2f} .. "
                   f"{np.nanmax(indep.tau_int):.2f} (independent), in stored configurations; tau_int of the "
                   "topological charge " + ("not defined (Q constant in every ensemble)" if np.all(np.isnan(tq)) else
                                            f"{np.nanmin(tq):.1f} .. {np.nanmax(tq):.1f}")
                   + (" -- topology is slow: use --topology fixed, lower betas or longer runs."
                      if s.topology == "sampled" and np.nanmax(tq) > 0.01 * n * s.n_chains else "."))

    rows = []
    for k, b in enumerate(s.betas):
        rows.append([f"{b:g}", f"{1 / b:.5f}", _fmt(flowed.values[k], flowed.errors[k]), f"{pulls_beta_f[k]:+.2f}",
                     "" if k == 0 else f"{pulls_diff_f[k]:+.2f}",
                     f"{flowed.weight_ess[k]:.3f}", "" if math.isnan(flowed.pareto_k[k]) else f"{flowed.pareto_k[k]:.2f}",
                     f"{flowed.tau_int[k]:.2f}",
                     _fmt(indep.values[k], indep.errors[k]), f"{pulls_beta_i[k]:+.2f}", f"{indep.tau_int[k]:.2f}",
                     f"{exact_target[k]:.6f}", f"{vr_beta[k]:.2f}", f"{tau_q[k]:.1f}"])
    fit_rows = []
    for label, fr in (("flowed, correlated chi^2 (jackknife errors)", fit_f), ("independent, chi^2", fit_i)):
        fit_rows.append([label] + [fr.lsq.format_param(j) for j in range(s.order + 1)]
                        + [f"{fr.lsq.chi2:.2f}/{fr.lsq.dof}", f"{fr.lsq.p_value:.3f}",
                           f"{fr.lsq.pull(0, c):+.2f}"])
        if fr.bayes is not None:
            fit_rows.append([label.split(",")[0] + ", Bayesian (NUTS)"]
                            + [fr.bayes.format_param(j) for j in range(s.order + 1)]
                            + ["", "", f"{(fr.bayes.mean[0] - c) / fr.bayes.std[0]:+.2f}"])
    tables = {
        "Per-beta estimates (value(error); pulls against the exact "
        + ("infinite-volume values, after the exact finite-volume correction" if s.fv_correct else ref_txt) + ")": {
            "columns": ["beta", "a^2 g^2", "flowed", "pull", "pull of q-q0", "weight ESS", "Pareto k", "tau_int",
                        "independent", "pull",
                        "tau_int", "exact", "var. red.", "tau_int(Q)"],
            "rows": rows},
        "Continuum fits (c0 = continuum value)": {
            "columns": ["fit"] + [f"c{j}" for j in range(s.order + 1)] + ["chi2/dof", "p", "pull of c0"],
            "rows": fit_rows},
        "Correlation matrix of the flowed estimates": {
            "columns": ["beta"] + [f"{b:g}" for b in s.betas],
            "rows": [[f"{b:g}"] + [f"{v:+.3f}" for v in flowed.correlation[k]] for k, b in enumerate(s.betas)]},
    }
    if s.bayes:
        for label, fr in (("flowed", fit_f), ("independent", fit_i)):
            summ = fr.bayes.summary
            tables[f"ArviZ summary of the Bayesian fit ({label})"] = {
                "columns": ["parameter"] + [str(col) for col in summ.columns],
                "rows": [[str(idx)] + [f"{float(v):.6g}" for v in summ.loc[idx]] for idx in summ.index]}
    costs = {
        "hmc_seconds": hmc_base + hmc_ind_total, "hmc_base_seconds": hmc_base,
        "hmc_independent_seconds": hmc_ind_total, "train_seconds": train_total,
        "hmc_training_sample_seconds": hmc_train, "flow_seconds": flow_total,
        "flowed_path_seconds": cost_flow, "independent_path_seconds": cost_ind, "analysis_seconds": t_fits,
        "per_beta": {f"{b:g}": {"hmc_independent": hmc_ind.get(b), "train": train_s.get(b), "flow": flow_s.get(b)}
                     for b in s.betas[1:]},
        "note": "wall-clock seconds measured when each step ran (ledger timings.json in the flow directory), JIT "
                "compilation included; the base HMC ensemble counts for both paths; train_seconds includes the HMC "
                "run of the separate training sample (hmc_training_sample_seconds)",
    }
    results = {
        "quantity": q.name, "continuum_exact": c, "x": x.tolist(), "betas": list(s.betas),
        "flowed": {"values": flowed.values.tolist(), "errors": flowed.errors.tolist(), "cov": flowed.cov.tolist(),
                   "gamma_errors": flowed.gamma_errors.tolist(), "tau_int": flowed.tau_int.tolist(),
                   "weight_ess": flowed.weight_ess.tolist(), "pareto_k": flowed.pareto_k.tolist(),
                   "bin_size": flowed.bin_size, "n_bins": flowed.n_bins,
                   "continuum": float(fit_f.lsq.params[0]), "continuum_error": float(fit_f.lsq.errors[0]),
                   "continuum_error_scaled": float(scale_f * fit_f.lsq.errors[0]),
                   "params": fit_f.lsq.params.tolist(), "param_cov": fit_f.lsq.cov.tolist(),
                   "chi2": fit_f.lsq.chi2, "dof": fit_f.lsq.dof, "p_value": fit_f.lsq.p_value,
                   "pull": float(pull_f), "pull_vs_exact_fit": float(stat_pull_f), "pulls_per_beta": pulls_beta_f.tolist(),
                   "pulls_of_differences": [None] + pulls_diff_f[1:].tolist(),
                   "svd_modified": fit_f.lsq.n_svd_modified, "condition": fit_f.lsq.condition},
        "independent": {"values": indep.values.tolist(), "errors": indep.errors.tolist(),
                        "tau_int": indep.tau_int.tolist(), "continuum": float(fit_i.lsq.params[0]),
                        "continuum_error": float(fit_i.lsq.errors[0]),
                        "continuum_error_scaled": float(scale_i * fit_i.lsq.errors[0]),
                        "params": fit_i.lsq.params.tolist(),
                        "param_cov": fit_i.lsq.cov.tolist(), "chi2": fit_i.lsq.chi2, "dof": fit_i.lsq.dof,
                        "p_value": fit_i.lsq.p_value, "pull": float(pull_i), "pull_vs_exact_fit": float(stat_pull_i),
                        "pulls_per_beta": pulls_beta_i.tolist()},
        "exact_reference": exact_ref.tolist(), "exact_reference_kind": ref_txt,
        "exact_infinite_volume": exact_inf.tolist(), "finite_volume_shift": fv_shift.tolist(),
        "fv_corrected": s.fv_correct, "topology": s.topology, "off_sector_configurations": leaks,
        "fit_truncation_bias": {"flowed_weights": float(bias_f), "independent_weights": float(bias_i)},
        "tau_int_topological_charge": tau_q,
    }
    if s.bayes:
        for label, fr in (("flowed", fit_f), ("independent", fit_i)):
            results[label]["bayes"] = {"mean": fr.bayes.mean.tolist(), "std": fr.bayes.std.tolist(),
                                       "divergences": fr.bayes.divergences,
                                       "prior_width": fr.bayes.prior_width.tolist()}
    record = {
        "title": f"Continuum limit of {q.name} (2D U(1), flow-correlated vs independent ensembles)",
        "summary": summary,
        "tables": tables,
        "settings": s.as_dict(),
        "results": results,
        "variance_reduction": {
            q.name: {"vs_independent": float(vr), "cost_adjusted_vs_independent": float(vr_cost),
                     "cost_adjusted_without_training": float(vr_amort),
                     "bayesian_vs_independent": None if vr_bayes is None else float(vr_bayes),
                     "per_beta_vs_independent": {f"{b:g}": float(v) for b, v in zip(s.betas, vr_beta)},
                     "what": "variance of the continuum value (intercept of the fit)"}},
        "costs": costs,
        "ensembles": {"base": base, "training": train_ens, "flowed": flowed_names[1:], "independent": indep_names[1:],
                      "flow_checkpoints": {f"{b:g}": cks[b]["id"] for b in s.betas[1:]}},
    }
    png = _figure(q, s, x, flowed, indep, fit_f, fit_i, exact_ref)
    if write:
        store.write_analysis(ANALYSIS_NAME, record, figures={"continuum_limit.png": png})
        out = Path(s.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "continuum_limit.png").write_bytes(png)
        (out / "continuum_limit.md").write_text(_markdown(record, "continuum_limit.png"))
        (out / "continuum_limit.json").write_text(json.dumps(record, indent=1, allow_nan=True))
    record["costs"]["wall_seconds_this_run"] = time.perf_counter() - t_start
    _print_result(rep, record, q, fit_f, fit_i, s)
    return record


def _print_result(rep: _Reporter, record: dict[str, Any], q: Quantity, fit_f: ContinuumFits, fit_i: ContinuumFits,
                  s: ContinuumSettings) -> None:
    if rep.console is None:
        return
    from rich.table import Table

    tab = Table(title="per-beta estimates", show_lines=False)
    key = next(iter(record["tables"]))
    for col in record["tables"][key]["columns"]:
        tab.add_column(col, justify="right")
    for row in record["tables"][key]["rows"]:
        tab.add_row(*[str(c) for c in row])
    rep.print(tab)
    r = record["results"]
    v = record["variance_reduction"][q.name]
    rep.print(f"continuum value: flowed [bold]{_fmt(r['flowed']['continuum'], r['flowed']['continuum_error'])}[/] "
              f"(pull {r['flowed']['pull']:+.2f}), independent "
              f"[bold]{_fmt(r['independent']['continuum'], r['independent']['continuum_error'])}[/] "
              f"(pull {r['independent']['pull']:+.2f}), exact {q.continuum:.6g}")
    rep.print(f"variance reduction {v['vs_independent']:.1f}x, cost-adjusted {v['cost_adjusted_vs_independent']:.2f}x "
              f"(flowed {record['costs']['flowed_path_seconds']:.1f} s, independent "
              f"{record['costs']['independent_path_seconds']:.1f} s)")
    if s.bayes:
        rep.print(f"Bayesian: flowed {fit_f.bayes}\n          independent {fit_i.bayes}")
    rep.print(f"[green]done[/] in {record['costs']['wall_seconds_this_run']:.1f} s: record "
              f"'{ANALYSIS_NAME}' in {s.store}, figure and summary in {s.out}/")


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------


def _make_app() -> Any:
    import typer

    app = typer.Typer(add_completion=False, rich_markup_mode="markdown",
                      help="Continuum limit of 2D U(1) from flow-correlated ensembles vs independent ensembles. "
                           "For quenched 4D SU(3) (sqrt(t0)/w0) use `--theory su3` (its own options: "
                           "`--theory su3 --help`).")
    d = ContinuumSettings()

    @app.command(epilog="""
**Examples**

    python -m analysis.continuum_limit                                   # defaults (a few minutes)

    python -m analysis.continuum_limit --n-configs 8000 --betas 8,8.5,9,9.5,10 --out reports/cl_big

    python -m analysis.continuum_limit --quantity string_tension --creutz-size 1   # reuses the store
""")
    def main(
        store: str = typer.Option(d.store, help="zarr store (created if absent; every step is resumable)"),
        out: str = typer.Option(d.out, help="output directory for continuum_limit.png / .md / .json"),
        flow_dir: str = typer.Option("", help="flow checkpoints and the timing ledger (empty: STORE_flows next to the store, e.g. "
                                             "data/continuum_limit_flows)"),
        betas: str = typer.Option(",".join(f"{b:g}" for b in d.betas),
                                  help="comma-separated betas; the smallest is the base of the flows"),
        L: int = typer.Option(d.L, "--L", help="lattice extent (L x L torus)"),
        n_configs: int = typer.Option(d.n_configs, help="stored configurations per chain and ensemble"),
        chains: int = typer.Option(d.n_chains, help="HMC chains per ensemble"),
        thin: int = typer.Option(d.thin, help="trajectories per stored configuration"),
        therm: int = typer.Option(d.n_therm, help="thermalisation trajectories"),
        step_scale: float = typer.Option(d.step_scale, help="MD step size x sqrt(beta) (Omelyan integrator)"),
        n_steps: int = typer.Option(d.n_steps, help="MD steps per trajectory"),
        seed: int = typer.Option(d.seed, help="seed of the base ensemble; the i-th other beta uses seed + i"),
        quantity: str = typer.Option(d.quantity, help="plaquette | string_tension | topological_susceptibility"),
        creutz_size: int = typer.Option(d.creutz_size, help="R of the Creutz ratio chi(R,R) for string_tension (1 or 2)"),
        order: int = typer.Option(d.order, help="polynomial degree in a^2 g^2 of the continuum fit"),
        epochs: int = typer.Option(d.epochs, help="flow training epochs"),
        sweeps: int = typer.Option(d.sweeps, help="flow sweeps over all links"),
        loops: str = typer.Option(",".join(d.loops), help="flow staple shapes: plaquette[,rectangle]"),
        n_train: int = typer.Option(d.n_train, help="configurations of the separate training chain at the base beta "
                                                    "(seed + 1000; spread over the chains)"),
        batch_size: int = typer.Option(d.batch_size, help="training batch size"),
        lr: float = typer.Option(d.learning_rate, help="initial learning rate (cosine decay)"),
        train_seed: int = typer.Option(d.train_seed, help="seed of the training shuffles"),
        bin_size: int = typer.Option(0, help="jackknife bin size [default 0: ceil(bin-tau-factor x max tau_int)]"),
        bin_tau_factor: float = typer.Option(20.0, help="automatic bin size in units of tau_int"),
        svd_cut: float = typer.Option(0.0, help="SVD cut of the correlation matrix in the fits (0: none; raise "
                                                "on an ill-conditioned covariance)"),
        topology: str = typer.Option(d.topology, help="fixed: cold starts, every estimate in the sector Q = 0 and "
                                                      "compared with exact Q = 0 values (HMC freezes Q at these betas); "
                                                      "sampled: hot starts, all sectors (needs betas where HMC "
                                                      "tunnels, e.g. <= 4 at L = 16)"),
        fv_correct: bool = typer.Option(d.fv_correct, help="subtract the exact shift (torus [Q = 0] - infinite volume) "
                                                          "from every estimate, so that the fit targets the continuum"),
        bayes: bool = typer.Option(d.bayes, help="also run the Bayesian (numpyro NUTS) fits"),
        bayes_warmup: int = typer.Option(d.bayes_warmup, help="NUTS warm-up steps"),
        bayes_samples: int = typer.Option(d.bayes_samples, help="NUTS samples"),
        bayes_seed: int = typer.Option(d.bayes_seed, help="PRNG seed of the NUTS runs"),
        prior_scale: float = typer.Option(d.prior_scale, help="prior width of c_j in units of max|q| / max|x^j|"),
    ) -> None:
        """Continuum limit (a^2 g^2 = 1/beta -> 0) of a dimensionless 2D U(1) quantity from flow-correlated
        ensembles (one HMC base ensemble, flows to the other betas, reweighting, joint-jackknife covariance,
        correlated chi^2 and Bayesian fits) against independent HMC ensembles, with the exact result."""
        import sys

        from rich.console import Console

        console = Console() if sys.stdout.isatty() else Console(width=160)  # wide tables in log files

        def body() -> None:
            settings = ContinuumSettings(
                store=store, out=out, flow_dir=flow_dir or None,
                betas=tuple(float(b) for b in betas.split(",") if b.strip()), L=L, n_configs=n_configs,
                n_chains=chains, thin=thin, n_therm=therm, step_scale=step_scale, n_steps=n_steps, seed=seed,
                quantity=quantity, creutz_size=creutz_size, order=order, epochs=epochs, sweeps=sweeps,
                loops=tuple(x.strip() for x in loops.split(",") if x.strip()), n_train=n_train,
                batch_size=batch_size, learning_rate=lr, train_seed=train_seed, bin_size=bin_size or None,
                bin_tau_factor=bin_tau_factor, svd_cut=svd_cut or None, topology=topology, fv_correct=fv_correct, bayes=bayes,
                bayes_warmup=bayes_warmup, bayes_samples=bayes_samples, bayes_seed=bayes_seed,
                prior_scale=prior_scale)
            run(settings, console=console)

        from analysis.workflow import run_cli

        run_cli(body, console, (ValueError, FloatingPointError))

    return app


app = _make_app()


THEORIES = ("u1", "su3")


def _split_theory(argv: Sequence[str]) -> tuple[str, list[str]]:
    """``(theory, remaining arguments)`` from a command line with an optional ``--theory X`` / ``--theory=X``."""
    rest, theory, it = [], "u1", iter(argv)
    for a in it:
        if a == "--theory":
            theory = next(it, "")
        elif a.startswith("--theory="):
            theory = a.split("=", 1)[1]
        else:
            rest.append(a)
    return theory, rest


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m analysis.continuum_limit [--theory u1|su3] ...``: 2D U(1) (default, this
    module) or quenched 4D SU(3) (:mod:`analysis.continuum_su3`, its own options: ``--theory su3 --help``)."""
    import sys

    theory, rest = _split_theory(sys.argv[1:] if argv is None else argv)
    if theory == "su3":
        from analysis import continuum_su3

        continuum_su3.main(rest, prog_name="python -m analysis.continuum_limit --theory su3")
    elif theory == "u1":
        app(args=rest, prog_name="python -m analysis.continuum_limit")
    else:
        print(f"error: unknown --theory {theory!r}; choose one of {', '.join(THEORIES)} "
              "(u1: 2D U(1), exact continuum values; su3: quenched 4D SU(3), gradient-flow scales)", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
        main()
