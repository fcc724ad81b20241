"""Start-up time of the command line: ``corrflow --help``, ``--version``, a refused option, and ``analyse NAME --help``,
against the baseline of importing everything the command line imported eagerly before (JAX, the pipeline and every
analysis), each in a fresh interpreter, best of ``--repeat`` runs.

    python benchmarks/cli_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time

CASES = {
    "corrflow --help": ["--help"],
    "corrflow --version": ["--version"],
    "corrflow generate u1 --bta 2 (refused)": ["generate", "u1", "--bta", "2"],
    "corrflow analyse --help": ["analyse", "--help"],
    "corrflow analyse mass-dependence --help": ["analyse", "mass-dependence", "--help"],
}
# what every command paid before the analyses and corrflow's names were loaded on request
BASELINE = ("import corrflow.cli, corrflow.pipeline, corrflow.flows, corrflow.stats, corrflow.tangent, "
            "analysis.continuum_limit, analysis.mass_dependence, analysis.feynman_hellmann")


def best(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    exe = shutil.which("corrflow") or sys.exit("corrflow is not on PATH: activate the project's virtualenv")
    base = best([sys.executable, "-c", BASELINE], args.repeat)
    print(f"baseline: eager imports of the command line and the analyses  {base:6.2f} s")
    for label, argv in CASES.items():
        t = best([exe, *argv], args.repeat)
        print(f"{label:44s} {t:6.2f} s   {base / t:5.1f}x faster than the baseline")


if __name__ == "__main__":
    main()
