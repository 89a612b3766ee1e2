"""A local stand-in for the Hugging Face Hub endpoints that ``HfApi.create_repo`` / ``upload_folder`` call.

    GET  /api/whoami-v2                                 who the bearer token belongs to
    POST /api/repos/create                              200 / 409 exists / 403 read-only token
    POST /api/validate-yaml                             the README's YAML front matter parses (base_model: ids)
    GET  /api/{models,datasets}/{ns}/{name}[/revision/{rev}]   repo info (404 when missing)
    POST /api/{models,datasets}/{ns}/{name}/preupload/{rev}    every file "regular" (inline in the commit)
    POST /api/{models,datasets}/{ns}/{name}/commit/{rev}       NDJSON: header + base64 files, stored

Tokens: ``tokens`` maps a token to (user, role); role "read" gets 403 on writes. ``fail``
maps an action ("create", "preupload", "commit") to how many of its next requests are
dropped without an answer (a network failure); ``error_once`` answers an action's next
request with a given status and message. Every request is kept in ``requests`` (header names lower-cased).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class FakeHub:
    def __init__(self, tokens: dict[str, tuple[str, str]]):
        self.tokens = dict(tokens)
        self.repos: dict[str, dict] = {}      # "model:ns/name" -> {"private", "files": {path: bytes}, "commits"}
        self.requests: list[dict] = []
        self.fail: dict[str, int] = {}
        self.error_once: dict[str, tuple[int, str]] = {}  # action -> (status, message) answered once
        self.error_body_extra = ""            # text a misbehaving server echoes into error bodies
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output quiet
                pass

            def do_GET(self):
                hub._handle(self, "GET")

            def do_POST(self):
                hub._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "FakeHub":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo_id: str, repo_type: str = "model") -> dict[str, bytes]:
        return dict(self.repos.get(f"{repo_type}:{repo_id}", {}).get("files", {}))

    def add_repo(self, repo_id: str, repo_type: str = "model", files: dict | None = None) -> None:
        self.repos[f"{repo_type}:{repo_id}"] = {"private": False, "files": dict(files or {}), "commits": 0}

    # --- plumbing --------------------------------------------------------------------------------
    def _send(self, handler, status: int, body: dict | None = None, error_code: str = "") -> None:
        data = json.dumps(body or {}).encode()
        handler.send_response(status)
        if error_code:
            handler.send_header("X-Error-Code", error_code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _user(self, handler) -> tuple[str, str] | None:
        header = handler.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        return self.tokens.get(token)

    def _drop(self, action: str) -> bool:
        with self._lock:
            if self.fail.get(action, 0) > 0:
                self.fail[action] -= 1
                return True
        return False

    def _handle(self, handler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        path = unquote(urlparse(handler.path).path)
        self.requests.append({"method": method, "path": path, "body": body,
                              "headers": {k.lower(): v for k, v in handler.headers.items()}})
        parts = [p for p in path.split("/") if p]
        action = ("create" if path == "/api/repos/create" else
                  "preupload" if "preupload" in parts else "commit" if "commit" in parts else "other")
        if self._drop(action):
            handler.close_connection = True
            try:
                handler.connection.shutdown(2)
            except OSError:
                pass
            return
        with self._lock:
            planned = self.error_once.pop(action, None)
        if planned:
            return self._send(handler, planned[0], {"error": planned[1]})
        user = self._user(handler)
        if path == "/api/whoami-v2":
            if not user:
                return self._send(handler, 401, {"error": "Invalid credentials in Authorization header"})
            return self._send(handler, 200, {"type": "user", "name": user[0],
                                             "auth": {"type": "access_token",
                                                      "accessToken": {"displayName": "t", "role": user[1]}}})
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(handler, json.loads(body or b"{}").get("content", ""))
        if method == "POST" and path == "/api/repos/create":
            return self._create(handler, user, json.loads(body or b"{}"))
        if len(parts) >= 4 and parts[0] == "api" and parts[1] in ("models", "datasets"):
            repo_type = parts[1][:-1]
            repo_id = f"{parts[2]}/{parts[3]}"
            key = f"{repo_type}:{repo_id}"
            if key not in self.repos:
                return self._send(handler, 404, {"error": "Repository not found"}, "RepoNotFound")
            if method == "GET":
                return self._send(handler, 200, {"id": repo_id, "sha": "0" * 40, "private": self.repos[key]["private"],
                                                 "siblings": [{"rfilename": f} for f in self.repos[key]["files"]]})
            if not user:
                return self._send(handler, 401, {"error": "Invalid credentials"})
            if user[1] != "write" or parts[2] != user[0]:
                return self._send(handler, 403, {"error": "You don't have the rights to write to this repo"
                                                 + self.error_body_extra})
            if len(parts) >= 5 and parts[4] == "preupload":
                files = json.loads(body)["files"]
                return self._send(handler, 200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                            "shouldIgnore": False, "oid": None} for f in files]})
            if len(parts) >= 5 and parts[4] == "commit":
                return self._commit(handler, key, repo_id, body)
        return self._send(handler, 404, {"error": f"Not found: {path}"})

    def _validate_yaml(self, handler, content: str) -> None:
        import yaml

        try:
            meta = yaml.safe_load(content.split("---")[1]) if content.startswith("---") else {}
        except (yaml.YAMLError, IndexError) as exc:
            return self._send(handler, 400, {"errors": [{"message": f"YAML: {exc}"}]})
        if not isinstance(meta, dict):
            return self._send(handler, 400, {"errors": [{"message": "metadata must be a mapping"}]})
        bases = meta.get("base_model") or []
        for base in [bases] if isinstance(bases, str) else bases:  # the Hub wants ids of models it has
            if not re.fullmatch(r"[\w.-]+/[\w.-]+", str(base)):
                return self._send(handler, 400, {"errors": [{"message": f'"base_model" with value "{base}" is '
                                                                        "not valid. Use a model id from "
                                                                        "https://hf.co/models."}]})
        return self._send(handler, 200, {"errors": [], "warnings": []})

    def _create(self, handler, user, payload: dict) -> None:
        if not user:
            return self._send(handler, 401, {"error": "Invalid credentials in Authorization header"})
        namespace = payload.get("organization") or user[0]
        repo_type = payload.get("type") or "model"
        repo_id = f"{namespace}/{payload['name']}"
        if user[1] != "write" or namespace != user[0]:
            return self._send(handler, 403, {"error": "You don't have the rights to create a repo here"
                                             + self.error_body_extra})
        prefix = "datasets/" if repo_type == "dataset" else ""
        url = f"{self.url}/{prefix}{repo_id}"
        key = f"{repo_type}:{repo_id}"
        if key in self.repos:
            return self._send(handler, 409, {"error": "You already created this model repo", "url": url})
        self.repos[key] = {"private": payload.get("visibility") == "private" or bool(payload.get("private")),
                           "files": {}, "commits": 0}
        return self._send(handler, 200, {"url": url, "name": repo_id})

    def _commit(self, handler, key: str, repo_id: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return self._send(handler, 400, {"error": "missing header"})
        for item in lines[1:]:
            if item["key"] == "file":
                value = item["value"]
                self.repos[key]["files"][value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "deletedFile":
                self.repos[key]["files"].pop(item["value"]["path"], None)
            else:
                return self._send(handler, 400, {"error": f"unsupported commit operation {item['key']}"})
        self.repos[key]["commits"] += 1
        oid = hashlib.sha1(body).hexdigest()
        prefix = "datasets/" if key.startswith("dataset:") else ""
        return self._send(handler, 200, {"commitUrl": f"{self.url}/{prefix}{repo_id}/commit/{oid}",
                                         "commitOid": oid, "pullRequestUrl": None})
