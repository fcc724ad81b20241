"""When a Monte Carlo mean may be read with a Gaussian error: the skewness of the per-sample values and the sample
size it asks for.

A mean of ``n`` independent values is close to Gaussian only once ``n`` outgrows the skewness ``γ1`` of their
distribution: Cochran's rule ``n > 25 γ1²``, refined by Sugden, Smith & Jones (2000) to ``n > 28 + 25 γ1²`` (the
size at which a two-sided 95% interval has at most 1% excess error in each tail).  Connected correlators are the
case in point: the product ``(O − Ō)(R − R̄)`` of two strongly correlated fluctuations is distributed like a shifted
χ²₁ (skewness up to 2√2), bounded on one side with a long tail on the other, so on few configurations its mean sits on
the bounded side with an error that is too small, and ``|pull| > 3`` is no rare event.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as _sp

__all__ = ["gaussian_sample_size", "sample_size_check"]


def gaussian_sample_size(x: Any) -> tuple[float, float]:
    """``(γ1, n_needed)``: the sample skewness of the per-sample values ``x`` (any shape, flattened; finite values)
    and the number of *independent* samples ``28 + 25 γ1²`` above which their mean's error may be read as Gaussian
    (module docstring).  Compare ``n_needed`` with the effective sample size ``n / (2 τ_int)``."""
    v = np.asarray(x, dtype=float).ravel()
    if v.size < 3 or not np.all(np.isfinite(v)) or np.ptp(v) == 0:
        return 0.0, 28.0
    g = float(_sp.skew(v, bias=False))
    return g, 28.0 + 25.0 * g * g


def sample_size_check(x: Any, tau_int: float) -> dict[str, float]:
    """``{"skewness", "n_effective", "n_needed"}`` of the per-sample values ``x`` whose mean has the integrated
    autocorrelation time ``tau_int``: :func:`gaussian_sample_size` against ``n / (2 τ_int)`` (``τ_int`` at least 1/2).
    The mean's error reads as Gaussian where ``n_effective >= n_needed``."""
    skew, needed = gaussian_sample_size(x)
    return {"skewness": skew, "n_effective": np.size(x) / (2.0 * max(float(tau_int), 0.5)), "n_needed": needed}
