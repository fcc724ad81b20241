"""Sharding of chain batches and of lattices over several devices (:mod:`corrflow.sharding`).

The multi-device checks need ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` before JAX is
imported, so they run this file as a script in a subprocess (``python tests/test_sharding.py u1``);
the ``_check_*`` functions below are that script's body and assert inside the child.

Cost control: every HMC block shape is a separate XLA compilation.  The U(1) child compiles with
the default optimisation level; the SU(3) child (4D, the expensive compile) uses
``--xla_backend_optimization_level=0``; sharded and unsharded runs are always compiled with the same
flags, so the equality checks are unaffected.  The two children are separate tests, so ``pytest -n 2``
runs them side by side.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

N_DEV = 4
ROOT = Path(__file__).resolve().parents[1]


def _bitwise(a, b) -> bool:
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _assert_spread(x, n_dev: int = N_DEV) -> None:
    """``x`` is split along its leading axis over ``n_dev`` distinct devices."""
    shards = x.addressable_shards
    assert len({s.device for s in shards}) == n_dev, x.sharding
    assert all(s.data.shape[0] == x.shape[0] // n_dev for s in shards), [s.data.shape for s in shards]
    assert x.sharding.spec[0] == "chains", x.sharding


def _check_chain_sharding(theory, config, n_traj: int, block_size: int) -> dict:
    """``generate`` with and without a 4-device ``"chains"`` mesh; returns the reference run."""
    import jax
    import numpy as np

    from corrflow.generate import GaugeMeasurements, generate, run_blocks
    from corrflow.sharding import chain_mesh

    assert len(jax.devices()) == N_DEV, jax.devices()
    mesh = chain_mesh()
    key = jax.random.PRNGKey(5)
    measure = GaugeMeasurements(theory.group)
    kw = dict(n_chains=N_DEV, n_traj=n_traj, n_therm=0, block_size=block_size, measure=measure, keep_configs=True)
    ref = generate(key, theory, config, **kw)
    got = generate(key, theory, config, mesh=mesh, **kw)
    assert set(ref) == set(got)
    for k in ref:
        assert _bitwise(ref[k], got[k]), (k, np.max(np.abs(ref[k] - got[k])))
    assert ref["accepted"].any()  # the comparison covers accepted trajectories
    # continuing from given links and action (same compiled block): outputs on all devices, one chain each
    links = got["links"]
    action = np.asarray(theory.action(links))
    blk = next(run_blocks(key, theory, config, links, block_size, block_size=block_size, first_index=n_traj,
                          measure=measure, keep_links=True, action=action, mesh=mesh))
    for x in (blk.state.links, blk.state.action, blk.links, blk.action, blk.info.delta_H, blk.info.accepted):
        _assert_spread(x)
    return {"key": key, "kw": kw, "ref": ref}


def _check_sites(theory, batch: int, hlo: bool = False) -> None:
    """``theory.action`` / ``theory.force`` on links split along ``L_0`` equal the unsharded values."""
    import jax
    import numpy as np

    from corrflow.generate import initial_links
    from corrflow.sharding import shard_sites, site_mesh

    mesh = site_mesh()
    u = initial_links(jax.random.PRNGKey(1), theory, batch)
    us = shard_sites(u, mesh, batch_ndim=1)
    assert us.sharding.spec[:2] == (None, "sites"), us.sharding
    assert len({s.device for s in us.addressable_shards}) == N_DEV
    assert all(s.data.shape[1] == theory.shape[0] // N_DEV for s in us.addressable_shards)
    action, force = jax.jit(theory.action), jax.jit(theory.force)
    a0, f0 = action(u), force(u)
    a1, f1 = action(us), force(us)
    assert f1.sharding.spec[:2] == (None, "sites"), f1.sharding  # stays distributed
    np.testing.assert_allclose(np.asarray(a1), np.asarray(a0), rtol=1e-12, atol=0)
    np.testing.assert_allclose(np.asarray(f1), np.asarray(f0), rtol=0, atol=1e-12)
    if hlo:
        assert "collective-permute" in force.lower(us).compile().as_text()  # the halo exchange for jnp.roll


def _check_u1() -> None:
    import jax
    import numpy as np
    import pytest

    import corrflow
    from corrflow.generate import generate, run_blocks
    from corrflow.sharding import chain_mesh, make_mesh, shard_chains

    theory = corrflow.make_theory("u1", (8, 8), beta=2.0)
    config = corrflow.HMCConfig(0.2, 4, "omelyan")
    run = _check_chain_sharding(theory, config, n_traj=4, block_size=2)
    _check_sites(theory, batch=2, hlo=True)

    # chains x sites mesh (2 x 2): the same chain to rounding (XLA fuses the split arrays differently)
    key, kw, ref = run["key"], run["kw"], run["ref"]
    got = generate(key, theory, config, mesh=make_mesh(None, ("chains", "sites"), (2, 2)), **kw)
    for k in ("accepted", "traj"):
        assert _bitwise(ref[k], got[k]), k
    for k in ("links", "configs", "plaquette", "delta_H"):
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-12)

    # divisibility errors say how many chains to use
    mesh = chain_mesh()
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match=r"cannot shard 6 chains over 4 devices.*use 4 or 8 chains"):
        shard_chains({"links": np.zeros((6, 3)), "action": np.zeros(6)}, mesh)
    with pytest.raises(ValueError, match=r"cannot shard 3 chains over 4 devices.*use 4 chains"):
        next(run_blocks(key, theory, config, np.zeros((3,) + theory.link_shape), 1, mesh=mesh))
    with pytest.raises(ValueError, match=r"cannot shard 6 chains"):
        generate(key, theory, config, n_chains=6, n_traj=1, n_therm=0, mesh=mesh)
    with pytest.raises(ValueError, match=r"L_0=6 over 4 devices"):
        from corrflow.sharding import shard_sites, site_mesh

        shard_sites(np.zeros((6, 8, 2)), site_mesh())
    with pytest.raises(ValueError, match="5 devices"):
        chain_mesh(5)
    assert chain_mesh(2).shape == {"chains": 2}


def _check_su3() -> None:
    import corrflow

    theory = corrflow.make_theory("su3", (2, 2, 2, 2), beta=5.7)
    _check_chain_sharding(theory, corrflow.HMCConfig(0.1, 3, "leapfrog"), n_traj=2, block_size=2)
    _check_sites(corrflow.make_theory("su3", (4, 2, 2, 2), beta=5.7), batch=1)


def _run_child(which: str, extra_flags: str = "") -> None:
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={N_DEV} {extra_flags}".strip(),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, __file__, which], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"child {which!r} failed:\n{proc.stdout}\n{proc.stderr[-6000:]}"
    assert f"OK {which}" in proc.stdout


def test_u1_chains_and_sites_on_4_devices():
    """2D U(1) 8x8, 4 chains: sharded == single device bit for bit; site split; divisibility errors."""
    _run_child("u1")


def test_su3_chains_and_sites_on_4_devices():
    """4D SU(3) 2^4, 4 chains: sharded == single device bit for bit; force/action on a split 4x2^3."""
    _run_child("su3", "--xla_backend_optimization_level=0")


def test_mesh_arguments_single_process():
    """Mesh construction errors (no extra devices needed)."""
    import jax
    import numpy as np

    from corrflow.sharding import chain_mesh, make_mesh, shard_chains

    n = len(jax.local_devices())
    with pytest.raises(ValueError, match=f"asked for {n + 1} devices"):
        chain_mesh(n + 1)
    with pytest.raises(ValueError, match="distinct names"):
        make_mesh(None, ("chain",))
    with pytest.raises(ValueError, match="give the mesh shape"):
        make_mesh(None, ("chains", "sites"))
    mesh = chain_mesh()
    assert mesh.axis_names == ("chains",) and mesh.size == n
    x = shard_chains({"a": np.arange(2 * n), "s": np.float64(1.0)}, mesh)
    assert tuple(x["a"].sharding.spec) == ("chains",) and tuple(x["s"].sharding.spec) == ()
    np.testing.assert_array_equal(np.asarray(x["a"]), np.arange(2 * n))


if __name__ == "__main__":  # child process: XLA_FLAGS is already set in the environment
    import corrflow  # noqa: F401  (x64)

    {"u1": _check_u1, "su3": _check_su3}[sys.argv[1]]()
    print(f"OK {sys.argv[1]}")
