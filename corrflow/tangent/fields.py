"""Tangent fields linear in their coefficients, ``v = Σ_k c_k v_k``.

A field object is a frozen (hashable) dataclass with ``n_coef``, ``describe()`` (JSON settings) and

    terms(u, theory, obs_vec, key) -> (a, b)

for one configuration ``u``: ``a[k] = v_k·∇S − ∇·v_k`` (shape ``(K,)``) and ``b[i, k] = v_k·∇O_i`` (shape
``(n_obs, K)``), pure JAX (vmapped over configurations by :func:`corrflow.tangent.compute_terms`), and

    vectors(u, theory) -> (K, *coords_shape)

the basis fields themselves (the fermion part of ``v_k·∇S`` is added from them, :mod:`.fermions`).  ``theory`` is
always a pure-gauge action here (the gauge part of a fermion theory).

* :class:`PlaquetteField` — 2D U(1) only, exact and non-local: ``v = curlᵀ G h(φ)`` with
  ``h(φ) = Σ_{n<=N} c_n sin nφ``, ``G`` the pseudo-inverse of the plaquette-space Laplacian ``curl curlᵀ``.
  It changes every plaquette angle by ``δφ_P = h(φ_P) − w(φ_P) Σ_Q h(φ_Q) / Σ_Q w(φ_Q)`` (the plaquette angles of
  a torus sum to a fixed value, so the changes must sum to zero) and has ``∇·v = Σ_P ∂δφ_P/∂φ_P`` in closed form,
  ``v·∇S = b Σ_P sin φ_P δφ_P`` (``b`` the plane coupling, ``β`` for the isotropic action), ``v·∇O`` by ``jax.jvp``
  along the link field (``G`` applied by FFT).  With the weights ``w = 1 + cos φ`` (``keep_charge``) no angle moves
  where it wraps (``φ = ±π``: ``sin nπ = 0 = w``), so the field never changes the geometric
  topological charge ``Q = Σ_P φ_P / 2π`` and integration by parts holds for functions of ``Q`` too (``chi_top``);
  with ``w = 1`` (the plain mean, ``∇·v = (1 − 1/V) Σ_P h'(φ_P)``; the default) angles cross ``±π`` and ``Q`` jumps.
* :class:`GradientField` — any group, any dimension: ``v = ∇W``, ``W = Σ_k c_k Φ_k`` with gauge-invariant
  features ``Φ_k``: ``plaquette`` / ``rectangle`` actions (``Σ Re tr / N`` over all loops; ``plaquette_t`` etc.:
  the temporal planes, those containing direction 0, or the spatial ones only, ``_s``) and
  ``flowed@t``, the plaquette action of links flowed to time ``t`` by the Wilson flow
  ``dV/dt = −F_{β=1}(V)`` (``flowed_t@t`` / ``flowed_s@t``: its temporal / spatial planes; Euler steps
  ``flow_eps``; SU(N) exponential as a 4th-order Taylor series).  Gradients by reverse mode (through the flow),
  ``∇·v_k = ΔΦ_k`` in closed form for loops whose links appear once (``ΔΦ = −|C| C_F Φ``), else by Hutchinson
  probes (unbiased; the probe noise is part of the Monte Carlo error).  Features ``plaquette^n`` (``n = 2..9``):
  ``Σ_P (Re tr P / N)^n``, class functions of the plaquette beyond the linear term (U(1): harmonics up to ``n``).
* :class:`~corrflow.tangent.precondition.PreconditionedField` (own module) — the same features' gradients
  preconditioned by the inverse covariant Laplacian: non-local, the general form of the plaquette-space field.
* :class:`~corrflow.tangent.smoothing.SmoothingField` (own module) — every link moved towards its Wilson-flowed
  value, ``P_TA(V(t) U^†)``: the gauge-covariant form of rescaling the ultraviolet modes; not a gradient, any group.

Why flowed features: for a gradient field ``v = ∇ψ``, ``v·∇S − ∇·v = −Lψ`` with ``L = Δ − ∇S·∇`` the generator of
Langevin dynamics ``dU = −∇S dτ + √2 dW``.  The ideal potential solves ``Lψ = f``, ``f = ∂_α S − <∂_α S>``:
``ψ = −∫_0^∞ dτ E[f(U_τ) | U_0 = U]``; truncated at Langevin time ``T`` it leaves ``R_v − <R_v> = E[f(U_T) | U]``,
whose variance is the autocorrelation function of ``f`` at ``2T``.  The Wilson flow is the noise-free part of that
Langevin evolution (``t = βτ`` for the Wilson action), so a combination of flowed actions at several flow times is a
quadrature of ``ψ``; later flow times reach further (4D SU(3) 4^4, β = 6: flows to t = 0.4 reduce the variance of
d<P>/dβ 10x, to t = 1.6 13x, BENCHMARKS.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from .. import lattice
from ..groups import Group, exp_left_taylor4
from .core import casimir, charge_observables, directional_derivatives, divergence_hutchinson, gradient, lift
from .fermions import gauge_action, is_fermion_theory

Array = jax.Array

__all__ = ["PlaquetteField", "GradientField", "plaquette_link_field", "make_field", "default_features", "FIELD_KINDS",
           "FEATURE_HELP"]

FIELD_KINDS = ("plaquette", "gradient", "preconditioned", "smoothing", "none")
#: Anisotropy ``a`` of the smoothing field's flows (plane couplings ``1 ± a``) for ``xi`` and ``lam`` in 3 or more
#: dimensions (measured at 4^4, β = 6: a = 0.25 and 0.5 give the same Var[R] reduction).
SMOOTHING_ANISOTROPY = 0.5
#: Flow times and Euler step of ``auto``'s held-out smoothing field on pure-gauge lattices (``beta``, ``xi``,
#: ``lam``): measured against the field's own defaults (times 0.1 ... 0.8, step 0.05) on the same heat-bath
#: configurations (4D SU(3), β = 6.0, BENCHMARKS.md), the same variance reduction (d<P>/dβ 4^4: 9.6x against 10.5x,
#: 8^4: 4.05x against 4.15x; d<P>/dλ 4^4: 13.3x against 14.8x) for a third of the cost per configuration (the flows
#: of the layer masks are the cost), i.e. 2.3–2.9x more reduction at equal cost; d<P>/dβ at β = 5.7 (4^4) 2.9x
#: against 3.0x.  With Wilson fermions (``lam``, ``xi``) the field keeps its own defaults (measured there).
PURE_GAUGE_SMOOTHING = {"times": (0.1, 0.2, 0.4), "flow_eps": 0.1}
#: options of :class:`corrflow.tangent.smoothing.SmoothingField` that no other field takes (``make_field`` refuses them
#: for the others, also where ``auto`` chooses another kind)
SMOOTHING_OPTIONS = ("times", "anisotropy", "held_out", "flow_eps", "split")


# ----------------------------------------------------------------------------------------
# 2D U(1) plaquette-space field
# ----------------------------------------------------------------------------------------


def plaquette_link_field(dphi: Array) -> Array:
    """Link-space field ``v = curlᵀ G dphi`` for plaquette-space values ``dphi`` ``(..., L_0, L_1)``.

    Returns ``(..., L_0, L_1, 2)`` angle increments.  ``G`` is the pseudo-inverse of ``curl curlᵀ`` (the dual-lattice
    Laplacian ``4 − Σ neighbours``), applied by FFT; ``curl v = dphi − mean(dphi)``.
    """
    l0, l1 = dphi.shape[-2:]
    k0 = 2 * np.pi * np.fft.fftfreq(l0)
    k1 = 2 * np.pi * np.fft.fftfreq(l1)
    lap = 4.0 - 2.0 * np.cos(k0)[:, None] - 2.0 * np.cos(k1)[None, :]
    inv = np.where(lap > 1e-12, 1.0 / np.where(lap > 1e-12, lap, 1.0), 0.0)
    psi = jnp.real(jnp.fft.ifft2(jnp.fft.fft2(dphi) * inv))
    v0 = psi - jnp.roll(psi, 1, axis=-1)   # psi(x) - psi(x - 1hat)
    v1 = jnp.roll(psi, 1, axis=-2) - psi   # psi(x - 0hat) - psi(x)
    return jnp.stack([v0, v1], axis=-1)


@dataclass(frozen=True)
class PlaquetteField:
    """``v = curlᵀ G δφ``, ``δφ_P = h(φ_P) − w(φ_P) Σ_Q h(φ_Q) / Σ_Q w(φ_Q)``, ``h = Σ_{n=1}^{harmonics} c_n sin nφ``
    (2D U(1) only; see module docstring).  ``keep_charge``: weights ``w = 1 + cos φ``, so that the field never changes
    the geometric topological charge (needed for ``chi_top``; :func:`make_field` sets it when ``chi_top`` is asked
    for); default ``w = 1`` (the plain mean: 10–20% more variance reduction for smooth observables, 2D U(1) 16x16,
    β = 2, BENCHMARKS.md)."""

    harmonics: int = 6
    keep_charge: bool = False

    kind = "plaquette"

    def __post_init__(self) -> None:
        if not isinstance(self.harmonics, (int, np.integer)) or self.harmonics < 1:
            raise ValueError(f"PlaquetteField: harmonics must be a positive integer, got {self.harmonics!r}")

    @property
    def n_coef(self) -> int:
        return int(self.harmonics)

    @property
    def keeps_charge(self) -> bool:
        """Whether the field never changes the geometric topological charge (observables of ``Q`` allowed)."""
        return bool(self.keep_charge)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "harmonics": int(self.harmonics)}
        if self.keep_charge:
            out["keep_charge"] = True
        return out

    def check(self, theory: Any) -> None:
        if not (theory.group.is_abelian and len(theory.shape) == 2):
            raise ValueError(f"the plaquette-space field is exact for 2D U(1) only; theory is {theory.group.name} on "
                             f"{theory.shape}: use the gradient field (field='gradient')")

    def plaquette_terms(self, phi: Array, coupling: Any) -> tuple[Array, Array]:
        """``(a, dphi)`` from plaquette angles ``φ`` ``(L_0, L_1)``: ``a_n = v_n·∇S − ∇·v_n`` and the plaquette
        changes ``dphi_n = h_n − w H_n / W`` ``(K, L_0, L_1)`` (``h_n = sin nφ``, ``H_n = Σ h_n``, ``W = Σ w``).

        ``∇·v_n = Σ_P ∂dphi_P/∂φ_P`` (the changes sum to zero identically, so the projection onto zero-sum plaquette
        vectors drops out): ``Σ h' − (H/W) Σ w' − Σ w h' / W + (H/W²) Σ w w'``."""
        axes = (-2, -1)
        n = jnp.arange(1, self.harmonics + 1, dtype=phi.dtype)[:, None, None]
        h, hp = jnp.sin(n * phi), n * jnp.cos(n * phi)
        hsum = jnp.sum(h, axis=axes)  # (K,)
        if self.keep_charge:
            w, wp = 1.0 + jnp.cos(phi), -jnp.sin(phi)  # periodic: any representative of the angle
            wsum = jnp.sum(w)
            hc = h - w * (hsum / wsum)[:, None, None]
            div = (jnp.sum(hp, axis=axes) - hsum * jnp.sum(wp) / wsum - jnp.sum(w * hp, axis=axes) / wsum
                   + hsum * jnp.sum(w * wp) / wsum**2)
        else:
            vol = phi.shape[-1] * phi.shape[-2]
            hc = h - (hsum / vol)[:, None, None]
            div = (1.0 - 1.0 / vol) * jnp.sum(hp, axis=axes)
        vs = coupling * jnp.sum(jnp.sin(phi) * hc, axis=axes)
        return vs - div, hc

    def vectors(self, u: Array, theory: Any) -> Array:
        """The K basis fields at ``u``, shape ``(K, *coords_shape)``."""
        phi = lattice.plaquette(u, 0, 1, theory.group)
        return plaquette_link_field(self.plaquette_terms(phi, 0.0)[1])[..., None]

    def terms(self, u: Array, theory: Any, obs_vec: Callable[[Array], Array], key: Array) -> tuple[Array, Array]:
        g = theory.group
        phi = lattice.plaquette(u, 0, 1, g)
        a, hc = self.plaquette_terms(phi, theory.plane_couplings()[0, 1])
        v = plaquette_link_field(hc)[..., None]  # (K, L0, L1, 2, 1)
        b = directional_derivatives(obs_vec, u, v, g)  # (K, n_obs)
        return a, b.T


# ----------------------------------------------------------------------------------------
# general gradient fields of gauge-invariant features
# ----------------------------------------------------------------------------------------

_FLOWED = re.compile(r"^flowed(_[ts])?@([0-9.eE+-]+)$")
_POWER = re.compile(r"^plaquette\^([2-9])$")
_LOOP = re.compile(r"^(plaquette|rectangle)(_[ts])?$")
#: Features of :class:`GradientField` (``_t`` / ``_s``: loops in the temporal planes, those containing direction 0,
#: or in the spatial ones only -- the anisotropic part that ``xi`` and the Feynman–Hellmann source ``lam`` move).
FEATURE_HELP = ("plaquette, rectangle, plaquette^n (n = 2..9), flowed@T (e.g. flowed@0.2); plaquette_t, plaquette_s, "
                "rectangle_t, rectangle_s, flowed_t@T, flowed_s@T: temporal / spatial planes only")


def _plane_filter(d: int, part: str | None) -> list[tuple[int, int]]:
    """Planes of a ``d``-dimensional lattice: all (``part`` None), temporal (``_t``: containing direction 0) or
    spatial (``_s``)."""
    return [(m, n) for m, n in lattice.planes(d)
            if part is None or (part == "_t") == (m == 0)]


def default_features(param: str, theory: Any) -> tuple[str, ...]:
    """The default features of a gradient field for d/d``param``: isotropic loops and flowed actions, split into
    temporal and spatial planes for the anisotropic parameters (``xi``, ``lam``) in more than two dimensions, where
    an isotropic field cannot correlate with the anisotropic ``dS/dparam`` (hypercubic symmetry)."""
    iso = ("plaquette", "rectangle", "flowed@0.1", "flowed@0.2", "flowed@0.4")
    gauge = getattr(theory, "gauge", theory)
    if param in ("xi", "lam") and gauge is not None and len(gauge.shape) > 2:
        return tuple(f.replace("@", "_t@") if "@" in f else f + "_t" for f in iso) + \
            tuple(f.replace("@", "_s@") if "@" in f else f + "_s" for f in iso)
    return iso


def _plaquette_power(u: Array, group: Group, n: int) -> Array:
    """``Σ_P (Re tr P / N)^n`` over all plaquettes (U(1): ``Σ cos^n φ_P``, the harmonics up to ``n``)."""
    d = u.shape[-1 - group.elem_ndim]
    return sum(jnp.sum((group.retr(lattice.plaquette(u, m, nu, group)) / group.N) ** n) for m, nu in lattice.planes(d))


def _loop_sum(u: Array, group: Group, r: int, t: int, part: str | None = None) -> Array:
    """``Σ Re tr / N`` of the ``r x t`` (and ``t x r``) loops in all planes, or the temporal / spatial ones
    (``part`` ``_t`` / ``_s``)."""
    d = u.shape[-1 - group.elem_ndim]
    tot = 0.0
    for m, n in _plane_filter(d, part):
        if r == t == 1:
            tot = tot + jnp.sum(group.retr(lattice.plaquette(u, m, n, group)))
            continue
        tot = tot + jnp.sum(group.retr(lattice.wilson_loop(u, m, n, r, t, group)))
        if r != t:
            tot = tot + jnp.sum(group.retr(lattice.wilson_loop(u, m, n, t, r, group)))
    return tot / group.N


def _flow_update(x: Array, u: Array, group: Group) -> Array:
    """``exp(X) U`` for the feature flow; SU(N): exponential by its Taylor series to 4th order (gauge covariant and
    smooth, which is all a feature needs; far cheaper to differentiate twice than the closed-form exponential)."""
    if group.is_abelian:
        return u + x
    return exp_left_taylor4(x, u)


def _feature_flow_step(theory: Any, eps: float, lam: float = 0.0) -> Callable[[Array], Array]:
    """One Euler step ``W -> exp(-eps F(W)) W`` of the Wilson flow that the flowed features and the smoothing fields
    use (``F`` the force of the isotropic Wilson action at ``β = 1``, no source; with ``lam`` the force of the
    Wilson action at ``β = 1`` with that source: plane couplings ``1 + lam`` temporal, ``1 − lam`` spatial)."""
    g = theory.group
    flow_action = theory.replace(beta=1.0, xi=1.0, lam=lam)
    return lambda w: _flow_update(-eps * flow_action.force(w), w, g)


@dataclass(frozen=True)
class GradientField:
    """``v = ∇ Σ_k c_k Φ_k`` with features ``plaquette``, ``rectangle`` and ``flowed@t`` (see module docstring).

    ``n_probes`` Hutchinson probes (``probes``: rademacher | gaussian) per configuration estimate ``ΔΦ_k`` of the
    features without a closed form (``divergence='hutchinson'`` forces the estimate for all of them).
    """

    features: tuple[str, ...] = ("plaquette", "rectangle", "flowed@0.1", "flowed@0.2", "flowed@0.4")
    flow_eps: float = 0.05
    n_probes: int = 4
    probes: str = "rademacher"
    divergence: str = "auto"

    kind = "gradient"

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(str(f).strip() for f in self.features))
        if not self.features:
            raise ValueError("GradientField: give at least one feature")
        for f in self.features:
            if not _LOOP.match(f) and not _FLOWED.match(f) and not _POWER.match(f):
                raise ValueError(f"unknown feature {f!r}; allowed: {FEATURE_HELP}")
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"GradientField: duplicate features in {self.features}")
        if not self.flow_eps > 0:
            raise ValueError(f"GradientField: flow_eps must be > 0, got {self.flow_eps}")
        if self.n_probes < 1:
            raise ValueError(f"GradientField: n_probes must be >= 1, got {self.n_probes}")
        if self.probes not in ("rademacher", "gaussian"):
            raise ValueError(f"GradientField: probes must be rademacher or gaussian, got {self.probes!r}")
        if self.divergence not in ("auto", "hutchinson"):
            raise ValueError(f"GradientField: divergence must be auto or hutchinson, got {self.divergence!r}")

    @property
    def n_coef(self) -> int:
        return len(self.features)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "features": list(self.features), "flow_eps": float(self.flow_eps),
                "n_probes": int(self.n_probes), "probes": self.probes, "divergence": self.divergence}

    def check(self, theory: Any) -> None:
        """``ValueError`` (one line) for spatial-plane features (``_s``) in two dimensions, where every plane is
        temporal and the feature would be identically zero."""
        if len(theory.shape) <= 2:
            bad = [f for f in self.features if "_s" in f]
            if bad:
                raise ValueError(f"features {', '.join(bad)} need spatial planes, which a {len(theory.shape)}D lattice "
                                 "does not have; use the isotropic ones (e.g. plaquette, flowed@0.2)")

    def _flow_steps(self) -> list[int]:
        return [int(round(float(_FLOWED.match(f).group(2)) / self.flow_eps)) for f in self.features if _FLOWED.match(f)]

    def feature_values(self, u: Array, theory: Any) -> Array:
        """``(Φ_1(U), ..., Φ_K(U))`` for one configuration."""
        g = theory.group
        steps = self._flow_steps()
        flowed = None
        if steps:
            split = any(_FLOWED.match(f).group(1) for f in self.features if _FLOWED.match(f))  # type: ignore
            advance = _feature_flow_step(theory, self.flow_eps)

            def actions(w: Array) -> Array:  # (all planes, temporal planes) or (all planes,)
                tot = _loop_sum(w, g, 1, 1)
                return jnp.stack([tot, _loop_sum(w, g, 1, 1, "_t")]) if split else tot[None]

            @jax.checkpoint
            def step(w: Array, _: Any) -> tuple[Array, Array]:
                w = advance(w)
                return w, actions(w)

            # flowed[s] = plaquette actions after s steps (a scan: compiled once, whatever the flow time)
            _, ys = jax.lax.scan(step, u, None, length=max(max(steps), 1))
            flowed = jnp.concatenate([actions(u)[None], ys])
        out = []
        for f in self.features:
            if (m := _LOOP.match(f)):
                out.append(_loop_sum(u, g, 1, 1 if m.group(1) == "plaquette" else 2, m.group(2)))
            elif (m := _POWER.match(f)):
                out.append(_plaquette_power(u, g, int(m.group(1))))
            else:
                m = _FLOWED.match(f)
                row = flowed[int(round(float(m.group(2)) / self.flow_eps))]  # type: ignore
                part = m.group(1)
                out.append(row[0] if part is None else row[1] if part == "_t" else row[0] - row[1])
        return jnp.stack(out)

    def exact_laplacian(self, phi: Array, theory: Any) -> tuple[np.ndarray, Array]:
        """(mask of features with a closed-form ``ΔΦ``, the closed-form values where available)."""
        cf = casimir(theory.group)
        lengths = []
        for f in self.features:
            m = _LOOP.match(f)
            if self.divergence == "auto" and m and m.group(1) == "plaquette" and min(theory.shape) >= 2:
                lengths.append(4)
            elif self.divergence == "auto" and m and m.group(1) == "rectangle" and min(theory.shape) >= 3:
                lengths.append(6)
            else:
                lengths.append(0)
        lengths = np.asarray(lengths)
        return lengths > 0, -cf * jnp.asarray(lengths, phi.dtype) * phi

    def field_coords(self, u: Array, theory: Any) -> Array:
        """The K basis fields ``v_k = ∇Φ_k`` at ``u``, shape ``(K, *coords_shape)`` (reverse mode)."""
        g = theory.group
        w0 = jnp.zeros(tuple(theory.link_index_shape) + (g.n_generators,), g.real_dtype(u.dtype))
        return jax.jacrev(lambda w: self.feature_values(lift(w, u, g), theory))(w0)

    def vectors(self, u: Array, theory: Any) -> Array:
        """The K basis fields at ``u``, shape ``(K, *coords_shape)``."""
        return self.field_coords(u, theory)

    def terms(self, u: Array, theory: Any, obs_vec: Callable[[Array], Array], key: Array) -> tuple[Array, Array]:
        g = theory.group
        phi = self.feature_values(u, theory)
        grads = self.field_coords(u, theory)
        g_s = gradient(theory.action, u, g)
        axes = tuple(range(1, grads.ndim))
        vs = jnp.sum(grads * g_s, axis=axes)
        mask, exact = self.exact_laplacian(phi, theory)
        if mask.all():
            div = exact
        else:
            hut = divergence_hutchinson(lambda uu: self.field_coords(uu, theory), u, g, key, self.n_probes,
                                        self.probes).mean(0)
            div = jnp.where(jnp.asarray(mask), exact, hut)
        b = directional_derivatives(obs_vec, u, grads, g)  # (K, n_obs)
        return vs - div, b.T


@dataclass(frozen=True)
class NoField:
    """``v = 0`` (the connected estimator alone)."""

    kind = "none"
    n_coef = 0
    keeps_charge = True

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def check(self, theory: Any) -> None:
        pass

    def vectors(self, u: Array, theory: Any) -> Array:
        return jnp.zeros((0,) + tuple(theory.link_index_shape) + (theory.group.n_generators,),
                         theory.group.real_dtype(u.dtype))

    def terms(self, u: Array, theory: Any, obs_vec: Callable[[Array], Array], key: Array) -> tuple[Array, Array]:
        n_obs = obs_vec(u).shape[0]
        return jnp.zeros((0,), u.real.dtype), jnp.zeros((n_obs, 0), u.real.dtype)


def _smoothing_by_default(theory: Any, param: str | None) -> bool:
    """``auto`` for ``beta``, ``xi`` and ``lam`` on pure-gauge SU(2) / SU(3) lattices of 3 or more even extents, and
    for ``xi`` and ``lam`` with Wilson fermions too: the held-out smoothing field (exact divergence, no probes), with
    anisotropic flows for ``xi`` / ``lam``.  Measured (4D SU(3), BENCHMARKS.md): d/dλ at 4^4, β = 5.8 and 6.0: the
    reduction of the split gradient field with flowed features at 1/15 of its cost per configuration; N_f = 2 QCD
    4^4: d<P>/dλ 10x, d<C_π(1)>/dλ 12x, dE_π/dλ 5.4x against 3.6x, 5.2x, 3.0x for split loops; d<P>/dβ at β = 6.0:
    8.8x / 4.6x / 7.3x at 4^4 / 6^4 / 8^4 against 8.9x / 8.8x / 3.5x for the gradient field, for 1/16 / 1/12 / 1/6 of
    its cost (at β = 5.8 on 4^4 the gradient field reduces more, 2.7x against 1.8x, for 14x the cost): per unit of
    cost the held-out field is the best of the fields.  ``beta`` with fermions keeps the gradient field (not measured
    there).  The group and the extents are the held-out field's own check."""
    if theory is None or param not in ("beta", "xi", "lam") or len(theory.shape) < 3:
        return False
    if is_fermion_theory(theory):
        if param == "beta":
            return False
        theory = gauge_action(theory)
    from .smoothing import SmoothingField

    try:
        SmoothingField(held_out=True).check(theory)
    except ValueError:
        return False
    return True


def make_field(kind: str = "auto", theory: Any = None, param: str | None = None, observables: Any = (),
               **options: Any) -> Any:
    """Field from its kind: ``plaquette`` (2D U(1)), ``gradient`` (any theory), ``preconditioned`` (any theory:
    :class:`corrflow.tangent.precondition.PreconditionedField`), ``smoothing`` (any theory:
    :class:`corrflow.tangent.smoothing.SmoothingField`; ``times`` may be a comma-separated string), ``none``, or
    ``auto`` (plaquette for 2D U(1); for ``beta``, ``xi`` and ``lam`` on pure-gauge SU(2) / SU(3) lattices of 3 or
    more even extents, and for ``xi`` and ``lam`` with Wilson fermions, the held-out smoothing field, with anisotropic
    flows for ``xi`` / ``lam``, and the shorter, coarser flows :data:`PURE_GAUGE_SMOOTHING` on pure-gauge lattices;
    gradient otherwise).  Options go to the field's
    constructor; ``ValueError`` for unknown kinds.  With ``param`` and no ``features``, a gradient field gets
    :func:`default_features` (split into temporal and spatial planes for ``xi`` and ``lam`` in more than two
    dimensions), a smoothing field for ``xi`` and ``lam`` in 3 or more dimensions ``split`` and the anisotropy
    :data:`SMOOTHING_ANISOTROPY`.  ``observables``: the names the field will serve; with ``chi_top`` (a function of
    the integer topological charge) the plaquette field gets ``keep_charge`` unless it is given."""
    auto = kind == "auto"
    if auto and theory is None:  # (it fell back to a gradient field without a word)
        raise ValueError("make_field('auto') chooses the field for a theory and parameter: pass them, e.g. "
                         "make_field('auto', theory, param='beta')")
    if auto:
        kind = "plaquette" if theory is not None and theory.group.is_abelian and len(theory.shape) == 2 else "gradient"
        if kind == "gradient" and "features" not in options and _smoothing_by_default(theory, param):
            kind = "smoothing"
            options.setdefault("held_out", True)
            pure_gauge = not is_fermion_theory(theory)  # with fermions (lam, xi) the measured flows stay
            if pure_gauge and "times" not in options and "flow_eps" not in options:  # the user's choice wins
                options.update(PURE_GAUGE_SMOOTHING)
    misplaced = [k for k in SMOOTHING_OPTIONS if k in options]
    if misplaced and kind != "smoothing":
        raise ValueError(f"{', '.join(misplaced)}: only for smoothing fields, and the "
                         f"{'auto field chooses ' if auto else 'field is '}{kind} here")
    for name in ("features", "masses", "times"):  # comma-separated strings (CLI)
        if isinstance(options.get(name), str):
            options[name] = tuple(x for x in options[name].split(",") if x.strip())
    if kind == "gradient" and param is not None and theory is not None and "features" not in options:
        options["features"] = default_features(param, theory)
    if kind == "plaquette":
        if charge_observables(observables):
            options.setdefault("keep_charge", True)
        f: Any = PlaquetteField(**options)
    elif kind == "gradient":
        f = GradientField(**options)
    elif kind == "preconditioned":
        from .precondition import PreconditionedField

        if "masses" in options:
            try:
                options["masses"] = tuple(float(x) for x in options["masses"])
            except ValueError:
                raise ValueError(f"preconditioned field: masses must be numbers, got {options['masses']}") from None
        f = PreconditionedField(**options)
    elif kind == "smoothing":
        from .smoothing import SmoothingField

        if param in ("xi", "lam") and theory is not None and len(theory.shape) > 2:
            options.setdefault("split", True)  # as default_features: anisotropic parameters need the two parts apart
            options.setdefault("anisotropy", SMOOTHING_ANISOTROPY)  # and flows that tell the planes apart
        f = SmoothingField(**options)
    elif kind == "none":
        f = NoField()
    else:
        raise ValueError(f"unknown tangent field {kind!r}; allowed: auto, {', '.join(FIELD_KINDS)}")
    if theory is not None:
        f.check(theory)
    return f
