"""Chat speed: time to first token and tokens/s through the app's engine vs bare transformers generate.

    python bench/bench_chat.py [--model tiny-gemma-3] [--tokens 128] [--repeat 5]

Both sides use the same loaded model object in the same process, greedy decoding, the same
prompt through the chat template. Prints the ratios (target >= 0.9) and writes
bench/results/chat-<device>.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import save, versions  # noqa: E402

MESSAGES = [{"role": "user", "content": "Tell me about the capital of France."}]


def bare_generate(model, tokenizer, tokens: int) -> tuple[float, float]:
    import torch
    from transformers import TextIteratorStreamer

    inputs = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True).to(model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
    kwargs = dict(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, streamer=streamer,
                  pad_token_id=tokenizer.pad_token_id)
    started = time.perf_counter()
    worker = threading.Thread(target=lambda: model.generate(**kwargs))
    with torch.inference_mode():
        worker.start()
        first = None
        for _ in streamer:
            if first is None:
                first = time.perf_counter() - started
        worker.join()
    return first, tokens / (time.perf_counter() - started)


def app_generate(engine, model_name: str, tokens: int) -> tuple[float, float]:
    from garage.infer.engine import GenSettings, drain

    base, _ = drain(engine.stream_pair(model_name, MESSAGES, GenSettings(greedy=True, max_new_tokens=tokens)))
    return base.first_token_seconds, base.tokens / base.seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny-gemma-3")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from garage.infer.engine import Engine

    engine = Engine()
    app_generate(engine, args.model, 4)  # load once, warm up
    loaded = engine._current
    bare_generate(loaded.model, loaded.tokenizer, 4)
    app, bare = [], []
    for _ in range(args.repeat):  # interleaved, so drift hits both sides alike
        app.append(app_generate(engine, args.model, args.tokens))
        bare.append(bare_generate(loaded.model, loaded.tokenizer, args.tokens))
    ttft_app, ttft_bare = statistics.median(a[0] for a in app), statistics.median(b[0] for b in bare)
    tps_app, tps_bare = statistics.median(a[1] for a in app), statistics.median(b[1] for b in bare)
    result = {"benchmark": "chat", "model": args.model, "new_tokens": args.tokens, "versions": versions(),
              "app_first_token_s": ttft_app, "bare_first_token_s": ttft_bare, "app_tokens_per_s": tps_app,
              "bare_tokens_per_s": tps_bare, "ratio_tokens_per_s": tps_app / tps_bare,
              "ratio_first_token_speed": ttft_bare / ttft_app}
    path = save("chat", result)
    print(f"tokens/s app {tps_app:.1f} vs bare {tps_bare:.1f} -> ratio {result['ratio_tokens_per_s']:.3f}; "
          f"first token app {ttft_app * 1000:.1f} ms vs bare {ttft_bare * 1000:.1f} ms -> speed ratio "
          f"{result['ratio_first_token_speed']:.3f} (targets >= 0.9) -> {path}")


if __name__ == "__main__":
    main()
