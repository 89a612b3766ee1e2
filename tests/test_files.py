"""Append-only JSON lines that a crash cannot corrupt, and locks that say which process works on a folder: held while
the work runs, never kept by a forked child."""

from __future__ import annotations

import os
import time

import pytest

from garage import files



def test_json_lines_survive_a_crash_mid_write_and_a_reader_mid_write(tmp_path):
    path = tmp_path / "records.jsonl"
    files.append_jsonl(path, {"n": 1}, {"n": 2, "text": "ünïcode"})
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"n": 3}')  # whole, its newline not written yet: a reader counts it
    assert [r["n"] for r in files.read_jsonl(path, repair=True)] == [1, 2, 3]
    files.append_jsonl(path, {"n": 4})  # closes the line first, never glues onto it
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"n": 5, "te')  # the process died mid-write
    assert [r["n"] for r in files.read_jsonl(path)] == [1, 2, 3, 4]
    assert path.read_text().endswith('"te')  # a reader leaves the line to its writer
    files.read_jsonl(path, repair=True)  # the writer cuts it
    assert path.read_text().endswith('{"n": 4}\n')
    files.append_jsonl(path, {"n": 6, "key": "sk-secret"}, scrub=lambda text: text.replace("sk-secret", "***"))
    assert [r.get("key") for r in files.read_jsonl(path)][-1] == "***" and files.read_jsonl(path)[1]["text"] == "ünïcode"


fcntl = pytest.importorskip("fcntl")  # advisory locks: not on Windows


def test_a_forked_child_does_not_keep_the_parents_lock(tmp_path):
    """ZeroGPU forks a worker process per GPU call and keeps it for the next: it must not hold our locks."""
    lock = tmp_path / ".generating.lock"
    state, handle = files.try_lock(lock)
    assert state == "mine" and files.try_lock(lock)[0] == "held"
    ready_read, ready_write = os.pipe()
    child = os.fork()
    if child == 0:  # the child outlives the parent's work, as ZeroGPU's idle worker does
        os.write(ready_write, b"1")  # it runs Python code, so the fork hooks have run
        time.sleep(3)
        os._exit(0)
    os.read(ready_read, 1)
    try:
        files.release(handle)
        state, again = files.try_lock(lock)
        assert state == "mine"  # free as soon as the parent let go, though the child still runs
        files.release(again)
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)


def test_exclusive_refuses_a_second_holder_with_the_message(tmp_path):
    with files.exclusive(tmp_path / "x.lock", busy="busy: try later"):
        with pytest.raises(Exception, match="busy: try later"):
            with files.exclusive(tmp_path / "x.lock", busy="busy: try later"):
                pass
    with files.exclusive(tmp_path / "x.lock", busy="never"):  # let go after the block
        pass


def test_a_glance_at_the_lock_does_not_refuse_the_work(tmp_path):
    """Listing jobs asks whether each is generating, which holds its lock for an instant; a Generate pressed in
    that instant waits it out instead of being refused."""
    import threading

    lock = tmp_path / ".generating.lock"
    state, glance = files.try_lock(lock)
    threading.Timer(0.1, files.release, args=(glance,)).start()  # a listing that lets go soon
    with files.exclusive(lock, busy="already generating", patience=5):  # generous: a loaded machine is slow
        assert files.is_held(lock)
    state, holder = files.try_lock(lock)  # a Generate that runs on
    try:
        started = time.monotonic()
        with pytest.raises(Exception, match="already generating"):
            with files.exclusive(lock, busy="already generating", patience=0.3):
                pass
        assert 0.3 <= time.monotonic() - started < 10
    finally:
        files.release(holder)
    assert not files.is_held(lock)
