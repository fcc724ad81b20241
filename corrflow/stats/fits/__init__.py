r"""Least-squares and Bayesian fits of linear models with a full data covariance.

Model
-----
Data ``y_i`` at points ``x_i`` (``i = 1 .. k``) with covariance ``C`` (``k x k``) are fitted by a model
that is *linear in its parameters*::

    y(x) = sum_j c_j B_j(x),      j = 0 .. p-1,

with basis functions ``B_j``.  The default basis is the polynomial ``B_j(x) = x**j`` of degree
``order`` (``p = order + 1``): ``order = 0`` is a constant (a plateau / correlated weighted mean),
``order = 1`` a line, and so on.  A user-supplied basis is any callable ``basis(x) -> (len(x), p)``
design matrix (e.g. ``lambda x: np.stack([np.ones_like(x), x, x**2 * np.log(x)], axis=-1)``).

Correlated least squares
------------------------
Minimises the correlated chi-square

.. math:: \chi^2(c) = r^T C^{-1} r, \qquad r = y - X c, \quad X_{ij} = B_j(x_i),

computed stably by whitening with the Cholesky factor ``C = L L^T`` (never by inverting ``C``):
``c = argmin |L^{-1}(y - X c)|^2`` by a least-squares solve, parameter covariance
``(X^T C^{-1} X)^{-1}``, ``dof = k - p`` and the p-value ``P(chi2_dof > chi2)``.  For a linear model
these are exact when ``C`` is the true covariance of Gaussian data.

Ill-conditioned covariance
--------------------------
Covariances estimated from Monte Carlo data (e.g. a jackknife over strongly correlated estimates)
are often nearly singular.  The condition number of the *correlation* matrix
``rho = D^{-1/2} C D^{-1/2}`` (``D = diag C``; insensitive to the units of ``y``) is checked:

* ``svd_cut=None`` (default): a correlation matrix that is not positive definite, or whose
  condition number exceeds ``max_condition`` (default ``1e12``), raises :class:`FitError` with the
  offending numbers and a hint to pass ``svd_cut``.  Nothing is silently regularised.
* ``svd_cut=s`` (``0 < s < 1``): eigenvalues of ``rho`` below ``s * max(eigenvalue)`` are *raised* to
  that floor (the "svdcut" of gvar/lsqfit).  This can only enlarge the covariance, so the errors
  stay conservative; ``FitResult.n_svd_modified`` records how many modes were changed.  The chi-square
  then refers to the modified covariance.

Resampled errors
----------------
When ``C`` is estimated from the same samples as ``y``, the robust way to propagate errors is to
repeat the fit on every jackknife (or bootstrap) replica of ``y`` with the *fixed* central covariance
and take the spread of the fitted parameters: :func:`resampled_fit`.  For a linear model whose
weighting covariance equals the jackknife covariance of the replicas, this reproduces the
least-squares parameter covariance exactly; it differs (correctly) when the fit is weighted with a
different matrix (diagonal-only weights, an SVD cut, a prior-dominated fit).

Bayesian fit
------------
:func:`bayesian_fit` samples the posterior of the same linear model with numpyro's NUTS: likelihood
``y ~ MultivariateNormal(X c, C)`` and independent normal priors ``c_j ~ Normal(m_j, w_j)``.  Default
(weakly informative) prior widths: ``w_j = prior_scale * max_i |y_i| / max_i |X_ij|`` with
``prior_scale = 10``: each basis term may be ten times larger than the largest datum anywhere in the
data range.  It returns the posterior samples, an ArviZ ``InferenceData`` and ``az.summary``.

Shapes: ``x`` ``(k,)``, ``y`` ``(k,)``, ``cov`` ``(k, k)`` (or ``(k,)`` variances of uncorrelated data),
replicas ``(n_rep, k)``; parameters ``(p,)``, parameter covariance ``(p, p)``.
"""

from .bayes import BayesianFitResult, bayesian_fit
from .lsq import FitResult, correlated_fit, resampled_fit
from .model import DEFAULT_MAX_CONDITION, DEFAULT_PRIOR_SCALE, FitError, polynomial_basis

# the other names this module defined before it was split (``_regularised`` is used by analysis.continuum_limit)
from .bayes import _NUTS_CACHE, _default_prior_width, _nuts  # noqa: F401
from .lsq import _whitened_solve  # noqa: F401
from .model import Basis, _as_vector, _covariance, _design, _prepare, _regularised, _resolve_basis  # noqa: F401

__all__ = [
    "FitError",
    "FitResult",
    "BayesianFitResult",
    "polynomial_basis",
    "correlated_fit",
    "resampled_fit",
    "bayesian_fit",
    "DEFAULT_MAX_CONDITION",
    "DEFAULT_PRIOR_SCALE",
]
