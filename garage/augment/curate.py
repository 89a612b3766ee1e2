"""Keep the good pairs: cheap checks first, then a rater model.

1. empty question or answer: dropped;
2. near-duplicates: word-shingle Jaccard similarity of the normalised question (and of
   question + answer) at or above ``dedup_threshold``; the first one is kept;
3. lexical support: too few of the answer's content words occur in its source chunk;
4. the rater (the same backend that wrote them): a 1-10 score like synthetic-data-kit's
   (accuracy 0-3, relevance 0-2, clarity 0-2, usefulness 0-3) and whether the chunk
   supports the answer; below ``threshold`` or unsupported: dropped.

Every dropped pair comes back with its ``reason``. Ratings can be remembered (``ratings``): curating the same
pairs again, say with another threshold, asks the rater only about pairs it has not seen.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import unicodedata
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, MutableMapping, Sequence

from garage import files
from garage.llm import Backend, ParseFailure, RequestRefused, ServiceError
from garage.augment.prompts import RATING_SCHEMA, SYSTEM_RATER, rating_prompt

_WORD = re.compile(r"\w+", re.UNICODE)
_STOP = frozenset("""a an the and or but if then else of to in on at by for with from into onto over under about
as is are was were be been being am do does did done have has had having it its this that these those there
here what which who whom whose when where why how not no yes can could would should will shall may might must
than so such very also just only any all each every some most more less few many much other another same own
he she they them their his her him we us our you your i me my mine""".split())


@dataclass
class CurateResult:
    kept: list[dict]
    dropped: list[dict]
    stats: dict = field(default_factory=dict)

    def summary(self) -> str:
        checks = Counter(d.get("check", "other") for d in self.dropped)
        why = ", ".join(f"{n} {CHECKS.get(c, c)}" for c, n in checks.most_common())
        text = f"kept {len(self.kept)} of {len(self.kept) + len(self.dropped)} pair(s)" + (f" (dropped: {why})"
                                                                                          if why else "")
        if self.stats.get("remembered"):
            text += f"; {self.stats['remembered']} rating(s) remembered from an earlier pass, not asked again"
        return text


class RememberedRatings(dict):
    """Ratings kept in a JSON-lines file (an augment job's ``ratings.jsonl``): read once, each new one appended."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        for record in files.read_jsonl(self.path):  # a line cut short by a crash is left out
            if isinstance(record.get("key"), str):
                super().__setitem__(record["key"], {"rating": record.get("rating"),
                                                    "supported": record.get("supported")})

    def __setitem__(self, key: str, verdict: dict) -> None:
        super().__setitem__(key, verdict)
        files.append_jsonl(self.path, {"key": key, **verdict})


# The ``check`` of a dropped pair, and how the summary names it.
CHECKS = {"empty": "empty", "duplicate": "near-duplicates", "lexical": "not supported by the text (word overlap)",
          "rating": "rated below the threshold", "unsupported": "unsupported according to the rater",
          "unrated": "could not be rated"}


def normalise(text: str) -> list[str]:
    """Lower-case words without accents or punctuation."""
    text = unicodedata.normalize("NFKD", text or "")
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return _WORD.findall(text.lower())


def shingles(text: str, n: int = 3) -> set:
    words = normalise(text)
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


class _DedupIndex:
    """Exact Jaccard against earlier items, looking only at items that share a shingle."""

    def __init__(self):
        self.sets: list[set] = []
        self.index: dict = defaultdict(list)

    def most_similar(self, s: set) -> tuple[int, float]:
        shared: Counter = Counter()
        for sh in s:
            for j in self.index.get(sh, ()):
                shared[j] += 1
        best, best_sim = -1, 0.0
        for j, k in shared.items():
            sim = k / (len(s) + len(self.sets[j]) - k)
            if sim > best_sim:
                best, best_sim = j, sim
        return best, best_sim

    def add(self, s: set) -> int:
        j = len(self.sets)
        self.sets.append(s)
        for sh in s:
            self.index[sh].append(j)
        return j


def _content_tokens(text: str) -> list[str]:
    tokens = []
    for word in normalise(text):
        if len(word) > 20 and not word.isascii():  # unspaced script (CJK...): character pairs
            tokens.extend(word[i:i + 2] for i in range(len(word) - 1))
        elif word.isdigit() or (len(word) >= 3 and word not in _STOP):
            tokens.append(word[:6])  # a crude stem: "regulates" ~ "regulation"
    return tokens


def lexical_support(answer: str, source: str) -> float | None:
    """Share of the answer's content words found in ``source``; ``None`` for answers too short to judge."""
    words = _content_tokens(answer)
    if len(words) < 3:
        return None
    have = set(_content_tokens(source))
    return sum(1 for w in words if w in have) / len(words)


def _chunk_lookup(chunks) -> Mapping[int, str]:
    if chunks is None:
        return {}
    if isinstance(chunks, Mapping):
        return {int(k): (v["text"] if isinstance(v, dict) else str(v)) for k, v in chunks.items()}
    out = {}
    for i, c in enumerate(chunks):
        if isinstance(c, dict):
            out[int(c.get("index", i))] = c.get("text", "")
        else:
            out[i] = str(c)
    return out


def _as_rating(value) -> float | None:
    try:
        rating = float(str(value).split("/")[0].strip())
    except (TypeError, ValueError):
        return None
    return max(1.0, min(10.0, rating))


def _as_bool(value) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "false", "no"):
        return value.strip().lower() in ("true", "yes")
    return None


def rating_key(pair: dict, source: str | None, instruction: str, backend: Backend) -> str:
    """What a rating depends on: the rater (kind, endpoint, model) and its prompt, the instruction, the source
    text and the pair itself."""
    rater = [type(backend).__name__, backend.endpoint, backend.model, SYSTEM_RATER,
             json.dumps(RATING_SCHEMA, sort_keys=True)]
    parts = rater + [instruction, source or "", str(pair.get("question") or "").strip(),
                     str(pair.get("answer") or "").strip(), str(pair.get("reasoning") or "")]
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()


def curate(pairs: Sequence[dict], backend: Backend | None = None, threshold: float = 7.0, *,
           chunks=None, dedup_threshold: float = 0.8, min_support: float = 0.2, batch_size: int = 5,
           concurrency: int = 8, instruction: str = "", ratings: MutableMapping[str, dict] | None = None,
           progress: Callable[[int, int, int, "float | None"], None] | None = None) -> CurateResult:
    """Split ``pairs`` into kept and dropped (each dropped pair gets a ``reason``).

    ``chunks``: the source texts, by chunk index (``AugmentResult.chunks``, a list of texts or a
    mapping); a pair may also carry its own ``context``. ``backend``: the rater; ``None`` runs the
    cheap checks only. ``ratings``: verdicts remembered from earlier calls, by ``rating_key``; pairs found there
    are not sent again, and new verdicts are added to it. ``progress(done_batches, total_batches, kept_so_far,
    eta_seconds)``.
    A rejected key or a spent quota raises ``GarageError``.
    """
    sources = _chunk_lookup(chunks)
    position = {id(p): i for i, p in enumerate(pairs)}
    kept: list[tuple[int, dict]] = []
    dropped: list[tuple[int, dict]] = []

    def drop(pair: dict, check: str, reason: str, **extra) -> None:
        dropped.append((position[id(pair)], {**pair, **extra, "check": check, "reason": reason}))

    def finish() -> CurateResult:
        return CurateResult([p for _, p in sorted(kept, key=lambda t: t[0])],
                            [p for _, p in sorted(dropped, key=lambda t: t[0])], stats)

    def source_of(pair: dict) -> str | None:
        if pair.get("context"):
            return str(pair["context"])
        return sources.get(pair.get("chunk")) if isinstance(pair.get("chunk"), int) else None

    q_index, qa_index = _DedupIndex(), _DedupIndex()
    first_of: list[int] = []  # position in ``pairs`` of each indexed item
    candidates: list[dict] = []
    for pos, pair in enumerate(pairs):
        question, answer = str(pair.get("question") or "").strip(), str(pair.get("answer") or "").strip()
        if not question or not answer:
            drop(pair, "empty", "empty question or answer")
            continue
        q_sh = shingles(question)
        qa_sh = shingles(f"{question} {answer}")
        j1, s1 = q_index.most_similar(q_sh)
        j2, s2 = qa_index.most_similar(qa_sh)
        if max(s1, s2) >= dedup_threshold and dedup_threshold > 0:
            j = j1 if s1 >= s2 else j2
            drop(pair, "duplicate", f"near-duplicate of pair #{first_of[j] + 1} (similarity {max(s1, s2):.2f})")
            continue
        q_index.add(q_sh)
        qa_index.add(qa_sh)
        first_of.append(pos)
        source = source_of(pair)
        if min_support > 0 and source:
            support = lexical_support(f"{pair.get('reasoning', '')} {answer}", source)
            if support is not None and support < min_support:
                drop(pair, "lexical", f"answer not supported by its text (only {support:.0%} of its words appear there)",
                     support=round(support, 3))
                continue
        candidates.append(pair)

    stats = {"input": len(pairs), "rated": 0, "rating_failures": 0, "requests": 0, "remembered": 0}
    if backend is None or not candidates:
        kept = [(position[id(p)], {**p, "rating": None, "reason": "passed the cheap checks (not rated)"})
                for p in candidates]
        return finish()

    def judge(pair: dict, verdict: dict | None) -> None:
        rating = verdict["rating"] if verdict else None
        if rating is None:
            stats["rating_failures"] += 1
            drop(pair, "unrated", "not rated: the rater skipped it")
            return
        stats["rated"] += 1
        if verdict["supported"] is False:
            drop(pair, "unsupported", "the rater found the answer unsupported by its text", rating=rating)
        elif rating < threshold:
            drop(pair, "rating", f"rated {rating:g}/10, below the threshold {threshold:g}", rating=rating)
        else:
            kept.append((position[id(pair)], {**pair, "rating": rating, "reason": f"rated {rating:g}/10"}))

    key_of = {id(p): rating_key(p, source_of(p), instruction, backend) for p in candidates}
    if ratings is not None:
        remembered = [p for p in candidates if key_of[id(p)] in ratings]
        for pair in remembered:
            judge(pair, ratings[key_of[id(pair)]])
        stats["remembered"] = len(remembered)
        candidates = [p for p in candidates if key_of[id(p)] not in ratings]
        if not candidates:
            return finish()

    # Rate in batches of pairs that share a source chunk (one copy of the text per request).
    groups: dict = defaultdict(list)
    for pair in candidates:
        groups[pair.get("chunk") if isinstance(pair.get("chunk"), int) else ("ctx", source_of(pair))].append(pair)
    batches = []
    for group in groups.values():
        for start in range(0, len(group), max(1, batch_size)):
            batches.append(group[start:start + batch_size])

    requests_before = backend.stats.requests

    def rate(batch: list[dict]) -> list[dict | None]:
        prompt = rating_prompt(batch, source_of(batch[0]), instruction)
        data = backend.generate_json(prompt, RATING_SCHEMA, system=SYSTEM_RATER, temperature=0.1)
        items = data.get("ratings") if isinstance(data, dict) else data
        if not isinstance(items, list):
            backend.count_parse_failure()
            raise ParseFailure("the reply has no list of ratings")
        out: list[dict | None] = [None] * len(batch)
        for pos, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            idx = item.get("index", pos)
            try:
                idx = int(idx)
            except (TypeError, ValueError):
                idx = pos
            if 0 <= idx < len(batch) and out[idx] is None:
                out[idx] = {"rating": _as_rating(item.get("rating", item.get("score"))),
                            "supported": _as_bool(item.get("supported"))}
        return out

    width = max(1, min(concurrency, len(batches)))
    started = time.monotonic()
    done = 0
    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="curate") as pool:
        futures = {pool.submit(rate, b): b for b in batches}
        try:
            for future in as_completed(futures):
                batch = futures[future]
                try:
                    verdicts = future.result()
                except (ParseFailure, ServiceError, RequestRefused) as exc:
                    stats["rating_failures"] += len(batch)
                    reason = ("not rated: the rater's reply could not be read" if isinstance(exc, ParseFailure)
                              else f"not rated: {exc}")
                    for pair in batch:
                        drop(pair, "unrated", reason)
                    verdicts = None
                if verdicts is not None:
                    for pair, verdict in zip(batch, verdicts):
                        judge(pair, verdict)
                        if ratings is not None and verdict and verdict["rating"] is not None:
                            ratings[key_of[id(pair)]] = verdict
                done += 1
                if progress:
                    elapsed = time.monotonic() - started
                    progress(done, len(batches), len(kept), round(elapsed / done * (len(batches) - done), 1))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    stats["requests"] = backend.stats.requests - requests_before
    return finish()
