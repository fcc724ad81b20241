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

    corrflow export-ildg runs.zarr su3_8x8x8x8_beta6 --out configs/ --chain 0 --every 10
""")
def export_ildg(
    store: Path = typer.Argument(..., help="zarr store"),
    ensemble: str = typer.Argument(..., help="a 4D SU(3) ensemble"),
    out: Path = typer.Option(..., help="output directory (created)"),
    chain: int = typer.Option(0, help="chain to export"),
    every: int = typer.Option(1, help="export every k-th stored configuration"),
    single: bool = typer.Option(False, "--single", help="write single precision (default double)"),
) -> None:
    """Write stored 4D SU(3) configurations as ILDG (LIME) files, one per configuration."""

    def body() -> None:
        from ..ildg import write_ildg
        from ..store import open_store

        st = open_store(store, "r")
        spec = st.spec(ensemble)
        if spec.group != "su3" or len(spec.shape) != 4:
            raise CLIError(f"ILDG export needs a 4D SU(3) ensemble; {ensemble!r} is {spec.group} on {spec.shape}")
        if not 0 <= chain < spec.n_chains:
            raise CLIError(f"--chain must be in 0..{spec.n_chains - 1}, got {chain}")
        if every < 1:
            raise CLIError(f"--every must be >= 1, got {every}")
        ds = st.open_ensemble(ensemble)
        out.mkdir(parents=True, exist_ok=True)
        positions = list(range(0, ds.sizes["traj"], every))
        for pos in positions:
            traj = int(ds.traj.values[pos])
            u = st.load_configs(ensemble, chain, [pos])[0]
            write_ildg(out / f"{ensemble}_c{chain}_t{traj:06d}.lime", u, precision=32 if single else 64,
                       lfn=f"corrflow/{ensemble}/chain{chain}/traj{traj}")
        console.print(f"[green]done[/] wrote {len(positions)} ILDG files to {out}")

    _run(body)


ILDG_SU3_TOL = 1e-5  # max |U U^dag - 1| and |det U - 1| accepted on import (float32 files round to ~1e-7)


def _check_su3(path: Path, u: Any, meta: dict[str, Any]) -> None:
    """Refuse ILDG data that are not SU(3) matrices (the flows and actions assume exact group elements)."""
    import numpy as np

    viol = float(meta.get("unitarity_violation", 0.0))
    if not np.isfinite(viol) or viol > ILDG_SU3_TOL:
        raise CLIError(f"{path}: the links are not SU(3) matrices: max |U U^dag - 1| = {viol:.2e} exceeds "
                       f"{ILDG_SU3_TOL:g} (not a gauge configuration, or stored in another convention)")
    det_dev = max((float(np.max(np.abs(np.linalg.det(u[t]) - 1.0))) for t in range(u.shape[0])), default=0.0)
    if not det_dev <= ILDG_SU3_TOL:
        raise CLIError(f"{path}: the links are unitary but not special unitary: max |det U - 1| = {det_dev:.2e} "
                       f"exceeds {ILDG_SU3_TOL:g} (U(3) rather than SU(3) data?)")


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
) -> None:
    """Import 4D SU(3) ILDG configurations as a one-chain ensemble (usable as a base ensemble for `train` and
    `correlate`).  Every file is checked before anything is written: one lattice size, SU(3) links.  Resumable
    file by file: rerun the same command after an interruption; until every file is in, `info` lists the
    ensemble as incomplete."""

    def body() -> None:
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
        # pass 1: read and validate every file before anything is written
        shape = None
        with _stage("check ILDG files") as lp:
            for i, f in enumerate(files):
                u, meta = read_ildg(f)
                if shape is None:
                    shape = u.shape[:4]
                elif u.shape[:4] != shape:
                    raise CLIError(f"{f}: lattice {u.shape[:4]} differs from the first file's {shape} "
                                   f"({files[0]}); an ensemble has one lattice size (t, x, y, z)")
                _check_su3(f, u, meta)
                lp(i + 1, len(files))
        th = make_theory("su3", shape, beta=beta, xi=xi, lam=lam)
        spec = EnsembleSpec(theory="su3", group="su3", shape=shape, params=th.params(), n_chains=1, seed=-1,
                            dtype="complex128", hmc={}, n_therm=0, thin=1, measurements=("plaquette",), kind="imported",
                            flow={"source_files": [str(f) for f in files]})
        st = open_store(store, "a")  # created at the first write only

        def refuse_existing(stored: EnsembleSpec, committed: int) -> None:
            diffs = stored.differences(spec)
            if diffs:
                raise StoreError(f"ensemble {name!r} exists with different settings ({'; '.join(diffs)[:300]}); "
                                 "an interrupted import continues only with the same files and parameters. Choose "
                                 "another --name")
            if committed >= len(files):
                raise StoreError(f"ensemble {name!r} already holds all {len(files)} imported configurations; "
                                 "nothing to do")

        if name in st:
            refuse_existing(st.spec(name), int(st.commit(name)["committed"]))
        # pass 2: import, one commit per file (created atomically under the writer lock; resumed if interrupted)
        with st.writer(name, create=spec) as w, _stage(f"import {name}") as lp:
            if not w.created:
                refuse_existing(w.spec, w.committed)
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
