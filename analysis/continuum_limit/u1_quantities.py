r"""Dimensionless quantities of 2D U(1) gauge theory with exact continuum, infinite-volume and finite-torus values.

``plaquette``
    ``q = beta (1 - <P>)`` (``P`` = mean plaquette ``cos P_p``): the action density in units of ``g^2/a^2``;
    ``q -> 1/2`` (each plaquette angle is Gaussian with variance ``g^2 a^2``).  Lattice artefacts
    ``q = 1/2 (1 + x/4 + x^2/4 + O(x^3))``.
``string_tension``
    ``q = beta chi(R, R)`` with the Creutz ratio ``chi(R,R) = -ln[W(R,R) W(R-1,R-1) / W(R,R-1)^2]``
    (``W(0, .) = 1``; ``creutz_size R`` = 1 or 2): the string tension in units of ``g^2``, ``-> 1/2``.  In
    infinite volume ``sigma a^2 = -ln(I_1/I_0)`` for every ``R``; ``R = 1`` is ``-beta ln<P>`` (twice the
    slope in ``x`` of ``plaquette``), ``R = 2`` is noisier.
``topological_susceptibility``
    ``q = beta chi_top = beta <Q^2>/V`` (geometric charge) ``-> 1/(4 pi^2)``.  Needs ``topology sampled`` and
    betas where HMC changes the topology (``beta <~ 4`` at ``L = 16``), where its artefacts are large and
    non-polynomial (a quadratic fit on ``beta = 2 .. 4`` is off by ~20 %): an illustration, not a precision result.
"""

from __future__ import annotations

import math

from .estimators import Quantity

__all__ = ["MEASURED", "QUANTITIES", "exact_plaquette_sector", "make_quantity"]

#: Observables measured on every ensemble of the 2D analysis (fixed, so that every quantity can be evaluated from
#: one store and re-runs with another ``quantity`` reuse it).
MEASURED = ("plaquette", "topological_charge", "wilson_1x2", "wilson_2x2")


def _u1_inf_plaquette(beta: float) -> float:
    from corrflow import exact

    return exact.u1_plaquette_infinite_volume(beta)


def exact_plaquette_sector(beta: float, shape: tuple[int, int], charge: int = 0) -> float:
    """Exact mean plaquette of 2D U(1) on the torus in the sector ``Q = charge``
    (:func:`corrflow.exact.u1_plaquette_in_sector`)."""
    from corrflow import exact

    return exact.u1_plaquette_in_sector(beta, shape, charge)


def _plaquette_quantity() -> Quantity:
    from corrflow import exact

    return Quantity(
        name="plaquette", label=r"$\beta\,(1-\langle P\rangle) = (1-\langle P\rangle)/(a^2 g^2)$",
        description="beta (1 - <P>) -> 1/2 (action density in units of g^2/a^2)",
        primaries=("plaquette",),
        value=lambda b, m, v: b * (1.0 - m[0]),
        exact=lambda b, s: b * (1.0 - exact.u1_plaquette(b, s)),
        exact_sector0=lambda b, s: b * (1.0 - exact_plaquette_sector(b, s, 0)),
        exact_infinite=lambda b: b * (1.0 - _u1_inf_plaquette(b)),
        continuum=0.5, continuum_label="1/2")


def _creutz_from_loops(w_rr: float, w_r1r1: float, w_rr1: float) -> float:
    return -math.log(w_rr * w_r1r1 / (w_rr1 * w_rr1))


def _string_tension_quantity(size: int) -> Quantity:
    from corrflow import exact

    if size == 1:
        return Quantity(
            name="string_tension", label=r"$\beta\,\chi(1,1) = \sigma/g^2$",
            description="beta * Creutz ratio chi(1,1) = -beta ln<P> -> 1/2 (string tension in units of g^2)",
            primaries=("plaquette",),
            value=lambda b, m, v: -b * math.log(m[0]),
            exact=lambda b, s: -b * math.log(exact.u1_wilson_loop(b, s, 1, 1)),
            exact_sector0=lambda b, s: -b * math.log(exact_plaquette_sector(b, s, 0)),
            exact_infinite=lambda b: -b * math.log(_u1_inf_plaquette(b)),
            continuum=0.5, continuum_label="1/2")
    if size == 2:
        return Quantity(
            name="string_tension", label=r"$\beta\,\chi(2,2) = \sigma/g^2$",
            description="beta * Creutz ratio chi(2,2) = -beta ln[W22 W11 / W21^2] -> 1/2 (string tension / g^2)",
            primaries=("wilson_2x2", "plaquette", "wilson_1x2"),
            value=lambda b, m, v: b * _creutz_from_loops(m[0], m[1], m[2]),
            exact=lambda b, s: b * _creutz_from_loops(exact.u1_wilson_loop(b, s, 2, 2), exact.u1_wilson_loop(b, s, 1, 1),
                                                      exact.u1_wilson_loop(b, s, 2, 1)),
            exact_infinite=lambda b: -b * math.log(_u1_inf_plaquette(b)),
            continuum=0.5, continuum_label="1/2")
    raise ValueError(f"creutz_size must be 1 or 2 (loops measured: {', '.join(MEASURED)}), got {size}")


def _topology_quantity() -> Quantity:
    from corrflow import exact

    return Quantity(
        name="topological_susceptibility", label=r"$\beta\,\chi_{\rm top} = \chi_{\rm top}/g^2$",
        description="beta <Q^2>/V -> 1/(4 pi^2) (geometric charge)",
        primaries=("topological_charge",), squared=("topological_charge",),
        value=lambda b, m, v: b * m[0] / v,
        exact=lambda b, s: b * exact.u1_topological_susceptibility(b, s),
        exact_infinite=lambda b: b * exact.u1_topological_susceptibility_infinite_volume(b),
        continuum=1.0 / (4.0 * math.pi**2), continuum_label=r"1/(4\pi^2)")


#: Quantity names accepted by ``--quantity`` with their description.
QUANTITIES: dict[str, str] = {
    "plaquette": "beta (1 - <P>) -> 1/2 (default)",
    "string_tension": "beta * Creutz ratio chi(R,R) -> sigma/g^2 = 1/2 (R = --creutz-size, 1 or 2)",
    "topological_susceptibility": "beta chi_top -> 1/(4 pi^2)",
}


def make_quantity(name: str, creutz_size: int = 2) -> Quantity:
    """The :class:`Quantity` called ``name`` (see :data:`QUANTITIES`)."""
    if name == "plaquette":
        return _plaquette_quantity()
    if name == "string_tension":
        return _string_tension_quantity(creutz_size)
    if name == "topological_susceptibility":
        return _topology_quantity()
    raise ValueError(f"unknown quantity {name!r}; allowed: {', '.join(QUANTITIES)}")
