"""Bayesian fits of :mod:`corrflow.stats.fits` with numpyro's NUTS: :class:`BayesianFitResult` and
:func:`bayesian_fit` (jax, numpyro and arviz are imported when a fit runs).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..result import format_value_error
from .model import DEFAULT_MAX_CONDITION, DEFAULT_PRIOR_SCALE, Basis, FitError, _design, _prepare


# ---------------------------------------------------------------------------
# Bayesian fit (numpyro)
# ---------------------------------------------------------------------------


#: a posterior summary is flagged (:meth:`BayesianFitResult.convergence_problems`) below this bulk or tail ESS per
#: chain or above this R-hat (Vehtari et al. 2021)
MIN_ESS_PER_CHAIN = 100
MAX_R_HAT = 1.01


@dataclass(frozen=True)
class BayesianFitResult:
    """Posterior of a Bayesian linear fit.

    Attributes
    ----------
    samples : ndarray (n_draws, p)
        Posterior draws of the coefficients (all chains concatenated).
    names : tuple of str
        Parameter names (the variable names in ``idata`` and ``summary``).
    prior_mean, prior_width : ndarray (p,)
        The normal priors used.
    summary : pandas.DataFrame
        ``arviz.summary(idata)``: mean, sd, HDI, MCSE, ESS, r_hat per parameter.
    idata : arviz.InferenceData
        ``arviz.from_numpyro`` of the run.
    basis : callable
        Design-matrix function (for :meth:`evaluate`).
    x, y, data_cov : ndarray
        The data.
    divergences : int
        Number of divergent NUTS transitions (should be 0).
    """

    samples: np.ndarray
    names: tuple[str, ...]
    prior_mean: np.ndarray
    prior_width: np.ndarray
    summary: Any
    idata: Any = field(repr=False)
    basis: Basis = field(repr=False)
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    data_cov: np.ndarray = field(repr=False)
    divergences: int = 0

    @property
    def mean(self) -> np.ndarray:
        """Posterior means ``(p,)``."""
        return self.samples.mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        """Posterior standard deviations ``(p,)``."""
        return self.samples.std(axis=0, ddof=1)

    @property
    def cov(self) -> np.ndarray:
        """Posterior covariance ``(p, p)``."""
        return np.cov(self.samples, rowvar=False).reshape(len(self.names), len(self.names))

    def evaluate(self, x: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the curve at new points, each ``(len(x),)``."""
        B = _design(self.basis, np.atleast_1d(np.asarray(x, dtype=np.float64)))
        curves = self.samples @ B.T
        return curves.mean(axis=0), curves.std(axis=0, ddof=1)

    def convergence_problems(self, min_ess_per_chain: float = MIN_ESS_PER_CHAIN,
                             max_r_hat: float = MAX_R_HAT) -> list[str]:
        """What makes the posterior summary untrustworthy, one phrase each (empty: nothing): divergent transitions,
        a bulk or tail ESS (``summary``) below ``min_ess_per_chain`` per chain, an R-hat above ``max_r_hat`` (with
        two or more chains; one chain has none).  Thresholds of Vehtari, Gelman, Simpson, Carpenter and Buerkner,
        Bayesian Analysis 16 (2021) 667."""
        out = [f"{self.divergences} divergent transition{'s' if self.divergences != 1 else ''}"] if self.divergences \
            else []
        posterior = getattr(self.idata, "posterior", None)
        chains = int(posterior.sizes.get("chain", 1)) if posterior is not None else 1
        cols = set(getattr(self.summary, "columns", ()))
        for col in ("ess_bulk", "ess_tail"):
            if col in cols:
                low = [f"{name} {float(v):.0f}" for name, v in self.summary[col].items()
                       if math.isfinite(float(v)) and float(v) < min_ess_per_chain * chains]
                if low:
                    out.append(f"{col} < {min_ess_per_chain * chains:g} ({', '.join(low)})")
        if chains >= 2 and "r_hat" in cols:
            high = [f"{name} {float(v):.3f}" for name, v in self.summary["r_hat"].items()
                    if math.isfinite(float(v)) and float(v) > max_r_hat]
            if high:
                out.append(f"r_hat > {max_r_hat:g} ({', '.join(high)})")
        return out

    def format_param(self, index: int, digits: int = 2) -> str:
        return format_value_error(float(self.mean[index]), float(self.std[index]), digits)

    def __str__(self) -> str:
        ps = ", ".join(f"{n} = {self.format_param(i)}" for i, n in enumerate(self.names))
        return f"{ps} (posterior mean and sd, {self.samples.shape[0]} draws, {self.divergences} divergences)"


_NUTS_CACHE: dict[tuple, Any] = {}


def _nuts(names: tuple[str, ...], num_warmup: int, num_samples: int, num_chains: int, progress_bar: bool) -> Any:
    """A numpyro ``MCMC`` (NUTS, dense mass) for the linear model with these parameter names, cached so that
    repeated fits of the same structure reuse the compiled sampler.  The data enter as run arguments."""
    cache_key = (names, num_warmup, num_samples, num_chains, progress_bar)
    if cache_key not in _NUTS_CACHE:
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist
        from numpyro.infer import MCMC, NUTS

        def model(X, y, chol, mu, width):  # noqa: ANN001, ANN202, N803
            coef = jnp.stack([numpyro.sample(n, dist.Normal(mu[j], width[j])) for j, n in enumerate(names)])
            numpyro.sample("y", dist.MultivariateNormal(X @ coef, scale_tril=chol), obs=y)

        _NUTS_CACHE[cache_key] = MCMC(NUTS(model, dense_mass=True), num_warmup=num_warmup, num_samples=num_samples,
                                      num_chains=num_chains, chain_method="sequential", progress_bar=progress_bar,
                                      jit_model_args=True)
    return _NUTS_CACHE[cache_key]


def _default_prior_width(X: np.ndarray, y: np.ndarray, prior_scale: float) -> np.ndarray:
    col = np.max(np.abs(X), axis=0)
    col = np.where(col > 0, col, 1.0)
    ymax = float(np.max(np.abs(y)))
    if ymax == 0.0:
        ymax = 1.0
    return prior_scale * ymax / col


def bayesian_fit(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    cov: np.ndarray,
    *,
    key: Any,
    order: int | None = None,
    basis: Basis | None = None,
    names: Sequence[str] | None = None,
    prior_mean: float | Sequence[float] = 0.0,
    prior_width: float | Sequence[float] | None = None,
    prior_scale: float = DEFAULT_PRIOR_SCALE,
    num_warmup: int = 500,
    num_samples: int = 1000,
    num_chains: int = 1,
    svd_cut: float | None = None,
    max_condition: float = DEFAULT_MAX_CONDITION,
    progress_bar: bool = False,
) -> BayesianFitResult:
    """Bayesian fit of ``y(x) = sum_j c_j B_j(x)`` with numpyro NUTS.

    Likelihood ``y ~ MultivariateNormal(X c, cov)`` (the data covariance, checked and optionally
    SVD-cut exactly as in :func:`correlated_fit`); priors ``c_j ~ Normal(prior_mean_j, prior_width_j)``,
    with the default width ``prior_scale * max|y| / max_i |X_ij|`` (``prior_scale = 10``: weakly
    informative).  NUTS with a dense mass matrix (the coefficients of a polynomial are strongly
    correlated), ``num_chains`` chains run one after the other.

    Parameters
    ----------
    key : jax PRNG key
        Required, passed explicitly (e.g. ``jax.random.PRNGKey(0)``); the result is deterministic in it.
    num_warmup, num_samples, num_chains : int
        NUTS settings (defaults 500, 1000, 1: about a second or two after compilation for p <= 4).
    Other parameters as in :func:`correlated_fit`.

    Returns
    -------
    BayesianFitResult
        Posterior draws, ``az.summary`` of ``az.from_numpyro(mcmc)`` and the ``InferenceData``.
    """
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 likelihood (covariances of precise MC data)
    import arviz as az
    import jax.numpy as jnp

    xv, yv, bf, X, c_used, chol, _, _, names = _prepare(x, y, cov, order, basis, names, svd_cut, max_condition)
    p = X.shape[1]
    for label, v in (("num_warmup", num_warmup), ("num_samples", num_samples), ("num_chains", num_chains)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if label == "num_warmup" else 1):
            raise FitError(f"{label} must be a positive integer, got {v!r}")
    mu = np.broadcast_to(np.asarray(prior_mean, dtype=np.float64), (p,)).copy()
    if prior_width is None:
        if not (prior_scale > 0 and math.isfinite(prior_scale)):
            raise FitError(f"prior_scale must be positive and finite, got {prior_scale!r}")
        width = _default_prior_width(X, yv, prior_scale)
    else:
        width = np.broadcast_to(np.asarray(prior_width, dtype=np.float64), (p,)).copy()
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(width)) and np.all(width > 0)):
        raise FitError(f"prior means must be finite and prior widths positive, got {mu}, {width}")

    mcmc = _nuts(tuple(names), int(num_warmup), int(num_samples), int(num_chains), progress_bar)
    mcmc.run(key, jnp.asarray(X), jnp.asarray(yv), jnp.asarray(chol), jnp.asarray(mu), jnp.asarray(width),
             extra_fields=("diverging",))
    draws = mcmc.get_samples()
    samples = np.stack([np.asarray(draws[n], dtype=np.float64) for n in names], axis=-1)
    divergences = int(np.sum(np.asarray(mcmc.get_extra_fields()["diverging"])))
    arviz_log = getattr(az, "_log", None) or logging.getLogger("arviz")  # arviz 0.23 logs through az._log
    level = arviz_log.level
    if num_chains == 1:  # r_hat needs >= 2 chains: it is NaN, and arviz logs a shape warning about it
        arviz_log.setLevel(logging.ERROR)
    try:
        idata = az.from_numpyro(mcmc)
        summary = az.summary(idata, var_names=list(names), round_to="none")
    finally:
        arviz_log.setLevel(level)
    return BayesianFitResult(samples=samples, names=names, prior_mean=mu, prior_width=width, summary=summary,
                             idata=idata, basis=bf, x=xv, y=yv, data_cov=c_used, divergences=divergences)
