r"""Shared pipeline of the analyses: base ensemble, independent ensemble, flow, paired ensembles.

    from analysis.workflow import prepare
    pe = prepare("data/x.zarr", base, target, n_configs=1000, n_therm=200, seed=0,
                 hmc=HMCConfig(0.2, 5), flow_epochs=30)
    pe.base_links, pe.flowed_links, pe.log_w          # paired: row i of each belongs to base config U_i

What :func:`prepare` does (every step goes through the store and is reused, resumed or extended)
------------------------------------------------------------------------------------------------
1. HMC ensemble at the base theory ``a`` (:func:`corrflow.generate.generate_to_store`), ``n_chains`` chains
   with seed ``seed``;
2. independent HMC ensemble at the target theory ``a'`` (the uncorrelated baseline), seed
   ``independent_seed`` (default ``seed + 1``);
3. a gauge-equivariant residual flow ``f: a -> a'`` trained on ``n_train`` base configurations (reverse KL,
   :func:`corrflow.flows.train.train`); checkpoint in ``flow_dir`` (default ``<store stem>_flows/``), reused
   when it matches the settings and extended (resumed) when fewer epochs are done;
4. the flowed ensemble ``f(U_i)`` with ``log w_i = -S_{a'}(f(U_i)) + S_a(U_i) + log J_f(U_i)``
   (:func:`corrflow.correlate.correlate_to_store`) and the direct-reweighting ensemble
   (``f`` = identity, ``log w_i = -S_{a'}(U_i) + S_a(U_i)``, :func:`corrflow.correlate.direct_to_store`).

Ensemble names in the store: ``<ensemble_name>_seed<seed>`` (``+ "_pf"`` for pseudofermion HMC) for the HMC
ensembles, ``<base>__flow_<checkpoint id>`` and ``<base>__direct_<shift>`` for the paired ones.

Conventions
-----------
* Theories are corrflow theory objects (:func:`corrflow.make_theory`): pure gauge
  (:class:`~corrflow.theories.WilsonGaugeAction`) or with Wilson fermions
  (:class:`~corrflow.theories.WilsonFermionAction`).  ``base`` and ``target`` must have the same group, lattice
  and flavour content and differ in at least one action parameter (``beta``, ``xi``, ``lam``, ``mass``).
* Fermions: ``hmc_det`` selects the HMC algorithm (``"exact"``: dense determinant; ``"pseudofermion"``: CG);
  default: the ``det`` of the theory passed.  Weights and flow training always use the *exact* action
  (``det="exact"``, dense log-determinant), or with ``weights="stochastic"`` the gauge part exactly and the
  determinant ratio by the unbiased estimator :func:`corrflow.theories.fermions.log_det_ratio_estimate`
  (``n_noise`` noise vectors; two flavours only).  Training always needs the exact determinant.
* Chains: arrays are **chain-major** concatenations: rows ``c*n .. (c+1)*n - 1`` of ``base_links``,
  ``flowed_links``, ``log_w``, ``log_w_direct`` are chain ``c`` of the base ensemble in Monte Carlo order
  (``n = n_configs``); :meth:`PairedEnsembles.chains` reshapes to ``(n_chains, n, ...)`` for error analyses
  that treat chains as replicas.  ``independent_links`` likewise with ``n_independent`` per chain.
* Costs are steady-state wall-clock seconds measured when a step ran: the rate between the first and the last
  progress report of the step (HMC production blocks, training epochs, flow batches) times the work done, so the
  one-time JIT compilation is excluded (it would otherwise be charged to whichever step compiles a shared kernel
  first: the independent HMC reuses the base's compiled program).  Raw wall times, compilation included, are in
  ``info["wall_seconds"]``.  Both are kept in ``<flow_dir>/workflow_timings.json`` so that a re-run that reuses
  the store still accounts for them; when only part of a stored ensemble is used, its cost is scaled by the
  fraction used.  A step whose cost was never measured (e.g. an ensemble made by the CLI) gets NaN.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "run_cli",
    "PairedEnsembles",
    "RichWorkflowProgress",
    "WorkflowProgress",
    "exact_theory",
    "hmc_ensemble_name",
    "parameter_shift",
    "prepare",
]

COST_KEYS = ("hmc_base", "hmc_independent", "train", "flow", "direct")


# ----------------------------------------------------------------------------------------------
# result
# ----------------------------------------------------------------------------------------------


@dataclass
class PairedEnsembles:
    """Paired (flow-correlated) and independent ensembles for one parameter shift ``a -> a'``.

    Attributes
    ----------
    base, target : theory objects
        As passed to :func:`prepare` (``det`` as used by the HMC).  Use :func:`exact_theory` for actions
        with the exact determinant.
    base_links : ndarray ``(n_chains * n, *link_shape)``
        Base configurations ``U_i`` (chain-major, Monte Carlo order within each chain).
    flowed_links : ndarray, same shape
        ``f(U_i)``; row ``i`` is the image of ``base_links[i]`` (checked against the stored pairing).
    log_w : ndarray ``(n_chains * n,)``
        ``-S_{a'}(f(U_i)) + S_a(U_i) + log J_f(U_i)`` (flowed reweighting; ``<w>_a = Z_{a'}/Z_a``).
    log_w_direct : ndarray ``(n_chains * n,)``
        ``-S_{a'}(U_i) + S_a(U_i)`` (direct reweighting).
    independent_links : ndarray ``(n_chains * m, *link_shape)``
        Independent HMC ensemble at ``a'`` (chain-major).
    costs : dict
        Steady-state seconds (compilation excluded; module docstring): ``hmc_base``, ``hmc_independent``, ``train``, ``flow`` (flow application including the
        weights and their determinants, and the store writes), ``direct`` (direct-reweighting weights).
    info : dict
        ``names`` (store ensemble names), ``flow`` (checkpoint path, id, epochs, training ESS history ends),
        ``weight_ess_fraction`` (``flowed``, ``direct``), ``tau_int_plaquette`` (``base``, ``independent``),
        ``acceptance``, ``wall_seconds`` (per step, compilation included), ``shift`` (parameter name and
        ``a' - a``), ``settings``.
    n_chains : int
        Chains of the base ensemble (and of the independent one).
    """

    base: Any
    target: Any
    base_links: np.ndarray
    flowed_links: np.ndarray
    log_w: np.ndarray
    log_w_direct: np.ndarray
    independent_links: np.ndarray
    costs: dict[str, float]
    info: dict = field(default_factory=dict)
    n_chains: int = 1

    @property
    def n(self) -> int:
        """Base configurations per chain."""
        return len(self.base_links) // self.n_chains

    @property
    def n_independent(self) -> int:
        """Independent configurations per chain."""
        return len(self.independent_links) // self.n_chains

    def chains(self, x: np.ndarray) -> np.ndarray:
        """Reshape a chain-major array ``(n_chains * k, ...)`` to ``(n_chains, k, ...)``."""
        x = np.asarray(x)
        if len(x) % self.n_chains:
            raise ValueError(f"array of length {len(x)} is not a chain-major layout of {self.n_chains} chains")
        return x.reshape((self.n_chains, len(x) // self.n_chains) + x.shape[1:])

    @property
    def shift(self) -> tuple[str, float]:
        """``(parameter name, a' - a)`` of the (first) parameter that differs."""
        return parameter_shift(self.base, self.target)


# ----------------------------------------------------------------------------------------------
# progress
# ----------------------------------------------------------------------------------------------


class WorkflowProgress:
    """Progress sink of :func:`prepare` (this base class is silent).

    ``update(stage, done, total, extra)`` is called during a step (``stage`` one of ``hmc_base``,
    ``hmc_independent``, ``train``, ``flow``, ``direct``); ``log(message)`` once per finished or reused step.
    """

    def update(self, stage: str, done: int, total: int, extra: str = "") -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def finish(self, stage: str) -> None:
        """A step ended (close its bar)."""


class _CallableProgress(WorkflowProgress):
    def __init__(self, fn: Callable[..., None]) -> None:
        self.fn = fn

    def update(self, stage: str, done: int, total: int, extra: str = "") -> None:
        self.fn(stage, done, total, extra)


class RichWorkflowProgress(WorkflowProgress):
    """Rich progress bars (one per step, transient) and log lines on a ``rich.console.Console``."""

    _LABELS: ClassVar[dict[str, str]] = {"hmc_base": "HMC base", "hmc_independent": "HMC independent", "train": "train flow",
               "flow": "apply flow", "direct": "direct weights"}

    def __init__(self, console: Any) -> None:
        self.console = console
        self._prog: Any = None
        self._tasks: dict[str, Any] = {}

    def _progress(self) -> Any:
        if self._prog is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._prog = Progress(TextColumn("  [bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[extra]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                  console=self.console, transient=True, disable=not self.console.is_terminal)
            self._prog.start()
        return self._prog

    def update(self, stage: str, done: int, total: int, extra: str = "") -> None:
        prog = self._progress()
        if stage not in self._tasks:
            self._tasks[stage] = prog.add_task(self._LABELS.get(stage, stage), total=total, extra=extra)
        prog.update(self._tasks[stage], completed=done, total=total, extra=extra)

    def finish(self, stage: str) -> None:
        if self._prog is not None and stage in self._tasks:
            self._prog.remove_task(self._tasks.pop(stage))
        if self._prog is not None and not self._tasks:
            self._prog.stop()
            self._prog = None

    def log(self, message: str) -> None:
        self.console.print(message)


def _as_progress(progress: Any) -> WorkflowProgress:
    if progress is None:
        return WorkflowProgress()
    if isinstance(progress, WorkflowProgress):
        return progress
    if callable(progress):
        return _CallableProgress(progress)
    raise TypeError("progress must be None, a WorkflowProgress or a callable (stage, done, total, extra)")


# ----------------------------------------------------------------------------------------------
# theories
# ----------------------------------------------------------------------------------------------


def _is_fermion(theory: Any) -> bool:
    return hasattr(theory, "det") and hasattr(theory, "gauge")


def exact_theory(theory: Any) -> Any:
    """The theory with the exact (dense) fermion determinant; pure-gauge theories unchanged."""
    return theory.replace(det="exact") if _is_fermion(theory) else theory


def parameter_shift(base: Any, target: Any) -> tuple[str, float]:
    """``(name, a' - a)`` of the first action parameter (in ``params()`` order) that differs."""
    pb, pt = base.params(), target.params()
    for k in pb:
        if pt.get(k) != pb[k]:
            return k, float(pt[k]) - float(pb[k])
    raise ValueError(f"base and target have the same parameters {pb}; nothing to correlate")


def _shift_tag(base: Any, target: Any) -> str:
    pb, pt = base.params(), target.params()
    return "_".join(f"{k}{pt[k]:g}" for k in pb if pt.get(k) != pb[k])


def _validate_theories(base: Any, target: Any) -> None:
    for th, what in ((base, "base"), (target, "target")):
        if not (hasattr(th, "params") and hasattr(th, "group") and hasattr(th, "action")):
            raise TypeError(f"{what} must be a corrflow theory (corrflow.make_theory), got {type(th).__name__}")
    if type(base) is not type(target):
        raise ValueError(f"base ({type(base).__name__}) and target ({type(target).__name__}) must be the same kind of "
                         "theory (both pure gauge or both with fermions)")
    if base.group.name != target.group.name or tuple(base.shape) != tuple(target.shape):
        raise ValueError(f"base ({base.group.name} {base.shape}) and target ({target.group.name} {target.shape}) "
                         "must have the same group and lattice")
    if _is_fermion(base) and base.n_flavors != target.n_flavors:
        raise ValueError(f"base and target have different numbers of flavours ({base.n_flavors}, {target.n_flavors})")
    parameter_shift(base, target)  # raises when nothing differs


def hmc_ensemble_name(theory: Any, seed: int, hmc_det: str | None = None) -> str:
    """Store name of an HMC ensemble of ``theory``: ``<ensemble_name>_seed<seed>`` (``_pf`` for pseudofermions)."""
    from corrflow.store import ensemble_name

    name = f"{ensemble_name(theory.theory_name, theory.shape, theory.params())}_seed{int(seed)}"
    if _is_fermion(theory) and (hmc_det or theory.det) == "pseudofermion":
        name += "_pf"
    return name


# ----------------------------------------------------------------------------------------------
# timing ledger
# ----------------------------------------------------------------------------------------------


class _Ledger:
    """Seconds each step took when it ran and how many configurations it produced (JSON file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, json.JSONDecodeError):
            self.data = {}

    def seconds(self, key: str) -> float:
        v = self.data.get(key)
        return float(v.get("seconds", math.nan)) if isinstance(v, dict) else math.nan

    def count(self, key: str) -> int:
        v = self.data.get(key)
        return int(v.get("n", 0)) if isinstance(v, dict) else 0

    def wall(self, key: str) -> float:
        v = self.data.get(key)
        return float(v.get("wall", math.nan)) if isinstance(v, dict) else math.nan

    def add(self, key: str, seconds: float, wall: float, n: int, *, accumulate: bool) -> None:
        """Record the steady-state cost ``seconds`` (and the wall time) of a step that now covers ``n``
        configurations (added to the earlier ones when ``accumulate``, i.e. the step extended an earlier one)."""
        prev, prev_wall = (self.seconds(key), self.wall(key)) if accumulate else (0.0, 0.0)
        total = seconds + (prev if math.isfinite(prev) else math.nan)
        total_wall = wall + (prev_wall if math.isfinite(prev_wall) else math.nan)
        self.data[key] = {"seconds": float(total), "wall": float(total_wall), "n": int(n)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)

    def cost(self, key: str, n_used: int) -> float:
        """Seconds of the step scaled to ``n_used`` of the ``n`` configurations it produced."""
        s, n = self.seconds(key), self.count(key)
        return s * min(1.0, n_used / n) if n > 0 else math.nan


class _Clock:
    """Wall time of a step and its steady-state cost (one-time JIT compilation excluded).

    ``tick(done)`` is called from the step's progress callback after each unit of work (block, epoch, batch);
    the steady-state rate is measured between the first and the last tick, so the first unit (which pays the
    compilation) does not count, and ``cost(total)`` = rate x ``total`` units.  With fewer than two ticks the
    wall time is returned.
    """

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.ticks: list[tuple[float, float]] = []

    def tick(self, done: float) -> None:
        self.ticks.append((time.perf_counter(), float(done)))

    @property
    def wall(self) -> float:
        return time.perf_counter() - self.t0

    def cost(self, total: float) -> float:
        if len(self.ticks) >= 2:
            (ta, da), (tb, db) = self.ticks[0], self.ticks[-1]
            if db > da and tb > ta:
                return (tb - ta) / (db - da) * float(total)
        return self.wall


# ----------------------------------------------------------------------------------------------
# steps
# ----------------------------------------------------------------------------------------------


def _observables(theory: Any) -> tuple[str, ...]:
    if theory.group.is_abelian and theory.ndim == 2:
        return ("plaquette", "topological_charge")
    return ("plaquette",)


def _ensure_hmc(store: Any, stage: str, name: str, theory: Any, hmc: Any, *, n: int, n_chains: int, seed: int,
                n_therm: int, thin: int, block_size: int, start: str, ledger: _Ledger, rep: WorkflowProgress) -> float:
    """Generate / extend / reuse HMC ensemble ``name``; return the cost of its first ``n`` configurations."""
    from corrflow.pipeline import generate_to_store

    have = int(store.commit(name)["committed"]) if name in store else 0
    key = f"hmc/{name}"
    if have >= n:
        rep.log(f"  [dim]{stage}: {name} holds {have} configurations per chain (reused)[/]")
        return ledger.cost(key, n)
    total = n_therm + n * thin
    before = n_therm + have * thin if have else 0
    clock = _Clock()

    def prog(d: int, t: int, st: dict) -> None:
        if d > n_therm:  # production blocks only (thermalisation blocks are another compiled program)
            clock.tick(d)
        rep.update(stage, d, total, f"acc {st['acceptance']:.2f}")

    summ = generate_to_store(store, name, theory, hmc, n_traj=n, n_chains=n_chains, seed=seed, n_therm=n_therm,
                             thin=thin, block_size=block_size, observables=_observables(theory), start=start,
                             resume=name in store, progress=prog)
    rep.finish(stage)
    ledger.add(key, clock.cost(total - before), summ.seconds, summ.committed, accumulate=have > 0)
    rep.log(f"  {stage}: {name} +{summ.n_new} -> {summ.committed} per chain, acceptance {summ.acceptance:.3f}, "
            f"{summ.seconds:.1f} s")
    return ledger.cost(key, n)


def _read(store: Any, name: str, var: str, n: int) -> np.ndarray:
    """``(chains, n, ...)`` of a stored per-trajectory variable (first ``n`` committed entries)."""
    have = int(store.commit(name)["committed"])
    if have < n:
        raise ValueError(f"ensemble {name!r} holds {have} configurations per chain, {n} needed")
    return np.asarray(store.root[name][var][:, :n])


def _training_configs(store: Any, name: str, n: int, n_chains: int, n_train: int) -> np.ndarray:
    per_chain = max(2, min(n, -(-n_train // n_chains)))
    pos = np.unique(np.linspace(0, n - 1, per_chain).astype(int))  # spread over each chain
    links = np.asarray(store.root[name]["links"][:, :n])
    return links[:, pos].reshape((-1,) + links.shape[2:])


def _flow_settings_hash(base: Any, target: Any, flow: Any, cfg: Any, n_train: int, base_name: str) -> str:
    d = {"base": base.params(), "target": target.params(), "flow": flow.describe(), "n_train": int(n_train),
         "source": base_name, "train": cfg.fingerprint()}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def _ensure_flow(store: Any, base_name: str, base_x: Any, target_x: Any, *, n: int, n_chains: int, epochs: int,
                 loops: Sequence[str], sweeps: int, n_train: int, batch_size: int, learning_rate: float,
                 train_seed: int, flow_dir: Path, ledger: _Ledger, rep: WorkflowProgress, optimizer: str = "auto",
                 degree: int = 0) -> tuple[Path, dict, float]:
    """Train / resume / reuse the flow ``base -> target``; return (checkpoint dir, checkpoint, seconds).
    ``optimizer="auto"``: L-BFGS in 4D, Adam otherwise (:func:`resolve_optimizer`)."""
    from corrflow.flows import make_flow
    from corrflow.flows.train import TrainConfig, load_checkpoint, resolve_optimizer, resume_kwargs, train

    flow = make_flow(base_x.group, base_x.shape, loops=tuple(loops), n_sweeps=sweeps, degree=degree)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=train_seed,
                      optimizer=resolve_optimizer(optimizer, len(base_x.shape)))
    tag = _flow_settings_hash(base_x, target_x, flow, cfg, n_train, base_name)
    ckpt = flow_dir / f"{base_name}__to_{_shift_tag(base_x, target_x)}__{tag}"
    key = f"train/{ckpt.name}"
    kwargs: dict[str, Any] = {}
    configs = None
    if (ckpt / "checkpoint.json").exists():
        ck = load_checkpoint(ckpt)
        if ck["epoch"] >= epochs or ck["stopped"] in ("converged", "target_ess"):  # complete
            h = ck["history"]
            rep.log(f"  [dim]train: flow {ckpt.name} ({ck['epoch']} epochs, weight ESS {h[0]['ess']:.3f} -> "
                    f"{h[-1]['ess']:.3f}) (reused)[/]")
            return ckpt, ck, ledger.seconds(key)
        configs = _training_configs(store, base_name, n, n_chains, n_train)
        kwargs = resume_kwargs(ck, len(configs), cfg)
    if configs is None:
        configs = _training_configs(store, base_name, n, n_chains, n_train)
    clock = _Clock()
    start_epoch = int(kwargs.get("start_epoch", 0))

    def prog(e: int, r: dict) -> None:
        clock.tick(e)
        rep.update("train", e, epochs, f"loss {r['loss']:.4f} ESS {r['ess']:.3f}")

    res = train(flow, base_x, target_x, configs, cfg, checkpoint=ckpt, progress=prog, **kwargs)
    rep.finish("train")
    seconds = clock.cost(len(res.history) - 1 - start_epoch)
    ledger.add(key, seconds, clock.wall, len(configs), accumulate=bool(kwargs))
    ck = load_checkpoint(ckpt)
    h = res.history
    rep.log(f"  train: {len(h) - 1} epochs on {len(configs)} configurations, weight ESS {h[0]['ess']:.3f} -> "
            f"{h[-1]['ess']:.3f}, {clock.wall:.1f} s")
    return ckpt, ck, ledger.seconds(key)


def _ensure_correlated(store: Any, stage: str, base_name: str, name: str, make: Callable[[Any], Any], *,
                       ledger: _Ledger, rep: WorkflowProgress, n: int, expect_flow_id: str) -> float:
    """Write (or resume / reuse) a flowed or direct ensemble; return the cost of its first ``n`` configurations."""
    n_base = int(store.commit(base_name)["committed"])
    key = f"{stage}/{name}"
    have = 0
    if name in store:
        fid = store.spec(name).flow.get("flow_id")
        if fid != expect_flow_id:
            raise ValueError(f"ensemble {name!r} in the store was made with flow {fid}, expected {expect_flow_id}; "
                             "delete it or use another store")
        have = int(store.commit(name)["committed"])
    if have >= n_base:
        rep.log(f"  [dim]{stage}: {name} pairs {have} configurations per chain (reused)[/]")
        return ledger.cost(key, n)
    clock = _Clock()

    def prog(d: int, t: int) -> None:
        clock.tick(d)
        rep.update(stage, d, t)

    summ = make(prog)
    rep.finish(stage)
    seconds = clock.cost(summ.committed - have)
    ledger.add(key, seconds, clock.wall, summ.committed, accumulate=have > 0)
    rep.log(f"  {stage}: {name} {summ.committed} per chain, weight ESS fraction {summ.weight_ess_fraction:.3f}, "
            f"{clock.wall:.1f} s")
    return ledger.cost(key, n)


def _check_pairing(store: Any, base_name: str, name: str, n: int) -> None:
    """Raise if the stored pairing of ``name`` is not row-by-row the base ensemble's first ``n`` configurations."""
    src_t = _read(store, name, "source_traj", n)
    src_c = _read(store, name, "source_chain", n)
    base_t = np.asarray(store.root[base_name]["traj"][:n])
    if not (np.all(src_t == base_t[None, :]) and np.all(src_c == np.arange(src_c.shape[0])[:, None])):
        raise ValueError(f"ensemble {name!r} is not paired row by row with {base_name!r}; the store is inconsistent")


def _stochastic_weights(flow: Any, params: Any, base_x: Any, target_x: Any, links: np.ndarray, key: Any,
                        n_noise: int, batch: int, identity: bool, progress: Callable[[int, int], None]
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``(f(U), log w)`` with the gauge action and Jacobian exact and the determinant ratio estimated
    (:func:`log_det_ratio_estimate`, key ``fold_in(key, first row of the batch)``)."""
    import jax
    import jax.numpy as jnp

    from corrflow.theories.fermions import log_det_ratio_estimate

    @jax.jit
    def one(u: Any, k: Any) -> Any:
        if identity:
            uf, logj = u, jnp.zeros(u.shape[0])
        else:
            uf, logj = flow.forward(params, u)
        lw = -target_x.gauge.action(uf) + base_x.gauge.action(u) + logj
        return uf, lw + log_det_ratio_estimate(k, base_x, u, target_x, uf, n_noise=n_noise)

    outs, lws = [], []
    batch = min(batch, len(links))
    for lo in range(0, len(links), batch):
        blk = np.asarray(links[lo:lo + batch])
        k = len(blk)
        if k < batch:  # pad to a fixed shape (one compiled program); padded rows are dropped
            blk = np.concatenate([blk, np.repeat(blk[-1:], batch - k, axis=0)])
        uf, lw = one(jnp.asarray(blk), jax.random.fold_in(key, lo))
        outs.append(np.asarray(uf)[:k])
        lws.append(np.asarray(lw)[:k])
        progress(min(len(links), lo + batch), len(links))
    return np.concatenate(outs), np.concatenate(lws)


def _tau_plaquette(x: np.ndarray) -> float:
    from corrflow.stats import gamma_method

    try:
        return float(gamma_method(np.asarray(x, float)).tau_int)
    except ValueError:
        return math.nan


# ----------------------------------------------------------------------------------------------
# the pipeline
# ----------------------------------------------------------------------------------------------



def run_cli(body: Callable[[], None], console: Any,
            errors: tuple[type[BaseException], ...] = (ValueError, TypeError, FloatingPointError)) -> None:
    """Run the body of an analysis command: ``errors`` and :class:`corrflow.store.StoreError` become a one-line
    message and exit status 2, Ctrl-C exits with 130 (everything committed to the store is kept)."""
    import typer

    from corrflow.store import StoreError

    try:
        body()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: everything committed to the store is kept; rerun to continue")
        raise typer.Exit(130) from None
    except (*errors, StoreError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None


def prepare(
    store: str | os.PathLike | Any,
    base: Any,
    target: Any,
    *,
    n_configs: int,
    n_therm: int,
    seed: int,
    hmc: Any,
    flow_epochs: int,
    n_chains: int = 1,
    thin: int = 1,
    n_independent: int | None = None,
    independent_seed: int | None = None,
    hmc_independent: Any = None,
    hmc_det: str | None = None,
    weights: str = "exact",
    n_noise: int = 4,
    flow_loops: Sequence[str] = ("plaquette",),
    flow_sweeps: int = 2,
    n_train: int = 256,
    batch_size: int = 64,
    learning_rate: float = 0.02,
    train_seed: int = 0,
    optimizer: str = "auto",
    flow_degree: int = 0,
    flow_dir: str | os.PathLike | None = None,
    block_size: int = 100,
    start: str = "hot",
    progress: Any = None,
) -> PairedEnsembles:
    """Generate / reuse everything for the shift ``base -> target`` and return the paired arrays.

    Parameters
    ----------
    store : path or :class:`corrflow.store.EnsembleStore`
        zarr store (created if absent); every step is resumable through it.
    base, target : corrflow theories
        The parameter shift ``a -> a'`` (module docstring: what may differ).
    n_configs, n_therm, seed, hmc : int, int, int, HMCConfig
        Stored configurations per chain, thermalisation trajectories and seed of the base ensemble; HMC settings.
    flow_epochs : int
        Training epochs of the flow (a stored checkpoint with fewer epochs is resumed).
    n_chains, thin : int
        Chains per HMC ensemble; trajectories per stored configuration.
    n_independent, independent_seed, hmc_independent
        Size (per chain; default ``n_configs``), seed (default ``seed + 1``) and HMC settings (default ``hmc``) of
        the independent ensemble at ``a'``.
    hmc_det : {"exact", "pseudofermion"}, optional
        Fermion algorithm of the HMC (default: the theories' ``det``); ignored for pure gauge theories.
    weights : {"exact", "stochastic"}
        Exact weights through the store (default), or the determinant ratio from ``n_noise`` Gaussian noise
        vectors (fermions, ``n_f = 2``; computed in memory, not stored).
    flow_loops, flow_sweeps, n_train, batch_size, learning_rate, train_seed, optimizer, flow_degree
        Flow structure and training settings (``n_train`` base configurations spread over the chains;
        ``optimizer`` "auto" (L-BFGS in 4D, Adam in 2D), "adam" or "lbfgs"; ``flow_degree`` of the coefficient
        polynomials in the staple norm, 0 for constants).
    flow_dir : path, optional
        Flow checkpoints and the timing ledger (default ``<store stem>_flows`` next to the store).
    block_size : int
        HMC trajectories per jitted block (and store chunk).
    start : {"hot", "cold"}
        Initial links of the HMC chains (Haar-random or unit); part of the ensembles' stored recipe.
    progress : None, :class:`WorkflowProgress` or callable ``(stage, done, total, extra)``

    Returns
    -------
    PairedEnsembles

    Raises
    ------
    ValueError / TypeError
        Incompatible theories, bad sizes or options; :class:`corrflow.store.StoreError` for a store that holds an
        ensemble of the same name made with other settings.
    """
    import jax

    from corrflow.pipeline import correlate_to_store, direct_to_store
    from corrflow.flows.train import resolve_optimizer
    from corrflow.stats import weight_ess_fraction
    from corrflow.store import EnsembleStore, open_store

    rep = _as_progress(progress)
    _validate_theories(base, target)
    for v, what in ((n_configs, "n_configs"), (n_chains, "n_chains"), (thin, "thin"), (flow_epochs, "flow_epochs"),
                    (block_size, "block_size"), (n_train, "n_train"), (flow_sweeps, "flow_sweeps")):
        if int(v) != v or v < 1:
            raise ValueError(f"{what} must be a positive integer, got {v!r}")
    if n_configs < 10:
        raise ValueError(f"n_configs must be >= 10 (error analysis), got {n_configs}")
    if int(n_therm) != n_therm or n_therm < 0:
        raise ValueError(f"n_therm must be a non-negative integer, got {n_therm!r}")
    if start not in ("hot", "cold"):
        raise ValueError(f"start must be 'hot' or 'cold', got {start!r}")
    if weights not in ("exact", "stochastic"):
        raise ValueError(f"weights must be 'exact' or 'stochastic', got {weights!r}")
    fermions = _is_fermion(base)
    if weights == "stochastic" and not (fermions and base.n_flavors == 2):
        raise ValueError("weights='stochastic' estimates a two-flavour determinant ratio; it needs a fermion theory "
                         "with n_flavors = 2")
    if hmc_det is not None and fermions and hmc_det not in ("exact", "pseudofermion"):
        raise ValueError(f"hmc_det must be 'exact' or 'pseudofermion', got {hmc_det!r}")
    n_ind = int(n_configs if n_independent is None else n_independent)
    if n_ind < 10:
        raise ValueError(f"n_independent must be >= 10, got {n_ind}")
    ind_seed = int(seed + 1 if independent_seed is None else independent_seed)
    if ind_seed == seed:
        raise ValueError("independent_seed must differ from seed (the independent ensemble would not be independent)")

    st = store if isinstance(store, EnsembleStore) else open_store(store, "a")
    fdir = Path(flow_dir) if flow_dir is not None else _default_flow_dir(st.path)
    ledger = _Ledger(fdir / "workflow_timings.json")

    base_x, target_x = exact_theory(base), exact_theory(target)
    base_h = base.replace(det=hmc_det) if (fermions and hmc_det) else base
    target_h = target.replace(det=hmc_det) if (fermions and hmc_det) else target
    det_name = (hmc_det or base.det) if fermions else None
    base_name = hmc_ensemble_name(base_h, seed, det_name)
    ind_name = hmc_ensemble_name(target_h, ind_seed, det_name)
    if base_name == ind_name:
        raise ValueError("base and independent ensembles would share a store name")

    costs: dict[str, float] = {}
    costs["hmc_base"] = _ensure_hmc(st, "hmc_base", base_name, base_h, hmc, n=n_configs, n_chains=n_chains, seed=seed,
                                    n_therm=n_therm, thin=thin, block_size=block_size, start=start, ledger=ledger,
                                    rep=rep)
    costs["hmc_independent"] = _ensure_hmc(st, "hmc_independent", ind_name, target_h, hmc_independent or hmc,
                                           n=n_ind, n_chains=n_chains, seed=ind_seed, n_therm=n_therm, thin=thin,
                                           block_size=block_size, start=start, ledger=ledger, rep=rep)
    ckpt, ck, costs["train"] = _ensure_flow(
        st, base_name, base_x, target_x, n=n_configs, n_chains=n_chains, epochs=flow_epochs, loops=flow_loops,
        sweeps=flow_sweeps, n_train=n_train, batch_size=batch_size, learning_rate=learning_rate,
        train_seed=train_seed, flow_dir=fdir, ledger=ledger, rep=rep, optimizer=optimizer, degree=flow_degree)

    base_links = _read(st, base_name, "links", n_configs)
    ind_links = _read(st, ind_name, "links", n_ind)
    link_shape = base_links.shape[2:]
    names = {"base": base_name, "independent": ind_name}
    if weights == "exact":
        flowed_name = f"{base_name}__flow_{ck['id'][:10]}"
        direct_name = f"{base_name}__direct_{_shift_tag(base_x, target_x)}"
        costs["flow"] = _ensure_correlated(
            st, "flow", base_name, flowed_name, ledger=ledger, rep=rep, n=n_configs, expect_flow_id=ck["id"],
            make=lambda pr: correlate_to_store(st, base_name, flowed_name, checkpoint=ckpt, batch=block_size,
                                               seed=seed, progress=pr))
        tgt_params = {k: v for k, v in target_x.params().items() if base_x.params().get(k) != v}
        costs["direct"] = _ensure_correlated(
            st, "direct", base_name, direct_name, ledger=ledger, rep=rep, n=n_configs, expect_flow_id="identity",
            make=lambda pr: direct_to_store(st, base_name, direct_name, tgt_params, batch=block_size, seed=seed,
                                            progress=pr))
        for nm in (flowed_name, direct_name):
            _check_pairing(st, base_name, nm, n_configs)
        flowed = _read(st, flowed_name, "links", n_configs).reshape((-1,) + link_shape)
        log_w = _read(st, flowed_name, "log_weight", n_configs).reshape(-1)
        log_w_direct = _read(st, direct_name, "log_weight", n_configs).reshape(-1)
        names.update(flowed=flowed_name, direct=direct_name)
    else:
        flat = base_links.reshape((-1,) + link_shape)
        key = jax.random.PRNGKey(seed)
        walls = {}
        for stage, identity, k in (("flow", False, 1), ("direct", True, 2)):
            clock = _Clock()

            def prog(d: int, t: int, stage: str = stage, clock: _Clock = clock) -> None:
                clock.tick(d)
                rep.update(stage, d, t)

            links_out, lw_out = _stochastic_weights(ck["flow"], ck["params"], base_x, target_x, flat,
                                                    jax.random.fold_in(key, k), n_noise, block_size, identity, prog)
            rep.finish(stage)
            costs[stage], walls[stage] = clock.cost(len(flat)), clock.wall
            if identity:
                log_w_direct = lw_out
            else:
                flowed, log_w = links_out, lw_out
        names.update(flowed="(in memory, stochastic determinant ratio)", direct="(in memory)")

    keys = {"hmc_base": f"hmc/{base_name}", "hmc_independent": f"hmc/{ind_name}", "train": f"train/{ckpt.name}",
            "flow": f"flow/{names['flowed']}", "direct": f"direct/{names['direct']}"}
    wall = {k: ledger.wall(v) for k, v in keys.items()}
    if weights == "stochastic":
        wall.update(walls)
    plaq_b = _read(st, base_name, "plaquette", n_configs)
    plaq_i = _read(st, ind_name, "plaquette", n_ind)
    acc = {k: float(np.mean(_read(st, nm, "accepted", n))) for k, nm, n in
           (("base", base_name, n_configs), ("independent", ind_name, n_ind))}
    pname, dval = parameter_shift(base_x, target_x)
    hist = ck["history"]
    info = {
        "names": names,
        "flow": {"checkpoint": str(ckpt), "id": ck["id"], "epochs": ck["epoch"], "loops": list(flow_loops),
                 "sweeps": int(flow_sweeps), "train_ess_initial": hist[0]["ess"], "train_ess_final": hist[-1]["ess"]},
        "weight_ess_fraction": {"flowed": weight_ess_fraction(log_w), "direct": weight_ess_fraction(log_w_direct)},
        "tau_int_plaquette": {"base": _tau_plaquette(plaq_b), "independent": _tau_plaquette(plaq_i)},
        "acceptance": acc,
        "wall_seconds": wall,
        "shift": {"parameter": pname, "delta": dval},
        "store": str(st.path),
        "settings": {"n_configs": int(n_configs), "n_independent": n_ind, "n_chains": int(n_chains),
                     "n_therm": int(n_therm), "thin": int(thin), "start": start, "seed": int(seed),
                     "independent_seed": ind_seed,
                     "hmc": hmc.as_dict(), "hmc_independent": (hmc_independent or hmc).as_dict(),
                     "hmc_det": det_name, "weights": weights, "n_noise": int(n_noise) if weights == "stochastic" else None,
                     "flow_epochs": int(flow_epochs), "n_train": int(n_train), "batch_size": int(batch_size),
                     "learning_rate": float(learning_rate), "train_seed": int(train_seed),
                     "optimizer": resolve_optimizer(optimizer, len(base_x.shape)), "flow_degree": int(flow_degree),
                     "base_params": base_x.params(), "target_params": target_x.params()},
    }
    missing = [k for k in COST_KEYS if not math.isfinite(costs.get(k, math.nan))]
    if missing:
        rep.log(f"  [yellow]cost of {', '.join(missing)} unknown (made outside this workflow); reported as NaN[/]")
    return PairedEnsembles(base=base, target=target, base_links=base_links.reshape((-1,) + link_shape),
                           flowed_links=np.asarray(flowed), log_w=np.asarray(log_w, float),
                           log_w_direct=np.asarray(log_w_direct, float),
                           independent_links=ind_links.reshape((-1,) + link_shape), costs=costs, info=info,
                           n_chains=int(n_chains))


def _default_flow_dir(store_path: str) -> Path:
    p = Path(store_path)
    stem = p.name.removesuffix(".zarr")
    return p.with_name(stem + "_flows")
