"""Cost-adjusted variance reduction of the analyses (continuum limit, mass dependence, Feynman–Hellmann).

    python benchmarks/analyses.py                  # the three 2D analyses with their defaults (~15 min on 2 cores)
    python benchmarks/analyses.py --only mass-dependence --set n_configs=2000 --set dm=0.01
    python benchmarks/analyses.py --only continuum-limit-su3        # 4D SU(3) (long on a CPU)

Each analysis (the ``corrflow.analyses`` entry points, as ``corrflow analyse NAME``) runs through
:func:`corrflow.pipeline.run_analysis` into a scratch store (``--store-dir``, default ``data/bench_analyses``;
reruns reuse ensembles and flows) and reports, for every quantity it estimates, the variance reduction of the
flowed estimator against independent ensembles and against direct reweighting at equal numbers of configurations,
and the *cost-adjusted* factor

    (var_other * cost_other) / (var_flow * cost_flow),

with the path costs of :meth:`corrflow.pipeline.Family.path_costs` under the pipeline's one cost definition
(:data:`corrflow.pipeline.COST_DEFINITION`: steady-state seconds, JIT compilation excluded, measurements included).
Settings are printed with the results.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

from _machine import cpu_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT = ("continuum-limit", "mass-dependence", "feynman-hellmann")


def analyses() -> dict:
    return {ep.name: ep for ep in entry_points(group="corrflow.analyses")}


def run_one(name: str, store_dir: Path, overrides: dict[str, str]) -> None:
    from corrflow.pipeline import COST_DEFINITION, run_analysis

    analysis = analyses()[name].load()
    stem = name.replace("-", "_")
    settings = analysis.settings.make(**{"store": str(store_dir / f"{stem}.zarr"), "out": str(store_dir / f"{stem}_report"),
                                         **overrides})
    t0 = time.perf_counter()
    rec = run_analysis(analysis, settings, console=None, write=True)
    wall = time.perf_counter() - t0
    print(f"\n## {rec.get('title', name)}  ({wall:.0f} s wall)")
    flat = {k: settings.get(k) for k in analysis.settings.flat_fields() if k not in ("store", "out", "flow_dir")}
    print("settings: " + ", ".join(f"{k}={v}" for k, v in flat.items()))
    print(f"cost definition: {COST_DEFINITION}")
    costs = rec.get("costs") or {}
    if costs:
        print("costs [s]: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, (int, float)) else f"{k} {v}"
                                        for k, v in costs.items() if k != "definition"))
    vr = rec.get("variance_reduction") or {}  # {"definition": ..., quantity: {estimator: {"vs_<reference>": ...}}}
    refs = {"independent": "indep.", "direct": "direct", "connected": "conn."}
    print(f"{'quantity':24s} {'estimator':10s}"
          + "".join(f" {'VR vs ' + a:>12s} {'cost-adj.':>9s}" for a in refs.values()))
    for q, by_estimator in vr.items():
        for e, d in (by_estimator.items() if isinstance(by_estimator, dict) else ()):
            cells = [(d.get(f"{c}vs_{r}"), w) for r in refs for c, w in (("", 12), ("cost_adjusted_", 9))]
            print(f"{q:24s} {e:10s}" + "".join(f" {v:{w}.2f}" if isinstance(v, (int, float)) else f" {'-':>{w}s}"
                                               for v, w in cells))


def main() -> None:
    names = sorted(analyses())
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=names, help="run only this analysis (repeat)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting (flat name, e.g. n_configs=2000; with a single --only)")
    ap.add_argument("--store-dir", default="data/bench_analyses", help="scratch directory for stores and reports")
    args = ap.parse_args()
    overrides = dict(kv.split("=", 1) for kv in args.set)
    if overrides and not (args.only and len(args.only) == 1):
        ap.error("--set needs exactly one --only (settings differ between analyses)")
    import jax

    import corrflow as cf

    print(f"# corrflow {cf.__version__} analyses benchmark — jax {jax.__version__}, {jax.default_backend()}, "
          f"{cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    store_dir = Path(args.store_dir)
    store_dir.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(DEFAULT):
        run_one(name, store_dir, overrides)


if __name__ == "__main__":
    main()
