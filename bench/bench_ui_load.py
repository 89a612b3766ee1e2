"""UI under load: p50 / p95 latency of light API calls from 20 concurrent gradio_client users,
while a job trains, against the same with no job.

    python bench/bench_ui_load.py [--users 20] [--calls 10]

Targets: p95 under load at most 3x idle, and never above 1 s. Writes bench/results/ui_load-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import qa_rows, save  # noqa: E402
from tests.app_server import AppServer  # noqa: E402


def measure(url: str, users: int, calls: int, run_id: str, data: Path) -> dict:
    from gradio_client import Client, handle_file

    clients = [Client(url, verbose=False) for _ in range(users)]
    latencies: dict[str, list[float]] = {"training_status": [], "preview_dataset": []}
    lock = threading.Lock()

    def user(client, index):
        for i in range(calls):
            started = time.perf_counter()
            if (i + index) % 2:
                client.predict(run_id, api_name="/training_status")
                name = "training_status"
            else:
                client.predict(handle_file(str(data)), "", "", "train", "", "", "", "", 256,
                               api_name="/preview_dataset")
                name = "preview_dataset"
            with lock:
                latencies[name].append(time.perf_counter() - started)

    threads = [threading.Thread(target=user, args=(c, i)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = sorted(latencies["training_status"] + latencies["preview_dataset"])
    return {"p50": statistics.median(every), "p95": every[int(0.95 * (len(every) - 1))], "calls": len(every),
            "by_call": {k: {"p50": statistics.median(v), "p95": sorted(v)[int(0.95 * (len(v) - 1))]}
                        for k, v in latencies.items() if v}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "qa.jsonl"
        data.write_text("\n".join(json.dumps(r) for r in qa_rows(64)) + "\n")
        server = AppServer(tmp / "home").start()
        try:
            client = Client(server.url, verbose=False)
            client.predict(handle_file(str(data)), "", "", "train", "", "", "", "bench", True,
                           api_name="/save_dataset")
            config = {"model": "tiny-gemma-3", "dataset": "bench", "max_steps": 3}
            warm = client.predict(config, api_name="/start_training")
            while client.predict(warm, api_name="/training_status")["state"] in ("queued", "running"):
                time.sleep(0.5)
            idle = measure(server.url, args.users, args.calls, warm, data)
            busy_run = client.predict({**config, "max_steps": 100000}, api_name="/start_training")
            while client.predict(busy_run, api_name="/training_status")["step"] < 3:
                time.sleep(0.5)
            busy = measure(server.url, args.users, args.calls, busy_run, data)
            still = client.predict(busy_run, api_name="/training_status")
            client.predict(busy_run, api_name="/stop_training")
        finally:
            server.stop()
    ratio = busy["p95"] / idle["p95"]
    result = {"benchmark": "ui_load", "users": args.users, "calls_per_user": args.calls, "idle": idle,
              "training": busy, "p95_ratio": ratio, "job_state_during": still["state"],
              "job_step_after": still["step"]}
    path = save("ui_load", result)
    print(f"idle p50 {idle['p50'] * 1000:.0f} ms p95 {idle['p95'] * 1000:.0f} ms · while training p50 "
          f"{busy['p50'] * 1000:.0f} ms p95 {busy['p95'] * 1000:.0f} ms · p95 ratio {ratio:.2f} "
          f"(targets: <= 3, p95 <= 1000 ms) -> {path}")


if __name__ == "__main__":
    main()
