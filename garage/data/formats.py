"""What the columns mean: detect the format, then turn every row into a conversation.

Every accepted shape ends up as ``{"messages": [{"role", "content"}, ...]}`` with
roles ``system`` (optional, first), then ``user`` and ``assistant`` alternating,
ending on ``assistant``. The one exception is plain text (a single ``text``
column): no conversation can be read from it, so its rows stay ``{"text": ...}``
with format ``"text"``, for continued pre-training.

Rows that cannot train anything (an empty answer, no assistant turn) are dropped
and counted, never an error, unless no row is left. Rows that are easy to mend
(two user turns in a row, a trailing unanswered question) are mended and counted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from garage.data import preferences
from garage.errors import GarageError

# Columns that hold a whole conversation (a list of turns).
CONVERSATION_COLUMNS = ("messages", "conversations", "conversation", "chat", "dialog", "dialogue", "turns")
SYSTEM_COLUMNS = ("system", "system_prompt", "system_message", "sys")
TEXT_COLUMNS = ("text", "content", "document", "body", "passage")
MAPPING_KEYS = ("user", "assistant", "system", "input", "messages", "text")

_ROLE_NAMES = {
    "user": "user", "human": "user", "prompter": "user", "customer": "user",
    "assistant": "assistant", "gpt": "assistant", "model": "assistant", "bot": "assistant", "ai": "assistant",
    "chatgpt": "assistant", "gemma": "assistant",
    "system": "system", "developer": "system",
}


@dataclass(frozen=True)
class _Rule:
    format: str
    user: tuple[str, ...]
    assistant: tuple[str, ...]
    extra: tuple[str, ...] = ()


# Order matters: the first rule that fits wins when there is no ambiguity.
_RULES = (
    _Rule("alpaca", ("instruction",), ("output", "response", "answer", "completion"), ("input", "context")),
    _Rule("qa", ("question", "query", "problem"), ("answer", "response", "output", "solution")),
    _Rule("prompt_completion", ("prompt",), ("completion",)),
    _Rule("prompt_response", ("prompt",), ("response", "output", "answer")),
    _Rule("input_output", ("input", "user", "human", "request"), ("output", "assistant", "gpt", "response", "target")),
)

FORMATS = {
    "messages": "OpenAI messages: a 'messages' list of {role, content}",
    "sharegpt": "ShareGPT: a 'conversations' list of {from, value} (human/gpt/system)",
    "qa": "question / answer columns (also synthetic-data-kit qa_pairs, query/response)",
    "alpaca": "Alpaca: instruction / input / output columns (also instruction/response)",
    "prompt_completion": "prompt / completion columns",
    "prompt_response": "prompt / response columns",
    "input_output": "input / output columns",
    "text": "plain text: one 'text' column (continued pre-training, not chat)",
    "custom": "your own column mapping",
    **preferences.FORMATS,
}

ACCEPTED_SHAPES = (
    "messages (a list of {role, content}), conversations (ShareGPT {from, value}), question/answer, "
    "instruction/input/output, prompt/completion, prompt/response, input/output, or a single text column; "
    "for preference tuning prompt/chosen/rejected, chosen/rejected conversations, or prompt/completion/label"
)

_REASONS = {
    "empty_answer": "the answer is empty",
    "empty_prompt": "the user's message is empty",
    "no_assistant_turn": "no assistant turn (nothing to learn from)",
    "starts_with_assistant": "the conversation starts with the assistant, not the user",
    "misplaced_system": "a system message that is not first",
    "unsupported_role": "a turn with a role other than system/user/assistant (e.g. tool)",
    "bad_conversation": "the conversation column is not a list of turns",
    "empty_text": "the text is empty",
}
_REPAIRS = {
    "not_alternating": "roles did not alternate; consecutive turns of one role were merged",
    "last_not_assistant": "the last message was not from the assistant; the unanswered turn(s) were cut",
}


@dataclass
class FormatGuess:
    """What ``detect_format`` found: the format, the columns it uses and how sure it is."""

    format: str | None
    mapping: dict[str, str] = field(default_factory=dict)
    confidence: float = 0.0
    ambiguous: bool = False
    alternatives: list[dict] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.format is not None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Normalised:
    """The result of ``normalise``: usable rows, and what was dropped or mended and why."""

    format: str
    kind: str  # "chat" or "text"
    mapping: dict[str, str]
    conversations: list[dict]
    total: int
    dropped: dict[str, int] = field(default_factory=dict)
    repaired: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    guess: FormatGuess | None = None

    @property
    def rows(self) -> int:
        return len(self.conversations)


# --- detection -----------------------------------------------------------------------
def _key(name: str) -> str:
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def _columns(records: list[dict], sample: int) -> list[str]:
    seen: dict[str, None] = {}
    for row in records[:sample]:
        if isinstance(row, dict):
            for k in row:
                seen.setdefault(k, None)
    return list(seen)


def _lookup(columns: list[str]) -> dict[str, str]:
    table: dict[str, str] = {}
    for col in columns:
        table.setdefault(_key(col), col)
    return table


def _as_turns(value: Any) -> list | None:
    """A list of turn dicts, from a list or a JSON string of one (as CSV stores it)."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, list) and value and all(isinstance(t, dict) for t in value):
        return value
    return None


def _turn_style(records: list[dict], col: str, sample: int) -> tuple[str | None, float]:
    """("messages" | "sharegpt" | None, share of rows whose column is a list of turns)."""
    styles = {"messages": 0, "sharegpt": 0}
    present = hits = 0
    for row in records[:sample]:
        value = row.get(col)
        if value is None:
            continue
        present += 1
        turns = _as_turns(value)
        if not turns:
            continue
        keys = set().union(*(t.keys() for t in turns))
        if "role" in keys:
            styles["messages"] += 1
            hits += 1
        elif "from" in keys:
            styles["sharegpt"] += 1
            hits += 1
    if not hits:
        return None, 0.0
    return max(styles, key=styles.get), hits / max(present, 1)


def _filled(value: Any) -> bool:
    return value is not None and str(value).strip() != ""


def detect_format(records: list[dict], sample: int = 200) -> FormatGuess:
    """Guess the format of ``records`` from their columns (case-insensitive, common aliases)."""
    columns = _columns(records, sample)
    table = _lookup(columns)
    system = next((table[k] for k in SYSTEM_COLUMNS if k in table), None)

    # 0. preference data (DPO, ORPO, KTO): its columns say so
    preference = preferences.detect(records, columns)
    if preference:
        fmt = {"implicit": "preference_implicit"}.get(preference, preference)
        return FormatGuess(fmt, {c: c for c in columns if _key(c) in preferences.COLUMNS}, 1.0, False, [], columns,
                           f"Preference data: {preferences.FORMATS[fmt]}.")

    # 1. a column holding whole conversations
    for alias in CONVERSATION_COLUMNS:
        col = table.get(alias)
        if not col:
            continue
        style, share = _turn_style(records, col, sample)
        if style:
            mapping = {"messages": col}
            if system:
                mapping["system"] = system
            return FormatGuess(style, mapping, round(share, 2), False, [], columns,
                               f"Conversations read from the column '{col}'.")

    # 2. a user column and an assistant column
    matches = []
    for rule in _RULES:
        user = next((table[k] for k in rule.user if k in table), None)
        present = [table[k] for k in rule.assistant if k in table and table[k] != user]
        if not user or not present:
            continue
        mapping = {"user": user, "assistant": present[0]}
        extra = next((table[k] for k in rule.extra if k in table and table[k] not in (user, present[0])), None)
        if extra:
            mapping["input"] = extra
        if system:
            mapping["system"] = system
        matches.append((rule.format, mapping, present[1:]))
    # a match whose columns all belong to a bigger match is part of it (input/output inside alpaca)
    kept = [m for m in matches
            if not any(o is not m and set(m[1].values()) < set(o[1].values()) for o in matches)]
    if kept:
        fmt, mapping, spare = kept[0]
        others = [{"format": f, "mapping": mp} for f, mp, _ in kept[1:]]
        for col in spare:
            others.append({"format": fmt, "mapping": {**mapping, "assistant": col}})
        sampled = [r for r in records[:sample] if isinstance(r, dict)]
        fill = sum(_filled(r.get(mapping["user"])) and _filled(r.get(mapping["assistant"])) for r in sampled)
        fill = fill / max(len(sampled), 1)
        ambiguous = bool(others)
        confidence = round(fill * (0.5 if ambiguous else 1.0), 2)
        note = f"User messages from '{mapping['user']}', answers from '{mapping['assistant']}'"
        if "input" in mapping:
            note += f", with '{mapping['input']}' added to the user message when it is not empty"
        note += "."
        if ambiguous:
            choices = "; ".join(f"{o['mapping']['user']} -> {o['mapping']['assistant']}" for o in others)
            note += (f" Other columns could also be the conversation ({choices}): check the preview, "
                     "and map the columns yourself if this guess is wrong.")
        return FormatGuess(fmt, mapping, confidence, ambiguous, others, columns, note)

    # 3. plain text
    text = next((table[k] for k in TEXT_COLUMNS if k in table), None)
    if text:
        others = [c for c in columns if c != text and c != system]
        return FormatGuess("text", {"text": text}, 1.0 if _key(text) == "text" else 0.7, False, [], columns,
                           f"Only a text column ('{text}') was found: no conversation can be inferred, so rows are "
                           "kept as plain text for continued pre-training. To fine-tune a chat model, map a user "
                           "column and an assistant column instead." + (f" Other columns: {', '.join(others)}."
                                                                         if others else ""))
    return FormatGuess(None, {}, 0.0, False, [], columns,
                       f"No known format. Columns found: {', '.join(map(str, columns)) or '(none)'}.")


def unknown_columns_error(columns: list[str]) -> GarageError:
    found = ", ".join(map(str, columns)) or "(none)"
    return GarageError(
        f"Could not tell which columns hold the conversation. Columns found: {found}. Accepted shapes: "
        f"{ACCEPTED_SHAPES}. Map the columns yourself: choose which column is the user's message and which is "
        "the assistant's answer (and, optionally, a system prompt column)."
    )


# --- explicit mappings -------------------------------------------------------------------
def check_mapping(mapping: dict, columns: list[str]) -> dict[str, str]:
    """A user's column mapping, checked against the columns; unset entries are dropped."""
    unknown = [k for k in mapping if k not in MAPPING_KEYS]
    if unknown:
        raise GarageError(f"Unknown mapping key(s): {', '.join(map(str, unknown))}. Use: {', '.join(MAPPING_KEYS)}.")
    table = _lookup(columns)
    clean: dict[str, str] = {}
    for role, col in mapping.items():
        if col is None or str(col).strip() in ("", "(none)"):
            continue
        col = str(col)
        actual = col if col in columns else table.get(_key(col))
        if actual is None:
            raise GarageError(f"The column '{col}' (mapped to {role}) is not in the data. Columns found: "
                              f"{', '.join(map(str, columns))}.")
        clean[role] = actual
    if "messages" in clean or ("text" in clean and not {"user", "assistant"} & set(clean)):
        return clean
    if "user" not in clean or "assistant" not in clean:
        raise GarageError("Map both a user column (the prompt) and an assistant column (the answer), or one "
                          "messages column holding whole conversations, or one text column.")
    if clean["user"] == clean["assistant"]:
        raise GarageError(f"The user and assistant columns must differ; both are '{clean['user']}'.")
    return clean


# --- normalisation ---------------------------------------------------------------------
def _text(value: Any) -> str:
    """Cell value -> text: None is empty; lists of text parts are joined; other values shown as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and ("text" in p or "type" in p) for p in value):
        # OpenAI content parts
        return "\n".join(str(p.get("text", "")) for p in value if p.get("type", "text") == "text")
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and value != value:  # NaN from pandas/parquet
        return ""
    return str(value)


def _turns_to_messages(value: Any) -> tuple[list[dict] | None, str | None]:
    turns = _as_turns(value)
    if turns is None:
        return None, "bad_conversation"
    messages = []
    for turn in turns:
        raw_role = turn.get("role", turn.get("from"))
        role = _ROLE_NAMES.get(str(raw_role).strip().lower()) if raw_role is not None else None
        if role is None:
            return None, "unsupported_role"
        content = turn.get("content", turn.get("value", turn.get("text")))
        messages.append({"role": role, "content": _text(content)})
    return messages, None


def clean_conversation(messages: list[dict]) -> tuple[list[dict] | None, str | None, list[str]]:
    """Check one conversation: (messages ready to train, or None; the drop reason; the repairs made)."""
    repairs: list[str] = []
    msgs = [m for m in messages if not (m["role"] == "system" and not m["content"].strip())]
    # system prompts: only at the start (several are joined)
    systems = []
    while msgs and msgs[0]["role"] == "system":
        systems.append(msgs.pop(0)["content"])
    if any(m["role"] == "system" for m in msgs):
        return None, "misplaced_system", repairs
    if not any(m["role"] == "assistant" for m in msgs):
        return None, "no_assistant_turn", repairs
    if any(m["role"] == "assistant" and not m["content"].strip() for m in msgs):
        return None, "empty_answer", repairs
    if any(m["role"] == "user" and not m["content"].strip() for m in msgs):
        return None, "empty_prompt", repairs
    # merge runs of one role so the roles alternate
    merged: list[dict] = []
    for m in msgs:
        if merged and merged[-1]["role"] == m["role"]:
            merged[-1] = {"role": m["role"], "content": merged[-1]["content"] + "\n\n" + m["content"]}
            if "not_alternating" not in repairs:
                repairs.append("not_alternating")
        else:
            merged.append(dict(m))
    if merged[0]["role"] != "user":
        return None, "starts_with_assistant", repairs
    if merged[-1]["role"] != "assistant":
        merged.pop()  # alternating, so one trailing user turn at most
        repairs.append("last_not_assistant")
    if systems:
        merged.insert(0, {"role": "system", "content": "\n\n".join(systems)})
    return merged, None, repairs


def _row_messages(row: dict, mapping: dict) -> tuple[list[dict] | None, str | None]:
    system = _text(row.get(mapping["system"])) if "system" in mapping else ""
    if "messages" in mapping:
        messages, reason = _turns_to_messages(row.get(mapping["messages"]))
        if messages is None:
            return None, reason
        if system.strip() and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": system})
        return messages, None
    if _holds_turns(row.get(mapping["user"])) or _holds_turns(row.get(mapping["assistant"])):
        return _prompt_and_completion_turns(row, mapping, system)
    user = _text(row.get(mapping["user"]))
    extra = _text(row.get(mapping["input"])) if "input" in mapping else ""
    if extra.strip():
        user = f"{user}\n\n{extra}" if user.strip() else extra
    answer = _text(row.get(mapping["assistant"]))
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    if system.strip():
        messages.insert(0, {"role": "system", "content": system})
    return messages, None


def _holds_turns(value: Any) -> bool:
    """A cell holding conversation turns (TRL's conversational prompt / completion), not text: every item names a
    known role and has content. An answer that is JSON of other things ('[{"from": "ann@x.com", ...}]') is text."""
    turns = _as_turns(value)
    return bool(turns) and all(str(t.get("role", t.get("from", ""))).strip().lower() in _ROLE_NAMES
                               and any(k in t for k in ("content", "value", "text")) for t in turns)


def _prompt_and_completion_turns(row: dict, mapping: dict, system: str) -> tuple[list[dict] | None, str | None]:
    """Prompt turns then completion turns; a side given as text is one user (or assistant) turn."""
    messages = []
    for column, role in ((mapping["user"], "user"), (mapping["assistant"], "assistant")):
        value = row.get(column)
        if _holds_turns(value):
            turns, reason = _turns_to_messages(value)
            if turns is None:
                return None, reason
            messages += turns
        else:
            messages.append({"role": role, "content": _text(value)})
    if system.strip() and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system})
    return messages, None


def normalise(records: list[dict], mapping: dict | None = None, *, guess: FormatGuess | None = None) -> Normalised:
    """Turn rows into conversations (or text rows), by the detected format or an explicit ``mapping``.

    ``mapping`` keys: ``user``, ``assistant``, ``system``, ``input`` (added to the user message),
    ``messages`` (a column of whole conversations) or ``text``; values are column names.
    """
    if not records:
        raise GarageError("The data has no rows. Upload a file with at least one example.")
    columns = _columns(records, len(records))
    if mapping:
        mapping = check_mapping(mapping, columns)
        if "messages" in mapping:
            fmt = _turn_style(records, mapping["messages"], 200)[0] or "custom"
        elif "text" in mapping and "user" not in mapping:
            fmt = "text"
        else:
            fmt = "custom"
        guess = FormatGuess(fmt, mapping, 1.0, False, [], columns, "Columns mapped by you.")
    else:
        guess = guess or detect_format(records)
        if not guess.ok:
            raise unknown_columns_error(columns)
        fmt, mapping = guess.format, dict(guess.mapping)

    if fmt in preferences.FORMATS:  # rows of pairs or labelled answers, not conversations
        fmt, kind, rows = preferences.normalise(records, columns)
        return Normalised(fmt, kind, mapping, rows, len(records), {}, {}, _unused(columns, mapping), guess)
    kept: list[dict] = []
    dropped: dict[str, int] = {}
    repaired: dict[str, int] = {}
    if fmt == "text":
        for row in records:
            text = _text(row.get(mapping["text"])) if isinstance(row, dict) else ""
            if text.strip():
                kept.append({"text": text})
            else:
                dropped["empty_text"] = dropped.get("empty_text", 0) + 1
    else:
        for row in records:
            messages, reason = _row_messages(row, mapping) if isinstance(row, dict) else (None, "bad_conversation")
            repairs: list[str] = []
            if messages is not None:
                messages, reason, repairs = clean_conversation(messages)
            if messages is None:
                dropped[reason] = dropped.get(reason, 0) + 1
                continue
            for r in repairs:
                repaired[r] = repaired.get(r, 0) + 1
            kept.append({"messages": messages})

    if not kept:
        raise _nothing_left(len(records), dropped, mapping)
    result = Normalised(fmt, "text" if fmt == "text" else "chat", mapping, kept, len(records), dropped, repaired,
                        [], guess)
    result.warnings = _warnings(result, columns)
    return result


def _nothing_left(total: int, dropped: dict, mapping: dict) -> GarageError:
    if set(dropped) == {"empty_answer"}:
        col = f" (column '{mapping['assistant']}')" if "assistant" in mapping else ""
        return GarageError(f"Every row ({total}) has an empty answer{col}, so there is nothing to train on. Check "
                           "that the right column is mapped to the assistant, or fill in the answers.")
    if set(dropped) == {"empty_text"}:
        return GarageError(f"Every row ({total}) has an empty text column ('{mapping.get('text')}'). "
                           "Choose the column that holds the text.")
    why = "; ".join(f"{n} x {_REASONS.get(r, r)}" for r, n in dropped.items())
    return GarageError(f"No usable rows: all {total} rows were dropped ({why}). Each row needs a user message "
                       "followed by a non-empty assistant answer. Check the column mapping or the file.")


def _warnings(result: Normalised, columns: list[str]) -> list[str]:
    out = []
    guess = result.guess
    if guess and guess.ambiguous:
        out.append(guess.note)
    if result.format == "text":
        out.append("Plain text: no conversation can be inferred from a single text column, so rows are kept as "
                   "{'text': ...} for continued pre-training (not chat fine-tuning). Map a user column and an "
                   "assistant column to fine-tune a chat model.")
    for reason, n in result.dropped.items():
        out.append(f"Dropped {n} of {result.total} rows: {_REASONS.get(reason, reason)}.")
    for repair, n in result.repaired.items():
        out.append(f"Mended {n} rows: {_REPAIRS.get(repair, repair)}.")
    return out + _unused(columns, result.mapping)


def _unused(columns: list[str], mapping: dict) -> list[str]:
    ignored = [str(c) for c in columns if c not in set(mapping.values())]
    return [f"Columns not used: {', '.join(ignored)}."] if ignored else []
