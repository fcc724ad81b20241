"""The README's Python examples run as printed (a newcomer copies them): each ```python block of README.md is
executed in a fresh namespace, in order, with its output captured.  The numbers they print are validated elsewhere
(tests/test_hmc.py, tests/test_flow_pipeline.py, tests/tangent/); here a renamed function, a changed signature or a
fragment that needs undefined names fails."""

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced code block, fences paired line by line."""
    blocks, lang, body = [], None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, body = line[3:].strip(), []
            else:
                blocks.append((lang, "\n".join(body) + "\n"))
                lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, "README.md has an unclosed code fence"
    return blocks


BLOCKS = [b for lang, b in fenced_blocks(README.read_text()) if lang == "python"]


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 3, "README.md lost its Python examples"


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_python_example_runs(i):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(BLOCKS[i], f"README.md python block {i}", "exec"), {"__name__": f"readme_{i}"})
    assert "nan" not in out.getvalue().lower(), out.getvalue()


def test_readme_command_lines_use_existing_commands_and_options():
    """Every `corrflow COMMAND ... --option` line in the README's shell blocks names a command (and analysis) that
    exists and only options that command takes -- without running it."""
    from typer.main import get_command

    from corrflow.cli import app

    root = get_command(app)
    shell = [b for lang, b in fenced_blocks(README.read_text()) if lang in ("bash", "sh", "")]
    lines = [ln.split(" #")[0].strip() for b in shell for ln in b.replace("\\\n", " ").splitlines()]
    checked, bad = 0, []
    for line in lines:
        m = re.match(r"^corrflow\s+(\S+)(.*)$", line)
        if not m:
            continue
        cmd, rest = m.group(1), m.group(2)
        c = root.commands.get(cmd)
        if c is not None and cmd == "analyse":
            c = c.get_command(None, rest.split()[0]) if rest.split() else None  # loaded on request
        if c is None:
            bad.append(f"{line}: no such command")
            continue
        opts = {o for p in c.params for o in (*p.opts, *getattr(p, "secondary_opts", ()))} | {"--help"}
        bad += [f"{line}: {o}" for o in re.findall(r"(?<![\w-])(--[a-z0-9-]+)", rest) if o not in opts]
        checked += 1
    assert checked >= 15 and not bad, (checked, bad)
