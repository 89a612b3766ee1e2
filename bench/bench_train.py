"""Training throughput: the app's worker against the same training in a bare script, and against plain TRL + PEFT.

    python bench/bench_train.py [--steps 40] [--model tiny-gemma-3]

* app:   TrainConfig -> Worker -> runner -> Unsloth + TRL (what the UI and CLI do)
* bare:  the same Unsloth + TRL training written as a plain script, in the same process
* plain: transformers + PEFT + TRL with no Unsloth, in a fresh process (Unsloth patches
         transformers on import, so "plain" cannot share the process)

Steps/s counts only trainer.train() in each case. Prints the ratios; writes bench/results/train-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import qa_rows, save, versions  # noqa: E402

SETTINGS = dict(learning_rate=2e-4, per_device_train_batch_size=4, gradient_accumulation_steps=1, lora_r=16,
                lora_alpha=16, max_seq_length=256, eval_fraction=0.0, gradient_checkpointing=False,
                save_steps=100000, seed=3407)


def run_app(data: Path, steps: int, model: str, home: Path) -> float:
    from garage.config import TrainConfig
    from garage.jobs.store import RunStore
    from garage.train.runner import execute

    cfg = TrainConfig(model=model, dataset=str(data), max_steps=steps, **SETTINGS).validate()
    run = RunStore(home / "runs").create(cfg, "bench")
    assert execute(run, threading.Event()) == "completed", run.log_tail()
    return steps / run.status()["train_seconds"]


def run_bare(data: Path, steps: int, model: str, out: Path) -> float:
    """What a user would write by hand with Unsloth + TRL."""
    from unsloth import FastLanguageModel
    from unsloth.chat_templates import train_on_responses_only

    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from garage.train.loading import model_source

    model_obj, tokenizer = FastLanguageModel.from_pretrained(model_source(model), max_seq_length=256,
                                                             load_in_4bit=False)
    model_obj = FastLanguageModel.get_peft_model(model_obj, r=16, lora_alpha=16, lora_dropout=0.0,
                                                 use_gradient_checkpointing=False, random_state=3407,
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                 "gate_proj", "up_proj", "down_proj"])
    dataset = load_dataset("json", data_files=str(data), split="train")
    trainer = SFTTrainer(model=model_obj, processing_class=tokenizer, train_dataset=dataset, args=SFTConfig(
        output_dir=str(out), max_length=256, max_steps=steps, learning_rate=2e-4, per_device_train_batch_size=4,
        gradient_accumulation_steps=1, logging_steps=1, save_steps=100000, report_to="none", seed=3407,
        disable_tqdm=True, warmup_steps=0.03, weight_decay=0.01, optim="adamw_torch",
        include_num_input_tokens_seen="non_padding"))
    trainer = train_on_responses_only(trainer, instruction_part="<start_of_turn>user\n",
                                      response_part="<start_of_turn>model\n")
    started = time.perf_counter()
    trainer.train()
    return steps / (time.perf_counter() - started)


PLAIN = r'''
import json, sys, time, torch
from datasets import load_dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer
source, data, steps, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if not torch.cuda.is_available():  # TRL 1.15's fused log-prob head is Triton-only
    from unsloth_zoo.cpu.ops import patch_trl_fused_lm_head
    patch_trl_fused_lm_head()
tok = AutoTokenizer.from_pretrained(source)
model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32)
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
    target_modules=["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"]))
ds = load_dataset("json", data_files=data, split="train")
tr = SFTTrainer(model=model, processing_class=tok, train_dataset=ds, args=SFTConfig(output_dir=out, max_length=256,
    max_steps=steps, learning_rate=2e-4, per_device_train_batch_size=4, logging_steps=1, save_steps=100000,
    report_to="none", seed=3407, disable_tqdm=True, assistant_only_loss=False, bf16=torch.cuda.is_available()))
t = time.perf_counter(); tr.train(); print(json.dumps({"steps_per_second": steps / (time.perf_counter() - t)}))
'''


def run_plain(data: Path, steps: int, model: str, out: Path) -> float:
    from garage.train.loading import model_source

    done = subprocess.run([sys.executable, "-c", PLAIN, model_source(model), str(data), str(steps), str(out)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["steps_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--model", default="tiny-gemma-3")
    parser.add_argument("--rounds", type=int, default=2, help="alternate app/bare this many times")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        import os

        os.environ["GARAGE_HOME"] = str(tmp / "home")
        data = tmp / "qa.jsonl"
        data.write_text("\n".join(json.dumps(r) for r in qa_rows(64)) + "\n")
        from garage.train.loading import import_unsloth

        import_unsloth()
        run_app(data, 4, args.model, tmp)  # warm-up: imports, first-call costs
        app, bare = [], []
        for i in range(args.rounds):
            app.append(run_app(data, args.steps, args.model, tmp))
            bare.append(run_bare(data, args.steps, args.model, tmp / f"bare{i}"))
        plain = run_plain(data, args.steps, args.model, tmp / "plain")
    best_app, best_bare = max(app), max(bare)
    result = {"benchmark": "train", "model": args.model, "steps": args.steps, "settings": SETTINGS,
              "versions": versions(), "app_steps_per_second": app, "bare_unsloth_steps_per_second": bare,
              "plain_trl_peft_steps_per_second": plain, "ratio_app_vs_bare": best_app / best_bare,
              "ratio_app_vs_plain": best_app / plain}
    path = save("train", result)
    print(f"app {best_app:.2f} steps/s · bare Unsloth+TRL {best_bare:.2f} · plain TRL+PEFT {plain:.2f}")
    print(f"ratio app/bare = {result['ratio_app_vs_bare']:.3f} (target >= 0.95) · "
          f"app/plain = {result['ratio_app_vs_plain']:.3f} (CPU target >= 1.0) -> {path}")


if __name__ == "__main__":
    main()
