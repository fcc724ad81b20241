"""The linear model of :mod:`corrflow.stats.fits` and the checks of its inputs: default limits, :class:`FitError`, the
polynomial basis, validation of data, design matrix and covariance (condition check and SVD cut), and ``_prepare``,
which every fit calls first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

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
