"""Start-up: seconds from `python app.py` to the first page served, and to the first chat token.

Run: python bench/bench_startup.py [--repeat 3]
Prints the median and writes bench/results/startup-<host>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.app_server import AppServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    page, first_token = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as home:
            server = AppServer(Path(home)).start()
            try:
                page.append(server.startup_seconds)
                from gradio_client import Client

                client = Client(server.url, verbose=False)
                started = time.perf_counter()
                client.predict("Hello", "", "", 1, 0.0, 0.95, 64, 1.0, -1, api_name="/chat_compare")
                first_token.append(time.perf_counter() - started)
            finally:
                server.stop()
    result = {"benchmark": "startup", "machine": platform.node(), "python": platform.python_version(),
              "seconds_to_first_page": statistics.median(page), "runs": page,
              "seconds_to_first_chat_token_after_page": statistics.median(first_token),
              "first_token_runs": first_token}
    out = ROOT / "bench" / "results" / f"startup-{platform.node() or 'host'}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"first page: {result['seconds_to_first_page']:.2f} s (median of {len(page)}), "
          f"first chat token (cold model load): {result['seconds_to_first_chat_token_after_page']:.2f} s")


if __name__ == "__main__":
    main()
