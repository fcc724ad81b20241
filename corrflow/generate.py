"""Ensemble generation driver: many chains, many trajectories per jit call, measurements on the fly.

This is the layer between the pure HMC kernel (:mod:`corrflow.hmc`) and user-facing tools (CLI,
store, demo).  It runs trajectories in blocks; each block is one call of a jitted ``lax.scan`` over the
trajectories, vmapped over the chains (on CPUs from 8^4 SU(3) on, the chains one after the other:
:mod:`corrflow.batching`), so the Python overhead is paid once per block.  Chain ``c`` uses the key
``fold_in(key, c)`` and trajectory ``t`` of it ``fold_in(fold_in(key, c), t)``: any split of the
run into blocks gives bit-identical results.
"""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import batching, hmc
from . import observables as obs
from .groups import Group, get_group
from .lattice import check_links, lattice_shape

Array = jax.Array

__all__ = [
    "GaugeMeasurements",
    "Block",
    "chain_keys",
    "initial_links",
    "run_blocks",
    "generate",
    "measurements_from_names",
]


@dataclass(frozen=True)
class GaugeMeasurements:
    """Hashable measurement function ``links -> dict`` used inside the HMC scan.

    Records ``plaquette`` always, ``wilson_RxT`` for each ``(R, T)`` in ``wilson_loops`` (averaged
    over planes and orientations), ``topological_charge`` (2D U(1) only) and ``polyakov_loop``
    (``|P|`` of the temporal Polyakov loop) when requested.

    ``group``: a :class:`~corrflow.groups.Group`, its name (``"u1"``, ``"su3"``, ...) or a theory (its group);
    ``wilson_loops``: a sequence of ``(R, T)`` pairs, e.g. ``((1, 1), (2, 2))`` or ``[(2, 2)]`` (stored as a tuple of
    int pairs, so the object stays hashable: it is a static argument of jitted code).  Each loop must fit on the lattice
    (``R, T`` smaller than the shortest extent); that is checked when the links are first seen, at trace time.
    """

    group: Group
    wilson_loops: tuple[tuple[int, int], ...] = ()
    topological_charge: bool = False
    polyakov_loop: bool = False

    def __post_init__(self) -> None:
        group = self.group.group if hasattr(self.group, "link_shape") else self.group  # a theory: its group
        object.__setattr__(self, "group", get_group(group))
        object.__setattr__(self, "wilson_loops", _normalise_loops(self.wilson_loops))

    def check_lattice(self, shape: Sequence[int]) -> None:
        """Raise ``ValueError`` if a Wilson loop does not fit on the lattice ``shape`` ``(L_0, ..., L_{d-1})``."""
        for r, t in self.wilson_loops:
            _check_loop_fits(r, t, shape)

    def __call__(self, u: Array) -> dict[str, Array]:
        shape = lattice_shape(u, self.group)
        try:  # static shapes and dtypes: raised at trace time (su2 on su3 links gave a plaquette off by 3/2)
            check_links(u, self.group, shape)
        except ValueError as exc:
            raise ValueError(f"GaugeMeasurements({self.group.name!r}) got links that are not {self.group.name} links: "
                             f"{str(exc).rstrip('.')}; measure with the theory's group, "
                             "GaugeMeasurements(theory.group)") from None
        self.check_lattice(shape)
        out = {"plaquette": obs.plaquette(u, self.group)}
        for r, t in self.wilson_loops:
            out[f"wilson_{r}x{t}"] = obs.wilson_loop(u, self.group, r, t)
        if self.topological_charge:
            out["topological_charge"] = obs.topological_charge(u, self.group)
        if self.polyakov_loop:
            out["polyakov_loop"] = jnp.abs(obs.polyakov_loop(u, self.group))
        return out

    @property
    def names(self) -> list[str]:
        names = ["plaquette"] + [f"wilson_{r}x{t}" for r, t in self.wilson_loops]
        if self.topological_charge:
            names.append("topological_charge")
        if self.polyakov_loop:
            names.append("polyakov_loop")
        return names


def _normalise_loops(loops: Any) -> tuple[tuple[int, int], ...]:
    """``wilson_loops`` as a tuple of ``(R, T)`` int pairs with ``R, T >= 1``; ``ValueError`` otherwise."""
    hint = "wilson_loops must be a sequence of (R, T) pairs, e.g. ((2, 2),) or [(1, 2), (2, 2)]"
    if isinstance(loops, (str, bytes)) or not hasattr(loops, "__iter__"):
        raise ValueError(f"{hint}; got {loops!r}")
    orig, loops, out = loops, tuple(loops), []
    for loop in loops:
        try:
            r, t = (operator.index(x) for x in loop)
        except (TypeError, ValueError):
            flat = " (for one loop write ((R, T),))" if all(isinstance(x, (int, np.integer)) for x in loops) else ""
            raise ValueError(f"{hint}; got {orig!r}{flat}") from None
        if r < 1 or t < 1:
            raise ValueError(f"wilson_{r}x{t}: Wilson loop extents must be >= 1")
        out.append((r, t))
    return tuple(out)


def _check_loop_fits(r: int, t: int, shape: Sequence[int]) -> None:
    """``ValueError`` unless the ``R x T`` loop (averaged over planes and orientations) fits on ``shape``."""
    if max(r, t) >= min(shape):
        raise ValueError(f"wilson_{r}x{t} does not fit on the {'x'.join(map(str, shape))} lattice: loops are averaged "
                         f"over all planes and orientations, so R and T must be smaller than the shortest "
                         f"extent ({min(shape)})")


def chain_keys(key: Array, n_chains: int, first_chain: int = 0) -> Array:
    """Per-chain keys ``fold_in(key, c)`` for ``c = first_chain .. first_chain + n_chains - 1``."""
    return jax.vmap(lambda c: jax.random.fold_in(key, c))(jnp.arange(first_chain, first_chain + n_chains))


def initial_links(key: Array, theory: Any, n_chains: int, start: str = "hot", dtype: Any = None) -> Array:
    """Starting links ``(n_chains, *link_shape)``: ``"hot"`` (Haar random) or ``"cold"`` (unit)."""
    if start == "hot":
        keys = chain_keys(jax.random.fold_in(key, 2**31 - 1), n_chains)
        return jax.vmap(lambda k: hmc.hot_start(k, theory, dtype=dtype))(keys)
    if start == "cold":
        return hmc.cold_start(theory, (n_chains,), dtype=dtype)
    raise ValueError(f"start must be 'hot' or 'cold', got {start!r}")


@jax.jit
def _init_states(theory: Any, links: Array) -> hmc.HMCState:
    return hmc.HMCState(links, theory.action(links))


def markov_step(key: Array, state: hmc.HMCState, theory: Any, config: Any) -> tuple[hmc.HMCState, hmc.HMCInfo]:
    """One Markov step of the algorithm ``config`` names: an HMC trajectory (:class:`~corrflow.hmc.HMCConfig`) or
    one compound heat-bath + over-relaxation update (:class:`~corrflow.heatbath.HeatbathConfig`, pure SU(N) gauge
    theories), the latter reported as an always-accepted step with ``delta_H = NaN``."""
    from .heatbath import HeatbathConfig

    if isinstance(config, HeatbathConfig):
        from . import heatbath

        links = heatbath.update(key, state.links, theory, config)
        action = theory.action(links)
        nan = jnp.full(action.shape, jnp.nan, action.dtype)
        return hmc.HMCState(links, action), hmc.HMCInfo(nan, jnp.ones(action.shape, bool), jnp.ones_like(action), nan)
    return hmc.step(key, state, theory, config)


def _sample_stored(key, state, theory, config, n_store, thin, first_index, measure, keep_links):  # noqa: ANN001
    """One chain: ``n_store`` stored trajectories, each the last of ``thin`` consecutive ones.

    Trajectory ``t`` (global index) uses ``fold_in(key, t)``; with ``thin = 1`` this is exactly
    :func:`corrflow.hmc.sample`.
    """

    def group(st, j):  # noqa: ANN001, ANN202
        t0 = first_index + j * thin

        def inner(s, t):  # noqa: ANN001, ANN202
            return markov_step(jax.random.fold_in(key, t), s, theory, config)

        st, infos = jax.lax.scan(inner, st, t0 + jnp.arange(thin))
        info = jax.tree_util.tree_map(lambda x: x[-1], infos)
        meas = measure(st.links) if measure is not None else None
        return st, (info, meas, st.links if keep_links else None, st.action)

    return jax.lax.scan(group, state, jnp.arange(n_store))


@partial(jax.jit, static_argnames=("n_store", "thin", "measure", "keep_links", "sharded"))
def _run_block_jit(keys, states, theory, config, n_store, thin, first_index, measure, keep_links,  # noqa: ANN001, ANN202
                   sharded=False):
    fn = lambda k, s: _sample_stored(k, s, theory, config, n_store, thin, first_index, measure, keep_links)  # noqa: E731
    if sharded:  # chains spread over devices: each device runs its own, vectorised
        return jax.vmap(fn)(keys, states)
    return batching.over_leading_axis(fn, (keys, states), states.links)


class Block(NamedTuple):
    """One block of stored trajectories for all chains.

    ``first``: global index of the block's first trajectory; ``traj``: global indices of the stored
    trajectories ``(n,)``; ``state``: chain states after the block; ``info``: :class:`~corrflow.hmc.HMCInfo`
    of the stored trajectories ``(chains, n)``; ``measurements``: dict of ``(chains, n)`` arrays (empty for a block
    run without ``measure``, such as :func:`generate`'s thermalisation blocks);
    ``links``: stored configurations ``(chains, n, ...)`` (or None); ``action``: ``(chains, n)``.
    """

    first: int
    traj: np.ndarray
    state: hmc.HMCState
    info: hmc.HMCInfo
    measurements: dict[str, np.ndarray]
    links: Any
    action: Any


def run_blocks(
    key: Array,
    theory: Any,
    config: hmc.HMCConfig,
    links: Array,
    n_traj: int,
    *,
    block_size: int = 100,
    first_index: int = 0,
    measure: Callable[[Array], Any] | None = None,
    thin: int = 1,
    keep_links: bool = False,
    action: Array | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> Iterator[Block]:
    """Yield :class:`Block` s until ``n_traj`` stored trajectories (from ``first_index``) are done.

    ``links`` has a leading chain axis; ``action`` (optional) is the chains' current action (pass it
    when continuing a chain so that no recomputation perturbs the last bits).  Each stored trajectory
    is the last of ``thin`` consecutive ones, so ``n_traj * thin`` trajectories run in all.  Keys:
    chain ``c`` uses ``fold_in(key, c)``, trajectory ``t`` of it ``fold_in(fold_in(key, c), t)``.
    ``measure`` receives one configuration, unbatched (``theory.link_shape``), as in :func:`generate`; without it
    the blocks' ``measurements`` are empty.

    ``mesh`` (optional, a :class:`jax.sharding.Mesh`, see :mod:`corrflow.sharding`): the chain states and
    keys are split over the mesh's ``"chains"`` axis (the number of chains must be a multiple of its
    size) and/or the time axis ``L_0`` over its ``"sites"`` axis; the jitted block then runs SPMD and
    the block's arrays (state, info, links, action) stay sharded the same way.  Chain sharding gives
    results bit-identical to the single-device run; site sharding agrees to rounding (sums over sites
    are reduced across devices in another order, and XLA may fuse the split arrays differently).
    """
    if n_traj < 0:
        raise ValueError(f"n_traj must be >= 0, got {n_traj}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if thin < 1:
        raise ValueError(f"thin must be >= 1, got {thin}")
    theory.check_links(links)
    n_chains = links.shape[0]
    keys = chain_keys(key, n_chains)
    links = jnp.asarray(links)
    if mesh is not None:
        from .sharding import shard_chains, shard_links

        links = shard_links(links, mesh, batch_ndim=1)
        keys = shard_chains(keys, mesh)
        action = None if action is None else shard_chains(jnp.asarray(action), mesh)
    if action is None:
        state = _init_states(theory, links)
    else:
        state = hmc.HMCState(links, jnp.asarray(action))
    done = 0
    while done < n_traj:
        n = min(block_size, n_traj - done)
        first = first_index + done * thin
        state, (info, meas, blk_links, blk_action) = _run_block_jit(
            keys, state, theory, config, n, thin, first, measure, keep_links, mesh is not None)
        meas_np = {k: np.asarray(v) for k, v in (meas or {}).items()}
        traj = first + thin * np.arange(n) + thin - 1
        yield Block(first, traj, state, info, meas_np, blk_links, blk_action)
        done += n


def generate(
    key: Array,
    theory: Any,
    config: hmc.HMCConfig,
    *,
    n_chains: int = 1,
    n_traj: int = 1000,
    n_therm: int = 100,
    thin: int = 1,
    start: str = "hot",
    measure: Callable[[Array], Any] | None = None,
    block_size: int = 100,
    dtype: Any = None,
    progress: Callable[[int, int, Block], None] | None = None,
    keep_configs: bool = False,
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, np.ndarray]:
    """Thermalise and run ``n_chains`` chains for ``n_traj >= 1`` stored trajectories (in memory).

    ``config``: :class:`~corrflow.hmc.HMCConfig`, or :class:`~corrflow.heatbath.HeatbathConfig` for pure SU(N) gauge
    theories (then a "trajectory" is one compound heat-bath + over-relaxation update, ``delta_H`` is NaN and
    ``accepted`` True).
    Thermalisation trajectories (global indices ``0 .. n_therm-1``) are discarded; then every
    ``thin``-th trajectory is recorded.  Returns numpy arrays of shape ``(n_chains, n_traj)`` for
    every measurement plus ``delta_H``, ``accepted``; ``traj`` ``(n_traj,)``; and ``links`` with the final
    configurations; with ``keep_configs`` also ``configs`` ``(n_chains, n_traj, *link_shape)``.
    ``measure(links) -> {name: value}`` receives one configuration, unbatched, shape ``theory.link_shape``
    ``(L_0, ..., L_{d-1}, d, *elem)`` (it runs inside the jitted scan, chain by chain), e.g.
    :class:`GaugeMeasurements`; without ``measure`` no observable is recorded, not even the plaquette.
    A ``RuntimeWarning`` says when the chains do not move (mean acceptance below ``LOW_ACCEPTANCE``, or a non-finite
    ``delta_H``).
    ``progress(done, total, block)`` is called after every block (counting trajectories,
    thermalisation included; thermalisation blocks are run without ``measure``, so their ``block.measurements``
    is empty -- use ``block.state.links`` there).  Use :func:`generate_to_store` to write to a store.
    ``mesh``: run the chains sharded over devices (see :func:`run_blocks` and :mod:`corrflow.sharding`);
    with a ``"chains"`` mesh the results are bit-identical to the single-device run.  To run the blocks
    yourself use :func:`run_blocks`: ``from corrflow.generate import run_blocks`` (``import corrflow.generate as
    gen`` gives this function, not the module: the names clash, see ``corrflow._Package``).
    """
    _check_arguments(key, theory, config, dtype)
    for name, value, least in (("n_chains", n_chains, 1), ("n_traj", n_traj, 1), ("n_therm", n_therm, 0),
                               ("thin", thin, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):  # n_traj=2.5 ran 3 trajectories
            raise TypeError(f"{name} must be an integer, got {value!r}")
        if value < least:
            raise ValueError(f"{name} must be >= {least}, got {value}")
    if measure is not None and not callable(measure):  # a list of names failed as a 'non-hashable static argument'
        raise TypeError(f"measure must be a function of one configuration returning {{name: value}}, e.g. "
                        f"corrflow.GaugeMeasurements(theory.group, wilson_loops=[(2, 2)]), got {measure!r}")
    if isinstance(measure, GaugeMeasurements):  # before the thermalisation, not when the production blocks trace
        if measure.group != theory.group:
            raise ValueError(f"measure is GaugeMeasurements({measure.group.name!r}) but the theory's links are "
                             f"{theory.group.name}: use GaugeMeasurements(theory.group, ...)")
        measure.check_lattice(theory.shape)
    if getattr(measure, "theory", None) is not None and tuple(measure.theory.shape) != tuple(theory.shape):
        raise ValueError(f"measure was built for the lattice {tuple(measure.theory.shape)}, the theory's is "
                         f"{tuple(theory.shape)}: e.g. FermionMeasurements(theory)")  # (FermionMeasurements)
    links = initial_links(key, theory, n_chains, start, dtype)
    total = n_therm + n_traj * thin
    state = None
    for blk in run_blocks(key, theory, config, links, n_therm, block_size=block_size, measure=None, mesh=mesh):
        state = blk.state
        if progress is not None:
            progress(int(blk.traj[-1]) + 1, total, blk)
    out: dict[str, list[np.ndarray]] = {}
    lk, act = (state.links, state.action) if state is not None else (links, None)
    for blk in run_blocks(key, theory, config, lk, n_traj, block_size=block_size, first_index=n_therm,
                          measure=measure, thin=thin, action=act, keep_links=keep_configs, mesh=mesh):
        cols = dict(blk.measurements)
        if keep_configs:
            cols["configs"] = np.asarray(blk.links)
        cols["delta_H"] = np.asarray(blk.info.delta_H)
        cols["accepted"] = np.asarray(blk.info.accepted)
        for k, v in cols.items():
            out.setdefault(k, []).append(v)
        out.setdefault("traj", []).append(blk.traj[None])
        state = blk.state
        if progress is not None:
            progress(int(blk.traj[-1]) + 1, total, blk)
    result = {k: np.concatenate(v, axis=1) for k, v in out.items()}
    result["traj"] = result["traj"][0]
    result["links"] = np.asarray(state.links if state is not None else links)
    from .heatbath import HeatbathConfig

    if not isinstance(config, HeatbathConfig):  # (the heat bath reports delta_H = NaN and always accepts)
        _warn_if_stuck(result["accepted"], result["delta_H"])
    return result


def _check_arguments(key: Any, theory: Any, config: Any, dtype: Any) -> None:
    """One-line ``TypeError`` for the mix-ups that otherwise fail deep inside JAX: an int seed or a batch of keys for
    ``key``, arguments in the wrong order, a dict for ``config``, a link dtype of the wrong kind for the group."""
    from .heatbath import HeatbathConfig
    from .rng import check_key

    if not (hasattr(theory, "action") and hasattr(theory, "link_shape")):
        raise TypeError(f"theory must be a theory, e.g. corrflow.make_theory('u1', (16, 16), beta=2.0), got "
                        f"{type(theory).__name__}; the arguments are generate(key, theory, config, ...)")
    check_key(key)
    if not isinstance(config, (hmc.HMCConfig, HeatbathConfig)):
        raise TypeError(f"config must be corrflow.HMCConfig(step_size=..., n_steps=...) or a "
                        f"corrflow.heatbath.HeatbathConfig, got {type(config).__name__}")
    if dtype is not None:
        kind = np.dtype(dtype).kind
        want = ("c", "complex matrices (complex64 or complex128)") if theory.group.elem_ndim else \
            ("f", "real angles (float32 or float64)")
        if kind != want[0]:
            raise TypeError(f"dtype {np.dtype(dtype)} does not hold {theory.group.name} links: {want[1]}")


#: Mean HMC acceptance below which the chains are reported as hardly moving (library warning and CLI line alike).
LOW_ACCEPTANCE = 0.2


def low_acceptance_message(acceptance: float, step: str = "the step size",
                           n_steps: str = "n_steps") -> str | None:
    """The one wording for HMC chains that hardly move, or ``None`` when ``acceptance >= LOW_ACCEPTANCE``.

    ``step``/``n_steps`` name the knobs as the caller's user knows them (``--step-size``/``--n-steps`` on the
    command line)."""
    if not acceptance < LOW_ACCEPTANCE:
        return None
    return (f"acceptance {acceptance:.3f}: the chains hardly move and the configurations repeat each other (errors "
            f"and autocorrelations will show it); lower {step}, with more {n_steps} for the same trajectory length")


def _warn_if_stuck(accepted: np.ndarray, delta_h: np.ndarray) -> None:
    """``RuntimeWarning`` when HMC chains do not move: a non-finite ``delta_H``, or mean acceptance below
    :data:`LOW_ACCEPTANCE` (:func:`low_acceptance_message`)."""
    acc = float(np.mean(accepted))
    bad = int(np.count_nonzero(~np.isfinite(delta_h)))
    if bad:
        warnings.warn(f"generate: delta_H is not finite in {bad} of {delta_h.size} trajectories (acceptance "
                      f"{acc:.3f}): check the theory parameters (beta, mass) for NaN/inf, and lower the step size, "
                      "with more n_steps for the same trajectory length", RuntimeWarning, stacklevel=3)
    elif (msg := low_acceptance_message(acc)) is not None:
        warnings.warn(f"generate: {msg}", RuntimeWarning, stacklevel=3)


# ----------------------------------------------------------------------------------------
# generation into a store
# ----------------------------------------------------------------------------------------

_WILSON_RE = __import__("re").compile(r"^wilson_(\d+)x(\d+)$")


def measurements_from_names(group: Group, names: Sequence[str], ndim: int,
                            shape: Sequence[int] | None = None) -> GaugeMeasurements:
    """:class:`GaugeMeasurements` from observable names: ``plaquette``, ``wilson_RxT``,
    ``topological_charge`` (2D U(1)), ``polyakov_loop``.  Unknown names raise ``ValueError``; so does, when the
    lattice ``shape`` is given, a Wilson loop that does not fit on it (loops are averaged over all planes and
    both orientations, so ``R`` and ``T`` must be smaller than the shortest extent)."""
    loops, topo, poly = [], False, False
    for n in names:
        m = _WILSON_RE.match(n)
        if n == "plaquette":
            continue
        if m:
            r, t = int(m.group(1)), int(m.group(2))
            if r < 1 or t < 1:
                raise ValueError(f"{n}: Wilson loop extents must be >= 1")
            if shape is not None:
                _check_loop_fits(r, t, shape)
            loops.append((r, t))
        elif n == "topological_charge":
            if not (group.is_abelian and ndim == 2):
                raise ValueError("topological_charge (geometric) is available for 2D U(1) only")
            topo = True
        elif n == "polyakov_loop":
            poly = True
        elif n == "wilson_flow":
            raise ValueError("wilson_flow is measured on stored configurations, not during generation: run `corrflow "
                             "measure STORE ENSEMBLE wilson_flow` afterwards")
        else:
            raise ValueError(f"unknown observable {n!r}; allowed: plaquette, wilson_RxT (e.g. wilson_2x2), "
                             "topological_charge, polyakov_loop")
    return GaugeMeasurements(group, tuple(loops), topo, poly)
