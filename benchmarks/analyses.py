"""Cost-adjusted variance reduction of the three analyses (continuum limit, mass dependence, Feynman–Hellmann).

    python benchmarks/analyses.py                  # all three with their default settings (~15 min on 2 CPU cores)
    python benchmarks/analyses.py --only mass_dependence --set n_configs=2000 --set dm=0.01

Each analysis runs through its own ``run(settings)`` into a scratch store (``--store-dir``, default
``data/bench_analyses``; reruns reuse ensembles and flows) and reports, for every quantity it estimates, the
variance reduction of the flowed estimator against independent ensembles and against direct reweighting at
equal numbers of configurations, and the *cost-adjusted* factor

    (var_other * cost_other) / (var_flow * cost_flow),

where the flow pays base HMC + training + flow application (with exact determinant weights), independent
ensembles pay HMC at every parameter value, and direct reweighting pays base HMC + weights (costs: wall seconds
measured in the same run).  Settings are printed with the results.  Goal (issue 5): >= 10x cost-adjusted for the
mass derivative of the pion mass and for the Feynman–Hellmann matrix element.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from _machine import cpu_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ANALYSES = {"continuum_limit": "ContinuumSettings", "mass_dependence": "MassSettings",
            "feynman_hellmann": "FHSettings"}


def _settings_class(mod: Any, preferred: str) -> Any:
    if hasattr(mod, preferred):
        return getattr(mod, preferred)
    cands = [v for k, v in vars(mod).items() if k.endswith("Settings") and dataclasses.is_dataclass(v)]
    if len(cands) != 1:
        raise SystemExit(f"cannot find the settings dataclass of {mod.__name__}")
    return cands[0]


def _coerce(cls: Any, key: str, value: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields:
        raise SystemExit(f"unknown setting {key!r}; known: {', '.join(fields)}")
    default = getattr(cls(), key)
    if isinstance(default, bool):
        return value.lower() in ("1", "true", "yes")
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    if isinstance(default, tuple):
        return tuple(type(default[0])(x) if default else x for x in value.split(","))
    return value


def run_one(name: str, store_dir: Path, overrides: dict[str, str]) -> None:
    mod = importlib.import_module(f"analysis.{name}")
    cls = _settings_class(mod, ANALYSES[name])
    kw = {k: _coerce(cls, k, v) for k, v in overrides.items()}
    names = {f.name for f in dataclasses.fields(cls)}
    if "store" in names:
        kw.setdefault("store", str(store_dir / f"{name}.zarr"))
    if "out" in names:
        kw.setdefault("out", str(store_dir / f"{name}_report"))
    settings = dataclasses.replace(cls(), **kw)
    t0 = time.perf_counter()
    rec = mod.run(settings, console=None, write=True)
    wall = time.perf_counter() - t0
    print(f"\n## {rec.get('title', name)}  ({wall:.0f} s wall)")
    print("settings: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(settings).items()
                                   if k not in ("store", "out", "flow_dir")))
    costs = rec.get("costs") or {}
    if costs:
        print("costs [s]: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, (int, float)) else f"{k} {v}"
                                        for k, v in costs.items()))
    vr = rec.get("variance_reduction") or {}
    keys = ("vs_independent", "cost_adjusted_vs_independent", "vs_direct", "cost_adjusted_vs_direct")
    print(f"{'quantity':28s} " + " ".join(f"{k:>30s}" for k in keys))
    for q, d in vr.items():
        cells = []
        for k in keys:
            v = d.get(k) if isinstance(d, dict) else None
            cells.append(f"{v:30.2f}" if isinstance(v, (int, float)) else f"{'-':>30s}")
        print(f"{q:28s} " + " ".join(cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=sorted(ANALYSES), help="run only this analysis (repeat)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    ap.add_argument("--store-dir", default="data/bench_analyses", help="scratch directory for stores and reports")
    args = ap.parse_args()
    overrides = dict(kv.split("=", 1) for kv in args.set)
    import jax

    import corrflow as cf

    print(f"# corrflow {cf.__version__} analyses benchmark — jax {jax.__version__}, {jax.default_backend()}, "
          f"{cpu_model()}, {os.cpu_count()} cores")
    store_dir = Path(args.store_dir)
    store_dir.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(ANALYSES):
        run_one(name, store_dir, overrides if args.only and len(args.only) == 1 else {})


if __name__ == "__main__":
    main()
