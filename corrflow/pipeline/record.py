"""Analysis records: one JSON-serialisable dict per run, rendered the same way by every analysis.

A record holds ``title``, ``summary`` (Markdown lines), ``tables`` (``{name: {"columns": [...], "rows": [[...], ...],
"caption": "..."}}``: a short name that stays the same from run to run, for scripts reading the JSON, and the heading
shown above the table, which may spell out the run's settings; without ``caption`` the name is the heading),
``settings`` (the resolved settings, nested, so that ``Settings.from_dict(record["settings"])`` repeats the run),
``costs``, ``variance_reduction`` and whatever numbers the analysis adds.  ``variance_reduction`` has one shape in
every analysis: ``{"definition": VARIANCE_REDUCTION_DEFINITION, quantity: {estimator: entry}}``, ``entry`` from
:func:`variance_reduction_entry` (``record["variance_reduction"]["plaquette"]["flowed"]["vs_independent"]``).
:func:`publish` writes it to the store (``store.write_analysis``, with the figures) and to ``out/``: the figure,
``<name>.md``, ``<name>.json`` and the run file ``<name>.toml``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["VARIANCE_REDUCTION_DEFINITION", "figure_png", "json_safe", "markdown", "print_tables", "publish",
           "markdown_cell", "table_caption", "table_cell", "variance_reduction_entry"]

#: what the numbers of ``record["variance_reduction"]`` mean (its ``"definition"``, the same in every analysis)
VARIANCE_REDUCTION_DEFINITION = (
    "VR vs X = var(X) / var(estimator), the variance of the reference estimator X over that of the estimator rated, "
    "each on the same number of configurations (per ensemble); cost-adjusted VR vs X = VR vs X times "
    "cost(X) / cost(estimator), each estimator's whole path cost as in the costs table")


def json_safe(x: Any) -> Any:
    """``x`` with numpy scalars/arrays as Python values and non-finite floats as None (strict JSON)."""
    if isinstance(x, Mapping):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return json_safe(x.tolist())
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def variance_reduction_entry(vr_by_reference: Mapping[str, tuple[float | None, float | None]],
                             **extras: Any) -> dict[str, Any]:
    """One estimator's entry of ``record["variance_reduction"][quantity]``: ``{reference: (vr, cost_adjusted_vr)}``
    as ``{"vs_<reference>": vr, ..., "cost_adjusted_vs_<reference>": cost_adjusted_vr, ...}``, then ``extras`` (an
    analysis' own numbers, e.g. ``per_beta_vs_independent``).  The values are kept as given (Python floats; None for
    None or a non-finite value, as :func:`json_safe` writes them), :data:`VARIANCE_REDUCTION_DEFINITION` says what
    they are.  ``extras`` may not use the ``vs_`` / ``cost_adjusted_vs_`` keys: every reference goes through
    ``vr_by_reference``, so each one has both numbers."""

    def num(x: float | None) -> float | None:
        if x is None:
            return None
        v = float(x)
        return v if math.isfinite(v) else None

    entry: dict[str, Any] = {f"vs_{r}": num(v) for r, (v, _) in vr_by_reference.items()}
    entry.update({f"cost_adjusted_vs_{r}": num(c) for r, (_, c) in vr_by_reference.items()})
    bad = [k for k in extras if k.startswith(("vs_", "cost_adjusted_vs_"))]
    if bad:
        raise ValueError(f"variance_reduction_entry: {bad} are references: give them in vr_by_reference")
    return {**entry, **extras}


def table_cell(x: Any) -> str:
    """A table cell as text: None -> empty, a non-finite number -> ``n/a``, a whole float without its ``.0`` (a
    variance reduction rounded to ``163.0`` claims a digit it does not have); the rest as ``str``."""
    if x is None:
        return ""
    if isinstance(x, (float, np.floating)):
        v = float(x)
        if not math.isfinite(v):
            return "n/a"
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else str(v)
    return "n/a" if isinstance(x, str) and x.strip().lower() == "nan" else str(x)


def markdown_cell(x: Any) -> str:
    """:func:`table_cell` for a Markdown (GFM) table: a ``|`` in a cell (``<pi|O_t|pi>``) would split it, escaped."""
    return table_cell(x).replace("|", "\\|")


def table_caption(name: str, table: Mapping[str, Any]) -> str:
    """The heading of the record's table ``name``: its ``caption``, or the name (records before captions)."""
    return str(table.get("caption") or name)


def markdown(record: Mapping[str, Any], figure: str | None) -> str:
    """The record as a Markdown page: title, summary, figure, tables, settings (``<O>`` written ``&lt;O&gt;``
    outside code: :func:`corrflow.markdown.escape_angle_brackets`)."""
    from ..markdown import escape_angle_brackets

    lines = [f"# {record['title']}", ""] + list(record.get("summary", [])) + [""]
    if figure:
        lines += [f"![{record['title']}]({figure})", ""]

    for name, tab in record.get("tables", {}).items():
        lines += [f"### {table_caption(name, tab)}", "", "| " + " | ".join(map(markdown_cell, tab["columns"])) + " |",
                  "|" + "---|" * len(tab["columns"])]
        lines += ["| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in tab["rows"]]
        lines.append("")
    if "settings" in record:
        lines += ["### Settings", "", "```", json.dumps(record["settings"], indent=1), "```", ""]
    return escape_angle_brackets("\n".join(lines))


def print_tables(console: Any, record: Mapping[str, Any], *, first: int | None = None) -> None:
    """The record's tables (the first ``first`` of them) as rich tables on ``console`` (no-op if None)."""
    if console is None:
        return
    from ..console import results_table

    for i, (name, tab) in enumerate(record.get("tables", {}).items()):
        if first is not None and i >= first:
            break
        rows = [[table_cell(v) for v in row] for row in tab["rows"]]
        console.print(results_table(table_caption(name, tab), [str(c) for c in tab["columns"]], rows, justify="right"))


def figure_png(fig: Any, dpi: int = 150) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def publish(store: Any, name: str, record: dict[str, Any], png: bytes | None, out: str | Path,
            settings: Any = None) -> Path:
    """Write the record and figure to the store (analysis ``name``) and ``out/<name>.{png,md,json,toml}``; return
    the output directory.  ``settings`` (an :class:`~corrflow.pipeline.settings.AnalysisSettings`) is written as
    the run file ``<name>.toml``."""
    fig_name = f"{name}.png"
    store.write_analysis(name, json_safe(record), figures={fig_name: png} if png is not None else None)
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    if png is not None:
        (outdir / fig_name).write_bytes(png)
    (outdir / f"{name}.md").write_text(markdown(record, fig_name if png is not None else None))
    (outdir / f"{name}.json").write_text(json.dumps(json_safe(record), indent=1))
    if settings is not None:
        (outdir / f"{name}.toml").write_text(settings.to_toml({"analysis": settings.name}))
    return outdir
