"""GRPO: answers read off real GSM8K text, rewards, the LLM judge over the Gemini REST API, runs through the
worker on the tiny Gemma 3, and the before/after evaluation that tells format failures from wrong answers."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest

from tests.fake_llm import FakeLLMServer, Reply, server_error
from garage.config import TrainConfig
from garage.data import gsm8k
from garage.errors import GarageError
from garage.jobs.store import RunStore
from garage.jobs.worker import Worker
from garage.scoring import rewards
from garage.train import presets
from garage.evaluation.evaluate import evaluate, score_texts, summarize
from garage.scoring.judge import Judge, JudgeError
from tests.conftest import SHARED
from tests.helpers import write_jsonl

GSM8K_SHARED = SHARED / "data" / "gsm8k"
_ANSWERS = re.compile(r"<answers>\n(.*?)\n</answers>", re.S)


def gsm8k_rows() -> list[dict]:
    """Every GSM8K row of the shared copy (train and test), else the vendored subset."""
    out = []
    for split in ("train", "test"):
        path = GSM8K_SHARED / f"{split}.jsonl"
        if path.is_file():
            out += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            out += gsm8k.rows(split)
    return out


# --- answers --------------------------------------------------------------------------

def test_every_gsm8k_reference_answer_extracts_to_its_number():
    rows = gsm8k_rows()
    assert len(rows) >= 300
    for row in rows:
        expected = row["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        assert rewards.extract_reference(row["answer"]) == expected, row["answer"]
        # the cleaned conversation form (calculator notes removed) keeps the same final answer
        assert rewards.extract_reference(gsm8k.clean_answer(row["answer"])) == expected
        # the model's worked answer in the same form is both well formatted and right
        parsed = rewards.parse_answer(gsm8k.clean_answer(row["answer"]), "#### {answer}")
        assert parsed.formatted and parsed.at_end and parsed.reasoned
        assert rewards.answers_match(parsed.value, expected)


@pytest.mark.parametrize("text, value, formatted", [
    ("The answer is 42.", "42", False),
    ("#### 1,234", "1234", True),
    ("\\boxed{7}", "7", False),
    ("She has 3 + 4 = 7 apples.\n#### 7", "7", True),
    ("So the total is $1,250.50.", "1250.5", False),
    ("**Answer:** -3", "-3", False),
    ("The final answer is $\\boxed{18}$.", "18", False),
    ("She pays 10 - 5 = 5 dollars", "5", False),
    ("#### $18.00", "18", True),
    ("I am not sure.", None, False),
])
def test_typical_model_outputs_parse(text, value, formatted):
    parsed = rewards.parse_answer(text, "#### {answer}")
    assert parsed.lenient == value
    assert parsed.formatted is formatted


def test_a_custom_answer_template_and_math_verify_in_a_worker_thread():
    parsed = rewards.parse_answer("Half of 10 is 5. <answer> 5 </answer>", "<answer>{answer}</answer>")
    assert parsed.value == "5" and parsed.formatted and parsed.at_end and parsed.reasoned
    results = {}

    def work():  # training calls rewards off the main thread, where math-verify's signal time-out cannot run
        results["frac"] = rewards.answers_match("\\frac{1}{2}", "0.5")
        results["wrong"] = rewards.answers_match("\\frac{1}{3}", "0.5")

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert results == {"frac": True, "wrong": False}


def test_reward_functions():
    completions = [[{"role": "assistant", "content": c}] for c in (
        "3 + 4 = 7.\n#### 7", "#### 7", "It is 7. #### 7 because", "The answer is 7.", "#### 8")]
    prompts = [[{"role": "user", "content": "3 + 4?"}]] * len(completions)
    reference = ["#### 7"] * len(completions)
    correct = rewards.correctness_reward("#### {answer}")(prompts, completions, reference=reference)
    assert correct == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert rewards.correctness_reward()(prompts[:1], completions[:1], reference=[""]) == [None]
    assert rewards.format_reward("#### {answer}")(prompts, completions) == [1.0, 0.5, 0.5, 0.0, 0.5]
    length = rewards.length_reward(16)
    assert length(prompts[:3], completions[:3], completion_ids=[[1] * 4, [1] * 14, [1] * 16]) == [0.0, -0.5, -1.0]
    assert rewards.length_reward(16).__name__ == "length"


def test_grpo_config_is_validated():
    cfg = TrainConfig.from_dict({"dataset": "qa", "method": "grpo", "rewards": "correctness, format, length",
                                 "reward_weights": "1, 0.5, 0.2"})
    assert cfg.reward_weights == [1.0, 0.5, 0.2]
    funcs, weights = rewards.reward_functions(cfg)
    assert [f.__name__ for f in funcs] == ["correctness", "format", "length"] and weights == [1.0, 0.5, 0.2]
    for values, message in [
        ({"rewards": "correctness, vibes"}, "Unknown reward"),
        ({"reward_weights": "1, 2, 3"}, "one weight per reward"),
        ({"rewards": "judge"}, "needs a rubric"),
        ({"rewards": "judge", "rubric": "Be right.", "judge_backend": "openai"}, "judge_base_url"),
        ({"answer_format": "Answer: <x>"}, "exactly once"),
        ({"num_generations": 1}, "num_generations must be between"),
    ]:
        with pytest.raises(GarageError, match=message):
            TrainConfig.from_dict({"dataset": "qa", "method": "grpo", **values})


def test_gsm8k_preset_saves_the_dataset_and_is_a_valid_config():
    from garage.data.store import load_saved
    from garage.jobs.service import config_from

    values = presets.gsm8k_preset("gemma-3-1b-it", owner="preset-user")
    cfg = config_from(values)
    assert cfg.method == "grpo" and cfg.learning_rate == 5e-6 and 4 <= cfg.num_generations <= 8
    assert cfg.rewards == ["correctness", "format"] and cfg.answer_format == "#### {answer}"
    assert "####" in cfg.system_prompt and cfg.eval_dataset == "gsm8k" and cfg.eval_samples > 0
    saved = load_saved("preset-user", cfg.dataset)
    assert len(saved) == 200 and saved[0]["messages"][1]["content"].endswith("#### 72")
    assert "<<" not in saved[0]["messages"][1]["content"]
    assert (gsm8k.VENDOR / "LICENSE").read_text().startswith("MIT License")
    assert len(gsm8k.rows("test")) == 1319  # the whole test split; the quick "gsm8k" set is its first 100


def test_the_gsm8k_preset_on_the_test_model_keeps_every_prompt():
    """The preset's lengths fit its own prompts (with its system prompt): none is left out as too long."""
    from transformers import AutoTokenizer

    from garage.jobs.service import config_from
    from garage.train.grpo import drop_long_prompts, prompt_rows
    from garage.models.loading import model_source

    cfg = config_from(presets.gsm8k_preset("tiny-gemma-3", owner="preset-user"))
    rows = prompt_rows(gsm8k.conversations("train", 200), cfg.system_prompt)
    said = []
    kept = drop_long_prompts(rows, AutoTokenizer.from_pretrained(model_source("tiny-gemma-3")),
                             cfg.max_seq_length - cfg.max_completion_length, log=said.append)
    assert len(kept) == len(rows) == 200 and said == []


# --- the judge ------------------------------------------------------------------------

def judge_rule(request: dict):
    """The fake Gemini as a judge: a varied, deterministic score per answer."""
    match = _ANSWERS.search(request["prompt"])
    if not match or "<rubric>" not in request["prompt"] or request["key"] != "test-key":
        return None  # the server's own answer (a rejected key, say)
    answers = json.loads(match.group(1))
    scores = [{"index": a["index"], "score": (sum(map(ord, a["answer"])) % 11) / 10} for a in answers]
    return Reply(200, text=json.dumps({"scores": scores}))


@pytest.fixture
def fake_gemini(monkeypatch):
    with FakeLLMServer(valid_keys={"test-key"}) as server:
        server.rule = judge_rule
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
        monkeypatch.setenv("GEMINI_API_KEY", "test-key")
        yield server


def test_judge_scores_a_group_in_one_request_caches_and_retries(fake_gemini, tmp_path):
    judge = Judge("Correct and short.", cache_path=tmp_path / "cache.jsonl", retry_base=0.01)
    questions = ["What is 2+2?"] * 3 + ["Name a colour."] * 3
    answers = ["4", "four", "4", "blue", "red", "green"]
    scores = judge.score(questions, answers, ["4"] * 3 + [None] * 3)
    assert len(fake_gemini.requests) == 2  # one request per prompt group
    assert all(r["api"] == "gemini" and r["model"] == "gemini-2.5-flash" for r in fake_gemini.requests)
    sums = next(r for r in fake_gemini.requests if "2+2" in r["prompt"])
    assert [a["answer"] for a in json.loads(_ANSWERS.search(sums["prompt"]).group(1))] == ["4", "four"]  # "4" once
    assert "<reference_answer>\n4\n" in sums["prompt"]
    assert sums["body"]["generationConfig"]["responseMimeType"] == "application/json"
    assert "responseSchema" in sums["body"]["generationConfig"]
    assert all(0.0 <= s <= 1.0 for s in scores) and scores[0] == scores[2]
    assert judge.score(questions, answers, ["4"] * 3 + [None] * 3) == scores
    assert len(fake_gemini.requests) == 2  # all cached: no new call
    assert judge.stats.cache_hits == 6
    # the cache survives in its file (a resumed run does not pay again)
    again = Judge("Correct and short.", cache_path=tmp_path / "cache.jsonl")
    assert again.score(questions, answers, ["4"] * 3 + [None] * 3) == scores and len(fake_gemini.requests) == 2
    # a 503 and a malformed reply are retried
    fake_gemini.script = [server_error(503), Reply(200, text="not json at all")]
    assert judge.score(["What is 3+3?"], ["6"], ["6"])[0] >= 0.0
    assert len(fake_gemini.requests) == 5 and judge.stats.bad_replies == 1


def test_judge_over_an_openai_compatible_endpoint(fake_gemini):
    judge = Judge("Correct.", backend="openai", model="local-judge", base_url=fake_gemini.openai_url,
                  api_key="test-key", retry_base=0.01)
    scores = judge.score(["What is 2+2?"] * 2, ["4", "five"], ["4", "4"])
    assert len(scores) == 2 and len(fake_gemini.requests) == 1
    request = fake_gemini.requests[0]
    assert request["api"] == "openai" and request["model"] == "local-judge"
    assert request["body"]["response_format"] == {"type": "json_object"}


def test_judge_failure_modes(fake_gemini):
    fake_gemini.rule = lambda request: server_error(500)
    failing = Judge("Be right.", max_retries=1, retry_base=0.01)
    with pytest.raises(JudgeError, match="could not score.*judge_on_failure"):
        failing.score(["q"], ["a"])
    warnings = []
    lenient = Judge("Be right.", on_failure="zero", max_retries=1, retry_base=0.01, log=warnings.append)
    assert lenient.score(["q", "q"], ["a", "b"]) == [0.0, 0.0]
    assert lenient.stats.failed_groups == 1 and warnings and warnings[0].startswith("WARNING")
    fake_gemini.rule = judge_rule
    with pytest.raises(JudgeError, match="key") as failure:  # a rejected key is not retried, and never echoed
        Judge("Be right.", api_key="wrong-key", retry_base=0.01).score(["q"], ["a"])
    assert "wrong-key" not in str(failure.value)


# --- runs through the worker ----------------------------------------------------------------

@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    return Worker(RunStore(tmp_path_factory.mktemp("grpo-runs")))


@pytest.fixture(scope="module")
def math_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("grpo-data") / "gsm8k4.jsonl", gsm8k.conversations("train", 4))


def grpo_config(dataset: str, **overrides) -> TrainConfig:
    values = dict(model="tiny-gemma-3", dataset=dataset, method="grpo", max_steps=2, learning_rate=5e-5,
                  per_device_train_batch_size=4, gradient_accumulation_steps=1, num_generations=2,
                  max_completion_length=16, max_seq_length=384, eval_fraction=0.0, gradient_checkpointing=False,
                  save_steps=100, system_prompt="Answer with '#### <number>'.", beta=0.04)
    values.update(overrides)
    return TrainConfig(**values).validate()


def test_grpo_on_free_text_answers_says_correctness_cannot_score_them(tmp_path):
    """Q/A pairs from documents answer in sentences; their last number is not the answer ('built in 1887 and
    spans 214 metres' to 'When was it built?'), so correctness would score every completion 0 or against the
    wrong number: the run is refused with what to use instead, before any model loads."""
    from garage.train.grpo import load_prompts

    bridge = [("When was the Alder Bridge built?", "The Alder Bridge was built in 1887 and spans 214 metres."),
              ("How many passengers does the ferry carry?", "Ferry 0 leaves at 7 o'clock and carries 20 passengers.")]
    data = write_jsonl(tmp_path / "bridge.jsonl", [{"messages": [{"role": "user", "content": q},
                                                                 {"role": "assistant", "content": a}]}
                                                   for q, a in bridge])
    with pytest.raises(GarageError, match="state a final number .* use the judge reward"):
        load_prompts(grpo_config(str(data)), "local", log=lambda message: None)
    assert rewards.extract_reference(bridge[0][1]) is None and rewards.lenient_answer(bridge[0][1]) == "214"
    stated = ("42.", "The answer is 7.", "#### 1,234", "18 dollars", "5 km", "**42**", "(42)", "18%", "€18")
    assert [rewards.extract_reference(t) for t in stated] == ["42", "7", "1234", "18", "5", "42", "42", "18", "18"]

    # evaluation by answer scores the rows that state a number and says how many it left out
    from garage.evaluation.evaluate import choose_scorer
    from garage.scoring.rewards import rows_with_a_stated_number

    rows = [{"reference": "18 dollars"}, {"reference": bridge[0][1]}, {"reference": "#### 5"}]
    assert choose_scorer("auto", rows, None, None) == "answer"
    assert rows_with_a_stated_number(rows) == ([rows[0], rows[2]], 1)
    with pytest.raises(GarageError, match="No reference answer here states a final number"):
        choose_scorer("auto", [rows[1]], None, None)

    said = []  # the format reward with nothing asking for the format: warned
    load_prompts(grpo_config(str(data), rewards=["format"], system_prompt=""), "local", log=said.append)
    assert any("no prompt asks for that" in line for line in said)
    said.clear()
    load_prompts(grpo_config(str(data), rewards=["format"]), "local", log=said.append)  # its system prompt asks
    assert not any("no prompt asks" in line for line in said)


def watch_phases(run) -> list:
    """The phases the run's status shows, sampled every 20 ms until it ends (the list fills as it runs)."""
    seen = []

    def watch():
        while run.status().get("state") not in ("completed", "failed", "stopped"):
            phase = run.status().get("phase")
            if phase and phase not in seen:
                seen.append(phase)
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    return seen


@pytest.mark.slow
def test_grpo_run_with_verifiable_rewards_logs_reward_curves_and_evaluates(worker, math_file):
    cfg = grpo_config(str(math_file), rewards=["correctness", "format", "length"], reward_weights=[1.0, 0.5, 0.1],
                      eval_dataset="gsm8k", eval_samples=3)
    run = worker.store.get(worker.submit(cfg, "alice"))
    phases = watch_phases(run)
    assert worker.wait_idle(180)
    status = run.status()
    assert status["state"] == "completed", run.log_tail(60)
    assert status["step"] == status["total_steps"] == 2
    assert "evaluating base and tuned (3 prompts)" in phases  # not "saving" while it evaluates
    assert (run.adapter_dir / "adapter_config.json").exists()
    steps = [m for m in run.metrics() if "reward" in m]
    assert [m["step"] for m in steps] == [1, 2]
    for key in ("loss", "reward", "reward_std", "kl", "completions/mean_length", "rewards/correctness/mean",
                "rewards/format/mean", "rewards/length/mean", "rewards/length/std", "learning_rate"):
        assert all(key in m for m in steps), key
    assert all(m["completions/mean_length"] <= 16 for m in steps)
    assert any("CPU backend trains SFT only" in n for n in status["notices"])
    # the evaluation after training: base against tuned on the GSM8K test subset
    report = json.loads((run.path / "evaluation.json").read_text())
    assert report["n"] == 3 and report["scorer"] == "answer" and report["dataset"].startswith("GSM8K test")
    for side in ("base", "tuned"):
        for key in ("accuracy", "format_failure_rate", "wrong_answer_rate", "accuracy_when_formatted",
                    "lenient_accuracy"):
            assert key in report[side]
        total = report[side]["accuracy"] + report[side]["format_failure_rate"] + report[side]["wrong_answer_rate"]
        assert total == pytest.approx(1.0)
    assert "format failures" in report["summary"] and status["evaluation"]["tuned"]
    from garage.jobs import service
    from garage.ui.train_tab import _progress_markdown

    assert "evaluation" in service.STATUS_KEYS  # /training_status and the Train tab show it, not only the log
    assert "**Evaluation after training:** base " in _progress_markdown({**status, "id": run.id})


@pytest.mark.slow
def test_grpo_run_with_the_judge_over_the_gemini_rest_api(worker, math_file, fake_gemini):
    cfg = grpo_config(str(math_file), rewards=["judge", "format"], rubric="Shows its working and ends with the "
                      "number.", judge_model="gemini-test", max_steps=3)
    run = worker.store.get(worker.submit(cfg, "alice"))
    assert worker.wait_idle(180)
    assert run.status()["state"] == "completed", run.log_tail(60)
    steps = [m for m in run.metrics() if "reward" in m]
    assert len(steps) == 3 and all("rewards/judge/mean" in m and "rewards/format/mean" in m for m in steps)
    assert all(0.0 <= m["rewards/judge/mean"] <= 1.0 for m in steps)
    # where the judge told a group's completions apart, the policy got a gradient and the adapter moved
    assert any(m["reward_std"] > 0 and m["grad_norm"] > 0 for m in steps)
    from safetensors.torch import load_file

    lora_b = [v for k, v in load_file(str(run.adapter_dir / "adapter_model.safetensors")).items() if "lora_B" in k]
    assert lora_b and any(float(v.abs().max()) > 0 for v in lora_b)  # LoRA B starts at zero
    judged = [r for r in fake_gemini.requests if "<rubric>" in r["prompt"]]
    assert judged and all(r["model"] == "gemini-test" for r in judged)
    # 2 prompts per step, 2 completions each: never more than one request per prompt group
    assert len(judged) <= 6
    assert all(len(json.loads(_ANSWERS.search(r["prompt"]).group(1))) <= 2 for r in judged)
    assert (run.path / "judge_cache.jsonl").exists() and run.status()["judge"]["requests"] == len(judged)
    assert "test-key" not in (run.path / "log.txt").read_text() + (run.path / "config.yaml").read_text()


@pytest.mark.slow
def test_grpo_run_fails_with_a_clear_reason_when_the_judge_cannot_score(worker, math_file, fake_gemini,
                                                                        monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "not-the-key")
    cfg = grpo_config(str(math_file), rewards=["judge"], rubric="Be right.", max_steps=1)
    run = worker.store.get(worker.submit(cfg, "alice"))
    assert worker.wait_idle(120)
    status = run.status()
    assert status["state"] == "failed"
    assert "judge" in status["reason"] and "key" in status["reason"] and "not-the-key" not in status["reason"]


@pytest.mark.slow
def test_grpo_refuses_data_smaller_than_one_round(worker, tmp_path):
    one = write_jsonl(tmp_path / "one.jsonl", gsm8k.conversations("train", 1))
    run = worker.store.get(worker.submit(grpo_config(str(one)), "alice"))  # 4 completions / 2 = 2 prompts a round
    assert worker.wait_idle(120)
    assert run.status()["state"] == "failed" and "2 prompts per round" in run.status()["reason"]


@pytest.mark.slow
def test_grpo_run_in_pieces_continues_from_its_checkpoints(worker, math_file):
    cfg = grpo_config(str(math_file), rewards=["correctness", "length"], max_steps=4, chunk_steps=2)
    run = worker.store.get(worker.submit(cfg, "alice"))
    assert worker.wait_idle(180)
    assert run.status()["state"] == "completed", run.log_tail(60)
    assert [m["step"] for m in run.metrics() if "reward" in m] == [1, 2, 3, 4]
    assert "continuing from its checkpoint" in run.log_tail(100) and "resuming from checkpoint-2" in run.log_tail(100)


# --- evaluation ---------------------------------------------------------------------------

def test_evaluation_tells_format_failures_from_wrong_answers():
    rows = [{"prompt": [{"role": "user", "content": f"q{i}"}], "reference": f"... #### {i}"} for i in range(5)]
    # a capable model that ignores the format: right answers, never in '#### N'
    unformatted = [f"The answer is {i}." for i in range(5)]
    metrics = summarize(score_texts(unformatted, rows, "#### {answer}"))
    assert metrics["accuracy"] == 0.0 and metrics["format_failure_rate"] == 1.0
    assert metrics["lenient_accuracy"] == 1.0 and metrics["accuracy_when_formatted"] is None
    # formatted: 3 right, 1 wrong, 1 without the format
    texts = ["so #### 0", "so #### 1", "so #### 2", "so #### 99", "I think 4"]
    metrics = summarize(score_texts(texts, rows, "#### {answer}"))
    assert metrics["accuracy"] == 0.6 and metrics["format_failure_rate"] == 0.2
    assert metrics["wrong_answer_rate"] == 0.2 and metrics["accuracy_when_formatted"] == 0.75
    assert metrics["lenient_accuracy"] == 0.8


@pytest.mark.slow
def test_evaluate_a_model_on_gsm8k_and_a_run_by_its_judge(worker, math_file, fake_gemini):
    report = evaluate("tiny-gemma-3", "gsm8k", 2, max_new_tokens=8)
    assert report["base"]["n"] == 2 and report["tuned"] is None and report["path"] is None
    assert report["examples"][0]["base"]["text"] is not None and "accuracy" in report["summary"]
    # a run's own held-out rows, free-text references: scored by the judge against its rubric
    qa = write_jsonl(math_file.parent / "qa.jsonl", [
        {"messages": [{"role": "user", "content": f"Say hello {i}."}, {"role": "assistant", "content": "Hello!"}]}
        for i in range(8)])
    cfg = grpo_config(str(qa), rewards=["judge"], rubric="Polite.", answer_format="", eval_fraction=0.25,
                      max_steps=1)
    run = worker.store.get(worker.submit(cfg, "alice"))
    assert worker.wait_idle(120)
    assert run.status()["state"] == "completed", run.log_tail(60)
    report = evaluate(run.id, None, 10, max_new_tokens=8, store=worker.store)
    assert report["scorer"] == "judge" and report["n"] == 2 and report["dataset"].startswith("held-out rows")
    assert "mean_score" in report["base"] and "mean_score" in report["tuned"]
    assert (run.path / "evaluation.json").exists()
