"""Variance reduction of flowed correlated ensembles: 2D U(1), d<P>/dbeta from beta = 2, against the exact torus values.

    python benchmarks/variance_reduction.py            # L = 8, 16, 32; dbeta = 0.05, 0.1, 0.2 (~4 min on 2 quiet CPU cores)
    python benchmarks/variance_reduction.py --quick    # L = 16, 32; dbeta = 0.1; N = 2000 (~1 min)

For every lattice size L and shift dbeta the script estimates the forward difference
``D = (<P>_{beta+dbeta} - <P>_beta) / dbeta`` (P = plaquette) three ways, from the same number N of
configurations per ensemble:

* **flowed**: N base configurations at beta, a trained flow ``f`` (beta -> beta + dbeta), the
  correlated-difference estimator ``(<w P(f(U))>/<w> - <P(U)>) / dbeta`` on the paired samples
  (:func:`corrflow.correlate.flowed_reweighting`, :func:`corrflow.stats.finite_difference_derivative`);
* **direct**: the same base configurations reweighted without a flow (:func:`direct_reweighting`);
* **independent**: N base configurations at beta and N independent HMC configurations at beta + dbeta
  (:func:`corrflow.stats.independent_difference`).

Errors: Gamma method with the HMC chains as replicas.  Exact values: finite differences of
:func:`corrflow.exact.u1_plaquette` at the same dbeta (the estimators' target), and the derivative
:func:`corrflow.exact.u1_plaquette_derivative` at beta for reference.

Flows: trained at L = 8 and L = 16, one per shift, on ``--n-train`` configurations taken evenly from the
base ensemble.  At L = 32 nothing is trained: the L = 16 flow of the same shift is applied with its
parameters unchanged (``Flow.with_shape``; the parameters are translation invariant).  The training
configurations are part of the N used for the estimates (reweighting is exact for any fixed flow; the
flow has 4 parameters, so the dependence on the sample is negligible).  Default flow: plaquette staples,
one sweep (4 layers).  ``--loops plaquette,rectangle`` (16 layers) costs ~12x more per configuration on a
CPU (about 2.9 against 0.23 ms per 16x16 configuration) and, in trials at L = 16, gave about the same
weight ESS (0.60 against 0.59 at dbeta = 0.2).

Figures of merit, per (L, dbeta):

* ``VR_indep = (err_indep / err_flowed)^2`` and ``VR_direct = (err_direct / err_flowed)^2`` at equal N;
* the Kish ESS fraction of the weights, flowed and direct;
* the cost-adjusted gain over independent ensembles, i.e. the ratio of wall times to reach the same
  error (errors scale as 1/sqrt(N), so the time to a target error is proportional to cost * err^2)::

      G       = VR_indep * cost_indep / cost_flowed
      cost_indep  = t_HMC(beta) + t_HMC(beta + dbeta)                # N configurations each
      cost_flowed = t_HMC(beta) + t_train + t_flow                   # t_flow: flow + both measurements

  and ``G_amort``, the same without ``t_train`` (a flow trained once and reused for many ensembles).
  At L = 32 ``t_train`` is the L = 16 training time plus the L = 16 HMC time of its training
  configurations (pro rata), since that flow had to be trained somewhere.  ``G_direct`` is the gain
  over direct reweighting, ``VR_direct * (t_HMC(beta) + t_direct) / cost_flowed``.

What is timed (wall clock, ``time.perf_counter`` around blocking calls): HMC generation after a
thermalisation block that also compiles the production program (so ``t_HMC`` excludes compilation);
the plaquette is measured inside the HMC scan.  ``t_flow`` / ``t_direct``: ``flowed_reweighting`` /
``direct_reweighting`` over all N configurations (flow, log-weights, plaquette on both sides) after one
untimed warm-up batch.  ``t_train``: the whole ``corrflow.flows.train.train`` call, *including* its JIT
compilation (``train`` compiles afresh on every call, a few seconds on a CPU; counting it makes ``G``
conservative).  Nothing is asserted; the script only prints.
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
from corrflow.correlate import direct_reweighting, flowed_reweighting
from corrflow.flows import make_flow
from corrflow.flows.train import TrainConfig, train
from corrflow.generate import GaugeMeasurements, initial_links, run_blocks
from corrflow.stats import (finite_difference_derivative, format_value_error, independent_difference,
                            weight_ess_fraction)

BETA = 2.0


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
    """HMC ensemble: ``links`` ``(chains, n, ...)`` if kept, plaquette ``(chains, n)``, timings."""

    def __init__(self, theory, links, plaq, t_gen: float, t_therm: float, acc: float, n_traj: int):
        self.theory, self.links, self.plaq = theory, links, plaq
        self.t_gen, self.t_therm, self.acc, self.n_traj = t_gen, t_therm, acc, n_traj


def hmc_ensemble(L: int, beta: float, seed: int, args, keep_links: bool) -> Ensemble:
    """``args.chains`` chains from hot starts; one thermalisation block of the production program
    (untimed: it also compiles), then ``args.n // args.chains`` stored configurations per chain, each
    the last of ``args.thin`` trajectories (timed)."""
    th = make_theory("u1", (L, L), beta=beta)
    key = jax.random.PRNGKey(seed)
    cfg = HMCConfig(args.step_size, args.n_steps, "omelyan")
    meas = GaugeMeasurements(th.group)
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
    links, plaq, acc = [], [], []
    t0 = time.perf_counter()
    for blk in run_blocks(key, th, cfg, state.links, per_chain, first_index=first, action=state.action, **common):
        plaq.append(np.asarray(blk.measurements["plaquette"]))
        acc.append(np.asarray(blk.info.accepted))
        if keep_links:
            links.append(np.asarray(blk.links))
    t_gen = time.perf_counter() - t0
    return Ensemble(th, np.concatenate(links, axis=1) if keep_links else None, np.concatenate(plaq, axis=1),
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="L = 16, 32 and dbeta = 0.1 only, N = 2000")
    ap.add_argument("--sizes", default="8,16,32", help="lattice extents L (L x L); 32 reuses the 16 flow")
    ap.add_argument("--shifts", default="0.05,0.1,0.2", help="dbeta values (from beta = 2)")
    ap.add_argument("--n", type=int, default=4000, help="configurations per ensemble (all chains)")
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--thin", type=int, default=8, help="trajectories per stored configuration")
    ap.add_argument("--block", type=int, default=50, help="stored configurations per chain per HMC block")
    ap.add_argument("--therm-blocks", type=int, default=1, help="thermalisation blocks (block * thin trajectories each)")
    ap.add_argument("--step-size", type=float, default=0.2)
    ap.add_argument("--n-steps", type=int, default=5, help="Omelyan steps per trajectory")
    ap.add_argument("--loops", default="plaquette", help="flow loop shapes, e.g. plaquette,rectangle")
    ap.add_argument("--sweeps", type=int, default=1, help="flow sweeps")
    ap.add_argument("--n-train", type=int, default=400, help="base configurations used for training")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--apply-batch", type=int, default=250, help="configurations per flow-application batch")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.shifts, args.n = "16,32", "0.1", 2000

    sizes = [int(s) for s in args.sizes.split(",")]
    shifts = [float(s) for s in args.shifts.split(",")]
    loops = tuple(args.loops.split(","))
    if args.n % args.chains or (args.n // args.chains) % args.block:
        ap.error("--n must be a multiple of --chains * --block")
    if args.n % args.apply_batch:
        ap.error("--n must be a multiple of --apply-batch")
    if 32 in sizes and 16 not in sizes:
        ap.error("L = 32 reuses the L = 16 flows: include 16 in --sizes")

    t_start = time.perf_counter()
    print("# variance_reduction: 2D U(1), d<P>/dbeta by forward difference from beta = 2")
    for line in _machine_info():
        print(f"# {line}")
    print(f"# HMC: Omelyan {args.n_steps} x {args.step_size} (trajectory length {args.n_steps * args.step_size:g}), "
          f"{args.chains} chains from hot starts, {args.therm_blocks * args.block * args.thin} thermalisation "
          f"trajectories, N = {args.n} configurations per ensemble, every {args.thin}th trajectory; "
          f"float64; seeds base {args.seed}, independent {args.seed}+1+i")
    print(f"# flow: make_flow('u1', loops={loops}, n_sweeps={args.sweeps}); trained at L = "
          f"{', '.join(str(L) for L in sizes if L != 32)} on {args.n_train} base configurations (evenly spaced in the "
          f"ensemble): TrainConfig(epochs={args.epochs}, batch_size={args.batch_size}, learning_rate={args.lr}, seed=0)"
          + ("; L = 32 reuses the L = 16 flow of the same shift (Flow.with_shape, parameters unchanged)"
             if 32 in sizes else ""))
    print(f"# flow application in batches of {args.apply_batch}; errors: Gamma method, chains as replicas")
    print(flush=True)

    flows16: dict[float, tuple] = {}  # dbeta -> (flow, params, t_train, t_hmc_train_share)
    rows = []
    for L in sizes:
        base = hmc_ensemble(L, BETA, args.seed, args, keep_links=True)
        meas = GaugeMeasurements(base.theory.group)
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

            if L == 32:
                flow16, params, t_train, t_hmc_share = flows16[d]
                flow = flow16.with_shape((L, L))
                history, origin = None, "L=16"
                t_train_charged = t_train + t_hmc_share
            else:
                flow = make_flow("u1", (L, L), loops=loops, n_sweeps=args.sweeps)
                step = max(1, len(flat) // args.n_train)
                train_cfgs = flat[::step][: args.n_train]
                tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=0)
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

            est_f = finite_difference_derivative(as_chains(fr.base["plaquette"]), as_chains(fr.flowed["plaquette"]),
                                                 as_chains(fr.log_w), d)
            est_d = finite_difference_derivative(as_chains(dr.base["plaquette"]), as_chains(dr.flowed["plaquette"]),
                                                 as_chains(dr.log_w), d)
            diff_i = independent_difference(indep.plaq, base.plaq)
            # scale the independent difference to the forward-difference derivative
            est_i = dataclasses.replace(
                diff_i, stats=dataclasses.replace(diff_i.stats, value=diff_i.value / d, error=diff_i.error / d))
            ex = (exact.u1_plaquette(BETA + d, (L, L)) - exact.u1_plaquette(BETA, (L, L))) / d

            vr_i, vr_i_err = _vr(est_i, est_f)
            vr_d, vr_d_err = _vr(est_d, est_f)
            cost_indep = base.t_gen + indep.t_gen
            cost_flow = base.t_gen + t_train_charged + t_flow
            cost_flow_amort = base.t_gen + t_flow
            cost_direct = base.t_gen + t_direct
            row = dict(L=L, d=d, origin=origin, exact=ex, f=est_f, dr=est_d, i=est_i, vr_i=vr_i, vr_i_err=vr_i_err,
                       vr_d=vr_d, vr_d_err=vr_d_err, ess_f=weight_ess_fraction(as_chains(fr.log_w)),
                       ess_d=weight_ess_fraction(as_chains(dr.log_w)), t_hmc_a=base.t_gen, t_hmc_b=indep.t_gen,
                       t_train=t_train_charged, t_flow=t_flow, t_direct=t_direct,
                       G=vr_i * cost_indep / cost_flow, G_amort=vr_i * cost_indep / cost_flow_amort,
                       G_direct=vr_d * cost_direct / cost_flow)
            rows.append(row)
            hist = (f"training ESS {history[0]['ess']:.3f} -> {history[-1]['ess']:.3f} in {len(history) - 1} epochs, "
                    f"{t_train:.2f} s" if history is not None else
                    f"flow of L=16 reused (its training {t_train:.2f} s + HMC share {t_train_charged - t_train:.2f} s charged)")
            print(f"  dbeta = {d:g}: {hist}; HMC beta' {indep.t_gen:.2f} s (acc {indep.acc:.3f}); flow {t_flow:.2f} s, "
                  f"direct {t_direct:.2f} s; pulls vs exact: flowed {est_f.pull(ex):+.1f}, direct {est_d.pull(ex):+.1f}, "
                  f"indep {est_i.pull(ex):+.1f}; tau_int flowed {est_f.tau_int:.2f}, indep {est_i.tau_int:.2f}",
                  flush=True)

    print()
    print(f"Estimates of (<P>(2+dbeta) - <P>(2)) / dbeta, N = {args.n} configurations per ensemble; "
          "flow: the lattice the flow was trained on")
    hdr = (f"{'L':>3}{'dbeta':>6}{'flow':>6}{'exact':>10}{'flowed':>14}{'direct':>14}{'independent':>14}"
           f"{'VR_indep':>12}{'VR_direct':>12}{'ESS_flow':>9}{'ESS_dir':>8}")
    print(hdr)
    for r in rows:
        print(f"{r['L']:>3}{r['d']:>6g}{r['origin']:>6}{r['exact']:10.5f}{_fmt(r['f']):>14}{_fmt(r['dr']):>14}"
              f"{_fmt(r['i']):>14}{_pm(r['vr_i'], r['vr_i_err']):>12}{_pm(r['vr_d'], r['vr_d_err']):>12}"
              f"{r['ess_f']:9.3f}{r['ess_d']:8.3f}")
    print()
    print("Wall time (s) and cost-adjusted gains; t_train at L=32: L=16 training + pro-rata L=16 HMC of its training set")
    hdr = (f"{'L':>3}{'dbeta':>6}{'HMC(b)':>8}{'HMC(b+d)':>9}{'train':>7}{'flow':>7}{'direct':>7}"
           f"{'G':>7}{'G_amort':>8}{'G_direct':>9}")
    print(hdr)
    for r in rows:
        print(f"{r['L']:>3}{r['d']:>6g}{r['t_hmc_a']:8.2f}{r['t_hmc_b']:9.2f}{r['t_train']:7.2f}{r['t_flow']:7.2f}"
              f"{r['t_direct']:7.2f}{r['G']:7.1f}{r['G_amort']:8.1f}{r['G_direct']:9.1f}")
    print(f"\n# total wall time {time.perf_counter() - t_start:.0f} s")


def _pm(v: float, e: float) -> str:
    if v < 1:
        return f"{v:.2f}+-{e:.2f}"
    return f"{v:.1f}+-{e:.1f}" if v < 100 else f"{v:.0f}+-{e:.0f}"


if __name__ == "__main__":
    main()
