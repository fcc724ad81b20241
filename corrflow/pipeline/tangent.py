"""Tangent-flow derivatives of a stored ensemble (pure gauge or with Wilson fermions), with the fitted field kept as
a checkpoint.

``derivative_from_store`` reads every committed configuration of an ensemble (read-only: the store is never
written), evaluates the per-configuration terms of :mod:`corrflow.tangent`, fits the tangent field by cross-fitted
least squares -- or reuses the coefficients saved in the checkpoint directory when the ensemble content (spec and
committed count) and every fit setting match -- and returns the tangent and connected estimates.  The checkpoint is
pickle-free (:mod:`corrflow.store.checkpoints`): metadata JSON plus one ``coef`` array ``(n_folds, K)``.

The per-configuration terms (the cost: flows, forward-mode derivatives, fermion solves) are saved as they are computed
(:data:`corrflow.pipeline.resumable.SAVE_EVERY`) in the checkpoint's ``terms`` subdirectory (another atomic
checkpoint, :data:`TERMS_KIND`, keyed by the ensemble content, the field, the observables, the seed and the trace
settings): a run that is interrupted continues where it stopped when it is started again with the same settings, and a
repeated run reads the terms instead of computing them.  Terms saved under other settings are recomputed and
replaced; a damaged terms checkpoint is recomputed with a warning.

Cost: the terms and the fit are timed as the cost ledger defines costs (:mod:`corrflow.pipeline.ledger`: steady state,
compilation excluded; the seconds of resumed terms are kept in their checkpoint) and set against the ensemble's
generation cost per configuration as the ledger charges it (:func:`corrflow.pipeline.ensembles.recorded_cost`: the
commit record's ``cost_s`` plus the thermalisation at the production rate): ``StoredDerivative.cost_adjusted`` is the
variance reduction at equal cost, ``reduction * (g + c) / (g + t)`` (``c``: the observables alone, which the
connected estimator pays too; measured where they are expensive).

With ``compare`` the finite-shift estimators of the same derivative join the table: ensembles at ``α + δ`` already in
the store -- a flowed ensemble (``corrflow correlate --flow``: estimator ``flowed``), the identity flow (``--identity``:
``direct``) and an independent HMC ensemble (``independent``) -- give ``(<O>_{α+δ} − <O>_α) / δ`` by
:func:`corrflow.compare.compare_ensembles` (paired Gamma-method errors), an ``O(δ)``-biased estimate of the same
derivative.  Every estimator's variance reduction is quoted against the connected estimator on the base ensemble.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np

from ..compare import compare_ensembles, parameter_shift, stored_source
from ..console import ordinal
from .. import tangent as tg
from ..stats import Windowing
from ..stats.equilibration import EquilibrationCut
from ..store.checkpoints import has_checkpoint, hold_checkpoint_dir, read_checkpoint, write_checkpoint
from ..summary import thermalisation_cut
from .ensembles import recorded_cost_per_configuration
from .resumable import run_in_batches

__all__ = ["StoredDerivative", "DERIVATIVE_VR_DEFINITION", "derivative_from_store", "default_checkpoint_dir",
           "load_all_configs", "CHECKPOINT_KIND", "FINITE_SHIFT_ESTIMATORS", "finite_shift_plan",
           "finite_shift_estimates", "TERMS_KIND"]

CHECKPOINT_KIND = "corrflow-tangent-field"
#: what the numbers of ``corrflow derivative --json``'s ``variance_reduction`` mean (:meth:`StoredDerivative.as_dict`)
DERIVATIVE_VR_DEFINITION = (
    "VR vs connected = var(connected) / var(estimator) on the same configurations (Gamma-method errors squared); "
    "cost-adjusted VR vs connected = VR vs connected times (g + c) / (g + t), g the generation cost of a "
    "configuration, t the estimator's terms and fit per configuration, c the observables alone (which the connected "
    "estimator pays too)")
#: kind of the per-configuration terms checkpoint in ``<checkpoint>/terms``
TERMS_KIND = "corrflow-tangent-terms"

#: row labels of :func:`corrflow.compare.compare_ensembles` -> estimator names of the derivative table
FINITE_SHIFT_ESTIMATORS = {"flowed reweighting": "flowed", "direct reweighting": "direct",
                           "independent": "independent"}


@dataclass(frozen=True)
class StoredDerivative:
    """Result of :func:`derivative_from_store`: the estimates, the checkpoint directory, whether the saved field was
    reused, the number of configurations per chain used and the number discarded before them (``thermalisation``:
    the automatic cut that chose that number with ``discard=None``, else None); ``terms_resumed``:
    how many configurations' terms (of ``n_chains * n_traj``) were read from the checkpoint instead of computed (of
    the first pass, with ``contracted``); ``contracted``: the terms came in two passes (the field's terms, the fit,
    then ``v·∇O`` along the fitted field; ``contract=`` of :func:`derivative_from_store`)."""

    result: tg.DerivativeResult
    checkpoint: Path
    reused: bool
    n_chains: int
    n_traj: int
    shifts: dict[str, tuple[str, float]] = field(default_factory=dict)
    traces: dict[str, Any] = field(default_factory=dict)
    discard: int = 0
    thin: int = 1
    terms_resumed: int = 0
    cost: dict[str, float] = field(default_factory=dict)
    valence_mass: float | None = None
    contracted: bool = False
    thermalisation: EquilibrationCut | None = None
    tau_exp: float | None = None

    def cost_adjusted(self) -> dict[str, float]:
        """Variance reduction of the tangent estimator against the connected one at equal cost, per observable:
        ``reduction * (g + c) / (g + t)`` with ``g`` the generation cost of a configuration (the ledger's charge,
        thermalisation included; as used: times ``thin``), ``t`` the tangent terms and the fit per configuration
        (``cost``, seconds per configuration, compilation excluded) and ``c`` the observables alone, which the
        connected estimator pays too (``observables_s``: measured for pion correlators, the condensate and
        ``t2E@T``; 0 for loops, where it is negligible) -- the connected estimator could spend ``t - c`` on more
        configurations instead.  Empty when the ensemble's generation cost was not recorded (ensembles made before
        corrflow recorded it, imports)."""
        g = self.cost.get("generation_s", float("nan"))
        t = self.cost.get("terms_s", float("nan")) + self.cost.get("fit_s", 0.0)
        c = self.cost.get("observables_s", 0.0)
        if not (np.isfinite(g) and np.isfinite(t) and g > 0):
            return {}
        return {o: float(r * (g + c) / (g + t)) for o, r in self.result.reduction.items()}

    def as_dict(self) -> dict[str, Any]:
        """The JSON of ``corrflow derivative --json``: :meth:`DerivativeResult.as_dict` plus the run's facts;
        ``variance_reduction`` in the analyses' shape, ``{"definition": ..., OBS: {EST: {"vs_connected": r,
        "cost_adjusted_vs_connected": r_cost}}}`` (:func:`corrflow.pipeline.record.variance_reduction_entry`; at equal
        cost known for the tangent and the connected estimator, None for the finite-shift ones, whose ensembles'
        costs are not part of this run)."""
        from .record import variance_reduction_entry

        out = self.result.as_dict()
        adjusted = self.cost_adjusted()
        vr: dict[str, Any] = {"definition": DERIVATIVE_VR_DEFINITION}
        for o, per in out["variance_reduction"].items():  # {est: {"vs_connected": r}}, with the costs added
            cost = {"tangent": adjusted.get(o), "connected": 1.0 if adjusted else None}
            vr[o] = {k: variance_reduction_entry({"connected": (e["vs_connected"], cost.get(k))})
                     for k, e in per.items()}
        out.update(variance_reduction=vr, checkpoint=str(self.checkpoint), reused=self.reused,
                   n_chains=self.n_chains, n_traj=self.n_traj, discard=self.discard, thin=self.thin,
                   terms_resumed=self.terms_resumed, terms_passes=2 if self.contracted else 1,
                   cost_per_configuration={k: (float(v) if np.isfinite(v) else None) for k, v in self.cost.items()})
        if self.valence_mass is not None:
            out["valence_mass"] = float(self.valence_mass)
        if self.tau_exp is not None:  # errors with the exponential tail of a slow mode
            out["tau_exp"] = float(self.tau_exp)
        if self.thermalisation is not None:  # --discard auto
            out["thermalisation"] = asdict(self.thermalisation)
        traces = {k: v for k, v in self.traces.items() if k != "valence_mass"}
        if traces:
            out["traces"] = traces
        if self.shifts:
            out["finite_shift"] = {k: {"ensemble": n, "shift": d} for k, (n, d) in self.shifts.items()}
        return out


def finite_shift_plan(store: Any, base: str, compare: Sequence[str], param: str,
                      observables: Sequence[str]) -> dict[str, tuple[str, float]]:
    """``{estimator: (ensemble, shift)}`` for the comparison ensembles, validated before any computation.

    ``ValueError`` (one line) for an unknown ensemble, one that differs from ``base`` in another parameter (or in
    several), a flowed ensemble not made from ``base``, two ensembles of the same kind, or an observable that is not
    stored in one of them (with the ``corrflow measure`` command that adds it).
    """
    plan: dict[str, tuple[str, float]] = {}
    pion = [o for o in observables if o.startswith("pion@")]
    if compare and pion:
        raise ValueError(f"--compare: finite-shift estimators take stored scalar observables; {', '.join(pion)} "
                         "is a correlator time slice (drop it from --obs or leave out --compare)")
    known = set(store.ensembles())
    bspec = store.spec(base)
    for name in compare:
        if name not in known:
            raise ValueError(f"--compare: no ensemble {name!r} in the store; available: {', '.join(sorted(known))}")
        spec = store.spec(name)
        try:
            pname, shift = parameter_shift(bspec.params, spec.params)
        except ValueError:
            raise ValueError(f"--compare {name!r}: its parameters {spec.params} must differ from the base's "
                             f"{bspec.params} in {param} alone") from None
        if pname != param:
            raise ValueError(f"--compare {name!r} differs from {base!r} in {pname}, not in --param {param}")
        if spec.kind == "flowed":
            if spec.flow.get("source") != base:
                raise ValueError(f"--compare {name!r} is a flowed ensemble of {spec.flow.get('source')!r}, not of "
                                 f"{base!r}")
            est = "direct" if spec.flow.get("flow_id") == "identity" else "flowed"
        else:
            est = "independent"
        if est in plan:
            raise ValueError(f"--compare: {plan[est][0]!r} and {name!r} are both {est} estimators; give one of each "
                             "kind")
        for ens in (base, name):
            have = set(store.open_ensemble(ens).data_vars)
            missing = list(dict.fromkeys(stored_source(o) for o in observables if stored_source(o) not in have))
            if missing:
                raise ValueError(f"--compare needs {', '.join(missing)} stored in {ens!r}; add with `corrflow measure "
                                 f"{store.path} {ens} {' '.join(missing)}`")
        plan[est] = (name, float(shift))
    return plan


def finite_shift_estimates(store: Any, base: str, plan: dict[str, tuple[str, float]],
                           observables: Sequence[str], discard: int = 0, windowing: Any = None
                           ) -> dict[str, dict[str, Any]]:
    """``{obs: {estimator: Stats}}``: the finite-difference derivatives ``(<O>_{α+δ} − <O>_α) / δ`` of
    :func:`finite_shift_plan`'s ensembles (flowed and direct: paired reweighting; independent: difference of means),
    without the first ``discard`` trajectories of every chain; ``windowing`` as in :func:`compare_ensembles`."""
    if not plan:
        return {}
    rows = compare_ensembles(store, base, [n for n, _ in plan.values()], list(observables), discard=discard,
                             windowing=windowing)
    out: dict[str, dict[str, Any]] = {o: {} for o in observables}
    for r in rows:
        est = FINITE_SHIFT_ESTIMATORS.get(r.estimator)
        if est is not None and r.derivative is not None:
            out[r.observable][est] = r.derivative
    return out


def _settings(ensemble: str, spec_json: dict[str, Any], committed: int, param: str, field: Any, n_folds: int,
              held_out: float, seed: int) -> dict[str, Any]:
    content = hashlib.sha256(json.dumps(spec_json, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"kind": CHECKPOINT_KIND, "ensemble": ensemble, "spec_sha256": content, "committed": int(committed),
            "param": param, "field": field.describe(), "n_folds": int(n_folds), "held_out": float(held_out),
            "seed": int(seed)}


def default_checkpoint_dir(store_path: str | Path, settings: dict[str, Any]) -> Path:
    """``<store>_tangent/<ensemble>-<param>-<hash of the settings>`` next to the store."""
    p = Path(store_path)
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return p.parent / f"{p.name.split('.')[0]}_tangent" / f"{settings['ensemble']}-{settings['param']}-{h}"


def load_all_configs(store: Any, ensemble: str, discard: int = 0, thin: int = 1) -> np.ndarray:
    """Every ``thin``-th committed configuration after the first ``discard`` of each chain, ``(n_chains,
    ceil((n_committed - discard) / thin), *link_shape)``, read chain by chain as one slice (one read per chunk
    instead of one per configuration)."""
    n = int(store.commit(ensemble)["committed"])
    links = store.array(ensemble, "links")
    return np.stack([np.asarray(links[c, discard:n])[::thin] for c in range(store.spec(ensemble).n_chains)])


def derivative_from_store(store: Any, store_path: str | Path, ensemble: str, param: str, observables: Sequence[str],
                          *, field: str = "auto", field_options: dict[str, Any] | None = None, n_folds: int = 2,
                          held_out: float = 0.25, seed: int = 0, batch: int = 32, out: str | Path | None = None,
                          progress: Callable[[int, int], None] | None = None,
                          compare: Sequence[str] = (), traces: Any = None,
                          t0_reference: float | None = None, w0_reference: float | None = None,
                          discard: int | None = 0, thin: int = 1, target: str = "field",
                          valence_mass: float | None = None, pion_sources: int = 1,
                          contract: bool | None = None, second_order: bool = False,
                          tau_exp: float | None = None) -> StoredDerivative:
    """``d<O>/d param`` of every observable on stored ensemble ``ensemble`` (see the module docstring).

    ``compare``: ensembles at ``param + δ`` whose finite-shift derivatives join the estimates (module docstring).
    ``traces``: :class:`corrflow.tangent.FermionTraces` for ensembles with dynamical fermions (``mass`` derivatives and
    the fermion part of ``v·∇S``; default: exact on small lattices, stochastic otherwise).  ``t0_reference``: the
    ``t^2 E`` value that defines ``t0`` for the ``t0/a^2`` row, ``w0_reference`` the ``W`` value of ``w0`` (both 0.3 by
    default).  ``discard``: leading trajectories of every chain left out (thermalisation not done at generation), in
    the tangent and connected estimates and in the comparison ensembles alike; ``None``: the automatic cut
    (:func:`corrflow.summary.thermalisation_cut` of the stored plaquette and observables; ``thermalisation`` of the
    result).  ``thin``: use every ``thin``-th
    configuration after those for the tangent and connected estimates (their per-configuration terms are the cost;
    on chains with ``tau_int`` of several trajectories little information is lost).  ``target``: what the cross-fitted
    least squares minimises (:data:`corrflow.tangent.FIT_TARGETS`: ``Var[R_v]`` of one field, or ``Var[T_v]`` per
    observable).  ``valence_mass``: on a pure-gauge ensemble, the bare mass of quenched (valence) Wilson quarks for
    the fermionic observables ``pion@T`` and ``condensate`` (``R_v`` stays purely gluonic; a Feynman–Hellmann
    ``dE_π/dλ`` of the gluonic source in quenched QCD).  ``pion_sources``: ``pion@T`` averaged over this many point
    sources (one solve each; they must divide ``L_0``).  ``contract``: the two-pass evaluation
    (:mod:`corrflow.tangent.terms`: the field's terms, the fit, then ``v·∇O`` along the fitted field alone; the same
    estimates for less cost where observables sit behind solves or flows); default: where
    :func:`corrflow.tangent.contraction_pays`, for ``target="field"`` only.  Its two passes are checkpointed beside the
    full terms (``terms-field``, ``terms-contracted``), the second under the fitted coefficients.  ``second_order``:
    the tangent rows with their second-order control variate (:func:`corrflow.tangent.second_order_estimate`; two
    passes, the second also ``v·∇R_v`` at about five times the first's cost, checkpointed as
    ``terms-second-order``; pure-gauge ensembles, ``target="field"``).  ``tau_exp``: the exponential autocorrelation
    time of the chains' slowest mode, in stored trajectories: every error with its exponential tail
    (:class:`corrflow.stats.Windowing`; for the tangent rows in units of the ``thin``-th configurations used).

    Raises ``ValueError`` (one line, with a hint) for a flowed ensemble (its configurations are exact only with their
    weights), a parameter the theory lacks, an unknown observable, bad fit settings, too few configurations or
    unusable comparison ensembles -- all before anything is written.
    """
    spec = store.spec(ensemble)
    if spec.kind == "flowed":  # its configurations follow the base distribution pushed forward, not e^{-S}
        raise ValueError(f"{ensemble!r} is a flowed ensemble (the flow's image of {spec.flow.get('source')!r}, exact "
                         "only with its weights); take the derivative on an ensemble generated at the parameters, "
                         f"e.g. {spec.flow.get('source')!r}, and pass {ensemble!r} with --compare")
    theory = spec.make_theory()
    fermion = tg.is_fermion_theory(theory)
    if not 1 <= n_folds <= 10:
        raise ValueError(f"--folds must be between 1 and 10, got {n_folds}")
    windowing = Windowing.from_tau_exp(tau_exp or 0.0)
    if not 0 <= held_out < 1:
        count = " (a fraction here, not a count of configurations as in `corrflow train`)" if held_out >= 1 else ""
        raise ValueError(f"--held-out must be a fraction in [0, 1), got {held_out:g}{count}, e.g. 0.25")
    names = tuple(o.strip() for o in observables if o.strip())
    fld = tg.make_field(field, theory, param=param, observables=names, **dict(field_options or {}))
    if not names:
        raise ValueError("give observables with --obs, e.g. --obs plaquette,wilson_2x2")
    quarks = tg.valence_theory(theory, valence_mass)
    tg.observables_vector(names, theory.group, tuple(theory.shape), theory if fermion else quarks,
                          pion_sources=pion_sources)
    if quarks is not None and not any(o == "condensate" or o.startswith("pion@") for o in names):
        raise ValueError("--valence-mass gives quenched quarks to the fermionic observables (condensate, pion@T); "
                         f"--obs {','.join(names)} has none")
    tg.check_parameter(theory, param)
    tg.check_charge_observables(names, fld)
    tg.check_second_order(second_order, theory, fld, target)
    tr = (traces or tg.FermionTraces()) if fermion or quarks is not None else None
    total = int(store.commit(ensemble)["committed"])
    cut = None
    if discard is None:
        cut = thermalisation_cut(store, ensemble, names)
        discard = cut.n_discard
    if not 0 <= discard < total:
        raise ValueError(f"--discard must be in 0 .. {total - 1} ({ensemble!r} has {total} configurations per chain), "
                         f"got {discard}")
    if thin < 1:
        raise ValueError(f"--thin must be >= 1, got {thin}")
    committed = len(range(discard, total, thin))
    n_min = max(20, 4 * n_folds * (fld.n_coef + 1))
    small = committed * spec.n_chains < n_min or committed < 10
    shortfall = ""
    if fld.n_coef and not small:  # the fit's own size requirement, before the (expensive) per-configuration terms
        shortfall = tg.cross_fit_shortfall(spec.n_chains, committed, fld.n_coef, n_folds=n_folds, held_out=held_out)
        small = bool(shortfall)
    if small:
        kept = (f" ({discard} discarded)" if discard else "") + (f" (every {ordinal(thin)})" if thin > 1 else "")
        why = shortfall or f"need >= {n_min} in all and >= 10 per chain"
        fixes = ["import more files under another --name" if spec.kind == "imported"
                 else "generate more with `corrflow generate ... --resume` and a larger --n"]
        if discard:
            fixes.append(f"discard fewer than {discard}")
        if thin > 1:
            fixes.append(f"thin less than {thin}")
        if shortfall and n_folds > 1 and not tg.cross_fit_shortfall(spec.n_chains, committed, fld.n_coef, n_folds=1,
                                                                    held_out=held_out):
            fixes.append("use --folds 1 (no cross-fitting)")
        raise ValueError(f"{ensemble!r} has {committed} configurations per chain{kept} x {spec.n_chains} "
                         f"chain{'s' if spec.n_chains != 1 else ''}: too few for a held-out fit of {fld.n_coef} "
                         f"coefficients in {n_folds} fold{'s' if n_folds != 1 else ''} ({why}); " + " or ".join(fixes))
    plan = finite_shift_plan(store, ensemble, compare, param, names)
    settings = _settings(ensemble, spec.to_json(), total, param, fld, n_folds, held_out, seed)
    if discard:
        settings["discard"] = int(discard)
    if thin > 1:
        settings["thin"] = int(thin)
    if quarks is not None:  # (absent without valence quarks: older checkpoints keep their settings)
        settings["valence_mass"] = float(quarks.mass)
        if "condensate" in names:
            settings["traces"] = tr.describe(quarks)
    elif tr is not None:
        settings["traces"] = tr.describe(theory)
    if pion_sources != 1:  # (absent with one source: older checkpoints keep their settings)
        settings["pion_sources"] = int(pion_sources)
    if target not in tg.FIT_TARGETS:
        raise ValueError(f"--fit must be one of {', '.join(tg.FIT_TARGETS)}, got {target!r}")
    field_settings = dict(settings)
    if target != "field":  # older checkpoints (one field) keep their hash
        settings.update(target=target, observables=list(names))
    ckpt = Path(out) if out is not None else default_checkpoint_dir(store_path, settings)
    configs = load_all_configs(store, ensemble, discard, thin)
    # the terms do not depend on the fit target: by default they live with the field fit's checkpoint, so that
    # --fit observable after --fit field (or the other way round) reads them instead of computing them again
    terms_dir = (default_checkpoint_dir(store_path, field_settings) if out is None else ckpt) / "terms"
    terms_key = {k: v for k, v in settings.items() if k not in ("kind", "n_folds", "held_out", "target")}
    n_configs = int(configs.shape[0] * configs.shape[1])
    terms_key.update(kind=TERMS_KIND, observables=list(names), n_configs=n_configs)
    contract = tg.use_contraction(contract, target, names, fld, second_order)
    common = dict(batch=batch, traces=tr, valence_mass=None if quarks is None else float(quarks.mass))
    key = jax.random.PRNGKey(seed)
    fits: list[Any] = []
    # one run per checkpoint directory, held from the start (a second job is refused before computing anything)
    with hold_checkpoint_dir(ckpt, "tangent-field checkpoint directory"), \
            hold_checkpoint_dir(terms_dir.parent, "tangent-field checkpoint directory"):
        saved_meta, saved = _saved_fit(ckpt, settings) if fld.n_coef else ({}, None)
        reused = saved is not None
        if contract:  # two passes: the field's terms, the fit, then v.grad O along the fitted field only
            def run_pass(name: str, extra: dict[str, Any], outputs: tuple[str, ...], compute: Callable[..., Any]
                         ) -> tuple[Any, float, int]:
                pass_key = {"observables": [], "pass": "field"} if name == "field" else {"pass": "contracted"}
                return run_in_batches(terms_dir.with_name(f"terms-{name}"), {**terms_key, **pass_key, **extra}, outputs,
                                      lambda resume, save: compute(configs, progress, resume, save))

            tp = tg.two_pass(fld, theory, param, names, key, run_pass=run_pass, n_folds=n_folds, held_out=held_out,
                             saved_coef=saved, second_order=second_order, pion_sources=pion_sources, **common)
            if saved is None:
                _save_fits(ckpt, settings, tp.fits, names, target)
            fits, coef, fit_s, first = tp.fits, tp.coef, tp.fit_s, tp.resumed
            terms = tg.contracted_terms(tp.ds, tp.a, coef, tp.o, tp.dvo, tp.do if fermion else None, names, param,
                                        int(theory.shape[0]), tg.describe_traces(theory, names, tr, valence_mass),
                                        h=tp.h, dvh=tp.dvh)
            terms_total = tp.field_s + tp.derivatives_s
        else:
            terms, terms_total, first = run_in_batches(
                terms_dir, terms_key, tg.FLAT_TERMS,
                lambda resume, save: tg.compute_terms(fld, theory, param, names, configs, key, progress=progress,
                                                      resume=resume, on_batch=save, pion_sources=pion_sources,
                                                      **common))
            t_fit = time.perf_counter()
            if fld.n_coef == 0:
                coef = np.zeros(terms.a.shape)
            elif saved is not None:
                coef = tg.apply_fits(terms, np.asarray(saved))
            else:
                fits, coef = tg.fit_coefficients(terms, target, n_folds=n_folds, held_out=held_out)
                _save_fits(ckpt, settings, fits, names, target)
            fit_s = time.perf_counter() - t_fit
    # the ledger's charge per configuration (thermalisation included), times the analysis' thinning; NaN if unrecorded
    cost = {"generation_s": recorded_cost_per_configuration(store.info(ensemble)) * thin,
            "terms_s": terms_total / n_configs}
    if tg.costly_observables(names):  # what the connected estimator pays too
        sample = configs.reshape((n_configs,) + configs.shape[2:])[: min(batch, n_configs)]
        cost["observables_s"] = tg.observables_cost(theory, names, sample, traces=tr,
                                                    valence_mass=None if quarks is None else float(quarks.mass),
                                                    pion_sources=pion_sources)
    cost["fit_s"] = fit_s / n_configs
    refs = {k: float(v) for k, v in (("t0_reference", t0_reference), ("w0_reference", w0_reference)) if v is not None}
    # --tau-exp counts stored trajectories; the tangent rows see every thin-th of them
    refs["S"] = Windowing.from_tau_exp((tau_exp or 0.0) / thin)
    if contract:  # one basis field per configuration, the fitted one (tg.contracted_terms)
        res = replace(tg.estimate(terms, np.ones(1), fits, fld.describe(), n_folds=n_folds, **refs), coef=coef)
    else:
        res = tg.estimate(terms, coef, fits, fld.describe(), **refs)
    if reused and not (res.fits or res.observable_fits):
        res = replace(res, **_reused_fits(saved_meta, np.asarray(saved), names))
    shifted = finite_shift_estimates(store, ensemble, plan, names, discard, windowing)
    if shifted:
        res = replace(res, estimates={o: {**est, **shifted.get(o, {})} for o, est in res.estimates.items()})
    return StoredDerivative(result=res, checkpoint=ckpt, reused=reused, n_chains=int(spec.n_chains),
                            n_traj=int(committed), shifts=plan, traces=terms.traces, tau_exp=windowing.tau_exp,
                            discard=int(discard), thin=int(thin), terms_resumed=first, cost=cost, thermalisation=cut,
                            valence_mass=None if quarks is None else float(quarks.mass), contracted=contract)


def _saved_fit(ckpt: Path, settings: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray | None]:
    """``(meta, coef)`` of the fit saved in ``ckpt`` under the same ``settings`` (``({}, None)`` when there is none)."""
    if not has_checkpoint(ckpt):
        return {}, None
    meta, arrays = read_checkpoint(ckpt, "tangent-field checkpoint")
    if {k: meta.get(k) for k in settings} == settings and "coef" in arrays:
        return meta, np.asarray(arrays["coef"])
    return {}, None


def _reused_fits(meta: dict[str, Any], coef: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """The fit figures saved with reused coefficients (``_save_fits``), as the ``fits`` / ``observable_fits`` of a
    :class:`~corrflow.tangent.DerivativeResult` -- so a rerun reports the same ``Var[R_v]`` reduction as the run that
    fitted (it said "none"); ``{}`` for a checkpoint without them."""
    info = meta.get("fits")
    try:
        if isinstance(info, list):
            return {"fits": [tg.FieldFit(coef=c, **f) for c, f in zip(coef, info)]}
        if isinstance(info, dict):
            return {"observable_fits": {o: [tg.FieldFit(coef=c, **f) for c, f in zip(coef[i], info[o])]
                                        for i, o in enumerate(names) if o in info}}
    except (TypeError, IndexError):  # written by another version: the figures are not shown, nothing else changes
        pass
    return {}


def _save_fits(ckpt: Path, settings: dict[str, Any], fits: list[Any], names: Sequence[str], target: str) -> None:
    """Write the fitted coefficients and each fold's fit figures to the field checkpoint ``ckpt``."""
    def info(f: tg.FieldFit) -> dict[str, Any]:
        return {"ridge": f.ridge, "n_basis": f.n_basis, "var_r0": f.var_r0, "var_r": f.var_r,
                "held_out_var": f.held_out_var, "condition": f.condition, "regularised": f.regularised}

    meta = dict(settings)
    if target == "field":
        meta["fits"] = [info(f) for f in fits]
        saved_coef = np.stack([f.coef for f in fits])  # (n_folds, K)
    else:
        meta["fits"] = {o: [info(f) for f in fs] for o, fs in zip(names, fits)}
        saved_coef = np.stack([[f.coef for f in fs] for fs in fits])  # (n_obs, n_folds, K)
    write_checkpoint(ckpt, meta, {"coef": saved_coef})
