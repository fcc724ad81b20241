"""Shared fixtures.  Importing corrflow enables float64 in JAX.

XLA programs compiled by the tests go to a persistent compilation cache (``.jax_cache/tests`` in the checkout,
or ``$CORRFLOW_TEST_JAX_CACHE``; empty disables it), shared by the pytest-xdist workers: many tests compile the
same kernels (HMC and heat-bath updates, flow training steps, the Wilson flow) inside fresh closures, which JAX
retraces but then finds compiled in the cache.  It changes no result, only the compile time.
"""

import os
import re
from pathlib import Path

import jax
import numpy as np
import pytest

import corrflow  # noqa: F401  (enables x64)

_CACHE = os.environ.get("CORRFLOW_TEST_JAX_CACHE", str(Path(__file__).resolve().parent.parent / ".jax_cache" / "tests"))
if _CACHE:
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


_MODULE_FIXTURE = re.compile(r"""scope\s*=\s*["']module["']""")


def pytest_xdist_make_scheduler(config, log):
    """With ``-n N`` (xdist's ``load`` distribution), keep each module that defines a module-scoped fixture on
    one worker, so that its fixture (an HMC ensemble, a trained flow, a whole analysis run) is built once
    instead of once per worker; every other test is still scheduled on its own.

    (xdist's ``loadgroup`` would do this with markers, but it does not group under pytest >= 9.2, which
    derives node ids from ``_id``.)
    """
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    root = Path(config.rootpath)
    grouped: dict[str, bool] = {}

    class ModuleFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            if module not in grouped:
                path = root / module
                grouped[module] = path.is_file() and bool(_MODULE_FIXTURE.search(path.read_text()))
            return module if grouped[module] else nodeid

    return ModuleFixtureScheduling(config, log)
