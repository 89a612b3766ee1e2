"""Pairs -> conversations -> a saved dataset or a JSONL file."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from garage.errors import GarageError


def to_conversation(pair: dict, system: str | None = None) -> dict:
    """``{"messages": [user, assistant]}`` for one pair (reasoning first, for chain-of-thought pairs)."""
    if isinstance(pair.get("messages"), list):
        return {"messages": pair["messages"]}
    answer = str(pair.get("answer", "")).strip()
    if pair.get("reasoning"):
        answer = f"{str(pair['reasoning']).strip()}\n\nAnswer: {answer}"
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": str(pair.get("question", "")).strip()},
                 {"role": "assistant", "content": answer}]
    return {"messages": messages}


def to_conversations(pairs: Sequence[dict], system: str | None = None) -> list[dict]:
    return [to_conversation(p, system) for p in pairs
            if isinstance(p.get("messages"), list) or (str(p.get("question", "")).strip()
                                                       and str(p.get("answer", "")).strip())]


def export_jsonl(items: Sequence[dict], path: str | os.PathLike, *, system: str | None = None) -> Path:
    """Write pairs (or conversations) as one ``{"messages": [...]}`` per line; returns the path."""
    path = Path(path)
    rows = to_conversations(items, system)
    if not rows:
        raise GarageError("There is nothing to export: no pair has both a question and an answer.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def save_pairs(user: str, name: str, pairs: Sequence[dict], *, system: str | None = None,
               source: str = "augment", overwrite: bool = False) -> dict:
    """Save pairs as a dataset in ``user``'s workspace (``garage.data.store``); returns its meta.

    The meta has at least ``name``, ``rows`` and ``path`` (the data.jsonl).
    """
    conversations = to_conversations(pairs, system)
    if not conversations:
        raise GarageError("There is nothing to save: no pair has both a question and an answer.")
    try:
        from garage.data.store import save_dataset
    except ImportError:
        save_dataset = None
    if save_dataset is not None:
        return save_dataset(user, name, conversations, source=source, format="messages", overwrite=overwrite)
    return _save_fallback(user, name, conversations, source, overwrite)


def _save_fallback(user: str, name: str, conversations: list[dict], source: str, overwrite: bool) -> dict:
    """The store's layout (data.jsonl + meta.json), for when ``garage.data.store`` is absent."""
    from garage import paths

    if not name or not name.strip():
        raise GarageError("Give the dataset a name (letters, digits, '-', '_' or '.').")
    folder = paths.datasets_dir(user) / paths.safe_name(name, "dataset")
    if folder.exists() and not overwrite:
        raise GarageError(f"A dataset named '{folder.name}' already exists. Choose another name, or tick "
                          "'overwrite' to replace it.")
    folder.mkdir(parents=True, exist_ok=True)
    export_jsonl(conversations, folder / "data.jsonl")
    meta = {"name": name.strip(), "folder": folder.name, "rows": len(conversations), "format": "messages",
            "kind": "chat", "source": source, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
    return {**meta, "path": str(folder / "data.jsonl")}
