"""Markdown that corrflow writes (``report.md``, the analyses' ``<name>.md``): angle brackets escaped.

The physics text uses ``<O>``, ``<plaquette>``, ``d<P>/dm``, ``<pi|O_t|pi>``; in CommonMark a ``<`` followed by a
letter starts raw HTML (or an autolink), which renderers drop or hide: ``| <O>(a') |`` showed an empty header cell.
:func:`escape_angle_brackets` writes them as ``&lt;O&gt;`` (rendered as ``<O>``) everywhere except in code spans and
fenced code blocks, where Markdown shows text as it is.  Terminal output keeps the plain text.
"""

from __future__ import annotations

import re

__all__ = ["escape_angle_brackets", "html_outside_code"]

#: a code span: a run of backticks, its text, the same run again (CommonMark: no backtick next to either end)
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
#: a bracketed term ``<...>`` on one line, without brackets inside
_BRACKETED = re.compile(r"<([^<>\n]*)>")
#: the opening of a fenced code block
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
#: what CommonMark could read as raw HTML or an autolink: ``<`` followed by a letter, ``/``, ``!`` or ``?``
_HTML_START = re.compile(r"<[A-Za-z/!?]")


def _escape_text(text: str) -> str:
    text = _BRACKETED.sub(r"&lt;\1&gt;", text)
    return _HTML_START.sub(lambda m: "&lt;" + m.group(0)[1:], text)


def _escape_line(line: str) -> str:
    out, pos = [], 0
    for m in _CODE_SPAN.finditer(line):
        out += [_escape_text(line[pos:m.start()]), m.group(0)]
        pos = m.end()
    out.append(_escape_text(line[pos:]))
    return "".join(out)


def _outside_code(text: str) -> list[tuple[bool, str]]:
    """``(is_code, line)`` for every line of ``text``: lines of fenced code blocks (fences included) are code."""
    fence, out = None, []
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            out.append((True, line))
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
            out.append((True, line))
        else:
            out.append((False, line))
    return out


def escape_angle_brackets(text: str) -> str:
    """``text`` (Markdown, any number of lines) with every bracketed term written with entities (``<O>`` ->
    ``&lt;O&gt;``, ``<0|O_t|0>`` too) and any other ``<`` that could open a tag (``<b`` -> ``&lt;b``) outside code
    spans and fenced code blocks; ``k <= 0.5``, an arrow ``->`` or ``k > 0.7`` stay as they are."""
    return "\n".join(line if code else _escape_line(line) for code, line in _outside_code(text))


def html_outside_code(text: str) -> list[str]:
    """The lines of Markdown ``text`` in which, outside code spans and fenced code blocks, a ``<`` could start raw
    HTML or an autolink (``<O>``, ``</b>``, ``<!--``): empty for what :func:`escape_angle_brackets` writes."""
    bad = []
    for code, line in _outside_code(text):
        if not code and _HTML_START.search(_CODE_SPAN.sub("", line)):
            bad.append(line)
    return bad
