"""The built-in held-out sets: GSM8K's quick subset and its whole test set, and AIME 2024 with boxed answers."""

from __future__ import annotations

import json

from garage.config import TrainConfig
from garage.data import benchmarks, gsm8k
from garage.evaluation.evaluate import held_out_rows, prompt_settings, score_texts, summarize
from garage.scoring.rewards import extract_reference
from tests.conftest import SHARED


def test_aime_is_vendored_whole_and_every_reference_is_an_integer_from_0_to_999():
    rows, label = held_out_rows("aime24", None, "alice", benchmarks.AIME_SYSTEM_PROMPT)
    assert label == "AIME 2024 (30 rows)" and len(rows) == 30
    answers = [extract_reference(r["reference"]) for r in rows]
    assert all(a is not None and a.isdigit() and 0 <= int(a) <= 999 for a in answers)
    assert answers[0] == "204"  # the first problem's \boxed{204}
    assert rows[0]["prompt"][0] == {"role": "system", "content": benchmarks.AIME_SYSTEM_PROMPT}
    shared = [json.loads(line) for line in (SHARED / "data" / "aime24" / "test.jsonl").read_text().splitlines()]
    assert [r["problem"] for r in shared] == [r["prompt"][-1]["content"] for r in rows]


def test_a_boxed_answer_scores_an_unboxed_one_is_a_format_failure_and_a_wrong_box_a_wrong_answer():
    rows, _ = held_out_rows("aime24", None, "alice", "")
    fmt, _ = prompt_settings("aime24", None, None, None)
    assert fmt == benchmarks.AIME_ANSWER_FORMAT
    texts = ["So the walk takes \\boxed{204} minutes.", "The answer is 204.", "Thus \\boxed{205}."]
    items = score_texts(texts, [rows[0]] * 3, fmt)
    assert [i["correct"] for i in items] == [True, False, False]
    assert [i["formatted"] for i in items] == [True, False, True]
    assert items[1]["correct_lenient"]  # right, just not boxed
    metrics = summarize(items)
    assert (metrics["accuracy"], metrics["format_failure_rate"], metrics["wrong_answer_rate"]) == (0.3333,) * 3


def test_the_full_gsm8k_test_set_is_built_in_and_the_quick_set_is_its_first_hundred():
    full, label = held_out_rows("gsm8k-full", None, "alice", "")
    quick, quick_label = held_out_rows("GSM8K", None, "alice", "")
    assert len(full) == 1319 and label == "GSM8K test, all of it (1319 rows)"
    assert len(quick) == 100 and quick_label == "GSM8K test, first 100 (100 rows)" and quick == full[:100]
    # the very rows of openai/gsm8k's test split, offline: no download (the tests run with HF_HUB_OFFLINE=1)
    shared = (SHARED / "data" / "gsm8k" / "test.jsonl").read_text().splitlines()
    assert [json.loads(line)["question"] for line in shared] == [r["prompt"][-1]["content"] for r in full]
    assert len(gsm8k.rows("train")) == 200  # the GRPO preset's training rows are unchanged


def test_each_set_brings_its_answer_format_and_prompt_and_a_grpo_run_keeps_its_own():
    sft = TrainConfig(dataset="x", system_prompt="Be terse.")
    grpo = TrainConfig(dataset="x", method="grpo", answer_format="<answer>{answer}</answer>", system_prompt="Think.")
    assert prompt_settings("aime24", sft, None, None) == (benchmarks.AIME_ANSWER_FORMAT, benchmarks.AIME_SYSTEM_PROMPT)
    assert prompt_settings("gsm8k-full", None, None, None) == (gsm8k.ANSWER_FORMAT, gsm8k.SYSTEM_PROMPT)
    assert prompt_settings("aime24", grpo, None, None) == ("<answer>{answer}</answer>", "Think.")
    grpo.system_prompt = ""  # trained under no prompt of its own: the set's pair, not its format with AIME's prompt
    assert prompt_settings("aime24", grpo, None, None) == (benchmarks.AIME_ANSWER_FORMAT, benchmarks.AIME_SYSTEM_PROMPT)
    assert prompt_settings("my-data", sft, None, None) == (sft.answer_format, "Be terse.")
    assert prompt_settings("aime24", sft, None, "Mine.") == (benchmarks.AIME_ANSWER_FORMAT, "Mine.")
