"""UI under load: p50 / p95 latency of light API calls (`training_status`, `preview_dataset`) from concurrent
gradio_client users, with no job and while a job trains.

    python bench/bench_ui_load.py [--users 20] [--calls 10] [--pace 1.0 0] [--procs 4]

Each --pace value is a scenario, measured idle and while training:
  pace > 0  each user starts a call at most once per `pace` seconds, like the Train tab's 1 s timer (users are
            spread evenly over the interval; a call that runs late delays that user's next one, no catch-up burst);
  pace 0    a closed loop with no think time: saturates the server; its throughput (calls/s) is the number to read.
Users are threads spread over --procs processes, so the load generator's own GIL is not counted as server latency
(the generator still shares the machine's cores with the server and the job).

Targets: p95 under load at most 3x idle, and never above 1 s. Writes bench/results/ui_load[-<n>users]-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
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


def _client(url: str, ssl_context=None):
    from gradio_client import Client

    # gradio_client opens a new httpx client for each request, and each loads the CA bundle into a fresh SSL
    # context (~30 ms of CPU per request, even over plain http): one shared context, as a browser keeps one
    return Client(url, verbose=False, ssl_verify=ssl_context or _ssl_context())


def _ssl_context():
    import httpx

    return httpx.create_ssl_context()  # what httpx builds for each request (CA bundle, SSL_CERT_FILE honoured)


def _call(client, k: int, run_id: str, data: str) -> str:
    """The k-th call of a user: training_status and preview_dataset in turn."""
    from gradio_client import handle_file

    if k % 2:
        client.predict(run_id, api_name="/training_status")
        return "training_status"
    client.predict(handle_file(data), "", "", "train", "", "", "", "", 256, api_name="/preview_dataset")
    return "preview_dataset"


def _run_users(url: str, ids: list[int], users: int, calls: int, pace: float, run_id: str, data: str,
               start, results) -> None:
    """One load process: users ``ids`` as threads; puts [(call, started, seconds), ...] on ``results``."""
    context = _ssl_context()
    clients = {i: _client(url, context) for i in ids}
    records = []
    lock = threading.Lock()

    def user(i: int) -> None:
        due = t0 + pace * i / users
        for k in range(calls):
            time.sleep(max(0.0, due - time.time()))
            started = time.time()
            name = _call(clients[i], k + i, run_id, data)
            with lock:
                records.append((name, started, time.time() - started))
            due = max(due + pace, time.time())

    start.wait(timeout=300)  # every process has its clients connected
    t0 = time.time()
    threads = [threading.Thread(target=user, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for client in clients.values():
        client.close()
    results.put(records)


def _p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))]


def measure(url: str, users: int, calls: int, pace: float, procs: int, run_id: str, data: Path) -> dict:
    ctx = multiprocessing.get_context("spawn")  # the parent holds gradio_client threads: do not fork them
    procs = max(1, min(procs, users))
    start, results = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_run_users, args=(url, list(range(p, users, procs)), users, calls, pace, run_id,
                                                    str(data), start, results)) for p in range(procs)]
    for w in workers:
        w.start()
    records = [r for _ in workers for r in results.get(timeout=600)]
    for w in workers:
        w.join()
    latencies = {"training_status": [], "preview_dataset": []}
    for name, _, seconds in records:
        latencies[name].append(seconds)
    every = [seconds for _, _, seconds in records]
    window = max(s + d for _, s, d in records) - min(s for _, s, _ in records)
    return {"p50": statistics.median(every), "p95": _p95(every), "calls": len(every),
            "calls_per_s": len(every) / window, "seconds": window,
            "by_call": {k: {"p50": statistics.median(v), "p95": _p95(v)} for k, v in latencies.items() if v}}


def _line(label: str, m: dict) -> str:
    return f"{label} p50 {m['p50'] * 1000:.0f} ms p95 {m['p95'] * 1000:.0f} ms ({m['calls_per_s']:.1f} calls/s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--calls", type=int, default=10, help="calls per user in each measurement")
    parser.add_argument("--pace", type=float, nargs="+", default=[1.0, 0.0],
                        help="seconds between a user's call starts; 0 = closed loop (one scenario per value)")
    parser.add_argument("--procs", type=int, default=4, help="processes the users are spread over")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "qa.jsonl"
        data.write_text("\n".join(json.dumps(r) for r in qa_rows(64)) + "\n")
        server = AppServer(tmp / "home").start()
        try:
            from gradio_client import handle_file

            client = _client(server.url)
            client.predict(handle_file(str(data)), "", "", "train", "", "", "", "bench", True,
                           api_name="/save_dataset")
            config = {"model": "tiny-gemma-3", "dataset": "bench", "max_steps": 3}
            warm = client.predict(config, api_name="/start_training")
            while client.predict(warm, api_name="/training_status")["state"] in ("queued", "running"):
                time.sleep(0.5)

            def each_pace(run_id: str) -> dict:
                return {pace: measure(server.url, args.users, args.calls, pace, args.procs, run_id, data)
                        for pace in args.pace}

            idle = each_pace(warm)
            busy_run = client.predict({**config, "max_steps": 100000}, api_name="/start_training")
            while client.predict(busy_run, api_name="/training_status")["step"] < 3:
                time.sleep(0.5)
            step_before = client.predict(busy_run, api_name="/training_status")["step"]
            busy = each_pace(busy_run)
            still = client.predict(busy_run, api_name="/training_status")
            client.predict(busy_run, api_name="/stop_training")
        finally:
            server.stop()
    scenarios = [{"pace": pace, "idle": idle[pace], "training": busy[pace],
                  "p95_ratio": busy[pace]["p95"] / idle[pace]["p95"]} for pace in args.pace]
    result = {"benchmark": "ui_load", "users": args.users, "calls_per_user": args.calls, "processes": args.procs,
              "client": "gradio_client, one shared SSL context per process", "scenarios": scenarios,
              "job_state_during": still["state"], "job_steps_during": still["step"] - step_before}
    path = save("ui_load" if args.users == 20 else f"ui_load-{args.users}users", result)
    for s in scenarios:
        mode = f"pace {s['pace']:g} s" if s["pace"] else "closed loop"
        print(f"{args.users} users, {mode}: {_line('idle', s['idle'])} · {_line('while training', s['training'])}"
              f" · p95 ratio {s['p95_ratio']:.2f}")
    print(f"targets: p95 ratio <= 3, p95 <= 1000 ms; job {still['state']}, {result['job_steps_during']} steps "
          f"during the load -> {path}")


if __name__ == "__main__":
    main()
