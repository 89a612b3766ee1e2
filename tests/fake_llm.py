"""A local stand-in for the Gemini REST API and an OpenAI-compatible endpoint (tests and the benchmark).

It speaks enough of both for the real clients (``google-genai``, ``openai``):

    POST /v1beta/models/{model}:generateContent   (also /v1/...)   Gemini
    POST /v1/chat/completions                                      OpenAI-compatible

By default it answers like a diligent writer: pairs made from the sentences
between the <document> tags, a summary, or ratings (9, or 2 for an answer holding
"BAD", and supported=false for one holding "UNSUPPORTED"). ``script`` (replies
used first, in order) and ``rule`` (a function of the request) inject 429s, 5xx,
slow or malformed replies. Every request is recorded in ``requests``.

    with FakeLLMServer(latency=0.3) as server:
        os.environ["GOOGLE_GEMINI_BASE_URL"] = server.url
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

_GEMINI_PATH = re.compile(r"^/(v1|v1beta|v1alpha)/models/([^:/]+):generateContent$")
_DOC = re.compile(r"<document>\n(.*?)\n</document>", re.S)
_PAIRS = re.compile(r"<pairs>\n(.*?)\n</pairs>", re.S)
_N = re.compile(r"Write exactly (\d+)")


@dataclass
class Reply:
    """One scripted answer. ``text`` is model output (wrapped in the API's envelope); ``error`` an error message."""

    status: int = 200
    text: str | None = None
    error: str | None = None
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None


def rate_limited(retry_after: str | None = "1") -> Reply:
    return Reply(429, error="Resource has been exhausted (e.g. check quota).",
                 headers={"Retry-After": retry_after} if retry_after is not None else {})


def server_error(status: int = 500) -> Reply:
    return Reply(status, error="Internal error encountered.")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip()) > 3]


def default_answer(request: dict) -> str:
    """What a cooperative model would reply (JSON text)."""
    prompt = request["prompt"]
    pairs_block = _PAIRS.search(prompt)
    if pairs_block:
        items = json.loads(pairs_block.group(1))
        ratings = [{"index": it["index"], "rating": 2 if "BAD" in it["answer"] else 9,
                    "supported": "UNSUPPORTED" not in it["answer"]} for it in items]
        return json.dumps({"ratings": ratings})
    doc = _DOC.search(prompt)
    text = doc.group(1) if doc else prompt
    found = sentences(text) or [text.strip()]
    if '{"summary"' in prompt:
        return json.dumps({"summary": " ".join(found[:2])})
    match = _N.search(prompt)
    n = int(match.group(1)) if match else 3
    pairs = []
    for i in range(n):
        sentence = found[i % len(found)]
        words = re.findall(r"\w+", sentence)
        pair = {"question": f"What is said about {' '.join(words[:5])} (item {i + 1})?", "answer": sentence}
        if '"reasoning"' in prompt:
            pair["reasoning"] = f"Step 1: The text says: {sentence}\nStep 2: So the answer follows."
        pairs.append(pair)
    return json.dumps({"pairs": pairs})


class FakeLLMServer:
    def __init__(self, latency: float = 0.0, valid_keys: set[str] | None = None):
        self.latency = latency
        self.valid_keys = valid_keys
        self.script: list[Reply] = []
        self.rule: Callable[[dict], Reply | None] | None = None
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------
    def reset(self) -> "FakeLLMServer":
        """Forget scripted replies, rules, keys, latency and recorded requests (between tests)."""
        self.script.clear()
        self.rule = None
        self.valid_keys = None
        self.latency = 0.0
        self.requests.clear()
        return self

    def start(self) -> "FakeLLMServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                owner._handle(self)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The Gemini base URL (for ``GOOGLE_GEMINI_BASE_URL`` or ``base_url``)."""
        assert self._server is not None, "start() the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def openai_url(self) -> str:
        return f"{self.url}/v1"

    def documents(self) -> list[str]:
        """The <document> text of each generation request, in arrival order."""
        with self._lock:
            return [r["document"] for r in self.requests if r["document"] is not None and r["kind"] == "generate"]

    # --- one request -------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        path = handler.path.split("?", 1)[0]
        gemini = _GEMINI_PATH.match(path)
        if gemini:
            api, model = "gemini", gemini.group(2)
            key = handler.headers.get("x-goog-api-key") or ""
            prompt = "\n".join(p.get("text", "") for c in body.get("contents", []) for p in c.get("parts", []))
            system = "\n".join(p.get("text", "") for p in (body.get("systemInstruction") or {}).get("parts", []))
        elif path == "/v1/chat/completions":
            api, model = "openai", body.get("model", "")
            key = (handler.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
            messages = body.get("messages", [])
            prompt = "\n".join(m.get("content", "") for m in messages if m.get("role") == "user")
            system = "\n".join(m.get("content", "") for m in messages if m.get("role") == "system")
        else:
            self._send(handler, 404, {"error": {"code": 404, "message": f"no route {path}", "status": "NOT_FOUND"}})
            return
        doc = _DOC.search(prompt)
        kind = "rate" if "<pairs>" in prompt else ("summary" if '{"summary"' in prompt else "generate")
        with self._lock:
            request = {"n": len(self.requests), "api": api, "model": model, "prompt": prompt, "system": system,
                       "key": key, "body": body, "kind": kind, "document": doc.group(1) if doc else None,
                       "time": time.monotonic()}
            self.requests.append(request)
            reply = self.script.pop(0) if self.script else None
        if reply is None and self.rule is not None:
            reply = self.rule(request)
        if reply is None and self.valid_keys is not None and key not in self.valid_keys:
            reply = (Reply(400, error=f"API key not valid. Please pass a valid API key. (got {key})")
                     if api == "gemini" else Reply(401, error=f"Incorrect API key provided: {key}"))
        if reply is None:
            reply = Reply(200, text=default_answer(request))
        delay = reply.delay + (self.latency if reply.status == 200 else 0.0)
        if delay:
            time.sleep(delay)
        try:
            if reply.raw is not None:
                self._send_bytes(handler, reply.status, reply.raw, reply.headers)
            elif reply.status != 200 or reply.error:
                self._send(handler, reply.status, self._error_body(api, reply), reply.headers)
            else:
                self._send(handler, 200, self._ok_body(api, model, reply.text or "", prompt), reply.headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a time-out test)

    @staticmethod
    def _error_body(api: str, reply: Reply) -> dict:
        status_names = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                        429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
        if api == "gemini":
            error = {"code": reply.status, "message": reply.error or "error",
                     "status": status_names.get(reply.status, "UNKNOWN")}
            if reply.status == 400 and "API key not valid" in (reply.error or ""):
                error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                                     "domain": "googleapis.com"}]
            return {"error": error}
        return {"error": {"message": reply.error or "error", "type": status_names.get(reply.status, "error"),
                          "code": reply.status}}

    @staticmethod
    def _ok_body(api: str, model: str, text: str, prompt: str) -> dict:
        n_in, n_out = max(1, len(prompt) // 4), max(1, len(text) // 4)
        if api == "gemini":
            return {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP",
                                    "index": 0}],
                    "usageMetadata": {"promptTokenCount": n_in, "candidatesTokenCount": n_out,
                                      "totalTokenCount": n_in + n_out},
                    "modelVersion": model}
        return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}}

    def _send(self, handler, status: int, body: dict, headers: dict | None = None) -> None:
        self._send_bytes(handler, status, json.dumps(body).encode(), headers)

    @staticmethod
    def _send_bytes(handler, status: int, data: bytes, headers: dict | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=UTF-8")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()
