"""Free Wilson fermions (all links 1, antiperiodic in time): spectrum, propagator, pion correlator
(see :mod:`corrflow.exact`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


# --------------------------------------------------------------------------------------------
# free Wilson fermions (all links 1), antiperiodic in time
# --------------------------------------------------------------------------------------------


def _free_momenta(shape: Sequence[int]) -> list[np.ndarray]:
    """Allowed momenta per direction: ``2 pi (n + 1/2) / L_0`` in time (antiperiodic), ``2 pi n / L`` in space."""
    return [2 * np.pi * (np.arange(L) + (0.5 if mu == 0 else 0.0)) / L for mu, L in enumerate(shape)]


def wilson_dirac_free_spectrum(shape: Sequence[int], mass: float) -> np.ndarray:
    """Eigenvalues of the free Wilson–Dirac operator (one colour) in closed form, sorted by (real, imag).

    ``D(p) = m + sum_mu (1 - cos p_mu) + i sum_mu gamma_mu sin p_mu`` has eigenvalues
    ``m + sum_mu (1 - cos p_mu) +- i sqrt(sum_mu sin^2 p_mu)``, each ``Ns/2``-fold (``Ns = 2`` in d = 2,
    4 in d = 4); ``p_0 = 2 pi (n + 1/2) / L_0`` (antiperiodic), ``p_i = 2 pi n / L_i``.
    Returns ``V * Ns`` complex numbers.
    """
    shape = tuple(int(s) for s in shape)
    d = len(shape)
    if d not in (2, 4):
        raise ValueError(f"free Wilson spectrum implemented for d = 2, 4; got shape {shape}")
    grids = np.meshgrid(*_free_momenta(shape), indexing="ij")
    m = float(mass) + sum(1 - np.cos(p) for p in grids)
    s = np.sqrt(sum(np.sin(p) ** 2 for p in grids))
    mult = (2 if d == 2 else 4) // 2
    ev = np.concatenate([np.repeat((m + 1j * s).ravel(), mult), np.repeat((m - 1j * s).ravel(), mult)])
    return ev[np.lexsort((ev.imag.round(12), ev.real.round(12)))]


def wilson_free_propagator(shape: Sequence[int], mass: float) -> np.ndarray:
    """Free point-source propagator ``S(x; 0) = (1/V) sum_p e^{i p x} D(p)^{-1}`` (one colour), from the
    momentum-space closed form ``D(p)^{-1} = (M(p) - i sum gamma_mu sin p_mu) / (M(p)^2 + sum sin^2 p_mu)``.

    Returns ``(L..., Ns, Ns)`` (sink spin, source spin); gamma matrices of
    :func:`corrflow.theories.fermions.gamma_matrices`.
    """
    from ..theories.fermions import gamma_matrices

    shape = tuple(int(s) for s in shape)
    d = len(shape)
    gam, _ = gamma_matrices(d)
    grids = np.meshgrid(*_free_momenta(shape), indexing="ij")
    m = float(mass) + sum(1 - np.cos(p) for p in grids)
    s2 = sum(np.sin(p) ** 2 for p in grids)
    ns = gam.shape[-1]
    num = m[..., None, None] * np.eye(ns) - 1j * sum(np.sin(p)[..., None, None] * gam[mu] for mu, p in enumerate(grids))
    sp = num / (m ** 2 + s2)[..., None, None]
    # (1/V) sum_p e^{i p x}: inverse FFT over the integer part, times e^{i pi t / L_0} for the half-integer shift
    axes = tuple(range(d))
    sx = np.fft.ifftn(sp, axes=axes)
    t = np.arange(shape[0]).reshape((-1,) + (1,) * (d - 1) + (1, 1))
    return sx * np.exp(1j * np.pi * t / shape[0])


def wilson_free_pion_correlator(shape: Sequence[int], mass: float) -> np.ndarray:
    """Free pion correlator ``C(t) = sum_{vec x} tr[S(x; 0) S(x; 0)^dag]`` (one colour), shape ``(L_0,)``."""
    sx = wilson_free_propagator(shape, mass)
    dens = np.sum(np.abs(sx) ** 2, axis=(-2, -1))
    return dens.reshape(dens.shape[0], -1).sum(axis=1)
