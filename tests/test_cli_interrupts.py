"""Ctrl-C on the command line: exit 130 with one line saying what is kept, whenever it comes.

Found by an interrupt audit (2026-12-07): a Ctrl-C in the first ~2 s was lost in JAX's garbage-collection callback
("Exception ignored in ...") and the whole run went on to exit 0; one during compilation ended in a segmentation
fault (exit 139) at the interpreter's shutdown; and every command advised "--resume", which only generate and train
have."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import typer

from corrflow import runtime
from corrflow.pipeline.cli import run_cli


def test_a_lost_interrupt_still_ends_the_command(monkeypatch):
    from rich.console import Console

    monkeypatch.setitem(runtime._interrupt, "pressed", True)  # what catch_interrupts' handler records
    console = Console(record=True, width=200)
    with pytest.raises(typer.Exit) as exc:
        run_cli(lambda: "done", console, interrupted="kept, rerun")
    assert exc.value.exit_code == 130 and "interrupted: kept, rerun" in console.export_text()


def test_the_interrupt_line_names_only_options_the_command_has():
    from corrflow.cli.base import INTERRUPTED_WRITER

    assert "--resume" not in INTERRUPTED_WRITER  # the default: correlate, measure, report, import-ildg, ...
    src = {name: open(os.path.join(os.path.dirname(runtime.__file__), "cli", name)).read()
           for name in ("ensembles.py", "flows.py", "summary.py", "ildg.py", "tangent.py")}
    for name, text in src.items():  # a command that mentions --resume on Ctrl-C has the option
        for chunk in text.split("@app.command")[1:]:
            tail = chunk[chunk.index("_run(body"):]
            if "--resume" in tail[:300]:
                assert '"--resume"' in chunk, (name, chunk[:80])


@pytest.mark.parametrize("delay", [1.5, 4.0])
def test_ctrl_c_exits_130_with_one_line(tmp_path, delay):
    """Before the command's body starts (option parsing, imports) and while it runs (compilation, the first blocks);
    a few seconds of work, so that a press Python lost still ends in 130 when the run finishes (the runner's last
    check).  (In the first ~0.2 s, before the entry point has installed its handler, Python's own KeyboardInterrupt
    ends the process.)"""
    store = tmp_path / "s.zarr"
    cmd = [sys.executable, "-c", "from corrflow.cli import main; main()", "generate", "u1", "--beta", "2",
           "--shape", "8,8", "--n", "4000", "--block", "50", "--store", str(store), "--name", "e"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, out[-500:], err[-2000:])
    assert "interrupted:" in out + err and "Traceback" not in err, err[-2000:]
    if store.exists():  # whatever was committed is intact
        res = subprocess.run([sys.executable, "-c", "from corrflow.cli import main; main()", "verify", str(store)],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
