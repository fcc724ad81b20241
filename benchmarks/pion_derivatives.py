"""Cost of the pion-correlator terms of the tangent estimator: forward against reverse mode (issue 15).

    python benchmarks/pion_derivatives.py [--shape 8,4,4,4] [--beta 5.8] [--mass 0.5] [--configs 4]

Quenched 4D SU(3) configurations (heat bath, 1 HB + 4 OR per update, thermalised), valence Wilson quarks of mass
``--mass``; the default tangent field of ``--param lam`` (anisotropic held-out smoothing, K basis fields) and the
observables ``pion@1 .. pion@T/2``.  Times per configuration (a vmapped batch of ``--configs``, steady state, best of
``--repeat``) of

* ``C(t)`` alone (one propagator, 12 columns) with CG on the normal equations and with ``bicgstab+cg`` (BiCGStab
  polished by CG, the tangent estimator's solver now);
* ``v_k·∇C(t)`` for all K fields: forward mode with CG (one tangent solve per field: the code before, the baseline),
  reverse mode with CG (``corrflow.tangent.directional_derivatives``: one adjoint solve per slice) and reverse mode
  with ``bicgstab+cg`` (now), with speed-ups against the baseline and the largest relative differences to it;
* the whole per-configuration terms now (``tangent.compute_terms`` with ``valence_mass``), as ``corrflow derivative
  --valence-mass`` computes them.
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
from corrflow.observables.fermions import pion_correlator, valence_quarks  # noqa: E402
from corrflow.tangent.core import REVERSE_SPLIT  # noqa: E402


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
    ap.add_argument("--configs", type=int, default=2)
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
    vec = tg.observables_vector(names, th.group, th.shape, q)  # the tangent estimator's: solver bicgstab+cg
    sl = slice(1, shape[0] // 2 + 1)

    def vec_cg(u):  # the correlators with CG on the normal equations (the solver before)
        return pion_correlator(q, u, 1, "cg")[sl]

    setattr(vec_cg, REVERSE_SPLIT, ((), None, tuple(range(len(names))), vec_cg))  # every output in reverse mode

    vs = jax.jit(jax.vmap(lambda u: field.vectors(u, th)))(links)
    k = int(vs.shape[1])
    print(f"# {cpu_model()}, jax {jax.__version__}, quenched SU(3) {args.shape}, beta {args.beta}, valence m "
          f"{args.mass}, {n} configurations per batch, K = {k} basis fields, {len(names)} slices", flush=True)

    def forward(f):
        return jax.jit(jax.vmap(lambda u, v: jax.vmap(lambda x: tg.directional_derivative(f, u, x, th.group))(v)))

    def reverse(f):
        return jax.jit(jax.vmap(lambda u, v: tg.directional_derivatives(f, u, v, th.group)))

    rows = [("C(t) alone, CG", jax.jit(jax.vmap(vec_cg)), (links,)),
            ("C(t) alone, bicgstab+cg", jax.jit(jax.vmap(vec)), (links,)),
            ("v_k.grad C(t): forward mode, CG (before: K tangent solves)", forward(vec_cg), (links, vs)),
            (f"v_k.grad C(t): reverse mode, CG ({len(names)} adjoint solves)", reverse(vec_cg), (links, vs)),
            ("v_k.grad C(t): reverse mode, bicgstab+cg (now)", reverse(vec), (links, vs))]
    times, values = {}, {}
    for label, f, a in rows:
        values[label] = np.asarray(f(*a))
        times[label] = best(f, *a, repeat=args.repeat) / n
    cf = links[None]

    def terms():
        return tg.compute_terms(field, th, "lam", ("plaquette",) + names, cf, jax.random.PRNGKey(0), batch=n,
                                valence_mass=args.mass).b

    t_terms = best(lambda: terms(), repeat=args.repeat) / n
    base = rows[2][0]
    print("| quantity | s per configuration | speed-up vs forward CG |")
    print("|---|---:|---:|")
    for label, _, _ in rows:
        ratio = f"{times[base] / times[label]:.2f}x" if label.startswith("v_k") else ""
        print(f"| {label} | {times[label]:.3g} | {ratio} |")
    print(f"| all tangent terms now (compute_terms: plaquette + slices, field, R) | {t_terms:.3g} | |")
    ref = values[base]
    for label, _, _ in rows[3:]:
        print(f"max relative difference to forward CG, {label}: "
              f"{np.max(np.abs(values[label] - ref)) / np.abs(ref).max():.1e}")


if __name__ == "__main__":
    main()
