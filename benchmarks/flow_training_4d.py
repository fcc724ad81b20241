"""Flow training in 4D SU(3): weight ESS of beta -> beta + dbeta flows against direct reweighting (the baseline,
measured in the same run), per optimiser and coefficient model, with training cost.

    python benchmarks/flow_training_4d.py                      # 8^4, beta 5.7 -> 5.75, 64 train + 64 held-out
    python benchmarks/flow_training_4d.py --L 4 --dbeta 0.1    # small and fast
    python benchmarks/flow_training_4d.py --n 128 --dbeta 0.05,0.1
    python benchmarks/flow_training_4d.py --L 4 --n 128 --held 256 --valid 64 --degrees 0 --nets 2:1 --no-adam

Base configurations come from heat bath + over-relaxation (1 + 3 sweeps per update, 8 chains, 60 thermalisation
updates, 3 updates apart).  Every flow has two sweeps of plaquette layers.  Rows:

* ``direct``: identity map (direct reweighting);
* ``adam lr=...``: constant coefficients, Adam with the settings the 4D analyses used before L-BFGS (mini-batch 16);
* ``lbfgs deg=p``: full-batch L-BFGS, coefficients constant (``p = 0``) or degree-``p`` polynomials of the staple
  norm;
* ``lbfgs smear=s``: constant coefficients for the plaquette staples and for staples built from transverse links
  after ``s`` stout steps (``make_flow(smear=s)``);
* ``linear smooth=t1/t2/..``: constant coefficients for the plaquette staples and held-out smoothing terms at these
  Wilson-flow times (``make_flow(smoothing=...)``, :mod:`corrflow.flows.smoothing`), trained by Gauss–Newton on
  var(log w) with tied parameters (``optimizer="linear"``, :mod:`corrflow.flows.linear`; ``lbfgs smooth=...`` with
  ``--smoothing-optimizers lbfgs``);
* ``lbfgs net=w:D``: full-batch L-BFGS, one coefficient per individual staple and site from a periodic CNN of frozen
  gauge-invariant features (``make_flow(net_width=w, net_depth=D)``, :mod:`corrflow.flows.network`);
* ``chain K smooth=..``: with ``--chain K`` (K >= 2), the same smoothing flow as a chain of ``K`` one-sweep flows
  ``beta -> beta + dbeta/K -> ... -> beta + dbeta``, link ``k`` fitted by Gauss--Newton (``--linear-iters``) on the
  previous links' images of the training configurations to the variance of the *composite* log-weights (an offset
  per configuration).  It tests whether a large shift leaves the regime in which the flow's log-weights are linear in
  the shift: there the chain would gain over one flow.

With ``--valid m > 0`` another ``m`` base configurations (neither trained on nor in the held-out set) select the
epoch with the smallest var(log w) and stop training after ``--patience`` epochs without improvement
(``train(held_out=...)``); the held-out figures stay unbiased by that selection.  ``var/direct`` is the held-out
var(log w) over direct reweighting's (the issue-14 target is <= 1/4).  The machine load is printed at start and end.

The weight ESS fraction ``(sum w)^2 / (N sum w^2)`` is measured on held-out configurations (not used in training);
``gain`` is ESS / ESS(direct) -- for equal base samples the variance of a reweighted mean scales like 1/ESS.  With
ESS ~ 0.1 a few dozen held-out samples give a noisy ESS, so the table also prints two steadier held-out figures:
``var log w`` and the reverse KL divergence ``KL = log<w> - <log w>`` (>= 0, zero for an exact map; for Gaussian
log-weights ESS ~ exp(-var log w) and KL ~ var/2).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from _machine import cpu_model

import corrflow as cf
from corrflow import heatbath
from corrflow.flows import make_flow
from corrflow.flows.train import TrainConfig, log_weights, train
from corrflow.heatbath import HeatbathConfig
from corrflow.hmc import cold_start
from corrflow.stats import weight_ess_fraction


def base_configs(L: int, beta: float, n: int, seed: int = 0) -> np.ndarray:
    th = cf.make_theory("su3", (L,) * 4, beta=beta)
    n_chains = 8
    key = jax.random.PRNGKey(seed)
    cfg = HeatbathConfig(n_heatbath=1, n_overrelax=3)
    u = cold_start(th, (n_chains,), dtype=jnp.complex128)
    u, _ = heatbath.sample_chains(jax.random.split(key, n_chains), u, th, cfg, 60)
    out = []
    for i in range(-(-n // n_chains)):
        u, _ = heatbath.sample_chains(jax.random.split(jax.random.fold_in(key, 100 + i), n_chains), u, th, cfg, 3)
        out.append(np.asarray(u))
    return np.concatenate(out)[:n]


def logw_of(flow, params, base, target, u: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """The log-weights of ``flow`` from ``base`` to ``target`` on the configurations ``u``, in batches of 16."""
    fn = jax.jit(lambda p, x: log_weights(flow, p, base, target, x)[0])
    return np.concatenate([np.asarray(fn(params, jnp.asarray(u[i:i + 16]))) for i in range(0, len(u), 16)])


def weight_figures(lw: np.ndarray) -> tuple[float, float, float]:
    """``(ESS fraction, var log w, KL)`` of the log-weights ``lw``."""
    m = lw.max()
    kl = float(m + np.log(np.mean(np.exp(lw - m))) - lw.mean())
    return float(weight_ess_fraction(lw[None, :])), float(lw.var(ddof=1)), kl


def held_out(flow, params, base, target, u: np.ndarray) -> tuple[float, float, float]:  # noqa: ANN001
    """``(ESS fraction, var log w, KL)`` of the weights on the configurations ``u``."""
    return weight_figures(logw_of(flow, params, base, target, u))


def _images(flow, params, u: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """``flow.forward(params, u)[0]`` in batches of 16."""
    fn = jax.jit(lambda p, x: flow.forward(p, x)[0])
    return np.concatenate([np.asarray(fn(params, jnp.asarray(u[i:i + 16]))) for i in range(0, len(u), 16)])


def chain_fit(times: tuple[float, ...], base, target, k_links: int, iters: int, train_set: np.ndarray,  # noqa: ANN001
              held: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """A chain of ``k_links`` one-sweep smoothing flows from ``base`` to ``target`` (module docstring): the held-out
    composite log-weights and each link's parameters."""
    from corrflow.flows.linear import linear_step, tie_matrix

    (name, b0), = [(k, v) for k, v in base.params().items() if v != target.params()[k]]
    u_tr, u_ho, off_tr, off_ho, a, links = train_set, held, np.zeros(len(train_set)), np.zeros(len(held)), base, []
    for k in range(k_links):
        b = base.replace(**{name: b0 + (target.params()[name] - b0) * (k + 1) / k_links})
        flow = make_flow("su3", base.shape, n_sweeps=1, smoothing=times)
        p = flow.init_params()
        tie = tie_matrix(flow, a, b)
        for _ in range(iters):  # Gauss-Newton on Var(offset + log w_link)
            p = linear_step(flow, a, b, jnp.asarray(u_tr), p, tie, 16,
                            lambda q: logw_of(flow, q, a, b, u_tr) + off_tr, offset=off_tr).params
        off_tr, off_ho = off_tr + logw_of(flow, p, a, b, u_tr), off_ho + logw_of(flow, p, a, b, u_ho)
        u_tr, u_ho, a = _images(flow, p, u_tr), _images(flow, p, u_ho), b
        links.append(np.asarray(p))
        print(f"#   chain link {k + 1}/{k_links} (to {name} = {b.params()[name]:g}): held-out var log w of the chain "
              f"so far {np.var(off_ho, ddof=1):.3f}", flush=True)
    return off_ho, links


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--L", type=int, default=8)
    ap.add_argument("--beta", type=float, default=5.7)
    ap.add_argument("--dbeta", default="0.05", help="comma-separated shifts")
    ap.add_argument("--n", type=int, default=64, help="training configurations")
    ap.add_argument("--held", type=int, default=192, help="held-out configurations")
    ap.add_argument("--degrees", default="0,1,2")
    ap.add_argument("--iters", type=int, default=15, help="L-BFGS iterations")
    ap.add_argument("--sweeps", type=int, default=2, help="sweeps of layers")
    ap.add_argument("--nets", default="", help="network coefficients to try, e.g. 2:1,4:2 (width:depth)")
    ap.add_argument("--smears", default="", help="smeared transverse staples to try: stout steps, e.g. 1,2")
    ap.add_argument("--smoothing", default="", help="held-out smoothing terms to try: sets of flow times separated "
                    "by commas, times within a set by '/', e.g. 0.1/0.2/0.4/0.8")
    ap.add_argument("--sweeps-smoothing", type=int, default=1, help="sweeps of the flows with smoothing terms")
    ap.add_argument("--smoothing-optimizers", default="linear", help="optimisers for the flows with smoothing terms: "
                    "linear (Gauss-Newton, tied parameters), lbfgs")
    ap.add_argument("--linear-iters", type=int, default=3, help="Gauss-Newton iterations (optimizer linear)")
    ap.add_argument("--valid", type=int, default=0, help="validation configurations for model selection (0: none)")
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--no-adam", action="store_true", help="skip the Adam row")
    ap.add_argument("--chain", type=int, default=0, help="also each --smoothing flow as a chain of this many flows of "
                    "dbeta/K each (K >= 2; module docstring)")
    args = ap.parse_args()
    print(f"# {cpu_model()}, {jax.devices()[0].platform}, jax {jax.__version__}; {args.L}^4 SU(3), beta {args.beta}, "
          f"{args.n} train + {args.held} held-out + {args.valid} validation configurations (complex128), "
          f"{args.sweeps} sweeps")
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    t = time.perf_counter()
    confs = base_configs(args.L, args.beta, args.n + args.held + args.valid)
    print(f"# heat-bath base configurations: {time.perf_counter() - t:.0f} s")
    train_set, held = confs[:args.n], confs[args.n:args.n + args.held]
    valid = confs[args.n + args.held:] if args.valid else None
    base = cf.make_theory("su3", (args.L,) * 4, beta=args.beta)
    print(f"{'dbeta':>6} {'method':>16} {'ESS held-out':>13} {'gain':>6} {'var log w':>10} {'var/direct':>10} {'KL':>7} "
          f"{'train ESS':>10} {'iters':>6} {'evals':>6} {'seconds':>8} {'s/config/iter':>13}")
    for dbeta in (float(x) for x in args.dbeta.split(",")):
        target = base.replace(beta=args.beta + dbeta)
        flow0 = make_flow("su3", base.shape, n_sweeps=args.sweeps)
        ess_direct, var_direct, kl = held_out(flow0, flow0.init_params(), base, target, held)
        print(f"{dbeta:6.3f} {'direct':>16} {ess_direct:13.3f} {1.0:6.2f} {var_direct:10.3f} {1.0:10.3f} {kl:7.3f}",
              flush=True)
        pat = args.patience if args.valid else 0
        runs = [] if args.no_adam else [("adam lr=0.002", flow0, TrainConfig(epochs=10, batch_size=16, learning_rate=0.002,
                                                                            patience=pat))]
        runs += [(f"lbfgs deg={p}", make_flow("su3", base.shape, n_sweeps=args.sweeps, degree=p),
                  TrainConfig(epochs=args.iters, batch_size=16, optimizer="lbfgs", patience=pat))
                 for p in (int(x) for x in args.degrees.split(",") if x)]
        for steps in (int(x) for x in args.smears.split(",") if x):
            runs.append((f"lbfgs smear={steps}", make_flow("su3", base.shape, n_sweeps=args.sweeps, smear=steps),
                         TrainConfig(epochs=args.iters, batch_size=16, optimizer="lbfgs", patience=pat)))
        for spec in (x for x in args.smoothing.split(",") if x):
            times = tuple(float(t) for t in spec.split("/"))
            for opt in args.smoothing_optimizers.split(","):
                runs.append((f"{opt} smooth={spec}", make_flow("su3", base.shape, n_sweeps=args.sweeps_smoothing,
                                                               smoothing=times),
                             TrainConfig(epochs=args.iters if opt == "lbfgs" else args.linear_iters, batch_size=16,
                                         optimizer=opt, patience=pat)))
        for spec in (x for x in args.nets.split(",") if x):
            w, dep = (int(v) for v in spec.split(":"))
            runs.append((f"lbfgs net={w}:{dep}", make_flow("su3", base.shape, n_sweeps=args.sweeps, net_width=w,
                                                           net_depth=dep),
                         TrainConfig(epochs=args.iters, batch_size=16, optimizer="lbfgs", patience=pat)))
        for spec in (x for x in args.smoothing.split(",") if x and args.chain >= 2):
            t = time.perf_counter()
            lw, _ = chain_fit(tuple(float(v) for v in spec.split("/")), base, target, args.chain, args.linear_iters,
                              train_set, held)
            sec = time.perf_counter() - t
            ess, var, kl = weight_figures(lw)
            print(f"{dbeta:6.3f} {f'chain {args.chain} smooth={spec}':>16} {ess:13.3f} {ess / ess_direct:6.2f} "
                  f"{var:10.3f} {var / var_direct:10.3f} {kl:7.3f} {'':>10} {args.linear_iters:6d} {'-':>6} "
                  f"{sec:8.0f}", flush=True)
        for label, flow, conf in runs:
            t = time.perf_counter()
            res = train(flow, base, target, train_set, conf, held_out=valid)
            sec = time.perf_counter() - t
            ess, var, kl = held_out(flow, res.params, base, target, held)
            h = res.history[-1]
            iters = len(res.history) - 1
            evals = h.get("evals", iters)
            print(f"{dbeta:6.3f} {label:>16} {ess:13.3f} {ess / ess_direct:6.2f} {var:10.3f} {var / var_direct:10.3f} "
                  f"{kl:7.3f} {h['ess']:10.3f} {iters:6d} {h.get('evals', '-'):>6} {sec:8.0f} "
                  f"{sec / max(1, evals) / args.n:13.3f}", flush=True)
    print(f"# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
