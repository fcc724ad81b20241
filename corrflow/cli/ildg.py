"""ILDG interoperability commands: ``export-ildg`` and ``import-ildg``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

import typer

from .base import CLIError, _run, _stage, app, console


# ----------------------------------------------------------------------------------------
# ILDG interop
# ----------------------------------------------------------------------------------------


@app.command("export-ildg", epilog="""
**Example**

    corrflow export-ildg runs.zarr su3_8x8x8x8_beta6 --out configs/ \\
        --chain 0 --every 10
""")
def export_ildg(
    store: Path = typer.Argument(..., help="zarr store"),
    ensemble: str = typer.Argument(..., help="a 4D SU(3) ensemble"),
    out: Path = typer.Option(..., help="output directory (created)"),
    chain: int = typer.Option(0, help="chain to export"),
    every: int = typer.Option(1, help="export every k-th stored configuration"),
    single: bool = typer.Option(False, "--single", help="write single precision (default double)"),
) -> None:
    """Write stored 4D SU(3) configurations as ILDG (LIME) files, one per configuration, with an xlf-info record
    (plaquette, trajectory, action parameters) that import-ildg checks."""

    def body() -> None:
        import jax.numpy as jnp
        import numpy as np

        from ..groups import get_group
        from ..ildg import REC_XLF, format_xlf_info, write_ildg
        from ..observables import plaquette
        from ..store import open_store
        from ..store.checkpoints import check_writable_dir
        from ..theories.dirac import kappa_from_mass

        st = open_store(store, "r")
        spec = st.spec(ensemble)
        if spec.group != "su3" or len(spec.shape) != 4:
            raise CLIError(f"ILDG export needs a 4D SU(3) ensemble; {ensemble!r} is {spec.group} on {spec.shape}")
        check_writable_dir(out, "--out")
        if not 0 <= chain < spec.n_chains:
            raise CLIError(f"--chain must be in 0..{spec.n_chains - 1}, got {chain}")
        if every < 1:
            raise CLIError(f"--every must be >= 1, got {every}")
        ds = st.open_ensemble(ensemble)
        out.mkdir(parents=True, exist_ok=True)
        positions = list(range(0, ds.sizes["traj"], every))
        plaq = np.asarray(ds["plaquette"].values[chain]) if "plaquette" in ds else None
        params = dict(spec.params)
        if "mass" in params:  # what other codes record for Wilson quarks
            params["kappa"] = kappa_from_mass(params["mass"], 4)
        for pos in positions:
            traj = int(ds.traj.values[pos])
            u = st.load_configs(ensemble, chain, [pos])[0]
            p = float(plaq[pos]) if plaq is not None else float(plaquette(jnp.asarray(u), get_group("su3")))
            info = format_xlf_info(p, traj, params, corrflow_ensemble=ensemble, chain=str(chain))
            write_ildg(out / f"{ensemble}_c{chain}_t{traj:06d}.lime", u, precision=32 if single else 64,
                       lfn=f"corrflow/{ensemble}/chain{chain}/traj{traj}", extra_records={REC_XLF: info})
        console.print(f"[green]done[/] wrote {len(positions)} ILDG file{'s' if len(positions) != 1 else ''} to {out}")

    _run(body)


ILDG_SU3_TOL = 1e-5  # max |U U^dag - 1| and |det U - 1| accepted on import (float32 files round to ~1e-7)


def _check_su3(path: Path, u: Any, meta: dict[str, Any]) -> None:
    """Refuse ILDG data that are not SU(3) matrices (the flows and actions assume exact group elements)."""
    import numpy as np

    viol = float(meta.get("unitarity_violation", 0.0))
    if not np.isfinite(viol) or viol > ILDG_SU3_TOL:
        raise CLIError(f"{path}: the links are not SU(3) matrices: max |U U^dag - 1| = {viol:.2e} exceeds "
                       f"{ILDG_SU3_TOL:g} (not a gauge configuration, or stored in another convention)")
    with np.errstate(all="ignore"):  # np.max, not max(): a NaN in a later time slice must not be dropped
        det_dev = float(np.max([np.max(np.abs(np.linalg.det(u[t]) - 1.0)) for t in range(u.shape[0])]))
    if not det_dev <= ILDG_SU3_TOL:
        raise CLIError(f"{path}: the links are unitary but not special unitary: max |det U - 1| = {det_dev:.2e} "
                       f"exceeds {ILDG_SU3_TOL:g} (U(3) rather than SU(3) data?)")


XLF_PLAQUETTE_TOL = 1e-6  # |recorded - computed| plaquette accepted (printed to >= 12 digits; float32 data ~1e-7)


def _recorded_trajectory(info: dict[str, Any]) -> int | None:
    """The trajectory number of an xlf-info record (tmLQCD and corrflow write ``trajectory nr = N``)."""
    for key in ("trajectory nr", "trajectory", "traj"):
        v = info.get(key)
        if isinstance(v, float) and v.is_integer():
            return int(v)
    return None


def _name_numbers(path: Path) -> tuple[str, tuple[int, ...]]:
    """``cfg_0200.lime`` -> ``("cfg_#.lime", (200,))``: the name's text with its numbers taken out."""
    import re

    parts = re.split(r"(\d+)", path.name)
    return "#".join(parts[0::2]), tuple(int(n) for n in parts[1::2])


def _monte_carlo_order(files: list[Path], trajectories: list[int | None], sort: bool) -> list[Path]:
    """``files`` in Monte Carlo order, or a refusal: with ``sort``, ordered by the recorded trajectory numbers where
    every file records one, else by the numbers in their names where the names differ only in those; without, the
    given order must agree with them (an ensemble out of order has wrong autocorrelations and thermalisation cut)."""
    if all(t is not None for t in trajectories):
        keys: list[Any] = trajectories
        what = "the trajectory numbers their xlf-info records state"
        label = [f"trajectory {t}" for t in trajectories]
    else:
        skeletons, numbers = zip(*map(_name_numbers, files))
        if len(set(skeletons)) != 1 or not numbers[0]:  # nothing says what the order is
            if sort:
                raise CLIError("--sort needs trajectory numbers in every file's xlf-info record or names that differ "
                               f"only in numbers (cfg_N.lime); {files[0].name} and those given with it have neither: "
                               "give the files in Monte Carlo order without --sort")
            return files
        keys, what = list(numbers), "the numbers in their names"
        label = ["number " + ".".join(map(str, n)) for n in numbers]
    first: dict[Any, int] = {}
    for j, key in enumerate(keys):
        i = first.setdefault(key, j)
        if i != j:
            raise CLIError(f"{files[i]} and {files[j]} both have {label[i]}: two Monte Carlo streams? Import each "
                           "stream as an ensemble of its own")
    if sort:
        return [files[k] for k in sorted(range(len(files)), key=lambda k: keys[k])]
    bad = next((k for k in range(1, len(files)) if keys[k] < keys[k - 1]), None)
    if bad is not None:
        raise CLIError(f"the files are not in Monte Carlo order: {files[bad]} ({label[bad]}) comes after "
                       f"{files[bad - 1]} ({label[bad - 1]}); add --sort to import them in the order of {what}")
    return files


def _check_xlf(path: Path, u: Any, meta: dict[str, Any], beta: float) -> dict[str, Any]:
    """Compare the links and ``--beta`` with what the file's ``xlf-info`` record (if any) says about them; returns
    the record's entries (``{}`` without one)."""
    import jax.numpy as jnp

    from ..groups import get_group
    from ..ildg import REC_XLF, parse_xlf_info
    from ..observables import plaquette

    rec = meta["records"].get(REC_XLF)
    if rec is None:
        return {}
    info = parse_xlf_info(rec[0] if isinstance(rec, list) else rec)
    hint = "; add --ignore-xlf if that record means something else"
    p_file = info.get("plaquette")
    if isinstance(p_file, float):
        p = float(plaquette(jnp.asarray(u, jnp.complex128), get_group("su3")))
        if min(abs(p_file - p), abs(p_file - 3 * p)) > XLF_PLAQUETTE_TOL:
            raise CLIError(f"{path}: the plaquette of the links, {p:.10f}, differs from the {p_file:.10f} recorded in "
                           "its xlf-info record: the data are in another layout or matrix convention than ILDG's "
                           f"(or were changed after writing){hint}")
    b_file = info.get("beta")
    if isinstance(b_file, float) and abs(b_file - beta) > 1e-9 * max(1.0, abs(beta)):
        raise CLIError(f"{path}: --beta {beta:g} differs from beta = {b_file:g} recorded in its xlf-info record; pass "
                       f"--beta {b_file:g}{hint}")
    return info


@app.command("import-ildg", epilog="""
**Example**

    corrflow import-ildg runs.zarr cfg_*.lime --name imported_b6 --beta 6.0
""")
def import_ildg(
    store: Path = typer.Argument(..., help="zarr store (created if absent)"),
    files: List[Path] = typer.Argument(..., help="ILDG files, in Monte Carlo order"),
    name: str = typer.Option(..., help="name of the new ensemble"),
    beta: float = typer.Option(..., help="beta the configurations were generated at"),
    xi: float = typer.Option(1.0, help="anisotropy"),
    lam: float = typer.Option(0.0, help="Feynman–Hellmann source"),
    ignore_xlf: bool = typer.Option(False, "--ignore-xlf", help="skip the checks against the files' xlf-info "
                                    "records (recorded plaquette, beta and trajectory), e.g. when a code records "
                                    "something else under those names"),
    sort: bool = typer.Option(False, "--sort", help="import the files in Monte Carlo order: by the trajectory numbers "
                              "their xlf-info records state, or else by the numbers in their names (cfg_200 before "
                              "cfg_1000, which a shell glob puts the other way round)"),
) -> None:
    """Import 4D SU(3) ILDG configurations as a one-chain ensemble (usable as a base ensemble for `train` and
    `correlate`).  Every file is checked before anything is written: one lattice size, SU(3) links, each
    configuration once, and the plaquette, beta and trajectory order that an xlf-info record (tmLQCD, corrflow)
    states (files named like cfg_N.lime without such records: in the order of N).  Resumable
    file by file: rerun the same command after an interruption; until every file is in, `info` lists the
    ensemble as incomplete."""

    def body() -> None:
        import dataclasses
        import hashlib

        import jax.numpy as jnp
        import numpy as np

        from .. import make_theory
        from .. import observables as obs_mod
        from ..ildg import read_ildg
        from ..store import EnsembleSpec, StoreError, check_name, open_store

        if not files:
            raise CLIError("no ILDG files given")
        check_name(name)
        for f in files:
            if not f.exists():
                raise CLIError(f"{f}: no such file")
            if not f.is_file():
                raise CLIError(f"{f} is {'a directory' if f.is_dir() else 'not a regular file'}; give ILDG files")
        seen: dict[Path, int] = {}
        for i, f in enumerate(files):
            j = seen.setdefault(f.resolve(), i)
            if j != i:
                raise CLIError(f"{f} is given twice (files {j + 1} and {i + 1}); each configuration once")
        # pass 1: read and validate every file before anything is written
        shape = None
        digests: dict[bytes, Path] = {}
        quarks: dict[str, Any] = {}
        trajectories: list[int | None] = []
        with _stage("check ILDG files") as lp:
            for i, f in enumerate(files):
                u, meta = read_ildg(f)
                if shape is None:
                    shape = u.shape[:4]
                elif u.shape[:4] != shape:
                    raise CLIError(f"{f}: lattice {u.shape[:4]} differs from the first file's {shape} "
                                   f"({files[0]}); an ensemble has one lattice size (t, x, y, z)")
                _check_su3(f, u, meta)
                digest = hashlib.blake2b(np.ascontiguousarray(u).tobytes(), digest_size=16).digest()
                if digest in digests:
                    raise CLIError(f"{f} holds the same configuration as {digests[digest]}; an ensemble holds each "
                                   "configuration once")
                digests[digest] = f
                info = {} if ignore_xlf else _check_xlf(f, u, meta, beta)
                quarks = quarks or {k: v for k, v in info.items() if k in ("kappa", "mass")}
                trajectories.append(_recorded_trajectory(info))
                lp(i + 1, len(files))
        files[:] = _monte_carlo_order(files, trajectories, sort)
        if quarks:
            console.print(f"[yellow]warning: the files record {', '.join(f'{k} = {v:g}' for k, v in quarks.items())} "
                          "(dynamical quarks); the ensemble is imported as pure-gauge su3, so flows and reweighting "
                          "built on it leave out the fermion determinant[/]")
        th = make_theory("su3", shape, beta=beta, xi=xi, lam=lam)
        spec = EnsembleSpec(theory="su3", group="su3", shape=shape, params=th.params(), n_chains=1, seed=-1,
                            dtype="complex128", hmc={}, n_therm=0, thin=1, measurements=("plaquette",), kind="imported",
                            flow={"source_files": [str(f) for f in files]})
        st = open_store(store, "a")  # created at the first write only

        def refuse_existing(stored: EnsembleSpec, committed: int) -> None:
            diffs = dataclasses.replace(stored, flow=spec.flow).differences(spec)  # the files below, in short
            old_files = stored.flow.get("source_files", [])
            if old_files != spec.flow["source_files"]:
                diffs.append(f"source files: {len(old_files)} stored, the first {old_files[0] if old_files else '-'}; "
                             f"{len(files)} given, the first {files[0]}")
            if diffs:
                raise StoreError(f"ensemble {name!r} exists with different settings ({'; '.join(diffs)}); "
                                 "an interrupted import continues only with the same files and parameters. Choose "
                                 "another --name")

        def up_to_date(committed: int) -> bool:
            if committed < len(files):
                return False
            console.print(f"[green]up to date[/] {name} holds all {len(files)} imported configurations; nothing to do")
            return True

        if name in st:
            committed = int(st.commit(name)["committed"])
            refuse_existing(st.spec(name), committed)
            if up_to_date(committed):  # a rerun of a finished import is not an error
                return
        # pass 2: import, one commit per file (created atomically under the writer lock; resumed if interrupted)
        with st.writer(name, create=spec) as w, _stage(f"import {name}") as lp:
            if not w.created:
                refuse_existing(w.spec, w.committed)
                if up_to_date(w.committed):
                    return
            w.set_target(len(files))
            for i in range(w.committed, len(files)):
                u, _ = read_ildg(files[i], dtype=np.complex128)
                uj = jnp.asarray(u)
                per = {"plaquette": np.array([[float(obs_mod.plaquette(uj, th.group))]]),
                       "action": np.array([[float(th.action(uj))]]), "delta_H": np.full((1, 1), np.nan),
                       "accepted": np.ones((1, 1), bool), "step_size": np.full((1, 1), np.nan)}
                w.append([i], u[None, None], per, i + 1)
                lp(i + 1, len(files))
        console.print(f"[green]done[/] imported {len(files)} configurations of {'x'.join(map(str, shape))} into {name}")

    _run(body)
