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

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from .result import format_value_error

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

#: Largest condition number of the correlation matrix accepted without an SVD cut.
DEFAULT_MAX_CONDITION = 1e12
#: Default prior width factor of :func:`bayesian_fit` (see the module docstring).
DEFAULT_PRIOR_SCALE = 10.0

Basis = Callable[[np.ndarray], np.ndarray]


class FitError(ValueError):
    """Bad fit input: shapes, non-finite values, too few points, singular covariance or design."""


# ---------------------------------------------------------------------------
# basis and input validation
# ---------------------------------------------------------------------------


def polynomial_basis(order: int) -> Basis:
    """Basis ``B_j(x) = x**j``, ``j = 0 .. order`` (``order = 0``: constant)."""
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 0:
        raise FitError(f"order must be a non-negative integer, got {order!r}")
    order = int(order)

    def basis(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x[..., None] ** np.arange(order + 1)

    basis.order = order  # type: ignore[attr-defined]
    return basis


def _as_vector(a: object, name: str) -> np.ndarray:
    try:
        v = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FitError(f"{name} must be convertible to a float array: {exc}") from None
    if v.ndim != 1:
        raise FitError(f"{name} must be one-dimensional (k,), got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise FitError(f"{name} contains non-finite values: {v}")
    return v


def _resolve_basis(order: int | None, basis: Basis | None) -> Basis:
    if basis is not None and order is not None:
        raise FitError("give either order (polynomial) or basis (custom linear model), not both")
    if basis is None:
        return polynomial_basis(1 if order is None else order)
    if not callable(basis):
        raise FitError(f"basis must be a callable x -> (len(x), p) design matrix, got {type(basis).__name__}")
    return basis


def _design(basis: Basis, x: np.ndarray) -> np.ndarray:
    X = np.asarray(basis(x), dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != x.shape[0]:
        raise FitError(f"basis(x) must return a ({x.shape[0]}, p) design matrix, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise FitError("basis(x) returned non-finite values")
    return X


def _covariance(cov: object, k: int) -> np.ndarray:
    try:
        c = np.asarray(cov, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FitError(f"cov must be convertible to a float array: {exc}") from None
    if c.ndim == 1:
        if c.shape != (k,):
            raise FitError(f"cov given as variances must have shape ({k},) like y, got {c.shape}")
        c = np.diag(c)
    if c.shape != (k, k):
        raise FitError(f"cov must have shape ({k}, {k}) to match y of length {k}, got {c.shape}")
    if not np.all(np.isfinite(c)):
        raise FitError("cov contains non-finite values")
    scale = np.max(np.abs(c))
    if scale == 0 or not np.allclose(c, c.T, rtol=1e-8, atol=1e-12 * scale):
        raise FitError("cov must be a symmetric, non-zero covariance matrix" if scale else "cov is all zeros")
    return 0.5 * (c + c.T)


def _regularised(c: np.ndarray, svd_cut: float | None, max_condition: float) -> tuple[np.ndarray, int, float]:
    """Checked (and with ``svd_cut`` regularised) covariance, number of modified modes, condition number.

    Works on the correlation matrix so that the criterion does not depend on the units of the data.
    """
    d = np.diag(c)
    if np.any(d <= 0):
        bad = np.flatnonzero(d <= 0).tolist()
        raise FitError(f"cov is not positive definite: non-positive variances at indices {bad}")
    s = np.sqrt(d)
    rho = c / np.outer(s, s)
    evals, evecs = np.linalg.eigh(rho)
    lo, hi = float(evals[0]), float(evals[-1])
    cond = hi / lo if lo > 0 else math.inf
    if svd_cut is None:
        if lo <= 0:
            raise FitError(
                f"cov is not positive definite (smallest eigenvalue of the correlation matrix {lo:.3g}); "
                "estimate it from more (binned) samples, or pass svd_cut (e.g. 1e-6) to floor its small modes")
        if cond > max_condition:
            raise FitError(
                f"cov is ill-conditioned: condition number of the correlation matrix {cond:.3g} > "
                f"max_condition = {max_condition:.3g}; pass svd_cut (e.g. 1e-6) to floor its small eigenvalues "
                "(conservative), or raise max_condition if you trust the matrix")
        return c, 0, cond
    if not (0.0 < float(svd_cut) < 1.0):
        raise FitError(f"svd_cut must lie in (0, 1), got {svd_cut!r}")
    floor = float(svd_cut) * hi
    n_mod = int(np.count_nonzero(evals < floor))
    if n_mod == 0:
        return c, 0, cond
    ev = np.maximum(evals, floor)
    rho_cut = (evecs * ev) @ evecs.T
    return rho_cut * np.outer(s, s), n_mod, cond


# ---------------------------------------------------------------------------
# least squares
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FitResult:
    """Result of a (correlated) least-squares fit of a linear model.

    Attributes
    ----------
    params : ndarray (p,)
        Best-fit coefficients ``c_j`` (for the polynomial basis ``c_0`` is the value at ``x = 0``).
    cov : ndarray (p, p)
        Parameter covariance: ``(X^T C^{-1} X)^{-1}`` for :func:`correlated_fit`, the replica
        covariance for :func:`resampled_fit` (``method``).
    chi2, dof, p_value : float, int, float
        Correlated chi-square at the minimum, ``k - p`` and ``P(chi2_dof > chi2)`` (NaN if ``dof = 0``).
    x, y : ndarray (k,)
        The data fitted.
    data_cov : ndarray (k, k)
        The covariance used for the weighting (after any SVD cut).
    basis : callable
        ``basis(x) -> (len(x), p)``; used by :meth:`evaluate`.
    names : tuple of str
        Parameter names (``c0, c1, ...`` unless given).
    method : str
        ``"lsq"`` (error from the fit), ``"jackknife"`` or ``"bootstrap"`` (:func:`resampled_fit`).
    n_svd_modified : int
        Eigenmodes of the correlation matrix raised by ``svd_cut`` (0 if none).
    condition : float
        Condition number of the correlation matrix before any cut.
    param_replicas : ndarray (n_rep, p) or None
        Fitted parameters on every replica (:func:`resampled_fit` only).
    """

    params: np.ndarray
    cov: np.ndarray
    chi2: float
    dof: int
    p_value: float
    x: np.ndarray
    y: np.ndarray
    data_cov: np.ndarray
    basis: Basis = field(repr=False)
    names: tuple[str, ...] = ()
    method: str = "lsq"
    n_svd_modified: int = 0
    condition: float = 1.0
    param_replicas: np.ndarray | None = field(default=None, repr=False)

    @property
    def errors(self) -> np.ndarray:
        """One-sigma parameter errors ``sqrt(diag(cov))``, shape ``(p,)``."""
        return np.sqrt(np.diag(self.cov))

    @property
    def chi2_per_dof(self) -> float:
        return self.chi2 / self.dof if self.dof > 0 else math.nan

    def design(self, x: Sequence[float] | np.ndarray) -> np.ndarray:
        """Design matrix ``basis(x)``, shape ``(len(x), p)``."""
        return _design(self.basis, np.atleast_1d(np.asarray(x, dtype=np.float64)))

    def evaluate(self, x: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The fitted curve and its one-sigma band at new points: ``(values, errors)``, each ``(len(x),)``.

        ``values = B(x) c``, ``errors = sqrt(diag(B(x) cov B(x)^T))`` (linear propagation of the parameter
        covariance, exact for a linear model).
        """
        B = self.design(x)
        return B @ self.params, np.sqrt(np.einsum("ij,jk,ik->i", B, self.cov, B))

    def correlation(self) -> np.ndarray:
        """Parameter correlation matrix ``(p, p)``."""
        e = self.errors
        return self.cov / np.outer(e, e)

    def pull(self, index: int, exact: float) -> float:
        """``(params[index] - exact) / errors[index]``."""
        return float((self.params[index] - exact) / self.errors[index])

    def format_param(self, index: int, digits: int = 2) -> str:
        """``value(error)`` of one parameter, e.g. ``0.5012(34)``."""
        return format_value_error(float(self.params[index]), float(self.errors[index]), digits)

    def __str__(self) -> str:
        ps = ", ".join(f"{n} = {self.format_param(i)}" for i, n in enumerate(self.names))
        p = "nan" if math.isnan(self.p_value) else f"{self.p_value:.3f}"
        return f"{ps}; chi2/dof = {self.chi2:.2f}/{self.dof}, p = {p} ({self.method})"


def _whitened_solve(X: np.ndarray, y: np.ndarray, chol: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """``(params, param_cov, chi2)`` from the Cholesky factor ``chol`` of the data covariance."""
    # (k x k triangular systems are tiny: numpy's solve is ~100x faster here than scipy.linalg.solve_triangular)
    Xw = np.linalg.solve(chol, X)
    yw = np.linalg.solve(chol, y)
    q, r = np.linalg.qr(Xw)
    diag = np.abs(np.diag(r))
    if diag.size and diag.min() <= 1e-12 * max(diag.max(), 1e-300):
        raise FitError("the design matrix is rank-deficient for this data (duplicate x values or a basis with "
                       "linearly dependent columns); lower the order or add distinct points")
    rinv = np.linalg.inv(r)
    params = rinv @ (q.T @ yw)
    pcov = rinv @ rinv.T
    res = yw - Xw @ params
    return params, pcov, float(res @ res)


def _prepare(x: object, y: object, cov: object, order: int | None, basis: Basis | None,
             names: Sequence[str] | None, svd_cut: float | None, max_condition: float):  # noqa: ANN202
    xv = _as_vector(x, "x")
    yv = _as_vector(y, "y")
    if xv.shape != yv.shape:
        raise FitError(f"x and y must have the same length, got x {xv.shape} and y {yv.shape}")
    bf = _resolve_basis(order, basis)
    X = _design(bf, xv)
    k, p = X.shape
    if k < p:
        what = f"order {order}" if basis is None else "this basis"
        raise FitError(f"too few points for {what}: {k} data point(s) but {p} parameters (need k >= p)")
    c = _covariance(cov, k)
    c_used, n_mod, cond = _regularised(c, svd_cut, max_condition)
    try:
        chol = np.linalg.cholesky(c_used)
    except np.linalg.LinAlgError:
        raise FitError("cov is not positive definite (Cholesky failed); pass svd_cut") from None
    if names is None:
        names = tuple(f"c{j}" for j in range(p))
    names = tuple(names)
    if len(names) != p:
        raise FitError(f"names has {len(names)} entries for {p} parameters")
    return xv, yv, bf, X, c_used, chol, n_mod, cond, names


def correlated_fit(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    cov: np.ndarray,
    *,
    order: int | None = None,
    basis: Basis | None = None,
    names: Sequence[str] | None = None,
    svd_cut: float | None = None,
    max_condition: float = DEFAULT_MAX_CONDITION,
) -> FitResult:
    """Correlated least-squares fit ``y(x) = sum_j c_j B_j(x)`` with the full covariance ``cov``.

    Parameters
    ----------
    x, y : array_like (k,)
        Data points (finite).
    cov : array_like (k, k) or (k,)
        Data covariance (symmetric positive definite), or the variances of uncorrelated data.
    order : int, optional
        Polynomial degree (default 1 when no ``basis``); ``0`` fits a constant (plateau).
    basis : callable, optional
        ``basis(x) -> (len(x), p)`` for a user-defined linear model (exclusive with ``order``).
    names : sequence of str, optional
        Parameter names (default ``c0, c1, ...``).
    svd_cut : float in (0, 1), optional
        Floor for small correlation-matrix eigenvalues (module docstring); ``None`` raises on an
        ill-conditioned or indefinite covariance instead.
    max_condition : float
        Condition-number limit of the correlation matrix without ``svd_cut``.

    Raises
    ------
    FitError (a ``ValueError``)
        Shape mismatch, non-finite input, ``k < p`` (too few points for the order), covariance not
        positive definite or ill-conditioned, rank-deficient design.
    """
    xv, yv, bf, X, c_used, chol, n_mod, cond, names = _prepare(x, y, cov, order, basis, names, svd_cut,
                                                               max_condition)
    params, pcov, chi2 = _whitened_solve(X, yv, chol)
    dof = X.shape[0] - X.shape[1]
    pval = float(stats.chi2.sf(chi2, dof)) if dof > 0 else math.nan
    return FitResult(params=params, cov=pcov, chi2=chi2, dof=dof, p_value=pval, x=xv, y=yv, data_cov=c_used,
                     basis=bf, names=names, method="lsq", n_svd_modified=n_mod, condition=cond)


def resampled_fit(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray | None,
    y_replicas: np.ndarray,
    cov: np.ndarray | None = None,
    *,
    kind: str = "jackknife",
    order: int | None = None,
    basis: Basis | None = None,
    names: Sequence[str] | None = None,
    svd_cut: float | None = None,
    max_condition: float = DEFAULT_MAX_CONDITION,
) -> FitResult:
    """Fit the central data and every replica with one fixed covariance; errors from the replica spread.

    Parameters
    ----------
    x : array_like (k,)
    y : array_like (k,) or None
        Central values (estimates on the full sample).  ``None`` uses the replica mean.
    y_replicas : array_like (n_rep, k)
        Jackknife (leave-one-bin-out) or bootstrap replicas of ``y``.
    cov : array_like (k, k) or (k,), optional
        Weighting covariance, held fixed for all replicas.  Default: the covariance of the replicas
        (``(n-1)/n sum (J - Jbar)(J - Jbar)^T`` for the jackknife, the sample covariance for the bootstrap).
    kind : {"jackknife", "bootstrap"}
        How the replica spread is turned into a covariance: jackknife
        ``(n-1)/n sum_b (p_b - pbar)(p_b - pbar)^T``, bootstrap ``1/(n-1) sum_b (...)``.
    order, basis, names, svd_cut, max_condition
        As in :func:`correlated_fit`.

    Returns
    -------
    FitResult
        ``params`` and ``chi2`` of the central fit; ``cov`` the replica covariance of the parameters;
        ``method = kind``; ``param_replicas`` ``(n_rep, p)``.
    """
    if kind not in ("jackknife", "bootstrap"):
        raise FitError(f"kind must be 'jackknife' or 'bootstrap', got {kind!r}")
    try:
        reps = np.asarray(y_replicas, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FitError(f"y_replicas must be convertible to a float array: {exc}") from None
    if reps.ndim != 2:
        raise FitError(f"y_replicas must have shape (n_rep, k), got {reps.shape}")
    n_rep, k = reps.shape
    if n_rep < 2:
        raise FitError(f"need at least 2 replicas, got {n_rep}")
    if not np.all(np.isfinite(reps)):
        raise FitError("y_replicas contains non-finite values")
    n_x = np.size(x)
    if k != n_x:
        raise FitError(f"y_replicas has k = {k} columns but x has {n_x} points")
    factor = (n_rep - 1) / n_rep if kind == "jackknife" else 1.0 / (n_rep - 1)
    if cov is None:
        dev = reps - reps.mean(axis=0)
        cov = factor * dev.T @ dev
    if y is None:
        y = reps.mean(axis=0)
    central = correlated_fit(x, y, cov, order=order, basis=basis, names=names, svd_cut=svd_cut,
                             max_condition=max_condition)
    chol = np.linalg.cholesky(central.data_cov)
    X = central.design(central.x)
    # the fit is linear in y: params = A y with A = (X^T C^-1 X)^-1 X^T C^-1, the same for every replica
    Xw = np.linalg.solve(chol, X)
    a_w = central.cov @ Xw.T
    A = np.linalg.solve(chol.T, a_w.T).T
    p_reps = reps @ A.T
    dev = p_reps - p_reps.mean(axis=0)
    pcov = factor * dev.T @ dev
    return FitResult(params=central.params, cov=pcov, chi2=central.chi2, dof=central.dof, p_value=central.p_value,
                     x=central.x, y=central.y, data_cov=central.data_cov, basis=central.basis, names=central.names,
                     method=kind, n_svd_modified=central.n_svd_modified, condition=central.condition,
                     param_replicas=p_reps)


# ---------------------------------------------------------------------------
# Bayesian fit (numpyro)
# ---------------------------------------------------------------------------


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
