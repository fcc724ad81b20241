"""Lattice actions: the Wilson gauge action and Wilson fermions.

``make_theory(name, shape, **params)`` builds a theory from a name used on the command line and in the
store:

* ``u1``, ``su2``, ``su3``, ``suN``: Wilson gauge action (parameters ``beta, xi, lam``) in the dimension
  given by ``shape``;
* ``schwinger``: 2D U(1) with ``nf`` (default 2) degenerate Wilson fermions of bare mass ``mass`` (or ``kappa``);
  ``<group>-wilson`` (e.g. ``su3-wilson``): the same with an SU(N) gauge field (d = 2 or 4).
  Fermion settings (``det``, ``even_odd``, ``cg_tol``, ``cg_maxiter``) are passed through.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from ..groups import get_group
from .fermions import WilsonFermionAction, kappa_from_mass, mass_from_kappa
from .gauge import PARAMS as GAUGE_PARAMS
from .gauge import WilsonGaugeAction, accumulate, check_param, check_param_names

THEORIES: dict[str, str] = {
    "u1": "U(1) Wilson gauge action, links stored as angles",
    "su2": "SU(2) Wilson gauge action",
    "su3": "SU(3) Wilson gauge action",
    "suN": "SU(N) Wilson gauge action for any N >= 2 (e.g. su4)",
    "schwinger": "Schwinger model: U(1) gauge + nf=2 Wilson fermions (parameters beta, mass or kappa)",
    "<group>-wilson": "SU(N) gauge + nf=2 Wilson fermions, e.g. su3-wilson (parameters beta, mass or kappa)",
}

_FERMION_KEYS = ("mass", "kappa", "nf", "det", "even_odd", "cg_tol", "cg_maxiter")


def has_fermions(name: str) -> bool:
    """Whether the theory ``name`` (``THEORIES``) has dynamical quarks: ``schwinger`` and ``<group>-wilson``."""
    key = str(name).strip().lower()
    return key == "schwinger" or key.endswith("-wilson")


def make_theory(name: str, shape: Sequence[int], **params: Any) -> WilsonGaugeAction | WilsonFermionAction:
    """Theory from its name (see ``THEORIES``) on the lattice ``shape`` ``(L_0, ..., L_{d-1})``, e.g. ``(8, 8)``.

    Parameters (numbers; concrete numpy scalars and 0-d arrays are converted to ``float``):

    * all theories: ``beta`` (required), ``xi`` (anisotropy, default 1), ``lam`` (Feynman-Hellmann source,
      default 0) -- :class:`WilsonGaugeAction`;
    * ``schwinger`` and ``<group>-wilson`` also: ``mass`` or ``kappa`` (one of them required), ``nf`` (even,
      default 2), and the settings ``det``, ``even_odd``, ``cg_tol``, ``cg_maxiter`` -- :class:`WilsonFermionAction`.

    Raises ``ValueError`` listing the allowed names, naming a missing or unknown parameter, or for a ``shape`` that
    is not a tuple of lattice extents; ``TypeError`` for a parameter given as a string.
    """
    key = str(name).strip().lower()
    fermions = has_fermions(key)
    gname = "u1" if key == "schwinger" else (key[: -len("-wilson")] if fermions else key)
    try:
        group = get_group(gname)
    except ValueError:
        raise ValueError(f"unknown theory {name!r}; allowed: {', '.join(THEORIES)}") from None
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise ValueError(f"shape must be a tuple of lattice extents, e.g. (8, 8), got {shape!r}")
    shape = tuple(shape)
    if not fermions:
        extra = [k for k in params if k in _FERMION_KEYS]
        if extra:
            raise ValueError(f"theory {name!r} is pure gauge and takes no {', '.join(extra)}; "
                             f"use 'schwinger' or '{gname}-wilson' for dynamical fermions")
    check_param_names(params, (*GAUGE_PARAMS, *(_FERMION_KEYS if fermions else ())), name)
    missing = [f.name for f in dataclasses.fields(WilsonGaugeAction) if f.name in GAUGE_PARAMS
               and f.default is dataclasses.MISSING and f.name not in params]
    if missing:
        raise ValueError(f"theory {name!r} needs {', '.join(missing)}: pass e.g. {missing[0]}=2.0")
    if not fermions:
        return WilsonGaugeAction(group=group, shape=shape, **params)
    fp = {k: params.pop(k) for k in _FERMION_KEYS if k in params}
    if "mass" in fp and "kappa" in fp:
        raise ValueError("give either mass or kappa, not both")
    if "kappa" in fp:
        fp["mass"] = mass_from_kappa(float(check_param(fp.pop("kappa"), "kappa", "make_theory")), len(shape))
    if "mass" not in fp:
        raise ValueError(f"theory {name!r} needs a quark mass: pass mass=... (or kappa=...)")
    if "nf" in fp:
        nf = float(fp.pop("nf"))
        if nf != int(nf):
            raise ValueError(f"nf must be an integer, got {nf}")
        fp["n_flavors"] = int(nf)
    gauge = WilsonGaugeAction(group=group, shape=shape, **params)
    return WilsonFermionAction(gauge=gauge, **fp)


__all__ = ["WilsonGaugeAction", "WilsonFermionAction", "THEORIES", "has_fermions", "make_theory", "accumulate",
           "kappa_from_mass", "mass_from_kappa"]
