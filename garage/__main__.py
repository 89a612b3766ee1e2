"""Command line: python -m garage {app,train,optimize,flavors,chat,augment,export,bench,job-train} ...

Same code path as the UI. A failure prints one line to stderr and exits non-zero;
the full trace is in the run's log.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import time
from pathlib import Path

from garage.augment import cli as augment_cli
from garage.config import PLACES, TrainConfig, field_specs
from garage.errors import GarageError
from garage.hub import auth, export, publish, zips
from garage.infer.compare import chat_compare
from garage.infer.engine import GenSettings
from garage.jobs import hf_jobs, in_job, service
from garage.jobs.store import RunStore


def cmd_app(args) -> int:
    from garage.ui.app import build_app, launch  # gradio: only the command that serves the page needs it

    launch(build_app(), server_name=args.host, server_port=args.port)
    return 0


def cmd_train(args) -> int:
    """Run a config through the same worker and run store as the UI, printing progress."""
    cfg = TrainConfig.from_yaml(args.config)
    given = {"run_on": args.on, "flavor": args.flavor, "gpus": args.gpus}
    given = {name: value for name, value in given.items() if value is not None}
    if given:  # the YAML's own where-to-train settings unless the command line says otherwise
        cfg = TrainConfig.from_dict({**cfg.to_dict(), **given})
    return follow(service.start_training(cfg, args.owner), args.owner, args.poll)


def follow(run_id: str, owner: str, poll: float) -> int:
    """Print a run's progress until it ends: 0 when it completed, else 1 with its reason on stderr."""
    print(f"run {run_id}")
    job = service.training_status(run_id, owner).get("job")
    if job:
        print(f"job {job['id']} on {job['flavor']}: {job['url']}", flush=True)
    last = None
    while True:
        status = service.training_status(run_id, owner)
        latest = status.get("latest") or {}
        line = f"{status['state']} step {status['step']}/{status['total_steps'] or '?'}"
        if latest.get("loss") is not None:
            line += f" loss {latest['loss']:.4f}"
        if latest.get("best_val_score") is not None:
            line += f" best validation score {latest['best_val_score']:.3f}"
        if line != last:
            print(line, flush=True)
            last = line
        if status["state"] not in ("queued", "running"):
            break
        time.sleep(poll)
    if status["state"] != "completed":
        print(f"error: run {run_id} {status['state']}: {status.get('reason') or ''}".rstrip(), file=sys.stderr)
        return 1
    prompt = status.get("prompt")
    if prompt:
        print(f"best prompt (validation score {prompt['best_score']:.3f}, the starting prompt's "
              f"{prompt['start_score']:.3f}):\n{prompt['best_prompt']}")
    else:
        print(f"done: {status['output']}")
    return 0


OPTIMIZE_FLAGS = ("model", "dataset", "eval_dataset", "val_rows", "metric_calls", "system_prompt", "tuned_run",
                  "reflection_backend", "reflection_model", "reflection_base_url", "answer_format", "rubric")


def cmd_optimize(args) -> int:
    """Optimise a system prompt with GEPA (a run of method prompt), from a config.yaml and/or flags."""
    values = TrainConfig.from_yaml(args.config).to_dict() if args.config else {}
    values.update({name: getattr(args, name) for name in OPTIMIZE_FLAGS if getattr(args, name) is not None})
    return follow(service.optimize_prompt(values, args.owner), args.owner, args.poll)


def cmd_flavors(args) -> int:
    """The Hugging Face Jobs hardware and its price per hour."""
    for flavor in hf_jobs.flavors(auth.require_token(None)):
        print(f"{flavor['name']:<16} ${flavor['usd_per_hour']:>7.2f}/h  {flavor['what']}")
    return 0


def cmd_job_train(args) -> int:
    """Inside a Hugging Face Job (the app starts it): train the uploaded run, push to --repo."""
    return in_job.train(args.folder, args.repo)


def cmd_chat(args) -> int:
    """A prompt loop printing the base answer and the tuned answer of a run."""
    run = RunStore().find(args.run)
    settings = GenSettings(max_new_tokens=args.max_new_tokens, greedy=args.greedy, seed=args.seed)
    prompts = [args.prompt] if args.prompt else iter(lambda: input("you> "), "")
    try:
        for prompt in prompts:
            result = chat_compare(prompt, run, settings=settings)
            print(f"base > {result['base']}\ntuned> {result['tuned']}", flush=True)
    except (EOFError, KeyboardInterrupt):
        pass
    return 0


def cmd_augment(args) -> int:
    return augment_cli.run(args)


def cmd_export(args) -> int:
    """Export a run's adapter / merged model / GGUF to disk, or push it to the Hub (--push)."""
    run = RunStore().find(args.run)
    what = "gguf-" + args.quant if args.format == "gguf" else args.format

    def progress(fraction: float, message: str) -> None:
        print(f"[{fraction:4.0%}] {message}", flush=True)

    if args.push:
        token = auth.require_token(None)
        pushed = publish.push_run(run, args.push, [what], token=token, private=args.private, update=args.update,
                                  progress=progress, examples=args.examples)
        print(pushed["url"])
        return 0
    if args.format == "adapter":
        path = zips.adapter_zip(run, export.exports_dir(run))
    elif args.format == "merged":
        path = export.merged_dir(run, progress=progress)
    else:
        path = export.gguf_file(run, args.quant, progress=progress)
    print(path)
    return 0


BENCHMARKS = ("train", "chat", "startup", "ui_load", "augment", "grpo", "processes", "gepa", "dpo")


def cmd_bench(args) -> int:
    """Run bench/bench_<name>.py with the remaining arguments (the benchmarks live under bench/)."""
    script = Path(__file__).resolve().parents[1] / "bench" / f"bench_{args.name}.py"
    if not script.exists():
        raise GarageError(f"bench/{script.name} is not here: benchmarks run from a checkout of the repository.")
    sys.argv = [str(script), *args.rest]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m garage", description="Gemma Garage")
    sub = parser.add_subparsers(dest="command", required=True)

    app = sub.add_parser("app", help="serve the web app")
    app.add_argument("--host", default=None)
    app.add_argument("--port", type=int, default=None)
    app.set_defaults(func=cmd_app)

    train = sub.add_parser("train", help="train from a config.yaml (the Train tab shows the command)")
    train.add_argument("config")
    train.add_argument("--owner", default="local", help="whose workspace holds the dataset (default: local)")
    train.add_argument("--poll", type=float, default=1.0)
    train.add_argument("--on", choices=PLACES, help="where it trains: here, or hf-jobs (a Hugging Face Job on your "
                                                     "account; HF_TOKEN or hf auth login)")
    train.add_argument("--flavor", help="the Jobs hardware, e.g. a10g-small (see: python -m garage flavors)")
    train.add_argument("--gpus", type=int, help="how many of this machine's GPUs train it (DDP through accelerate "
                                                "launch); on hf-jobs the flavor's GPUs all train")
    train.set_defaults(func=cmd_train)

    optimize = sub.add_parser("optimize", help="optimise a system prompt with GEPA against a metric (no training)")
    optimize.add_argument("config", nargs="?", help="a config.yaml (method prompt); flags below override it")
    for name in OPTIMIZE_FLAGS:
        spec = next(s for s in field_specs(TrainConfig) if s["name"] == name)
        optimize.add_argument("--" + name.replace("_", "-"), type=type(spec["default"]), help=spec["help"])
    optimize.add_argument("--owner", default="local", help="whose workspace holds the dataset (default: local)")
    optimize.add_argument("--poll", type=float, default=1.0)
    optimize.set_defaults(func=cmd_optimize)

    flavors = sub.add_parser("flavors", help="Hugging Face Jobs hardware and prices")
    flavors.set_defaults(func=cmd_flavors)

    job = sub.add_parser("job-train", help="(inside a Hugging Face Job) train the run the app uploaded")
    job.add_argument("folder", help="the folder the job downloaded its inputs into")
    job.add_argument("--repo", required=True, help="the model repo for checkpoints and the trained weights")
    job.set_defaults(func=cmd_job_train)

    chat = sub.add_parser("chat", help="chat with a run's base and tuned model")
    chat.add_argument("run", help="run id or run folder")
    chat.add_argument("--prompt", help="one prompt, then exit (default: a prompt loop)")
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.add_argument("--greedy", action="store_true")
    chat.add_argument("--seed", type=int, default=None)
    chat.set_defaults(func=cmd_chat)

    export = sub.add_parser("export", help="export a run's adapter, merged model or GGUF; --push to the Hub")
    export.add_argument("run", help="run id or run folder")
    export.add_argument("--format", choices=("adapter", "merged", "gguf"), default="adapter")
    export.add_argument("--quant", choices=("q8_0", "f16", "q4_k_m"), default="q8_0", help="GGUF type")
    export.add_argument("--push", metavar="REPO", help="push to this Hub repo (user/name) with a model card")
    export.add_argument("--private", action="store_true", help="make a new repo private")
    export.add_argument("--update", action="store_true", help="push into the repo if it already exists")
    export.add_argument("--examples", type=int, default=None,
                        help="example prompts answered in the model card (default: GARAGE_CARD_EXAMPLES or 3)")
    export.set_defaults(func=cmd_export)

    bench = sub.add_parser("bench", help="run a benchmark: ours against its baseline, printing the ratio")
    bench.add_argument("name", choices=BENCHMARKS)
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options (see its --help)")
    bench.set_defaults(func=cmd_bench)

    augment = sub.add_parser("augment", help="turn documents into Q/A conversations")
    augment_cli.add_arguments(augment)
    augment.set_defaults(func=cmd_augment)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except GarageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
