"""Wilson gauge action with anisotropy and a Feynman–Hellmann source term.

Action (``N = 1`` for U(1), where ``Re tr P = cos P``)::

    S(U) = -(1/N) sum_x sum_{mu<nu} b_{mu nu} Re tr P_{mu nu}(x)

with plane couplings ``b_{mu nu} = beta * xi`` for temporal planes (``mu = 0``),
``beta / xi`` for spatial planes, minus the Feynman–Hellmann source ``lam * s_{mu nu}`` where
``s = +1`` on spatial and ``-1`` on temporal planes.  Equivalently ``S = S_g(beta, xi) + lam * O``
with the source operator

    O(U) = (1/N) sum_x [ sum_{spatial planes} Re tr P - sum_{temporal planes} Re tr P ],

the gluonic energy-momentum-tensor component of Feynman–Hellmann studies (``dS/dlam = O``).

Force convention: ``F^a_mu(x) = d/dw S(exp(w T^a) U_mu(x)) |_{w=0}`` (right-trivialised derivative),
returned as an algebra element (U(1): real; SU(N): ``F = F^a T^a``, anti-Hermitian). For this
action ``F_mu(x) = P_TA(U_mu(x) Sigma_mu(x)) / (2N)`` with the weighted staple sum ``Sigma`` (SU(N))
and ``F_mu(x) = sum_nu b_{mu nu} [sin P_{mu nu}(x) - sin P_{mu nu}(x - nu)]`` (U(1)).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import lattice, native
from ..fastmath import cos_poly, sin_poly
from ..groups import Group, get_group

Array = jax.Array

__all__ = ["WilsonGaugeAction", "accumulate"]


def accumulate(x: Array, axis: Any = None) -> Array:
    """Sum in float64 when JAX's x64 mode is on (float32 fields accumulate in double)."""
    if jax.config.jax_enable_x64 and jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float64)
    return jnp.sum(x, axis=axis)


def check_param(val: Any, pname: str, owner: str) -> Any:
    """A concrete action parameter as a Python number: numpy scalars and 0-d numpy/JAX arrays become ``float``;
    strings (``TypeError``) and non-finite values (``ValueError``) are refused.  Traced values (inside
    ``jit``/``grad``/``vmap``), batched arrays and pytree placeholders pass through unchanged."""
    if isinstance(val, (str, bytes)):
        try:
            hint = f"; pass {pname}={float(val)!r}"
        except ValueError:
            hint = ""
        raise TypeError(f"{owner}: {pname} must be a number, got the string {val!r}{hint}")
    if isinstance(val, jax.core.Tracer):
        return val
    if isinstance(val, (np.generic, np.ndarray, jax.Array)) and np.ndim(val) == 0:
        dt = np.dtype(val.dtype)
        real = jnp.issubdtype(dt, jnp.bool_) or jnp.issubdtype(dt, jnp.number)
        if not real or jnp.issubdtype(dt, jnp.complexfloating):
            raise TypeError(f"{owner}: {pname} must be a real number, got {val!r}")
        val = float(val)
    if isinstance(val, (int, float)) and not np.isfinite(val):
        raise ValueError(f"{owner}: {pname} must be finite, got {val}")
    return val


def check_param_names(given: Any, allowed: Any, theory: str, also: Any = ()) -> None:
    """``ValueError`` naming the first name in ``given`` that is neither in ``allowed`` nor in ``also`` (further
    accepted names, listed last), with the allowed names."""
    unknown = [k for k in given if k not in allowed and k not in also]
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} for theory {theory!r}; allowed: "
                         f"{', '.join([*allowed, *also])}")


@dataclass(frozen=True)
class WilsonGaugeAction:
    """Wilson plaquette action on a periodic lattice (see module docstring for conventions).

    Parameters
    ----------
    group : the gauge group (``U1()`` or ``SUN(N)``) or its name (``"u1"``, ``"su2"``, ``"su3"``)
    shape : lattice extents ``(L_0, ..., L_{d-1})``, ``L_0`` is time
    beta  : gauge coupling (``beta = 2N / g^2`` for SU(N), ``1/g^2`` for U(1))
    xi    : bare anisotropy (1 = isotropic)
    lam   : Feynman–Hellmann source coefficient ``lambda``

    ``beta``, ``xi``, ``lam`` are numbers (numpy scalars and 0-d arrays become ``float``); strings (``TypeError``)
    and non-finite values (``ValueError``) are refused, traced values are left alone (:func:`check_param`).

    Registered as a JAX pytree: ``beta``, ``xi``, ``lam`` are traced leaves (changing them does not
    recompile); ``group`` and ``shape`` are static.
    """

    group: Group
    shape: tuple[int, ...]
    beta: Any
    xi: Any = 1.0
    lam: Any = 0.0

    name = "wilson"

    def __post_init__(self) -> None:
        object.__setattr__(self, "group", get_group(self.group))
        object.__setattr__(self, "shape", lattice.validate_shape(self.shape))
        for pname in ("beta", "xi", "lam"):
            val = check_param(getattr(self, pname), pname, "WilsonGaugeAction")
            object.__setattr__(self, pname, val)
            if pname == "xi" and isinstance(val, (int, float)) and val <= 0:
                raise ValueError(f"WilsonGaugeAction: xi (anisotropy) must be > 0, got {val}")

    # ------------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def volume(self) -> int:
        return int(np.prod(self.shape))

    @property
    def n_planes(self) -> int:
        return self.ndim * (self.ndim - 1) // 2

    @property
    def link_index_shape(self) -> tuple[int, ...]:
        """Shape of the link index ``(L_0, ..., L_{d-1}, d)`` (what ``group.random`` takes)."""
        return self.shape + (self.ndim,)

    @property
    def link_shape(self) -> tuple[int, ...]:
        """Trailing shape of one configuration: ``(L_0, ..., L_{d-1}, d, *elem)``."""
        return self.shape + (self.ndim,) + tuple(self.group.elem_shape)

    @property
    def theory_name(self) -> str:
        """Name used by :func:`corrflow.make_theory` and the store (the group name: ``u1``, ``su3``, ...)."""
        return self.group.name

    def params(self) -> dict[str, float]:
        """Action parameters as plain floats (for provenance and comparisons)."""
        return {"beta": float(self.beta), "xi": float(self.xi), "lam": float(self.lam)}

    def replace(self, **changes: Any) -> "WilsonGaugeAction":
        """Copy with some parameters changed, e.g. ``theory.replace(beta=2.2)``."""
        check_param_names(changes, PARAMS, self.theory_name, ("group", "shape"))
        return dataclasses.replace(self, **changes)

    def check_links(self, u: Array) -> None:
        """Raise ``ValueError`` if ``u`` is not a (batch of) link field(s) of this theory."""
        lattice.check_links(u, self.group, self.shape)

    # ------------------------------------------------------------------------------------
    def plane_signs(self) -> np.ndarray:
        """``(d, d)`` matrix: +1 on spatial planes, -1 on temporal planes, 0 on the diagonal."""
        d = self.ndim
        s = np.ones((d, d))
        s[0, :] = s[:, 0] = -1.0
        np.fill_diagonal(s, 0.0)
        return s

    def plane_couplings(self) -> Array:
        """Symmetric ``(d, d)`` array ``b_{mu nu}`` of the plaquette couplings (zero diagonal)."""
        sign = jnp.asarray(self.plane_signs())
        aniso = jnp.where(sign < 0, self.beta * self.xi, self.beta / self.xi)
        return (aniso - self.lam * sign) * (sign != 0)

    def _plane_sums(self, u: Array) -> list[Array]:
        """``sum_x Re tr P_{mu nu}(x) / N`` for each plane, each of batch shape."""
        g = self.group
        site_axes = tuple(range(-self.ndim, 0))
        retr = cos_poly if g.is_abelian else g.retr  # U(1): Re tr P = cos P, as a vectorised polynomial
        return [accumulate(retr(lattice.plaquette(u, m, n, g)) / g.N, site_axes)
                for m, n in lattice.planes(self.ndim)]

    def action(self, u: Array) -> Array:
        """``S(U)``, shape ``batch``; ``ValueError`` for links of another lattice or group (static: at trace time)."""
        self.check_links(u)  # links of another lattice gave a number, complex U(1) links a complex action
        b = self.plane_couplings()
        sums = self._plane_sums(u)
        return -sum(b[m, n] * s for (m, n), s in zip(lattice.planes(self.ndim), sums))

    def source_operator(self, u: Array) -> Array:
        """``O(U) = dS/dlam`` (see module docstring), shape ``batch``."""
        self.check_links(u)
        sign = self.plane_signs()
        sums = self._plane_sums(u)
        return sum(sign[m, n] * s for (m, n), s in zip(lattice.planes(self.ndim), sums))

    def force(self, u: Array) -> Array:
        """Right-trivialised derivative of the action (an algebra-valued link field).

        Shape ``(*batch, L_0, ..., L_{d-1}, d)`` for U(1), ``(..., d, N, N)`` for SU(N).
        """
        return self.force_finish(self.force_start(u), u)

    def force_start(self, u: Array) -> Any:
        """The part of :meth:`force` worth materialising once per molecular-dynamics step (see
        :func:`corrflow.hmc.integrate`): U(1) the plaquette sines ``sin P_{mu nu}(x)``, shape
        ``(*batch, n_planes, L_0, ..., L_{d-1})`` in the order of :func:`corrflow.lattice.planes`; SU(N) nothing
        (``()``).  ``force(u) == force_finish(force_start(u), u)``.  The sines are
        :func:`corrflow.fastmath.sin_poly` (vectorised by XLA; within 4e-16 of ``sin`` in float64).  On CPUs the
        native U(1) kernel (:func:`corrflow.native.u1_force`, same polynomial) does all of it in ``force_finish``
        (then ``()`` here too).
        """
        g = self.group
        if not g.is_abelian or native.use_native_u1(u, g):
            return ()
        return _plaquette_sines(u, g, self.ndim)

    def force_finish(self, start: Any, u: Array) -> Array:
        """:meth:`force` from ``start = force_start(u)`` and the links."""
        g = self.group
        b = self.plane_couplings()
        if g.is_abelian:
            if isinstance(start, tuple):  # the native kernel (force_start said so)
                return native.u1_force(u, b.astype(u.dtype), _u1_force_jax)
            return _u1_force_from_sines(start, b, self.ndim, g).astype(u.dtype)
        return (lattice.staple_force(u, g, weights=b.astype(u.real.dtype)) / (2.0 * g.N)).astype(u.dtype)


def _plaquette_sines(u: Array, g: Group, d: int) -> Array:
    """U(1): ``sin P_{mu nu}(x)`` of every plane, ``(*batch, n_planes, L_0, ..., L_{d-1})``."""
    return jnp.stack([sin_poly(lattice.plaquette(u, m, n, g)) for m, n in lattice.planes(d)], axis=-(d + 1))


def _u1_force_from_sines(sines: Array, b: Array, d: int, g: Group) -> Array:
    """U(1) force from the plaquette sines and the plane couplings ``b`` ``(d, d)``."""
    f = [0.0] * d
    for k, (m, n) in enumerate(lattice.planes(d)):
        s = jax.lax.index_in_dim(sines, k, axis=sines.ndim - (d + 1), keepdims=False)
        f[m] = f[m] + b[m, n] * (s - lattice.shift(s, n, -1, d, g))
        f[n] = f[n] - b[m, n] * (s - lattice.shift(s, m, -1, d, g))
    return jnp.stack(f, axis=-1)


def _u1_force_jax(u: Array, b: Array) -> Array:
    """The U(1) force in JAX (the native kernel's derivatives and reference)."""
    g, d = get_group("u1"), u.shape[-1]
    return _u1_force_from_sines(_plaquette_sines(u, g, d), b, d, g).astype(u.dtype)


jax.tree_util.register_dataclass(
    WilsonGaugeAction, data_fields=["beta", "xi", "lam"], meta_fields=["group", "shape"]
)

#: the action parameters of :class:`WilsonGaugeAction` (its fields other than ``group`` and ``shape``)
PARAMS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(WilsonGaugeAction)
                                if f.name not in ("group", "shape"))
