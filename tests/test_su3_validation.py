"""4D SU(3) pure gauge against published large-volume results.

Plaquette at beta = 6.0: <P> = (1/3) <Re tr P> = 0.59368 (infinite-volume value at this precision; e.g. G. Boyd et
al., Nucl. Phys. B 469 (1996) 419, T = 0 lattices 16^4 / 32^4: 0.59368).  On 8^4 the finite-volume shift of the
plaquette is O(1e-4), below the statistical error of this test (~3e-4), so the check is a pull < 4 with the
Gamma-method error (two chains as replicas).

The published t0/a^2 = 2.7854(62) at beta = 5.96 (M. Lüscher, JHEP 08 (2010) 071) needs L/a >= 16 and flow times up
to t ~ 3: too costly for CPU CI (about an hour on two cores).  It is an opt-in test here,
``CORRFLOW_VALIDATE_LARGE=1 pytest tests/test_su3_validation.py -k t0`` (minutes on a GPU), and
``examples/su3_scales.py`` runs the same comparison through the store; the result of a CPU run is recorded in
BENCHMARKS.md ("Validation at 16^4").  In CI the same code path (heat bath -> Wilson flow -> t0 with errors) runs on
8^4 and is checked for consistency of the two E(t) discretisations.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import corrflow  # noqa: F401  (x64)
from corrflow import heatbath
from corrflow.observables import gradient_flow as gf
from corrflow.observables import plaquette
from corrflow.scales import flow_scales
from corrflow.stats import gamma_method
from corrflow.theories import WilsonGaugeAction

PUBLISHED_PLAQUETTE_BETA6 = 0.59368
LUSCHER_T0_BETA596 = (2.7854, 0.0062)  # t0/a^2, Wilson action, beta = 5.96, L/a = 16, clover E (JHEP 08 (2010) 071)


SU3 = WilsonGaugeAction("su3", (2, 2, 2, 2), beta=1.0).group


def _plaquette(u):  # noqa: ANN001, ANN202  (a module-level function: hashable, a static jit argument)
    return plaquette(u, SU3)


@pytest.fixture(scope="module")
def beta6_ensemble():
    th = WilsonGaugeAction("su3", (8, 8, 8, 8), beta=6.0)
    cfg = heatbath.HeatbathConfig(n_heatbath=1, n_overrelax=3)
    u = th.group.identity((2,) + th.shape + (4,))  # cold start: thermalises within ~15 updates at beta = 6
    keys = jax.random.split(jax.random.PRNGKey(2010), 2)
    u, _ = heatbath.sample_chains(keys, u, th, cfg, 20)
    u, plaq = heatbath.sample_chains(keys, u, th, cfg, 30, first_index=20, measure=_plaquette)
    return th, u, np.asarray(plaq)


def test_plaquette_beta6_matches_published_value(beta6_ensemble):
    _, _, plaq = beta6_ensemble
    st = gamma_method(plaq)  # (2 replicas, 30)
    pull = (st.value - PUBLISHED_PLAQUETTE_BETA6) / st.error
    assert st.error < 1e-3
    assert abs(pull) < 4, f"<P> = {st} vs published {PUBLISHED_PLAQUETTE_BETA6}: pull {pull:.2f}"


def test_flow_scales_on_thermalised_beta6_configurations(beta6_ensemble):
    """A reference scale t^2 E = 0.1 on 8^4 at beta 6 (t0 itself needs L >= 16): reached with the clover E inside the
    flowed range, earlier with the plaquette E (larger at this resolution); clover Q near integers at t = 2."""
    th, u, _ = beta6_ensemble
    h = gf.wilson_flow(u, th.group, 2.0, eps=0.05, measure_every=0.1)
    t = h.t
    # two configurations only: use each as one sample per "chain" is too few for the Gamma method, so compare means
    y_clov = t**2 * np.asarray(h.E_clov).mean(0)
    y_plaq = t**2 * np.asarray(h.E_plaq).mean(0)
    t0_c, t0_p = gf.flow_scale(t, y_clov, 0.1), gf.flow_scale(t, y_plaq, 0.1)
    assert 0.3 < t0_c < 2.0 and 0 < t0_p < t0_c  # E_plaq > E_clov at this resolution (cut-off effects)
    q = np.asarray(h.Q)[:, -1]
    assert np.all(np.abs(q - np.round(q)) < 0.25), f"clover Q at t = 2 should be near integers, got {q}"
    with pytest.raises(ValueError):
        flow_scales(t, np.asarray(h.E_clov))  # 2 samples: the Gamma method refuses (needs >= 10)


@pytest.mark.skipif(os.environ.get("CORRFLOW_VALIDATE_LARGE") != "1",
                    reason="opt-in large-volume validation (16^4, ~1 h on 2 CPU cores): set CORRFLOW_VALIDATE_LARGE=1")
def test_t0_beta596_matches_luscher_2010():
    """t0/a^2 at beta = 5.96 on 16^4 (heat bath + over-relaxation, 2 chains x 10 configurations 8 updates apart,
    clover E, RK3 step 0.02) against Lüscher's 2.7854(62): pull < 4 with the Gamma-method error combined with the
    published one."""
    th = WilsonGaugeAction("su3", (16, 16, 16, 16), beta=5.96)
    cfg = heatbath.HeatbathConfig(n_heatbath=1, n_overrelax=4)
    keys = jax.random.split(jax.random.PRNGKey(596), 2)
    u = th.group.identity((2,) + th.shape + (4,), dtype=jnp.complex64)
    u, _ = heatbath.sample_chains(keys, u, th, cfg, 60)
    energies = []
    for k in range(10):
        u, _ = heatbath.sample_chains(keys, u, th, cfg, 8, first_index=60 + 8 * k)
        h = gf.wilson_flow(u, th.group, 3.6, eps=0.02, measure_every=0.1)
        energies.append(np.asarray(h.E_clov))
    e = np.stack(energies, axis=1)  # (2 chains, 10, n_t)
    t0 = flow_scales(np.asarray(h.t), e, t0_ref=0.3, w0_ref=0.3)["t0"]
    value, err = LUSCHER_T0_BETA596
    pull = (t0.value - value) / float(np.hypot(t0.error, err))
    assert t0.error < 0.05 and abs(pull) < 4, f"t0/a^2 = {t0} vs Lüscher 2010 {value}({err}): pull {pull:+.2f}"
