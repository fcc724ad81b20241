"""Plaquette-space flow for 2D U(1): every plaquette angle moved by its own circle map, realised exactly in link space.

Why (issue 14/15): in 2D U(1) on a torus the plaquette angles ``phi_P`` are independent up to one global
constraint, so the ideal map beta -> beta' is close to a per-plaquette transform ``phi -> g(phi)`` of the
density ``exp(beta cos phi)`` into ``exp(beta' cos phi)``.  In link space that map is non-local (it needs the
inverse plaquette Laplacian); local layers cannot represent it, whatever their coefficients.  This flow does it
directly and exactly.

One map (docs/physics.md section 1 conventions; ``P(x) = theta_0(x) + theta_1(x+0) - theta_0(x+1) - theta_1(x)``,
``phi = wrap(P)`` in ``(-pi, pi]``)::

    h(phi) = sum_{n=1}^{H} c_n sin(n phi),      c_n = 0.95 a_n / (1 + sum_m m |a_m|)   (raw parameters a_n)
    x_P    = h(phi_P) - mean_P h(phi_P)                          (sum_P x_P = 0: the torus constraint)
    theta' = theta + curl^T G x,   G = pseudo-inverse of the plaquette Laplacian curl curl^T (FFT)

so that ``phi'_P = phi_P + h(phi_P) - mean h`` for every plaquette, the gauge part and the harmonic (holonomy)
part of the links are untouched, and (right-trivialised coordinates, Haar measure)::

    log J = sum_P log(1 + h'(phi_P)) + log(1 - mean_P [h'(phi_P) / (1 + h'(phi_P))]).

(The plaquette-space Jacobian is ``D - 1 h'^T / V`` with ``D = diag(1 + h')``; it leaves ``sum_P phi_P`` fixed, and
the link-space map ``I + curl^T G (DT - I) curl`` has the same determinant by Sylvester's identity.)  The bound
makes ``|h'| < 0.95``, so ``g(phi) = phi + h(phi)`` is a circle diffeomorphism and both factors are positive.
``h`` is odd, so the flow commutes with charge conjugation ``theta -> -theta``; the increment ``curl^T G x`` is a
function of plaquettes only, so the flow is gauge equivariant.  Inverse: the common shift ``c = mean h(phi)``
solves the scalar equation ``c = mean_P h(g^{-1}(phi'_P + c))`` (monotone; Newton), then
``phi_P = g^{-1}(phi'_P + c)`` (Newton per plaquette) and ``theta = theta' - curl^T G (h(phi) - c)``.

Parameters ``(n_maps, H)``: translation invariant and independent of the volume, so a flow trained on one torus
applies to any other (volume transfer).  Cost per configuration: two FFTs of ``L_0 x L_1`` per map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..groups import Group

Array = jax.Array

__all__ = ["PlaquetteFlow", "MAX_HARMONICS"]

MAX_HARMONICS = 16
_BOUND_TOTAL = 0.95
_NEWTON_TOL = 1e-13


def _wrap(a: Array) -> Array:
    return a - 2 * jnp.pi * jnp.round(a / (2 * jnp.pi))


@dataclass(frozen=True)
class PlaquetteFlow:
    """``n_maps`` successive plaquette-space maps of 2D U(1) links ``(*batch, L_0, L_1, 2)`` (module docstring).

    Same interface as :class:`~corrflow.flows.layers.Flow`: ``forward(params, U) -> (U', log J)``,
    ``reverse(params, U') -> (U, log J_inverse)``, parameters one array of shape :attr:`param_shape`
    ``(n_maps, harmonics)`` (zeros: the identity)."""

    group: Group
    shape: tuple[int, ...]
    n_maps: int = 1
    harmonics: int = 6

    kind = "plaquette"

    # summary fields shared with the residual flow (recorded with flowed ensembles)
    @property
    def loops(self) -> tuple[str, ...]:
        return ("plaquette",)

    @property
    def n_sweeps(self) -> int:
        return self.n_maps

    @property
    def degree(self) -> int:
        return 0

    @property
    def ndim(self) -> int:
        return 2

    @property
    def n_layers(self) -> int:
        return self.n_maps

    @property
    def param_shape(self) -> tuple[int, int]:
        return (self.n_maps, self.harmonics)

    def init_params(self, scale: float = 0.0, key: Array | None = None) -> Array:
        """Raw parameters :attr:`param_shape`; ``scale = 0`` gives the identity map; ``scale > 0`` with ``key``:
        ``scale`` times standard normal coefficients."""
        from .build import check_init_scale

        check_init_scale(scale)
        if key is None or scale == 0.0:
            return jnp.zeros(self.param_shape)
        return scale * jax.random.normal(key, self.param_shape)

    def _check(self, params: Array, u: Array) -> int:
        if tuple(params.shape) != self.param_shape:
            raise ValueError(f"flow parameters have shape {tuple(params.shape)}, expected {self.param_shape} "
                             "(n_maps, harmonics)")
        nb = u.ndim - 3
        if nb < 0 or tuple(u.shape[nb:]) != tuple(self.shape) + (2,):
            raise ValueError(f"links of shape {tuple(u.shape)} do not fit the flow's lattice {self.shape}")
        return nb

    # --- the circle map h and its derivative -----------------------------------------------
    def coefficients(self, raw: Array) -> Array:
        """``c_n = 0.95 a_n / (1 + sum_m m |a_m|)`` from raw ``a`` ``(H,)``: ``sum_n n |c_n| < 0.95``, so
        ``|h'| < 0.95``; near zero ``c ~ 0.95 a``."""
        n = jnp.arange(1, self.harmonics + 1, dtype=raw.dtype)
        return _BOUND_TOTAL * raw / (1 + jnp.sum(n * jnp.abs(raw), -1, keepdims=True))

    def _h(self, c: Array, phi: Array) -> tuple[Array, Array]:
        """``(h(phi), h'(phi))`` for coefficients ``c`` ``(H,)``."""
        n = jnp.arange(1, self.harmonics + 1, dtype=phi.dtype)
        arg = phi[..., None] * n
        return jnp.sum(c * jnp.sin(arg), -1), jnp.sum(c * n * jnp.cos(arg), -1)

    # --- geometry: plaquettes, curl^T and the plaquette Green function ----------------------------
    @staticmethod
    def _plaquette(u: Array) -> Array:
        t0, t1 = u[..., 0], u[..., 1]
        return _wrap(t0 + jnp.roll(t1, -1, axis=-2) - jnp.roll(t0, -1, axis=-1) - t1)

    @staticmethod
    def _curl_t(y: Array) -> Array:
        """Link field ``curl^T y`` of a plaquette field ``y``: ``theta_0(x)`` is in ``P(x)`` (+) and ``P(x - 1)``
        (-), ``theta_1(x)`` in ``P(x - 0)`` (+) and ``P(x)`` (-)."""
        return jnp.stack([y - jnp.roll(y, 1, axis=-1), jnp.roll(y, 1, axis=-2) - y], axis=-1)

    def _green(self, x: Array) -> Array:
        """``G x``: the solution of ``(4 - sum of the 4 neighbours) y = x`` with ``sum y = 0`` (``sum x = 0``)."""
        l0, l1 = self.shape
        k0 = 2 * np.pi * np.fft.fftfreq(l0)
        k1 = 2 * np.pi * np.fft.fftfreq(l1)
        lap = 4 * np.sin(k0 / 2)[:, None] ** 2 + 4 * np.sin(k1 / 2)[None, :] ** 2
        inv = np.where(lap > 0, 1.0 / np.where(lap > 0, lap, 1.0), 0.0)
        return jnp.real(jnp.fft.ifft2(jnp.fft.fft2(x) * jnp.asarray(inv, x.dtype)))

    # --- one map and its inverse ----------------------------------------------------------
    def _map(self, raw: Array, u: Array) -> tuple[Array, Array]:
        c = self.coefficients(raw)
        phi = self._plaquette(u)
        h, dh = self._h(c, phi)
        x = h - jnp.mean(h, axis=(-2, -1), keepdims=True)
        logj = jnp.sum(jnp.log1p(dh), axis=(-2, -1)) + jnp.log1p(-jnp.mean(dh / (1 + dh), axis=(-2, -1)))
        return u + self._curl_t(self._green(x)), logj

    def _g_inverse(self, c: Array, psi: Array) -> Array:
        """``phi`` with ``phi + h(phi) = psi`` (Newton; ``g`` is increasing with ``g' >= 0.05``)."""
        def body(state):  # noqa: ANN001, ANN202
            phi, _, it = state
            h, dh = self._h(c, phi)
            new = phi - (phi + h - psi) / (1 + dh)
            return new, jnp.max(jnp.abs(new - phi)), it + 1

        def cond(state):  # noqa: ANN001, ANN202
            return (state[1] > _NEWTON_TOL) & (state[2] < 200)

        phi, _, _ = jax.lax.while_loop(cond, body, (psi, jnp.asarray(jnp.inf, psi.dtype), 0))
        return phi

    def _unmap(self, raw: Array, u_new: Array) -> tuple[Array, Array]:
        c = self.coefficients(raw)
        phi_new = self._plaquette(u_new)

        def body(state):  # noqa: ANN001, ANN202
            shift, _, it = state
            phi = self._g_inverse(c, phi_new + shift[..., None, None])
            h, dh = self._h(c, phi)
            f = shift - jnp.mean(h, axis=(-2, -1))
            df = 1 - jnp.mean(dh / (1 + dh), axis=(-2, -1))
            new = shift - f / df
            return new, jnp.max(jnp.abs(new - shift)), it + 1

        def cond(state):  # noqa: ANN001, ANN202
            return (state[1] > _NEWTON_TOL) & (state[2] < 200)

        shift0 = jnp.zeros(phi_new.shape[:-2], phi_new.dtype)
        shift, _, _ = jax.lax.while_loop(cond, body, (shift0, jnp.asarray(jnp.inf, phi_new.dtype), 0))
        phi = self._g_inverse(c, phi_new + shift[..., None, None])
        h, dh = self._h(c, phi)
        x = h - jnp.mean(h, axis=(-2, -1), keepdims=True)
        logj = jnp.sum(jnp.log1p(dh), axis=(-2, -1)) + jnp.log1p(-jnp.mean(dh / (1 + dh), axis=(-2, -1)))
        return u_new - self._curl_t(self._green(x)), -logj

    # --- public API ------------------------------------------------------------------------
    def forward(self, params: Array, u: Array) -> tuple[Array, Array]:
        """``(f(U), log J_f(U))``; ``U`` ``(*batch, L_0, L_1, 2)`` angles; ``log J`` has the batch shape."""
        nb = self._check(params, u)
        total = jnp.zeros(u.shape[:nb], jnp.float64 if jax.config.jax_enable_x64 else u.dtype)
        for k in range(self.n_maps):
            u, lj = self._map(params[k], u)
            total = total + lj
        return u, total

    def reverse(self, params: Array, u: Array) -> tuple[Array, Array]:
        """``(f^{-1}(U'), log J_{f^{-1}}(U'))`` with ``log J_{f^{-1}} = -log J_f`` at the preimage."""
        nb = self._check(params, u)
        total = jnp.zeros(u.shape[:nb], jnp.float64 if jax.config.jax_enable_x64 else u.dtype)
        for k in reversed(range(self.n_maps)):
            u, lj = self._unmap(params[k], u)
            total = total + lj
        return u, total

    def with_shape(self, shape: Sequence[int]) -> "PlaquetteFlow":
        """The same flow on another torus (the parameters do not depend on the volume)."""
        from .build import make_flow
        return make_flow(self.group, shape, kind="plaquette", n_sweeps=self.n_maps, harmonics=self.harmonics)

    def describe(self) -> dict[str, Any]:
        """JSON-able structure (for checkpoints)."""
        return {"kind": self.kind, "group": self.group.name, "shape": list(self.shape), "n_maps": self.n_maps,
                "harmonics": self.harmonics, "n_layers": self.n_layers}
