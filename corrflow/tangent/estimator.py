"""The tangent-flow derivative estimator and the connected estimator (its ``v = 0`` case).

For ``p_α ∝ e^{-S_α}`` and a vector field ``v`` (docs/physics.md section 7)::

    R_v = ∂_α S + v·∇S − ∇·v,      T_v = v·∇O − (O − <O>)(R_v − <R_v>),      E[T_v] = d<O>/dα  for every v.

The estimate is the derived quantity ``mean(v·∇O) − [mean(O R_v) − mean(O) mean(R_v)]`` of four primary
per-configuration series, with an autocorrelation-aware error from Wolff's Gamma method
(:func:`corrflow.stats.gamma_method`, gradient projection; replicas = chains).  ``v = 0`` gives the connected
estimator ``−<O ∂_α S>_c`` from the same code.  Inputs are per-configuration arrays with layout
``(n_chains, n_traj)`` (a 1-D array is one chain).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

import numpy as np

from ..stats import Stats, Windowing, gamma_method

if TYPE_CHECKING:
    from .terms import TangentTerms

__all__ = ["tangent_estimate", "connected_estimate", "paired_difference", "tangent_values", "variance_reduction",
           "DerivedSeries", "derived_series", "per_observable", "second_order_estimate", "second_order_difference",
           "regression_slopes"]


def _as_chains(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, float)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected per-configuration values of shape (n_traj,) or (n_chains, n_traj); "
                         f"got {np.shape(x)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: non-finite values")
    return arr


def _derived(m: np.ndarray) -> float:
    # m = means of (v·∇O, O, R, O R)
    return float(m[0] - (m[3] - m[1] * m[2]))


def tangent_estimate(o: Any, dvo: Any, r: Any, S: float | Windowing = 1.5) -> Stats:
    """``d<O>/dα`` from per-configuration ``O``, ``v·∇O`` and ``R_v`` (all ``(n_chains, n_traj)``).

    Returns :class:`corrflow.stats.Stats` (value, Gamma-method error and ``tau_int`` of the projected
    fluctuation ``T_v``).  Needs at least 10 configurations per chain.
    """
    o_, d_, r_ = _as_chains(o, "O"), _as_chains(dvo, "v·∇O"), _as_chains(r, "R_v")
    if not (o_.shape == d_.shape == r_.shape):
        raise ValueError(f"O, v·∇O and R_v must have the same shape; got {o_.shape}, {d_.shape}, {r_.shape}")
    # shift O and R by constants (exact invariance of the estimator) to keep the products well conditioned
    o_c = o_ - o_.mean()
    r_c = r_ - r_.mean()
    data = np.stack([d_, o_c, r_c, o_c * r_c])
    return gamma_method(data, _derived, S=S)


def connected_estimate(o: Any, ds: Any, S: float | Windowing = 1.5) -> Stats:
    """The connected estimator ``−(<O ∂_α S> − <O><∂_α S>)``: :func:`tangent_estimate` with ``v = 0``."""
    o_ = _as_chains(o, "O")
    return tangent_estimate(o_, np.zeros_like(o_), ds, S=S)


def _difference(m: np.ndarray) -> float:
    # m = means of (v_a·∇O, v_b·∇O, O, R_a, R_b, O R_a, O R_b): each estimate is _derived of its four
    return _derived(m[[0, 2, 3, 5]]) - _derived(m[[1, 2, 4, 6]])


def paired_difference(o: Any, dvo_a: Any, r_a: Any, dvo_b: Any, r_b: Any, S: float | Windowing = 1.5) -> Stats:
    """``T_a − T_b``: the difference of two estimates of ``d<O>/dα`` from the *same* configurations (two fields, or a
    field against ``v = 0``, the connected estimator: ``dvo_b`` the explicit ``∂_α O`` alone, ``r_b = ∂_α S``), all
    inputs ``(n_chains, n_traj)``.  Both estimates are derived from one set of primaries, so the Gamma-method error is
    that of the difference, their correlation included: for a least-squares field it is about
    ``sqrt(err_b² − err_a²)``, far below the sum in quadrature.  Both are unbiased, so ``|pull(0)|`` of a few sigma
    says a field or its divergence is wrong -- a check that needs no exact result."""
    o_ = _as_chains(o, "O")
    arrs = [_as_chains(x, n) for x, n in ((dvo_a, "v_a·∇O"), (r_a, "R_a"), (dvo_b, "v_b·∇O"), (r_b, "R_b"))]
    if any(x.shape != o_.shape for x in arrs):
        raise ValueError(f"O, v·∇O and R must have the same shape; got {[o_.shape] + [x.shape for x in arrs]}")
    d_a, ra, d_b, rb = arrs
    o_c, ra_c, rb_c = o_ - o_.mean(), ra - ra.mean(), rb - rb.mean()
    return gamma_method(np.stack([d_a, d_b, o_c, ra_c, rb_c, o_c * ra_c, o_c * rb_c]), _difference, S=S)


def _second_order_primaries(o: Any, dvo: Any, r: Any, ds: Any, h: Any, dvh: Any, gamma: Any) -> np.ndarray:
    """The eleven primaries of :func:`second_order_estimate` ``(11, n_chains, n_traj)``: ``v·∇O``, ``O_c``, ``R_c``,
    ``O_c R_c``, ``γ v·∇h``, ``γ h_c a_c``, ``γ a_c``, ``γ h_c``, ``γ``, ``a_c``, ``h_c`` (``_c``: minus the sample
    mean; ``a = R − ∂_α S``)."""
    o_, d_, r_, s_, h_, dh, g = (_as_chains(x, n) for x, n in ((o, "O"), (dvo, "v·∇O"), (r, "R_v"), (ds, "∂_α S"),
                                                               (h, "h"), (dvh, "v·∇h"), (gamma, "gamma")))
    if not (o_.shape == d_.shape == r_.shape == s_.shape == h_.shape == dh.shape == g.shape):
        raise ValueError("O, v·∇O, R_v, ∂_α S, h, v·∇h and gamma must have the same shape; got "
                         f"{[x.shape for x in (o_, d_, r_, s_, h_, dh, g)]}")
    a_ = r_ - s_
    o_c, r_c, a_c, h_c = o_ - o_.mean(), r_ - r_.mean(), a_ - a_.mean(), h_ - h_.mean()
    return np.stack([d_, o_c, r_c, o_c * r_c, g * dh, g * h_c * a_c, g * a_c, g * h_c, g, a_c, h_c])


def _derived2(m: np.ndarray) -> float:
    # T_v (means 0-3, as _derived) + the control variate  γ [v·∇h − (h − h̄)(a − ā)]  from means 4-10
    cv = m[4] - (m[5] - m[10] * m[6] - m[9] * m[7] + m[10] * m[9] * m[8])
    return _derived(m[:4]) + cv


def second_order_estimate(o: Any, dvo: Any, r: Any, ds: Any, h: Any, dvh: Any, gamma: Any,
                          S: float | Windowing = 1.5) -> Stats:
    """``d<O>/dα`` by the tangent estimator with its second-order control variate (all inputs ``(n_chains, n_traj)``)::

        T_v + γ [v·∇h − (h − <h>)(a_v − <a_v>)],      a_v = R_v − ∂_α S = v·∇S − ∇·v,   h = R_v.

    The bracket is the integration-by-parts identity with ``h`` in place of ``O`` (docs/physics.md section 7:
    ``E[v·∇h] = Cov(h, a_v)`` for any smooth ``h``), so it has expectation zero for any per-configuration ``γ`` that
    does not depend on the configuration's own data (cross-fitted), and for a divergence estimated with Hutchinson
    probes as long as ``h`` carries probes independent of those in ``a_v`` (``h`` and ``dvh`` from the second pass of
    :func:`corrflow.tangent.contracted_derivatives`; ``r`` = ``∂_α S + a_v`` from the first).  Why it pays: for
    ``O = κ ∂_α S`` (the plaquette under β) and ``γ = κ``, ``T_v`` plus the bracket is ``κ [v·∇(∂_α S) + v·∇R_v −
    (R_v − <R_v>)²]``: the product ``(O − Ō)(R − R̄)``, whose variance falls only like ``Var[R_v]``
    (``Var[∂_α S] Var[R_v] + Var[R_v]²`` for Gaussian fluctuations), becomes ``(R − R̄)²``, whose variance falls
    like ``Var[R_v]²``; for other observables ``γ`` is the regression slope of ``O`` on ``∂_α S``
    (:func:`regression_slopes`) and the gain is that of the part of ``O`` that follows the action.  Gamma-method
    error of the derived quantity (eleven primaries)."""
    return gamma_method(_second_order_primaries(o, dvo, r, ds, h, dvh, gamma), _derived2, S=S)


def second_order_difference(o: Any, dvo: Any, r: Any, ds: Any, h: Any, dvh: Any, gamma: Any, explicit: Any,
                            S: float | Windowing = 1.5) -> Stats:
    """:func:`second_order_estimate` minus the connected estimate (``explicit``: ``∂_α O`` at fixed links, zeros for
    gluonic observables) from the same configurations, with the error of the difference (one Gamma-method analysis
    of both sets of primaries, as :func:`paired_difference`)."""
    p2 = _second_order_primaries(o, dvo, r, ds, h, dvh, gamma)
    e_ = _as_chains(explicit, "∂_α O")
    s_ = _as_chains(ds, "∂_α S")
    o_c, s_c = p2[1], s_ - s_.mean()
    p0 = np.stack([e_, o_c, s_c, o_c * s_c])
    n = len(p2)
    return gamma_method(np.concatenate([p2, p0]), lambda m: _derived2(m[:n]) - _derived(m[n:]), S=S)


def regression_slopes(o: Any, ds: Any, folds: np.ndarray) -> np.ndarray:
    """Per-configuration ``γ = Cov(O, ∂_α S) / Var(∂_α S)``, cross-fitted: configuration ``i`` in fold ``f``
    (``folds`` ``(n_chains, n_traj)`` of integers) gets the slope fitted on the other folds (on everything when there
    is one fold), so that ``γ`` does not depend on its own data and :func:`second_order_estimate` stays unbiased.
    ``o``, ``ds``: ``(n_chains, n_traj)``; returns ``(n_chains, n_traj)``."""
    o_, s_ = _as_chains(o, "O"), _as_chains(ds, "∂_α S")
    folds = np.asarray(folds)
    out = np.zeros_like(o_)
    for f in np.unique(folds):
        train = folds != f if len(np.unique(folds)) > 1 else np.ones_like(folds, bool)
        x, y = s_[train], o_[train]
        var = np.var(x)
        out[folds == f] = np.mean((x - x.mean()) * (y - y.mean())) / var if var > 0 else 0.0
    return out


def tangent_values(o: Any, dvo: Any, r: Any) -> np.ndarray:
    """Per-configuration ``T_v = v·∇O − (O − Ō)(R_v − R̄)`` (sample means), shape ``(n_chains, n_traj)``."""
    o_, d_, r_ = _as_chains(o, "O"), _as_chains(dvo, "v·∇O"), _as_chains(r, "R_v")
    return d_ - (o_ - o_.mean()) * (r_ - r_.mean())


def variance_reduction(*, reference: Stats, improved: Stats) -> float:
    """``(error_reference / error_improved)^2``: the factor fewer configurations ``improved`` needs for the same
    error (autocorrelations included).  Keyword-only: :func:`corrflow.stats.variance_reduction` takes the improved
    estimate first (``variance_reduction(improved, reference)``), and a positional call here would silently give the
    inverse of what the other name gives."""
    if improved.error == 0:
        return float("inf")
    return float((reference.error / improved.error) ** 2)


class DerivedSeries(NamedTuple):
    """Primary series for derived quantities of several observables' tangent (or connected) estimates.

    ``with_field`` / ``connected``: the Gamma-method primaries ``(4k, chains, traj)`` with the field / with
    ``v = 0``: ``O − Ō`` (k), ``∂_α O + v·∇O`` (k), ``(O − Ō)(R − R̄)`` (k) and ``R − R̄`` (k; one column per
    observable, since per-observable fits give each its own ``R_v``); with the second-order control variate
    (terms with ``h``, ``dvh`` and ``gamma``) ``with_field`` has ``11k`` rows, the seven more per column of
    :func:`second_order_estimate` (``γ v·∇h``, ``γ h_c a_c``, ``γ a_c``, ``γ h_c``, ``γ``, ``a_c``, ``h_c``);
    ``shift``: the means of the (transformed) observables; ``raw_shift``: ``Ō`` of the k columns; ``transform``:
    ``(k', k)`` or ``None``.  :meth:`unpack` turns the means ``m`` of either into ``(<O>, d<O>/dα)`` of the
    transformed observables, each ``(k',)``.
    """

    with_field: np.ndarray
    connected: np.ndarray
    shift: np.ndarray
    raw_shift: np.ndarray
    transform: np.ndarray | None = None

    def difference(self, func: Any, S: float | Windowing = 1.5) -> Stats:
        """``func(means with the field) − func(means with v = 0)`` -- a derived quantity's tangent minus connected
        estimate -- with the error of the difference: one Gamma-method analysis of both sets of primaries, so their
        correlation is included (:func:`paired_difference` for the observables themselves)."""
        n = len(self.with_field)
        return gamma_method(np.concatenate([self.with_field, self.connected]), lambda m: func(m[:n]) - func(m[n:]),
                            S=S)

    def unpack(self, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = self.raw_shift.size
        o = m[:k] + self.raw_shift
        d = m[k:2 * k] - (m[2 * k:3 * k] - m[:k] * m[3 * k:4 * k])
        if len(m) == 11 * k:  # the second-order control variate of every column (as _derived2)
            c = [m[j * k:(j + 1) * k] for j in range(4, 11)]
            d = d + c[0] - (c[1] - c[6] * c[2] - c[5] * c[3] + c[6] * c[5] * c[4])
        if self.transform is not None:
            o, d = self.transform @ o, self.transform @ d
        return o, d


def per_observable(coef: Any, terms: "TangentTerms") -> np.ndarray:
    """Coefficients of every observable, ``(n_obs, n_chains, n_traj, K)``, from one field for all observables
    (``(K,)`` or ``(n_chains, n_traj, K)``) or from per-observable fits (``(n_obs, n_chains, n_traj, K)``)."""
    c = np.asarray(coef, float)
    n_obs = len(terms.names)
    if c.ndim == 4:
        if c.shape != (n_obs,) + terms.a.shape:
            raise ValueError(f"per-observable coefficients must have shape {(n_obs,) + terms.a.shape}, got {c.shape}")
        return c
    return np.broadcast_to(np.broadcast_to(c, terms.a.shape), (n_obs,) + terms.a.shape)


def derived_series(terms: "TangentTerms", coef: Any, idx: Sequence[int], transform: np.ndarray | None = None
                   ) -> DerivedSeries:
    """:class:`DerivedSeries` of observables ``idx`` of ``terms`` with per-configuration coefficients ``coef``
    (as for :func:`corrflow.tangent.estimate`: one field, or one per observable; with the second-order control
    variate where ``terms`` carry ``h``, ``dvh`` and the per-column ``gamma``).  ``transform`` ``(k', k)``: a fixed
    linear map of the observable columns (it commutes with the estimator, e.g. a finite-difference derivative in flow
    time), applied to the unpacked means and derivatives."""
    idx = list(idx)
    cf = per_observable(coef, terms)[idx]  # (k, chains, traj, K)
    o = terms.o[..., idx]
    ex = terms.explicit()[..., idx]
    dvo = np.einsum("ctkj,kctj->ctk", terms.b[..., idx, :], cf) + ex
    r = terms.ds[..., None] + np.einsum("ctj,kctj->ctk", terms.a, cf)
    raw = o.mean(axis=(0, 1))

    def series(d: np.ndarray, rr: np.ndarray, second: bool = False) -> np.ndarray:
        oc, rc = o - raw, rr - rr.mean(axis=(0, 1))
        parts = [oc, d, oc * rc, rc]
        if second:  # columns of _second_order_primaries' rows 4-10, per observable
            g = terms.gamma[..., idx]
            av = rr - terms.ds[..., None]
            a_c = av - av.mean(axis=(0, 1))
            h_c = np.broadcast_to((terms.h - terms.h.mean())[..., None], g.shape)
            parts += [g * terms.dvh[..., None], g * h_c * a_c, g * a_c, g * h_c, g, a_c, h_c]
        return np.concatenate([np.moveaxis(x, -1, 0) for x in parts])

    con = series(ex, np.broadcast_to(terms.ds[..., None], r.shape))
    shift = raw if transform is None else np.asarray(transform, float) @ raw
    second = terms.h is not None and getattr(terms, "gamma", None) is not None
    return DerivedSeries(with_field=series(dvo, r, second), connected=con, shift=shift, raw_shift=raw,
                         transform=None if transform is None else np.asarray(transform, float))
