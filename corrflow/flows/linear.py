"""Training by linearisation: Gauss–Newton on the variance of the log-weights (``TrainConfig(optimizer="linear")``).

For a small shift the log-weights are nearly linear in the flow parameters::

    log w_i(p + T dq) ≈ log w_i(p) + G_i dq,     G_i = ∂ log w_i / ∂q   (one reverse pass per configuration),

so the step that minimises the sample variance of ``log w`` over the training configurations is a least-squares
problem solved exactly: ``dq = -argmin |(lw - mean lw) + (G - mean G) dq|^2``.  At ``p = 0`` this *is* the tangent
fit of the tangent-flow estimators (:mod:`corrflow.tangent`): ``log w(0) = -dβ ∂S/∂β`` and ``G_k = -(v_k·∇S - ∇·v_k)``
for the flow's own layer fields ``v_k``, so one iteration gives the flow whose tangent minimises ``Var[R_v]``; later
iterations correct the higher orders.  Var(log w) equals twice the reverse KL divergence for Gaussian log-weights,
the loss of the other optimisers.

Parameters are *tied* (``T``): one value per coefficient (last axes of :attr:`Flow.param_shape`) shared by all
sweeps, masks and directions, split by ``n_sweeps``.  Directions are split into the temporal one and the spatial
ones when base and target differ in an anisotropic parameter (``xi``, ``lam``).  Few parameters (5 for one plaquette
shape and four smoothing times) keep the fit from following the noise of a few hundred training configurations, no
learning rate or step size is needed, and each iteration costs one gradient per configuration (the L-BFGS loss's
cost).  A step that raises the training variance is halved (up to 4 times) before it is taken; an iteration that
cannot lower it stops the run (``stopped="converged"``), and so does one that lowers it by less than
:data:`CONVERGED_RTOL` (1%) -- taken, then the run stops: the iterations after that bought nothing measurable while
the held-out patience kept a 4^4 run going for minutes per iteration (a 4D audit).  So does a step whose log-weights
follow its linear prediction ``log w + G dq`` to within a variance of ``CONVERGED_RTOL`` of theirs (recorded as
``var_nonlinear``): the next iteration could only remove that departure.  Measured (BENCHMARKS.md, 4D SU(3) 4^4,
β 5.7 → 5.75, one sweep with smoothing terms): held-out var(log w) 0.39 of direct reweighting's after the first step,
0.38 after three, where untied L-BFGS on the same flow reached 0.72 in 10 iterations and on the staple-only flow
0.66; at β 5.8 → 5.85 the first step's departure from its prediction is 1e-4 of var(log w).

The first iteration starts at the identity, where ``G`` is the sum of each layer's own derivative on the unflowed
configurations (:func:`layerwise`, forward mode): no reverse pass through the composed layers and their Wilson flows,
a fifth of the cost at 4^4 and 6^4 with smoothing terms.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .batches import full_batches, valid_rows
from .layers import Flow

Array = jax.Array

__all__ = ["tie_matrix", "linear_step", "layerwise", "Step"]

_HALVINGS = 4
#: relative decrease of the training var(log w) below which an iteration ends the run (module docstring)
CONVERGED_RTOL = 0.01


def tie_matrix(flow: Any, base: Any, target: Any) -> np.ndarray:
    """``T`` ``(prod param_shape, n_tied)``: full parameters ``p = T q`` from tied ones (module docstring)."""
    shp = tuple(flow.param_shape)
    n_sweeps, d = shp[0], shp[1]
    coef = int(np.prod(shp[3:]))
    aniso = any(float(getattr(base, k, 0.0)) != float(getattr(target, k, 0.0)) for k in ("xi", "lam"))
    groups = np.array([0] + [1] * (d - 1)) if aniso and d > 1 else np.zeros(d, int)
    n_groups = int(groups.max()) + 1
    t = np.zeros(shp + (n_groups, coef))
    for mu in range(d):
        t[:, mu, ..., groups[mu], :] = np.eye(coef).reshape(shp[3:] + (coef,)) / n_sweeps
    return t.reshape(int(np.prod(shp)), n_groups * coef)


@partial(jax.jit, static_argnums=0)
def _logw_and_jacobian(flow: Flow, base: Any, target: Any, p: Array, t: Array, u: Array) -> tuple[Array, Array]:
    """Per-configuration ``log w`` ``(b,)`` and ``G = ∂ log w / ∂q`` ``(b, n_tied)`` at ``p`` (``t``: tie matrix)."""
    def one(dq: Array, x: Array) -> Array:
        pp = p + (t @ dq).reshape(p.shape)
        uf, logj = flow.forward(pp, x[None])
        return (-target.action(uf) + base.action(x[None]) + logj)[0]

    zero = jnp.zeros(t.shape[1], p.dtype)
    return jax.lax.map(lambda x: jax.value_and_grad(one)(zero, x), u, batch_size=_map_batch(flow))


def _map_batch(flow: Flow) -> int:
    """Configurations per step of the kernels' ``lax.map``: groups of ~4096 sites, vectorised on small lattices, the
    memory of one pass through the layers (and their Wilson flows) per configuration on large ones (8^4 complex128
    with smoothing terms: ~1 GB for the reverse pass)."""
    return max(1, 4096 // int(np.prod(flow.shape)))


def layerwise(flow: Flow, params: Array, u: Array) -> tuple[Array, Array]:
    """``(Σ_l (f_l(U) − U), Σ_l log J_l(U))`` over every layer ``f_l`` of every sweep, each applied to ``U`` itself (not
    to the previous layers' output): shapes ``u.shape`` and the batch shape.

    Where ``params`` make every layer the identity (all zero), the derivative in ``params`` of ``F(U + Σ_l (f_l(U) −
    U)) + Σ_l log J_l(U)`` equals that of the composed ``F(f(U)) + log J_f(U)`` for any smooth function ``F`` of the
    link matrices (angles in U(1)): differentiating one layer's coefficients leaves every other layer at the identity,
    and to first order a move of the links is its displacement."""
    layer = flow._layer(0)
    flat, nb = layer._flatten(u)

    def one(acc: tuple[Array, Array], xs: tuple[Any, ...]) -> tuple[Array, Array]:
        raw, st, mu, off, nus = xs
        new, lj = layer.forward_flat(raw, st, flat, mu, off, nus)
        return acc[0] + (new - flat), acc[1] + lj

    disp, logj = flow.scan_layers(params, (jnp.zeros_like(flat), flow.logj_zeros(u, nb)), one)
    return disp.reshape(u.shape), logj


@partial(jax.jit, static_argnums=0)
def _logw_and_jacobian_at_identity(flow: Flow, base: Any, target: Any, p: Array, t: Array, u: Array
                                   ) -> tuple[Array, Array]:
    """:func:`_logw_and_jacobian` where ``p`` makes the flow the identity (all zero): ``G`` as the forward-mode
    derivative of ``−S_target(U + Σ_l (f_l(U) − U)) + Σ_l log J_l(U)`` (:func:`layerwise`), which carries no tangent
    through the composed layers or through the smoothing terms' Wilson flows (frozen links only) and evaluates the
    target action once.  4D SU(3) 4^4, four smoothing times, 2-core EPYC: 48 ms per configuration against 248 ms for
    the reverse pass through the flow, 7 s of compilation against 25 s (``benchmarks/linear_step_cost.py``)."""
    def one(dq: Array, x: Array) -> Array:
        disp, logj = layerwise(flow, p + (t @ dq).reshape(p.shape), x[None])
        return (-target.action(x[None] + disp) + logj)[0]

    zero = jnp.zeros(t.shape[1], p.dtype)
    lw = -target.action(u) + base.action(u)  # the identity's log-weights
    return lw, jax.lax.map(lambda x: jax.jacfwd(one)(zero, x), u, batch_size=_map_batch(flow))


class Step(NamedTuple):
    """One Gauss–Newton step (:func:`linear_step`): the new parameters, their training log-weights, whether the step
    lowered var(log w) (else ``params`` are the old ones), and ``nonlinear``: the variance of the log-weights' departure
    from the linear prediction ``log w + G dq`` of the step taken (0 for a step not taken)."""

    params: Array
    logw: np.ndarray
    improved: bool
    nonlinear: float


def linear_step(flow: Any, base: Any, target: Any, configs: Array, params: Array, tie: np.ndarray, batch: int,
                eval_logw: Callable[[Array], np.ndarray], offset: np.ndarray | None = None,
                on_batch: Callable[[int, int], None] | None = None) -> Step:
    """One Gauss–Newton step from ``params`` (:class:`Step`).

    ``eval_logw(p)`` returns the training log-weights at ``p``; the step is halved while it raises their variance
    (``improved=False`` and ``params`` unchanged when no halving helps).  ``offset`` ``(n,)``: log-weights of maps
    applied to the configurations before this flow (a chain of flows), added to this flow's; ``eval_logw`` then
    returns the sum too.  From the identity (``params`` all zero) ``G`` comes from
    :func:`_logw_and_jacobian_at_identity`, the same numbers (to rounding) at a fifth of the cost.  ``on_batch(done,
    n)`` is called after each batch of that derivative pass (the long part of a step on a large lattice)."""
    n = configs.shape[0]
    t = jnp.asarray(tie, params.dtype)
    kernel = _logw_and_jacobian_at_identity if not np.any(np.asarray(params)) else _logw_and_jacobian
    parts, done = [], 0
    for x, m in full_batches(configs, n, batch):
        parts.append((kernel(flow, base, target, params, t, x), m))
        if on_batch is not None:
            jax.block_until_ready(parts[-1][0])
            done += m
            on_batch(done, n)
    lw = valid_rows([(a, m) for (a, _), m in parts])
    if offset is not None:
        lw = lw + np.asarray(offset, np.float64)
    g = valid_rows([(b, m) for (_, b), m in parts])
    if not (np.all(np.isfinite(lw)) and np.all(np.isfinite(g))):
        raise FloatingPointError("non-finite log-weights or gradients")
    gc, lc = g - g.mean(0), lw - lw.mean()
    scale = np.sqrt(np.maximum(np.mean(gc**2, 0), 1e-300))  # column scaling for the conditioning of lstsq
    dq = -np.linalg.lstsq(gc / scale, lc, rcond=1e-10)[0] / scale
    var0 = float(np.var(lw))
    for _ in range(_HALVINGS + 1):
        new = params + jnp.asarray((tie @ dq).reshape(params.shape), params.dtype)
        lw_new = np.asarray(eval_logw(new), np.float64)
        if np.all(np.isfinite(lw_new)) and np.var(lw_new) < var0:
            return Step(new, lw_new, True, float(np.var(lw_new - (lw + g @ dq))))
        dq = dq / 2
    return Step(params, lw, False, 0.0)


def _converged(previous: dict[str, float], rec: dict[str, float]) -> bool:
    """The iteration that made ``rec`` ends the run (module docstring): it lowered the training var(log w) by less
    than :data:`CONVERGED_RTOL`, or the log-weights it produced departed from its linear prediction by a variance
    below that fraction of theirs (so the next iteration, which can only correct that departure, gains less)."""
    var = rec.get("var_logw", np.inf)
    return var > (1.0 - CONVERGED_RTOL) * previous.get("var_logw", np.inf) or (
        rec.get("var_nonlinear", np.inf) <= CONVERGED_RTOL * var)


def train_linear(flow: Any, base: Any, target: Any, configs: Array, config: Any, *, params: Array | None,
                 start_epoch: int, history: list[dict[str, float]] | None,
                 progress: Callable[[int, dict[str, float]], None] | None, checkpoint: Any, held_out: Any = None,
                 selected: Array | None = None, batch_progress: Callable[[int, int, int], None] | None = None) -> Any:
    """:func:`corrflow.flows.train.train` with ``optimizer="linear"``: ``config.epochs`` Gauss–Newton iterations
    (module docstring), held-out selection and checkpoints as for the other optimisers; resumes from ``params``.
    ``batch_progress(iteration, done, n)``: during each iteration's derivative pass (:func:`linear_step`)."""
    from .train import (FlowTrainingError, TrainResult, _action, _ess_fraction, _eval_logw, _finish_epoch, _Selection,
                        save_checkpoint)

    if not isinstance(flow, Flow):
        raise ValueError(f"optimizer 'linear' is for residual flows; use lbfgs for {getattr(flow, 'kind', flow)!r} flows")
    n = configs.shape[0]
    bs = min(config.batch_size, n)
    if params is None:
        params = flow.init_params(config.init_scale, jax.random.fold_in(jax.random.PRNGKey(config.seed), 10**6))
    history = list(history or [])
    sel = _Selection(flow, base, target, held_out, bs, config.patience, history, selected)
    s_base = valid_rows([(_action(base, x), m) for x, m in full_batches(configs, n, bs)])
    tie = tie_matrix(flow, base, target)

    def eval_logw(p: Array) -> np.ndarray:
        return valid_rows([(_eval_logw(flow, base, target, p, x)[0], m) for x, m in full_batches(configs, n, bs)])

    def record(epoch: int, p: Array, lw: np.ndarray) -> dict[str, float]:
        rec = {"epoch": epoch, "loss": float(np.mean(s_base - lw)), "ess": _ess_fraction(lw),
               "var_logw": float(np.var(lw))}
        sel.record(rec, p)
        return rec

    stopped = "epochs"
    if not history:
        history.append(record(0, params, eval_logw(params)))
    elif len(history) >= 2 and _converged(history[-2], history[-1]):
        stopped = "converged"  # the interrupted run had converged at its last epoch, before it said so
    for epoch in range(start_epoch, config.epochs if stopped == "epochs" else start_epoch):
        try:
            on_batch = None if batch_progress is None else partial(batch_progress, epoch + 1)
            new, lw, improved, nonlinear = linear_step(flow, base, target, configs, params, tie, bs, eval_logw,
                                                       on_batch=on_batch)
        except FloatingPointError:
            raise FlowTrainingError(
                f"training diverged in iteration {epoch + 1} (non-finite log-weights or gradients); the last good "
                f"parameters are kept{' in ' + str(checkpoint) if checkpoint else ''}. Check the base configurations "
                "or train a smaller shift.") from None
        if not improved:
            stopped = "converged"
            break
        params = new
        previous = history[-1]
        rec = record(epoch + 1, params, lw)
        rec["var_nonlinear"] = nonlinear
        stopped = _finish_epoch(sel, config, rec, params, history, checkpoint, flow, base, target)
        if stopped == "epochs" and _converged(previous, rec):
            stopped = "converged"
        if progress is not None:
            progress(epoch + 1, rec)
        if stopped != "epochs":
            break
    if stopped == "converged" and checkpoint is not None:
        last = history[-1]["epoch"]
        save_checkpoint(checkpoint, flow, sel.selected(params), base, target, config, last, history,
                        stopped=stopped, resume_params=sel.resume_params(params, last))
    return TrainResult(sel.selected(params), history, stopped)
