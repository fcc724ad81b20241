"""Least-squares fit of a linear-in-parameters tangent field: minimise ``Var[R_v]`` (NumPy / SciPy, outside jit).

For ``v = Σ_k c_k v_k``, ``R_v = r0 + Σ_k c_k a_k`` with per-configuration ``r0 = ∂_α S`` and
``a_k = v_k·∇S − ∇·v_k``.  ``Var[R_v]`` is a quadratic form in ``c``: with centred data ``A`` (rows: configurations,
columns standardised to unit variance) and ``r``,

    c = argmin |r + A c|^2 / n + λ |c|^2    (ridge λ relative to the unit column variances).

``λ`` (and optionally the number of leading basis functions) is selected on held-out configurations, where the null
field ``c = 0`` (the connected estimator) competes as well: a fit that does not lower the held-out ``Var[R_v]`` (too
few configurations for its basis) is not used (``n_basis = 0``).  The final coefficients are refitted on all training
configurations.  Singular or ill-conditioned systems are regularised with
a warning.  *Cross-fitting* (:func:`cross_fit`) fits on one part of every chain and applies the field to the
other part, so that no configuration enters its own coefficients (no O(K/N) overfitting bias in ``T_v``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import scipy.linalg

__all__ = ["FieldFit", "fit_field", "cross_fit", "check_cross_fit_size", "cross_fit_shortfall", "check_field_size",
           "fold_index", "RIDGE_GRID", "MAX_CONDITION", "TangentFitWarning"]

#: Relative ridge strengths tried on the held-out configurations (0: plain least squares).
RIDGE_GRID = (0.0, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2, 1.0)
#: Condition number of the (standardised) normal matrix above which the system counts as singular.
MAX_CONDITION = 1e10


class TangentFitWarning(UserWarning):
    """The least-squares system was singular or ill-conditioned and was regularised."""


@dataclass(frozen=True)
class FieldFit:
    """Fitted coefficients ``c`` (shape ``(K,)``; zero beyond ``n_basis``) and the fit diagnostics.

    ``var_r0`` / ``var_r``: ``Var[∂_α S]`` and ``Var[R_v]`` on the training configurations; ``held_out_var``: the
    held-out ``Var[R_v]`` of the selected setting; ``ridge``: selected relative ridge; ``condition``: condition
    number of the standardised normal matrix; ``regularised``: True when it was singular and a ridge was forced.
    """

    coef: np.ndarray
    ridge: float
    n_basis: int
    var_r0: float
    var_r: float
    held_out_var: float
    condition: float
    regularised: bool
    candidates: list = field(default_factory=list)

    @property
    def reduction(self) -> float:
        """``Var[∂_α S] / Var[R_v]`` on the training configurations."""
        return self.var_r0 / self.var_r if self.var_r > 0 else np.inf


def _solve(a: np.ndarray, r: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge solution for centred, standardised ``a`` (n, k) and centred ``r`` (n,)."""
    n, k = a.shape
    if k == 0:
        return np.zeros(0)
    g = a.T @ a / n + ridge * np.eye(k)
    rhs = -(a.T @ r) / n
    try:
        return scipy.linalg.solve(g, rhs, assume_a="pos")
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError, ValueError):
        return scipy.linalg.lstsq(g, rhs, cond=1e-14)[0]


def _needed(k: int, n_hold: int, held_out: float) -> tuple[int, int]:
    """Rows needed to fit ``k`` coefficients and to select the ridge on held-out rows."""
    return max(2 * k + 2, 10), (10 if n_hold or held_out > 0 else 0)


def _check_size(n_fit: int, n_hold: int, k: int, held_out: float) -> None:
    """``ValueError`` unless ``n_fit`` rows can fit ``k`` coefficients and ``n_hold`` rows can select the ridge."""
    need_fit, need_hold = _needed(k, n_hold, held_out)
    if n_fit < need_fit or n_hold < need_hold:
        raise ValueError(f"too few configurations for a held-out fit of {k} coefficients: {n_fit} to fit and {n_hold} "
                         f"held out (need at least {need_fit} and {need_hold}); use more configurations, fewer basis "
                         "functions, or a smaller held-out fraction")


def _standardise(a: np.ndarray, r0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    am, rm = a.mean(0), r0.mean()
    ac = a - am
    scale = ac.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    return ac / scale, r0 - rm, scale, am, rm


def _var(r0: np.ndarray, a: np.ndarray, coef: np.ndarray) -> float:
    return float(np.var(r0 + a @ coef))


def fit_field(a: np.ndarray, r0: np.ndarray, *, held_out: float = 0.25, ridges: Sequence[float] | None = None,
              sizes: Sequence[int] | None = None, held_out_mask: np.ndarray | None = None) -> FieldFit:
    """Fit ``c`` minimising ``Var[r0 + a c]``.

    Parameters
    ----------
    a : (n, K) per-configuration ``a_k = v_k·∇S − ∇·v_k``
    r0 : (n,) per-configuration ``∂_α S``
    held_out : fraction of configurations (the last ones, or ``held_out_mask``) used to select the ridge and the
        basis size; 0 disables the selection (then the smallest ridge of the grid that keeps the system regular)
    ridges : relative ridge strengths to try (default :data:`RIDGE_GRID`)
    sizes : numbers of leading basis functions to try (default: all ``K``); with held-out selection the null field
        (``n_basis = 0``, ``c = 0``) is always a candidate

    Raises ``ValueError`` with a fix hint when there are too few configurations for the fit; warns
    (:class:`TangentFitWarning`) when the system is singular or ill-conditioned and had to be regularised.
    """
    a = np.asarray(a, float)
    r0 = np.asarray(r0, float)
    if a.ndim != 2 or r0.ndim != 1 or a.shape[0] != r0.shape[0]:
        raise ValueError(f"fit_field: need a (n, K) and r0 (n,); got {a.shape} and {r0.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(r0))):
        raise ValueError("fit_field: non-finite values in the tangent-field terms")
    n, k = a.shape
    sizes = [k] if sizes is None else sorted({int(s) for s in sizes if 0 < int(s) <= k}) or [k]
    ridges = list(RIDGE_GRID if ridges is None else ridges)
    if held_out_mask is None:
        n_hold = int(round(held_out * n)) if held_out > 0 else 0
        held_out_mask = np.zeros(n, bool)
        if n_hold:
            held_out_mask[n - n_hold:] = True
    n_hold = int(held_out_mask.sum())
    _check_size(n - n_hold, n_hold, k, held_out)
    # conditioning of the full standardised system
    s_all = _standardise(a, r0)[0]
    ev = np.linalg.eigvalsh(s_all.T @ s_all / n) if k else np.ones(1)
    cond = float(ev.max() / ev.min()) if ev.min() > 0 else np.inf
    singular = not cond < MAX_CONDITION
    if singular:
        ridges = [x for x in ridges if x > 0] or [1e-8]
        warnings.warn(f"the least-squares system for the tangent field is singular or ill-conditioned (condition "
                      f"number {cond:.3g} > {MAX_CONDITION:.0e}: redundant or constant basis functions); regularised "
                      f"with a ridge >= {min(ridges):g}", TangentFitWarning, stacklevel=2)
    fit_rows = ~held_out_mask
    cands = []
    best = None
    if n_hold:  # the null field (v = 0: the connected estimator) competes too, so a fit that does not generalise
        best = (0, 0.0, float(np.var(r0[held_out_mask])))  # to the held-out configurations is not used
        cands.append(best)
    for size in sizes:
        at, rt, scale, am, rm = _standardise(a[fit_rows, :size], r0[fit_rows])
        for lam in ridges:
            c = _solve(at, rt, lam) / scale
            if n_hold:
                hv = _var(r0[held_out_mask], a[held_out_mask, :size], c)
            else:
                hv = _var(r0[fit_rows], a[fit_rows, :size], c)
            cands.append((size, lam, hv))
            if best is None or hv < best[2] * (1 - 1e-12):
                best = (size, lam, hv)
    size, lam, hv = best
    c = np.zeros(k)
    if size:
        at, rt, scale, _, _ = _standardise(a[:, :size], r0)  # refit on all training configurations
        c[:size] = _solve(at, rt, lam) / scale
    return FieldFit(coef=c, ridge=float(lam), n_basis=int(size), var_r0=float(np.var(r0)), var_r=_var(r0, a, c),
                    held_out_var=float(hv), condition=cond, regularised=singular,
                    candidates=[(int(s), float(x), float(v)) for s, x, v in cands])


def fold_index(n_chains: int, n_traj: int, n_folds: int) -> np.ndarray:
    """Fold of every configuration, shape ``(n_chains, n_traj)``: each chain cut into ``n_folds`` contiguous
    blocks of trajectories."""
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    per = np.minimum(np.arange(n_traj) * n_folds // max(n_traj, 1), n_folds - 1)
    return np.broadcast_to(per, (n_chains, n_traj)).copy()


def fold_coefficients(coefs: Any, n_chains: int, n_traj: int) -> np.ndarray:
    """Per-configuration coefficients ``(n_chains, n_traj, K)`` from per-fold vectors ``(n_folds, K)`` (the layout of
    :func:`cross_fit`: fold ``f``'s configurations, :func:`fold_index`, get the coefficients of fit ``f``)."""
    coefs = np.asarray(coefs, float)
    return coefs[fold_index(n_chains, n_traj, len(coefs))]


def _fold_masks(n_chains: int, n_traj: int, n_folds: int, held_out: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train, hold)`` masks ``(n_chains, n_traj)`` of every fold: training = the other folds (everything when
    ``n_folds = 1``); held out = the last ``held_out`` fraction of every chain's training trajectories."""
    folds = fold_index(n_chains, n_traj, n_folds)
    out = []
    for f in range(n_folds):
        train = folds != f if n_folds > 1 else np.ones_like(folds, bool)
        hold = np.zeros_like(train)
        for c in range(n_chains):
            idx = np.flatnonzero(train[c])
            nh = int(round(held_out * len(idx))) if held_out > 0 else 0
            if nh:
                hold[c, idx[len(idx) - nh:]] = True
        out.append((train, hold))
    return out


def _fold_sizes(n_chains: int, n_traj: int, n_folds: int, held_out: float) -> list[tuple[int, int]]:
    """``(configurations fitted, configurations held out)`` of every fold's training part (:func:`_fold_masks`)."""
    return [(int(train.sum()) - int(hold[train].sum()), int(hold[train].sum()))
            for train, hold in _fold_masks(n_chains, n_traj, n_folds, held_out)]


def cross_fit_shortfall(n_chains: int, n_traj: int, n_coef: int, *, n_folds: int = 2,
                        held_out: float = 0.25) -> str:
    """``""`` when :func:`cross_fit` can fit ``n_coef`` coefficients on ``(n_chains, n_traj)`` configurations, else
    what falls short, e.g. ``"each fold fits 15 and holds out 5, needs >= 10 and >= 10"`` (the first such fold's
    counts)."""
    for n_fit, n_hold in _fold_sizes(n_chains, n_traj, n_folds, held_out):
        need_fit, need_hold = _needed(n_coef, n_hold, held_out)
        if n_fit < need_fit or n_hold < need_hold:
            return (f"{'each fold' if n_folds > 1 else 'the fit'} fits {n_fit} and holds out {n_hold}, needs >= "
                    f"{need_fit} and >= {need_hold}")
    return ""


def check_cross_fit_size(n_chains: int, n_traj: int, n_coef: int, *, n_folds: int = 2,
                         held_out: float = 0.25) -> None:
    """Raise the ``ValueError`` :func:`cross_fit` would raise for ``(n_chains, n_traj)`` configurations and ``n_coef``
    coefficients, without any data: for checking a request before the per-configuration terms are computed."""
    for n_fit, n_hold in _fold_sizes(n_chains, n_traj, n_folds, held_out):
        _check_size(n_fit, n_hold, n_coef, held_out)


def check_field_size(n_chains: int, n_traj: int, field: Any, *, hint: str = "") -> None:
    """:func:`check_cross_fit_size` for ``field`` (its ``n_coef`` coefficients, default folds), the message prefixed
    ``tangent estimator:`` and followed by ``hint`` (e.g. the options that fix it): for analyses that check their
    settings before anything runs."""
    try:
        check_cross_fit_size(n_chains, n_traj, field.n_coef)
    except ValueError as exc:
        raise ValueError(f"tangent estimator: {exc}{hint}") from None


def cross_fit(a: np.ndarray, r0: np.ndarray, *, n_folds: int = 2, held_out: float = 0.25,
              ridges: Sequence[float] | None = None, sizes: Sequence[int] | None = None
              ) -> tuple[list[FieldFit], np.ndarray]:
    """Cross-fitted coefficients: for each fold, :func:`fit_field` on the other folds (or on everything when
    ``n_folds = 1``).

    ``a``: ``(n_chains, n_traj, K)``, ``r0``: ``(n_chains, n_traj)``.  Returns the fits (one per fold) and the
    coefficient of every configuration, shape ``(n_chains, n_traj, K)`` (fold ``f``'s configurations get the
    coefficients fitted without them).  Within the training part the held-out configurations are the last
    ``held_out`` fraction of every chain's training blocks.
    """
    a = np.asarray(a, float)
    r0 = np.asarray(r0, float)
    nc, nt, k = a.shape
    folds = fold_index(nc, nt, n_folds)
    fits, coef = [], np.zeros((nc, nt, k))
    for f, (train, hold) in enumerate(_fold_masks(nc, nt, n_folds, held_out)):
        fit = fit_field(a[train], r0[train], held_out=held_out, ridges=ridges, sizes=sizes,
                        held_out_mask=hold[train])
        fits.append(fit)
        coef[folds == f] = fit.coef
    return fits, coef
