"""The cost ledger (one definition), the progress protocol and analysis records."""

from __future__ import annotations

import io
import json
import math
import re

import numpy as np
import pytest

from corrflow.pipeline import Clock, CostLedger, Progress
from corrflow.pipeline.record import json_safe, markdown, publish


def test_clock_excludes_the_first_unit(monkeypatch):
    """Compilation is paid by the first unit of work: the cost is the rate after it times all units."""
    times = iter([0.0, 10.0, 11.0, 12.0, 13.0, 13.5])  # start, ticks after units 1..4, wall
    monkeypatch.setattr("corrflow.pipeline.ledger.time.perf_counter", lambda: next(times))
    c = Clock()
    for done in (1, 2, 3, 4):
        c.tick(done)
    assert c.cost(4) == pytest.approx(4.0)  # 1 s per unit; the 10 s first unit is not charged
    assert c.wall == pytest.approx(13.5)
    times2 = iter([0.0, 5.0, 7.0])
    monkeypatch.setattr("corrflow.pipeline.ledger.time.perf_counter", lambda: next(times2))
    one = Clock()
    one.tick(1)
    assert one.cost(1) == pytest.approx(7.0)  # one unit only: its wall time (no compilation recorded here)


def test_clock_subtracts_compilation_between_reports(monkeypatch):
    """A short last HMC block runs another compiled program: its compilation (jax.monitoring events) is not charged.
    Also a real compile is seen by compile_seconds."""
    import jax
    import jax.numpy as jnp

    from corrflow.pipeline import ledger

    before = ledger.compile_seconds()
    jax.jit(lambda x: jnp.cos(x) * 3.0 + 1.0)(jnp.arange(7.0)).block_until_ready()
    assert ledger.compile_seconds() > before
    times = iter([0.0, 10.0, 11.0, 12.0, 20.0, 20.5])  # start, ticks after 1, 2, 3 units of 2 and a short one of 1
    compiled = iter([0.0, 9.0, 9.0, 9.0, 16.5, 16.5, 16.5])  # the short block compiled for 7.5 s
    monkeypatch.setattr("corrflow.pipeline.ledger.time.perf_counter", lambda: next(times))
    monkeypatch.setattr(ledger, "compile_seconds", lambda: next(compiled))
    c = Clock()
    for done in (2, 4, 6, 7):
        c.tick(done)
    assert c.cost(7) == pytest.approx(3.5)  # (20 - 10 - 7.5) s for 5 units: 0.5 s per unit
    assert c.wall == pytest.approx(20.5) and c.compile == pytest.approx(16.5)


def test_ledger_reuse_extension_and_persistence(tmp_path):
    led = CostLedger.in_directory(tmp_path)
    assert math.isnan(led.cost("hmc/x"))  # never recorded: unknown
    led.record("hmc/x", 10.0, 12.0, 100)
    assert led.cost("hmc/x", 50) == pytest.approx(5.0) and led.cost("hmc/x", 200) == pytest.approx(10.0)
    led.record("hmc/x", 4.0, 5.0, 140, accumulate=True)  # extended by 40 configurations
    assert led.seconds("hmc/x") == pytest.approx(14.0) and led.count("hmc/x") == 140
    assert led.wall("hmc/x") == pytest.approx(17.0)
    again = CostLedger.in_directory(tmp_path)
    assert again.data == led.data
    (tmp_path / "workflow_timings.json").write_text("{not json")
    assert math.isnan(CostLedger.in_directory(tmp_path).cost("hmc/x"))  # a corrupt ledger loses costs only


def test_progress_quiet_callable_and_console():
    from rich.console import Console

    seen = []
    p = Progress(on_update=lambda *a: seen.append(a))
    p.update("train", 1, 4, "loss 1")
    p.log("not shown")
    p.finish("train")
    assert seen == [("train", 1, 4, "loss 1")] and p.quiet
    buf = io.StringIO()
    q = Progress(Console(file=buf, width=100))  # not a terminal: no bars, log lines only
    with q.stage("measure base") as tick:
        tick(3, 10)
    q.log("  [bold]step[/] done")
    assert buf.getvalue().strip() == "step done"


def test_progress_lines_off_a_terminal_and_lost_interrupts(monkeypatch):
    """A batch job's log (not a terminal) had no progress at all until the end; stages longer than `log_every` now
    print plain lines, shorter ones nothing.  A Ctrl-C that Python lost in a callback is raised at the next update."""
    from rich.console import Console

    from corrflow import runtime

    clock = [0.0]
    monkeypatch.setattr("corrflow.pipeline.progress.time.perf_counter", lambda: clock[0])
    buf = io.StringIO()
    p = Progress(Console(file=buf, width=200), log_every=30.0)
    with p.stage("hmc_base", "traj/s") as tick:
        for done in range(1, 11):
            clock[0] += 10.0
            tick(done, 10, "acc 0.90")
    lines = buf.getvalue().splitlines()
    assert lines == ["  HMC base: 4/10 (40%)  0.1 traj/s  acc 0.90", "  HMC base: 7/10 (70%)  0.1 traj/s  acc 0.90",
                     "  HMC base: 10/10 (100%)  0.1 traj/s  acc 0.90"], lines  # every 30 s, and the end
    buf.truncate(0), buf.seek(0)
    with p.stage("train") as tick:  # shorter than log_every: quiet
        tick(1, 2), tick(2, 2)
    assert buf.getvalue() == ""
    monkeypatch.setitem(runtime._interrupt, "pressed", True)  # what catch_interrupts' handler records
    with pytest.raises(KeyboardInterrupt):
        p.update("train", 1, 2)


def test_record_json_markdown_and_publish(tmp_path):
    from corrflow.store import open_store

    rec = {"title": "T", "summary": ["line"], "tables": {"cap": {"columns": ["a", "b"], "rows": [[1, None]]}},
           "value": np.float64(np.nan), "arr": np.arange(3), "n": np.int64(4), "settings": {"x": 1}}
    safe = json_safe(rec)
    assert safe["value"] is None and safe["arr"] == [0, 1, 2] and safe["n"] == 4
    json.dumps(safe, allow_nan=False)
    md = markdown(rec, "t.png")
    assert md.startswith("# T") and "![T](t.png)" in md and "| 1 |  |" in md and "### Settings" in md
    assert "### cap" in md  # a table without a caption is headed by its name; with one, by the caption
    captioned = {**rec, "tables": {"cap": {"columns": ["a"], "rows": [[1]], "caption": "a long caption (t = 4..8)"}}}
    assert "### a long caption (t = 4..8)" in markdown(captioned, None) and "### cap" not in markdown(captioned, None)
    # `<O>` is raw HTML in Markdown (it vanished from the rendered page): escaped outside code, kept inside
    from corrflow.markdown import html_outside_code

    rec_o = {"title": "d<O>/dm", "summary": ["**beta (1 - <P>) -> 1/2**: k > 0.7, `<O dS>_c`"],
             "tables": {"d<plaquette>/dbeta": {"columns": ["<O>(a')"], "rows": [["<pi|O_t|pi>"]]}},
             "settings": {"x": "<O>"}}
    md = markdown(rec_o, None)
    assert html_outside_code(md) == [] and html_outside_code(markdown(rec, None)) == []
    assert "**beta (1 - &lt;P&gt;) -> 1/2**: k > 0.7, `<O dS>_c`" in md and "### d&lt;plaquette&gt;/dbeta" in md
    assert "| &lt;O&gt;(a') |" in md and '"x": "<O>"' in md  # (the settings are a code block)
    store = open_store(tmp_path / "s.zarr", "a")
    out = publish(store, "toy", rec, b"\x89PNG fake", tmp_path / "out")
    assert {p.name for p in out.iterdir()} == {"toy.png", "toy.md", "toy.json"}
    stored, figs = store.read_analysis("toy")
    assert stored["title"] == "T" and stored["value"] is None and figs["toy.png"] == b"\x89PNG fake"


def test_variance_reduction_entry_has_one_shape():
    """Every analysis rates an estimator with this entry: ``vs_<reference>`` and ``cost_adjusted_vs_<reference>`` for
    each reference (values as given, non-finite as None), then the analysis' extras; no reference outside it."""
    from corrflow.pipeline.record import VARIANCE_REDUCTION_DEFINITION, variance_reduction_entry

    e = variance_reduction_entry({"independent": (np.float64(12.5), 3.25), "direct": (math.nan, None)},
                                 per_beta_vs_independent={"2": 1.0}, what="the intercept")
    assert e == {"vs_independent": 12.5, "vs_direct": None, "cost_adjusted_vs_independent": 3.25,
                 "cost_adjusted_vs_direct": None, "per_beta_vs_independent": {"2": 1.0}, "what": "the intercept"}
    assert type(e["vs_independent"]) is float and json_safe(e) == e
    assert variance_reduction_entry({}) == {}
    with pytest.raises(ValueError, match="vs_connected"):
        variance_reduction_entry({"independent": (1.0, 1.0)}, vs_connected=2.0)
    assert "var(X) / var(estimator)" in VARIANCE_REDUCTION_DEFINITION and "cost" in VARIANCE_REDUCTION_DEFINITION


def test_markdown_table_cells_read_as_numbers_and_keep_their_columns():
    """A cell `<pi|O_t|pi>` split its row into extra columns, a NaN p-value read `nan`, a rounded variance
    reduction `163.0` claimed a fourth digit: cells are escaped, n/a and `163`."""
    from corrflow.pipeline.record import table_cell

    assert [table_cell(x) for x in (None, math.nan, np.float64(np.inf), "nan", 163.0, 0.00842, 1.0, 3, "0.5(1)")] \
        == ["", "n/a", "n/a", "n/a", "163", "0.00842", "1", "3", "0.5(1)"]
    rec = {"title": "T", "tables": {"cap": {"columns": ["a", "b", "<x|y>"],
                                            "rows": [["<pi|O_t|pi>", math.nan, 163.0]]}}}
    row = next(line for line in markdown(rec, None).splitlines() if "pi" in line)
    assert row == "| &lt;pi\\|O_t\\|pi&gt; | n/a | 163 |"
    header = next(line for line in markdown(rec, None).splitlines() if line.startswith("| a"))
    assert len(re.split(r"(?<!\\)\|", header)) == len(re.split(r"(?<!\\)\|", row)) == 5


def test_measure_batches_resume_after_an_interruption_and_read_back(tmp_path):
    """`Pipeline.measure_batches` (the analyses' tangent passes): an evaluation interrupted after two batches
    continues at the first configuration not done, giving what one uninterrupted run gives; a finished one is read
    back without calling the function; a finished entry of earlier versions (`<hash>.npz`) is read too; another
    key recomputes."""
    from corrflow.pipeline import Pipeline

    links = np.arange(2 * 7 * 3, dtype=float).reshape(2, 7, 3)  # (chains, n, site data)
    calls = []

    def fn(flat, progress, resume, on_batch, stop_after=None):  # the corrflow.tangent.terms protocol, batch 2
        done = [np.asarray(r) for r in resume] if len(resume) else [np.zeros((0,)), np.zeros((0, 3))]
        first = len(done[0])
        calls.append(first)
        for start in range(first, len(flat), 2):
            stop = min(start + 2, len(flat))
            new = flat[start:stop]
            done = [np.concatenate([done[0], new.sum(-1)]), np.concatenate([done[1], 2 * new])]
            on_batch(stop, done)
            progress(stop, len(flat))
            if stop_after is not None and stop >= stop_after:
                raise KeyboardInterrupt
        return {"s": done[0], "d": done[1]}

    pipe = Pipeline(tmp_path / "s.zarr", tmp_path / "flows")
    with pytest.raises(KeyboardInterrupt):
        pipe.measure_batches({"k": 1}, links, lambda *a: fn(*a, stop_after=4), stage="t", outputs=("s", "d"))
    out, cost = pipe.measure_batches({"k": 1}, links, fn, stage="t", outputs=("s", "d"))
    assert calls == [0, 4]  # the second call resumed after the 4 configurations saved
    np.testing.assert_array_equal(out["s"], links.sum(-1))
    np.testing.assert_array_equal(out["d"], 2 * links)
    assert out["d"].shape == (2, 7, 3) and math.isfinite(cost)
    again, cost2 = pipe.measure_batches({"k": 1}, links, fn, stage="t", outputs=("s", "d"))
    assert calls == [0, 4] and cost2 == cost  # read back, charged its recorded cost
    np.testing.assert_array_equal(again["s"], out["s"])
    pipe.measure_batches({"k": 2}, links, fn, stage="t", outputs=("s", "d"))
    assert calls == [0, 4, 0]  # another key: computed from the start
    import hashlib

    from corrflow.pipeline.steps import _hash

    flat = links.reshape(14, 3)  # a finished entry of earlier versions: <hash>.npz
    h = _hash({"k": 3, "links": hashlib.sha256(np.ascontiguousarray(flat).tobytes()).hexdigest()[:16]})
    np.savez(tmp_path / "flows" / "measurements" / f"{h}.npz", s=-flat.sum(-1), d=-flat)
    legacy, _ = pipe.measure_batches({"k": 3}, links, fn, stage="t", outputs=("s", "d"))
    assert calls == [0, 4, 0]  # read, not recomputed
    np.testing.assert_array_equal(legacy["s"], -links.sum(-1))


def test_map_batches_resumes_where_it_stopped():
    """`map_batches` with `on_batch` / `resume` (the analyses' measurements under `Pipeline.measure_batches`):
    the results saved after two batches, resumed, equal one uninterrupted pass; bad resume arrays are refused."""
    from corrflow.pipeline import map_batches

    links = np.arange(11 * 2, dtype=float).reshape(11, 2)
    fn = lambda u: {"a": u.sum(-1), "b": 3 * u}  # noqa: E731
    whole = map_batches(fn, links, batch=3)
    saved = {}

    def stop_after_two(stop, flat):
        saved["flat"] = [np.copy(x) for x in flat]
        if stop >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        map_batches(fn, links, batch=3, on_batch=stop_after_two, outputs=("a", "b"))
    assert saved["flat"][0].shape == (6,)
    seen = []
    out = map_batches(fn, links, batch=3, resume=saved["flat"], outputs=("a", "b"),
                      progress=lambda d, n: seen.append(d))
    for k in ("a", "b"):
        np.testing.assert_array_equal(out[k], whole[k])
    assert seen[-1] == 11 and len(seen) == 2  # two batches left
    with pytest.raises(ValueError, match="resume needs the 2 outputs"):
        map_batches(fn, links, batch=3, resume=saved["flat"][:1], outputs=("a", "b"))
    with pytest.raises(ValueError, match="need the names of the outputs"):
        map_batches(fn, links, batch=3, on_batch=stop_after_two)


def test_console_summary_prints_the_headline_warnings_and_notes():
    """The end of a run prints the record's headline (the results, wherever they stand in the summary), every
    warning and the last notes; the continuum value used to be cut off because only the last lines were printed."""
    from corrflow.pipeline.analysis import console_summary

    summary = ["Intro.", "- **flowed**: continuum value **0.485(16)**", "- independent: 0.427(44)",
               "- variance reduction **9.1x**", "WARNING: tangent - connected differ", "- note a", "- note b",
               "- note c", "WARNING: ensemble x drifts"]
    rec = {"summary": summary, "headline": [1, 2, 3]}
    assert console_summary(rec, 2) == ["- flowed: continuum value 0.485(16)", "- independent: 0.427(44)",
                                       "- variance reduction 9.1x", "WARNING: tangent - connected differ",
                                       "- note b", "- note c", "WARNING: ensemble x drifts"]
    assert console_summary(rec, 0)[:3] == ["- flowed: continuum value 0.485(16)", "- independent: 0.427(44)",
                                           "- variance reduction 9.1x"]
    assert console_summary(rec, 10)[3] == "WARNING: tangent - connected differ"  # the intro is never a note
    assert "Intro." not in console_summary(rec, 10)
    # a record without a headline (written before it existed): its last lines and the warnings
    assert console_summary({"summary": summary}, 2) == ["WARNING: tangent - connected differ", "- note b",
                                                        "- note c", "WARNING: ensemble x drifts"]
    assert console_summary({}, 3) == []


def test_batched_terms_are_saved_every_few_seconds_and_on_interruption(tmp_path, monkeypatch):
    """Saving every batch rewrote all terms each time (quadratic: 40000 configurations of 2D U(1) took 2.5-4x their
    compute time); now at most every SAVE_EVERY seconds, and always the last finished batch when the computation
    returns or is interrupted."""
    from corrflow.pipeline import resumable
    from corrflow.store.checkpoints import read_checkpoint

    writes = []
    real = resumable.write_checkpoint
    monkeypatch.setattr(resumable, "write_checkpoint", lambda p, meta, arrays: (writes.append(meta["done"]),
                                                                                real(p, meta, arrays)))

    def compute(stop_after=None):
        def run(resume, on_batch):
            x = np.arange(10.0)
            for stop in range(len(resume[0]) if resume else 0, 10, 2):
                on_batch(stop + 2, [x[:stop + 2]])
                if stop + 2 == stop_after:
                    raise KeyboardInterrupt
            return "done"
        return run

    key = {"what": "test"}
    assert resumable.run_in_batches(tmp_path / "a", key, ("x",), compute())[0] == "done"
    assert writes == [10]  # five batches within SAVE_EVERY: one write, at the end
    writes.clear()
    with pytest.raises(KeyboardInterrupt):
        resumable.run_in_batches(tmp_path / "b", key, ("x",), compute(stop_after=6))
    assert writes == [6] and read_checkpoint(tmp_path / "b")[0]["done"] == 6
    result, _, first = resumable.run_in_batches(tmp_path / "b", key, ("x",), compute())
    assert first == 6 and writes == [6, 10]
    monkeypatch.setattr(resumable, "SAVE_EVERY", 0.0)
    writes.clear()
    resumable.run_in_batches(tmp_path / "c", key, ("x",), compute())
    assert writes == [2, 4, 6, 8, 10]


def test_batched_cost_counts_a_padded_last_batch_as_a_batch(tmp_path, monkeypatch):
    """Batches are padded to one size (one compiled program), so the last batch of 16 real configurations costs what
    one of 64 does; counted as 16 it made every measurement's cost ~2x its wall time (a Feynman-Hellmann audit)."""
    from corrflow.pipeline import resumable

    now = [0.0]
    monkeypatch.setattr("corrflow.pipeline.ledger.time.perf_counter", lambda: now[0])
    monkeypatch.setattr("corrflow.pipeline.ledger.compile_seconds", lambda: 0.0)

    def compute(resume, on_batch):
        for stop in (64, 128, 144):  # 64 + 64 + 16 (padded to 64): 3 s each
            now[0] += 3.0
            on_batch(stop, [np.zeros(stop)])

    _, seconds, _ = resumable.run_in_batches(tmp_path / "c", {"k": 1}, ("x",), compute)
    assert seconds == pytest.approx(9.0)  # three batches of 3 s (it was 3 s / 16 x 144 = 27 s)
