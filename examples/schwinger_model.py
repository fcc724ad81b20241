"""The Schwinger model (2D U(1) + two Wilson flavours): HMC, pion correlator, effective mass, condensate.

    python examples/schwinger_model.py          # about a minute on a laptop CPU

The same `make_theory` name works on the command line:
    corrflow generate schwinger --beta 2.0 --mass 0.1 --shape 16,8 --n 500 --store data/schwinger.zarr
"""

from __future__ import annotations

import jax
import numpy as np

import corrflow  # noqa: F401  (switches on float64)
from corrflow import HMCConfig, make_theory
from corrflow.generate import generate
from corrflow.observables.fermions import FermionMeasurements
from corrflow.stats import effective_mass
from corrflow.stats import gamma_method

# Theory: beta = 1/g^2, bare mass m (kappa = 1/(2m + 4)); det="exact" uses the dense determinant
# (small lattices), det="pseudofermion" one pseudofermion field with even-odd preconditioned CG.
theory = make_theory("schwinger", (16, 8), beta=2.0, mass=0.1, det="pseudofermion")
print(f"{theory.theory_name}: shape {theory.shape}, params {theory.params()}, kappa = {float(theory.kappa):.4f}")

# HMC with on-the-fly measurements: plaquette, pion correlator C(t) (2 point sources), condensate.
measure = FermionMeasurements(theory, n_sources=2, condensate=True)
out = generate(jax.random.PRNGKey(0), theory, HMCConfig(step_size=0.2, n_steps=5), n_chains=2, n_traj=300,
               n_therm=50, measure=measure, block_size=100)
print(f"acceptance {out['accepted'].mean():.3f}")
print("plaquette ", gamma_method(out["plaquette"]))
print("condensate", gamma_method(out["condensate"]), "(per flavour, (1/V) Re tr D^-1)")

# Pion: ensemble-mean correlator and its cosh effective mass; errors of m_eff(t) by the Gamma method
c = np.moveaxis(out["pion"], -1, 0)  # (L0, chains, n)
l0 = c.shape[0]
for t in range(1, l0 // 2 - 1):
    m = gamma_method(c[t:t + 2], lambda a, t=t: float(effective_mass(np.r_[np.zeros(t), a, np.zeros(l0 - t - 2)], "cosh_ratio")[t]))
    print(f"m_eff({t}) = {m}")
