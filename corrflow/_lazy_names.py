"""Names of a package loaded from its submodules on first use (PEP 562), so that importing the package costs nothing
until a name is used: ``corrflow.pipeline`` and ``corrflow.stats`` pull in JAX and scipy only when a step or an
estimator is asked for, and the analyses' ``--help`` answers without them."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Mapping
from typing import Any

__all__ = ["install"]


def install(package: str, names: Mapping[str, tuple[str, ...]]) -> None:
    """Make ``names`` (``{submodule: (name, ...)}``, submodules relative to ``package``) attributes of the package
    ``package`` that load on first use; any other public attribute that is a submodule loads as after an eager
    import, and ``dir()`` lists ``__all__``, the names and the submodules.  A submodule that shares its name with one
    of ``names`` (``corrflow.generate`` / ``corrflow.pipeline.family``, the module, and the function of that name)
    never shadows the name when the import system binds it on the package."""
    module = sys.modules[package]
    table = {name: sub for sub, subnames in names.items() for name in subnames}

    def __getattr__(name: str) -> Any:
        if name in table:
            value = getattr(importlib.import_module(f".{table[name]}", package), name)
            module.__dict__[name] = value  # once
            return value
        if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f".{name}", package)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        import pkgutil

        submodules = {m.name for m in pkgutil.iter_modules(module.__path__) if not m.name.startswith("_")}
        return sorted(set(getattr(module, "__all__", ())) | set(table) | submodules)

    class _Package(types.ModuleType):
        def __setattr__(self, name: str, value: Any) -> None:
            if name in table and isinstance(value, types.ModuleType):
                return
            super().__setattr__(name, value)

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    module.__dir__ = __dir__  # type: ignore[method-assign]
    module.__class__ = _Package
