"""GRPO throughput and memory: the app's GRPO path (TrainConfig -> runner -> Unsloth/TRL GRPOTrainer) on a
random-weight Gemma 3 1B built from its real configuration.

    python bench/bench_grpo.py [--steps 6] [--generations 8] [--completion 256]

On a GPU: a ``Gemma3ForCausalLM`` with Gemma 3 1B's dimensions (hidden 1152, 26 layers, 4 heads,
1 KV head, head_dim 256, intermediate 6912, vocab 262144, sliding window 512) and random bf16
weights, so no download is needed; the tokenizer is the tiny test model's (the prompts are GSM8K
questions, the 262144-way output head is the real one). Random weights never stop early, so every
completion runs to ``--completion`` tokens: a worst case per step.
On a CPU: the tiny test model instead (the 1B would take hours), and the result says so.

Writes seconds per step (the first step, which pays for warm-up, reported apart), peak GPU memory and
the settings to bench/results/grpo-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import save, versions  # noqa: E402
from garage.offline_models import REAL_SHAPES, build_random_gemma  # noqa: E402

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--generations", type=int, default=8, help="num_generations (completions per prompt)")
    parser.add_argument("--batch", type=int, default=8, help="per_device_train_batch_size (completions)")
    parser.add_argument("--completion", type=int, default=256, help="max_completion_length")
    parser.add_argument("--beta", type=float, default=0.04)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="garage-bench-grpo-"))
    os.environ["GARAGE_HOME"] = str(tmp / "home")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    from garage.models.loading import import_unsloth

    import_unsloth()
    import torch

    from garage.config import TrainConfig
    from garage.data import gsm8k
    from garage.jobs.store import RunStore
    from garage.train.runner import execute

    gpu = torch.cuda.is_available()
    if gpu:
        started = time.perf_counter()
        model = str(build_random_gemma("gemma-3-1b", tmp / "gemma-3-1b-random"))
        build_seconds = round(time.perf_counter() - started, 1)
        settings = dict(num_generations=args.generations, per_device_train_batch_size=args.batch,
                        max_completion_length=args.completion, max_seq_length=768 + args.completion,
                        gradient_checkpointing=True, lora_r=32, lora_alpha=64)
        note = "random-weight Gemma 3 1B (real dimensions, tiny tokenizer): every completion runs to the limit"
    else:
        model, build_seconds = "tiny-gemma-3", 0.0
        settings = dict(num_generations=4, per_device_train_batch_size=4, max_completion_length=32,
                        max_seq_length=384, gradient_checkpointing=False, lora_r=16, lora_alpha=32)
        args.steps = min(args.steps, 4)
        note = "NO GPU: this ran the tiny test model on the CPU, not Gemma 3 1B; the numbers say nothing about a GPU"
        print(f"NOTE: {note}.")
    data = tmp / "gsm8k.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in gsm8k.conversations("train", 64)) + "\n")
    cfg = TrainConfig(model=model, dataset=str(data), method="grpo", max_steps=args.steps, learning_rate=5e-6,
                      gradient_accumulation_steps=1, beta=args.beta, temperature=1.0, eval_fraction=0.0,
                      save_steps=100000, logging_steps=1, system_prompt=gsm8k.SYSTEM_PROMPT,
                      answer_format=gsm8k.ANSWER_FORMAT, rewards=["correctness", "format", "length"],
                      reward_weights=[1.0, 0.5, 0.1], **settings).validate()
    run = RunStore(tmp / "runs").create(cfg, "bench")
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    state = execute(run, threading.Event())
    if state != "completed":
        print(run.log_tail(60), file=sys.stderr)
        print(f"error: the GRPO run {state}: {run.status().get('reason')}", file=sys.stderr)
        return 1
    steps = [m for m in run.metrics() if "reward" in m]
    times = [m["step_time"] for m in steps if "step_time" in m]
    if not times:  # an older TRL without step_time: differences of the elapsed clock
        elapsed = [m["elapsed"] for m in steps]
        times = [b - a for a, b in zip([0.0] + elapsed, elapsed)]
    steady = times[1:] or times
    completions_per_step = settings["per_device_train_batch_size"]
    result = {
        "benchmark": "grpo", "model": "gemma-3-1b (random weights)" if gpu else "tiny-gemma-3", "gpu": gpu,
        "note": note, "model_config": REAL_SHAPES["gemma-3-1b"] if gpu else None, "build_seconds": build_seconds,
        "steps": len(steps), "settings": {**settings, "beta": args.beta, "learning_rate": 5e-6,
                                         "rewards": cfg.rewards},
        "trainer": "unsloth" if "Unsloth GRPOTrainer" in run.log_tail(200) else "trl",
        "first_step_seconds": round(times[0], 3) if times else None,
        "seconds_per_step": round(statistics.median(steady), 3) if steady else None,
        "completions_per_second": round(completions_per_step / statistics.median(steady), 2) if steady else None,
        "completion_tokens_per_step": [m.get("completions/mean_length", 0) * completions_per_step for m in steps],
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if gpu else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2) if gpu else None,
        "versions": versions(),
    }
    path = save("grpo", result)
    print(f"{result['model']}: {result['seconds_per_step']} s/step (first step {result['first_step_seconds']} s), "
          f"{result['completions_per_second']} completions/s, peak memory {result['peak_memory_gib']} GiB "
          f"[{result['trainer']} GRPOTrainer] -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
