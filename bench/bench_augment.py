"""Benchmark: documents -> pairs against a local fake Gemini with a fixed latency per request.

Compares one request at a time (a plain loop over the chunks with the google-genai
client, as synthetic-data-kit's own create step does with an API endpoint) with
``augment`` at ``--concurrency`` requests in flight. Not a test; run it by hand:

    .venv/bin/python bench/bench_augment.py [--chunks 100] [--latency 0.3] [--concurrency 8] [--also-serial]
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
    args = parser.parse_args()

    os.environ["GARAGE_HOME"] = tempfile.mkdtemp(prefix="garage-bench-")
    from garage.augment import AugmentConfig, augment, chunk_documents
    from garage.augment.fakeserver import FakeLLMServer
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


if __name__ == "__main__":
    sys.exit(main())
