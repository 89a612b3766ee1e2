"""The rows a job reads: a dataset by its reference, a run's training rows, their split, their prompts.

    dataset_rows(user, ref)            a saved dataset's rows (or, off a shared Space, a file's)
    training_rows(cfg, owner)          what a run trains on: conversations, or texts (continued pre-training)
    training_conversations(cfg, owner) a run's conversations, for what needs prompts and answers
    preference_rows(cfg, owner)        a preference run's pairs (dpo, orpo) or labelled answers (kto)
    run_rows(cfg, owner)               either, as the run's method reads them
    split_rows(rows, fraction, seed)   the run's train / held-out split (the Data tab's)
    prompt_rows(conversations, system) prompts up to the last user turn, with the answer after it as reference
    with_system_prompt(messages, text) a conversation under another system prompt
"""

from __future__ import annotations

from garage import access
from garage.config import PREFERENCE_METHODS
from garage.data import formats, loaders, preferences, store
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
    if preferences.kind_of(rows):
        raise GarageError(f"Dataset {cfg.dataset!r} holds preferences (which answer is better), not conversations: "
                          "train it with method dpo, orpo or kto.")
    conversations = [r for r in rows if r.get("messages")]
    texts = [r for r in rows if isinstance(r.get("text"), str) and r["text"].strip()]
    if not conversations and not texts:
        raise GarageError(f"Dataset {cfg.dataset!r} holds neither conversations (rows with 'messages') nor texts "
                          "(rows with 'text').")
    return conversations or texts


def preference_rows(cfg, owner: str) -> list[dict]:
    """What a preference run (dpo, orpo, kto) trains on, in TRL's conversational form: pairs for DPO and ORPO; for
    KTO pairs or labelled answers (its trainer reads each pair as a good and a bad answer, after the split:
    ``preferences.unpaired``)."""
    rows = [r for r in dataset_rows(owner, cfg.dataset) if isinstance(r, dict)]
    kind = preferences.kind_of(rows)
    if kind is None:
        raise GarageError(f"Dataset {cfg.dataset!r} holds no preferences: {cfg.method} needs rows of prompt / chosen "
                          "/ rejected (or, for kto, prompt / completion / label). Vote in the Compare tab to make "
                          "one, or save such a file in the Data tab.")
    if cfg.method != "kto" and kind != preferences.PAIRED:
        raise GarageError(f"Dataset {cfg.dataset!r} holds single answers labelled good or bad, which {cfg.method} "
                          "cannot compare: it needs pairs (prompt / chosen / rejected). Train it with kto.")
    return rows


def run_rows(cfg, owner: str) -> list[dict]:
    """The rows a run of ``cfg.method`` trains on (what a Hugging Face Job is sent)."""
    return preference_rows(cfg, owner) if cfg.method in PREFERENCE_METHODS else training_rows(cfg, owner)


def training_conversations(cfg, owner: str) -> list[dict]:
    """The run's conversations (GRPO, eval examples and evaluation need prompts and answers); a preference run's
    are its prompts with the chosen (or good) answers, the answer it was taught to prefer."""
    if cfg.method in PREFERENCE_METHODS:
        return [preferences.as_conversation(row) for row in preference_rows(cfg, owner) if row.get("label", True)]
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
