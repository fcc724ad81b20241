"""The settings-to-command-line adapter and the error runner shared by every entry point.

:func:`settings_command` turns an :class:`~corrflow.pipeline.settings.AnalysisSettings` class into a typer
command: one option per leaf setting (``--n-configs``, or the field's ``flag``; its ``aliases``, the names the
``corrflow`` commands give the same setting, e.g. ``--n``, as hidden options named in the help text), its help text
and default taken from the dataclass, plus ``--config run.toml``.  Precedence: class defaults < run file < options
given on the command line.  Bad values give one line and exit status 2 (:func:`run_cli`).

:func:`run_cli` runs the body of any command: user errors (``ValueError``, ``TypeError``, ``FloatingPointError``,
:class:`corrflow.store.StoreError`, ``OSError`` from the file system and the ``errors`` passed) become
``error: <message>`` (markup escaped) and exit 2, Ctrl-C
exits 130 keeping everything committed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Optional

from ..console import make_console

__all__ = ["run_cli", "settings_command", "make_console"]

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, FloatingPointError)


def _check_environment() -> None:
    """Environment settings that programs read when they are traced, checked before a command touches a store (a
    bad value would otherwise surface mid-run, after the store was changed)."""
    from .. import pallas_force

    pallas_force.use_pallas()  # CORRFLOW_PALLAS


def run_cli(body: Callable[[], Any], console: Any, errors: tuple[type[BaseException], ...] = (),
            interrupted: str = "everything committed to the store is kept; rerun the same command to continue") -> Any:
    """Run a command body: user errors -> one line on ``console`` and exit 2; Ctrl-C -> ``interrupted`` (what is
    kept and how to continue) and exit 130."""
    import typer
    from rich.markup import escape

    from ..runtime import check_interrupt, exit_now
    from ..store import StoreError

    try:
        _check_environment()
        out = body()
        check_interrupt()  # a Ctrl-C that Python lost in a callback (corrflow.runtime.catch_interrupts)
        return out
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/]: {interrupted}")
        exit_now(130)  # a command-line process ends here, without the interpreter's shutdown
        raise typer.Exit(130) from None
    except (*USER_ERRORS, *errors, StoreError) as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except OSError as exc:  # the file system refused (missing file, permissions, disk full): one line, no traceback
        where = f": {exc.filename}" if exc.filename else ""
        console.print(f"[bold red]error:[/] {escape(str(exc.strerror or exc) + where)}", highlight=False,
                      soft_wrap=True)
        raise typer.Exit(2) from None


def _option_default(value: Any) -> Any:
    """The default shown in the help (a tuple as a list with spaces after the commas, so that a narrow terminal wraps
    it instead of cutting it; only given values are parsed)."""
    if isinstance(value, tuple):
        return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return value


def settings_command(app: Any, settings_cls: type, run: Callable[[Any, Any], Any], *, name: str | None = None,
                     help: str | None = None, epilog: str | None = None,
                     extra: dict[str, Any] | None = None) -> Callable[..., None]:
    """Register ``run(settings, console)`` on the typer ``app`` as a command whose options are the leaf settings
    of ``settings_cls`` (hidden ones excluded) plus ``--config``.  ``extra``: further options (``{name:
    typer.Option(...)}``, first in the help) that the caller reads before the command runs, as ``python -m
    analysis.continuum_limit`` does ``--theory``; the command accepts and ignores them.  Returns the command
    function."""
    import typer

    leaves = {k: v for k, v in settings_cls.flat_fields().items() if k not in settings_cls.cli_hidden}
    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, annotation=str, default=opt)
               for k, opt in (extra or {}).items()]
    params.append(inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                                    default=typer.Option("", "--config", help="TOML run file with settings (nested "
                                                         "tables per group or flat keys); options given on the "
                                                         "command line override it. Every run writes its resolved "
                                                         "settings to OUT/NAME.toml; `--config` of that file repeats "
                                                         "the run.")))
    aliases: dict[str, tuple[str, str]] = {}  # {parameter: (setting, spelling)}
    for key, (group, f, tp) in leaves.items():
        over = settings_cls.cli_overrides.get(key, {})
        flag = over.get("flag") or f.metadata.get("flag") or "--" + key.replace("_", "-")
        text = over.get("help") or f.metadata.get("help", "")
        default = _option_default(settings_cls.class_default(key))  # (the class is not constructed: no checks)
        annot = tp if tp in (int, float, bool, str) else str
        decls = [flag] if annot is not bool or "/" in flag else [f"{flag}/--no-{flag[2:]}"]
        spellings = [a for a in over.get("aliases", f.metadata.get("aliases", ())) if a != flag]
        if spellings:  # corrflow's spelling of the setting: hidden options, named in the help text
            text = f"{text} (also {', '.join(spellings)})"
        params.append(inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, annotation=annot,
                                        default=typer.Option(default, *decls, help=text)))
        for i, spelling in enumerate(spellings):
            aliases[f"{key}__alias{i}"] = (key, spelling)
            params.append(inspect.Parameter(f"{key}__alias{i}", inspect.Parameter.KEYWORD_ONLY,
                                            annotation=Optional[annot],  # type: ignore[valid-type]
                                            default=typer.Option(None, spelling, hidden=True)))

    def command(ctx: Any, **kwargs: Any) -> None:
        console = make_console()

        def body() -> None:
            for k in extra or {}:
                kwargs.pop(k)
            config = kwargs.pop("config")
            settings = settings_cls.from_toml(config) if config else settings_cls()
            # by name: typer may bring its own copy of click's ParameterSource enum
            given = {k: v for k, v in kwargs.items() if k not in aliases
                     and getattr(ctx.get_parameter_source(k), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")}
            for param, (key, spelling) in aliases.items():
                if kwargs[param] is None:
                    continue
                if key in given and given[key] != kwargs[param]:
                    raise ValueError(f"{spelling} and its other spelling give {key} two values ({kwargs[param]} and "
                                     f"{given[key]}): give one")
                given[key] = kwargs[param]
            if given:
                settings = settings.replace(**given)
            run(settings, console)

        run_cli(body, console)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = (name or settings_cls.name).replace("-", "_")
    command.__doc__ = help or settings_cls.__doc__
    app.command(name or settings_cls.name, epilog=epilog, help=help)(command)
    return command
