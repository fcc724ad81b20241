"""Cost per configuration of a Gauss–Newton iteration of flow training (issue 14: "report training cost per
configuration").

    python benchmarks/linear_step_cost.py                     # 4D SU(3) 4^4 and 6^4, the default 4D flow
    python benchmarks/linear_step_cost.py --sizes 4,6,8 --n 8 # 8^4 too (minutes of compilation, ~2 GB)

For the default 4D flow of ``corrflow train`` (one sweep of plaquette layers with held-out smoothing terms at
t = 0.1, 0.2, 0.4, 0.8) on ``--n`` configurations (Haar-random links at beta = 5.7: the cost does not depend on the
values), each kernel of :mod:`corrflow.flows.linear` is compiled, then timed over ``--repeat`` calls:

* ``reverse``: log-weights and their gradient in the tied coefficients by one reverse pass through the composed flow
  (``_logw_and_jacobian``: every iteration away from the identity, and the first one before 2026-12-08) -- the
  baseline;
* ``identity``: the same numbers at the identity from each layer's own derivative on the unflowed configuration in
  forward mode (``_logw_and_jacobian_at_identity``: the first iteration);
* ``forward``: log-weights alone (``_eval_logw``: the step's acceptance check, the held-out evaluation, ``correlate``).

Printed per lattice: compilation and steady-state milliseconds per configuration, the ratio reverse / identity, and the
largest difference between the two Jacobians (they must agree to rounding).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

from benchmarks._machine import cpu_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="4,6", help="lattice extents L of L^4, comma-separated")
    ap.add_argument("--n", type=int, default=16, help="configurations per call (one batch)")
    ap.add_argument("--repeat", type=int, default=2, help="timed calls after the compiling one")
    ap.add_argument("--smoothing", default="0.1,0.2,0.4,0.8", help="smoothing times of the flow ('' for none)")
    args = ap.parse_args()

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from corrflow import make_theory
    from corrflow.flows import make_flow
    from corrflow.flows import linear
    from corrflow.flows.train import _eval_logw

    times = tuple(float(t) for t in args.smoothing.split(",") if t.strip())
    print(f"# corrflow linear-step cost — jax {jax.__version__}, {jax.default_backend()}, {cpu_model()}, "
          f"{os.cpu_count()} cores; 4D SU(3), one sweep, smoothing {times or 'none'}, complex128, {args.n} "
          "configurations per call", flush=True)
    print(f"{'L':>3} {'kernel':>9} {'compile s':>10} {'ms/config':>10} {'reverse/this':>13}")
    for L in (int(x) for x in args.sizes.split(",")):
        shape = (L,) * 4
        base = make_theory("su3", shape, beta=5.7)
        target = base.replace(beta=5.75)
        flow = make_flow("su3", shape, n_sweeps=1, smoothing=times)
        p = flow.init_params()
        t = jnp.asarray(linear.tie_matrix(flow, base, target), p.dtype)
        u = base.group.random(jax.random.PRNGKey(L), (args.n,) + tuple(base.link_index_shape))
        kernels = {"reverse": lambda: linear._logw_and_jacobian(flow, base, target, p, t, u),
                   "identity": lambda: linear._logw_and_jacobian_at_identity(flow, base, target, p, t, u),
                   "forward": lambda: _eval_logw(flow, base, target, p, u)}
        out, per = {}, {}
        for name, fn in kernels.items():
            t0 = time.perf_counter()
            out[name] = jax.block_until_ready(fn())
            compile_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(args.repeat):
                jax.block_until_ready(fn())
            per[name] = (time.perf_counter() - t0) / args.repeat / args.n * 1e3
            compile_s -= per[name] * args.n / 1e3
            ratio = per["reverse"] / per[name]
            print(f"{L:>3} {name:>9} {compile_s:10.1f} {per[name]:10.1f} {ratio:12.2f}x", flush=True)
        g_rev, g_id = np.asarray(out["reverse"][1]), np.asarray(out["identity"][1])
        print(f"    max |G_reverse - G_identity| / max |G| = {np.abs(g_rev - g_id).max() / np.abs(g_rev).max():.1e}",
              flush=True)


if __name__ == "__main__":
    main()
