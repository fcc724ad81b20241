"""Wilson fermions: the Wilson–Dirac operator, exact determinants, pseudofermions.

Conventions (any dimension ``d`` in {2, 4}; the same code serves the Schwinger model and 4D QCD)
---------------------------------------------------------------------------------------------
Fermion fields have shape ``(*batch, L_0, ..., L_{d-1}, Ns, Nc)`` with ``Ns = 2`` (d = 2) or 4
(d = 4) spin and ``Nc`` colour components (``Nc = 1`` for U(1)).  The Wilson–Dirac operator with bare
mass ``m`` (hopping parameter ``kappa = 1 / (2 m + 2 d)``) is

    D psi(x) = (m + d) psi(x)
               - 1/2 sum_mu [ (1 - gamma_mu) U_mu(x) psi(x + mu) + (1 + gamma_mu) U_mu(x - mu)^dag psi(x - mu) ],

antiperiodic in time (``mu = 0``): the hop across the time boundary carries a factor -1.  Euclidean
Hermitian gamma matrices (see :func:`gamma_matrices`); ``gamma_5``-hermiticity ``D^dag = g5 D g5`` holds,
so ``det D`` is real and two degenerate flavours contribute ``det(D^dag D) = |det D|^2``.  In free field
``D(p) = m + sum_mu (1 - cos p_mu) + i sum_mu gamma_mu sin p_mu``.

Even–odd preconditioning: ``D = (m + d) - H/2`` where the hopping term ``H`` connects sites of
opposite parity, so ``det D = (m + d)^{n_odd} det Dhat`` with the Schur complement on even sites
``Dhat = (m + d) - H_eo H_oe / (4 (m + d))`` (``n_odd`` = number of odd-site components).

Actions (``n_f`` degenerate flavours, ``n_f`` even)::

    exact:          S(U) = S_g(U) - n_f log|det D(U)|
    pseudofermion:  S(U, phi) = S_g(U) + phi^dag (Dhat^dag Dhat)^{-1} phi      (n_f = 2, phi on even sites)

Both give the same distribution of ``U``: ``phi = Dhat^dag eta`` with Gaussian ``eta`` (density ``e^{-eta^dag eta}``)
is drawn at the start of every HMC trajectory by :meth:`WilsonFermionAction.refresh`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import lattice, rng
from ..groups import Group
from .dirac import (  # the operator layer; re-exported here (every name below was defined in this module before)
    CGResult,
    algebra_gradient,
    bicgstab,
    conjugate_gradient,
    dirac,
    dirac_dagger,
    dirac_matrix,
    even_mask,
    fermion_links,
    gamma_matrices,
    hopping,
    inverse_dense,
    kappa_from_mass,
    log_abs_det,
    log_abs_det_dense,
    mass_from_kappa,
    schur,
    schur_dagger,
)
from .gauge import PARAMS as GAUGE_PARAMS
from .gauge import WilsonGaugeAction, accumulate, check_param, check_param_names

Array = jax.Array

__all__ = ["gamma_matrices", "WilsonFermionAction", "fermion_links", "hopping", "dirac", "dirac_dagger",
           "schur", "schur_dagger", "dirac_matrix", "log_abs_det", "log_abs_det_dense", "inverse_dense", "CGResult",
           "conjugate_gradient", "bicgstab",
           "algebra_gradient", "log_det_ratio_estimate", "kappa_from_mass", "mass_from_kappa"]


# ----------------------------------------------------------------------------------------
# the theory
# ----------------------------------------------------------------------------------------


DET_METHODS = ("exact", "pseudofermion")


@dataclass(frozen=True)
class WilsonFermionAction:
    """Wilson gauge action plus ``n_flavors`` degenerate Wilson fermions (module docstring: conventions).

    Parameters
    ----------
    gauge      : the gauge action (:class:`WilsonGaugeAction`: group, shape, beta, xi, lam)
    mass       : bare quark mass ``m`` (``kappa = 1/(2m + 2d)``); a traced leaf
    n_flavors  : number of degenerate flavours, even (default 2)
    det        : ``"exact"`` (dense log-determinant, small lattices; used for reweighting and flow training) or
                 ``"pseudofermion"`` (one pseudofermion field per flavour pair, CG solves; for HMC on larger lattices)
    even_odd   : use the even–odd Schur complement (both methods)
    cg_tol     : relative CG residual for the pseudofermion action and force
    cg_maxiter : CG iteration cap
    phi        : pseudofermion field (set by :meth:`refresh`; ``None`` before the first trajectory, when
                 :meth:`action` counts the gauge part only)

    Registered as a pytree: ``gauge``, ``mass`` and ``phi`` are leaves; the rest is static.
    """

    gauge: WilsonGaugeAction
    mass: Any
    n_flavors: int = 2
    det: str = "exact"
    even_odd: bool = True
    cg_tol: float = 1e-10
    cg_maxiter: int = 2000
    phi: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.gauge, WilsonGaugeAction):
            raise TypeError(f"gauge must be a WilsonGaugeAction, got {type(self.gauge).__name__}")
        gamma_matrices(self.gauge.ndim)  # raises for unsupported d
        if self.det not in DET_METHODS:
            raise ValueError(f"det must be one of {DET_METHODS}, got {self.det!r}")
        if int(self.n_flavors) != self.n_flavors or self.n_flavors < 2 or self.n_flavors % 2:
            raise ValueError(f"n_flavors must be an even number >= 2 (det(D^dag D) per pair), got {self.n_flavors}")
        if self.det == "pseudofermion" and self.n_flavors != 2:
            raise ValueError("the pseudofermion action is implemented for n_flavors = 2; use det='exact'")
        if self.even_odd or self.det == "pseudofermion":
            lattice.validate_shape(self.gauge.shape, even=True)
        m = check_param(self.mass, "mass", "WilsonFermionAction")
        object.__setattr__(self, "mass", m)
        if isinstance(m, (int, float)) and m + self.gauge.ndim <= 0:
            raise ValueError(f"mass {m} gives m + d <= 0 (kappa <= 0 or infinite); choose m > -{self.gauge.ndim}")

    # --- delegated geometry -------------------------------------------------------------
    @property
    def group(self) -> Group:
        return self.gauge.group

    @property
    def shape(self) -> tuple[int, ...]:
        return self.gauge.shape

    @property
    def ndim(self) -> int:
        return self.gauge.ndim

    @property
    def volume(self) -> int:
        return self.gauge.volume

    @property
    def link_shape(self) -> tuple[int, ...]:
        return self.gauge.link_shape

    @property
    def link_index_shape(self) -> tuple[int, ...]:
        return self.gauge.link_index_shape

    @property
    def n_spin(self) -> int:
        return 2 if self.ndim == 2 else 4

    @property
    def n_color(self) -> int:
        return 1 if self.group.is_abelian else int(self.group.elem_shape[0])

    @property
    def fermion_shape(self) -> tuple[int, ...]:
        """Trailing shape of one fermion field: ``(L..., Ns, Nc)``."""
        return self.shape + (self.n_spin, self.n_color)

    @property
    def theory_name(self) -> str:
        """Name used by :func:`corrflow.make_theory` and the store: ``schwinger`` (U(1)) or ``<group>-wilson``."""
        return "schwinger" if self.group.is_abelian else f"{self.group.name}-wilson"

    @property
    def kappa(self) -> Any:
        return 1.0 / (2.0 * self.mass + 2.0 * self.ndim)

    @property
    def beta(self) -> Any:
        return self.gauge.beta

    def params(self) -> dict[str, float]:
        """Physics parameters as plain floats: ``beta, xi, lam, mass, nf``."""
        return {**self.gauge.params(), "mass": float(self.mass), "nf": float(self.n_flavors)}

    def replace(self, **changes: Any) -> "WilsonFermionAction":
        """Copy with parameters changed: gauge ones (``beta, xi, lam``), ``mass`` (or ``kappa``), ``nf``, or
        settings (``det``, ``even_odd``, ...)."""
        own = [f.name for f in dataclasses.fields(self) if f.name != "gauge"]
        check_param_names(changes, (*GAUGE_PARAMS, *own, "kappa", "nf"), self.theory_name, ("gauge",))
        gauge_changes = {k: changes.pop(k) for k in GAUGE_PARAMS if k in changes}
        if "kappa" in changes:
            changes["mass"] = mass_from_kappa(float(check_param(changes.pop("kappa"), "kappa", "replace")), self.ndim)
        if "nf" in changes:
            changes["n_flavors"] = int(changes.pop("nf"))
        new = dataclasses.replace(self, gauge=self.gauge.replace(**gauge_changes), **changes)
        return new

    def check_links(self, u: Array) -> None:
        self.gauge.check_links(u)

    # --- fermion matrix -------------------------------------------------------------------
    def links(self, u: Array) -> Array:
        """Complex links with the antiperiodic boundary folded in (see :func:`fermion_links`)."""
        return fermion_links(u, self.group, self.shape)

    def dirac(self, u: Array, psi: Array) -> Array:
        """``D(U) psi``; ``psi`` ``(*batch, L..., Ns, Nc)``."""
        return dirac(self.links(u), self.mass, psi)

    def dirac_dagger(self, u: Array, psi: Array) -> Array:
        return dirac_dagger(self.links(u), self.mass, psi)

    def log_det(self, u: Array) -> Array:
        """``n_f log|det D(U)| = (n_f / 2) log det(D^dag D)``, shape ``batch`` (dense; small lattices)."""
        return self.n_flavors * log_abs_det(self.links(u), self.mass, self.n_spin, self.even_odd)

    def _normal(self, v: Array) -> Any:
        if self.even_odd:
            return lambda x: schur_dagger(v, self.mass, schur(v, self.mass, x))
        return lambda x: dirac_dagger(v, self.mass, dirac(v, self.mass, x))

    def _op(self, v: Array, x: Array) -> Array:
        return schur(v, self.mass, x) if self.even_odd else dirac(v, self.mass, x)

    def solve_normal(self, u: Array, phi: Array) -> CGResult:
        """``X = (Dhat^dag Dhat)^{-1} phi`` (or with ``D`` when not ``even_odd``) by CG."""
        v = self.links(u)
        return conjugate_gradient(self._normal(v), phi, self.ndim + 2, tol=self.cg_tol, maxiter=self.cg_maxiter)

    # --- HMC interface --------------------------------------------------------------------
    def refresh(self, key: Array, u: Array) -> "WilsonFermionAction":
        """New pseudofermion field ``phi = Dhat^dag eta`` (Gaussian ``eta``, density ``e^{-|eta|^2}``, on even sites
        when ``even_odd``) for links ``u``; returns a copy carrying ``phi`` (identity for ``det='exact'``)."""
        if self.det == "exact":
            return self
        batch = u.shape[: u.ndim - len(self.link_shape)]
        cdt = jnp.result_type(u.dtype, jnp.complex64) if self.group.is_abelian else u.dtype
        real = jnp.finfo(cdt).dtype
        kr, ki = jax.random.split(key)
        shp = batch + self.fermion_shape
        eta = (rng.normal(kr, shp, real) + 1j * rng.normal(ki, shp, real)) / np.sqrt(2.0)
        eta = eta.astype(cdt)
        v = self.links(u)
        if self.even_odd:
            eta = eta * jnp.asarray(even_mask(self.shape), real)
            phi = schur_dagger(v, self.mass, eta)
        else:
            phi = dirac_dagger(v, self.mass, eta)
        return dataclasses.replace(self, phi=phi)

    def fermion_action(self, u: Array) -> Array:
        """Fermion part of the action, shape ``batch``: ``-n_f log|det D|`` (exact) or
        ``phi^dag (M^dag M)^{-1} phi`` (pseudofermion)."""
        if self.det == "exact":
            return -self.log_det(u)
        if self.phi is None:
            batch = u.shape[: u.ndim - len(self.link_shape)]
            return jnp.zeros(batch, u.real.dtype)
        x = jax.lax.stop_gradient(self.solve_normal(u, self.phi).x)
        axes = tuple(range(-(self.ndim + 2), 0))
        return jnp.real(jnp.sum(jnp.conj(self.phi) * x, axis=axes)).astype(u.real.dtype)

    def action(self, u: Array) -> Array:
        """Total action ``S_g + S_f``, shape ``batch`` (pseudofermion: at the current ``phi``)."""
        return self.gauge.action(u) + self.fermion_action(u)

    def source_operator(self, u: Array) -> Array:
        """Feynman–Hellmann source operator of the gauge action (``dS/dlam``)."""
        return self.gauge.source_operator(u)

    def force(self, u: Array) -> Array:
        """Right-trivialised derivative of :meth:`action` (convention of :mod:`corrflow.theories.gauge`)."""
        fg = self.gauge.force(u)
        if self.det == "exact":
            return fg + algebra_gradient(lambda w: -self.log_det(w), self.group, u).astype(fg.dtype)
        if self.phi is None:
            return fg
        # dS_pf = -X^dag d(M^dag M) X = -2 Re <M X, dM X> with X = (M^dag M)^{-1} phi, M = Dhat (or D)
        v0 = self.links(u)
        x = jax.lax.stop_gradient(self.solve_normal(u, self.phi).x)
        y = jax.lax.stop_gradient(self._op(v0, x))
        axes = tuple(range(-(self.ndim + 2), 0))

        def bilinear(w: Array) -> Array:
            mx = self._op(self.links(w), x)
            return -2.0 * jnp.real(jnp.sum(jnp.conj(y) * mx, axis=axes))

        return fg + algebra_gradient(bilinear, self.group, u).astype(fg.dtype)


def _flatten(t: WilsonFermionAction) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    return (t.gauge, t.mass, t.phi), (t.n_flavors, t.det, t.even_odd, t.cg_tol, t.cg_maxiter)


def _unflatten(aux: tuple[Any, ...], leaves: tuple[Any, ...]) -> WilsonFermionAction:
    obj = object.__new__(WilsonFermionAction)
    gauge, mass, phi = leaves
    n_flavors, det, even_odd, cg_tol, cg_maxiter = aux
    for k, val in dict(gauge=gauge, mass=mass, phi=phi, n_flavors=n_flavors, det=det, even_odd=even_odd,
                       cg_tol=cg_tol, cg_maxiter=cg_maxiter).items():
        object.__setattr__(obj, k, val)
    return obj


jax.tree_util.register_pytree_node(WilsonFermionAction, _flatten, _unflatten)


# ----------------------------------------------------------------------------------------
# stochastic determinant ratio (unbiased)
# ----------------------------------------------------------------------------------------


@partial(jax.jit, static_argnames=("n_noise",))
def log_det_ratio_estimate(key: Array, theory_a: WilsonFermionAction, u: Array, theory_b: WilsonFermionAction,
                           v: Array, n_noise: int = 4) -> Array:
    """Log of an unbiased estimate of ``det(D_b^dag D_b)(v) / det(D_a^dag D_a)(u)`` (two flavours), shape ``batch``.

    With ``A = (M_a M_b^{-1})^dag (M_a M_b^{-1})`` the ratio is ``1/det A = E_eta[exp(-eta^dag (A - 1) eta)]`` for
    Gaussian ``eta`` (density ``e^{-|eta|^2}``); the estimate averages ``n_noise`` such factors (finite variance needs
    the eigenvalues of ``A`` above 1/2, i.e. moderate parameter shifts).  ``M`` is the even-site Schur complement
    ``Dhat`` when ``theory_a.even_odd`` (the default; ``det D = (m + d)^{n_odd} det Dhat``, so the ratio is the exact
    factor ``((m_b + d) / (m_a + d))^{2 n_odd}`` times the stochastic one of ``Dhat``: half the noise dimension and
    a better-conditioned ``A``, measured 2.5x less variance of the log estimate for flowed 36x36 Schwinger-model
    configurations at the same cost), else the full ``D``; CG on ``M_b^dag M_b`` at ``theory_b.cg_tol``.
    """
    batch = u.shape[: u.ndim - len(theory_a.link_shape)]
    cdt = jnp.complex128 if u.real.dtype == jnp.float64 else jnp.complex64
    real = jnp.finfo(cdt).dtype
    va, vb = theory_a.links(u), theory_b.links(v)
    nax = theory_a.ndim + 2
    axes = tuple(range(-nax, 0))
    eo = bool(theory_a.even_odd)
    op, op_dag = (schur, schur_dagger) if eo else (dirac, dirac_dagger)
    mask = jnp.asarray(even_mask(theory_a.shape), real) if eo else None
    const = 0.0
    if eo:
        d = theory_a.ndim
        n_odd = int(np.prod(theory_a.shape)) // 2 * theory_a.n_spin * theory_a.n_color
        const = 2 * n_odd * (jnp.log(jnp.abs(theory_b.mass + d)) - jnp.log(jnp.abs(theory_a.mass + d)))

    def one(k: Array) -> Array:
        kr, ki = jax.random.split(k)
        shp = batch + theory_a.fermion_shape
        eta = ((rng.normal(kr, shp, real) + 1j * rng.normal(ki, shp, real)) / np.sqrt(2.0)).astype(cdt)
        if eo:
            eta = eta * mask
        # xi = M_b^{-1} eta = (M_b^dag M_b)^{-1} M_b^dag eta
        rhs = op_dag(vb, theory_b.mass, eta)
        xi = conjugate_gradient(lambda x: op_dag(vb, theory_b.mass, op(vb, theory_b.mass, x)), rhs, nax,
                                tol=theory_b.cg_tol, maxiter=theory_b.cg_maxiter).x
        chi = op(va, theory_a.mass, xi)
        return -accumulate(jnp.abs(chi) ** 2, axis=axes) + accumulate(jnp.abs(eta) ** 2, axis=axes)

    logs = jax.vmap(one)(jax.random.split(key, n_noise))
    return const + jax.scipy.special.logsumexp(logs, axis=0) - np.log(n_noise)
