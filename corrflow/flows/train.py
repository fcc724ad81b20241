"""Training a flow from base-ensemble samples only (reverse KL), with checkpoints.

Loss (docs/physics.md section 3): ``L(theta) = mean_i [ S_{a'}(f_theta(U_i)) - log J_{f_theta}(U_i) ]`` over base
configurations ``U_i ~ p_a``; it equals ``-mean_i log w_i`` up to the theta-independent ``mean_i S_a(U_i)``,
i.e. the reverse KL divergence of the pushed-forward base ensemble from ``p_{a'}`` (up to a constant).
Progress reports the loss and the weight ESS fraction ``(sum w)^2 / (N sum w^2)`` per epoch; training
stops early when the ESS fraction reaches ``target_ess``.

Three optimisers (``TrainConfig.optimizer``):

* ``"adam"``: mini-batches of ``batch_size``, Adam with a cosine-decaying learning rate; an epoch is a pass
  over the training set.  Resume is bit-identical to an uninterrupted run.
* ``"lbfgs"``: full-batch L-BFGS (``scipy.optimize.minimize(method="L-BFGS-B")``) on the exact loss and
  gradient over all training configurations (accumulated over micro-batches of ``batch_size``, so memory
  stays that of one micro-batch); an epoch is one L-BFGS iteration (its line search may evaluate the loss
  more than once: ``evals`` in the history counts them).  Scale invariant: no learning rate to tune.  In
  4D the useful coefficients are tiny (``|c| ~ 5e-4`` for ``d beta = 0.05`` at ``beta = 5.7``) while Adam
  moves every raw parameter by about ``learning_rate`` per step, so Adam either crawls or overshoots;
  L-BFGS finds the optimum in a few iterations (BENCHMARKS.md).  Resume restarts from the checkpointed
  parameters with an empty L-BFGS memory (not bit-identical to an uninterrupted run).
* ``"linear"`` (residual flows): Gauss–Newton on the variance of the log-weights with tied parameters
  (:mod:`corrflow.flows.linear`); an epoch is one least-squares step.  The first step from zero is the tangent fit of
  the flow's layer fields; the default for flows with smoothing terms.

Checkpoints (:mod:`corrflow.flows.checkpoint`, re-exported here) are written through :mod:`corrflow.store.checkpoints`
as one atomic unit (a new version directory, then one pointer rename): metadata (flow structure, theories a and a',
training settings, epoch, history, id) and arrays (parameters and optimizer state, no pickle).  The checkpoint id is a
hash of the parameters and the metadata.  The settings, result and error types live in
:mod:`corrflow.flows.training_config`; the training sets may be read from the store batch by batch
(:mod:`corrflow.flows.batches`).
"""

from __future__ import annotations

import os
from functools import lru_cache, partial
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..store.checkpoints import hold_checkpoint_dir
from .batches import batches, full_batches, training_set, valid_rows
from .build import check_shift
from .checkpoint import CHECKPOINT_FORMAT, checkpoint_id, load_checkpoint, save_checkpoint
from .layers import Flow
from .training_config import OPTIMIZERS, FlowTrainingError, TrainConfig, TrainResult

Array = jax.Array

__all__ = ["TrainConfig", "TrainResult", "FlowTrainingError", "resolve_optimizer", "log_weights", "train",
           "held_out_summary", "kept_epoch", "worse_than_start",
           "save_checkpoint", "load_checkpoint", "checkpoint_id", "resume_kwargs", "CHECKPOINT_FORMAT"]


def kept_epoch(history: Sequence[dict[str, float]]) -> dict[str, float]:
    """The history record of the parameters :func:`train` returns: the epoch with the smallest held-out var(log w)
    (the first of equal ones, as the selection keeps it) with held-out configurations, else the last epoch."""
    if "held_ess" not in history[-1]:
        return history[-1]
    return min(history, key=lambda r: r["held_var_logw"])


def held_out_summary(history: Sequence[dict[str, float]]) -> str | None:
    """``held-out ESS a -> b (epoch e kept, var log w x -> y)``: what held-out selection chose, from the start to
    the kept epoch; None without held-out configurations."""
    h = history
    if "held_ess" not in h[-1]:
        return None
    best = kept_epoch(h)
    return (f"held-out ESS {h[0]['held_ess']:.3f} -> {best['held_ess']:.3f} (epoch {best['epoch']} kept, var log w "
            f"{h[0]['held_var_logw']:.3g} -> {best['held_var_logw']:.3g})")


def worse_than_start(history: Sequence[dict[str, float]], tolerance: float = 0.02) -> str | None:
    """A warning when training without held-out selection ended with a weight ESS on its own training
    configurations more than ``tolerance`` below that of the starting flow (epoch 0, the identity up to
    ``init_scale``): the optimiser followed noise (few configurations, or stochastic fermion weights).  None when
    the history is fine or held-out selection chose the epoch (the start is one of the candidates)."""
    first, last = history[0], history[-1]
    if "held_ess" in last or last["ess"] >= first["ess"] - tolerance:
        return None
    return (f"the trained flow's weight ESS on its own training configurations ({last['ess']:.3f}) is below the "
            f"starting flow's ({first['ess']:.3f}): training followed noise. Train on more configurations, or hold "
            "some out (--held-out) so that the best epoch, the start included, is kept; direct reweighting may do")


class _Selection:
    """Held-out monitoring: per epoch the held-out weight ESS and var(log w) go into the history record; the
    parameters with the smallest held-out var(log w) are kept (model selection) and ``patience`` epochs without
    improvement stop training.  Without held-out configurations it does nothing and selects the last parameters.
    State is recovered from the history on resume (the selected parameters come from the checkpoint)."""

    def __init__(self, flow: Any, base: Any, target: Any, held: Any, batch: int, patience: int,
                 history: list[dict[str, float]], selected: Array | None) -> None:
        self.flow, self.base, self.target, self.batch, self.patience = flow, base, target, batch, patience
        self.held = None if held is None else training_set(held)
        if self.held is not None:
            base.check_links(self.held)
            if self.held.shape[0] < 2:
                raise ValueError(f"need at least 2 held-out configurations, got {self.held.shape[0]}")
        self.best_var, self.best_epoch, self.best_params = np.inf, None, selected
        for r in history:
            if "held_var_logw" in r and r["held_var_logw"] < self.best_var:
                self.best_var, self.best_epoch = r["held_var_logw"], r["epoch"]

    def record(self, rec: dict[str, float], params: Array) -> None:
        if self.held is None:
            return
        n = self.held.shape[0]
        lw = valid_rows([(_eval_logw(self.flow, self.base, self.target, params, x)[0], m)
                         for x, m in full_batches(self.held, n, self.batch)])
        rec["held_ess"] = _ess_fraction(lw)
        rec["held_var_logw"] = float(np.var(lw)) if np.all(np.isfinite(lw)) else float("inf")
        if rec["held_var_logw"] < self.best_var:
            self.best_var, self.best_epoch, self.best_params = rec["held_var_logw"], rec["epoch"], params

    def selected(self, params: Array) -> Array:
        return params if self.held is None or self.best_params is None else self.best_params

    def resume_params(self, params: Array, epoch: int) -> Array | None:
        """The current iterate (of ``epoch``) when it is not the selected one (checkpointed for resume)."""
        return None if self.held is None or self.best_epoch in (None, epoch) else params

    def exhausted(self, epoch: int) -> bool:
        return bool(self.held is not None and self.patience and self.best_epoch is not None
                    and epoch - self.best_epoch >= self.patience)


def resolve_optimizer(optimizer: str, ndim: int, kind: str = "residual", network: bool = False) -> str:
    """``"auto"`` -> ``"linear"`` for residual flows (Gauss–Newton on var(log w) with tied parameters), ``"lbfgs"``
    for plaquette-space flows (a few parameters, converged in ~20 iterations) and for residual flows with network
    coefficients in 4D, ``"adam"`` for those in lower dimensions; other names are checked and passed through.

    Why linear for residual flows (BENCHMARKS.md, "The linear optimiser for every residual flow"): the reverse-KL
    loss of the other optimisers is a sample *mean* whose gradient carries the extensive noise of ``v·∇S - ∇·v``
    (zero mean under the base distribution, variance growing with the volume), while the useful signal is of the
    order of the shift; on a few hundred configurations Adam and L-BFGS follow that noise (at a small quark-mass shift
    the trained flow had 100x the held-out var(log w) of the identity). The sample *variance* of ``log w`` subtracts
    the mean and with it the noise, and the tied parameters leave a handful of coefficients; the smoothing
    coefficients are large and cancelling, which L-BFGS does not find either."""
    if optimizer == "auto":
        if kind == "residual" and not network:
            return "linear"
        return "lbfgs" if ndim >= 4 or kind == "plaquette" else "adam"
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; allowed: auto, {', '.join(OPTIMIZERS)}")
    return optimizer


def log_weights(flow: Flow, params: Array, base: Any, target: Any, u: Array) -> tuple[Array, Array, Array]:
    """``(log w, log J, f(U))`` with ``log w = -S_target(f(U)) + S_base(U) + log J``; batch shapes."""
    uf, logj = flow.forward(params, u)
    return -target.action(uf) + base.action(u) + logj, logj, uf


def _ess_fraction(log_w: np.ndarray) -> float:
    lw = np.asarray(log_w, float).ravel()
    lw = lw - lw.max()
    w = np.exp(lw)
    return float(w.sum() ** 2 / (len(w) * (w**2).sum()))


def train(
    flow: Flow,
    base: Any,
    target: Any,
    configs: np.ndarray,
    config: TrainConfig = TrainConfig(),
    *,
    params: Array | None = None,
    opt_state: Any = None,
    start_epoch: int = 0,
    history: list[dict[str, float]] | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint: str | os.PathLike | None = None,
    held_out: np.ndarray | None = None,
    selected: Array | None = None,
    replay: Sequence[np.ndarray] | None = None,
    batch_progress: Callable[[int, int, int], None] | None = None,
) -> TrainResult:
    """Train ``flow`` to map ``base`` onto ``target`` from base configurations ``configs`` ``(n, ...)``.

    ``configs`` (and ``held_out``): an array, or an on-demand source such as :class:`corrflow.store.StoredConfigs`
    that is read one batch at a time (:mod:`corrflow.flows.batches`): training sets larger than memory, same results.

    ``held_out``: base configurations not used for training ``(m, ...)``.  Then every epoch records the held-out
    weight ESS (``held_ess``) and ``held_var_logw`` in the history, the result (and the checkpoint's ``params``)
    are the parameters of the epoch with the smallest held-out var(log w) (model selection), and
    ``config.patience > 0`` stops training after that many epochs without improvement (``stopped="patience"``).

    ``progress(epoch, record)`` is called after every epoch; with ``optimizer="linear"`` also ``batch_progress(
    iteration, done, n)`` during each iteration's derivative pass over the ``n`` training configurations, which takes
    minutes on large lattices (other optimisers ignore it).

    Resumable: pass the keyword arguments of :func:`resume_kwargs` (``params``, ``opt_state``, ``start_epoch``,
    ``history``, ``selected``; ``replay``, L-BFGS's evaluation log): the resumed run ends bit-identical to an
    uninterrupted one (Adam, L-BFGS).  With ``checkpoint`` a checkpoint is written after every good epoch.  A
    non-finite loss or parameter stops training with :class:`FlowTrainingError`; the checkpoint then
    holds the last good epoch.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be corrflow.TrainConfig(epochs=..., ...), got {type(config).__name__}")
    configs = training_set(configs)  # an on-demand source (corrflow.flows.batches) is read batch by batch
    check_shift(flow, base, target)
    if base.params() == target.params():
        raise ValueError(f"base and target have the same parameters {base.params()}: the identity map is exact and "
                         "there is nothing to train (target = base.replace(beta=...) with another value)")
    base.check_links(configs)
    if len(configs.shape) != len(base.link_shape) + 1:  # (n_chains, n_traj, ...) failed deep in JAX's broadcasting
        raise ValueError(f"configs must have shape (n, *{tuple(base.link_shape)}), got {tuple(configs.shape)}; "
                         "flatten chains with configs.reshape((-1,) + base.link_shape); one configuration: "
                         "configs[None]")
    if params is not None and tuple(np.shape(params)) != tuple(flow.param_shape):
        raise ValueError(f"parameters of shape {tuple(np.shape(params))} do not fit this flow ({flow.describe()}, "
                         f"expected {tuple(flow.param_shape)}); were they trained for another architecture?")
    n = configs.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 base configurations to train, got {n}")
    with hold_checkpoint_dir(checkpoint, "flow checkpoint directory"):  # one training per directory
        if config.optimizer == "linear":
            from .linear import train_linear

            return train_linear(flow, base, target, configs, config, params=params, start_epoch=start_epoch,
                                history=history, progress=progress, checkpoint=checkpoint, held_out=held_out,
                                selected=selected, batch_progress=batch_progress)
        if config.optimizer == "lbfgs":
            return _train_lbfgs(flow, base, target, configs, config, params=params, start_epoch=start_epoch,
                                history=history, progress=progress, checkpoint=checkpoint, held_out=held_out,
                                selected=selected, replay=replay)
        bs = min(config.batch_size, n)
        steps_per_epoch = max(1, n // bs)
        opt = _optimizer(config, n)
        key = jax.random.PRNGKey(config.seed)
        if params is None:
            params = flow.init_params(config.init_scale, jax.random.fold_in(key, 10**6))
        if opt_state is None:
            opt_state = opt.init(params)
        history = list(history or [])
        sel = _Selection(flow, base, target, held_out, bs, config.patience, history, selected)

        def all_logw(p):  # noqa: ANN001, ANN202
            parts = [(_eval_logw(flow, base, target, p, x), m) for x, m in full_batches(configs, n, bs)]
            return valid_rows([(a, m) for (a, _), m in parts]), valid_rows([(b, m) for (_, b), m in parts])

        stopped = "epochs"
        if not history:
            lw, s_base = all_logw(params)
            # the training loss on all samples: mean(S_target(f(U)) - log J) = mean(S_base(U) - log w)
            rec = {"epoch": 0, "loss": float(np.mean(s_base - lw)), "ess": _ess_fraction(lw)}
            sel.record(rec, params)
            history.append(rec)
        for epoch in range(start_epoch, config.epochs):
            perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))
            good = (params, opt_state)
            losses = []
            for x in batches(configs, [perm[k * bs:(k + 1) * bs] for k in range(steps_per_epoch)]):
                params, opt_state, loss = _adam_step(flow, opt, target, params, opt_state, x)
                losses.append(float(loss))
            finite = np.all(np.isfinite(losses)) and bool(jnp.all(jnp.isfinite(params)))
            lw = all_logw(params)[0] if finite else np.array([np.nan])
            if not finite or not np.all(np.isfinite(lw)):
                params, opt_state = good
                raise FlowTrainingError(
                    f"training diverged in epoch {epoch + 1} (non-finite loss, parameters or log-weights); the last "
                    f"good parameters (epoch {epoch}) are kept{' in ' + str(checkpoint) if checkpoint else ''}. Lower "
                    "the learning rate or check the base configurations.")
            rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "ess": _ess_fraction(lw)}
            sel.record(rec, params)
            stopped = _finish_epoch(sel, config, rec, params, history, checkpoint, flow, base, target, opt_state)
            if progress is not None:
                progress(epoch + 1, rec)
            if stopped != "epochs":
                break
        return TrainResult(sel.selected(params), history, stopped)


def _finish_epoch(sel: _Selection, config: TrainConfig, rec: dict[str, float], params: Array,
                  history: list[dict[str, float]], checkpoint: Any, flow: Any, base: Any, target: Any,
                  opt_state: Any = None) -> str:
    """Append the epoch's record, decide whether to stop (``"target_ess"``, ``"patience"``, or ``"epochs"`` to go
    on) and write the checkpoint; the record has been through ``sel.record``."""
    history.append(rec)
    epoch = int(rec["epoch"])
    stopped = "target_ess" if rec["ess"] >= config.target_ess else "patience" if sel.exhausted(epoch) else "epochs"
    if checkpoint is not None:
        save_checkpoint(checkpoint, flow, sel.selected(params), base, target, config, epoch, history, opt_state,
                        None if stopped == "epochs" else stopped, resume_params=sel.resume_params(params, epoch))
    return stopped


class _NonFinite(Exception):
    pass


# Module-level jitted kernels with the flow static and the theories as pytree arguments: flows of the same
# structure to different targets (a continuum limit's beta_k) share one compiled program.
@partial(jax.jit, static_argnums=0)
def _loss_terms_and_grad(flow: Flow, target: Any, p: Array, u: Array, m: Array) -> tuple[Array, Array]:
    """Per-configuration loss terms ``S_target(f(U)) - log J(U)`` and the gradient of the sum of the first ``m``
    (the real configurations of a padded batch, :func:`corrflow.flows.batches.full_batches`)."""
    def total(p: Array) -> tuple[Array, Array]:
        uf, logj = flow.forward(p, u)
        per = target.action(uf) - logj
        return jnp.sum(jnp.where(jnp.arange(per.shape[0]) < m, per, 0.0)), per
    (_, per), grad = jax.value_and_grad(total, has_aux=True)(p)
    return per, grad


_action = jax.jit(lambda theory, u: theory.action(u))


@partial(jax.jit, static_argnums=(0, 1))
def _adam_step(flow: Flow, opt: optax.GradientTransformation, target: Any, p: Array, s: Any,
               u: Array) -> tuple[Array, Any, Array]:
    """One optimiser step on the mini-batch ``u``; ``opt`` comes from the cached :func:`_optimizer`, so runs with
    the same settings (flows to several targets) share the compiled step."""
    def loss_fn(p: Array) -> Array:
        uf, logj = flow.forward(p, u)
        return jnp.mean(target.action(uf) - logj)
    loss, grad = jax.value_and_grad(loss_fn)(p)
    upd, s = opt.update(grad, s, p)
    return optax.apply_updates(p, upd), s, loss


@partial(jax.jit, static_argnums=0)
def _eval_logw(flow: Flow, base: Any, target: Any, p: Array, u: Array) -> tuple[Array, Array]:
    return log_weights(flow, p, base, target, u)[0], base.action(u)


#: the L-BFGS evaluation log kept in a checkpoint (its optimiser state): the epoch and point the optimiser started
#: from, then per loss evaluation the SHA-256 of the point, the loss, the gradient and the per-configuration terms
_LBFGS_LOG = ("epoch_init", "x_init", "x_sha", "loss", "grad", "terms")


def _lbfgs_log_state(log: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """The evaluation log as the tuple of arrays a checkpoint stores (order :data:`_LBFGS_LOG`)."""
    k = len(log["loss"])
    return (np.asarray(log["epoch_init"], np.int64), np.asarray(log["x_init"], np.float64),
            np.asarray(log["x_sha"], np.uint8).reshape(k, 32),
            np.asarray(log["loss"], np.float64), np.asarray(log["grad"], np.float64).reshape(k, -1),
            np.asarray(log["terms"], np.float64).reshape(k, -1))


def _train_lbfgs(flow: Flow, base: Any, target: Any, configs: Array, config: TrainConfig, *, params: Array | None,
                 start_epoch: int, history: list[dict[str, float]] | None,
                 progress: Callable[[int, dict[str, float]], None] | None,
                 checkpoint: str | os.PathLike | None, held_out: Any = None,
                 selected: Array | None = None, replay: Sequence[np.ndarray] | None = None) -> TrainResult:
    """Full-batch L-BFGS on ``mean_i [S_target(f(U_i)) - log J(U_i)]`` (see the module docstring).

    ``replay``: the evaluation log of an interrupted run (its checkpoint's optimiser state, :data:`_LBFGS_LOG`).
    scipy's L-BFGS-B keeps its memory to itself, so a resumed run starts again from the run's first point and the
    logged evaluations answer the optimiser's calls until the log is spent: the iterates, the memory and every
    later epoch are those of the uninterrupted run, bit for bit, at the cost of the optimiser's own arithmetic."""
    import hashlib

    from scipy.optimize import minimize

    n = configs.shape[0]
    bs = min(config.batch_size, n)
    if params is None:
        params = flow.init_params(config.init_scale, jax.random.fold_in(jax.random.PRNGKey(config.seed), 10**6))
    shape, dtype = tuple(params.shape), params.dtype
    history = list(history or [])
    sel = _Selection(flow, base, target, held_out, bs, config.patience, history, selected)

    s_base = valid_rows([(_action(base, x), m) for x, m in full_batches(configs, n, bs)])
    cache: dict[bytes, np.ndarray] = {}
    evals = [0]
    replaying = replay is not None and start_epoch > 0
    log: dict[str, Any] = {"epoch_init": start_epoch, "x_init": None, "x_sha": [], "loss": [], "grad": [],
                           "terms": []}
    if replaying:
        epoch_init, x_init, x_sha, loss_log, grad_log, terms_log = (np.asarray(a) for a in replay)
        if not 0 <= int(epoch_init) <= start_epoch:
            raise ValueError(f"the checkpoint's L-BFGS log starts at epoch {int(epoch_init)}, after its epoch "
                             f"{start_epoch}: a damaged checkpoint")
        if x_init.size != int(np.prod(shape)) or (grad_log.size and grad_log.shape[1] != x_init.size) or (
                terms_log.size and terms_log.shape[1] != n):
            raise ValueError("the checkpoint's L-BFGS log does not fit this flow or training set; resume with the "
                             "original training configurations")
        log["epoch_init"], log["x_init"] = int(epoch_init), x_init

    def fg(x: np.ndarray) -> tuple[float, np.ndarray]:
        i, sha = len(log["loss"]), hashlib.sha256(x.tobytes()).digest()
        if replaying and i < len(loss_log) and bytes(x_sha[i]) == sha:  # the interrupted run's evaluation
            f, grad, per_all = float(loss_log[i]), np.array(grad_log[i]), np.array(terms_log[i])
        else:
            p = jnp.asarray(x.reshape(shape), dtype)
            per, grad = [], np.zeros(x.size)
            for u, m in full_batches(configs, n, bs):
                t, gr = _loss_terms_and_grad(flow, target, p, u, m)
                per.append((t, m))
                grad += np.asarray(gr, np.float64).ravel()
            per_all = valid_rows(per)
            f, grad = float(per_all.mean()), grad / n
        evals[0] += 1
        if not (np.all(np.isfinite(per_all)) and np.all(np.isfinite(grad))):
            raise _NonFinite
        cache[x.tobytes()] = per_all
        log["x_sha"].append(np.frombuffer(sha, np.uint8))
        log["loss"].append(f)
        log["grad"].append(grad)
        log["terms"].append(np.asarray(per_all, np.float64))
        return f, grad

    def record(epoch: int, x: np.ndarray) -> dict[str, float]:
        per = cache.get(x.tobytes())
        if per is None:
            fg(x)
            per = cache[x.tobytes()]
        cache.clear()
        rec = {"epoch": epoch, "loss": float(per.mean()), "ess": _ess_fraction(s_base - per), "evals": evals[0]}
        sel.record(rec, jnp.array(x.reshape(shape), dtype))  # a copy (see the callback)
        return rec

    x0 = np.asarray(params, np.float64).ravel()
    good = [x0]
    state = {"epoch": start_epoch, "stopped": "epochs"}
    if replaying:  # from the optimiser's first point, the logged evaluations answering (see the docstring)
        x0, state["epoch"] = np.array(log["x_init"], np.float64), log["epoch_init"]
    else:
        log["x_init"] = x0.copy()
    try:
        if not history or (replaying and log["epoch_init"] == 0):  # a fresh run evaluates its start first
            fg(x0)
            if not history:
                history.append(record(0, x0))
            else:
                cache.clear()

        def callback(intermediate_result: Any) -> None:
            # a copy: scipy updates its iterate in place, and jnp.asarray may share a NumPy buffer on the CPU (the
            # held-out selection kept a later iterate than the one it selected, depending on the buffer's alignment)
            x = np.array(intermediate_result.x, np.float64, copy=True)
            state["epoch"] += 1
            good[0] = x
            if state["epoch"] <= start_epoch:  # replayed: recorded, checkpointed and selected before
                if cache.get(x.tobytes()) is None:
                    fg(x)  # (as record() did)
                cache.clear()
                return
            rec = record(state["epoch"], x)
            history.append(rec)
            p = jnp.array(x.reshape(shape), dtype)
            if checkpoint is not None:
                save_checkpoint(checkpoint, flow, sel.selected(p), base, target, config, state["epoch"], history,
                                _lbfgs_log_state(log), resume_params=sel.resume_params(p, state["epoch"]))
            if progress is not None:
                progress(state["epoch"], rec)
            if rec["ess"] >= config.target_ess:
                state["stopped"] = "target_ess"
                raise StopIteration
            if sel.exhausted(state["epoch"]):
                state["stopped"] = "patience"
                raise StopIteration

        remaining = config.epochs - state["epoch"]
        if remaining > 0:
            res = minimize(fg, x0, jac=True, method="L-BFGS-B", callback=callback,
                           options={"maxiter": remaining, "maxcor": 20})
            if state["stopped"] == "epochs" and state["epoch"] < config.epochs and res.success:
                state["stopped"] = "converged"
        last = jnp.asarray(good[0].reshape(shape), dtype)
        if checkpoint is not None and state["stopped"] != "epochs":
            save_checkpoint(checkpoint, flow, sel.selected(last), base, target, config, state["epoch"], history,
                            _lbfgs_log_state(log), stopped=state["stopped"],
                            resume_params=sel.resume_params(last, state["epoch"]))
    except _NonFinite:
        raise FlowTrainingError(
            f"training diverged after epoch {state['epoch']} (non-finite loss or gradient in the L-BFGS line "
            f"search); the last good parameters are kept{' in ' + str(checkpoint) if checkpoint else ''}. Check "
            "the base configurations, or train with fewer sweeps.") from None
    return TrainResult(sel.selected(jnp.asarray(good[0].reshape(shape), dtype)), history, state["stopped"])


@lru_cache(maxsize=32)
def _optimizer(config: TrainConfig, n_configs: int) -> optax.GradientTransformation:
    """Adam with a cosine-decaying learning rate over all optimiser steps of the run."""
    steps = config.epochs * max(1, n_configs // min(config.batch_size, n_configs))
    return optax.adam(optax.cosine_decay_schedule(config.learning_rate, steps, alpha=0.05))


def resume_kwargs(checkpoint: dict[str, Any], n_configs: int, config: TrainConfig | None = None) -> dict[str, Any]:
    """Keyword arguments for :func:`train` that continue from a loaded checkpoint (parameters, optimiser
    state, epoch, history).  ``config`` defaults to the checkpoint's; ``n_configs`` must be the number of
    training configurations of the original run (it fixes the learning-rate schedule)."""
    config = config or checkpoint["config"]
    current = checkpoint.get("resume_params")
    current = checkpoint["params"] if current is None else current
    sel = {"selected": checkpoint["params"]}
    if config.optimizer == "lbfgs":  # the evaluation log replays the interrupted run (:func:`_train_lbfgs`)
        log = checkpoint.get("opt_leaves") or []
        replay = {"replay": tuple(log)} if len(log) == len(_LBFGS_LOG) else {}  # (older checkpoints: none)
        return {"params": current, "start_epoch": checkpoint["epoch"], "history": checkpoint["history"], **sel,
                **replay}
    if config.optimizer == "linear":  # Gauss-Newton: each iteration starts from the parameters alone
        return {"params": current, "start_epoch": checkpoint["epoch"], "history": checkpoint["history"], **sel}
    template = _optimizer(config, n_configs).init(checkpoint["params"])
    treedef = jax.tree_util.tree_structure(template)
    if treedef.num_leaves != len(checkpoint["opt_leaves"]):
        raise ValueError(f"the checkpoint's optimiser state ({len(checkpoint['opt_leaves'])} arrays) does not match "
                         f"this optimiser ({treedef.num_leaves}); resume with the original training settings")
    opt_state = jax.tree_util.tree_unflatten(treedef, checkpoint["opt_leaves"])
    return {"params": current, "opt_state": opt_state, "start_epoch": checkpoint["epoch"],
            "history": checkpoint["history"], **sel}
