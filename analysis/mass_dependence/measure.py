r"""Fermionic and gauge measurements of the mass-dependence analysis, and its pipeline steps (:func:`prepare`).

Per configuration ``U`` at bare mass ``m`` (:func:`measure`): ``plaquette`` ``<cos P>``, ``chi_top`` ``= Q^2/V``
(geometric charge), ``condensate`` ``Sigma = (1/V) Re tr D^{-1}`` per flavour with its slope ``dcondensate_dm``
(:func:`condensate_and_slope`), and the pion correlator ``pion`` ``C(t)``, ``t = 0 .. T-1``
(:func:`corrflow.observables.fermions.pion_correlator`, ``n_sources`` point sources); on the base configurations
also its mass derivative at fixed links ``dpion_dm`` (the connected dm_pi/dm) and, with ``tangent``, the
per-configuration series of the tangent-flow estimator (:func:`corrflow.pipeline.measure_tangent`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .settings import MassSettings

__all__ = ["MassInputs", "condensate_and_slope", "measure", "prepare", "tangent_field", "tangent_names"]

#: paired measurement sets: (name, theory at m or m + dm, configurations)
SETS = ("base", "flowed", "direct", "independent")


def condensate_and_slope(theory: Any, u: Any) -> tuple[Any, Any]:
    """``(Sigma, dSigma/dm)`` per flavour, shape ``batch`` (exact, from the even-odd Schur complement).

    With ``Dhat = (m + d) - H_eo H_oe / (4 (m + d))`` (``d`` = dimension):
    ``Sigma = (1/V) Re tr D^{-1} = (2/V) Re tr Dhat^{-1}`` and
    ``dSigma/dm = -(1/V) Re tr D^{-2} = (1/V) Re[-4 tr Dhat^{-2} + 2 tr Dhat^{-1} / (m + d)]``
    (needs equal numbers of even and odd sites, i.e. even extents).
    """
    import jax
    import jax.numpy as jnp

    from corrflow.theories.fermions import dirac_matrix

    v = theory.links(u)
    nb = u.ndim - len(theory.link_shape)
    flat = v.reshape((-1,) + v.shape[nb:])
    a = theory.mass + theory.ndim

    def one(vv: Any) -> Any:
        x = jnp.linalg.inv(dirac_matrix(vv, theory.mass, theory.n_spin, even_odd=True))
        tr1 = jnp.trace(x)
        tr2 = jnp.sum(x * x.T)
        return jnp.real(2.0 * tr1), jnp.real(-4.0 * tr2 + 2.0 * tr1 / a)

    s, ds = jax.vmap(one)(flat)
    vol = theory.volume
    return s.reshape(u.shape[:nb]) / vol, ds.reshape(u.shape[:nb]) / vol


def _measure_fn(n_sources: int, with_pion: bool, with_slope: bool = False) -> Callable[[Any, Any], dict[str, Any]]:
    import jax
    import jax.numpy as jnp

    from corrflow import observables as gobs
    from corrflow.observables.fermions import pion_correlator

    @jax.jit
    def fn(theory: Any, u: Any) -> dict[str, Any]:
        q = gobs.topological_charge(u, theory.group)
        sig, dsig = condensate_and_slope(theory, u)
        out = {"plaquette": gobs.plaquette(u, theory.group), "chi_top": q * q / theory.volume,
               "condensate": sig, "dcondensate_dm": dsig}
        if with_slope:  # dC/dm at fixed links: one tangent solve per source (the connected dm_pi/dm needs it)
            m0 = jnp.asarray(theory.mass, jnp.float64)
            out["pion"], out["dpion_dm"] = jax.jvp(
                lambda m: pion_correlator(theory.replace(mass=m), u, n_sources), (m0,), (jnp.ones_like(m0),))
        elif with_pion:
            out["pion"] = pion_correlator(theory, u, n_sources)
        return out

    return fn


_MEASURE_CACHE: dict[tuple[int, bool, bool], Callable] = {}


def measure_outputs(with_pion: bool = True, with_slope: bool = False) -> tuple[str, ...]:
    """The names :func:`measure` returns, in order."""
    pion = ("pion", "dpion_dm") if with_slope else ("pion",) if with_pion else ()
    return ("plaquette", "chi_top", "condensate", "dcondensate_dm") + pion


def measure(theory: Any, links: np.ndarray, *, n_sources: int = 2, with_pion: bool = True, with_slope: bool = False,
            batch: int = 64, progress: Callable[[int, int], None] | None = None, resume: Any = (),
            on_batch: Any = None) -> dict[str, np.ndarray]:
    """Observables of every configuration ``links`` ``(n, *link_shape)`` at ``theory``'s mass (exact determinant).

    Returns ``plaquette``, ``chi_top`` (``Q^2 / V``), ``condensate`` (``Sigma``), ``dcondensate_dm``: ``(n,)``;
    ``pion``: ``(n, T)`` correlators (with ``with_pion``) and with ``with_slope`` their mass derivative at fixed links
    ``dpion_dm`` ``(n, T)`` (forward mode through the solves).  Batches are padded to ``batch`` so one compiled
    program serves every call (the mass is traced: base and target share it).  ``resume`` / ``on_batch``: resumption
    after an interruption (:func:`corrflow.pipeline.map_batches`, outputs :func:`measure_outputs`).
    """
    from corrflow.pipeline import exact_theory, map_batches

    theory = exact_theory(theory)
    key = (int(n_sources), bool(with_pion or with_slope), bool(with_slope))
    if key not in _MEASURE_CACHE:
        _MEASURE_CACHE[key] = _measure_fn(*key)
    fn = _MEASURE_CACHE[key]
    return map_batches(lambda u: fn(theory, u), links, batch=batch, progress=progress, resume=resume,
                       on_batch=on_batch, outputs=measure_outputs(with_pion, with_slope))


@dataclass(frozen=True)
class MassInputs:
    """What :func:`prepare` hands to the estimators.

    ``family``: the :class:`corrflow.pipeline.Family` (one target, ``m -> m + dm``, with direct reweighting);
    ``measurements[set][observable]``: ``(chains, n[, T])`` arrays for the sets ``base`` (``U_i`` at ``m``),
    ``flowed`` (``f(U_i)`` at ``m + dm``), ``direct`` (``U_i`` at ``m + dm``) and ``independent`` (the ensemble at
    ``m + dm``); ``measurement_costs[set]``: their costs (ledger definition, ``tangent``: the tangent terms);
    ``tangent``: the tangent estimator's series on the base configurations
    (:class:`corrflow.pipeline.TangentMeasurement`, ``(chains, n, ...)``; two passes,
    :func:`corrflow.pipeline.measure_tangent`; ``None`` with ``tangent = False``) and ``tangent_field`` the field's
    description."""

    family: Any
    measurements: dict[str, dict[str, np.ndarray]]
    measurement_costs: dict[str, float]
    tangent: Any = None
    tangent_field: dict[str, Any] | None = None


def tangent_names(s: MassSettings) -> tuple[str, ...]:
    """The tangent estimator's observables: the scalar ones by their names and, for ``pion_mass``, every time slice
    ``pion@0 .. pion@{T-1}`` of the correlator."""
    names = [o for o in s.observables if o != "pion_mass"]
    if "pion_mass" in s.observables:
        names += [f"pion@{t}" for t in range(s.T)]
    return tuple(names)


def _theory(s: MassSettings) -> Any:
    import corrflow as cf
    from corrflow.pipeline import exact_theory

    return exact_theory(cf.make_theory(s.theory, s.shape, beta=s.beta, mass=s.mass, det=s.markov.hmc_det))


def tangent_field(s: MassSettings) -> Any:
    """The tangent field for ``d/dm`` (:func:`corrflow.tangent.make_field` ``auto``: the plaquette-space field of 2D
    U(1), keeping the topological charge when ``chi_top`` is among the observables)."""
    from corrflow import tangent as tg

    return tg.make_field("auto", _theory(s), param="mass", observables=tangent_names(s))


def prepare(pipe: Any, s: MassSettings) -> MassInputs:
    """Base ensemble at ``m``, flow ``m -> m + dm`` (trained on base configurations), flowed and direct paired
    ensembles, independent ensemble at ``m + dm`` (:func:`corrflow.pipeline.family`); then every observable on
    the four configuration sets, cached in ``<flow_dir>/measurements/`` as they are computed
    (:meth:`corrflow.pipeline.Pipeline.measure_batches`: an interrupted run continues where it stopped)."""
    import corrflow as cf
    from corrflow.pipeline import exact_theory, family, measure_tangent

    base = cf.make_theory(s.theory, s.shape, beta=s.beta, mass=s.mass, det=s.markov.hmc_det)
    target = base.replace(mass=s.mass + s.dm)
    fam = family(pipe, base, [target], ensemble=s.ensemble, markov=s.markov, flow=s.flow, training=s.training,
                 direct=True)
    member = fam.members[0]
    base_links = fam.base.links()
    sets = {"base": (base, base_links), "flowed": (target, member.flowed.links()), "direct": (target, base_links),
            "independent": (target, member.independent.links())}
    with_pion = "pion_mass" in s.observables
    meas: dict[str, dict[str, np.ndarray]] = {}
    costs: dict[str, float] = {}
    for name in SETS:
        th, links = sets[name]
        th = exact_theory(th)
        slope = with_pion and name == "base"  # dC/dm on the base configurations: the connected dm_pi/dm
        key = {"analysis": "mass_dependence", "theory": th.theory_name, "params": th.params(),
               "n_sources": s.n_sources, "pion": with_pion, **({"pion_slope": True} if slope else {})}
        meas[name], costs[name] = pipe.measure_batches(
            key, links, lambda flat, prog, resume, on_batch, th=th, slope=slope: measure(
                th, flat, n_sources=s.n_sources, with_pion=with_pion, with_slope=slope, batch=s.measure_batch,
                progress=prog, resume=resume, on_batch=on_batch),
            stage=f"measure {name}", outputs=measure_outputs(with_pion, slope))
    if not s.tangent:
        return MassInputs(fam, meas, costs)
    fld = tangent_field(s)
    seed = s.ensemble.seed + 3  # trace noise on large lattices: independent of the ensembles' seeds
    tkey = {"analysis": "mass_dependence", "estimator": "tangent", "theory": base.theory_name,
            "params": exact_theory(base).params(), "observables": list(tangent_names(s)), "n_sources": s.n_sources,
            "field": fld.describe(), "seed": seed}
    tan = measure_tangent(pipe, tkey, base_links, _theory(s), fld, "mass", tangent_names(s), seed=seed,
                          pion_sources=s.n_sources, batch=s.tangent_batch)
    costs["tangent"] = tan.cost
    return MassInputs(fam, meas, costs, tan, fld.describe())
