"""The ILDG binary format of :mod:`corrflow.ildg` above the LIME layer: record types, the ``ildg-format`` and
``scidac-checksum`` XML, the SciDAC checksum, and the conversion between the file's and corrflow's array layout.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
import zlib
from typing import Any

import numpy as np

from .lime import IldgFormatError

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
    """``max |U U^dag - 1|`` over all links (computed one time slice at a time); NaN if any link holds a NaN."""
    eye = np.eye(N_COLOR)
    worst = 0.0
    with np.errstate(all="ignore"):  # garbage data may overflow: the result says so (inf)
        for t in range(u.shape[0]):
            s = u[t]
            d = np.einsum("...ij,...kj->...ik", s, s.conj()) - eye
            v = float(np.max(np.abs(d))) if d.size else 0.0
            if np.isnan(v):  # max(worst, nan) would keep worst: a NaN link would pass as unitary
                return v
            worst = max(worst, v)
    return worst
