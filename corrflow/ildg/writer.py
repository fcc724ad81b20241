"""Writing ILDG files (:func:`write_ildg`): argument checks, the records of one message, the atomic replace."""

from __future__ import annotations

import os
import secrets
from typing import Any

import numpy as np

from .binary import (
    _RESERVED,
    N_COLOR,
    N_DIM,
    REC_BINARY,
    REC_CHECKSUM,
    REC_FORMAT,
    REC_LFN,
    _checksum_xml,
    _format_xml,
    _to_file_order,
    scidac_checksum,
)
from .lime import PathLike, _check_record_type, _write_record


# ----------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------


def _validate_links(links: Any) -> np.ndarray:
    u = np.asarray(links)
    if u.ndim != 7 or u.shape[4:] != (N_DIM, N_COLOR, N_COLOR) or min(u.shape[:4], default=0) < 1:
        raise ValueError(
            f"write_ildg: links have shape {u.shape}; expected (L_t, L_x, L_y, L_z, 4, 3, 3) "
            "with positive extents (corrflow layout: sites t, x, y, z; direction mu = t, x, y, z; 3x3 matrix)"
        )
    if u.dtype.kind != "c":
        raise ValueError(
            f"write_ildg: links must have a complex dtype (SU(3) matrices), got dtype {u.dtype}"
        )
    if not np.all(np.isfinite(u)):
        raise ValueError("write_ildg: links contain non-finite values (nan or inf)")
    return u


def write_ildg(
    path: PathLike,
    links: Any,
    *,
    precision: int = 64,
    lfn: str | None = None,
    extra_records: dict[str, bytes] | None = None,
    checksum: bool = True,
) -> None:
    """Write an SU(3) configuration in corrflow layout to ``path`` as an ILDG file.

    Parameters
    ----------
    path:
        Target file; replaced atomically (temporary file in the same directory + ``os.replace``).
    links:
        Array-like of shape ``(L_t, L_x, L_y, L_z, 4, 3, 3)``, complex (numpy or JAX).
    precision:
        32 or 64: IEEE precision of the stored floats (single precision rounds to nearest).
    lfn:
        Logical file name, stored in an ``ildg-data-lfn`` record when given.
    extra_records:
        Additional records ``{type: data}`` (``bytes`` or ``str``, the latter UTF-8 encoded),
        written after ``ildg-format``/``ildg-data-lfn`` and before the binary data.  The
        types ``ildg-format``, ``ildg-binary-data``, ``ildg-data-lfn`` and
        ``scidac-checksum`` are reserved.
    checksum:
        Write a ``scidac-checksum`` record after the binary data.

    Record order written (one LIME message): ``ildg-format`` (MB), ``ildg-data-lfn``,
    extra records, ``ildg-binary-data``, ``scidac-checksum`` (ME on the last record).
    Raises ``ValueError`` for bad arguments (nothing is written then).
    """
    if isinstance(precision, bool) or precision not in (32, 64):
        raise ValueError(f"write_ildg: precision must be 32 or 64 (bits), got {precision!r}")
    u = _validate_links(links)
    lt, lx, ly, lz = (int(n) for n in u.shape[:4])

    records: list[tuple[str, Any]] = [(REC_FORMAT, _format_xml(lx, ly, lz, lt, precision))]
    if lfn is not None:
        if not isinstance(lfn, str):
            raise ValueError(f"write_ildg: lfn must be a string, got {type(lfn).__name__}")
        records.append((REC_LFN, lfn.encode("utf-8")))
    for rtype, data in (extra_records or {}).items():
        _check_record_type(rtype)
        if rtype in _RESERVED:
            raise ValueError(f"write_ildg: extra record type {rtype!r} is reserved (written by write_ildg itself)")
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValueError(f"write_ildg: extra record {rtype!r} must be bytes or str, got {type(data).__name__}")
        records.append((rtype, bytes(data)))

    payload = _to_file_order(u, precision).reshape(-1).view(np.uint8)
    records.append((REC_BINARY, payload))
    if checksum:
        site_bytes = N_DIM * N_COLOR * N_COLOR * 2 * precision // 8
        records.append((REC_CHECKSUM, _checksum_xml(*scidac_checksum(payload, site_bytes))))

    _atomic_write(path, records)


def _atomic_write(path: PathLike, records: list[tuple[str, Any]]) -> None:
    target = os.path.abspath(os.fspath(path))
    directory, base = os.path.split(target)
    while True:
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            last = len(records) - 1
            for i, (rtype, data) in enumerate(records):
                _write_record(f, rtype, data, mb=(i == 0), me=(i == last))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename durable (best effort; not available on every platform)
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
