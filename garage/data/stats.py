"""Numbers about a dataset (rows, turns, token lengths, duplicates) and the train/eval split."""

from __future__ import annotations

import json
import math
import random
from typing import Any

from garage.errors import GarageError

ESTIMATE_LABEL = "estimate (about 4 characters per token; no tokenizer given, choose a model for exact counts)"
_BATCH = 1000


def _percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _estimate(row: dict) -> int:
    if "messages" in row:
        return sum(4 + math.ceil(len(m["content"]) / 4) for m in row["messages"])
    return math.ceil(len(row.get("text", "")) / 4)


def _plain(row: dict) -> str:
    if "messages" in row:
        return "\n".join(m["content"] for m in row["messages"])
    return row.get("text", "")


def token_lengths(conversations: list[dict], tokenizer: Any = None) -> tuple[list[int], dict]:
    """Token count of each row, and how it was counted (``method``, ``label``, ``template_errors``).

    With a tokenizer, chat rows are rendered with its chat template and tokenised exactly as
    ``tokenizer.apply_chat_template(messages, tokenize=True)`` does; text rows are tokenised as is.
    Without one, the counts are a labelled estimate.
    """
    if tokenizer is None:
        return [_estimate(r) for r in conversations], {"method": "estimate", "label": ESTIMATE_LABEL,
                                                       "template_errors": 0}
    encoder = getattr(tokenizer, "tokenizer", None) or tokenizer  # a processor wraps its tokenizer
    if not getattr(tokenizer, "chat_template", None) and getattr(encoder, "chat_template", None):
        tokenizer = encoder
    has_template = bool(getattr(tokenizer, "chat_template", None))
    texts: list[str] = []
    special: list[bool] = []  # add the tokenizer's own special tokens (not when the template did)
    errors = 0
    for row in conversations:
        if "messages" in row and has_template:
            try:
                texts.append(tokenizer.apply_chat_template(row["messages"], tokenize=False))
                special.append(False)
                continue
            except Exception:  # noqa: BLE001 - a row the template refuses is counted, not fatal
                errors += 1
        texts.append(_plain(row))
        special.append(True)
    lengths = [0] * len(texts)
    for flag in (False, True):
        idx = [i for i, s in enumerate(special) if s is flag]
        for start in range(0, len(idx), _BATCH):
            chunk = idx[start:start + _BATCH]
            ids = encoder([texts[i] for i in chunk], add_special_tokens=flag)["input_ids"]
            for i, row_ids in zip(chunk, ids):
                lengths[i] = len(row_ids)
    if has_template:
        label = "tokens under the model's tokenizer and chat template"
    else:
        label = "tokens under the model's tokenizer (it has no chat template: message text only)"
    if errors:
        label += f"; the chat template refused {errors} row(s), counted as plain text"
    method = "chat_template" if has_template else "tokenizer"
    return lengths, {"method": method, "label": label, "template_errors": errors}


def dataset_stats(conversations: list[dict], tokenizer: Any = None, max_seq_length: int | None = None, *,
                  dropped: dict | None = None, repaired: dict | None = None) -> dict:
    """Rows, turns, token lengths (p50/p95/max), truncation, duplicates, system prompts, drops."""
    dropped = dict(dropped or {})
    chat = [r for r in conversations if "messages" in r]
    turns = [sum(m["role"] != "system" for m in r["messages"]) for r in chat]
    seen: set[str] = set()
    duplicates = 0
    for row in conversations:
        key = json.dumps(row, sort_keys=True, ensure_ascii=False)
        if key in seen:
            duplicates += 1
        seen.add(key)
    lengths, how = token_lengths(conversations, tokenizer)
    ordered = sorted(lengths)
    truncated = None
    if max_seq_length:
        truncated = sum(n > int(max_seq_length) for n in lengths)
    kind = "chat" if len(chat) == len(conversations) else "text" if not chat else "mixed"
    return {
        "rows": len(conversations),
        "kind": kind,
        "turns": sum(turns),
        "turns_per_row_max": max(turns, default=0),
        "multi_turn_rows": sum(t > 2 for t in turns),
        "system_prompts": sum(bool(r["messages"]) and r["messages"][0]["role"] == "system" for r in chat),
        "duplicates": duplicates,
        "empty_answers_dropped": dropped.get("empty_answer", 0),
        "dropped": dropped,
        "repaired": dict(repaired or {}),
        "tokens": {
            **how,
            "p50": _percentile(ordered, 50),
            "p95": _percentile(ordered, 95),
            "max": ordered[-1] if ordered else 0,
            "mean": round(sum(ordered) / len(ordered), 1) if ordered else 0,
            "total": sum(ordered),
        },
        "max_seq_length": int(max_seq_length) if max_seq_length else None,
        "truncated": truncated,
    }


def eval_size(rows: int, eval_fraction: float) -> int:
    """How many of ``rows`` a split holds out for evaluation (at least 1, never all)."""
    if eval_fraction <= 0 or rows < 2:
        return 0
    return min(rows - 1, max(1, round(rows * eval_fraction)))


def split(conversations: list[dict], eval_fraction: float, seed: int = 3407) -> tuple[list[dict], list[dict]]:
    """A deterministic train/eval split: the same rows, fraction and seed give the same split.

    Rows keep their original order inside each part.
    """
    try:
        fraction = float(eval_fraction)
    except (TypeError, ValueError):
        raise GarageError(f"eval_fraction must be a number between 0 and 0.5; got {eval_fraction!r}.") from None
    if not 0 <= fraction < 1:
        raise GarageError(f"eval_fraction must be at least 0 and below 1; got {eval_fraction!r}.")
    rows = list(conversations)
    if fraction == 0 or not rows:
        return rows, []
    if len(rows) < 2:
        raise GarageError("A dataset of 1 row cannot be split for evaluation; set eval_fraction to 0 or add rows.")
    n_eval = eval_size(len(rows), fraction)
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    train = [r for i, r in enumerate(rows) if i not in held]
    evaluation = [r for i, r in enumerate(rows) if i in held]
    return train, evaluation
