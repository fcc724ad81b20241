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
  number as (real, imaginary).  Its length must be ``lx*ly*lz*lt * 4*9*2 * precision/8``.  NaN or infinite
  numbers are refused when reading (no link holds them; data in little-endian byte order usually show so).
* Record ``ildg-data-lfn`` (optional): the logical file name, plain UTF-8 text (trailing
  NULs and whitespace are stripped when reading).
* Any other record (``scidac-private-file-xml``, ``xlf-info``, ...) is skipped for the
  data and kept in ``metadata["records"]``.  Record order is not significant when reading.
  ``xlf-info`` (plain ``key = value`` text: plaquette, trajectory, beta, ...) is read and written by
  :mod:`corrflow.ildg.xlf`; ``corrflow export-ildg`` writes one, ``import-ildg`` checks against it.

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

from .binary import scidac_checksum
from .lime import IldgFormatError, LimeRecord, read_lime_records
from .reader import read_ildg
from .writer import write_ildg
from .xlf import REC_XLF, format_xlf_info, parse_xlf_info

# the other names this module defined before it was split into a package
from .binary import (  # noqa: F401
    _CORRFLOW_DIR_OF_FILE,
    _FILE_DIR_OF_CORRFLOW,
    _RESERVED,
    ILDG_NAMESPACE,
    N_COLOR,
    N_DIM,
    REC_BINARY,
    REC_CHECKSUM,
    REC_FORMAT,
    REC_LFN,
    _checksum_xml,
    _decode_record,
    _format_xml,
    _from_file_order,
    _local,
    _parse_xml,
    _to_file_order,
    _unitarity_violation,
    _xml_fields,
)
from .lime import (  # noqa: F401
    FLAG_MB,
    FLAG_ME,
    LIME_HEADER,
    LIME_HEADER_SIZE,
    LIME_MAGIC,
    LIME_TYPE_SIZE,
    LIME_VERSION,
    PathLike,
    _check_record_type,
    _Record,
    _scan,
    _write_record,
)
from .reader import _parse_checksum, _parse_format, _read_data, _single  # noqa: F401
from .writer import _atomic_write, _validate_links  # noqa: F401

__all__ = [
    "IldgFormatError",
    "REC_XLF",
    "format_xlf_info",
    "parse_xlf_info",
    "LimeRecord",
    "read_ildg",
    "read_lime_records",
    "scidac_checksum",
    "write_ildg",
]
