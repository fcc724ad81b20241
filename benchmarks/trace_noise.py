"""Noise of the stochastic fermion traces per CG solve, by dilution (issue 15).

    python benchmarks/trace_noise.py --store S.zarr --ensemble qcd44 [--configs 2] [--draws 8]

For a few thermalised configurations of a stored Wilson-fermion ensemble (schwinger, su3-wilson): the variance of
the Z2 estimate of ``∂_m S_eff = −n_f Re tr D^{-1}`` from one noise vector, for each dilution (none, even-odd,
spin-color, full), and that variance times the CG solves it costs -- the cost-normalised figure, printed as a ratio
against no dilution measured in the same run.  Timings include compilation and are for orientation only.
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
from corrflow import make_theory, open_store  # noqa: E402
from corrflow import tangent as tg  # noqa: E402
from corrflow.pipeline.tangent import load_all_configs  # noqa: E402
from corrflow.tangent.fermions import dilution_masks, fermion_derivatives  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--ensemble", required=True)
    ap.add_argument("--configs", type=int, default=2, help="configurations (spread over the second half of chain 0)")
    ap.add_argument("--draws", type=int, default=8, help="independent noise vectors per configuration")
    args = ap.parse_args()
    st = open_store(args.store, "r")
    spec = st.spec(args.ensemble)
    th = make_theory(spec.theory, spec.shape, **spec.params)
    if not tg.is_fermion_theory(th):
        sys.exit(f"error: {args.ensemble!r} has no dynamical fermions")
    chain = load_all_configs(st, args.ensemble)[0]
    half = chain[len(chain) // 2:]
    cfg = half[np.linspace(0, len(half) - 1, args.configs).astype(int)]
    vks = jnp.zeros((1,) + tg.coords_shape(th))
    print(f"{args.ensemble}: {spec.theory} {spec.shape} {spec.params}; {len(cfg)} configurations x {args.draws} draws;"
          f" {cpu_model()}", flush=True)
    base = None
    for dil in tg.DILUTIONS:
        tr = tg.FermionTraces("stochastic", 1, "z2", dilution=dil)
        pieces = dilution_masks(th, dil).shape[0]
        f = jax.jit(jax.vmap(lambda k, u: fermion_derivatives(th, u, vks, k, tr)[0], in_axes=(0, None)))
        t0 = time.perf_counter()
        var = float(np.mean([np.asarray(f(jax.random.split(jax.random.PRNGKey(5), args.draws), u)).var(ddof=1)
                             for u in cfg]))
        cost = var * pieces
        base = cost if base is None else base
        print(f"  {dil:10s} {pieces:3d} solves/vector  Var[dS/dm] per vector {var:10.4g}  x solves {cost:10.4g}  "
              f"({base / cost:.2f}x better than none per solve; {time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
