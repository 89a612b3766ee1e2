"""Append-only JSON-lines files (a run's metrics, an augment job's ratings) that survive a crash mid-line."""

from __future__ import annotations

import json
import os
from pathlib import Path


def append(path: str | Path, record: dict) -> None:
    """Append ``record`` as one line; a last line cut short by a crash is closed first, not glued onto."""
    line = (json.dumps(record) + "\n").encode("utf-8")
    with open(path, "ab+") as fh:
        if fh.seek(0, os.SEEK_END):
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                line = b"\n" + line
        fh.write(line)
