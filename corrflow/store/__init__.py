"""Ensemble store on zarr v3, read through xarray (the only layer of corrflow that touches disk).

Layout
------
One zarr v3 store (a local directory, or any fsspec URL such as ``memory://x`` or ``s3://bucket/x``)
whose root group carries ``attrs["corrflow"] = {"format": "corrflow-store", "version": 1}``, and one
group per ensemble.  An ensemble group holds

* ``links``: dims ``(chain, traj, t, x[, y, z], mu[, row, col])``; chunked along ``traj``;
* per-trajectory arrays ``(chain, traj)``: ``action``, ``delta_H``, ``accepted``, ``step_size`` and one
  array per measured observable (``plaquette``, ``wilson_2x2``, ``topological_charge``, ...);
* coordinates ``chain`` and ``traj`` (the global trajectory index of each stored configuration);
* flowed ensembles additionally ``source_chain``, ``source_traj``, ``log_weight``, ``log_jacobian``;
* ``checkpoint_links`` / ``checkpoint_action`` with a leading ``slot`` axis of 2 (double buffer for the
  chain state during thermalisation);
* attrs ``corrflow_ensemble`` (the :class:`EnsembleSpec`), ``corrflow_versions``, ``corrflow_created``,
  ``corrflow_commit`` (the commit record, see :mod:`.writer`) and ``corrflow_observables`` (post-hoc
  observables and how many trajectories each covers).

``_analyses`` holds analysis records (:mod:`.records`); ``_corrflow`` (local stores) is corrflow's internal
area -- writer locks and ensembles being created -- declared as an empty zarr array so that zarr and
xarray never list its contents (:mod:`.layout`).  Every array carries a CRC32C per chunk (:mod:`.integrity`).

Modules
-------
:mod:`.spec` (what an ensemble is, names, validation), :mod:`.layout` (where things are, listing without
zarr's warnings), :mod:`.reader` (:class:`EnsembleStore`, :func:`open_store`: reading committed data),
:mod:`.creation` (creating an ensemble as one transaction), :mod:`.writer` (:class:`EnsembleWriter`: the
commit protocol), :mod:`.locks` (one writer per ensemble, keyed by the store's real identity),
:mod:`.integrity` / :mod:`.verify` (checksums, precise errors, ``verify``), :mod:`.records` (analysis
results), :mod:`.configs` (stored configurations read on demand, for training sets larger than memory),
:mod:`.checkpoints` (atomic checkpoint directories, used for flow checkpoints) and
:mod:`.faults` (deterministic fault injection for crash tests).  None of them imports physics code.
"""

from __future__ import annotations

from .checkpoints import (CheckpointError, check_writable_dir, has_checkpoint, hold_checkpoint_dir, read_checkpoint,
                          write_checkpoint)
from .configs import StoredConfigs
from .integrity import ChunkProblem, VerifyReport
from .reader import EnsembleStore, open_store
from .spec import (ANALYSES_GROUP, ENSEMBLE_KINDS, FLOWED_FIELDS, PER_TRAJ_BASE, STORE_FORMAT, STORE_VERSION,
                   EnsembleSpec, StoreError, check_name, ensemble_name, lattice_dim_names)
from .writer import EnsembleWriter

__all__ = [
    "ANALYSES_GROUP",
    "ENSEMBLE_KINDS",
    "FLOWED_FIELDS",
    "PER_TRAJ_BASE",
    "STORE_FORMAT",
    "STORE_VERSION",
    "CheckpointError",
    "ChunkProblem",
    "EnsembleSpec",
    "EnsembleStore",
    "EnsembleWriter",
    "StoreError",
    "StoredConfigs",
    "VerifyReport",
    "check_name",
    "check_writable_dir",
    "ensemble_name",
    "has_checkpoint",
    "lattice_dim_names",
    "open_store",
    "read_checkpoint",
    "hold_checkpoint_dir",
    "write_checkpoint",
]
