r"""Effective masses of periodic two-point correlators (one implementation, one time convention per kind).

Correlators ``C(t)``, ``t = 0 .. T-1`` (``T`` even), periodic: ``C(t) ~ A cosh(E (t - T/2))`` for one state.
:func:`fold_correlator` averages ``C(t)`` and ``C(T - t)`` (``t = 0 .. T/2``).  :func:`effective_mass` kinds and the
times :func:`effective_times` at which they are defined:

``cosh`` (three-point)
    ``m_eff(t) = arccosh[(C(t-1) + C(t+1)) / (2 C(t))]`` of the folded correlator for ``t = 1 .. T/2``
    (``C(T/2+1) = C(T/2-1)`` by symmetry): exact for one state at every ``t``, no division by a vanishing
    ``dC/dt`` near ``T/2``.
``cosh_ratio`` (two-point)
    the ``m`` that solves ``C(t)/C(t+1) = cosh(m (t - T/2)) / cosh(m (t + 1 - T/2))`` for ``t = 0 .. T/2 - 1``
    (unfolded input), exact for one state as well.
``log``
    ``m_eff(t) = log[C(t) / C(t+1)]`` of the folded correlator, ``t = 0 .. T/2 - 1``: the plain exponential, biased by
    the backward-running state near ``T/2``.

Entries where an effective mass does not exist (``cosh`` argument below 1, non-positive ``C``) are NaN.
:func:`effective_mass_slope` is the derivative ``d m_eff / d lambda`` given ``dC/d lambda`` (``cosh`` and ``log``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["KINDS", "effective_mass", "effective_mass_slope", "effective_times", "fold_correlator"]

KINDS = ("cosh", "cosh_ratio", "log")


def _check_kind(kind: str, kinds: tuple[str, ...] = KINDS) -> None:
    if kind not in kinds:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def fold_correlator(c: np.ndarray) -> np.ndarray:
    """``(C(t) + C(T - t)) / 2`` for ``t = 0 .. T/2``: ``(..., T) -> (..., T/2 + 1)`` (``T`` even)."""
    c = np.asarray(c, dtype=np.float64)
    t_ext = c.shape[-1]
    if c.ndim < 1 or t_ext < 4 or t_ext % 2:
        raise ValueError(f"correlators need an even time extent T >= 4 on the last axis, got shape {c.shape}")
    rev = np.roll(np.flip(c, axis=-1), 1, axis=-1)  # rev[t] = C((T - t) mod T)
    return 0.5 * (c + rev)[..., : t_ext // 2 + 1]


def effective_times(t_extent: int, kind: str = "cosh") -> np.ndarray:
    """Times ``t`` of the effective-mass curve for time extent ``T``: ``1 .. T/2`` (cosh), ``0 .. T/2 - 1``
    (cosh_ratio, log)."""
    _check_kind(kind)
    h = int(t_extent) // 2
    return np.arange(1, h + 1) if kind == "cosh" else np.arange(0, h)


def _ext(f: np.ndarray) -> np.ndarray:
    """Folded ``(..., h+1)`` -> ``(..., h+2)`` with ``C(h+1) = C(h-1)``."""
    return np.concatenate([f, f[..., -2:-1]], axis=-1)


def _meff_folded(f: np.ndarray, kind: str) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == "log":
            return np.log(f[..., :-1] / f[..., 1:])
        e = _ext(f)
        r = (e[..., :-2] + e[..., 2:]) / (2.0 * e[..., 1:-1])
        return np.arccosh(np.where(r >= 1.0, r, np.nan))


def _meff_slope_folded(f: np.ndarray, df: np.ndarray, kind: str) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == "log":
            return df[..., :-1] / f[..., :-1] - df[..., 1:] / f[..., 1:]
        e, de = _ext(f), _ext(df)
        r = (e[..., :-2] + e[..., 2:]) / (2.0 * e[..., 1:-1])
        dr = (de[..., :-2] + de[..., 2:]) / (2.0 * e[..., 1:-1]) - r * de[..., 1:-1] / e[..., 1:-1]
        m = np.arccosh(np.where(r >= 1.0, r, np.nan))
        return dr / np.sinh(m)


def effective_mass(c: np.ndarray, kind: str = "cosh") -> np.ndarray:
    """Effective mass of periodic correlators ``c`` ``(..., T)``, ``(..., k)`` at :func:`effective_times` (module
    docstring for the kinds); NaN where undefined."""
    _check_kind(kind)
    if kind == "cosh_ratio":
        return _meff_cosh_ratio(np.asarray(c, dtype=np.float64))
    return _meff_folded(fold_correlator(c), kind)


def effective_mass_slope(c: np.ndarray, dc: np.ndarray, kind: str = "cosh") -> np.ndarray:
    """``d m_eff(t) / dlam`` given ``C(t)`` and ``dC(t)/dlam`` (both ``(..., T)``; folded first for ``cosh`` and
    ``log``): the chain rule through :func:`effective_mass`.  ``cosh_ratio`` (unfolded, ``t = 0 .. T/2 - 1``):
    ``d log[C(t)/C(t+1)]/dlam = g'(m) dm/dlam`` with ``g(m) = log cosh(m (t - T/2)) - log cosh(m (t + 1 - T/2))``,
    ``g' > 0`` for ``m > 0``."""
    _check_kind(kind, ("cosh", "log", "cosh_ratio"))
    if kind == "cosh_ratio":
        c, dc = np.asarray(c, dtype=np.float64), np.asarray(dc, dtype=np.float64)
        l0 = c.shape[-1]
        half = l0 // 2
        m = _meff_cosh_ratio(c)
        a = np.arange(half) - l0 / 2
        b = a + 1
        with np.errstate(divide="ignore", invalid="ignore"):
            dlogr = dc[..., :half] / c[..., :half] - dc[..., 1:half + 1] / c[..., 1:half + 1]
            return dlogr / (a * np.tanh(m * a) - b * np.tanh(m * b))
    return _meff_slope_folded(fold_correlator(c), fold_correlator(dc), kind)


def _meff_cosh_ratio(c: np.ndarray) -> np.ndarray:
    """Solve ``c(t)/c(t+1) = cosh(m (t - T/2)) / cosh(m (t + 1 - T/2))`` for ``t = 0 .. T/2 - 1`` (NaN where no
    solution exists); ``c`` ``(..., T)`` unfolded."""
    from scipy.optimize import brentq

    c = np.asarray(c, float)
    l0 = c.shape[-1]
    half = l0 // 2
    flat = c.reshape(-1, l0)
    out = np.full((flat.shape[0], half), np.nan)
    for i, row in enumerate(flat):
        for t in range(half):
            r = row[t] / row[t + 1] if row[t + 1] != 0 else np.nan
            if not np.isfinite(r) or r <= 1.0:
                continue
            f = lambda m, t=t, r=r: np.cosh(m * (t - l0 / 2)) / np.cosh(m * (t + 1 - l0 / 2)) - r  # noqa: E731
            hi = 1.0
            while f(hi) < 0 and hi < 50:
                hi *= 2
            if f(hi) < 0:
                continue
            out[i, t] = brentq(f, 1e-12, hi)
    return out.reshape(c.shape[:-1] + (half,))
