"""Tangent-flow derivative estimators (issue 15): variance reduction against the connected estimator in 2D U(1).

    python benchmarks/tangent.py                       # beta = 2, L = 16, 32, 64, 8 chains x 1000 configurations
    python benchmarks/tangent.py --L 16 --n 500        # quicker
    python benchmarks/tangent.py --fields preconditioned   # the general non-local field (diluted probes)
    python benchmarks/tangent.py --fields topology     # the plaquette field that keeps Q, with dchi_top/dbeta
    python benchmarks/tangent.py --su3                 # also 4D SU(3) 4^4, beta = 5.8, d<P>/dbeta (gradient field)
    python benchmarks/tangent.py --L '' --su3 --su3-fields gradient,preconditioned --su3-beta 5.8
    python benchmarks/tangent.py --L '' --su3 --su3-L 6 --su3-beta 6.0 --su3-n 50   # 6^4 (5x the cost per config)
    python benchmarks/tangent.py --L '' --schwinger    # Schwinger model 8x8, beta 2, m 0.2: d/dm and d/dbeta
    python benchmarks/tangent.py --L '' --su3 --su3-param lam --su3-fields anisotropic,gradient --su3-n 100  # d/dlam

For every lattice: an HMC ensemble (hot start, Omelyan, trajectory length 1, thermalised), then for the plaquette-
space field (exact, 2D U(1) only) and the general gradient field (plaquette, rectangle and Wilson-flowed plaquette
features, Hutchinson divergence with 4 probes) -- and with ``--fields ...,preconditioned`` the preconditioned field
(gradients of Σ_P cos^n φ_P, n <= 6, times the inverse Laplacian: the general form of the plaquette-space field, one
Hutchinson probe diluted by period 4): d<P>/dbeta and d<W_2x2>/dbeta with the tangent and the connected
estimator from the same configurations (cross-fitted coefficients, 2 folds), the variance reduction
(error_connected / error_tangent)^2 (autocorrelations included), the pull of the tangent value against the exact
torus derivative, and the times of the per-configuration terms and of the least-squares fit.

``--schwinger``: N_f = 2 Wilson fermions (the mass-dependence analysis defaults: 8x8, beta = 2, m = 0.2), exact-
determinant HMC; d/dm of the plaquette, the condensate, the pion correlator at t = 1..4 and its cosh effective
masses, and d<P>/dbeta, with exact traces and with stochastic traces (4 Z2 vectors per configuration).

Every row also gives the per-observable fit (``Var[T_v]`` minimised for each observable, the field's terms as
control variates: ``tangent.observable_cross_fit``) and, for mass derivatives, the share of the connected term's
variance that comes from the explicit (valence) derivative ``∂_m O`` -- which no field acting on the sea can remove.

Costs per configuration in the cost ledger's definition (steady state, compilation excluded): the generation (HMC
or heat bath, per configuration as used) and the terms plus fit; each reduction is also given **at equal cost**,
``reduction * g / (g + t)`` -- the factor against spending the terms' seconds on more configurations, as ``corrflow
derivative`` prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._machine import cpu_model  # noqa: E402
from corrflow import HMCConfig, exact, make_theory  # noqa: E402
from corrflow import tangent as tg  # noqa: E402
from corrflow.generate import generate  # noqa: E402
from corrflow.pipeline.ledger import Clock  # noqa: E402

GRADIENT_FEATURES = ("plaquette", "rectangle", "flowed@0.4", "flowed@1.2", "flowed@3.2")


def exact_u1(beta: float, shape: tuple[int, int]) -> dict[str, float]:
    h = 1e-4
    dw = (exact.u1_wilson_loop(beta + h, shape, 2, 2) - exact.u1_wilson_loop(beta - h, shape, 2, 2)) / (2 * h)
    h = 1e-3
    dchi = (exact.u1_topological_susceptibility(beta + h, shape)
            - exact.u1_topological_susceptibility(beta - h, shape)) / (2 * h)
    return {"plaquette": exact.u1_plaquette_derivative(beta, shape), "wilson_2x2": dw, "chi_top": dchi}


def timed_generate(key, theory, config, *, n_chains: int, n_traj: int, n_therm: int, thin: int = 1,
                   block_size: int = 100) -> tuple[dict, float]:
    """:func:`corrflow.generate` and its generation cost per stored configuration (seconds, all chains counted), in
    the cost ledger's definition (steady state of the production blocks, compilation excluded)."""
    clock = Clock()

    def tick(done: int, total: int, block) -> None:  # noqa: ANN001
        if done >= n_therm:  # from the end of the thermalisation (the production program's compilation subtracted)
            clock.tick(done)

    out = generate(key, theory, config, n_chains=n_chains, n_traj=n_traj, n_therm=n_therm, thin=thin,
                   keep_configs=True, block_size=block_size, progress=tick)
    return out, clock.cost(n_traj * thin) / (n_chains * n_traj)


def ensemble(theory, n_chains: int, n: int, therm: int, thin: int, eps: float, seed: int) -> tuple[np.ndarray, float]:
    """HMC configurations ``(n_chains, n, ...)`` and their generation cost per configuration
    (:func:`timed_generate`)."""
    t0 = time.perf_counter()
    steps = max(1, int(round(1.0 / eps)))
    cfg = HMCConfig(eps, steps, "omelyan", jitter=0.0)  # fixed lengths, as in the recorded figures
    out, per = timed_generate(jax.random.PRNGKey(seed), theory, cfg, n_chains=n_chains,
                              n_traj=n, n_therm=therm, thin=thin, block_size=min(n, 250))
    print(f"  HMC: {n_chains} x {n} configurations (thin {thin}, eps {eps}), acceptance "
          f"{out['accepted'].mean():.3f}, {time.perf_counter() - t0:.1f} s ({per * 1e3:.2f} ms per configuration, "
          f"steady state)", flush=True)
    return out["configs"], per


def run_field(theory, configs, field, names, ex, label: str, batch: int, param: str = "beta",
              traces=None, generation_s: float = float("nan")) -> dict:
    """Terms, both fits and the estimates of one field; ``generation_s``: the generation cost per configuration (as
    used), for the reduction at equal cost ``reduction * g / (g + t)`` (``t``: the terms and fit per configuration,
    steady state), the figure ``corrflow derivative`` prints."""
    t0 = time.perf_counter()
    clock = Clock()
    terms = tg.compute_terms(field, theory, param, names, configs, jax.random.PRNGKey(1), batch=batch, traces=traces,
                             progress=lambda done, n: clock.tick(done))
    t_terms = time.perf_counter() - t0
    n_cfg = int(configs.shape[0] * configs.shape[1])
    terms_per = clock.cost(n_cfg) / n_cfg
    t0 = time.perf_counter()
    fits, coef = tg.cross_fit(terms.a, terms.ds, n_folds=2)
    t_fit = time.perf_counter() - t0
    res = tg.estimate(terms, coef, fits, field.describe())
    ofits, ocoef = tg.observable_cross_fit(terms, n_folds=2)  # per-observable Var[T_v] fit, same terms
    res_obs = tg.estimate(terms, ocoef, ofits, field.describe())
    explicit = terms.explicit()
    per_cfg = terms_per + t_fit / n_cfg
    row = {"field": label, "terms_s": t_terms, "fit_s": t_fit, "var_R_reduction": [f.reduction for f in fits],
           "param": param, "traces": terms.traces, "generation_per_config_s": generation_s,
           "terms_per_config_s": per_cfg}
    names = tuple(res.estimates)  # with the derived m_eff@t
    for o in names:
        tan, con = res.estimates[o]["tangent"], res.estimates[o]["connected"]
        equal_cost = res.reduction[o] * generation_s / (generation_s + per_cfg)
        row[o] = {"tangent": str(tan), "connected": str(con), "reduction": res.reduction[o],
                  "reduction_at_equal_cost": equal_cost,
                  "tangent_per_observable": str(res_obs.estimates[o]["tangent"]),
                  "reduction_per_observable": res_obs.reduction[o],
                  "tau_tangent": tan.tau_int, "tau_connected": con.tau_int,
                  "pull_tangent": tan.pull(ex[o]) if ex else None, "pull_connected": con.pull(ex[o]) if ex else None}
        if o in terms.names:  # share of the connected term's variance from the explicit (valence) derivative
            i = terms.names.index(o)
            t0 = tg.control_variates(terms, i)[1]  # the connected estimator's per-configuration term
            row[o]["explicit_share"] = float(explicit[..., i].var() / t0.var()) if t0.var() > 0 else 0.0
    print(f"  {label:9s} terms {t_terms:6.1f} s  fit {t_fit:.3f} s  Var[R] reduced "
          + "/".join(f"{x:.0f}x" for x in row["var_R_reduction"])
          + f"  per configuration: generation {generation_s * 1e3:.3g} ms, terms + fit {per_cfg * 1e3:.3g} ms "
          "(steady state)", flush=True)
    for o in names:
        r = row[o]
        pulls = f"  pull vs exact {r['pull_tangent']:+.2f} (connected {r['pull_connected']:+.2f})" if ex else ""
        share = f"  explicit share {r['explicit_share']:.2f}" if "explicit_share" in r else ""
        print(f"    d<{o}>/d{param}  tangent {r['tangent']:>14s} (tau {r['tau_tangent']:.2f})  connected "
              f"{r['connected']:>14s}  reduction {r['reduction']:8.1f}x (per-observable fit "
              f"{r['reduction_per_observable']:.1f}x; at equal cost {r['reduction_at_equal_cost']:.2f}x){share}{pulls}",
              flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--L", default="16,32,64", help="lattice sizes (2D U(1))")
    ap.add_argument("--beta", type=float, default=2.0)
    ap.add_argument("--n", type=int, default=1000, help="configurations per chain")
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--thin", type=int, default=2)
    ap.add_argument("--fields", default="plaquette,gradient", help="2D U(1): any of plaquette, gradient, "
                    "preconditioned, smoothing, topology (the plaquette field that keeps Q, with chi_top)")
    ap.add_argument("--features", default=",".join(GRADIENT_FEATURES))
    ap.add_argument("--flow-eps", type=float, default=0.2)
    ap.add_argument("--gradient-max", type=int, default=2000,
                    help="at most this many configurations (evenly thinned) for the gradient and preconditioned fields")
    ap.add_argument("--su3", action="store_true", help="also 4D SU(3) (--su3-L, default 4^4) at beta = 5.8 (gradient field)")
    ap.add_argument("--su3-n", type=int, default=200, help="SU(3): configurations per chain (4 chains)")
    ap.add_argument("--su3-beta", type=float, default=5.8, help="SU(3): beta")
    ap.add_argument("--su3-L", type=int, default=4, help="SU(3): lattice size L^4")
    ap.add_argument("--su3-fields", default="gradient", help="SU(3): any of gradient, preconditioned, smoothing, "
                    "heldout (smoothing with exact divergence), anisotropic (heldout with the anisotropic flows of "
                    "the lam default), auto (corrflow derivative's default for --su3-param)")
    ap.add_argument("--su3-param", default="beta", help="SU(3): beta or lam (Feynman-Hellmann source at lam = 0; "
                    "the gradient field then has the plane-split default features)")
    ap.add_argument("--probe-period", type=int, default=4,
                    help="preconditioned field: dilution period of the Hutchinson probe (2D; SU(3) uses 1 probe x 2)")
    ap.add_argument("--schwinger", action="store_true", help="also the Schwinger model 8x8 (mass derivatives)")
    ap.add_argument("--schwinger-n", type=int, default=300, help="Schwinger: configurations per chain (4 chains)")
    ap.add_argument("--json", default="", help="write all figures to this JSON file")
    args = ap.parse_args()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, jax {jax.__version__}")
    rows = []
    names = ("plaquette", "wilson_2x2")
    for L in [int(x) for x in args.L.split(",") if x.strip()]:
        shape = (L, L)
        th = make_theory("u1", shape, beta=args.beta)
        print(f"2D U(1) {L}x{L}, beta {args.beta}:", flush=True)
        thin = 1 if L >= 64 else args.thin  # HMC cost: L = 64 needs eps 0.1 (10 steps); tau_int stays ~1
        configs, gen = ensemble(th, args.chains, args.n, 200, thin, 0.1 if L >= 64 else 0.2, seed=L)
        ex = exact_u1(args.beta, shape)
        print(f"  exact: d<P>/dbeta = {ex['plaquette']:.6f}, d<W_2x2>/dbeta = {ex['wilson_2x2']:.6f}")
        for kind in args.fields.split(","):
            sub = configs
            obs_names = names
            if kind == "plaquette":
                field = tg.PlaquetteField(6)
            elif kind == "topology":  # the plaquette field that keeps the geometric charge, and dchi_top/dbeta
                obs_names = names + ("chi_top",)
                field = tg.make_field("plaquette", th, param="beta", observables=obs_names)
            else:
                if kind == "smoothing":
                    field = tg.SmoothingField(times=(0.4, 1.2, 3.2), flow_eps=args.flow_eps)
                elif kind == "preconditioned":
                    field = tg.PreconditionedField(features=("plaquette",) + tuple(f"plaquette^{n}" for n in range(2, 7)),
                                                   n_probes=1, probe_period=args.probe_period)
                else:
                    field = tg.GradientField(features=tuple(args.features.split(",")), flow_eps=args.flow_eps,
                                             n_probes=4)
                every = -(-configs.shape[0] * configs.shape[1] // args.gradient_max)
                sub = configs[:, ::every]  # these fields cost ~0.01 s per configuration per 256 sites
                if every > 1:
                    print(f"  {kind} field on every {every}th configuration ({sub.shape[0]} x {sub.shape[1]})")
            row = run_field(th, sub, field, obs_names, ex, kind, batch=64 if L >= 64 else 128,
                            generation_s=gen * configs.shape[1] / sub.shape[1])  # per configuration as used
            row.update(L=L, n=int(sub.shape[0] * sub.shape[1]))
            rows.append(row)
    if args.su3:
        th = make_theory("su3", (args.su3_L,) * 4, beta=args.su3_beta)
        print(f"4D SU(3) {args.su3_L}^4, beta {args.su3_beta}:", flush=True)
        from corrflow.heatbath import HeatbathConfig

        t0 = time.perf_counter()
        out, gen = timed_generate(jax.random.PRNGKey(58), th, HeatbathConfig(1, 4), n_chains=4, n_traj=args.su3_n,
                                  n_therm=50, block_size=min(args.su3_n, 100))
        configs = out["configs"]
        print(f"  heat bath (1 HB + 4 OR per update): 4 x {args.su3_n}, {time.perf_counter() - t0:.1f} s "
              f"({gen * 1e3:.2f} ms per configuration, steady state)", flush=True)
        param = args.su3_param
        for kind in args.su3_fields.split(","):
            if kind == "auto":
                field = tg.make_field("auto", th, param=param)
            elif kind == "anisotropic":
                field = tg.SmoothingField(times=(0.1, 0.2, 0.4, 0.8), flow_eps=0.05, held_out=True, split=True,
                                          anisotropy=0.5)
            elif kind == "gradient" and param != "beta":
                field = tg.make_field("gradient", th, param=param)  # temporal / spatial split features
            elif kind == "smoothing":
                field = tg.SmoothingField(times=(0.1, 0.2, 0.4, 0.8), flow_eps=0.05)
            elif kind == "heldout":  # exact divergence: the tangent of the flows' smoothing layers
                field = tg.SmoothingField(times=(0.1, 0.2, 0.4, 0.8), flow_eps=0.05, held_out=True)
            elif kind == "preconditioned":
                field = tg.PreconditionedField(features=("plaquette", "plaquette^2", "plaquette^3", "rectangle"),
                                               n_probes=1, probe_period=2)
            else:
                field = tg.GradientField(features=("plaquette", "rectangle", "flowed@0.1", "flowed@0.2", "flowed@0.4"),
                                         flow_eps=0.05, n_probes=4)
            obs = ("plaquette",) if param == "beta" else ("plaquette", "wilson_2x2")
            row = run_field(th, configs, field, obs, None, kind, batch=16, param=param, generation_s=gen)
            row.update(L=f"su3-{args.su3_L}^4", beta=args.su3_beta, n=int(configs.shape[0] * configs.shape[1]))
            rows.append(row)
    if args.schwinger:
        th = make_theory("schwinger", (8, 8), beta=2.0, mass=0.2)
        print("Schwinger model 8x8, beta 2, m 0.2 (N_f = 2 Wilson, exact-determinant HMC):", flush=True)
        configs, gen = ensemble(th, 4, args.schwinger_n, 100, 1, 0.2, seed=82)
        fnames = ("plaquette", "condensate", "pion@1", "pion@2", "pion@3", "pion@4")
        for label, field, param, names, traces in (
                ("plaquette", tg.PlaquetteField(6), "mass", fnames, tg.FermionTraces("exact")),
                ("plaquette", tg.PlaquetteField(6), "mass", fnames, tg.FermionTraces("stochastic", 4)),
                ("gradient", tg.GradientField(features=("plaquette", "rectangle", "flowed@0.2", "flowed@0.6"),
                                              flow_eps=0.1), "mass", ("plaquette", "pion@1", "pion@2"),
                 tg.FermionTraces("exact")),
                ("plaquette", tg.PlaquetteField(6), "beta", ("plaquette", "wilson_2x2"), tg.FermionTraces("exact")),
                ("plaquette", tg.PlaquetteField(6), "beta", ("plaquette", "wilson_2x2"),
                 tg.FermionTraces("stochastic", 4))):
            print(f"  {label} field, d/d{param}, traces {traces.method}", flush=True)
            row = run_field(th, configs, field, names, None, label, batch=100, param=param, traces=traces,
                            generation_s=gen)
            row.update(L="schwinger-8x8", n=int(configs.shape[0] * configs.shape[1]))
            rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=float)


if __name__ == "__main__":
    main()
