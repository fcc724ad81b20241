"""Analyses built on corrflow (``python -m analysis.<name> --help``).

* :mod:`analysis.continuum_limit` -- 2D U(1): flow-correlated ensembles at several beta from one HMC base
  ensemble, joint-jackknife covariance, correlated chi^2 and Bayesian continuum extrapolation in a^2 g^2,
  against independent ensembles and the exact continuum value.
* :mod:`analysis.mass_dependence`, :mod:`analysis.feynman_hellmann` -- see their module docstrings.

Each analysis exposes ``run(settings) -> record``, records its result in its store
(``EnsembleStore.write_analysis``) and is resumable through the store.  ``analysis`` imports ``corrflow``;
``corrflow`` never imports ``analysis``.
"""
