"""Several jobs creating one new store at the same moment (a job array): every one opens the same complete store.

Found by an interrupt audit (2026-12-07): with a plain ``open_group(mode="a")`` the loser of the race read the
winner's half-written root (``cannot open ... A group exists``), refused it as a foreign store, or rewrote the root
without its header; 4-54 of 150 two-process trials failed.  The store is now built in a hidden sibling directory
and renamed into place."""

from __future__ import annotations

import json
import threading

from corrflow.store import open_store


def test_concurrent_creation_gives_one_complete_store(tmp_path):
    for trial in range(15):
        path = tmp_path / f"s{trial}.zarr"
        if trial % 3 == 2:
            path.mkdir()  # an empty directory made by the job script beforehand
        barrier = threading.Barrier(6)
        results: list[str] = []

        def create() -> None:
            barrier.wait()
            try:
                open_store(path, "a").materialise()
                results.append("ok")
            except Exception as exc:  # noqa: BLE001 - reported below
                results.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=create) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == ["ok"] * 6, results
        assert json.loads((path / "zarr.json").read_text())["attributes"]["corrflow"]["format"]
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no leftovers
        open_store(path, "r")


def test_a_link_to_an_empty_directory_becomes_the_store(tmp_path):
    real = tmp_path / "scratch" / "runs.zarr"
    real.mkdir(parents=True)
    link = tmp_path / "runs.zarr"
    link.symlink_to(real)
    open_store(link, "a").materialise()
    assert link.is_symlink() and (real / "zarr.json").is_file()
    open_store(link, "r")
