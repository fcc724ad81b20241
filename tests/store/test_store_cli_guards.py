"""Command-line guards found by a new user's audit (2026-12-07): each case used to do something silently wrong or say
it in library terms; now it is refused in one line (exit 2, nothing changed) or said plainly."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from corrflow.pipeline.tangent import finite_shift_plan
from corrflow.store import open_store

from .store_helpers import cli, cli_refused, cli_up_to_date, dummy_block, u1_spec


def test_train_guards(store_copy, flow_ckpt, tmp_path):
    """`train` over an existing checkpoint replaced it without a word (even one trained for another target, which a
    flowed ensemble records by id); `--from` a flowed ensemble trained on its unweighted images f(U); two values of
    one parameter in --to were resolved silently (the last won)."""
    before = (flow_ckpt / "checkpoint.json").read_text()
    cli_refused(store_copy, r"--out .*flow holds a flow checkpoint \(.*beta': 2\.0.* -> .*beta': 2\.1.*, id .*\): "
                r"--resume continues it; give another --out", "train", "--store", store_copy, "--from", "base", "--to",
                "beta=2.4", "--out", flow_ckpt, "--epochs", "1")
    assert (flow_ckpt / "checkpoint.json").read_text() == before
    cli_refused(store_copy, r"beta is given twice \(2\.2 and 2\.4\)", "train", "--store", store_copy, "--from", "base",
                "--to", "beta=2.2", "--to", "beta=2.4", "--out", tmp_path / "f2")
    code, out = cli("correlate", "--store", store_copy, "--from", "base", "--identity", "--to", "beta=2.1", "--name",
                    "direct")
    assert code == 0, out
    cli_refused(store_copy, r"'direct' is a flowed ensemble .*: train from its base 'base'", "train", "--store",
                store_copy, "--from", "direct", "--to", "beta=2.4", "--out", tmp_path / "f3")
    assert not (tmp_path / "f2").exists() and not (tmp_path / "f3").exists()


def test_a_moved_flow_checkpoint_still_matches(store_copy, flow_ckpt, tmp_path):
    """A flowed ensemble records its flow's content id and directory; rerunning `correlate` with the same flow from a
    copied project said "exists with different settings: flow.checkpoint: stored A vs requested B".  The id decides:
    the rerun finds every base configuration paired: nothing to do, exit status 0, the store unchanged."""
    code, out = cli("correlate", "--store", store_copy, "--from", "base", "--flow", flow_ckpt, "--name", "fl")
    assert code == 0, out
    moved = tmp_path / "elsewhere"
    shutil.copytree(flow_ckpt, moved)
    cli_up_to_date(store_copy, r"up to date fl: all 4 base configurations per chain paired; nothing to do",
                   "correlate", "--store", store_copy, "--from", "base", "--flow", moved, "--name", "fl")


def test_generate_guards(store_copy, tmp_path):
    """`--resume` with a mistyped name started a new ensemble; a run whose every trajectory was rejected was stored
    as a success without a word (a frozen chain that looks like an ensemble)."""
    cli_refused(store_copy, r"--resume: no ensemble 'nosuch' in .*ensembles: base\); check --name", "generate", "u1",
                "--beta", "2", "--shape", "4,4", "--n", "4", "--store", store_copy, "--name", "nosuch", "--resume")
    path = tmp_path / "acc.zarr"
    args = ["generate", "u1", "--beta", "2", "--shape", "4,4", "--n", "4", "--therm", "0", "--store", path]
    code, out = cli(*args, "--step-size", "50", "--name", "frozen")
    assert code == 0 and "warning: acceptance 0.000: the chains hardly move" in out, out
    code, out = cli(*args, "--name", "fine")
    assert code == 0 and "warning: acceptance" not in out, out  # the negative control (step 0.2)


def _pair(path, charge: bool = True):
    """Ensembles ``e`` (beta 2.0) and ``s`` (2.1) of random 4x4 links, with a stored topological charge (random
    integers, returned per ensemble) or without."""
    rng = np.random.default_rng(3)
    st = open_store(path, "a")
    charges = {}
    extra = ("topological_charge",) if charge else ()
    for name, beta in (("e", 2.0), ("s", 2.1)):
        st.create_ensemble(name, u1_spec(params={"beta": beta, "xi": 1.0, "lam": 0.0}, measurements=("plaquette",
                                                                                                    *extra)))
        traj, links, per, nxt = dummy_block(2, 40, 0, rng=rng, extra=extra)
        if charge:
            per["topological_charge"] = charges[name] = rng.integers(-2, 3, (2, 40)).astype(float)
        with st.writer(name) as w:
            w.append(traj, links, per, nxt)
    return path, charges


def test_compare_observable_lists_and_chi_top(tmp_path):
    """`compare --obs plaquette,chi_top` said "observable 'plaquette,chi_top' is not stored" (only a repeated --obs
    worked), and chi_top -- which summary and derivative show -- was refused everywhere else, `derivative --compare`
    even suggesting `corrflow measure ... chi_top`, which does not exist.  chi_top is Q^2 / V of the stored charge;
    without the charge the advice names it.  A --discard that leaves too little says how much may go."""
    from corrflow.compare import compare_ensembles

    path, q = _pair(tmp_path / "q.zarr")
    code, out = cli("compare", "--store", path, "--base", "e", "s", "--obs", "plaquette,chi_top")
    assert code == 0 and "plaquette" in out and "chi_top" in out, out
    rows = {r.observable: r for r in compare_ensembles(open_store(path), "e", ["s"], ["chi_top"])}
    assert np.isclose(rows["chi_top"].difference.value, (np.mean(q["s"] ** 2) - np.mean(q["e"] ** 2)) / 16)
    plan = finite_shift_plan(open_store(path), "e", ["s"], "beta", ["chi_top"])  # derivative --compare
    assert list(plan) == ["independent"] and plan["independent"][0] == "s" and np.isclose(plan["independent"][1], 0.1)
    cli_refused(path, r"cannot discard 35 of the 40 trajectories per chain of ensemble 'e': an error needs at least 10 left; "
                r"use --discard 30 or less", "compare", "--store", path, "--base", "e", "s", "--discard", "35")

    plain, _ = _pair(tmp_path / "plain.zarr", charge=False)
    with pytest.raises(ValueError, match=r"--compare needs topological_charge stored in 'e'; add with `corrflow "
                       r"measure .*plain\.zarr e topological_charge`"):
        finite_shift_plan(open_store(plain), "e", ["s"], "beta", ["chi_top"])


def test_report_and_measure_refusals_leave_nothing(store_copy, tmp_path):
    """`report --analysis foo` was refused but left an empty --out directory; `measure` on a store that does not
    exist said "no ensemble ... available: none" where every other command says there is no store."""
    out = tmp_path / "rep"
    cli_refused(store_copy, r"foo", "report", "--store", store_copy, "--analysis", "foo", "--out", out)
    assert not out.exists()
    code, text = cli("measure", tmp_path / "nope.zarr", "base", "wilson_1x1")
    assert code == 2 and "no store at" in text and not (tmp_path / "nope.zarr").exists(), text
