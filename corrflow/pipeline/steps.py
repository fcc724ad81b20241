"""Composable, store-backed steps: ensure an ensemble, a trained flow, a paired ensemble, a measurement.

    pipe = Pipeline.open("data/x.zarr", progress=Progress(console))
    base = pipe.ensemble(theory, MarkovSettings().config(), name="u1_8x8_beta2_seed0", n=1000, n_chains=2, seed=0)
    flow = pipe.flow(base, theory.replace(beta=2.2), FlowSettings(), TrainingSettings())
    flowed = pipe.paired(base, theory.replace(beta=2.2), flow)        # f(U_i), log w_i, paired with U_i
    direct = pipe.paired(base, theory.replace(beta=2.2), None)        # the identity flow: direct reweighting
    flowed.log_weights(), flowed.observables(["plaquette"]), base.links()

Every step goes through the store and is reused when done, extended (more configurations, more epochs) or
resumed after an interruption; each returns an object (:class:`Ensemble`, :class:`TrainedFlow`,
:class:`PairedEnsemble`) that the next step takes, never a name to reload.  Costs follow the one definition of
:mod:`corrflow.pipeline.ledger` and are recorded there; progress goes to one :class:`~corrflow.pipeline.Progress`.

Conventions: arrays read from ensembles are ``(chains, n, ...)`` in Monte Carlo order; paired ensembles are
checked row by row against their base (``source_chain``, ``source_traj``).  Theories are corrflow theory objects;
for fermions the HMC may use pseudofermions while flows, weights and measurements use the exact determinant
(:func:`exact_theory`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .handles import (
    TRAINING_REMEDY,
    Ensemble,
    PairedEnsemble,
    TrainedFlow,
    _read,
    check_exact_weights,
    default_observables,
    determinant_noise,
    exact_theory,
    shift_tag,
    validate_shift,
)
from .ledger import Clock, CostLedger
from .progress import Progress, as_progress

__all__ = ["Pipeline", "default_flow_dir"]


# ----------------------------------------------------------------------------------------------
# the pipeline
# ----------------------------------------------------------------------------------------------


def default_flow_dir(store_path: str | os.PathLike) -> Path:
    """``<store without .zarr>_flows`` next to the store."""
    p = Path(str(store_path))
    return p.with_name(p.name.removesuffix(".zarr") + "_flows")


def _hash(d: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]


class Pipeline:
    """A store, a flow directory (checkpoints, cost ledger, measurement cache) and a progress sink, with the steps
    as methods.

    Parameters
    ----------
    store : path, URL or :class:`corrflow.store.EnsembleStore`
        Opened for appending (created if absent).
    flow_dir : path, optional
        Default ``<store stem>_flows`` next to the store.
    progress : :class:`Progress`, rich console, callable or None
    """

    def __init__(self, store: Any, flow_dir: str | os.PathLike | None = None, progress: Any = None) -> None:
        from ..store import EnsembleStore, open_store

        self.store = store if isinstance(store, EnsembleStore) else open_store(store, "a")
        self.flow_dir = Path(flow_dir) if flow_dir else default_flow_dir(self.store.path)
        self.ledger = CostLedger.in_directory(self.flow_dir)
        self.progress: Progress = as_progress(progress)
        #: Markov-chain ensembles this pipeline made or reused, with the configurations per chain it used
        self.markov_ensembles: dict[str, int] = {}

    # -- ensembles ---------------------------------------------------------------------------------

    def ensemble(self, theory: Any, update: Any, *, name: str, n: int, n_chains: int, seed: int, n_therm: int,
                 thin: int = 1, block_size: int = 100, start: str = "hot", observables: Sequence[str] | None = None,
                 stage: str = "hmc_base") -> Ensemble:
        """Generate, extend or reuse the Markov-chain ensemble ``name`` of ``theory`` (``update``: an
        :class:`~corrflow.HMCConfig` or :class:`~corrflow.heatbath.HeatbathConfig`) until it holds ``n``
        configurations per chain; return it with the cost of its first ``n`` configurations."""
        from .ensembles import generate_to_store

        store, rep = self.store, self.progress
        have = int(store.commit(name)["committed"]) if name in store else 0
        key = f"hmc/{name}"
        self.markov_ensembles[name] = max(int(n), self.markov_ensembles.get(name, 0))
        if have >= n:
            rep.log(f"  [dim]{stage}: {name} holds {have} configurations per chain (reused)[/]")
            return Ensemble(store, name, theory, int(n), int(store.spec(name).n_chains), self._stored_cost(f"hmc/{name}", name, n))
        total = n_therm + n * thin
        before = n_therm + have * thin if have else 0
        clock = Clock()

        def prog(d: int, t: int, st: dict) -> None:
            if d > n_therm:  # production blocks only (thermalisation runs another compiled program)
                clock.tick(d)
            acc = st.get("acceptance", math.nan)
            rep.update(stage, d, total, f"acc {acc:.2f}" if math.isfinite(acc) else "")

        obs = tuple(observables) if observables is not None else default_observables(theory)
        summ = generate_to_store(store, name, theory, update, n_traj=n, n_chains=n_chains, seed=seed, n_therm=n_therm,
                                 thin=thin, block_size=block_size, observables=obs, start=start,
                                 resume=name in store, progress=prog)
        rep.finish(stage)
        self.ledger.record(key, clock.cost(total - before), summ.seconds, summ.committed, accumulate=have > 0)
        rep.log(f"  {stage}: {name} +{summ.n_new} -> {summ.committed} per chain, acceptance {summ.acceptance:.3f}, "
                f"{summ.seconds:.1f} s")
        return Ensemble(store, name, theory, int(n), int(n_chains), self._stored_cost(f"hmc/{name}", name, n))

    def _stored_cost(self, key: str, name: str, n: int) -> float:
        """Cost of the first ``n`` configurations per chain of ensemble ``name``, made by the step ``key``
        (``hmc/<name>``, ``flow/<name>``, ...): the ledger's record, or for an ensemble made outside this flow directory
        (``corrflow generate`` / ``corrflow correlate``, another pipeline) the cost recorded in its commit record, in
        the ledger's definition (:func:`corrflow.pipeline.ensembles.recorded_cost`); NaN if neither."""
        from .ensembles import recorded_cost

        cost = self.ledger.cost(key, n)
        return cost if math.isfinite(cost) else recorded_cost(self.store, name, n)

    # -- flows -------------------------------------------------------------------------------------

    def flow(self, source: Ensemble, target: Any, flow_settings: Any, training: Any, *,
             stage: str = "train") -> TrainedFlow:
        """Train, resume or reuse the flow ``source.theory -> target`` on ``training.n_train`` configurations of
        ``source`` (:func:`training_configs`).  The checkpoint directory is named by the shift and a hash of
        everything that determines the flow except the number of epochs, so a longer training resumes it; a
        checkpoint that finished its epochs (or stopped early: converged / target ESS) is reused."""
        from ..flows.train import held_out_summary, kept_epoch, load_checkpoint, resume_kwargs, train, worse_than_start

        base_x, target_x = exact_theory(source.theory), exact_theory(target)
        validate_shift(base_x, target_x)
        check_exact_weights(base_x, "training a flow", TRAINING_REMEDY)
        flow = flow_settings.make(base_x)
        cfg = training.config(len(base_x.shape), getattr(flow, "kind", "residual"), bool(getattr(flow, "net_width", 0)))
        ident = {"base": base_x.params(), "target": target_x.params(), "flow": flow.describe(),
                 "n_train": int(training.n_train), "source": source.name, "train": cfg.fingerprint()}
        if training.held_out:
            ident["held_out"] = int(training.held_out)
        tag = _hash(ident)
        ckpt = self.flow_dir / f"{source.name}__to_{shift_tag(base_x, target_x)}__{tag}"
        key = f"train/{ckpt.name}"
        rep = self.progress
        kwargs: dict[str, Any] = {}
        configs = None
        if (ckpt / "checkpoint.json").exists():
            ck = load_checkpoint(ckpt)
            if ck["epoch"] >= cfg.epochs or ck["stopped"] in ("converged", "target_ess", "patience"):
                h = ck["history"]
                rep.log(f"  [dim]{stage}: flow {ckpt.name} ({ck['epoch']} epochs, weight ESS {h[0]['ess']:.3f} -> "
                        f"{kept_epoch(h)['ess']:.3f}) (reused)[/]")
                return self._trained(ckpt, ck, self.ledger.seconds(key), self.ledger.count(key))
            configs, held = source.training_configs(training.n_train, training.held_out, training.streamed)
            kwargs = resume_kwargs(ck, len(configs), cfg)
        if configs is None:
            configs, held = source.training_configs(training.n_train, training.held_out, training.streamed)
        if held is None and cfg.patience:
            cfg = dataclasses.replace(cfg, patience=0)
        clock = Clock()
        start_epoch = int(kwargs.get("start_epoch", 0))
        # the cost is recorded after every epoch, so an interrupted training keeps the cost of its finished epochs;
        # epochs whose cost was never recorded (interrupted by an older corrflow) are charged at this run's rate
        prev_s, prev_w = (self.ledger.seconds(key), self.ledger.wall(key)) if kwargs else (0.0, 0.0)

        def charge(epoch: int) -> None:
            s = prev_s + clock.cost(epoch - start_epoch) if math.isfinite(prev_s) else clock.cost(epoch)
            self.ledger.record(key, s, (prev_w if math.isfinite(prev_w) else 0.0) + clock.wall, len(configs))

        def prog(e: int, r: dict) -> None:
            clock.tick(e)
            charge(e)
            rep.update(stage, e, cfg.epochs, f"loss {r['loss']:.4f} ESS {r['ess']:.3f}")

        def within(it: int, d: int, m: int) -> None:  # a Gauss-Newton iteration's derivative pass
            rep.update(stage, it - 1, cfg.epochs, f"iteration {it}: {d}/{m} configurations")

        res = train(flow, base_x, target_x, configs, cfg, checkpoint=ckpt, progress=prog, held_out=held,
                    batch_progress=within, **kwargs)
        rep.finish(stage)
        charge(len(res.history) - 1)
        h = res.history
        held_msg = held_out_summary(h) or ""
        if held_msg:
            asked = f" of {training.held_out} asked" if len(held) < training.held_out else ""
            held_msg = f" ({len(held)} held out{asked}; {held_msg})"
        rep.log(f"  {stage}: {len(h) - 1} epochs on {len(configs)} configurations{held_msg}, weight ESS "
                f"{h[0]['ess']:.3f} -> {kept_epoch(h)['ess']:.3f}, {clock.wall:.1f} s")
        warning = worse_than_start(h)
        if warning:
            rep.log(f"  [yellow]{stage}: {warning}[/]")
        return self._trained(ckpt, load_checkpoint(ckpt), self.ledger.seconds(key), len(configs))

    @staticmethod
    def _trained(ckpt: Path, ck: dict[str, Any], cost: float, n_train: int) -> TrainedFlow:
        return TrainedFlow(ckpt, ck["id"], ck["flow"], ck["params"], ck["base"], ck["target"], ck["history"],
                           int(ck["epoch"]), cost, int(n_train))

    # -- paired ensembles --------------------------------------------------------------------------

    def paired(self, base: Ensemble, target: Any, flow: TrainedFlow | None, *, batch: int = 64, seed: int = 0,
               name: str | None = None, stage: str | None = None, weights: str = "exact", n_noise: int = 4
               ) -> PairedEnsemble:
        """Push every configuration of ``base`` through ``flow`` (``None``: the identity, direct reweighting)
        into the paired ensemble ``name`` (default ``<base>__flow_<id>`` / ``<base>__direct_<shift>``), or reuse
        it; return it with the cost of its first ``base.n`` configurations.

        ``weights="stochastic"`` (two-flavour fermions, lattices of any size): the gauge action and Jacobian
        exactly, the determinant ratio by the unbiased estimator with ``n_noise`` noise vectors per configuration
        (:func:`corrflow.pipeline.correlate_to_store` with ``det_noise``; default name suffix ``__noise<n>``).
        """
        from .paired import correlate_to_store, direct_to_store

        base_x, target_x = exact_theory(base.theory), exact_theory(target)
        validate_shift(base_x, target_x)
        stage = stage or ("direct" if flow is None else "flow")
        det_noise = determinant_noise(base_x, weights, n_noise)
        if not det_noise:
            check_exact_weights(base_x)
        if name is None:
            name = (f"{base.name}__direct_{shift_tag(base_x, target_x)}" if flow is None
                    else f"{base.name}__flow_{flow.id[:10]}") + (f"__noise{det_noise}" if det_noise else "")
        expect = "identity" if flow is None else flow.id
        store, rep = self.store, self.progress
        n_base = int(store.commit(base.name)["committed"])
        key = f"{stage}/{name}"
        have = 0
        if name in store:
            fid = store.spec(name).flow.get("flow_id")
            if fid != expect:
                raise ValueError(f"ensemble {name!r} in the store was made with flow {fid}, expected {expect}; delete "
                                 "it or use another store")
            have = int(store.commit(name)["committed"])
        if have >= n_base:
            rep.log(f"  [dim]{stage}: {name} pairs {have} configurations per chain (reused)[/]")
        else:
            clock = Clock()

            def prog(d: int, t: int) -> None:
                clock.tick(d)
                rep.update(stage, d, t)

            if flow is None:
                tgt = {k: v for k, v in target_x.params().items() if base_x.params().get(k) != v}
                summ = direct_to_store(store, base.name, name, tgt, batch=batch, seed=seed, progress=prog,
                                       det_noise=det_noise)
            else:
                summ = correlate_to_store(store, base.name, name, checkpoint=flow.checkpoint, batch=batch, seed=seed,
                                          progress=prog, det_noise=det_noise)
            rep.finish(stage)
            self.ledger.record(key, clock.cost(summ.committed - have), clock.wall, summ.committed,
                               accumulate=have > 0)
            rep.log(f"  {stage}: {name} {summ.committed} per chain, weight ESS fraction "
                    f"{summ.weight_ess_fraction:.3f}, {clock.wall:.1f} s")
        self._check_pairing(base, name)
        return PairedEnsemble(base, target_x, flow, name, self._stored_cost(key, name, base.n))

    def _check_pairing(self, base: Ensemble, name: str) -> None:
        src_t = _read(self.store, name, "source_traj", base.n)
        src_c = _read(self.store, name, "source_chain", base.n)
        base_t = np.asarray(self.store.array(base.name, "traj")[:base.n])
        if not (np.all(src_t == base_t[None, :]) and np.all(src_c == np.arange(src_c.shape[0])[:, None])):
            raise ValueError(f"ensemble {name!r} is not paired row by row with {base.name!r}; the store is "
                             "inconsistent")

    # -- measurements ------------------------------------------------------------------------------

    def measure(self, ensemble: Ensemble | PairedEnsemble, observables: Sequence[str], *, grid: Any = None,
                batch: int = 16, stage: str | None = None) -> float:
        """Measure stored ``observables`` (e.g. ``wilson_flow`` with the flow-time ``grid``) on every committed
        configuration of a stored ensemble that lacks them (:func:`corrflow.pipeline.measure_stored`); return the
        cost of the measurement on the run's ``n`` configurations per chain."""
        from .measurements import measure_stored

        name = ensemble.name
        store = self.store
        key = f"{'+'.join(observables)}/{name}"
        spec = store.spec(name)
        n_all = int(store.commit(name)["committed"])
        stage = stage or f"{'+'.join(observables)} {name}"
        clock = Clock()

        def prog(d: int, t: int) -> None:
            clock.tick(d)
            self.progress.update(stage, d, t)

        summ = measure_stored(store, name, list(observables), flow=grid, batch=batch, progress=prog)
        self.progress.finish(stage)
        n_new = max(summ.measured.values()) if summ.measured else 0
        if n_new == 0:
            self.progress.log(f"  [dim]{stage}: measured ({n_all} per chain) (reused)[/]")
        else:
            self.ledger.record(key, clock.cost(n_new * spec.n_chains), clock.wall, n_all, accumulate=n_new < n_all)
            self.progress.log(f"  {stage}: +{n_new} per chain, {clock.wall:.1f} s")
        return self.ledger.cost(key, ensemble.n)

    def measure_batches(self, key: dict[str, Any], links: np.ndarray,
                        fn: Callable[..., dict[str, np.ndarray]], *, stage: str,
                        outputs: tuple[str, ...]) -> tuple[dict[str, np.ndarray], float]:
        """Measurements that live outside the store (pion correlators, the tangent estimator's terms), cached in
        ``<flow dir>/measurements/<hash>/`` and costed in the ledger, in batches that can be interrupted and resumed.

        ``fn(flat_links, progress, resume, on_batch)`` -> ``{name: (N, ...)}`` for the names ``outputs`` on the
        chain-major configurations ``(N, ...)``, calling ``on_batch(stop, flat)`` after every batch (the protocol of
        :func:`corrflow.pipeline.map_batches` and :mod:`corrflow.tangent.terms`); ``key``: everything the values
        depend on (a digest of the configurations is added).  What is done is saved as it goes (at most
        :data:`~corrflow.pipeline.resumable.SAVE_EVERY` seconds apart;
        :func:`corrflow.pipeline.resumable.run_in_batches`), so the same call after an interruption continues at the
        first configuration not done, and a finished one is read back (also a finished ``<hash>.npz`` of
        earlier versions).  Returns ``({name: (chains, n, ...)}, cost)``, the cost of all configurations (cached or
        resumed ones at their recorded cost, ledger definition)."""
        from .resumable import run_in_batches, saved_batches

        links = np.asarray(links)
        chains = links.shape[:2]
        flat = links.reshape((-1,) + links.shape[2:])
        n = len(flat)
        digest = hashlib.sha256(np.ascontiguousarray(flat).tobytes()).hexdigest()[:16]
        h = _hash({**key, "links": digest})
        ledger_key = f"measure/{h}"
        directory = self.flow_dir / "measurements"
        out: dict[str, np.ndarray] | None = None
        legacy = directory / f"{h}.npz"
        if legacy.exists():
            try:
                with np.load(legacy, allow_pickle=False) as z:
                    out = {k: np.asarray(z[k]) for k in outputs}
            except (OSError, ValueError, KeyError):
                out = None
        ck_key = {"kind": "corrflow-pipeline-batches", "key": h, "n": n}
        if out is None:
            saved, saved_cost = saved_batches(directory / h, ck_key, outputs)
            if saved and len(saved[0]) == n:
                out = dict(zip(outputs, saved))
                if not math.isfinite(self.ledger.seconds(ledger_key)):
                    self.ledger.record(ledger_key, saved_cost, math.nan, n)
        if out is not None:
            self.progress.log(f"  [dim]{stage}: cached ({h})[/]")
            return {k: v.reshape(chains + v.shape[1:]) for k, v in out.items()}, self.ledger.seconds(ledger_key)
        clock = Clock()

        def prog(d: int, t: int) -> None:
            self.progress.update(stage, d, t)

        res, seconds, first = run_in_batches(directory / h, ck_key, outputs,
                                             lambda resume, on_batch: fn(flat, prog, resume, on_batch))
        self.progress.finish(stage)
        out = {k: np.asarray(res[k]) for k in outputs}
        self.ledger.record(ledger_key, seconds, clock.wall, n)
        resumed = f" ({first} resumed)" if first else ""
        self.progress.log(f"  {stage}: {n} configurations{resumed}, {clock.wall:.1f} s")
        return {k: v.reshape(chains + v.shape[1:]) for k, v in out.items()}, self.ledger.seconds(ledger_key)
