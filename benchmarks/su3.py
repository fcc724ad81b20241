"""4D SU(3) kernels: force, HMC trajectory, flow layer, Wilson-flow step (and heat bath when available), with the
achieved memory bandwidth against the device's peak (roofline ratio).

    python benchmarks/su3.py                     # 8^4 and 16^4, complex64, on the default JAX device
    python benchmarks/su3.py --sizes 8 --double  # complex128, 8^4 only
    JAX_PLATFORMS=cpu python benchmarks/su3.py   # force the CPU
    python benchmarks/su3.py --sizes 16 --pallas --pallas-blocks 64,256 --pallas-loop   # + the Pallas force (GPU)
    python benchmarks/su3.py --check-pallas      # only: Pallas force vs XLA kernel (values, vmap, gradients)

Roofline model.  Every kernel here is memory bound (a 3x3 complex product is 4.5 flop per byte loaded, below the
ridge point of CPUs and GPUs once staples are recomputed from links in cache).  The *minimal traffic* of a kernel
is counted as the link-field sized arrays it must read and write once: ``force`` reads U and writes F (2 fields),
a flow layer reads U and writes U' (2), a Wilson-flow step reads/writes W and the RK accumulator X in each of its
3 stages (12), an HMC trajectory with ``n`` Omelyan steps does ``2n + 1`` forces plus ``2n`` link and ``2n + 1``
momentum updates (each read 2, write 1 field), ``exp(X) U`` reads X and U and writes one field (3).
``roofline ratio = measured time / (minimal bytes / peak bandwidth)``: 1 is the bandwidth limit; the issue's goal on
a GPU is <= 3 for the force and the flow layer at 16^4.
Peak bandwidth: the vendor figure for known GPUs, and on CPUs a copy bandwidth measured in the same run
(numpy ``y = x + 1`` on 512 MiB arrays, best of 5).

Baseline (issue 16): the force, the HMC trajectory and the Wilson-flow step are timed with the previous
staple kernel (:func:`corrflow.lattice.staple_force_reference`, direction by direction in the link layout) and with
the current XLA kernel (:func:`corrflow.lattice.staple_force_xla`), on CPUs with the native force and exponential
(:mod:`corrflow.native`, what ``corrflow`` runs by default there), and with ``--pallas`` the fused Pallas kernel
(:mod:`corrflow.pallas_force`), in the same run; the ``vs ref`` column is reference time / kernel time (> 1:
faster), and each kernel's force is compared with the reference's (``max |F - F_ref| / max |F_ref|``).  The
SU(3) exponential row's reference is the libm form of the same formula (``matrices.exp_su3(x, libm=True)``).  The process
allocator is tuned as in the ``corrflow`` command line (:func:`corrflow.runtime.tune_allocator`);
``--default-malloc`` keeps glibc's defaults, to measure what the allocator alone does.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from _machine import cpu_model

import corrflow  # noqa: F401  (x64 on)
from corrflow import groups, hmc, lattice, matrices, native, pallas_force
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
def _staple_kernel(kernel: str, **pallas_options):  # noqa: ANN003, ANN202
    """Trace with one staple kernel: ``reference`` (the direct form before issue 16), ``xla`` (the array-operation
    kernel), ``native`` (what ``lattice.staple_force`` chooses by default: on CPUs the native force and exponential
    of :mod:`corrflow.native`) or ``pallas`` (the fused GPU kernel, opt-in; ``pallas_options``: ``block``, ``loop``
    of :func:`corrflow.pallas_force.staple_force`).  The force and the Wilson flow look ``lattice.staple_force`` up
    when they are traced; all but ``native`` trace with ``CORRFLOW_NATIVE=0`` (JAX exponential too)."""
    current, env = lattice.staple_force, os.environ.get(native.ENV)
    lattice.staple_force = {
        "reference": lattice.staple_force_reference,
        "xla": lattice.staple_force_xla,
        "native": current,
        "pallas": functools.partial(pallas_force.staple_force, **pallas_options),
    }[kernel]
    os.environ[native.ENV] = "auto" if kernel == "native" else "0"
    try:
        yield
    finally:
        lattice.staple_force = current
        if env is None:
            os.environ.pop(native.ENV, None)
        else:
            os.environ[native.ENV] = env


def check_pallas(L: int = 8, dtype=jnp.complex64) -> int:  # noqa: ANN001
    """The Pallas force against the XLA kernel on this device: L^4 links of ``dtype``, two chains (vmap),
    anisotropic plane weights, and the derivative of a Wilson-flow step (forward and reverse mode).  Prints
    ``pallas check passed`` (the device script looks for it) or the failing comparison; returns the exit code."""
    th = WilsonGaugeAction("su3", (L,) * 4, beta=6.0, xi=1.2, lam=0.05)
    tol = 2e-5 if dtype == jnp.complex64 else 1e-12
    u = hmc.hot_start(jax.random.PRNGKey(0), th, dtype=dtype, batch=(2,))
    w = th.plane_couplings().astype(u.real.dtype)
    t0 = time.perf_counter()
    f_p = jax.block_until_ready(jax.jit(lambda uu: pallas_force.staple_force(uu, th.group, w))(u))
    t_p = time.perf_counter() - t0
    f_x = jax.jit(lambda uu: lattice.staple_force_xla(uu, th.group, w))(u)
    err = float(jnp.max(jnp.abs(f_p - f_x)) / jnp.max(jnp.abs(f_x)))
    v = jax.random.normal(jax.random.PRNGKey(1), u.shape[:-2], u.real.dtype)

    def obs(uu, kernel):  # noqa: ANN001, ANN202
        with _staple_kernel(kernel):
            return jnp.sum(jnp.real(gf.flow_step(uu, th.group, 0.05)[..., 0, 0]) * v)

    g_p = jax.jit(jax.grad(lambda uu: obs(uu, "pallas")))(u)
    g_x = jax.jit(jax.grad(lambda uu: obs(uu, "xla")))(u)
    gerr = float(jnp.max(jnp.abs(g_p - g_x)) / jnp.max(jnp.abs(g_x)))
    ok = err < tol and gerr < tol
    print(f"{np.dtype(dtype).name}: max |F_pallas - F_xla| / max |F| = {err:.1e}, gradient of a flow step "
          f"{gerr:.1e} (tolerance {tol:.0e}); first call (compile + run) {t_p:.1f} s: {'ok' if ok else 'FAILED'}")
    print("pallas check passed" if ok else "pallas check FAILED")
    return 0 if ok else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--double", action="store_true", help="complex128 links (default complex64)")
    ap.add_argument("--hmc-steps", type=int, default=4, help="Omelyan steps per trajectory (default 4)")
    ap.add_argument("--default-malloc", action="store_true", help="keep glibc's allocator defaults")
    ap.add_argument("--check-pallas", action="store_true",
                    help="only check the Pallas force against the XLA kernel (values, batches, derivatives) on the first of "
                         "--sizes, and exit")
    ap.add_argument("--pallas", action="store_true",
                    help="also time the fused Pallas force (Triton compiles each program in ~50 s on an H200; "
                         "interpreted on CPUs: very slow)")
    ap.add_argument("--pallas-loop", action="store_true",
                    help="also time the Pallas force with its planes in a loop (less code for Triton to compile)")
    ap.add_argument("--pallas-blocks", default="",
                    help="comma-separated sites per program to time the Pallas force with (e.g. 64,128,256)")
    args = ap.parse_args()
    from corrflow.runtime import tune_allocator

    tuned = False if args.default_malloc else tune_allocator()
    if args.check_pallas:
        raise SystemExit(check_pallas(args.sizes[0], jnp.complex128 if args.double else jnp.complex64))
    dtype = jnp.complex128 if args.double else jnp.complex64
    dev = jax.devices()[0]
    peak, peak_src = peak_bandwidth()
    print(f"# 4D SU(3) kernels on {dev.platform}: {getattr(dev, 'device_kind', '')} "
          f"({cpu_model() if dev.platform == 'cpu' else ''}), {np.dtype(dtype).name} links, jax {jax.__version__}")
    print(f"peak bandwidth {peak / 1e9:.1f} GB/s ({peak_src}); allocator tuned: {tuned}\n")
    print(f"{'lattice':8s} {'kernel':34s} {'ms':>10s} {'per second':>14s} {'GB/s':>8s} {'roofline':>9s} {'vs ref':>7s}")
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

        cfg = hmc.HMCConfig(step_size=1.0 / args.hmc_steps, n_steps=args.hmc_steps, integrator="omelyan",
                            jitter=0.0)
        st = hmc.init(th, u)
        n = args.hmc_steps
        kernels = ["reference", "xla"] + (["native"] if jax.default_backend() == "cpu" else [])
        kernels += ["pallas"] if args.pallas else []
        timed, forces = {}, {}
        for kernel in kernels:  # programs traced with each staple kernel
            with _staple_kernel(kernel):
                force = jax.jit(lambda uu: th.force(uu))
                traj = jax.jit(lambda k, s: hmc.step(k, s, th, cfg)[0])
                step = jax.jit(lambda uu: gf.flow_step(uu, th.group, 0.01))
                t0 = time.perf_counter()
                forces[kernel] = np.asarray(force(u))
                print(f"# {L}^4 {kernel} force: compile + first call {time.perf_counter() - t0:.1f} s")
                timed[kernel] = (_timeit(force, u), _timeit(traj, jax.random.PRNGKey(1), st, repeat=2), _timeit(step, u))
        f_ref, t_ref, s_ref = timed["reference"]
        scale = np.max(np.abs(forces["reference"]))
        for kernel in kernels[1:]:
            f_new, t_new, s_new = timed[kernel]
            err = np.max(np.abs(forces[kernel] - forces["reference"])) / scale
            print(f"# {L}^4 {kernel} force: max |F - F_ref| / max |F_ref| = {err:.1e}")
            rows.append((f"force [{kernel}]", f_new, 2, "forces", f_ref))
            rows.append((f"HMC traj ({n} Omelyan) [{kernel}]", t_new, 2 * (2 * n + 1) + 3 * (2 * n) + 3 * (2 * n + 1),
                         "trajectories", t_ref))
            rows.append((f"Wilson-flow RK3 step [{kernel}]", s_new, 12, "steps", s_ref))
        if args.pallas:  # sites per program (--pallas-blocks); the planes in a loop (--pallas-loop)
            variants = [(f"block {b}", {"block": int(b)}) for b in args.pallas_blocks.split(",") if b]
            variants += [("loop", {"loop": True})] if args.pallas_loop else []
            for label, kw in variants:
                if (L**4) % kw.get("block", 1) == 0:
                    with _staple_kernel("pallas", **kw):  # traced (at the first call) inside
                        force = jax.jit(lambda uu: th.force(uu))
                        t0 = time.perf_counter()
                        err = np.max(np.abs(np.asarray(force(u)) - forces["reference"])) / scale
                        print(f"# {L}^4 pallas {label}: compile + first call {time.perf_counter() - t0:.1f} s, "
                              f"max |F - F_ref| / max |F_ref| = {err:.1e}")
                        rows.append((f"force [pallas {label}]", _timeit(force, u), 2, "forces", f_ref))

        # the SU(3) exponential of a link update (HMC drift, Wilson-flow step): polynomial sines and a Newton cube root
        # against the libm formula it replaced (issue 16), as exp(X) U for X = 0.1 P_TA(U)
        x_alg = 0.1 * th.group.project_algebra(u)
        exp_new = jax.jit(lambda xx, uu: groups.matmul(matrices.exp_su3(xx), uu))
        exp_ref = jax.jit(lambda xx, uu: groups.matmul(matrices.exp_su3(xx, libm=True), uu))
        t_exp_ref = _timeit(exp_ref, x_alg, u)
        rows.append(("exp(X) U (SU(3) exponential)", _timeit(exp_new, x_alg, u), 3, "updates", t_exp_ref))
        if native.use_native_exp(x_alg, u, th.group):
            exp_nat = jax.jit(th.group.exp_left)  # native by default on CPUs
            rows.append(("exp(X) U [native]", _timeit(exp_nat, x_alg, u), 3, "updates", t_exp_ref))

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

        if heatbath is not None and hasattr(heatbath, "heatbath_sweep"):
            hb = jax.jit(lambda k, uu: heatbath.heatbath_sweep(k, uu, th))
            rows.append(("heat-bath sweep", _timeit(hb, jax.random.PRNGKey(2), u), 2, "sweeps"))
            orx = jax.jit(lambda uu: heatbath.overrelax_sweep(uu, th))
            rows.append(("over-relaxation sweep", _timeit(orx, u), 2, "sweeps"))

        for name, sec, n_fields, unit, *ref in rows:
            nbytes = n_fields * field_bytes
            bw = nbytes / sec
            vs = f"{ref[0] / sec:7.2f}" if ref else f"{'':7s}"
            print(f"{L}^4{'':5s} {name:34s} {1e3 * sec:10.2f} {1 / sec:9.2f} {unit[:5]:5s} {bw / 1e9:8.2f} "
                  f"{sec / (nbytes / peak):9.1f} {vs}")
        print()


if __name__ == "__main__":
    main()
