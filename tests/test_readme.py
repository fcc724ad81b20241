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
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 3, "README.md lost its Python examples"


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_python_example_runs(i):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(BLOCKS[i], f"README.md python block {i}", "exec"), {"__name__": f"readme_{i}"})
    assert "nan" not in out.getvalue().lower(), out.getvalue()
