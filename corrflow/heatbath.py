r"""Pure-gauge SU(N) updates: Cabibbo–Marinari pseudo-heat-bath and micro-canonical over-relaxation.

For the Wilson gauge action of :class:`corrflow.theories.gauge.WilsonGaugeAction`,

    S(U) = -(1/N) sum_x sum_{mu<nu} b_{mu nu} Re tr P_{mu nu}(x),

the part of ``S`` that depends on a single link ``U = U_mu(x)`` is ``-(1/N) Re tr[U Sigma]`` with the
weighted staple sum ``Sigma = Sigma_mu(x)`` of :func:`corrflow.lattice.staple_sum` (weights
``b = theory.plane_couplings()``), so the conditional distribution of that link is

    p(U | rest) dU  ∝  exp((1/N) Re tr[U Sigma]) dU        (dU: Haar measure).

Cabibbo–Marinari (Phys. Lett. B 119 (1982) 387)
    The link is updated by left multiplication ``U <- R U`` with an SU(2) matrix ``R`` embedded in
    rows/columns ``(i, j)``, for every pair ``i < j`` in turn (``N (N - 1) / 2`` subgroups; one for
    SU(2)).  With ``W = U Sigma``, ``Re tr[R W] = Re tr[r w] + const`` where ``w`` is the ``2 x 2`` block
    of ``W``.  Its projection onto the quaternion form ``a_0 + i a.sigma`` is ``k V`` with ``k >= 0``
    and ``V`` in SU(2) (``alpha = (w_00 + w_11^*) / 2``, ``beta = (w_01 - w_10^*) / 2``), so that
    ``Re tr[r w] = k Re tr[r V] = 2 k x_0`` with ``x = r V``.  The heat bath draws ``x`` from
    ``sqrt(1 - x_0^2) exp(a x_0) dx_0 d^2 n`` with the effective coupling ``a = 2 k / N`` (``Sigma``
    already contains the plane couplings) and sets ``r = x V^dag``.

SU(2) heat bath
    ``x_0`` by Kennedy–Pendleton (Phys. Lett. B 156 (1985) 393) for ``a > 1.7`` and by Creutz's
    method (Phys. Rev. D 21 (1980) 2308) below, where it accepts more often; both are exact and
    accept at least ~70 % of the proposals for every ``a``.  The accept/reject rounds run in a
    ``lax.while_loop`` (each round draws fresh numbers for all sites from ``fold_in(key, round)``) until
    every site is accepted or ``HeatbathConfig.max_rounds`` rounds (default 3) are done; a site still
    rejected then keeps its link in that subgroup.  That is exact, not an approximation: the acceptance
    probability depends only on ``a``, which is constant on the subgroup orbit ``{R U}`` that the update
    samples (left multiplication by SU(2) preserves the quaternion part of the 2x2 block of ``U Sigma``
    and its norm), so the update is an orbit-dependent mixture of the exact heat bath and the identity,
    both of which leave the conditional distribution on the orbit invariant.  Rounds for all sites until
    the last one accepts (8-10 at 16^4) cost a third of a sweep on a CPU; with 3 rounds 0.5-0.7 % of
    the subgroup updates are skipped at beta = 5.7-6.0 (one round accepts 81-83 %; BENCHMARKS.md).
    ``k = 0`` (or ``k`` below ``1e-10``) falls back to a uniform (Haar) ``x`` with ``V = 1``.  The direction
    of ``(x_1, x_2, x_3)`` is uniform on the sphere.

Over-relaxation
    ``r = (V^dag)^2`` in every subgroup: ``Re tr[r W]`` (hence the action) is unchanged to rounding,
    the map is an involution (applied twice it restores the link), so it leaves the Boltzmann weight
    invariant (micro-canonical, not ergodic on its own).  For SU(2) it is the reflection
    ``U -> V^dag U^dag V^dag`` and exactly gauge covariant; for ``N > 2`` the fixed choice of
    subgroups (rows/columns ``(i, j)``) is not, so it is covariant only in distribution, as is the heat
    bath for every ``N`` (its random draws live in a fixed local frame).

The SU(2)-subgroup algebra and draws (quaternions, Kennedy–Pendleton / Creutz, over-relaxation, the update of the
links of one parity given their staple sums) are in :mod:`corrflow.su2_subgroups`; this module builds the sweeps.

Vectorisation
    A link ``U_mu(x)`` only interacts with links of other directions and with ``U_mu`` at sites of the
    opposite parity ``(sum_nu x_nu) mod 2``, so all links of one direction and one parity are updated
    at once.  A *sweep* visits ``mu = 0 .. d-1`` and, for each, parity 0 then 1; afterwards the links are
    re-unitarised.  All extents must be even.  Direction ``mu`` is updated as direction 0 of the lattice
    with its axes rotated ``mu`` times, so the update is traced once (a ``lax.scan`` over ``mu`` when all
    extents are equal; unrolled otherwise).  The active sites are handled by *static gathers* on the
    flattened lattice: every staple factor is gathered at the shifted active sites (index tables built
    once per shape in numpy), so staples and SU(2) updates run on half the lattice, and the result is put
    back with one more gather.  Measured on a shared 2-core CPU (8^4 SU(3), one chain, complex128,
    timings noisy): heat-bath / over-relaxation sweep 0.056 s / 0.021 s, against 0.106 s / 0.036 s for
    the full-lattice update masked with ``jnp.where`` on the parity; a select-based half-lattice layout
    (pairs along ``x_0``) was ~30 % slower than the gathers and compiled ~1.5x longer.

Random numbers
    ``update`` number ``t`` of :func:`sample` uses ``fold_in(key, first_index + t)``, so a run split into
    pieces reproduces the uninterrupted run bit for bit.  Sweep ``s`` of an update uses
    ``fold_in(update_key, s)``; below it, ``fold_in`` by direction, parity, subgroup and accept/reject
    round.  Uniform numbers are drawn as flat vectors and reshaped: jax's (partitionable) threefry takes
    seconds to compile for a many-axis shape on CPU.

Native kernels (4D SU(3) on one-device CPUs, the default there; :mod:`corrflow.native`, ``CORRFLOW_NATIVE``)
    The same sweeps in C++ on SIMD "virtual nodes", in place, one (direction, parity) after the other: the
    over-relaxation sweep equals this module's to rounding; the heat-bath sweep draws its own numbers
    (Threefry-2x32 keyed by the sweep's key, counters from chain, site and draw), so it samples the same
    distribution with other numbers.  An update then runs its heat-bath and its over-relaxation sweeps as two
    loops with the same keys.  Measured (2-core AMD EPYC, complex64): heat-bath sweep 7.8x / 9.3x and
    over-relaxation sweep 5.5x / 6.6x faster than the JAX sweeps at 8^4 / 16^4.

Shapes: links ``(*batch, L_0, ..., L_{d-1}, d, N, N)`` with any leading batch axes (one key serves the
whole batch; the chains still draw independent numbers), complex128 or complex64 (all arithmetic stays
in the dtype of the links).  Everything is pure JAX; the public functions validate their arguments
and then call jitted kernels (they may also be called inside ``jax.jit`` / ``jax.vmap``, where the
checks that need concrete coupling values are skipped).  No ``jnp.linalg`` is used (the SU(2)
algebra is written out in quaternions).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import permutations
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from .groups import Group, dagger, matmul
from . import batching, native
from .rng import check_key
from .su2_subgroups import update_links
from .theories.gauge import WilsonGaugeAction

Array = jax.Array

__all__ = [
    "HeatbathConfig",
    "heatbath_sweep",
    "overrelax_sweep",
    "update",
    "sample",
    "sample_chains",
]

#: Default accept/reject rounds of a heat-bath sweep (:class:`HeatbathConfig`; module docstring).
HEATBATH_ROUNDS = 3


# ----------------------------------------------------------------------------------------
# configuration and validation
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeatbathConfig:
    """Composition of one compound :func:`update`: ``n_heatbath`` heat-bath sweeps, then
    ``n_overrelax`` over-relaxation sweeps (both static; hashable so it can be a jit static argument).

    ``n_heatbath >= 1`` (over-relaxation alone is not ergodic), ``n_overrelax >= 0``; ``max_rounds >= 1``:
    accept/reject rounds of the SU(2) heat bath before a still-rejected site keeps its link in that subgroup
    (exact for every value, module docstring; recorded in :meth:`as_dict` only when not the default).
    """

    n_heatbath: int = 1
    n_overrelax: int = 4
    max_rounds: int = HEATBATH_ROUNDS

    def __post_init__(self) -> None:
        for name, low in (("n_heatbath", 1), ("n_overrelax", 0), ("max_rounds", 1)):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < low:
                hint = " (over-relaxation alone is not ergodic)" if name == "n_heatbath" else ""
                raise ValueError(f"HeatbathConfig: {name} must be an integer >= {low}{hint}, got {val!r}")

    def as_dict(self) -> dict[str, int]:
        extra = {} if self.max_rounds == HEATBATH_ROUNDS else {"max_rounds": int(self.max_rounds)}
        return {"n_heatbath": int(self.n_heatbath), "n_overrelax": int(self.n_overrelax), **extra}


def _concrete(x: Any) -> np.ndarray | None:
    """``x`` as a numpy array, or None if it is traced (inside jit/vmap)."""
    try:
        return np.asarray(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def _check_theory(theory: Any) -> None:
    if not isinstance(theory, WilsonGaugeAction):
        raise ValueError(
            f"heat bath / over-relaxation need the pure-gauge WilsonGaugeAction, got {type(theory).__name__}; "
            "theories with dynamical fermions are sampled with HMC (--algorithm hmc; corrflow.hmc in Python)"
        )
    g = theory.group
    if g.is_abelian:
        raise ValueError(
            "heat bath / over-relaxation are implemented for SU(N) only, not for U(1); "
            "sample U(1) with HMC (--algorithm hmc; corrflow.hmc.sample / sample_chains in Python)"
        )
    odd = [(mu, s) for mu, s in enumerate(theory.shape) if s % 2]
    if odd:
        mu, s = odd[0]
        raise ValueError(
            f"heat bath needs even lattice extents (links of one parity are updated together); "
            f"got shape {theory.shape} with L_{mu} = {s}. Use even extents, e.g. "
            f"{tuple(x + x % 2 for x in theory.shape)}, or sample with HMC (--algorithm hmc; corrflow.hmc in Python)"
        )
    b = _concrete(theory.plane_couplings())
    if b is not None:
        off = b[~np.eye(theory.ndim, dtype=bool)]
        if not np.all(np.isfinite(off)) or np.any(off <= 0):
            raise ValueError(
                f"heat bath needs positive plane couplings b_mu_nu = beta*xi (temporal) or beta/xi (spatial) "
                f"minus lam*(+-1); got min b = {off.min():g} (beta={theory.beta}, xi={theory.xi}, "
                f"lam={theory.lam}). Use beta > 0 and |lam| < min(beta*xi, beta/xi), or sample with HMC"
            )


def _check(links: Array, theory: Any) -> None:
    _check_theory(theory)
    theory.check_links(links)


# ----------------------------------------------------------------------------------------
# layout: the active sites (one parity) by static gathers on the flattened lattice
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ParityTable:
    """Static (numpy) site indices into the flattened lattice for one parity, direction 0.

    ``active`` / ``other``: the sites of this / the other parity (ascending); ``perm`` puts
    ``concat(values at active, values at other)`` back in site order; ``fwd[nu]``, ``bwd[nu]``,
    ``fwd_bwd[nu]``: the sites ``x + nu_hat``, ``x - nu_hat`` and ``x + 0_hat - nu_hat`` for every active
    ``x`` (``fwd[0]`` is ``x + 0_hat``).
    """

    active: np.ndarray
    other: np.ndarray
    perm: np.ndarray
    fwd: tuple[np.ndarray, ...]
    bwd: tuple[np.ndarray, ...]
    fwd_bwd: tuple[np.ndarray, ...]


@lru_cache(maxsize=64)
def _parity_tables(shape: tuple[int, ...]) -> tuple[_ParityTable, _ParityTable]:
    d = len(shape)
    coords = np.stack(np.unravel_index(np.arange(int(np.prod(shape))), shape), -1)
    parity = coords.sum(-1) % 2

    def moved(x: np.ndarray, steps: dict[int, int]) -> np.ndarray:
        c = coords[x].copy()
        for mu, n in steps.items():
            c[:, mu] = (c[:, mu] + n) % shape[mu]
        return np.ravel_multi_index(tuple(c.T), shape).astype(np.int32)

    tables = []
    for p in (0, 1):
        active = np.nonzero(parity == p)[0].astype(np.int32)
        other = np.nonzero(parity != p)[0].astype(np.int32)
        tables.append(_ParityTable(
            active=active,
            other=other,
            perm=np.argsort(np.concatenate([active, other])).astype(np.int32),
            fwd=tuple(moved(active, {nu: 1}) for nu in range(d)),
            bwd=tuple(moved(active, {nu: -1}) for nu in range(d)),
            fwd_bwd=tuple(moved(active, {0: 1, nu: -1}) for nu in range(d)),
        ))
    return tables[0], tables[1]


def _take(f: Array, idx: np.ndarray) -> Array:
    """Rows ``idx`` of a flattened site field ``(*batch, V, N, N)``."""
    return jnp.take(f, idx, axis=-3)


def _staples_active(us: list[Array], b: Array, t: _ParityTable) -> Array:
    """Weighted staple sum ``Sigma_0`` (as :func:`corrflow.lattice.staple_sum`) at the active sites only.

    ``us``: flattened link fields ``(*batch, V, N, N)`` per direction.  Every factor is gathered directly at
    the shifted active sites, so all matrix products run on half the lattice.
    """
    um, total = us[0], None
    for nu in range(1, len(us)):
        un = us[nu]
        # upper(x) = U_nu(x+0) U_0(x+nu)^dag U_nu(x)^dag = U_nu(x+0) [U_nu(x) U_0(x+nu)]^dag
        up = matmul(_take(un, t.fwd[0]), dagger(matmul(_take(un, t.active), _take(um, t.fwd[nu]))))
        # lower(x) = U_nu(x+0-nu)^dag U_0(x-nu)^dag U_nu(x-nu) = [U_0(x-nu) U_nu(x+0-nu)]^dag U_nu(x-nu)
        lo = matmul(dagger(matmul(_take(um, t.bwd[nu]), _take(un, t.fwd_bwd[nu]))), _take(un, t.bwd[nu]))
        term = b[0, nu] * (up + lo)
        total = term if total is None else total + term
    return total


def _reunitarise(u: Array, group: Group) -> Array:
    """Project to SU(N) without ``jnp.linalg``: ``group.normalize`` for N <= 3; for N > 3 Gram–Schmidt on
    the first N-1 rows and the last row from the cofactors (``U = adj(U)^dag`` for det U = 1)."""
    n = group.N
    if n <= 3:
        return group.normalize(u)
    rows: list[Array] = []
    for i in range(n - 1):
        r = u[..., i, :]
        for p in rows:
            r = r - jnp.sum(jnp.conj(p) * r, -1, keepdims=True) * p
        rows.append(r / jnp.sqrt(jnp.sum(jnp.real(r * jnp.conj(r)), -1, keepdims=True)))
    last = [None] * n
    for perm in permutations(range(n)):
        sign = np.linalg.det(np.eye(n)[list(perm)])  # +-1, trace time only
        term = rows[0][..., perm[0]]
        for i in range(1, n - 1):
            term = term * rows[i][..., perm[i]]
        term = term if sign > 0 else -term
        j = perm[n - 1]
        last[j] = term if last[j] is None else last[j] + term
    return jnp.stack(rows + [jnp.conj(jnp.stack(last, -1))], -2)


# ----------------------------------------------------------------------------------------
# sweeps (jitted kernels; the public wrappers validate first)
# ----------------------------------------------------------------------------------------


def _rotate(links: Array, b: Array, d: int) -> tuple[Array, Array]:
    """Relabel coordinates and directions cyclically, ``x'_k = x_{k+1}``, ``U'_k(x') = U_{k+1}(x)``,
    ``b'_{kl} = b_{k+1, l+1}`` (indices mod d); ``d`` rotations give back the original field."""
    site0 = links.ndim - d - 3
    links = jnp.moveaxis(links, site0, site0 + d - 1)
    return jnp.roll(links, -1, axis=-3), jnp.roll(b, -1, axis=(0, 1))


def _update_direction0(key: Array | None, links: Array, b: Array, shape: tuple[int, ...], n: int, hb: Any,
                       max_rounds: int) -> Array:
    """Update all links ``U_0(x)``: parity 0, then parity 1, each on the active half of the sites
    (static gathers: staples and updates at the active sites, the result put back by one gather)."""
    d = len(shape)
    batch = links.shape[: links.ndim - d - 3]
    flat = batch + (int(np.prod(shape)), n, n)
    us = [links[..., mu, :, :].reshape(flat) for mu in range(d)]
    for parity, t in enumerate(_parity_tables(tuple(shape))):
        sigma = _staples_active(us, b, t)
        sub_key = None if key is None else jax.random.fold_in(key, parity)
        new = update_links(sub_key, _take(us[0], t.active), sigma, n, hb, max_rounds)
        us[0] = _take(jnp.concatenate([new, _take(us[0], t.other)], axis=-3), t.perm)
    return jnp.stack([u.reshape(batch + tuple(shape) + (n, n)) for u in us], axis=-3)


def _sweep(key: Array | None, links: Array, theory: WilsonGaugeAction, hb: Any, unroll: bool = False,
           max_rounds: int = HEATBATH_ROUNDS) -> Array:
    """One sweep over directions ``mu = 0 .. d-1`` (each: parity 0, then 1): heat bath (``hb`` True, with
    ``key``), over-relaxation (``hb`` False) or either (``hb`` a traced bool).

    Direction ``mu`` is updated as direction 0 of the lattice rotated ``mu`` times (:func:`_rotate`), so the
    update is traced once: a ``lax.scan`` over ``mu`` when all extents are equal (the rotated shape is the
    same), a Python loop otherwise (or with ``unroll=True``; same numbers, same random stream).
    """
    g = theory.group
    d = theory.ndim
    b = theory.plane_couplings().astype(jnp.finfo(links.dtype).dtype)
    if (hb is True or hb is False) and native.use_native_sweeps(links, g):  # a traced hb stays with the JAX sweep
        return native.heatbath_sweep(links, b, key, max_rounds) if hb else native.overrelax_sweep(links, b)

    def step(carry: tuple[Array, Array, tuple[int, ...]], mu: Any) -> tuple[Array, Array]:
        links, b, shape = carry
        sub_key = None if key is None else jax.random.fold_in(key, mu)
        links = _update_direction0(sub_key, links, b, shape, g.N, hb, max_rounds)
        return _rotate(links, b, d)

    if unroll or len(set(theory.shape)) > 1:
        shape = tuple(theory.shape)
        for mu in range(d):
            links, b = step((links, b, shape), mu)
            shape = shape[1:] + shape[:1]
    else:
        def scan_step(carry: tuple[Array, Array], mu: Array) -> tuple[tuple[Array, Array], None]:
            return step((*carry, tuple(theory.shape)), mu), None

        (links, b), _ = jax.lax.scan(scan_step, (links, b), jnp.arange(d))
    return _reunitarise(links, g)


def _update_impl(key: Array, links: Array, theory: WilsonGaugeAction, config: HeatbathConfig) -> Array:
    """Sweeps ``s = 0 .. n_heatbath + n_overrelax - 1``: heat bath (key ``fold_in(key, s)``) for
    ``s < n_heatbath``, then over-relaxation; one traced sweep in a ``fori_loop`` (halves compile time).  Where the
    native over-relaxation kernel applies (:func:`corrflow.native.use_native_sweeps`) the heat-bath sweeps and
    the over-relaxation sweeps are two loops (same keys)."""
    n_hb = config.n_heatbath
    if config.n_overrelax and native.use_native_sweeps(links, theory.group):
        links = jax.lax.fori_loop(0, n_hb, lambda s, u: _sweep(jax.random.fold_in(key, s), u, theory, True,
                                                                max_rounds=config.max_rounds), links)
        return jax.lax.fori_loop(0, config.n_overrelax, lambda s, u: _sweep(None, u, theory, False), links)

    def body(s: Array, u: Array) -> Array:
        return _sweep(jax.random.fold_in(key, s), u, theory, (s < n_hb) if config.n_overrelax else True,
                      max_rounds=config.max_rounds)

    return jax.lax.fori_loop(0, n_hb + config.n_overrelax, body, links)


def _sample_impl(
    key: Array,
    links: Array,
    theory: WilsonGaugeAction,
    config: HeatbathConfig,
    n_updates: int,
    first_index: Any,
    measure: Callable[[Array], Any] | None,
) -> tuple[Array, Any]:
    def body(u: Array, t: Array) -> tuple[Array, Any]:
        u = _update_impl(jax.random.fold_in(key, t), u, theory, config)
        return u, (measure(u) if measure is not None else None)

    idx = jnp.arange(n_updates) + first_index
    return jax.lax.scan(body, links, idx)


def _sample_chains_impl(keys, links, theory, config, n_updates, first_index, measure):  # noqa: ANN001, ANN202
    fn = lambda k, u: _sample_impl(k, u, theory, config, n_updates, first_index, measure)  # noqa: E731
    return batching.over_leading_axis(fn, (keys, links), links)


_heatbath_jit = jax.jit(lambda key, links, theory: _sweep(key, links, theory, True))
_overrelax_jit = jax.jit(lambda links, theory: _sweep(None, links, theory, False))
_update_jit = jax.jit(_update_impl, static_argnames=("config",))
_sample_jit = jax.jit(_sample_impl, static_argnames=("config", "n_updates", "measure"))
_sample_chains_jit = jax.jit(_sample_chains_impl, static_argnames=("config", "n_updates", "measure"))


# ----------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------


def _check_key_config(key: Any, config: Any) -> None:
    """One-line ``TypeError`` for an int seed or a batch of keys, and for a config that is not a heat-bath one."""
    check_key(key)
    if not isinstance(config, HeatbathConfig):
        raise TypeError(f"config must be corrflow.heatbath.HeatbathConfig(n_heatbath=..., n_overrelax=...), got "
                        f"{type(config).__name__}")


def heatbath_sweep(key: Array, links: Array, theory: WilsonGaugeAction) -> Array:
    """One Cabibbo–Marinari heat-bath sweep over all links (then re-unitarised).

    ``links``: ``(*batch, L_0, ..., L_{d-1}, d, N, N)`` (complex64 or complex128), even extents;
    returns links of the same shape and dtype.  ``key``: one PRNG key for the whole batch.
    Raises ``ValueError`` for U(1), odd extents, non-positive plane couplings or wrongly shaped links.
    """
    check_key(key)  # an int seed failed deep inside jax.random
    _check(links, theory)
    return _heatbath_jit(key, links, theory)


def overrelax_sweep(links: Array, theory: WilsonGaugeAction) -> Array:
    """One over-relaxation sweep: every link is reflected in each SU(2) subgroup so that the action is
    unchanged (to rounding); then re-unitarised.  Deterministic.  Shapes as :func:`heatbath_sweep`."""
    _check(links, theory)
    return _overrelax_jit(links, theory)


def update(key: Array, links: Array, theory: WilsonGaugeAction, config: HeatbathConfig) -> Array:
    """One compound update: ``config.n_heatbath`` heat-bath sweeps (sweep ``s`` with ``fold_in(key, s)``)
    followed by ``config.n_overrelax`` over-relaxation sweeps.  Shapes as :func:`heatbath_sweep`."""
    _check_key_config(key, config)
    _check(links, theory)
    return _update_jit(key, links, theory, config)


def sample(
    key: Array,
    links: Array,
    theory: WilsonGaugeAction,
    config: HeatbathConfig,
    n_updates: int,
    first_index: Any = 0,
    measure: Callable[[Array], Any] | None = None,
) -> tuple[Array, Any]:
    """Run ``n_updates`` compound updates in one jitted ``lax.scan``.

    Update ``t`` (``0 <= t < n_updates``) uses the key ``fold_in(key, first_index + t)``, so
    ``sample(n=4)`` equals ``sample(n=2)`` followed by ``sample(n=2, first_index=2)`` bit for bit.
    ``measure`` (optional, a hashable function: it is a static jit argument, so pass the same object to
    reuse the compiled kernel) maps links to a pytree recorded after every update.

    Returns ``(links, measurements)``: the final links (shape of the input) and the measurements with a
    leading ``n_updates`` axis (``None`` without ``measure``).
    """
    _check_key_config(key, config)
    _check(links, theory)
    if isinstance(n_updates, bool) or not isinstance(n_updates, (int, np.integer)) or n_updates < 1:
        raise ValueError(f"sample: n_updates must be a positive integer, got {n_updates!r}")
    return _sample_jit(key, links, theory, config, int(n_updates), first_index, measure)


def sample_chains(
    keys: Array,
    links: Array,
    theory: WilsonGaugeAction,
    config: HeatbathConfig,
    n_updates: int,
    first_index: Any = 0,
    measure: Callable[[Array], Any] | None = None,
) -> tuple[Array, Any]:
    """:func:`sample` over chains (vmapped, or one by one on CPUs: :mod:`corrflow.batching`): ``keys``
    ``(n_chains, 2)`` (or ``(n_chains,)`` typed keys) and ``links`` ``(n_chains, *theory.link_shape)``.  Outputs
    have leading axes ``(n_chains,)`` (links) and ``(n_chains, n_updates)`` (measurements)."""
    _check(links, theory)
    if isinstance(n_updates, bool) or not isinstance(n_updates, (int, np.integer)) or n_updates < 1:
        raise ValueError(f"sample_chains: n_updates must be a positive integer, got {n_updates!r}")
    n_keys = np.shape(keys)[0] if np.ndim(keys) else None
    if n_keys is None or links.ndim != len(theory.link_shape) + 1 or links.shape[0] != n_keys:
        raise ValueError(
            f"sample_chains: need one key per chain and links of shape (n_chains, *{theory.link_shape}); "
            f"got keys {np.shape(keys)} and links {tuple(links.shape)}. Split keys with jax.random.split(key, n_chains)"
        )
    return _sample_chains_jit(keys, links, theory, config, int(n_updates), first_index, measure)


# a pytree without leaves (both counts static), so that a config can be passed through jitted drivers
# (corrflow.generate runs HMC or heat bath through the same blocks)
jax.tree_util.register_dataclass(HeatbathConfig, data_fields=[],
                                 meta_fields=["n_heatbath", "n_overrelax", "max_rounds"])
