"""The versions of corrflow and of the libraries that define its numbers and stored bytes: recorded with every
ensemble (``corrflow_versions``) and printed by ``corrflow --version``.  Read from the installed packages' metadata,
so asking costs no import of JAX or zarr."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

__all__ = ["versions", "LIBRARIES"]

LIBRARIES = ("jax", "jaxlib", "numpy", "zarr")


def versions() -> dict[str, str]:
    """``{"corrflow": ..., "jax": ..., "jaxlib": ..., "numpy": ..., "zarr": ..., "python": ...}`` (``"not
    installed"`` for a missing library)."""
    from . import __version__

    out = {"corrflow": __version__}
    for pkg in LIBRARIES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    out["python"] = platform.python_version()
    return out
