"""Correlated ensembles from a flow, and their baselines (docs/physics.md section 3).

Given base configurations ``U_i ~ p_a`` (``(n, ...)`` arrays, one chain in Monte Carlo order) and a flow
``f`` trained for ``a -> a'``:

* :func:`flowed_reweighting`: ``f(U_i)``, ``log w_i = -S_{a'}(f(U_i)) + S_a(U_i) + log J_f(U_i)`` and the
  observables on both ``U_i`` and ``f(U_i)``: the paired samples of the correlated-difference estimators
  (:mod:`corrflow.stats.reweighting`).  ``<O>_{a'} = <w O(f(U))>_a / <w>_a`` exactly, for any ``f``.
* :func:`direct_reweighting`: the same with ``f`` the identity (the direct-reweighting baseline).
* :func:`flowed_metropolis`: an exact Markov chain at ``a'`` from the proposals ``f(U_i)`` (independence
  Metropolis: accept ``f(U_i)`` with probability ``min(1, w_i / w_current)``); returns which proposal
  each step holds, so observables of the chain are ``O(f(U))[index]``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .flows.batches import pad_rows
from .flows.build import check_shift
from .flows.layers import Flow
from .rng import check_key

Array = jax.Array

__all__ = ["PairedSamples", "flowed_reweighting", "direct_reweighting", "flowed_metropolis", "MetropolisChain"]


class PairedSamples(NamedTuple):
    """Paired measurements, all numpy arrays over the base samples ``(n,)``: ``log_w``, ``log_jacobian``,
    ``base[obs]`` = ``O(U_i)``, ``flowed[obs]`` = ``O(f(U_i))``; ``links`` = ``f(U_i)`` if kept."""

    log_w: np.ndarray
    log_jacobian: np.ndarray
    base: dict[str, np.ndarray]
    flowed: dict[str, np.ndarray]
    links: np.ndarray | None


@partial(jax.jit, static_argnames=("flow", "measure", "keep"))
def _batch(flow: Flow, params: Array, base: Any, target: Any, u: Array, measure: Any, keep: bool):  # noqa: ANN202
    uf, logj = flow.forward(params, u)
    log_w = -target.action(uf) + base.action(u) + logj
    return log_w, logj, jax.vmap(measure)(u), jax.vmap(measure)(uf), (uf if keep else None)


@partial(jax.jit, static_argnames=("flow", "measure", "keep", "det_noise"))
def _batch_stochastic(flow: Flow, params: Array, base: Any, target: Any, u: Array, measure: Any, keep: bool,
                      keys: Array, det_noise: int):  # noqa: ANN202
    from .theories.fermions import log_det_ratio_estimate

    uf, logj = flow.forward(params, u)
    one = lambda k, a, b: log_det_ratio_estimate(k, base, a, target, b, n_noise=det_noise)  # noqa: E731
    log_det = jax.vmap(one)(keys, u, uf)
    log_w = -target.gauge.action(uf) + base.gauge.action(u) + logj + log_det
    return log_w, logj, jax.vmap(measure)(u), jax.vmap(measure)(uf), (uf if keep else None)


def flowed_reweighting(flow: Flow, params: Array, base: Any, target: Any, configs: Any,
                       measure: Callable[[Array], dict[str, Array]], *, batch: int = 64,
                       keep_links: bool = False, progress: Callable[[int, int], None] | None = None,
                       det_noise: int = 0, key: Array | None = None,
                       noise_keys: Array | None = None) -> PairedSamples:
    """Apply the flow to every base configuration and measure both sides, in equal batches of at most ``batch``
    configurations (the last padded; one compiled program).

    ``configs``: base configurations ``(n, *lattice, d[, N, N])`` of ``base``, or with more leading axes (e.g.
    ``(n_chains, n_traj, ...)``; every output keeps them: ``log_w`` then has shape ``(n_chains, n_traj)``).
    ``measure``: a hashable function of *one* configuration returning ``{name: value}`` (as in
    :func:`corrflow.generate.generate`; e.g. :class:`corrflow.generate.GaugeMeasurements`), applied to every
    configuration and its image (vmapped).  ``base``, ``target`` and ``flow`` must share the theory,
    group and lattice (:func:`corrflow.flows.build.check_shift`).
    Raises ``FloatingPointError`` naming the first configuration whose flow output or weight is not
    finite (nothing is returned then).

    Fermion theories: by default the weights contain the exact determinant ratio (``theory.action``, dense).
    With ``det_noise > 0`` they use the unbiased stochastic estimate of the two-flavour ratio
    ``det(M_{a'}^dag M_{a'})(f(U)) / det(M_a^dag M_a)(U)``
    (:func:`corrflow.theories.fermions.log_det_ratio_estimate`, ``det_noise`` Gaussian noise vectors per
    configuration, keys ``fold_in(key, i)`` for configuration ``i``, or ``noise_keys[i]`` when given, shape
    ``(n, 2)``: keys tied to the configuration's place in its chain make the weights independent of batching and
    resumption): the reweighted ratio stays exact in the limit of many configurations, at the price of noisier
    weights; this is the path for lattices too large for dense determinants.
    """
    check_shift(flow, base, target)
    base.check_links(configs)
    per_config = len(base.shape) + 1 + base.group.elem_ndim  # lattice axes, direction, matrix axes
    lead = tuple(np.shape(configs))[:max(np.ndim(configs) - per_config, 0)]
    if not lead:
        raise ValueError(f"configs must be a batch (n, *lattice, d[, N, N]) of configurations, got shape "
                         f"{tuple(np.shape(configs))}; for one configuration pass configs[None]")
    if len(lead) > 1:  # e.g. (n_chains, n_traj, ...): flattened here, the results get these axes back
        configs = np.reshape(np.asarray(configs), (-1,) + tuple(np.shape(configs))[len(lead):])
    if not callable(measure):
        raise TypeError(f"measure must be a function of one configuration returning {{name: value}} (e.g. "
                        f"corrflow.generate.GaugeMeasurements(theory.group)), got {measure!r}")
    n = len(configs)
    if n < 1:
        raise ValueError("no configurations: configs has length 0")
    if det_noise:
        if not (hasattr(base, "gauge") and hasattr(target, "gauge")):
            raise ValueError("det_noise > 0 needs fermion theories (WilsonFermionAction) for base and target")
        if target.n_flavors != 2 or base.n_flavors != 2:
            raise ValueError("the stochastic determinant ratio is implemented for n_f = 2")
        if key is None and noise_keys is None:
            raise ValueError("det_noise > 0 needs a random key (key=jax.random.PRNGKey(...))")
        if noise_keys is not None and len(noise_keys) != n:
            raise ValueError(f"noise_keys has {len(noise_keys)} keys for {n} configurations")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    # equal batches of at most ``batch`` configurations, the last padded with copies of the last configuration:
    # one compiled program per call (a short last batch would compile the flow a second time)
    n_batches = max(1, -(-n // batch))
    size = -(-n // n_batches)
    parts: list[tuple] = []
    for lo in range(0, n, size):
        k = min(size, n - lo)
        u = jnp.asarray(pad_rows(configs[lo:lo + size], size))
        if det_noise:
            if noise_keys is not None:  # the padding repeats the last configuration's key
                keys = jnp.asarray(pad_rows(np.asarray(noise_keys)[lo:lo + size], size))
            else:
                keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(lo, lo + size))
            out = _batch_stochastic(flow, params, base, target, u, measure, keep_links, keys, int(det_noise))
        else:
            out = _batch(flow, params, base, target, u, measure, keep_links)
        out = jax.tree_util.tree_map(lambda x: np.asarray(x)[:k], out)
        lw = out[0]
        if not np.all(np.isfinite(lw)):
            bad = lo + int(np.argmax(~np.isfinite(lw)))
            raise FloatingPointError(f"the flow produced a non-finite weight at base configuration {bad}; "
                                     "check the flow checkpoint (NaN parameters?) and the configurations")
        parts.append(out)
        if progress is not None:
            progress(min(n, lo + size), n)
    cat = lambda xs: np.concatenate(xs, axis=0).reshape(lead + xs[0].shape[1:])  # noqa: E731
    return PairedSamples(
        log_w=cat([p[0] for p in parts]), log_jacobian=cat([p[1] for p in parts]),
        base={k: cat([p[2][k] for p in parts]) for k in parts[0][2]},
        flowed={k: cat([p[3][k] for p in parts]) for k in parts[0][3]},
        links=cat([p[4] for p in parts]) if keep_links else None)


def direct_reweighting(base: Any, target: Any, configs: Any, measure: Callable[[Array], dict[str, Array]], *,
                       batch: int = 64, flow_template: Flow | None = None) -> PairedSamples:
    """Direct reweighting baseline: :func:`flowed_reweighting` with the identity map (``log J = 0``)."""
    flow = flow_template or identity_flow(base)
    return flowed_reweighting(flow, flow.init_params(), base, target, configs, measure, batch=batch)


def identity_flow(theory: Any) -> Flow:
    return Flow(theory.group, theory.shape, ("plaquette",), 1)


class MetropolisChain(NamedTuple):
    """``index[t]``: the proposal (base sample) held at step ``t`` (``-1``: the state held before these proposals,
    when continuing a chain); ``accepted[t]``: bool; ``acceptance`` (steps after the first); ``log_w_current``: log
    weight of the state held at the end (to continue the chain)."""

    index: np.ndarray
    accepted: np.ndarray
    acceptance: float
    log_w_current: float

    def __repr__(self) -> str:
        return (f"MetropolisChain({len(self.index)} steps, acceptance {self.acceptance:.3f}, "
                f"{len(np.unique(self.index[self.index >= 0]))} distinct proposals held, "
                f"log_w_current {self.log_w_current:.4g})")


@jax.jit
def _uniforms(key: Array, labels: Array) -> Array:
    return jax.vmap(lambda t: jax.random.uniform(jax.random.fold_in(key, t), dtype=jnp.float64))(labels)


def flowed_metropolis(log_w: np.ndarray, key: Array, *, labels: np.ndarray | None = None,
                      current: float = -np.inf) -> MetropolisChain:
    """Independence Metropolis over the proposals in order: step ``t`` proposes ``f(U_t)`` and accepts it with
    probability ``min(1, w_t / w_current)``.  Exact for the target when the proposals are (approximately
    independent) draws of the pushed-forward base distribution.

    The uniform of step ``t`` is ``uniform(fold_in(key, labels[t]))`` (``labels`` default ``0 .. n-1``; the stored
    flowed ensembles use the base trajectory numbers, so a chain continued block by block is the same chain).
    ``current``: log weight of the state held before the first proposal (``-inf``: none, the first proposal is
    accepted).
    """
    check_key(key)
    lw = np.asarray(log_w, dtype=np.float64)
    if lw.ndim != 1 or len(lw) < 1:
        raise ValueError(f"log_w must be a non-empty 1-D array (one chain in Monte Carlo order), got shape {lw.shape}"
                         + ("; pass one chain, e.g. log_w[0], or run one chain per row" if lw.ndim == 2 else ""))
    if np.any(np.isnan(lw)) or np.any(lw == np.inf):
        raise ValueError("log_w contains NaN or +inf")
    labels = np.arange(len(lw)) if labels is None else np.asarray(labels)
    if labels.shape != lw.shape:
        raise ValueError(f"labels {labels.shape} must match log_w {lw.shape}")
    log_u = np.log(np.asarray(_uniforms(key, jnp.asarray(labels))))
    index = np.full(len(lw), -1, np.int64)
    accepted = np.zeros(len(lw), bool)
    cur, held = float(current), -1
    for t in range(len(lw)):  # sequential by nature; O(n) scalar work
        if log_u[t] < lw[t] - cur:
            cur, held = lw[t], t
            accepted[t] = True
        index[t] = held
    return MetropolisChain(index, accepted, float(accepted[1:].mean()) if len(lw) > 1 else 1.0, float(cur))
