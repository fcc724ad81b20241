"""Imported ILDG configurations as a base ensemble: import-ildg -> train -> correlate through the CLI, the
flowed ensemble's provenance and weights, and clear refusals of unusable ILDG data."""

import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

import corrflow  # noqa: F401  (enables x64)
from corrflow.cli import app
from corrflow.flows.build import DEFAULT_SMOOTHING
from corrflow.flows.train import load_checkpoint
from corrflow.groups import SUN
from corrflow.ildg import read_ildg, read_lime_records, write_ildg
from corrflow.store import open_store

G = SUN(3)
SHAPE = (4, 2, 2, 2)  # (t, x, y, z): time differs from space, so a layout mix-up changes the shape
N_CFG = 6
runner = CliRunner()


def cli(*args):
    res = runner.invoke(app, [str(a) for a in args])
    return res.exit_code, " ".join(res.output.split())


def smooth_configs(n, shape, seed=0, spread=0.35):
    """SU(3) links near the identity, ``exp(spread * xi^a T^a)`` (plaquettes ~0.6, like beta ~6)."""
    x = spread * G.random_algebra(jax.random.PRNGKey(seed), (n,) + shape + (4,))
    return np.asarray(G.exp_left(x, G.identity((n,) + shape + (4,))))


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    d = tmp_path_factory.mktemp("ildg_base")
    configs = smooth_configs(N_CFG, SHAPE)
    files = []
    for i, u in enumerate(configs):
        f = d / f"cfg_{i:03d}.lime"
        write_ildg(f, u, precision=64 if i % 2 == 0 else 32, lfn=f"test/cfg{i}")  # mixed precisions
        files.append(f)
    store = d / "s.zarr"
    code, out = cli("import-ildg", store, *files, "--name", "imp", "--beta", 5.8)
    assert code == 0, out
    return d, store, files


def test_imported_ensemble_holds_the_files(imported):
    _, store, files = imported
    st = open_store(store)
    spec = st.spec("imp")
    assert spec.kind == "imported" and spec.shape == SHAPE and spec.params["beta"] == 5.8
    assert spec.flow["source_files"] == [str(f) for f in files]
    for i in (0, 1):  # double and single precision files, bit for bit
        np.testing.assert_array_equal(st.load_configs("imp", 0, [i])[0], read_ildg(files[i], dtype=np.complex128)[0])


def test_train_and_correlate_from_imported_ensemble(imported):
    d, store, _ = imported
    code, out = cli("train", "--store", store, "--from", "imp", "--to", "beta=5.9", "--out", d / "flow", "--epochs", 2,
                    "--batch-size", 3, "--sweeps", 1, "--n-train", N_CFG, "--lr", 0.05)
    assert code == 0, out
    ck = load_checkpoint(d / "flow")
    assert ck["base"].params()["beta"] == 5.8 and ck["target"].params()["beta"] == 5.9
    assert tuple(ck["flow"].shape) == SHAPE and np.all(np.isfinite(np.asarray(ck["params"])))
    # the default 4D SU(3) flow: one sweep with held-out smoothing terms, trained by Gauss-Newton
    assert ck["flow"].smoothing == DEFAULT_SMOOTHING and ck["config"].optimizer == "linear"
    code, out = cli("correlate", "--store", store, "--from", "imp", "--flow", d / "flow", "--name", "flowed",
                    "--batch", 4)
    assert code == 0, out
    code, out = cli("correlate", "--store", store, "--from", "imp", "--identity", "--to", "beta=5.9", "--name",
                    "direct", "--batch", 4)
    assert code == 0, out

    st = open_store(store)
    for name, flow_id in (("flowed", ck["id"]), ("direct", "identity")):
        spec = st.spec(name)
        assert spec.kind == "flowed" and spec.params["beta"] == 5.9
        assert spec.flow["source"] == "imp" and spec.flow["flow_id"] == flow_id
        assert spec.flow["source_params"]["beta"] == 5.8
        ds = st.open_ensemble(name)
        assert ds.sizes["traj"] == N_CFG
        assert np.all(np.isfinite(ds.log_weight.values)) and np.all(np.isfinite(ds.log_jacobian.values))
        np.testing.assert_array_equal(ds.source_traj.values[0], np.arange(N_CFG))
    assert np.all(st.open_ensemble("direct").log_jacobian.values == 0.0)
    assert np.all(np.abs(st.open_ensemble("flowed").log_jacobian.values) > 0)

    # the stored flowed links and weights are the flow applied to the imported links
    u = st.load_configs("imp", 0, [1, 4])
    uf, lj = ck["flow"].forward(ck["params"], jnp.asarray(u))
    fl = st.open_ensemble("flowed")
    np.testing.assert_allclose(st.load_configs("flowed", 0, [1, 4]), np.asarray(uf), atol=1e-13)
    np.testing.assert_allclose(fl.log_jacobian.values[0, [1, 4]], np.asarray(lj), atol=1e-10)
    lw = -ck["target"].action(uf) + ck["base"].action(jnp.asarray(u)) + lj
    np.testing.assert_allclose(fl.log_weight.values[0, [1, 4]], np.asarray(lw), atol=1e-9)
    code, out = cli("info", store)
    assert code == 0 and "paired with imp via flow " + ck["id"] in out, out


def test_derivative_on_too_few_imported_configurations_says_import_more(imported):
    _, store, _ = imported
    code, out = cli("derivative", "--store", store, "imp", "--obs", "plaquette")
    assert code == 2 and "too few for a held-out fit" in out and "import more files under another --name" in out, out
    assert "corrflow generate" not in out and "Traceback" not in out


def refused(tmp_path, match, files, *options):
    store = tmp_path / "new.zarr"
    code, out = cli("import-ildg", store, *files, "--name", "bad", "--beta", 6.0, *options)
    assert code == 2, out
    assert "error:" in out and "Traceback" not in out, out
    assert match in out, out
    assert not store.exists()  # every file is checked before the store is touched


def test_import_refuses_mixed_lattice_sizes(imported, tmp_path):
    _, _, files = imported
    other = tmp_path / "small.lime"
    write_ildg(other, read_ildg(files[0])[0][:2])  # a valid 2^4 configuration
    refused(tmp_path, "lattice (2, 2, 2, 2) differs from the first file's (4, 2, 2, 2)", [files[0], other])


def test_import_refuses_non_su3_data(imported, tmp_path):
    _, _, files = imported
    u = read_ildg(files[0])[0]
    scaled = tmp_path / "scaled.lime"
    write_ildg(scaled, 1.01 * u)  # not unitary
    refused(tmp_path, "not SU(3) matrices: max |U U^dag - 1|", [files[0], scaled])
    phase = tmp_path / "u3.lime"
    write_ildg(phase, np.exp(0.2j) * u)  # unitary, det = e^{0.6 i}
    refused(tmp_path, "not special unitary: max |det U - 1|", [phase])
    su2 = tmp_path / "su2.lime"  # another field type in the ildg-format record
    su2.write_bytes(files[0].read_bytes().replace(b"<field>su3gauge</field>", b"<field>su2gauge</field>"))
    refused(tmp_path, "unsupported field 'su2gauge'", [su2])
    nan = tmp_path / "nan.lime"  # a NaN in a time slice after the first used to be imported without a word
    write_ildg(nan, u, checksum=False)
    blob = bytearray(nan.read_bytes())
    rec = next(r for r in read_lime_records(nan) if r.type == "ildg-binary-data")
    rank = 0 + 2 * (1 + 2 * (0 + 2 * 1))  # site (x, y, z, t) = (0, 1, 0, 1) of the 2x2x2x4 lattice, x fastest
    blob[rec.offset + 576 * rank:rec.offset + 576 * rank + 8] = struct.pack(">d", np.nan)  # U_x[0][0], real part
    nan.write_bytes(bytes(blob))
    refused(tmp_path, "non-finite numbers (nan or inf), the first in the x-link at site (x, y, z, t) = (0, 1, 0, 1)",
            [files[0], nan])


def test_import_refuses_the_same_configuration_twice(imported, tmp_path):
    _, _, files = imported
    refused(tmp_path, f"{files[1]} is given twice (files 2 and 3)", [files[0], files[1], files[1]])
    copy = tmp_path / "copy.lime"
    copy.write_bytes(files[1].read_bytes())
    refused(tmp_path, f"{copy} holds the same configuration as {files[1]}", [files[0], files[1], copy])


def test_export_records_plaquette_and_beta_that_import_checks(imported, tmp_path):
    """export-ildg writes an xlf-info record (plaquette, trajectory, beta); import-ildg compares the links'
    plaquette and --beta with it: a file read in another matrix convention (here: every link transposed, which
    changes the non-abelian plaquette) or a wrong --beta is refused before the store is touched."""
    from corrflow.ildg import REC_XLF, parse_xlf_info

    _, store, _ = imported
    code, out = cli("export-ildg", store, "imp", "--out", store / "cfgs")
    assert code == 2 and "is inside the zarr store" in out, out
    assert not (store / "cfgs").exists()
    exp = tmp_path / "exp"
    code, out = cli("export-ildg", store, "imp", "--out", exp, "--every", 2)
    assert code == 0 and "wrote 3 ILDG files" in out, out
    files = sorted(exp.glob("*.lime"))
    u, meta = read_ildg(files[0])
    info = parse_xlf_info(meta["records"][REC_XLF])
    plaq = float(open_store(store).open_ensemble("imp")["plaquette"].values[0, 0])
    assert info["plaquette"] == pytest.approx(plaq, abs=1e-13) and info["beta"] == 5.8 and info["trajectory nr"] == 0
    code, out = cli("import-ildg", tmp_path / "ok.zarr", *files, "--name", "again", "--beta", 5.8)
    assert code == 0, out
    np.testing.assert_array_equal(open_store(tmp_path / "ok.zarr").load_configs("again", 0, [0])[0], u)
    refused(tmp_path, "--beta 6 differs from beta = 5.8 recorded in its xlf-info record; pass --beta 5.8", files)
    transposed = tmp_path / "transposed.lime"
    write_ildg(transposed, np.swapaxes(u, -1, -2), extra_records={REC_XLF: meta["records"][REC_XLF]})
    bad = tmp_path / "bad.zarr"
    code, out = cli("import-ildg", bad, transposed, "--name", "t", "--beta", 5.8)
    assert code == 2 and "differs from the" in out and "another layout or matrix convention" in out, out
    assert not bad.exists()
    code, out = cli("import-ildg", bad, transposed, "--name", "t", "--beta", 5.8, "--ignore-xlf")
    assert code == 0, out
    # configurations of a dynamical-quark run (tmLQCD records kappa): imported as pure gauge, with a warning
    dyn = tmp_path / "dynamical.lime"
    write_ildg(dyn, u, extra_records={REC_XLF: meta["records"][REC_XLF] + b" kappa = 0.156, mu = 0.004\n"})
    code, out = cli("import-ildg", tmp_path / "dyn.zarr", dyn, "--name", "d", "--beta", 5.8)
    assert code == 0 and "warning: the files record kappa = 0.156 (dynamical quarks)" in out, out
    assert "fermion determinant" in out and open_store(tmp_path / "dyn.zarr").spec("d").theory == "su3"


def test_import_checks_the_monte_carlo_order(imported, tmp_path):
    """A shell glob sorts text: cfg_1000.lime before cfg_200.lime.  The order an ensemble is imported in is its Monte
    Carlo time (autocorrelations, the thermalisation cut), so import-ildg refuses files whose recorded trajectory
    numbers -- or, without such records, the numbers in their names -- go backwards, and `--sort` orders them."""
    from corrflow.ildg import REC_XLF, format_xlf_info

    _, _, files = imported
    configs = [read_ildg(f)[0] for f in files[:3]]

    def sorted_import(paths, name, beta):
        """import with --sort; the files in the order the ensemble holds them"""
        store = tmp_path / f"{name}.zarr"
        code, out = cli("import-ildg", store, *paths, "--name", name, "--beta", beta, "--sort")
        assert code == 0, out
        return open_store(store).spec(name).flow["source_files"], open_store(store)

    def record(u, trajectory):
        return {REC_XLF: format_xlf_info(float(corrflow.observables.plaquette(jnp.asarray(u), G)), trajectory,
                                         {"beta": 6.0})}

    # names that a glob puts out of order, no xlf-info records
    named = [tmp_path / f"cfg_{n}.lime" for n in (200, 1000, 30)]
    for f, u in zip(named, configs):
        write_ildg(f, u)
    globbed = sorted(named)  # cfg_1000, cfg_200, cfg_30
    refused(tmp_path, f"not in Monte Carlo order: {globbed[1]} (number 200) comes after {globbed[0]} (number 1000); "
            "add --sort to import them in the order of the numbers in their names", globbed)
    order, st = sorted_import(globbed, "n", 5.8)
    assert order == [str(named[i]) for i in (2, 0, 1)]
    np.testing.assert_array_equal(st.load_configs("n", 0, [0])[0], configs[2])
    # recorded trajectory numbers decide over the names
    recorded = [tmp_path / f"traj_{k}.lime" for k in range(3)]
    for f, u, t in zip(recorded, configs, (40, 10, 20)):
        write_ildg(f, u, extra_records=record(u, t))
    refused(tmp_path, f"{recorded[1]} (trajectory 10) comes after {recorded[0]} (trajectory 40); add --sort to import "
            "them in the order of the trajectory numbers their xlf-info records state", recorded)
    assert sorted_import(recorded, "r", 6.0)[0] == [str(recorded[i]) for i in (1, 2, 0)]
    # two streams with the same trajectory numbers, and --sort where nothing gives the order
    write_ildg(tmp_path / "other_10.lime", configs[0], extra_records=record(configs[0], 10))
    refused(tmp_path, "both have trajectory 10: two Monte Carlo streams?", [recorded[1], tmp_path / "other_10.lime"])
    refused(tmp_path, "--sort needs trajectory numbers", [files[3], recorded[0]], "--sort")
