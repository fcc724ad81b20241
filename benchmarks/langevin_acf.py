"""What a tangent field built from Langevin paths can reach: the Langevin autocorrelation of ∂S/∂β (issue 15).

    python benchmarks/langevin_acf.py                      # 4D SU(3) 4^4, β = 5.7, Langevin step 0.005, τ <= 3
    python benchmarks/langevin_acf.py --beta 6.0 --eps 0.0025 --tmax 1.5

For the Langevin dynamics ``dU = −∇S dτ + √2 dW`` (right-trivialised derivatives ``∂^a``, Haar measure; its generator
``𝓛 = Δ − ∇S·∇`` is the one of docs/physics.md section 7) and ``f = ∂_β S``, the gradient field ``v = ∇ψ_T`` with
``ψ_T = −∫_0^T dτ E[f̄(U_τ) | U_0 = U]`` (``f̄ = f − <f>``) has ``∇·v − v·∇S = 𝓛ψ_T = f̄ − P_T f̄``, hence

    R_v − <R_v> = P_T f̄ = E[f̄(U_T) | U_0 = U],        Var[R_v] = <f̄ P_{2T} f̄> = C(2T) Var[f]

(``P_T`` is self-adjoint: the dynamics is reversible), with ``C`` the normalised Langevin autocorrelation of ``f``.
So the best that pathwise gradients over noisy Langevin paths of length ``T`` can do -- with infinitely many paths per
configuration -- is a Var[R] reduction of ``1 / C(2T)``.  This script measures ``C(τ)`` from equilibrium starts
(heat bath 1 HB + 4 OR, 100 updates, then 10 between starts) with Euler–Maruyama steps ``U -> exp(−ε ∇S + √(2ε) η) U``
(its O(ε) bias shows in the drift of ``<f(τ)>``, printed; compare two ``--eps``) and prints ``1 / C(2T)`` and the cost
of one path in force evaluations.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import corrflow  # noqa: F401  (x64 on)
from corrflow import heatbath, hmc
from corrflow.tangent.core import gradient, parameter_derivative
from corrflow.theories import WilsonGaugeAction


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--L", type=int, default=4)
    ap.add_argument("--beta", type=float, default=5.7)
    ap.add_argument("--eps", type=float, default=0.005, help="Langevin step")
    ap.add_argument("--tmax", type=float, default=3.0, help="longest Langevin time")
    ap.add_argument("--chains", type=int, default=64)
    ap.add_argument("--starts", type=int, default=4, help="equilibrium starts per chain")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    th = WilsonGaugeAction("su3", (args.L,) * 4, beta=args.beta)
    g, eps, nch = th.group, args.eps, args.chains
    cfg = heatbath.HeatbathConfig(n_heatbath=1, n_overrelax=4)
    key = jax.random.PRNGKey(args.seed)
    u = hmc.hot_start(key, th, batch=(nch,), dtype=jnp.complex128)
    u, _ = heatbath.sample_chains(jax.random.split(jax.random.fold_in(key, 1), nch), u, th, cfg, 100)
    f = jax.jit(jax.vmap(parameter_derivative(th, "beta")))

    @jax.jit
    def langevin_step(u: jax.Array, k: jax.Array) -> jax.Array:
        gr = jax.vmap(lambda x: gradient(th.action, x, g))(u)
        w = -eps * gr + jnp.sqrt(2 * eps) * jax.random.normal(k, gr.shape, gr.dtype)
        x = g.exp(g.from_coords(w).astype(u.dtype))
        return g.normalize(jnp.einsum("...ij,...jk->...ik", x, u))

    n_steps = int(round(args.tmax / eps))
    every = max(1, n_steps // 60)
    series, t0 = [], time.perf_counter()
    for s in range(args.starts):
        ks = jax.random.fold_in(key, 2 + s)
        u, _ = heatbath.sample_chains(jax.random.split(ks, nch), u, th, cfg, 10)  # fresh equilibrium starts
        x, rows = u, [np.asarray(f(u))]
        for i in range(n_steps):
            x = langevin_step(x, jax.random.fold_in(ks, i + 1))
            if (i + 1) % every == 0:
                rows.append(np.asarray(f(x)))
        series.append(np.stack(rows, 1))
        print(f"# start {s + 1}/{args.starts}: {time.perf_counter() - t0:.0f} s", flush=True)
    a = np.concatenate(series)  # (chains * starts, times)
    c0 = np.var(a[:, 0])
    taus = np.arange(a.shape[1]) * every * eps
    print(f"# 4D SU(3) {args.L}^4, beta {args.beta}, Langevin eps {eps}, {a.shape[0]} paths; one path of length T "
          f"costs T/eps gradient evaluations, its pathwise gradient about as many again")
    print(f"{'2T':>6s} {'C(2T)':>7s} {'Var[f]/Var[R] (best field of paths of length T)':>48s} {'<f(2T)>':>10s}")
    for j in range(0, a.shape[1], max(1, a.shape[1] // 20)):
        c = np.mean((a[:, 0] - a[:, 0].mean()) * (a[:, j] - a[:, j].mean())) / c0
        print(f"{taus[j]:6.3f} {c:7.3f} {(1 / c if c > 0 else float('inf')):47.1f}x {a[:, j].mean():10.2f}")


if __name__ == "__main__":
    main()
