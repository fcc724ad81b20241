"""Cross-check of the effective sample size against ArviZ.

ArviZ estimates the ESS with Geyer's initial-monotone-sequence truncation of
the (rank-free, for ``method="mean"``) autocorrelation, an estimator that is
independent of Wolff's windowing; agreement of ``ess_arviz(x)`` with
``gamma_method(x).ess`` is a useful sanity check.

Two ArviZ layouts are supported:

* ``arviz_stats.base.array_stats.ess`` (arviz-stats >= 0.6; the backend of
  ArviZ 1.x, also installable next to ArviZ 0.2x), preferred;
* ``arviz.ess`` of the legacy ArviZ 0.x package, used as a fallback.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from .autocorr import _check_finite

__all__ = ["ess_arviz"]


def _arviz_ess_backend() -> Callable[[np.ndarray], float]:
    """Return ``f(x2d) -> ess`` for ``x2d`` of shape (chains, draws)."""
    try:
        from arviz_stats.base import array_stats  # type: ignore[import-not-found]

        def _ess(x2d: np.ndarray) -> float:
            return float(
                array_stats.ess(x2d, chain_axis=0, draw_axis=1, method="mean")
            )

        return _ess
    except (ImportError, AttributeError):
        pass
    try:
        with warnings.catch_warnings():
            # arviz 0.x emits a FutureWarning about its refactor on import
            warnings.simplefilter("ignore", FutureWarning)
            import arviz  # type: ignore[import-not-found]

        def _ess_legacy(x2d: np.ndarray) -> float:
            return float(np.asarray(arviz.ess(x2d, method="mean")))

        return _ess_legacy
    except (ImportError, AttributeError) as exc:
        raise ImportError(
            "ess_arviz needs arviz-stats (arviz_stats.base.array_stats) or "
            "arviz (arviz.ess); neither is importable"
        ) from exc


def ess_arviz(x: np.ndarray) -> float:
    """Effective sample size (of the mean) computed by ArviZ.

    Parameters
    ----------
    x : array_like, shape (n,) or (n_chains, n_draws)
        One scalar observable; a 1-D input is treated as a single chain.
        Same layout convention as :func:`corrflow.stats.gamma_method`
        without ``func`` (2-D means replicas/chains).

    Returns
    -------
    float
        ArviZ's ``ess(..., method="mean")``, comparable to
        ``n / (2 tau_int)`` with the total number of draws ``n``.

    Raises
    ------
    ValueError
        If ``x`` is not 1-D/2-D or contains NaN/inf.
    ImportError
        If neither arviz-stats nor arviz is available.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    elif arr.ndim != 2:
        raise ValueError(
            f"x must have shape (n,) or (n_chains, n_draws); got ndim={arr.ndim}"
        )
    if arr.shape[1] < 4:
        raise ValueError(f"need at least 4 draws per chain, got {arr.shape[1]}")
    _check_finite(arr)
    return _arviz_ess_backend()(arr)
