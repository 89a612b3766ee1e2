"""A local stand-in for ZeroGPU's device API, the service ``spaces`` (0.51) asks for a GPU on a ZeroGPU Space.

    POST /startup-report   the Space's GPU functions are known (sent at launch)
    POST /schedule         a GPU for one call: {"idle", "nvidiaIndex", "nvidiaUUID", "allowToken"}
    POST /allow            the forked worker process may use it
    POST /release          the call is over

Every request is kept in ``requests`` as (path, query parameters). ``quota_left``: GPU seconds the visitor has
left; a call asking for more is refused (HTTP 429 with how long to wait), as ZeroGPU does. Point
``SPACES_ZERO_DEVICE_API_URL`` at ``url`` before ``import spaces``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class FakeZeroGPU:
    def __init__(self):
        self.requests: list[tuple[str, dict]] = []
        self.quota_left: int | None = None  # None: no limit
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()

    def calls(self, path: str) -> list[dict]:
        return [query for called, query in self.requests if called == path]

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                url = urlparse(self.path)
                fake.requests.append((url.path, {k: v[0] for k, v in parse_qs(url.query).items()}))
                body, status = b"", 200
                query = fake.requests[-1][1]
                if url.path == "/schedule" and fake.quota_left is not None \
                        and int(query.get("durationSeconds", 0)) > fake.quota_left:
                    body, status = json.dumps({"left": fake.quota_left, "wait": 3600}).encode(), 429
                elif url.path == "/schedule":
                    body = json.dumps({"idle": True, "nvidiaIndex": 0, "nvidiaUUID": "GPU-fake-0",
                                       "allowToken": f"allow-{len(fake.requests)}"}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
