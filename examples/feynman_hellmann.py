"""Feynman–Hellmann in the Schwinger model through the Python API (a few minutes on 2 cores).

    .venv/bin/python examples/feynman_hellmann.py

The source ``S -> S + lam O`` with ``O = -sum_x cos P(x)`` (``theory.source_operator``) shifts the pion energy
by ``lam * dE/dlam``, and ``dE/dlam = <pi|O_t|pi> - <0|O_t|0>`` (``O_t``: the operator on one time slice).
Part 1 runs the whole analysis with small settings (``analysis.feynman_hellmann.run``, the same as
``python -m analysis.feynman_hellmann --n-configs 200 --n-train 128``).  Part 2 does the steps by hand, to show
the pieces: the pipeline (:class:`corrflow.pipeline.Pipeline` and :func:`corrflow.pipeline.family`: HMC ensembles,
flow 0 -> lam, paired ensembles), the correlator measurements and the estimators of :mod:`corrflow.stats` on
plain arrays.
"""

from __future__ import annotations

import corrflow as cf
from analysis import feynman_hellmann as fh
from corrflow.pipeline import Pipeline, family
from corrflow.stats import connected_curve, flowed_curve, independent_curve, plateau_fit, pull

STORE = "data/example_feynman_hellmann.zarr"  # created on first use; a rerun reuses everything in it

# ---- 1. the whole analysis -------------------------------------------------------------------------
settings = fh.FHSettings.make(store=STORE, out="reports/example_feynman_hellmann", T=16, L=4, beta=2.0, mass=0.1,
                              lam=0.2, n_configs=200, n_chains=2, n_therm=100, epochs=15, n_train=128,
                              batch_size=64, learning_rate=0.02, sweeps=2)
record = fh.run(settings)
for line in record["summary"]:
    print(line)
# record["estimates"]["flowed"] -> {"value", "error", "chi2", "dof", "p_value", ...}
# record["variance_reduction"]["dE_dlambda"]["flowed"]["vs_independent"], ...["tangent"]["cost_adjusted_vs_connected"]
# (var(reference) / var(estimator); record["variance_reduction"]["definition"] says it in words)

# ---- 2. by hand ------------------------------------------------------------------------------------
base = cf.make_theory("schwinger", (16, 4), beta=2.0, mass=0.1, det="exact")  # lam = 0
target = base.replace(lam=0.2)                                                 # S + 0.2 O

# Base ensemble, flow 0 -> lam, flowed and direct-reweighting ensembles, independent ensemble at lam.  With the
# settings groups of part 1 everything is already in the store, so this only reads it back.
pipe = Pipeline(STORE)
fam = family(pipe, base, [target], ensemble=settings.ensemble, markov=settings.markov, flow=settings.flow,
             training=settings.training, direct=True)
member = fam.members[0]
print("weight ESS fraction:", member.flowed.weight_ess_fraction())


def correlators(ensemble):
    """Pion correlators C(t) (2 point sources) and O of an ensemble, as (chains, n, T) and (chains, n) arrays.  The
    Dirac operator does not depend on lam, so one theory measures every ensemble."""
    links = ensemble.links()
    c, o = fh.measure(base, links.reshape((-1,) + links.shape[2:]), n_sources=2)
    return c.reshape(links.shape[:2] + c.shape[1:]), o.reshape(links.shape[:2])


c_base, o_base = correlators(fam.base)
c_flow, _ = correlators(member.flowed)
c_ind, _ = correlators(member.independent)

# Chains are replicas (Monte Carlo order along n).  Bins of 10 configurations.
curves = {
    # [m_eff(<w C(f(U))>/<w>) - m_eff(<C(U)>)] / lam on the same U_i (ratios redone in every jackknife sample)
    "flowed": flowed_curve(c_base, c_flow, member.flowed.log_weights(), 0.2, bin_size=10),
    # d m_eff / dlam at lam = 0 from -(<C O> - <C><O>): no flow, no second ensemble
    "connected": connected_curve(c_base, o_base, bin_size=10),
    # independent ensembles at lam and 0: no correlation, errors add
    "independent": independent_curve(c_base, c_ind, 0.2, bin_size_a=10, bin_size_b=10),
}
# constant fit to the cosh effective dE/dlam(t) at t = 4..8: 1/sigma^2 weights, jackknife error, correlated chi2
plats = {k: plateau_fit(cv, 4, 8) for k, cv in curves.items()}
for name, p in plats.items():
    print(f"{name:12s} dE/dlam = {p}   chi2/dof = {p.chi2:.1f}/{p.dof}")
print(f"flowed - connected: {pull(plats['flowed'], plats['connected']):+.2f} sigma (correlation included)")
