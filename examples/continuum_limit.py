"""Continuum limit of 2D U(1) from flow-correlated ensembles, through the Python API.

    python examples/continuum_limit.py          # ~1 minute on two CPU cores (a small 8 x 8 run)

The same analysis as ``corrflow analyse continuum-limit`` (see :mod:`analysis.continuum_limit.u1` for the physics and the
choices), here with small settings, followed by a look at the building blocks: the joint-jackknife
covariance of the flowed estimates and the fits of :mod:`corrflow.stats.fits`.
"""

from __future__ import annotations

import jax
import numpy as np
from rich.console import Console

from analysis.continuum_limit import ContinuumSettings, run
from corrflow.stats import bayesian_fit, correlated_fit, format_value_error

# 1. One call runs the whole workflow.  Every step goes through the store, so a second call with the same
#    settings reuses the ensembles and flows and only redoes the analysis.
settings = ContinuumSettings.make(       # flat names are routed to their group (settings.ensemble.n_configs, ...)
    store="data/example_continuum.zarr",  # created if absent
    out="reports/example_continuum",      # continuum_limit.png / .md / .json / .toml (the run file)
    L=8,                                  # 8 x 8 torus
    betas=(5.0, 5.3, 5.6, 5.9),           # the smallest beta is the base of the flows
    n_configs=500, n_chains=2,            # per ensemble: 2 chains x 500 stored configurations
    n_therm=100, n_train=200, epochs=6,   # thermalisation, training chain, flow training
    order=2,                              # quadratic in a^2 g^2 = 1/beta
    quantity="plaquette",                 # beta (1 - <P>) -> 1/2
)
record = run(settings, console=Console())

# 2. The record (also in the store: open_store(path).read_analysis("continuum_limit")).
res = record["results"]
for kind in ("flowed", "independent"):
    r = res[kind]
    print(f"{kind:12s} continuum value {format_value_error(r['continuum'], r['continuum_error'])}  "
          f"pull vs exact {r['pull']:+.2f}")
# record["variance_reduction"][quantity][estimator]: var(independent) / var(flowed), also at equal cost
print("variance reduction:", {k: round(v, 2) for k, v in record["variance_reduction"]["plaquette"]["flowed"].items()
                              if isinstance(v, float)})

# 3. The fits on plain arrays: x = 1/beta, flowed estimates with their full (jackknife) covariance.
x = np.array(res["x"])
y = np.array(res["flowed"]["values"])
cov = np.array(res["flowed"]["cov"])
print("correlation of the flowed estimates:\n", np.round(cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov))), 3))
lsq = correlated_fit(x, y, cov, order=2)                   # correlated chi^2 = r^T C^-1 r
print("least squares:", lsq)
values, errors = lsq.evaluate([0.0, 0.1])                  # the fit band at new x
print("band at x = 0, 0.1:", [format_value_error(v, e) for v, e in zip(values, errors)])
diag_only = correlated_fit(x, y, np.diag(np.diag(cov)), order=2)
print("ignoring the correlations would give", diag_only.format_param(0), "with chi2/dof",
      f"{diag_only.chi2:.2f}/{diag_only.dof}")
bayes = bayesian_fit(x, y, cov, order=2, key=jax.random.PRNGKey(0))  # numpyro NUTS, explicit key
print(bayes.summary)
