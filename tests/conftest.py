"""Shared fixtures.  Importing corrflow enables float64 in JAX.

XLA programs compiled by the tests go to a persistent compilation cache (``.jax_cache/tests`` in the checkout,
or ``$CORRFLOW_TEST_JAX_CACHE``; empty disables it), shared by the pytest-xdist workers: many tests compile the
same kernels (HMC and heat-bath updates, flow training steps, the Wilson flow) inside fresh closures, which JAX
retraces but then finds compiled in the cache.  It changes no result, only the compile time.

The test processes (and the CLI subprocesses they start) compile with LLVM optimisation level 0 instead of XLA's
default 2, without LLVM's expensive passes and with the older fusion emitters (``XLA_FLAGS``, see
``_TEST_XLA_FLAGS``, set here before JAX starts its backend): compilation dominates the suite with a cold cache (CI),
and the programs run long enough at level 0 to pay for what it saves.  Measured on the 2-core CI
machine with a cold cache: level 1 made a compile-heavy module (tests/flows/test_flows_net.py) take 89 s instead of
159 s (110 s with the level alone) and a run-heavy pair (tests/analyses/test_continuum_su3.py + tests/test_hmc.py)
210 s instead of 272 s.  XLA:CPU's older (non-MLIR) fusion emitters (``--xla_cpu_use_fusion_emitters=false``)
compile faster again (2026-12-03, cold cache, ``-n 2``: tests/flows + test_groups + test_theories + test_lattice
238 s instead of 305 s; test_fermions + analyses/test_continuum_su3 + test_heatbath 208 s instead of 245 s).  Level 0
(2026-12-06, cold cache, ``-n 2``): flows_smoothing + flows_linear + flows_net + ildg_base + fermions + lattice 185 s
instead of 259 s at level 1; the whole suite (``.ci/run`` on a clean clone, same hour) 903 s instead of 1211 s.  No
fast-math at any level, so LLVM never reassociates; but two *different* programs for the same numbers (a one-pass
and a two-pass evaluation, an observable and its ``jvp``'s primal) may differ in the last bits at level 0 where
level 1 happened to make them identical, so such tests compare to rounding, not bit for bit.  Benchmarks do not
import this file and keep the default.  Not a lever (2026-12-07, cold caches, ``-n 2``, test_fermions + flows_4d +
lattice + hmc): one XLA thread per worker (``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``, so
the two workers would not share the cores) took 243 s instead of 135 s; caching programs that compile in 0.05 s or
more instead of 0.5 s changed nothing (tests/store + cli + correlate + flow_pipeline: 104 / 99 s against 100 / 105 s).
Where the time goes (2026-12-07, whole suite, ``-n 2``, cold cache, 948 s): XLA's backend compilation took 343 of the
~1900 worker-seconds (390 programs over 0.2 s; the HMC blocks 55 s, the Gauss–Newton step of the 4D flows 34 s);
the rest is tracing and running.  A program compiled twice for a short last batch was the largest avoidable cost
found (21 s for the default 4D flow; padded since).  Not a lever either (2026-12-07): one masked HMC block program
for every block length of a run (the short last block and thermalisation remainders included) -- generation,
store, pipeline, cli and correlate tests, ``-n 2``, cold cache: 35 instead of 39 block compilations, 9.3 s
instead of 10.0 s of compile, the same wall time; not kept.
"""

import os
import re
from pathlib import Path

_TEST_XLA_FLAGS = {"--xla_backend_optimization_level": "0", "--xla_llvm_disable_expensive_passes": "true",
                   "--xla_cpu_use_fusion_emitters": "false"}
# the consoles of corrflow's commands and typer's help follow COLUMNS where the output is not a terminal: tests that
# read tables see the same width whatever the shell that started them exported (a test that wants 80 passes it)
os.environ.pop("COLUMNS", None)
_flags = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = " ".join([_flags] + [f"{k}={v}" for k, v in _TEST_XLA_FLAGS.items() if k not in _flags]).strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import corrflow  # noqa: F401, E402  (enables x64)

_CACHE = os.environ.get("CORRFLOW_TEST_JAX_CACHE", str(Path(__file__).resolve().parent.parent / ".jax_cache" / "tests"))
if _CACHE:
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


_MODULE_FIXTURE = re.compile(r"""scope\s*=\s*["']module["']""")
_SESSION_FIXTURE = re.compile(r"""scope\s*=\s*["']session["']""")


def pytest_xdist_make_scheduler(config, log):
    """With ``-n N`` (xdist's ``load`` distribution), keep each module that defines a module-scoped fixture on
    one worker, so that its fixture (an HMC ensemble, a trained flow, a whole analysis run) is built once
    instead of once per worker, and likewise every test directory whose conftest.py defines session-scoped
    fixtures (tests/store, tests/tangent); every other test is still scheduled on its own.

    (xdist's ``loadgroup`` would do this with markers, but it does not group under pytest >= 9.2, which
    derives node ids from ``_id``.)
    """
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    root = Path(config.rootpath)
    grouped: dict[str, str | None] = {}

    def _has(path: Path, pattern: re.Pattern) -> bool:
        return path.is_file() and bool(pattern.search(path.read_text()))

    class ModuleFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            if module not in grouped:
                path = root / module
                if path.parent != root and _has(path.parent / "conftest.py", _SESSION_FIXTURE):
                    grouped[module] = str(Path(module).parent)  # a directory whose conftest has session fixtures
                elif _has(path, _MODULE_FIXTURE):
                    grouped[module] = module
                else:
                    grouped[module] = None
            return grouped[module] or nodeid

    return ModuleFixtureScheduling(config, log)
