"""Preference data: which of two answers is better (DPO, ORPO), or whether one answer is good (KTO).

Accepted shapes, recognised by their columns (case-insensitive):

    prompt / chosen / rejected     TRL's explicit-prompt form: each side text or a list of turns
    chosen / rejected              TRL's implicit-prompt form: two whole conversations sharing their prompt turns
                                   (as lists of turns, or Anthropic HH text: "\\n\\nHuman: ...\\n\\nAssistant: ...")
    prompt / completion / label    KTO's unpaired form: label true for a good answer, false for a bad one

Every row is stored in TRL's conversational form, which its trainers read as is and whose chat template is the
model's: ``{"prompt": [turns ending on the user's], "chosen": [assistant turn], "rejected": [assistant turn]}``,
or ``{"prompt": [...], "completion": [assistant turn], "label": bool}``. Unlike conversations, where a row that
teaches nothing is dropped and counted, a preference row that is wrong (the two sides the same, a side empty, a
column missing) is an error naming the row: a pair that says nothing usually means the columns were mixed up.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

from garage.errors import GarageError

PAIRED, UNPAIRED = "preference", "kto"  # the kinds of dataset (meta "kind"), beside "chat" and "text"
FORMATS = {
    "preference": "preference pairs: prompt / chosen / rejected (TRL's explicit prompt)",
    "preference_implicit": "preference pairs: chosen / rejected conversations sharing their prompt (TRL's implicit "
                           "prompt)",
    "hh": "Anthropic HH: chosen / rejected texts of 'Human:' and 'Assistant:' turns",
    "kto": "KTO: prompt / completion / label (true: a good answer, false: a bad one)",
}
COLUMNS = ("prompt", "chosen", "rejected", "completion", "label")
_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")
_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "model": "assistant",
          "system": "system"}
_TRUE = {"true", "1", "yes", "good", "chosen", "desirable"}
_FALSE = {"false", "0", "no", "bad", "rejected", "undesirable"}


def detect(records: list[dict], columns: list[str]) -> str | None:
    """The preference format the columns name, or None (then they are read as conversations). A prompt /
    completion dataset is KTO's only when its label column says good or bad (a label that is a category is not):
    in four rows of five at least, the others then refused by row."""
    table = {str(c).strip().lower(): c for c in columns}
    if {"chosen", "rejected"} <= set(table):
        return "preference" if "prompt" in table else "implicit"  # implicit: HH text or turns, told row by row
    if {"prompt", "completion", "label"} <= set(table):
        labels = [r.get(table["label"]) for r in records[:200] if isinstance(r, dict)]
        # most of them true or false: KTO, whose odd label is then named by its row
        if labels and sum(_label(value) is not None for value in labels) >= 0.8 * len(labels):
            return "kto"
    return None


def normalise(records: list[dict], columns: list[str]) -> tuple[str, str, list[dict]]:
    """(format, kind, rows in TRL's conversational form) for records whose columns ``detect`` recognised."""
    table = {str(c).strip().lower(): c for c in columns}
    shape = detect(records, columns)
    rows, formats = [], set()
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise GarageError(f"Row {number} is not a record of columns.")
        if shape == "kto":
            rows.append(_kto_row(record, table, number))
            formats.add("kto")
        else:
            row, fmt = _pair_row(record, table, number, explicit=shape == "preference")
            rows.append(row)
            formats.add(fmt)
    fmt = "kto" if shape == "kto" else ("hh" if formats == {"hh"} else next(iter(formats)) if len(formats) == 1
                                        else "preference_implicit")
    return fmt, UNPAIRED if shape == "kto" else PAIRED, rows


def is_row(row: Any) -> bool:
    """A stored preference row (what ``normalise`` writes)."""
    return isinstance(row, dict) and _turns_ok(row.get("prompt")) and (
        _turns_ok(row.get("chosen")) and _turns_ok(row.get("rejected"))
        or _turns_ok(row.get("completion")) and isinstance(row.get("label"), bool))


def kind_of(rows: list[dict]) -> str | None:
    """PAIRED, UNPAIRED, or None for rows that are not preference data."""
    if not rows or not all(is_row(r) for r in rows):
        return None
    return PAIRED if "chosen" in rows[0] else UNPAIRED


def as_conversation(row: dict) -> dict:
    """The prompt and its preferred (or only) answer as one conversation: what token counts and previews read."""
    return {"messages": list(row["prompt"]) + list(row.get("chosen") or row.get("completion"))}


def unpaired(rows: list[dict], seed: int) -> list[dict]:
    """Pairs as KTO's rows, the chosen answer good and the rejected one bad, shuffled (``seed``): KTO's KL term
    pairs each answer with another row's prompt in its batch, which a pair's two halves side by side would share."""
    out = []
    for row in rows:
        if "chosen" in row:
            out.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True})
            out.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False})
        else:
            out.append(row)
    random.Random(seed).shuffle(out)
    return out


# --- one row ---------------------------------------------------------------------------------
def _pair_row(record: dict, table: dict, number: int, *, explicit: bool) -> tuple[dict, str]:
    sides = {}
    for side in ("chosen", "rejected"):
        if record.get(table[side]) is None:
            raise GarageError(f"Row {number} has no '{table[side]}': each row needs a chosen and a rejected answer.")
        value = record[table[side]]
        if isinstance(value, str) and not value.strip():
            raise GarageError(f"Row {number}: the {side} answer is empty. Each row needs a chosen and a rejected "
                              "answer that differ.")
        sides[side] = value
    if explicit:
        prompt = _turns(record.get(table["prompt"]), "user", number, "prompt")
        if not prompt:
            raise GarageError(f"Row {number}: the prompt is empty.")
        chosen, rejected = (_turns(sides[s], "assistant", number, s) for s in ("chosen", "rejected"))
        fmt = "preference"
    else:
        hh = {side: isinstance(value, str) and bool(_HH_TURN.search("\n\n" + value.lstrip("\n")))
              for side, value in sides.items()}
        if hh["chosen"] != hh["rejected"]:
            raise GarageError(f"Row {number}: one side is Anthropic HH text ('Human:' / 'Assistant:') and the other "
                              "is not: give both sides in one shape.")
        hh = hh["chosen"]
        whole = {s: (_hh_turns(v, number, s) if hh else _turns(v, "assistant", number, s)) for s, v in sides.items()}
        shared = 0
        while (shared < min(len(whole["chosen"]), len(whole["rejected"])) - 1
               and whole["chosen"][shared] == whole["rejected"][shared]):
            shared += 1
        prompt = whole["chosen"][:shared]
        chosen, rejected = whole["chosen"][shared:], whole["rejected"][shared:]
        if not prompt or prompt[-1]["role"] != "user":
            raise GarageError(f"Row {number}: the chosen and rejected conversations share no prompt ending on a "
                              "user turn. Give a prompt column, or two conversations that differ only in the "
                              "last answer.")
        fmt = "hh" if hh else "preference_implicit"
    for side, turns in (("chosen", chosen), ("rejected", rejected)):
        if not turns or any(t["role"] != "assistant" for t in turns) or not "".join(t["content"] for t in turns).strip():
            raise GarageError(f"Row {number}: the {side} side must be the assistant's answer, and not empty.")
    if chosen == rejected:
        raise GarageError(f"Row {number}: the chosen and rejected answers are the same, so the pair prefers "
                          "nothing. Remove the row or give a worse rejected answer.")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}, fmt


def _kto_row(record: dict, table: dict, number: int) -> dict:
    prompt = _turns(record.get(table["prompt"]), "user", number, "prompt")
    completion = _turns(record.get(table["completion"]), "assistant", number, "completion")
    if not prompt or not completion or not "".join(t["content"] for t in completion).strip():
        raise GarageError(f"Row {number}: the {'prompt' if not prompt else 'completion'} is empty.")
    label = _label(record.get(table["label"]))
    if label is None:
        raise GarageError(f"Row {number}: label is {record.get(table['label'])!r}; it must say whether the "
                          "completion is good: true or false (also 1/0, yes/no).")
    return {"prompt": prompt, "completion": completion, "label": label}


def _label(value: Any) -> bool | None:
    """A KTO label as True / False, or None when it says neither."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        return True if word in _TRUE else False if word in _FALSE else None
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    return None


def _turns(value: Any, role: str, number: int, column: str) -> list[dict]:
    """A side as turns: text is one turn of ``role``; a list (or a CSV cell of one, as JSON) keeps its own roles."""
    if isinstance(value, str) and value.lstrip().startswith("[{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass  # text that happens to open like JSON
    if isinstance(value, str):
        return [{"role": role, "content": value}] if value.strip() else []
    if isinstance(value, (list, tuple)) and all(isinstance(t, dict) for t in value):
        turns = []
        for turn in value:
            name = _ROLES.get(str(turn.get("role", turn.get("from", ""))).strip().lower())
            content = turn.get("content", turn.get("value"))
            if name is None or not isinstance(content, str):
                raise GarageError(f"Row {number}: a turn in '{column}' is not {{role: user/assistant/system, "
                                  f"content: text}}: {str(turn)[:120]}")
            turns.append({"role": name, "content": content})
        return turns
    if value is None:
        raise GarageError(f"Row {number} has no '{column}'.")
    raise GarageError(f"Row {number}: '{column}' must be text or a list of turns, not {type(value).__name__}.")


def _hh_turns(text: str, number: int, column: str) -> list[dict]:
    """Anthropic HH's "\\n\\nHuman: ...\\n\\nAssistant: ..." as turns."""
    parts = _HH_TURN.split("\n\n" + text.lstrip("\n"))
    if parts[0].strip() or len(parts) < 3:
        raise GarageError(f"Row {number}: '{column}' is not a conversation of 'Human:' and 'Assistant:' turns.")
    return [{"role": "user" if who == "Human" else "assistant", "content": said.strip()}
            for who, said in zip(parts[1::2], parts[2::2])]


def _turns_ok(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(t, dict) and t.get("role") in ("system", "user", "assistant") and isinstance(t.get("content"), str)
        for t in value)
