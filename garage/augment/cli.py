"""``python -m garage augment FILES... --pairs N --out PATH``: documents to a Q/A JSONL from a terminal.

The key comes from the environment (GEMINI_API_KEY, OPENAI_API_KEY, or the variable
named by ``--api-key-env``), never from the command line, where other users of the
machine could read it in the process list.
"""

from __future__ import annotations

import argparse
import os
import sys

from garage.augment import curate, export_pairs, extract_text, make_backend, prepare, save_pairs
from garage.augment.config import AugmentConfig, BACKENDS, DEFAULT_GEMINI_MODEL, STYLES
from garage.augment.pipeline import augment
from garage.errors import GarageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = AugmentConfig()
    parser.add_argument("files", nargs="+", metavar="FILE", help="PDF, DOCX, PPTX, TXT, Markdown or HTML files.")
    parser.add_argument("--pairs", type=int, default=d.num_pairs, help="Target number of pairs (default %(default)s).")
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="Where to write the conversations, one {\"messages\": [...]} per line.")
    parser.add_argument("--backend", choices=BACKENDS, default=d.backend, help="Who writes the pairs.")
    parser.add_argument("--model", default=None,
                        help=f"Model name, or a model folder for --backend local (default {d.model} for gemini).")
    parser.add_argument("--base-url", default="", help="Endpoint address (required for --backend openai).")
    parser.add_argument("--api-key-env", default=None, metavar="VAR",
                        help="Environment variable holding the key (default GEMINI_API_KEY / OPENAI_API_KEY).")
    parser.add_argument("--concurrency", type=int, default=d.concurrency, help="Requests in flight.")
    parser.add_argument("--style", choices=STYLES, default=d.style, help="qa, cot (chain of thought) or summary.")
    parser.add_argument("--instruction", default="", help="Audience, language, difficulty... for the writer.")
    parser.add_argument("--chunk-tokens", type=int, default=d.chunk_tokens, help="Tokens per chunk.")
    parser.add_argument("--overlap", type=int, default=d.chunk_overlap, help="Tokens shared by neighbouring chunks.")
    parser.add_argument("--max-requests", type=int, default=d.max_requests, help="Cap on requests, retries included.")
    parser.add_argument("--timeout", type=float, default=d.request_timeout, help="Seconds per request.")
    parser.add_argument("--curate", action=argparse.BooleanOptionalAction, default=True,
                        help="Rate the pairs, drop duplicates and unsupported answers (default on).")
    parser.add_argument("--threshold", type=float, default=d.curate_threshold, help="Least rating kept (1-10).")
    parser.add_argument("--save-as", default=None, metavar="NAME", help="Also save as a dataset in your workspace.")
    parser.add_argument("--user", default=os.environ.get("GARAGE_USER", "local"), help="Workspace owner.")
    parser.add_argument("--job", default=None, help="Job name (default: from the files and settings; reruns resume).")
    parser.add_argument("--plan", action="store_true", help="Only print the plan (chunks, requests, cost).")


def _config(args):
    model = args.model or (DEFAULT_GEMINI_MODEL if args.backend == "gemini" else "")
    if not model:
        raise GarageError(f"--model is required with --backend {args.backend} "
                          f"({'the endpoint model name' if args.backend == 'openai' else 'the model folder'}).")
    return AugmentConfig(backend=args.backend, model=model, base_url=args.base_url, style=args.style,
                         instruction=args.instruction, num_pairs=args.pairs, chunk_tokens=args.chunk_tokens,
                         chunk_overlap=args.overlap, concurrency=args.concurrency, max_requests=args.max_requests,
                         request_timeout=args.timeout, curate_threshold=args.threshold).validate()


def _progress(done: int, total: int, pairs: int, eta) -> None:
    eta_text = f", about {eta:.0f} s left" if eta is not None else ""
    print(f"\r  {done}/{total} chunks, {pairs} pairs{eta_text}   ", end="", file=sys.stderr, flush=True)


def run(args) -> int:
    try:
        return _run(args)
    except GarageError as exc:
        print(f"\nerror: {exc}".replace("\n", " ").strip(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nstopped; run the same command again to continue where it stopped.", file=sys.stderr)
        return 130


def _run(args) -> int:
    cfg = _config(args)
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not api_key:
        raise GarageError(f"The environment variable {args.api_key_env} is not set.")
    docs = extract_text(args.files)
    for doc in docs:
        note = f" (warning: {doc['warning']})" if doc["warning"] else ""
        print(f"{doc['name']}: {doc['chars']} characters{note}", file=sys.stderr)
    prep = prepare(docs, cfg, job=args.job)
    print(f"plan: {prep['plan']['summary']}", file=sys.stderr)
    if args.plan:
        return 0
    backend = make_backend(cfg, api_key=api_key)
    try:
        result = augment(docs, cfg, user=args.user, job=prep["job"], backend=backend, progress=_progress)
        print(f"\n{result.summary()}", file=sys.stderr)
        pairs = result.pairs
        if args.curate and pairs:
            curated = curate(pairs, backend, cfg.curate_threshold, chunks=result.chunks,
                             dedup_threshold=cfg.dedup_threshold, min_support=cfg.min_support,
                             concurrency=cfg.concurrency, instruction=cfg.instruction)
            print(f"curation: {curated.summary()}", file=sys.stderr)
            pairs = curated.kept
    finally:
        backend.close()
    path = export_pairs(pairs, args.out)
    print(f"wrote {len(pairs)} conversation(s) to {path}", file=sys.stderr)
    if args.save_as:
        meta = save_pairs(args.user, args.save_as, pairs, source=f"augment: {', '.join(d['name'] for d in docs)}")
        print(f"saved dataset '{meta.get('name', args.save_as)}' ({meta.get('rows', len(pairs))} rows)",
              file=sys.stderr)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m garage augment",
                                     description="Turn documents into a question/answer dataset.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
