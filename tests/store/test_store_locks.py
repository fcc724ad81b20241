"""Writer locks: one writer per ensemble whatever path reaches the store; stale locks of dead processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import corrflow.store.locks as clocks
from corrflow.pipeline import generate_to_store
from corrflow.store import StoreError, open_store

from .store_helpers import (BASE, CONFIG, N_BASE, N_EXTENDED, THEORY, cli_refused, dummy_block, locks_left, refused,
                            snapshot, u1_spec)


# ----------------------------------------------------------------------------------------
# locks
# ----------------------------------------------------------------------------------------


def test_concurrent_writer_refused(store_copy):
    st = open_store(store_copy, "a")
    other = open_store(store_copy, "a")
    with st.writer("base") as w:
        lock = st.lock_path("base")
        assert lock.parent == store_copy / "_corrflow" / "locks"  # inside the store: one file for every path
        held = json.loads(lock.read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        before = snapshot(store_copy)
        lock_bytes = lock.read_bytes()
        with pytest.raises(StoreError, match=r"this process already holds a writer for ensemble 'base'"):
            with other.writer("base"):
                pass
        # a second process, reaching the store through a symlink, is refused and told who holds the lock
        link = store_copy.parent / "link.zarr"
        link.symlink_to(store_copy)
        code = ("import sys; from corrflow.store import open_store, StoreError\n"
                "try:\n    open_store(sys.argv[1], 'a').writer('base').__enter__()\n"
                "except StoreError as e:\n    print(e); sys.exit(3)\n")
        proc = subprocess.run([sys.executable, "-c", code, str(link)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 3, proc.stderr
        assert f"being written by another process (pid {os.getpid()}" in proc.stdout
        with pytest.raises(StoreError, match="already holds a writer"):
            generate_to_store(other, "base", THEORY, CONFIG, n_traj=N_EXTENDED, resume=True, **BASE)
        assert snapshot(store_copy) == before and lock.read_bytes() == lock_bytes  # the holder keeps its lock
        assert w.committed == N_BASE
    assert not lock.exists()


def test_lock_of_live_process_or_other_host_is_respected(store_copy):
    st = open_store(store_copy, "a")
    lock = st.lock_path("base")
    lock.parent.mkdir(exist_ok=True)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        for holder in ({"pid": sleeper.pid, "host": socket.gethostname(), "since": 0},
                       {"pid": 2 ** 22 + 12345, "host": "some-other-host", "since": 0}):
            lock.write_text(json.dumps(holder))
            before = snapshot(store_copy)
            with pytest.raises(StoreError, match=rf"another process \(pid {holder['pid']} on host {holder['host']}"):
                with st.writer("base"):
                    pass
            assert snapshot(store_copy) == before
            assert json.loads(lock.read_text()) == holder  # not stolen
    finally:
        sleeper.kill()
        sleeper.wait()
        lock.unlink(missing_ok=True)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert not clocks._pid_alive(p.pid)
    return p.pid


def test_stale_lock_of_dead_process_is_taken_over(store_copy):
    st = open_store(store_copy, "a")
    lock = st.lock_path("base")
    lock.parent.mkdir(exist_ok=True)
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "since": 0}))
    with st.writer("base") as w:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        w.append(*dummy_block(2, 1, 100))
    assert not lock.exists()
    assert open_store(store_copy).info("base")["committed"] == N_BASE + 1


def test_stale_lock_takeover_is_exclusive(store_copy, monkeypatch):
    st_a, st_b = open_store(store_copy, "a"), open_store(store_copy, "a")
    lock = st_a.lock_path("base")
    lock.parent.mkdir(exist_ok=True)
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "since": 0}))
    a = st_a.writer("base")
    real = clocks._pid_alive
    interleaved = []

    def pid_alive(pid):
        # B has read the stale lock; before B removes it, A takes the lock over completely
        if not interleaved:
            interleaved.append(True)
            a.__enter__()
        return real(pid)

    monkeypatch.setattr(clocks, "_pid_alive", pid_alive)
    try:
        with pytest.raises(StoreError, match="another process"):
            with st_b.writer("base"):
                pass
    finally:
        a.__exit__(None, None, None)




def test_every_spelling_of_the_path_reaches_the_same_lock(store_copy, tmp_path, monkeypatch):
    """A symlink, a relative path, ``./x`` and ``a/../x`` all lead to the one lock file inside the store: while one
    writer holds it, a writer through any other spelling is refused (in this process: 'already holds')."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "alias.zarr").symlink_to(store_copy)
    monkeypatch.chdir(tmp_path)
    spellings = [store_copy, Path("alias.zarr"), Path("./copy.zarr"), Path("sub/../copy.zarr"),
                 tmp_path / "sub" / ".." / "alias.zarr", Path(os.path.relpath(store_copy))]
    for i, held in enumerate(spellings):
        with open_store(held, "a").writer("base"):
            for other in spellings[:i] + spellings[i + 1:]:
                with pytest.raises(StoreError, match=r"this process already holds a writer for ensemble 'base'"):
                    with open_store(other, "a").writer("base"):
                        pass
        assert not locks_left(store_copy)
    # creation is locked the same way: no second creator of a new name through another path
    spec = u1_spec()
    with open_store("alias.zarr", "a").writer("fresh", create=spec) as w:
        assert w.created
        with pytest.raises(StoreError, match=r"already holds a writer for ensemble 'fresh'"):
            open_store("sub/../copy.zarr", "a").writer("fresh", create=spec).__enter__()
    assert open_store(store_copy).info("fresh")["committed"] == 0


def test_lock_area_occupied_by_a_file_is_a_clear_error(store_copy):
    st = open_store(store_copy, "a")
    lock = st.lock_path("base")
    lock.mkdir()  # a directory where the lock file belongs
    before = snapshot(store_copy)
    with pytest.raises(StoreError, match=r"lock path .*base\.lock exists but is not a regular file; remove it"):
        st.writer("base").__enter__()
    assert snapshot(store_copy) == before
    lock.rmdir()
    shutil.rmtree(store_copy / "_corrflow")
    (store_copy / "_corrflow").write_text("not a directory")
    refused(store_copy, StoreError, r"_corrflow is a file, but corrflow keeps its writer locks in this directory",
            lambda: st.writer("base").__enter__())
    cli_refused(store_copy, r"_corrflow is a file", "measure", store_copy, "base", "wilson_1x1")
    (store_copy / "_corrflow").unlink()
    # the old lock directory beside the store plays no part any more: a file there is harmless
    Path(str(store_copy) + ".locks").write_text("stray")
    with st.writer("base") as w:
        assert w.committed == N_BASE
