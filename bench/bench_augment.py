"""Benchmark: documents -> pairs against a local fake Gemini with a fixed latency per request, or a local model.

Gemini: compares one request at a time (a plain loop over the chunks with the google-genai
client, as synthetic-data-kit's own create step does with an API endpoint) with
``augment`` at ``--concurrency`` requests in flight. Local model (``--local FOLDER``): ``augment``
at concurrency 1 (one generate() per chunk) against ``--concurrency`` (requests answered together in
shared generate() calls), the same chunks and output length. Not a test; run it by hand:

    .venv/bin/python bench/bench_augment.py [--chunks 100] [--latency 0.3] [--concurrency 8] [--also-serial]
    .venv/bin/python bench/bench_augment.py --local tiny-gemma-3|FOLDER [--chunks 16] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.3, help="Seconds the fake server takes per answer.")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--pairs-per-chunk", type=int, default=3)
    parser.add_argument("--also-serial", action="store_true", help="Also time augment() with concurrency 1.")
    parser.add_argument("--local", help="a model folder (or tiny-gemma-3): time the local backend instead")
    parser.add_argument("--max-tokens", type=int, default=64, help="local: tokens each reply may take")
    args = parser.parse_args()
    if args.local:
        return bench_local(args)

    os.environ["GARAGE_HOME"] = tempfile.mkdtemp(prefix="garage-bench-")
    from garage.augment import AugmentConfig, augment, chunk_documents
    from tests.fake_llm import FakeLLMServer
    from garage.augment.prompts import SCHEMAS, SYSTEM_WRITER, generation_prompt

    key = "bench-key"
    paragraphs = [" ".join(f"Paragraph {i} sentence {s}: station {i} measured {i * 3 + s} millimetres of rain "
                           f"in the month of record {s}." for s in range(5)) for i in range(args.chunks)]
    doc = Path(os.environ["GARAGE_HOME"]) / "weather.txt"
    doc.write_text("\n\n".join(paragraphs), encoding="utf-8")
    cfg = AugmentConfig(num_pairs=args.chunks * args.pairs_per_chunk, chunk_tokens=150, chunk_overlap=0,
                        concurrency=args.concurrency, request_timeout=30)
    docs = [{"name": doc.name, "text": doc.read_text()}]
    chunks = chunk_documents(docs, cfg.chunk_tokens, cfg.chunk_overlap)
    assert len(chunks) == args.chunks, len(chunks)

    with FakeLLMServer(latency=args.latency) as server:
        os.environ["GOOGLE_GEMINI_BASE_URL"] = server.url

        # 1. one request at a time: a plain loop, as synthetic-data-kit does it
        from google import genai
        from google.genai import types

        client = genai.Client(api_key=key, http_options=types.HttpOptions(api_version="v1beta"))
        started = time.perf_counter()
        pairs = 0
        for chunk in chunks:
            response = client.models.generate_content(
                model=cfg.model, contents=generation_prompt("qa", chunk["text"], args.pairs_per_chunk),
                config=types.GenerateContentConfig(system_instruction=SYSTEM_WRITER, response_mime_type="application/json",
                                                   response_schema=SCHEMAS["qa"]))
            pairs += len(json.loads(response.text)["pairs"])
        sequential = time.perf_counter() - started
        print(f"sequential loop : {sequential:6.2f} s  ({len(chunks)} requests, {pairs} pairs)")

        serial = None
        if args.also_serial:
            started = time.perf_counter()
            result = augment(docs, AugmentConfig(**{**cfg.to_dict(), "concurrency": 1}), api_key=key, job="serial")
            serial = time.perf_counter() - started
            print(f"augment c=1     : {serial:6.2f} s  ({result.done_chunks} chunks, {len(result.pairs)} pairs)")

        started = time.perf_counter()
        result = augment(docs, cfg, api_key=key, job="concurrent")
        concurrent = time.perf_counter() - started
        print(f"augment c={args.concurrency:<5} : {concurrent:6.2f} s  ({result.done_chunks} chunks, "
              f"{len(result.pairs)} pairs, {result.stats.get('requests')} requests)")
    print(f"speed-up        : {sequential / concurrent:.1f}x (target >= 5x; ideal {args.concurrency}x)")
    return 0


def bench_local(args) -> int:
    os.environ["GARAGE_HOME"] = tempfile.mkdtemp(prefix="garage-bench-")
    from bench.common import save
    from garage.augment import AugmentConfig, augment, make_backend

    docs = [{"name": "weather.txt", "text": "\n\n".join(
        f"Station {i} measured {i * 3} millimetres of rain in March and {i * 2} in April; it lies at {100 + i} "
        f"metres above the sea, beside the river {chr(65 + i % 26)}." for i in range(args.chunks * 2))}]
    base = dict(backend="local", model=args.local, num_pairs=args.chunks * args.pairs_per_chunk, chunk_tokens=64,
                chunk_overlap=0, max_output_tokens=args.max_tokens, temperature=0.0)
    backend = make_backend(AugmentConfig(**base))  # loaded once, used by both sides
    backend.generate_text("Warm up.", max_tokens=4)
    timings = {}
    for concurrency in (1, args.concurrency):
        calls, tokens = backend.generator.generate_calls, backend.stats.output_tokens
        started = time.perf_counter()
        result = augment(docs, AugmentConfig(**base, concurrency=concurrency), backend=backend, job=f"c{concurrency}")
        seconds = time.perf_counter() - started
        timings[concurrency] = {"seconds": seconds, "chunks": result.total_chunks, "pairs": len(result.pairs),
                                "generate_calls": backend.generator.generate_calls - calls,
                                "output_tokens": backend.stats.output_tokens - tokens}
        print(f"augment c={concurrency:<3}: {seconds:6.2f} s  {json.dumps(timings[concurrency])}")
    ratio = timings[1]["seconds"] / timings[args.concurrency]["seconds"]
    path = save(f"augment-local-{Path(args.local).name}", {"benchmark": "augment_local", "model": args.local,
                                                            "max_tokens": args.max_tokens, "timings": timings,
                                                            "speedup": ratio})
    print(f"speed-up        : {ratio:.2f}x at concurrency {args.concurrency} (one generate() per chunk = 1x) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
