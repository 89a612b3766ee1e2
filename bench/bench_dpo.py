"""DPO throughput and peak memory: the app's worker against plain TRL DPOTrainer + PEFT, in one run.

    python bench/bench_dpo.py [--model tiny-gemma-3|random-gemma-3-270m|random-gemma-3-1b] [--steps 20]
                              [--seq-len 256] [--batch 4] [--memory]

* app:   TrainConfig (method dpo) -> runner -> Unsloth + TRL's DPOTrainer (what the UI and the CLI do), here
* plain: transformers + PEFT + TRL's DPOTrainer without Unsloth, in a fresh process (Unsloth patches transformers
         on import, so "plain" cannot share the process)

Both train the same LoRA (r 16 on every projection) on the same pairs (a conversation's answer chosen, another
row's answer rejected), the same batch and steps. Tokens/s counts each pair's prompt with both answers under the
model's chat template, after the first --skip steps (warm-up), timed the same way for both; peak memory is torch's
peak allocation on a GPU and the process's peak resident memory on a CPU. Writes bench/results/dpo-<...>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_train import number, ratio, report  # noqa: E402
from bench.common import (PLAIN_MODEL, held_before_gib, peak_memory_gib, qa_rows, reset_peak_memory,  # noqa: E402
                          save, steady_steps_per_second, versions)


def pairs(n: int, max_words: int) -> list[dict]:
    """TRL's conversational pairs: each conversation's answer chosen, the next row's answer rejected."""
    rows = qa_rows(n, max_words=max_words)
    return [{"prompt": row["messages"][:1], "chosen": row["messages"][1:],
             "rejected": rows[(i + 1) % n]["messages"][1:]} for i, row in enumerate(rows)]


def tokens_per_pair(model: str, rows: list[dict]) -> float:
    """Mean tokens a pair costs: its prompt with the chosen answer, and with the rejected one."""
    from garage.models.loading import load_tokenizer  # after main()'s import_unsloth, as every garage import here

    tokenizer = load_tokenizer(model)
    count = sum(len(tokenizer.apply_chat_template(row["prompt"] + row[side], tokenize=True)["input_ids"])
                for row in rows for side in ("chosen", "rejected"))
    return count / len(rows)


def run_app(data: Path, args, home: Path) -> dict:
    from garage.config import TrainConfig
    from garage.jobs.store import RunStore
    from garage.train.runner import execute

    cfg = TrainConfig(model=args.model, dataset=str(data), method="dpo", max_steps=args.steps, beta=0.1,
                      learning_rate=5e-5, per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
                      lora_r=16, lora_alpha=16, max_seq_length=args.seq_len, eval_fraction=0.0, save_steps=100000,
                      gradient_checkpointing=False, logging_steps=1, seed=3407).validate()
    run = RunStore(home / "runs").create(cfg, "bench")
    reset_peak_memory()
    assert execute(run, threading.Event()) == "completed", run.log_tail()
    logged = [m for m in run.metrics() if "loss" in m]
    return {"steps_per_second": steady_steps_per_second([(m["step"], m["time"]) for m in logged], args.skip),
            "peak_gib": peak_memory_gib(), "held_before_gib": held_before_gib(),
            "final_margin": logged[-1].get("rewards/margins")}


PLAIN = r'''
import json, os, sys, time, torch
sys.path.insert(0, sys.argv[7])
from bench.common import held_before_gib, peak_memory_gib, reset_peak_memory, steady_steps_per_second, step_clock
from datasets import load_dataset
from trl import DPOConfig, DPOTrainer
source, data, steps, out, seq, batch, root, skip = sys.argv[1:9]
''' + PLAIN_MODEL + r'''
tr = DPOTrainer(model=model, processing_class=tok, train_dataset=load_dataset("json", data_files=data, split="train"),
    args=DPOConfig(output_dir=out, max_length=int(seq), max_steps=int(steps), learning_rate=5e-5, beta=0.1,
                   per_device_train_batch_size=int(batch), logging_steps=1, save_steps=100000, report_to="none",
                   seed=3407, disable_tqdm=True, bf16=gpu, use_cpu=not gpu))
clock = step_clock("plain")
tr.add_callback(clock)
tr.train()
print(json.dumps({"steps_per_second": steady_steps_per_second(clock.times, int(skip)),
                  "peak_gib": peak_memory_gib(), "held_before_gib": held_before_gib()}))
'''


def run_plain(data: Path, args, out: Path) -> dict:
    from garage.models.loading import model_source

    done = subprocess.run([sys.executable, "-c", PLAIN, model_source(args.model), str(data), str(args.steps),
                           str(out), str(args.seq_len), str(args.batch), str(ROOT), str(args.skip)],
                          stdout=subprocess.PIPE, text=True)  # its stderr (progress, errors) shows as it runs
    if done.returncode:
        return {"error": f"exit {done.returncode} (its error is printed above)"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny-gemma-3")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--skip", type=int, default=3, help="steps left out of the rate (warm-up)")
    parser.add_argument("--memory", action="store_true",
                        help="no warm-up run: the app's model is the first this process loads, as plain's is")
    args = parser.parse_args()
    from garage.models.loading import import_unsloth

    import_unsloth()  # before anything imports transformers, or Unsloth patches less
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("GARAGE_HOME", str(tmp / "home"))
        rows = pairs(max(32, args.steps * args.batch), max_words=max(40, args.seq_len // 4))
        data = tmp / "pairs.jsonl"
        data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        per_pair = tokens_per_pair(args.model, rows)
        if not args.memory:
            report("app warm-up", run_app(data, argparse.Namespace(**{**vars(args), "steps": 3}), tmp))
        app = report("app", run_app(data, args, tmp))
        plain = report("plain", run_plain(data, args, tmp / "plain"))
    for part in (app, plain):
        if part.get("steps_per_second"):
            part["tokens_per_second"] = part["steps_per_second"] * args.batch * per_pair
    result = {"benchmark": "dpo", "model": args.model, "steps": args.steps, "batch": args.batch,
              "seq_len": args.seq_len, "tokens_per_pair": per_pair, "versions": versions(), "app": app,
              "plain_trl_peft": plain, "ratio_app_vs_plain": ratio(app, plain, "tokens_per_second"),
              "memory_ratio_app_vs_plain": ratio(app, plain, "peak_gib")}
    tag = f"{Path(args.model).name}-{args.seq_len}-batch{args.batch}{'-memory' if args.memory else ''}"
    path = save(f"dpo-{tag}", result)
    print(f"dpo {tag}: tokens/s app {number(app.get('tokens_per_second'))} · plain TRL+PEFT "
          f"{number(plain.get('tokens_per_second'))} · ratio app/plain {number(result['ratio_app_vs_plain'])} "
          f"(target >= 1) · memory app/plain {number(result['memory_ratio_app_vs_plain'])} -> {path}")


if __name__ == "__main__":
    main()
