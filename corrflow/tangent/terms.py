"""Per-configuration terms of the tangent estimators: jitted, vmapped, in batches that can be interrupted and resumed.

Three evaluations of the same ingredients (docs/physics.md section 7; ``v_k`` the field's basis,
``a_k = v_k·∇S − ∇·v_k``):

* :func:`compute_terms` -- everything: ``O``, ``∂_α S``, ``a_k``, ``v_k·∇O`` for every basis field, ``∂_α O``
  (:class:`TangentTerms`); what the per-observable fits and the reports of every basis field need;
* :func:`field_terms` -- ``(∂_α S, a_k)`` alone: all that the ``Var[R_v]`` fit reads;
* :func:`contracted_derivatives` -- ``(O, v·∇O, ∂_α O)`` along the one fitted field ``v = Σ_k c_k v_k`` of each
  configuration (one forward-mode pass).  For observables behind linear solves (pion correlators, the stochastic
  condensate) ``v_k·∇O`` costs a solve per basis field (or per output, in reverse mode) and the contracted
  derivative one solve per field: the two-pass evaluation (fit on :func:`field_terms`, then contract) gives the
  same estimates (to rounding) for a fraction of the cost.

Layout: configurations ``(n_chains, n_traj, *theory.link_shape)``; every output keeps the ``(n_chains, n_traj)``
leading axes.  Configuration ``i`` (flattened chain-major) uses the key ``fold_in(key, i)`` in all three, so its
probes and noise vectors do not depend on the batch or the pass it is evaluated in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..observables.fermions import valence_quarks
from ..theories.fermions import WilsonFermionAction
from .core import (check_charge_observables, check_parameter, observables_vector, parameter_derivative,
                   value_and_directional_derivative)
from .fermions import (FermionTraces, condensate_noise, fermion_derivatives, gauge_action, is_fermion_theory,
                       value_and_derivatives, value_and_mass_derivative)

__all__ = ["TangentTerms", "compute_terms", "FLAT_TERMS", "field_terms", "FIELD_TERMS", "contracted_derivatives",
           "CONTRACTED_TERMS", "SECOND_ORDER_TERMS", "check_second_order", "use_contraction", "contraction_pays", "costly_observables", "describe_traces",
           "observables_cost",
           "valence_theory"]

#: names of the flat per-configuration outputs of :func:`compute_terms` (``resume`` / ``on_batch``), in order
FLAT_TERMS = ("o", "ds", "a", "b", "do")
#: the same for :func:`field_terms`
FIELD_TERMS = ("ds", "a")
#: the same for :func:`contracted_derivatives` (``dvo``: ``v·∇O`` along the configuration's fitted field)
CONTRACTED_TERMS = ("o", "dvo", "do")
#: the same with ``second_order``: also ``h`` = ``R_v`` and ``dvh`` = ``v·∇R_v`` along the fitted field, with
#: Hutchinson probes independent of the first pass's (fold_in(key, 1) of the field's key): the control variate
#: ``v·∇h − (h − h̄)(a_v − ā_v)`` has zero mean only if the probe noise of ``h`` and of ``a_v`` is independent (their
#: product would otherwise keep the probes' variance); for fields with exact divergences ``h`` is ``R_v`` itself
SECOND_ORDER_TERMS = ("o", "dvo", "do", "h", "dvh")
MODES = ("full", "field", "contract", "second")


@dataclass(frozen=True)
class TangentTerms:
    """Per-configuration ingredients, leading axes ``(n_chains, n_traj)``.

    ``o``: observables ``(..., n_obs)``; ``ds``: ``∂_α S``; ``a``: ``v_k·∇S − ∇·v_k`` ``(..., K)``;
    ``b``: ``v_k·∇O_i`` ``(..., n_obs, K)``; ``names``: the observables; ``param``: ``α``; ``do``: the explicit
    ``∂_α O_i`` at fixed links ``(..., n_obs)`` (fermionic observables under a mass derivative; ``None`` = 0);
    ``traces``: how fermion traces were evaluated (empty for pure-gauge theories); ``time_extent``: ``L_0`` (for the
    effective masses of ``pion@T`` pairs); ``h``, ``dvh``: ``R_v`` (independent probes) and ``v·∇R_v`` ``(n_chains,
    n_traj)`` along each configuration's one fitted field (two-pass terms with the second-order control variate,
    :func:`contracted_derivatives`), else None; ``gamma``: their weight per observable ``(n_chains, n_traj, n_obs)``
    (set by :func:`corrflow.tangent.estimate`, cross-fitted).
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
    h: np.ndarray | None = None
    dvh: np.ndarray | None = None
    gamma: np.ndarray | None = None

    def explicit(self) -> np.ndarray:
        """``∂_α O`` at fixed links, ``(..., n_obs)`` (zeros when there is none)."""
        return np.zeros_like(self.o) if self.do is None else self.do


@lru_cache(maxsize=32)
def _kernel(field_obj: Any, group: Any, shape: tuple[int, ...], param: str, names: tuple[str, ...],
            traces: FermionTraces | None, valence_mass: float | None = None, pion_sources: int = 1,
            mode: str = "full") -> Any:
    """``jit(vmap(one))`` of one configuration's terms by ``mode`` (:data:`MODES`): ``full`` -- ``one(u, key, theory)``
    -> :data:`FLAT_TERMS`; ``field`` -- :data:`FIELD_TERMS`; ``contract`` -- ``one(u, key, c, theory)`` ->
    :data:`CONTRACTED_TERMS` along ``v = Σ_k c_k v_k``; ``second`` (pure gauge) -- :data:`SECOND_ORDER_TERMS`, the
    same plus ``h = ∂_α S + Σ_k c_k a_k`` (``R_v``, with independent probes) and its derivative along ``v`` (forward
    mode through the field's own terms).  The keys split the same way in every mode."""

    def no_observables(u: Any) -> Any:  # what the field's own terms differentiate in the field pass: nothing
        return jnp.zeros((0,), u.real.dtype)

    def fitted_field(u: Any, c: Any, theory: Any) -> Any:  # v = Σ_k c_k v_k, coordinates (*coords)
        x = field_obj.vectors(u, theory)  # (K, *coords)
        return jnp.tensordot(c.astype(x.dtype), x, axes=1)

    def contracted(obs_vec: Any, u: Any, c: Any, theory: Any) -> tuple[Any, Any]:
        return value_and_directional_derivative(obs_vec, u, fitted_field(u, c, theory), group)

    def gluonic(key: Any, theory: Any) -> tuple[Any, Any]:
        """The observables vector and the field's key of a pure-gauge theory: with valence quarks (quenched: no
        determinant, so ``S``, ``R_v`` and ``∂_α S`` stay gluonic) a split of the key for their noise; without, the
        key itself (unchanged since the first version: same keys, same programs)."""
        if valence_mass is None:
            return observables_vector(names, group, shape), key
        quarks = valence_quarks(theory, mass=valence_mass)
        k_field, k_noise = jax.random.split(key)
        eta = condensate_noise(quarks, k_noise, traces) if "condensate" in names else None
        return observables_vector(names, group, shape, quarks, eta, pion_sources), k_field

    if valence_mass is not None or traces is None:
        def one(u: Any, key: Any, *rest: Any) -> tuple[Any, ...]:
            theory = rest[-1]
            obs_vec, k_field = gluonic(key, theory)
            if mode == "contract":
                o, dvo = contracted(obs_vec, u, rest[0], theory)
                return o, dvo, jnp.zeros_like(o)
            if mode == "second":
                c = rest[0]
                k_h = jax.random.fold_in(k_field, 1)  # probes independent of the first pass's (see SECOND_ORDER_TERMS)

                def with_residual(uu: Any) -> tuple[Any, Any]:
                    a, _ = field_obj.terms(uu, theory, no_observables, k_h)
                    return obs_vec(uu), parameter_derivative(theory, param)(uu) + jnp.dot(a, c.astype(a.dtype))

                (o, h), (dvo, dvh) = value_and_directional_derivative(with_residual, u, fitted_field(u, c, theory),
                                                                      group)
                return o, dvo, jnp.zeros_like(o), h, dvh
            a, b = field_obj.terms(u, theory, no_observables if mode == "field" else obs_vec, k_field)
            ds = parameter_derivative(theory, param)(u)
            if mode == "field":
                return ds, a
            o = obs_vec(u)
            return o, ds, a, b, jnp.zeros_like(o)

        return _vmapped(one, mode)

    def one_fermion(u: Any, key: Any, *rest: Any) -> tuple[Any, ...]:
        theory = rest[-1]
        gauge = gauge_action(theory)
        k_field, k_noise = jax.random.split(key)
        eta = condensate_noise(theory, k_noise, traces) if "condensate" in names else None
        vec_of = lambda th: observables_vector(names, group, shape, th, eta, pion_sources)  # noqa: E731
        obs_vec = vec_of(theory)
        if mode == "contract":
            if param == "mass":  # both derivatives from one linearisation: the solves of O once
                o, dvo, do = value_and_derivatives(vec_of, theory, u, fitted_field(u, rest[0], gauge))
                return o, dvo, do.astype(o.dtype)
            o, dvo = contracted(obs_vec, u, rest[0], gauge)
            return o, dvo, jnp.zeros_like(o)
        a, b = field_obj.terms(u, gauge, no_observables if mode == "field" else obs_vec, k_field)
        ds = None if param == "mass" else parameter_derivative(gauge, param)(u)
        if param == "mass" or field_obj.n_coef:
            dm, vs = fermion_derivatives(theory, u, field_obj.vectors(u, gauge), k_noise, traces)
            a = a + vs.astype(a.dtype)
            if param == "mass":
                ds = dm
        if mode == "field":
            return ds, a
        if param == "mass":
            o, do = value_and_mass_derivative(vec_of, theory, u)
            return o, ds, a, b, do.astype(o.dtype)
        o = obs_vec(u)
        return o, ds, a, b, jnp.zeros_like(o)

    return _vmapped(one_fermion, mode)


def _vmapped(one: Callable[..., Any], mode: str) -> Any:
    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None) if mode in ("contract", "second") else (0, 0, None)))


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


@dataclass(frozen=True)
class _Setup:
    """What every evaluation of :func:`_setup` needs: the checked names, traces, valence quarks and flat configs."""

    names: tuple[str, ...]
    traces: FermionTraces | None
    quarks: WilsonFermionAction | None
    lead: tuple[int, ...]
    flat: Any
    keys: Any


def _setup(field_obj: Any, theory: Any, param: str, names: Sequence[str], configs: Any, key: Any,
           traces: FermionTraces | None, valence_mass: float | None, pion_sources: int,
           need_observables: bool = True) -> _Setup:
    """Validate everything before any computation (``ValueError``: an unknown observable, a parameter the theory lacks,
    configurations of the wrong shape) and flatten the configurations chain-major."""
    names = tuple(str(n).strip() for n in names)
    if need_observables and not names:
        raise ValueError("give at least one observable, e.g. plaquette,wilson_2x2")
    fermion = is_fermion_theory(theory)
    quarks = valence_theory(theory, valence_mass)
    if names:
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
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
    return _Setup(names, tr, quarks, tuple(lead), configs.reshape((n,) + tuple(theory.link_shape)), keys)


def _evaluate(kern: Any, st: _Setup, theory: Any, outputs: tuple[str, ...], per_config: tuple[np.ndarray, ...] = (),
              *, batch: int, progress: Any, resume: Sequence[np.ndarray], on_batch: Any) -> list[np.ndarray]:
    """Run ``kern(u, keys, *per_config, theory)`` over the configurations in batches of ``batch`` (the last one padded:
    no recompilation); resume after the first ``m`` configurations whose flat ``outputs`` are ``resume``; call
    ``on_batch(stop, flat)`` and ``progress(stop, n)`` after every batch.  Returns the flat outputs ``(n, ...)``."""
    n = st.flat.shape[0]
    bufs: list[np.ndarray] = []  # the flat outputs (n, ...), filled batch by batch (no copy of what is done)

    def fill(lo: int, hi: int, arrays: Sequence[np.ndarray]) -> None:
        if not bufs:
            bufs.extend(np.empty((n, *np.shape(a)[1:]), dtype=np.asarray(a).dtype) for a in arrays)
        for buf, a in zip(bufs, arrays):
            buf[lo:hi] = a

    first = 0
    if len(resume):
        m = {int(np.shape(r)[0]) if np.ndim(r) else -1 for r in resume}
        if len(resume) != len(outputs) or len(m) != 1 or not 0 <= next(iter(m)) <= n:
            raise ValueError(f"resume needs the {len(outputs)} flat outputs {outputs} of the same first m <= {n} "
                             "configurations")
        first = next(iter(m))
        fill(0, first, [np.asarray(r) for r in resume])
        if progress is not None:
            progress(first, n)
    for start in range(first, n, batch):
        stop = min(start + batch, n)
        idx = np.arange(start, start + batch) % n  # pad the last batch (same shape: no recompilation)
        res = kern(jnp.asarray(st.flat[idx]), st.keys[idx], *(jnp.asarray(x[idx]) for x in per_config), theory)
        fill(start, stop, [np.asarray(r)[: stop - start] for r in res])
        if on_batch is not None:  # the outputs of configurations 0 .. stop - 1 (views of the buffers)
            on_batch(stop, [buf[:stop] for buf in bufs])
        if progress is not None:
            progress(stop, n)
    return [buf.reshape(st.lead + buf.shape[1:]) for buf in bufs]


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
    st = _setup(field_obj, theory, param, names, configs, key, traces, valence_mass, pion_sources)
    kern = _kernel(field_obj, theory.group, tuple(theory.shape), param, st.names, st.traces,
                   None if st.quarks is None else float(st.quarks.mass), int(pion_sources))
    o, ds, a, b, do = _evaluate(kern, st, theory, FLAT_TERMS, batch=batch, progress=progress, resume=resume,
                                on_batch=on_batch)
    return TangentTerms(o=o, ds=ds, a=a, b=b, names=st.names, param=param,
                        do=do if is_fermion_theory(theory) else None,
                        traces=describe_traces(theory, st.names, traces, valence_mass),
                        time_extent=int(theory.shape[0]))


def describe_traces(theory: Any, names: Sequence[str], traces: FermionTraces | None = None,
                    valence_mass: float | None = None) -> dict[str, Any]:
    """How the fermion traces of terms on ``theory`` are evaluated (the record :attr:`TangentTerms.traces`): empty for
    a pure-gauge theory without valence quarks; with valence quarks their mass (and the traces if ``condensate`` is
    among ``names``)."""
    quarks = valence_theory(theory, valence_mass)
    if quarks is not None:
        tr = traces or FermionTraces()
        return {"valence_mass": float(quarks.mass), **(tr.describe(quarks) if "condensate" in names else {})}
    return (traces or FermionTraces()).describe(theory) if is_fermion_theory(theory) else {}


def field_terms(field_obj: Any, theory: Any, param: str, configs: Any, key: Any, *, batch: int = 32,
                progress: Any = None, traces: FermionTraces | None = None, resume: Sequence[np.ndarray] = (),
                on_batch: Any = None, valence_mass: float | None = None, observables: Sequence[str] = (),
                pion_sources: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(∂_α S, a)`` with ``a_k = v_k·∇S − ∇·v_k`` ``(n_chains, n_traj, K)``: the first pass of the two-pass
    evaluation (module docstring), equal to :func:`compute_terms`' ``ds`` and ``a`` (same keys, probes and trace
    noise).  Arguments, resumption (:data:`FIELD_TERMS`) and errors as :func:`compute_terms`; ``observables`` and
    ``pion_sources`` (those of the second pass) are only checked here, so that a bad name fails before the first
    pass."""
    st = _setup(field_obj, theory, param, observables, configs, key, traces, valence_mass, pion_sources,
                need_observables=False)
    kern = _kernel(field_obj, theory.group, tuple(theory.shape), param, (), st.traces,
                   None if st.quarks is None else float(st.quarks.mass), 1, mode="field")
    ds, a = _evaluate(kern, st, theory, FIELD_TERMS, batch=batch, progress=progress, resume=resume,
                      on_batch=on_batch)
    return ds, a


def contracted_derivatives(field_obj: Any, theory: Any, param: str, names: Sequence[str], configs: Any, key: Any,
                           coef: Any, *, batch: int = 32, progress: Any = None, traces: FermionTraces | None = None,
                           resume: Sequence[np.ndarray] = (), on_batch: Any = None,
                           valence_mass: float | None = None, pion_sources: int = 1, second_order: bool = False
                           ) -> tuple[np.ndarray, ...]:
    """``(O, v·∇O, ∂_α O)`` ``(n_chains, n_traj, n_obs)`` along each configuration's field ``v = Σ_k coef_k v_k``
    (``coef`` ``(n_chains, n_traj, K)``, e.g. from :func:`corrflow.tangent.cross_fit` on :func:`field_terms`): one
    forward-mode pass per configuration, equal to :func:`compute_terms`' ``o``, ``Σ_k coef_k b_k`` and ``do`` (zeros
    without an explicit dependence) to rounding.  ``second_order`` (pure-gauge theories, valence quarks allowed):
    also ``h`` = ``R_v`` (with Hutchinson probes independent of the first pass's) and ``v·∇h`` ``(n_chains,
    n_traj)`` (:data:`SECOND_ORDER_TERMS`; the control variate of :func:`corrflow.tangent.second_order_estimate`),
    through the field's terms in forward mode (about five times the first pass with the held-out smoothing field).
    Arguments, resumption (:data:`CONTRACTED_TERMS` / :data:`SECOND_ORDER_TERMS`) and errors as :func:`compute_terms`;
    ``ValueError`` for coefficients of the wrong shape, ``second_order`` with dynamical quarks."""
    st = _setup(field_obj, theory, param, names, configs, key, traces, valence_mass, pion_sources)
    coef = np.asarray(coef, float)
    if coef.shape != st.lead + (field_obj.n_coef,):
        raise ValueError(f"coefficients must have shape {st.lead + (field_obj.n_coef,)} (chains, configurations, "
                         f"basis fields); got {coef.shape}")
    check_second_order(second_order, theory, field_obj)
    mode = "second" if second_order else "contract"
    kern = _kernel(field_obj, theory.group, tuple(theory.shape), param, st.names, st.traces,
                   None if st.quarks is None else float(st.quarks.mass), int(pion_sources), mode=mode)
    return tuple(_evaluate(kern, st, theory, SECOND_ORDER_TERMS if second_order else CONTRACTED_TERMS,
                           (coef.reshape((-1, coef.shape[-1])),), batch=batch, progress=progress, resume=resume,
                           on_batch=on_batch))


def check_second_order(second_order: bool, theory: Any, field_obj: Any, target: str = "field") -> None:
    """One-line ``ValueError`` where the second-order control variate cannot be used: dynamical quarks (``v·∇R_v``
    would differentiate their traces), ``target != "field"`` (it is built on the one fitted field) or a field without
    coefficients (``v = 0``: nothing to differentiate)."""
    if not second_order:
        return
    if is_fermion_theory(theory):
        raise ValueError("--second-order needs v.grad R_v, which with dynamical quarks would differentiate the fermion "
                         "traces: pure-gauge ensembles only (valence quarks are fine)")
    if target != "field":
        raise ValueError("--second-order is built on the one fitted field: use it with --fit field")
    if not field_obj.n_coef:
        raise ValueError("--second-order needs a tangent field (not --field none)")


def use_contraction(contract: bool | None, target: str, names: Sequence[str], field_obj: Any,
                    second_order: bool = False) -> bool:
    """Whether the terms come in two passes (:func:`field_terms`, the fit, :func:`contracted_derivatives`): asked for
    (``contract``), or by default where :func:`contraction_pays`; always with ``second_order`` (its ``v·∇R_v`` is
    along the fitted field); never for ``target != "field"`` or a field without coefficients."""
    if contract is None or second_order:
        contract = second_order or (target == "field" and contraction_pays(names, field_obj))
    return bool(contract) and target == "field" and field_obj.n_coef > 0


def costly_observables(names: Sequence[str]) -> bool:
    """Whether any of ``names`` is measured through linear solves or a Wilson flow (``pion@T``, ``condensate``,
    ``t2E@T``): its value costs more than the loops', and its derivative a solve or a flow per direction."""
    return any(n == "condensate" or n.startswith(("pion@", "t2E@")) for n in names)


def contraction_pays(names: Sequence[str], field_obj: Any) -> bool:
    """Whether the two-pass evaluation (:func:`field_terms`, fit, :func:`contracted_derivatives`) is the cheaper one
    for a ``Var[R_v]`` fit: with two or more basis fields and a :func:`costly_observables` one.  For cheap observables
    (plaquette, Wilson loops) the second pass would only recompute the basis fields."""
    return field_obj.n_coef >= 2 and costly_observables(names)
