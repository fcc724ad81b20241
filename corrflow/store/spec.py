"""What an ensemble is: its specification, its name, and the validation of both (no I/O here).

Conventions
-----------
* Ensemble names are directory names inside the store: letters, digits and ``_ . + -``, starting with
  a letter or digit (so never ``..``, a path separator, or a leading ``_``, which is reserved for the
  store's own groups such as ``_analyses`` and ``_corrflow``), at most 200 characters, and never
  ``zarr.json`` or a name ending in ``.partial`` (zarr's own file names).
* Every array of an ensemble stores raw little-endian bytes followed by a CRC32C of those bytes
  (zarr's ``BytesCodec`` + ``Crc32cCodec``), and every chunk is written even when it equals the fill
  value: a missing chunk always means damage, never "all fill value".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence


STORE_FORMAT = "corrflow-store"
STORE_VERSION = 1
ANALYSES_GROUP = "_analyses"  # root group of analysis results; ensemble names cannot start with "_"
INTERNAL = "_corrflow"  # root entry holding writer locks and ensembles being created (see layout.py)
ENSEMBLE_KINDS = ("hmc", "flowed", "imported")
PER_TRAJ_BASE = ("action", "delta_H", "accepted", "step_size")
FLOWED_FIELDS = ("source_chain", "source_traj", "log_weight", "log_jacobian")
CHECKPOINT_ARRAYS = ("checkpoint_links", "checkpoint_action")
MAX_NAME_LENGTH = 200

__all__ = [
    "ANALYSES_GROUP",
    "CHECKPOINT_ARRAYS",
    "ENSEMBLE_KINDS",
    "FLOWED_FIELDS",
    "INTERNAL",
    "PER_TRAJ_BASE",
    "STORE_FORMAT",
    "STORE_VERSION",
    "EnsembleSpec",
    "StoreError",
    "check_name",
    "crc_codecs",
    "ensemble_name",
    "lattice_dim_names",
]


class StoreError(Exception):
    """Any problem with a store: foreign or corrupt store, mismatched parameters, locks, bad appends."""


def lattice_dim_names(d: int) -> tuple[str, ...]:
    """Names of the site axes: ``(t, x)``, ``(t, x, y)``, ``(t, x, y, z)``; ``x0, x1, ...`` beyond 4D."""
    if d <= 4:
        return ("t", "x", "y", "z")[:d]
    return tuple(f"x{i}" for i in range(d))


def _fmt_num(v: float) -> str:
    return f"{float(v):g}"


def ensemble_name(theory: str, shape: Sequence[int], params: Mapping[str, float]) -> str:
    """Default group name, e.g. ``u1_16x16_beta2`` or ``su3_8x8x8x8_beta5.7_xi1.2_lam0.01``."""
    name = f"{theory}_{'x'.join(str(int(s)) for s in shape)}_beta{_fmt_num(params['beta'])}"
    if float(params.get("xi", 1.0)) != 1.0:
        name += f"_xi{_fmt_num(params['xi'])}"
    if float(params.get("lam", 0.0)) != 0.0:
        name += f"_lam{_fmt_num(params['lam'])}"
    if "mass" in params:
        name += f"_m{_fmt_num(params['mass'])}"
        if float(params.get("nf", 2.0)) != 2.0:
            name += f"_nf{_fmt_num(params['nf'])}"
    return name


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$")


def check_name(name: str, what: str = "ensemble") -> str:
    """Return ``name`` if it is a valid ensemble (or analysis / figure) name, else raise :class:`StoreError`."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise StoreError(f"invalid {what} name {name!r}: use letters, digits and _ . + - starting with a letter or "
                         "digit (no path separators, no '..', no spaces)")
    if len(name) > MAX_NAME_LENGTH:
        raise StoreError(f"invalid {what} name: {len(name)} characters, at most {MAX_NAME_LENGTH}")
    if name.lower() == "zarr.json" or name.endswith(".partial"):
        raise StoreError(f"invalid {what} name {name!r}: reserved for zarr's own files")
    return name


def crc_codecs() -> dict[str, Any]:
    """Array options shared by every store array: raw bytes + CRC32C, and every chunk written even when
    it equals the fill value (so a missing chunk always means damage, never 'all NaN')."""
    from zarr.codecs import BytesCodec, Crc32cCodec

    return {"serializer": BytesCodec(), "compressors": (Crc32cCodec(),), "filters": (),
            "config": {"write_empty_chunks": True}}


def versions() -> dict[str, str]:
    """Versions of corrflow and the libraries that define the stored bytes (recorded per ensemble;
    :func:`corrflow.versions.versions`), and the kernel choice ``CORRFLOW_NATIVE`` (``auto`` by default: 4D SU(3)
    runs on one-device CPUs use corrflow's native kernels, whose heat bath draws other random numbers than the JAX
    one)."""
    import os

    from ..versions import versions as library_versions

    return {**library_versions(), "CORRFLOW_NATIVE": os.environ.get("CORRFLOW_NATIVE", "auto")}


@dataclass(frozen=True)
class EnsembleSpec:
    """Everything that defines an ensemble; stored in attrs and compared before every append.

    ``theory``: theory name (``u1``, ``su3``, ...); ``group``: group name; ``shape``: lattice extents;
    ``params``: action parameters; ``hmc``: HMC settings; ``n_chains``; ``seed``; ``n_therm``;
    ``thin`` (store every ``thin``-th trajectory); ``dtype`` of the links; ``measurements``: names of
    the per-trajectory observables; ``kind``: ``hmc``, ``flowed`` or ``imported``; ``flow``: provenance
    of a flowed ensemble (source ensemble name, flow checkpoint id, ...) or of an imported one
    (``source_files``).
    """

    theory: str
    group: str
    shape: tuple[int, ...]
    params: dict[str, float]
    n_chains: int
    seed: int
    dtype: str
    hmc: dict[str, Any] = field(default_factory=dict)
    n_therm: int = 0
    thin: int = 1
    measurements: tuple[str, ...] = ("plaquette",)
    kind: str = "hmc"
    flow: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ENSEMBLE_KINDS:
            raise StoreError(f"unknown ensemble kind {self.kind!r}; allowed: {', '.join(ENSEMBLE_KINDS)}")
        if int(self.n_chains) < 1:
            raise StoreError(f"n_chains must be >= 1, got {self.n_chains}")
        if int(self.thin) < 1:
            raise StoreError(f"thin must be >= 1, got {self.thin}")
        if int(self.n_therm) < 0:
            raise StoreError(f"n_therm must be >= 0, got {self.n_therm}")
        if self.kind == "flowed" and "source" not in self.flow:
            raise StoreError("a flowed ensemble needs flow['source'] (the source ensemble name)")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "measurements", tuple(self.measurements))
        object.__setattr__(self, "params", {k: float(v) for k, v in self.params.items()})

    @property
    def elem_shape(self) -> tuple[int, ...]:
        """Shape of one group element: ``()`` for U(1) (angles), ``(N, N)`` for SU(N)."""
        if self.group == "u1":
            return ()
        n = int(self.group[2:])
        return (n, n)

    @property
    def config_shape(self) -> tuple[int, ...]:
        """Shape of one configuration: ``(*shape, d, *elem)``."""
        return self.shape + (len(self.shape),) + self.elem_shape

    def make_theory(self) -> Any:
        """The theory this ensemble samples (:func:`corrflow.theories.make_theory` of its theory name, lattice and
        stored action parameters), e.g. ``store.spec("b2").make_theory()``."""
        from ..theories import make_theory

        return make_theory(self.theory, self.shape, **self.params)

    @property
    def per_traj(self) -> tuple[str, ...]:
        """Per-trajectory arrays recorded with every append (besides ``links`` and ``traj``)."""
        out = PER_TRAJ_BASE + tuple(self.measurements)
        return out + FLOWED_FIELDS if self.kind == "flowed" else out

    def to_json(self) -> dict[str, Any]:
        """The JSON form stored in the ensemble's ``corrflow_ensemble`` attribute."""
        return {
            "theory": self.theory, "group": self.group, "shape": list(self.shape), "params": self.params,
            "n_chains": int(self.n_chains), "seed": int(self.seed), "dtype": self.dtype, "hmc": self.hmc,
            "n_therm": int(self.n_therm), "thin": int(self.thin), "measurements": list(self.measurements),
            "kind": self.kind, "flow": self.flow,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "EnsembleSpec":
        """Inverse of :meth:`to_json`; malformed metadata raises :class:`StoreError`."""
        try:
            return cls(
                theory=d["theory"], group=d["group"], shape=tuple(d["shape"]), params=dict(d["params"]),
                n_chains=int(d["n_chains"]), seed=int(d["seed"]), dtype=str(d["dtype"]), hmc=dict(d.get("hmc", {})),
                n_therm=int(d.get("n_therm", 0)), thin=int(d.get("thin", 1)),
                measurements=tuple(d.get("measurements", ())), kind=d.get("kind", "hmc"), flow=dict(d.get("flow", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StoreError(f"ensemble metadata is incomplete or malformed ({exc!r}); the store may be corrupt") from None

    def differences(self, other: "EnsembleSpec", keys: Sequence[str] | None = None) -> list[str]:
        """Human-readable list of fields that differ (``keys`` restricts the comparison)."""
        a, b = self.to_json(), other.to_json()
        keys = keys or list(a)
        out = []
        for k in keys:
            if isinstance(a[k], dict) and isinstance(b[k], dict):  # params, hmc: name the entry, not the dicts
                label, missing = ("", None) if k == "params" else (f"{k}.", "unset")
                for p in sorted(set(a[k]) | set(b[k])):
                    if a[k].get(p) != b[k].get(p):
                        out.append(f"{label}{p}: stored {a[k].get(p, missing)} vs requested {b[k].get(p, missing)}")
            elif a[k] != b[k]:
                out.append(f"{k}: stored {a[k]} vs requested {b[k]}")
        return out
