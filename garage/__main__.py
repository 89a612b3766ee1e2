"""Command line: python -m garage {app,train,chat,augment} ...

Same code path as the UI. A failure prints one line to stderr and exits non-zero;
the full trace is in the run's log.
"""

from __future__ import annotations

import argparse
import sys
import time

from garage.errors import GarageError


def cmd_app(args) -> int:
    from garage.ui.app import build_app

    build_app().queue(default_concurrency_limit=4).launch(server_name=args.host, server_port=args.port)
    return 0


def cmd_train(args) -> int:
    """Run a config through the same worker and run store as the UI, printing progress."""
    from garage.config import TrainConfig
    from garage.jobs import service

    cfg = TrainConfig.from_yaml(args.config)
    run_id = service.start_training(cfg, args.owner)
    print(f"run {run_id}")
    last = None
    while True:
        status = service.training_status(run_id)
        line = f"{status['state']} step {status['step']}/{status['total_steps'] or '?'}"
        loss = (status.get("latest") or {}).get("loss")
        if loss is not None:
            line += f" loss {loss:.4f}"
        if line != last:
            print(line, flush=True)
            last = line
        if status["state"] not in ("queued", "running"):
            break
        time.sleep(args.poll)
    if status["state"] != "completed":
        print(f"error: run {run_id} {status['state']}: {status.get('reason') or ''}".rstrip(), file=sys.stderr)
        return 1
    print(f"done: {status['output']}")
    return 0


def cmd_chat(args) -> int:
    """A prompt loop printing the base answer and the tuned answer of a run."""
    from pathlib import Path

    from garage.infer.compare import chat_compare
    from garage.infer.engine import GenSettings

    run_id = Path(args.run).name
    settings = GenSettings(max_new_tokens=args.max_new_tokens, greedy=args.greedy, seed=args.seed)
    prompts = [args.prompt] if args.prompt else iter(lambda: input("you> "), "")
    try:
        for prompt in prompts:
            result = chat_compare(prompt, run_id, settings=settings)
            print(f"base > {result['base']}\ntuned> {result['tuned']}", flush=True)
    except (EOFError, KeyboardInterrupt):
        pass
    return 0


def cmd_augment(args) -> int:
    from garage.augment.cli import run

    return run(args)


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
    train.set_defaults(func=cmd_train)

    chat = sub.add_parser("chat", help="chat with a run's base and tuned model")
    chat.add_argument("run", help="run id or run folder")
    chat.add_argument("--prompt", help="one prompt, then exit (default: a prompt loop)")
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.add_argument("--greedy", action="store_true")
    chat.add_argument("--seed", type=int, default=None)
    chat.set_defaults(func=cmd_chat)

    try:
        from garage.augment.cli import add_arguments
    except ImportError:
        add_arguments = None
    if add_arguments:
        augment = sub.add_parser("augment", help="turn documents into Q/A conversations")
        add_arguments(augment)
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
