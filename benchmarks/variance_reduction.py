"""Variance reduction of flowed correlated ensembles: 2D U(1), d<P>/dbeta and d<W_2x2>/dbeta from beta = 2, against the
exact torus values.

    python benchmarks/variance_reduction.py            # L = 8, 16, 32; dbeta = 0.05, 0.1, 0.2 (~4 min on 2 quiet cores)
    python benchmarks/variance_reduction.py --quick    # L = 16, 32; dbeta = 0.1; N = 2000 (~1 min)
    python benchmarks/variance_reduction.py --sizes 16,64 --shifts 0.1        # volume transfer to L = 64
    python benchmarks/variance_reduction.py --kind residual --optimizer adam --epochs 8 --sweeps 1   # the old flow

For every lattice size L and shift dbeta the script estimates the forward differences
``D_O = (<O>_{beta+dbeta} - <O>_beta) / dbeta`` of the plaquette P and the 2x2 Wilson loop W from the same number
N of configurations per ensemble:

* **flowed**: N base configurations at beta, a trained flow ``f`` (beta -> beta + dbeta), the
  correlated-difference estimator ``(<w O(f(U))>/<w> - <O(U)>) / dbeta`` on the paired samples
  (:func:`corrflow.correlate.flowed_reweighting`, :func:`corrflow.stats.finite_difference_derivative`);
* **chain**: the exact flowed Metropolis chain at beta + dbeta (:func:`corrflow.correlate.flowed_metropolis`) minus
  the base, paired step by step (``O(f(U_{index_t})) - O(U_t)``), Gamma method over the paired differences;
* **direct**: the same base configurations reweighted without a flow (:func:`direct_reweighting`);
* **independent**: N base configurations at beta and N independent HMC configurations at beta + dbeta
  (:func:`corrflow.stats.independent_difference`).

Errors: Gamma method with the HMC chains as replicas.  Exact values: finite differences of
:func:`corrflow.exact.u1_plaquette` / :func:`corrflow.exact.u1_wilson_loop` at the same dbeta.

Flows: trained at every L <= 16, one per shift, on ``--n-train`` configurations taken evenly from the base
ensemble.  At L > 16 nothing is trained: the L = 16 flow of the same shift is applied with its parameters
unchanged (``Flow.with_shape``; volume transfer).  The training configurations are part of the N used for the
estimates (reweighting is exact for any fixed flow; the default flow has 6 parameters).  Default flow: the one
``corrflow train`` picks (``--kind auto``: plaquette-space maps for 2D U(1), :mod:`corrflow.flows.plaquette`),
trained by L-BFGS (``--optimizer auto``).  ``--kind residual`` gives the masked staple layers (the old default:
``--kind residual --optimizer adam --epochs 8 --sweeps 1``).

Figures of merit, per (L, dbeta):

* ``VR = (err_indep / err_X)^2`` at equal N for X = flowed, chain, direct (P and W);
* the Kish ESS fraction of the weights, flowed and direct;
* the cost-adjusted gain over independent ensembles, i.e. the ratio of wall times to reach the same
  error (errors scale as 1/sqrt(N), so the time to a target error is proportional to cost * err^2)::

      G       = VR_indep * cost_indep / cost_flowed
      cost_indep  = t_HMC(beta) + t_HMC(beta + dbeta)                # N configurations each
      cost_flowed = t_HMC(beta) + t_train + t_flow                   # t_flow: flow + both measurements

  and ``G_amort``, the same without ``t_train`` (a flow trained once and reused for many ensembles).
  At L > 16 ``t_train`` is the L = 16 training time plus the L = 16 HMC time of its training
  configurations (pro rata), since that flow had to be trained somewhere.

What is timed (wall clock, ``time.perf_counter`` around blocking calls): HMC generation after a
thermalisation block that also compiles the production program (so ``t_HMC`` excludes compilation);
the observables are measured inside the HMC scan.  ``t_flow`` / ``t_direct``: ``flowed_reweighting`` /
``direct_reweighting`` over all N configurations (flow, log-weights, observables on both sides) after one
untimed warm-up batch.  ``t_train``: the whole ``corrflow.flows.train.train`` call, *including* its JIT
compilation (counting it makes ``G`` conservative).  Nothing is asserted; the script only prints (with the
machine load from ``os.getloadavg`` at start and end, since timings are shared-machine wall clock).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time

import jax
import numpy as np
from _machine import cpu_model

import corrflow as cf
from corrflow import HMCConfig, exact, make_theory
from corrflow.correlate import direct_reweighting, flowed_metropolis, flowed_reweighting
from corrflow.flows import default_kind, make_flow
from corrflow.flows.train import TrainConfig, resolve_optimizer, train
from corrflow.generate import GaugeMeasurements, initial_links, run_blocks
from corrflow.stats import (finite_difference_derivative, format_value_error, gamma_method, independent_difference,
                            weight_ess_fraction)

BETA = 2.0
OBS = ("plaquette", "wilson_2x2")


def _machine_info() -> list[str]:
    cpu = cpu_model()
    try:
        aff = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        aff = os.cpu_count()
    dev = jax.devices()[0]
    return [
        f"cpu: {cpu}; os.cpu_count() = {os.cpu_count()}; affinity = {aff} cores",
        f"platform: {platform.platform()}; python {platform.python_version()}",
        f"versions: corrflow {cf.__version__}, jax {jax.__version__}, numpy {np.__version__}; "
        f"device {dev.platform}:{dev.device_kind}",
    ]


class Ensemble:
    """HMC ensemble: ``links`` ``(chains, n, ...)`` if kept, observables ``obs[name]`` ``(chains, n)``, timings."""

    def __init__(self, theory, links, obs, t_gen: float, t_therm: float, acc: float, n_traj: int):
        self.theory, self.links, self.obs = theory, links, obs
        self.t_gen, self.t_therm, self.acc, self.n_traj = t_gen, t_therm, acc, n_traj


def hmc_ensemble(L: int, beta: float, seed: int, args, keep_links: bool) -> Ensemble:
    """``args.chains`` chains from hot starts; one thermalisation block of the production program
    (untimed: it also compiles), then ``args.n // args.chains`` stored configurations per chain, each
    the last of ``args.thin`` trajectories (timed)."""
    th = make_theory("u1", (L, L), beta=beta)
    key = jax.random.PRNGKey(seed)
    cfg = HMCConfig(args.step_size, args.n_steps, "omelyan", jitter=0.0)
    meas = GaugeMeasurements(th.group, wilson_loops=((2, 2),))
    per_chain = args.n // args.chains
    block = args.block
    common = dict(block_size=block, thin=args.thin, keep_links=keep_links, measure=meas)

    t0 = time.perf_counter()
    state = None
    for blk in run_blocks(key, th, cfg, initial_links(key, th, args.chains), args.therm_blocks * block, **common):
        state = blk.state
    jax.block_until_ready(state.links)
    t_therm = time.perf_counter() - t0

    first = args.therm_blocks * block * args.thin
    links, obs, acc = [], {k: [] for k in OBS}, []
    t0 = time.perf_counter()
    for blk in run_blocks(key, th, cfg, state.links, per_chain, first_index=first, action=state.action, **common):
        for k in OBS:
            obs[k].append(np.asarray(blk.measurements[k]))
        acc.append(np.asarray(blk.info.accepted))
        if keep_links:
            links.append(np.asarray(blk.links))
    t_gen = time.perf_counter() - t0
    return Ensemble(th, np.concatenate(links, axis=1) if keep_links else None,
                    {k: np.concatenate(v, axis=1) for k, v in obs.items()},
                    t_gen, t_therm, float(np.mean(np.concatenate(acc, axis=1))), per_chain * args.chains * args.thin)


def timed_reweighting(fn, flat: np.ndarray, batch: int):
    """Run ``fn(configs)`` once on one batch (untimed warm-up/compile), then on all; return (result, seconds)."""
    fn(flat[:batch])
    t0 = time.perf_counter()
    out = fn(flat)
    return out, time.perf_counter() - t0


def _fmt(res, digits: int = 2) -> str:
    return format_value_error(res.value, res.error, digits)


def _vr(num, den) -> tuple[float, float]:
    """``(num.err / den.err)^2`` and a rough 1-sigma uncertainty from the errors' own uncertainties
    (``d err / err ~ d tau / (2 tau)`` from the Gamma method, which includes the window's statistics)."""
    vr = (num.error / den.error) ** 2

    def rel(r):
        s = r.stats
        return 0.5 * s.tau_int_error / s.tau_int if s.tau_int > 0 else 0.0

    return vr, 2.0 * vr * float(np.hypot(rel(num), rel(den)))


def _paired_chain_difference(base_obs: np.ndarray, flowed_obs: np.ndarray, log_w: np.ndarray, d: float, seed: int):
    """Flowed Metropolis chain at beta + d minus the base, paired per step, per HMC chain (replicas); Gamma method."""
    diffs, acc = [], []
    for c in range(base_obs.shape[0]):
        ch = flowed_metropolis(log_w[c], jax.random.PRNGKey(seed + c))
        diffs.append((flowed_obs[c][ch.index] - base_obs[c]) / d)
        acc.append(ch.acceptance)
    return gamma_method(np.stack(diffs)), float(np.mean(acc))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="L = 16, 32 and dbeta = 0.1 only, N = 2000")
    ap.add_argument("--sizes", default="8,16,32", help="lattice extents L (L x L); L > 16 reuses the L = 16 flow")
    ap.add_argument("--shifts", default="0.05,0.1,0.2", help="dbeta values (from beta = 2)")
    ap.add_argument("--n", type=int, default=4000, help="configurations per ensemble (all chains)")
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--thin", type=int, default=8, help="trajectories per stored configuration")
    ap.add_argument("--block", type=int, default=50, help="stored configurations per chain per HMC block")
    ap.add_argument("--therm-blocks", type=int, default=1, help="thermalisation blocks (block * thin trajectories each)")
    ap.add_argument("--step-size", type=float, default=0.2)
    ap.add_argument("--n-steps", type=int, default=5, help="Omelyan steps per trajectory")
    ap.add_argument("--kind", default="auto", help="flow kind: auto (corrflow train's default) | plaquette | residual")
    ap.add_argument("--harmonics", type=int, default=6, help="plaquette flows: sine harmonics per map")
    ap.add_argument("--loops", default="plaquette", help="residual flows: loop shapes, e.g. plaquette,rectangle")
    ap.add_argument("--sweeps", type=int, default=1, help="residual sweeps / plaquette-space maps")
    ap.add_argument("--optimizer", default="auto", help="auto | adam | lbfgs")
    ap.add_argument("--n-train", type=int, default=400, help="base configurations used for training")
    ap.add_argument("--epochs", type=int, default=30, help="epochs (L-BFGS: maximum iterations)")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--apply-batch", type=int, default=250, help="configurations per flow-application batch")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.shifts, args.n = "16,32", "0.1", 2000

    sizes = [int(s) for s in args.sizes.split(",")]
    shifts = [float(s) for s in args.shifts.split(",")]
    kind = default_kind("u1", (16, 16)) if args.kind == "auto" else args.kind
    optimizer = resolve_optimizer(args.optimizer, 2, kind)
    opts = (dict(kind="plaquette", n_sweeps=args.sweeps, harmonics=args.harmonics) if kind == "plaquette" else
            dict(kind="residual", loops=tuple(args.loops.split(",")), n_sweeps=args.sweeps))
    if args.n % args.chains or (args.n // args.chains) % args.block:
        ap.error("--n must be a multiple of --chains * --block")
    if args.n % args.apply_batch:
        ap.error("--n must be a multiple of --apply-batch")
    if any(L > 16 for L in sizes) and 16 not in sizes:
        ap.error("L > 16 reuses the L = 16 flows: include 16 in --sizes")

    t_start = time.perf_counter()
    print("# variance_reduction: 2D U(1), d<P>/dbeta and d<W_2x2>/dbeta by forward difference from beta = 2")
    for line in _machine_info():
        print(f"# {line}")
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"# HMC: Omelyan {args.n_steps} x {args.step_size} (trajectory length {args.n_steps * args.step_size:g}), "
          f"{args.chains} chains from hot starts, {args.therm_blocks * args.block * args.thin} thermalisation "
          f"trajectories, N = {args.n} configurations per ensemble, every {args.thin}th trajectory; "
          f"float64; seeds base {args.seed}, independent {args.seed}+1+i")
    print(f"# flow: make_flow('u1', {', '.join(f'{k}={v!r}' for k, v in opts.items())}); trained at L = "
          f"{', '.join(str(L) for L in sizes if L <= 16)} on {args.n_train} base configurations (evenly spaced): "
          f"TrainConfig(optimizer={optimizer!r}, epochs={args.epochs}, batch_size={args.batch_size}, "
          f"learning_rate={args.lr}, seed=0)" + ("; L > 16 reuses the L = 16 flow of the same shift"
                                               if any(L > 16 for L in sizes) else ""))
    print(f"# flow application in batches of {args.apply_batch}; errors: Gamma method, chains as replicas")
    print(flush=True)

    flows16: dict[float, tuple] = {}  # dbeta -> (flow, params, t_train, t_hmc_train_share)
    rows = []
    for L in sizes:
        base = hmc_ensemble(L, BETA, args.seed, args, keep_links=True)
        meas = GaugeMeasurements(base.theory.group, wilson_loops=((2, 2),))
        flat = base.links.reshape((-1,) + base.links.shape[2:])
        chains = base.links.shape[0]
        as_chains = lambda x: np.asarray(x).reshape(chains, -1)  # noqa: E731  (flat order is chain-major)
        print(f"L = {L}: base HMC beta = {BETA}: {base.t_gen:.2f} s for {args.n} configurations "
              f"({base.n_traj / base.t_gen:.0f} chain-traj/s), acceptance {base.acc:.3f}; "
              f"thermalisation + compile {base.t_therm:.2f} s; exact dP/dbeta({BETA}) = "
              f"{exact.u1_plaquette_derivative(BETA, (L, L)):.5f}", flush=True)
        for i, d in enumerate(shifts):
            target = make_theory("u1", (L, L), beta=BETA + d)
            indep = hmc_ensemble(L, BETA + d, args.seed + 1 + i, args, keep_links=False)

            if L > 16:
                flow16, params, t_train, t_hmc_share = flows16[d]
                flow = flow16.with_shape((L, L))
                history, origin = None, "L=16"
                t_train_charged = t_train + t_hmc_share
            else:
                flow = make_flow("u1", (L, L), **opts)
                step = max(1, len(flat) // args.n_train)
                train_cfgs = flat[::step][: args.n_train]
                tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=0,
                                 optimizer=optimizer)
                t0 = time.perf_counter()
                res = train(flow, base.theory, target, train_cfgs, tc)
                jax.block_until_ready(res.params)
                t_train = time.perf_counter() - t0
                params, history, origin = res.params, res.history, f"L={L}"
                t_train_charged = t_train
                if L == 16:
                    flows16[d] = (flow, params, t_train, base.t_gen * len(train_cfgs) / args.n)

            fr, t_flow = timed_reweighting(
                lambda u: flowed_reweighting(flow, params, base.theory, target, u, meas, batch=args.apply_batch),
                flat, args.apply_batch)
            dr, t_direct = timed_reweighting(
                lambda u: direct_reweighting(base.theory, target, u, meas, batch=args.apply_batch),
                flat, args.apply_batch)
            lw_f, lw_d = as_chains(fr.log_w), as_chains(dr.log_w)
            cost_indep = base.t_gen + indep.t_gen
            cost_flow = base.t_gen + t_train_charged + t_flow
            cost_flow_amort = base.t_gen + t_flow
            row = dict(L=L, d=d, origin=origin, ess_f=weight_ess_fraction(lw_f), ess_d=weight_ess_fraction(lw_d),
                       t_hmc_a=base.t_gen, t_hmc_b=indep.t_gen, t_train=t_train_charged, t_flow=t_flow,
                       t_direct=t_direct, var_f=float(np.var(lw_f)), var_d=float(np.var(lw_d)), obs={})
            for k in OBS:
                ob, of = as_chains(fr.base[k]), as_chains(fr.flowed[k])
                est_f = finite_difference_derivative(ob, of, lw_f, d)
                est_d = finite_difference_derivative(as_chains(dr.base[k]), as_chains(dr.flowed[k]), lw_d, d)
                diff_i = independent_difference(indep.obs[k], base.obs[k])
                est_i = dataclasses.replace(
                    diff_i, stats=dataclasses.replace(diff_i.stats, value=diff_i.value / d, error=diff_i.error / d))
                est_c, acc = _paired_chain_difference(ob, of, lw_f, d, 1000 + i)
                if k == "plaquette":
                    ex = (exact.u1_plaquette(BETA + d, (L, L)) - exact.u1_plaquette(BETA, (L, L))) / d
                else:
                    ex = (exact.u1_wilson_loop(BETA + d, (L, L), 2, 2) - exact.u1_wilson_loop(BETA, (L, L), 2, 2)) / d
                vr_i, vr_i_err = _vr(est_i, est_f)
                row["obs"][k] = dict(exact=ex, f=est_f, dr=est_d, i=est_i, c=est_c, acc=acc, vr_i=vr_i,
                                     vr_i_err=vr_i_err, vr_d=_vr(est_i, est_d)[0],
                                     vr_c=(est_i.error / est_c.error) ** 2,
                                     G=vr_i * cost_indep / cost_flow, G_amort=vr_i * cost_indep / cost_flow_amort)
            rows.append(row)
            hist = (f"training ESS {history[0]['ess']:.3f} -> {history[-1]['ess']:.3f} in {len(history) - 1} epochs, "
                    f"{t_train:.2f} s" if history is not None else
                    f"flow of L=16 reused (its training {t_train:.2f} s + HMC share {t_train_charged - t_train:.2f} s charged)")
            p = row["obs"]["plaquette"]
            print(f"  dbeta = {d:g}: {hist}; HMC beta' {indep.t_gen:.2f} s (acc {indep.acc:.3f}); flow {t_flow:.2f} s, "
                  f"direct {t_direct:.2f} s; d<P> pulls vs exact: flowed {p['f'].pull(p['exact']):+.1f}, chain "
                  f"{p['c'].pull(p['exact']):+.1f}, direct {p['dr'].pull(p['exact']):+.1f}, indep "
                  f"{p['i'].pull(p['exact']):+.1f}; chain acceptance {p['acc']:.3f}", flush=True)

    for k, label in (("plaquette", "<P>"), ("wilson_2x2", "<W_2x2>")):
        print()
        print(f"Estimates of ({label}(2+dbeta) - {label}(2)) / dbeta, N = {args.n} configurations per ensemble; "
              "flow: the lattice the flow was trained on; VR = (err_indep / err)^2")
        hdr = (f"{'L':>3}{'dbeta':>6}{'flow':>6}{'exact':>10}{'flowed':>14}{'chain':>14}{'direct':>14}"
               f"{'independent':>14}{'VR_flowed':>12}{'VR_chain':>9}{'VR_direct':>10}")
        print(hdr)
        for r in rows:
            o = r["obs"][k]
            print(f"{r['L']:>3}{r['d']:>6g}{r['origin']:>6}{o['exact']:10.5f}{_fmt(o['f']):>14}{_fmt(o['c']):>14}"
                  f"{_fmt(o['dr']):>14}{_fmt(o['i']):>14}{_pm(o['vr_i'], o['vr_i_err']):>12}{o['vr_c']:9.1f}"
                  f"{o['vr_d']:10.1f}")
    print()
    print("Weights, wall time (s) and cost-adjusted gains G (P / W_2x2); t_train at L > 16: L=16 training + pro-rata "
          "L=16 HMC of its training set")
    hdr = (f"{'L':>3}{'dbeta':>6}{'ESS_flow':>9}{'ESS_dir':>8}{'var_lw_f':>9}{'var_lw_d':>9}{'HMC(b)':>8}"
           f"{'HMC(b+d)':>9}{'train':>7}{'flow':>7}{'G_P':>7}{'G_W':>7}{'G_P_amort':>10}")
    print(hdr)
    for r in rows:
        o, w = r["obs"]["plaquette"], r["obs"]["wilson_2x2"]
        print(f"{r['L']:>3}{r['d']:>6g}{r['ess_f']:9.3f}{r['ess_d']:8.3f}{r['var_f']:9.4f}{r['var_d']:9.3f}"
              f"{r['t_hmc_a']:8.2f}{r['t_hmc_b']:9.2f}{r['t_train']:7.2f}{r['t_flow']:7.2f}{o['G']:7.1f}{w['G']:7.1f}"
              f"{o['G_amort']:10.1f}")
    print(f"\n# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"# total wall time {time.perf_counter() - t_start:.0f} s")


def _pm(v: float, e: float) -> str:
    if v < 1:
        return f"{v:.2f}+-{e:.2f}"
    return f"{v:.1f}+-{e:.1f}" if v < 100 else f"{v:.0f}+-{e:.0f}"


if __name__ == "__main__":
    main()
