"""What the pipeline's steps pass on: the stored :class:`Ensemble`, the :class:`TrainedFlow` and the
:class:`PairedEnsemble` (objects, not names to reload), and the helpers that check and name a parameter shift.

Arrays read from ensembles are ``(chains, n, ...)`` in Monte Carlo order; a paired ensemble is row by row the image
of its base (``source_chain``, ``source_traj`` checked by :meth:`corrflow.pipeline.Pipeline.paired`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..compare import changed_parameters

__all__ = [
    "Ensemble",
    "PairedEnsemble",
    "TrainedFlow",
    "default_observables",
    "exact_theory",
    "held_out_positions",
    "is_fermion",
    "check_exact_weights",
    "TRAINING_REMEDY",
    "determinant_noise",
    "parameter_shift",
    "shift_tag",
    "training_configs",
    "training_positions",
    "training_size",
    "validate_shift",
]


# ----------------------------------------------------------------------------------------------
# theories
# ----------------------------------------------------------------------------------------------


def is_fermion(theory: Any) -> bool:
    """True for theories with Wilson fermions (they carry ``det`` and a ``gauge`` part)."""
    return hasattr(theory, "det") and hasattr(theory, "gauge")


def exact_theory(theory: Any) -> Any:
    """The theory with the exact (dense) fermion determinant; pure-gauge theories unchanged."""
    return theory.replace(det="exact") if is_fermion(theory) else theory


#: the way out for training beyond the dense limit: flows transfer between volumes, and their weights on the large
#: lattice can be stochastic
TRAINING_REMEDY = ("train on a smaller lattice at the same couplings (dense determinants) and apply the flow here "
                   "with `corrflow correlate --det-noise N` (volume transfer, stochastic determinant ratio); "
                   "quark-mass derivatives come without determinants from `corrflow derivative STORE ENSEMBLE "
                   "--param mass`")


def check_exact_weights(theory: Any, what: str = "reweighting", remedy: str | None = None) -> None:
    """One-line ``ValueError`` when ``what`` (training a flow, reweighting) would need the exact fermion determinant
    ratio of a Dirac matrix too large for dense algebra (:func:`corrflow.observables.fermions.check_dense`:
    su3-wilson 4^4 takes ~13 s and ~1 GB per configuration and evaluation on a 2-core CPU); pure gauge passes.
    ``remedy``: the way out the message offers (default: the tangent estimator for quark-mass derivatives)."""
    if is_fermion(theory):
        from ..observables.fermions import check_dense

        check_dense(theory, f"{what} with dynamical quarks takes the exact determinant ratio of",
                    remedy=remedy or "quark-mass derivatives on this lattice come without determinants from `corrflow "
                                     "derivative STORE ENSEMBLE --param mass` (the tangent estimator, stochastic "
                                     "traces)")


def determinant_noise(theory: Any, weights: str, n_noise: int) -> int:
    """Noise vectors per configuration of the paired ensembles' determinant ratio for ``weights``: 0 for
    ``"exact"`` (dense), ``n_noise`` for ``"stochastic"`` (:func:`corrflow.pipeline.correlate_to_store`'s
    ``det_noise``); one-line ``ValueError`` for another ``weights``, a stochastic ratio without two flavours of
    quarks, or ``n_noise < 1``."""
    if weights not in ("exact", "stochastic"):
        raise ValueError(f"weights must be 'exact' or 'stochastic', got {weights!r}")
    if weights == "exact":
        return 0
    if not (is_fermion(theory) and theory.n_flavors == 2):
        raise ValueError("weights='stochastic' estimates a two-flavour determinant ratio; it needs a fermion theory "
                         "with n_flavors = 2")
    if int(n_noise) < 1:
        raise ValueError(f"weights='stochastic' needs n_noise >= 1 noise vectors, got {n_noise}")
    return int(n_noise)


def parameter_shift(base: Any, target: Any) -> tuple[str, float]:
    """``(name, a' - a)`` of the first action parameter (in ``params()`` order) that differs (theories; for
    stored ensembles, which must differ in one parameter, :func:`corrflow.compare.parameter_shift`)."""
    diff = changed_parameters(base.params(), target.params())
    if not diff:
        raise ValueError(f"base and target have the same parameters {base.params()}; nothing to correlate")
    k, d = next(iter(diff.items()))
    return k, float(d)


def shift_tag(base: Any, target: Any) -> str:
    """``beta2.2`` / ``mass0.22_lam0.1``: the target's parameters that differ from the base's."""
    pt = target.params()
    return "_".join(f"{k}{pt[k]:g}" for k in changed_parameters(base.params(), pt))


def validate_shift(base: Any, target: Any) -> None:
    """Raise ``ValueError`` / ``TypeError`` unless ``base -> target`` is a parameter shift of one theory."""
    for th, what in ((base, "base"), (target, "target")):
        if not (hasattr(th, "params") and hasattr(th, "group") and hasattr(th, "action")):
            raise TypeError(f"{what} must be a corrflow theory (corrflow.make_theory), got {type(th).__name__}")
    if type(base) is not type(target):
        raise ValueError(f"base ({type(base).__name__}) and target ({type(target).__name__}) must be the same kind of "
                         "theory (both pure gauge or both with fermions)")
    if base.group.name != target.group.name or tuple(base.shape) != tuple(target.shape):
        raise ValueError(f"base ({base.group.name} {base.shape}) and target ({target.group.name} {target.shape}) "
                         "must have the same group and lattice")
    if is_fermion(base) and base.n_flavors != target.n_flavors:
        raise ValueError(f"base and target have different numbers of flavours ({base.n_flavors}, {target.n_flavors})")
    parameter_shift(base, target)


def default_observables(theory: Any) -> tuple[str, ...]:
    """Observables measured during generation by default: the plaquette (and the charge in 2D U(1))."""
    if theory.group.is_abelian and theory.ndim == 2:
        return ("plaquette", "topological_charge")
    return ("plaquette",)


def training_positions(n: int, n_chains: int, n_train: int) -> np.ndarray:
    """Positions along each chain of the training configurations: ``ceil(n_train / n_chains)`` per chain (all ``n``
    when the chain is that short), spread evenly over the first ``n`` configurations.  The one rule for picking
    training configurations (pipeline, ``corrflow train``)."""
    per_chain = max(1, min(int(n), -(-int(n_train) // int(n_chains))))
    pos = np.unique(np.linspace(0, int(n) - 1, per_chain).astype(int))
    if len(pos) * n_chains < 2:
        raise ValueError(f"need at least 2 training configurations, got {len(pos) * n_chains} (raise n_train)")
    return pos


def held_out_positions(n: int, train_positions: np.ndarray, n_chains: int, held_out: int) -> np.ndarray:
    """Positions of ``ceil(held_out / n_chains)`` held-out configurations per chain, spread evenly over the first
    ``n`` positions that are not training positions (the neighbours of the training configurations); empty if
    ``held_out`` is 0 or nothing is left."""
    free = np.setdiff1d(np.arange(int(n)), np.asarray(train_positions))
    per_chain = min(len(free), -(-int(held_out) // int(n_chains))) if held_out else 0
    if per_chain < 1:
        return np.zeros(0, int)
    return free[np.unique(np.linspace(0, len(free) - 1, per_chain).astype(int))]


def training_size(n: int, n_chains: int, n_train: int, held_out: int = 0) -> int:
    """How many training configurations :func:`training_sets` takes for ``n_train`` requested: ``n_train``, unless
    chains of ``n`` configurations are too short for it and ``held_out`` held-out ones together -- then the training
    set leaves the held-out set up to a quarter of each chain (at least one configuration per chain, two in all), so
    that a requested held-out selection is never silently lost to a short ensemble."""
    per_train = min(int(n), -(-int(n_train) // int(n_chains)))
    per_held = -(-int(held_out) // int(n_chains)) if held_out > 0 else 0
    if not per_held or per_train + per_held <= n:
        return int(n_train)
    keep = min(per_held, max(int(n) // 4, -(-2 // int(n_chains))))
    if (int(n) - keep) * int(n_chains) < 2:  # too short to hold anything out
        return int(n_train)
    return min(int(n_train), (int(n) - keep) * int(n_chains))  # never more than asked for


#: ``stream=None``: training sets (training and held-out configurations together) above this many bytes are read
#: from the store one batch at a time instead of loaded into memory
STREAM_BYTES = 2**30


def training_sets(store: Any, name: str, n: int, n_chains: int, n_train: int, held_out: int = 0,
                  stream: bool | None = None) -> tuple[Any, Any, bool]:
    """``(training, held-out, streamed)``: the training configurations of the first ``n`` of each chain of stored
    ensemble ``name`` (:func:`training_positions` of :func:`training_size`: fewer than ``n_train`` where the chains
    are too short for both sets) and up to ``held_out`` held-out ones (:func:`held_out_positions`; None if fewer than
    2), chain-major.  ``stream``: True -- on-demand sources
    (:class:`corrflow.store.StoredConfigs`, read one batch at a time by the training), False -- arrays in memory,
    None -- streamed when both together exceed :data:`STREAM_BYTES`.  The one rule of ``corrflow train`` and the
    pipeline; training gives the same result either way."""
    pos = training_positions(n, n_chains, training_size(n, n_chains, n_train, held_out))
    chains = np.arange(int(n_chains))
    train = store.stored_configs(name, np.repeat(chains, len(pos)), np.tile(pos, len(chains)))
    hpos = held_out_positions(n, pos, n_chains, held_out)
    held = None
    if len(hpos):
        held = store.stored_configs(name, np.repeat(chains, len(hpos)), np.tile(hpos, len(chains)))
        held = held.subset(slice(0, held_out))
        if len(held) < 2:
            held = None
    if stream is None:
        stream = train.nbytes + (held.nbytes if held is not None else 0) > STREAM_BYTES
    if not stream:
        train, held = train.load(), (held.load() if held is not None else None)
    return train, held, bool(stream)


def training_configs(links: np.ndarray, n_train: int) -> np.ndarray:
    """The training configurations (:func:`training_positions`) of ``links`` ``(chains, n, ...)``, chain-major."""
    links = np.asarray(links)
    pos = training_positions(links.shape[1], links.shape[0], n_train)
    return links[:, pos].reshape((-1,) + links.shape[2:])


# ----------------------------------------------------------------------------------------------
# step results
# ----------------------------------------------------------------------------------------------


def _read(store: Any, name: str, var: str, n: int) -> np.ndarray:
    """``(chains, n, ...)`` of a stored per-trajectory variable (first ``n`` committed entries)."""
    have = int(store.commit(name)["committed"])
    if have < n:
        raise ValueError(f"ensemble {name!r} holds {have} configurations per chain, {n} needed")
    if var not in store.root[name]:
        raise ValueError(f"{var!r} is not stored in ensemble {name!r}")
    return np.asarray(store.array(name, var)[:, :n])  # a damaged chunk raises naming chain and trajectories


@dataclass(frozen=True)
class Ensemble:
    """A Markov-chain ensemble in the store (HMC, heat bath or imported), of which a run uses the first ``n``
    configurations of each of its ``n_chains`` chains; ``cost`` of those (ledger definition)."""

    store: Any = field(repr=False)
    name: str
    theory: Any = field(repr=False)
    n: int
    n_chains: int
    cost: float

    def read(self, var: str) -> np.ndarray:
        """A stored per-configuration variable, ``(chains, n, ...)``."""
        return _read(self.store, self.name, var, self.n)

    def links(self) -> np.ndarray:
        """Configurations ``(chains, n, *link_shape)``."""
        return self.read("links")

    def observables(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """``{name: (chains, n[, ...])}`` float64 arrays of stored observables."""
        return {v: np.asarray(self.read(v), dtype=np.float64) for v in names}

    def acceptance(self) -> float:
        return float(np.mean(self.read("accepted")))

    def training_configs(self, n_train: int, held_out: int = 0, stream: bool | None = None) -> tuple[Any, Any]:
        """``(training, held-out)`` configurations of this ensemble's first ``n`` (:func:`training_sets`: in memory,
        or read from the store one batch at a time when ``stream`` or when large), chain-major; held-out None if
        fewer than 2."""
        train, held, _ = training_sets(self.store, self.name, self.n, self.n_chains, n_train, held_out, stream)
        return train, held


@dataclass(frozen=True)
class TrainedFlow:
    """A trained flow ``base -> target``: its checkpoint directory and id, the flow and parameters, the training
    history (``[{"epoch", "loss", "ess"}, ...]``, ESS on the training set) and the cost of training it."""

    checkpoint: Path
    id: str
    flow: Any = field(repr=False)
    params: Any = field(repr=False)
    base: Any = field(repr=False)
    target: Any = field(repr=False)
    history: list[dict[str, float]] = field(repr=False)
    epochs: int
    cost: float
    n_train: int

    @property
    def kept(self) -> dict[str, float]:
        """The history record of the parameters in use: the epoch held-out selection kept (possibly 0, the
        identity), else the last (:func:`corrflow.flows.train.kept_epoch`)."""
        from ..flows.train import kept_epoch

        return kept_epoch(self.history)

    @property
    def train_ess(self) -> tuple[float, float]:
        """Training-set weight ESS fraction before training and of the kept parameters (:attr:`kept`)."""
        return float(self.history[0]["ess"]), float(self.kept["ess"])

    @property
    def held_out_ess(self) -> tuple[float, float] | None:
        """Held-out weight ESS fraction before training and of the kept parameters; None without held-out
        configurations."""
        if "held_ess" not in self.history[-1]:
            return None
        return float(self.history[0]["held_ess"]), float(self.kept["held_ess"])


@dataclass(frozen=True)
class PairedEnsemble:
    """``f(U_i)`` with ``log w_i = -S_{a'}(f(U_i)) + S_a(U_i) + log J_f(U_i)`` for every configuration ``U_i`` of
    ``base`` (``flow is None``: the identity, i.e. direct reweighting), paired row by row with the base; ``name``
    is the store ensemble."""

    base: Ensemble
    target: Any = field(repr=False)
    flow: TrainedFlow | None
    name: str
    cost: float

    @property
    def n(self) -> int:
        return self.base.n

    @property
    def store(self) -> Any:
        return self.base.store

    def read(self, var: str) -> np.ndarray:
        return _read(self.base.store, self.name, var, self.n)

    def links(self) -> np.ndarray:
        """``f(U_i)``, ``(chains, n, *link_shape)`` (the base links for direct reweighting)."""
        return self.base.links() if self.flow is None else self.read("links")

    def log_weights(self) -> np.ndarray:
        """``log w``, ``(chains, n)``."""
        return np.asarray(self.read("log_weight"), dtype=np.float64)

    def observables(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Observables measured on ``f(U_i)`` when the flowed ensemble was written, ``(chains, n)``."""
        return {v: np.asarray(self.read(v), dtype=np.float64) for v in names}

    def weight_ess_fraction(self) -> float:
        from ..stats import weight_ess_fraction

        return weight_ess_fraction(self.log_weights())
