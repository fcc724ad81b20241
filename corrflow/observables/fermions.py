"""Fermionic observables of Wilson fermions: propagators, the pion correlator, the chiral condensate.

Conventions follow :mod:`corrflow.theories.fermions` (``D`` antiperiodic in time, ``gamma_5``-Hermitian).

* Point-source propagator ``S(x; x_0) = D^{-1}(x, x_0)``: shape ``(*batch, L..., Ns, Nc, Ns, Nc)``, the last two
  axes are the source spin and colour.
* Pion (isovector pseudoscalar ``pi^+ = dbar gamma_5 u``) correlator, with ``gamma_5``-hermiticity
  ``S(x_0; x) = g5 S(x; x_0)^dag g5``::

      C(t) = sum_{vec x} tr[ S(x; x_0) S(x; x_0)^dag ],   x = (t_0 + t, vec x),

  positive by construction, averaged over ``n_sources`` point sources at ``t_0 = k L_0 / n_sources`` (``vec x_0 = 0``).
* Chiral condensate per flavour ``Sigma = (1/V) Re tr D^{-1}`` (this is ``-<psibar psi>`` in the Grassmann sign
  convention ``<psi psibar> = D^{-1}``).  Two degenerate flavours: ``dS_eff/dm = -n_f V Sigma``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..checks import DENSE_MAX_DIM, check_dense_size
from ..theories.dirac import dense_batch, gamma5
from ..theories.fermions import (
    WilsonFermionAction,
    bicgstab,
    conjugate_gradient,
    dirac,
    dirac_dagger,
    dirac_matrix,
    inverse_dense,
)

Array = jax.Array

__all__ = ["point_source", "propagator", "pion_correlator", "valence_quarks", "SOLVERS", "chiral_condensate",
           "chiral_condensate_stochastic", "FermionMeasurements", "dS_dmass", "DENSE_MAX_DIM", "check_dense"]

def check_dense(theory: WilsonFermionAction, what: str = "the exact chiral condensate inverts",
                remedy: str = "use the stochastic estimate (noise vectors and CG: `--traces stochastic`, "
                              "corrflow.observables.fermions.chiral_condensate_stochastic)") -> None:
    """``ValueError`` (one line, with the way out ``remedy``) when ``theory``'s Dirac matrix is too large for dense
    algebra (``what``: the computation and its verb, e.g. "the exact chiral condensate inverts");
    :func:`corrflow.checks.check_dense_size` without a theory."""
    check_dense_size(tuple(theory.shape), theory.n_spin, theory.n_color, what, remedy)


def point_source(theory: WilsonFermionAction, site: tuple[int, ...], dtype: Any = jnp.complex128) -> Array:
    """Unit point sources at ``site`` for all ``Ns * Nc`` spin-colour components: ``(L..., Ns, Nc, Ns, Nc)``."""
    ns, nc = theory.n_spin, theory.n_color
    b = np.zeros(theory.shape + (ns, nc, ns, nc), complex)
    eye = np.eye(ns * nc).reshape(ns, nc, ns, nc)
    b[tuple(site)] = eye
    return jnp.asarray(b, dtype)


#: ``cg``: CG on the normal equations (robust for any mass); ``bicgstab``: BiCGStab on ``D`` (fewer operator
#: applications away from the critical mass, no convergence guarantee); ``bicgstab+cg``: BiCGStab, then CG on the
#: normal equations from its solution (BiCGStab's speed with CG's guarantee: a converged start costs CG no
#: iteration) -- the solver of the tangent estimator's ``pion@T``
SOLVERS = ("cg", "bicgstab", "bicgstab+cg")


def propagator(theory: WilsonFermionAction, u: Array, site: tuple[int, ...] | None = None, *,
               tol: float = 1e-12, maxiter: int = 5000, solver: str = "cg") -> Array:
    """``S(x; x_0) = D(U)^{-1}`` on a point source at ``site`` (default the origin), all spin-colour components.

    ``u``: ``(*batch, *link_shape)``; result ``(*batch, L..., Ns, Nc, Ns, Nc)``.  ``solver="cg"`` solves the
    normal equations ``D^dag D x = D^dag b`` by CG (robust: converges for any mass); ``"bicgstab"`` solves
    ``D x = b`` directly (fewer operator applications away from the critical mass).  Relative residual ``tol``.
    The theory's gauge part may be a pure-gauge ensemble's action: then these are *valence* (quenched) quarks,
    see :func:`valence_quarks`.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; allowed: {', '.join(SOLVERS)}")
    site = tuple(site) if site is not None else (0,) * theory.ndim
    v = theory.links(u)
    batch = u.shape[: u.ndim - len(theory.link_shape)]
    cdt = v.dtype
    b = point_source(theory, site, cdt)
    ns, nc = theory.n_spin, theory.n_color
    # move source indices to a leading axis: (Ns*Nc, *batch, L..., Ns, Nc)
    b = jnp.moveaxis(b.reshape(theory.fermion_shape + (ns * nc,)), -1, 0)
    b = jnp.broadcast_to(b.reshape((ns * nc,) + (1,) * len(batch) + theory.fermion_shape),
                         (ns * nc,) + batch + theory.fermion_shape)
    m = theory.mass
    if solver == "bicgstab":
        x = bicgstab(lambda y: dirac(v, m, y), b, theory.ndim + 2, tol=tol, maxiter=maxiter).x
    elif solver == "bicgstab+cg":
        x = _dirac_solve(v, m, b, theory.ndim + 2, tol, maxiter)
    else:
        x = _normal_solve(v, m, b, theory.ndim + 2, tol, maxiter)
    x = jnp.moveaxis(x, 0, -1)  # (*batch, L..., Ns, Nc, Ns*Nc)
    return x.reshape(x.shape[:-1] + (ns, nc))


def _normal_operator(v: Array, m: Any) -> Any:
    """``y -> D^dag D y``, the Hermitian positive-definite operator of CG on the normal equations."""
    return lambda y: dirac_dagger(v, m, dirac(v, m, y))


def _normal_solve(v: Array, m: Any, b: Array, n_site_axes: int, tol: float, maxiter: int) -> Array:
    """``D^{-1} b = (D^dag D)^{-1} D^dag b`` by CG, as a ``lax.custom_linear_solve``: derivatives by implicit
    differentiation (one more solve per tangent) in forward *and* reverse mode -- a reverse-mode gradient of a
    correlator costs one adjoint solve per output, whatever the number of directions it is contracted with
    (:func:`corrflow.tangent.directional_derivatives`).  ``A = D^dag D`` is Hermitian, so its linear transpose is
    ``conj(A)``: ``A^T y = c`` is solved as ``conj(A^{-1} conj(c))``."""
    normal = _normal_operator(v, m)

    def solve(matvec: Any, r: Array) -> Array:
        return conjugate_gradient(matvec, r, n_site_axes, tol=tol, maxiter=maxiter).x

    def transpose_solve(vecmat: Any, r: Array) -> Array:  # A^T = conj(A): JAX's transposed operator not needed
        return jnp.conj(solve(normal, jnp.conj(r)))

    return jax.lax.custom_linear_solve(normal, dirac_dagger(v, m, b), solve, transpose_solve)


def _dirac_solve(v: Array, m: Any, b: Array, n_site_axes: int, tol: float, maxiter: int) -> Array:
    """``D^{-1} b`` by BiCGStab on ``D``, polished by CG on the normal equations started from its solution (solver
    ``bicgstab+cg``), as a ``lax.custom_linear_solve`` differentiable in forward and reverse mode like
    :func:`_normal_solve`.  ``D^T y = c`` is solved through ``D^dag = g5 D g5``: ``y = conj(g5 D^{-1} g5 conj(c))``."""
    d = n_site_axes - 2

    def op(y: Array) -> Array:
        return dirac(v, m, y)

    def solve(matvec: Any, r: Array) -> Array:
        x = bicgstab(op, r, n_site_axes, tol=tol, maxiter=maxiter).x
        return conjugate_gradient(_normal_operator(v, m), dirac_dagger(v, m, r), n_site_axes, tol=tol,
                                  maxiter=maxiter, x0=x).x

    def transpose_solve(vecmat: Any, r: Array) -> Array:
        return jnp.conj(gamma5(solve(op, gamma5(jnp.conj(r), d)), d))

    return jax.lax.custom_linear_solve(op, b, solve, transpose_solve)


def valence_quarks(gauge: Any, *, mass: float | None = None, kappa: float | None = None) -> WilsonFermionAction:
    """Wilson quarks of bare ``mass`` (or hopping parameter ``kappa = 1/(2m + 2d)``) on the gauge fields of a
    pure-gauge theory, for quenched (valence) propagators and correlators; the gauge action is unchanged, so
    ensembles of ``gauge`` are used as they are."""
    from ..theories.fermions import mass_from_kappa

    if (mass is None) == (kappa is None):
        raise ValueError("valence_quarks: give exactly one of mass=... or kappa=...")
    if isinstance(gauge, WilsonFermionAction):
        gauge = gauge.gauge
    m = float(mass) if mass is not None else mass_from_kappa(float(kappa), len(gauge.shape))
    return WilsonFermionAction(gauge=gauge, mass=m)


@partial(jax.jit, static_argnames=("n_sources", "solver"))
def pion_correlator(theory: WilsonFermionAction, u: Array, n_sources: int = 1, solver: str = "cg") -> Array:
    """Pion correlator ``C(t)`` (module docstring), shape ``(*batch, L_0)``, averaged over ``n_sources`` sources
    at ``t_0 = k L_0 / n_sources``.  ``L_0`` must be divisible by ``n_sources``; ``solver`` as in
    :func:`propagator`."""
    l0 = theory.shape[0]
    if l0 % n_sources:
        raise ValueError(f"L_0 = {l0} is not divisible by n_sources = {n_sources}")
    nb = u.ndim - len(theory.link_shape)
    d = theory.ndim
    out = 0.0
    for k in range(n_sources):  # a few source time slices
        t0 = k * (l0 // n_sources)
        s = propagator(theory, u, (t0,) + (0,) * (d - 1), solver=solver)
        dens = jnp.sum(jnp.abs(s) ** 2, axis=tuple(range(-4, 0)))  # (*batch, L...)
        c = jnp.sum(dens, axis=tuple(range(nb + 1, nb + d)))  # (*batch, L_0)
        out = out + jnp.roll(c, -t0, axis=-1)
    return out / n_sources


@jax.jit
def chiral_condensate(theory: WilsonFermionAction, u: Array) -> Array:
    """``Sigma = (1/V) Re tr D^{-1}`` per flavour (exact, dense; small lattices), shape ``batch``.

    ``ValueError`` when ``V Ns Nc > DENSE_MAX_DIM`` (use :func:`chiral_condensate_stochastic`)."""
    check_dense(theory)
    v = theory.links(u)
    nb = u.ndim - len(theory.link_shape)
    flat = v.reshape((-1,) + v.shape[nb:])

    def one(vv: Array) -> Array:
        mat = dirac_matrix(vv, theory.mass, theory.n_spin)
        return jnp.real(jnp.trace(inverse_dense(mat)))

    dim = theory.volume * theory.n_spin * theory.n_color
    return jax.lax.map(one, flat, batch_size=dense_batch(dim, dim)).reshape(u.shape[:nb]) / theory.volume


def chiral_condensate_stochastic(theory: WilsonFermionAction, u: Array, eta: Array, *, tol: float = 1e-10,
                                 maxiter: int = 5000) -> Array:
    """Unbiased estimate of ``Sigma = (1/V) Re tr D^{-1}`` on one configuration ``u`` (``link_shape``) from noise
    vectors ``eta`` ``(n, *fermion_shape)`` with ``E[eta eta^dag] = 1``: ``(1/(n V)) sum_k Re eta_k^dag D^{-1} eta_k``,
    ``D^{-1} eta = (D^dag D)^{-1} D^dag eta`` by CG (all noise vectors iterated together; relative residual ``tol``).

    Any lattice size; differentiable in the links and the mass, forward and reverse mode (implicit differentiation
    of the solve).  The noise must be independent of everything else the estimate is combined with (e.g. the
    traces in ``∂_m S``)."""
    v = theory.links(u).astype(eta.dtype)
    m = theory.mass
    nax = theory.ndim + 2
    psi = _normal_solve(v, m, eta, nax, tol, maxiter)
    axes = tuple(range(-nax, 0))
    return jnp.mean(jnp.real(jnp.sum(jnp.conj(eta) * psi, axis=axes))) / theory.volume


def dS_dmass(theory: WilsonFermionAction, u: Array) -> Array:
    """``dS_eff/dm = -n_f Re tr D^{-1} = -n_f V Sigma`` (exact), shape ``batch``."""
    return -theory.n_flavors * theory.volume * chiral_condensate(theory, u)


class FermionMeasurements:
    """Hashable measurement callable ``links -> dict`` for on-the-fly use in :func:`corrflow.generate.generate`
    (and for :func:`corrflow.correlate.flowed_reweighting`): ``plaquette`` (batch), ``pion`` ``(*batch, L_0)``
    (:func:`pion_correlator` with ``n_sources``) and, if ``condensate``, ``condensate`` (dense; small lattices).

    The valence Dirac operator is the one of ``theory`` (its mass), whatever theory generated the links.
    """

    def __init__(self, theory: WilsonFermionAction, n_sources: int = 1, condensate: bool = False,
                 solver: str = "cg") -> None:
        if not isinstance(theory, WilsonFermionAction):
            raise TypeError(f"FermionMeasurements needs a WilsonFermionAction, got {type(theory).__name__}")
        self.theory = theory.replace(det="exact")
        self.n_sources = int(n_sources)
        if self.n_sources < 1 or theory.shape[0] % self.n_sources:  # (n_sources=0 failed at trace time)
            raise ValueError(f"n_sources must be a divisor of L_0 = {theory.shape[0]} (sources at t_0 = k L_0 / "
                             f"n_sources), got {n_sources}")
        self.condensate = bool(condensate)
        if self.condensate:
            check_dense(self.theory)
        if solver not in SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; allowed: {', '.join(SOLVERS)}")
        self.solver = solver
        self._key = (self.theory.theory_name, self.theory.shape, tuple(sorted(self.theory.params().items())),
                     self.n_sources, self.condensate, self.solver)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FermionMeasurements) and other._key == self._key

    @property
    def names(self) -> list[str]:
        return ["plaquette", "pion"] + (["condensate"] if self.condensate else [])

    def __call__(self, u: Array) -> dict[str, Array]:
        from .gauge import plaquette

        self.theory.check_links(u)  # links of another lattice failed deep in the Dirac operator (static: trace time)
        out = {"plaquette": plaquette(u, self.theory.group),
               "pion": pion_correlator(self.theory, u, self.n_sources, self.solver)}
        if self.condensate:
            out["condensate"] = chiral_condensate(self.theory, u)
        return out
