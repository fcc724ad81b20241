"""Right-trivialised derivatives on the link manifold: gradients, directional derivatives, divergences.

Conventions (docs/physics.md sections 1, 2 and 7)
--------------------------------------------
* A tangent vector (vector field value) at a configuration is stored by its **coordinates**
  ``v[..., x_0, ..., x_{d-1}, mu, a]`` in the basis ``T^a`` of the Lie algebra: shape
  ``coords_shape(theory) = (L_0, ..., L_{d-1}, d, n_gen)`` with ``n_gen = 1`` for U(1) and ``N^2 - 1`` for
  SU(N).
* ``∂_l^a F(U) = d/dε F(e^{ε T^a} U_l)|_{ε=0}`` (right-trivialised; U(1): ``d/dθ_l``);
  ``v·∇F = Σ_{l,a} v_l^a ∂_l^a F``; ``∇·v = Σ_{l,a} ∂_l^a v_l^a``.  The ``∂_l^a`` are divergence-free for
  the Haar measure, so ``∫ dU ∂_l^a F = 0`` and ``∇·v`` is the divergence with respect to Haar.
* All derivatives are taken through :func:`lift`, ``w -> exp(W) U`` with ``W = Σ_a w^a T^a``, at ``w = 0``.
  The exponential is truncated after ``W^2/2``: the path is then a group path through second order, so
  first derivatives and the second derivatives used here (one derivative in each of two lift variables)
  are exact, while no ``exp`` is ever differentiated at ``0``.

Everything is pure JAX on one configuration (no batch axis); vmap it over configurations.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import observables as obs
from .. import rng
from ..observables import gradient_flow as gf
from ..groups import Group, matmul

Array = jax.Array
Field = Callable[[Array], Array]  # links -> coordinates (coords_shape), a vector field

__all__ = [
    "coords_shape",
    "lift",
    "gradient",
    "directional_derivative",
    "directional_derivatives",
    "value_and_directional_derivative",
    "REVERSE_SPLIT",
    "divergence_dense",
    "divergence_hutchinson",
    "probe_classes",
    "hutchinson_probes",
    "parameter_derivative",
    "parameter_jvp",
    "value_and_parameter_jvp",
    "check_parameter",
    "observable_function",
    "OBSERVABLES",
    "CHARGE_OBSERVABLES",
    "charge_observables",
    "check_charge_observables",
    "PARAMETERS",
]

#: Parameters of the pure-gauge Wilson action that ``parameter_derivative`` differentiates.
PARAMETERS = ("beta", "xi", "lam")
#: Observables the tangent estimators accept (smooth functions of the links).
OBSERVABLES = ("plaquette", "wilson_RxT (e.g. wilson_2x2)", "t2E@T (SU(N): t^2 E(t) at flow time T, e.g. t2E@0.2)",
               "chi_top (2D U(1): Q^2 / V of the geometric charge; plaquette field or none)")
_WILSON_RE = re.compile(r"^wilson_(\d+)x(\d+)$")
_T2E_RE = re.compile(r"^t2E@([0-9]*\.?[0-9]+)$")
#: Wilson-flow step of the ``t2E@T`` observables (Lüscher's RK3; T must be a multiple of it)
T2E_FLOW_EPS = 0.02


def coords_shape(theory: Any) -> tuple[int, ...]:
    """Shape ``(L_0, ..., L_{d-1}, d, n_gen)`` of the algebra coordinates of a tangent vector."""
    return tuple(theory.link_index_shape) + (int(theory.group.n_generators),)


def lift(w: Array, u: Array, group: Group) -> Array:
    """``exp(W) U`` link by link, ``W = Σ_a w^a T^a`` (exponential truncated after ``W^2/2``, see module doc).

    ``w``: coordinates ``(L_0, ..., L_{d-1}, d, n_gen)``; ``u``: one configuration.  Returns links of ``u``'s
    shape and dtype.
    """
    if group.is_abelian:
        return u + w[..., 0].astype(u.dtype)
    x = group.from_coords(w).astype(u.dtype)
    m = jnp.eye(group.N, dtype=u.dtype) + x + 0.5 * matmul(x, x)
    return matmul(m, u)


def _zeros(u: Array, group: Group) -> Array:
    lead = u.shape[: u.ndim - group.elem_ndim]
    real = group.real_dtype(u.dtype)
    return jnp.zeros(tuple(lead) + (group.n_generators,), real)


def gradient(f: Callable[[Array], Array], u: Array, group: Group) -> Array:
    """Right-trivialised gradient ``(∂_l^a f)(U)`` of a real scalar function, shape ``coords_shape``."""
    return jax.grad(lambda w: f(lift(w, u, group)))(_zeros(u, group))


def value_and_directional_derivative(f: Callable[[Array], Any], u: Array, v: Array, group: Group) -> tuple[Any, Any]:
    """``(f(U), v·∇f (U))`` by one forward-mode pass (``jax.jvp``; the value is ``f`` at ``exp(0) U = U``); ``f`` may
    return any pytree of arrays."""
    w0 = _zeros(u, group)
    return jax.jvp(lambda w: f(lift(w, u, group)), (w0,), (v.astype(w0.dtype),))


def directional_derivative(f: Callable[[Array], Any], u: Array, v: Array, group: Group) -> Any:
    """``v·∇f (U)`` by forward-mode autodiff (``jax.jvp``); ``f`` may return any pytree of arrays."""
    return value_and_directional_derivative(f, u, v, group)[1]


#: attribute of an observable vector ``U -> (O_1, ..., O_n)`` whose outputs ``J`` are better differentiated in reverse
#: mode when contracted with many directions (each behind a linear solve: one adjoint solve per output instead of one
#: tangent solve per direction): ``(I, f_I, J, f_J)`` with ``f_I`` / ``f_J`` the vectors of outputs ``I`` / ``J``
#: alone; set by :func:`observables_vector` for solver-based fermionic observables
REVERSE_SPLIT = "reverse_split"


def directional_derivatives(f: Callable[[Array], Array], u: Array, vs: Array, group: Group) -> Array:
    """``v_k·∇f_i (U)`` for directions ``vs`` ``(K, *coords_shape)`` and a vector ``f`` ``(n,)``: shape ``(K, n)``.

    Forward mode (one ``jax.jvp`` per direction, vmapped), except for the outputs ``J`` that ``f`` marks with
    :data:`REVERSE_SPLIT` when there are fewer of them than directions: their right-trivialised gradients by reverse
    mode (one ``jax.vjp``, its pullback vmapped over unit cotangents), contracted with the directions -- equal to
    rounding; for pion correlators ``|J|`` adjoint solves instead of ``K`` tangent solves."""
    split = getattr(f, REVERSE_SPLIT, None)
    if split is None or len(split[2]) >= vs.shape[0]:
        return jax.vmap(lambda v: directional_derivative(f, u, v, group))(vs)
    fwd_idx, f_fwd, rev_idx, f_rev = split
    w0 = _zeros(u, group)
    out, pull = jax.vjp(lambda w: f_rev(lift(w, u, group)), w0)
    grads = jax.vmap(pull)(jnp.eye(out.shape[0], dtype=out.dtype))[0]  # (|J|, *coords_shape)
    rev = jnp.einsum("k...,n...->kn", vs.astype(grads.dtype), grads)
    b = jnp.zeros((vs.shape[0], len(fwd_idx) + len(rev_idx)), rev.dtype).at[:, np.asarray(rev_idx)].set(rev)
    if fwd_idx:
        fwd = jax.vmap(lambda v: directional_derivative(f_fwd, u, v, group))(vs)
        b = b.at[:, np.asarray(fwd_idx)].set(fwd.astype(b.dtype))
    return b


def divergence_dense(field: Field, u: Array, group: Group) -> Array:
    """Exact ``∇·v (U)`` from the dense Jacobian of ``w -> v(exp(W) U)`` (tests and tiny lattices only:
    cost and memory grow like the square of the number of link coordinates).  ``field`` may return extra leading
    axes (several fields, ``(K, *coords_shape)``); the result then has shape ``(K,)``."""
    w0 = _zeros(u, group)
    jac = jax.jacfwd(lambda w: field(lift(w, u, group)))(w0)
    n = w0.size
    extra = jac.shape[: jac.ndim - 2 * w0.ndim]
    return jnp.trace(jac.reshape(extra + (n, n)), axis1=-2, axis2=-1)


def hutchinson_probes(key: Array, shape: tuple[int, ...], n_probes: int, kind: str = "rademacher",
                      dtype: Any = jnp.float64) -> Array:
    """``n_probes`` probe vectors ``z`` with ``E[z z^T] = 1``: ``rademacher`` (±1) or ``gaussian``."""
    if kind == "rademacher":
        return jax.random.rademacher(key, (n_probes,) + tuple(shape), dtype)
    if kind == "gaussian":
        return rng.normal(key, (n_probes,) + tuple(shape), dtype)
    raise ValueError(f"unknown probe kind {kind!r}; use 'rademacher' or 'gaussian'")


def probe_classes(coords: tuple[int, ...], period: int) -> np.ndarray:
    """Class index ``(*coords)`` of every link coordinate for diluted probes: the site's coordinates modulo
    ``period`` and the link direction (``period ** d * d`` classes; ``period = 1``: one class).  Links of one class
    are ``period`` sites apart in every direction, so a diluted probe never pairs close neighbours."""
    *sites, d, n_gen = coords
    idx = np.zeros(tuple(sites), np.int64)
    for ax, n in enumerate(sites):
        shape = [1] * len(sites)
        shape[ax] = n
        idx = idx * period + (np.arange(n) % period).reshape(shape)
    cls = idx[..., None] * d + np.arange(d)
    return np.broadcast_to(cls[..., None], tuple(coords)) if period > 1 else np.zeros(tuple(coords), np.int64)


def divergence_hutchinson(field: Field, u: Array, group: Group, key: Array, n_probes: int = 4,
                          kind: str = "rademacher", period: int = 1) -> Array:
    """Unbiased Hutchinson estimate of ``∇·v (U)``, one value per probe (shape ``(n_probes, *out)``).

    For each probe ``z`` (algebra coordinates with ``E[z z^T] = 1``) the value is ``z · (z·∇) v`` computed with
    one ``jax.jvp`` of ``w -> v(exp(W) U)``; its expectation over ``z`` is ``Σ_{l,a} ∂_l^a v_l^a``.  ``field``
    may return extra leading axes (several fields at once, ``(K, *coords_shape)``); the result then has shape
    ``(n_probes, K)``.  Average over the probe axis for the estimate.

    ``period > 1`` dilutes each probe (:func:`probe_classes`): the value is ``Σ_c z_c · (z_c·∇) v`` over the
    ``period^d d`` classes, one jvp each -- still unbiased, without the products of a link with its neighbours
    closer than ``period`` sites, which carry most of the probe noise of a Jacobian that decays with distance.
    """
    w0 = _zeros(u, group)
    zs = hutchinson_probes(key, w0.shape, n_probes, kind, w0.dtype)
    # linearise once: every probe (and dilution class) then costs only the tangent, not the field again
    _, jvp = jax.linearize(lambda w: field(lift(w, u, group)), w0)
    axes = tuple(range(-w0.ndim, 0))

    def one(z: Array) -> Array:
        return jnp.sum(jvp(z) * z, axis=axes)

    if period == 1:
        return jax.lax.map(one, zs)
    cls = probe_classes(tuple(w0.shape), int(period))
    masks = jnp.asarray(np.stack([cls == c for c in range(int(cls.max()) + 1)]), w0.dtype)
    return jax.lax.map(lambda z: jnp.sum(jax.lax.map(lambda m: one(z * m), masks), axis=0), zs)


def check_parameter(theory: Any, param: str) -> None:
    """``ValueError`` (one line) unless ``param`` is a parameter the tangent estimators differentiate for ``theory``:
    :data:`PARAMETERS` of the gauge action, and ``mass`` for theories with Wilson fermions."""
    from .fermions import is_fermion_theory

    fermion = is_fermion_theory(theory)
    gauge = theory.gauge if fermion else theory
    if not hasattr(gauge, "plane_couplings"):
        raise ValueError(f"tangent derivatives are implemented for Wilson gauge actions (with or without Wilson "
                         f"fermions); got {type(theory).__name__}")
    allowed = PARAMETERS + (("mass",) if fermion else ())
    if param not in allowed:
        hint = ""
        if param == "kappa" and fermion:
            hint = " (give mass: d/dkappa = -(d/dm) / (2 kappa^2))"
        elif param in ("mass", "m", "kappa"):
            hint = " (a quark-mass derivative needs an ensemble with dynamical fermions)"
        raise ValueError(f"theory {theory.theory_name!r} has no parameter {param!r} for tangent derivatives; "
                         f"allowed: {', '.join(allowed)}{hint}")


def parameter_derivative(theory: Any, param: str) -> Callable[[Array], Array]:
    """``U -> ∂S/∂α (U)`` for a parameter ``α`` (``beta``, ``xi``, ``lam``) of the Wilson gauge action (of the gauge
    part of a fermion theory; the quark-mass derivative needs fermion traces: :mod:`corrflow.tangent.fermions`).

    Raises ``ValueError`` for a parameter the theory lacks."""
    check_parameter(theory, param)
    if param not in PARAMETERS:
        raise ValueError(f"parameter_derivative: {param!r} is not a gauge-action parameter; use "
                         "corrflow.tangent.fermions.fermion_derivatives for the quark mass")
    theory = theory.gauge if hasattr(theory, "gauge") else theory
    return lambda u: parameter_jvp(lambda th: th.action(u), theory, param)


def value_and_parameter_jvp(fn: Callable[[Any], Any], theory: Any, param: str) -> tuple[Any, Any]:
    """``(fn(theory), d/dα fn(theory))`` at the theory's value of ``α = param`` by one forward-mode pass through
    ``theory.replace`` (the value's solves, if any, are done once)."""
    p0 = jnp.asarray(getattr(theory, param), jnp.float64)
    return jax.jvp(lambda a: fn(theory.replace(**{param: a})), (p0,), (jnp.ones_like(p0),))


def parameter_jvp(fn: Callable[[Any], Any], theory: Any, param: str) -> Any:
    """``d/dα fn(theory)`` at the theory's value of ``α = param`` (forward mode through ``theory.replace``)."""
    return value_and_parameter_jvp(fn, theory, param)[1]


def observable_function(name: str, group: Group, shape: tuple[int, ...]) -> Callable[[Array], Array]:
    """Smooth observable ``U -> O(U)`` (scalar, one configuration) by name: ``plaquette`` (mean ``Re tr P / N``) or
    ``wilson_RxT`` (mean ``Re tr W / N`` over planes and orientations, as :mod:`corrflow.observables`).

    ``t2E@T`` (SU(N) only): ``t^2 E(t)`` at flow time ``t = T`` (clover ``E``, the definition of ``t0``), the
    configuration flowed by Lüscher's RK3 with step :data:`T2E_FLOW_EPS` -- a smooth function of the links, so its
    directional derivative is a forward-mode derivative through the whole flow.

    ``chi_top`` (2D U(1) only): ``Q^2 / V`` with ``Q`` the geometric topological charge, whose mean is the
    topological susceptibility.  ``Q`` is integer-valued, so integration by parts holds only for fields that never
    change it (:data:`CHARGE_OBSERVABLES`; :func:`check_charge_observables`); along them ``v·∇O = 0``.

    Raises ``ValueError`` for unknown names or loops that do not fit on the lattice.  Other non-smooth observables
    (the geometric charge itself, ``|Polyakov loop|``) are refused: integration by parts needs smooth ``O``.
    """
    n = str(name).strip()
    if n == "plaquette":
        return lambda u: obs.plaquette(u, group)
    if n == "chi_top":
        if not (group.is_abelian and len(shape) == 2):
            raise ValueError("chi_top: the geometric topological charge is defined for 2D U(1); this lattice is "
                             f"{group.name} on {tuple(shape)}")
        vol = float(np.prod(shape))
        return lambda u: obs.topological_charge(u, group) ** 2 / vol
    m = _WILSON_RE.match(n)
    if m:
        r, t = int(m.group(1)), int(m.group(2))
        if r < 1 or t < 1 or max(r, t) >= min(shape):
            raise ValueError(f"{n}: a Wilson loop needs 1 <= R, T < {min(shape)} (the shortest extent) on this lattice")
        return lambda u: obs.wilson_loop(u, group, r, t)
    m = _T2E_RE.match(n)
    if m:
        return _t2e_function(n, float(m.group(1)), group)
    hint = (" (not smooth: the tangent estimator needs differentiable observables)"
            if n in ("topological_charge", "polyakov_loop") else "")
    raise ValueError(f"unknown observable {n!r}{hint}; allowed: {', '.join(OBSERVABLES)}")


#: observables that are functions of the geometric topological charge (integer-valued: they need a field that keeps
#: the charge, :func:`check_charge_observables`)
CHARGE_OBSERVABLES = ("chi_top",)


def charge_observables(names: Sequence[str]) -> list[str]:
    """The names among ``names`` that are functions of the topological charge (:data:`CHARGE_OBSERVABLES`)."""
    return [n for n in (str(x).strip() for x in names) if n in CHARGE_OBSERVABLES]


def check_charge_observables(names: Sequence[str], field: Any) -> None:
    """``ValueError`` (one line) when an observable of the topological charge (:data:`CHARGE_OBSERVABLES`) is asked
    for with a field that can change the charge: ``Q`` jumps where a plaquette angle wraps, and a field moving angles
    across ``±π`` adds a boundary term that the estimator does not contain (bias).  Fields with ``keeps_charge``
    (the 2D U(1) plaquette field with ``keep_charge``, which :func:`~corrflow.tangent.make_field` sets for these
    observables, and the null field) are fine."""
    bad = charge_observables(names)
    if bad and not getattr(field, "keeps_charge", False):
        raise ValueError(f"{', '.join(bad)} is a function of the integer topological charge: it needs a field that "
                         "never changes the charge (--field plaquette, the default for 2D U(1), or --field none; "
                         f"from Python make_field('auto', theory, observables={list(bad)!r}), which keeps the charge); "
                         f"the {getattr(field, 'kind', type(field).__name__)} field can change it")


def _t2e_steps(name: str, t: float, group: Group) -> int:
    if group.is_abelian:
        raise ValueError(f"{name}: the Wilson flow is implemented for SU(N); this is a U(1) ensemble")
    n = int(round(t / T2E_FLOW_EPS))
    if n < 1 or abs(n * T2E_FLOW_EPS - t) > 1e-9:
        raise ValueError(f"{name}: the flow time must be a positive multiple of {T2E_FLOW_EPS} (e.g. t2E@0.2)")
    return n


def _t2e_curve(u: Array, group: Group, n_steps: int) -> Array:
    """``t^2 E(t)`` after each of ``n_steps`` RK3 steps of size :data:`T2E_FLOW_EPS` (one flow for all times)."""
    def step(w: Array, _: Any) -> tuple[Array, Array]:
        w = gf.flow_step(w, group, T2E_FLOW_EPS)
        return w, gf.energy_density_clover(w, group)

    _, e = jax.lax.scan(step, u, None, length=n_steps)
    return (T2E_FLOW_EPS * jnp.arange(1, n_steps + 1)) ** 2 * e


def _t2e_function(name: str, t: float, group: Group) -> Callable[[Array], Array]:
    n = _t2e_steps(name, t, group)
    return lambda u: _t2e_curve(u, group, n)[n - 1]


def observables_vector(names: tuple[str, ...], group: Group, shape: tuple[int, ...],
                       theory: Any = None, condensate_noise: Array | None = None,
                       pion_sources: int = 1) -> Callable[[Array], Array]:
    """``U -> (O_1(U), ..., O_n(U))`` for the named observables (see :func:`observable_function`); all ``t2E@T``
    share one Wilson flow to the largest ``T``.  With a fermion ``theory`` the fermionic observables of
    :mod:`corrflow.tangent.fermions` (``condensate``, ``pion@T``) are allowed too (valence mass = the theory's);
    ``condensate_noise`` ``(n, *fermion_shape)`` makes ``condensate`` the stochastic estimate with these noise
    vectors (default: dense, small lattices only); ``pion@T`` is the correlator averaged over ``pion_sources``
    point sources (``ValueError`` unless they divide ``L_0``)."""
    from .fermions import FERMION_OBSERVABLES, fermion_observable, fermion_vector

    if pion_sources < 1 or shape[0] % pion_sources:
        raise ValueError(f"pion_sources = {pion_sources} must be >= 1 and divide the time extent {shape[0]}")
    ferm = [(i, spec) for i, n in enumerate(names) if (spec := fermion_observable(n, theory)) is not None]
    fpos = {i for i, _ in ferm}

    def gauge_observable(n: str) -> Callable[[Array], Array]:
        try:
            return observable_function(n, group, shape)
        except ValueError as exc:  # with quarks the fermionic observables are allowed too: say so
            if theory is not None and str(exc).startswith("unknown observable"):
                raise ValueError(f"{exc}, {', '.join(FERMION_OBSERVABLES)}") from None
            raise

    fns = [None if i in fpos else gauge_observable(n) for i, n in enumerate(names)]
    steps = {i: _t2e_steps(n, float(m.group(1)), group) for i, n in enumerate(names) if (m := _T2E_RE.match(n))}

    def values(u: Array, which: Sequence[int]) -> Array:
        curve = _t2e_curve(u, group, max(steps.values())) if any(i in steps for i in which) else None
        fv = fermion_vector([(i, spec) for i, spec in ferm if i in which], theory, u, condensate_noise, pion_sources)
        vals = [fv[i] if i in fpos else curve[steps[i] - 1] if i in steps else fns[i](u)  # type: ignore
                for i in which]
        return jnp.stack([jnp.asarray(x, jnp.float64) for x in vals]) if ferm else jnp.stack(vals)

    every = tuple(range(len(names)))

    def vec(u: Array) -> Array:
        return values(u, every)

    # pion correlators and the stochastic condensate sit behind CG solves (reverse-differentiable); the dense
    # condensate (Gauss-Jordan) stays forward
    if ferm and (condensate_noise is not None or all(spec[0] == "pion" for _, spec in ferm)):
        rev = tuple(sorted(fpos))
        fwd = tuple(i for i in every if i not in fpos)
        setattr(vec, REVERSE_SPLIT, (fwd, lambda u: values(u, fwd), rev, lambda u: values(u, rev)))
    return vec


def casimir(group: Group) -> float:
    """``C_F`` with ``Σ_a T^a T^a = -C_F`` (U(1): 1, SU(N): ``(N^2 - 1) / (2N)``)."""
    return 1.0 if group.is_abelian else (group.N ** 2 - 1) / (2.0 * group.N)
