"""The scripts under ``examples/`` still match the library's API (the README points newcomers to them).

``examples/u1_demo.py`` runs its whole main path here (``main(argv)``) with tiny arguments -- a 4x4 lattice, one
thermalisation block and one production block, so that its ``progress`` callback sees both kinds of
:class:`corrflow.generate.Block` (thermalisation blocks carry no measurements).  The other examples cost far more than
this test's budget of a few seconds even at their smallest settings (measured on 2 CPU cores, 2026-12-07:
``schwinger_model.py`` ~60 s, fixed sizes; ``continuum_limit.py`` ~25 s, ``mass_dependence.py`` ~70 s and
``feynman_hellmann.py`` ~2.5 min, fixed settings through a store; ``su3_scales.py --quick`` ~30 s, and smaller
lattices than its 8^4 are too small for the flow scales), so for them only every name they import from corrflow or
analysis, and every attribute they take from an imported module (``cf.make_theory``, ``fh.FHSettings.make``), is
checked to exist -- a rename fails here, a changed signature or return value does not.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))
OWN = ("corrflow", "analysis")  # names from other packages (jax, numpy, rich) are not checked


def test_examples_exist():
    assert "u1_demo.py" in {p.name for p in SCRIPTS}, "README.md points to examples/u1_demo.py"


def _attribute_chain(node: ast.Attribute) -> tuple[str, list[str]] | None:
    """``("cf", ["make_theory"])`` for ``cf.make_theory``; None where the chain does not start at a name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return (node.id, parts[::-1]) if isinstance(node, ast.Name) else None


def _missing_names(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    modules: dict[str, object] = {}  # local name -> imported module
    missing = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in OWN:
                    top = importlib.import_module(a.name if a.asname else a.name.split(".")[0])
                    modules[a.asname or a.name.split(".")[0]] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in OWN:
            mod = importlib.import_module(node.module)
            for a in node.names:
                if not hasattr(mod, a.name):
                    try:
                        modules[a.asname or a.name] = importlib.import_module(f"{node.module}.{a.name}")
                    except ImportError:
                        missing.append(f"line {node.lineno}: from {node.module} import {a.name}")
                    continue
                value = getattr(mod, a.name)
                if type(value).__name__ == "module":
                    modules[a.asname or a.name] = value
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            chain = _attribute_chain(node)
            if chain is None or chain[0] not in modules:
                continue
            obj, parts = modules[chain[0]], chain[1]
            for i, attr in enumerate(parts):
                if type(obj).__name__ != "module" and not isinstance(obj, type):
                    break  # an instance or function: its attributes are the runtime's business
                if not hasattr(obj, attr):
                    missing.append(f"line {node.lineno}: {chain[0]}.{'.'.join(parts[:i + 1])}")
                    break
                obj = getattr(obj, attr)
    return sorted(set(missing))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_example_names_exist(path):
    assert _missing_names(path) == []


def test_u1_demo_runs(capsys):
    spec = importlib.util.spec_from_file_location("u1_demo_example", EXAMPLES / "u1_demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    demo.main(["--L", "4", "--chains", "2", "--n", "40", "--therm", "10", "--seed", "0"])
    out = capsys.readouterr().out
    for row in ("plaquette <cos P>", "Wilson loop 2x2", "chi_top = <Q^2>/V", "<exp(-dH)>", "largest |pull|"):
        assert row in out, out
    assert "nan" not in out.lower(), out
