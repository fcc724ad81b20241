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
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import lattice, rng
from ..groups import Group
from .gauge import WilsonGaugeAction, accumulate

Array = jax.Array

__all__ = ["gamma_matrices", "WilsonFermionAction", "fermion_links", "hopping", "dirac", "dirac_dagger",
           "schur", "schur_dagger", "dirac_matrix", "log_abs_det", "log_abs_det_dense", "inverse_dense", "CGResult",
           "conjugate_gradient", "bicgstab",
           "algebra_gradient", "log_det_ratio_estimate", "kappa_from_mass", "mass_from_kappa"]


# ----------------------------------------------------------------------------------------
# gamma matrices
# ----------------------------------------------------------------------------------------


def gamma_matrices(d: int) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean Hermitian gamma matrices ``(gamma_0, ..., gamma_{d-1})`` and ``gamma_5``.

    ``{gamma_mu, gamma_nu} = 2 delta_{mu nu}``, ``gamma_5`` Hermitian, anticommuting with all
    ``gamma_mu``.  ``mu = 0`` is time.  d = 2: ``gamma_0 = sigma_1, gamma_1 = sigma_2, gamma_5 = sigma_3``.
    d = 4: chiral basis, ``gamma_0 = [[0, 1], [1, 0]]`` (the Euclidean ``gamma_4``), ``gamma_k = [[0, -i sigma_k],
    [i sigma_k, 0]]``, ``gamma_5 = gamma_1 gamma_2 gamma_3 gamma_0 = diag(1, 1, -1, -1)``.
    Returns arrays of shape ``(d, Ns, Ns)`` and ``(Ns, Ns)`` (complex128).
    """
    s1 = np.array([[0, 1], [1, 0]], complex)
    s2 = np.array([[0, -1j], [1j, 0]], complex)
    s3 = np.array([[1, 0], [0, -1]], complex)
    if d == 2:
        return np.stack([s1, s2]), s3
    if d == 4:
        z, one = np.zeros((2, 2), complex), np.eye(2, dtype=complex)
        g0 = np.block([[z, one], [one, z]])
        gk = [np.block([[z, -1j * s], [1j * s, z]]) for s in (s1, s2, s3)]
        g = np.stack([g0] + gk)
        g5 = g[1] @ g[2] @ g[3] @ g[0]
        return g, g5
    raise ValueError(f"Wilson fermions are implemented for d = 2 and d = 4, got d = {d}")


def kappa_from_mass(mass: float, d: int) -> float:
    """``kappa = 1 / (2 m + 2 d)``."""
    return 1.0 / (2.0 * mass + 2.0 * d)


def mass_from_kappa(kappa: float, d: int) -> float:
    """``m = 1 / (2 kappa) - d``."""
    if kappa <= 0:
        raise ValueError(f"kappa must be > 0, got {kappa}")
    return 1.0 / (2.0 * kappa) - d


# ----------------------------------------------------------------------------------------
# the operator
# ----------------------------------------------------------------------------------------


def fermion_links(u: Array, group: Group, shape: tuple[int, ...]) -> Array:
    """Complex link matrices ``(*batch, L..., d, Nc, Nc)`` with the antiperiodic time boundary folded in
    (temporal links on the last time slice multiplied by -1)."""
    d = len(shape)
    v = jnp.exp(1j * u)[..., None, None] if group.is_abelian else u
    sign = np.ones(shape + (d,))
    sign[-1, ..., 0] = -1.0
    return v * jnp.asarray(sign, dtype=v.real.dtype)[..., None, None]


def _site_axis(mu: int, d: int) -> int:
    return mu - d - 2


def _spin(p: Any, x: Array) -> Array:
    return jnp.einsum("st,...tc->...sc", p, x)


def _color(v: Array, x: Array) -> Array:
    return jnp.einsum("...ab,...sb->...sa", v, x)


def _color_dag(v: Array, x: Array) -> Array:
    return jnp.einsum("...ba,...sb->...sa", jnp.conj(v), x)


def hopping(v: Array, psi: Array) -> Array:
    """``H psi(x) = sum_mu [(1 - g_mu) V_mu(x) psi(x+mu) + (1 + g_mu) V_mu(x-mu)^dag psi(x-mu)]`` with
    ``v`` from :func:`fermion_links` (boundary signs included)."""
    d = v.shape[-3]
    gam, _ = gamma_matrices(d)
    one = np.eye(gam.shape[-1])
    out = jnp.zeros_like(psi)
    for mu in range(d):  # loop over directions, not sites
        vmu = jax.lax.index_in_dim(v, mu, axis=v.ndim - 3, keepdims=False)
        ax = _site_axis(mu, d)
        fwd = _color(vmu, jnp.roll(psi, -1, axis=ax))
        bwd = jnp.roll(_color_dag(vmu, psi), 1, axis=ax)
        pm, pp = jnp.asarray(one - gam[mu], psi.dtype), jnp.asarray(one + gam[mu], psi.dtype)
        out = out + _spin(pm, fwd) + _spin(pp, bwd)
    return out


def dirac(v: Array, mass: Any, psi: Array) -> Array:
    """Wilson–Dirac operator ``D psi = (m + d) psi - H psi / 2`` (``v`` from :func:`fermion_links`)."""
    d = v.shape[-3]
    return (mass + d) * psi - 0.5 * hopping(v, psi)


def _gamma5(psi: Array, d: int) -> Array:
    return _spin(jnp.asarray(gamma_matrices(d)[1], psi.dtype), psi)


def dirac_dagger(v: Array, mass: Any, psi: Array) -> Array:
    """``D^dag psi = g5 D g5 psi``."""
    d = v.shape[-3]
    return _gamma5(dirac(v, mass, _gamma5(psi, d)), d)


def schur(v: Array, mass: Any, psi: Array) -> Array:
    """Even–odd Schur complement ``Dhat psi = (m + d) psi - H H psi / (4 (m + d))`` for ``psi`` supported on
    even sites (the result is supported on even sites too)."""
    d = v.shape[-3]
    m = mass + d
    return m * psi - hopping(v, hopping(v, psi)) / (4.0 * m)


def schur_dagger(v: Array, mass: Any, psi: Array) -> Array:
    """``Dhat^dag = g5 Dhat g5``."""
    d = v.shape[-3]
    return _gamma5(schur(v, mass, _gamma5(psi, d)), d)


def even_mask(shape: tuple[int, ...]) -> np.ndarray:
    """``(L..., 1, 1)`` float mask of the even sites (``sum_mu x_mu`` even)."""
    return (lattice.checkerboard(shape) == 0).astype(float)[..., None, None]


def dirac_matrix(v: Array, mass: Any, n_spin: int, even_odd: bool = False) -> Array:
    """Dense matrix of ``D`` (or of ``Dhat`` on even sites when ``even_odd``) for one configuration ``v``
    ``(L..., d, Nc, Nc)``; rows/columns ordered like ``psi.reshape(-1)`` (restricted to even sites)."""
    shape = v.shape[:-3]
    nc = v.shape[-1]
    n_full = int(np.prod(shape)) * n_spin * nc
    if even_odd:
        sel = np.flatnonzero(np.broadcast_to(even_mask(shape), shape + (n_spin, nc)).reshape(-1) > 0)
    else:
        sel = np.arange(n_full)
    basis = jnp.zeros((len(sel), n_full), v.dtype).at[jnp.arange(len(sel)), sel].set(1.0)
    op = schur if even_odd else dirac
    cols = jax.vmap(lambda e: op(v, mass, e.reshape(shape + (n_spin, nc))).reshape(-1)[sel])(basis)
    return cols.T


def _gauss_jordan(a: Array) -> tuple[Array, Array]:
    """``(log|det a|, a^{-1})`` of one square matrix by Gauss–Jordan elimination with partial pivoting.

    Written in plain XLA operations on purpose: batched LAPACK LU calls (``jnp.linalg.slogdet``/``inv``) inside
    vmapped HMC loops wedge jaxlib 0.10's CPU thread pool (``ParallelBatchMap``; the process sleeps forever).
    Pivot rows are not swapped but marked as used, so each step is one masked rank-1 update (``2 n^3`` in all).
    """
    n = a.shape[-1]
    aug = jnp.concatenate([a, jnp.eye(n, dtype=a.dtype)], axis=-1)
    rows = jnp.arange(n)

    def body(k: Array, carry: tuple[Array, ...]) -> tuple[Array, ...]:
        aug, logdet, used, perm = carry
        col = aug[:, k]
        p = jnp.argmax(jnp.where(used, -1.0, jnp.abs(col)))
        pivot_row = (rows == p)[:, None]
        prow = jax.lax.dynamic_index_in_dim(aug, p, axis=0, keepdims=False)
        piv = prow[k]
        row = prow / piv
        aug = jnp.where(pivot_row, row[None, :], aug - col[:, None] * row[None, :])
        return aug, logdet + jnp.log(jnp.abs(piv)), used | (rows == p), perm.at[k].set(p)

    init = (aug, jnp.zeros((), a.real.dtype), jnp.zeros(n, bool), jnp.zeros_like(rows))
    aug, logdet, _, perm = jax.lax.fori_loop(0, n, body, init, unroll=4)
    # [Pi | R] with R a = Pi (Pi[perm[k], k] = 1)  =>  a^{-1} = Pi^T R: row k of the inverse is row perm[k] of R
    return logdet, aug[perm, n:]


@jax.custom_jvp
def log_abs_det_dense(a: Array) -> Array:
    """``log|det a|`` of a square complex matrix (differentiable: ``d log|det a| = Re tr(a^{-1} da)``)."""
    return _gauss_jordan(a)[0]


@log_abs_det_dense.defjvp
def _log_abs_det_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    (a,), (da,) = primals, tangents
    logdet, inv = _gauss_jordan(a)
    return logdet, jnp.real(jnp.sum(inv.T * da))


def inverse_dense(a: Array) -> Array:
    """``a^{-1}`` by Gauss–Jordan elimination (plain XLA, safe under vmap on CPU)."""
    return _gauss_jordan(a)[1]


def log_abs_det(v: Array, mass: Any, n_spin: int, even_odd: bool = True) -> Array:
    """``log |det D|`` by dense LU, batched over leading axes of ``v`` ``(*batch, L..., d, Nc, Nc)``.

    With ``even_odd`` the LU runs on the even-site Schur complement (8x fewer flops) and
    ``n_odd log(m + d)`` is added back, so the result is the same.
    """
    d = v.shape[-3]
    nb = _nbatch_dims(v)
    lat = v.shape[nb:nb + d]
    flat = v.reshape((-1,) + v.shape[nb:])

    def one(vv: Array) -> Array:
        return log_abs_det_dense(dirac_matrix(vv, mass, n_spin, even_odd))

    out = jax.vmap(one)(flat).reshape(v.shape[:nb])
    if even_odd:
        n_odd = int(np.prod(lat)) // 2 * n_spin * v.shape[-1]
        out = out + n_odd * jnp.log(jnp.abs(mass + d))
    return out


def _nbatch_dims(v: Array) -> int:
    # v: (*batch, L_0..L_{d-1}, d, Nc, Nc) with d = v.shape[-3]
    return v.ndim - 3 - v.shape[-3]


# ----------------------------------------------------------------------------------------
# conjugate gradient (batched; returns iterations and residual, unlike jax.scipy's cg)
# ----------------------------------------------------------------------------------------


class CGResult(NamedTuple):
    """Solution ``x``, number of iterations, and the final relative residual ``|b - A x| / |b|`` per batch entry."""

    x: Array
    iterations: Array
    residual: Array


def conjugate_gradient(apply_a: Any, b: Array, n_site_axes: int, *, tol: float = 1e-10,
                       maxiter: int = 2000) -> CGResult:
    """Solve ``A x = b`` for Hermitian positive-definite ``A`` (a function) by conjugate gradients.

    ``b`` has shape ``(*batch, *field)`` where the last ``n_site_axes`` axes form one vector; batch entries
    are independent systems iterated together until all reach ``|r| <= tol |b|`` or ``maxiter``.
    Inner products accumulate in the precision of ``b``.
    """
    axes = tuple(range(b.ndim - n_site_axes, b.ndim))

    def dot(x: Array, y: Array) -> Array:
        return jnp.real(jnp.sum(jnp.conj(x) * y, axis=axes))

    def bc(s: Array) -> Array:
        return s.reshape(s.shape + (1,) * n_site_axes)

    bnorm2 = dot(b, b)
    stop2 = (tol ** 2) * bnorm2
    x0 = jnp.zeros_like(b)
    r0 = b
    init = (x0, r0, r0, bnorm2, jnp.asarray(0))

    def cond(c: Any) -> Array:
        _, _, _, rr, k = c
        return jnp.logical_and(k < maxiter, jnp.any(rr > stop2))

    def body(c: Any) -> Any:
        x, r, p, rr, k = c
        ap = apply_a(p)
        pap = dot(p, ap)
        active = rr > stop2
        alpha = jnp.where(active, rr / jnp.where(pap > 0, pap, 1.0), 0.0)
        x = x + bc(alpha).astype(b.dtype) * p
        r = r - bc(alpha).astype(b.dtype) * ap
        rr_new = dot(r, r)
        beta = jnp.where(active, rr_new / jnp.where(rr > 0, rr, 1.0), 0.0)
        p = jnp.where(bc(active), r + bc(beta).astype(b.dtype) * p, p)
        return x, r, p, jnp.where(active, rr_new, rr), k + 1

    x, _, _, _, k = jax.lax.while_loop(cond, body, init)
    true_r = b - apply_a(x)
    res = jnp.sqrt(dot(true_r, true_r) / jnp.where(bnorm2 > 0, bnorm2, 1.0))
    return CGResult(x, k, res)


def bicgstab(apply_a: Any, b: Array, n_site_axes: int, *, tol: float = 1e-10, maxiter: int = 2000) -> CGResult:
    """Solve ``A x = b`` for a general (non-Hermitian) ``A``, e.g. the Wilson–Dirac operator itself, by BiCGStab
    (van der Vorst 1992), batched like :func:`conjugate_gradient`: each batch entry is an independent system with
    its own scalars, frozen once ``|r| <= tol |b|``.  Two applications of ``A`` per iteration (CG on the normal
    equations needs ``D`` and ``D^dag``, and its condition number is squared).  ``iterations`` counts BiCGStab
    iterations.
    """
    axes = tuple(range(b.ndim - n_site_axes, b.ndim))

    def dot(x: Array, y: Array) -> Array:
        return jnp.sum(jnp.conj(x) * y, axis=axes)

    def bc(s: Array) -> Array:
        return s.reshape(s.shape + (1,) * n_site_axes).astype(b.dtype)

    def safe(num: Array, den: Array, ok: Array) -> Array:
        return jnp.where(ok & (den != 0), num / jnp.where(den != 0, den, 1.0), 0.0)

    bnorm2 = jnp.real(dot(b, b))
    stop2 = (tol ** 2) * bnorm2
    zero = jnp.zeros_like(b)
    one = jnp.ones(bnorm2.shape, b.dtype)
    init = (zero, b, zero, zero, one, one, one, bnorm2, jnp.asarray(0))
    r_hat = b

    def cond(c: Any) -> Array:
        rr, k = c[7], c[8]
        return jnp.logical_and(k < maxiter, jnp.any(rr > stop2))

    def body(c: Any) -> Any:
        x, r, p, v, rho, alpha, omega, rr, k = c
        active = rr > stop2
        rho_new = dot(r_hat, r)
        beta = safe(rho_new * alpha, rho * omega, active)
        p = jnp.where(bc(active), r + bc(beta) * (p - bc(omega) * v), p)
        v = apply_a(p)
        alpha = jnp.where(active, safe(rho_new, dot(r_hat, v), active), alpha)
        s = r - bc(jnp.where(active, alpha, 0.0)) * v
        t = apply_a(s)
        omega = jnp.where(active, safe(dot(t, s), dot(t, t), active), omega)
        x = jnp.where(bc(active), x + bc(alpha) * p + bc(omega) * s, x)
        r = jnp.where(bc(active), s - bc(omega) * t, r)
        rho = jnp.where(active, rho_new, rho)
        return x, r, p, v, rho, alpha, omega, jnp.where(active, jnp.real(dot(r, r)), rr), k + 1

    out = jax.lax.while_loop(cond, body, init)
    x, k = out[0], out[8]
    true_r = b - apply_a(x)
    res = jnp.sqrt(jnp.real(dot(true_r, true_r)) / jnp.where(bnorm2 > 0, bnorm2, 1.0))
    return CGResult(x, k, res)


# ----------------------------------------------------------------------------------------
# right-trivialised derivative by autodiff
# ----------------------------------------------------------------------------------------


def algebra_gradient(fn: Any, group: Group, u: Array) -> Array:
    """``F^a_l = d/dw fn(exp(w T^a) U_l)`` at ``w = 0`` for every link, as an algebra element (U(1): real
    ``(..., d)``; SU(N): ``F^a T^a``), for a scalar (or batch-summed) function ``fn`` of the links.

    This is the HMC force convention of :mod:`corrflow.theories.gauge`.  Only first order in ``w`` matters,
    so ``exp(w T) U`` is replaced by ``U + w T U``.
    """
    if group.is_abelian:
        return jax.grad(lambda w: jnp.sum(fn(u + w)))(jnp.zeros(u.shape, u.real.dtype))

    def shifted(w: Array) -> Array:
        x = group.from_coords(w).astype(u.dtype)
        return jnp.sum(fn(u + jnp.einsum("...ij,...jk->...ik", x, u)))

    w0 = jnp.zeros(u.shape[:-2] + (group.n_generators,), u.real.dtype)
    return group.from_coords(jax.grad(shifted)(w0)).astype(u.dtype)


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
        m = self.mass
        if isinstance(m, (int, float, np.floating, np.integer)):
            if not np.isfinite(m):
                raise ValueError(f"mass must be finite, got {m}")
            if m + self.gauge.ndim <= 0:
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
        gauge_changes = {k: changes.pop(k) for k in ("beta", "xi", "lam") if k in changes}
        if "kappa" in changes:
            changes["mass"] = mass_from_kappa(float(changes.pop("kappa")), self.ndim)
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

    With ``A = (D_a D_b^{-1})^dag (D_a D_b^{-1})`` the ratio is ``1/det A = E_eta[exp(-eta^dag (A - 1) eta)]`` for
    Gaussian ``eta`` (density ``e^{-|eta|^2}``); the estimate averages ``n_noise`` such factors (finite variance needs
    the eigenvalues of ``A`` above 1/2, i.e. moderate parameter shifts).  Uses the full operators (no Schur complement)
    and CG on ``D_b^dag D_b`` at ``theory_b.cg_tol``.
    """
    batch = u.shape[: u.ndim - len(theory_a.link_shape)]
    cdt = jnp.complex128 if u.real.dtype == jnp.float64 else jnp.complex64
    real = jnp.finfo(cdt).dtype
    va, vb = theory_a.links(u), theory_b.links(v)
    nax = theory_a.ndim + 2
    axes = tuple(range(-nax, 0))

    def one(k: Array) -> Array:
        kr, ki = jax.random.split(k)
        shp = batch + theory_a.fermion_shape
        eta = ((rng.normal(kr, shp, real) + 1j * rng.normal(ki, shp, real)) / np.sqrt(2.0)).astype(cdt)
        # xi = D_b^{-1} eta = (D_b^dag D_b)^{-1} D_b^dag eta
        rhs = dirac_dagger(vb, theory_b.mass, eta)
        xi = conjugate_gradient(lambda x: dirac_dagger(vb, theory_b.mass, dirac(vb, theory_b.mass, x)), rhs, nax,
                                tol=theory_b.cg_tol, maxiter=theory_b.cg_maxiter).x
        chi = dirac(va, theory_a.mass, xi)
        return -accumulate(jnp.abs(chi) ** 2, axis=axes) + accumulate(jnp.abs(eta) ** 2, axis=axes)

    logs = jax.vmap(one)(jax.random.split(key, n_noise))
    return jax.scipy.special.logsumexp(logs, axis=0) - np.log(n_noise)
