"""Saved datasets: one folder per dataset in the user's own workspace.

    <datasets_dir(user)>/<safe name>/data.jsonl   one {"messages": [...]} (or {"text": ...}) per line
    <datasets_dir(user)>/<safe name>/meta.json    name, rows, format, source, created, stats summary

A dataset is written whole into a hidden temporary folder and then renamed into
place, so a reader never sees half a dataset, and two saves of one name cannot
both win. Each user only ever reads and writes under their own folder.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from datetime import datetime, timezone
from pathlib import Path

from garage import paths
from garage.data import preferences
from garage.data.stats import dataset_stats
from garage.errors import GarageError

DATA_FILE = "data.jsonl"
META_FILE = "meta.json"


def _folder_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise GarageError("Give the dataset a name (letters, digits, '-', '_' or '.').")
    return paths.safe_name(name, "dataset")


def _folder(user: str, name: str) -> Path:
    return paths.datasets_dir(user) / _folder_name(name)


def _check_rows(conversations: list[dict]) -> None:
    if not conversations:
        raise GarageError("There is nothing to save: the dataset has no rows.")
    if preferences.kind_of(conversations):
        return
    for i, row in enumerate(conversations):
        ok = isinstance(row, dict) and (
            isinstance(row.get("text"), str) or (
                isinstance(row.get("messages"), list) and row["messages"]
                and all(isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                        and isinstance(m.get("content"), str) for m in row["messages"])))
        if not ok:
            raise GarageError(f"Row {i + 1} is not a conversation: each row must be {{'messages': [{{'role', "
                              "'content'}, ...]}} (or {'text': ...}). Normalise the data before saving it.")


def readable(rows: list[dict]) -> list[dict]:
    """Rows as conversations or texts, what token counts read: a preference row as its prompt and chosen answer."""
    return [preferences.as_conversation(r) for r in rows] if preferences.kind_of(rows) else rows


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _summary(stats: dict | None) -> dict:
    if not stats:
        return {}
    tokens = stats.get("tokens", {})
    keep = ("rows", "turns", "system_prompts", "duplicates", "empty_answers_dropped", "dropped", "repaired",
            "max_seq_length", "truncated")
    summary = {k: stats[k] for k in keep if k in stats}
    summary["tokens"] = {k: tokens[k] for k in ("method", "label", "p50", "p95", "max", "mean") if k in tokens}
    return summary


def save_dataset(user: str, name: str, conversations: list[dict], *, source: str = "", format: str = "",
                 overwrite: bool = False, stats: dict | None = None, mapping: dict | None = None) -> dict:
    """Save conversations as ``name`` in ``user``'s workspace; returns the meta (refuses to overwrite)."""
    name = paths.check_name(name, "dataset")
    folder_name = _folder_name(name)
    _check_rows(conversations)
    root = paths.datasets_dir(user, create=True)
    target = root / folder_name
    if target.exists() and not overwrite:
        raise _name_taken(name, target)
    kind = preferences.kind_of(conversations) or ("chat" if all("messages" in r for r in conversations) else "text")
    if stats is None:
        stats = dataset_stats(readable(conversations))
    meta = {
        "name": name.strip(),
        "folder": folder_name,
        "rows": len(conversations),
        "format": format or ({"chat": "messages"}.get(kind, kind)),
        "kind": kind,
        "source": str(source),
        "mapping": mapping or {},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stats": _summary(stats),
    }
    staging = root / f".{folder_name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    staging.mkdir()
    old = None
    try:
        _write_jsonl(staging / DATA_FILE, conversations)
        (staging / META_FILE).write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
        if target.exists() and overwrite:
            old = root / f".{folder_name}.{os.getpid()}.{secrets.token_hex(4)}.old"
            os.replace(target, old)
        try:
            os.replace(staging, target)  # fails if another save created it meanwhile
        except OSError:
            raise _name_taken(name, target) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    meta["path"] = str(target / DATA_FILE)
    return meta


def _name_taken(name: str, target: Path) -> GarageError:
    """Say which saved dataset holds the name: names that differ only in characters a folder cannot hold
    ('messy qa!' and 'messy-qa') share one folder."""
    try:
        taken = json.loads((target / META_FILE).read_text(encoding="utf-8")).get("name") or target.name
    except (OSError, json.JSONDecodeError):
        taken = target.name
    same = "" if taken == name.strip() else \
        f" ('{taken}' is saved in the folder '{target.name}', as this name would be)"
    return GarageError(f"A dataset named '{taken}' already exists{same}. Choose another name, or tick 'overwrite' "
                       "to replace it.")


def list_datasets(user: str) -> list[dict]:
    """The meta of every dataset ``user`` saved, newest first."""
    out = []
    root = paths.datasets_dir(user)
    for folder in (root.iterdir() if root.is_dir() else []):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        meta["path"] = str(folder / DATA_FILE)
        out.append(meta)
    out.sort(key=lambda m: (m.get("created", ""), m.get("name", "")), reverse=True)
    return out


def dataset_path(user: str, name: str) -> Path:
    """The ``data.jsonl`` of ``user``'s saved dataset ``name`` (a ``GarageError`` when there is none)."""
    path = _folder(user, name) / DATA_FILE
    if not path.is_file() or not (path.parent / META_FILE).is_file():
        names = [m["name"] for m in list_datasets(user)]
        have = f" Your datasets: {', '.join(names)}." if names else " You have no saved datasets yet."
        raise GarageError(f"No saved dataset named '{name}'. Save it in the Data tab first.{have}")
    return path


def load_meta(user: str, name: str) -> dict:
    path = dataset_path(user, name)
    meta = json.loads((path.parent / META_FILE).read_text(encoding="utf-8"))
    meta["path"] = str(path)
    return meta


def read_dataset_file(path: str | Path) -> list[dict]:
    """Rows of a conversations JSONL file (as written by ``save_dataset`` or ``export_jsonl``); a line that does not
    parse is an error (the dataset is damaged), unlike ``garage.files.read_jsonl``, which reads append-only logs."""
    rows = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise GarageError(f"{path}: line {number} is not valid JSON ({exc.msg}); the saved dataset is "
                                  "damaged. Save it again from the Data tab.") from None
    return rows


def load_saved(user: str, name: str) -> list[dict]:
    """The conversations of ``user``'s saved dataset ``name``."""
    return read_dataset_file(dataset_path(user, name))


def delete_dataset(user: str, name: str) -> None:
    """Remove ``user``'s saved dataset ``name``."""
    folder = dataset_path(user, name).parent
    trash = folder.with_name(f".{folder.name}.{os.getpid()}.{secrets.token_hex(4)}.del")
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def export_jsonl(conversations: list[dict], path: str | Path) -> Path:
    """Write conversations to ``path`` as JSONL (one row per line), atomically."""
    _check_rows(conversations)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        _write_jsonl(tmp, conversations)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
