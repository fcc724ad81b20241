"""Reading ILDG files (:func:`read_ildg`): the required records, the ``ildg-format`` and checksum XML, the checks
of length, checksum and unitarity.
"""

from __future__ import annotations

import os
from typing import IO, Any

import numpy as np

from .binary import (
    N_COLOR,
    N_DIM,
    REC_BINARY,
    REC_CHECKSUM,
    REC_FORMAT,
    REC_LFN,
    _decode_record,
    _from_file_order,
    _local,
    _parse_xml,
    _unitarity_violation,
    _xml_fields,
    scidac_checksum,
)
from .lime import IldgFormatError, PathLike, _Record, _scan


# ----------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------


def _single(records: list[_Record], rtype: str, name: str) -> _Record:
    found = [r for r in records if r.type == rtype]
    if not found:
        present = ", ".join(repr(r.type) for r in records)
        raise IldgFormatError(f"{name}: missing required record {rtype!r} (records present: {present})")
    if len(found) > 1:
        raise IldgFormatError(
            f"{name}: found {len(found)} {rtype!r} records; only single-configuration ILDG files are supported"
        )
    return found[0]


def _read_data(f: IO[bytes], rec: _Record, name: str) -> bytes:
    f.seek(rec.offset)
    data = f.read(rec.length)
    if len(data) != rec.length:  # pragma: no cover - guarded by _scan, but the file may change under us
        raise IldgFormatError(
            f"{name}: truncated record {rec.type!r}: expected {rec.length} bytes, found {len(data)}"
        )
    return data


def _parse_format(data: bytes, name: str) -> dict[str, Any]:
    root = _parse_xml(data, REC_FORMAT, name)
    if _local(root.tag) != "ildgFormat":
        raise IldgFormatError(f"{name}: record {REC_FORMAT!r} has root element <{_local(root.tag)}>, expected <ildgFormat>")
    fields = _xml_fields(root)
    missing = [k for k in ("field", "precision", "lx", "ly", "lz", "lt") if k not in fields]
    if missing:
        raise IldgFormatError(f"{name}: record {REC_FORMAT!r} lacks element(s) {', '.join(missing)}")
    out: dict[str, Any] = {"field": fields["field"], "version": fields.get("version")}
    if out["field"] != "su3gauge":
        raise IldgFormatError(f"{name}: unsupported field {out['field']!r} in {REC_FORMAT!r}; only 'su3gauge' is supported")
    for key in ("precision", "lx", "ly", "lz", "lt"):
        try:
            out[key] = int(fields[key])
        except ValueError:
            raise IldgFormatError(f"{name}: <{key}> in {REC_FORMAT!r} is not an integer: {fields[key]!r}") from None
    if out["precision"] not in (32, 64):
        raise IldgFormatError(f"{name}: unsupported precision {out['precision']} in {REC_FORMAT!r}; expected 32 or 64")
    for key in ("lx", "ly", "lz", "lt"):
        if out[key] < 1:
            raise IldgFormatError(f"{name}: lattice extent <{key}>={out[key]} in {REC_FORMAT!r} must be positive")
    return out


def _parse_checksum(data: bytes, name: str) -> tuple[int, int]:
    root = _parse_xml(data, REC_CHECKSUM, name)
    fields = _xml_fields(root)
    try:
        return int(fields["suma"], 16), int(fields["sumb"], 16)
    except (KeyError, ValueError):
        raise IldgFormatError(
            f"{name}: record {REC_CHECKSUM!r} must contain hexadecimal <suma> and <sumb>, got {fields}"
        ) from None


def _check_finite(raw: np.ndarray, precision: int, name: str) -> None:
    """Refuse NaN or infinite numbers in the binary data ``raw`` (file order ``(t, z, y, x, mu', a, b, 2)``, checked
    one time slice at a time): no gauge link holds them, and a NaN passes every later check (``NaN > tol`` is false)."""
    for t in range(raw.shape[0]):
        bad = ~np.isfinite(raw[t])
        if bad.any():
            z, y, x, mu = (int(i) for i in np.argwhere(bad)[0][:4])
            raise IldgFormatError(
                f"{name}: the binary data hold non-finite numbers (nan or inf), the first in the {'xyzt'[mu]}-link at "
                f"site (x, y, z, t) = ({x}, {y}, {z}, {t}): not {precision}-bit big-endian IEEE floats (written in "
                "another byte order or precision?), or a corrupted configuration"
            )


def read_ildg(
    path: PathLike, *, dtype: Any = None, check_unitarity: bool = True
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read an ILDG SU(3) configuration into corrflow layout.

    Returns ``(links, metadata)``.  ``links`` has shape ``(L_t, L_x, L_y, L_z, 4, 3, 3)``
    and dtype ``complex128`` for precision 64, ``complex64`` for precision 32, or ``dtype``
    if given (must be a complex dtype).  ``metadata`` contains

    * ``"lx", "ly", "lz", "lt", "precision", "field", "version"`` from ``ildg-format``;
    * ``"lfn"`` (``str``) if an ``ildg-data-lfn`` record is present;
    * ``"records"``: every record except ``ildg-binary-data``, keyed by type; XML records as
      ``str`` (trailing NULs stripped), others as ``bytes``; a type that occurs more than
      once maps to a list of its values in file order;
    * ``"checksum_ok"``: ``True`` if a ``scidac-checksum`` record was present and matched,
      ``None`` if there was none (a mismatch raises);
    * ``"scidac_checksum"``: ``(suma, sumb)`` computed from the binary data, if checked;
    * ``"unitarity_violation"``: ``max |U U^dag - 1|`` (if ``check_unitarity``).

    Raises :class:`IldgFormatError` for a file that is not LIME, is truncated, lacks the
    ``ildg-format`` or ``ildg-binary-data`` record, has an unsupported field or precision,
    malformed XML, a binary record of the wrong length, a SciDAC checksum mismatch, or binary data holding NaN or
    infinite numbers (e.g. data in little-endian byte order).
    """
    name = os.fspath(path)
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype.kind != "c":
            raise ValueError(f"read_ildg: dtype must be a complex dtype, got {dtype}")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        recs = _scan(f, size, name)
        fmt_rec = _single(recs, REC_FORMAT, name)
        bin_rec = _single(recs, REC_BINARY, name)

        records: dict[str, Any] = {}
        raw_by_index: dict[int, bytes] = {}
        for i, rec in enumerate(recs):
            if rec.type == REC_BINARY:
                continue
            raw = _read_data(f, rec, name)
            raw_by_index[i] = raw
            value = _decode_record(raw)
            if rec.type in records:
                prev = records[rec.type]
                records[rec.type] = (prev if isinstance(prev, list) else [prev]) + [value]
            else:
                records[rec.type] = value

        meta: dict[str, Any] = _parse_format(raw_by_index[recs.index(fmt_rec)], name)
        lx, ly, lz, lt, precision = (meta[k] for k in ("lx", "ly", "lz", "lt", "precision"))
        site_bytes = N_DIM * N_COLOR * N_COLOR * 2 * precision // 8
        expected = lx * ly * lz * lt * site_bytes
        if bin_rec.length != expected:
            raise IldgFormatError(
                f"{name}: binary data length mismatch: record {REC_BINARY!r} has {bin_rec.length} bytes, but "
                f"ildg-format (lx={lx}, ly={ly}, lz={lz}, lt={lt}, precision={precision}) requires "
                f"lx*ly*lz*lt*4*9*2*{precision // 8} = {expected} bytes"
            )
        payload = _read_data(f, bin_rec, name)

    lfn_recs = [i for i, r in enumerate(recs) if r.type == REC_LFN]
    if lfn_recs:
        meta["lfn"] = raw_by_index[lfn_recs[0]].rstrip(b"\0").decode("utf-8", errors="replace").strip()

    meta["checksum_ok"] = None
    ck_idx = [i for i, r in enumerate(recs) if r.type == REC_CHECKSUM]
    if ck_idx:
        bin_idx = recs.index(bin_rec)
        after = [i for i in ck_idx if i > bin_idx]
        stored = _parse_checksum(raw_by_index[(after or ck_idx)[0]], name)
        computed = scidac_checksum(payload, site_bytes)
        meta["scidac_checksum"] = computed
        if computed != stored:
            raise IldgFormatError(
                f"{name}: SciDAC checksum mismatch: the file records suma={stored[0]:x} sumb={stored[1]:x}, "
                f"but the binary data give suma={computed[0]:x} sumb={computed[1]:x} (data corrupted?)"
            )
        meta["checksum_ok"] = True

    raw = np.frombuffer(payload, dtype=np.dtype(f">f{precision // 8}")).reshape(
        lt, lz, ly, lx, N_DIM, N_COLOR, N_COLOR, 2
    )
    _check_finite(raw, precision, name)
    out_dtype = dtype if dtype is not None else np.dtype(np.complex128 if precision == 64 else np.complex64)
    u = _from_file_order(raw, out_dtype)
    meta["records"] = records
    if check_unitarity:
        meta["unitarity_violation"] = _unitarity_violation(u)
    return u, meta
