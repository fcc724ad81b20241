"""Ensemble-store I/O: write and read throughput of link blocks, against numpy .npy files, same run.

    python benchmarks/store_io.py            # full table (about a minute on 2 CPU cores)
    python benchmarks/store_io.py --quick    # 1 and 16 MB blocks only, fewer repetitions

What is timed (wall clock, median over repetitions):

* ``store write``: ``EnsembleWriter.append(traj, links, per_traj, next_traj)`` of one block into an
  ensemble created with ``chunk_traj`` equal to the block length (one chunk per chain per block).
  This is the full commit protocol: validation, resize of every per-trajectory array, data writes
  with the CRC32C codec, then the commit record.  The writer lock is taken outside the timed region.
* ``store write (default chunks)``: the same, in an ensemble created with corrflow's default
  ``chunk_traj`` (about 8 MB chunks), so a block may fill a chunk partially.
* ``npy write``: ``numpy.save`` of the same links array to a .npy file.
* ``store read``: ``ds.links.isel(traj=block).values`` on a Dataset from ``open_ensemble`` (xarray +
  dask; the time of ``open_ensemble`` itself is listed separately as ``open ms``); ``zarr read``: the
  same slice through zarr directly; ``npy read``: ``numpy.load``.
* ``--verify GB``: ``EnsembleStore.verify`` of an ensemble with ``GB`` of SU(3) links (every chunk's size and
  CRC32C), with the files in the page cache and after evicting them (``posix_fadvise(DONTNEED)`` on these
  files only), against a plain read of the same files, and ``verify(sample=16)``; load averages printed.
* commit-protocol overhead: ``append`` against writing the same arrays through zarr directly (resize
  every array and write links, traj and per-trajectory data; no validation, no commit record), as a
  percentage of ``append``; and the time of the commit-record write alone.

Links are random arrays of the right shape and dtype (no HMC): U(1) 64x64 float64 (64 KiB per
configuration) and SU(3) 8^4 complex128 (2.25 MiB per configuration).  One chain; the number of
configurations per block is chosen to give about 1, 4, 16 and 64 MB.  Files go to a temporary
directory under ``<repo>/.bench_tmp`` (same disk as the repository), removed at the end.  Nothing is
fsynced by either path (dirty pages are flushed with ``os.sync()`` before each timed write, outside
the timing), and reads follow writes, so both sides see the page cache: the numbers compare software
overhead on the same footing, not disk speed.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_model

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MB = 1e6


def _machine_info(tmp: Path) -> list[str]:
    import dask
    import jax
    import xarray
    import zarr

    import corrflow

    try:
        import google_crc32c

        crc = f"google_crc32c {getattr(google_crc32c, '__version__', '?')} ({google_crc32c.implementation})"
    except Exception:  # pragma: no cover - depends on the install
        crc = "unknown"
    fs = "?"
    try:
        best = ""
        with open("/proc/mounts") as f:
            for line in f:
                dev, mnt, typ = line.split()[:3]
                if str(tmp).startswith(mnt) and len(mnt) > len(best):
                    best, fs = mnt, f"{typ} on {dev} (mounted at {mnt})"
    except OSError:
        pass
    cpu = cpu_model()
    return [
        f"cpu: {cpu}; os.cpu_count() = {os.cpu_count()}; affinity = {len(os.sched_getaffinity(0))} cores",
        f"platform: {platform.platform()}; python {platform.python_version()}",
        f"versions: corrflow {corrflow.__version__}, zarr {zarr.__version__}, numpy {np.__version__}, "
        f"xarray {xarray.__version__}, dask {dask.__version__}, jax {jax.__version__}; crc32c: {crc}",
        f"scratch: {tmp} ({fs})",
    ]


def _spec(theory: str, shape: tuple[int, ...], dtype: str, name_seed: int):
    from corrflow.store import EnsembleSpec

    return EnsembleSpec(theory=theory, group=theory, shape=shape, params={"beta": 1.0}, n_chains=1, seed=name_seed,
                        dtype=dtype, n_therm=0, thin=1)


def _block(spec, n: int, rng: np.random.Generator):
    shape = (spec.n_chains, n) + spec.config_shape
    if np.dtype(spec.dtype).kind == "c":
        links = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(spec.dtype)
    else:
        links = rng.uniform(-np.pi, np.pi, shape).astype(spec.dtype)
    c = spec.n_chains
    per = {"plaquette": rng.random((c, n)), "action": rng.random((c, n)), "delta_H": rng.standard_normal((c, n)),
           "accepted": np.ones((c, n), bool), "step_size": np.full((c, n), 0.1)}
    return links, per


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def bench_case(label: str, theory: str, shape: tuple[int, ...], dtype: str, target_mb: float, reps: int,
               tmp: Path, rng: np.random.Generator) -> dict:
    import zarr

    from corrflow.store import open_store

    probe = _spec(theory, shape, dtype, 0)
    cfg_bytes = int(np.prod(probe.config_shape)) * np.dtype(dtype).itemsize
    n = max(1, round(target_mb * MB / cfg_bytes))
    nbytes = n * cfg_bytes * probe.n_chains
    links, per = _block(probe, n, rng)

    path = tmp / f"{label}_{n}.zarr"
    st = open_store(path, "a")
    t_store, t_default, t_raw, t_commit = [], [], [], []
    t_npy_w, t_npy_r, t_read, t_zread = [], [], [], []

    # Four write paths, interleaved repetition by repetition (so that page-cache write-back caused by
    # one path does not land systematically on another); dirty pages are flushed, untimed, before
    # every timed write.
    st.create_ensemble("aligned", _spec(theory, shape, dtype, 1), chunk_traj=n)
    st.create_ensemble("default", _spec(theory, shape, dtype, 2))  # corrflow's default chunk_traj
    st.create_ensemble("raw", _spec(theory, shape, dtype, 3), chunk_traj=n)
    grp = zarr.open_group(path, mode="a")["raw"]
    arrays = {k: grp[k] for k in ("links", "traj", *per)}
    with st.writer("aligned") as wa, st.writer("default") as wd:
        wa.reserve(reps * n)  # as generate_to_store does: one resize per run, not per block
        wd.reserve(reps * n)
        for r in range(reps):
            lo, hi = r * n, (r + 1) * n
            traj = np.arange(lo, hi)
            # store: full commit protocol, one chunk per block
            os.sync()
            t0 = time.perf_counter()
            wa.append(traj, links, per, hi)
            t_store.append(time.perf_counter() - t0)
            rec = dict(wa.group.attrs["corrflow_commit"])
            t0 = time.perf_counter()
            wa.group.attrs["corrflow_commit"] = rec  # the commit-record write alone (same content)
            t_commit.append(time.perf_counter() - t0)
            # store with default chunking
            os.sync()
            t0 = time.perf_counter()
            wd.append(traj, links, per, hi)
            t_default.append(time.perf_counter() - t0)
            # the same arrays through zarr directly: no validation, no commit record
            os.sync()
            t0 = time.perf_counter()
            for k, arr in arrays.items():
                shp = list(arr.shape)
                shp[0 if k == "traj" else 1] = hi
                arr.resize(tuple(shp))
            arrays["links"][:, lo:hi] = links
            arrays["traj"][lo:hi] = traj
            for k, v in per.items():
                arrays[k][:, lo:hi] = v
            t_raw.append(time.perf_counter() - t0)
            # numpy
            os.sync()
            t0 = time.perf_counter()
            np.save(tmp / f"{label}_{n}_{r}.npy", links)
            t_npy_w.append(time.perf_counter() - t0)
    os.sync()

    # --- reads (page cache warm for both) ------------------------------------------------------
    for r in range(reps):
        f = tmp / f"{label}_{n}_{r}.npy"
        t0 = time.perf_counter()
        back = np.load(f)
        t_npy_r.append(time.perf_counter() - t0)
        assert back.shape == links.shape
        f.unlink()
    rst = open_store(path, "r")
    t_open = []
    for r in range(reps):
        t0 = time.perf_counter()
        ds = rst.open_ensemble("aligned", verify=False)
        t_open.append(time.perf_counter() - t0)
    for r in range(reps):
        t0 = time.perf_counter()
        got = ds.links.isel(traj=slice(r * n, (r + 1) * n)).values
        t_read.append(time.perf_counter() - t0)
        assert got.shape == links.shape
    zl = zarr.open_group(path, mode="r")["aligned"]["links"]
    for r in range(reps):
        t0 = time.perf_counter()
        got = zl[:, r * n:(r + 1) * n]
        t_zread.append(time.perf_counter() - t0)
    assert np.array_equal(got, links)
    shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(Path(str(path) + ".locks"), ignore_errors=True)

    app, raw = _median(t_store), _median(t_raw)
    return {
        "label": label, "n": n, "mb": nbytes / MB,
        "w_store": nbytes / app / MB, "w_default": nbytes / _median(t_default) / MB, "w_npy": nbytes / _median(t_npy_w) / MB,
        "r_store": nbytes / _median(t_read) / MB, "r_zarr": nbytes / _median(t_zread) / MB, "r_npy": nbytes / _median(t_npy_r) / MB,
        "overhead_pct": 100.0 * (app - raw) / app, "commit_ms": 1e3 * _median(t_commit), "append_ms": 1e3 * app,
        "open_ms": 1e3 * _median(t_open),
    }


def bench_sustained(label: str, theory: str, shape: tuple[int, ...], dtype: str, mb: float, total_gb: float,
                    tmp: Path, rng: np.random.Generator) -> dict:
    """Sustained, disk-bound writing: ``total_gb`` of ``mb``-sized blocks through each path, timed until
    ``os.sync()`` returns (bytes on disk per second).  Long generation runs live in this regime; the
    per-block table above mostly measures the page cache."""
    from corrflow.store import open_store

    spec = _spec(theory, shape, dtype, 9)
    cfg = spec.config_shape
    cfg_bytes = int(np.prod(cfg)) * np.dtype(dtype).itemsize
    n = max(1, int(mb * 1e6 // cfg_bytes))
    n_blocks = max(2, int(total_gb * 1e9 // (n * cfg_bytes)))
    links = rng.normal(size=(1, n) + cfg)
    if np.dtype(dtype).kind == "c":
        links = links + 1j * rng.normal(size=links.shape)
    links = links.astype(dtype)
    per = {k: rng.normal(size=(1, n)) for k in ("action", "delta_H", "step_size", "plaquette")}
    per["accepted"] = np.ones((1, n), bool)
    out = {"case": label, "mb": n * cfg_bytes / 1e6, "gb": n_blocks * n * cfg_bytes / 1e9}
    for path_kind in ("npy", "store", "npy2"):
        os.sync()
        t0 = time.perf_counter()
        if path_kind.startswith("npy"):
            for b in range(n_blocks):
                np.save(tmp / f"sus_{path_kind}_{label}_{b}.npy", links)
        else:
            st = open_store(tmp / f"sus_{label}.zarr", "a")
            st.create_ensemble("e", spec, chunk_traj=n)
            with st.writer("e") as w:
                w.reserve(n_blocks * n)
                for b in range(n_blocks):
                    w.append(np.arange(b * n, (b + 1) * n), links, per, (b + 1) * n)
        os.sync()
        out[path_kind] = out["gb"] * 1e3 / (time.perf_counter() - t0)
    out["npy"] = 0.5 * (out["npy"] + out.pop("npy2"))  # npy before and after the store: drift cancels
    return out


def _evict(path: Path) -> None:
    """Drop the page-cache pages of every file below ``path`` (only these files: other processes are not affected)."""
    os.sync()
    for f in path.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def bench_verify(total_gb: float, tmp: Path, rng: np.random.Generator) -> dict:
    """Time ``verify`` of an ensemble holding ``total_gb`` of SU(3) 8^4 complex128 links (2 chains, 64 MB chunks):
    every chunk checksummed, with the files in the page cache (just written) and evicted from it (read from disk),
    against plain reads of the same files; and ``--sample 16``."""
    from corrflow.store import open_store

    spec = _spec("su3", (8, 8, 8, 8), "complex128", 11)
    spec = type(spec)(**{**spec.to_json(), "shape": tuple(spec.shape), "measurements": tuple(spec.measurements),
                         "n_chains": 2})
    cfg_bytes = int(np.prod(spec.config_shape)) * 16
    n = max(1, int(64e6 // cfg_bytes))  # configurations per chunk
    n_blocks = max(1, int(round(total_gb * 1e9 / (2 * n * cfg_bytes))))
    links, per = _block(spec, n, rng)
    path = tmp / "verify.zarr"
    st = open_store(path, "a")
    st.create_ensemble("e", spec, chunk_traj=n)
    with st.writer("e") as w:
        w.reserve(n_blocks * n)
        for b in range(n_blocks):
            w.append(np.arange(b * n, (b + 1) * n), links, per, (b + 1) * n)
    os.sync()
    rst = open_store(path, "r")
    out: dict = {"gb": 2 * n_blocks * n * cfg_bytes / 1e9, "chunks": 2 * n_blocks, "chunk_mb": n * cfg_bytes / 1e6,
                 "load_before": os.getloadavg()}
    t0 = time.perf_counter()
    rep = rst.verify("e")
    out["warm"] = time.perf_counter() - t0
    assert rep.ok and rep.chunks >= 2 * n_blocks, str(rep)
    _evict(path)
    t0 = time.perf_counter()
    rep = rst.verify("e")
    out["cold"] = time.perf_counter() - t0
    _evict(path)
    t0 = time.perf_counter()
    nbytes = sum(len(f.read_bytes()) for f in (path / "e" / "links").rglob("*") if f.is_file())
    out["read_cold"] = time.perf_counter() - t0
    _evict(path)
    t0 = time.perf_counter()
    rep = rst.verify("e", sample=16)
    out["sample16"] = time.perf_counter() - t0
    out["load_after"] = os.getloadavg()
    out["nbytes"] = nbytes
    shutil.rmtree(path, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 and 16 MB blocks, 3 repetitions (default: 9 below 16 MB, 5 above)")
    ap.add_argument("--verify", type=float, default=0.0, metavar="GB",
                    help="also time a full `verify` of an ensemble of GB gigabytes of links (cached and from disk)")
    ap.add_argument("--verify-only", action="store_true", help="only the --verify measurement")
    args = ap.parse_args()
    if args.verify_only and not args.verify:
        ap.error("--verify-only needs --verify GB")
    sizes = [1, 16] if args.quick else [1, 4, 16, 64]
    (REPO / ".bench_tmp").mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="store_io_", dir=REPO / ".bench_tmp"))
    t_start = time.perf_counter()
    rows = []
    try:
        import corrflow  # noqa: F401  (imports jax, enables x64)

        rng = np.random.default_rng(0)
        print("corrflow store I/O benchmark" + (" (--quick)" if args.quick else ""))
        for line in _machine_info(tmp):
            print("  " + line)
        print(f"  load average (1, 5, 15 min) at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        cases = [("u1_64x64", "u1", (64, 64), "float64"), ("su3_8^4", "su3", (8, 8, 8, 8), "complex128")]
        sustained = []
        if not args.verify_only:
            for label, theory, shape, dtype in cases:
                for mb in sizes:
                    reps = 3 if args.quick else (5 if mb >= 16 else 9)
                    rows.append(bench_case(label, theory, shape, dtype, mb, reps, tmp, rng))
                    print(f"  ... {label} {rows[-1]['mb']:.1f} MB done", file=sys.stderr, flush=True)
            sustained = [bench_sustained(label, theory, shape, dtype, 64, 0.5 if args.quick else 1.5, tmp, rng)
                         for label, theory, shape, dtype in cases]
        ver = bench_verify(args.verify, tmp, rng) if args.verify else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            (REPO / ".bench_tmp").rmdir()  # only if empty (other runs may use it)
        except OSError:
            pass

    if ver is not None:
        print()
        print(f"verify: SU(3) 8^4 complex128, 2 chains, {ver['chunks']} links chunks of {ver['chunk_mb']:.0f} MB, "
              f"{ver['gb']:.2f} GB of links")
        print(f"  load average (1, 5, 15 min) before / after: {', '.join(f'{x:.2f}' for x in ver['load_before'])} / "
              f"{', '.join(f'{x:.2f}' for x in ver['load_after'])}")
        for label, key in (("full verify, files in the page cache", "warm"), ("full verify, files read from disk", "cold"),
                           ("plain read of the same files from disk", "read_cold"),
                           ("verify --sample 16, from disk", "sample16")):
            print(f"  {label:<42} {ver[key]:7.2f} s  = {ver[key] / ver['gb']:6.2f} s/GB  "
                  f"({ver['gb'] * 1e3 / ver[key]:7.0f} MB/s)")
        print(f"total time {time.perf_counter() - t_start:.1f} s")
    if args.verify_only:
        return
    print()
    print("throughput in MB/s (1 MB = 1e6 bytes of links), median of repetitions; ratio = store / npy")
    hdr = (f"{'case':<10} {'cfgs':>5} {'block MB':>8} | {'store W':>8} {'npy W':>8} {'W ratio':>7} "
           f"{'dflt-chk W':>10} | {'store R':>8} {'zarr R':>8} {'npy R':>8} {'R ratio':>7} | "
           f"{'append ms':>9} {'protocol %':>10} {'commit ms':>9} {'open ms':>7}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['label']:<10} {r['n']:>5} {r['mb']:>8.2f} | {r['w_store']:>8.0f} {r['w_npy']:>8.0f} "
              f"{r['w_store'] / r['w_npy']:>7.2f} {r['w_default']:>10.0f} | {r['r_store']:>8.0f} {r['r_zarr']:>8.0f} "
              f"{r['r_npy']:>8.0f} {r['r_store'] / r['r_npy']:>7.2f} | {r['append_ms']:>9.1f} "
              f"{r['overhead_pct']:>10.1f} {r['commit_ms']:>9.2f} {r['open_ms']:>7.1f}")
    print()
    print("store W: EnsembleWriter.append (chunk_traj = block); dflt-chk W: append with the default chunk_traj;")
    print("store R: .values of the block from an open_ensemble Dataset (open ms: open_ensemble itself);")
    print("zarr R: zarr slice; protocol %: (append - plain zarr writes of the same arrays, array handles")
    print("opened once) / append; commit ms: one commit-record write.")
    print()
    print("sustained writes to disk (until os.sync returns), 64 MB blocks, MB/s; ratio = store / npy")
    print(f"{'case':<10} {'block MB':>8} {'GB':>5} {'store':>7} {'npy':>7} {'ratio':>6}")
    for r in sustained:
        print(f"{r['case']:<10} {r['mb']:>8.1f} {r['gb']:>5.2f} {r['store']:>7.0f} {r['npy']:>7.0f} {r['store'] / r['npy']:>6.2f}")
    print(f"total time {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
