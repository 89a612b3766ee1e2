"""Writing files that a crash must not leave half-written (whole-file replacements, append-only JSON lines), and
locks that say which process works on a folder (the system lets go of them when that process ends)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from garage.errors import GarageError


def write_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step: readers see the old file or the new one, never a mix."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def link_or_copy(source: str | Path, target: str | Path) -> None:
    """``target`` becomes ``source``'s content, atomically: a hard link (no copy of a GB file), or a copy across file
    systems; a file already there is replaced."""
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        try:
            os.link(source, staging)
        except OSError:  # another file system
            shutil.copy2(source, staging)
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)


def append_jsonl(path: str | Path, *records: dict, scrub: Callable[[str], str] | None = None,
                 sync: bool = False) -> None:
    """Append ``records``, one line each, in one write; a last line cut short by a crash is closed first, not glued
    onto. ``scrub``: applied to the text first (it takes secrets out); ``sync``: on disk before returning (a
    record that says work is done must outlive a crash that follows)."""
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    if not text:
        return
    data = (scrub(text) if scrub else text).encode("utf-8")
    with open(path, "ab+") as fh:
        if fh.seek(0, os.SEEK_END):
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                data = b"\n" + data
        fh.write(data)
        if sync:
            fh.flush()
            os.fsync(fh.fileno())


def read_jsonl(path: str | Path, repair: bool = False) -> list[dict]:
    """Every JSON-object line of ``path`` (as ``append_jsonl`` writes them), the last one too when it is whole but
    its newline is not written yet. A last line cut short (a crash mid-write) does not parse and is left out, and
    with ``repair`` cut from the file too: only the file's one writer may repair, as for another reader the line
    may still be being written."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    rows = [row for row in map(_json_object, raw.splitlines()) if row is not None]
    if repair and raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        if _json_object(raw[cut:]) is None:
            with open(path, "r+b") as fh:
                fh.truncate(cut)
    return rows


def _json_object(line: bytes) -> dict | None:
    try:
        row = json.loads(line.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


_held: set = set()  # lock handles this process holds: a forked child closes its copies (see _forget_in_child)


def _forget_in_child() -> None:
    """A lock lasts while any copy of its handle is open, and a fork copies them all: a child that outlives the
    work (ZeroGPU keeps its worker process for the next call) would hold the parent's locks after they end."""
    for handle in list(_held):
        handle.close()
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def try_lock(path: str | Path):
    """("mine", handle) when this call now holds ``path``'s lock until ``release(handle)``; ("held", None) when
    another open handle (another process, thread or tab) holds it; ("unknown", None) without advisory locks."""
    try:
        import fcntl
    except ImportError:  # no advisory locks here (Windows): nothing is known about other processes
        return "unknown", None
    handle = open(path, "a")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        return ("held" if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES) else "unknown"), None
    _held.add(handle)
    return "mine", handle


def release(handle) -> None:
    """Let go of a lock ``try_lock`` took (closing the handle)."""
    if handle is not None:
        _held.discard(handle)
        handle.close()


@contextlib.contextmanager
def exclusive(path: str | Path, busy: str, patience: float = 0.5):
    """Hold ``path``'s lock for the block; a GarageError saying ``busy`` when someone else holds it for longer than
    ``patience`` seconds (a reader asking whether the work runs holds it for an instant: see ``is_held``)."""
    deadline = time.monotonic() + patience
    state, handle = try_lock(path)
    while state == "held" and time.monotonic() < deadline:
        time.sleep(0.02)
        state, handle = try_lock(path)
    if state == "held":
        raise GarageError(busy)
    try:
        yield
    finally:
        release(handle)


def is_held(path: str | Path) -> bool:
    """Whether someone holds ``path``'s lock now. Asking takes the lock for an instant; ``exclusive`` waits that out.
    A lock file that does not exist was never taken (and asking does not make one)."""
    if not Path(path).exists():
        return False
    state, handle = try_lock(path)
    release(handle)
    return state == "held"
