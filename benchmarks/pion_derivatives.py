"""Cost of the pion-correlator terms of the tangent estimator: forward against reverse mode (issue 15).

    python benchmarks/pion_derivatives.py [--shape 8,4,4,4] [--beta 5.8] [--mass 0.5] [--configs 4]

Quenched 4D SU(3) configurations (heat bath, 1 HB + 4 OR per update, thermalised), valence Wilson quarks of mass
``--mass``; the default tangent field of ``--param lam`` (anisotropic held-out smoothing, K basis fields) and the
observables ``pion@1 .. pion@T/2``.  Times per configuration (a vmapped batch of ``--configs``, steady state, best of
``--repeat``) of

* ``C(t)`` alone (one propagator: 12 CG solves of the normal equations);
* ``v_k·∇C(t)`` for all K fields by forward mode (one tangent solve per field, what every field did before) and by
  reverse mode (``corrflow.tangent.directional_derivatives``: one adjoint solve per slice), and their ratio;
* the whole per-configuration terms (``tangent.compute_terms`` with ``valence_mass``), as ``corrflow derivative
  --valence-mass`` computes them,

and the largest relative difference between the two modes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._machine import cpu_model  # noqa: E402
from corrflow import make_theory  # noqa: E402
from corrflow import tangent as tg  # noqa: E402
from corrflow.heatbath import HeatbathConfig, sample_chains  # noqa: E402
from corrflow.observables.fermions import valence_quarks  # noqa: E402


def best(f, *args, repeat: int = 2) -> float:
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="8,4,4,4")
    ap.add_argument("--beta", type=float, default=5.8)
    ap.add_argument("--mass", type=float, default=0.5)
    ap.add_argument("--configs", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    shape = tuple(int(x) for x in args.shape.split(","))
    th = make_theory("su3", shape, beta=args.beta)
    q = valence_quarks(th, mass=args.mass)
    n = args.configs
    links = jnp.broadcast_to(th.group.identity(tuple(th.link_shape[:-2])), (n,) + tuple(th.link_shape))
    keys = jax.random.split(jax.random.PRNGKey(7), n)
    links, _ = sample_chains(keys, links, th, HeatbathConfig(1, 4), 60)
    names = tuple(f"pion@{t}" for t in range(1, shape[0] // 2 + 1))
    field = tg.make_field("auto", th, param="lam")
    vec = tg.observables_vector(names, th.group, th.shape, q)
    vs = jax.jit(jax.vmap(lambda u: field.vectors(u, th)))(links)
    k = int(vs.shape[1])
    print(f"# {cpu_model()}, jax {jax.__version__}, quenched SU(3) {args.shape}, beta {args.beta}, valence m "
          f"{args.mass}, {n} configurations per batch, K = {k} basis fields, {len(names)} slices", flush=True)

    def forward(u, v):
        return jax.vmap(lambda x: tg.directional_derivative(vec, u, x, th.group))(v)

    def reverse(u, v):
        return tg.directional_derivatives(vec, u, v, th.group)

    corr = jax.jit(jax.vmap(vec))
    fwd, rev = jax.jit(jax.vmap(forward)), jax.jit(jax.vmap(reverse))
    diff = np.max(np.abs(np.asarray(fwd(links, vs)) - np.asarray(rev(links, vs)))
                  / np.abs(np.asarray(fwd(links, vs))).max(axis=(0, 1)))
    t_c = best(corr, links, repeat=args.repeat) / n
    t_f = best(fwd, links, vs, repeat=args.repeat) / n
    t_r = best(rev, links, vs, repeat=args.repeat) / n
    cf = links[None]

    def terms():
        return tg.compute_terms(field, th, "lam", ("plaquette",) + names, cf, jax.random.PRNGKey(0), batch=n,
                                valence_mass=args.mass).b

    t_terms = best(lambda: terms(), repeat=args.repeat) / n
    print("| quantity | s per configuration | ratio |")
    print("|---|---:|---:|")
    print(f"| C(t) alone (one propagator) | {t_c:.3g} | |")
    print(f"| v_k.grad C(t), forward mode (K tangent solves) | {t_f:.3g} | 1 |")
    print(f"| v_k.grad C(t), reverse mode ({len(names)} adjoint solves) | {t_r:.3g} | {t_f / t_r:.2f}x |")
    print(f"| all tangent terms (compute_terms, plaquette + slices) | {t_terms:.3g} | |")
    print(f"max relative difference forward / reverse: {diff:.1e}")


if __name__ == "__main__":
    main()
