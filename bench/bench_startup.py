"""Start-up: seconds from `python app.py` to the first page served, and the page's first API response (the first
chat token of a cold model load); with --baseline REV the same for that commit, started in turn with ours in one
run, as ratios (ours / baseline: below 1 is faster).

Run: python bench/bench_startup.py [--repeat 3] [--baseline REV]
Prints the medians and writes bench/results/startup-<host>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.app_server import AppServer  # noqa: E402


def measure(root: Path) -> tuple[float, float]:
    """(seconds to the first page, seconds to the first chat answer after it) of the app in ``root``."""
    from gradio_client import Client

    with tempfile.TemporaryDirectory() as home:
        server = AppServer(Path(home), root=root).start()
        try:
            client = Client(server.url, verbose=False)
            started = time.perf_counter()
            client.predict("Hello", "", "", 1, 0.0, 0.95, 64, 1.0, -1, api_name="/chat_compare")
            return server.startup_seconds, time.perf_counter() - started
        finally:
            server.stop()


@contextlib.contextmanager
def checkout(rev: str | None):
    """A work tree of ``rev`` (git worktree, removed afterwards); None: no baseline."""
    if not rev:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="garage-baseline-"))
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(folder), rev], cwd=ROOT, check=True)
    try:
        yield folder
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT, check=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", default=None, help="a commit to compare with (e.g. the one before a change)")
    args = parser.parse_args()
    runs = {"ours": [], "baseline": []}
    with checkout(args.baseline) as base_root:
        for _ in range(args.repeat):  # in turn, so both see the same machine
            runs["ours"].append(measure(ROOT))
            if base_root is not None:
                runs["baseline"].append(measure(base_root))
    result = {"benchmark": "startup", "machine": platform.node(), "python": platform.python_version(),
              "baseline_rev": args.baseline}
    for side, samples in runs.items():
        if samples:
            result[side] = {"seconds_to_first_page": statistics.median(s[0] for s in samples),
                            "seconds_to_first_chat_answer": statistics.median(s[1] for s in samples),
                            "runs": samples}
    line = (f"ours: first page {result['ours']['seconds_to_first_page']:.2f} s, first chat answer (cold model "
            f"load) {result['ours']['seconds_to_first_chat_answer']:.2f} s (medians of {args.repeat})")
    if runs["baseline"]:
        result["ratio_first_page"] = round(result["ours"]["seconds_to_first_page"]
                                           / result["baseline"]["seconds_to_first_page"], 3)
        result["ratio_first_chat_answer"] = round(result["ours"]["seconds_to_first_chat_answer"]
                                                  / result["baseline"]["seconds_to_first_chat_answer"], 3)
        line += (f"; baseline {args.baseline}: {result['baseline']['seconds_to_first_page']:.2f} s, "
                 f"{result['baseline']['seconds_to_first_chat_answer']:.2f} s; ratio (ours / baseline) "
                 f"{result['ratio_first_page']:.2f}x first page, {result['ratio_first_chat_answer']:.2f}x first "
                 "answer")
    out = ROOT / "bench" / "results" / f"startup-{platform.node() or 'host'}.json"
    out.write_text(json.dumps(result, indent=1))
    print(line)


if __name__ == "__main__":
    main()
