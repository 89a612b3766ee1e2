"""Pairs -> conversations -> a saved dataset or a JSONL file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from garage.data import store
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


def export_pairs(items: Sequence[dict], path: str | os.PathLike, *, system: str | None = None) -> Path:
    """Write pairs (or conversations) as one ``{"messages": [...]}`` per line, atomically; returns the path."""
    rows = to_conversations(items, system)
    if not rows:
        raise GarageError("There is nothing to export: no pair has both a question and an answer.")
    return store.export_jsonl(rows, path)


def save_pairs(user: str, name: str, pairs: Sequence[dict], *, system: str | None = None,
               source: str = "augment", overwrite: bool = False) -> dict:
    """Save pairs as a dataset in ``user``'s workspace (``garage.data.store``); returns its meta.

    The meta has at least ``name``, ``rows`` and ``path`` (the data.jsonl).
    """
    conversations = to_conversations(pairs, system)
    if not conversations:
        raise GarageError("There is nothing to save: no pair has both a question and an answer.")
    return store.save_dataset(user, name, conversations, source=source, format="messages", overwrite=overwrite)
