"""Shared stores for the tests of :mod:`corrflow.store` (helpers: ``store_helpers.py``)."""

from __future__ import annotations

import pytest

from corrflow.ildg import write_ildg
from corrflow.pipeline import generate_to_store
from corrflow.store import open_store

from .store_helpers import BASE, CONFIG, N_BASE, N_THIN1, THEORY, THIN1, copy_store, su3_config


@pytest.fixture(scope="session")
def base_path(tmp_path_factory):
    """A store with ensemble ``base`` (BASE settings, 4 stored trajectories per chain); never modified."""
    path = tmp_path_factory.mktemp("base") / "runs.zarr"
    st = open_store(path, "a")
    summary = generate_to_store(st, "base", THEORY, CONFIG, n_traj=N_BASE, **BASE)
    assert summary.committed == N_BASE and summary.n_new == N_BASE
    return path


@pytest.fixture(scope="session")
def thin1_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("thin1") / "runs.zarr"
    generate_to_store(open_store(path, "a"), "t1", THEORY, CONFIG, n_traj=N_THIN1, **THIN1)
    return path


@pytest.fixture
def store_copy(base_path, tmp_path):
    """A private copy of the base store (for tests that modify or damage it)."""
    return copy_store(base_path, tmp_path)


@pytest.fixture
def ildg_files(tmp_path):
    good = [tmp_path / "cfg0.lime", tmp_path / "cfg1.lime"]
    for i, f in enumerate(good):
        write_ildg(f, su3_config(i))
    bad = tmp_path / "notlime.lime"
    bad.write_bytes(b"this is a text file, not a LIME container\n" * 8)
    return good, bad


@pytest.fixture
def flow_ckpt(tmp_path):
    """A (untrained, identity) flow checkpoint for the base ensemble's theory, beta 2.0 -> 2.1: no training, no
    compilation."""
    import corrflow
    from corrflow.flows import make_flow
    from corrflow.flows.train import TrainConfig, save_checkpoint

    th = corrflow.make_theory("u1", (4, 4), beta=2.0)
    path = tmp_path / "flow"
    flow = make_flow("u1", (4, 4))
    save_checkpoint(path, flow, flow.init_params(), th, th.replace(beta=2.1), TrainConfig(), 1, [{"loss": 0.0}])
    return path
