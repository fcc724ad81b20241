"""The ``xlf-info`` record: plain-text ``key = value`` metadata of a gauge configuration.

Written by tmLQCD (and by ``corrflow export-ildg``) next to the ILDG records, e.g.::

     plaquette = 0.593691877532
     trajectory nr = 1234
     beta = 5.800000, kappa = 0.156000, mu = 0.000000, c2_rect = 0.000000

Entries are separated by newlines or commas; keys are compared in lower case with surrounding blanks removed.
``corrflow import-ildg`` uses two of them as consistency checks: the ``plaquette`` (a file read in another layout
or matrix convention gives another plaquette) and ``beta`` (against ``--beta``).  The plaquette is
``<Re tr U_p> / 3`` averaged over sites and the six planes (1 for unit links); some codes record ``<Re tr U_p>``
instead, which the check also accepts.
"""

from __future__ import annotations

from typing import Mapping

__all__ = ["format_xlf_info", "parse_xlf_info", "REC_XLF"]

REC_XLF = "xlf-info"


def format_xlf_info(plaquette: float, trajectory: int, params: Mapping[str, float], **extra: str) -> bytes:
    """The record's text: ``plaquette`` (normalised to 1), ``trajectory nr``, the action parameters ``params`` on
    one line (e.g. ``beta = 5.8, xi = 1``) and ``extra`` entries (spaces for underscores in the keys)."""
    lines = [f" plaquette = {plaquette:.14f}", f" trajectory nr = {int(trajectory)}",
             " " + ", ".join(f"{k} = {float(v):.14g}" for k, v in params.items())]
    lines += [f" {k.replace('_', ' ')} = {v}" for k, v in extra.items()]
    return ("\n".join(lines) + "\n").encode("utf-8")


def parse_xlf_info(data: bytes | str) -> dict[str, float | str]:
    """``{key: value}`` of an ``xlf-info`` record; values that parse as numbers are floats.  Text that is not
    ``key = value`` is ignored (the record has no formal grammar)."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, (bytes, bytearray)) else str(data)
    out: dict[str, float | str] = {}
    for line in text.replace("\0", "").splitlines():
        for item in line.split(","):
            key, eq, value = item.partition("=")
            key, value = key.strip().lower(), value.strip()
            if not eq or not key or not value:
                continue
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
    return out
