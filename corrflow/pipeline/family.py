"""A family of correlated ensembles: one base ensemble at ``a``, flows to targets ``a'_1 .. a'_K``, the paired
(flowed, optionally direct) ensembles and independent ensembles at every target -- the input of every analysis.

    fam = family(pipe, base_theory, [base_theory.replace(beta=b) for b in betas[1:]], ensemble=..., markov=...,
                 flow=..., training=..., direct=True)
    fam.base.links(); fam.members[k].flowed.log_weights(); fam.members[k].independent.observables(["plaquette"])
    fam.path_costs(measurements)          # the one cost definition of each estimator's path

Steps, each reused / resumed through the store (:class:`~corrflow.pipeline.Pipeline`):

1. the base ensemble (seed ``seed``) and, with ``training.sample == "separate"``, a training chain at the base
   parameters (seed ``seed + 1000``, ``n_train + held_out`` configurations; the flows are then fixed with respect to
   the estimation sample);
2. one flow ``a -> a'_k`` per target, trained on ``training.n_train`` configurations spread over the training
   source (:func:`~corrflow.pipeline.handles.training_positions`), the epoch with the smallest var(log w) on
   ``training.held_out`` others kept (:func:`~corrflow.pipeline.handles.held_out_positions`);
3. every base configuration through every flow (and, with ``direct``, the identity: direct reweighting);
4. independent ensembles at every target (seed ``seed + 1 + k``), the uncorrelated baseline.

Path costs (:meth:`Family.path_costs`, ledger definition in :mod:`corrflow.pipeline.ledger`): every path pays for
the configurations it needs and for measuring its observables on them:

* ``flowed`` = base + training chain + training + flow application + measurements on the base and flowed configurations;
* ``direct`` = base + direct weights + measurements on the base (and, for target-dependent observables, on the base at
  the target parameters);
* ``independent`` = base + independent ensembles + measurements on both (``independent_uses_base=False``: without
  the base, for estimators that use only the independent ensembles, e.g. symmetric differences);
* ``connected`` = base + its measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .handles import Ensemble, PairedEnsemble, TrainedFlow, determinant_noise, exact_theory, is_fermion, validate_shift
from .steps import Pipeline

__all__ = ["Family", "Member", "auto_block_size", "family", "hmc_ensemble_name", "TRAIN_SEED_OFFSET"]

#: The separate training chain uses seed ``seed + TRAIN_SEED_OFFSET``.
TRAIN_SEED_OFFSET = 1000


def hmc_ensemble_name(theory: Any, seed: int, hmc_det: str | None = None) -> str:
    """Store name of a Markov-chain ensemble: ``<ensemble_name>_seed<seed>`` (``_pf`` for pseudofermion HMC)."""
    from ..store import ensemble_name

    name = f"{ensemble_name(theory.theory_name, theory.shape, theory.params())}_seed{int(seed)}"
    if is_fermion(theory) and (hmc_det or theory.det) == "pseudofermion":
        name += "_pf"
    return name


def auto_block_size(n_configs: int, n_therm: int, n_train_per_chain: int | None = None) -> int:
    """Trajectories per jitted block: the greatest common divisor of the ensemble sizes when it is >= 10 (so that
    every ensemble of a run -- base, training chain, independent -- runs the same compiled programs), else
    ``min(100, n_configs)``; at most ``n_configs / 2``, so that production reports progress at least twice and its
    steady-state cost excludes compilation (:mod:`corrflow.pipeline.ledger`).  Results do not depend on it
    (generation is bit-identical for any blocking)."""
    g = math.gcd(n_configs, n_therm) if n_therm else n_configs
    if n_train_per_chain:
        g = math.gcd(g, n_train_per_chain)
    return min(g if g >= 10 else min(100, n_configs), max(1, n_configs // 2))


@dataclass(frozen=True)
class Member:
    """One target of a family: its (exact) theory, flow, flowed and direct paired ensembles and the independent
    ensemble (``direct`` / ``independent`` None when not asked for)."""

    target: Any
    flow: TrainedFlow
    flowed: PairedEnsemble
    direct: PairedEnsemble | None
    independent: Ensemble | None


@dataclass(frozen=True)
class Family:
    """The base ensemble, the training chain (None when training on the base) and one :class:`Member` per
    target."""

    base: Ensemble
    training: Ensemble | None
    members: tuple[Member, ...]

    @property
    def n_chains(self) -> int:
        return self.base.n_chains

    def step_costs(self) -> dict[str, float]:
        """Cost of each kind of step, summed over the targets (ledger definition; NaN where unknown)."""
        ms = self.members
        return {
            "hmc_base": self.base.cost,
            "hmc_training": self.training.cost if self.training is not None else 0.0,
            "train": sum(m.flow.cost for m in ms),
            "flow": sum(m.flowed.cost for m in ms),
            "direct": sum(m.direct.cost for m in ms) if all(m.direct is not None for m in ms) else math.nan,
            "hmc_independent": (sum(m.independent.cost for m in ms)
                                if all(m.independent is not None for m in ms) else math.nan),
        }

    def path_costs(self, measurements: Mapping[str, float] | None = None, *,
                   independent_uses_base: bool = True) -> dict[str, float]:
        """Seconds of each estimator's path (module docstring).  ``measurements``: costs of measuring on the
        ``base``, ``flowed``, ``direct`` and ``independent`` configurations (missing keys: nothing to measure
        there, e.g. observables measured during generation, which the generation cost already holds)."""
        c = self.step_costs()
        m = {k: float(v) for k, v in (measurements or {}).items()}
        mb = m.get("base", 0.0)
        base = c["hmc_base"] + mb
        return {
            "flowed": base + c["hmc_training"] + c["train"] + c["flow"] + m.get("flowed", 0.0),
            "direct": base + c["direct"] + m.get("direct", 0.0),
            "independent": ((base if independent_uses_base else 0.0) + c["hmc_independent"]
                            + m.get("independent", 0.0)),
            "connected": base,
        }

    def info(self) -> dict[str, Any]:
        """Names, flows and weight diagnostics for a record."""
        return {
            "base": self.base.name,
            "training": None if self.training is None else self.training.name,
            "flowed": [m.flowed.name for m in self.members],
            "direct": [None if m.direct is None else m.direct.name for m in self.members],
            "independent": [None if m.independent is None else m.independent.name for m in self.members],
            "flows": [{"checkpoint": str(m.flow.checkpoint), "id": m.flow.id, "epochs": m.flow.epochs,
                       "n_train": m.flow.n_train, "kept_epoch": int(m.flow.kept["epoch"]),
                       "train_ess_initial": m.flow.train_ess[0], "train_ess_final": m.flow.train_ess[1],
                       **({} if m.flow.held_out_ess is None else
                          dict(zip(("held_out_ess_initial", "held_out_ess_final"), m.flow.held_out_ess)))}
                      for m in self.members],
        }


def family(pipe: Pipeline, base_theory: Any, targets: Sequence[Any], *, ensemble: Any, markov: Any, flow: Any,
           training: Any, base_name: str | None = None, independent_names: Sequence[str] | None = None,
           training_name: str | None = None, observables: Sequence[str] | None = None, direct: bool = False,
           independent: bool = True, flow_batch: int | None = None, weights: str = "exact", n_noise: int = 4,
           beta_of: Any = None) -> Family:
    """Build (or reuse) the family ``base_theory -> targets`` (module docstring).

    Parameters
    ----------
    pipe : Pipeline
    base_theory, targets : corrflow theories
        The HMC runs with ``markov.hmc_det`` for fermions; flows, weights and measurements use exact determinants.
    ensemble, markov, flow, training : :class:`~corrflow.pipeline.settings.EnsembleSettings`,
        :class:`~corrflow.pipeline.settings.MarkovSettings`, :class:`~corrflow.pipeline.settings.FlowSettings`,
        :class:`~corrflow.pipeline.settings.TrainingSettings`
    base_name, independent_names, training_name : str, optional
        Store names (default :func:`hmc_ensemble_name` with seeds ``seed``, ``seed + 1 + k``, ``seed + 1000``).
    observables : sequence of str, optional
        Measured during generation (default: plaquette, and the charge in 2D U(1)).
    direct, independent : bool
        Also make the direct-reweighting ensembles / the independent ensembles.
    flow_batch : int, optional
        Configurations per batch when applying flows (default: the HMC block size).
    weights, n_noise
        ``"exact"`` (dense) or ``"stochastic"`` determinant ratios (two flavours, ``n_noise`` noise vectors per
        configuration; any lattice size), both stored (:meth:`Pipeline.paired`).
    beta_of : callable, optional
        ``theory -> beta`` for ``markov.step_scaling == "inverse_sqrt_beta"`` (default ``theory.params()["beta"]``).
    """
    targets = list(targets)
    if not targets:
        raise ValueError("a family needs at least one target theory")
    base_x = exact_theory(base_theory)
    for t in targets:
        validate_shift(base_x, exact_theory(t))
    fermions = is_fermion(base_theory)
    determinant_noise(base_theory, weights, n_noise)  # refused before any HMC
    e = ensemble
    hmc_det = markov.hmc_det if fermions else None
    base_h = base_theory.replace(det=hmc_det) if fermions else base_theory
    targets_h = [t.replace(det=hmc_det) if fermions else t for t in targets]
    sep = training.sample == "separate"
    n_train_chain = training.chain_length(e.n_chains)  # a separate chain holds the training and held-out ones
    block = e.block_size or auto_block_size(e.n_configs, e.n_therm, n_train_chain if sep else None)
    base_name = base_name or hmc_ensemble_name(base_h, e.seed, hmc_det)
    ind_names = list(independent_names) if independent_names is not None else [
        hmc_ensemble_name(t, e.seed + 1 + k, hmc_det) for k, t in enumerate(targets_h)]
    if len(ind_names) != len(targets):
        raise ValueError(f"{len(ind_names)} independent ensemble names for {len(targets)} targets")
    if base_name in ind_names:
        raise ValueError("base and independent ensembles would share a store name")
    rep = pipe.progress

    def beta(th: Any) -> float | None:
        if beta_of is not None:
            return beta_of(th)
        return th.params().get("beta")

    def run(th: Any, name: str, n: int, seed: int, stage: str) -> Ensemble:
        return pipe.ensemble(th, markov.config(beta(th)), name=name, n=n, n_chains=e.n_chains, seed=seed,
                             n_therm=e.n_therm, thin=e.thin, block_size=block, start=e.start,
                             observables=observables, stage=stage)

    base = run(base_h, base_name, e.n_configs, e.seed, "hmc_base")
    train_ens = None
    if sep:
        train_ens = run(base_h, training_name or f"{base_name}_train", n_train_chain, e.seed + TRAIN_SEED_OFFSET,
                        "hmc_training")
    source = train_ens if train_ens is not None else base
    flows = [pipe.flow(source, t, flow, training) for t in targets]
    batch = flow_batch or block
    members = []
    for k, (t, fl) in enumerate(zip(targets, flows)):
        flowed = pipe.paired(base, t, fl, batch=batch, seed=e.seed, weights=weights, n_noise=n_noise)
        dr = pipe.paired(base, t, None, batch=batch, seed=e.seed, weights=weights, n_noise=n_noise) if direct else None
        members.append((exact_theory(t), fl, flowed, dr))
    out = []
    for k, (t, fl, flowed, dr) in enumerate(members):
        ind = run(targets_h[k], ind_names[k], e.n_configs, e.seed + 1 + k, "hmc_independent") if independent else None
        out.append(Member(t, fl, flowed, dr, ind))
    fam = Family(base, train_ens, tuple(out))
    missing = [k for k, v in fam.step_costs().items() if not math.isfinite(v) and not (
        (k == "direct" and not direct) or (k == "hmc_independent" and not independent))]
    if missing:
        rep.log(f"  [yellow]cost of {', '.join(missing)} unknown (made outside the pipeline); reported as NaN[/]")
    return fam
