"""One pass or two: the cost of the tangent estimator's per-configuration terms when observables sit behind solves.

    python benchmarks/tangent_passes.py                 # all three cases, 32 configurations each
    python benchmarks/tangent_passes.py --cases su3-fh --n 16

One pass (:func:`corrflow.tangent.compute_terms`, the baseline): ``v_k·∇O`` for every basis field ``k`` -- for the pion
correlator one adjoint solve per time slice and spin-colour column (reverse mode), or one tangent solve per basis
field.  Two passes (:func:`corrflow.tangent.field_terms`, the cross-fitted ``Var[R_v]`` fit,
:func:`corrflow.tangent.contracted_derivatives`): the field's terms alone, then ``v·∇O`` along each configuration's
fitted field in one forward-mode pass (one tangent solve per column).  Same configurations, same keys, timed in the
same run (steady state: every program compiled on a first batch, best of ``--repeat``); the estimates of both agree to
the solver's rounding (printed).

Cases (the analyses' defaults where they use the tangent estimator):

* ``su3-fh`` -- quenched SU(3) 8x4^3, beta = 5.8, valence m = 0.5, one source, d/dlam of ``pion@0..7`` with the
  Feynman–Hellmann analysis's field (held-out anisotropic smoothing, 12 basis fields);
* ``schwinger-fh`` -- Schwinger model 16x4, beta = 2, m = 0.1, two sources, d/dlam of ``pion@0..15`` (plaquette-space
  field with the sea quarks' determinant in ``v·∇S``);
* ``schwinger-md`` -- Schwinger model 8x8, beta = 2, m = 0.2, d/dm of plaquette, condensate and ``pion@0..7`` (the
  mass-dependence analysis's ``--tangent``);
* ``qcd-fh`` -- N_f = 2 QCD 4^4 (``su3-wilson``, beta = 5.6, m = 0.3, pseudofermion HMC), d/dlam of plaquette,
  ``wilson_2x2``, ``pion@1``, ``pion@2`` with the anisotropic held-out smoothing field (``auto``) and stochastic traces
  (the defaults: 2 Z2 vectors, even-odd dilution) -- the dE_pi/dlam measurement of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._machine import cpu_model  # noqa: E402
from corrflow import HMCConfig, make_theory  # noqa: E402
from corrflow import tangent as tg  # noqa: E402
from corrflow.generate import generate  # noqa: E402
from corrflow.heatbath import HeatbathConfig  # noqa: E402
from corrflow.pipeline import exact_theory  # noqa: E402

FIXED = HMCConfig(0.2, 5, "omelyan", jitter=0.0)  # fixed trajectory lengths, as in the recorded figures

CASES = ("su3-fh", "schwinger-fh", "schwinger-md", "qcd-fh")


def case(name: str, n: int):
    """(theory, configs (1, n, ...), param, observables, field, keywords of the terms, batch)."""
    key = jax.random.PRNGKey(7)
    if name == "su3-fh":
        th = make_theory("su3", (8, 4, 4, 4), beta=5.8)
        out = generate(key, th, HeatbathConfig(1, 4), n_chains=1, n_traj=n, n_therm=20, keep_configs=True,
                       block_size=n)
        names = tuple(f"pion@{t}" for t in range(8))
        return (th, np.asarray(out["configs"]), "lam", names, tg.make_field("auto", th, param="lam", observables=names),
                {"valence_mass": 0.5, "pion_sources": 1}, 16)
    if name == "qcd-fh":
        th = make_theory("su3-wilson", (4, 4, 4, 4), beta=5.6, mass=0.3, det="pseudofermion")
        out = generate(key, th, FIXED, n_chains=1, n_traj=n, n_therm=20, keep_configs=True, block_size=n)
        names = ("plaquette", "wilson_2x2", "pion@1", "pion@2")
        return (th, np.asarray(out["configs"]), "lam", names, tg.make_field("auto", th, param="lam", observables=names),
                {}, 4)
    if name == "schwinger-fh":
        th = exact_theory(make_theory("schwinger", (16, 4), beta=2.0, mass=0.1))
        names = tuple(f"pion@{t}" for t in range(16))
        kw = {"pion_sources": 2}
        param = "lam"
    else:
        th = exact_theory(make_theory("schwinger", (8, 8), beta=2.0, mass=0.2))
        names = ("plaquette", "condensate") + tuple(f"pion@{t}" for t in range(8))
        kw = {}
        param = "mass"
    out = generate(key, th, FIXED, n_chains=1, n_traj=n, n_therm=50, keep_configs=True, block_size=n)
    return (th, np.asarray(out["configs"]), param, names, tg.make_field("auto", th, param=param, observables=names),
            kw, 16)


def best_of(fn, repeat: int) -> tuple[float, object]:
    fn()  # compile
    best, res = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t0)
    return best, res


def run(name: str, n: int, repeat: int) -> dict:
    th, configs, param, names, fld, kw, batch = case(name, n)
    key = jax.random.PRNGKey(3)
    n_cfg = configs.shape[0] * configs.shape[1]
    t_one, terms = best_of(lambda: tg.compute_terms(fld, th, param, names, configs, key, batch=batch, **kw), repeat)
    fkw = {k: v for k, v in kw.items() if k != "pion_sources"}
    t_field, (ds, a) = best_of(lambda: tg.field_terms(fld, th, param, configs, key, batch=batch, **fkw), repeat)
    # coefficients of a minimum-norm least-squares fit of Var[R_v] on these configurations (timing only, any number of
    # configurations; the comparison below uses the same coefficients in both evaluations)
    af, dsf = a.reshape(-1, a.shape[-1]), ds.reshape(-1)
    c = np.linalg.lstsq(af - af.mean(0), -(dsf - dsf.mean()), rcond=None)[0]
    coef = np.broadcast_to(c, a.shape).copy()
    t_two, (o, dvo, do) = best_of(lambda: tg.contracted_derivatives(fld, th, param, names, configs, key, coef,
                                                                    batch=batch, **kw), repeat)
    ref = np.einsum("...ik,...k->...i", terms.b, coef)
    rel = float(np.abs(dvo - ref).max() / max(np.abs(ref).max(), 1e-300))
    return {"case": name, "K": fld.n_coef, "n_obs": len(names), "configs": n_cfg, "one_pass_s": t_one / n_cfg,
            "field_pass_s": t_field / n_cfg, "contracted_pass_s": t_two / n_cfg,
            "speedup": t_one / (t_field + t_two), "max_rel_diff": rel}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--n", type=int, default=32, help="configurations per case (a multiple of the batch, 16)")
    ap.add_argument("--repeat", type=int, default=2, help="timed repetitions (best of)")
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", True)
    print(f"machine: {cpu_model()}, jax {jax.__version__}, {os.cpu_count()} cores")
    print(f"{'case':14s} {'K':>3s} {'n_obs':>5s} {'one pass s/cfg':>15s} {'field s/cfg':>12s} "
          f"{'contracted s/cfg':>17s} {'one / two':>10s} {'max rel diff':>13s}")
    for name in args.cases.split(","):
        r = run(name.strip(), args.n, args.repeat)
        print(f"{r['case']:14s} {r['K']:3d} {r['n_obs']:5d} {r['one_pass_s']:15.4f} {r['field_pass_s']:12.4f} "
              f"{r['contracted_pass_s']:17.4f} {r['speedup']:9.2f}x {r['max_rel_diff']:13.2e}", flush=True)


if __name__ == "__main__":
    main()
