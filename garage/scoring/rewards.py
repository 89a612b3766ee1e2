"""Rewards for GRPO: verifiable ones (the numeric answer, the answer format, the length) and the judge's.

Each reward is a function TRL's ``GRPOTrainer`` calls with the prompts, the sampled
completions and the dataset's columns (here ``reference``); it returns one float per
completion, or ``None`` where it does not apply (TRL then leaves it out of the mean).
Its name is the name of the curve TRL logs: ``rewards/<name>/mean``.

    correctness  1 when the final answer equals the reference's number, else 0
                 (the answer is read however it is written: the answer format, '#### N',
                 '\\boxed{N}', 'The answer is N', or the last number)
    format       1 when the completion reasons first and ends with the answer in the
                 user's template (e.g. '#### {answer}'); 0.5 when the template is there
                 but not at the end or with nothing before it; else 0
    length       0 up to 3/4 of max_completion_length tokens, falling to -1 at the limit
    judge        the LLM judge's 0-to-1 score against the rubric (``garage.scoring.judge``)

Light to import: math-verify is imported only when two answers are not plain numbers.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from garage.config import check_grpo_config
from garage.errors import GarageError

DEFAULT_ANSWER_FORMAT = "#### {answer}"
LENGTH_FREE_SHARE = 0.75  # the length penalty starts after this share of max_completion_length

# A number as people and models write it: -1,234.50  $12  $ 12  .5  ('1 234' is two numbers).
_NUM = r"[-−]?(?:\$\s?)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\d)|[-−]?(?:\$\s?)?\.\d+"
NUMBER = re.compile(_NUM)
_ANSWER_IS = re.compile(r"answer(?:\s+is)?\s*(?:[:=]|\bis\b)?\s*[*_$\\(\s]*(" + _NUM + ")", re.I)
_HASHES = re.compile(r"####\s*([^\n]*)")
# a number alone, in markup or quotes, with at most a short unit: '**42**', '(42)', '18 dollars', '5 km', '18%'
_ALONE = re.compile(r"[\s*_(\"'`\[€£¥]*(" + _NUM + r")\s*(?:[A-Za-z%°]{1,12}\.?)?[\s*_)\"'`\].!]*")
_TRAILING = re.compile(r"[\s.!*_`'\")\]}]+")  # what may follow a final answer


# --- numbers ---------------------------------------------------------------------

def normalize_number(text: str | None) -> str | None:
    """'1,234' -> '1234', '$5.50' -> '5.5', '-3.0' -> '-3'; None when ``text`` holds no number."""
    if text is None:
        return None
    match = NUMBER.search(str(text))
    if not match:
        return None
    raw = match.group(0).replace("−", "-").replace("$", "").replace(",", "").replace(" ", "")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_reference(answer: str | None) -> str | None:
    """The final answer a reference states (GSM8K's '#### 72', '\\boxed{72}', 'the answer is 72', or the number
    alone), else None. Unlike a model's answer, a reference sentence's last number is not taken for its answer:
    'built in 1887 and spans 214 metres' does not answer 'When was it built?' with 214."""
    if not answer:
        return None
    return _reference_cached(str(answer))


def rows_with_a_stated_number(rows: list[dict]) -> tuple[list[dict], int]:
    """The rows (``{"reference": ...}``) whose reference states a final number, and how many do not."""
    kept = [r for r in rows if extract_reference(r["reference"]) is not None]
    return kept, len(rows) - len(kept)


@functools.lru_cache(maxsize=65536)
def _reference_cached(answer: str) -> str | None:
    hashes = _HASHES.findall(answer)
    if hashes:
        value = normalize_number(hashes[-1])
        if value is not None:
            return value
    return stated_answer(answer)


# --- the user's answer template ----------------------------------------------------------

@functools.lru_cache(maxsize=64)
def answer_pattern(answer_format: str) -> re.Pattern:
    """A regex for a template such as '#### {answer}' or '<answer>{answer}</answer>' (group 1: the answer)."""
    if answer_format.count("{answer}") != 1:
        raise GarageError(f"answer_format must contain {{answer}} exactly once; got {answer_format!r}.")
    before, after = answer_format.split("{answer}")

    def flexible(part: str) -> str:  # any run of spaces in the template matches any run of whitespace
        return r"\s*".join(re.escape(piece) for piece in re.split(r"\s+", part.strip()))

    prefix, suffix = flexible(before), flexible(after)
    if suffix:
        return re.compile(prefix + r"\s*(.+?)\s*" + suffix, re.S)
    return re.compile(prefix + r"[ \t]*([^\n]+)")


@dataclass
class Parsed:
    value: str | None       # the answer in the template (a normalised number where it is one), or None
    formatted: bool         # the template is present with an answer in it
    at_end: bool            # nothing but whitespace / punctuation follows it
    reasoned: bool          # there is text before it
    lenient: str | None     # the final answer however it is written


def parse_answer(text: str, answer_format: str | None = DEFAULT_ANSWER_FORMAT) -> Parsed:
    """Read ``text`` both strictly (the template) and leniently (any usual way of giving an answer)."""
    text = text or ""
    value, formatted, at_end, reasoned = None, False, False, False
    if answer_format:
        matches = list(answer_pattern(answer_format).finditer(text))
        if matches:
            last = matches[-1]
            inner = last.group(1).strip()
            if inner:
                formatted = True
                value = normalize_number(inner) or _strip_math(inner)
                at_end = not _TRAILING.sub("", text[last.end():])
                number = NUMBER.search(inner)
                if at_end and number and "{answer}" == answer_format.strip()[-len("{answer}"):]:
                    at_end = not _TRAILING.sub("", inner[number.end():])  # '#### 7 because' is not the end
                reasoned = bool(text[:last.start()].strip())
    return Parsed(value, formatted, at_end, reasoned, value if value is not None else lenient_answer(text))


def lenient_answer(text: str) -> str | None:
    """The final answer however it is written: '#### N', '\\boxed{N}', 'the answer is N', else the last number."""
    if not text:
        return None
    stated = stated_answer(text)
    if stated is not None:
        return stated
    numbers = NUMBER.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def stated_answer(text: str) -> str | None:
    """A final answer the text states: '#### N', '\\boxed{N}', 'the answer is N', or a number alone (in markup or
    quotes, with at most a short unit)."""
    hashes = _HASHES.findall(text)
    for candidate in reversed(hashes):
        value = normalize_number(candidate)
        if value is not None:
            return value
    boxed = _last_boxed(text)
    if boxed is not None:
        return normalize_number(boxed) if NUMBER.fullmatch(boxed.strip()) else _strip_math(boxed)
    said = _ANSWER_IS.findall(text)
    if said:
        return normalize_number(said[-1])
    alone = _ALONE.fullmatch(text)
    return normalize_number(alone.group(1)) if alone else None


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    begin = i
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[begin:i - 1].strip() if depth == 0 else None


def _strip_math(text: str) -> str:
    return text.strip().strip("$").strip().rstrip(".").strip()


def answers_match(predicted: str | None, reference: str | None) -> bool:
    """Equal as numbers, or (for fractions, LaTeX, expressions) equal as math-verify sees them."""
    if predicted is None or reference is None:
        return False
    a, b = normalize_number(predicted), normalize_number(reference)
    if a is not None and b is not None and NUMBER.fullmatch(str(predicted).strip()) \
            and NUMBER.fullmatch(str(reference).strip()):
        return Decimal(a) == Decimal(b)
    if str(predicted).strip() == str(reference).strip():
        return True
    return _math_verify(str(predicted), str(reference))


def _math_verify(predicted: str, reference: str) -> bool:
    if len(predicted) > 200 or len(reference) > 200:
        return False
    try:
        from math_verify import parse, verify
    except ImportError:
        return False
    # math-verify's time-outs use signal.alarm, which only works in the main thread; training and the
    # app call this from worker threads, where it must run without one (inputs are short, see above).
    limit = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold = parse(_as_latex(reference), parsing_timeout=limit)
        guess = parse(_as_latex(predicted), parsing_timeout=limit)
        return bool(gold and guess and verify(gold, guess, timeout_seconds=limit))
    except Exception:  # noqa: BLE001 - an unparsable answer is simply not a match
        return False


def _as_latex(text: str) -> str:
    return text if "$" in text else f"${text}$"


# --- reward functions for TRL -----------------------------------------------------------

def completion_text(completion) -> str:
    """The text of one completion (a string, or a conversational list of messages)."""
    if isinstance(completion, str):
        return completion
    parts = []
    for message in completion or []:
        content = message.get("content", "") if isinstance(message, dict) else message
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(str(content))
    return "".join(parts)


def prompt_text(prompt) -> str:
    """The last user turn of a prompt (what the judge is shown as the question)."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content", "") for m in prompt or [] if isinstance(m, dict) and m.get("role") == "user"]
    return str(users[-1]) if users else completion_text(prompt)


def _named(name: str, func):
    func.__name__ = name
    func.__qualname__ = name
    return func


def correctness_reward(answer_format: str | None = DEFAULT_ANSWER_FORMAT):
    def reward(prompts, completions, reference=None, **kwargs):
        references = reference if reference is not None else [None] * len(completions)
        out = []
        for completion, ref in zip(completions, references):
            gold = extract_reference(ref)
            if gold is None:
                out.append(None)  # no reference number: this reward does not apply
                continue
            out.append(1.0 if answers_match(parse_answer(completion_text(completion), answer_format).lenient, gold)
                       else 0.0)
        return out

    return _named("correctness", reward)


def format_score(text: str, answer_format: str) -> float:
    parsed = parse_answer(text, answer_format)
    if not parsed.formatted:
        return 0.0
    return 1.0 if parsed.at_end and parsed.reasoned else 0.5


def format_reward(answer_format: str = DEFAULT_ANSWER_FORMAT):
    def reward(prompts, completions, **kwargs):
        return [format_score(completion_text(c), answer_format) for c in completions]

    return _named("format", reward)


def length_score(n_tokens: int, max_completion_length: int) -> float:
    free = int(max_completion_length * LENGTH_FREE_SHARE)
    span = max(1, max_completion_length - free)
    return -min(1.0, max(0.0, (n_tokens - free) / span))


def length_reward(max_completion_length: int):
    def reward(prompts, completions, completion_ids=None, **kwargs):
        if completion_ids is None:  # no token ids: about 4 characters a token
            lengths = [len(completion_text(c)) // 4 for c in completions]
        else:
            lengths = [len(ids) for ids in completion_ids]
        return [length_score(n, max_completion_length) for n in lengths]

    return _named("length", reward)


def judge_reward(judge):
    def reward(prompts, completions, reference=None, log_metric=None, **kwargs):
        references = reference if reference is not None else [None] * len(completions)
        before = judge.stats.snapshot()
        scores = judge.score([prompt_text(p) for p in prompts], [completion_text(c) for c in completions],
                             list(references))
        if log_metric is not None:
            after = judge.stats.snapshot()
            log_metric("judge/requests", float(after["requests"] - before["requests"]))
            log_metric("judge/cache_hits", float(after["cache_hits"] - before["cache_hits"]))
            log_metric("judge/failed_groups", float(after["failed_groups"] - before["failed_groups"]))
        return scores

    return _named("judge", reward)


def reward_functions(cfg, judge=None) -> tuple[list, list[float]]:
    """The reward functions and weights a GRPO config asks for, in its order."""
    check_grpo_config(cfg)
    funcs = []
    for name in cfg.rewards:
        if name == "correctness":
            funcs.append(correctness_reward(cfg.answer_format or None))
        elif name == "format":
            funcs.append(format_reward(cfg.answer_format))
        elif name == "length":
            funcs.append(length_reward(cfg.max_completion_length))
        elif name == "judge":
            if judge is None:
                raise GarageError("The judge reward needs a judge (rubric and judge backend).")
            funcs.append(judge_reward(judge))
    weights = [float(w) for w in cfg.reward_weights] if cfg.reward_weights else [1.0] * len(funcs)
    return funcs, weights
