"""Correlated least-squares fits of :mod:`corrflow.stats.fits`: :class:`FitResult`, :func:`correlated_fit` (error
from the fit) and :func:`resampled_fit` (error from the spread over jackknife or bootstrap replicas).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from ..result import format_value_error
from .model import DEFAULT_MAX_CONDITION, Basis, FitError, _design, _prepare


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
