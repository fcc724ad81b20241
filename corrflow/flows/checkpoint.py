"""Flow checkpoints: the trained flow, its theories and training settings, history and optimiser state, written as one
atomic unit by :mod:`corrflow.store.checkpoints` (JSON + ``.npy``, never pickle) and identified by a content hash of
the parameters and the metadata."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..theories import make_theory
from .build import flow_from_description
from .layers import Flow
from .training_config import TrainConfig

Array = jax.Array

__all__ = ["CHECKPOINT_FORMAT", "checkpoint_id", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_FORMAT = "corrflow-flow-checkpoint"


def _theory_json(th: Any) -> dict[str, Any]:
    return {"group": getattr(th, "theory_name", th.group.name), "shape": list(th.shape), "params": th.params()}


def checkpoint_id(meta: dict[str, Any], params: np.ndarray) -> str:
    """Short content hash identifying a trained flow (parameters + structure + theories)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(params, dtype=np.float64).tobytes())
    h.update(json.dumps({k: meta[k] for k in ("flow", "base", "target")}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def save_checkpoint(path: str | os.PathLike, flow: Flow, params: Array, base: Any, target: Any,
                    config: TrainConfig, epoch: int, history: list[dict[str, float]], opt_state: Any = None,
                    stopped: str | None = None, *, resume_params: Array | None = None) -> str:
    """Write a checkpoint atomically through the store's checkpoint layer (new version, then one pointer rename;
    the previous checkpoint survives any interruption); return its id.  ``stopped`` ("target_ess", "converged" or
    "patience") marks a training run that ended before its last epoch and is complete.  ``params`` is the flow the
    checkpoint stands for (its id); ``resume_params``, when given, is the optimiser's current iterate if that differs
    (held-out model selection kept an earlier epoch), used by :func:`resume_kwargs`."""
    p = np.asarray(params, dtype=np.float64)
    meta = {"format": CHECKPOINT_FORMAT, "version": 1, "flow": flow.describe(), "base": _theory_json(base),
            "target": _theory_json(target), "train": dataclasses.asdict(config), "epoch": int(epoch),
            "history": history}
    if stopped is not None:
        meta["stopped"] = stopped
    meta["id"] = checkpoint_id(meta, p)
    arrays = {"params": p}
    if resume_params is not None:
        arrays["resume_params"] = np.asarray(resume_params, dtype=np.float64)
    if opt_state is not None:
        for i, leaf in enumerate(jax.tree_util.tree_leaves(opt_state)):
            arrays[f"opt_{i}"] = np.asarray(leaf)
    from ..store.checkpoints import write_checkpoint  # the store package is the only layer that writes files

    write_checkpoint(path, meta, arrays)  # one atomic unit: the previous checkpoint survives any interruption
    return meta["id"]


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint: ``{"flow", "params", "base", "target", "config", "epoch", "history", "id",
    "opt_leaves", "stopped", "resume_params"}`` (theories rebuilt with :func:`corrflow.make_theory`; ``stopped`` is
    "target_ess"/"converged"/"patience" for a run that finished early, else None; ``resume_params`` the optimiser's
    iterate when model selection kept an earlier epoch as ``params``, else None).  The flow is rebuilt from its
    recorded description (any kind; checkpoints written before flow kinds existed load as residual flows).  A
    missing, incomplete, damaged or inconsistent checkpoint raises :class:`corrflow.store.CheckpointError` (a
    ``ValueError``) with a one-line reason."""
    from ..store.checkpoints import CheckpointError, read_checkpoint

    meta, arrays = read_checkpoint(path, what="flow checkpoint")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a corrflow flow checkpoint (format {meta.get('format')!r})")
    if "params" not in arrays:
        raise CheckpointError(f"flow checkpoint {path} has no parameter array; the checkpoint is incomplete")
    params = np.asarray(arrays["params"])
    resume = np.asarray(arrays["resume_params"]) if "resume_params" in arrays else None
    opt_leaves = [np.asarray(arrays[f"opt_{i}"]) for i in range(sum(k.startswith("opt_") for k in arrays))]
    if checkpoint_id(meta, params) != meta.get("id"):
        raise CheckpointError(f"checkpoint {path}: parameters do not match the recorded id (corrupt or edited)")
    try:
        flow = flow_from_description(meta["flow"])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: the recorded flow does not make a valid flow ({exc})") from None
    if tuple(params.shape) != tuple(flow.param_shape) or (resume is not None and resume.shape != params.shape):
        raise CheckpointError(f"checkpoint {path}: parameters of shape {tuple(params.shape)} do not fit its flow "
                              f"{meta['flow']} (expected {tuple(flow.param_shape)})")
    th = {k: make_theory(meta[k]["group"], tuple(meta[k]["shape"]), **meta[k]["params"]) for k in ("base", "target")}
    return {"flow": flow, "params": jnp.asarray(params), "base": th["base"], "target": th["target"],
            "config": TrainConfig(**meta["train"]), "epoch": int(meta["epoch"]), "history": meta["history"],
            "id": meta["id"], "opt_leaves": opt_leaves, "stopped": meta.get("stopped"),
            "resume_params": None if resume is None else jnp.asarray(resume)}
