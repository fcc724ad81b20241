"""Tests of corrflow.exact (exact 2D lattice gauge theory on a periodic torus).

Every check compares the character-expansion formulas with something computed independently:
direct quadrature in the plaquette-variable representation, Weyl integration over eigenphases,
closed forms (SU(2), Irwin-Hall), finite differences, or known limits.  Tolerances are stated
at each assertion; "round-off" means the expected double-precision error of the reference.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, special

from corrflow import exact

# --------------------------------------------------------------------------------------------
# helpers (independent reference computations)
# --------------------------------------------------------------------------------------------


def periodic_grid(m: int) -> np.ndarray:
    """``m`` equispaced angles on [-pi, pi): the trapezoid rule, spectrally accurate for periodic
    analytic integrands."""
    return -math.pi + 2.0 * math.pi * np.arange(m) / m


def u1_bruteforce_v3(beta: float, m: int = 128) -> tuple[float, float]:
    """``Z`` and ``<cos P>`` for ``V = 3`` from the plaquette representation
    ``Z = int dP1 dP2 / (2pi)^2 exp(beta (cos P1 + cos P2 + cos(P1 + P2)))`` (P3 = -P1 - P2)."""
    x = periodic_grid(m)
    p1, p2 = np.meshgrid(x, x, indexing="ij")
    w = np.exp(beta * (np.cos(p1) + np.cos(p2) + np.cos(p1 + p2)))
    z = w.mean()
    return float(z), float((w * np.cos(p1)).mean() / z)


def fd(f, x: float, h: float) -> float:
    """Fourth-order central finite difference."""
    return (-f(x + 2 * h) + 8 * f(x + h) - 8 * f(x - h) + f(x - 2 * h)) / (12 * h)


def irwin_hall_at_integers(v: int) -> dict[int, float]:
    """Density of the sum of ``v`` i.i.d. U(-1/2, 1/2) at the integers, by numerical convolution."""
    h = 1.0 / 4000
    box = np.ones(4001)  # samples of the unit box on [-1/2, 1/2] (trapezoid end weights)
    box[0] = box[-1] = 0.5
    dens = box.copy()
    for _ in range(v - 1):
        dens = np.convolve(dens, box) * h
    centre = (len(dens) - 1) // 2  # index of s = 0
    return {q: float(dens[centre + q * 4000]) for q in range(-(v // 2), v // 2 + 1)}


def irwin_hall_exact(v: int, s: float) -> float:
    """Closed-form Irwin-Hall density of the sum of ``v`` U(-1/2, 1/2) at ``s``."""
    x = s + v / 2.0
    return sum(
        (-1) ** k * math.comb(v, k) * (x - k) ** (v - 1) for k in range(int(math.floor(x)) + 1)
    ) / math.factorial(v - 1)


# --------------------------------------------------------------------------------------------
# U(1): partition function, plaquette, derivative
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 2), (1, 3), (2, 2), (16, 16), (128, 128)])
def test_u1_beta_zero(shape):
    # Haar normalisation: Z(0) = 1; <cos P> = 0; d<cos P>/dbeta = <cos^2 P> = 1/2 for V >= 3
    assert exact.u1_log_partition(0.0, shape) == 0.0
    assert exact.u1_plaquette(0.0, shape) == 0.0
    expected = {2: 1.0}.get(shape[0] * shape[1], 0.5)  # V = 2: P2 = -P1, so Var(mean) = <cos^2>
    assert exact.u1_plaquette_derivative(0.0, shape) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("beta", [0.0, 0.4, 3.0, 20.0])
def test_u1_one_by_one_torus(beta):
    # On a 1x1 torus the single plaquette is theta0 + theta1 - theta0 - theta1 = 0 exactly:
    # Z = exp(beta) (= sum_n I_n(beta)), <cos P> = 1, zero variance.
    assert exact.u1_log_partition(beta, (1, 1)) == pytest.approx(beta, abs=1e-13)
    assert exact.u1_plaquette(beta, (1, 1)) == pytest.approx(1.0, abs=1e-14)
    assert exact.u1_plaquette_derivative(beta, (1, 1)) == pytest.approx(0.0, abs=1e-13)


@pytest.mark.parametrize("beta", [0.5, 2.0, 7.0])
def test_u1_bruteforce_plaquette_representation(beta):
    # V = 2: Z = int dP/2pi exp(2 beta cos P)   (1-D quadrature, P2 = -P1)
    z2 = integrate.quad(lambda p: math.exp(beta * 2 * math.cos(p)), -math.pi, math.pi,
                        epsabs=0, epsrel=1e-13)[0] / (2 * math.pi)
    assert math.exp(exact.u1_log_partition(beta, (1, 2))) == pytest.approx(z2, rel=1e-12)
    # V = 3: 2-D quadrature of the plaquette representation (trapezoid, spectrally accurate)
    z3, p3 = u1_bruteforce_v3(beta)
    assert math.exp(exact.u1_log_partition(beta, (1, 3))) == pytest.approx(z3, rel=1e-12)
    assert exact.u1_plaquette(beta, (3, 1)) == pytest.approx(p3, rel=1e-12)


@pytest.mark.parametrize("beta", [0.5, 2.0, 20.0])
def test_u1_plaquette_large_volume(beta):
    inf = special.iv(1, beta) / special.iv(0, beta)
    assert exact.u1_plaquette_infinite_volume(beta) == pytest.approx(inf, rel=1e-14)
    # finite-volume corrections are (I_1/I_0)^V: < 1e-150 on 128^2 for beta <= 20
    assert exact.u1_plaquette(beta, (128, 128)) == pytest.approx(inf, rel=1e-13)
    # ... but clearly visible on a tiny torus, and shrinking with V
    d_small = abs(exact.u1_plaquette(beta, (2, 2)) - inf)
    d_mid = abs(exact.u1_plaquette(beta, (4, 4)) - inf)
    assert d_small > 1e-3 and d_mid < d_small


@pytest.mark.parametrize("shape", [(1, 2), (2, 3), (4, 4), (16, 16), (128, 128)])
@pytest.mark.parametrize("beta", [0.3, 1.7, 12.0])
def test_u1_plaquette_is_derivative_of_log_partition(shape, beta):
    volume = shape[0] * shape[1]
    h = 1e-3
    deriv = fd(lambda b: exact.u1_log_partition(b, shape), beta, h) / volume
    # FD truncation O(h^4) ~ 1e-12; round-off ~ 1e-16 |log Z| / (h V) ~ 1e-12
    assert exact.u1_plaquette(beta, shape) == pytest.approx(deriv, rel=1e-7)
    second = fd(lambda b: exact.u1_plaquette(b, shape), beta, h)
    assert exact.u1_plaquette_derivative(beta, shape) == pytest.approx(second, rel=1e-7)


def test_u1_derivative_positive_and_large_beta():
    # V * Var >= 0, and the single-plaquette limit d(I1/I0)/dbeta = 1 - (I1/I0)/beta - (I1/I0)^2
    for beta in (0.1, 1.0, 20.0):
        r = special.ive(1, beta) / special.ive(0, beta)
        inf = 1 - r / beta - r * r
        assert exact.u1_plaquette_derivative(beta, (128, 128)) == pytest.approx(inf, rel=1e-9)
        assert exact.u1_plaquette_derivative(beta, (3, 5)) > 0


# --------------------------------------------------------------------------------------------
# U(1): Wilson loops and reweighting
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 2), (2, 2), (3, 5), (32, 32)])
@pytest.mark.parametrize("beta", [0.0, 0.8, 5.0])
def test_u1_wilson_loop_area_one_is_plaquette(shape, beta):
    assert exact.u1_wilson_loop(beta, shape, 1, 1) == pytest.approx(
        exact.u1_plaquette(beta, shape), rel=1e-13, abs=1e-15
    )


@pytest.mark.parametrize("beta", [0.8, 3.0])
def test_u1_wilson_loop_large_volume_area_law(beta):
    r = special.iv(1, beta) / special.iv(0, beta)
    for R, T in [(1, 2), (2, 3), (4, 4), (32, 2)]:
        # exact (I1/I0)^A up to (I1/I0)^(V-A) corrections, negligible on 64^2
        assert exact.u1_wilson_loop(beta, (64, 64), R, T) == pytest.approx(r ** (R * T), rel=1e-12)
    # symmetric under exchanging the two directions on a square torus
    assert exact.u1_wilson_loop(beta, (6, 6), 2, 3) == exact.u1_wilson_loop(beta, (6, 6), 3, 2)


@pytest.mark.parametrize("beta", [0.7, 2.0])
def test_u1_wilson_loop_bruteforce_2x2(beta):
    # 2x2 torus: P4 = -(P1 + P2 + P3); a 2x1 loop encloses two plaquettes: W = exp(i (P1 + P2)).
    x = periodic_grid(48)
    p1, p2, p3 = np.meshgrid(x, x, x, indexing="ij", sparse=True)
    w = np.exp(beta * (np.cos(p1) + np.cos(p2) + np.cos(p3) + np.cos(p1 + p2 + p3)))
    loop = float((w * np.cos(p1 + p2)).sum() / w.sum())
    assert exact.u1_wilson_loop(beta, (2, 2), 2, 1) == pytest.approx(loop, rel=1e-11)
    assert exact.u1_wilson_loop(beta, (2, 2), 1, 2) == pytest.approx(loop, rel=1e-11)


def test_u1_log_partition_ratio():
    shape = (6, 7)
    for b, bp in [(0.0, 1.0), (1.3, 0.4), (2.0, 9.0)]:
        diff = exact.u1_log_partition(bp, shape) - exact.u1_log_partition(b, shape)
        assert exact.u1_log_partition_ratio(b, bp, shape) == pytest.approx(diff, rel=1e-12)
    # large V, tiny step: log Z(b') - log Z(b) = V int_b^b' <cos P> ~ V delta <cos P>(midpoint);
    # naive subtraction of two ~2.7e5 numbers would leave only ~6 digits of this 1.6e-5.
    beta, delta, shape = 20.0, 1e-9, (128, 128)
    ratio = exact.u1_log_partition_ratio(beta, beta + delta, shape)
    delta = (beta + delta) - beta  # the step actually represented in floating point
    expect = 128 * 128 * delta * exact.u1_plaquette(beta + delta / 2, shape)
    assert ratio == pytest.approx(expect, rel=1e-9)
    assert exact.u1_log_partition_ratio(beta, beta, shape) == 0.0
    # small volume, small step (quadrature route) and consistency of both routes
    for shape in [(1, 1), (1, 3), (4, 4)]:
        v = shape[0] * shape[1]
        for beta, delta in [(0.5, 1e-7), (3.0, -2e-8), (3.0, 0.7), (12.0, 2.5)]:
            ratio = exact.u1_log_partition_ratio(beta, beta + delta, shape)
            delta = (beta + delta) - beta
            if abs(delta) < 1e-3:
                expect = v * delta * exact.u1_plaquette(beta + delta / 2, shape)
                assert ratio == pytest.approx(expect, rel=1e-8)
            else:
                diff = exact.u1_log_partition(beta + delta, shape) - exact.u1_log_partition(beta, shape)
                assert ratio == pytest.approx(diff, rel=1e-12)


# --------------------------------------------------------------------------------------------
# U(1): topological charge
# --------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")  # where F_nu ~ 0
@pytest.mark.parametrize("beta", [0.0, 0.7, 3.0, 20.0])
def test_theta_function_matches_quadrature(beta):
    # F_nu(beta) = (1/pi) int_0^pi exp(beta cos phi) cos(nu phi) dphi (not I_nu for non-integer nu)
    weights = exact.topology._fourier_weights(beta)
    i0 = special.ive(0, beta)
    for nu in (0.0, 0.3, 1.0, 2.5, 7.77, 50.2):
        quad = integrate.quad(lambda p: math.exp(beta * (math.cos(p) - 1)), 0, math.pi,
                              weight="cos", wvar=nu, epsabs=1e-15, epsrel=1e-13)[0] / (math.pi * i0)
        assert float(exact.topology._f_hat(np.array(nu), weights)) == pytest.approx(quad, abs=1e-13)
        if nu == 2.5 and 0 < beta <= 3:
            assert abs(quad - special.ive(2.5, beta) / i0) > 1e-4  # F_nu really differs from I_nu


@pytest.mark.parametrize(
    "beta, shape", [(0.5, (1, 3)), (1.0, (2, 2)), (0.4, (1, 5)), (2.0, (3, 4)), (3.0, (8, 8))]
)
def test_charge_distribution_normalised_symmetric_and_second_moment(beta, shape):
    volume = shape[0] * shape[1]
    qmax = volume  # beyond |Q| < V/2 the probabilities are exactly 0
    probs = exact.u1_charge_distribution(beta, shape, qmax)
    q = np.arange(-qmax, qmax + 1)
    assert probs.shape == (2 * qmax + 1,)
    assert probs.sum() == pytest.approx(1.0, abs=1e-13)
    np.testing.assert_allclose(probs, probs[::-1], atol=1e-15)
    assert np.all(probs[np.abs(q) >= volume / 2] == 0.0)
    chi = exact.u1_topological_susceptibility(beta, shape)
    # two independent routes: DFT of Z(theta) (with the analytic zeta tail) vs -Z''(0)/Z(0);
    # agreement is at round-off, which grows like V * 1e-16 through F^V
    tol = 1e-12 if volume <= 16 else 1e-10
    assert float(np.sum(q**2 * probs)) / volume == pytest.approx(chi, rel=tol)


def test_charge_distribution_large_volume_moment():
    beta, shape = 8.0, (64, 64)
    probs = exact.u1_charge_distribution(beta, shape, 40)  # sigma_Q ~ 3.7: 40 covers ~ 11 sigma
    q = np.arange(-40, 41)
    assert probs.sum() == pytest.approx(1.0, abs=1e-10)
    chi = exact.u1_topological_susceptibility(beta, shape)
    assert float(np.sum(q**2 * probs)) / 4096 == pytest.approx(chi, rel=1e-10)


def test_charge_distribution_beta_zero_irwin_hall():
    # beta = 0: wrapped plaquette angles are i.i.d. uniform on (-pi, pi], conditioned on
    # sum = 2 pi Q, so P(Q) is proportional to the Irwin-Hall density at Q.
    numeric = irwin_hall_at_integers(4)  # numerical convolution of four uniform densities
    total = sum(numeric.values())
    probs = exact.u1_charge_distribution(0.0, (2, 2), 2)
    for q, dens in numeric.items():
        # grid convolution error is O(h^2) ~ 1e-7
        assert probs[q + 2] == pytest.approx(dens / total, abs=1e-6)
    np.testing.assert_allclose(probs, [0.0, 1 / 6, 2 / 3, 1 / 6, 0.0], atol=1e-14)
    for v in (3, 5, 7):  # closed-form Irwin-Hall, all Q
        qm = (v - 1) // 2
        dens = np.array([irwin_hall_exact(v, q) for q in range(-qm, qm + 1)])
        np.testing.assert_allclose(exact.u1_charge_distribution(0.0, (1, v), qm),
                                   dens / dens.sum(), atol=1e-14)
        # <Q^2> = V/12 at beta = 0 (variance of a uniform on (-1/2, 1/2] per plaquette)
        assert exact.u1_topological_susceptibility(0.0, (v, 1)) == pytest.approx(1 / 12, rel=1e-13)


@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_charge_distribution_bruteforce_v3(beta):
    # V = 3 in plaquette variables x1, x2 in (-pi, pi]: Q = +1 iff x1 + x2 > pi.
    def weight(x2, x1):
        return math.exp(beta * (math.cos(x1) + math.cos(x2) + math.cos(x1 + x2)))

    z = u1_bruteforce_v3(beta)[0] * (2 * math.pi) ** 2
    z1 = integrate.dblquad(weight, 0, math.pi, lambda x1: math.pi - x1, lambda x1: math.pi,
                           epsabs=0, epsrel=1e-12)[0]
    probs = exact.u1_charge_distribution(beta, (1, 3), 1)
    assert probs[2] == pytest.approx(z1 / z, rel=1e-9)
    assert probs[0] == pytest.approx(z1 / z, rel=1e-9)
    assert probs[1] == pytest.approx(1 - 2 * z1 / z, rel=1e-12)


def test_charge_distribution_nu_integral():
    # Z_Q = int dnu cos(2 pi nu Q) F_nu^V over the real line (the brief's Fourier form)
    beta, shape = 1.0, (3, 4)
    weights = exact.topology._fourier_weights(beta)
    z = sum(exact.topology._f_hat(np.array(float(n)), weights) ** 12 for n in range(-10, 11))
    probs = exact.u1_charge_distribution(beta, shape, 3)
    # F_nu is entire in nu: 40-point Gauss-Legendre per unit panel on [0, 30] is converged;
    # the tail beyond nu = 30 is < (e^-1 / (pi I0(1)))^12 30^-11 ~ 1e-29
    x, w = np.polynomial.legendre.leggauss(40)
    nu = (np.arange(30)[:, None] + 0.5 + 0.5 * x[None, :]).ravel()
    wts = np.tile(0.5 * w, 30)
    f12 = exact.topology._f_hat(nu, weights) ** 12
    for qq in range(4):
        val = 2 * np.sum(wts * np.cos(2 * math.pi * nu * qq) * f12)
        assert probs[3 + qq] == pytest.approx(val / z, abs=1e-13)


def test_topological_susceptibility_limits():
    # V -> infinity: plaquettes decouple, chi = <phi^2> / 4pi^2 in the one-plaquette measure
    for beta in (0.5, 3.0, 8.0):
        num = integrate.quad(lambda p: p * p * math.exp(beta * (math.cos(p) - 1)), -math.pi, math.pi,
                             epsabs=0, epsrel=1e-13)[0]
        den = integrate.quad(lambda p: math.exp(beta * (math.cos(p) - 1)), -math.pi, math.pi,
                             epsabs=0, epsrel=1e-13)[0]
        chi_inf = num / den / (4 * math.pi**2)
        assert exact.u1_topological_susceptibility_infinite_volume(beta) == pytest.approx(
            chi_inf, rel=1e-11)
        assert exact.u1_topological_susceptibility(beta, (64, 64)) == pytest.approx(
            chi_inf, rel=1e-11)
    # Continuum limit at fixed physical volume V / beta = 512: 4 pi^2 beta chi -> 1.  The leading
    # lattice artefact is +1/(2 beta) (6 % at beta = 8, so "within 2 % of 1" does not hold
    # there); the remainder is O(beta^-2) ~ 0.7 / beta^2 ~ 1 %, hence the 2 % tolerance below.
    scaled = []
    for beta, shape in [(8.0, (64, 64)), (16.0, (64, 128)), (32.0, (128, 128))]:
        s = 4 * math.pi**2 * beta * exact.u1_topological_susceptibility(beta, shape)
        assert s == pytest.approx(1 + 1 / (2 * beta), rel=0.02)
        scaled.append(s)
    assert 1 < scaled[2] < scaled[1] < scaled[0] < 1.08
    # small volume: charge sectors are suppressed, chi is far below its V -> infinity value
    assert exact.u1_topological_susceptibility(8.0, (2, 2)) < 1e-3 * exact.u1_topological_susceptibility(
        8.0, (64, 64))
    assert exact.u1_topological_susceptibility(3.0, (1, 2)) == 0.0  # Q = 0 identically for V <= 2


# --------------------------------------------------------------------------------------------
# SU(N)
# --------------------------------------------------------------------------------------------


def weyl_coefficient_su2(l: int, beta: float, m: int = 256) -> float:
    """c_l = int dU exp((beta/2) tr U) chi_l(U) by Weyl integration over the eigenphases +-phi.

    Haar measure (1/2!) |e^{i phi} - e^{-i phi}|^2 dphi / 2pi = 2 sin^2(phi) dphi / 2pi,
    chi_l = sin((l+1) phi) / sin(phi), (beta/2) tr U = beta cos(phi).
    """
    phi = periodic_grid(m)
    return float(np.mean(np.exp(beta * np.cos(phi)) * 2 * np.sin(phi) * np.sin((l + 1) * phi)))


def weyl_coefficient_su3(lam: tuple[int, int, int], beta: float, m: int = 96) -> float:
    """c_lambda = (1/3!) int dphi1 dphi2 / (2pi)^2 |Delta|^2 exp((beta/3) Re tr U) chi_lambda^*,
    with phi3 = -phi1 - phi2 and chi_lambda |Delta|^2 = det[e^{i l_j phi_k}] conj(det[e^{i(3-j) phi_k}])
    (Weyl character formula, no division needed)."""
    x = periodic_grid(m)
    p1, p2 = np.meshgrid(x, x, indexing="ij")
    phases = np.stack([p1, p2, -p1 - p2], axis=-1)
    ell = np.array([lam[0] + 2, lam[1] + 1, lam[2]])
    num = np.linalg.det(np.exp(1j * ell[None, None, :, None] * phases[..., None, :]))
    vdm = np.linalg.det(np.exp(1j * np.array([2, 1, 0])[None, None, :, None] * phases[..., None, :]))
    integrand = np.exp(beta / 3 * np.cos(phases).sum(axis=-1)) * np.conj(num) * vdm
    return float(np.mean(integrand).real / 6)


@pytest.mark.parametrize("beta", [1.3, 4.0])
def test_sun_character_coefficients_weyl_integration(beta):
    for lam in [(0, 0), (1, 0), (2, 0)]:
        ref = weyl_coefficient_su2(lam[0], beta)
        assert exact.sun_character_coefficient(2, lam, beta) == pytest.approx(ref, rel=1e-9)
        # SU(2) closed form: c_l = (l + 1) 2 I_{l+1}(beta) / beta
        closed = (lam[0] + 1) * 2 * special.iv(lam[0] + 1, beta) / beta
        assert exact.sun_character_coefficient(2, lam, beta) == pytest.approx(closed, rel=1e-12)
    for lam in [(0, 0, 0), (1, 0, 0), (1, 1, 0), (2, 1, 0)]:
        ref = weyl_coefficient_su3(lam, beta)
        assert exact.sun_character_coefficient(3, lam, beta) == pytest.approx(ref, rel=1e-9)


def test_sun_irrep_dimension():
    assert [exact.sun_irrep_dimension(2, (l, 0)) for l in range(5)] == [1, 2, 3, 4, 5]
    dims = {(0, 0, 0): 1, (1, 0, 0): 3, (1, 1, 0): 3, (2, 0, 0): 6, (2, 1, 0): 8, (3, 0, 0): 10,
            (2, 2, 0): 6, (4, 2, 0): 27}
    for lam, d in dims.items():
        assert exact.sun_irrep_dimension(3, lam) == d
    assert exact.sun_irrep_dimension(4, (1, 1, 0, 0)) == 6
    assert exact.sun_irrep_dimension(4, (2, 1, 1, 0)) == 15


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (4, 4)])
@pytest.mark.parametrize("beta", [0.7, 3.0])
def test_sun_plaquette_is_derivative_of_log_partition(n, shape, beta):
    volume = shape[0] * shape[1]
    deriv = fd(lambda b: exact.sun_log_partition(n, b, shape), beta, 1e-3) / volume
    assert exact.sun_plaquette(n, beta, shape) == pytest.approx(deriv, rel=1e-8)


@pytest.mark.parametrize("n", [2, 3])
def test_sun_beta_zero(n):
    assert exact.sun_log_partition(n, 0.0, (4, 4)) == 0.0
    assert exact.sun_plaquette(n, 0.0, (4, 4)) == 0.0
    assert exact.sun_plaquette_infinite_volume(n, 0.0) == pytest.approx(0.0, abs=1e-15)
    # 1x1 torus: the plaquette is a group commutator U W U^-1 W^-1; Haar averages give
    # <tr(U W U^+ W^+)> = <|tr U|^2> / N = 1 / N, so <(1/N) Re tr> = 1 / N^2.
    assert exact.sun_plaquette(n, 0.0, (1, 1)) == pytest.approx(1 / n**2, rel=1e-13)


@pytest.mark.parametrize("beta", [0.3, 2.0, 9.0])
def test_su2_one_by_one_torus_closed_form(beta):
    """1x1 torus: Z = int dU dW f(U W U^-1 W^-1), f = exp((beta/2) tr).  With U = cos a + sin a n
    (unit quaternion), W U^-1 W^-1 = cos a - sin a m with m uniform on S^2, so
    (1/2) tr(commutator) = cos^2 a + sin^2 a t, t = n.m uniform on [-1, 1].  Hence
    Z = (2/pi) int_0^pi sin^2 a exp(beta cos^2 a) sinh(beta sin^2 a) / (beta sin^2 a) da
      = (e^beta - I_0(beta)) / beta.
    Every irrep contributes (Z = sum_l c_l / d_l), so this checks the truncation of the irrep sum."""
    z_quad = integrate.quad(lambda a: math.exp(beta * math.cos(a) ** 2) * math.sinh(beta * math.sin(a) ** 2),
                            0, math.pi, epsabs=0, epsrel=1e-13)[0] * 2 / (math.pi * beta)
    z_closed = (math.exp(beta) - special.iv(0, beta)) / beta
    assert z_quad == pytest.approx(z_closed, rel=1e-12)
    assert exact.sun_log_partition(2, beta, (1, 1)) == pytest.approx(math.log(z_closed), rel=1e-12)
    plaq = (math.exp(beta) - special.iv(1, beta)) / (math.exp(beta) - special.iv(0, beta)) - 1 / beta
    assert exact.sun_plaquette(2, beta, (1, 1)) == pytest.approx(plaq, rel=1e-11)


def test_su3_one_by_one_torus_monte_carlo():
    # Z(1x1) = E[exp((beta/3) Re tr [U, W])] over Haar U, W.  The commutator is blind to U(1)
    # phases, so Haar U(3) samples (QR of complex Ginibre matrices) suffice.  Statistical check
    # (fixed seed) at 5 sigma; dropping all irreps beyond the (anti)fundamental would shift Z
    # by 4 % (beta = 2), i.e. ~ 20 sigma.
    rng = np.random.default_rng(20240611)
    n = 100_000

    def haar_u3() -> np.ndarray:
        z = (rng.normal(size=(n, 3, 3)) + 1j * rng.normal(size=(n, 3, 3))) / math.sqrt(2)
        q, r = np.linalg.qr(z)
        d = np.diagonal(r, axis1=-2, axis2=-1)
        return q * (d / np.abs(d))[:, None, :]

    u, w = haar_u3(), haar_u3()
    comm = u @ w @ np.conj(np.swapaxes(u, -1, -2)) @ np.conj(np.swapaxes(w, -1, -2))
    re_tr = np.trace(comm, axis1=-2, axis2=-1).real / 3
    for beta in (2.0, 4.0):
        wt = np.exp(beta * re_tr)
        z, z_err = wt.mean(), wt.std() / math.sqrt(n)
        plaq = (wt * re_tr).mean() / z
        plaq_err = ((wt * re_tr - plaq * wt) / z).std() / math.sqrt(n)  # delta method
        assert abs(math.exp(exact.sun_log_partition(3, beta, (1, 1))) - z) < 5 * z_err
        assert abs(exact.sun_plaquette(3, beta, (1, 1)) - plaq) < 5 * plaq_err


@pytest.mark.parametrize("beta", [0.5, 2.0, 7.5, 20.0])
def test_su2_infinite_volume_closed_form(beta):
    # c_0 = 2 I_1(beta) / beta  =>  d log c_0 / d beta = I_1'/I_1 - 1/beta = I_2(beta) / I_1(beta)
    closed = special.ive(2, beta) / special.ive(1, beta)
    assert exact.sun_plaquette_infinite_volume(2, beta) == pytest.approx(closed, rel=1e-12)
    assert exact.sun_plaquette(2, beta, (64, 64)) == pytest.approx(closed, rel=1e-12)


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("beta", [1.0, 6.0])
def test_sun_large_volume_converges(n, beta):
    inf = exact.sun_plaquette_infinite_volume(n, beta)
    deltas = [abs(exact.sun_plaquette(n, beta, (L, L)) - inf) for L in (1, 2, 4)]
    assert deltas[0] > deltas[1] > deltas[2]
    assert deltas[0] > 1e-3
    assert exact.sun_plaquette(n, beta, (64, 64)) == pytest.approx(inf, rel=1e-12)
    # V -> infinity limit of log Z / V is log a_0 = log c_0
    log_c0 = math.log(exact.sun_character_coefficient(n, (0,) * n, beta))
    assert exact.sun_log_partition(n, beta, (64, 64)) / 4096 == pytest.approx(log_c0, rel=1e-12)


def test_sun_strong_coupling():
    # c_0 = 1 + (beta/N)^2 <(Re tr U)^2>/2 + (beta/N)^3 <(Re tr U)^3>/6 + ...; for SU(3)
    # <(Re tr)^2> = 1/2, <(Re tr)^3> = 1/4 (baryon singlet), so
    # <(1/3) Re tr U> = beta/18 + beta^2/216 + O(beta^3).  SU(2): beta/4 + O(beta^3).
    for beta in (1e-2, 1e-3):
        p3 = exact.sun_plaquette(3, beta, (32, 32))
        assert p3 == pytest.approx(beta / 18, rel=0.1 * beta)
        assert (p3 - beta / 18) / beta**2 == pytest.approx(1 / 216, rel=0.05)
        assert exact.sun_plaquette(2, beta, (32, 32)) == pytest.approx(beta / 4, rel=beta)


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 4), (4,), (4, 4, 4), (2.0, 2), "ab", (True, 2), 5, (-1, 3)])
def test_bad_shape(shape):
    for call in (lambda: exact.u1_log_partition(1.0, shape),
                 lambda: exact.u1_topological_susceptibility(1.0, shape),
                 lambda: exact.sun_plaquette(2, 1.0, shape)):
        with pytest.raises(ValueError, match="shape"):
            call()


@pytest.mark.parametrize("beta", [-0.1, float("nan"), float("inf"), "1.0", None, True])
def test_bad_beta(beta):
    with pytest.raises(ValueError, match="beta"):
        exact.u1_plaquette(beta, (4, 4))
    with pytest.raises(ValueError, match="beta"):
        exact.sun_log_partition(3, beta, (4, 4))
    with pytest.raises(ValueError, match="beta_prime"):
        exact.u1_log_partition_ratio(1.0, beta, (4, 4))
    with pytest.raises(ValueError, match="beta"):
        exact.u1_plaquette_infinite_volume(beta)


@pytest.mark.parametrize("n", [1, 0, 7, 2.0, True, "3"])
def test_bad_n(n):
    with pytest.raises(ValueError, match="N must be one of"):
        exact.sun_plaquette(n, 1.0, (2, 2))
    with pytest.raises(ValueError, match="N must be one of"):
        exact.sun_plaquette_infinite_volume(n, 1.0)


def test_bad_loop_charge_and_weights():
    with pytest.raises(ValueError, match="R must"):
        exact.u1_wilson_loop(1.0, (4, 4), 0, 1)
    with pytest.raises(ValueError, match="R must"):
        exact.u1_wilson_loop(1.0, (4, 4), 5, 1)
    with pytest.raises(ValueError, match="T must"):
        exact.u1_wilson_loop(1.0, (4, 4), 1, 5)
    with pytest.raises(ValueError, match="R\\*T < V"):
        exact.u1_wilson_loop(1.0, (4, 4), 4, 4)
    with pytest.raises(ValueError, match="qmax"):
        exact.u1_charge_distribution(1.0, (4, 4), -1)
    for weights in [(1, 0), (0, 1, 0), (1, 2, 0), (1, 1, 1), (-1, -1, 0)]:
        with pytest.raises(ValueError, match="weights"):
            exact.sun_character_coefficient(3, weights, 1.0)
