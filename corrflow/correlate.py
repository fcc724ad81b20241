"""Correlated ensembles from a flow, and their baselines (PHYSICS.md section 3).

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

from .flows.layers import Flow

Array = jax.Array

__all__ = ["PairedSamples", "flowed_reweighting", "direct_reweighting", "flowed_metropolis", "MetropolisChain",
           "CorrelateSummary", "correlate_to_store", "direct_to_store"]


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
    return log_w, logj, measure(u), measure(uf), (uf if keep else None)


@partial(jax.jit, static_argnames=("flow", "measure", "keep", "det_noise"))
def _batch_stochastic(flow: Flow, params: Array, base: Any, target: Any, u: Array, measure: Any, keep: bool,
                      keys: Array, det_noise: int):  # noqa: ANN202
    from .theories.fermions import log_det_ratio_estimate

    uf, logj = flow.forward(params, u)
    one = lambda k, a, b: log_det_ratio_estimate(k, base, a, target, b, n_noise=det_noise)  # noqa: E731
    log_det = jax.vmap(one)(keys, u, uf)
    log_w = -target.gauge.action(uf) + base.gauge.action(u) + logj + log_det
    return log_w, logj, measure(u), measure(uf), (uf if keep else None)


def flowed_reweighting(flow: Flow, params: Array, base: Any, target: Any, configs: Any,
                       measure: Callable[[Array], dict[str, Array]], *, batch: int = 64,
                       keep_links: bool = False, progress: Callable[[int, int], None] | None = None,
                       det_noise: int = 0, key: Array | None = None) -> PairedSamples:
    """Apply the flow to every base configuration (in batches) and measure both sides.

    ``measure`` is a hashable ``links -> dict`` (e.g. :class:`corrflow.generate.GaugeMeasurements`).
    Raises ``FloatingPointError`` naming the first configuration whose flow output or weight is not
    finite (nothing is returned then).

    Fermion theories: by default the weights contain the exact determinant ratio (``theory.action``, dense).
    With ``det_noise > 0`` they use the unbiased stochastic estimate of ``det M_{a'}(f(U)) / det M_a(U)``
    (:func:`corrflow.theories.fermions.log_det_ratio_estimate`, ``det_noise`` Gaussian noise vectors per
    configuration, keys ``fold_in(key, i)`` for configuration ``i``): the reweighted ratio stays exact in the
    limit of many configurations, at the price of noisier weights; this is the path for lattices too large for
    dense determinants.
    """
    n = len(configs)
    if det_noise:
        if not (hasattr(base, "gauge") and hasattr(target, "gauge")):
            raise ValueError("det_noise > 0 needs fermion theories (WilsonFermionAction) for base and target")
        if target.n_flavors != 2 or base.n_flavors != 2:
            raise ValueError("the stochastic determinant ratio is implemented for n_f = 2")
        if key is None:
            raise ValueError("det_noise > 0 needs a random key (key=jax.random.PRNGKey(...))")
    parts: list[tuple] = []
    for lo in range(0, n, batch):
        u = jnp.asarray(configs[lo:lo + batch])
        if det_noise:
            keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(lo, lo + len(u)))
            out = _batch_stochastic(flow, params, base, target, u, measure, keep_links, keys, int(det_noise))
        else:
            out = _batch(flow, params, base, target, u, measure, keep_links)
        lw = np.asarray(out[0])
        if not np.all(np.isfinite(lw)):
            bad = lo + int(np.argmax(~np.isfinite(lw)))
            raise FloatingPointError(f"the flow produced a non-finite weight at base configuration {bad}; "
                                     "check the flow checkpoint (NaN parameters?) and the configurations")
        parts.append(jax.tree_util.tree_map(np.asarray, out))
        if progress is not None:
            progress(min(n, lo + batch), n)
    cat = lambda xs: np.concatenate(xs, axis=0)  # noqa: E731
    return PairedSamples(
        log_w=cat([p[0] for p in parts]), log_jacobian=cat([p[1] for p in parts]),
        base={k: cat([p[2][k] for p in parts]) for k in parts[0][2]},
        flowed={k: cat([p[3][k] for p in parts]) for k in parts[0][3]},
        links=cat([p[4] for p in parts]) if keep_links else None)


def direct_reweighting(base: Any, target: Any, configs: Any, measure: Callable[[Array], dict[str, Array]], *,
                       batch: int = 64, flow_template: Flow | None = None) -> PairedSamples:
    """Direct reweighting baseline: :func:`flowed_reweighting` with the identity map (``log J = 0``)."""
    flow = flow_template or _identity_flow(base)
    return flowed_reweighting(flow, flow.init_params(), base, target, configs, measure, batch=batch)


def _identity_flow(theory: Any) -> Flow:
    return Flow(theory.group, theory.shape, ("plaquette",), 1)


class MetropolisChain(NamedTuple):
    """``index[t]``: the proposal (base sample) held at step ``t``; ``accepted[t]``: bool; ``acceptance``."""

    index: np.ndarray
    accepted: np.ndarray
    acceptance: float


def flowed_metropolis(log_w: np.ndarray, key: Array) -> MetropolisChain:
    """Independence Metropolis over the proposals in order: step ``t`` proposes ``f(U_t)`` and accepts
    it with probability ``min(1, w_t / w_current)``.  Exact for the target when the proposals are
    (approximately independent) draws of the pushed-forward base distribution; step 0 takes proposal 0.
    """
    lw = np.asarray(log_w, dtype=np.float64)
    if lw.ndim != 1 or len(lw) < 1:
        raise ValueError(f"log_w must be a non-empty 1-D array, got shape {lw.shape}")
    if np.any(np.isnan(lw)) or np.any(lw == np.inf):
        raise ValueError("log_w contains NaN or +inf")
    u = np.asarray(jax.random.uniform(key, (len(lw),), dtype=jnp.float64))
    index = np.empty(len(lw), np.int64)
    accepted = np.zeros(len(lw), bool)
    cur = 0
    index[0], accepted[0] = 0, True
    for t in range(1, len(lw)):  # sequential by nature; O(n) scalar work
        if np.log(u[t]) < lw[t] - lw[cur]:
            cur = t
            accepted[t] = True
        index[t] = cur
    return MetropolisChain(index, accepted, float(accepted[1:].mean()) if len(lw) > 1 else 1.0)


# ----------------------------------------------------------------------------------------
# flowed ensembles in a store
# ----------------------------------------------------------------------------------------


class CorrelateSummary(NamedTuple):
    name: str
    n_new: int
    committed: int
    weight_ess_fraction: float
    acceptance: float
    log_mean_weight: float


def correlate_to_store(store: Any, base_name: str, name: str, *, checkpoint: Any = None, batch: int = 64,
                       seed: int = 0, progress: Callable[[int, int], None] | None = None) -> CorrelateSummary:
    """Write the flowed ensemble ``name`` of base ensemble ``base_name``: ``f(U_i)`` for every stored base
    configuration, with ``log_weight``, ``log_jacobian``, the pairing (``source_chain``, ``source_traj``;
    the ``traj`` coordinate is the base's) and the base's observables measured on ``f(U_i)``.
    ``accepted`` records the exact flowed Metropolis chain at ``a'`` (per chain, in base order; uniforms
    from ``fold_in(fold_in(key(seed), chain), traj)``).

    ``checkpoint``: a flow checkpoint directory (see :mod:`corrflow.flows.train`); for the identity flow
    (direct reweighting) use :func:`direct_to_store`.  A flow trained on another volume is applied with
    the same parameters (volume transfer).  Resumable: continues after the committed configurations.
    """
    from .flows.train import load_checkpoint

    ck = load_checkpoint(checkpoint)
    return _correlate(store, base_name, name, ck["flow"], ck["params"], ck["base"], ck["target"], ck["id"],
                      str(checkpoint), batch, seed, progress)


def direct_to_store(store: Any, base_name: str, name: str, target_params: dict[str, float], *, batch: int = 64,
                    seed: int = 0, progress: Callable[[int, int], None] | None = None) -> CorrelateSummary:
    """The direct-reweighting baseline as a flowed ensemble with the identity flow (``log J = 0``)."""
    from .theories import make_theory

    spec = store.spec(base_name)
    base = make_theory(spec.theory, spec.shape, **spec.params)
    target = base.replace(**target_params)
    flow = _identity_flow(base)
    return _correlate(store, base_name, name, flow, flow.init_params(), base, target, "identity", None, batch, seed,
                      progress)


def _correlate(store, base_name, name, flow, params, base_ck, target_ck, flow_id, ckpt_path, batch, seed,
               progress) -> CorrelateSummary:  # noqa: ANN001
    from .generate import measurements_from_names
    from .store import EnsembleSpec, StoreError
    from .theories import make_theory

    bspec = store.spec(base_name)
    if bspec.kind == "flowed":
        raise StoreError(f"{base_name!r} is itself a flowed ensemble; correlate from an HMC or imported ensemble")
    if base_ck.group.name != bspec.group:
        raise StoreError(f"the flow is for group {base_ck.group.name}, ensemble {base_name!r} is {bspec.group}")
    diffs = {k: (v, bspec.params.get(k)) for k, v in base_ck.params().items() if bspec.params.get(k) != v}
    if diffs:
        raise StoreError(f"the flow was trained from parameters {base_ck.params()} but ensemble {base_name!r} has "
                         f"{bspec.params}; train a flow from this ensemble")
    base = make_theory(bspec.theory, bspec.shape, **bspec.params)
    target = make_theory(bspec.theory, bspec.shape, **target_ck.params())
    if tuple(flow.shape) != tuple(bspec.shape):
        flow = flow.with_shape(bspec.shape)  # volume transfer (ValueError if the extents do not fit)
    measure = measurements_from_names(base.group, bspec.measurements, len(bspec.shape))
    spec = EnsembleSpec(theory=bspec.theory, group=bspec.group, shape=bspec.shape, params=target.params(),
                        n_chains=bspec.n_chains, seed=seed, dtype=bspec.dtype, hmc={}, n_therm=0, thin=1,
                        measurements=bspec.measurements, kind="flowed",
                        flow={"source": base_name, "flow_id": flow_id, "checkpoint": ckpt_path,
                              "source_params": bspec.params, "loops": list(flow.loops), "n_sweeps": flow.n_sweeps,
                              "trained_shape": list(base_ck.shape),
                              **({"degree": flow.degree} if flow.degree else {})})
    if name in store:
        diffs = store.spec(name).differences(spec)
        if diffs:
            raise StoreError(f"ensemble {name!r} exists with different settings: " + "; ".join(diffs))
    else:
        store.create_ensemble(name, spec, chunk_traj=max(1, batch))
    bds = store.open_ensemble(base_name, verify=False)
    n_base = int(bds.sizes["traj"])
    base_traj = np.asarray(bds.traj.values)
    base_links = store.root[base_name]["links"]
    key = jax.random.PRNGKey(seed)
    c = bspec.n_chains
    with store.writer(name) as w:
        start = w.committed
        w.reserve(n_base)
        if start >= n_base:
            raise StoreError(f"{name!r} already pairs all {n_base} base configurations of {base_name!r}; "
                             "generate more base trajectories first")
        cur = np.full(c, -np.inf)  # log w of the state each Metropolis chain holds
        if start:
            acc_done = np.asarray(store.root[name]["accepted"][:, :start])
            lw_done = np.asarray(store.root[name]["log_weight"][:, :start])
            for ch in range(c):
                last = np.flatnonzero(acc_done[ch])
                cur[ch] = lw_done[ch, last[-1]] if len(last) else -np.inf
        uniforms = jax.jit(jax.vmap(lambda k, t: jax.random.uniform(jax.random.fold_in(k, t), dtype=jnp.float64),
                                    in_axes=(None, 0)))
        for lo in range(start, n_base, batch):
            hi = min(n_base, lo + batch)
            u = np.asarray(base_links[:, lo:hi])  # (chains, b, ...)
            flat = u.reshape((-1,) + u.shape[2:])
            out = flowed_reweighting(flow, params, base, target, flat, measure, batch=len(flat), keep_links=True)
            shp = (c, hi - lo)
            lw = out.log_w.reshape(shp)
            acc = np.zeros(shp, bool)
            for ch in range(c):  # exact flowed Metropolis chain, continued across blocks
                uni = np.asarray(uniforms(jax.random.fold_in(key, ch), jnp.asarray(base_traj[lo:hi])))
                for j in range(hi - lo):
                    if np.log(uni[j]) < lw[ch, j] - cur[ch]:
                        acc[ch, j] = True
                        cur[ch] = lw[ch, j]
            per = {k: v.reshape(shp) for k, v in out.flowed.items()}
            per.update(action=np.asarray(target.action(jnp.asarray(out.links))).reshape(shp),
                       delta_H=np.full(shp, np.nan), accepted=acc, step_size=np.full(shp, np.nan),
                       log_weight=lw, log_jacobian=out.log_jacobian.reshape(shp),
                       source_chain=np.repeat(np.arange(c)[:, None], hi - lo, axis=1),
                       source_traj=np.broadcast_to(base_traj[lo:hi], shp).astype(np.int64))
            w.append(base_traj[lo:hi], out.links.reshape(shp + out.links.shape[1:]), per, int(base_traj[hi - 1]) + 1)
            if progress is not None:
                progress(hi, n_base)
        committed = w.committed
    lw_all = np.asarray(store.root[name]["log_weight"][:, :committed])
    shifted = lw_all - lw_all.max()
    wts = np.exp(shifted)
    accepted = np.asarray(store.root[name]["accepted"][:, 1:committed])
    return CorrelateSummary(name, committed - start, committed, float(wts.sum() ** 2 / (wts.size * (wts**2).sum())),
                            float(accepted.mean()) if accepted.size else float("nan"),
                            float(np.log(wts.mean()) + lw_all.max()))
