"""Hybrid Monte Carlo on a Lie group (pure functions, blackjax-style ``init`` / ``step``).

Molecular dynamics: ``H = 1/2 sum_a (pi^a)^2 + S(U)``, equations of motion ``dU/dt = pi U`` and
``dpi/dt = -F(U)`` with the right-trivialised force ``F`` of the theory (see
:mod:`corrflow.theories.gauge`).  Integrators:

* ``"leapfrog"``: ``pi <- pi - eps/2 F; (U <- exp(eps pi) U; pi <- pi - eps F)^n ...`` (the last
  momentum kick is a half step).
* ``"omelyan"``: 2nd-order minimum-norm integrator (Omelyan, Mryglod & Folk 2003) with
  ``lambda = 0.1931833275037836``: per step ``pi -= lambda eps F; U <- exp(eps/2 pi) U;
  pi -= (1 - 2 lambda) eps F; U <- exp(eps/2 pi) U; pi -= lambda eps F`` (adjacent kicks fused);
  two force evaluations per step, about 10x smaller energy violation than leapfrog at equal step.

Both are reversible and area-preserving, so the Metropolis step makes HMC exact.  After each
trajectory the links are re-unitarised (SU(N)) or wrapped into ``[-pi, pi)`` (U(1)).

Trajectory-length randomisation (``jitter``): with ``jitter = j > 0`` every trajectory uses the step size
``eps (1 + j (2 r - 1))``, ``r`` uniform in ``[0, 1)`` from the trajectory's key (independent of the state, so each
trajectory is an exact HMC update and so is their mixture).  A fixed trajectory length ``tau`` is nearly resonant
with the near-harmonic modes of a weakly coupled theory (``omega tau`` close to a multiple of ``2 pi``): such modes
hardly move and the autocorrelation time explodes (Mackenzie 1989).  Measured in 2D U(1), 8x8, beta = 9, Omelyan
``tau = 1``: ``2 tau_int`` of the plaquette from blocks of 4000 trajectories 102 without jitter, 3.9 with
``j = 0.2`` (``benchmarks/hmc_jitter.py``; BENCHMARKS.md).  ``HMCConfig(jitter=None)`` asks the store driver
(:func:`corrflow.pipeline.generate_to_store`, the CLI and the analyses by default) to resolve it with
:func:`resolve_jitter`: :data:`DEFAULT_JITTER` for a new ensemble, the stored value when continuing one.

Random numbers: the key for trajectory ``t`` of a run is ``jax.random.fold_in(key, t)`` where ``t``
is the *global* trajectory index, so a run split into pieces (or resumed after interruption)
reproduces the uninterrupted chain bit for bit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import batching

Array = jax.Array

__all__ = [
    "HMCConfig",
    "HMCState",
    "HMCInfo",
    "INTEGRATORS",
    "DEFAULT_JITTER",
    "resolve_jitter",
    "cold_start",
    "hot_start",
    "init",
    "step",
    "integrate",
    "kick_schedule",
    "hamiltonian",
    "sample",
    "sample_chains",
]

OMELYAN_LAMBDA = 0.1931833275037836
INTEGRATORS = ("leapfrog", "omelyan")
#: trajectory-length randomisation of new ensembles made through the store (CLI, analyses)
DEFAULT_JITTER = 0.2


@dataclass(frozen=True)
class HMCConfig:
    """HMC settings: ``step_size`` (traced), ``n_steps``, ``integrator`` and ``jitter`` (static).

    The trajectory length is ``step_size * n_steps``; with ``jitter = j`` (``0 <= j < 1``) each trajectory's step
    size is drawn uniformly from ``step_size * [1 - j, 1 + j]`` (module docstring: randomised trajectory lengths);
    the default :data:`DEFAULT_JITTER` is the command line's (a fixed length freezes near-harmonic modes at weak
    coupling: ``tau_int`` 40-50 against 3 for 2D U(1) 8x8 at beta = 9); ``jitter = 0`` for fixed lengths;
    ``jitter = None``: to be resolved from the store (:func:`resolve_jitter`) before sampling.
    """

    step_size: Any = 0.1
    n_steps: int = 10
    integrator: str = "omelyan"
    jitter: float | None = DEFAULT_JITTER

    def __post_init__(self) -> None:
        if isinstance(self.step_size, (int, float)) and not (np.isfinite(self.step_size) and self.step_size > 0):
            raise ValueError(f"HMCConfig: step_size must be a positive finite number, got {self.step_size}")
        if not isinstance(self.n_steps, (int, np.integer)) or self.n_steps < 1:
            raise ValueError(f"HMCConfig: n_steps must be an integer >= 1, got {self.n_steps!r}")
        if self.integrator not in INTEGRATORS:
            raise ValueError(f"HMCConfig: unknown integrator {self.integrator!r}; allowed: {', '.join(INTEGRATORS)}")
        if self.jitter is not None and not (isinstance(self.jitter, (int, float, np.floating))
                                            and 0.0 <= float(self.jitter) < 1.0):
            raise ValueError(f"HMCConfig: jitter must be a number in [0, 1) (relative spread of the step size), got "
                             f"{self.jitter!r}")

    @property
    def trajectory_length(self) -> float:
        return float(self.step_size) * self.n_steps

    def as_dict(self) -> dict[str, Any]:
        """The recipe stored with an ensemble (``jitter`` only when used, so older recipes compare equal)."""
        self._resolved()
        d = {"step_size": float(self.step_size), "n_steps": int(self.n_steps), "integrator": self.integrator}
        if self.jitter:
            d["jitter"] = float(self.jitter)
        return d

    def trajectory_step_size(self, key: Array, dtype: Any) -> Array:
        """The step size of the trajectory with key ``key``: ``step_size`` without jitter, otherwise
        ``step_size (1 + jitter (2 r - 1))`` with ``r = uniform(fold_in(key, 3))`` (the momenta and the accept
        test use ``split(key)``, pseudofermions ``fold_in(key, 1)``)."""
        self._resolved()
        eps = jnp.asarray(self.step_size, dtype)
        if not self.jitter:
            return eps
        r = jax.random.uniform(jax.random.fold_in(key, 3), (), dtype)
        return eps * (1 + self.jitter * (2 * r - 1))

    def _resolved(self) -> None:
        if self.jitter is None:
            raise ValueError("HMCConfig(jitter=None) means 'resolve from the store': call corrflow.hmc.resolve_jitter "
                             "(done by corrflow.pipeline.generate_to_store) or give a jitter")


def resolve_jitter(config: HMCConfig, stored: dict[str, Any] | None) -> HMCConfig:
    """``config`` with ``jitter=None`` resolved: the stored recipe's jitter when continuing an ensemble (``stored``:
    its ``hmc`` settings; 0 for recipes from before randomised trajectory lengths), :data:`DEFAULT_JITTER` for a
    new one (``stored`` None).  A config with a jitter is returned unchanged."""
    if config.jitter is not None:
        return config
    jitter = DEFAULT_JITTER if stored is None else float(stored.get("jitter", 0.0))
    return dataclasses.replace(config, jitter=jitter)


jax.tree_util.register_dataclass(HMCConfig, data_fields=["step_size"], meta_fields=["n_steps", "integrator", "jitter"])


class HMCState(NamedTuple):
    """Markov-chain state: links and their action (so it is not recomputed each trajectory)."""

    links: Array
    action: Array


class HMCInfo(NamedTuple):
    """Per-trajectory diagnostics.

    ``delta_H``: energy violation ``H_end - H_start``; ``accepted``: bool;
    ``acceptance_probability``: ``min(1, exp(-delta_H))``; ``step_size``: the trajectory's step size (the
    configured one, or its randomised value with ``jitter``; NaN for heat-bath updates).
    """

    delta_H: Array
    accepted: Array
    acceptance_probability: Array
    step_size: Any = None


# ----------------------------------------------------------------------------------------
# starts
# ----------------------------------------------------------------------------------------


def cold_start(theory: Any, batch: tuple[int, ...] = (), dtype: Any = None) -> Array:
    """All links set to the identity. ``dtype`` defaults to float64 / complex128."""
    g = theory.group
    if dtype is None:
        dtype = jnp.float64 if g.is_abelian else jnp.complex128
    return g.identity(tuple(batch) + theory.shape + (theory.ndim,), dtype)


def hot_start(key: Array, theory: Any, batch: tuple[int, ...] = (), dtype: Any = None) -> Array:
    """Haar-random links (infinite-temperature start)."""
    g = theory.group
    if dtype is None:
        dtype = jnp.float64 if g.is_abelian else jnp.complex128
    return g.random(key, tuple(batch) + theory.shape + (theory.ndim,), dtype)


# ----------------------------------------------------------------------------------------
# kernel
# ----------------------------------------------------------------------------------------


def init(theory: Any, links: Array) -> HMCState:
    """Initial state from links of shape ``(*batch, *theory.link_shape)``."""
    theory.check_links(links)
    return HMCState(links=links, action=theory.action(links))


def kinetic_energy(group: Any, p: Array, ndim: int) -> Array:
    """``1/2 sum_a (pi^a)^2`` summed over all links; shape ``batch``."""
    from .theories.gauge import accumulate

    k = group.kinetic(p)
    return accumulate(k, tuple(range(-(ndim + 1), 0)))


def hamiltonian(theory: Any, links: Array, momenta: Array) -> Array:
    """``H = K(pi) + S(U)``, shape ``batch``."""
    return kinetic_energy(theory.group, momenta, theory.ndim) + theory.action(links)


def kick_schedule(config: HMCConfig, dtype: Any) -> tuple[Array, Array, Array]:
    """The integrator as ``K`` kick-drift pairs and a final kick: ``(kicks (K,), drift, last_kick)``.

    One trajectory is ``(pi <- pi - kicks[k] F(U); U <- exp(drift pi) U)`` for ``k = 0 .. K-1``, then
    ``pi <- pi - last_kick F(U)``.  Leapfrog: ``K = n_steps``, kicks ``(eps/2, eps, ..., eps)``, drift ``eps``,
    last ``eps/2``.  Omelyan: ``K = 2 n_steps``, kicks ``(lambda eps, (1-2 lambda) eps, 2 lambda eps,
    (1-2 lambda) eps, ..., 2 lambda eps, (1-2 lambda) eps)``, drift ``eps/2``, last ``lambda eps``.
    """
    eps = jnp.asarray(config.step_size, dtype)
    n = config.n_steps
    if config.integrator == "leapfrog":
        kicks = jnp.concatenate([jnp.reshape(eps / 2, (1,)), jnp.full((n - 1,), eps)])
        return kicks, eps, eps / 2
    lam = OMELYAN_LAMBDA
    inner = jnp.stack([(1 - 2 * lam) * eps, 2 * lam * eps])
    kicks = jnp.concatenate([jnp.reshape(lam * eps, (1,)), jnp.tile(inner, n)[:-1]])
    return kicks, eps / 2, lam * eps


def integrate(theory: Any, config: HMCConfig, links: Array, momenta: Array) -> tuple[Array, Array]:
    """Molecular-dynamics trajectory of ``config.n_steps`` steps; returns ``(links, momenta)``.

    Exactly reversible: ``integrate(U', -pi')`` returns ``(U, -pi)`` up to rounding.

    One ``lax.scan`` over the steps of :func:`kick_schedule`.  A theory with ``force_start`` /
    ``force_finish`` (``force(U) = force_finish(force_start(U), U)``) whose ``force_start`` returns arrays has
    them computed at the end of each iteration and carried into the next (kick-drift pairs): the loop boundary
    materialises them once per step, whereas inside one fused XLA loop a transcendental is recomputed for every
    consumer (for the U(1) force, four sines per plaquette instead of one; 3x slower on a CPU).  Otherwise
    (SU(N), fermions) the scan runs drift-kick pairs after a first kick.
    """
    g = theory.group
    kicks, drift_h, last = kick_schedule(config, links.real.dtype)
    start = getattr(theory, "force_start", None)
    aux0 = start(links) if start is not None else ()
    if not jax.tree_util.tree_leaves(aux0):  # nothing to carry: drift-kick pairs (measured 10-15% faster for SU(3))
        def drift_kick(carry: tuple[Array, Array], h: Array) -> tuple[tuple[Array, Array], None]:
            u, p = carry
            u = g.exp_left(drift_h * p, u)
            return (u, p - h * theory.force(u).astype(p.dtype)), None

        p = momenta - kicks[0] * theory.force(links).astype(momenta.dtype)
        (u, p), _ = jax.lax.scan(drift_kick, (links, p), jnp.concatenate([kicks[1:], jnp.reshape(last, (1,))]))
        return u, p

    finish = theory.force_finish

    def kick_drift(carry: tuple[Array, Array, Any], h: Array) -> tuple[tuple[Array, Array, Any], None]:
        u, p, aux = carry
        p = p - h * finish(aux, u).astype(p.dtype)
        u = g.exp_left(drift_h * p, u)
        return (u, p, start(u)), None

    (u, p, aux), _ = jax.lax.scan(kick_drift, (links, momenta, aux0), kicks)
    p = p - last * finish(aux, u).astype(p.dtype)
    return u, p


def step(key: Array, state: HMCState, theory: Any, config: HMCConfig) -> tuple[HMCState, HMCInfo]:
    """One HMC trajectory with Metropolis accept/reject (works on batched states).

    Theories with auxiliary fields (``theory.refresh(key, links)``, e.g. pseudofermions) get them redrawn at
    the start of the trajectory; ``state.action`` then holds the action at the latest auxiliary field.

    For a batch of chains, each chain is accepted or rejected independently.
    """
    g = theory.group
    links = state.links
    batch = links.shape[: links.ndim - len(theory.link_shape)]
    k_mom, k_acc = jax.random.split(key)
    action0 = state.action
    if hasattr(theory, "refresh"):  # auxiliary fields (pseudofermions) drawn at the start of each trajectory
        theory = theory.refresh(jax.random.fold_in(key, 1), links)
        action0 = theory.action(links)
    p0 = g.random_algebra(k_mom, links.shape[: links.ndim - g.elem_ndim], links.dtype)
    h0 = kinetic_energy(g, p0, theory.ndim) + action0
    eps = config.trajectory_step_size(key, links.real.dtype)
    if config.jitter:
        config = dataclasses.replace(config, step_size=eps)
    u1, p1 = integrate(theory, config, links, p0)
    u1 = g.normalize(u1)
    s1 = theory.action(u1)
    h1 = kinetic_energy(g, p1, theory.ndim) + s1
    dh = h1 - h0
    dh = jnp.where(jnp.isnan(dh), jnp.inf, dh)  # a NaN trajectory is always rejected
    prob = jnp.minimum(1.0, jnp.exp(-dh))
    accept = jax.random.uniform(k_acc, batch, dh.dtype) < prob
    sel = accept.reshape(batch + (1,) * len(theory.link_shape))
    new_links = jnp.where(sel, u1, links)
    new_action = jnp.where(accept, s1, action0)
    return HMCState(new_links, new_action), HMCInfo(dh, accept, prob, jnp.broadcast_to(eps, dh.shape))


def sample(
    key: Array,
    state: HMCState,
    theory: Any,
    config: HMCConfig,
    n_traj: int,
    first_index: Any = 0,
    measure: Callable[[Array], Any] | None = None,
) -> tuple[HMCState, HMCInfo, Any]:
    """Run ``n_traj`` trajectories in one ``lax.scan`` (call it under ``jax.jit``).

    The key of trajectory ``first_index + t`` is ``fold_in(key, first_index + t)``.  ``measure``
    (optional) maps links to a pytree recorded after every trajectory.  Returns the final state,
    the stacked :class:`HMCInfo` (leading axis ``n_traj``) and the stacked measurements (or None).
    """

    def body(st: HMCState, t: Array) -> tuple[HMCState, tuple[HMCInfo, Any]]:
        st, info = step(jax.random.fold_in(key, t), st, theory, config)
        m = measure(st.links) if measure is not None else None
        return st, (info, m)

    idx = jnp.arange(n_traj) + first_index
    state, (info, meas) = jax.lax.scan(body, state, idx)
    return state, info, meas


def sample_chains(
    keys: Array,
    states: HMCState,
    theory: Any,
    config: HMCConfig,
    n_traj: int,
    first_index: Any = 0,
    measure: Callable[[Array], Any] | None = None,
) -> tuple[HMCState, HMCInfo, Any]:
    """:func:`sample` over chains (vmapped, or one by one on CPUs: :mod:`corrflow.batching`): ``keys``
    ``(n_chains, 2)``, states with leading chain axis.

    Outputs have leading axes ``(n_chains, n_traj)``.
    """
    fn = lambda k, s: sample(k, s, theory, config, n_traj, first_index, measure)  # noqa: E731
    return batching.over_leading_axis(fn, (keys, states), states.links)
