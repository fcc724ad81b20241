"""Pion correlators and the source operator on every configuration set of the Feynman–Hellmann analysis, the
per-configuration terms of the tangent-flow estimator on the base ensemble, and the pipeline steps
(:func:`prepare`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .settings import FHSettings, theories

__all__ = ["FHInputs", "measure", "prepare", "tangent_field", "tangent_names"]

_MEASURE_CACHE: dict[int, Callable] = {}
#: the propagator solver (:func:`corrflow.observables.fermions.propagator`): BiCGStab polished by CG, 2.4x faster
#: than CG on the normal equations for quenched SU(3) 8x4^3 at m = 0.5, the same correlator to the CG tolerance
SOLVER = "bicgstab+cg"
#: the names of :func:`measure`'s two results (its cache entries and checkpoints)
OUTPUTS = ("pion", "source")


def _measure_fn(n_sources: int) -> Callable:
    import jax

    from corrflow.observables.fermions import pion_correlator

    @jax.jit
    def fn(theory: Any, u: Any) -> tuple[Any, Any]:
        return pion_correlator(theory, u, n_sources, SOLVER), theory.source_operator(u)

    return fn


def measure(theory: Any, links: np.ndarray, *, n_sources: int = 2, batch: int = 64,
            progress: Callable[[int, int], None] | None = None, resume: Any = (),
            on_batch: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Pion correlators ``C(t)`` ``(n, T)`` and the source operator ``O`` ``(n,)`` of configurations ``links``
    ``(n, *link_shape)``, with ``theory``'s Dirac operator (a fermion theory: the sea quarks of the Schwinger
    model or valence quarks on a pure-gauge field).  Batches are padded to ``batch`` (one compiled program for
    every call; ``theory`` is traced, so base and target share it).  ``resume`` / ``on_batch``: resumption after an
    interruption (:func:`corrflow.pipeline.map_batches`, outputs :data:`OUTPUTS`)."""
    from corrflow.pipeline import map_batches

    if n_sources not in _MEASURE_CACHE:
        _MEASURE_CACHE[n_sources] = _measure_fn(int(n_sources))
    fn = _MEASURE_CACHE[n_sources]
    out = map_batches(lambda u: dict(zip(OUTPUTS, fn(theory, u))), links, batch=batch, progress=progress,
                      resume=resume, on_batch=on_batch, outputs=OUTPUTS)
    return out["pion"], out["source"]


@dataclass(frozen=True)
class FHInputs:
    """What :func:`prepare` hands to the estimators.

    ``family``: the :class:`corrflow.pipeline.Family` (targets ``lam`` and, symmetric, ``-lam``; with direct
    reweighting); ``correlators[set]`` ``(chains, n, T)`` and ``source[set]`` ``(chains, n)`` for the sets ``base``,
    ``flowed``, ``independent`` (and ``flowed_minus``, ``independent_minus``); ``measurement_costs``: their costs
    summed per kind (``base``, ``flowed``, ``independent``, ``tangent``; ledger definition); ``tangent``: the
    tangent estimator's series on the base configurations (:class:`corrflow.pipeline.TangentMeasurement`, two passes:
    :func:`corrflow.pipeline.measure_tangent`; ``None`` with ``tangent = False``) and
    ``tangent_field`` the field's description."""

    family: Any
    correlators: dict[str, np.ndarray]
    source: dict[str, np.ndarray]
    measurement_costs: dict[str, float]
    tangent: Any = None
    tangent_field: dict[str, Any] | None = None


def tangent_names(time_extent: int) -> tuple[str, ...]:
    """The observables of the tangent terms: every time slice ``pion@0 .. pion@{T-1}`` (folded afterwards)."""
    return tuple(f"pion@{t}" for t in range(time_extent))


def tangent_field(s: FHSettings) -> Any:
    """The tangent field of ``s.tangent_field`` for the source ``lam`` of the base theory
    (:func:`corrflow.tangent.make_field`)."""
    from corrflow import tangent as tg

    base, _ = theories(s)
    return tg.make_field(s.tangent_field, base, param="lam", observables=tangent_names(s.T))


def _tangent_args(s: FHSettings) -> tuple[Any, dict[str, Any]]:
    """The theory of the tangent terms and the keywords of both passes: Schwinger model -- the sea quarks (their
    determinant enters ``v_k.grad S``); SU(3) -- valence quarks, ``R_v`` purely gluonic."""
    base, meas = theories(s)
    if s.theory == "schwinger":
        return meas, {"batch": s.tangent_batch}
    return base, {"batch": s.tangent_batch, "valence_mass": float(s.mass)}


def prepare(pipe: Any, s: FHSettings) -> FHInputs:
    """Base ensemble at ``lambda = 0``, one flow per target (``lam``; symmetric also ``-lam``) trained on base
    configurations, flowed and direct paired ensembles, independent ensembles (:func:`corrflow.pipeline.family`);
    then the correlators and ``O`` on the base, flowed and independent configurations (the Dirac operator does not
    depend on ``lambda``, so one theory measures all of them) and the tangent terms on the base configurations,
    cached in ``<flow_dir>/measurements/``."""
    from corrflow.pipeline import family, measure_tangent

    base, meas_theory = theories(s)
    fld = None
    if s.tangent:
        fld = tangent_field(s)  # (its size for the cross-fit is checked with the settings)
    fam = family(pipe, base, [base.replace(lam=lt) for lt in s.lam_targets], ensemble=s.ensemble, markov=s.markov,
                 flow=s.flow, training=s.training, direct=True)
    sets = [("base", "base", fam.base)]
    for i, m in enumerate(fam.members):
        sfx = "" if i == 0 else "_minus"
        sets += [("flowed" + sfx, "flowed", m.flowed), ("independent" + sfx, "independent", m.independent)]
    key = {"analysis": "feynman_hellmann", "theory": meas_theory.theory_name, "params": meas_theory.params(),
           "n_sources": s.n_sources, "solver": SOLVER}
    corr: dict[str, np.ndarray] = {}
    src: dict[str, np.ndarray] = {}
    costs = {"base": 0.0, "flowed": 0.0, "independent": 0.0}
    for name, kind, ens in sets:
        out, cost = pipe.measure_batches(
            key, ens.links(), lambda flat, prog, resume, on_batch: dict(zip(OUTPUTS, measure(
                meas_theory, flat, n_sources=s.n_sources, batch=s.measure_batch, progress=prog, resume=resume,
                on_batch=on_batch))),
            stage=f"measure {name}", outputs=OUTPUTS)
        corr[name], src[name] = out["pion"], out["source"]
        costs[kind] += cost
    if fld is None:
        return FHInputs(fam, corr, src, costs)
    seed = s.ensemble.seed + 3  # the Hutchinson probes (and trace noise): independent of the ensembles' seeds
    tkey = {**key, "estimator": "tangent", "field": fld.describe(), "seed": seed}
    theory, kw = _tangent_args(s)
    tan = measure_tangent(pipe, tkey, fam.base.links(), theory, fld, "lam", tangent_names(s.T), seed=seed,
                          pion_sources=s.n_sources, **kw)
    costs["tangent"] = tan.cost
    return FHInputs(fam, corr, src, costs, tan, fld.describe())
