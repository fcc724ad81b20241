"""Building residual and plaquette-space flows from their architecture options, and rebuilding them from their
recorded descriptions (checkpoints): option checks, the defaults ``corrflow train`` picks, :func:`make_flow`."""

from __future__ import annotations

from typing import Any, Sequence

from .. import lattice
from ..groups import Group, get_group
from .layers import Flow
from .network import MAX_DEPTH, MAX_WIDTH
from .spec import LOOPS, check_degree, check_times
from .staples import layer_masks

__all__ = ["make_flow", "flow_from_description", "check_degree", "check_shift", "check_init_scale", "FLOW_KINDS",
           "default_kind", "default_smoothing", "DEFAULT_SMOOTHING"]


def make_flow(group: Group | str | Any, shape: Sequence[int] | None = None, *,
              loops: Sequence[str] | str = ("plaquette",), n_sweeps: int = 1, degree: int = 0, kind: str = "residual",
              harmonics: int = 6,
              net_width: int = 0, net_depth: int = 2, smear: int = 0, smear_rho: float = 0.1,
              smoothing: Sequence[float] | None = None, smoothing_eps: float = 0.05) -> Any:
    """A flow from its architecture options, for the links of ``group`` (a group, its name, or a theory, whose
    lattice is the default ``shape``) on the lattice ``shape``.

    ``kind="auto"``: the flow ``corrflow train`` builds without architecture options, the best measured
    (BENCHMARKS.md): the plaquette-space map for 2D U(1), residual layers with the held-out smoothing terms
    :data:`DEFAULT_SMOOTHING` for SU(2)/SU(3) in three or more dimensions (unless ``smoothing`` is given), plain
    residual layers otherwise (:func:`default_kind`, :func:`default_smoothing`).

    ``kind="residual"`` (default; the building block): a :class:`Flow` that updates every link ``n_sweeps`` times:
    for each sweep, each direction ``mu`` and each of its masks (:func:`~corrflow.flows.staples.layer_masks`), one
    layer.
    ``degree``: 0 for constant coefficients, ``p > 0`` for coefficients that are degree-``p`` polynomials of the
    staple norm (:mod:`corrflow.flows.layers`).  ``net_width > 0``: one coefficient per individual staple and site
    from a periodic CNN of frozen gauge-invariant features with ``net_depth`` convolutions of ``net_width`` channels
    (:mod:`corrflow.flows.network`; needs the plaquette loop shape, excludes ``degree``).  ``smear = s > 0``: each
    loop shape also contributes its staples built from transverse links after ``s`` stout steps of ``smear_rho``
    within the planes without the active direction (frozen links only: :func:`~corrflow.flows.staples.
    transverse_smear`), with their own coefficients (``degree = 0``, no network; needs ``d >= 3``).
    ``smoothing = (t_1, ...)``: held-out smoothing terms at these Wilson-flow times (Euler steps ``smoothing_eps``;
    SU(2)/SU(3), the plaquette loop shape, ``degree = 0``, no network; :mod:`corrflow.flows.smoothing`).

    ``kind="plaquette"`` (2D U(1) only): a :class:`~corrflow.flows.plaquette.PlaquetteFlow` of ``n_sweeps``
    plaquette-space maps with ``harmonics`` sine coefficients each (exact per-plaquette transforms; the best
    flow for 2D U(1) gauge theory, BENCHMARKS.md).  ``loops`` and ``degree`` must keep their defaults.
    Every option that does not fit the group or lattice raises a one-line ``ValueError``."""
    if hasattr(group, "group") and hasattr(group, "shape"):  # a theory
        shape = group.shape if shape is None else shape
        group = group.group
    if shape is None:
        raise TypeError("make_flow needs the lattice shape, e.g. make_flow('su3', (4, 4, 4, 4)), or a theory")
    group = get_group(group)
    shape = lattice.validate_shape(shape)
    if isinstance(loops, str):
        loops = tuple(lp.strip() for lp in loops.split(",") if lp.strip())  # "plaquette" or "plaquette,rectangle"
    if kind == "auto":
        kind = default_kind(group, shape)
        if kind == "plaquette":
            smoothing = smoothing or ()
        elif smoothing is None and tuple(loops) == ("plaquette",) and not (degree or net_width or smear):
            smoothing = default_smoothing(group, shape)
    smoothing = () if smoothing is None else smoothing
    if n_sweeps != int(n_sweeps) or n_sweeps < 1:
        raise ValueError(f"n_sweeps must be an integer >= 1, got {n_sweeps}")
    if kind == "plaquette":
        from .plaquette import MAX_HARMONICS, PlaquetteFlow

        if group.name != "u1" or len(shape) != 2:
            raise ValueError(f"kind='plaquette' flows are for 2D U(1) only, got {group.name} on {len(shape)}D shape "
                             f"{shape}; use kind='residual'")
        if tuple(loops) != ("plaquette",) or degree != 0 or net_width or smear or smoothing:
            raise ValueError("kind='plaquette' takes no loops, degree or net options (they belong to kind='residual')")
        if isinstance(harmonics, bool) or harmonics != int(harmonics) or not 1 <= harmonics <= MAX_HARMONICS:
            raise ValueError(f"harmonics must be an integer in 1..{MAX_HARMONICS}, got {harmonics!r}")
        return PlaquetteFlow(group, shape, int(n_sweeps), int(harmonics))
    if kind != "residual":
        raise ValueError(f"unknown flow kind {kind!r}; allowed: {', '.join(FLOW_KINDS)}")
    loops = tuple(loops)
    for lp in loops:
        if lp not in LOOPS:
            raise ValueError(f"unknown loop shape {lp!r}; allowed: {', '.join(LOOPS)}")
    degree = check_degree(degree)
    for name, value, hi in (("net_width", net_width, MAX_WIDTH), ("net_depth", net_depth, MAX_DEPTH)):
        if isinstance(value, bool) or value != int(value) or not (0 if name == "net_width" else 1) <= value <= hi:
            raise ValueError(f"{name} must be an integer in {0 if name == 'net_width' else 1}..{hi}, got {value!r}")
    if net_width and (degree or "plaquette" not in loops):
        raise ValueError("network coefficients (net_width > 0) need the plaquette loop shape and degree 0")
    if isinstance(smear, bool) or smear != int(smear) or not 0 <= smear <= 10:
        raise ValueError(f"smear must be an integer in 0..10 (stout steps), got {smear!r}")
    if smear and (degree or net_width or len(shape) < 3 or not 0 < smear_rho <= 0.25):
        raise ValueError(f"smeared staples (smear > 0) need degree 0, no network, d >= 3 (transverse planes) and "
                         f"0 < smear_rho <= 0.25; got degree {degree}, net_width {net_width}, d = {len(shape)}, "
                         f"smear_rho {smear_rho}")
    smoothing = check_times(smoothing, smoothing_eps) if len(smoothing) else ()
    if smoothing and (group.is_abelian or group.N not in (2, 3) or degree or net_width or "plaquette" not in loops):
        raise ValueError(f"smoothing terms need SU(2) or SU(3), the plaquette loop shape, degree 0 and no network; got "
                         f"{group.name}, loops {'+'.join(loops)}, degree {degree}, net_width {net_width} (leave the "
                         "smoothing times out: --smoothing none)")
    for mu in range(len(shape)):
        layer_masks(shape, mu, loops)  # validates the extents
    return Flow(group, shape, loops, int(n_sweeps), degree, int(net_width), int(net_depth) if net_width else 2,
                int(smear), float(smear_rho) if smear else 0.1, smoothing, float(smoothing_eps) if smoothing else 0.05)


FLOW_KINDS = ("auto", "residual", "plaquette")
DEFAULT_SMOOTHING = (0.1, 0.2, 0.4, 0.8)


def default_smoothing(group: Group | str, shape: Sequence[int]) -> tuple[float, ...]:
    """The smoothing times ``corrflow train`` uses without architecture options: :data:`DEFAULT_SMOOTHING` for SU(2)
    and SU(3) in three or more dimensions (held-out var(log w) 0.38 of direct reweighting's against 0.66 for the
    staple-only flow, 4D SU(3) 4^4 β 5.7 → 5.75, BENCHMARKS.md), none otherwise."""
    g = get_group(group)
    return DEFAULT_SMOOTHING if not g.is_abelian and g.N in (2, 3) and len(tuple(shape)) >= 3 else ()


def default_kind(group: Group | str, shape: Sequence[int]) -> str:
    """The flow kind that ``corrflow train`` uses without architecture options: ``"plaquette"`` for 2D U(1) (exact
    per-plaquette maps, BENCHMARKS.md), ``"residual"`` otherwise."""
    return "plaquette" if get_group(group).name == "u1" and len(tuple(shape)) == 2 else "residual"


def flow_from_description(desc: dict[str, Any], shape: Sequence[int] | None = None) -> Any:
    """Rebuild a flow from :meth:`Flow.describe` (or another kind's ``describe``), optionally on another lattice
    ``shape``; ``ValueError`` (one line) for a description that does not make a valid flow."""
    try:
        kind = desc.get("kind", "residual")
        shp = tuple(shape) if shape is not None else tuple(desc["shape"])
        if kind == "plaquette":
            return make_flow(desc["group"], shp, kind="plaquette", n_sweeps=int(desc["n_maps"]),
                             harmonics=int(desc["harmonics"]))
        return make_flow(desc["group"], shp, loops=tuple(desc["loops"]), n_sweeps=int(desc["n_sweeps"]),
                         degree=int(desc.get("degree", 0)), net_width=int(desc.get("net_width", 0)),
                         net_depth=int(desc.get("net_depth", 2)), smear=int(desc.get("smear", 0)),
                         smear_rho=float(desc.get("smear_rho", 0.1)), smoothing=tuple(desc.get("smoothing", ())),
                         smoothing_eps=float(desc.get("smoothing_eps", 0.05)))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed flow description {desc!r} ({type(exc).__name__}: {exc})") from None


def check_shift(flow: Any, base: Any, target: Any) -> None:
    """One-line ``ValueError`` unless ``flow`` can map configurations of the theory ``base`` to ``target``: one kind
    of theory, one group, one lattice for the three (a flow trained on another volume applies after
    ``flow.with_shape(base.shape)``)."""
    if type(base) is not type(target):
        raise ValueError(f"base is a {type(base).__name__}, target a {type(target).__name__}: a flow maps between "
                         "parameters of one theory (target = base.replace(beta=...))")
    if base.group.name != target.group.name:
        raise ValueError(f"base links are {base.group.name}, target links {target.group.name}: a flow maps between "
                         "parameters of one theory (target = base.replace(beta=...))")
    if tuple(base.shape) != tuple(target.shape):
        raise ValueError(f"base lattice {'x'.join(map(str, base.shape))} and target lattice "
                         f"{'x'.join(map(str, target.shape))} differ: a flow changes parameters, not the lattice "
                         "(target = base.replace(beta=...))")
    if flow.group.name != base.group.name:
        raise ValueError(f"the flow is built for {flow.group.name} links, the theories have {base.group.name}")
    if tuple(flow.shape) != tuple(base.shape):
        raise ValueError(f"the flow is built for the {'x'.join(map(str, flow.shape))} lattice, the theories' is "
                         f"{'x'.join(map(str, base.shape))}: use flow.with_shape({tuple(base.shape)}) (its parameters "
                         "are translation invariant)")


def check_init_scale(scale: Any) -> None:
    """``TypeError`` unless ``scale`` of ``init_params(scale, key)`` is a number (a key passed first, as JAX's own
    initialisers take it, failed with "multiple values for argument 'scale'" or an ambiguous truth value)."""
    try:
        float(scale)  # numbers and 0-d arrays; a key (shape (2,), or a typed key) is not one
    except (TypeError, ValueError):
        raise TypeError(f"init_params(scale=0.0, key=None): scale is a number (0: the identity map) and the PRNG key "
                        f"comes second, e.g. flow.init_params(0.01, jax.random.PRNGKey(0)); got {scale!r}") from None
