"""Training throughput and peak memory: the app's worker, the same training as a bare script, plain TRL + PEFT.

    python bench/bench_train.py [--model tiny-gemma-3|random-gemma-3-270m|random-gemma-3-1b]
                                [--steps 40] [--seq-len 256] [--method lora|qlora] [--packing]

* app:   TrainConfig -> runner -> Unsloth + TRL (what the UI and the CLI do), in this process
* bare:  the same Unsloth + TRL training written as a plain script, in this process
* plain: transformers + PEFT + TRL without Unsloth, in a fresh process (Unsloth patches
         transformers on import, so "plain" cannot share the process)

Steps/s and tokens/s count optimizer steps after the first --skip (warm-up: compilation, autotuning),
timed the same way for all three; peak memory, from before the model loads, is torch's peak allocation on a GPU
and the process's peak resident memory on a CPU (imports included).
On a GPU it also prints MFU against the card's dense bf16 peak. Writes bench/results/train-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (PLAIN_MODEL, held_before_gib, lora_mfu, peak_memory_gib, print_step,  # noqa: E402
                          qa_rows, reset_peak_memory, save, steady_steps_per_second, step_clock, step_profiler,
                          versions)

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def settings(args) -> dict:
    return dict(learning_rate=2e-4, per_device_train_batch_size=args.batch,
                gradient_accumulation_steps=args.accumulation, batch_shaping=not args.no_shaping,
                lora_r=16, lora_alpha=16, max_seq_length=args.seq_len, eval_fraction=0.0,
                gradient_checkpointing=args.gradient_checkpointing, save_steps=100000, seed=3407,
                packing=args.packing, logging_steps=1)


def run_app(data: Path, steps: int, args, home: Path) -> dict:
    from garage.config import TrainConfig
    from garage.jobs.store import RunStore
    from garage.train.runner import execute

    cfg = TrainConfig(model=args.model, dataset=str(data), max_steps=steps, method=args.method,
                      **settings(args)).validate()
    run = RunStore(home / "runs").create(cfg, "bench")
    reset_peak_memory()
    finished = threading.Event()
    threading.Thread(target=watch_steps, args=(run, finished), daemon=True).start()
    try:
        assert execute(run, threading.Event()) == "completed", run.log_tail()
    finally:
        finished.set()
    status = run.status()
    logged = [m for m in run.metrics() if "loss" in m]
    tokens_per_step = logged[-1].get("num_input_tokens_seen", 0) / steps
    rate = steady_steps_per_second([(m["step"], m["time"]) for m in logged], args.skip)
    return {"steps_per_second": rate, "tokens_per_second": rate * tokens_per_step,
            "steps_per_second_whole_run": steps / status["train_seconds"], "peak_gib": peak_memory_gib(),
            "held_before_gib": held_before_gib(), "first_step_seconds": status.get("first_step_seconds"),
            "params": status.get("parameters"), "trainable": status.get("trainable_parameters"),
            "passes": f"{status.get('passes_per_step')} x {status.get('rows_per_pass')} rows"}


def watch_steps(run, finished: threading.Event) -> None:
    """Print the app run's steps as they land in metrics.jsonl (the worker owns the trainer's callbacks)."""
    seen, last = 0, time.time()
    while not finished.wait(1.0):
        for record in [m for m in run.metrics() if "loss" in m][seen:]:
            print_step("app", record["step"], record["time"] - last)
            seen, last = seen + 1, record["time"]


def run_bare(data: Path, steps: int, args, out: Path) -> dict:
    """What a user would write by hand with Unsloth + TRL."""
    from unsloth import FastLanguageModel
    from unsloth.chat_templates import train_on_responses_only

    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from garage.device import has_gpu
    from garage.models.loading import model_source
    from garage.train.sft import parameter_counts

    reset_peak_memory()  # from before loading, as for the others
    model, tokenizer = FastLanguageModel.from_pretrained(model_source(args.model), max_seq_length=args.seq_len,
                                                         load_in_4bit=args.method == "qlora" and has_gpu())
    model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=16, lora_dropout=0.0, random_state=3407,
                                             use_gradient_checkpointing="unsloth" if args.gradient_checkpointing
                                             else False, target_modules=TARGETS)
    trainer = SFTTrainer(model=model, processing_class=tokenizer,
                         train_dataset=load_dataset("json", data_files=str(data), split="train"),
                         args=SFTConfig(output_dir=str(out), max_length=args.seq_len, max_steps=steps,
                                        learning_rate=2e-4, per_device_train_batch_size=args.batch,
                                        gradient_accumulation_steps=args.accumulation, logging_steps=1,
                                        save_steps=100000, report_to="none", seed=3407,
                                        disable_tqdm=True, warmup_steps=0.03, weight_decay=0.01,
                                        packing=args.packing, bf16=has_gpu(),
                                        gradient_checkpointing=False,  # get_peft_model set Unsloth's mode up
                                        include_num_input_tokens_seen="non_padding"))
    clock = step_clock("bare")
    trainer.add_callback(clock)
    profiler = step_profiler("bare", args.skip + 1, args.profile) if args.profile else None
    if profiler:
        trainer.add_callback(profiler)
    trainer = train_on_responses_only(trainer, instruction_part="<start_of_turn>user\n",
                                      response_part="<start_of_turn>model\n")
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    rate = steady_steps_per_second(clock.times, args.skip)
    counts = parameter_counts(model)
    return {"steps_per_second": rate, "tokens_per_second": rate * trainer.state.num_input_tokens_seen / steps,
            "steps_per_second_whole_run": steps / seconds,
            "peak_gib": peak_memory_gib(), "held_before_gib": held_before_gib(), "params": counts["parameters"],
            "trainable": counts["trainable_parameters"],
            "profile": profiler.summary if profiler else None}


PLAIN = r'''
import json, os, sys, time, torch
sys.path.insert(0, sys.argv[10])
from bench.common import (held_before_gib, peak_memory_gib, reset_peak_memory, steady_steps_per_second, step_clock,
                          step_profiler)
from datasets import load_dataset
from trl import SFTConfig, SFTTrainer
source, data, steps, out, seq, batch, packing, gc, skip, root, accumulation, profile = sys.argv[1:13]
steps, seq, batch, packing, gc, skip = int(steps), int(seq), int(batch), packing == "1", gc == "1", int(skip)
''' + PLAIN_MODEL + r'''
ds = load_dataset("json", data_files=data, split="train")
tr = SFTTrainer(model=model, processing_class=tok, train_dataset=ds, args=SFTConfig(output_dir=out, max_length=seq,
    max_steps=steps, learning_rate=2e-4, per_device_train_batch_size=batch, logging_steps=1, save_steps=100000,
    gradient_accumulation_steps=int(accumulation),
    report_to="none", seed=3407, disable_tqdm=True, bf16=gpu, packing=packing, gradient_checkpointing=gc,
    include_num_input_tokens_seen="non_padding"))
clock = step_clock("plain")
tr.add_callback(clock)
profiler = step_profiler("plain", skip + 1, int(profile)) if int(profile) else None
if profiler: tr.add_callback(profiler)
t = time.perf_counter(); tr.train(); s = time.perf_counter() - t
rate = steady_steps_per_second(clock.times, skip)
print(json.dumps({"steps_per_second": rate, "tokens_per_second": rate * tr.state.num_input_tokens_seen / steps,
                  "steps_per_second_whole_run": steps / s,
                  "peak_gib": peak_memory_gib(), "held_before_gib": held_before_gib(),
                  "profile": profiler.summary if profiler else None}))
'''


def run_plain(data: Path, steps: int, args, out: Path) -> dict:
    from garage.models.loading import model_source

    done = subprocess.run([sys.executable, "-c", PLAIN, model_source(args.model), str(data), str(steps), str(out),
                           str(args.seq_len), str(args.batch), "1" if args.packing else "0",
                           "1" if args.gradient_checkpointing else "0", str(args.skip), str(ROOT),
                           str(args.accumulation), str(args.profile)],
                          stdout=subprocess.PIPE, text=True)  # its stderr (progress, errors) shows as it runs
    if done.returncode:
        return {"error": f"exit {done.returncode} (its error is printed above)"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(part: str, result: dict) -> dict:
    """Each part's numbers as soon as it ends: a run cut off by a time limit keeps the parts that finished."""
    print(f"{part}: {json.dumps(result)}", flush=True)
    return result


def best(results: list[dict]) -> dict:
    return max(results, key=lambda r: r.get("tokens_per_second") or 0, default={})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny-gemma-3")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--accumulation", type=int, default=1,
                        help="gradient accumulation steps: each optimizer step is --batch x this rows; the app may "
                             "run them in fewer passes (batch shaping), bare and plain run --accumulation passes")
    parser.add_argument("--no-shaping", action="store_true", help="the app runs the configured passes too")
    parser.add_argument("--profile", type=int, default=0,
                        help="torch.profiler over this many steps after --skip in bare and plain: wall vs GPU-busy "
                             "time per step, kernels and CPU operators per step, the heaviest of each")
    parser.add_argument("--method", default="lora", choices=("lora", "qlora"))
    parser.add_argument("--packing", action="store_true")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternate app and bare this many times, and run the plain baseline as often")
    parser.add_argument("--skip", type=int, default=5, help="steps left out of the rate (warm-up)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="steps of an untimed app run first (imports, kernels); 0: none, step 1 shows them")
    parser.add_argument("--parts", default="plain,app,bare",
                        help="which of plain, app and bare to run (a GPU session short of time skips bare)")
    parser.add_argument("--plain-first", action="store_true",
                        help="run the plain baseline before ours (a run cut short still has the baseline)")
    parser.add_argument("--memory", action="store_true",
                        help="for peak memory on a CPU: one app run and one plain run, each the first to load a "
                             "model in its process (no warm-up, no bare), so neither peak holds another's leftovers")
    args = parser.parse_args()
    if args.memory:
        args.rounds, args.warmup, args.parts = 1, 0, "app,plain"
    parts = {p.strip() for p in args.parts.split(",")}
    if "app" in parts or "bare" in parts:
        from garage.models.loading import import_unsloth

        import_unsloth()  # before anything imports transformers (building the model does), or Unsloth patches less
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("GARAGE_HOME", str(tmp / "home"))
        data = tmp / "qa.jsonl"
        rows = qa_rows(max(64, args.steps * args.batch * args.accumulation), max_words=max(60, args.seq_len // 2))
        data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        plain_runs = range(args.rounds if "plain" in parts else 0)
        plains = []
        if args.plain_first:
            plains = [report("plain", run_plain(data, args.steps, args, tmp / f"plain{i}")) for i in plain_runs]
        if "app" in parts and args.warmup:
            report("app warm-up", run_app(data, args.warmup, args, tmp))
        app, bare = [], []
        for i in range(args.rounds):
            if "app" in parts:
                app.append(report("app", run_app(data, args.steps, args, tmp)))
            if "bare" in parts:
                bare.append(report("bare", run_bare(data, args.steps, args, tmp / f"bare{i}")))
        if not args.plain_first:
            plains = [report("plain", run_plain(data, args.steps, args, tmp / f"plain{i}")) for i in plain_runs]
    plain, best_app, best_bare = best(plains), best(app), best(bare)
    counted = best_bare if "params" in best_bare else best_app
    mfu = lora_mfu(best_app.get("tokens_per_second") or 0, counted.get("params") or 0, counted.get("trainable") or 0)
    result = {"benchmark": "train", "model": args.model, "steps": args.steps, "method": args.method,
              "settings": settings(args), "parts": sorted(parts), "env": block_compile_env(),
              "versions": versions(), "app": app, "bare_unsloth": bare, "plain_trl_peft": plains,
              "ratio_app_vs_bare": ratio(best_app, best_bare, "tokens_per_second"),
              # tokens/s, not steps/s: with packing, TRL fills each row to max length while Unsloth goes padding-free
              # (same rows per step, no padding), so their steps carry different numbers of tokens
              "ratio_app_vs_plain": ratio(best_app, plain, "tokens_per_second"),
              "memory_ratio_app_vs_plain": ratio(best_app, plain, "peak_gib"),
              # on a CPU: what loading and training took above what the process held before (its imports)
              "memory_above_start_ratio_app_vs_plain": ratio(above_start(best_app), above_start(plain), "gib"),
              "mfu": mfu}
    tag = (f"{Path(args.model).name}-{args.method}-{args.seq_len}{'-packing' if args.packing else ''}"
           f"{f'-batch{args.batch}' if args.batch != 4 else ''}"
           f"{f'-accumulation{args.accumulation}' if args.accumulation != 1 else ''}"
           f"{'-no-shaping' if args.no_shaping and args.accumulation != 1 else ''}"
           f"{'-profile' if args.profile else ''}{'-memory' if args.memory else ''}")  # never replace a rate
    path = save(f"train-{tag}{variant_suffix()}", result)
    print(f"{tag}: tokens/s app {rate_text(best_app)} · bare Unsloth+TRL {rate_text(best_bare)} · "
          f"plain TRL+PEFT {rate_text(plain)}")
    print(f"tokens/s ratio app/bare = {number(result['ratio_app_vs_bare'])} (target >= 0.95) · app/plain = "
          f"{number(result['ratio_app_vs_plain'])} · memory app/plain = {number(result['memory_ratio_app_vs_plain'])}"
          f" (above start {number(result['memory_above_start_ratio_app_vs_plain'])})"
          f" · MFU = {number(mfu)} -> {path}")


def above_start(result: dict) -> dict:
    peak, held = result.get("peak_gib"), result.get("held_before_gib")
    return {"gib": peak - held} if peak is not None and held is not None else {}


def ratio(ours: dict, theirs: dict, key: str) -> float | None:
    return ours[key] / theirs[key] if ours.get(key) and theirs.get(key) else None


def number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def rate_text(result: dict) -> str:
    if not result.get("tokens_per_second"):
        return "not run"
    return f"{result['tokens_per_second']:.0f} ({result['steps_per_second']:.2f} steps/s)"


def block_compile_env() -> dict:
    """Unsloth's compile switches as this run had them (its per-block compile dominates a GPU run's first steps)."""
    return {k: v for k, v in os.environ.items() if k.startswith(("UNSLOTH_BLOCK_COMPILE", "UNSLOTH_COMPILE_DISABLE"))}


def variant_suffix() -> str:
    """A run with Unsloth's per-block compile on (the app turns it off) keeps a result file of its own."""
    return "-block-compile" if os.environ.get("UNSLOTH_BLOCK_COMPILE") == "1" else ""


if __name__ == "__main__":
    main()
