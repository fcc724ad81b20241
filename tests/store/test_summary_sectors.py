"""`corrflow summary` on ensembles with slow or frozen topology: the frozen sector's exact plaquette and
`--tau-exp auto` (the slowest decay of rho(t) among the observables, corrflow.stats.fit_tau_exp)."""

from __future__ import annotations

import math

import numpy as np

from corrflow import exact
from corrflow.store import open_store
from corrflow.summary import ensemble_summary, frozen_charge, slowest_decay

from .store_helpers import cli, cli_refused, dummy_block, u1_spec


def _store(path, per_chain: int, series: dict[str, np.ndarray]):
    """An ensemble ``e`` of random 4x4 U(1) links (2 chains) whose per-trajectory ``series`` are given."""
    st = open_store(path, "a")
    st.create_ensemble("e", u1_spec(measurements=("plaquette", *series)))
    traj, links, per, nxt = dummy_block(2, per_chain, 0, extra=tuple(series))
    per.update(series)
    with st.writer("e") as w:
        w.append(traj, links, per, nxt)
    return open_store(path)


def test_frozen_topology_is_compared_with_its_sector(tmp_path):
    """A cold start at weak coupling never leaves Q = 0: the summary compared its plaquette with the all-sector torus
    value and printed chi_top = 1.684(13)e-33 with a pull of -1.5e32 (2D U(1) 8x8, beta = 9, 8 x 4000).  Now the
    plaquette's exact value is the sector's (corrflow.exact.u1_plaquette_in_sector), chi_top is left out and a line
    says why.  Negative control: one configuration in Q = 1 -- the ensemble samples sectors, the all-sector values."""
    q = np.full((2, 40), 1e-17)  # the geometric charge of a Q = 0 configuration, up to rounding
    st = _store(tmp_path / "frozen.zarr", 40, {"topological_charge": q})
    assert frozen_charge(st, "e") == 0
    rows = {r.observable: r for r in ensemble_summary(st, "e")}
    assert "chi_top" not in rows
    sector = exact.u1_plaquette_in_sector(2.0, (4, 4), 0)
    assert rows["plaquette"].exact == sector and abs(sector - exact.u1_plaquette(2.0, (4, 4))) > 1e-3
    code, out = cli("summary", tmp_path / "frozen.zarr", "e")
    table, note = out.split("topological charge Q = 0 on every configuration")
    assert code == 0 and "chi_top" not in table and "chi_top is not estimable" in note, out

    q[1, 7] = 1.0
    st = _store(tmp_path / "moving.zarr", 40, {"topological_charge": q})
    assert frozen_charge(st, "e") is None
    rows = {r.observable: r for r in ensemble_summary(st, "e")}
    assert rows["plaquette"].exact == exact.u1_plaquette(2.0, (4, 4)) and rows["chi_top"].exact is not None


def test_tau_exp_auto_takes_the_slowest_decay(tmp_path):
    """An observable with a slow mode of tau_exp 30 (half its variance) beside the plaquette of random links (no
    autocorrelation): `--tau-exp auto` finds the slow one (within a factor 1.5 of 30 for this seed), applies its
    tau_exp to every row (said in the title, in the form the user would pass it on) and prints where it came from;
    `compare` takes the slowest decay over its base and independent ensembles; a word that is neither a number nor
    auto is refused in one line."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(7)
    phi = math.exp(-1 / 30.0)  # a slow AR(1) process of tau_exp 30 plus white noise of the same variance
    slow = lfilter([math.sqrt(1 - phi**2)], [1.0, -phi], rng.normal(size=(2, 3300)), axis=-1)[:, 300:]
    path = tmp_path / "slow.zarr"
    st = _store(path, 3000, {"polyakov_loop": slow + rng.normal(size=(2, 3000))})
    decay = slowest_decay(st, "e")
    assert decay is not None and decay.observable == "polyakov_loop" and decay.fit.resolved, decay
    assert 20 < decay.tau_exp < 45 and decay.tau_exp == float(f"{decay.fit.tau_exp:.3g}"), decay
    code, out = cli("summary", path, "e", "--tau-exp", "auto")
    assert code == 0, out
    assert f"errors with the exponential tail of tau_exp = {decay.tau_exp:g}" in out, out
    assert f"--tau-exp auto: tau_exp = {decay.fit}" in out and "of polyakov_loop in e" in out, out
    assert f"(--tau-exp {decay.tau_exp:g} gives the same tail)" in out, out
    tail = {r.observable: r.stats.tau_int for r in ensemble_summary(st, "e")}
    assert tail["polyakov_loop"] > 5  # (Wolff's window: the slow mode is half the variance, tau_int ~ 15)
    other = open_store(path, "a")
    other.create_ensemble("s", u1_spec(params={"beta": 2.1, "xi": 1.0, "lam": 0.0}))
    traj, links, per, nxt = dummy_block(2, 3000, 0)
    with other.writer("s") as w:
        w.append(traj, links, per, nxt)
    code, out = cli("compare", "--store", path, "--base", "e", "s", "--tau-exp", "auto")
    assert code == 0 and f"--tau-exp auto: tau_exp = {decay.fit} of polyakov_loop in e" in out, out
    assert f"errors with the exponential tail of tau_exp = {decay.tau_exp:g}" in out, out
    code, out = cli("summary", path, "e", "--tau-exp", "1e9")  # longer than the chains: said, errors still given
    assert code == 0 and "warning: --tau-exp 1e+09 is longer than the chains (3000 trajectories each)" in out, out
    assert "is longer than the chains" not in cli("summary", path, "e", "--tau-exp", "2999")[1]
    cli_refused(path, r"--tau-exp must be a number >= 0 \(0: no tail\) or auto, got 'soon'", "summary", path, "e",
                "--tau-exp", "soon")
    assert math.isfinite(decay.fit.error)
