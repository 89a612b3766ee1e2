"""GEPA against GRPO: answers generated and scored ("metric calls") and wall time, on the same held-out rows.

    python bench/bench_gepa.py [--budget 96] [--grpo-steps 24] [--model PATH]

The task: short sums ("What is 18 plus 14?"), an answer right when its final number is the sum (the lenient
reading: SmolLM2 never writes GSM8K's '#### N', see the note in bench/README.md). The task model is
SmolLM2-135M-Instruct (built offline by ../shared/tools/smollm2; a real instruct model that explains at length and
is cut off mid-sum by a short answer limit: 21% of the sums right under a plain prompt), or ``--model``.

- GEPA: the app's prompt optimisation (``method: prompt``) from a plain starting prompt, ``--budget`` metric calls.
  The reflection model cannot be reached offline: a stand-in on 127.0.0.1 (``tests.fake_llm``, OpenAI protocol)
  proposes, in turn, prompts a person would write after reading the failures (answers cut off mid-explanation:
  ask for the number alone). ``--reflection gemini`` uses Gemini instead (GEMINI_API_KEY).
- GRPO: the app's GRPO (correctness reward, LoRA) under the same starting prompt, ``--grpo-steps`` steps of 4
  completions each (4 metric calls a step: each completion is scored), then scored on the held-out rows.

Prints, for each, its held-out score before and after, the metric calls and seconds it used, and the ratio of
GEPA's to GRPO's metric calls to reach the better of their two scores (a bound where only one reached it) and of
their seconds; writes bench/results/gepa-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import save, versions  # noqa: E402

START = "Answer the user's question."
# What a person reading the failures (long explanations cut off before the sum) would try, in turn.
PROPOSALS = [
    "Answer with the number only.",
    "You are a calculator. Reply with only the sum.",
    "Add the two numbers. Write only the result, for example: 42",
    "Reply with the sum as digits and nothing else.",
]
PAIRS = [(a, b) for a in range(3, 60, 5) for b in (2, 9, 14)]  # 36 sums: test, GEPA's validation, train


def rows(pairs) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                          {"role": "assistant", "content": f"{a} + {b} = {a + b}\n#### {a + b}"}]} for a, b in pairs]


def write(path: Path, items: list[dict]) -> str:
    path.write_text("\n".join(json.dumps(r) for r in items) + "\n", encoding="utf-8")
    return str(path)


def smollm2(folder: Path) -> str:
    target = folder / "SmolLM2-135M-Instruct"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    subprocess.run(["bash", str(ROOT.parent / "shared" / "tools" / "smollm2"), str(target)], check=True, env=env,
                   capture_output=True)
    return str(target)


def run_to_end(worker, cfg) -> tuple:
    started = time.perf_counter()
    run_id = worker.submit(cfg, "bench")
    worker.wait_idle(None)
    run = worker.store.get(run_id)
    status = run.status()
    if status["state"] != "completed":
        raise SystemExit(f"{cfg.method} run {status['state']}: {status.get('reason')}\n{run.log_tail(30)}")
    return run, status, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=120, help="GEPA's metric calls")
    parser.add_argument("--grpo-steps", type=int, default=24, help="GRPO steps (4 scored completions each)")
    parser.add_argument("--test", type=int, default=12, help="held-out rows both are scored on at the end")
    parser.add_argument("--val", type=int, default=8, help="GEPA's validation rows (they choose its prompt)")
    parser.add_argument("--model", help="the task model (default: SmolLM2-135M-Instruct, built offline)")
    parser.add_argument("--reflection", choices=("stand-in", "gemini"), default="stand-in")
    args = parser.parse_args()

    from garage.config import TrainConfig
    from garage.evaluation.evaluate import evaluate
    from garage.jobs.store import RunStore
    from garage.jobs.worker import Worker
    from tests.fake_llm import FakeLLMServer, Reply

    home = Path(tempfile.mkdtemp(prefix="bench-gepa-"))
    os.environ["GARAGE_HOME"] = str(home)
    model = args.model or smollm2(home)
    test = write(home / "test.jsonl", rows(PAIRS[:args.test]))
    val = write(home / "val.jsonl", rows(PAIRS[args.test:args.test + args.val]))
    train = write(home / "train.jsonl", rows(PAIRS[args.test + args.val:]))
    worker = Worker(RunStore(home / "runs"))
    common = dict(model=model, dataset=train, system_prompt=START, answer_format="", max_completion_length=48,
                  seed=3407)

    proposals = iter(PROPOSALS * 100)
    with FakeLLMServer() as server:
        server.rule = lambda request: (Reply(text=f"```\n{next(proposals)}\n```")
                                       if "write a new instruction" in request["prompt"] else None)
        reflection = (dict(reflection_backend="openai", reflection_model="stand-in",
                           reflection_base_url=server.openai_url) if args.reflection == "stand-in"
                      else dict(reflection_backend="gemini", reflection_model="gemini-2.5-flash"))
        gepa_cfg = TrainConfig(method="prompt", eval_dataset=val, val_rows=args.val, metric_calls=args.budget,
                               reflection_minibatch_size=3, **reflection, **common).validate()
        gepa_run, gepa_status, gepa_seconds = run_to_end(worker, gepa_cfg)
    result = json.loads((gepa_run.path / "prompt" / "result.json").read_text())
    # the metric calls GEPA had spent when each better score was first reached (its live plot's records)
    reached = [(m["best_val_score"], m["step"]) for m in gepa_run.metrics() if "best_val_score" in m]

    grpo_cfg = TrainConfig(method="grpo", max_steps=args.grpo_steps, num_generations=4,
                           per_device_train_batch_size=4, gradient_accumulation_steps=1, learning_rate=5e-5,
                           beta=0.0, rewards=["correctness"], eval_dataset=test, eval_samples=args.test,
                           save_steps=1000,
                           eval_fraction=0.0, gradient_checkpointing=False, max_seq_length=256, **common).validate()
    grpo_run, grpo_status, grpo_seconds = run_to_end(worker, grpo_cfg)
    evaluation = json.loads((grpo_run.path / "evaluation.json").read_text())
    grpo_before, grpo_after = evaluation["base"]["accuracy"], evaluation["tuned"]["accuracy"]
    grpo_calls = args.grpo_steps * 4  # completions scored in training
    # GEPA's prompt on the rows that did not choose it, as GRPO's model is scored
    gepa_test = evaluate(model, test, args.test, system_prompt=result["best_prompt"], answer_format="",
                         max_new_tokens=48, save=False)["base"]["accuracy"]

    # when GEPA found the prompt it ends with (its validation scores as it went), in metric calls
    gepa_calls = next((calls for score, calls in reached if score >= result["best_score"]), result["metric_calls"])
    out = {
        "task": f"sums, the final number read leniently; {len(PAIRS) - args.test - args.val} train rows, "
                f"{args.val} GEPA validation rows, {args.test} test rows; answers up to 48 tokens",
        "test_score": {"start_prompt": grpo_before, "gepa_prompt": gepa_test, "grpo_model": grpo_after},
        "model": Path(model).name, "reflection": args.reflection,
        "gepa": {"validation_start_score": result["start_score"], "validation_best_score": result["best_score"],
                 "metric_calls": result["metric_calls"], "seconds": round(gepa_seconds, 1),
                 "best_prompt": result["best_prompt"], "candidates": len(result["candidates"]),
                 "calls_when_best_improved": reached},
        "grpo": {"start_score": grpo_before, "score": grpo_after, "metric_calls": grpo_calls,
                 "seconds": round(grpo_seconds, 1), "steps": args.grpo_steps},
        "versions": versions(),
    }
    out["gepa"]["calls_when_its_prompt_was_found"] = gepa_calls
    if max(gepa_test, grpo_after) <= grpo_before:
        out["note"] = f"Neither beat the starting prompt's {grpo_before} on the test rows: no ratio."
    elif gepa_test >= grpo_after and grpo_after > grpo_before:
        out["calls_ratio_gepa_over_grpo"] = round(gepa_calls / grpo_calls, 3)
        out["note"] = ("Both beat the start on the test rows, GEPA at least as far. GRPO's calls are all it spent "
                       "(it is scored once, at its end): an upper bound of what it needed, so the ratio favours GRPO.")
    elif gepa_test >= grpo_after:
        out["calls_ratio_gepa_over_grpo_below"] = round(gepa_calls / grpo_calls, 3)
        out["note"] = (f"GEPA's prompt scores {gepa_test} on the test rows (from {grpo_before}), found after "
                       f"{gepa_calls} metric calls; GRPO ended at {grpo_after} after {grpo_calls}: it had not reached "
                       "GEPA's score, so the ratio is below this bound.")
    else:
        out["note"] = (f"GRPO ({grpo_after}) beat GEPA's prompt ({gepa_test}) on the test rows, from {grpo_before}.")
    out["seconds_ratio_gepa_over_grpo"] = round(gepa_seconds / grpo_seconds, 3)
    print(json.dumps(out, indent=1))
    print(f"saved {save('gepa', out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
