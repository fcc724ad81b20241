"""The automatic thermalisation cut (corrflow.stats.equilibration) on AR(1) series with a known start-up drift:
the cut removes the bias (pulls against the true mean over 20 seeds) where the uncut mean is biased (negative
control), also for a large drift that settles within a few configurations, and leaves stationary series (nearly)
whole."""

import re

import numpy as np
import pytest
from scipy.signal import lfilter

from corrflow.stats import gamma_method
from corrflow.stats.equilibration import check_kept, equilibration_cut, parse_discard

TAU, N, R = 5.0, 2000, 2


def ar1(seed, drift=0.0, decay=50.0):
    """``R`` AR(1) chains of ``N`` with tau_int = TAU and unit variance, true mean 0, plus ``drift e^{-t/decay}``."""
    rng = np.random.default_rng(seed)
    a = (2 * TAU - 1) / (2 * TAU + 1)
    noise = rng.normal(size=(R, N)) * np.sqrt(1 - a * a)
    noise[:, 0] = rng.normal(size=R)
    x = lfilter([1.0], [1.0, -a], noise, axis=1)
    return x + drift * np.exp(-np.arange(N) / decay)


def test_cut_removes_a_start_up_drift():
    """Drift of 10 noise widths decaying over 50 configurations: uncut means are biased (mean pull over 20 seeds
    about +1.4; its own error 1/sqrt(20) ~ 0.22), cut ones are not (measured residual ~ +0.1)."""
    uncut, cut, lengths = [], [], []
    for s in range(20):
        x = ar1(100 + s, drift=10.0)
        c = equilibration_cut(x)
        lengths.append(c.n_discard)
        uncut.append(gamma_method(x).pull(0.0))
        cut.append(gamma_method(x[:, c.n_discard:]).pull(0.0))
        assert c.error < c.error_uncut and not c.at_limit and c.drift_sigma > 10
    assert np.mean(uncut) > 1.0  # negative control: the drift is a bias of more than 4 sigma of this mean
    assert abs(np.mean(cut)) < 0.7, (np.mean(cut), lengths)  # within ~2 sigma of the measured residual
    assert min(lengths) >= 100 and max(lengths) <= N // 2  # the drift is 4.5 widths at 100 (noise 1/sqrt(2 TAU))


def test_cut_removes_a_short_large_drift():
    """A hot start that settles within a few configurations: 100 noise widths decaying over 3.  It barely changes
    tau_int (the replaced effective-sample-size rule kept all 30 of 30 such series whole, pull +1.4) but inflates the
    variance; the error-minimising cut removes it (measured: mean pull +0.27 over 30 seeds; cuts 8-100, mostly 16)."""
    uncut, cut, lengths = [], [], []
    for s in range(20):
        x = ar1(300 + s, drift=100.0, decay=3.0)
        c = equilibration_cut(x)
        lengths.append(c.n_discard)
        uncut.append(gamma_method(x).pull(0.0))
        cut.append(gamma_method(x[:, c.n_discard:]).pull(0.0))
        assert c.error < c.error_uncut and c.drift_sigma > 10
    assert np.mean(uncut) > 1.0  # negative control
    assert abs(np.mean(cut)) < 0.7, (np.mean(cut), lengths)
    assert min(lengths) >= 8 and max(lengths) <= 100, lengths  # what a cut of 8 leaves is ~0.25 errors of the mean


def test_stationary_series_keep_nearly_everything():
    """Measured over 200 seeds: no cut in 57%, 1.0% of the data discarded on average."""
    cuts = [equilibration_cut(ar1(s)) for s in range(40)]
    lengths = [c.n_discard for c in cuts]
    assert np.mean(np.equal(lengths, 0)) > 0.35 and np.mean(lengths) < 0.03 * N, lengths
    # where noise made a cut, the discarded part does not look like a drift (measured: at most 3.6 in 200 seeds)
    assert all(c.drift_sigma < 5 for c in cuts if c.n_discard) and any(c.n_discard for c in cuts)
    assert all(np.isnan(c.drift_sigma) for c in cuts if not c.n_discard)


def test_several_series_take_the_longest_cut_and_a_chain_that_never_settles_is_flagged():
    x, y = ar1(1), ar1(2, drift=10.0)
    c = equilibration_cut({"still": x, "drifting": y})
    assert c.series == "drifting" and c.n_discard == equilibration_cut(y).n_discard > 0
    ramp = ar1(3) + np.linspace(10.0, 0.0, N)  # drifts over the whole chain
    c = equilibration_cut(ramp)
    assert c.at_limit and c.n_discard == N // 2 and "may not have thermalised" in c.describe()


def test_bad_input_is_refused_in_one_line():
    for bad, match in (({}, "at least one"), ({"a": np.ones((2, 50)), "b": np.ones((2, 40))}, "same n"),
                       (np.full((2, 50), np.nan), "non-finite"), (np.ones((2, 10)), "too short")):
        with pytest.raises(ValueError, match=match):
            equilibration_cut(bad)
    with pytest.raises(ValueError, match="max_fraction"):
        equilibration_cut(ar1(0), max_fraction=1.0)
    assert parse_discard("auto") is None and parse_discard(" 25 ") == 25 and parse_discard(0) == 0
    for bad in ("-3", "many", "1.5"):
        with pytest.raises(ValueError, match="--discard must be"):
            parse_discard(bad)


def test_check_kept_says_how_many_may_go():
    """One wording for "too few trajectories left" in summary, compare, report and the analyses (there were two)."""
    check_kept(40, 30, "e")  # 10 left: enough
    cases = [((40, 31), "cannot discard 31 of the 40 trajectories per chain of ensemble 'e': an error needs at least 10 "
                        "left; use --discard 30 or less"),
             ((9, 0), "ensemble 'e' has 9 trajectories per chain: an error needs at least 10; generate more"),
             ((9, 3), "has 9 trajectories per chain: an error needs at least 10; generate more with --resume"),
             ((40, -1), "--discard must be >= 0, got -1")]
    for (n, d), msg in cases:
        with pytest.raises(ValueError, match=re.escape(msg)):
            check_kept(n, d, "e")
