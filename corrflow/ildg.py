"""Reading and writing SU(3) gauge configurations in the ILDG (LIME) file format.

What this module follows
------------------------
**LIME container** (the "Lattice QCD Interchange Message Encapsulation" record format):

* A file is a sequence of records.  Each record is a 144-byte header followed by its data,
  zero-padded to a multiple of 8 bytes.  The header is big-endian:

  ======  =====  ============================================================
  offset  size   content
  ======  =====  ============================================================
  0       4      magic number ``0x456789ab`` (uint32)
  4       2      LIME version, ``1`` (uint16)
  6       2      flags: bit 15 (``0x8000``) Message Begin, bit 14 (``0x4000``)
                 Message End, other bits reserved (written as 0, ignored)
  8       8      data length in bytes, *without* the padding (int64)
  16      128    record type, ASCII, NUL padded
  ======  =====  ============================================================

* Records are grouped into messages by the MB/ME flags.  :func:`write_ildg` writes one
  message: the first record has MB set, the last ME set.  When reading, flags are only used
  as a hint: a file whose last record lacks ME is reported with a :class:`UserWarning`
  (it may have been cut at a record boundary); missing padding after the *last* record is
  tolerated because the data themselves are complete.

**ILDG gauge configuration** (ILDG binary file format, version 1.0):

* Record ``ildg-format``: XML ``<ildgFormat xmlns="http://www.lqcd.org/ildg">`` with
  ``<version>1.0</version> <field>su3gauge</field> <precision>32|64</precision>
  <lx/> <ly/> <lz/> <lt/>``.  Elements are matched by local name (namespace ignored) when
  reading; ``field`` must be ``su3gauge`` and ``precision`` 32 or 64.
* Record ``ildg-binary-data``: big-endian IEEE-754 floats of the given precision, laid out
  as the C array ``U[lt][lz][ly][lx][4][3][3][2]``: site order x fastest, then y, z, and t
  slowest; at each site the four links in direction order x, y, z, t; each link a 3x3
  complex matrix in row-major order (``U[a][b]``, column index ``b`` fastest); each complex
  number as (real, imaginary).  Its length must be ``lx*ly*lz*lt * 4*9*2 * precision/8``.
* Record ``ildg-data-lfn`` (optional): the logical file name, plain UTF-8 text (trailing
  NULs and whitespace are stripped when reading).
* Any other record (``scidac-private-file-xml``, ``xlf-info``, ...) is skipped for the
  data and kept in ``metadata["records"]``.  Record order is not significant when reading.

**SciDAC checksum** (record ``scidac-checksum``, XML ``<scidacChecksum><version>1.0</version>
<suma>hex</suma><sumb>hex</sumb></scidacChecksum>``): for each site with rank ``r`` in the
file's site order (``r = x + lx*(y + ly*(z + lz*t))``), ``c = crc32`` (zlib's CRC-32) of that
site's bytes *as stored in the file* (big-endian, all four links), and
``suma ^= rotl32(c, r % 29)``, ``sumb ^= rotl32(c, r % 31)`` starting from 0.  Written by
default, verified when present on reading.

corrflow layout
---------------
In memory a configuration is a complex array of shape ``(L_t, L_x, L_y, L_z, 4, 3, 3)``:
site axes (t, x, y, z), then the direction ``mu`` with ``mu = 0`` time and ``mu = 1, 2, 3``
= x, y, z, then the matrix (row, column).  ``U_mu(x)`` points from ``x`` to ``x + mu``, the
same convention as ILDG, so no matrices are transposed or conjugated: the conversion is a
permutation of the site axes (t, z, y, x) <-> (t, x, y, z) and of the direction axis, file
direction ``mu' = 0, 1, 2, 3`` (x, y, z, t) <-> corrflow ``mu = 1, 2, 3, 0``.

Writes are atomic: the file is written to a temporary file in the target directory, fsynced
and moved into place with :func:`os.replace`, so an interrupted write never leaves a partial
file under the final name (nor a stray temporary file when an exception is raised).

This module depends on numpy only.
"""

from __future__ import annotations

import os
import secrets
import struct
import warnings
import xml.etree.ElementTree as ET
import zlib
from typing import IO, Any, NamedTuple, Union

import numpy as np

__all__ = [
    "IldgFormatError",
    "LimeRecord",
    "read_ildg",
    "read_lime_records",
    "scidac_checksum",
    "write_ildg",
]

PathLike = Union[str, "os.PathLike[str]"]

LIME_MAGIC = 0x456789AB
LIME_VERSION = 1
LIME_HEADER = struct.Struct(">IHHq128s")  # 4 + 2 + 2 + 8 + 128 = 144 bytes
LIME_HEADER_SIZE = LIME_HEADER.size
LIME_TYPE_SIZE = 128
FLAG_MB = 0x8000
FLAG_ME = 0x4000

ILDG_NAMESPACE = "http://www.lqcd.org/ildg"
REC_FORMAT = "ildg-format"
REC_BINARY = "ildg-binary-data"
REC_LFN = "ildg-data-lfn"
REC_CHECKSUM = "scidac-checksum"
_RESERVED = (REC_FORMAT, REC_BINARY, REC_LFN, REC_CHECKSUM)

N_DIM = 4
N_COLOR = 3
# corrflow direction mu (0 = t, 1..3 = x, y, z) -> ILDG file direction mu' (0..3 = x, y, z, t)
_FILE_DIR_OF_CORRFLOW = (3, 0, 1, 2)
# ILDG file direction mu' -> corrflow mu; indexing corrflow[..., _CORRFLOW_DIR_OF_FILE] gives file order
_CORRFLOW_DIR_OF_FILE = (1, 2, 3, 0)


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


# ----------------------------------------------------------------------------------------
# SciDAC checksum
# ----------------------------------------------------------------------------------------


def scidac_checksum(data: Any, site_bytes: int) -> tuple[int, int]:
    """SciDAC ``(suma, sumb)`` of ``data`` (bytes-like, sites in file order, ``site_bytes`` each).

    ``c_r = crc32(site r)``; ``suma = XOR_r rotl32(c_r, r % 29)``, ``sumb = XOR_r rotl32(c_r, r % 31)``.
    The CRCs are computed with one zlib call per site (no copies); the rotations and XOR
    reductions are vectorised.
    """
    view = memoryview(data).cast("B")
    if site_bytes <= 0 or view.nbytes % site_bytes:
        raise ValueError(f"data length {view.nbytes} is not a multiple of the site size {site_bytes}")
    n = view.nbytes // site_bytes
    crc = zlib.crc32
    crcs = np.fromiter(
        (crc(view[i:i + site_bytes]) for i in range(0, n * site_bytes, site_bytes)), dtype=np.uint64, count=n
    )
    rank = np.arange(n, dtype=np.uint64)
    mask = np.uint64(0xFFFFFFFF)
    sums = []
    for m in (29, 31):
        k = rank % np.uint64(m)
        # k < 32, so crc >> (32 - k) is well defined for uint64 (and 0 for k = 0)
        rot = ((crcs << k) | (crcs >> (np.uint64(32) - k))) & mask
        sums.append(int(np.bitwise_xor.reduce(rot)) if n else 0)
    return sums[0], sums[1]


# ----------------------------------------------------------------------------------------
# XML helpers
# ----------------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse_xml(data: bytes, rtype: str, name: str) -> ET.Element:
    try:
        return ET.fromstring(data.rstrip(b"\0").strip())
    except ET.ParseError as e:
        raise IldgFormatError(f"{name}: malformed XML in record {rtype!r}: {e}") from None


def _xml_fields(root: ET.Element) -> dict[str, str]:
    """Direct text children of ``root`` keyed by local tag name."""
    return {_local(child.tag): (child.text or "").strip() for child in root}


def _format_xml(lx: int, ly: int, lz: int, lt: int, precision: int) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<ildgFormat xmlns="{ILDG_NAMESPACE}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xsi:schemaLocation="{ILDG_NAMESPACE} http://www.lqcd.org/ildg/filefmt.xsd">'
        "<version>1.0</version><field>su3gauge</field>"
        f"<precision>{precision}</precision><lx>{lx}</lx><ly>{ly}</ly><lz>{lz}</lz><lt>{lt}</lt>"
        "</ildgFormat>"
    ).encode("utf-8")


def _checksum_xml(suma: int, sumb: int) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<scidacChecksum><version>1.0</version><suma>{suma:x}</suma><sumb>{sumb:x}</sumb></scidacChecksum>"
    ).encode("ascii")


def _decode_record(data: bytes) -> bytes | str:
    """XML records (text starting with ``<``) as ``str`` (trailing NULs stripped), others as bytes."""
    text = data.rstrip(b"\0")
    if text.lstrip().startswith(b"<"):
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError:
            return data
    return data


# ----------------------------------------------------------------------------------------
# layout conversion
# ----------------------------------------------------------------------------------------


def _to_file_order(u: np.ndarray, precision: int) -> np.ndarray:
    """corrflow ``(t, x, y, z, mu, a, b)`` -> big-endian real ``(t, z, y, x, mu', a, b, 2)``."""
    f = np.transpose(u, (0, 3, 2, 1, 4, 5, 6))[:, :, :, :, list(_CORRFLOW_DIR_OF_FILE)]
    out = np.empty(f.shape + (2,), dtype=np.dtype(f">f{precision // 8}"))
    out[..., 0] = f.real
    out[..., 1] = f.imag
    return out


def _from_file_order(raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Big-endian real ``(t, z, y, x, mu', a, b, 2)`` -> corrflow ``(t, x, y, z, mu, a, b)``."""
    c = np.empty(raw.shape[:-1], dtype=dtype)
    c.real = raw[..., 0]
    c.imag = raw[..., 1]
    c = c[:, :, :, :, list(_FILE_DIR_OF_CORRFLOW)]
    return np.ascontiguousarray(np.transpose(c, (0, 3, 2, 1, 4, 5, 6)))


def _unitarity_violation(u: np.ndarray) -> float:
    """``max |U U^dag - 1|`` over all links (computed one time slice at a time)."""
    eye = np.eye(N_COLOR)
    worst = 0.0
    for t in range(u.shape[0]):
        s = u[t]
        d = np.einsum("...ij,...kj->...ik", s, s.conj()) - eye
        worst = max(worst, float(np.max(np.abs(d))) if d.size else 0.0)
    return worst


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
    malformed XML, a binary record of the wrong length, or a SciDAC checksum mismatch.
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
    out_dtype = dtype if dtype is not None else np.dtype(np.complex128 if precision == 64 else np.complex64)
    u = _from_file_order(raw, out_dtype)
    meta["records"] = records
    if check_unitarity:
        meta["unitarity_violation"] = _unitarity_violation(u)
    return u, meta
