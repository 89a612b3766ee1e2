"""A local stand-in for the Hugging Face Hub: the repo endpoints that ``HfApi.create_repo`` / ``upload_folder``
and the downloads (``snapshot_download``, ``hf_hub_download``, ``hf download``) call, and the Jobs API.

Repos:
    GET  /api/whoami-v2                                 who the bearer token belongs to
    POST /api/repos/create                              200 / 409 exists / 403 read-only token
    POST /api/validate-yaml                             the README's YAML front matter parses (base_model: ids)
    GET  /api/{models,datasets}/{ns}/{name}[/revision/{rev}]   repo info: sha, private, siblings (404 when missing)
    GET  /api/{models,datasets}/{ns}/{name}/tree/{rev}[/{path}]  files and folders (?recursive=true for all)
    POST /api/{models,datasets}/{ns}/{name}/preupload/{rev}    every file "regular" (inline in the commit)
    POST /api/{models,datasets}/{ns}/{name}/commit/{rev}       NDJSON: header + base64 files, stored
    HEAD/GET /[datasets/]{ns}/{name}/resolve/{rev}/{path}      a file, with X-Repo-Commit, ETag, Content-Length

Reads of a private repo need a token of its owner: without a token 401, with someone else's 404, both with
X-Error-Code RepoNotFound (the Hub does not say that the repo exists). An unknown token is 401 on any read.
{rev} is "main" or a commit sha this server gave (each commit keeps a snapshot of the files).

Jobs (each job really runs its command on this machine, in a fresh folder that is also its HOME):
    GET  /api/jobs/hardware                 HARDWARE (no token needed)
    POST /api/jobs/{ns}                     start a job: JobInfo, or 401 / 403 read token or other namespace /
                                            400 unknown flavor / 402 namespace in ``no_credits``
    GET  /api/jobs/{ns}                     the namespace's JobInfos (?stage=RUNNING&label=k=v filters)
    GET  /api/jobs/{ns}/{id}                JobInfo with the current stage (404 -> the client's JobNotFoundError)
    GET  /api/jobs/{ns}/{id}/logs           SSE: the log so far (?tail=N), then live lines; ends with the job
    POST /api/jobs/{ns}/{id}/cancel         SIGTERM the job's process group (SIGKILL 5 s later); stage CANCELED

Tokens: ``tokens`` maps a token to (user, role); role "read" gets 403 on writes and job starts. ``fail``
maps an action ("create", "preupload", "commit", "job": a job start) to how many of its next requests are
dropped without an answer (a network failure); ``error_once`` answers an action's next
request with a given status and message. Every request is kept in ``requests`` (header names lower-cased).
``jobs`` maps a job id to its record (see ``_start_job``); ``job_env`` is added to every job's environment.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

INVALID_TOKEN = "Invalid credentials in Authorization header"  # the client special-cases this exact text
DEFAULT_JOB_TIMEOUT_S = 30 * 60     # the Hub's timeout for a job that names none
KILL_GRACE_S = 5                    # SIGTERM, then SIGKILL this much later
KEEP_ALIVE_S = 20                   # well above the 5 s a fetch_job_logs(follow=False) waits for a line
NO_CREDITS = ("You need a positive credit balance to run Jobs: add a payment method or buy pre-paid credits "
              "at https://huggingface.co/settings/billing")


def _flavor(name: str, pretty: str, cpu: int, ram: int, usd_per_hour: float,
            gpu: tuple[int, str, int] | None = None, storage: int | None = None) -> dict:
    """One item of GET /api/jobs/hardware, in the Hub's shape (gpu: count, model, GB of memory each)."""
    micro = round(usd_per_hour / 60 * 1e6)  # the Hub bills per minute: cpu-basic $0.01/h is 167 micro-USD
    item = {"name": name, "prettyName": pretty, "cpu": f"{cpu} vCPU", "ram": f"{ram} GB", "accelerator": None,
            "unitCostMicroUSD": micro, "unitCostUSD": micro / 1e6, "unitLabel": "minute"}
    if storage:
        item["ephemeralStorage"] = f"{storage} GB"
    if gpu:
        count, model, vram = gpu  # the client needs all five keys; quantity is a string on the Hub
        item["accelerator"] = {"type": "gpu", "model": model, "quantity": str(count), "vram": f"{count * vram} GB",
                               "manufacturer": "Nvidia"}
    return item


# The flavors huggingface_hub 1.33 knows (its JobHardware enum), with the Hub's prices (docs/guides/jobs.md).
# No "h100": it is neither in 1.33's JobHardware nor in the Hub's published Jobs table, so this server refuses it
# (400) as an unknown flavor; append a _flavor(...) here if a test needs one.
HARDWARE: list[dict] = [
    _flavor("cpu-basic", "CPU Basic", 2, 16, 0.01, storage=50),
    _flavor("cpu-upgrade", "CPU Upgrade", 8, 32, 0.03, storage=50),
    _flavor("cpu-performance", "CPU Performance", 32, 256, 1.90, storage=1024),
    _flavor("cpu-xl", "CPU XL", 16, 124, 1.00, storage=1000),
    _flavor("t4-small", "Nvidia T4 - small", 4, 15, 0.40, (1, "T4", 16), 50),
    _flavor("t4-medium", "Nvidia T4 - medium", 8, 30, 0.60, (1, "T4", 16), 100),
    _flavor("l4x1", "1x Nvidia L4", 8, 30, 0.80, (1, "L4", 24), 400),
    _flavor("l4x4", "4x Nvidia L4", 48, 186, 3.80, (4, "L4", 24), 3200),
    _flavor("l40sx1", "1x Nvidia L40S", 8, 62, 1.80, (1, "L40S", 48), 380),
    _flavor("l40sx4", "4x Nvidia L40S", 48, 382, 8.30, (4, "L40S", 48), 3200),
    _flavor("l40sx8", "8x Nvidia L40S", 192, 1534, 23.50, (8, "L40S", 48), 6500),
    _flavor("a10g-small", "Nvidia A10G - small", 4, 15, 1.00, (1, "A10G", 24), 110),
    _flavor("a10g-large", "Nvidia A10G - large", 12, 46, 1.50, (1, "A10G", 24), 200),
    _flavor("a10g-largex2", "2x Nvidia A10G - large", 24, 92, 3.00, (2, "A10G", 24), 1000),
    _flavor("a10g-largex4", "4x Nvidia A10G - large", 48, 184, 5.00, (4, "A10G", 24), 2000),
    _flavor("a100-large", "Nvidia A100 - large", 12, 142, 2.50, (1, "A100", 80), 1000),
    _flavor("a100x4", "4x Nvidia A100", 48, 568, 10.00, (4, "A100", 80), 4000),
    _flavor("a100x8", "8x Nvidia A100", 96, 1136, 20.00, (8, "A100", 80), 8000),
    _flavor("h200", "Nvidia H200", 23, 256, 5.00, (1, "H200", 141), 3000),
    _flavor("h200x2", "2x Nvidia H200", 46, 512, 10.00, (2, "H200", 141)),
    _flavor("h200x4", "4x Nvidia H200", 92, 1024, 20.00, (4, "H200", 141)),
    _flavor("h200x8", "8x Nvidia H200", 184, 2048, 40.00, (8, "H200", 141)),
    _flavor("rtx-pro-6000", "Nvidia RTX PRO 6000", 23, 256, 2.75, (1, "RTX PRO 6000", 96)),
    _flavor("rtx-pro-6000x2", "2x Nvidia RTX PRO 6000", 46, 512, 5.50, (2, "RTX PRO 6000", 96)),
    _flavor("rtx-pro-6000x4", "4x Nvidia RTX PRO 6000", 92, 1024, 11.00, (4, "RTX PRO 6000", 96)),
    _flavor("rtx-pro-6000x8", "8x Nvidia RTX PRO 6000", 184, 2048, 22.00, (8, "RTX PRO 6000", 96)),
]


def _now() -> str:
    """A Hub timestamp: the client's parse_datetime wants a trailing "Z" (it refuses "+00:00")."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _blob_id(data: bytes) -> str:
    """git's blob sha1: what the Hub gives as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    def __init__(self, tokens: dict[str, tuple[str, str]], no_credits: set[str] | tuple = (),
                 job_env: dict | None = None):
        self.tokens = dict(tokens)
        self.repos: dict[str, dict] = {}      # "model:ns/name" -> {"private", "files": {path: bytes}, "commits",
        #                                        after a commit also "sha" and "history": {sha: files}}
        self.requests: list[dict] = []
        self.fail: dict[str, int] = {}
        self.error_once: dict[str, tuple[int, str]] = {}  # action -> (status, message) answered once
        self.error_body_extra = ""            # text a misbehaving server echoes into error bodies
        self.no_credits = set(no_credits)     # namespaces whose job starts get 402
        self.cut_log_streams = 0              # how many of the next log streams end early, while the job runs
        self.job_env = dict(job_env or {})    # added to every job's environment (e.g. HF_HUB_DISABLE_UPDATE_CHECK)
        self.jobs: dict[str, dict] = {}       # job id -> record (see _start_job)
        self._jobs_root: str | None = None    # one temp folder for all job folders, removed by stop()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output quiet
                pass

            def do_GET(self):
                hub._handle(self, "GET")

            def do_HEAD(self):
                hub._handle(self, "HEAD")

            def do_POST(self):
                hub._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "FakeHub":
        self._thread.start()
        return self

    def stop(self) -> None:
        # Jobs first: a log stream ends only when its job has, and server_close() waits for the streams.
        self._stopping.set()
        for job in list(self.jobs.values()):
            self._kill(job, grace=0)
        for job in list(self.jobs.values()):
            job["done"].wait(KILL_GRACE_S)
        self.server.shutdown()
        self.server.server_close()
        if self._jobs_root:
            shutil.rmtree(self._jobs_root, ignore_errors=True)

    def files(self, repo_id: str, repo_type: str = "model") -> dict[str, bytes]:
        return dict(self.repos.get(f"{repo_type}:{repo_id}", {}).get("files", {}))

    def add_repo(self, repo_id: str, repo_type: str = "model", files: dict | None = None,
                 private: bool = False) -> None:
        self.repos[f"{repo_type}:{repo_id}"] = {"private": private, "files": dict(files or {}), "commits": 0}

    def job(self, job_id: str) -> dict:
        return self.jobs[job_id]

    # --- plumbing --------------------------------------------------------------------------------
    def _send(self, handler, status: int, body=None, error_code: str = "", headers: dict | None = None) -> None:
        data = json.dumps({} if body is None else body).encode()
        handler.send_response(status)
        if error_code:
            handler.send_header("X-Error-Code", error_code)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)

    def _refuse(self, handler, status: int, message: str, error_code: str = "", headers: dict | None = None) -> None:
        """An error the client shows: it reads X-Error-Message (its 403 text has only that) and the body's "error"."""
        self._send(handler, status, {"error": message}, error_code, {"X-Error-Message": message, **(headers or {})})

    def _token(self, handler) -> str:
        header = handler.headers.get("Authorization", "")
        return header[7:] if header.startswith("Bearer ") else ""

    def _user(self, handler) -> tuple[str, str] | None:
        return self.tokens.get(self._token(handler))

    def _drop(self, action: str) -> bool:
        with self._lock:
            if self.fail.get(action, 0) > 0:
                self.fail[action] -= 1
                return True
        return False

    def _handle(self, handler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        url = urlparse(handler.path)
        path = unquote(url.path)
        query = parse_qs(url.query)
        self.requests.append({"method": method, "path": path, "body": body,
                              "headers": {k.lower(): v for k, v in handler.headers.items()}})
        parts = [p for p in path.split("/") if p]
        action = ("create" if path == "/api/repos/create" else
                  "job" if method == "POST" and len(parts) == 3 and parts[:2] == ["api", "jobs"] else
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
        if parts[:2] == ["api", "jobs"]:
            return self._jobs_api(handler, method, parts[2:], query, user, body)
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(handler, json.loads(body or b"{}").get("content", ""))
        if method == "POST" and path == "/api/repos/create":
            return self._create(handler, user, json.loads(body or b"{}"))
        if len(parts) >= 4 and parts[0] == "api" and parts[1] in ("models", "datasets"):
            repo_type = parts[1][:-1]
            repo_id = f"{parts[2]}/{parts[3]}"
            key = f"{repo_type}:{repo_id}"
            if method != "POST" and self._token(handler) and not user:
                return self._refuse(handler, 401, INVALID_TOKEN)
            if key not in self.repos:
                return self._send(handler, 404, {"error": "Repository not found"}, "RepoNotFound")
            if method != "POST":
                return self._read_api(handler, key, parts[4:], query, user)
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
        if method in ("GET", "HEAD") and parts[:1] != ["api"] and "resolve" in parts:
            return self._resolve(handler, parts, user)
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
            elif item["key"] == "deletedFolder":  # a folder's path, ending in "/"
                folder = item["value"]["path"].rstrip("/") + "/"
                for path in [p for p in self.repos[key]["files"] if p.startswith(folder)]:
                    del self.repos[key]["files"][path]
            else:
                return self._send(handler, 400, {"error": f"unsupported commit operation {item['key']}"})
        self.repos[key]["commits"] += 1
        oid = hashlib.sha1(b"%s %d " % (key.encode(), self.repos[key]["commits"]) + body).hexdigest()  # per repo
        # A new sha per commit: downloads into a local_dir cache the tree per sha, so it must change with the files.
        self.repos[key]["sha"] = oid
        self.repos[key].setdefault("history", {})[oid] = dict(self.repos[key]["files"])
        prefix = "datasets/" if key.startswith("dataset:") else ""
        return self._send(handler, 200, {"commitUrl": f"{self.url}/{prefix}{repo_id}/commit/{oid}",
                                         "commitOid": oid, "pullRequestUrl": None})

    # --- downloads -------------------------------------------------------------------------------
    def _snapshot(self, key: str, revision: str) -> tuple[str, dict[str, bytes]] | None:
        """(sha, files) of a repo at "main" or at one of its commit shas; None for a revision it lacks."""
        repo = self.repos[key]
        sha = repo.get("sha") or hashlib.sha1(key.encode()).hexdigest()  # a repo with no commit here yet
        if revision in ("main", sha):
            return sha, dict(repo["files"])
        if revision in repo.get("history", {}):
            return revision, dict(repo["history"][revision])
        return None

    def _hidden(self, handler, key: str, user) -> bool:
        """Refuse a private repo to anyone but its owner, as the Hub does: as if it did not exist."""
        if not self.repos[key]["private"] or (user and user[0] == key.split(":", 1)[1].split("/")[0]):
            return False
        if user:
            self._send(handler, 404, {"error": "Repository not found"}, "RepoNotFound")
        else:
            self._refuse(handler, 401, "Invalid username or password.", "RepoNotFound")
        return True

    def _read_api(self, handler, key: str, rest: list[str], query: dict, user) -> None:
        """GET /api/{models,datasets}/{ns}/{name}[/revision/{rev} | /tree/{rev}[/{path}]]."""
        if self._hidden(handler, key, user):
            return None
        if not rest:
            revision, subpath = "main", None
        elif len(rest) == 2 and rest[0] == "revision":
            revision, subpath = rest[1], None
        elif len(rest) >= 2 and rest[0] == "tree":
            revision, subpath = rest[1], "/".join(rest[2:])
        else:
            return self._send(handler, 404, {"error": f"Not found: {'/'.join(rest)}"})
        snapshot = self._snapshot(key, revision)
        if snapshot is None:
            return self._send(handler, 404, {"error": f"Invalid rev id: {revision}"}, "RevisionNotFound")
        sha, files = snapshot
        if subpath is None:
            blobs = query.get("blobs", ["false"])[0] == "true"
            repo_id = key.split(":", 1)[1]
            return self._send(handler, 200, {
                "id": repo_id, "author": repo_id.split("/")[0], "sha": sha, "private": self.repos[key]["private"],
                "disabled": False, "gated": False, "tags": [],
                "siblings": [{"rfilename": f, **({"size": len(data), "blobId": _blob_id(data)} if blobs else {})}
                             for f, data in sorted(files.items())]})
        return self._tree(handler, files, subpath.strip("/"), query.get("recursive", ["false"])[0] == "true")

    def _tree(self, handler, files: dict[str, bytes], folder: str, recursive: bool) -> None:
        """The entries under ``folder``: its files and sub-folders, or everything below it when recursive."""
        prefix = f"{folder}/" if folder else ""
        below = {path[len(prefix):]: data for path, data in sorted(files.items()) if path.startswith(prefix)}
        if folder and not below:
            return self._send(handler, 404, {"error": f"{folder} does not exist"}, "EntryNotFound")
        entries: dict[str, dict] = {}
        for rel, data in below.items():
            steps = rel.split("/")
            for depth in range(1, len(steps) if recursive else min(2, len(steps))):
                sub = prefix + "/".join(steps[:depth])
                entries.setdefault(sub, {"type": "directory", "oid": hashlib.sha1(sub.encode()).hexdigest(),
                                         "size": 0, "path": sub})
            if recursive or len(steps) == 1:
                entries[prefix + rel] = {"type": "file", "oid": _blob_id(data), "size": len(data),
                                         "path": prefix + rel}
        return self._send(handler, 200, list(entries.values()))

    def _resolve(self, handler, parts: list[str], user) -> None:
        """HEAD/GET /[datasets/]{ns}/{name}/resolve/{rev}/{path}: the file itself, no redirect (a regular file).

        The client needs X-Repo-Commit and an ETag on the HEAD; no X-Xet-Hash makes it download with a plain GET.
        """
        repo_type = "dataset" if parts[0] == "datasets" else "model"
        parts = parts[1:] if parts[0] == "datasets" else parts
        if len(parts) < 5 or parts[2] != "resolve":
            return self._send(handler, 404, {"error": "Not found"})
        if self._token(handler) and not user:
            return self._refuse(handler, 401, INVALID_TOKEN)
        key = f"{repo_type}:{parts[0]}/{parts[1]}"
        if key not in self.repos:
            return self._send(handler, 404, {"error": "Repository not found"}, "RepoNotFound")
        if self._hidden(handler, key, user):
            return None
        snapshot = self._snapshot(key, parts[3])
        if snapshot is None:
            return self._send(handler, 404, {"error": f"Invalid rev id: {parts[3]}"}, "RevisionNotFound")
        sha, files = snapshot
        filename = "/".join(parts[4:])
        if filename not in files:  # the commit header lets the client cache that the file is absent
            return self._send(handler, 404, {"error": "Entry not found"}, "EntryNotFound", {"X-Repo-Commit": sha})
        data = files[filename]
        status, start, end = 200, 0, len(data)
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", handler.headers.get("Range", ""))
        if ranged and int(ranged.group(1)) < len(data):  # a resumed download
            status, start = 206, int(ranged.group(1))
            end = min(len(data), int(ranged.group(2)) + 1) if ranged.group(2) else len(data)
        handler.send_response(status)
        handler.send_header("X-Repo-Commit", sha)
        handler.send_header("ETag", f'"{_blob_id(data)}"')
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Length", str(end - start))
        if status == 206:
            handler.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data[start:end])
        return None

    # --- jobs ------------------------------------------------------------------------------------
    def _jobs_api(self, handler, method: str, rest: list[str], query: dict, user, body: bytes) -> None:
        """/api/jobs/...: hardware for anyone; the rest for the namespace's own user (writes: not read-only)."""
        if rest == ["hardware"] and method == "GET":
            return self._send(handler, 200, HARDWARE)
        if not rest or len(rest) > 3:
            return self._send(handler, 404, {"error": "Not found"})
        if not user:
            return self._refuse(handler, 401, INVALID_TOKEN)
        namespace = rest[0]
        if method == "POST" and user[1] == "read":
            return self._refuse(handler, 403, "This token does not have permission to run or manage Jobs: "
                                              "use a token with write access (or the job.write permission)")
        if namespace != user[0]:
            return self._refuse(handler, 403, f"You don't have the rights to manage Jobs in namespace {namespace}")
        if len(rest) == 1:
            if method == "POST":
                return self._run_job(handler, namespace, user, json.loads(body or b"{}"))
            return self._send(handler, 200, [self._job_info(job) for job in self._listed(namespace, query)])
        job = self.jobs.get(rest[1])
        if not job or job["namespace"] != namespace:
            return self._refuse(handler, 404, "Job not found")
        if len(rest) == 2 and method == "GET":
            return self._send(handler, 200, self._job_info(job))
        if rest[2:] == ["logs"] and method == "GET":
            tail = query.get("tail", [""])[0]
            return self._stream_logs(handler, job, int(tail) if tail.isdigit() else None)
        if rest[2:] == ["cancel"] and method == "POST":
            self._end_job(job, "CANCELED", None)
            return self._send(handler, 200, {})
        return self._send(handler, 404, {"error": "Not found"})

    def _listed(self, namespace: str, query: dict) -> list[dict]:
        """The namespace's jobs, oldest first, filtered like the Hub: any of the stages, all of the labels."""
        stages = {stage.upper() for stage in query.get("stage", [])}
        labels = [label.split("=", 1) for label in query.get("label", [])]
        jobs = []
        for job in list(self.jobs.values()):
            mine = job["spec"].get("labels") or {}
            if job["namespace"] != namespace or (stages and job["stage"] not in stages):
                continue
            if all(pair[0] in mine and (len(pair) == 1 or mine[pair[0]] == pair[1]) for pair in labels):
                jobs.append(job)
        return jobs

    def _run_job(self, handler, namespace: str, user, spec: dict) -> None:
        flavor = spec.get("flavor") or "cpu-basic"
        if flavor not in {item["name"] for item in HARDWARE}:
            return self._refuse(handler, 400, f"Invalid flavor: '{flavor}' is not a Jobs hardware flavor "
                                              f"(see GET /api/jobs/hardware)")
        if not isinstance(spec.get("command"), list) or not spec["command"]:
            return self._refuse(handler, 400, "command must be a non-empty list of strings")
        if namespace in self.no_credits:
            return self._refuse(handler, 402, NO_CREDITS)
        return self._send(handler, 200, self._job_info(self._start_job(namespace, spec)))

    def _start_job(self, namespace: str, spec: dict) -> dict:
        """Record the job and start its command; a reader thread fills the log and sets the final stage.

        The record: id, namespace, spec (as sent, secret values included), stage, message, created_at,
        started_at, finished_at, log (lines), log_times (their timestamps), folder (cwd and HOME),
        process (the Popen, None if it could not start), returncode, done (an Event set once the output is
        read to the end and the stage is final), timer (the timeout), began / ended (monotonic seconds).
        """
        with self._lock:
            if self._jobs_root is None:
                self._jobs_root = tempfile.mkdtemp(prefix="fake-hub-jobs-")
        job_id = os.urandom(12).hex()
        folder = Path(tempfile.mkdtemp(prefix=f"{job_id}-", dir=self._jobs_root))
        job = {"id": job_id, "namespace": namespace, "spec": spec, "stage": "RUNNING", "message": None,
               "created_at": _now(), "started_at": _now(), "finished_at": None, "log": [], "log_times": [],
               "folder": folder, "process": None, "returncode": None, "done": threading.Event(), "timer": None,
               "began": time.monotonic(), "ended": None}
        self.jobs[job_id] = job
        self._log(job, f"===== Job started at {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} =====")
        try:
            job["process"] = subprocess.Popen(
                [str(arg) for arg in spec["command"]], cwd=folder, env=self._job_environment(spec, folder),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, text=True, errors="replace")
        except OSError as exc:  # the image has no such program: the container exits at once
            self._log(job, str(exc))
            self._finish(job, 127)
            return job
        threading.Thread(target=self._pump, args=(job,), daemon=True).start()
        job["timer"] = threading.Timer(float(spec.get("timeoutSeconds") or DEFAULT_JOB_TIMEOUT_S),
                                       self._end_job, args=(job, "ERROR", "Job timeout"))
        job["timer"].daemon = True
        job["timer"].start()
        return job

    def _job_environment(self, spec: dict, folder: Path) -> dict[str, str]:
        """Only what a container would have: PATH (so the same python/pip/hf is found, as in an image that has
        them), LANG, HOME, then the job's environment, its secrets' values and ``job_env``. Nothing else of
        this process leaks in (no HF_HUB_OFFLINE, no HF_TOKEN of the test run)."""
        env = {name: os.environ[name] for name in ("PATH", "LANG") if name in os.environ}
        env["HOME"] = str(folder)
        for extra in (spec.get("environment"), spec.get("secrets"), self.job_env):
            env.update({str(k): str(v) for k, v in (extra or {}).items() if v is not None})
        return env

    def _log(self, job: dict, line: str) -> None:
        with self._lock:
            job["log_times"].append(_now())
            job["log"].append(line)

    def _pump(self, job: dict) -> None:
        process = job["process"]
        for line in process.stdout:
            self._log(job, line.rstrip())
        process.stdout.close()
        self._finish(job, process.wait())

    def _finish(self, job: dict, code: int) -> None:
        """The process is gone and its output read: settle the stage unless a cancel or timeout already did."""
        code = 128 - code if code < 0 else code  # killed by signal N: a container reports 128 + N
        with self._lock:
            job["returncode"] = code
            if job["stage"] == "RUNNING":
                job["stage"] = "COMPLETED" if code == 0 else "ERROR"
                job["message"] = None if code == 0 else f"Job failed with exit code: {code}"
            job["finished_at"] = job["finished_at"] or _now()
            job["ended"] = job["ended"] or time.monotonic()
        if job["timer"]:
            job["timer"].cancel()
        job["done"].set()

    def _end_job(self, job: dict, stage: str, message: str | None) -> None:
        """Cancel or time out a running job: the stage at once, the processes after them."""
        with self._lock:
            if job["stage"] != "RUNNING":
                return
            job["stage"], job["message"], job["finished_at"], job["ended"] = stage, message, _now(), time.monotonic()
        self._kill(job, grace=KILL_GRACE_S)

    def _kill(self, job: dict, grace: float) -> None:
        """SIGTERM the job's process group, SIGKILL it ``grace`` seconds later if its output is still open."""
        process = job["process"]
        if process is None or job["done"].is_set():
            return

        def signal_group(sig) -> None:
            if not job["done"].is_set():
                try:
                    os.killpg(process.pid, sig)  # start_new_session: the group id is the process id
                except (ProcessLookupError, PermissionError):
                    pass

        if grace <= 0:
            return signal_group(signal.SIGKILL)
        signal_group(signal.SIGTERM)
        later = threading.Timer(grace, signal_group, args=(signal.SIGKILL,))
        later.daemon = True
        later.start()
        return None

    def _job_info(self, job: dict) -> dict:
        """A JobInfo as the Hub gives it; the client requires id, owner{id,name,type} and status.stage."""
        spec = job["spec"]
        info = {"id": job["id"], "createdAt": job["created_at"], "startedAt": job["started_at"],
                "dockerImage": spec.get("dockerImage"), "spaceId": spec.get("spaceId"),
                "command": spec.get("command"), "arguments": spec.get("arguments") or [],
                "environment": spec.get("environment") or {},
                "secrets": {name: None for name in spec.get("secrets") or {}},  # names only, like the Hub
                "flavor": spec.get("flavor") or "cpu-basic", "labels": spec.get("labels") or {},
                "status": {"stage": job["stage"], "message": job["message"]},
                "owner": {"id": hashlib.sha1(job["namespace"].encode()).hexdigest()[:24],
                          "name": job["namespace"], "type": "user"}}
        if spec.get("timeoutSeconds"):
            info["timeoutSeconds"] = spec["timeoutSeconds"]
        if spec.get("volumes"):
            info["volumes"] = spec["volumes"]
        if job["finished_at"]:
            info["finishedAt"] = job["finished_at"]
        running = round((job["ended"] or time.monotonic()) - job["began"])  # `hf jobs ps` shows it as RUNTIME
        info["durations"] = {"schedulingSecs": 0, "runningSecs": running, "totalSecs": running}
        return info

    def _stream_logs(self, handler, job: dict, tail: int | None) -> None:
        """Server-sent events: every line so far (or the last ``tail``), then new ones as they come; the
        response ends (the connection closes: HTTP/1.0, no length) once the job is done and all are sent.

        The client stops at the end of the response without asking the job's stage, so the stream must stay
        open while the job runs; and a keep-alive more often than every 5 s would hold a follow=False reader.
        """
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        with self._lock:
            sent = max(0, len(job["log"]) - tail) if tail is not None else 0
        quiet_since = time.monotonic()
        try:
            while True:
                done = job["done"].is_set()  # read before the lines: once done, no line comes after
                with self._lock:
                    lines = list(zip(job["log"][sent:], job["log_times"][sent:]))
                for line, stamp in lines:
                    handler.wfile.write(b"data: " + json.dumps({"data": line, "timestamp": stamp}).encode()
                                        + b"\n\n")
                sent += len(lines)
                if lines:
                    handler.wfile.flush()
                    quiet_since = time.monotonic()
                if done or self._stopping.is_set():
                    return
                with self._lock:
                    cut = self.cut_log_streams > 0 and sent > 0
                    self.cut_log_streams -= cut
                if cut:  # the Hub's stream ending while the job runs (a proxy's idle limit, a redeploy)
                    return
                if time.monotonic() - quiet_since >= KEEP_ALIVE_S:
                    handler.wfile.write(b": keep-alive\n\n")
                    handler.wfile.flush()
                    quiet_since = time.monotonic()
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):  # the reader went away (follow=False timed out)
            return
