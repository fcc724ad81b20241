"""The two-pass evaluation of the tangent estimator, once for every caller: the field's terms, the cross-fitted fit,
then ``v·∇O`` (and, with the second-order control variate, ``v·∇R_v``) along each configuration's fitted field.

:func:`derivative` (in memory), ``corrflow derivative`` (:func:`corrflow.pipeline.tangent.derivative_from_store`,
checkpoints beside the store) and the analyses (:func:`corrflow.pipeline.analysis.measure_tangent`, checkpoints in
the flow directory) differ only in where a pass's outputs are kept, so that an interrupted pass resumes.  They pass
that as ``run_pass(name, key, outputs, compute)``:

* ``name``: ``"field"`` (outputs :data:`~.terms.FIELD_TERMS`), ``"contracted"`` (:data:`~.terms.CONTRACTED_TERMS`)
  or ``"second-order"`` (:data:`~.terms.SECOND_ORDER_TERMS`);
* ``key``: what the second pass's outputs depend on beyond the configurations and the caller's settings (the fitted
  coefficients, ``second_order``); empty for the first pass;
* ``compute(configs, progress, resume, on_batch)``: the pass on ``configs`` ``(n_chains, n_traj, ...)`` -- the
  caller's configurations or a chain-major reshaping of them -- with the resumption protocol of
  :mod:`corrflow.tangent.terms`; it returns the tuple of ``outputs`` with the same leading axes;
* returns ``(the tuple of outputs on the caller's (n_chains, n_traj) layout, seconds, configurations resumed)``.

:func:`in_memory` is the runner without persistence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .fit import FieldFit, cross_fit, fold_coefficients
from .terms import CONTRACTED_TERMS, FIELD_TERMS, SECOND_ORDER_TERMS, contracted_derivatives, field_terms

__all__ = ["TwoPass", "two_pass", "in_memory", "PASS_OUTPUTS"]

#: a pass's name -> the names of its outputs
PASS_OUTPUTS = {"field": FIELD_TERMS, "contracted": CONTRACTED_TERMS, "second-order": SECOND_ORDER_TERMS}


@dataclass(frozen=True)
class TwoPass:
    """The outputs of :func:`two_pass`, leading axes ``(n_chains, n_traj)``: ``ds`` ``∂_α S``, ``a`` ``(..., K)`` the
    basis fields' ``v_k·∇S − ∇·v_k``, ``coef`` ``(..., K)`` each configuration's cross-fitted coefficients, ``fits``
    the per-fold fits (empty when saved coefficients were given), ``o``, ``dvo`` and ``do`` ``(..., n_obs)``, ``h``
    and ``dvh`` (second order only, else None); ``field_s`` / ``derivatives_s`` the seconds of the two passes,
    ``fit_s`` the fit's, ``resumed`` the configurations of the first pass read back instead of computed."""

    ds: np.ndarray
    a: np.ndarray
    coef: np.ndarray
    o: np.ndarray
    dvo: np.ndarray
    do: np.ndarray
    h: np.ndarray | None = None
    dvh: np.ndarray | None = None
    fits: list[FieldFit] = field(default_factory=list)
    field_s: float = 0.0
    derivatives_s: float = 0.0
    fit_s: float = 0.0
    resumed: int = 0

    @property
    def r(self) -> np.ndarray:
        """``R_v = ∂_α S + Σ_k coef_k a_k`` of every configuration."""
        return self.ds + np.einsum("...k,...k->...", self.a, self.coef)


def in_memory(configs: Any, progress: Any = None) -> Callable[..., tuple[tuple[np.ndarray, ...], float, int]]:
    """The ``run_pass`` of :func:`two_pass` that keeps nothing: each pass computed on ``configs``, timed."""
    def run(name: str, key: dict[str, Any], outputs: tuple[str, ...], compute: Callable[..., Any]
            ) -> tuple[tuple[np.ndarray, ...], float, int]:
        t0 = time.perf_counter()
        out = compute(configs, progress, (), None)
        return tuple(out), time.perf_counter() - t0, 0
    return run


def two_pass(field_obj: Any, theory: Any, param: str, names: Sequence[str], key: Any, *,
             run_pass: Callable[..., tuple[tuple[np.ndarray, ...], float, int]], n_folds: int = 2,
             held_out: float = 0.25, ridges: Sequence[float] | None = None, sizes: Sequence[int] | None = None,
             saved_coef: np.ndarray | None = None, second_order: bool = False, pion_sources: int = 1,
             **options: Any) -> TwoPass:
    """Both passes of the tangent estimator of ``names`` (module docstring): the field's terms
    (:func:`~corrflow.tangent.terms.field_terms`), the coefficients -- cross-fitted least squares of ``Var[R_v]`` in
    ``n_folds`` blocks of every chain with ``held_out`` (and ``ridges``, ``sizes``) for the ridge and basis size
    (:func:`~corrflow.tangent.cross_fit`), or the
    per-fold ``saved_coef`` ``(n_folds, K)`` of an earlier fit -- then ``v·∇O`` along each configuration's field
    (:func:`~corrflow.tangent.terms.contracted_derivatives`, ``second_order``: with ``h``, ``v·∇h``).  ``key``: the
    PRNG key (configuration ``i``, chain-major, uses ``fold_in(key, i)``); ``options`` (``batch``, ``traces``,
    ``valence_mass``) go to both passes.  A field without coefficients gets zero coefficients and no fit."""
    names = tuple(names)

    def first(cfgs: Any, progress: Any, resume: Any, on_batch: Any) -> tuple[np.ndarray, ...]:
        return field_terms(field_obj, theory, param, cfgs, key, progress=progress, resume=resume, on_batch=on_batch,
                           observables=names, pion_sources=pion_sources, **options)

    (ds, a), field_s, resumed = run_pass("field", {}, FIELD_TERMS, first)
    ds, a = np.asarray(ds), np.asarray(a)
    t0 = time.perf_counter()
    fits: list[FieldFit] = []
    if saved_coef is not None:
        coef = fold_coefficients(np.asarray(saved_coef), *ds.shape)
    elif a.shape[-1]:
        fits, coef = cross_fit(a, ds, n_folds=n_folds, held_out=held_out, ridges=ridges, sizes=sizes)
    else:
        coef = np.zeros(a.shape)
    fit_s = time.perf_counter() - t0
    per_fold = saved_coef if saved_coef is not None else [f.coef for f in fits]
    name = "second-order" if second_order else "contracted"

    def second(cfgs: Any, progress: Any, resume: Any, on_batch: Any) -> tuple[np.ndarray, ...]:
        c = coef.reshape(tuple(np.shape(cfgs)[:2]) + coef.shape[-1:])  # the caller's layout, or chain-major
        return contracted_derivatives(field_obj, theory, param, names, cfgs, key, c, progress=progress, resume=resume,
                                      on_batch=on_batch, pion_sources=pion_sources, second_order=second_order,
                                      **options)

    extra = {"coef": [np.asarray(c).tolist() for c in per_fold], **({"second_order": True} if second_order else {})}
    out, derivatives_s, _ = run_pass(name, extra, PASS_OUTPUTS[name], second)
    o, dvo, do, *rest = (np.asarray(x) for x in out)
    return TwoPass(ds=ds, a=a, coef=coef, o=o, dvo=dvo, do=do, h=rest[0] if rest else None,
                   dvh=rest[1] if rest else None, fits=fits, field_s=float(field_s),
                   derivatives_s=float(derivatives_s), fit_s=fit_s, resumed=int(resumed))
