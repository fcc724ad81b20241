"""Monte Carlo error analysis on numpy arrays (analysis-time tools).

* :func:`gamma_method` -- Wolff's Gamma method (automatic windowing,
  replicas, derived quantities by gradient projection); :class:`Windowing` adds the exponential-tail correction for
  a slow mode of known ``tau_exp`` (Schaefer, Sommer, Virotta 2011); :func:`fit_tau_exp` estimates ``tau_exp`` from the
  decay of ``rho(t)``.
* :func:`binned_jackknife` / :func:`jackknife_samples` -- binned jackknife.
* :func:`autocorrelation_function`, :func:`integrated_autocorrelation_time`; :func:`blocked_two_tau` (block means:
  slow modes beyond the Gamma window) and :func:`slow_mode_check` (the two set against each other).
* :func:`ess_arviz` -- ArviZ effective sample size as an independent check.
* :func:`gaussian_sample_size` -- the skewness of per-sample values and the sample size a Gaussian error needs;
  :func:`sample_size_check` sets it against the effective sample size of a mean.
* :func:`equilibration_cut` -- the thermalisation cut that minimises the error of the kept mean (MSER).
* :func:`effective_mass` (cosh / cosh_ratio / log), :func:`fold_correlator`; effective-mass curves from paired
  samples (:func:`flowed_curve`, :func:`connected_curve`, ...) and :func:`plateau_fit`.
* :func:`weight_ess_fraction` (Kish), :func:`normalised_weights`, :func:`pareto_k` -- weight diagnostics.
* :class:`Stats` and :func:`format_value_error` -- results and ``0.31498(72)``
  formatting.
* :func:`correlated_fit`, :func:`resampled_fit`, :func:`bayesian_fit` -- fits of
  linear models (polynomials, plateaus) with a full covariance: correlated
  chi^2, jackknife/bootstrap-propagated errors, numpyro NUTS with ArviZ summary.

Layout convention shared by all estimators: without ``func`` the data are a
single observable, shape ``(n,)`` or ``(n_replicas, n)``; with ``func`` they
are primary observables, shape ``(n_obs, n)`` or ``(n_obs, n_replicas, n)``.
"""

from typing import TYPE_CHECKING

from .._lazy_names import install

# {submodule: names}, loaded on first use (PEP 562): importing the package loads neither JAX nor scipy
_NAMES = {
    "autocorr": ("MIN_SAMPLES", "SlowModeCheck", "autocorrelation_function", "blocked_two_tau", "gamma_method",
                 "integrated_autocorrelation_time", "slow_mode_check"),
    "windowing": ("Windowing",),
    "equilibration": ("EquilibrationCut", "equilibration_cut"),
    "tau_exp": ("TauExpFit", "fit_tau_exp"),
    "ess": ("ess_arviz",),
    "fits": ("BayesianFitResult", "FitError", "FitResult", "bayesian_fit", "correlated_fit", "polynomial_basis",
             "resampled_fit"),
    "jackknife": ("DEFAULT_BIN_TAU_FACTOR", "binned_jackknife", "jackknife_samples"),
    "normality": ("gaussian_sample_size", "sample_size_check"),
    "result": ("Stats", "format_value_error"),
    "weights": ("normalised_weights", "pareto_k"),
    "spectroscopy": ("effective_mass", "effective_mass_slope", "effective_times", "fold_correlator"),
    "curves": ("FIT_WEIGHTS", "MIN_BINS", "Curve", "Plateau", "auto_bin_size", "connected_curve",
               "effective_mass_curve", "flowed_curve", "independent_curve", "plateau_fit", "pull", "symmetric_curve",
               "tangent_curve"),
    "pyerrors_export": ("reweighted_obs", "to_pyerrors"),
    "reweighting": ("ReweightingResult", "log_mean_weight", "reweighted_mean", "weight_ess", "weight_ess_fraction"),
    "differences": ("correlated_difference", "finite_difference_derivative", "independent_difference",
                    "symmetric_derivative", "variance_reduction"),
}
install(__name__, _NAMES)

if TYPE_CHECKING:  # the names for type checkers and editors
    from .autocorr import (
        MIN_SAMPLES,
        SlowModeCheck,
        Windowing,
        autocorrelation_function,
        blocked_two_tau,
        gamma_method,
        integrated_autocorrelation_time,
        slow_mode_check,
    )
    from .equilibration import EquilibrationCut, equilibration_cut
    from .tau_exp import TauExpFit, fit_tau_exp
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
    from .normality import gaussian_sample_size, sample_size_check
    from .result import Stats, format_value_error
    from .weights import normalised_weights, pareto_k
    from .spectroscopy import effective_mass, effective_mass_slope, effective_times, fold_correlator
    from .curves import (
        FIT_WEIGHTS,
        MIN_BINS,
        Curve,
        Plateau,
        auto_bin_size,
        connected_curve,
        effective_mass_curve,
        flowed_curve,
        independent_curve,
        plateau_fit,
        pull,
        symmetric_curve,
        tangent_curve,
    )
    from .pyerrors_export import reweighted_obs, to_pyerrors
    from .reweighting import (
        ReweightingResult,
        log_mean_weight,
        reweighted_mean,
        weight_ess,
        weight_ess_fraction,
    )
    from .differences import (
        correlated_difference,
        finite_difference_derivative,
        independent_difference,
        symmetric_derivative,
        variance_reduction,
    )

__all__ = [
    "BayesianFitResult",
    "Curve",
    "FIT_WEIGHTS",
    "MIN_BINS",
    "effective_mass_curve",
    "Plateau",
    "auto_bin_size",
    "connected_curve",
    "effective_mass",
    "effective_mass_slope",
    "effective_times",
    "flowed_curve",
    "fold_correlator",
    "independent_curve",
    "plateau_fit",
    "pull",
    "symmetric_curve",
    "tangent_curve",
    "DEFAULT_BIN_TAU_FACTOR",
    "FitError",
    "FitResult",
    "bayesian_fit",
    "correlated_fit",
    "polynomial_basis",
    "resampled_fit",
    "MIN_SAMPLES",
    "Stats",
    "Windowing",
    "TauExpFit",
    "fit_tau_exp",
    "SlowModeCheck",
    "slow_mode_check",
    "autocorrelation_function",
    "blocked_two_tau",
    "binned_jackknife",
    "gaussian_sample_size",
    "sample_size_check",
    "EquilibrationCut",
    "equilibration_cut",
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
    "normalised_weights",
    "pareto_k",
    "reweighted_mean",
    "reweighted_obs",
    "symmetric_derivative",
    "to_pyerrors",
    "variance_reduction",
    "weight_ess",
    "weight_ess_fraction",
]
