"""Smoothing fields: move every link towards its Wilson-flowed value, ``v_k = P_TA(V_l(t_k) U_l^†)``.

For a Gaussian (free) gauge field with action ``S = β s(A)``, ``s`` quadratic, the ideal flow from β to β + dβ
rescales every non-gauge mode, ``A → A (1 − dβ / 2β)``; its tangent ``v = −A / 2β`` makes ``R_v`` constant
(``∂_β S = s``, ``v·∇S = −s``, ``∇·v`` a constant). On the lattice the gauge field around a link is
``P_TA(U_l V_l^†)`` with ``V`` the links after Wilson flow to time ``t``: the flow removes the modes with
``k² t ≳ 1``, so ``P_TA(V_l U_l^†)`` is (minus) the ultraviolet part of ``A`` -- the part that carries nearly all
of the variance of ``∂_β S`` -- in a gauge-covariant form: under ``U_l → g_x U_l g_{x+μ}^†`` both ``U_l`` and
``V_l`` transform alike and ``V_l U_l^† → g_x V_l U_l^† g_x^†`` (a tangent vector at ``U_l`` in the right-
trivialised convention ``U → exp(εX) U``). The field is not a gradient and not local: it moves each link by the
difference of the link and a smooth average over a region of radius ``sqrt(8t)``.

Basis ``v_k`` for flow times ``t_k`` (:class:`SmoothingField`), coefficients by least squares as for every field.
Divergence ``∇·v_k = D_k + I_k``:

* ``D_k``, the derivative through the explicit ``U_l`` with ``V`` held fixed, in closed form per link:
  ``Σ_a ∂_l^a [P_TA(V_l U_l^†)]^a = −2 C_F Re tr(V_l U_l^†)`` (U(1): ``−cos(θ_V − θ_U)``);
* ``I_k``, through ``V(U)``: Hutchinson probes on ``w → P_TA(V(exp(W) U) U^†)`` (one linearisation of the flow,
  forward mode; unbiased, its noise part of the Monte Carlo error).

Splitting off ``D_k`` keeps the closed-form part exact.

Anisotropic flows for the anisotropic parameters (``anisotropy = a``; ``lam`` and ``xi`` in 3 or more dimensions by
default).  The free-field tangent of the Feynman–Hellmann source is not a rescaling: with the quadratic forms
``K_t``, ``K_s`` of the temporal and spatial plaquettes (``∂_λ S`` adds ``K_t − K_s`` to ``β (K_t + K_s)``) the ideal
tangent is ``v = −(2β)^{-1} (K_t + K_s)^{-1} (K_t − K_s) A``, a function of the ratio of the temporal and spatial
momenta that no isotropic flow represents.  The flows of the Wilson action at ``β = 1`` with source ``±a`` (plane
couplings ``1 ± a`` temporal, ``1 ∓ a`` spatial) give ``V_{±a}(t) ≈ exp(−t (K ± a (K_t − K_s))) A``, whose difference
is ``−2 a t (K_t − K_s) e^{−tK} A`` to first order, and ``∫ dt/t`` of that is the ideal ``K^{-1}(K_t − K_s)`` (up to
the normalisation): the basis ``P_TA(V_{±a}(t_k) U^†)``, each split into its temporal-link and spatial-link parts
(``split``), spans a quadrature of it.  Measured (4^4, β = 6.0, d/dλ, 4 x 100 heat-bath configurations, held-out
field, BENCHMARKS.md): Var[R] reduced 10.5x / 16.9x per fold against 2.3x / 3.3x for the isotropic split field and
4.5x / 5.7x for split plaquette and rectangle features.

``held_out=True`` (SU(2), SU(3)): ``V`` on each link comes from the flow of the configuration with that link's layer
mask (the plaquette masks of :func:`corrflow.flows.staples.layer_masks`, 2 per direction) replaced by the SU(N)
projection of its staples (:func:`corrflow.flows.smoothing.project_sun`), so ``V_l`` does not depend on ``U_l``:
``I_k = 0`` and the divergence is exact, no probes.  It costs ``2d`` flows per configuration (``4d`` with an
anisotropy) instead of the probes' ``period^d d`` linearisations, and it is the tangent of one sweep of the flows'
smoothing layers (:mod:`corrflow.flows.smoothing`; the Gauss–Newton fit of such a flow starts from this field's
least-squares coefficients).  Measured (4^4): Var[∂S/∂β] reduced 2.3x / 2.5x at β = 5.7 (the plain field: 2.2x /
2.9x, 12x the cost), 4.3x / 3.6x at β = 6.0 (plain 6x / 6x).  The probe noise of ``I_k`` comes from products of nearby
links (measured at 4^4, β = 6: per-probe variance 30–1600 for ``t = 0.1 ... 0.8`` with plain Rademacher probes and
the fitted coefficients amplify it, 0.3–20 diluted by period 2 at 50x the cost, ~2x less noise per second); hence
the default of one probe diluted by period 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp

from ..groups import dagger, matmul, trace
from .core import casimir, directional_derivatives, divergence_hutchinson, gradient
from .fields import _feature_flow_step

Array = jax.Array

__all__ = ["SmoothingField"]


@dataclass(frozen=True)
class SmoothingField:
    """``v = Σ_k c_k P_TA(V(t_k) U^†)`` (module docstring): ``V(t)`` the links after Wilson flow (Euler steps
    ``flow_eps`` of ``dV/dt = −F_{β=1}(V)``, as the flowed features of :class:`~corrflow.tangent.GradientField`) to
    each of ``times``; ``n_probes`` Hutchinson probes (``probes``: rademacher | gaussian), each diluted by
    ``probe_period`` (:func:`~corrflow.tangent.probe_classes`: ``period^d d`` jvps per probe), for the part of ``∇·v``
    through the flow.  ``split``: two basis fields per time, one moving only the temporal links (direction 0) and one
    only the spatial links -- for the anisotropic parameters (``xi``, the source ``lam``), which an isotropic field
    cannot follow.  ``anisotropy`` ``a`` (``0 <= a < 1``, 3 or more dimensions): two flows per time instead of the
    isotropic one, of the Wilson action with plane couplings ``1 ± a`` on the temporal and ``1 ∓ a`` on the spatial
    planes (source ``λ = ±a``; module docstring).  Basis order: time-major, then (with an anisotropy) the mean and
    the difference of the ``±a`` fields, telescoped over the times (:meth:`_expand`), then the temporal and spatial
    parts: ``(t_1 all)``, ``(t_1 temporal, t_1 spatial, t_2 temporal, ...)`` or ``(t_1 mean temporal, t_1 mean
    spatial, t_1 difference temporal, ...)``."""

    times: tuple[float, ...] = (0.1, 0.2, 0.4, 0.8)
    flow_eps: float = 0.05
    n_probes: int = 1
    probes: str = "rademacher"
    probe_period: int = 2
    split: bool = False
    held_out: bool = False
    anisotropy: float = 0.0

    kind = "smoothing"

    def __post_init__(self) -> None:
        try:
            times = tuple(float(t) for t in self.times)
        except (TypeError, ValueError):
            raise ValueError(f"SmoothingField: times must be numbers, got {self.times!r}") from None
        object.__setattr__(self, "times", times)
        if not times:
            raise ValueError("SmoothingField: give at least one flow time")
        if not self.flow_eps > 0:
            raise ValueError(f"SmoothingField: flow_eps must be > 0, got {self.flow_eps}")
        bad = [t for t in times if t <= 0 or abs(t / self.flow_eps - round(t / self.flow_eps)) > 1e-9]
        if bad:
            raise ValueError(f"SmoothingField: flow times {bad} must be positive multiples of flow_eps={self.flow_eps}")
        if len(set(times)) != len(times):
            raise ValueError(f"SmoothingField: duplicate flow times in {times}")
        if self.n_probes < 1:
            raise ValueError(f"SmoothingField: n_probes must be >= 1, got {self.n_probes}")
        if self.probes not in ("rademacher", "gaussian"):
            raise ValueError(f"SmoothingField: probes must be rademacher or gaussian, got {self.probes!r}")
        if self.probe_period < 1:
            raise ValueError(f"SmoothingField: probe_period must be >= 1, got {self.probe_period}")
        try:
            a = float(self.anisotropy)
        except (TypeError, ValueError):
            raise ValueError(f"SmoothingField: anisotropy must be a number, got {self.anisotropy!r}") from None
        if not 0.0 <= a < 1.0:
            raise ValueError(f"SmoothingField: anisotropy must be in [0, 1) (plane couplings 1 +- a), got {a}")
        object.__setattr__(self, "anisotropy", a)

    @property
    def n_coef(self) -> int:
        return len(self.times) * len(self._sources) * (2 if self.split else 1)

    @property
    def _sources(self) -> tuple[float, ...]:
        """The source ``λ`` of each flow: ``(+a, −a)`` with an anisotropy, else ``(0,)``."""
        return (self.anisotropy, -self.anisotropy) if self.anisotropy else (0.0,)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "times": list(self.times), "flow_eps": float(self.flow_eps),
                "n_probes": int(self.n_probes), "probes": self.probes, "probe_period": int(self.probe_period),
                **({"split": True} if self.split else {}), **({"held_out": True} if self.held_out else {}),
                **({"anisotropy": self.anisotropy} if self.anisotropy else {})}

    def check(self, theory: Any) -> None:
        """``ValueError`` (one line) for ``split`` on a lattice without spatial directions, ``anisotropy`` without
        spatial planes, ``held_out`` for other groups than SU(2), SU(3) or odd extents."""
        if self.split and len(theory.shape) < 2:
            raise ValueError("SmoothingField: split needs temporal and spatial directions")
        if self.anisotropy and len(theory.shape) < 3:
            raise ValueError("SmoothingField: anisotropy needs spatial planes (3 or more dimensions)")
        if self.held_out:
            g = theory.group
            if g.is_abelian or g.N not in (2, 3):
                raise ValueError(f"SmoothingField: held_out needs SU(2) or SU(3), got {g.name}")
            from ..flows.staples import layer_masks

            for mu in range(len(theory.shape)):
                layer_masks(theory.shape, mu, ("plaquette",))  # even extents: one-line ValueError otherwise

    def _expand(self, x: Array) -> Array:
        """``(K, ..., d, n_gen)`` basis fields -> ``(n_coef, ...)``: with an anisotropy the fields of each time become
        the mean and the difference of its ``+a`` and ``−a`` fields, telescoped over the times (each minus the same
        combination at the previous time: the span of the raw fields, but a far better conditioned least-squares
        system, condition ~1e8 instead of ~4e10 at 4^4); with ``split`` each into its temporal-link and spatial-link
        parts.  Linear in ``x``: it acts alike on the fields, their divergences and their directional derivatives."""
        if self.anisotropy:
            y = x.reshape((len(self.times), 2) + x.shape[1:])
            y = jnp.stack([(y[:, 0] + y[:, 1]) / 2, y[:, 0] - y[:, 1]], axis=1)
            x = jnp.concatenate([y[:1], y[1:] - y[:-1]], axis=0).reshape(x.shape)
        if not self.split:
            return x
        d = x.shape[-2]
        temporal = (jnp.arange(d) == 0).astype(x.dtype)[:, None]
        parts = jnp.stack([x * temporal, x * (1 - temporal)], axis=1)  # (K, 2, ...)
        return parts.reshape((-1,) + x.shape[1:])

    def flowed(self, u: Array, theory: Any) -> Array:
        """Links flowed to each of ``times``, shape ``(K, *u.shape)`` (one scan for all times), ``K`` = the number
        of times, twice that with an anisotropy (time-major, ``+a`` before ``−a``)."""
        steps = [int(round(t / self.flow_eps)) for t in self.times]
        out = []
        for lam in self._sources:
            advance = _feature_flow_step(theory, self.flow_eps, lam)

            def step(w: Array, _: Any) -> tuple[Array, Array]:
                w = advance(w)
                return w, w

            _, ws = jax.lax.scan(step, u, None, length=max(steps))
            out.append(ws[jnp.asarray(steps) - 1])
        return jnp.stack(out, axis=1).reshape((-1,) + u.shape)

    def held_out_flowed(self, u: Array, theory: Any) -> Array:
        """``(K, *u.shape)``: on each link the flowed links of the configuration with the link's plaquette mask
        replaced by the SU(N) projection of its staple sum (``held_out``; module docstring)."""
        from .. import lattice
        from ..flows.smoothing import project_sun
        from ..flows.staples import layer_masks

        g = theory.group
        d = len(theory.shape)
        out = 0.0
        for mu in range(d):
            sub_links = project_sun(dagger(lattice.staple_sum(u, mu, g)), g.N)
            for m in layer_masks(theory.shape, mu, ("plaquette",)):
                active = jnp.zeros(tuple(theory.shape) + (d,), bool).at[..., mu].set(jnp.asarray(m))
                sub = u.at[..., mu, :, :].set(jnp.where(jnp.asarray(m)[..., None, None], sub_links, u[..., mu, :, :]))
                out = out + jnp.where(active[..., None, None], self.flowed(sub, theory), 0.0)
        return out

    @staticmethod
    def _coords(v: Array, u: Array, theory: Any) -> Array:
        """Algebra coordinates of ``P_TA(V U^†)`` (U(1): ``sin(θ_V − θ_U)``), shape ``(K, *coords_shape)``."""
        g = theory.group
        if g.is_abelian:
            return jnp.sin(v - u)[..., None]
        return g.algebra_coords(g.project_algebra(matmul(v, dagger(u))))

    def _smoothed(self, u: Array, theory: Any) -> Array:
        return self.held_out_flowed(u, theory) if self.held_out else self.flowed(u, theory)

    def basis(self, v: Array, u: Array, theory: Any) -> Array:
        """The basis fields at ``u`` given its smoothed links ``v`` (:meth:`flowed` or :meth:`held_out_flowed`, ``(K,
        *u.shape)``), shape ``(n_coef, *coords_shape)``."""
        return self._expand(self._coords(v, u, theory))

    def field_coords(self, u: Array, theory: Any) -> Array:
        """The basis fields at ``u``, shape ``(n_coef, *coords_shape)``."""
        return self.basis(self._smoothed(u, theory), u, theory)

    def vectors(self, u: Array, theory: Any) -> Array:
        return self.field_coords(u, theory)

    def link_divergence(self, v: Array, u: Array, theory: Any) -> Array:
        """The divergence at fixed ``V`` link by link, ``−2 C_F Re tr(V_l U_l^†)`` (U(1): ``−cos(θ_V − θ_U)``), of
        each basis field (``v`` as for :meth:`basis`), shape ``(n_coef, L_0, ..., L_{d-1}, d)``; with ``held_out`` the
        whole divergence of the basis fields restricted to any set of links."""
        g = theory.group
        per_link = -jnp.cos(v - u) if g.is_abelian else -2.0 * casimir(g) * jnp.real(trace(matmul(v, dagger(u))))
        return self._expand(per_link[..., None])[..., 0]

    def explicit_divergence(self, v: Array, u: Array, theory: Any) -> Array:
        """``D_k = Σ_l −2 C_F Re tr(V_l U_l^†)`` (:meth:`link_divergence` summed over the links), shape
        ``(n_coef,)``."""
        per_link = self.link_divergence(v, u, theory)
        return jnp.sum(per_link, axis=tuple(range(1, per_link.ndim)))

    def terms(self, u: Array, theory: Any, obs_vec: Callable[[Array], Array], key: Array) -> tuple[Array, Array]:
        g = theory.group
        v = self._smoothed(u, theory)
        x = self.basis(v, u, theory)
        g_s = gradient(theory.action, u, g)
        vs = jnp.sum(x * g_s, axis=tuple(range(1, x.ndim)))
        direct = self.explicit_divergence(v, u, theory)
        b = directional_derivatives(obs_vec, u, x, g)  # (K, n_obs)
        if self.held_out:  # V_l does not depend on U_l: the divergence is the closed form alone
            return vs - direct, b.T
        through_flow = divergence_hutchinson(lambda uu: self.basis(self.flowed(uu, theory), u, theory),
                                             u, g, key, self.n_probes, self.probes, self.probe_period).mean(0)
        return vs - (direct + through_flow), b.T
