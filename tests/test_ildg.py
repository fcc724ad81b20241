"""Tests for corrflow.ildg: ILDG/LIME reading and writing.

Independent references used here: LIME headers, ILDG payloads and SciDAC checksums are built
by hand with ``struct`` and explicit Python loops (not with corrflow.ildg's own helpers).
"""

from __future__ import annotations

import os
import struct
import warnings
import xml.etree.ElementTree as ET
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import corrflow  # noqa: F401  (enables x64)
from corrflow import ildg, observables
from corrflow.groups import SUN
from corrflow.ildg import IldgFormatError, read_ildg, read_lime_records, write_ildg
from corrflow.ildg import writer as ildg_writer

LT, LX, LY, LZ = 4, 2, 6, 3  # all distinct so that any axis mix-up changes shapes or values
MAGIC = 0x456789AB


# ----------------------------------------------------------------------------------------
# independent helpers
# ----------------------------------------------------------------------------------------


def lime_record(rtype: str, data: bytes, flags: int = 0) -> bytes:
    """Hand-made LIME record: 144-byte big-endian header, data, zero padding to 8 bytes."""
    header = struct.pack(">I", MAGIC) + struct.pack(">H", 1) + struct.pack(">H", flags)
    header += struct.pack(">q", len(data)) + rtype.encode("ascii").ljust(128, b"\0")
    assert len(header) == 144
    return header + data + b"\0" * ((-len(data)) % 8)


def lime_file(records: list[tuple[str, bytes]]) -> bytes:
    out = b""
    for i, (rtype, data) in enumerate(records):
        flags = (0x8000 if i == 0 else 0) | (0x4000 if i == len(records) - 1 else 0)
        out += lime_record(rtype, data, flags)
    return out


def format_xml(lx: int, ly: int, lz: int, lt: int, precision: int = 64, field: str = "su3gauge") -> bytes:
    return (
        f'<?xml version="1.0"?><ildgFormat xmlns="http://www.lqcd.org/ildg"><version>1.0</version>'
        f"<field>{field}</field><precision>{precision}</precision>"
        f"<lx>{lx}</lx><ly>{ly}</ly><lz>{lz}</lz><lt>{lt}</lt></ildgFormat>"
    ).encode()


def ref_checksum(payload: bytes, site_bytes: int) -> tuple[int, int]:
    """SciDAC checksum with a plain per-site loop."""
    suma = sumb = 0
    for r in range(len(payload) // site_bytes):
        c = zlib.crc32(payload[r * site_bytes:(r + 1) * site_bytes]) & 0xFFFFFFFF
        a, b = r % 29, r % 31
        suma ^= ((c << a) | (c >> (32 - a))) & 0xFFFFFFFF
        sumb ^= ((c << b) | (c >> (32 - b))) & 0xFFFFFFFF
    return suma, sumb


def checksum_xml(suma: int, sumb: int) -> bytes:
    return (f"<scidacChecksum><version>1.0</version><suma>{suma:x}</suma>"
            f"<sumb>{sumb:x}</sumb></scidacChecksum>").encode()


def code(t: int, z: int, y: int, x: int, mup: int, a: int, b: int, dims) -> int:
    """Unique integer per stored matrix element (file order t, z, y, x, mu', a, b)."""
    lt, lz, ly, lx = dims
    return ((((((t * lz + z) * ly + y) * lx + x) * 4 + mup) * 3 + a) * 3 + b)


def file_order(lt: int, lz: int, ly: int, lx: int):
    """Every (t, z, y, x, mu', row, col) in ILDG file order: t slowest, then z, y, x; mu' = x, y, z, t;
    row-major matrices (explicit loops, independent of corrflow.ildg)."""
    for t in range(lt):
        for z in range(lz):
            for y in range(ly):
                for x in range(lx):
                    for mup in range(4):
                        for a in range(3):
                            for b in range(3):
                                yield t, z, y, x, mup, a, b


def hand_payload(lx: int, ly: int, lz: int, lt: int) -> bytes:
    """ILDG payload built element by element in file order."""
    out = bytearray()
    for t, z, y, x, mup, a, b in file_order(lt, lz, ly, lx):
        k = code(t, z, y, x, mup, a, b, (lt, lz, ly, lx))
        out += struct.pack(">d", float(k)) + struct.pack(">d", -k - 0.5)
    return bytes(out)


def parse_headers(blob: bytes) -> list[tuple[str, int, int, int]]:
    """(type, flags, data offset, length) by walking the headers by hand."""
    out, pos = [], 0
    while pos < len(blob):
        magic, version, flags, length = struct.unpack(">IHHq", blob[pos:pos + 16])
        assert magic == MAGIC and version == 1
        rtype = blob[pos + 16:pos + 144].rstrip(b"\0").decode()
        out.append((rtype, flags, pos + 144, length))
        pos += 144 + length + (-length) % 8
    assert pos == len(blob)
    return out


@pytest.fixture(scope="module")
def config() -> np.ndarray:
    return np.asarray(SUN(3).random(jax.random.PRNGKey(0), (LT, LX, LY, LZ, 4)))


def plaq(u) -> float:
    return float(observables.plaquette(jnp.asarray(u), SUN(3)))


# ----------------------------------------------------------------------------------------
# round trips
# ----------------------------------------------------------------------------------------


def test_round_trip_double_is_bitwise(tmp_path, config):
    path = tmp_path / "cfg.lime"
    write_ildg(path, config, lfn="lfn://corrflow/test/cfg.1")
    u, meta = read_ildg(path)
    assert u.dtype == np.complex128 and u.shape == (LT, LX, LY, LZ, 4, 3, 3)
    assert u.tobytes() == config.tobytes()
    assert (meta["lx"], meta["ly"], meta["lz"], meta["lt"]) == (LX, LY, LZ, LT)
    assert meta["precision"] == 64 and meta["field"] == "su3gauge"
    assert meta["lfn"] == "lfn://corrflow/test/cfg.1"
    assert meta["checksum_ok"] is True
    assert meta["unitarity_violation"] < 1e-13
    assert plaq(u) == plaq(config)
    assert sorted(os.listdir(tmp_path)) == ["cfg.lime"]  # no temporary file left behind


def test_round_trip_single(tmp_path, config):
    path = tmp_path / "cfg32.lime"
    write_ildg(path, jnp.asarray(config), precision=32)  # JAX input accepted
    u, meta = read_ildg(path)
    assert u.dtype == np.complex64 and meta["precision"] == 32 and meta["checksum_ok"] is True
    np.testing.assert_allclose(u.real, config.real, rtol=1e-7, atol=0)
    np.testing.assert_allclose(u.imag, config.imag, rtol=1e-7, atol=0)
    assert not np.array_equal(u.astype(np.complex128), config)  # really stored in single precision
    assert abs(plaq(u.astype(np.complex128)) - plaq(config)) < 1e-6
    assert meta["unitarity_violation"] < 1e-6
    u2, _ = read_ildg(path, dtype=np.complex128)
    assert u2.dtype == np.complex128
    np.testing.assert_array_equal(u2, u.astype(np.complex128))


def test_binary_size_and_lime_structure(tmp_path, config):
    path = tmp_path / "cfg.lime"
    write_ildg(path, config, precision=32, lfn="x", extra_records={"xlf-info": b"abc"})
    blob = path.read_bytes()
    heads = parse_headers(blob)
    types = [h[0] for h in heads]
    assert types == ["ildg-format", "ildg-data-lfn", "xlf-info", "ildg-binary-data", "scidac-checksum"]
    flags = [h[1] for h in heads]
    assert flags[0] == 0x8000 and flags[-1] == 0x4000 and all(f == 0 for f in flags[1:-1])
    assert all(off % 8 == 0 for _, _, off, _ in heads)
    binary = heads[types.index("ildg-binary-data")]
    assert binary[3] == LX * LY * LZ * LT * 4 * 9 * 2 * 4
    listed = read_lime_records(path)
    assert [(r.type, r.offset, r.length) for r in listed] == [(t, o, n) for t, _, o, n in heads]


def test_format_header_extents_match_corrflow_axes(tmp_path, config):
    path = tmp_path / "cfg.lime"
    write_ildg(path, config)
    _, meta = read_ildg(path)
    root = ET.fromstring(meta["records"]["ildg-format"])
    assert root.tag == "{http://www.lqcd.org/ildg}ildgFormat"
    f = {el.tag.split("}")[-1]: el.text for el in root}
    assert (int(f["lx"]), int(f["ly"]), int(f["lz"]), int(f["lt"])) == (LX, LY, LZ, LT)
    assert f["field"] == "su3gauge" and f["precision"] == "64" and f["version"] == "1.0"


# ----------------------------------------------------------------------------------------
# layout against independent construction
# ----------------------------------------------------------------------------------------

DIR_FILE_TO_CORRFLOW = {0: 1, 1: 2, 2: 3, 3: 0}  # file mu' (x, y, z, t) -> corrflow mu (t, x, y, z)


def test_reader_layout_against_hand_built_file(tmp_path):
    lt, lx, ly, lz = 2, 3, 4, 5
    payload = hand_payload(lx, ly, lz, lt)
    ck = ref_checksum(payload, 4 * 9 * 16)
    blob = lime_file([("ildg-format", format_xml(lx, ly, lz, lt)), ("ildg-binary-data", payload),
                      ("scidac-checksum", checksum_xml(*ck))])
    path = tmp_path / "hand.lime"
    path.write_bytes(blob)
    u, meta = read_ildg(path)
    assert u.shape == (lt, lx, ly, lz, 4, 3, 3)
    assert meta["checksum_ok"] is True
    # the example from the spec: U_time at (t=1, x=0, y=2, z=0) is file direction mu'=3 there
    k0 = code(1, 0, 2, 0, 3, 0, 0, (lt, lz, ly, lx))
    expected = np.array([[k0 + 3 * a + b - 1j * (k0 + 3 * a + b + 0.5) for b in range(3)] for a in range(3)])
    np.testing.assert_array_equal(u[1, 0, 2, 0, 0], expected)
    # U_x at (t=0, x=2, y=1, z=4) is file mu'=0; element (row 1, column 2)
    k = code(0, 4, 1, 2, 0, 1, 2, (lt, lz, ly, lx))
    assert u[0, 2, 1, 4, 1, 1, 2] == complex(k, -k - 0.5)
    # exhaustive check
    for t, z, y, x, mup, a, b in file_order(lt, lz, ly, lx):
        k = code(t, z, y, x, mup, a, b, (lt, lz, ly, lx))
        assert u[t, x, y, z, DIR_FILE_TO_CORRFLOW[mup], a, b] == complex(k, -k - 0.5)


def test_writer_layout_and_checksum_independently_decoded(tmp_path, config):
    path = tmp_path / "cfg.lime"
    write_ildg(path, config)
    blob = path.read_bytes()
    heads = {h[0]: h for h in parse_headers(blob)}
    _, _, off, length = heads["ildg-binary-data"]
    payload = blob[off:off + length]
    for t in range(LT):
        for z in range(LZ):
            for y in range(LY):
                for x in range(LX):
                    for mup in range(4):
                        for a in range(3):
                            for b in range(3):
                                i = code(t, z, y, x, mup, a, b, (LT, LZ, LY, LX))
                                re, im = struct.unpack_from(">dd", payload, 16 * i)
                                assert complex(re, im) == config[t, x, y, z, DIR_FILE_TO_CORRFLOW[mup], a, b]
    _, _, coff, clen = heads["scidac-checksum"]
    root = ET.fromstring(blob[coff:coff + clen])
    suma, sumb = ref_checksum(payload, 4 * 9 * 16)
    assert int(root.find("suma").text, 16) == suma
    assert int(root.find("sumb").text, 16) == sumb
    assert ildg.scidac_checksum(payload, 4 * 9 * 16) == (suma, sumb)


# ----------------------------------------------------------------------------------------
# extra records and record order
# ----------------------------------------------------------------------------------------


def test_extra_records_preserved(tmp_path, config):
    path = tmp_path / "cfg.lime"
    extra = {"xlf-info": b"plaquette = 0.5\nbeta = 6.0\n", "scidac-private-file-xml": b"<info><a>1</a></info>"}
    write_ildg(path, config, extra_records=extra)
    u, meta = read_ildg(path)
    assert u.tobytes() == config.tobytes()
    assert meta["records"]["xlf-info"] == extra["xlf-info"]
    assert meta["records"]["scidac-private-file-xml"] == "<info><a>1</a></info>"
    assert "ildg-binary-data" not in meta["records"]


def test_other_record_order_and_unknown_records(tmp_path):
    lt, lx, ly, lz = 1, 2, 3, 1
    payload = hand_payload(lx, ly, lz, lt)
    blob = lime_file([
        ("scidac-private-file-xml", b"<scidacFile><spacetime>4</spacetime></scidacFile>\0"),
        ("ildg-binary-data", payload),
        ("some-unknown-record", b"\x00\x01\x02binary"),
        ("ildg-data-lfn", b"lfn://x/y\0"),
        ("ildg-format", format_xml(lx, ly, lz, lt)),
        ("some-unknown-record", b"second"),
    ])
    path = tmp_path / "odd.lime"
    path.write_bytes(blob)
    u, meta = read_ildg(path)
    assert u.shape == (lt, lx, ly, lz, 4, 3, 3)
    k = code(0, 0, 2, 1, 3, 2, 1, (lt, lz, ly, lx))
    assert u[0, 1, 2, 0, 0, 2, 1] == complex(k, -k - 0.5)
    assert meta["lfn"] == "lfn://x/y"
    assert meta["checksum_ok"] is None
    assert meta["records"]["scidac-private-file-xml"] == "<scidacFile><spacetime>4</spacetime></scidacFile>"
    assert meta["records"]["some-unknown-record"] == [b"\x00\x01\x02binary", b"second"]


# ----------------------------------------------------------------------------------------
# bad files
# ----------------------------------------------------------------------------------------


def _valid_blob(lx=2, ly=3, lz=1, lt=1):
    payload = hand_payload(lx, ly, lz, lt)
    return payload, [("ildg-format", format_xml(lx, ly, lz, lt)), ("ildg-binary-data", payload),
                     ("scidac-checksum", checksum_xml(*ref_checksum(payload, 576)))]


def test_hand_built_valid_blob_reads(tmp_path):
    path = tmp_path / "ok.lime"
    path.write_bytes(lime_file(_valid_blob()[1]))
    assert read_ildg(path)[1]["checksum_ok"] is True


@pytest.mark.parametrize("content", [
    np.random.default_rng(0).bytes(1000),
    b"This is a text file, not a gauge configuration.\n" * 10,
    b"short",
])
def test_not_a_lime_file(tmp_path, content):
    path = tmp_path / "junk.lime"
    path.write_bytes(content)
    with pytest.raises(IldgFormatError, match=r"not an ILDG/LIME file: expected LIME magic number 0x456789ab.*found 0x"):
        read_ildg(path)
    with pytest.raises(IldgFormatError, match="not an ILDG/LIME file"):
        read_lime_records(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.lime"
    path.write_bytes(b"")
    with pytest.raises(IldgFormatError, match="empty"):
        read_ildg(path)


def test_truncated_mid_data(tmp_path, config):
    path = tmp_path / "cfg.lime"
    write_ildg(path, config)
    rec = next(r for r in read_lime_records(path) if r.type == "ildg-binary-data")
    cut = rec.offset + 1000
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(IldgFormatError, match=rf"truncated.*'ildg-binary-data'.*expected {rec.length}, found 1000"):
        read_ildg(path)


def test_truncated_mid_header(tmp_path, config):
    path = tmp_path / "cfg.lime"
    write_ildg(path, config)
    last = read_lime_records(path)[-1]
    path.write_bytes(path.read_bytes()[:last.offset - 144 + 50])
    with pytest.raises(IldgFormatError, match=r"truncated.*header .*expected 144 bytes, found 50"):
        read_ildg(path)


def test_cut_at_record_boundary_warns_and_missing_data_raises(tmp_path):
    _, recs = _valid_blob()
    path = tmp_path / "cut.lime"
    path.write_bytes(lime_file(recs)[:144 + len(recs[0][1]) + (-len(recs[0][1])) % 8])  # only ildg-format
    with pytest.warns(UserWarning, match="Message-End"):
        with pytest.raises(IldgFormatError, match="missing required record 'ildg-binary-data'"):
            read_ildg(path)


def test_missing_format_record(tmp_path):
    _, recs = _valid_blob()
    path = tmp_path / "nofmt.lime"
    path.write_bytes(lime_file(recs[1:]))
    with pytest.raises(IldgFormatError, match="missing required record 'ildg-format'"):
        read_ildg(path)


def test_wrong_binary_length(tmp_path):
    payload, recs = _valid_blob(lx=2)
    recs[0] = ("ildg-format", format_xml(3, 3, 1, 1))  # header claims lx=3
    path = tmp_path / "len.lime"
    path.write_bytes(lime_file(recs))
    with pytest.raises(IldgFormatError, match=rf"binary data length mismatch.*{len(payload)} bytes.*lx=3.*{3 * 3 * 576} bytes"):
        read_ildg(path)


@pytest.mark.parametrize("xml, match", [
    (format_xml(2, 3, 1, 1, field="su2gauge"), "unsupported field 'su2gauge'"),
    (format_xml(2, 3, 1, 1, precision=16), "unsupported precision 16"),
    (b"<ildgFormat><field>su3gauge</field><precision>64", "malformed XML in record 'ildg-format'"),
    (b"<ildgFormat><field>su3gauge</field><precision>64</precision><lx>2</lx></ildgFormat>",
     "lacks element.*ly, lz, lt"),
    (format_xml(2, 3, 1, 1).replace(b"<lx>2</lx>", b"<lx>two</lx>"), "<lx> .* not an integer"),
])
def test_bad_format_record(tmp_path, xml, match):
    _, recs = _valid_blob()
    recs[0] = ("ildg-format", xml)
    path = tmp_path / "bad.lime"
    path.write_bytes(lime_file(recs))
    with pytest.raises(IldgFormatError, match=match):
        read_ildg(path)


def test_corrupted_byte_fails_checksum(tmp_path, config):
    path = tmp_path / "cfg.lime"
    write_ildg(path, config)
    blob = bytearray(path.read_bytes())
    heads = {h[0]: h for h in parse_headers(bytes(blob))}
    _, _, coff, clen = heads["scidac-checksum"]
    root = ET.fromstring(bytes(blob[coff:coff + clen]))
    suma, sumb = root.find("suma").text, root.find("sumb").text
    off = heads["ildg-binary-data"][2] + 12345
    blob[off] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(IldgFormatError, match=rf"checksum mismatch.*suma={suma} sumb={sumb}.*suma=[0-9a-f]+ sumb="):
        read_ildg(path)
    # without a checksum record the same corruption goes unnoticed: the record is what catches it
    write_ildg(path, config, checksum=False)
    blob = bytearray(path.read_bytes())
    blob[off] ^= 0x01
    path.write_bytes(bytes(blob))
    u, meta = read_ildg(path)
    assert meta["checksum_ok"] is None and not np.array_equal(u, config)


def test_bad_checksum_record(tmp_path):
    _, recs = _valid_blob()
    recs[2] = ("scidac-checksum", b"<scidacChecksum><suma>zz</suma></scidacChecksum>")
    path = tmp_path / "ck.lime"
    path.write_bytes(lime_file(recs))
    with pytest.raises(IldgFormatError, match="hexadecimal <suma> and <sumb>"):
        read_ildg(path)


def _with_payload(tmp_path, payload: bytes):
    """A hand-made file holding ``payload`` (LT x LZ x LY x LX, double precision) and its correct checksum."""
    path = tmp_path / "payload.lime"
    path.write_bytes(lime_file([("ildg-format", format_xml(LX, LY, LZ, LT)), ("ildg-binary-data", payload),
                                ("scidac-checksum", checksum_xml(*ref_checksum(payload, 4 * 9 * 16)))]))
    return path


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_numbers_refused(tmp_path, config, value):
    """A NaN in a link past the first time slice used to be read without a word -- ``max(worst, nan)`` kept
    ``worst``, so ``unitarity_violation`` read ~1e-15 -- and import-ildg imported it: the checksum only says the
    bytes are those written."""
    path = tmp_path / "cfg.lime"
    write_ildg(path, config)
    blob = path.read_bytes()
    _, _, off, length = {h[0]: h for h in parse_headers(blob)}["ildg-binary-data"]
    payload = bytearray(blob[off:off + length])
    k = code(2, 2, 4, 1, 2, 1, 0, (LT, LZ, LY, LX))  # U_z(x=1, y=4, z=2, t=2)[1][0], imaginary part
    struct.pack_into(">d", payload, 16 * k + 8, value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning on the way either
        with pytest.raises(IldgFormatError, match=r"non-finite numbers \(nan or inf\), the first in the z-link at "
                           r"site \(x, y, z, t\) = \(1, 4, 2, 2\): not 64-bit big-endian IEEE floats"):
            read_ildg(_with_payload(tmp_path, bytes(payload)))


def test_little_endian_data_refused(tmp_path, config):
    """Data written in little-endian byte order (with a checksum of those bytes) were read as garbage with NaNs that
    the unitarity check dropped; import-ildg then blamed U(3) data ("unitary but not special unitary")."""
    path = tmp_path / "cfg.lime"
    write_ildg(path, config)
    blob = path.read_bytes()
    _, _, off, length = {h[0]: h for h in parse_headers(blob)}["ildg-binary-data"]
    swapped = b"".join(blob[i:i + 8][::-1] for i in range(off, off + length, 8))
    assert not np.all(np.isfinite(np.frombuffer(swapped, ">f8")))  # this configuration's swapped bytes hold NaN/inf
    with pytest.raises(IldgFormatError, match="not 64-bit big-endian IEEE floats .written in another byte order"):
        read_ildg(_with_payload(tmp_path, swapped))


def test_read_dtype_must_be_complex(tmp_path):
    path = tmp_path / "ok.lime"
    path.write_bytes(lime_file(_valid_blob()[1]))
    with pytest.raises(ValueError, match="complex dtype"):
        read_ildg(path, dtype=np.float64)


# ----------------------------------------------------------------------------------------
# bad write arguments
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 2, 6, 3, 3, 3, 3), (4, 2, 6, 4, 3, 3), (4, 2, 6, 3, 4, 2, 2), (0, 2, 6, 3, 4, 3, 3)])
def test_write_bad_shape(tmp_path, shape):
    with pytest.raises(ValueError, match=r"shape .*expected \(L_t, L_x, L_y, L_z, 4, 3, 3\)"):
        write_ildg(tmp_path / "x.lime", np.zeros(shape, complex))
    assert os.listdir(tmp_path) == []


def test_write_bad_dtype_precision_and_records(tmp_path, config):
    target = tmp_path / "x.lime"
    with pytest.raises(ValueError, match="complex dtype.*float64"):
        write_ildg(target, config.real)
    with pytest.raises(ValueError, match="precision must be 32 or 64.*48"):
        write_ildg(target, config, precision=48)
    with pytest.raises(ValueError, match="'ildg-format' is reserved"):
        write_ildg(target, config, extra_records={"ildg-format": b"<x/>"})
    with pytest.raises(ValueError, match="at most 128 bytes"):
        write_ildg(target, config, extra_records={"a" * 129: b""})
    bad = config.copy()
    bad[0, 0, 0, 0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        write_ildg(target, bad)
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------
# atomic write
# ----------------------------------------------------------------------------------------


def _failing_write_record(monkeypatch):
    original = ildg_writer._write_record  # patched where write_ildg looks it up (corrflow.ildg.writer)

    def failing(f, rtype, data, *, mb, me):
        if rtype == "ildg-binary-data":
            f.write(b"partial data")
            raise OSError("simulated disk failure")
        original(f, rtype, data, mb=mb, me=me)

    monkeypatch.setattr(ildg_writer, "_write_record", failing)


def test_interrupted_write_leaves_nothing(tmp_path, config, monkeypatch):
    _failing_write_record(monkeypatch)
    with pytest.raises(OSError, match="simulated disk failure"):
        write_ildg(tmp_path / "cfg.lime", config)
    assert os.listdir(tmp_path) == []


def test_interrupted_overwrite_keeps_old_file(tmp_path, config, monkeypatch):
    path = tmp_path / "cfg.lime"
    write_ildg(path, config, lfn="old")
    before = path.read_bytes()
    _failing_write_record(monkeypatch)
    with pytest.raises(OSError, match="simulated disk failure"):
        write_ildg(path, config * 1j, lfn="new")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["cfg.lime"]
    monkeypatch.undo()
    write_ildg(path, config, lfn="new")  # a successful overwrite replaces it
    assert read_ildg(path)[1]["lfn"] == "new"
    assert os.listdir(tmp_path) == ["cfg.lime"]


def test_xlf_info_parses_tmlqcd_style_records():
    from corrflow.ildg import format_xlf_info, parse_xlf_info

    text = (b" plaquette = 0.593691877532\n trajectory nr = 1234\n beta = 5.800000, kappa = 0.156000, mu = 0.0,"
            b" c2_rect = 0.000000\n time = 1234.5\n hmcversion = 5.2.0\n date = Mon Jan 1\n junk line\n\0\0")
    info = parse_xlf_info(text)
    assert info["plaquette"] == 0.593691877532 and info["trajectory nr"] == 1234.0 and info["beta"] == 5.8
    assert info["kappa"] == 0.156 and info["hmcversion"] == "5.2.0" and info["date"] == "Mon Jan 1"
    assert "junk line" not in info
    back = parse_xlf_info(format_xlf_info(0.6123456789012345, 7, {"beta": 6.0, "xi": 1.0}, chain="0"))
    assert back == {"plaquette": pytest.approx(0.6123456789012345, abs=1e-14), "trajectory nr": 7.0, "beta": 6.0,
                    "xi": 1.0, "chain": 0.0}
