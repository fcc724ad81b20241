"""4D SU(3) kernels: force, HMC trajectory, flow layer, Wilson-flow step (and heat bath when available), with the
achieved memory bandwidth against the device's peak (roofline ratio).

    python benchmarks/su3.py                     # 8^4 and 16^4, complex64, on the default JAX device
    python benchmarks/su3.py --sizes 8 --double  # complex128, 8^4 only
    JAX_PLATFORMS=cpu python benchmarks/su3.py   # force the CPU

Roofline model.  Every kernel here is memory bound (a 3x3 complex product is 4.5 flop per byte loaded, below the
ridge point of CPUs and GPUs once staples are recomputed from links in cache).  The *minimal traffic* of a kernel
is counted as the link-field sized arrays it must read and write once: ``force`` reads U and writes F (2 fields),
a flow layer reads U and writes U' (2), a Wilson-flow step reads/writes W and the RK accumulator X in each of its
3 stages (12), an HMC trajectory with ``n`` Omelyan steps does ``2n + 1`` forces plus ``2n`` link and ``2n + 1``
momentum updates (each read 2, write 1 field).  ``roofline ratio = measured time / (minimal bytes / peak
bandwidth)``: 1 is the bandwidth limit; the issue's goal on a GPU is <= 3 for the force and the flow layer at 16^4.
Peak bandwidth: the vendor figure for known GPUs, and on CPUs a copy bandwidth measured in the same run
(numpy ``y = x + 1`` on 512 MiB arrays, best of 5).

Baseline (issue 16): the force, the HMC trajectory and the Wilson-flow step are also timed with the previous
staple kernel (:func:`corrflow.lattice.staple_force_reference`, direction by direction in the link layout) in the
same run; the ``vs ref`` column is reference time / current time (> 1: faster now).  The process allocator is
tuned as in the ``corrflow`` command line (:func:`corrflow.runtime.tune_allocator`); ``--default-malloc`` keeps
glibc's defaults, to measure what the allocator alone does.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from _machine import cpu_model

import corrflow  # noqa: F401  (x64 on)
from corrflow import hmc, lattice
from corrflow.flows import make_flow
from corrflow.observables import gradient_flow as gf
from corrflow.theories import WilsonGaugeAction

GPU_PEAK = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12, "V100": 0.9e12, "L40": 0.86e12}


def _timeit(fn, *args, repeat: int = 5, min_time: float = 1.0) -> float:  # noqa: ANN001
    jax.block_until_ready(fn(*args))  # compile + warm up
    n, t = 0, 0.0
    start = time.perf_counter()
    while n < repeat or (t < min_time and n < 100):
        jax.block_until_ready(fn(*args))
        n += 1
        t = time.perf_counter() - start
    return t / n


def peak_bandwidth() -> tuple[float, str]:
    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", "")
    for name, bw in GPU_PEAK.items():
        if name in kind:
            return bw, f"{kind} vendor peak"
    n = 64 * 2**20  # 64 Mi float64 = 512 MiB per array
    x, y = np.ones(n), np.empty(n)
    best = np.inf
    for _ in range(5):
        t = time.perf_counter()
        np.add(x, 1.0, out=y)
        best = min(best, time.perf_counter() - t)
    return 2 * 8 * n / best, f"measured numpy copy bandwidth (best of 5, {dev.platform})"


@contextlib.contextmanager
def _staple_kernel(kernel: str):  # noqa: ANN202
    """Trace with the current staple kernel or the reference one (the force and the Wilson flow look
    ``lattice.staple_force`` up when they are traced)."""
    current = lattice.staple_force
    if kernel == "reference":
        lattice.staple_force = lattice.staple_force_reference
    try:
        yield
    finally:
        lattice.staple_force = current


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--double", action="store_true", help="complex128 links (default complex64)")
    ap.add_argument("--hmc-steps", type=int, default=4, help="Omelyan steps per trajectory (default 4)")
    ap.add_argument("--default-malloc", action="store_true", help="keep glibc's allocator defaults")
    args = ap.parse_args()
    from corrflow.runtime import tune_allocator

    tuned = False if args.default_malloc else tune_allocator()
    dtype = jnp.complex128 if args.double else jnp.complex64
    dev = jax.devices()[0]
    peak, peak_src = peak_bandwidth()
    print(f"# 4D SU(3) kernels on {dev.platform}: {getattr(dev, 'device_kind', '')} "
          f"({cpu_model() if dev.platform == 'cpu' else ''}), {np.dtype(dtype).name} links, jax {jax.__version__}")
    print(f"peak bandwidth {peak / 1e9:.1f} GB/s ({peak_src}); allocator tuned: {tuned}\n")
    print(f"{'lattice':8s} {'kernel':28s} {'ms':>10s} {'per second':>14s} {'GB/s':>8s} {'roofline':>9s} {'vs ref':>7s}")
    try:
        from corrflow import heatbath  # optional module
    except ImportError:  # pragma: no cover
        heatbath = None
    for L in args.sizes:
        shape = (L,) * 4
        th = WilsonGaugeAction("su3", shape, beta=6.0)
        u = hmc.hot_start(jax.random.PRNGKey(0), th, dtype=dtype)
        u = gf.wilson_flow(u, "su3", t_max=0.1, eps=0.05, measure_every=0.1).links  # not Haar-random: smoother
        field_bytes = u.size * u.dtype.itemsize
        rows = []

        cfg = hmc.HMCConfig(step_size=1.0 / args.hmc_steps, n_steps=args.hmc_steps, integrator="omelyan")
        st = hmc.init(th, u)
        n = args.hmc_steps
        timed = {}
        for kernel in ("reference", "current"):  # programs traced with the previous / the current staple kernel
            with _staple_kernel(kernel):
                force = jax.jit(lambda uu: th.force(uu))
                traj = jax.jit(lambda k, s: hmc.step(k, s, th, cfg)[0])
                step = jax.jit(lambda uu: gf.flow_step(uu, th.group, 0.01))
                timed[kernel] = (_timeit(force, u), _timeit(traj, jax.random.PRNGKey(1), st, repeat=2), _timeit(step, u))
        (f_ref, t_ref, s_ref), (f_new, t_new, s_new) = timed["reference"], timed["current"]
        rows.append(("force", f_new, 2, "forces", f_ref))
        rows.append((f"HMC trajectory ({n} Omelyan)", t_new, 2 * (2 * n + 1) + 3 * (2 * n) + 3 * (2 * n + 1),
                     "trajectories", t_ref))

        flow = make_flow("su3", shape, loops=("plaquette",))
        layer = flow.layers[0]
        mask = jnp.asarray(flow.masks()[0, 0])
        raw = jnp.full((1,), 0.3, u.real.dtype)
        fwd = jax.jit(lambda uu: layer.forward(raw, mask, uu))
        rows.append(("flow layer (plaquette)", _timeit(fwd, u), 2, "layers"))

        flow_r = make_flow("su3", shape, loops=("plaquette", "rectangle")) if L % 4 == 0 else None
        if flow_r is not None:
            layer_r = flow_r.layers[0]
            mask_r = jnp.asarray(flow_r.masks()[0, 0])
            raw_r = jnp.full((2,), 0.3, u.real.dtype)
            fwd_r = jax.jit(lambda uu: layer_r.forward(raw_r, mask_r, uu))
            rows.append(("flow layer (plaq+rect)", _timeit(fwd_r, u), 2, "layers"))

        rows.append(("Wilson-flow step (RK3)", s_new, 12, "steps", s_ref))

        if heatbath is not None and hasattr(heatbath, "heatbath_sweep"):
            hb = jax.jit(lambda k, uu: heatbath.heatbath_sweep(k, uu, th))
            rows.append(("heat-bath sweep", _timeit(hb, jax.random.PRNGKey(2), u), 2, "sweeps"))
            orx = jax.jit(lambda uu: heatbath.overrelax_sweep(uu, th))
            rows.append(("over-relaxation sweep", _timeit(orx, u), 2, "sweeps"))

        for name, sec, n_fields, unit, *ref in rows:
            nbytes = n_fields * field_bytes
            bw = nbytes / sec
            vs = f"{ref[0] / sec:7.2f}" if ref else f"{'':7s}"
            print(f"{L}^4{'':5s} {name:28s} {1e3 * sec:10.2f} {1 / sec:9.2f} {unit[:5]:5s} {bw / 1e9:8.2f} "
                  f"{sec / (nbytes / peak):9.1f} {vs}")
        print()


if __name__ == "__main__":
    main()
