"""An LLM judge that scores completions from 0 to 1 against a rubric the user writes.

* One request per prompt group: all the completions sampled for one prompt are scored
  together (they are compared against the same rubric, and it is G times fewer calls).
* Cached: the same rubric + prompt + reference + completion is never sent twice (in memory,
  and in the run folder's ``judge_cache.jsonl`` so a resumed run does not pay again).
* Retried: HTTP failures (429, 5xx, time-outs) are retried by the backend with back-off;
  a reply that is not the JSON asked for is asked again.
* A clear failure mode once retries are spent: ``on_failure="fail"`` ends the run with the
  reason; ``on_failure="zero"`` scores that group 0, logs a warning and goes on.

The wire is the app's LLM clients' (``garage.llm``): Gemini through
``google-genai`` with a JSON response schema, or any OpenAI-compatible endpoint through
``openai``. Keys come from the environment (GEMINI_API_KEY, OPENAI_API_KEY) or the
caller, and are never written anywhere.
"""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from garage import files
from garage.counters import Counters
from garage.errors import GarageError
from garage.llm import BackendError, ParseFailure, make_client as make_llm_client
from garage.llm.keys import check_server_key_use

JUDGE_BACKENDS = ("gemini", "openai")
JUDGE_INSTEAD = "Use the verifiable rewards (correctness, format, length) instead of the judge"
FAILURE_MODES = ("fail", "zero")
DEFAULT_JUDGE_MODEL = "gemini-2.5-flash"

SYSTEM = ("You are a strict and consistent grader. You score answers against a rubric, each on its own merits, "
          "and reply with JSON only.")

SCHEMA = {
    "type": "object",
    "properties": {
        "scores": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"index": {"type": "integer"}, "score": {"type": "number"}},
                "required": ["index", "score"],
            },
        },
    },
    "required": ["scores"],
}


class JudgeError(GarageError):
    """The judge could not score a group after every retry (and the run was told to fail)."""


class BadReply(Exception):
    """The judge replied, but not with one score per answer."""


def judge_prompt(rubric: str, question: str, answers: list[str], reference: str | None = None) -> str:
    """The request for one group: the rubric, the question, the reference if any, the numbered answers."""
    items = json.dumps([{"index": i, "answer": a} for i, a in enumerate(answers)], ensure_ascii=False, indent=1)
    parts = [
        "Score each answer below from 0.0 (fails the rubric) to 1.0 (fully meets it). Partial credit is allowed.",
        f"<rubric>\n{rubric.strip()}\n</rubric>",
        f"<question>\n{question.strip()}\n</question>",
    ]
    if reference:
        parts.append(f"<reference_answer>\n{reference.strip()}\n</reference_answer>")
    parts.append(f"<answers>\n{items}\n</answers>")
    parts.append(f'Reply with JSON: {{"scores": [{{"index": 0, "score": 0.0}}, ...]}} with exactly one entry for '
                 f"each of the {len(answers)} answers (index 0 to {len(answers) - 1}).")
    return "\n\n".join(parts)


def parse_scores(reply, n: int) -> list[float]:
    """Scores in answer order, clamped to [0, 1]; ``BadReply`` unless every index has a number."""
    items = reply.get("scores") if isinstance(reply, dict) else reply
    if not isinstance(items, list):
        raise BadReply("no 'scores' list in the reply")
    found: dict[int, float] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        try:
            index, score = int(item["index"]), float(item["score"])
        except (KeyError, TypeError, ValueError):
            continue
        if 0 <= index < n and score == score:  # not NaN
            found[index] = min(1.0, max(0.0, score))
    if len(found) < n:
        raise BadReply(f"scores for {len(found)} of {n} answers")
    return [found[i] for i in range(n)]


@dataclass
class JudgeStats(Counters):
    requests: int = 0        # requests sent (backend retries not counted)
    cache_hits: int = 0      # completions scored from the cache
    scored: int = 0          # completions scored by a request
    failed_groups: int = 0   # groups scored 0 after every retry (on_failure="zero")
    bad_replies: int = 0     # replies that were not one score per answer (asked again)



def check_judge_key(cfg, owner: str, instead: str = JUDGE_INSTEAD) -> None:
    """Refuse a judge that would spend a server key ``owner`` may not use (garage.llm.keys), saying ``instead``."""
    check_server_key_use(owner, cfg.judge_backend, cfg.judge_base_url, purpose="The LLM judge", instead=instead)


def make_client(backend: str, model: str, *, base_url: str = "", api_key: str | None = None,
                max_retries: int = 3, timeout: float = 60.0, retry_base: float = 1.0):
    """The judge's JSON-speaking client (``generate_json(prompt, schema, system=..., temperature=...)``): a remote
    one (a local model would compete with training for the GPU)."""
    if backend not in JUDGE_BACKENDS:
        raise GarageError(f"Unknown judge_backend {backend!r}; choose {' or '.join(JUDGE_BACKENDS)}.")
    return make_llm_client(backend, model, base_url=base_url, api_key=api_key, max_retries=max_retries,
                           timeout=timeout, retry_base=retry_base, max_retry_wait=60.0, max_output_tokens=4096)


class Judge:
    """Scores completions against ``rubric``; thread-safe; see the module docstring."""

    def __init__(self, rubric: str, *, backend: str = "gemini", model: str = DEFAULT_JUDGE_MODEL,
                 base_url: str = "", api_key: str | None = None, on_failure: str = "fail", max_retries: int = 3,
                 reply_retries: int = 2, timeout: float = 60.0, retry_base: float = 1.0, concurrency: int = 4,
                 cache_path: str | Path | None = None, log=print, client=None):
        if not rubric or not rubric.strip():
            raise GarageError("The judge needs a rubric: say what a good answer does.")
        if on_failure not in FAILURE_MODES:
            raise GarageError(f"judge_on_failure must be fail or zero; got {on_failure!r}.")
        self.rubric = rubric.strip()
        self.backend, self.model, self.on_failure = backend, model, on_failure
        self.reply_retries = max(0, int(reply_retries))
        self.concurrency = max(1, int(concurrency))
        self.log = log
        self.stats = JudgeStats()
        self._cache: dict[str, float] = {}
        self._lock = threading.Lock()
        self._cache_path = Path(cache_path) if cache_path else None
        self._load_cache()
        self._client = client or make_client(backend, model, base_url=base_url, api_key=api_key,
                                             max_retries=max_retries, timeout=timeout, retry_base=retry_base)

    @classmethod
    def from_config(cls, cfg, *, owner: str, instead: str = JUDGE_INSTEAD, **kwargs) -> "Judge":
        """The judge a TrainConfig describes (rubric, judge_backend, judge_model, judge_base_url, judge_on_failure),
        for ``owner``'s run: on a shared Space only where they may spend the server's key (garage.llm.keys);
        ``instead``: what to suggest when they may not."""
        check_judge_key(cfg, owner, instead)
        return cls(cfg.rubric, backend=cfg.judge_backend, model=cfg.judge_model or DEFAULT_JUDGE_MODEL,
                   base_url=cfg.judge_base_url, on_failure=cfg.judge_on_failure, **kwargs)

    def __repr__(self) -> str:
        return f"<Judge {self.backend} {self.model!r} on_failure={self.on_failure}>"

    # --- cache -----------------------------------------------------------
    def key(self, question: str, completion: str, reference: str | None = None) -> str:
        digest = hashlib.sha256()
        for part in (self.backend, self.model, self.rubric, question, reference or "", completion):
            digest.update(part.encode("utf-8", "replace"))
            digest.update(b"\x00")
        return digest.hexdigest()

    def _load_cache(self) -> None:
        if not self._cache_path or not self._cache_path.is_file():
            return
        for item in files.read_jsonl(self._cache_path, repair=True):  # a line cut short by a crash is left out
            try:
                self._cache[str(item["key"])] = float(item["score"])
            except (ValueError, KeyError, TypeError):
                continue

    def _remember(self, scores: dict[str, float]) -> None:
        with self._lock:
            self._cache.update(scores)
            if self._cache_path:
                for key, score in scores.items():
                    files.append_jsonl(self._cache_path, {"key": key, "score": score})

    # --- scoring ---------------------------------------------------------
    def score(self, questions: list[str], completions: list[str], references: list | None = None) -> list[float]:
        """One score per completion; completions sharing a question (and reference) go in one request."""
        references = list(references) if references is not None else [None] * len(completions)
        groups: dict[tuple, list[int]] = {}
        for i, (question, reference) in enumerate(zip(questions, references)):
            groups.setdefault((question, reference or None), []).append(i)
        scores: list[float] = [0.0] * len(completions)

        def one(item):
            (question, reference), indices = item
            return indices, self.score_group(question, [completions[i] for i in indices], reference)

        items = list(groups.items())
        if len(items) == 1 or self.concurrency == 1:
            results = [one(item) for item in items]
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items)),
                                    thread_name_prefix="judge") as pool:
                results = list(pool.map(one, items))
        for indices, group_scores in results:
            for i, s in zip(indices, group_scores):
                scores[i] = s
        return scores

    def score_group(self, question: str, completions: list[str], reference: str | None = None) -> list[float]:
        """Scores for the completions of one prompt, in one request (none when all are cached)."""
        keys = [self.key(question, c, reference) for c in completions]
        with self._lock:
            known = {k: self._cache[k] for k in keys if k in self._cache}
        todo: list[str] = []
        todo_keys: list[str] = []
        for key, completion in zip(keys, completions):
            if key not in known and key not in todo_keys:
                todo.append(completion)
                todo_keys.append(key)
        self.stats.add(cache_hits=sum(1 for k in keys if k in known))
        if todo:
            fresh = self._request(question, todo, reference)
            if fresh is None:  # failed, on_failure="zero"
                return [known.get(k, 0.0) for k in keys]
            new = dict(zip(todo_keys, fresh))
            self._remember(new)
            known.update(new)
        return [known[k] for k in keys]

    def _request(self, question: str, answers: list[str], reference: str | None) -> list[float] | None:
        prompt = judge_prompt(self.rubric, question, answers, reference)
        reason = ""
        for _attempt in range(self.reply_retries + 1):
            self.stats.add(requests=1)
            try:
                reply = self._client.generate_json(prompt, SCHEMA, system=SYSTEM, temperature=0.0)
                scores = parse_scores(reply, len(answers))
            except (ParseFailure, BadReply) as exc:
                self.stats.add(bad_replies=1)
                reason = f"the reply was not one score per answer ({exc})"
                continue
            except BackendError as exc:  # already retried by the backend (429, 5xx, time-outs)
                reason = str(exc)
                break
            except Exception as exc:  # noqa: BLE001 - anything else the client raises: same failure path
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                break
            self.stats.add(scored=len(answers))
            return scores
        return self._failed(reason)

    def _failed(self, reason: str) -> None:
        scrub = getattr(self._client, "scrub", None)
        reason = scrub(reason) if callable(scrub) else reason  # never a key in a message
        what = f"The judge ({self.backend} {self.model}) could not score a group of answers: {reason}"
        if self.on_failure == "fail":
            raise JudgeError(what.rstrip(".") + ". Fix the judge settings, or set judge_on_failure to zero to "
                             "score such groups 0 and keep training.")
        self.stats.add(failed_groups=1)
        self.log(f"WARNING: {what.rstrip('.')}. Scored 0 (judge_on_failure = zero).")
        return None

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001
            pass
