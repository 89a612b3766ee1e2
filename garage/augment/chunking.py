"""Cut text into token-sized pieces on paragraph and sentence boundaries, and plan a job.

A chunk never splits a sentence unless that one sentence is longer than a whole
chunk. Neighbouring chunks share ``overlap`` tokens of whole sentences, so a fact
that straddles a boundary is seen whole at least once.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Sequence

from garage.augment.config import AugmentConfig
from garage.llm.prices import gemini_price

TokenCounter = Callable[[str], int]

_PARA = re.compile(r"\n\s*\n")
# A sentence ends with . ! ? (or CJK 。！？) and optional closing quotes/brackets, then space.
_SENT = re.compile(r"(?<=[.!?\u3002\uff01\uff1f])[\"'\u201d\u2019)\]]*\s+")


def estimate_tokens(text: str) -> int:
    """A cheap token estimate: about four characters per token (English-like text)."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT.split(text) if s and s.strip()]


def _split_long(sentence: str, size: int, count: TokenCounter) -> list[str]:
    """Cut a sentence longer than ``size`` tokens at word boundaries (or characters)."""
    words = sentence.split(" ")
    pieces, current = [], []
    for word in words:
        candidate = " ".join(current + [word])
        if current and count(candidate) > size:
            pieces.append(" ".join(current))
            current = [word]
        else:
            current.append(word)
    if current:
        pieces.append(" ".join(current))
    out = []
    for piece in pieces:  # a single "word" longer than a chunk (a URL, a table row...)
        while count(piece) > size and len(piece) > 1:
            cut = max(1, int(len(piece) * size / count(piece)))
            out.append(piece[:cut])
            piece = piece[cut:]
        if piece:
            out.append(piece)
    return out


def _units(text: str, size: int, count: TokenCounter) -> list[tuple[str, bool, int]]:
    """Sentences of the text as (text, ends_paragraph, tokens); a paragraph that fits stays one unit."""
    units = []
    for para in _PARA.split(text):
        para = para.strip()
        if not para:
            continue
        n = count(para)
        if n <= size:
            units.append((para, True, n))
            continue
        sentences = []
        for sentence in split_sentences(para):
            sentences.extend(_split_long(sentence, size, count) if count(sentence) > size else [sentence])
        for i, sentence in enumerate(sentences):
            units.append((sentence, i == len(sentences) - 1, count(sentence)))
    return units


def _join(units: Sequence[tuple[str, bool, int]]) -> str:
    parts = []
    for i, (text, ends_para, _) in enumerate(units):
        parts.append(text)
        if i < len(units) - 1:
            parts.append("\n\n" if ends_para else " ")
    return "".join(parts)


def _tail(units: Sequence[tuple[str, bool, int]], overlap: int, count: TokenCounter):
    """The last whole sentences of ``units`` that fit in ``overlap`` tokens."""
    if overlap <= 0 or not units:
        return []
    sentences = []
    for text, ends_para, n in units:
        parts = split_sentences(text) if n > overlap else [text]
        for j, part in enumerate(parts):
            sentences.append((part, ends_para and j == len(parts) - 1, count(part) if len(parts) > 1 else n))
    tail, used = [], 0
    for unit in reversed(sentences):
        if used + unit[2] > overlap:
            break
        tail.insert(0, unit)
        used += unit[2]
    return tail


def chunk_text(text: str, chunk_tokens: int = 1000, overlap: int = 100,
               count_tokens: TokenCounter | None = None) -> list[str]:
    """Split ``text`` into chunks of at most ``chunk_tokens`` tokens with ``overlap`` tokens shared."""
    count = count_tokens or estimate_tokens
    size = max(1, int(chunk_tokens))
    overlap = max(0, min(int(overlap), size - 1))
    chunks: list[str] = []
    current: list[tuple[str, bool, int]] = []
    used = 0
    fresh = False  # does ``current`` hold anything beyond the carried-over overlap?
    for unit in _units(text, size, count):
        if current and used + unit[2] > size:
            if fresh:
                chunks.append(_join(current))
            current = _tail(current, overlap, count)
            used = sum(u[2] for u in current)
            while current and used + unit[2] > size:
                used -= current.pop(0)[2]
        current.append(unit)
        used += unit[2]
        fresh = True
    if current and fresh:
        chunks.append(_join(current))
    return chunks


def chunk_documents(docs: Sequence[dict], chunk_tokens: int, overlap: int,
                    count_tokens: TokenCounter | None = None) -> list[dict]:
    """Chunk each document (as returned by ``extract_text``); chunks never span two documents."""
    count = count_tokens or estimate_tokens
    out = []
    for doc in docs:
        for piece in chunk_text(doc.get("text", ""), chunk_tokens, overlap, count):
            out.append({"index": len(out), "file": doc.get("name") or doc.get("file"), "text": piece,
                        "tokens": count(piece)})
    return out


def select_chunks(n_chunks: int, num_pairs: int, style: str = "qa") -> tuple[list[int], int]:
    """Which chunks to send, and how many pairs to ask of each.

    Every chunk is used when the target allows; for a small target on a long
    document, chunks are picked evenly across it instead of paying for all of them.
    """
    if n_chunks <= 0:
        return [], 0
    if style == "summary":
        k = min(n_chunks, num_pairs)
        per = 1
    else:
        k = min(n_chunks, num_pairs)
        per = math.ceil(num_pairs / k)
    if k == n_chunks:
        return list(range(n_chunks)), per
    picked = sorted({min(n_chunks - 1, int(i * n_chunks / k)) for i in range(k)})
    return picked, per


_OUT_TOKENS_PER_PAIR = {"qa": 90, "cot": 300, "summary": 150}
_PROMPT_OVERHEAD = 350      # instructions around each chunk, in tokens
_SECONDS_PER_CALL = 2.0     # connection, queueing and time to first token
_TOKENS_PER_SECOND = 150.0  # generation speed of a flash-class model


def plan(docs_or_chunks: Sequence[dict] | Sequence[str], config=None,
         count_tokens: TokenCounter | None = None, *, curate: bool = False) -> dict:
    """What a job will cost before it runs: chunks, LLM calls, and for Gemini time and money.

    ``docs_or_chunks`` is the output of ``extract_text`` (documents are chunked
    here) or of ``chunk_documents``. Returns a dict with ``chunks``, ``selected_chunks``,
    ``pairs_per_chunk``, ``llm_calls`` (generation), ``curate_calls`` (when ``curate``),
    ``input_tokens``, ``output_tokens``, ``est_seconds`` and ``est_cost_usd`` (Gemini only,
    else ``None``), plus ``summary``: one line for people.
    """
    cfg = config or AugmentConfig()
    count = count_tokens or estimate_tokens
    items = list(docs_or_chunks)
    if items and isinstance(items[0], str):
        chunks = [{"index": i, "text": t, "tokens": count(t)} for i, t in enumerate(items)]
    elif items and "index" in items[0]:
        chunks = items
    else:
        chunks = chunk_documents(items, cfg.chunk_tokens, cfg.chunk_overlap, count)
    selected, per = select_chunks(len(chunks), cfg.num_pairs, cfg.style)
    calls = len(selected)
    in_tokens = sum(chunks[i]["tokens"] + _PROMPT_OVERHEAD + count(cfg.instruction) for i in selected)
    out_per_call = per * _OUT_TOKENS_PER_PAIR.get(cfg.style, 100)
    out_tokens = calls * out_per_call
    curate_calls = 0
    if curate:
        curate_calls = sum(math.ceil(per / 5) for _ in selected)
        in_tokens += sum(chunks[i]["tokens"] + _PROMPT_OVERHEAD + per * 80 for i in selected)
        out_tokens += calls * per * 25
    est_seconds = est_cost = None
    if cfg.backend == "gemini":
        per_call = _SECONDS_PER_CALL + out_per_call / _TOKENS_PER_SECOND
        waves = math.ceil(calls / max(1, cfg.concurrency)) + math.ceil(curate_calls / max(1, cfg.concurrency))
        est_seconds = round(waves * per_call, 1)
        p_in, p_out = gemini_price(cfg.model)
        est_cost = round(in_tokens / 1e6 * p_in + out_tokens / 1e6 * p_out, 4)
    summary = f"{len(chunks)} chunk(s); {calls} request(s) asking {per} pair(s) each"
    text_tokens = sum(chunks[i]["tokens"] for i in selected)
    warnings = []
    if cfg.style != "summary" and calls and text_tokens < TOKENS_PER_PAIR_AT_LEAST * cfg.num_pairs:
        fits = max(1, text_tokens // TOKENS_PER_PAIR_TYPICAL)
        warnings.append(f"{cfg.num_pairs} pairs from about {text_tokens} tokens of text is more than it holds: expect "
                        f"repeated or invented pairs. About {fits} would suit it (num_pairs).")
    if curate_calls:
        summary += f"; {curate_calls} rating request(s)"
    if est_seconds is not None:
        summary += (f"; about {_human(est_seconds)} and ${est_cost:.2f} with {cfg.model} "
                    "(estimate: thinking tokens and retries add to it)")
    return {"chunks": len(chunks), "selected_chunks": calls, "pairs_per_chunk": per, "llm_calls": calls,
            "curate_calls": curate_calls, "input_tokens": in_tokens, "output_tokens": out_tokens,
            "est_seconds": est_seconds, "est_cost_usd": est_cost, "backend": cfg.backend, "model": cfg.model,
            "warnings": warnings, "summary": " ".join([summary, *(f"⚠️ {w}" for w in warnings)])}


# Text a question/answer pair needs: below the first the writer runs out of facts and repeats or invents;
# the second is what a request for "about right" is sized from.
TOKENS_PER_PAIR_AT_LEAST = 25
TOKENS_PER_PAIR_TYPICAL = 60


def _human(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
