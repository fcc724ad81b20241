"""Training settings, result and error of :func:`corrflow.flows.train.train` (shared by its optimisers and the
checkpoints)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import numpy as np

Array = jax.Array

__all__ = ["OPTIMIZERS", "FlowTrainingError", "TrainConfig", "TrainResult"]

OPTIMIZERS = ("adam", "lbfgs", "linear")


class FlowTrainingError(RuntimeError):
    """Training diverged (non-finite loss or parameters); the last good parameters are kept."""


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (see :mod:`corrflow.flows.train` for the three optimisers).

    ``optimizer="adam"``: ``learning_rate`` decays with a cosine schedule over ``epochs`` (passes over the
    training set in mini-batches of ``batch_size``).  ``optimizer="lbfgs"``: ``epochs`` is the maximum number
    of L-BFGS iterations, ``batch_size`` the micro-batch of the full-batch loss, ``learning_rate`` is unused.
    ``optimizer="linear"`` (residual flows): ``epochs`` Gauss–Newton steps on the variance of the log-weights, no
    learning rate.  ``corrflow train`` picks per flow: :func:`corrflow.flows.train.resolve_optimizer`.
    """

    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 0.02
    target_ess: float = 1.0  # stop early when the ESS fraction reaches this (1.0: never)
    seed: int = 0
    init_scale: float = 0.0
    optimizer: str = "adam"
    patience: int = 0  # with held-out configurations: stop after this many epochs without improvement (0: never)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if not (self.learning_rate > 0 and np.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0 <= self.target_ess <= 1:
            raise ValueError(f"target_ess is a weight ESS fraction in [0, 1], got {self.target_ess}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
        if isinstance(self.patience, bool) or self.patience != int(self.patience) or self.patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {self.patience!r}")

    def fingerprint(self) -> dict[str, Any]:
        """The settings that determine a trained flow, except ``epochs`` (training may be extended), for the
        reuse hashes of the analyses; ``optimizer`` is left out when it is the default ``"adam"`` so that
        flows trained before the option existed keep their hash."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "epochs"}
        if d["optimizer"] == "adam":
            del d["optimizer"]
        if d["patience"] == 0:
            del d["patience"]
        return d


class TrainResult(NamedTuple):
    """What :func:`corrflow.flows.train.train` returns.

    ``params``: the selected parameters (shape ``flow.param_shape``): those of the epoch with the smallest held-out
    var(log w) when held-out configurations were given, the last epoch's otherwise.  ``history``: one dict per epoch
    (epoch 0 = the starting parameters) with ``epoch``, ``loss`` (the reverse-KL loss on the training set, up to a
    constant), ``ess`` (the training set's weight ESS fraction), with held-out configurations ``held_ess`` and
    ``held_var_logw``, and (L-BFGS) ``evals``, the loss evaluations of the iteration.  ``stopped``: why training
    ended -- ``"epochs"`` (all done), ``"target_ess"``, ``"patience"`` (no held-out improvement), or
    ``"converged"`` (L-BFGS / Gauss–Newton)."""

    params: Array
    history: list[dict[str, float]]
    stopped: str
