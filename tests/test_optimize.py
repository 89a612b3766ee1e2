"""Prompt optimisation (GEPA, method: prompt) with a real model answering and a reflection model on 127.0.0.1.

The task model is a tiny Gemma 3 fine-tuned (once, here) to answer '#### N' under one system prompt (GOOD) and
'It is N-in-words.' under any other: so a prompt really changes the score the metric gives, and the test can tell
whether GEPA finds and keeps the prompt that helps. The reflection model is the OpenAI-compatible stand-in of
``tests.fake_llm``, whose rule decides what it proposes; the real ``openai`` client talks to it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from garage.config import TrainConfig
from garage.errors import GarageError
from garage.jobs.store import RunStore
from garage.jobs.worker import Worker
from tests.fake_llm import Reply, server_error
from garage.ui.train_tab import _prompt_line
from tests.helpers import tiny_config, wait_for, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
GOOD = "Reply with the number after ####."
START = "Answer the user's question."
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
SUMS = [(1, 2), (2, 2), (3, 1), (2, 4), (5, 2), (3, 5), (4, 4), (6, 3)]


def question(a: int, b: int) -> str:
    return f"What is {a} plus {b}?"


def task_rows(pairs) -> list[dict]:
    return [{"messages": [{"role": "user", "content": question(a, b)},
                          {"role": "assistant", "content": f"#### {a + b}"}]} for a, b in pairs]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, llm_server):
    """A worker with the prompt-sensitive tuned run, and the train / validation files of the task."""
    folder = tmp_path_factory.mktemp("optimize")
    rows = []
    for a, b in SUMS:
        rows.append({"messages": [{"role": "system", "content": GOOD}, {"role": "user", "content": question(a, b)},
                                  {"role": "assistant", "content": f"#### {a + b}"}]})
        rows.append({"messages": [{"role": "user", "content": question(a, b)},
                                  {"role": "assistant", "content": f"It is {WORDS[a + b]}."}]})
    worker = Worker(RunStore(folder / "runs"))
    tuned = worker.submit(tiny_config(str(write_jsonl(folder / "sensitive.jsonl", rows)), num_train_epochs=40,
                                      per_device_train_batch_size=8, save_steps=1000), "alice")
    assert worker.wait_idle(600)
    assert worker.store.get(tuned).status()["state"] == "completed", worker.store.get(tuned).log_tail()
    return {"worker": worker, "tuned": tuned, "train": str(write_jsonl(folder / "train.jsonl", task_rows(SUMS[:4]))),
            "val": str(write_jsonl(folder / "val.jsonl", task_rows(SUMS[4:]))), "folder": folder}


@pytest.fixture
def reflector(llm_server):
    llm_server.reset()
    yield llm_server
    llm_server.reset()


def proposes(text: str, delay: float = 0.0):
    """A reflection rule: every GEPA reflection request gets ``text`` as its new instruction."""
    def rule(request):
        if "Your task is to write a new instruction" in request["prompt"]:
            return Reply(text=f"Here is a better instruction:\n```\n{text}\n```", delay=delay)
        return None
    return rule


def prompt_config(setup, server, **overrides) -> TrainConfig:
    values = dict(method="prompt", model="tiny-gemma-3", dataset=setup["train"], eval_dataset=setup["val"],
                  tuned_run=setup["tuned"], system_prompt=START, val_rows=4, metric_calls=24,
                  reflection_minibatch_size=2, max_completion_length=8, reflection_backend="openai",
                  reflection_model="reflector", reflection_base_url=server.openai_url)
    values.update(overrides)
    return TrainConfig(**values).validate()


def optimise(setup, cfg) -> tuple:
    worker = setup["worker"]
    run_id = worker.submit(cfg, "alice")
    assert worker.wait_idle(600)
    run = worker.store.get(run_id)
    return run, run.status()


def result_of(run) -> dict:
    return json.loads((run.path / "prompt" / "result.json").read_text())


def test_a_prompt_that_really_helps_is_found_scored_on_every_validation_row_and_chosen(setup, reflector):
    reflector.rule = proposes(GOOD)
    run, status = optimise(setup, prompt_config(setup, reflector))
    assert status["state"] == "completed", (status.get("reason"), run.log_tail())
    result = result_of(run)
    assert result["start_prompt"] == START and result["start_score"] == 0.0  # 'It is seven.': no '#### N'
    assert result["best_prompt"] == GOOD and result["best_score"] == 1.0
    assert all(c["rows"] == 4 for c in result["candidates"])  # every candidate on all the validation rows
    assert result["candidates"][result["best_index"]]["parents"] == [0]
    assert result["metric_calls"] <= 24 and status["step"] == result["metric_calls"]
    # the reflection model read the answers and what was wrong with them
    asked = [r["prompt"] for r in reflector.requests if "Your task is to write a new instruction" in r["prompt"]]
    assert asked and START in asked[0] and "required form '#### {answer}'" in asked[0] and "It is" in asked[0]
    assert result["reflection"]["calls"] == len(asked) and result["reflection"]["input_tokens"] > 0
    assert result["reflection"]["dollars"] is None  # an OpenAI-compatible endpoint has no known price
    # the live plot: the latest and the best validation score per iteration
    scores = [m for m in run.metrics() if "val_score" in m]
    assert scores[0]["val_score"] == 0.0 and scores[-1]["best_val_score"] == 1.0
    best_line = [m for m in run.metrics() if "best_val_score" in m]  # a point each iteration, x in metric calls
    assert len(best_line) > len(scores) and [m["step"] for m in best_line] == sorted(m["step"] for m in best_line)
    assert status["prompt"]["best_prompt"] == GOOD and status["prompt"]["gpu_seconds"] > 0
    # the Train tab's progress: the best prompt, its score against the start's, the best candidates with parents
    shown = _prompt_line(status["prompt"])
    assert GOOD in shown and "**1.000** against the starting prompt's 0.000" in shown
    assert f"| {result['best_index']} | 1.000 | 0 | {GOOD} |" in shown and "| 0 | 0.000 | start |" in shown


def test_prompts_that_do_worse_are_not_chosen(setup, reflector):
    reflector.rule = proposes("Answer in words, never with digits.")
    run, status = optimise(setup, prompt_config(setup, reflector, metric_calls=16))
    assert status["state"] == "completed", status.get("reason")
    result = result_of(run)
    assert result["best_prompt"] == START and result["best_score"] >= result["start_score"]


def test_stop_and_resume_keep_the_candidates_and_the_calls_spent(setup, reflector, tmp_path):
    reflector.rule = proposes(GOOD, delay=1.0)
    worker = setup["worker"]
    val = write_jsonl(tmp_path / "val.jsonl", task_rows(SUMS[4:]))
    run_id = worker.submit(prompt_config(setup, reflector, system_prompt="Be brief.", metric_calls=60,
                                         eval_dataset=str(val)), "alice")
    run = worker.store.get(run_id)
    wait_for(lambda: len([m for m in run.metrics() if "val_score" in m]) >= 1, 300, what="the first score")
    worker.stop(run_id, "alice")
    assert worker.wait_idle(300)
    stopped = run.status()
    assert stopped["state"] == "stopped", stopped.get("reason")
    spent = stopped["step"]
    assert 0 < spent < 60 and (run.path / "prompt" / "gepa").is_dir()
    answered = len((run.path / "prompt" / "answers.jsonl").read_text().splitlines())
    before = {c["prompt"] for c in stopped["prompt"]["top"]}  # what it had scored when it stopped
    assert stopped["prompt"]["best_prompt"] in before  # the best so far is its result until it goes on
    write_jsonl(val, task_rows(SUMS[:2]))  # the validation set saved again while the search was stopped
    worker.resume(run_id, "alice")
    assert worker.wait_idle(600)
    status = run.status()
    assert status["state"] == "completed", status.get("reason")
    assert "goes on with the rows it started with" in run.log_tail(200)  # GEPA's saved state counts rows by place
    result = result_of(run)
    assert result["metric_calls"] > spent and result["best_prompt"] == GOOD
    assert result["validation"].endswith("(4 rows)")
    assert before <= {c["prompt"] for c in result["candidates"]}
    plotted = [m for m in run.metrics() if "val_score" in m]
    assert [m["candidate"] for m in plotted].count(0) == 1  # the start is not plotted again on resume
    assert [m["best_val_score"] for m in plotted] == sorted(m["best_val_score"] for m in plotted)
    # the starting prompt was not answered again on resume: its answers were kept
    lines = (run.path / "prompt" / "answers.jsonl").read_text().splitlines()
    keys = [json.loads(line)["key"] for line in lines]
    assert len(keys) == len(set(keys)) and len(lines) >= answered


def test_the_reflection_endpoint_down_or_answering_garbage_fails_with_the_reason_and_resumes(setup, reflector):
    worker = setup["worker"]
    reflector.rule = lambda request: server_error(503)
    run_id = worker.submit(prompt_config(setup, reflector), "alice")
    assert worker.wait_idle(600)
    run = worker.store.get(run_id)
    status = run.status()
    assert status["state"] == "failed" and "endpoint failed with HTTP 503" in status["reason"], status["reason"]
    assert (run.path / "prompt" / "gepa").is_dir()  # the starting prompt's scores are kept

    reflector.rule = lambda request: Reply(text="I am not sure what you mean.")
    worker.resume(run_id, "alice")
    assert worker.wait_idle(600)
    status = run.status()
    assert status["state"] == "failed" and "without a new prompt" in status["reason"], status["reason"]

    reflector.rule = proposes(GOOD)
    worker.resume(run_id, "alice")
    assert worker.wait_idle(600)
    assert run.status()["state"] == "completed", run.status().get("reason")
    assert result_of(run)["best_prompt"] == GOOD


def test_bad_input_is_refused_at_start_with_what_to_do(setup, reflector, tmp_path):
    from garage.jobs import service

    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    no_refs = write_jsonl(tmp_path / "norefs.jsonl", [{"messages": [{"role": "user", "content": "Hi?"}]}] * 6)
    words = write_jsonl(tmp_path / "words.jsonl", [{"messages": [{"role": "user", "content": f"Say {w}."},
                                                                {"role": "assistant", "content": w}]} for w in WORDS])
    cases = [
        (dict(dataset=str(empty)), "empty|no rows|holds neither"),
        (dict(eval_dataset="", eval_fraction=0.0), "needs validation rows. .*holds no rows out .*eval_dataset"),
        (dict(eval_dataset=str(no_refs)), "no assistant turn"),
        (dict(dataset=str(words)), "states a final number to check answers against"),
        (dict(metric_calls=4), "must be more than val_rows"),
        (dict(reflection_base_url=""), "needs reflection_base_url"),
    ]
    for overrides, message in cases:
        with pytest.raises(GarageError, match=message):
            values = {**prompt_config(setup, reflector).to_dict(), "tuned_run": "", **overrides}
            service.check_prompt_start(TrainConfig.from_dict(values), "alice")


def test_the_command_line_optimises_a_base_models_prompt(setup, reflector, tmp_path):
    reflector.rule = proposes(GOOD)
    env_home = tmp_path / "home"
    done = subprocess.run(
        [sys.executable, "-m", "garage", "optimize", "--model", "tiny-gemma-3", "--dataset", setup["train"],
         "--eval-dataset", setup["val"], "--val-rows", "2", "--metric-calls", "8", "--reflection-backend", "openai",
         "--reflection-model", "reflector", "--reflection-base-url", reflector.openai_url],
        capture_output=True, text=True, timeout=600, cwd=str(setup["folder"].parent),
        env={**os.environ, "GARAGE_HOME": str(env_home), "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "best prompt (validation score" in done.stdout and "best validation score" in done.stdout



def test_the_which_helped_table_matches_the_evaluations_it_comes_from(setup, reflector):
    from garage.evaluation import methods
    from garage.evaluation.evaluate import evaluate
    from garage.hub.card import model_card
    from garage.jobs.chat import method_entries

    reflector.rule = proposes(GOOD)
    worker = setup["worker"]
    prompt_run, status = optimise(setup, prompt_config(setup, reflector))
    assert status["state"] == "completed"
    tuned = worker.store.get(setup["tuned"])
    entries = method_entries([prompt_run, tuned], "alice", "tiny-gemma-3")
    assert [e["method"] for e in entries] == ["base", "tuned + optimised prompt", "SFT (lora)"]
    entries.insert(1, {"method": "base + optimised prompt", "label": "tiny-gemma-3 + GOOD", "base": "tiny-gemma-3",
                       "run": None, "system_prompt": GOOD, "cost": {}})
    table = methods.compare(entries, setup["val"], 4, owner="alice", max_new_tokens=8, answer_format="#### {answer}")
    rows = {row["method"]: row for row in table["rows"]}
    assert table["n"] == 4 and table["scorer"] == "answer"
    assert rows["tuned + optimised prompt"]["accuracy"] == 1.0
    assert rows["SFT (lora)"]["accuracy"] == 0.0 and rows["SFT (lora)"]["format_failure_rate"] == 1.0
    # the same numbers as Evaluate gives for the same model, prompt and rows
    for prompt, tuned_row, base_row in ((GOOD, "tuned + optimised prompt", "base + optimised prompt"),
                                        ("", "SFT (lora)", "base")):
        report = evaluate(tuned, setup["val"], 4, system_prompt=prompt, answer_format="#### {answer}",
                          max_new_tokens=8, save=False)
        for key in ("accuracy", "format_failure_rate", "wrong_answer_rate"):
            assert rows[tuned_row][key] == report["tuned"][key], (tuned_row, key)
            assert rows[base_row][key] == report["base"][key], (base_row, key)
    # what each cost to make: the training's GPU seconds; the search's answering and reflection
    assert rows["SFT (lora)"]["gpu_seconds"] == pytest.approx(tuned.status()["train_seconds"], abs=0.01)
    assert rows["SFT (lora)"]["llm_calls"] == 0 and rows["base"]["gpu_seconds"] == 0
    spent = prompt_run.status()["prompt"]
    assert rows["tuned + optimised prompt"]["llm_calls"] == spent["reflection"]["calls"] > 0
    assert rows["tuned + optimised prompt"]["gpu_seconds"] == pytest.approx(
        tuned.status()["train_seconds"] + spent["gpu_seconds"], abs=0.01)
    assert rows["tuned + optimised prompt"]["dollars"] is None  # the endpoint's price is not known: not 0
    csv_lines = methods.to_csv(table).splitlines()
    assert csv_lines[0].startswith("method,model,accuracy") and len(csv_lines) == 5
    markdown = methods.to_markdown(table)
    assert "| tuned + optimised prompt |" in markdown and "100.0%" in markdown
    # a model card pushed after the table was made with the run carries it
    (tuned.path / "methods.json").write_text(json.dumps(table))
    try:
        card = model_card(tuned, "alice/sums", {"adapter": ""})
    finally:
        (tuned.path / "methods.json").unlink()
    assert "## Which helped" in card and "| tuned + optimised prompt |" in card


def test_the_api_optimises_a_prompt_and_puts_it_in_the_which_helped_table(client, setup, reflector):
    reflector.rule = proposes(GOOD)
    config = {"model": "tiny-gemma-3", "dataset": setup["train"], "eval_dataset": setup["val"], "val_rows": 2,
              "metric_calls": 8, "max_completion_length": 8, "reflection_backend": "openai",
              "reflection_model": "reflector", "reflection_base_url": reflector.openai_url}
    run_id = client.predict(config, api_name="/optimize_prompt")
    status = wait_for(lambda: (s := client.predict(run_id, api_name="/training_status"))["state"]
                      in ("completed", "failed", "stopped") and s, timeout=300, interval=1, what="the search")
    assert status["state"] == "completed", status
    assert status["method"] == "prompt" and status["prompt"]["metric_calls"] <= 8
    assert status["prompt"]["best_score"] >= status["prompt"]["start_score"]
    table = client.predict([run_id], setup["val"], 4, "", api_name="/compare_methods")
    assert table["left_out"] == 2 and table["n"] == 2  # the 2 validation rows that chose the prompt are not held out
    assert [row["method"] for row in table["rows"]] == ["base", "base + optimised prompt"]
    assert table["rows"][1]["system_prompt"] == status["prompt"]["best_prompt"]
    assert table["csv"].startswith("method,") and "| base + optimised prompt |" in table["markdown"]
