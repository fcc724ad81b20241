"""verify: every committed chunk checksummed, damage reported by ensemble, array, chain and trajectories, and
the same precise message from every read."""

from __future__ import annotations

import re

import numpy as np
import pytest
import zarr

from corrflow.checks import gauge_config_check
from corrflow.store import StoreError, open_store

from .store_helpers import N_BASE, assert_unchanged, cli, cli_refused, copy_store, dummy_block, snapshot, u1_spec


# ----------------------------------------------------------------------------------------
# damaged stores, verify
# ----------------------------------------------------------------------------------------


def test_verify_healthy_recomputes_plaquettes(base_path):
    st = open_store(base_path, "r")
    before = snapshot(base_path)
    rep = st.verify("base", check=gauge_config_check)
    assert rep.ok, str(rep)
    assert rep.checked == 8 and rep.committed == N_BASE and not rep.sampled
    # every chunk of every array: links 2 chains x 2 chunks, traj, chain, 5 per-trajectory arrays x 2 chains
    assert rep.chunks == 4 + 1 + 1 + 5 * 2, rep.chunks
    assert "OK" in str(rep) and "16 chunks" in str(rep)
    code, out = cli("verify", base_path)
    assert code == 0 and "base: OK" in out and "8 configurations checked" in out
    assert_unchanged(base_path, before)
    assert st.verify("base").checked == 0  # the store knows no physics: no check unless one is passed in


def test_verify_reports_plaquette_mismatch(store_copy):
    grp = zarr.open_group(store_copy, mode="a")["base"]
    stored = float(grp["plaquette"][0, 1])
    grp["plaquette"][0, 1] = stored + 0.25
    st = open_store(store_copy, "r")
    before = snapshot(store_copy)
    rep = st.verify("base", check=gauge_config_check, n_check=-1)
    assert not rep.ok and not rep.missing and not rep.corrupt
    assert any(m.startswith("chain 0, trajectory 8 (stored position 1): stored plaquette") for m in rep.mismatched), \
        rep.mismatched
    code, out = cli("verify", store_copy, "base", "--configs", -1)
    assert code == 1 and "check failed at chain 0, trajectory 8 (stored position 1): stored plaquette" in out, out
    assert_unchanged(store_copy, before)


def test_verify_and_read_corrupt_links_chunk(store_copy, tmp_path):
    chunk = store_copy / "base" / "links" / "c" / "0" / "0" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    for i in range(16, 24):
        data[i] ^= 0x5A
    chunk.write_bytes(bytes(data))
    st = open_store(store_copy, "r")
    before = snapshot(store_copy)
    ds = st.open_ensemble("base")  # opening reads no link chunk, so it still works
    rep = st.verify("base")
    assert not rep.ok
    where = "ensemble 'base', array links, chain 0, trajectories 5..11 (stored positions 0..2)"
    assert rep.corrupt == [f"base/links/c/0/0/0/0/0 ({where}): CRC32C checksum mismatch"
                           f"{rep.corrupt[0].split('checksum mismatch')[1]}"], rep.corrupt
    precise = re.escape(f"damaged chunk base/links/c/0/0/0/0/0 ({where}): CRC32C checksum mismatch")
    with pytest.raises(StoreError, match=precise):
        ds.links.isel(chain=0).values
    with pytest.raises(StoreError, match=precise):
        st.load_configs("base", 0, [0])
    ds.links.isel(chain=1).values  # the other chain is intact
    st.load_configs("base", 0, [3])  # and so is the next chunk of chain 0
    code, out = cli("verify", store_copy, "--configs", 0)
    assert code == 1 and f"corrupt chunk base/links/c/0/0/0/0/0 ({where}): CRC32C checksum mismatch" in out
    # the same message from every command that reads configurations
    code, out = cli("train", "--store", store_copy, "--from", "base", "--to", "beta=2.1", "--out", tmp_path / "f")
    assert code == 2 and f"damaged chunk base/links/c/0/0/0/0/0 ({where})" in out, out
    assert not (tmp_path / "f").exists()
    rw = copy_store(store_copy, tmp_path, "rw.zarr")
    before_rw = snapshot(rw)
    code, out = cli("measure", rw, "base", "wilson_1x1")
    assert code == 2 and "damaged chunk base/links/c/0/0/0/0/0 (ensemble 'base', array links, chain 0" in out, out
    code, out = cli("correlate", "--store", rw, "--from", "base", "--identity", "--to", "beta=2.1", "--name", "d")
    assert code == 2 and "damaged chunk base/links/c/0/0/0/0/0 (ensemble 'base', array links, chain 0" in out, out
    # nothing measured or committed; the interrupted runs' remains are rolled back by the next writer
    st_rw = open_store(rw, "a")
    assert "wilson_1x1" not in st_rw.open_ensemble("base", verify=False)
    assert "d" not in st_rw.ensembles() or st_rw.info("d")["committed"] == 0
    assert before_rw.keys() <= snapshot(rw).keys()
    assert_unchanged(store_copy, before)


def test_verify_missing_chunk(store_copy):
    (store_copy / "base" / "plaquette" / "c" / "1" / "0").unlink()
    st = open_store(store_copy, "r")
    before = snapshot(store_copy)
    rep = st.verify("base")
    assert rep.missing == ["base/plaquette/c/1/0"] and not rep.ok
    code, out = cli("verify", store_copy)
    assert code == 1 and "missing chunk base/plaquette/c/1/0" in out
    assert_unchanged(store_copy, before)


def test_open_ensemble_verifies_integrity(store_copy):
    """Opening runs a light integrity check: a damaged ensemble raises naming the chunk; verify=False
    reads what is intact."""
    st = open_store(store_copy, "r")
    assert st.open_ensemble("base").sizes["traj"] == N_BASE
    (store_copy / "base" / "delta_H" / "c" / "0" / "0").unlink()
    with pytest.raises(StoreError, match=r"(?s)integrity check failed.*missing chunk base/delta_H/c/0/0"):
        st.open_ensemble("base")
    ds = st.open_ensemble("base", verify=False)
    assert np.all(np.isnan(ds.delta_H.values[0])) and np.all(np.isfinite(ds.delta_H.values[1]))


def test_verify_ok_when_a_chunk_equals_the_fill_value(tmp_path):
    """A chain whose trajectories were all rejected (accepted == fill value False) or an imported ensemble
    (delta_H == fill value NaN) is healthy, but its chunk is absent on disk."""
    st = open_store(tmp_path / "s.zarr", "a")
    st.create_ensemble("e", u1_spec(n_chains=1))
    traj, links, per, nxt = dummy_block(1, 3, 0)
    per["accepted"][:] = False
    per["delta_H"][:] = np.nan
    with st.writer("e") as w:
        w.append(traj, links, per, nxt)
    rep = st.verify("e")
    assert rep.ok, str(rep)


def test_verify_ok_after_ildg_import(tmp_path, ildg_files):
    good, _ = ildg_files
    path = tmp_path / "imp.zarr"
    code, out = cli("import-ildg", path, *good, "--name", "imp", "--beta", 6)
    assert code == 0, out
    assert open_store(path).info("imp")["committed"] == 2
    code, out = cli("verify", path)
    assert code == 0, out


def test_verify_ok_after_extension_past_observable_chunk(tmp_path):
    st = open_store(tmp_path / "s.zarr", "a")
    st.create_ensemble("e", u1_spec(n_chains=1))
    with st.writer("e") as w:
        w.append(*dummy_block(1, 1000, 0))
        w.write_observable("wilson_1x1", np.zeros((1, 1000)), 0)
        w.append(*dummy_block(1, 30, 1000))
    ds = st.open_ensemble("e")
    assert np.isnan(ds.wilson_1x1.values[0, 1000:]).all()
    rep = st.verify("e", sample=2)
    assert rep.ok, str(rep)




# ----------------------------------------------------------------------------------------
# every array type: a flipped byte or a truncated chunk is found by verify and named by every read
# ----------------------------------------------------------------------------------------

T0 = 10  # global index of the first stored trajectory: messages must name trajectories, not only positions


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A store with every kind of array: an ensemble with links, per-trajectory data, a scalar and a flow-time
    observable; a flowed ensemble; an ensemble in thermalisation (checkpoint slot in use).  Chunks of 2
    trajectories for links (3 per chain), 1024 for the rest."""
    path = tmp_path_factory.mktemp("zoo") / "zoo.zarr"
    st = open_store(path, "a")
    st.create_ensemble("hmc", u1_spec(), chunk_traj=2)
    st.create_ensemble("flowed", u1_spec(kind="flowed", flow={"source": "hmc"}), chunk_traj=2)
    st.create_ensemble("therm", u1_spec(n_therm=10), chunk_traj=2)
    traj, links, per, nxt = dummy_block(2, 5, T0)
    with st.writer("hmc") as w:
        w.append(traj, links, per, nxt)
        w.write_observable("wilson_1x1", np.ones((2, 5)), 0)
        w.write_observable("flow_E", np.ones((2, 5, 3)), 0, extra={"flow_time": [0.0, 0.1, 0.2]})
    flowed = dict(per, source_chain=np.repeat([[0], [1]], 5, axis=1), source_traj=np.tile(traj, (2, 1)),
                  log_weight=np.zeros((2, 5)), log_jacobian=np.zeros((2, 5)))
    with st.writer("flowed") as w:
        w.append(traj, links, flowed, nxt)
    with st.writer("therm") as w:
        w.save_checkpoint(links[:, 0], np.zeros(2), 3, "therm")
    return path


CASES = [("hmc", v) for v in ("links", "traj", "chain", "action", "delta_H", "accepted", "step_size", "plaquette",
                              "wilson_1x1", "flow_E")]
CASES += [("flowed", v) for v in ("source_chain", "source_traj", "log_weight", "log_jacobian")]
CASES += [("therm", v) for v in ("checkpoint_links", "checkpoint_action")]


def _target(path, ens, var):
    """(chunk file, key, expected location text) of the chunk to damage: chain 1 / the last chunk."""
    d = path / ens / var / "c"
    files = sorted(f for f in d.rglob("*") if f.is_file())
    f = files[-1]
    key = f"{ens}/{var}/c/" + "/".join(f.relative_to(d).parts)
    parts = [f"ensemble {ens!r}, array {var}"]
    if var.startswith("checkpoint"):
        parts += ["checkpoint slot 0"] + (["chains 0..1"])
    elif var == "chain":
        parts += ["chains 0..1"]
    elif var == "traj":  # the global indices are what is damaged: positions only
        parts += ["stored positions 0..4"]
    elif var == "links":
        parts += ["chain 1", f"trajectory {T0 + 4} (stored position 4)"]
    else:
        parts += ["chain 1", f"trajectories {T0}..{T0 + 4} (stored positions 0..4)"]
    return f, key, ", ".join(parts)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
@pytest.mark.parametrize("ens,var", CASES)
def test_damage_of_every_array_type_is_found_and_named(zoo, tmp_path, ens, var, damage):
    path = copy_store(zoo, tmp_path)
    f, key, where = _target(path, ens, var)
    data = bytearray(f.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01  # one bit
    else:
        data = data[: min(len(data) - 1, 100)]  # truncated (to 100 bytes where the chunk is larger)
    f.write_bytes(bytes(data))
    st = open_store(path, "r")
    before = snapshot(path)
    rep = st.verify(ens)
    assert not rep.ok and len(rep.problems) == 1, str(rep)
    prob = rep.problems[0]
    assert prob.key == key and prob.where == where, (prob.key, prob.where)
    assert ("CRC32C checksum mismatch" if damage == "flip" else "truncated: ") in prob.problem, prob.problem
    for other in {"hmc", "flowed", "therm"} - {ens}:
        assert st.verify(other).ok
    code, out = cli("verify", path, "--configs", 0)
    assert code == 1 and f"corrupt chunk {key} ({where}):" in out, out
    assert sum(other in out for other in ("hmc: OK", "flowed: OK", "therm: OK")) == 2
    if not var.startswith("checkpoint"):  # the same location from every read through the store
        with pytest.raises(StoreError, match=re.escape(f"damaged chunk {key} ({where})")):
            st.array(ens, var)[...]
        with pytest.raises(StoreError, match=re.escape(f"damaged chunk {key} ({where})")):
            st.open_ensemble(ens, verify=False)[var].values if var not in ("traj", "chain") else \
                st.open_ensemble(ens, verify=False)
    assert_unchanged(path, before)


def test_verify_sample_is_a_quick_look(zoo, tmp_path):
    """--sample N checksums N random links chunks (and all the small arrays); presence of every chunk is checked."""
    path = copy_store(zoo, tmp_path)
    f, key, _ = _target(path, "hmc", "links")
    rep = open_store(path).verify("hmc", sample=0)
    assert rep.ok and rep.sampled and rep.chunks == 1 + 1 + 7 * 2  # no links chunk read
    f.write_bytes(f.read_bytes()[:-1])
    assert open_store(path).verify("hmc", sample=0).ok  # not looked at
    assert not open_store(path).verify("hmc", sample=6).ok  # all 6 links chunks
    f.unlink()
    rep = open_store(path).verify("hmc", sample=0)
    assert rep.missing == [key]
    code, out = cli("verify", path, "hmc", "--sample", 2)
    assert code == 1 and f"missing chunk {key}" in out


def test_deleted_or_damaged_metadata_is_reported_not_a_traceback(zoo, tmp_path):
    path = copy_store(zoo, tmp_path)
    (path / "hmc" / "links" / "zarr.json").unlink()
    before = snapshot(path)
    rep = open_store(path).verify("hmc")
    assert rep.missing == ["hmc/links/zarr.json"] and "missing array metadata hmc/links/zarr.json" in str(rep)
    code, out = cli("verify", path)
    assert code == 1 and "hmc/links/zarr.json" in out and "flowed: OK" in out
    code, out = cli("info", path)
    assert code == 0 and "flowed" in out and "therm" in out
    for args in (("measure", path, "hmc", "wilson_2x2"), ("summary", path, "hmc")):
        cli_refused(path, r"array 'links' of ensemble 'hmc' .* is damaged|missing array metadata hmc/links/zarr.json", *args)
    assert_unchanged(path, before)
    # a truncated ensemble zarr.json: that ensemble is reported, every other one still listed and readable
    meta = path / "flowed" / "zarr.json"
    meta.write_bytes(meta.read_bytes()[:57])
    before = snapshot(path)
    st = open_store(path)
    assert st.ensembles() == ["hmc", "therm"]
    assert "truncated or invalid JSON" in st.incomplete()["flowed"]
    cli_refused(path, r"ensemble 'flowed' in .* is damaged: flowed/zarr\.json is unreadable \(truncated or invalid "
                r"JSON, 57 bytes\)\. Restore it from a backup", "info", path, "flowed")
    code, out = cli("info", path)
    assert code == 0 and "therm" in out and "DAMAGED" in out, out
    assert "flowed: damaged: flowed/zarr.json is unreadable (truncated or invalid JSON, 57 bytes); restore it" in out
    code, out = cli("verify", path)
    assert code == 1 and "flowed: DAMAGED" in out and "therm: OK" in out
    cli_refused(path, r"ensemble 'flowed' .* is damaged", "generate", "u1", "--beta", 2, "--shape", "4,4", "--n", 2,
                "--name", "flowed", "--store", path)
    assert_unchanged(path, before)
