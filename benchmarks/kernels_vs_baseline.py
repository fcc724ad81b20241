"""4D SU(3) kernels now against the code of the day issue 16 was filed, timed in the same run (issue 16's CPU targets).

    python benchmarks/kernels_vs_baseline.py                       # 8^4 and 16^4, complex64, 3 interleaved rounds
    python benchmarks/kernels_vs_baseline.py --sizes 8 --rounds 2  # quicker
    python benchmarks/kernels_vs_baseline.py --baseline REV        # another baseline commit

The baseline is the package ``corrflow/`` of commit ``--baseline`` (default :data:`BASELINE`, the last commit before
the first kernel change of issue 16), extracted with ``git archive`` from this checkout's history into a temporary
directory.  Every kernel is timed by a fresh worker process (``--worker``) that imports either that tree or this
one, the two alternating round by round (the order flipped every round) so that a machine that slows down or speeds up
during the run affects both alike; the figure of each kernel is its best round.  Each worker times one kernel as the
mean over a window of at least ``--min-time`` seconds after a compile-and-warm-up call, on a Wilson-flowed (t = 0.1)
hot start, β = 6.0; the compile-and-first-call seconds are reported too (the issue: compilation not worse).  The
current code is timed twice: with glibc's allocator (``now``: what ``corrflow`` does by default, and what the baseline
did) and with the tuned allocator (``tuned``: ``CORRFLOW_MALLOC=tuned``, :func:`corrflow.runtime.tune_allocator`;
``--no-tuned`` skips it).

Kernels (the issue's list): the force, an HMC trajectory (``--hmc-steps`` Omelyan steps), a heat-bath sweep, an
over-relaxation sweep, a Wilson-flow RK3 step and a flow layer (plaquette mask; plaquette + rectangle masks when
``L % 4 == 0``), each as the public function users call (``theory.force``, ``hmc.step``,
``heatbath.heatbath_sweep``, ``heatbath.overrelax_sweep``, ``gradient_flow.flow_step``, ``ResidualLayer.forward``).
Targets (issue 16, this CPU): force >= 4x, the others >= 3x.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The last commit before issue 16's first kernel change (5e62824, 2026-12-03): "today" in the issue's targets.
BASELINE = "2c13cfe"
#: Issue 16's targets on the CPU, speed-up against the baseline.
TARGETS = {"force": 4.0}
DEFAULT_TARGET = 3.0
REPO = Path(__file__).resolve().parent.parent


def _timeit(fn, *args, min_time: float = 1.0, repeat: int = 3) -> tuple[float, float]:  # noqa: ANN001
    """(seconds per call, seconds of the compile-and-first call)."""
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    jax.block_until_ready(fn(*args))
    n, start = 0, time.perf_counter()
    while n < repeat or (time.perf_counter() - start < min_time and n < 200):
        jax.block_until_ready(fn(*args))
        n += 1
    return (time.perf_counter() - start) / n, first


def worker(side: str, sizes: list[int], double: bool, hmc_steps: int, min_time: float) -> None:
    """Time every kernel with the ``corrflow`` found on ``sys.path``; print one JSON line per lattice."""
    if side == "tuned":
        from corrflow.runtime import tune_allocator

        tune_allocator()
    import jax
    import jax.numpy as jnp

    import corrflow  # noqa: F401  (x64 on)
    from corrflow import heatbath, hmc
    from corrflow.flows import make_flow
    from corrflow.observables import gradient_flow as gf
    from corrflow.theories import WilsonGaugeAction

    where = str(Path(corrflow.__file__).resolve().parent.parent)
    dtype = jnp.complex128 if double else jnp.complex64
    for L in sizes:
        shape = (L,) * 4
        th = WilsonGaugeAction("su3", shape, beta=6.0)
        u = hmc.hot_start(jax.random.PRNGKey(0), th, dtype=dtype)
        u = gf.wilson_flow(u, "su3", t_max=0.1, eps=0.05, measure_every=0.1).links
        cfg = hmc.HMCConfig(step_size=1.0 / hmc_steps, n_steps=hmc_steps, integrator="omelyan", jitter=0.0)
        st = hmc.init(th, u)
        kernels = {
            "force": (jax.jit(th.force), (u,)),
            f"HMC trajectory ({hmc_steps} Omelyan)": (jax.jit(lambda k, s: hmc.step(k, s, th, cfg)[0]),
                                                     (jax.random.PRNGKey(1), st)),
            "heat-bath sweep": (jax.jit(lambda k, uu: heatbath.heatbath_sweep(k, uu, th)), (jax.random.PRNGKey(2), u)),
            "over-relaxation sweep": (jax.jit(lambda uu: heatbath.overrelax_sweep(uu, th)), (u,)),
            "Wilson-flow step (RK3)": (jax.jit(lambda uu: gf.flow_step(uu, th.group, 0.01)), (u,)),
        }
        for label, loops in (("flow layer (plaquette)", ("plaquette",)),
                             ("flow layer (plaq+rect)", ("plaquette", "rectangle"))):
            if len(loops) == 2 and L % 4:
                continue
            flow = make_flow("su3", shape, loops=loops)
            layer, mask = flow.layers[0], jnp.asarray(flow.masks()[0, 0])
            raw = jnp.full((len(loops),), 0.3, u.real.dtype)
            kernels[label] = (jax.jit(lambda uu, layer=layer, mask=mask, raw=raw: layer.forward(raw, mask, uu)), (u,))
        out = {}
        for name, (fn, args) in kernels.items():
            sec, first = _timeit(fn, *args, min_time=min_time)
            out[name] = {"s": sec, "first_s": first}
        print(json.dumps({"side": side, "L": L, "corrflow": where, "jax": jax.__version__, "kernels": out}), flush=True)


def _baseline_tree(rev: str, into: Path) -> Path:
    """``corrflow/`` of commit ``rev`` extracted under ``into``; SystemExit (one line) if git cannot provide it."""
    try:
        data = subprocess.run(["git", "-C", str(REPO), "archive", rev, "corrflow"], check=True,
                              capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=data, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        err = getattr(e, "stderr", b"") or b""
        raise SystemExit(f"error: cannot extract corrflow/ of commit {rev} from {REPO} ({err.decode().strip() or e}); "
                         "run from a git checkout with its history (git fetch --unshallow)") from None
    return into


def _run_worker(side: str, tree: Path, args: argparse.Namespace) -> dict[int, dict]:
    env = dict(os.environ, PYTHONPATH=str(tree) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--sizes", *map(str, args.sizes),
           "--hmc-steps", str(args.hmc_steps), "--min-time", str(args.min_time)] + (["--double"] if args.double else [])
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if res.returncode:
        raise SystemExit(f"error: the {side} worker failed:\n{res.stderr[-3000:]}")
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    for r in rows:
        if Path(r["corrflow"]) != tree.resolve():
            raise SystemExit(f"error: the {side} worker imported corrflow from {r['corrflow']}, not {tree}")
    return {r["L"]: r for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default=BASELINE, help=f"baseline commit (default {BASELINE})")
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best round counts; default 3)")
    ap.add_argument("--double", action="store_true", help="complex128 links (default complex64)")
    ap.add_argument("--hmc-steps", type=int, default=4)
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of timing per kernel and worker")
    ap.add_argument("--json", default="", help="also write the per-round timings to this file")
    ap.add_argument("--no-tuned", action="store_true",
                    help="do not also time the current code with the tuned allocator")
    ap.add_argument("--worker", choices=("baseline", "current", "tuned"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.sizes, args.double, args.hmc_steps, args.min_time)
    if args.rounds < 1:
        raise SystemExit("error: --rounds must be >= 1")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _machine import cpu_model

    with tempfile.TemporaryDirectory(prefix="corrflow-baseline-") as tmp:
        trees = {"baseline": _baseline_tree(args.baseline, Path(tmp)), "current": REPO, "tuned": REPO}
        sides = ("baseline", "current") + (() if args.no_tuned else ("tuned",))
        print(f"# 4D SU(3) kernels: corrflow at {args.baseline} (baseline) vs this checkout, "
              f"{'complex128' if args.double else 'complex64'}, {cpu_model()}, {os.cpu_count()} CPUs; "
              f"{args.rounds} interleaved rounds, best round", flush=True)
        runs: list[dict] = []
        for r in range(args.rounds):
            order = sides if r % 2 == 0 else sides[::-1]
            for side in order:
                t0 = time.perf_counter()
                got = _run_worker(side, trees[side], args)
                runs.append({"round": r, "side": side, "rows": got})
                print(f"# round {r + 1}/{args.rounds} {side}: {time.perf_counter() - t0:.0f} s", flush=True)
    jax_versions = {row["jax"] for run in runs for row in run["rows"].values()}
    print(f"# jax {', '.join(sorted(jax_versions))}; speed-up = baseline / now; 'tuned': CORRFLOW_MALLOC=tuned\n")
    tuned = "tuned" in sides
    print(f"{'lattice':8s} {'kernel':30s} {'baseline ms':>12s} {'now ms':>9s} {'speed-up':>9s} {'target':>7s}     "
          + (f"{'tuned ms':>9s} {'speed-up':>9s}   " if tuned else "")
          + "compile+1st s: baseline / now" + (" / tuned" if tuned else ""))
    for L in args.sizes:
        for name in runs[0]["rows"][L]["kernels"]:
            best = {s: min(run["rows"][L]["kernels"][name]["s"] for run in runs if run["side"] == s) for s in sides}
            first = {s: min(run["rows"][L]["kernels"][name]["first_s"] for run in runs if run["side"] == s)
                     for s in sides}
            target = TARGETS.get(name, DEFAULT_TARGET)
            ratio = best["baseline"] / best["current"]
            line = (f"{L}^4{'':5s} {name:30s} {1e3 * best['baseline']:12.2f} {1e3 * best['current']:9.2f} "
                    f"{ratio:8.2f}x {target:5.0f}x {'met' if ratio >= target else 'open':4s} ")
            if tuned:
                rt = best["baseline"] / best["tuned"]
                line += f"{1e3 * best['tuned']:9.2f} {rt:8.2f}x {'met' if rt >= target else '':3s}"
            print(line + "   " + " / ".join(f"{first[s]:.1f}" for s in sides))
        print()
    if args.json:
        Path(args.json).write_text(json.dumps({"baseline": args.baseline, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
