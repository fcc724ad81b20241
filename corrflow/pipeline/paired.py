"""Paired ensembles in the store: a flowed ensemble ``f(U_i)`` (or the direct-reweighting baseline) of a stored
base ensemble, with log weights, Jacobians, the pairing and the exact flowed Metropolis chain.  The driver
behind ``corrflow correlate`` and the pipeline's ensure-paired step; the physics is
:func:`corrflow.correlate.flowed_reweighting`.  The commit record carries the cost of the flowed configurations
(``cost_s``: flow application, weights and measurements, steady state, compilation excluded -- the cost ledger's
definition), so an analysis that reuses a paired ensemble made by ``corrflow correlate`` is charged for it.

Dynamical quarks on lattices too large for dense determinants: ``det_noise = N`` stores weights with the unbiased
stochastic estimate of the two-flavour determinant ratio (:func:`corrflow.theories.fermions.log_det_ratio_estimate`,
``N`` Gaussian noise vectors per configuration, one CG solve each).  ``exp(log_weight)`` is then an unbiased
estimate of the exact weight, so reweighted means stay exact as the ensemble grows, and the flowed Metropolis chain,
which keeps the estimate of the state it holds, is an exact pseudo-marginal chain at ``a'``.  The noise of
configuration ``traj`` of chain ``c`` comes from ``fold_in(fold_in(fold_in(key(seed), DET_NOISE_STREAM), c), traj)``:
the weights do not depend on batching or on where a run was resumed.  ``N`` is part of the stored settings (a resume
with another ``N`` is refused); the stored ``action`` is NaN then (the total action needs the determinant).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..correlate import flowed_metropolis, flowed_reweighting, identity_flow
from ..flows.batches import pad_rows
from .handles import check_exact_weights, is_fermion
from .ledger import Clock

__all__ = ["CorrelateSummary", "correlate_to_store", "direct_to_store", "DET_NOISE_STREAM"]

#: ``fold_in`` tag of the determinant-noise stream under the seed's key (the Metropolis chains use the chain index)
DET_NOISE_STREAM = 0x646574


class CorrelateSummary(NamedTuple):
    name: str
    n_new: int
    committed: int
    weight_ess_fraction: float
    acceptance: float
    log_mean_weight: float


def correlate_to_store(store: Any, base_name: str, name: str, *, checkpoint: Any = None, batch: int = 64,
                       seed: int = 0, progress: Callable[[int, int], None] | None = None,
                       target_params: dict[str, float] | None = None, det_noise: int = 0) -> CorrelateSummary:
    """Write the flowed ensemble ``name`` of base ensemble ``base_name``: ``f(U_i)`` for every stored base
    configuration, with ``log_weight``, ``log_jacobian``, the pairing (``source_chain``, ``source_traj``;
    the ``traj`` coordinate is the base's) and the base's observables measured on ``f(U_i)``.
    ``accepted`` records the exact flowed Metropolis chain at ``a'`` (per chain, in base order; uniforms
    from ``fold_in(fold_in(key(seed), chain), traj)``).

    ``checkpoint``: a flow checkpoint directory (see :mod:`corrflow.flows.train`); for the identity flow
    (direct reweighting) use :func:`direct_to_store`.  A flow trained on another volume is applied with
    the same parameters (volume transfer).  Resumable: continues after the committed configurations; one that pairs
    every base configuration already is left as it is (``n_new == 0``: a rerun is not an error).
    ``target_params`` (e.g. ``{"beta": 2.2}``): the parameters the caller expects the flowed ensemble at, checked
    against the flow's target (``ValueError`` naming both if they differ: a flow maps onto its own target only).
    ``det_noise``: noise vectors of the stochastic two-flavour determinant ratio per configuration (0: exact, dense;
    module docstring).
    """
    from ..flows.train import load_checkpoint

    ck = load_checkpoint(checkpoint)
    if target_params:
        have = ck["target"].params()
        wrong = {k: v for k, v in target_params.items() if k not in have or float(have[k]) != float(v)}
        if wrong:
            asked = ", ".join(f"{k}={v:g}" for k, v in wrong.items())
            flows_to = ", ".join(f"{k}={have[k]:g}" for k in wrong if k in have)
            raise ValueError(f"the flow {checkpoint} maps onto {flows_to}, not {asked}: train a flow to {asked} "
                             "(corrflow train --to ...), or leave out --to")
    return _correlate(store, base_name, name, ck["flow"], ck["params"], ck["base"], ck["target"], ck["id"],
                      str(checkpoint), batch, seed, progress, det_noise)


def direct_to_store(store: Any, base_name: str, name: str, target_params: dict[str, float], *, batch: int = 64,
                    seed: int = 0, progress: Callable[[int, int], None] | None = None,
                    det_noise: int = 0) -> CorrelateSummary:
    """The direct-reweighting baseline as a flowed ensemble with the identity flow (``log J = 0``); ``det_noise``
    as in :func:`correlate_to_store`."""
    spec = store.spec(base_name)
    base = spec.make_theory()
    target = base.replace(**target_params)
    flow = identity_flow(base)
    return _correlate(store, base_name, name, flow, flow.init_params(), base, target, "identity", None, batch, seed,
                      progress, det_noise)


def _noise_keys(seed: int, chains: int, trajs: np.ndarray) -> np.ndarray:
    """Determinant-noise keys ``(chains * len(trajs), 2)``, chain-major (module docstring)."""
    root = jax.random.fold_in(jax.random.PRNGKey(seed), DET_NOISE_STREAM)
    per_chain = jax.vmap(lambda c: jax.random.fold_in(root, c))(jnp.arange(chains))
    keys = jax.vmap(lambda k: jax.vmap(lambda t: jax.random.fold_in(k, t))(jnp.asarray(trajs)))(per_chain)
    return np.asarray(keys).reshape(chains * len(trajs), -1)


def _correlate(store, base_name, name, flow, params, base_ck, target_ck, flow_id, ckpt_path, batch, seed,
               progress, det_noise=0) -> CorrelateSummary:  # noqa: ANN001
    from ..generate import measurements_from_names
    from ..store import EnsembleSpec, StoreError
    from ..theories import make_theory

    bspec = store.spec(base_name)
    if name == base_name:
        raise StoreError(f"the flowed ensemble needs its own name: --name {name!r} is the base ensemble")
    if bspec.kind == "flowed":
        raise StoreError(f"{base_name!r} is itself a flowed ensemble; correlate from an HMC or imported ensemble")
    if base_ck.group.name != bspec.group:
        raise StoreError(f"the flow is for group {base_ck.group.name}, ensemble {base_name!r} is {bspec.group}")
    diffs = {k: (v, bspec.params.get(k)) for k, v in base_ck.params().items() if bspec.params.get(k) != v}
    if diffs:
        raise StoreError(f"the flow was trained from parameters {base_ck.params()} but ensemble {base_name!r} has "
                         f"{bspec.params}; train a flow from this ensemble")
    base = bspec.make_theory()
    target = make_theory(bspec.theory, bspec.shape, **target_ck.params())
    det_noise = int(det_noise)
    if det_noise < 0:
        raise ValueError(f"det_noise must be >= 0 (0: exact determinants), got {det_noise}")
    if det_noise and not (is_fermion(base) and base.n_flavors == 2):
        raise StoreError(f"a stochastic determinant ratio (--det-noise) needs two flavours of dynamical quarks; "
                         f"{base_name!r} is {bspec.theory}" + (f" with n_f = {base.n_flavors}" if is_fermion(base)
                                                               else " (pure gauge: its weights are exact already)"))
    if not det_noise:
        check_exact_weights(base, "reweighting" if flow_id == "identity" else "flowing",
                            remedy="give --det-noise N (an unbiased stochastic determinant ratio, N noise vectors and "
                                   "CG solves per configuration; `det_noise=N` in the library)")
    if target.params() == base.params():  # refused before anything is written
        raise StoreError(f"the target parameters {target.params()} are those of {base_name!r} itself: a correlated "
                         "ensemble needs a shift (--to another value, or a flow trained to other parameters)")
    if tuple(flow.shape) != tuple(bspec.shape):
        flow = flow.with_shape(bspec.shape)  # volume transfer (ValueError if the extents do not fit)
    measure = measurements_from_names(base.group, bspec.measurements, len(bspec.shape), shape=bspec.shape)
    spec = EnsembleSpec(theory=bspec.theory, group=bspec.group, shape=bspec.shape, params=target.params(),
                        n_chains=bspec.n_chains, seed=seed, dtype=bspec.dtype, hmc={}, n_therm=0, thin=1,
                        measurements=bspec.measurements, kind="flowed",
                        flow={"source": base_name, "flow_id": flow_id, "checkpoint": ckpt_path,
                              "source_params": bspec.params, "loops": list(flow.loops), "n_sweeps": flow.n_sweeps,
                              "trained_shape": list(base_ck.shape),
                              **({"degree": flow.degree} if flow.degree else {}),
                              **({"det_noise": det_noise} if det_noise else {}),
                              **({"kind": flow.kind} if getattr(flow, "kind", "residual") != "residual" else {})})

    def refuse_existing(stored: EnsembleSpec, committed: int) -> None:
        if stored.kind != "flowed":
            raise StoreError(f"ensemble {name!r} exists and is an {stored.kind} ensemble, not a flowed one; choose "
                             "another --name")
        same_flow = stored.flow.get("flow_id") == spec.flow.get("flow_id")
        # the flow's content id names it; its directory may have moved with the project (copied, renamed)
        wanted = replace(spec, flow={**spec.flow, "checkpoint": stored.flow.get("checkpoint")}) if same_flow else spec
        diffs = stored.differences(wanted)
        if diffs:
            raise StoreError(f"ensemble {name!r} exists with different settings: " + "; ".join(diffs))

    bds = store.open_ensemble(base_name, verify=False)
    n_base = int(bds.sizes["traj"])
    base_traj = np.asarray(bds.traj.values)
    if name in store:  # refuse before taking the lock: a refused command changes nothing
        committed = int(store.commit(name)["committed"])
        refuse_existing(store.spec(name), committed)
        if committed >= n_base:  # every base configuration paired: nothing to do
            return _summary(store, name, 0)
    base_links = store.array(base_name, "links")  # a damaged chunk raises naming chain and trajectories
    key = jax.random.PRNGKey(seed)
    c = bspec.n_chains
    # created (atomically) under the writer lock if absent; the remains of an interrupted creation are removed
    with store.writer(name, create=spec, chunk_traj=max(1, batch)) as w:
        start = w.committed
        if not w.created:
            refuse_existing(w.spec, start)
            if start >= n_base:
                return _summary(store, name, 0)
        w.set_target(n_base)
        w.reserve(n_base)
        cur = np.full(c, -np.inf)  # log w of the state each Metropolis chain holds
        if start:
            acc_done = np.asarray(store.array(name, "accepted")[:, :start])
            lw_done = np.asarray(store.array(name, "log_weight")[:, :start])
            for ch in range(c):
                last = np.flatnonzero(acc_done[ch])
                cur[ch] = lw_done[ch, last[-1]] if len(last) else -np.inf
        # the cost of the stored flowed configurations (steady-state seconds of flow application, weights and
        # measurements, compilation excluded, as `corrflow generate` records its own); NaN if an earlier run did not
        cost0 = w.recorded_cost
        clock, done = Clock(), 0
        for lo in range(start, n_base, batch):
            hi = min(n_base, lo + batch)
            u = np.asarray(base_links[:, lo:hi])  # (chains, b, ...)
            flat = u.reshape((-1,) + u.shape[2:])
            m = len(flat)
            flat = pad_rows(flat, c * batch)  # a short last block is padded (one compiled flow program)
            noise = {}
            if det_noise:
                keys = _noise_keys(seed, c, base_traj[lo:hi])
                noise = dict(det_noise=det_noise, noise_keys=pad_rows(keys, c * batch))
            out = flowed_reweighting(flow, params, base, target, flat, measure, batch=len(flat), keep_links=True,
                                     **noise)
            out = jax.tree_util.tree_map(lambda x: x[:m], out)
            shp = (c, hi - lo)
            lw = out.log_w.reshape(shp)
            acc = np.zeros(shp, bool)
            for ch in range(c):  # exact flowed Metropolis chain, continued across blocks
                chain = flowed_metropolis(lw[ch], jax.random.fold_in(key, ch), labels=base_traj[lo:hi],
                                          current=cur[ch])
                acc[ch], cur[ch] = chain.accepted, chain.log_w_current
            per = {k: v.reshape(shp) for k, v in out.flowed.items()}
            act = np.full(shp, np.nan) if det_noise else np.asarray(target.action(jnp.asarray(out.links))).reshape(shp)
            per.update(action=act,
                       delta_H=np.full(shp, np.nan), accepted=acc, step_size=np.full(shp, np.nan),
                       log_weight=lw, log_jacobian=out.log_jacobian.reshape(shp),
                       source_chain=np.repeat(np.arange(c)[:, None], hi - lo, axis=1),
                       source_traj=np.broadcast_to(base_traj[lo:hi], shp).astype(np.int64))
            done += hi - lo
            clock.tick(done)
            cost = cost0 + clock.cost(done)
            w.append(base_traj[lo:hi], out.links.reshape(shp + out.links.shape[1:]), per, int(base_traj[hi - 1]) + 1,
                     cost_s=cost if np.isfinite(cost) else None)
            if progress is not None:
                progress(hi, n_base)
        n_new = w.committed - start
    return _summary(store, name, n_new)


def _summary(store: Any, name: str, n_new: int) -> CorrelateSummary:
    """The summary of flowed ensemble ``name`` from what the store holds (``n_new`` of them written by this run)."""
    committed = int(store.commit(name)["committed"])
    lw_all = np.asarray(store.array(name, "log_weight")[:, :committed])
    shifted = lw_all - lw_all.max()
    wts = np.exp(shifted)
    accepted = np.asarray(store.array(name, "accepted")[:, 1:committed])
    return CorrelateSummary(name, n_new, committed, float(wts.sum() ** 2 / (wts.size * (wts**2).sum())),
                            float(accepted.mean()) if accepted.size else float("nan"),
                            float(np.log(wts.mean()) + lw_all.max()))
