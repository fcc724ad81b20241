"""Gradient-flow scales ``t0``, ``w0`` and their ratio from an ensemble's ``E(t)`` samples, with Gamma-method errors.

``E(t)`` samples come from :func:`corrflow.pipeline.measure_stored` with ``wilson_flow`` (stored as ``flow_E_clov``
/ ``flow_E_plaq`` with dims ``(chain, traj, flow_time)``) or directly from
:func:`corrflow.observables.gradient_flow.wilson_flow`.  Each scale is a function of the *ensemble mean* of
``E`` on the flow-time grid (``t0``: ``t^2 <E(t)> = ref``; ``w0^2``: ``t d/dt t^2 <E(t)> = ref``), so its error
follows from the Gamma method for derived quantities (:func:`corrflow.stats.gamma_method`, chains as replicas),
which accounts for autocorrelations along the chains and for the correlations between flow times.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .observables.gradient_flow import T0_REFERENCE, W0_REFERENCE, flow_scale, w_function
from .stats import Windowing, gamma_method

__all__ = ["flow_scales", "scales_from_store"]


def _window(t: np.ndarray, y: np.ndarray, ref: float) -> slice:
    """Grid points needed around the crossing (keeps the number of primary observables small)."""
    above = np.nonzero(y >= ref)[0]
    if above.size == 0:
        return slice(0, t.size)
    i = int(above[0])
    return slice(max(i - 4, 0), min(i + 4, t.size))


def _reached(t: np.ndarray, y: np.ndarray, ref: float, scale: str, curve: str, knob: str, t_end: float) -> None:
    """Raise ``ValueError`` naming the scale, the curve's range and what to change if the mean curve ``y(t)`` does
    not cross ``ref`` inside the grid."""
    if not np.isfinite(ref) or ref <= 0:
        raise ValueError(f"{scale}: the reference {knob} must be > 0, got {ref}")
    try:
        flow_scale(t, y, ref)
    except ValueError:
        i = int(np.nanargmax(y))
        if y[0] >= ref:
            raise ValueError(f"{scale}: {curve} is already {y[0]:.4g} >= {ref:g} at the first flow time t = {t[0]:g}; "
                             f"raise {knob} or measure on a finer flow-time grid") from None
        if i < len(y) - 1:  # the curve turned over inside the grid: a longer flow cannot reach the reference
            raise ValueError(f"{scale}: {curve} never reaches {knob} = {ref:g} (its maximum is {y[i]:.4g}, at t = "
                             f"{t[i]:g}, before the measured flow ends at t = {t_end:g}): lower {knob} below "
                             f"{y[i]:.3g}, or use a larger volume (a small one caps the flow at sqrt(8 t) ~ L/2; a "
                             "longer flow does not help)") from None
        raise ValueError(f"{scale}: {curve} never reaches {knob} = {ref:g} (at most {y[i]:.4g}, at t = {t[i]:g}; the "
                         f"measured flow ends at t = {t_end:g}): lower {knob} below {y[i]:.3g}, or measure a longer "
                         "flow (corrflow measure STORE ENSEMBLE wilson_flow --flow-t-max T --replace); a small "
                         "volume caps the useful flow time at sqrt(8 t) ~ L/2") from None


def flow_scales(t: np.ndarray, energy: np.ndarray, *, t0_ref: float = T0_REFERENCE,
                w0_ref: float = W0_REFERENCE, S: float | Windowing = 1.5, partial: bool = False) -> dict[str, Any]:
    """``{"t0": ..., "w0": ..., "sqrt_t0_over_w0": ...}`` (lattice units) as :class:`~corrflow.stats.Stats`.

    ``t``: flow times ``(k,)`` starting at 0 with uniform spacing; ``energy``: ``E(t)`` samples ``(n, k)`` (one
    chain) or ``(n_chains, n, k)``.  Raises ``ValueError`` if the mean curve does not reach a reference (flow
    longer, or lower ``t0_ref`` / ``w0_ref`` on small or coarse lattices).  ``S``: the Gamma method's windowing
    (Wolff's ``S``, or a :class:`~corrflow.stats.Windowing` with the exponential tail of a slow mode -- the
    topological charge, with which ``t0`` is correlated near the continuum).  ``partial``: a scale whose reference
    is out of reach is left out instead, with its reason in ``out["unavailable"][scale]`` (``ValueError`` only when
    neither is reached).
    """
    t = np.asarray(t, float)
    e = np.asarray(energy, float)
    if e.ndim == 2:
        e = e[None]
    if e.ndim != 3 or e.shape[-1] != t.size:
        raise ValueError(f"flow_scales: energy must be (n, k) or (n_chains, n, k) with k = len(t) = {t.size}; "
                         f"got {np.shape(energy)}")
    if not np.all(np.isfinite(e)):
        raise ValueError("flow_scales: E(t) samples contain NaN/inf (unfinished measurement?)")
    mean = e.mean(axis=(0, 1))
    y = t**2 * mean
    tm, w = w_function(t, y)
    unavailable: dict[str, str] = {}
    for scale, args in (("t0", (t, y, t0_ref, "t0", "t^2 E(t)", "t0_ref (--t0-ref)", t[-1])),
                        ("w0", (tm, w, w0_ref, "w0", "W(t) = t d/dt t^2 E", "w0_ref (--w0-ref)", t[-1]))):
        try:
            _reached(*args)  # raise early, naming the scale
        except ValueError as exc:
            bad_reference = not (np.isfinite(args[2]) and args[2] > 0)
            if not partial or unavailable or bad_reference:  # a wrong reference, or neither scale: an error
                raise
            unavailable[scale] = str(exc)
    # primary observables: E on the grid points that the crossings need (w needs neighbours; tm[i] = t[i + 1])
    spans = [] if "t0" in unavailable else [_window(t, y, t0_ref)]
    spans += [] if "w0" in unavailable else [slice(_window(tm, w, w0_ref).start, _window(tm, w, w0_ref).stop + 2)]
    lo, hi = min(sp.start for sp in spans), max(sp.stop for sp in spans)
    tt = t[lo:hi]
    data = np.moveaxis(e[..., lo:hi], -1, 0)  # (k', R, n)

    def t0_of(a: np.ndarray) -> float:
        return flow_scale(tt, tt**2 * a, t0_ref)

    def w0_of(a: np.ndarray) -> float:
        mid, ww = w_function(tt, tt**2 * a)
        return float(np.sqrt(flow_scale(mid, ww, w0_ref)))

    if unavailable:
        out: dict[str, Any] = {"unavailable": unavailable}
        if "t0" not in unavailable:
            out["t0"] = gamma_method(data, t0_of, S=S)
        if "w0" not in unavailable:
            out["w0"] = gamma_method(data, w0_of, S=S)
        return out
    out = {
        "t0": gamma_method(data, t0_of, S=S),
        "w0": gamma_method(data, w0_of, S=S),
        "sqrt_t0_over_w0": gamma_method(data, lambda a: float(np.sqrt(t0_of(a))) / w0_of(a), S=S),
    }
    return out


def scales_from_store(store: Any, name: str, *, definition: str = "clover", t0_ref: float = T0_REFERENCE,
                      w0_ref: float = W0_REFERENCE, S: float | Windowing = 1.5, partial: bool = False
                      ) -> dict[str, Any]:
    """:func:`flow_scales` of a stored ensemble measured with ``corrflow measure ... wilson_flow``; also the
    topological susceptibility ``<Q^2>/V`` at the grid point nearest ``t0`` when ``flow_Q`` is stored.

    Returns ``{"t0": Stats, "w0": Stats, "sqrt_t0_over_w0": Stats, "flow_eps": RK3 step of the stored flow (None
    if measured before it was recorded)[, "chi_top": Stats, "Q_at": t]}``."""
    key = {"clover": "flow_E_clov", "plaquette": "flow_E_plaq"}.get(definition)
    if key is None:
        raise ValueError(f"unknown E(t) definition {definition!r}; use 'clover' or 'plaquette'")
    ds = store.open_ensemble(name, verify=False)
    if key not in ds:
        spec = store.spec(name)
        if str(spec.group).lower() == "u1":
            raise ValueError(f"ensemble {name!r} is {spec.theory}: the gradient-flow scales t0 and w0 are for SU(N) gauge "
                             "fields (corrflow measure ... wilson_flow is SU(N) only)")
        raise ValueError(f"ensemble {name!r} has no {key}: run `corrflow measure {store.path} {name} wilson_flow` "
                         "first")
    t = np.asarray(ds["flow_time"].values, float)
    e = np.asarray(ds[key].values)
    res: dict[str, Any] = flow_scales(t, e, t0_ref=t0_ref, w0_ref=w0_ref, S=S, partial=partial)
    res["flow_eps"] = ds[key].attrs.get("flow_eps")
    if "flow_Q" in ds and "t0" in res:
        i = int(np.argmin(np.abs(t - res["t0"].value)))
        q = np.asarray(ds["flow_Q"].values)[..., i]
        vol = float(np.prod(ds.attrs["shape"]))
        res["chi_top"] = gamma_method(q**2 / vol, S=S)
        res["Q_at"] = float(t[i])
    return res


def describe(res: Mapping[str, Any]) -> list[str]:
    """Printable lines for :func:`scales_from_store` results."""
    lost = res.get("unavailable", {})
    lines = [f"t0/a^2        = {res['t0']}" if "t0" in res else f"t0/a^2        : not available -- {lost['t0']}",
             f"w0/a          = {res['w0']}" if "w0" in res else f"w0/a          : not available -- {lost['w0']}"]
    if "sqrt_t0_over_w0" in res:
        lines.append(f"sqrt(t0)/w0   = {res['sqrt_t0_over_w0']}")
    if "chi_top" in res:
        lines.append(f"chi_top a^4   = {res['chi_top']}   (clover Q at t = {res['Q_at']:.3g})")
    return lines
