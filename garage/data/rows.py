"""The rows a job reads: a dataset by its reference, a run's training rows, their split, their prompts.

    dataset_rows(user, ref)            a saved dataset's rows (or, off a shared Space, a file's)
    training_rows(cfg, owner)          what a run trains on: conversations, or texts (continued pre-training)
    training_conversations(cfg, owner) a run's conversations, for what needs prompts and answers
    split_rows(rows, fraction, seed)   the run's train / held-out split (the Data tab's)
    prompt_rows(conversations, system) prompts up to the last user turn, with the answer after it as reference
    with_system_prompt(messages, text) a conversation under another system prompt
"""

from __future__ import annotations

from garage import access
from garage.data import formats, loaders, store
from garage.data.stats import split
from garage.errors import GarageError


def dataset_rows(user: str, ref: str) -> list[dict]:
    """Rows of ``ref``: a saved dataset name, or a path to a file of any accepted format (off a shared Space,
    where a path could be anyone's file)."""
    if not ref or not str(ref).strip():
        raise GarageError("Choose a dataset: save one in the Data tab first.")
    ref = str(ref).strip()
    try:
        return store.load_saved(user, ref)
    except GarageError:
        if not access.dataset_file_allowed(ref):
            raise
    return formats.normalise(loaders.load_file(ref)).conversations


def training_rows(cfg, owner: str) -> list[dict]:
    """The rows a run trains on: conversations, or for a plain-text dataset its texts (continued pre-training)."""
    rows = [r for r in dataset_rows(owner, cfg.dataset) if isinstance(r, dict)]
    conversations = [r for r in rows if r.get("messages")]
    texts = [r for r in rows if isinstance(r.get("text"), str) and r["text"].strip()]
    if not conversations and not texts:
        raise GarageError(f"Dataset {cfg.dataset!r} holds neither conversations (rows with 'messages') nor texts "
                          "(rows with 'text').")
    return conversations or texts


def training_conversations(cfg, owner: str) -> list[dict]:
    """The run's conversations (GRPO, eval examples and evaluation need prompts and answers)."""
    rows = training_rows(cfg, owner)
    if not rows[0].get("messages"):
        raise GarageError(f"Dataset {cfg.dataset!r} is plain text, for continued pre-training: this needs "
                          "conversations (prompts and answers). Save a dataset with user and assistant columns.")
    return rows


def is_plain_text(rows: list[dict]) -> bool:
    return bool(rows) and "messages" not in rows[0]


def split_rows(rows: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """The Data tab's deterministic split; a dataset under 4 rows keeps every row for training."""
    if len(rows) < 4:
        return rows, []
    return split(rows, eval_fraction, seed)


def prompt_rows(conversations: list[dict], system_prompt: str = "") -> list[dict]:
    """``{"prompt": messages up to the last user turn, "reference": the answer after it or None}`` per row.

    A non-empty ``system_prompt`` replaces the conversation's own system turn. Rows without a
    user turn (plain text rows) are left out.
    """
    out = []
    for row in conversations:
        messages = row.get("messages") if isinstance(row, dict) else None
        if not messages:
            continue
        users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        if not users:
            continue
        last = users[-1]
        prompt = [{"role": m["role"], "content": str(m.get("content", ""))} for m in messages[:last + 1]]
        reference = next((str(m.get("content", "")) for m in messages[last + 1:] if m.get("role") == "assistant"),
                         None)
        out.append({"prompt": with_system_prompt(prompt, system_prompt), "reference": reference or None})
    return out


def with_system_prompt(messages: list[dict], system_prompt: str) -> list[dict]:
    """``messages`` with ``system_prompt`` as their system turn, replacing their own; unchanged when it is empty."""
    if not system_prompt or not system_prompt.strip():
        return messages
    return [{"role": "system", "content": system_prompt.strip()}] + [m for m in messages if m["role"] != "system"]
