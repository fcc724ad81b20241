"""Flow training from the store, one batch at a time, against the same training from memory (issue 14).

    python benchmarks/streamed_training.py                  # 2D U(1) 128x128, 2 x 512 configurations (512 MiB)
    python benchmarks/streamed_training.py --L 64 --n 256   # quicker

A store with Haar-random 2D U(1) configurations (exact samples of beta = 0; written directly, no HMC) is trained from
beta = 0 to 0.2 with the default 2D flow (plaquette-space map, L-BFGS, ``--iters`` iterations, micro-batches of
``--batch``) twice, each in a fresh process: with the training set loaded into memory (``training_sets(...,
stream=False)``, what ``corrflow train`` does below 1 GiB) and read from the store batch by batch (``stream=True``, the
default above 1 GiB). Printed: wall time of the training (compilation included, the same in both), peak resident
memory of the process, and whether both trained the same parameters bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

from benchmarks._machine import cpu_model  # noqa: E402


def make_store(path: str, L: int, n: int, chains: int) -> float:
    """Haar-random U(1) links ``(chains, n, L, L, 2)`` in a store; returns the seconds it took."""
    from corrflow.store import EnsembleSpec, open_store

    t0 = time.perf_counter()
    spec = EnsembleSpec(theory="u1", group="u1", shape=(L, L), params={"beta": 0.0}, n_chains=chains, seed=0,
                        dtype="float64")
    st = open_store(path, "a")
    st.create_ensemble("e", spec)
    rng = np.random.default_rng(0)
    block = max(1, 64 * 2**20 // (chains * L * L * 2 * 8))  # ~64 MiB per append
    with st.writer("e") as w:
        for lo in range(0, n, block):
            m = min(block, n - lo)
            links = rng.uniform(-np.pi, np.pi, size=(chains, m, L, L, 2))
            per = {k: np.zeros((chains, m)) for k in ("action", "delta_H", "step_size", "plaquette")}
            per["accepted"] = np.ones((chains, m), bool)
            w.append(np.arange(lo, lo + m), links, per, lo + m)
    return time.perf_counter() - t0


def worker(args: argparse.Namespace) -> None:
    from corrflow import make_theory
    from corrflow.flows import make_flow
    from corrflow.flows.train import TrainConfig, train
    from corrflow.pipeline.handles import training_sets
    from corrflow.store import open_store

    st = open_store(args.store, "r")
    base = make_theory("u1", (args.L, args.L), beta=0.0)
    target = base.replace(beta=0.2)
    t0 = time.perf_counter()
    configs, _, streamed = training_sets(st, "e", args.n, args.chains, args.n * args.chains, 0,
                                         stream=args.worker == "stream")
    t_load = time.perf_counter() - t0
    flow = make_flow("u1", (args.L, args.L), kind="plaquette")
    conf = TrainConfig(epochs=args.iters, batch_size=args.batch, optimizer="lbfgs")
    t0 = time.perf_counter()
    res = train(flow, base, target, configs, conf)
    t_train = time.perf_counter() - t0
    print(json.dumps({"mode": args.worker, "streamed": streamed, "load_s": t_load, "train_s": t_train,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "params": np.asarray(res.params).ravel().tolist(), "ess": res.history[-1]["ess"],
                      "iterations": len(res.history) - 1}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--L", type=int, default=128)
    ap.add_argument("--n", type=int, default=512, help="configurations per chain")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3, help="L-BFGS iterations")
    ap.add_argument("--batch", type=int, default=64, help="micro-batch of the loss and gradient")
    ap.add_argument("--worker", choices=("memory", "stream"), help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    size = args.chains * args.n * args.L * args.L * 2 * 8
    print(f"{cpu_model()}, {os.cpu_count()} cores; 2D U(1) {args.L}x{args.L}, {args.chains} x {args.n} configurations "
          f"({size / 2**20:.0f} MiB of links), L-BFGS {args.iters} iterations, micro-batch {args.batch}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.zarr")
        print(f"store written in {make_store(path, args.L, args.n, args.chains):.1f} s", flush=True)
        rows = {}
        for mode in ("memory", "stream"):
            cmd = [sys.executable, __file__, "--worker", mode, "--store", path, "--L", str(args.L), "--n", str(args.n),
                   "--chains", str(args.chains), "--iters", str(args.iters), "--batch", str(args.batch)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows[mode] = json.loads(out.strip().splitlines()[-1])
    print("| training set | load s | training s | peak memory MiB | iterations | weight ESS |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode, r in rows.items():
        print(f"| {'in memory' if mode == 'memory' else 'read from the store batch by batch'} | {r['load_s']:.2f} | "
              f"{r['train_s']:.1f} | {r['peak_rss_mib']:.0f} | {r['iterations']} | {r['ess']:.3f} |")
    m, s = rows["memory"], rows["stream"]
    same = m["params"] == s["params"]
    print(f"streamed / in memory: training time {s['train_s'] / m['train_s']:.2f}x, peak memory "
          f"{s['peak_rss_mib'] / m['peak_rss_mib']:.2f}x; parameters identical: {same}")


if __name__ == "__main__":
    main()
