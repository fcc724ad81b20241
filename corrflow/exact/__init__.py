r"""Exact reference values for two-dimensional lattice gauge theory on a periodic torus.

Pure numpy/scipy (no JAX).  Every function works on a periodic ``L0 x L1`` lattice with
``V = L0 * L1`` plaquettes, passed as ``shape = (L0, L1)``.  In two dimensions the plaquettes of
a torus are independent apart from one global constraint, so the partition function reduces
to a one-dimensional sum over characters (a "character expansion"), which is evaluated here to
double precision.  Use these values as oracles for Monte Carlo / flow samplers.

Conventions
-----------
U(1)
    Links ``U = exp(i theta)``, Haar measure ``d theta / (2 pi)`` per link (so ``Z(beta=0) = 1``),
    Wilson action ``S = -beta * sum_p cos(P_p)`` with ``P_p`` the plaquette angle.  The plaquette
    observable is ``<cos P>``.  On the torus

    .. math:: Z(\beta) = \sum_{n\in\mathbb Z} I_n(\beta)^V .

    Derivatives use ``I_n' = (I_{n-1} + I_{n+1}) / 2`` and
    ``I_n'' = (I_{n-2} + 2 I_n + I_{n+2}) / 4``.

SU(N)
    ``S = -(beta / N) * sum_p Re tr U_p``; plaquette observable ``<(1/N) Re tr U_p>``.  With the
    one-plaquette character expansion ``exp((beta/N) Re tr U) = sum_r c_r chi_r(U)``,
    ``c_r = d_r a_r``, the torus partition function is ``Z = sum_r a_r^V``.  For the irrep with
    highest weight ``lambda = (lambda_1 >= ... >= lambda_{N-1} >= lambda_N = 0)``

    .. math:: c_\lambda(\beta) = \sum_{q\in\mathbb Z}
              \det\big[I_{\lambda_j - j + i + q}(\beta/N)\big]_{i,j=1..N},
       \qquad d_\lambda = \prod_{i<j} \frac{\lambda_i - \lambda_j + j - i}{j - i}.

Geometric topological charge (U(1))
    ``Q = (1/2pi) sum_p wrap(P_p)`` with ``wrap`` into ``(-pi, pi]`` (which end of the interval is
    closed is a measure-zero choice and does not affect any value here); ``Q`` is an integer on
    a torus and ``|Q| < V/2``.  ``chi_top = <Q^2> / V``.  With the theta term ``exp(i theta Q)``

    .. math:: Z(\theta) = \sum_Q e^{i\theta Q} Z_Q = \sum_{n\in\mathbb Z} F_{n+\theta/2\pi}(\beta)^V,
       \qquad F_\nu(\beta) = \frac1\pi\int_0^\pi e^{\beta\cos\phi}\cos(\nu\phi)\,d\phi ,

    which is *not* the modified Bessel function ``I_nu`` for non-integer ``nu`` (it coincides with
    ``I_n`` at integers).  Derivation: write each plaquette angle as ``x_p = wrap(P_p)``; then
    ``sum_p x_p = 2 pi Q`` exactly, the periodic delta function of the torus constraint is
    ``sum_n exp(i n sum_p x_p)`` and ``exp(i theta Q) = exp(i theta sum_p x_p / 2pi)``, so the
    integral factorises over plaquettes into ``F_{n + theta/2pi}``.  Expanding
    ``exp(beta cos phi) = sum_k eps_k I_k(beta) cos(k phi)`` (``eps_0 = 1``, ``eps_k = 2``) gives the
    exact, rapidly convergent representation used here,

    .. math:: F_\nu(\beta) = \sum_{k\ge 0} \epsilon_k I_k(\beta)\,
              \tfrac12\big[\mathrm{sinc}(\nu-k) + \mathrm{sinc}(\nu+k)\big],
              \qquad \mathrm{sinc}(x) = \frac{\sin \pi x}{\pi x}.

    ``<Q^2> = -Z''(0)/Z(0)`` (with ``d/dtheta = (1/2pi) d/dnu``) and
    ``Z_Q = int dnu cos(2 pi nu Q) F_nu^V = (1/V) sum_{j=0}^{V-1} cos(2 pi j Q / V) Z(2 pi j / V)``;
    the last (exact) form holds because ``Z(theta)`` is a trigonometric polynomial of degree
    below ``V/2``.

    (:func:`corrflow.observables.gauge.topological_charge` wraps into ``[-pi, pi)``; the two
    conventions differ only on a set of measure zero.)

Infinite-volume limits
    The trivial sector / irrep dominates as ``V -> infinity``: ``<cos P> -> I_1/I_0`` (U(1)),
    ``<(1/N) Re tr U> -> d log c_0 / d beta`` (SU(N); ``I_2(beta)/I_1(beta)`` for SU(2)) and
    ``chi_top -> <phi^2>/(4 pi^2)`` in the single-plaquette measure ``exp(beta cos phi)``, with
    ``4 pi^2 beta chi_top = 1 + 1/(2 beta) + O(beta^-2)``.

Numerics
--------
All Bessel functions are exponentially scaled (:func:`scipy.special.ive`) and sums are taken
relative to their largest term (the trivial sector), so nothing overflows for ``V`` up to
(at least) ``128 * 128`` and ``beta`` up to (at least) 20.  Infinite sums are truncated
adaptively once the terms fall below ``1e-18`` of the leading one.  ``beta = 0`` is allowed.
``F_nu`` and its ``nu``-derivatives come from the exact sinc series above (checked against
direct quadrature in the tests) rather than from numerical quadrature.  Typical accuracy is
1e-13 relative or better; quantities built from ``F_nu^V`` (the charge distribution) carry an
extra round-off factor ~``V`` (absolute accuracy ~1e-14 for ``V = 128 * 128``).  The cost grows
with ``beta`` (number of Bessel orders ~ ``beta``) and, for SU(N), like ``lambda_max^(N-1)`` times
the number of ``q`` terms; SU(4) at ``beta = 20`` on a ``1 x 1`` torus takes a few seconds.

Examples
--------
>>> from corrflow import exact
>>> round(exact.u1_plaquette(1.0, (64, 64)), 12) == round(exact.u1_plaquette_infinite_volume(1.0), 12)
True
"""

from __future__ import annotations

from ._common import SUN_SUPPORTED_N
from .free_fermions import wilson_dirac_free_spectrum, wilson_free_pion_correlator, wilson_free_propagator
from .sun import (sun_character_coefficient, sun_irrep_dimension, sun_log_partition, sun_plaquette,
                  sun_plaquette_infinite_volume)
from .topology import (u1_charge_distribution, u1_plaquette_in_sector, u1_topological_susceptibility,
                       u1_topological_susceptibility_infinite_volume)
from .u1 import (u1_log_partition, u1_log_partition_ratio, u1_plaquette, u1_plaquette_derivative,
                 u1_plaquette_infinite_volume, u1_wilson_loop)

__all__ = [
    "SUN_SUPPORTED_N",
    "sun_character_coefficient",
    "sun_irrep_dimension",
    "sun_log_partition",
    "sun_plaquette",
    "sun_plaquette_infinite_volume",
    "u1_charge_distribution",
    "u1_log_partition",
    "u1_log_partition_ratio",
    "u1_plaquette",
    "u1_plaquette_derivative",
    "u1_plaquette_in_sector",
    "u1_plaquette_infinite_volume",
    "u1_topological_susceptibility",
    "u1_topological_susceptibility_infinite_volume",
    "u1_wilson_loop",
    "wilson_dirac_free_spectrum",
    "wilson_free_propagator",
    "wilson_free_pion_correlator",
]
