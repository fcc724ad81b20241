"""Export of paired Monte Carlo samples to pyerrors ``Obs`` objects.

`pyerrors <https://github.com/fjosw/pyerrors>`_ is an optional dependency
(``pip install pyerrors``); it is imported only when these functions are
called.  It serves as an independent implementation of the Gamma method with
automatic error propagation.

Convention
----------
An array of shape ``(n,)`` or ``(R, n)`` (``R`` chains of equal length) is
one observable measured on ensemble ``ensemble``; chain ``r`` becomes the
pyerrors replica ``f"{ensemble}|r{r}"`` (pyerrors splits ensemble and
replica names at ``'|'``), with configuration numbers ``1 .. n``.  All
observables exported together use the same ensemble/replica names and
configuration numbers, so pyerrors treats them as measured on the same
configurations and keeps their correlations in derived quantities.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from .reweighting import _as_samples, _check_same_shape, _normalised_weights

if TYPE_CHECKING:  # pragma: no cover
    import pyerrors

__all__ = ["reweighted_obs", "to_pyerrors"]


def _import_pyerrors() -> ModuleType:
    try:
        import pyerrors
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "corrflow.stats.pyerrors_export needs the optional package pyerrors; "
            "install it with `pip install pyerrors`"
        ) from exc
    return pyerrors


def _check_ensemble(ensemble: str) -> str:
    if not isinstance(ensemble, str) or not ensemble:
        raise ValueError(f"ensemble must be a non-empty string, got {ensemble!r}")
    if "|" in ensemble:
        raise ValueError(
            f"ensemble name {ensemble!r} must not contain '|' (pyerrors' replica separator)"
        )
    return ensemble


def to_pyerrors(samples: dict[str, np.ndarray], ensemble: str) -> dict[str, pyerrors.Obs]:
    """Convert paired sample arrays to pyerrors observables.

    Parameters
    ----------
    samples : dict[str, array_like]
        Observable name -> samples of shape ``(n,)`` or ``(R, n)``; all arrays
        must have the same shape (measurements on the same configurations),
        finite values and ``n >= 10``.
    ensemble : str
        pyerrors ensemble name (non-empty, without ``'|'``).

    Returns
    -------
    dict[str, pyerrors.Obs]
        Same keys; each ``Obs`` has replicas ``f"{ensemble}|r{r}"``,
        ``r = 0 .. R-1`` (also ``"|r0"`` for a single chain).

    Raises
    ------
    ImportError
        If pyerrors is not installed.
    ValueError
        Empty ``samples``, bad ensemble name, bad shapes or values.
    """
    _check_ensemble(ensemble)
    if not samples:
        raise ValueError("samples is empty")
    arrays = {name: _as_samples(arr, f"samples[{name!r}]") for name, arr in samples.items()}
    _check_same_shape({f"samples[{k!r}]": v for k, v in samples.items()})
    pe = _import_pyerrors()
    out: dict[str, pyerrors.Obs] = {}
    for name, arr in arrays.items():
        names = [f"{ensemble}|r{r}" for r in range(arr.shape[0])]
        out[name] = pe.Obs([row.copy() for row in arr], names)
    return out


def reweighted_obs(
    obs_flowed: np.ndarray, log_w: np.ndarray, ensemble: str
) -> pyerrors.Obs:
    """pyerrors ``Obs`` of ``<w O>/<w>`` built with pyerrors arithmetic.

    Parameters
    ----------
    obs_flowed : array_like, shape (n,) or (R, n)
        ``O(f(U_i))`` on the (flowed) base samples.
    log_w : array_like, same shape
        Log weights (``-inf`` allowed, no NaN/``+inf``).
    ensemble : str
        pyerrors ensemble name.

    Returns
    -------
    pyerrors.Obs
        ``Obs(w~ O) / Obs(w~)`` with ``w~ = exp(log_w - max(log_w))``; call
        ``.gamma_method(S=...)`` on it for the error (pyerrors' default ``S``
        is 2.0, corrflow's 1.5).
    """
    o = _as_samples(obs_flowed, "obs_flowed")
    lw = _as_samples(log_w, "log_w", log_weight=True)
    _check_same_shape({"obs_flowed": obs_flowed, "log_w": log_w})
    w, _ = _normalised_weights(lw)
    pe_obs = to_pyerrors({"wO": w * o, "w": w}, ensemble)
    return pe_obs["wO"] / pe_obs["w"]
