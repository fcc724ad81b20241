"""Wilson-fermion kernels: CG with and without even-odd preconditioning, exact determinants, HMC paths.

    python benchmarks/fermions.py            # 8x8 and 16x16 Schwinger model (a few minutes on 2 CPU cores)
    python benchmarks/fermions.py --quick    # 8x8 only

Printed per lattice, with ratios against a baseline measured in the same run:
* CG on the normal equations: iterations and ms per solve (relative residual 1e-10) for ``D^dag D`` (baseline)
  and for the even-odd Schur complement ``Dhat^dag Dhat``;
* exact ``log|det D|`` (dense, Gauss-Jordan on the Schur complement) vs the full matrix (baseline), ms per config;
* HMC trajectories/s (2 chains, Omelyan 5 steps) with the exact determinant vs pseudofermions (even-odd).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from _machine import cpu_model

import corrflow as cf
from corrflow import HMCConfig, hmc, make_theory


def _timeit(fn, *args, repeat: int = 5) -> float:  # noqa: ANN001
    jax.block_until_ready(fn(*args))
    t = time.perf_counter()
    for _ in range(repeat):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - t) / repeat


def bench_lattice(shape: tuple[int, int], beta: float, mass: float) -> None:
    key = jax.random.PRNGKey(0)
    th = make_theory("schwinger", shape, beta=beta, mass=mass)
    # a thermalised-looking configuration: short pseudofermion HMC from a hot start
    pf = th.replace(det="pseudofermion")
    cfg = HMCConfig(step_size=0.2, n_steps=5, jitter=0.0)
    u = jax.random.uniform(key, (2,) + th.link_shape, minval=-np.pi, maxval=np.pi)
    run = jax.jit(lambda k, s: hmc.sample_chains(k, s, pf, cfg, 50))
    keys = jax.random.split(key, 2)
    st, _, _ = run(keys, hmc.init(pf, u))
    u = st.links
    print(f"\n## Schwinger model {shape[0]}x{shape[1]}, beta = {beta}, m = {mass} (kappa = {float(th.kappa):.4f})")
    # CG
    rows = []
    for eo in (False, True):
        t = pf.replace(even_odd=eo).refresh(jax.random.PRNGKey(1), u)
        solve = jax.jit(lambda uu, phi, t=t: t.solve_normal(uu, phi))
        res = solve(u, t.phi)
        sec = _timeit(solve, u, t.phi)
        rows.append((eo, int(res.iterations), sec))
    base_it, base_t = rows[0][1], rows[0][2]
    for eo, it, sec in rows:
        label = "even-odd Dhat^dag Dhat" if eo else "full D^dag D (baseline)"
        print(f"CG {label:26s}: {it:4d} iterations, {1e3 * sec:8.2f} ms/solve (2 chains)  "
              f"x{base_t / sec:5.2f} speed, x{base_it / it:4.2f} fewer iterations")
    # exact determinant
    t_full = _timeit(jax.jit(lambda uu: th.replace(even_odd=False).log_det(uu)), u, repeat=3)
    t_eo = _timeit(jax.jit(lambda uu: th.log_det(uu)), u, repeat=3)
    print(f"exact log det: full matrix {1e3 * t_full / 2:8.2f} ms/config (baseline), even-odd "
          f"{1e3 * t_eo / 2:8.2f} ms/config  x{t_full / t_eo:5.2f}")
    # HMC
    out = {}
    for det in ("exact", "pseudofermion"):
        t = th.replace(det=det)
        f = jax.jit(lambda k, s, t=t: hmc.sample_chains(k, s, t, cfg, 20))
        s0 = hmc.init(t, u)
        sec = _timeit(f, keys, s0, repeat=2) / 20
        out[det] = sec
    print(f"HMC exact det        : {1 / out['exact']:8.1f} traj/s (2 chains; baseline)")
    print(f"HMC pseudofermion e/o: {1 / out['pseudofermion']:8.1f} traj/s (2 chains)  "
          f"x{out['exact'] / out['pseudofermion']:5.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="8x8 only")
    args = ap.parse_args()
    print(f"# corrflow {cf.__version__} fermion benchmark — jax {jax.__version__}, {jax.default_backend()}, "
          f"{cpu_model()}, {os.cpu_count()} cores")
    bench_lattice((8, 8), 2.0, 0.1)
    if not args.quick:
        bench_lattice((16, 16), 4.0, 0.1)
        bench_lattice((16, 16), 4.0, 0.02)


if __name__ == "__main__":
    jnp.zeros(1)
    main()
