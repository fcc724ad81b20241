"""Importance-weight diagnostics shared by every estimator: normalised weights and the PSIS Pareto ``k-hat``.

(The Kish ESS is :func:`corrflow.stats.weight_ess` / :func:`corrflow.stats.weight_ess_fraction`.)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["normalised_weights", "pareto_k"]


def normalised_weights(log_w: np.ndarray) -> np.ndarray:
    """``w = exp(log_w - max log_w)`` (same shape; ``-inf`` gives weight 0).

    Raises ``ValueError`` for NaN or ``+inf`` log weights (a broken flow or action), or when every weight is 0.
    """
    lw = np.asarray(log_w, dtype=np.float64)
    if np.any(np.isnan(lw)) or np.any(lw == np.inf):
        raise ValueError("log weights contain NaN or +inf")
    top = np.max(lw)
    if not np.isfinite(top):
        raise ValueError("every log weight is -inf (all weights zero)")
    return np.exp(lw - top)


def pareto_k(log_w: np.ndarray) -> float:
    """PSIS Pareto shape ``k-hat`` of importance weights (ArviZ ``psislw``; zero weights ignored; NaN if it cannot
    be computed, e.g. with fewer than 20 finite weights).

    Below 0.5 self-normalised reweighting is reliable, 0.5-0.7 usable with care, above 0.7 its error is not
    trustworthy (heavy-tailed weights; a reverse-KL-trained flow is mode seeking, so its push-forward tends to be
    narrower than the target).
    """
    lw = np.asarray(log_w, dtype=np.float64).ravel()
    lw = lw[np.isfinite(lw)]
    if lw.size < 20:
        return math.nan
    try:
        import arviz as az

        _, k = az.psislw(lw - lw.max())
        return float(np.asarray(k).ravel()[0])
    except Exception:  # pragma: no cover - arviz API differences (1.x): the diagnostic is optional
        return math.nan
