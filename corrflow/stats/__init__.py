"""Monte Carlo error analysis on numpy arrays (analysis-time tools).

* :func:`gamma_method` -- Wolff's Gamma method (automatic windowing,
  replicas, derived quantities by gradient projection).
* :func:`binned_jackknife` / :func:`jackknife_samples` -- binned jackknife.
* :func:`autocorrelation_function`, :func:`integrated_autocorrelation_time`.
* :func:`ess_arviz` -- ArviZ effective sample size as an independent check.
* :class:`Stats` and :func:`format_value_error` -- results and ``0.31498(72)``
  formatting.
* :func:`correlated_fit`, :func:`resampled_fit`, :func:`bayesian_fit` -- fits of
  linear models (polynomials, plateaus) with a full covariance: correlated
  chi^2, jackknife/bootstrap-propagated errors, numpyro NUTS with ArviZ summary.

Layout convention shared by all estimators: without ``func`` the data are a
single observable, shape ``(n,)`` or ``(n_replicas, n)``; with ``func`` they
are primary observables, shape ``(n_obs, n)`` or ``(n_obs, n_replicas, n)``.
"""

from .autocorr import (
    MIN_SAMPLES,
    autocorrelation_function,
    gamma_method,
    integrated_autocorrelation_time,
)
from .ess import ess_arviz
from .fits import (
    BayesianFitResult,
    FitError,
    FitResult,
    bayesian_fit,
    correlated_fit,
    polynomial_basis,
    resampled_fit,
)
from .jackknife import DEFAULT_BIN_TAU_FACTOR, binned_jackknife, jackknife_samples
from .result import Stats, format_value_error
from .pyerrors_export import reweighted_obs, to_pyerrors
from .reweighting import (
    ReweightingResult,
    correlated_difference,
    finite_difference_derivative,
    independent_difference,
    log_mean_weight,
    reweighted_mean,
    symmetric_derivative,
    variance_reduction,
    weight_ess,
    weight_ess_fraction,
)

__all__ = [
    "BayesianFitResult",
    "DEFAULT_BIN_TAU_FACTOR",
    "FitError",
    "FitResult",
    "bayesian_fit",
    "correlated_fit",
    "polynomial_basis",
    "resampled_fit",
    "MIN_SAMPLES",
    "Stats",
    "autocorrelation_function",
    "binned_jackknife",
    "ess_arviz",
    "format_value_error",
    "gamma_method",
    "integrated_autocorrelation_time",
    "jackknife_samples",
    "ReweightingResult",
    "correlated_difference",
    "finite_difference_derivative",
    "independent_difference",
    "log_mean_weight",
    "reweighted_mean",
    "reweighted_obs",
    "symmetric_derivative",
    "to_pyerrors",
    "variance_reduction",
    "weight_ess",
    "weight_ess_fraction",
]
