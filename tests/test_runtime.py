"""corrflow.runtime.tune_allocator: active on glibc unless CORRFLOW_MALLOC=default, and it changes no number (the
same SU(3) force, bit for bit, in processes with and without it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_SCRIPT = """
import os, sys
from corrflow.runtime import tune_allocator
active = tune_allocator()
assert tune_allocator() == active  # idempotent
import jax, numpy as np
from corrflow.theories import WilsonGaugeAction
th = WilsonGaugeAction("su3", (2, 2, 2, 4), beta=5.5)
force = jax.jit(th.force)
for seed in (3, 4):  # complex matrices (not unitary: the force is still a well-defined function of them)
    z = np.random.default_rng(seed).normal(size=(2, 2, 2, 4, 4, 3, 3, 2))
    print(int(active), np.asarray(force(z[..., 0] + 1j * z[..., 1])).tobytes().hex())
"""


def _run(env_extra: dict[str, str]) -> tuple[str, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CORRFLOW_MALLOC"} | env_extra
    out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (active, force), (_, other) = (line.split() for line in out.stdout.splitlines())
    return active, force, other


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_tune_allocator_is_active_switchable_and_changes_no_number():
    """Negative control: a force at another configuration differs (the comparison can fail)."""
    on_active, on_force, on_other = _run({})
    off_active, off_force, off_other = _run({"CORRFLOW_MALLOC": "default"})
    assert (on_active, off_active) == ("1", "0")
    assert on_force == off_force and on_other == off_other
    assert on_other != on_force


_ENTRY = """
import sys
sys.argv = ["corrflow", "--help"]
from corrflow import cli, runtime
try:
    cli.main()
except SystemExit:
    pass
print("ACTIVE", int(runtime._state.get("active", False)), int(runtime.apply_allocator_setting()))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_command_line_tunes_the_allocator_only_when_asked():
    """The tuned allocator serialises compilation (corrflow.runtime), so `corrflow` applies it only with
    CORRFLOW_MALLOC=tuned."""
    def active(extra: dict[str, str]) -> str:
        env = {k: v for k, v in os.environ.items() if k != "CORRFLOW_MALLOC"} | extra
        out = subprocess.run([sys.executable, "-c", _ENTRY], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return [line for line in out.stdout.splitlines() if line.startswith("ACTIVE")][0]

    assert active({}) == "ACTIVE 0 0"
    assert active({"CORRFLOW_MALLOC": "tuned"}) == "ACTIVE 1 1"
    assert active({"CORRFLOW_MALLOC": "default"}) == "ACTIVE 0 0"
