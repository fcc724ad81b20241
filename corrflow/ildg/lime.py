"""The LIME container of :mod:`corrflow.ildg`: record headers and flags, :class:`IldgFormatError`, walking the
records of a file (:func:`read_lime_records`) and writing one record.
"""

from __future__ import annotations

import os
import struct
import warnings
from typing import IO, Any, NamedTuple, Union

PathLike = Union[str, "os.PathLike[str]"]

LIME_MAGIC = 0x456789AB
LIME_VERSION = 1
LIME_HEADER = struct.Struct(">IHHq128s")  # 4 + 2 + 2 + 8 + 128 = 144 bytes
LIME_HEADER_SIZE = LIME_HEADER.size
LIME_TYPE_SIZE = 128
FLAG_MB = 0x8000
FLAG_ME = 0x4000


class IldgFormatError(ValueError):
    """A file is not a valid ILDG/LIME gauge configuration (or fails its checksum)."""


class LimeRecord(NamedTuple):
    """One LIME record: its type, the byte offset of its *data* in the file, and the data length."""

    type: str
    offset: int
    length: int


class _Record(NamedTuple):
    type: str
    offset: int          # offset of the data (header offset + 144)
    length: int          # declared data length (without padding)
    header_offset: int
    mb: bool
    me: bool


# ----------------------------------------------------------------------------------------
# LIME layer
# ----------------------------------------------------------------------------------------


def _scan(f: IO[bytes], size: int, name: str) -> list[_Record]:
    """Walk the record headers of an open LIME file of ``size`` bytes."""
    if size == 0:
        raise IldgFormatError(f"{name}: file is empty; expected an ILDG/LIME file")
    records: list[_Record] = []
    pos = 0
    while pos < size:
        f.seek(pos)
        remaining = size - pos
        head = f.read(min(remaining, LIME_HEADER_SIZE))
        if len(head) >= 4:
            magic = struct.unpack(">I", head[:4])[0]
            if magic != LIME_MAGIC:
                if pos == 0:
                    raise IldgFormatError(
                        f"{name}: not an ILDG/LIME file: expected LIME magic number 0x{LIME_MAGIC:08x} "
                        f"at offset 0, found 0x{magic:08x} (first bytes {head[:16]!r})"
                    )
                raise IldgFormatError(
                    f"{name}: corrupt LIME file: expected a record header with magic number "
                    f"0x{LIME_MAGIC:08x} at offset {pos}, found 0x{magic:08x} "
                    f"({len(records)} valid records before it)"
                )
        if len(head) < LIME_HEADER_SIZE:
            raise IldgFormatError(
                f"{name}: truncated file: record header at offset {pos} is incomplete "
                f"(expected {LIME_HEADER_SIZE} bytes, found {len(head)})"
            )
        _, version, flags, length, rtype_raw = LIME_HEADER.unpack(head)
        rtype = rtype_raw.split(b"\0", 1)[0].decode("ascii", errors="replace")
        if version != LIME_VERSION:
            raise IldgFormatError(
                f"{name}: unsupported LIME version {version} in record {rtype!r} at offset {pos} "
                f"(only version {LIME_VERSION} is supported)"
            )
        if length < 0:
            raise IldgFormatError(f"{name}: record {rtype!r} at offset {pos} declares a negative length {length}")
        data_start = pos + LIME_HEADER_SIZE
        found = size - data_start
        if length > found:
            raise IldgFormatError(
                f"{name}: truncated file: record {rtype!r} at offset {pos} declares {length} data bytes, "
                f"but only {found} bytes follow its header (expected {length}, found {found})"
            )
        records.append(_Record(rtype, data_start, length, pos, bool(flags & FLAG_MB), bool(flags & FLAG_ME)))
        pos = data_start + length + (-length) % 8
    if not records[-1].me:
        warnings.warn(
            f"{name}: the last LIME record ({records[-1].type!r}) does not have the Message-End flag; "
            "the file may have been truncated at a record boundary",
            UserWarning,
            stacklevel=3,
        )
    return records


def read_lime_records(path: PathLike) -> list[LimeRecord]:
    """List the records of a LIME file as ``(type, offset, length)``.

    ``offset`` is the byte offset of the record's data (just after its 144-byte header) and
    ``length`` the declared data length (excluding padding).  Raises :class:`IldgFormatError`
    for a file that is not LIME or is truncated.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        return [LimeRecord(r.type, r.offset, r.length) for r in _scan(f, size, os.fspath(path))]


def _check_record_type(rtype: str) -> bytes:
    if not isinstance(rtype, str) or not rtype:
        raise ValueError(f"LIME record type must be a non-empty string, got {rtype!r}")
    try:
        raw = rtype.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"LIME record type must be ASCII, got {rtype!r}") from None
    if len(raw) > LIME_TYPE_SIZE or b"\0" in raw:
        raise ValueError(f"LIME record type must be at most {LIME_TYPE_SIZE} bytes without NULs, got {rtype!r}")
    return raw


def _write_record(f: IO[bytes], rtype: str, data: Any, *, mb: bool, me: bool) -> None:
    """Write one LIME record (header, data, zero padding to 8 bytes) to ``f``."""
    view = memoryview(data)
    length = view.nbytes
    flags = (FLAG_MB if mb else 0) | (FLAG_ME if me else 0)
    f.write(LIME_HEADER.pack(LIME_MAGIC, LIME_VERSION, flags, length, _check_record_type(rtype)))
    f.write(view)
    pad = (-length) % 8
    if pad:
        f.write(b"\0" * pad)
