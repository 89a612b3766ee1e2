"""Writing files that a crash must not leave half-written: whole-file replacements and append-only JSON lines."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path


def write_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step: readers see the old file or the new one, never a mix."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append ``record`` as one line; a last line cut short by a crash is closed first, not glued onto."""
    line = (json.dumps(record) + "\n").encode("utf-8")
    with open(path, "ab+") as fh:
        if fh.seek(0, os.SEEK_END):
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                line = b"\n" + line
        fh.write(line)
