"""From per-configuration terms (:mod:`.terms`) to derivative estimates: the cross-fitted tangent field, and the
tangent and connected estimators side by side (:func:`derivative`: configurations -> terms -> fit -> estimates).

Layout: configurations ``(n_chains, n_traj, *theory.link_shape)`` (a chain axis is required; pass ``x[None]`` for
one chain).  All per-configuration arrays keep the ``(n_chains, n_traj)`` leading axes, so the Gamma method
treats chains as replicas.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from ..observables.gradient_flow import T0_REFERENCE, W0_REFERENCE
from ..rng import check_key
from ..stats import Stats, Windowing, sample_size_check
from .core import _T2E_RE
from .estimator import (paired_difference, per_observable, regression_slopes, second_order_difference,
                        second_order_estimate, tangent_estimate, variance_reduction)
from .fermions import FermionTraces
from .fit import FieldFit, check_cross_fit_size, cross_fit, fold_coefficients, fold_index
from .scales import flow_scale_derivative
from .spectroscopy import effective_mass_derivative, effective_mass_pairs
from .fermions import is_fermion_theory
from .passes import in_memory, two_pass
from .terms import TangentTerms, check_second_order, compute_terms, describe_traces, use_contraction

__all__ = ["DerivativeResult", "estimate", "derivative", "FIT_TARGETS", "control_variates", "observable_cross_fit",
           "fit_coefficients", "contracted_terms", "apply_fits"]

#: What the cross-fitted least squares minimises: ``field`` -- ``Var[R_v]``, one field for every observable (the
#: tangent of the ideal flow); ``observable`` -- ``Var[T_v]`` of each observable separately (control variates).
FIT_TARGETS = ("field", "observable")


@dataclass(frozen=True)
class DerivativeResult:
    """``estimates[obs][estimator]`` (:class:`~corrflow.stats.Stats`; estimators ``tangent`` and ``connected``, and
    the finite-shift ``flowed`` / ``direct`` / ``independent`` when comparison ensembles were given),
    ``reduction[obs]`` (variance reduction of tangent against connected), the per-fold fits and coefficients; with
    per-observable fits (``target == "observable"``) ``fits`` is empty and ``observable_fits[obs]`` holds each
    observable's per-fold fits (their ``reduction`` is ``Var[T_0] / Var[T_v]`` on the training configurations).
    ``agreement[obs]``: tangent minus connected with the error of the difference (:func:`paired_difference`, and
    :meth:`DerivedSeries.difference` for the derived rows ``t0/a^2``, ``w0/a``, ``m_eff@t``): both estimators are
    unbiased (derived rows up to the O(1/N) bias of a nonlinear function of means), so its ``pull(0)`` checks the
    field on any ensemble -- once the ensemble is large enough for that error to be Gaussian (``agreement_size[obs]``
    and :meth:`unreliable_agreement`: the observables' rows only).  ``second_order[obs]``: the per-fold ``γ`` of the
    second-order control variate (:func:`corrflow.tangent.second_order_estimate`) where the tangent rows carry it,
    else empty.  ``notes[row]``: why the row ``t0/a^2`` or ``w0/a`` is missing, one line starting with the row (too
    few ``t2E@T`` flow times, or the mean curve does not cross its reference inside them), where the observables
    include two or more ``t2E@T`` -- there the scales are evidently wanted; else empty."""

    estimates: dict[str, dict[str, Stats]]
    reduction: dict[str, float]
    fits: list[FieldFit]
    coef: np.ndarray
    param: str
    target: str = "field"
    observable_fits: dict[str, list[FieldFit]] = field(default_factory=dict)
    agreement: dict[str, Stats] = field(default_factory=dict)
    second_order: dict[str, list[float]] = field(default_factory=dict)
    agreement_size: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    field: dict[str, Any] = field(default_factory=dict)  # noqa: F811 (the field's description; last: it shadows field())

    def __repr__(self) -> str:
        rows = "; ".join(f"{obs}: tangent {est.get('tangent')}, connected {est.get('connected')}, reduction "
                         f"{self.reduction.get(obs, float('nan')):.3g}x" for obs, est in self.estimates.items())
        return f"DerivativeResult(d/d{self.param}: {rows})"

    def unreliable_agreement(self, threshold: float = 3.0) -> dict[str, str]:
        """``{obs: why}`` for the observables whose tangent − connected pull exceeds ``threshold`` on too few
        configurations for its error to be Gaussian: the per-configuration difference is a product of fluctuations,
        skewed (``agreement_size[obs]``: its skewness, the effective configurations ``n / (2 τ_int)`` and the
        ``28 + 25 γ1²`` a Gaussian error needs, :func:`corrflow.stats.gaussian_sample_size`), so on small ensembles
        its mean sits on the short side of the distribution with too small an error and such pulls are common."""
        out = {}
        for o, s in self.agreement.items():
            size = self.agreement_size.get(o)
            if size is None or not s.error > 0 or abs(s.pull(0.0)) <= threshold:
                continue
            if size["n_effective"] < size["n_needed"]:
                out[o] = (f"skewness {size['skewness']:.1f}, {size['n_effective']:.0f} effective configurations where "
                          f"a Gaussian error needs ~{size['n_needed']:.0f}")
        return out

    def reductions(self) -> dict[str, dict[str, float]]:
        """``{obs: {estimator: (error of connected / error of estimator)^2}}`` for every estimator."""
        return {o: {k: variance_reduction(reference=est["connected"], improved=s) for k, s in est.items()}
                for o, est in self.estimates.items()}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"observables": {OBS: {EST: {"value", "error", "tau_int"}}}, ...}``;
        ``variance_reduction[OBS][EST]["vs_connected"]``: every estimator's variance reduction against the connected
        one (the shape of the analyses' records, :mod:`corrflow.pipeline.record`); ``notes[ROW]``: why a flow-scale
        row is missing (:attr:`notes`)."""
        obs = {o: {k: {"value": s.value, "error": s.error, "tau_int": s.tau_int} for k, s in est.items()}
               for o, est in self.estimates.items()}
        vr = {o: {k: {"vs_connected": r} for k, r in per.items()} for o, per in self.reductions().items()}
        return {"param": self.param, "observables": obs, "variance_reduction": vr,
                "field": self.field, "fit_target": self.target,
                "fit": [{"coef": f.coef.tolist(), "ridge": f.ridge, "n_basis": f.n_basis,
                         "var_reduction_R": f.reduction, "condition": f.condition} for f in self.fits],
                "observable_fit": {o: [{"coef": f.coef.tolist(), "ridge": f.ridge, "n_basis": f.n_basis,
                                        "var_reduction_T": f.reduction, "condition": f.condition} for f in fs]
                                   for o, fs in self.observable_fits.items()},
                "tangent_minus_connected": {o: {"value": s.value, "error": s.error, "pull": s.pull(0.0),
                                                **self.agreement_size.get(o, {})}
                                            for o, s in self.agreement.items()},
                "notes": dict(self.notes),
                **({"second_order_gamma": dict(self.second_order)} if self.second_order else {})}


def estimate(terms: TangentTerms, coef: np.ndarray, fits: list[Any] | None = None,
             field_desc: dict[str, Any] | None = None, t0_reference: float = T0_REFERENCE,
             w0_reference: float = W0_REFERENCE, n_folds: int = 2, S: float | Windowing = 1.5) -> DerivativeResult:
    """Tangent and connected estimates from :class:`TangentTerms` and per-configuration coefficients ``coef``
    ``(n_chains, n_traj, K)`` (from :func:`corrflow.tangent.cross_fit`, or one ``(K,)`` vector for all), or one set per
    observable ``(n_obs, n_chains, n_traj, K)`` (from :func:`observable_cross_fit`; then ``fits`` is its list of
    per-observable fit lists).

    Terms with ``h`` and ``dvh`` (two passes with the second-order control variate, :func:`contracted_terms`) give the
    observables' tangent rows by :func:`corrflow.tangent.second_order_estimate`, ``γ`` cross-fitted over the same
    ``n_folds`` blocks of every chain as the field (:func:`corrflow.tangent.regression_slopes`), and the derived
    rows with the same control variate on each of their columns; the field's description then says
    ``second_order``.

    Consecutive pion correlator slices ``pion@t``, ``pion@t+1`` (``t + 1 <= L_0/2``) also give the derivative of the
    cosh effective mass, ``m_eff@t`` (:func:`corrflow.tangent.spectroscopy.effective_mass_derivative`).  ``S``: the
    Gamma method's windowing of every row (Wolff's ``S``, or a :class:`corrflow.stats.Windowing` with the exponential
    tail of a slow mode, its ``tau_exp`` in units of the configurations given)."""
    coefs = per_observable(coef, terms)
    est: dict[str, dict[str, Stats]] = {}
    red: dict[str, float] = {}
    agree: dict[str, Stats] = {}
    gammas: dict[str, list[float]] = {}
    sizes: dict[str, dict[str, float]] = {}
    explicit = terms.explicit()
    folds = fold_index(*terms.ds.shape, n_folds) if terms.dvh is not None else None
    if folds is not None:  # the weight of the control variate per observable, for its row and the derived rows
        terms = replace(terms, gamma=np.stack([regression_slopes(terms.o[..., i], terms.ds, folds)
                                               for i in range(len(terms.names))], axis=-1))
    for i, name in enumerate(terms.names):
        o = terms.o[..., i]
        av = np.sum(terms.a * coefs[i], axis=-1)  # a_v = v·∇S − ∇·v
        r = terms.ds + av
        dvo = np.sum(terms.b[..., i, :] * coefs[i], axis=-1)
        con = tangent_estimate(o, explicit[..., i], terms.ds, S=S)
        if folds is not None:
            gamma = terms.gamma[..., i]
            tan = second_order_estimate(o, dvo + explicit[..., i], r, terms.ds, terms.h, terms.dvh, gamma, S=S)
            agree[name] = second_order_difference(o, dvo + explicit[..., i], r, terms.ds, terms.h, terms.dvh, gamma,
                                                  explicit[..., i], S=S)
            gammas[name] = [float(gamma[folds == f][0]) for f in range(n_folds) if np.any(folds == f)]
        else:
            tan = tangent_estimate(o, dvo + explicit[..., i], r, S=S)
            agree[name] = paired_difference(o, dvo + explicit[..., i], r, explicit[..., i], terms.ds, S=S)
        est[name] = {"tangent": tan, "connected": con}
        red[name] = variance_reduction(reference=con, improved=tan)
        # the first-order per-configuration difference (also for second-order rows: its skew is the product's)
        sizes[name] = sample_size_check(dvo - (o - o.mean()) * (av - av.mean()), agree[name].tau_int)
    notes: dict[str, str] = {}
    flow_times = sum(1 for n in terms.names if _T2E_RE.match(n))
    for scale, ref, row in (("t0", t0_reference, "t0/a^2"), ("w0", w0_reference, "w0/a")):
        try:
            sc = flow_scale_derivative(terms, coef, reference=ref, scale=scale, S=S)
        except ValueError as exc:  # too few t2E@T columns, or the curve does not cross the reference inside the grid
            if flow_times >= 2:  # the scales are evidently wanted: say why this one is missing
                why = str(exc)
                notes[row] = why if why.startswith(f"{row}: ") else f"{row}: {why}"
            continue
        est[row] = {"tangent": sc["tangent"], "connected": sc["connected"]}
        red[row] = variance_reduction(reference=sc["connected"], improved=sc["tangent"])
        agree[row] = sc["difference"]
    for t, _, _ in effective_mass_pairs(terms.names, terms.time_extent):
        try:
            em = effective_mass_derivative(terms, coef, t, terms.time_extent, S=S)
        except ValueError:  # <C(t)> <= <C(t+1)>: no effective mass here
            continue
        est[f"m_eff@{t}"] = {"tangent": em["tangent"], "connected": em["connected"]}
        red[f"m_eff@{t}"] = variance_reduction(reference=em["connected"], improved=em["tangent"])
        agree[f"m_eff@{t}"] = em["difference"]
    per_obs = np.ndim(coef) == 4
    fits = list(fits or [])
    desc = {**(field_desc or {}), **({"second_order": True} if folds is not None else {})}
    return DerivativeResult(estimates=est, reduction=red, fits=[] if per_obs else fits, coef=np.asarray(coef),
                            param=terms.param, field=desc,
                            target="observable" if per_obs else "field",
                            observable_fits=dict(zip(terms.names, fits)) if per_obs else {}, agreement=agree,
                            second_order=gammas, agreement_size=sizes, notes=notes)


def control_variates(terms: TangentTerms, i: int) -> tuple[np.ndarray, np.ndarray]:
    """``(c, t0)`` of observable ``i``: ``T_v = t0 + Σ_k c_k coef_k`` for a field ``v = Σ_k coef_k v_k``, with

        t0 = ∂_α O − (O − Ō)(∂_α S − mean),        c_k = v_k·∇O − (O − Ō)(a_k − ā_k),   a_k = v_k·∇S − ∇·v_k;

    ``t0`` is the connected estimator's per-configuration term and every ``c_k`` has expectation zero (integration by
    parts, docs/physics.md section 7), so the ``c_k`` are control variates for ``d<O>/dα``.  Shapes ``(n_chains, n_traj,
    K)`` and ``(n_chains, n_traj)``."""
    o = terms.o[..., i]
    oc = o - o.mean()
    t0 = terms.explicit()[..., i] - oc * (terms.ds - terms.ds.mean())
    c = terms.b[..., i, :] - oc[..., None] * (terms.a - terms.a.mean(axis=(0, 1)))
    return c, t0


def observable_cross_fit(terms: TangentTerms, *, n_folds: int = 2, held_out: float = 0.25,
                         ridges: Sequence[float] | None = None, sizes: Sequence[int] | None = None
                         ) -> tuple[list[list[FieldFit]], np.ndarray]:
    """Per-observable fields: for each observable the coefficients minimising ``Var[T_v]`` (its own control-variate
    regression, :func:`control_variates`), cross-fitted exactly as :func:`corrflow.tangent.cross_fit` (no
    configuration enters its own coefficients, so the estimator stays unbiased).  Returns the fits ``[obs][fold]``
    and the coefficients ``(n_obs, n_chains, n_traj, K)``.

    Where ``∂_α S`` carries most of the variance this agrees with the ``Var[R_v]`` fit; where the observable's own
    fluctuations dominate (e.g. the explicit valence-mass derivative of a pion correlator) only it can help."""
    fits, coefs = [], []
    for i in range(len(terms.names)):
        c, t0 = control_variates(terms, i)
        f, cf = cross_fit(c, t0, n_folds=n_folds, held_out=held_out, ridges=ridges, sizes=sizes)
        fits.append(f)
        coefs.append(cf)
    return fits, np.stack(coefs)


def contracted_terms(ds: np.ndarray, a: np.ndarray, coef: np.ndarray, o: np.ndarray, dvo: np.ndarray,
                     do: np.ndarray | None, names: tuple[str, ...], param: str, time_extent: int = 0,
                     traces: dict[str, Any] | None = None, h: np.ndarray | None = None,
                     dvh: np.ndarray | None = None) -> TangentTerms:
    """:class:`TangentTerms` of the one field ``v = Σ_k coef_k v_k`` of every configuration, from the two-pass
    evaluation (:func:`~corrflow.tangent.terms.field_terms` -> ``ds``, ``a`` ``(..., K)``; ``coef`` ``(..., K)``;
    :func:`~corrflow.tangent.terms.contracted_derivatives` -> ``o``, ``dvo``, ``do`` and, with ``second_order``,
    ``h``, ``dvh``): one basis field, ``a`` ``(..., 1)`` = ``a·coef`` and ``b`` ``(..., n_obs, 1)`` = ``v·∇O``, so that
    :func:`estimate` with the coefficient ``1`` gives what it gives on the full terms with ``coef`` (and, with
    ``h`` and ``dvh``, the second-order estimates)."""
    a1 = np.einsum("...k,...k->...", np.asarray(a, float), np.asarray(coef, float))[..., None]
    return TangentTerms(o=np.asarray(o), ds=np.asarray(ds), a=a1, b=np.asarray(dvo)[..., None], names=tuple(names),
                        param=param, do=do, traces=dict(traces or {}), time_extent=int(time_extent),
                        h=None if h is None else np.asarray(h, float),
                        dvh=None if dvh is None else np.asarray(dvh, float))


def check_fit_target(target: str) -> None:
    """``ValueError`` for a fit target not in :data:`FIT_TARGETS`."""
    if target not in FIT_TARGETS:
        raise ValueError(f"unknown fit target {target!r}; allowed: {', '.join(FIT_TARGETS)}")


def fit_coefficients(terms: TangentTerms, target: str = "field", *, n_folds: int = 2, held_out: float = 0.25,
                     ridges: Sequence[float] | None = None, sizes: Sequence[int] | None = None
                     ) -> tuple[list[Any], np.ndarray]:
    """Cross-fitted coefficients for :func:`estimate` by ``target`` (:data:`FIT_TARGETS`): ``field`` gives
    ``(fits per fold, (n_chains, n_traj, K))``, ``observable`` ``(fits per observable and fold, (n_obs, n_chains,
    n_traj, K))``."""
    check_fit_target(target)
    if target == "field":
        return cross_fit(terms.a, terms.ds, n_folds=n_folds, held_out=held_out, ridges=ridges, sizes=sizes)
    return observable_cross_fit(terms, n_folds=n_folds, held_out=held_out, ridges=ridges, sizes=sizes)


def derivative(theory: Any, configs: Any, param: str, observables: Sequence[str], field_obj: Any, key: Any, *,
               n_folds: int = 2, held_out: float = 0.25, ridges: Sequence[float] | None = None,
               sizes: Sequence[int] | None = None, batch: int = 32,
               traces: FermionTraces | None = None, target: str = "field",
               valence_mass: float | None = None, pion_sources: int = 1,
               contract: bool | None = None, second_order: bool = False) -> DerivativeResult:
    """``d<O>/dα`` for each observable with the tangent estimator (field fitted by cross-fitted least squares:
    each of ``n_folds`` contiguous blocks of every chain gets coefficients fitted on the others, with ridge / basis
    size selected on ``held_out`` of the training part) and the connected estimator, from the same configurations.
    ``target``: what the fit minimises (:data:`FIT_TARGETS`); ``valence_mass``: quenched quarks for a pure-gauge
    theory, ``pion_sources``: point sources of ``pion@T`` (:func:`compute_terms`).  ``contract``: evaluate in two
    passes (:func:`~corrflow.tangent.terms.field_terms`, the fit, then
    :func:`~corrflow.tangent.terms.contracted_derivatives` along the fitted field; same estimates to rounding) instead
    of all basis fields' ``v_k·∇O`` at once; default (``None``): where it is the cheaper way
    (:func:`~corrflow.tangent.terms.contraction_pays`; only for ``target="field"``).  ``second_order``: the tangent
    rows with their second-order control variate (:func:`corrflow.tangent.second_order_estimate`; two passes, pure
    gauge, ``target="field"``, a field with coefficients).

    ``configs``: ``(n_chains, n_traj, *lattice, d[, N, N])`` (chains first, each in Monte Carlo order: the folds are
    blocks of every chain and the errors treat chains as replicas; one chain: ``configs[None]``).  ``param``: an
    action parameter of ``theory`` (``beta``, ``xi``, ``lam``; ``mass`` with Wilson fermions;
    :func:`~corrflow.tangent.core.check_parameter`).  ``observables``: names or a comma-separated string
    (``plaquette``, ``wilson_RxT``, ``t2E@T``, ``chi_top``, fermionic ``condensate``, ``pion@T``;
    :data:`~corrflow.tangent.core.OBSERVABLES`).  ``field_obj``: the vector field family, e.g.
    ``tangent.make_field("auto", theory)``.  ``key``: a JAX PRNG key (Hutchinson probes, stochastic traces).
    Returns a :class:`DerivativeResult`: ``estimates[obs]["tangent" | "connected"]`` (value, error, tau_int),
    ``reduction[obs]``, ``agreement[obs]``.
    """
    check_fit_target(target)  # before the expensive terms
    check_key(key)  # an int seed failed deep inside jax.random
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1 (configurations per jitted call), got {batch!r}")
    if not 0 <= held_out < 1:  # held_out=1.5 ran silently
        raise ValueError(f"held_out must be a fraction in [0, 1), got {held_out}")
    if field_obj is None or not hasattr(field_obj, "describe"):
        raise TypeError(f"field_obj must be a vector field family, e.g. corrflow.tangent.make_field('auto', theory); "
                        f"got {field_obj!r}")
    if isinstance(observables, str):
        observables = observables.split(",")
    observables = tuple(str(n).strip() for n in observables if str(n).strip())
    if getattr(field_obj, "n_coef", 0) and np.ndim(configs) >= 2:  # too few configurations: before the terms
        check_cross_fit_size(*np.shape(configs)[:2], field_obj.n_coef, n_folds=n_folds, held_out=held_out)
    kw = dict(batch=batch, traces=traces, valence_mass=valence_mass)
    check_second_order(second_order, theory, field_obj, target)
    if use_contraction(contract, target, observables, field_obj, second_order):
        tp = two_pass(field_obj, theory, param, observables, key, run_pass=in_memory(configs), n_folds=n_folds,
                      held_out=held_out, ridges=ridges, sizes=sizes, second_order=second_order,
                      pion_sources=pion_sources, **kw)
        terms = contracted_terms(tp.ds, tp.a, tp.coef, tp.o, tp.dvo, tp.do if is_fermion_theory(theory) else None,
                                 observables, param, int(theory.shape[0]),
                                 describe_traces(theory, observables, traces, valence_mass), h=tp.h, dvh=tp.dvh)
        return replace(estimate(terms, np.ones(1), tp.fits, field_obj.describe(), n_folds=n_folds), coef=tp.coef)
    terms = compute_terms(field_obj, theory, param, observables, configs, key, pion_sources=pion_sources, **kw)
    if field_obj.n_coef == 0:
        return estimate(terms, np.zeros(0), [], field_obj.describe())
    fits, coef = fit_coefficients(terms, target, n_folds=n_folds, held_out=held_out, ridges=ridges, sizes=sizes)
    return estimate(terms, coef, fits, field_obj.describe())


def apply_fits(terms: TangentTerms, coefs: Any) -> np.ndarray:
    """Per-configuration coefficients from saved per-fold coefficient vectors (the layout of :func:`cross_fit`):
    ``(n_folds, K)`` gives ``(n_chains, n_traj, K)``; per-observable ``(n_obs, n_folds, K)`` gives
    ``(n_obs, n_chains, n_traj, K)``."""
    if np.ndim(coefs) == 3:
        return np.stack([apply_fits(terms, c) for c in coefs])
    return fold_coefficients(coefs, *terms.ds.shape)
