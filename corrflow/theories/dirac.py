"""The Wilson–Dirac operator and its linear algebra, for :mod:`corrflow.theories.fermions`.

Holds the gamma matrices, ``kappa`` <-> ``m``, the operator ``D`` (:func:`dirac`), its adjoint and the even–odd Schur
complement, dense matrices with log-determinants and inverses (Gauss–Jordan), the batched CG and BiCGStab solvers
and the right-trivialised autodiff gradient.  Conventions: the docstring of :mod:`corrflow.theories.fermions`,
which re-exports every public name defined here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import lattice
from ..groups import Group

Array = jax.Array

__all__ = ["gamma_matrices", "gamma5", "kappa_from_mass", "mass_from_kappa", "fermion_links", "hopping", "dirac",
           "dirac_dagger", "schur", "schur_dagger", "even_mask", "dirac_matrix", "log_abs_det_dense", "inverse_dense",
           "log_abs_det", "dense_batch", "CGResult", "conjugate_gradient", "bicgstab", "algebra_gradient"]


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


def gamma5(psi: Array, d: int) -> Array:
    """``g5 psi`` (spin index of ``psi`` at axis -2; Hermitian, ``g5^2 = 1``, ``D^dag = g5 D g5``)."""
    return _spin(jnp.asarray(gamma_matrices(d)[1], psi.dtype), psi)


def dirac_dagger(v: Array, mass: Any, psi: Array) -> Array:
    """``D^dag psi = g5 D g5 psi``."""
    d = v.shape[-3]
    return gamma5(dirac(v, mass, gamma5(psi, d)), d)


def schur(v: Array, mass: Any, psi: Array) -> Array:
    """Even–odd Schur complement ``Dhat psi = (m + d) psi - H H psi / (4 (m + d))`` for ``psi`` supported on
    even sites (the result is supported on even sites too)."""
    d = v.shape[-3]
    m = mass + d
    return m * psi - hopping(v, hopping(v, psi)) / (4.0 * m)


def schur_dagger(v: Array, mass: Any, psi: Array) -> Array:
    """``Dhat^dag = g5 Dhat g5``."""
    d = v.shape[-3]
    return gamma5(schur(v, mass, gamma5(psi, d)), d)


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


#: elements of the unit-vector basis that one vectorised step of the dense algebra may build (``2**23`` complex128
#: = 128 MiB; the Dirac operator's intermediates on it take ~15 times that): configurations beyond it are
#: processed in sequence, so a batch of 4^4 SU(3) configurations needs ~1 GB instead of ~1 GB each
DENSE_BATCH_ELEMENTS = 2**23


def dense_batch(n_rows: int, n_full: int) -> int:
    """Configurations per vectorised step of a dense Dirac-matrix computation with ``n_rows`` basis vectors of
    length ``n_full`` (``jax.lax.map(..., batch_size=...)``; a batch that fits is one ``vmap``, as before)."""
    return max(1, DENSE_BATCH_ELEMENTS // max(1, n_rows * n_full))


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

    n_full = int(np.prod(lat)) * n_spin * v.shape[-1]
    out = jax.lax.map(one, flat, batch_size=dense_batch(n_full // 2 if even_odd else n_full, n_full))
    out = out.reshape(v.shape[:nb])
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
                       maxiter: int = 2000, x0: Array | None = None) -> CGResult:
    """Solve ``A x = b`` for Hermitian positive-definite ``A`` (a function) by conjugate gradients.

    ``b`` has shape ``(*batch, *field)`` where the last ``n_site_axes`` axes form one vector; batch entries
    are independent systems iterated together until all reach ``|r| <= tol |b|`` or ``maxiter``.
    Inner products accumulate in the precision of ``b``.  ``x0``: initial guess (default 0; a converged guess
    costs one application of ``A`` and no iteration).
    """
    axes = tuple(range(b.ndim - n_site_axes, b.ndim))

    def dot(x: Array, y: Array) -> Array:
        return jnp.real(jnp.sum(jnp.conj(x) * y, axis=axes))

    def bc(s: Array) -> Array:
        return s.reshape(s.shape + (1,) * n_site_axes)

    bnorm2 = dot(b, b)
    stop2 = (tol ** 2) * bnorm2
    if x0 is None:
        x0, r0, rr0 = jnp.zeros_like(b), b, bnorm2
    else:
        r0 = b - apply_a(x0)
        rr0 = dot(r0, r0)
    init = (x0, r0, r0, rr0, jnp.asarray(0))

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
