"""Fermion parts of the tangent estimator: ``∂_m S_eff``, ``v·∇S_eff`` and fermionic observables (issue 15).

Wilson fermions, ``n_f`` degenerate flavours (:mod:`corrflow.theories.fermions`; ``D = (m + d) - H/2``, so
``∂_m D = 1``)::

    S_eff = S_g − n_f log|det D|,    ∂_m S_eff = −n_f Re tr D^{-1},    v·∇S_f = −n_f Re tr(D^{-1} (v·∇D)).

Two ways to evaluate the traces (:class:`FermionTraces`):

* ``exact``: forward-mode derivatives of the dense log-determinant (Gauss–Jordan on the even–odd Schur complement;
  small lattices only, cost ``(V Ns Nc / 2)^3`` per configuration);
* ``stochastic``: ``tr(D^{-1} X) = E_η[χ^† X η]`` with ``χ = D^{-†} η = D y``, ``(D^† D) y = η`` (one CG solve per noise
  vector and configuration, all noise vectors and configurations of a batch solved together) and noise vectors
  with ``E[η η^†] = 1`` (``z2``: independent ±1 components, the lowest-variance choice for a real-diagonal-dominated
  ``D^{-1}``; ``gaussian``: complex unit normal).  ``v·∇D η`` is one ``jax.jvp`` of the Dirac operator along the
  field; every field shares the same solves.

The trace noise enters ``R_v`` linearly and is drawn independently of everything the observables use, so the
estimator ``T_v`` stays unbiased; its extra variance is part of the Gamma-method error like the Monte Carlo noise.

Fermionic observables (``O`` depends on ``m`` explicitly, so ``d<O>/dm = <∂_m O> + ...``; the explicit part is a
forward-mode derivative in ``m``): ``condensate`` (``Σ = Re tr D^{-1} / V`` per flavour: dense with exact traces,
otherwise the unbiased noise-vector estimate of :func:`corrflow.observables.fermions.chiral_condensate_stochastic`,
its own noise vectors drawn independently of those of ``∂_m S`` and ``v·∇S_f`` so that ``T_v`` stays unbiased) and
``pion@T`` (the point-source pion correlator ``C(T)`` of :func:`corrflow.observables.fermions.pion_correlator`, through
the CG solver; all ``pion@T`` of one call share one set of propagators).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from .. import rng
from ..observables.fermions import chiral_condensate, chiral_condensate_stochastic, check_dense, pion_correlator
from ..theories.fermions import WilsonFermionAction, conjugate_gradient, dirac, dirac_dagger, even_mask
from .core import lift, parameter_jvp, value_and_parameter_jvp

Array = jax.Array

__all__ = ["FermionTraces", "TRACE_METHODS", "NOISE_KINDS", "FERMION_OBSERVABLES", "is_fermion_theory",
           "gauge_action", "fermion_derivatives", "fermion_observable", "trace_noise", "condensate_noise",
           "DILUTIONS", "dilution_masks", "diluted_noise",
           "EXACT_TRACE_MAX_DIM"]

TRACE_METHODS = ("auto", "exact", "stochastic")
DILUTIONS = ("none", "even-odd", "spin-color", "full")
NOISE_KINDS = ("z2", "gaussian")
FERMION_OBSERVABLES = ("condensate", "pion@T (pion correlator at time separation T, e.g. pion@2)")
#: ``auto`` traces are exact when the dense Schur complement has at most this dimension (``V Ns Nc / 2``)
EXACT_TRACE_MAX_DIM = 512
_PION_RE = re.compile(r"^pion@(\d+)$")


def is_fermion_theory(theory: Any) -> bool:
    return isinstance(theory, WilsonFermionAction)


def gauge_action(theory: Any) -> Any:
    """The pure-gauge part of ``theory`` (itself for a pure-gauge theory)."""
    return theory.gauge if is_fermion_theory(theory) else theory


@dataclass(frozen=True)
class FermionTraces:
    """How the fermion traces are evaluated (module docstring): ``method`` (``auto``: exact when the even–odd Schur
    complement has dimension <= :data:`EXACT_TRACE_MAX_DIM`, else stochastic), ``n_noise`` noise vectors per
    configuration of kind ``noise``, CG tolerance ``tol`` (relative residual) and iteration cap ``maxiter``;
    ``dilution`` (:data:`DILUTIONS`) splits every noise vector into pieces solved separately (:func:`dilution_masks`:
    ``P`` CG solves per vector, the noise from the couplings between pieces removed).  Defaults: 2 vectors diluted
    even–odd (4 solves per configuration): per CG solve 2.9x less noise in ``∂_m S`` than undiluted vectors in N_f = 2
    QCD on 4^4, the same in the Schwinger model at m = 0.2 (BENCHMARKS.md)."""

    method: str = "auto"
    n_noise: int = 2
    noise: str = "z2"
    tol: float = 1e-10
    maxiter: int = 5000
    dilution: str = "even-odd"

    def __post_init__(self) -> None:
        if self.method not in TRACE_METHODS:
            raise ValueError(f"unknown trace method {self.method!r}; allowed: {', '.join(TRACE_METHODS)}")
        if not isinstance(self.n_noise, (int, np.integer)) or self.n_noise < 1:
            raise ValueError(f"the number of noise vectors must be a positive integer, got {self.n_noise!r}")
        if self.noise not in NOISE_KINDS:
            raise ValueError(f"unknown noise {self.noise!r}; allowed: {', '.join(NOISE_KINDS)}")
        if not 0 < self.tol < 1e-3:
            raise ValueError(f"CG tolerance must be in (0, 1e-3), got {self.tol}")
        if self.dilution not in DILUTIONS:
            raise ValueError(f"unknown dilution {self.dilution!r}; allowed: {', '.join(DILUTIONS)}")

    def resolve(self, theory: Any) -> str:
        """``exact`` or ``stochastic`` for this theory; ``ValueError`` for ``exact`` on a lattice too large for the
        dense algebra (:data:`corrflow.observables.fermions.DENSE_MAX_DIM`)."""
        if self.method == "exact":
            check_dense(theory, "--traces exact inverts")
        if self.method != "auto":
            return self.method
        dim = theory.volume * theory.n_spin * theory.n_color // 2
        return "exact" if dim <= EXACT_TRACE_MAX_DIM else "stochastic"

    def describe(self, theory: Any) -> dict[str, Any]:
        m = self.resolve(theory)
        out: dict[str, Any] = {"method": m}
        if m == "stochastic":
            out.update(n_noise=int(self.n_noise), noise=self.noise, tol=float(self.tol))
            if self.dilution != "none":  # (absent when undiluted: older checkpoints keep their settings)
                out["dilution"] = self.dilution
        return out


def _complex_links_dtype(u: Array | None) -> Any:
    # CG to 1e-10 needs double precision whatever the stored links are (complex64 SU(3) ensembles included)
    return jnp.complex128 if jax.config.jax_enable_x64 else jnp.complex64


def trace_noise(key: Array, n: int, shape: tuple[int, ...], kind: str, dtype: Any) -> Array:
    """``n`` noise vectors ``(n, *shape)`` with ``E[η η^†] = 1``: ``z2`` (±1) or ``gaussian`` (complex normal)."""
    if kind == "z2":
        return jax.random.rademacher(key, (n,) + tuple(shape), jnp.float64).astype(dtype)
    kr, ki = jax.random.split(key)
    real = jnp.finfo(dtype).dtype
    return ((rng.normal(kr, (n,) + tuple(shape), real)
             + 1j * rng.normal(ki, (n,) + tuple(shape), real)) / np.sqrt(2.0)).astype(dtype)


def dilution_masks(theory: WilsonFermionAction, dilution: str) -> np.ndarray:
    """0/1 masks ``(P, *fermion_shape)`` that partition the fermion index set: ``none`` (P = 1), ``even-odd`` (the
    two site parities, P = 2: removes the noise from every odd-distance hop of ``D^{-1}``, the leading ``O(κ)``
    ones), ``spin-color`` (P = Ns Nc: removes the on-site spin-colour couplings) or ``full`` (both, P = 2 Ns Nc).

    For noise ``η`` with ``E[η η^†] = 1``, ``Σ_p (m_p η)^† X (m_p η)`` is an unbiased estimate of ``tr X`` for any
    partition, with the cross terms between pieces gone from its variance."""
    if dilution not in DILUTIONS:
        raise ValueError(f"unknown dilution {dilution!r}; allowed: {', '.join(DILUTIONS)}")
    ns, nc = theory.n_spin, theory.n_color
    shape = tuple(theory.shape)
    parity = [np.ones(shape + (1, 1))]
    if dilution in ("even-odd", "full"):
        even = np.asarray(even_mask(shape))
        parity = [even, 1.0 - even]
    sc = [np.ones((1, 1))]
    if dilution in ("spin-color", "full"):
        sc = [np.eye(ns * nc)[k].reshape(ns, nc) for k in range(ns * nc)]
    return np.stack([np.broadcast_to(p * c, shape + (ns, nc)) for p in parity for c in sc])


def diluted_noise(key: Array, theory: WilsonFermionAction, traces: FermionTraces, dtype: Any) -> Array:
    """``traces.n_noise`` noise vectors, each split into the pieces of ``traces.dilution``: ``(n_noise * P,
    *fermion_shape)``, noise vector-major, every piece scaled by ``sqrt(P)`` so that the *mean* of ``η_r^† X η_r``
    over the rows is the diluted estimate ``(1/n) Σ_k Σ_p`` (the estimators are the same code with and without
    dilution)."""
    eta = trace_noise(key, traces.n_noise, theory.fermion_shape, traces.noise, dtype)
    if traces.dilution == "none":
        return eta
    masks = dilution_masks(theory, traces.dilution)
    masks = jnp.asarray(masks * np.sqrt(masks.shape[0]), eta.real.dtype)
    return (eta[:, None] * masks[None]).reshape((-1,) + tuple(theory.fermion_shape))


def condensate_noise(theory: WilsonFermionAction, key: Array, traces: FermionTraces) -> Array | None:
    """Noise vectors ``(n_noise * P, *fermion_shape)`` of the stochastic ``condensate`` (``None`` with exact traces),
    diluted as ``traces`` says.

    ``key`` is the configuration's trace-noise key; the vectors come from ``fold_in(key, 1)``, independent of the
    ``∂_m S`` / ``v·∇S_f`` noise (``key`` itself), since ``E[Ô R̂] = E[O R]`` needs independent estimates."""
    if traces.resolve(theory) == "exact":
        return None
    return diluted_noise(jax.random.fold_in(key, 1), theory, traces, _complex_links_dtype(None))


def fermion_derivatives(theory: WilsonFermionAction, u: Array, vks: Array, key: Array,
                        traces: FermionTraces) -> tuple[Array, Array]:
    """``(∂_m S_f, v_k·∇S_f)`` for one configuration ``u`` and basis fields ``vks`` ``(K, *coords_shape)``.

    Exact (dense log-determinant) or unbiased stochastic estimates (module docstring), per :class:`FermionTraces`;
    shapes ``()`` and ``(K,)``.
    """
    g = theory.group
    nf = theory.n_flavors
    if traces.resolve(theory) == "exact":
        th = theory.replace(det="exact")
        dm = parameter_jvp(lambda t: t.fermion_action(u), th, "mass")
        w0 = jnp.zeros(vks.shape[1:], vks.dtype)
        vs = jax.vmap(lambda vk: jax.jvp(lambda w: th.fermion_action(lift(w, u, g)), (w0,), (vk,))[1])(vks)
        return dm, vs
    cdt = _complex_links_dtype(u)
    v = theory.links(u).astype(cdt)
    m = theory.mass
    nax = theory.ndim + 2
    axes = tuple(range(-nax, 0))
    eta = diluted_noise(key, theory, traces, cdt)
    y = conjugate_gradient(lambda x: dirac_dagger(v, m, dirac(v, m, x)), eta, nax, tol=traces.tol,
                           maxiter=traces.maxiter).x
    chi = jax.lax.stop_gradient(dirac(v, m, y))  # D^{-dag} eta, one per (diluted) noise vector

    def trace_with(x: Array) -> Array:  # Re tr(D^{-1} X) estimated from X eta
        return jnp.mean(jnp.real(jnp.sum(jnp.conj(chi) * x, axis=axes)))

    dm = -nf * trace_with(eta)
    w0 = jnp.zeros(vks.shape[1:], vks.dtype)

    def d_dirac(vk: Array) -> Array:  # (v_k·∇D) eta
        return jax.jvp(lambda w: dirac(theory.links(lift(w, u, g)).astype(cdt), m, eta), (w0,), (vk,))[1]

    vs = jax.vmap(lambda vk: -nf * trace_with(d_dirac(vk)))(vks)
    return dm, vs


def fermion_observable(name: str, theory: Any) -> tuple[str, Any] | None:
    """``("condensate", None)``, ``("pion", T)`` or ``None`` if ``name`` is not a fermionic observable.

    ``ValueError`` if it is one but ``theory`` has no fermions, or ``T`` is outside ``0 .. L_0 - 1``."""
    n = str(name).strip()
    m = _PION_RE.match(n)
    if n != "condensate" and not m:
        return None
    if not is_fermion_theory(theory):
        raise ValueError(f"{n}: a fermionic observable needs an ensemble with dynamical fermions (schwinger, "
                         "su3-wilson), or valence quarks on a pure-gauge one (--valence-mass)")
    if m:
        t = int(m.group(1))
        if not 0 <= t < theory.shape[0]:
            raise ValueError(f"{n}: the time separation must be in 0 .. {theory.shape[0] - 1}")
        return "pion", t
    return "condensate", None


def fermion_vector(specs: list[tuple[int, tuple[str, Any]]], theory: WilsonFermionAction,
                   u: Array, condensate_noise: Array | None = None, pion_sources: int = 1) -> dict[int, Array]:
    """Values of the fermionic observables ``specs`` (``[(position, fermion_observable(...))]``) on ``u``; one
    propagator solve per source serves every ``pion@T`` (the correlator averaged over ``pion_sources`` point sources
    at ``t_0 = k L_0 / pion_sources``, as :func:`~corrflow.observables.fermions.pion_correlator`).
    ``condensate_noise`` ``(n, *fermion_shape)``: estimate the condensate with these noise vectors
    (:func:`~corrflow.observables.fermions.chiral_condensate_stochastic`) instead of the dense inverse."""
    out: dict[int, Array] = {}
    corr = None
    for i, (kind, t) in specs:
        if kind == "condensate":
            out[i] = (chiral_condensate(theory, u) if condensate_noise is None
                      else chiral_condensate_stochastic(theory, u, condensate_noise))
        else:
            if corr is None:
                corr = pion_correlator(theory, u, pion_sources, "bicgstab+cg")
            out[i] = corr[t]
    return out


def value_and_mass_derivative(vec_of: Callable[[Any], Callable[[Array], Array]], theory: WilsonFermionAction,
                              u: Array) -> tuple[Array, Array]:
    """``(O_i(U; m), ∂_m O_i(U; m))`` at fixed links for the observable vector ``vec_of(theory)(u)`` (``∂_m`` zero for
    gauge observables): one forward-mode pass, so the value's solves are not done a second time."""
    return value_and_parameter_jvp(lambda t: vec_of(t)(u), theory, "mass")


def value_and_derivatives(vec_of: Callable[[Any], Callable[[Array], Array]], theory: WilsonFermionAction, u: Array,
                          v: Array) -> tuple[Array, Array, Array]:
    """``(O_i, v·∇O_i, ∂_m O_i)`` at ``(U; m)`` for the observable vector ``vec_of(theory)`` and a direction ``v``
    (coordinates ``(*lattice, d, n_gen)``, right-trivialised like :func:`corrflow.tangent.lift`).

    One linearisation (``jax.linearize`` in the mass and the link coordinates) evaluated along both tangents: the
    value's solves (pion propagators, exact traces) are done once and shared, where two ``jax.jvp`` would repeat them
    (Schwinger 8x8, plaquette, condensate and ``pion@0..7``: 3.8x faster than two forward passes, same numbers to
    1e-16)."""
    group = theory.group
    m0 = jnp.asarray(theory.mass, jnp.float64)
    w0 = jnp.zeros(v.shape, group.real_dtype(u.dtype))
    o, lin = jax.linearize(lambda m, w: vec_of(theory.replace(mass=m))(lift(w, u, group)), m0, w0)
    return o, lin(jnp.zeros_like(m0), v.astype(w0.dtype)), lin(jnp.ones_like(m0), jnp.zeros_like(w0))
