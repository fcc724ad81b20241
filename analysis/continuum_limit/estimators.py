r"""Estimators of a continuum limit from flow-correlated ensembles: reweighted estimates at several couplings from
one base ensemble with their joint-jackknife covariance, independent-ensemble estimates, and the polynomial fits
(correlated chi^2 with jackknife-propagated errors, Bayesian).  Shared by the 2D U(1) and 4D SU(3) continuum
analyses; everything works on plain arrays.

Flowed: ``q_k = q(beta_k; <w_k O(f_k(U))> / <w_k>)`` on the *same* base configurations for all ``k`` (``w_0 = 1``,
``f_0`` = identity).  The full covariance across beta comes from a *joint* binned jackknife over the base
configurations (:func:`flowed_estimates`): all primaries (``w_k O_k`` and ``w_k`` for every ``k``) are binned
together along each base chain (chains pooled as replicas), every leave-one-bin-out sample recomputes every
reweighting ratio, ``C = (B-1)/B sum_b (q_b - qbar)(q_b - qbar)^T``.  Bin size ``ceil(20 tau_max)`` with
``tau_max`` the largest Gamma-method ``tau_int`` of the ``q_k`` (at least ``max(8 K, 40)`` bins are kept).
Independent: Gamma-method errors per ensemble, diagonal covariance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

__all__ = [
    "ContinuumFits",
    "CorrelatedEstimates",
    "IndependentEstimates",
    "Quantity",
    "bayes_warnings",
    "bayesian_fits",
    "short_bins_note",
    "continuum_fits",
    "flowed_estimates",
    "fit_band",
    "independent_estimates",
]


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
    from corrflow.stats import normalised_weights

    w = normalised_weights(log_w)
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
    S: Any = 1.5,
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
    S : float or corrflow.stats.Windowing
        Windowing of the Gamma-method ``tau_int`` (and ``gamma_errors``): Wolff's ``S``, or with the exponential
        tail of a slow mode (then the automatic bins grow with it).

    Returns
    -------
    CorrelatedEstimates
        Central values from the full sample; covariance ``(B-1)/B sum_b (q_b - qbar)(q_b - qbar)^T`` over the
        ``B`` leave-one-bin-out samples, each of which recomputes every reweighting ratio.
    """
    from corrflow.stats import DEFAULT_BIN_TAU_FACTOR, gamma_method, jackknife_samples, pareto_k

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
    gam = [gamma_method(data, func=lambda a, k=k: estimate(a, k), S=S) for k in range(K)]
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


def short_bins_note(est: CorrelatedEstimates) -> str:
    """A warning clause (``""`` if none) for jackknife bins shorter than twice the largest ``tau_int`` -- the bin size
    is capped so that enough bins remain for the covariance, and on short chains the cap binds, so the jackknife
    errors then miss part of the autocorrelation (compare them with the Gamma-method errors)."""
    tau = float(np.nanmax(est.tau_int)) if len(est.tau_int) else 0.0
    if not est.bin_size < 2.0 * tau:
        return ""
    return (f" -- the bins are shorter than 2 tau_int = {2.0 * tau:.1f} (capped so that {est.n_bins} bins remain for "
            "the covariance): the errors may be underestimated; more configurations per chain lift the cap")


def independent_estimates(quantity: Quantity, betas: Sequence[float], observables: Sequence[Mapping[str, np.ndarray]],
                          volume: int, log_weights: Sequence[np.ndarray | None] | None = None, S: Any = 1.5
                          ) -> IndependentEstimates:
    """``q(beta_k)`` from independent ensembles (``observables[k]``: name -> (R, n)), Gamma-method errors (windowing
    ``S``: Wolff's ``S`` or a :class:`corrflow.stats.Windowing`).

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

        st = gamma_method(np.stack(block), func=func, S=S)
        vals.append(st.value)
        errs.append(st.error)
        taus.append(st.tau_int)
    return IndependentEstimates(np.array(vals), np.array(errs), np.array(taus))


def bayes_warnings(fits: Sequence[tuple[str, Any]]) -> list[str]:
    """Summary lines ``WARNING: ...`` for each ``(label, fit)`` whose Bayesian posterior is flagged
    (:meth:`corrflow.stats.BayesianFitResult.convergence_problems`: divergences, low ESS, high R-hat); fits without a
    Bayesian part (``fit.bayes`` None) are skipped.  The divergences of the joint NUTS run are named once."""
    out: list[str] = []
    seen_divergences = False
    for label, fit in fits:
        if getattr(fit, "bayes", None) is None:
            continue
        problems = fit.bayes.convergence_problems()
        if seen_divergences:
            problems = [p for p in problems if "divergent" not in p]
        seen_divergences = seen_divergences or bool(fit.bayes.divergences)
        if problems:
            out.append(f"WARNING: the Bayesian fit ({label}) is not trustworthy as run: {'; '.join(problems)}; raise "
                       "--bayes-samples and --bayes-warmup (or report the least-squares fit).")
    return out


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


def fit_band(params: Sequence[float], param_cov: Sequence[Sequence[float]], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Value and one-sigma error of the polynomial ``sum_j c_j x^j`` with parameter covariance ``param_cov``."""
    from corrflow.stats import polynomial_basis

    p = np.asarray(params, dtype=np.float64)
    X = polynomial_basis(len(p) - 1)(np.asarray(x, dtype=np.float64))
    cov = np.asarray(param_cov, dtype=np.float64)
    return X @ p, np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", X, cov, X), 0.0))
