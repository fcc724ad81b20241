"""The settings model: frozen dataclasses of plain values, validated on construction, with their help text.

:func:`setting` declares a field (help text, command-line flag, choices); :class:`Settings` is the base of every
group: it coerces and validates its fields, routes flat names to nested groups (:meth:`Settings.make`,
:meth:`Settings.replace`), and round-trips through dicts, JSON records and TOML run files.  :func:`coerce` turns a
command-line or TOML value into a field's type with a one-line ``ValueError``.  The groups themselves live in
:mod:`corrflow.pipeline.settings`.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

__all__ = ["Settings", "coerce", "setting", "positive_ints", "non_negative_ints"]


@functools.lru_cache(maxsize=None)
def _type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints(cls)``, once per class (the command line builds every analysis's options from the
    settings classes at start-up; uncached, the hints were evaluated ~9000 times: 1.3 s of every ``corrflow``)."""
    return typing.get_type_hints(cls)


@functools.lru_cache(maxsize=None)
def _flat_fields(cls: type) -> dict[str, tuple[str | None, dataclasses.Field, Any]]:
    return cls._flat_fields_uncached()


def setting(default: Any, help: str, *, flag: str | None = None, choices: tuple[str, ...] | None = None,
            aliases: tuple[str, ...] = ()) -> Any:
    """A dataclass field with its help text, command-line ``flag`` (default ``--field-name``), further spellings of the
    flag (``aliases``: the name a ``corrflow`` command gives the same setting, e.g. ``--n`` for ``--n-configs``) and
    ``choices``."""
    meta = {"help": help, "flag": flag, "choices": choices, "aliases": tuple(aliases)}
    if isinstance(default, Settings):
        return dataclasses.field(default_factory=lambda d=default: d, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _tuple_item_type(tp: Any) -> Any:
    args = typing.get_args(tp)
    return args[0] if args else str


def _is_tuple(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple or tp is tuple


def coerce(value: Any, tp: Any, name: str) -> Any:
    """``value`` (from TOML, JSON or a command line) as type ``tp``; one-line ``ValueError`` otherwise."""
    if _is_tuple(tp):
        item = _tuple_item_type(tp)
        items = value
        if isinstance(value, str):
            items = [v.strip() for v in value.replace(";", ",").split(",") if v.strip()]
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"setting {name!r} must be a comma-separated list, got {value!r}")
        out = []
        for v in items:
            try:
                out.append(coerce(v, item, name))
            except ValueError:
                kinds = {int: "integers", float: "numbers", bool: "true/false values", str: "strings"}
                kind = kinds.get(item, "values")
                raise ValueError(f"setting {name!r} must be a comma-separated list of {kind}; {v!r} is not one "
                                 f"(got {value!r})") from None
        return tuple(out)
    try:
        if tp is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise TypeError
            if not isinstance(value, (bool, int)):
                raise TypeError
            return bool(value)
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if tp is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise TypeError
            return str(value)
    except (TypeError, ValueError):
        kind = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
            tp, "a comma-separated list")
        raise ValueError(f"setting {name!r} must be {kind}, got {value!r}") from None
    return value


@dataclass(frozen=True)
class Settings:
    """Base of every settings group: construction validates (:meth:`check`), values are plain and frozen."""

    def __post_init__(self) -> None:
        hints = _type_hints(type(self))
        for f in fields(self):
            v = getattr(self, f.name)
            tp = hints[f.name]
            if isinstance(v, Settings) or (isinstance(tp, type) and issubclass(tp, Settings)):
                continue
            if _is_tuple(tp) and isinstance(v, (list, str)):
                object.__setattr__(self, f.name, coerce(v, tp, f.name))
            elif tp is float and isinstance(v, int) and not isinstance(v, bool):
                object.__setattr__(self, f.name, float(v))
            elif _is_tuple(tp) and isinstance(v, tuple) and _tuple_item_type(tp) is float:
                object.__setattr__(self, f.name, tuple(float(x) for x in v))
            ch = f.metadata.get("choices")
            if ch and getattr(self, f.name) not in ch:
                raise ValueError(f"unknown {f.name} {getattr(self, f.name)!r}; allowed: {', '.join(ch)}")
        if self.groups():
            self.flat_fields()  # TypeError if two leaves share a flat name
        self.check()

    def check(self) -> None:
        """Raise ``ValueError`` (one line, saying how to fix it) for inconsistent values."""

    # -- flat access -------------------------------------------------------------------------------

    @classmethod
    def groups(cls) -> dict[str, type["Settings"]]:
        """``{field name: group class}`` of the nested groups."""
        hints = _type_hints(cls)
        return {f.name: hints[f.name] for f in fields(cls)
                if isinstance(hints[f.name], type) and issubclass(hints[f.name], Settings)}

    @classmethod
    def flat_fields(cls) -> dict[str, tuple[str | None, dataclasses.Field, Any]]:
        """``{name: (group or None, field, type)}`` of every leaf setting (names are unique across groups)."""
        return dict(_flat_fields(cls))

    @classmethod
    def _flat_fields_uncached(cls) -> dict[str, tuple[str | None, dataclasses.Field, Any]]:
        out: dict[str, tuple[str | None, dataclasses.Field, Any]] = {}
        hints = _type_hints(cls)
        groups = cls.groups()
        for f in fields(cls):
            entries = ([(f.name, g, _type_hints(groups[f.name])[g.name]) for g in fields(groups[f.name])]
                       if f.name in groups else [(None, f, hints[f.name])])
            for group, g, tp in entries:
                if g.name in out:  # flat names (command-line options, run-file keys) must be unique
                    raise TypeError(f"{cls.__name__}: setting {g.name!r} is defined twice ({out[g.name][0] or 'top'}, "
                                    f"{group or 'top'})")
                out[g.name] = (group, g, tp)
        return out

    @classmethod
    def class_default(cls, name: str) -> Any:
        """The class default of the leaf setting ``name`` (its group's default as this class sets it), read from the
        fields without constructing the settings: the analysis's own check (which may build a flow, JAX) does not
        run, so that ``--help`` shows the defaults at once.  ``cls().get(name)`` is the same value."""
        group, f, _ = cls._lookup(name)
        if group is None:
            return f.default if f.default is not dataclasses.MISSING else f.default_factory()
        g = next(x for x in fields(cls) if x.name == group)
        return getattr(g.default if g.default is not dataclasses.MISSING else g.default_factory(), name)

    def get(self, name: str) -> Any:
        """The leaf setting ``name`` wherever it lives."""
        group, f, _ = self._lookup(name)
        return getattr(getattr(self, group) if group else self, name)

    @classmethod
    def _lookup(cls, name: str) -> tuple[str | None, dataclasses.Field, Any]:
        ff = cls.flat_fields()
        if name not in ff:
            import difflib

            close = difflib.get_close_matches(name, list(ff), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"unknown setting {name!r} for {cls.__name__}; {hint}known: {', '.join(sorted(ff))}")
        return ff[name]

    def replace(self, **flat: Any) -> "Settings":
        """A copy with leaf settings replaced (flat names routed to their group; whole groups also accepted)."""
        groups = self.groups()
        by_group: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for k, v in flat.items():
            if k in groups and isinstance(v, Settings):
                top[k] = v
                continue
            group, f, tp = self._lookup(k)
            v = coerce(v, tp, k) if v is not None else v
            if group is None:
                top[k] = v
            else:
                by_group.setdefault(group, {})[k] = v
        for g, kw in by_group.items():
            top[g] = dataclasses.replace(top.get(g, getattr(self, g)), **kw)
        return dataclasses.replace(self, **top)

    @classmethod
    def make(cls, **flat: Any) -> "Settings":
        """The defaults with leaf settings replaced: ``ContinuumSettings.make(n_configs=200)``."""
        return cls().replace(**flat)

    # -- serialisation -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (tuples as lists): JSON and TOML ready."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, Settings) else (list(v) if isinstance(v, tuple) else v)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: "Settings | None" = None) -> "Settings":
        """Settings from a nested (``{"ensemble": {"n_configs": ...}}``) or flat (``{"n_configs": ...}``)
        mapping, on top of ``base`` (default: the class defaults).  Unknown keys are an error."""
        base = base if base is not None else cls()
        groups = cls.groups()
        flat: dict[str, Any] = {}
        for k, v in data.items():
            if k in groups and isinstance(v, Mapping):
                known = {f.name for f in fields(groups[k])}
                for kk, vv in v.items():
                    if kk not in known:
                        raise ValueError(f"unknown setting {kk!r} in [{k}]; known: {', '.join(sorted(known))}")
                    flat[kk] = vv
            else:
                flat[k] = v
        return base.replace(**flat)

    @classmethod
    def from_toml(cls, path: str | Path, base: "Settings | None" = None) -> "Settings":
        """Settings from a TOML run file (nested tables per group, or flat keys)."""
        import tomllib

        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ValueError(f"run file {path} does not exist") from None
        except IsADirectoryError:
            raise ValueError(f"run file {path} is a directory, expected a TOML file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"run file {path} is not valid TOML ({exc})") from None
        data.pop("analysis", None)  # written by to_toml for the reader's benefit
        return cls.from_dict(data, base)

    def to_toml(self, header: Mapping[str, Any] | None = None) -> str:
        """The settings as a TOML run file (scalars first, then one table per group)."""
        import tomli_w

        d = self.to_dict()
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in d.items() if isinstance(v, dict)}
        return tomli_w.dumps({**(dict(header) if header else {}), **scalars, **tables})


def positive_ints(obj: Settings, *names: str) -> None:
    """``ValueError`` naming the first of ``names`` whose value is not an integer >= 1 (``bool`` is not one)."""
    for n in names:
        v = getattr(obj, n)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{n} must be a positive integer, got {v!r}")


def non_negative_ints(obj: Settings, *names: str) -> None:
    """``ValueError`` naming the first of ``names`` whose value is not an integer >= 0 (``bool`` is not one)."""
    for n in names:
        v = getattr(obj, n)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{n} must be a non-negative integer, got {v!r}")
