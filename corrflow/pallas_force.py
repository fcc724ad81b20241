"""The SU(N) staple force as one fused GPU kernel (jax Pallas, Triton backend), with a pure-JAX fallback.

Same numbers as :func:`corrflow.lattice.staple_force` up to rounding: ``P_TA[U_mu(x) Sigma_mu(x)]`` for every link,
``Sigma_mu`` the staple sum weighted by the symmetric ``(d, d)`` plane weights (the Wilson force is this over
``2N`` with the plane couplings as weights).

Why a kernel.  XLA's GPU code for the staple force splits the 3x3 complex products into many small fused kernels
whose intermediates make round trips through memory (79x above the H200's bandwidth limit at 16^4,
BENCHMARKS.md).  Here one program computes the force on ``block`` consecutive sites for one direction ``mu``: it
gathers the 19 links each site's staples need straight from the link field (neighbours through precomputed index
tables; the field of a 16^4 lattice fits the H200's 50 MB L2 cache, so the gathers are served on chip), keeps every
3x3 product in registers and writes only the result.

Layout inside the kernel: real and imaginary planes ``(d, N, N, V)`` with sites innermost (one gathered load per
matrix element and site; coalesced stores), converted once at the boundary.  Batch axes (chains) are mapped with
``jax.vmap`` (an extra grid axis).

The kernel runs compiled only on GPUs (Triton); elsewhere :func:`staple_force` evaluates it with Pallas'
interpreter (slow; the tests use it on small lattices to check the kernel's arithmetic on CPU).  Differentiated
programs (tangent fields, flowed observables, smoothing flows) use the pure-JAX kernel for the value and the
derivative (``custom_jvp``), so autodiff through a force keeps working.  Which kernel the force uses is chosen when a program is traced: :func:`use_pallas` (opt-in, environment
``CORRFLOW_PALLAS=auto``).

Measured (H200, complex64, BENCHMARKS.md): 16^4 force 0.187 ms against 0.744 ms for the XLA kernel (4.0x; 24x above
the bandwidth limit, the XLA kernel 94x); 8^4 0.137 against 0.121 ms (launch-bound: no gain); Triton compiles it in
44–54 s.  The straight-line body (52 unrolled 3x3 complex products) is what Triton compiles slowly: a loop over the
planes ``nu`` (``lax.fori_loop``, ``staple_force(..., loop=True)``) cuts it ~3x -- not measured on a GPU yet.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .groups import Group

Array = jax.Array

__all__ = ["staple_force", "use_pallas", "neighbour_tables", "ENV"]

ENV = "CORRFLOW_PALLAS"


def use_pallas() -> bool:
    """Whether :func:`corrflow.lattice.staple_force` uses this kernel, from the environment variable
    ``CORRFLOW_PALLAS``: ``1`` always (interpreted off GPUs: slow, for tests), ``auto`` on GPUs (the default backend
    is ``gpu``), unset or ``0`` never.

    Off by default: on an H200 the kernel makes the 16^4 force 4.0x faster but Triton takes 44–54 s to compile it,
    against 1.5–2 s for the XLA program (BENCHMARKS.md); it pays for runs of many trajectories on large lattices.
    """
    mode = os.environ.get(ENV, "0").strip().lower()
    if mode in ("1", "true", "yes", "on"):
        return True
    if mode in ("", "0", "false", "no", "off"):
        return False
    if mode != "auto":
        raise ValueError(f"{ENV}={mode!r}: use 1 (always), auto (on GPUs) or 0 (never, the default)")
    return jax.default_backend() == "gpu"


@functools.lru_cache(maxsize=16)
def neighbour_tables(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(fwd, bwd)``, each ``(d, V)`` int32: the row-major site index of ``x + mu`` and ``x - mu`` (periodic)."""
    idx = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    fwd = np.stack([np.roll(idx, -1, axis=mu).ravel() for mu in range(len(shape))]).astype(np.int32)
    bwd = np.stack([np.roll(idx, 1, axis=mu).ravel() for mu in range(len(shape))]).astype(np.int32)
    return fwd, bwd


# --- 3x3 complex algebra on tuples of (re, im) site vectors ------------------------------------------------------


def _load(re_ref, im_ref, mu, idx, n):  # noqa: ANN001, ANN202
    """The matrices ``U_mu(idx)`` as ``[[(re, im)]]``, each entry a ``(block,)`` vector."""
    return [[(re_ref[mu, a, b, idx], im_ref[mu, a, b, idx]) for b in range(n)] for a in range(n)]


def _entry(m, i, j, dag):  # noqa: ANN001, ANN202
    if not dag:
        return m[i][j]
    re, im = m[j][i]
    return re, -im


def _mul(a, b, n, da=False, db=False):  # noqa: ANN001, ANN202
    """``a b`` with optional daggers (``da``: ``a^dag``), entry by entry."""
    out = []
    for i in range(n):
        row = []
        for j in range(n):
            re = im = None
            for k in range(n):
                ar, ai = _entry(a, i, k, da)
                br, bi = _entry(b, k, j, db)
                pr, pi = ar * br - ai * bi, ar * bi + ai * br
                re, im = (pr, pi) if re is None else (re + pr, im + pi)
            row.append((re, im))
        out.append(row)
    return out


def _axpy(acc, w, m, n):  # noqa: ANN001, ANN202
    """``acc + w m`` (``acc`` may be None)."""
    if acc is None:
        return [[(w * m[i][j][0], w * m[i][j][1]) for j in range(n)] for i in range(n)]
    return [[(acc[i][j][0] + w * m[i][j][0], acc[i][j][1] + w * m[i][j][1]) for j in range(n)] for i in range(n)]


def _flatten(m):  # noqa: ANN001, ANN202
    return tuple(v for row in m for entry in row for v in entry)


def _unflatten(flat, n):  # noqa: ANN001, ANN202
    return [[(flat[2 * (i * n + j)], flat[2 * (i * n + j) + 1]) for j in range(n)] for i in range(n)]


def _kernel(w_ref, fwd_ref, bwd_ref, ure_ref, uim_ref, fre_ref, fim_ref, *, d: int, n: int, block: int,  # noqa: ANN001
            loop: bool):
    from jax.experimental import pallas as pl

    start = pl.program_id(0) * block
    mu = pl.program_id(1)
    sites = pl.ds(start, block)
    x = start + jnp.arange(block, dtype=jnp.int32)
    x_mu = fwd_ref[mu, sites]

    def plane(k, sigma):  # noqa: ANN001, ANN202  (the two staples in the plane (mu, nu = mu + k))
        nu = (mu + k) % d
        x_nu, x_mnu = fwd_ref[nu, sites], bwd_ref[nu, sites]
        x_mu_mnu = bwd_ref[nu, x_mu]  # x + mu - nu
        w = w_ref[mu, nu]
        # upper staple U_nu(x+mu) [U_nu(x) U_mu(x+nu)]^dag
        c = _mul(_load(ure_ref, uim_ref, nu, x, n), _load(ure_ref, uim_ref, mu, x_nu, n), n)
        sigma = _axpy(sigma, w, _mul(_load(ure_ref, uim_ref, nu, x_mu, n), c, n, db=True), n)
        # lower staple [U_mu(x-nu) U_nu(x+mu-nu)]^dag U_nu(x-nu)
        a = _mul(_load(ure_ref, uim_ref, mu, x_mnu, n), _load(ure_ref, uim_ref, nu, x_mu_mnu, n), n)
        return _axpy(sigma, w, _mul(a, _load(ure_ref, uim_ref, nu, x_mnu, n), n, da=True), n)

    if loop:  # one plane per iteration: a third of the straight-line code for Triton to compile
        zero = jnp.zeros((block,), ure_ref.dtype)
        flat = jax.lax.fori_loop(1, d, lambda k, f: _flatten(plane(k, _unflatten(f, n))),
                                 _flatten([[(zero, zero)] * n for _ in range(n)]))
        sigma = _unflatten(flat, n)
    else:
        sigma = None
        for k in range(1, d):
            sigma = plane(k, sigma)
    m = _mul(_load(ure_ref, uim_ref, mu, x, n), sigma, n)
    # P_TA(M) = (M - M^dag)/2 - tr(M - M^dag)/(2N)
    tr_im = m[0][0][1]
    for i in range(1, n):
        tr_im = tr_im + m[i][i][1]
    tr_im = tr_im * (1.0 / n)
    for i in range(n):
        for j in range(n):
            if i == j:
                re, im = jnp.zeros_like(tr_im), m[i][i][1] - tr_im
            else:
                re = 0.5 * (m[i][j][0] - m[j][i][0])
                im = 0.5 * (m[i][j][1] + m[j][i][1])
            fre_ref[mu, i, j, sites] = re
            fim_ref[mu, i, j, sites] = im


def default_block(volume: int) -> int:
    """Sites per program: the largest power of two <= 128 that divides the volume, and fewer (down to 16) on small
    lattices so that the grid keeps >= ~256 programs per direction."""
    block = 128
    while block > 1 and (volume % block or (block > 16 and volume // block < 256)):
        block //= 2
    return block


def _planes_force(w: Array, ure: Array, uim: Array, shape: tuple[int, ...], block: int, interpret: bool, loop: bool):
    """The kernel on one configuration's planes ``ure, uim`` ``(d, N, N, V)`` with plane weights ``w`` (their
    real dtype); returns the force's planes."""
    from jax.experimental import pallas as pl

    d, n = ure.shape[0], ure.shape[1]
    volume = ure.shape[-1]
    fwd, bwd = neighbour_tables(shape)
    kernel = functools.partial(_kernel, d=d, n=n, block=block, loop=loop)
    out = jax.ShapeDtypeStruct(ure.shape, ure.dtype)
    kwargs = {}
    if not interpret:
        from jax.experimental.pallas import triton as plgpu

        kwargs["compiler_params"] = plgpu.CompilerParams(num_warps=4, num_stages=1)
    return pl.pallas_call(kernel, out_shape=(out, out), grid=(volume // block, d), interpret=interpret,
                          name="corrflow_staple_force", **kwargs)(
        w, jnp.asarray(fwd), jnp.asarray(bwd), ure, uim)


def _force_pallas(u: Array, weights: Array, block: int | None, interpret: bool, loop: bool) -> Array:
    n = u.shape[-1]
    d = u.shape[-3]
    shape = tuple(u.shape[-(d + 3):-3])
    batch = u.shape[:-(d + 3)]
    volume = int(np.prod(shape))
    block = default_block(volume) if block is None else int(block)
    if volume % block:
        raise ValueError(f"staple_force (Pallas): the volume {volume} is not a multiple of block = {block}")
    # (*batch, L..., d, N, N) -> (B, d, N, N, V) planes
    t = jnp.moveaxis(u.reshape((-1, volume, d, n, n)), 1, -1)
    f = functools.partial(_planes_force, weights, shape=shape, block=block, interpret=interpret, loop=loop)
    fre, fim = jax.vmap(f)(jnp.real(t), jnp.imag(t))
    out = jax.lax.complex(fre, fim)
    return jnp.moveaxis(out, -1, 1).reshape((*batch, *shape, d, n, n)).astype(u.dtype)


def staple_force(u: Array, group: Group, weights: Array | None = None, *, block: int | None = None,
                 interpret: bool | None = None, loop: bool = False,
                 derivative: Callable[[Array, Group, Array], Array] | None = None) -> Array:
    """:func:`corrflow.lattice.staple_force` by the Pallas kernel (see the module docstring).

    ``u``: SU(N) links ``(*batch, L_0, ..., L_{d-1}, d, N, N)``, complex64 or complex128; ``weights``: symmetric
    ``(d, d)`` plane weights (default 1); ``block``: sites per program (default :func:`default_block`, a divisor of
    the volume); ``interpret``: run Pallas' interpreter (default: off GPUs); ``loop``: the planes in a loop instead of
    unrolled (a third of the code for Triton to compile; not yet timed on a GPU).  ``derivative``: a pure-JAX kernel
    ``(u, group, weights) -> force`` (:func:`corrflow.lattice.staple_force_xla`, which is how
    :func:`corrflow.lattice.staple_force` calls this) that gives the value and the derivative under autodiff; without
    it the kernel is for values only.
    """
    if group.is_abelian:
        raise ValueError("staple_force is for SU(N) links; the U(1) force is built from plaquette sines")
    d = u.shape[-3]
    rdt = jnp.finfo(u.dtype).dtype  # float32 / float64 for complex64 / complex128
    w = jnp.ones((d, d), rdt) if weights is None else jnp.asarray(weights).astype(rdt)
    interp = jax.default_backend() != "gpu" if interpret is None else bool(interpret)

    if derivative is None:
        return _force_pallas(u, w, block, interp, loop)

    @jax.custom_jvp
    def f(links: Array, ww: Array) -> Array:
        return _force_pallas(links, ww, block, interp, loop)

    # differentiated: value and derivative by the pure-JAX kernel, whose derivative needs its own products anyway
    # (the Pallas value beside them would be a second evaluation of the same force)
    f.defjvp(lambda primals, tangents: jax.jvp(lambda a, b: derivative(a, group, b), primals, tangents))
    return f(u, w)
