"""Evaluation before and after: the base model against the tuned one on held-out prompts.

A model that answers right but not in the required form is not a model that cannot
do the task: Google reports 62.8% on GSM8K for Gemma 3 1B-it, so a baseline of a few
percent measures formatting, not ability. The report therefore tells apart, per model:

    accuracy                 right answer in the required format (what a strict grader counts)
    format_failure_rate      no answer in the required format at all
    wrong_answer_rate        well formatted, wrong number          (these three add up to 1)
    accuracy_when_formatted  right among the well-formatted answers
    lenient_accuracy         right however the answer was written ('The answer is 42', \\boxed{42}, ...)

Prompts with numeric references are scored by their number (``scorer="answer"``);
others by the LLM judge against the run's rubric (``scorer="judge"``, a score >= 0.5 counts
as right). Generation is greedy through the app's ``Engine`` (one base copy; the run's
adapter switched on for the tuned side).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter

from garage import files
from garage.data import benchmarks, gsm8k
from garage.data.rows import dataset_rows, prompt_rows, split_rows, training_conversations
from garage.errors import GarageError
from garage.infer.engine import GenSettings, get_engine
from garage.scoring.judge import Judge
from garage.scoring.rewards import (answers_match, extract_reference, parse_answer, prompt_text,
                                    rows_with_a_stated_number)

SCORERS = ("auto", "answer", "judge", "overlap")


def evaluate(run_or_model, dataset: str | None = None, n: int = 100, *, owner: str | None = None,
             answer_format: str | None = None, system_prompt: str | None = None, scorer: str = "auto",
             judge=None, max_new_tokens: int = 512, batch_size: int = 8, examples: int = 5, engine=None,
             store=None, save: bool = True, log=None) -> dict:
    """Score the base model and (for a run) the tuned model on ``n`` held-out prompts of ``dataset``.

    run_or_model: a run (``Run`` or run id): its base and its tuned weights; or a model name:
        that model alone.
    dataset: a built-in benchmark (``gsm8k``, ``gsm8k-full``, ``aime24``: ``garage.data.benchmarks``), a saved
        dataset name or a file path, or ``None``/``""`` for the run's own held-out rows (its ``eval_dataset``, else
        the ``eval_fraction`` split). Without a run, ``None`` means gsm8k.
    answer_format / system_prompt: default to the run's (the benchmark's for a benchmark without either).
    Returns the report (see the module docstring); for a run it is also saved as
    ``<run>/evaluation.json``. ``engine`` defaults to the app's shared Engine; ``store``: where a run id is looked
    up (without one, a name is a model's).
    """
    say = log or (lambda message: None)
    started = time.time()
    if scorer not in SCORERS:
        raise GarageError(f"scorer must be one of {', '.join(SCORERS)}; got {scorer!r}.")
    run, base = resolve_target(run_or_model, store)
    cfg = run.config() if run is not None else None
    owner = owner or (run.status().get("owner") if run is not None else None) or "local"
    if dataset is None or not str(dataset).strip():
        dataset = (cfg.eval_dataset if cfg is not None else gsm8k.EVAL_NAME) or ""
    dataset = str(dataset).strip()
    answer_format, system_prompt = prompt_settings(dataset, cfg, answer_format, system_prompt)
    rows, label = held_out_rows(dataset, cfg, owner, system_prompt)
    rows = rows[:max(0, int(n))]
    if not rows:
        raise GarageError(f"No prompts to evaluate in {label} (n = {n}).")
    scorer = choose_scorer(scorer, rows, cfg, judge)
    if scorer == "answer":
        rows, left_out = rows_with_a_stated_number(rows)
        if left_out:
            label += f"; {left_out} row(s) that state no final number left out"
    if scorer == "judge" and judge is None:
        judge = Judge.from_config(cfg, owner=owner, log=say, instead="Evaluate on a set with numeric answers "
                                  "(gsm8k, or your own with a reference number) instead of by the judge")

    engine = engine or get_engine()
    settings = GenSettings(greedy=True, max_new_tokens=int(max_new_tokens))
    sides = [("base", None)]
    tuned_note = None
    if run is not None:
        if run.output_dir() is not None:
            sides.append(("tuned", run))
        else:
            tuned_note = f"Run {run.id} has no trained weights yet: only the base model was evaluated."
    report = {"run": run.id if run is not None else None, "base_model": base, "dataset": label, "n": len(rows),
              "scorer": scorer, "answer_format": answer_format, "system_prompt": system_prompt,
              "max_new_tokens": int(max_new_tokens), "greedy": True, "base": None, "tuned": None, "delta": None}
    per_side = {}
    for side, target in sides:
        say(f"Evaluating {side} ({base}) on {len(rows)} prompts of {label}.")
        texts, items, report[side] = score_side(engine, base, target, rows, settings, answer_format, scorer, judge,
                                                batch_size)
        per_side[side] = (texts, items)
    if report["tuned"]:
        report["delta"] = {key: _minus(report["tuned"].get(key), report["base"].get(key))
                           for key in ("accuracy", "format_failure_rate", "wrong_answer_rate",
                                       "accuracy_when_formatted", "lenient_accuracy", "mean_score")
                           if key in report["base"]}
    report["examples"] = _examples(rows, per_side, examples)
    report["summary"] = describe(report)
    if tuned_note:
        report["note"] = tuned_note
    report["seconds"] = round(time.time() - started, 1)
    report["path"] = str(run.path / "evaluation.json") if run is not None and save else None
    if report["path"]:
        files.write_atomic(run.path / "evaluation.json", json.dumps(report, indent=1, default=str))
        run.update(evaluation={side: {k: report[side][k] for k in ("accuracy", "format_failure_rate",
                                                                    "accuracy_when_formatted")}
                               for side in ("base", "tuned") if report[side]})
    return report


# --- what to evaluate ----------------------------------------------------------------

def resolve_target(run_or_model, store=None):
    """(run or None, base model name) for a run (anything with ``config()``), a run id of ``store`` (the caller's
    run store: evaluation sits below the jobs that keep runs), or a model name."""
    if not isinstance(run_or_model, str) and hasattr(run_or_model, "config"):
        return run_or_model, run_or_model.config().model
    name = str(run_or_model or "").strip()
    if not name:
        raise GarageError("Name a run or a model to evaluate.")
    try:
        run = store.get(name) if store is not None else None
    except GarageError:
        run = None
    return (run, run.config().model) if run is not None else (None, name)


def prompt_settings(dataset: str, cfg, answer_format: str | None, system_prompt: str | None) -> tuple[str, str]:
    """(answer format, system prompt) for evaluating on ``dataset``: those given, else the run's or a built-in
    benchmark's own (AIME's boxed answers are not GSM8K's '#### N')."""
    bench = benchmarks.get(dataset)
    # a pair, never one of each: a GRPO run that trained under a prompt of its own keeps it and its format; any
    # other run on a benchmark takes the benchmark's prompt and the format that prompt asks for
    own = cfg is not None and (bench is None or (cfg.method == "grpo" and bool(cfg.system_prompt.strip())))
    if answer_format is None:
        answer_format = cfg.answer_format if own else bench.answer_format if bench is not None else ""
    if system_prompt is None:
        system_prompt = cfg.system_prompt if own else bench.system_prompt if bench is not None else ""
    return answer_format, system_prompt


def held_out_rows(dataset: str, cfg, owner: str, system_prompt: str) -> tuple[list[dict], str]:
    """Prompt rows to evaluate on, and a label saying where they come from."""
    bench = benchmarks.get(dataset)
    if bench is not None:
        rows = bench.conversations()
        return prompt_rows(rows, system_prompt), bench.label(len(rows))
    if not dataset:
        if cfg is None:
            raise GarageError(f"Name a dataset to evaluate a model on ({', '.join(benchmarks.NAMES)}, or a saved "
                              "dataset).")
        _, held = split_rows(training_conversations(cfg, owner), cfg.eval_fraction, cfg.seed)
        if not held:
            raise GarageError(f"This run holds no rows out (eval_fraction is {cfg.eval_fraction}): name a held-out "
                              f"set (eval_dataset: {', '.join(benchmarks.NAMES)}, or a saved dataset), or set "
                              "eval_fraction above 0.")
        return prompt_rows(held, system_prompt), f"held-out rows of {cfg.dataset} ({len(held)})"
    rows = [r for r in dataset_rows(owner, dataset) if isinstance(r, dict) and r.get("messages")]
    return prompt_rows(rows, system_prompt), f"{dataset} ({len(rows)} rows)"


def choose_scorer(scorer: str, rows: list[dict], cfg, judge, *, free_text: bool = False) -> str:
    """"answer" where references state final numbers (all of them, or some and there is no judge), else "judge";
    with ``free_text``, "overlap" (word agreement with the reference) where there is neither."""
    stated = len(rows_with_a_stated_number(rows)[0])
    can_judge = judge is not None or (cfg is not None and bool(cfg.rubric.strip()))
    if scorer == "auto":
        if stated == len(rows) or (stated and not can_judge):
            return "answer"
        if can_judge:
            return "judge"
        if free_text and any(r["reference"] for r in rows):
            return "overlap"
        raise GarageError("No reference answer here states a final number ('#### 42', 'The answer is 42', 42 alone), "
                          "so none can be checked by its number, and this run has no rubric for an LLM judge (the "
                          "rubric field of the Train form's GRPO group). Evaluate on a set with numeric answers such "
                          "as gsm8k, or compare free-text answers with their references in the Compare tab's eval "
                          "examples (/eval_examples).")
    if scorer == "answer" and not stated:
        raise GarageError(f"None of the {len(rows)} rows states a final number to check answers against.")
    if scorer == "judge" and not can_judge:
        raise GarageError("Scoring by the judge needs a rubric (the run's rubric, or a judge passed in).")
    if scorer == "overlap" and not any(r["reference"] for r in rows):
        raise GarageError(f"None of the {len(rows)} rows has a reference answer to compare answers with.")
    return scorer


# --- generating and scoring ----------------------------------------------------------

def score_side(engine, base: str, run, rows: list[dict], settings, answer_format: str, scorer: str, judge=None,
               batch_size: int = 8) -> tuple[list[str], list[dict], dict]:
    """One model's answers to ``rows`` (the run's tuned model, or the base one for None), scored and summed up
    (the summary with ``seconds``: the time generating took)."""
    started = time.perf_counter()
    texts = generate_all(engine, base, run, [r["prompt"] for r in rows], settings, batch_size)
    seconds = round(time.perf_counter() - started, 2)
    items = score_texts(texts, rows, answer_format, scorer, judge)
    return texts, items, {**summarize(items, scorer), "seconds": seconds}


def answers_on_engine(base: str, run, conversations: list[list[dict]], max_new_tokens: int,
                      batch_size: int = 8) -> list[str]:
    """Greedy answers from the app's Engine (module level: on ZeroGPU it crosses to the GPU worker pickled)."""
    return generate_all(get_engine(), base, run, conversations, GenSettings(greedy=True, max_new_tokens=max_new_tokens),
                        batch_size)


def generation_seconds(rows: int, max_new_tokens: int) -> int:
    """GPU seconds to ask ZeroGPU for answering ``rows``: loading, then batches of 8 at ~20 tokens a second."""
    return int(60 + max_new_tokens / 20 * -(-rows // 8))


def generate_all(engine, base: str, run, conversations: list[list[dict]], settings, batch_size: int = 8) -> list[str]:
    """Greedy answers to every conversation, ``batch_size`` rows per generate() call on the Engine's one copy."""
    return [answer.text for answer in engine.generate_batch(base, conversations, settings, run, batch_size)]


def score_texts(texts: list[str], rows: list[dict], answer_format: str, scorer: str = "answer",
                judge=None) -> list[dict]:
    """Per answer: what was read out of it, whether it was in the format, whether it was right."""
    scores = None
    if scorer == "judge":
        scores = judge.score([prompt_text(r["prompt"]) for r in rows], texts, [r["reference"] for r in rows])
    items = []
    for i, (text, row) in enumerate(zip(texts, rows)):
        parsed = parse_answer(text, answer_format or None)
        formatted = parsed.formatted if answer_format else parsed.lenient is not None
        value = parsed.value if answer_format else parsed.lenient
        item = {"text": text, "answer": value, "lenient_answer": parsed.lenient, "formatted": formatted}
        if scorer == "overlap":
            item["formatted"] = True  # free text has no required form
            item["score"] = word_overlap(text, row["reference"] or "")
            item["correct"] = item["score"] >= 0.5
        elif scores is None:
            gold = extract_reference(row["reference"])
            item["reference"] = gold
            item["correct"] = bool(formatted and answers_match(value, gold))
            item["correct_lenient"] = answers_match(parsed.lenient, gold)
        else:
            item["score"] = scores[i]
            item["correct"] = scores[i] >= 0.5
        items.append(item)
    return items


def word_overlap(answer: str, reference: str) -> float:
    """How far an answer agrees with a free-text reference: the F1 of their words (SQuAD's measure), 0 to 1."""
    said, wanted = _words(answer), _words(reference)
    common = sum((Counter(said) & Counter(wanted)).values())
    if not common:
        return 0.0
    precision, recall = common / len(said), common / len(wanted)
    return round(2 * precision * recall / (precision + recall), 4)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", str(text or "").lower())


def summarize(items: list[dict], scorer: str = "answer") -> dict:
    n = len(items)
    formatted = sum(1 for i in items if i["formatted"])
    correct = sum(1 for i in items if i["correct"])
    correct_formatted = sum(1 for i in items if i["correct"] and i["formatted"])
    out = {
        "n": n,
        "correct": correct,
        "accuracy": _ratio(correct, n),
        "format_failures": n - formatted,
        "format_failure_rate": _ratio(n - formatted, n),
        "accuracy_when_formatted": _ratio(correct_formatted, formatted) if formatted else None,
    }
    if scorer in ("judge", "overlap"):
        out["mean_score"] = round(sum(i["score"] for i in items) / n, 4) if n else None
    else:
        out["wrong_answers"] = formatted - correct_formatted
        out["wrong_answer_rate"] = _ratio(formatted - correct_formatted, n)
        out["lenient_accuracy"] = _ratio(sum(1 for i in items if i["correct_lenient"]), n)
    return out


def describe(report: dict) -> str:
    """One line per model: accuracy, format failures, accuracy among well-formatted answers."""
    parts = []
    for side in ("base", "tuned"):
        m = report.get(side)
        if not m:
            continue
        text = (f"{side}: accuracy {_pct(m['accuracy'])}, format failures {_pct(m['format_failure_rate'])}, "
                f"right when well formatted {_pct(m['accuracy_when_formatted'])}")
        if m.get("lenient_accuracy") is not None:
            text += f", right however written {_pct(m['lenient_accuracy'])}"
        if m.get("mean_score") is not None:
            text += f", mean judge score {m['mean_score']:.2f}"
        parts.append(text)
    return f"{report['dataset']}, {report['n']} prompts, greedy: " + "; ".join(parts) + "."


def _examples(rows: list[dict], per_side: dict, k: int) -> list[dict]:
    out = []
    for i, row in enumerate(rows[:max(0, int(k))]):
        example = {"prompt": prompt_text(row["prompt"]), "reference": row["reference"]}
        for side, (texts, items) in per_side.items():
            item = items[i]
            example[side] = {key: item.get(key) for key in ("text", "answer", "formatted", "correct", "score")
                             if key in item}
        out.append(example)
    return out


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def _minus(a, b):
    return round(a - b, 4) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
