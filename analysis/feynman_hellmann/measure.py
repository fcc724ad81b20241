"""Pion correlators and the source operator on every configuration set of the Feynman–Hellmann analysis, and its
pipeline steps (:func:`prepare`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .settings import FHSettings, theories

__all__ = ["FHInputs", "measure", "prepare"]

_MEASURE_CACHE: dict[int, Callable] = {}


def _measure_fn(n_sources: int) -> Callable:
    import jax

    from corrflow.observables.fermions import pion_correlator

    @jax.jit
    def fn(theory: Any, u: Any) -> tuple[Any, Any]:
        return pion_correlator(theory, u, n_sources), theory.source_operator(u)

    return fn


def measure(theory: Any, links: np.ndarray, *, n_sources: int = 2, batch: int = 64,
            progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pion correlators ``C(t)`` ``(n, T)`` and the source operator ``O`` ``(n,)`` of configurations ``links``
    ``(n, *link_shape)``, with ``theory``'s Dirac operator (a fermion theory: the sea quarks of the Schwinger
    model or valence quarks on a pure-gauge field).  Batches are padded to ``batch`` (one compiled program for
    every call; ``theory`` is traced, so base and target share it)."""
    from corrflow.pipeline import map_batches

    if n_sources not in _MEASURE_CACHE:
        _MEASURE_CACHE[n_sources] = _measure_fn(int(n_sources))
    fn = _MEASURE_CACHE[n_sources]
    out = map_batches(lambda u: fn(theory, u), links, batch=batch, progress=progress)
    return out["0"], out["1"]


@dataclass(frozen=True)
class FHInputs:
    """What :func:`prepare` hands to the estimators.

    ``family``: the :class:`corrflow.pipeline.Family` (targets ``lam`` and, symmetric, ``-lam``; with direct
    reweighting); ``correlators[set]`` ``(chains, n, T)`` and ``source[set]`` ``(chains, n)`` for the sets ``base``,
    ``flowed``, ``independent`` (and ``flowed_minus``, ``independent_minus``); ``measurement_costs``: their costs
    summed per kind (``base``, ``flowed``, ``independent``; ledger definition)."""

    family: Any
    correlators: dict[str, np.ndarray]
    source: dict[str, np.ndarray]
    measurement_costs: dict[str, float]


def prepare(pipe: Any, s: FHSettings) -> FHInputs:
    """Base ensemble at ``lambda = 0``, one flow per target (``lam``; symmetric also ``-lam``) trained on base
    configurations, flowed and direct paired ensembles, independent ensembles (:func:`corrflow.pipeline.family`);
    then the correlators and ``O`` on the base, flowed and independent configurations (the Dirac operator does not
    depend on ``lambda``, so one theory measures all of them), cached in ``<flow_dir>/measurements/``."""
    from corrflow.pipeline import family

    base, meas_theory = theories(s)
    fam = family(pipe, base, [base.replace(lam=lt) for lt in s.lam_targets], ensemble=s.ensemble, markov=s.markov,
                 flow=s.flow, training=s.training, direct=True)
    sets = [("base", "base", fam.base)]
    for i, m in enumerate(fam.members):
        sfx = "" if i == 0 else "_minus"
        sets += [("flowed" + sfx, "flowed", m.flowed), ("independent" + sfx, "independent", m.independent)]
    key = {"analysis": "feynman_hellmann", "theory": meas_theory.theory_name, "params": meas_theory.params(),
           "n_sources": s.n_sources}
    corr: dict[str, np.ndarray] = {}
    src: dict[str, np.ndarray] = {}
    costs = {"base": 0.0, "flowed": 0.0, "independent": 0.0}
    for name, kind, ens in sets:
        out, cost = pipe.measure_arrays(
            key, ens.links(), lambda flat, prog: dict(zip(("pion", "source"), measure(
                meas_theory, flat, n_sources=s.n_sources, batch=s.measure_batch, progress=prog))),
            stage=f"measure {name}")
        corr[name], src[name] = out["pion"], out["source"]
        costs[kind] += cost
    return FHInputs(fam, corr, src, costs)
