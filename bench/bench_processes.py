"""Several processes against one: the same run (same global batch, same steps) trained by the app's runner with
``gpus: 1`` and with ``gpus: N`` (DDP through accelerate launch), in this one invocation; tokens/s and the ratio.

    python bench/bench_processes.py [--model tiny-gemma-3|random-gemma-3-270m] [--processes 2] [--steps 40]

On a machine without GPUs the N processes are CPU processes (GARAGE_CPU_PROCESSES=1, set here), sharing its
cores: a 2-core machine cannot be made faster by two processes, so there the ratio says what DDP's exchange and
the second process cost, not what a second GPU brings. Tokens/s count the steps after the first --skip (the first
steps compile and warm up), from the run's own metrics (tokens gathered over every process). Also printed: the
largest difference between the two loss curves. Writes bench/results/processes-<device>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import qa_rows, save, versions  # noqa: E402


def train(model: str, data: Path, processes: int, args, home: Path) -> dict:
    from garage.config import TrainConfig
    from garage.jobs.store import RunStore
    from garage.train.runner import execute

    cfg = TrainConfig(model=model, dataset=str(data), max_steps=args.steps, gpus=processes, learning_rate=2e-4,
                      per_device_train_batch_size=args.batch, gradient_accumulation_steps=args.accumulation,
                      max_seq_length=args.seq_len, eval_fraction=0.0, save_steps=100000, logging_steps=1,
                      gradient_checkpointing=False, seed=3407).validate()
    run = RunStore(home / "runs").create(cfg, "bench")
    started = time.perf_counter()
    assert execute(run, threading.Event()) == "completed", run.log_tail()
    wall = time.perf_counter() - started
    steps = [m for m in run.metrics() if "loss" in m and "num_input_tokens_seen" in m]
    first, last = next(m for m in steps if m["step"] > args.skip), steps[-1]
    tokens = last["num_input_tokens_seen"] - first["num_input_tokens_seen"]
    seconds = last["time"] - first["time"]
    return {"processes": processes, "wall_seconds": round(wall, 1), "tokens_per_second": round(tokens / seconds, 1),
            "steps_timed": last["step"] - first["step"], "losses": [m["loss"] for m in steps]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-gemma-3")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--skip", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4, help="rows per pass (of one process)")
    parser.add_argument("--accumulation", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args()
    os.environ.setdefault("GARAGE_CPU_PROCESSES", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        os.environ.setdefault("GARAGE_HOME", str(home / "garage"))
        from garage.files import append_jsonl

        data = home / "qa.jsonl"
        append_jsonl(data, *qa_rows(256))
        one = train(args.model, data, 1, args, home)
        several = train(args.model, data, args.processes, args, home)
    difference = max(abs(a - b) for a, b in zip(one["losses"], several["losses"]))
    ratio = several["tokens_per_second"] / one["tokens_per_second"]
    print(f"{args.model}: 1 process {one['tokens_per_second']:.0f} tokens/s, {args.processes} processes "
          f"{several['tokens_per_second']:.0f} tokens/s: ratio {ratio:.2f}x (wall {one['wall_seconds']} s vs "
          f"{several['wall_seconds']} s, start-up included); loss curves differ by at most {difference:.2e}")
    name = f"processes-{args.model}-{args.processes}"
    print(save(name, {"model": args.model, "cpu_cores": os.cpu_count(), "settings": vars(args), "ratio": round(ratio, 3),
                      "max_loss_difference": difference, "one": one, "several": several, "versions": versions()}))


if __name__ == "__main__":
    main()
