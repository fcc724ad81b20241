"""Side-by-side estimators of how observables change between a base ensemble and parameter ``a'``.

For each observable ``O`` and each comparison ensemble:

* a *flowed* ensemble (kind ``flowed``, from ``corrflow correlate``; the identity flow gives direct
  reweighting): the correlated difference ``<O>_{a'} - <O>_a`` on the paired samples, the reweighted
  ``<O>_{a'}``, the derivative (difference / shift), the weight ESS; and the exact flowed Metropolis chain;
* an *independent* HMC ensemble at ``a'``: the difference of independent means (the baseline).

Errors: Gamma method over paired samples, chains as replicas.  ``variance_reduction`` of a row is
``(error of the independent difference / error of this row)^2`` when an independent ensemble is given.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from .stats import (Stats, Windowing, correlated_difference, gamma_method, independent_difference, reweighted_mean,
                    weight_ess_fraction)
from .stats.equilibration import check_kept
from .store.spec import FLOWED_FIELDS, PER_TRAJ_BASE

__all__ = ["DERIVED_OBSERVABLES", "ComparisonRow", "compare_ensembles", "parameter_shift", "stored_source"]

#: observables computed from a stored series: ``name -> (stored series, function(values, volume))``; ``chi_top`` is
#: ``Q^2 / V`` per configuration, as in ``corrflow summary``
DERIVED_OBSERVABLES = {"chi_top": ("topological_charge", lambda q, volume: q**2 / volume)}


def stored_source(obs: str) -> str:
    """The stored series ``obs`` is computed from (itself unless it is one of :data:`DERIVED_OBSERVABLES`): what
    ``corrflow measure`` adds for it."""
    return DERIVED_OBSERVABLES[obs][0] if obs in DERIVED_OBSERVABLES else obs


class ComparisonRow(NamedTuple):
    observable: str
    estimator: str  # "flowed reweighting", "flowed chain", "direct reweighting", "independent"
    ensemble: str
    value_at_target: Stats | None  # <O>_{a'}
    difference: Stats  # <O>_{a'} - <O>_a
    derivative: Stats | None  # difference / shift
    weight_ess: float | None
    variance_reduction: float | None


def changed_parameters(base_params: dict[str, float], target_params: dict[str, float]) -> dict[str, float]:
    """``{name: a' - a}`` for the action parameters of ``target_params`` that differ from ``base_params`` (in the
    target's order; a parameter the base does not name counts as 0 there)."""
    return {k: target_params[k] - base_params.get(k, 0.0) for k in target_params
            if target_params[k] != base_params.get(k)}


def parameter_shift(base_params: dict[str, float], target_params: dict[str, float],
                    names: tuple[str, str] | None = None) -> tuple[str, float]:
    """The one action parameter that differs, and by how much; a one-line ValueError if none or several differ
    (naming the ensembles ``names = (base, other)`` when given)."""
    diff = changed_parameters(base_params, target_params)
    if len(diff) != 1:
        what = f"{names[1]!r} and the base {names[0]!r}" if names else "the ensemble and the base"
        if not diff:
            raise ValueError(f"{what} have the same parameters {base_params}: there is no shift to take a difference "
                             "or derivative over; compare ensembles at shifted parameters")
        raise ValueError(f"{what} differ in {' and '.join(diff)} ({base_params} -> {target_params}): differences "
                         "and derivatives need ensembles shifted in one parameter")
    (k, v), = diff.items()
    return k, v


def _scaled(s: Stats, factor: float) -> Stats:
    from dataclasses import replace

    return replace(s, value=s.value * factor, error=s.error * abs(factor))


def _after(x: np.ndarray, discard: int, name: str) -> np.ndarray:
    """``x[:, discard:]`` (per-chain series ``(n_chains, n_traj)``), or a one-line ``ValueError`` if fewer than 10
    trajectories per chain are left (the fewest an error needs), saying how many may be discarded."""
    check_kept(x.shape[1], discard, name)
    return x[:, discard:]


def compare_ensembles(store: Any, base: str, others: Sequence[str], observables: Sequence[str] = ("plaquette",),
                      *, discard: int = 0, windowing: Windowing | None = None) -> list[ComparisonRow]:
    """Rows for every observable and every ensemble in ``others`` (flowed or independent).

    ``base`` must be an HMC (or imported) ensemble: a flowed ensemble is correlated with its own source,
    so using it as the base would treat paired samples as independent (wrong errors).  ``discard``: leading
    trajectories of every chain left out (thermalisation), the same trajectories in a flowed ensemble and its source
    so that the pairing is kept.  ``windowing``: the Gamma method's (default Wolff's window; a
    :class:`~corrflow.stats.Windowing` with ``tau_exp`` adds the exponential tail of a slow mode)."""
    S = Windowing() if windowing is None else windowing
    if discard < 0:
        raise ValueError(f"discard must be >= 0, got {discard}")
    bspec = store.spec(base)
    if bspec.kind == "flowed":
        raise ValueError(f"--base {base!r} is a flowed ensemble (paired with {bspec.flow.get('source')!r}); the base "
                         "must be the HMC or imported ensemble the flowed ensembles were made from, because a flowed "
                         "ensemble is correlated with its source and would be treated as independent")
    bds = store.open_ensemble(base)
    rows: list[ComparisonRow] = []
    indep_err: dict[str, float] = {}
    plan = []
    for name in others:
        spec = store.spec(name)
        if spec.shape != bspec.shape or spec.group != bspec.group:
            raise ValueError(f"{name!r} ({spec.group} {spec.shape}) does not match base {base!r} "
                             f"({bspec.group} {bspec.shape})")
        if spec.kind == "flowed" and spec.flow.get("source") != base:
            raise ValueError(f"flowed ensemble {name!r} pairs with {spec.flow.get('source')!r}, not with {base!r}")
        plan.append((name, spec, parameter_shift(bspec.params, spec.params, (base, name))))
    datasets = {name: store.open_ensemble(name) for name, _, _ in plan}

    def values(ds: Any, name: str, obs: str) -> np.ndarray:
        """``(chain, traj)`` values of ``obs`` in ensemble ``name``, or a one-line error saying how to add them."""
        if obs in DERIVED_OBSERVABLES and obs not in ds and stored_source(obs) in ds:
            source, func = DERIVED_OBSERVABLES[obs]
            return func(values(ds, name, source), int(np.prod(store.spec(name).shape)))
        obs = stored_source(obs)
        if obs not in ds:
            stored = sorted(v for v in ds.data_vars if ds[v].dims == ("chain", "traj")
                            and v not in (*PER_TRAJ_BASE, *FLOWED_FIELDS))
            from .generate import measurements_from_names
            from .groups import get_group

            spec = store.spec(name)
            try:  # a name `corrflow measure` knows: say how to add it; otherwise say why it cannot be
                measurements_from_names(get_group(spec.group), [obs], len(spec.shape), shape=spec.shape)
            except ValueError as exc:
                raise ValueError(f"observable {obs!r} is not stored in {name!r} (stored: {', '.join(stored) or 'none'})"
                                 f" and cannot be measured there: {exc}") from None
            raise ValueError(f"observable {obs!r} is not stored in {name!r} (stored: {', '.join(stored) or 'none'}); "
                             f"add it with `corrflow measure {getattr(store, 'path', 'STORE')} {name} {obs}`")
        x = np.asarray(ds[obs].values, float)
        done = int(np.isfinite(x).all(axis=0).sum())
        if done < x.shape[1]:  # measured before the ensemble was extended
            raise ValueError(f"observable {obs!r} of {name!r} is measured on {done} of {x.shape[1]} trajectories per "
                             f"chain; `corrflow measure {getattr(store, 'path', 'STORE')} {name} {obs}` completes it")
        return x

    for obs in observables:
        ob = values(bds, base, obs)
        vals = {name: values(datasets[name], name, obs) for name in datasets}  # all of them before any row
        ob_kept = _after(ob, discard, base)
        for name, spec, (_, shift) in plan:  # independent first so variance reductions can refer to it
            if spec.kind == "flowed":
                continue
            oi = _after(vals[name], discard, name)
            res = independent_difference(oi, ob_kept, S=S)
            indep_err[obs] = res.error
            rows.append(ComparisonRow(obs, "independent", name, gamma_method(oi, S=S),
                                      res.stats, _scaled(res.stats, 1 / shift), None, None))
        for name, spec, (_, shift) in plan:
            if spec.kind != "flowed":
                continue
            ds, of = datasets[name], vals[name]
            lw = np.asarray(ds["log_weight"].values, float)
            if not np.array_equal(np.asarray(ds["source_traj"].values)[0], np.asarray(bds.traj.values)[: of.shape[1]]):
                raise ValueError(f"{name!r} is not paired trajectory by trajectory with {base!r}")
            of_all, of, lw = of, _after(of, discard, name), lw[:, discard:]
            obn = ob[:, discard: of_all.shape[1]]
            diff = correlated_difference(obn, of, lw, S=S)
            label = "direct reweighting" if spec.flow.get("flow_id") == "identity" else "flowed reweighting"
            vr = (indep_err[obs] / diff.error) ** 2 if obs in indep_err and diff.error > 0 else None
            rows.append(ComparisonRow(obs, label, name, reweighted_mean(of, lw, S=S).stats, diff.stats,
                                      _scaled(diff.stats, 1 / shift), weight_ess_fraction(lw), vr))
            if label == "flowed reweighting":
                acc = np.asarray(ds["accepted"].values, bool)
                idx = np.maximum.accumulate(np.where(acc, np.arange(acc.shape[1])[None, :], 0), axis=1)
                chain_vals = np.take_along_axis(of_all, idx, axis=1)[:, discard:]  # the chain runs from the start
                at = gamma_method(chain_vals, S=S)
                d = independent_difference(chain_vals, obn, S=S)  # conservative: ignores the positive correlation
                rows.append(ComparisonRow(obs, "flowed chain", name, at, d.stats, _scaled(d.stats, 1 / shift), None,
                                          (indep_err[obs] / d.error) ** 2 if obs in indep_err else None))
    return rows
