"""From configurations to derivative estimates: per-configuration terms (jitted, vmapped), the cross-fitted
tangent field, and the tangent and connected estimators side by side.

Layout: configurations ``(n_chains, n_traj, *theory.link_shape)`` (a chain axis is required; pass ``x[None]`` for
one chain).  All per-configuration arrays keep the ``(n_chains, n_traj)`` leading axes, so the Gamma method
treats chains as replicas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..observables.fermions import valence_quarks
from ..observables.gradient_flow import T0_REFERENCE, W0_REFERENCE
from ..stats import Stats
from ..theories.fermions import WilsonFermionAction
from .core import check_charge_observables, check_parameter, observables_vector, parameter_derivative
from .estimator import per_observable, tangent_estimate, variance_reduction
from .fermions import (FermionTraces, condensate_noise, explicit_mass_derivative, fermion_derivatives, gauge_action,
                       is_fermion_theory)
from .fit import FieldFit, cross_fit, fold_index
from .scales import flow_scale_derivative
from .spectroscopy import effective_mass_derivative, effective_mass_pairs

__all__ = ["TangentTerms", "DerivativeResult", "compute_terms", "FLAT_TERMS", "estimate", "derivative", "FIT_TARGETS",
           "control_variates", "observable_cross_fit", "fit_coefficients", "observables_cost", "valence_theory",
           "cross_fitted_series"]

#: What the cross-fitted least squares minimises: ``field`` -- ``Var[R_v]``, one field for every observable (the
#: tangent of the ideal flow); ``observable`` -- ``Var[T_v]`` of each observable separately (control variates).
FIT_TARGETS = ("field", "observable")


@dataclass(frozen=True)
class TangentTerms:
    """Per-configuration ingredients, leading axes ``(n_chains, n_traj)``.

    ``o``: observables ``(..., n_obs)``; ``ds``: ``∂_α S``; ``a``: ``v_k·∇S − ∇·v_k`` ``(..., K)``;
    ``b``: ``v_k·∇O_i`` ``(..., n_obs, K)``; ``names``: the observables; ``param``: ``α``; ``do``: the explicit
    ``∂_α O_i`` at fixed links ``(..., n_obs)`` (fermionic observables under a mass derivative; ``None`` = 0);
    ``traces``: how fermion traces were evaluated (empty for pure-gauge theories); ``time_extent``: ``L_0`` (for the
    effective masses of ``pion@T`` pairs).
    """

    o: np.ndarray
    ds: np.ndarray
    a: np.ndarray
    b: np.ndarray
    names: tuple[str, ...]
    param: str
    do: np.ndarray | None = None
    traces: dict[str, Any] = field(default_factory=dict)
    time_extent: int = 0

    def explicit(self) -> np.ndarray:
        """``∂_α O`` at fixed links, ``(..., n_obs)`` (zeros when there is none)."""
        return np.zeros_like(self.o) if self.do is None else self.do


@dataclass(frozen=True)
class DerivativeResult:
    """``estimates[obs][estimator]`` (:class:`~corrflow.stats.Stats`; estimators ``tangent`` and ``connected``, and
    the finite-shift ``flowed`` / ``direct`` / ``independent`` when comparison ensembles were given),
    ``reduction[obs]`` (variance reduction of tangent against connected), the per-fold fits and coefficients; with
    per-observable fits (``target == "observable"``) ``fits`` is empty and ``observable_fits[obs]`` holds each
    observable's per-fold fits (their ``reduction`` is ``Var[T_0] / Var[T_v]`` on the training configurations)."""

    estimates: dict[str, dict[str, Stats]]
    reduction: dict[str, float]
    fits: list[FieldFit]
    coef: np.ndarray
    param: str
    target: str = "field"
    observable_fits: dict[str, list[FieldFit]] = field(default_factory=dict)
    field: dict[str, Any] = field(default_factory=dict)  # noqa: F811 (the field's description; last: it shadows field())

    def reductions(self) -> dict[str, dict[str, float]]:
        """``{obs: {estimator: (error of connected / error of estimator)^2}}`` for every estimator."""
        return {o: {k: variance_reduction(est["connected"], s) for k, s in est.items()}
                for o, est in self.estimates.items()}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"observables": {OBS: {EST: {"value", "error", "tau_int"}}}, ...}``;
        ``variance_reduction[OBS]`` is the tangent estimator's, ``variance_reductions[OBS][EST]`` every estimator's,
        both against the connected estimator."""
        obs = {o: {k: {"value": s.value, "error": s.error, "tau_int": s.tau_int} for k, s in est.items()}
               for o, est in self.estimates.items()}
        return {"param": self.param, "observables": obs, "variance_reduction": dict(self.reduction),
                "variance_reductions": self.reductions(),
                "field": self.field, "fit_target": self.target,
                "fit": [{"coef": f.coef.tolist(), "ridge": f.ridge, "n_basis": f.n_basis,
                         "var_reduction_R": f.reduction, "condition": f.condition} for f in self.fits],
                "observable_fit": {o: [{"coef": f.coef.tolist(), "ridge": f.ridge, "n_basis": f.n_basis,
                                        "var_reduction_T": f.reduction, "condition": f.condition} for f in fs]
                                   for o, fs in self.observable_fits.items()}}


@lru_cache(maxsize=32)
def _kernel(field_obj: Any, group: Any, shape: tuple[int, ...], param: str, names: tuple[str, ...],
            traces: FermionTraces | None, valence_mass: float | None = None, pion_sources: int = 1) -> Any:
    if valence_mass is not None:  # quenched: valence quarks on a pure-gauge field; S, R_v and ∂_α S purely gluonic
        def one_valence(u: Any, key: Any, theory: Any) -> tuple[Any, ...]:
            quarks = valence_quarks(theory, mass=valence_mass)
            k_field, k_noise = jax.random.split(key)
            eta = condensate_noise(quarks, k_noise, traces) if "condensate" in names else None
            obs_vec = observables_vector(names, group, shape, quarks, eta, pion_sources)
            a, b = field_obj.terms(u, theory, obs_vec, k_field)
            o = obs_vec(u)
            return o, parameter_derivative(theory, param)(u), a, b, jnp.zeros_like(o)

        return jax.jit(jax.vmap(one_valence, in_axes=(0, 0, None)))
    if traces is None:  # pure gauge: unchanged since the first version (same keys, same programs)
        obs_vec = observables_vector(names, group, shape)

        def one(u: Any, key: Any, theory: Any) -> tuple[Any, ...]:
            d_action = parameter_derivative(theory, param)
            a, b = field_obj.terms(u, theory, obs_vec, key)
            o = obs_vec(u)
            return o, d_action(u), a, b, jnp.zeros_like(o)

        return jax.jit(jax.vmap(one, in_axes=(0, 0, None)))

    def one_fermion(u: Any, key: Any, theory: Any) -> tuple[Any, ...]:
        gauge = gauge_action(theory)
        k_field, k_noise = jax.random.split(key)
        eta = condensate_noise(theory, k_noise, traces) if "condensate" in names else None
        vec_of = lambda th: observables_vector(names, group, shape, th, eta, pion_sources)  # noqa: E731
        obs_vec = vec_of(theory)
        a, b = field_obj.terms(u, gauge, obs_vec, k_field)
        o = obs_vec(u)
        if param == "mass":
            ds = None
            do = explicit_mass_derivative(vec_of, theory, u)
        else:
            ds = parameter_derivative(gauge, param)(u)
            do = jnp.zeros_like(o)
        if param == "mass" or field_obj.n_coef:
            dm, vs = fermion_derivatives(theory, u, field_obj.vectors(u, gauge), k_noise, traces)
            a = a + vs.astype(a.dtype)
            if param == "mass":
                ds = dm
        return o, ds, a, b, do.astype(o.dtype)

    return jax.jit(jax.vmap(one_fermion, in_axes=(0, 0, None)))


def valence_theory(theory: Any, valence_mass: float | None) -> WilsonFermionAction | None:
    """The quenched Wilson quarks of bare mass ``valence_mass`` on the pure-gauge ``theory`` (``None`` for ``None``);
    ``ValueError`` (one line) for a theory with dynamical quarks or ``m + d <= 0``."""
    if valence_mass is None:
        return None
    if is_fermion_theory(theory):
        raise ValueError("--valence-mass is for pure-gauge ensembles; this one has dynamical quarks, whose mass is the "
                         "valence mass of its fermionic observables (leave out --valence-mass)")
    return valence_quarks(theory, mass=float(valence_mass))


@lru_cache(maxsize=32)
def _observables_kernel(group: Any, shape: tuple[int, ...], names: tuple[str, ...], traces: FermionTraces | None,
                        valence_mass: float | None, fermion: bool, pion_sources: int = 1) -> Any:
    def one(u: Any, key: Any, theory: Any) -> Any:
        quarks = valence_quarks(theory, mass=valence_mass) if valence_mass is not None else theory if fermion else None
        eta = condensate_noise(quarks, key, traces) if quarks is not None and "condensate" in names else None
        return observables_vector(names, group, shape, quarks, eta, pion_sources)(u)

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None)))


def observables_cost(theory: Any, names: Sequence[str], configs: Any, *, traces: FermionTraces | None = None,
                     valence_mass: float | None = None, repeat: int = 2, pion_sources: int = 1) -> float:
    """Seconds per configuration (steady state: compilation excluded, best of ``repeat``) of the observables alone
    on ``configs`` ``(n, *link_shape)`` (one vmapped batch) -- what the connected estimator pays per configuration
    besides generation, so that the variance reduction at equal cost compares like with like when the observables
    are expensive (pion correlators, Wilson-flowed ``t2E@T``)."""
    import time

    names = tuple(names)
    fermion = is_fermion_theory(theory)
    tr = (traces or FermionTraces()) if fermion or valence_mass is not None else None
    kern = _observables_kernel(theory.group, tuple(theory.shape), names, tr,
                               None if valence_mass is None else float(valence_mass), fermion, int(pion_sources))
    u = jnp.asarray(configs)
    keys = jax.random.split(jax.random.PRNGKey(0), u.shape[0])
    jax.block_until_ready(kern(u, keys, theory))
    best = float("inf")
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        jax.block_until_ready(kern(u, keys, theory))
        best = min(best, time.perf_counter() - t)
    return best / u.shape[0]


#: names of the flat per-configuration outputs of :func:`compute_terms` (``resume`` / ``on_batch``), in order
FLAT_TERMS = ("o", "ds", "a", "b", "do")


def compute_terms(field_obj: Any, theory: Any, param: str, names: Sequence[str], configs: Any, key: Any,
                  *, batch: int = 32, progress: Any = None, traces: FermionTraces | None = None,
                  resume: Sequence[np.ndarray] = (), on_batch: Any = None,
                  valence_mass: float | None = None, pion_sources: int = 1) -> TangentTerms:
    """Evaluate :class:`TangentTerms` on ``configs`` ``(n_chains, n_traj, *link_shape)`` in jitted batches.

    Configuration ``i`` (flattened chain-major) uses the key ``fold_in(key, i)`` for its Hutchinson probes (and, for
    fermion theories, a split of it for the trace noise), so the terms of a configuration do not depend on the batch
    it is evaluated in.  ``traces``: how fermion traces are evaluated (default :class:`FermionTraces` ``()``: exact on
    small lattices, stochastic otherwise; for a pure-gauge theory only the ``condensate`` of valence quarks uses it).

    ``valence_mass``: a pure-gauge ``theory`` measured with *valence* (quenched) Wilson quarks of this bare mass
    (:func:`corrflow.observables.fermions.valence_quarks`): the fermionic observables ``pion@T`` and
    ``condensate`` become available, ``v·∇O`` differentiates through their solves, while ``∂_α S`` and ``R_v`` stay
    purely gluonic (no determinant in the quenched measure).  ``ValueError`` for a theory with dynamical quarks
    (its own quarks are the valence quarks).  ``pion_sources``: ``pion@T`` averaged over this many point sources
    (:func:`corrflow.observables.fermions.pion_correlator`; one solve per source).

    Interruption and resumption: ``on_batch(stop, flat)`` is called after every batch with the flat outputs
    (:data:`FLAT_TERMS`, each ``(stop, ...)``) of configurations ``0 .. stop - 1``; passing such outputs of the first
    ``m`` configurations as ``resume`` continues at configuration ``m``.  ``progress(done, total)`` after every batch.
    ``ValueError`` for an unknown observable, a parameter the theory lacks or ``resume`` arrays that do not fit
    (raised before any computation).
    """
    names = tuple(str(n).strip() for n in names)
    if not names:
        raise ValueError("give at least one observable, e.g. plaquette,wilson_2x2")
    fermion = is_fermion_theory(theory)
    quarks = valence_theory(theory, valence_mass)
    observables_vector(names, theory.group, tuple(theory.shape), theory if fermion else quarks,  # validate names
                       pion_sources=pion_sources)
    check_parameter(theory, param)
    field_obj.check(gauge_action(theory))
    check_charge_observables(names, field_obj)
    tr = (traces or FermionTraces()) if fermion or quarks is not None else None
    configs = np.asarray(configs) if not isinstance(configs, jax.Array) else configs
    lead = configs.shape[: configs.ndim - len(theory.link_shape)]
    if len(lead) != 2 or tuple(configs.shape[len(lead):]) != tuple(theory.link_shape):
        raise ValueError(f"configurations must have shape (n_chains, n_traj, *{tuple(theory.link_shape)}); got "
                         f"{tuple(configs.shape)}")
    n = int(lead[0] * lead[1])
    flat = configs.reshape((n,) + tuple(theory.link_shape))
    kern = _kernel(field_obj, theory.group, tuple(theory.shape), param, names, tr,
                   None if quarks is None else float(quarks.mass), int(pion_sources))
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
    outs: list[list[np.ndarray]] = [[], [], [], [], []]
    first = 0
    if len(resume):
        m = {int(np.shape(r)[0]) if np.ndim(r) else -1 for r in resume}
        if len(resume) != len(FLAT_TERMS) or len(m) != 1 or not 0 <= next(iter(m)) <= n:
            raise ValueError(f"resume needs the {len(FLAT_TERMS)} flat outputs {FLAT_TERMS} of the same first m <= {n} "
                             "configurations")
        first = next(iter(m))
        for lst, r in zip(outs, resume):
            lst.append(np.asarray(r))
        if progress is not None:
            progress(first, n)
    for start in range(first, n, batch):
        stop = min(start + batch, n)
        idx = np.arange(start, start + batch) % n  # pad the last batch (same shape: no recompilation)
        res = kern(jnp.asarray(flat[idx]), keys[idx], theory)
        for lst, r in zip(outs, res):
            lst.append(np.asarray(r)[: stop - start])
        if on_batch is not None:  # the outputs of configurations 0 .. stop - 1, kept as one array each
            for lst in outs:
                lst[:] = [np.concatenate(lst)]
            on_batch(stop, [x[0] for x in outs])
        if progress is not None:
            progress(stop, n)
    o, ds, a, b, do = (np.concatenate(x).reshape(tuple(lead) + x[0].shape[1:]) for x in outs)
    if quarks is not None:
        described = {"valence_mass": float(quarks.mass)}
        if "condensate" in names:
            described.update(tr.describe(quarks))
    else:
        described = tr.describe(theory) if tr is not None else {}
    return TangentTerms(o=o, ds=ds, a=a, b=b, names=names, param=param, do=do if fermion else None,
                        traces=described, time_extent=int(theory.shape[0]))


def estimate(terms: TangentTerms, coef: np.ndarray, fits: list[Any] | None = None,
             field_desc: dict[str, Any] | None = None, t0_reference: float = T0_REFERENCE,
             w0_reference: float = W0_REFERENCE) -> DerivativeResult:
    """Tangent and connected estimates from :class:`TangentTerms` and per-configuration coefficients ``coef``
    ``(n_chains, n_traj, K)`` (from :func:`corrflow.tangent.cross_fit`, or one ``(K,)`` vector for all), or one set per
    observable ``(n_obs, n_chains, n_traj, K)`` (from :func:`observable_cross_fit`; then ``fits`` is its list of
    per-observable fit lists).

    Consecutive pion correlator slices ``pion@t``, ``pion@t+1`` (``t + 1 <= L_0/2``) also give the derivative of the
    cosh effective mass, ``m_eff@t`` (:func:`corrflow.tangent.spectroscopy.effective_mass_derivative`)."""
    coefs = per_observable(coef, terms)
    est: dict[str, dict[str, Stats]] = {}
    red: dict[str, float] = {}
    explicit = terms.explicit()
    for i, name in enumerate(terms.names):
        o = terms.o[..., i]
        r = terms.ds + np.sum(terms.a * coefs[i], axis=-1)
        dvo = np.sum(terms.b[..., i, :] * coefs[i], axis=-1)
        tan = tangent_estimate(o, dvo + explicit[..., i], r)
        con = tangent_estimate(o, explicit[..., i], terms.ds)
        est[name] = {"tangent": tan, "connected": con}
        red[name] = variance_reduction(con, tan)
    for scale, ref, row in (("t0", t0_reference, "t0/a^2"), ("w0", w0_reference, "w0/a")):
        try:
            sc = flow_scale_derivative(terms, coef, reference=ref, scale=scale)
        except ValueError:  # too few t2E@T columns, or the curve does not cross the reference inside the grid
            continue
        est[row] = {"tangent": sc["tangent"], "connected": sc["connected"]}
        red[row] = variance_reduction(sc["connected"], sc["tangent"])
    for t, _, _ in effective_mass_pairs(terms.names, terms.time_extent):
        try:
            em = effective_mass_derivative(terms, coef, t, terms.time_extent)
        except ValueError:  # <C(t)> <= <C(t+1)>: no effective mass here
            continue
        est[f"m_eff@{t}"] = {"tangent": em["tangent"], "connected": em["connected"]}
        red[f"m_eff@{t}"] = variance_reduction(em["connected"], em["tangent"])
    per_obs = np.ndim(coef) == 4
    fits = list(fits or [])
    return DerivativeResult(estimates=est, reduction=red, fits=[] if per_obs else fits, coef=np.asarray(coef),
                            param=terms.param, field=dict(field_desc or {}),
                            target="observable" if per_obs else "field",
                            observable_fits=dict(zip(terms.names, fits)) if per_obs else {})


def control_variates(terms: TangentTerms, i: int) -> tuple[np.ndarray, np.ndarray]:
    """``(c, t0)`` of observable ``i``: ``T_v = t0 + Σ_k c_k coef_k`` for a field ``v = Σ_k coef_k v_k``, with

        t0 = ∂_α O − (O − Ō)(∂_α S − mean),        c_k = v_k·∇O − (O − Ō)(a_k − ā_k),   a_k = v_k·∇S − ∇·v_k;

    ``t0`` is the connected estimator's per-configuration term and every ``c_k`` has expectation zero (integration by
    parts, PHYSICS.md section 7), so the ``c_k`` are control variates for ``d<O>/dα``.  Shapes ``(n_chains, n_traj,
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


def cross_fitted_series(a: np.ndarray, ds: np.ndarray, b: np.ndarray, do: np.ndarray | None = None, *,
                        n_folds: int = 2, held_out: float = 0.25
                        ) -> tuple[np.ndarray, np.ndarray, list[FieldFit], float]:
    """The tangent estimator's per-configuration series with the cross-fitted field that minimises ``Var[R_v]``
    (:func:`corrflow.tangent.cross_fit`: no configuration enters its own coefficients), for analyses that combine them
    themselves (effective masses, plateau fits): ``(R_v, v·∇O + ∂O, fits, seconds of the fit)`` from the terms
    ``a`` ``(..., K)``, ``ds`` ``(...)``, ``b`` ``(..., n_obs, K)`` and the explicit ``do`` ``(..., n_obs)`` (``None``:
    0), leading axes ``(n_chains, n_traj)``; ``R_v`` ``(...)``, ``v·∇O + ∂O`` ``(..., n_obs)``.  Without basis fields
    (``K = 0``) the connected estimator's series."""
    import time

    a, ds, b = np.asarray(a, float), np.asarray(ds, float), np.asarray(b, float)
    t0 = time.perf_counter()
    fits, coef = cross_fit(a, ds, n_folds=n_folds, held_out=held_out) if a.shape[-1] else ([], np.zeros(a.shape))
    seconds = time.perf_counter() - t0
    d = np.einsum("...ik,...k->...i", b, coef)
    return ds + np.einsum("...k,...k->...", a, coef), d if do is None else d + np.asarray(do, float), fits, seconds


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
               valence_mass: float | None = None, pion_sources: int = 1) -> DerivativeResult:
    """``d<O>/dα`` for each observable with the tangent estimator (field fitted by cross-fitted least squares:
    each of ``n_folds`` contiguous blocks of every chain gets coefficients fitted on the others, with ridge / basis
    size selected on ``held_out`` of the training part) and the connected estimator, from the same configurations.
    ``target``: what the fit minimises (:data:`FIT_TARGETS`); ``valence_mass``: quenched quarks for a pure-gauge
    theory, ``pion_sources``: point sources of ``pion@T`` (:func:`compute_terms`).
    """
    check_fit_target(target)  # before the expensive terms
    terms = compute_terms(field_obj, theory, param, observables, configs, key, batch=batch, traces=traces,
                          valence_mass=valence_mass, pion_sources=pion_sources)
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
    nc, nt = terms.ds.shape
    folds = fold_index(nc, nt, len(coefs))
    out = np.zeros(terms.a.shape)
    for f, c in enumerate(coefs):
        out[folds == f] = np.asarray(c, float)
    return out
