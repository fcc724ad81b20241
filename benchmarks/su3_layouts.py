"""Memory layouts for the 4D SU(3) force on this device (issue 16): what XLA makes of them, measured against the
current kernel in the same run.

    python benchmarks/su3_layouts.py                 # 8^4 and 16^4, complex64
    python benchmarks/su3_layouts.py --sizes 16

Two parts.  (1) One 3x3 matrix product per site, ``C = A B`` on a whole site field, in four layouts: the current one
(``(L0, L1, L2, L3, 3, 3)`` complex, colour innermost, as corrflow.groups.matmul), sites innermost
(``(3, 3, V)`` complex), real and imaginary planes with sites innermost (``2 x (3, 3, V)`` float), and sites blocked
by 16 with colour in between (``(V/16, 3, 3, 16)`` complex, one SIMD-friendly run of 16 sites innermost).
(2) The whole Wilson force ``F_mu = P_TA(U_mu Sigma_mu) / 6`` (all four directions, weighted staples) in the
current layout (``WilsonGaugeAction.force``), the same with every product materialised (an optimisation barrier
after each, so XLA cannot fuse chains of products and recompute the inner ones per output element), and in a
blocked layout ``(L0, L1, L2, 3, 3, L3)`` (colour between the last two site axes, so shifts stay whole-array rolls)
with staples shared between the two links of each plaquette, plain or with barriers after every product and roll.
Results are checked against the current force (max |difference| printed).  Ratios: current / variant (> 1: the
variant is faster).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from _machine import cpu_model

import corrflow  # noqa: F401  (x64 on)
import corrflow.groups as groups
from corrflow import hmc
from corrflow.theories import WilsonGaugeAction

bar = jax.lax.optimization_barrier


def _time(fn, *args, repeat: int = 5, min_time: float = 0.5) -> float:  # noqa: ANN001
    jax.block_until_ready(fn(*args))
    best = np.inf
    for _ in range(repeat):
        n, start = 0, time.perf_counter()
        while True:
            out = fn(*args)
            n += 1
            if time.perf_counter() - start > min_time / repeat:
                break
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / n)
    return best


# ---- (1) one product per site ------------------------------------------------------------------
def _mm_sites_inner(a, b):  # (3, 3, V)  # noqa: ANN001, ANN202
    return sum(a[:, k, None, :] * b[None, k, :, :] for k in range(3))


def _mm_planes(ar, ai, br, bi):  # noqa: ANN001, ANN202
    cr = ci = 0.0
    for k in range(3):
        x, y, p, q = ar[:, k, None], ai[:, k, None], br[None, k], bi[None, k]
        cr, ci = cr + x * p - y * q, ci + x * q + y * p
    return cr, ci


def _mm_blocked(a, b):  # (V/16, 3, 3, 16)  # noqa: ANN001, ANN202
    return sum(a[:, :, k, None, :] * b[:, None, k, :, :] for k in range(3))


# ---- (2) the force in the blocked layout ----------------------------------------------------------
_SITE_AXIS = {0: -6, 1: -5, 2: -4, 3: -1}


def _to_blocked(u):  # (L0..L3, 4, 3, 3) -> (4, L0, L1, L2, 3, 3, L3)  # noqa: ANN001, ANN202
    return jnp.moveaxis(u, (-3, -2, -1, -4), (0, -3, -2, -1))


def _from_blocked(v):  # noqa: ANN001, ANN202
    return jnp.moveaxis(v, (0, -3, -2, -1), (-3, -2, -1, -4))


def _force_blocked(v, b, barriers: bool):  # noqa: ANN001, ANN202
    def sh(f, mu, n):  # noqa: ANN001, ANN202
        r = jnp.roll(f, -n, axis=_SITE_AXIS[mu])
        return bar(r) if barriers else r

    def mul(a, c):  # noqa: ANN001, ANN202
        r = sum(a[..., :, k, None, :] * c[..., None, k, :, :] for k in range(3))
        return bar(r) if barriers else r

    def dag(a):  # noqa: ANN001, ANN202
        return jnp.conj(jnp.swapaxes(a, -3, -2))

    def pta(m):  # noqa: ANN001, ANN202
        a = 0.5 * (m - dag(m))
        tr = (a[..., 0, 0, :] + a[..., 1, 1, :] + a[..., 2, 2, :]) / 3
        return a - tr[..., None, None, :] * jnp.eye(3, dtype=m.dtype)[:, :, None]

    us = [v[m] for m in range(4)]
    sig = [0.0] * 4
    for m in range(4):
        for n in range(m + 1, 4):
            um, un = us[m], us[n]
            un_xm, um_xn = sh(un, m, 1), sh(um, n, 1)
            a, c = mul(um, un_xm), mul(un, um_xn)  # the two halves of the plaquette, shared by both links
            sig[m] = sig[m] + b[m, n] * (mul(un_xm, dag(c)) + sh(mul(dag(a), un), n, -1))
            sig[n] = sig[n] + b[m, n] * (mul(um_xn, dag(a)) + sh(mul(dag(c), um), m, -1))
    return jnp.stack([pta(mul(us[m], sig[m])) / 6.0 for m in range(4)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16])
    args = ap.parse_args()
    dev = jax.devices()[0]
    print(f"# SU(3) layouts on {dev.platform} ({cpu_model() if dev.platform == 'cpu' else dev.device_kind}), "
          f"complex64, jax {jax.__version__}\n")
    for L in args.sizes:
        V = L ** 4
        key = jax.random.PRNGKey(0)
        a = (jax.random.normal(key, (L,) * 4 + (3, 3)) + 1j * jax.random.normal(key, (L,) * 4 + (3, 3))
             ).astype(jnp.complex64)
        base = _time(jax.jit(groups.matmul), a, a)
        s = jnp.moveaxis(a.reshape(V, 3, 3), 0, -1)
        blk = jnp.moveaxis(s.reshape(3, 3, V // 16, 16), 2, 0)
        rows = [("current (L^4, 3, 3)", base),
                ("sites innermost (3, 3, V)", _time(jax.jit(_mm_sites_inner), s, s)),
                ("re/im planes 2 x (3, 3, V)", _time(jax.jit(_mm_planes), s.real, s.imag, s.real, s.imag)),
                ("blocked (V/16, 3, 3, 16)", _time(jax.jit(_mm_blocked), blk, blk))]
        print(f"{L}^4  one 3x3 product per site")
        for name, t in rows:
            print(f"  {name:34s} {1e3 * t:9.3f} ms   {V * 216 / t / 1e9:6.1f} GFLOP/s   x{base / t:5.2f}")

        th = WilsonGaugeAction("su3", (L,) * 4, beta=6.0)
        u = hmc.hot_start(jax.random.PRNGKey(1), th, dtype=jnp.complex64)
        b = th.plane_couplings().astype(jnp.float32)
        ref = jax.jit(th.force)
        f0 = ref(u)
        orig = groups.matmul
        groups.matmul = lambda x, y: bar(orig(x, y))  # SUN.mul looks the function up at trace time
        try:
            ref_bar = jax.jit(lambda uu: th.force(uu))
            ref_bar(u)
        finally:
            groups.matmul = orig
        variants = [("current (WilsonGaugeAction.force)", ref),
                    ("current, products materialised", ref_bar),
                    ("blocked (L0,L1,L2,3,3,L3), shared", jax.jit(lambda uu: _from_blocked(
                        _force_blocked(_to_blocked(uu), b, False)))),
                    ("blocked, shared, all materialised", jax.jit(lambda uu: _from_blocked(
                        _force_blocked(_to_blocked(uu), b, True))))]
        t_ref = _time(ref, u)
        print(f"{L}^4  Wilson force (4 directions)")
        for name, fn in variants:
            t = t_ref if fn is ref else _time(fn, u)
            err = float(jnp.max(jnp.abs(fn(u) - f0)))
            print(f"  {name:34s} {1e3 * t:9.2f} ms   x{t_ref / t:5.2f}   max|dF| {err:.1e}")
        print()


if __name__ == "__main__":
    main()
