"""Documents -> chunks -> pairs, many requests in flight, resumable.

A job lives in ``user_dir(user)/augment/<job>/``:

    chunks.json   the manifest: fingerprint, settings (never a key), files, every chunk's text
    pairs.jsonl   one pair per line, {"chunk": i, "file", "style", "question", "answer"[, "reasoning"]},
                  appended (and fsynced) as each chunk finishes
    done.jsonl    one line per finished chunk: {"chunk": i, "status": "done"|"failed", "pairs": n, ...}, and
                  {"stopped": why} when a Generate stopped early

The job name defaults to the first file's name plus a fingerprint of the chunk
texts and the generation settings, so running again with the same files and
settings finds the job and sends only the chunks not done yet. Worker threads
only talk to the backend; the calling thread writes every file and calls
``progress``, so nothing on disk is ever half-written by two threads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from garage import files as files_module, paths
from garage.augment.chunking import chunk_documents, plan, select_chunks, TokenCounter
from garage.augment.config import AugmentConfig, make_backend
from garage.augment.ingest import extract_text
from garage.augment.prompts import generation_prompt, SCHEMAS, SUMMARY_QUESTION, SYSTEM_WRITER
from garage.augment.save import to_conversations
from garage.errors import GarageError
from garage.llm import Backend, BackendError, ParseFailure, RequestRefused, ServiceError
from garage.llm.keys import check_server_key_use

log = logging.getLogger(__name__)

MANIFEST = "chunks.json"
PAIRS = "pairs.jsonl"
DONE = "done.jsonl"
GENERATING = ".generating.lock"  # held while a Generate works on the job
MANIFEST_VERSION = 1
FAILURES_IN_A_ROW = 3  # server errors on this many chunks in a row stop the job

Progress = Callable[[int, int, int, "float | None"], None]

_stop_signals: dict[Path, threading.Event] = {}  # job folder -> the stop signal of the Generate running it here


@dataclass
class AugmentResult:
    """What a job produced (so far)."""

    job_dir: Path
    pairs: list[dict]
    chunks: list[dict]
    total_chunks: int          # chunks this job sends (may be fewer than all chunks for a small target)
    done_chunks: int
    resumed_chunks: int        # of those, done by an earlier run
    failed: list[dict] = field(default_factory=list)   # {"chunk", "error"} of this run
    parse_failures: int = 0
    stats: dict = field(default_factory=dict)
    elapsed: float = 0.0
    plan: dict = field(default_factory=dict)
    style: str = "qa"

    @property
    def complete(self) -> bool:
        return self.done_chunks >= self.total_chunks

    def chunk_texts(self) -> dict[int, str]:
        return {c["index"]: c["text"] for c in self.chunks}

    def conversations(self, system: str | None = None) -> list[dict]:
        return to_conversations(self.pairs, system=system)

    def summary(self) -> str:
        text = (f"{len(self.pairs)} pair(s) from {self.done_chunks}/{self.total_chunks} chunk(s)"
                f" in {self.elapsed:.1f} s")
        if self.resumed_chunks:
            text += f" ({self.resumed_chunks} chunk(s) done by an earlier run)"
        if self.failed:
            text += f"; {len(self.failed)} chunk(s) failed (run again to retry them)"
        if self.parse_failures:
            text += f"; {self.parse_failures} unreadable repl(ies)"
        return text


class AugmentInterrupted(GarageError):
    """The job stopped early; ``result`` holds what was done (all of it is also on disk)."""

    def __init__(self, message: str, result: AugmentResult):
        super().__init__(message)
        self.result = result


# --- the job folder ---------------------------------------------------------------

def _fingerprint(chunks: Sequence[dict], cfg: AugmentConfig, chunking: dict) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"settings": cfg.generation_settings(), "chunking": chunking},
                             sort_keys=True).encode())
    for chunk in chunks:
        digest.update(b"\x00" + chunk["text"].encode("utf-8"))
    return digest.hexdigest()


def default_job_name(docs: Sequence[dict], fingerprint: str) -> str:
    first = Path(docs[0].get("name") or docs[0].get("file") or "docs").stem if docs else "docs"
    extra = f"+{len(docs) - 1}" if len(docs) > 1 else ""
    return paths.safe_name(f"{first[:40]}{extra}-{fingerprint[:10]}", "job")


def _jobs_root(user: str) -> Path:
    return paths.user_dir(user) / "augment"


def _job_dir(user: str, job: str) -> Path:
    return _jobs_root(user) / paths.safe_name(job or "", "job")


def job_dir_for(user: str, job: str) -> Path:
    folder = _job_dir(user, job)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def existing_job_dir(user: str, job: str) -> Path | None:
    """The folder of ``user``'s job ``job`` if there is one (a lookup makes no folder)."""
    folder = _job_dir(user, job)
    return folder if folder.is_dir() else None


def _write_json_atomic(path: Path, data: dict) -> None:
    files_module.write_atomic(path, json.dumps(data, ensure_ascii=False, indent=1))


def _note(job_dir: Path, backend, **record) -> None:
    """One line of the job's progress file (a chunk done or failed, or why the job stopped), on disk before the
    work goes on: a Continue after a crash trusts it."""
    files_module.append_jsonl(job_dir / DONE, {**record, "t": round(time.time(), 3)}, scrub=backend.scrub, sync=True)


def job_manifest(job_dir: str | Path) -> dict | None:
    """A job's manifest (chunks.json), None when it has none or it does not parse."""
    try:
        return json.loads((Path(job_dir) / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def load_job(job_dir: str | Path, repair: bool = True) -> tuple[dict | None, list[dict], set[int]]:
    """A job's manifest, its pairs, and the indices of the chunks already done (``repair``: see
    files.read_jsonl; only the Generate that holds the job repairs)."""
    job_dir = Path(job_dir)
    manifest = job_manifest(job_dir)
    pairs = _job_pairs(job_dir, repair)
    done = _done_chunks(job_dir, repair) | {p["chunk"] for p in pairs}
    return manifest, pairs, done


def _job_pairs(job_dir: Path, repair: bool = True) -> list[dict]:
    return [p for p in files_module.read_jsonl(job_dir / PAIRS, repair) if isinstance(p.get("chunk"), int)]


def _chunk_states(job_dir: Path, repair: bool = True) -> tuple[set[int], str]:
    """One read of done.jsonl: the chunks whose last line says done (a failed chunk done by a later run counts),
    and why the job's last Generate stopped early, else the newest error of a chunk still failed ("" if neither)."""
    status: dict[int, tuple[int, str, str]] = {}  # chunk -> its latest (line, status, error)
    stopped = (-1, "")
    for line, row in enumerate(files_module.read_jsonl(job_dir / DONE, repair)):
        if row.get("stopped"):
            stopped = (line, str(row["stopped"]))
        elif isinstance(row.get("chunk"), int):
            status[row["chunk"]] = (line, row.get("status", ""), str(row.get("error") or ""))
    failed = [(line, error) for line, state, error in status.values() if state == "failed"]
    return {i for i, (_, state, _) in status.items() if state == "done"}, max([stopped, *failed])[1]


def _done_chunks(job_dir: Path, repair: bool = True) -> set[int]:
    return _chunk_states(job_dir, repair)[0]


def _as_generated(pairs: list[dict], num_pairs) -> list[dict]:
    """Pairs in chunk order, at most the job's target: what a Generate of the job returns."""
    ordered = sorted(pairs, key=lambda p: p["chunk"])
    return ordered[:num_pairs] if isinstance(num_pairs, int) else ordered


def _archive(job_dir: Path) -> None:
    """Move an older job's files aside (a different fingerprint): nothing generated is deleted."""
    present = [n for n in (MANIFEST, PAIRS, DONE) if (job_dir / n).exists()]
    if not present:
        return
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    target = job_dir / f"previous-{stamp}"
    target.mkdir(exist_ok=True)
    for name in present:
        shutil.move(str(job_dir / name), str(target / name))


# --- earlier jobs, for a page that was reloaded ------------------------------------------------

CHUNKS_KEY = b',\n "chunks":'  # the manifest's last key as _write_json_atomic (indent=1) writes it


def _manifest_head(path: Path) -> dict | None:
    """The manifest without its chunk texts, which come last and are nearly all of its size: a listing on every
    page load reads and parses only the small fields before them (the whole file when the layout is another)."""
    try:
        with open(path, "rb") as fh:
            raw = b""
            while (block := fh.read(64 * 1024)) and CHUNKS_KEY not in raw[-len(CHUNKS_KEY):] + block:
                raw += block
            raw += block
            cut = raw.find(CHUNKS_KEY)
            head = json.loads(raw[:cut] + b"\n}" if cut >= 0 else raw)
    except (OSError, ValueError):
        return None
    return head if isinstance(head, dict) else None


def _count_lines(path: Path) -> int:
    """Complete lines, without parsing them (a torn last line has no newline yet)."""
    try:
        with open(path, "rb") as fh:
            return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
    except OSError:
        return 0


def _generating(job_dir: Path) -> bool:
    """Whether a Generate holds the job now."""
    return files_module.is_held(job_dir / GENERATING)


def _job_info(job_dir: Path, pairs: int | None = None) -> dict | None:
    """A job's counts (``pairs``: its pair lines, when the caller has read them already)."""
    head = _manifest_head(job_dir / MANIFEST)
    if head is None:
        return None
    selected = set(head.get("selected") or [])
    num_pairs = (head.get("settings") or {}).get("num_pairs")
    pairs = _count_lines(job_dir / PAIRS) if pairs is None else pairs
    done, problem = _chunk_states(job_dir, repair=False)
    return {"name": job_dir.name, "created": str(head.get("created") or ""), "total_chunks": len(selected),
            "done_chunks": len(done & selected), "num_pairs": num_pairs,
            "pairs": min(pairs, num_pairs) if isinstance(num_pairs, int) else pairs,
            "generating": _generating(job_dir), "last_problem": problem}


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def list_jobs(user: str) -> list[dict]:
    """The user's augment jobs, newest first, so a reloaded page (or another day) finds them: per job its name,
    created, total_chunks (selected), done_chunks, pairs so far, num_pairs (the target) and generating."""
    root = _jobs_root(user)
    found = []
    for job_dir in (root.iterdir() if root.is_dir() else []):
        info = _job_info(job_dir) if job_dir.is_dir() else None
        if info is not None:  # a folder without a manifest holds no job
            found.append(((info["created"], _mtime(job_dir / MANIFEST)), info))  # two jobs in one second
    return [info for _, info in sorted(found, key=lambda item: item[0], reverse=True)]


def open_job(user: str, name: str) -> tuple[dict, list[dict]]:
    """One of ``list_jobs``'s jobs and its pairs as a Generate of it returns them. Read only: it may be
    generating (then its pairs so far)."""
    job_dir = _job_dir(user, name)  # never made here
    written = _job_pairs(job_dir, repair=False)
    info = _job_info(job_dir, len(written))
    if info is None:
        raise GarageError(f"No augment job named '{name}' in your workspace.")
    return info, _as_generated(written, info["num_pairs"])  # info["pairs"] already counts them so


# --- turning replies into pairs -------------------------------------------------------

def _field(item: dict, *names: str) -> str:
    lowered = {str(k).lower(): v for k, v in item.items()}
    for name in names:
        value = lowered.get(name)
        if isinstance(value, (str, int, float)) and str(value).strip():
            return str(value).strip()
    return ""


def pairs_from_reply(data, style: str, chunk: dict, limit: int) -> list[dict]:
    """The pairs in a parsed reply; ``ParseFailure`` when it has none of the expected shape."""
    base = {"chunk": chunk["index"], "file": chunk.get("file"), "style": style}
    if style == "summary":
        summary = _field(data, "summary", "text", "answer") if isinstance(data, dict) else ""
        if not summary:
            raise ParseFailure("the reply has no summary")
        return [{**base, "question": SUMMARY_QUESTION.format(text=chunk["text"]), "answer": summary}]
    items = data.get("pairs") if isinstance(data, dict) else data
    if isinstance(data, dict) and items is None:
        lists = [v for v in data.values() if isinstance(v, list)]
        items = lists[0] if len(lists) == 1 else ([data] if _field(data, "question") else None)
    if not isinstance(items, list):
        raise ParseFailure("the reply has no list of pairs")
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        question = _field(item, "question", "q", "instruction", "prompt")
        answer = _field(item, "answer", "a", "response", "output")
        if not question or not answer:
            continue
        pair = {**base, "question": question, "answer": answer}
        if style == "cot":
            reasoning = _field(item, "reasoning", "steps", "thinking", "explanation")
            if reasoning:
                pair["reasoning"] = reasoning
        out.append(pair)
    if items and not out:
        raise ParseFailure("no item of the reply has both a question and an answer")
    return out[:limit]


# --- the job ----------------------------------------------------------------------------

def _as_docs(files) -> list[dict]:
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    files = list(files or [])
    if files and all(isinstance(f, dict) and "text" in f for f in files):
        docs = [d for d in files if d.get("text")]
    else:
        docs = extract_text(files)
    if not docs:
        raise GarageError("No text to work from: every document is empty.")
    return docs


def prepare(files, config: AugmentConfig | None = None, *, job: str | None = None,
            count_tokens: TokenCounter | None = None) -> dict:
    """Extract, chunk and plan without calling any model; creates nothing on disk.

    Returns ``{"docs", "chunks", "selected", "pairs_per_chunk", "fingerprint", "job", "plan"}``.
    """
    cfg = (config or AugmentConfig()).validate()
    docs = _as_docs(files)
    chunks = chunk_documents(docs, cfg.chunk_tokens, cfg.chunk_overlap, count_tokens)
    if not chunks:
        raise GarageError("No text to work from: the documents hold no words.")
    selected, per = select_chunks(len(chunks), cfg.num_pairs, cfg.style)
    chunking = {"chunk_tokens": cfg.chunk_tokens, "chunk_overlap": cfg.chunk_overlap,
                "counter": getattr(count_tokens, "__qualname__", "estimate") if count_tokens else "estimate"}
    fingerprint = _fingerprint(chunks, cfg, chunking)
    return {"docs": docs, "chunks": chunks, "selected": selected, "pairs_per_chunk": per,
            "fingerprint": fingerprint, "chunking": chunking,
            "job": job or default_job_name(docs, fingerprint), "plan": plan(chunks, cfg, count_tokens)}


def augment(files, config: AugmentConfig | None = None, *, user: str = "anonymous", job: str | None = None,
            api_key: str | None = None, backend: Backend | None = None, progress: Progress | None = None,
            count_tokens: TokenCounter | None = None, stop: threading.Event | None = None) -> AugmentResult:
    """Turn documents into question/answer pairs; resumable, ``config.concurrency`` requests in flight.

    ``files``: paths (PDF, DOCX, PPTX, TXT, MD, HTML) or the output of ``extract_text``.
    ``api_key``: for Gemini / OpenAI-compatible endpoints (else GEMINI_API_KEY / OPENAI_API_KEY);
    used for requests only, never stored. ``backend``: a ready backend (then ``api_key`` is unused).
    ``progress(done_chunks, total_chunks, pairs_so_far, eta_seconds)`` is called from this thread
    after each chunk. ``stop``: set it to stop after the requests in flight.

    Raises ``AugmentInterrupted`` (a ``GarageError`` carrying ``.result``) when the job stops
    early: key rejected, quota spent, request cap reached, server down, or ``stop`` set. Every
    pair generated before that is already in ``pairs.jsonl``; running again continues.
    """
    started = time.monotonic()
    cfg = (config or AugmentConfig()).validate()
    if backend is None:
        check_server_key_use(user, cfg.backend, cfg.base_url, api_key, purpose="Generating Q/A")
    prep = prepare(files, cfg, job=job, count_tokens=count_tokens)
    return _generate_locked(job_dir_for(user, prep["job"]), prep, cfg, api_key=api_key, backend=backend,
                            progress=progress, stop=stop, started=started)


def continue_job(user: str, name: str, config: AugmentConfig | None = None, *, api_key: str | None = None,
                 backend: Backend | None = None, progress: Progress | None = None,
                 stop: threading.Event | None = None) -> AugmentResult:
    """Generate the chunks the user's job ``name`` has not done yet, from what its folder keeps: its chunk texts
    and the settings that shape its pairs (model, style, instruction, number of pairs...). No documents are
    needed, so a reloaded page, or another day, continues a job without uploading its files again. ``config``
    gives the rest (concurrency, retries, base_url); the other arguments are ``augment``'s."""
    started = time.monotonic()
    job_dir = _job_dir(user, name)
    manifest = job_manifest(job_dir)
    if manifest is None or not isinstance(manifest.get("chunks"), list):
        raise GarageError(f"No augment job named '{name}' in your workspace (Earlier jobs lists them).")
    kept = manifest.get("settings") or {}
    known = {f.name for f in dataclasses.fields(AugmentConfig)}
    cfg = AugmentConfig.from_dict({**dataclasses.asdict(config or AugmentConfig()),
                                   **{k: v for k, v in kept.items() if k in known}})
    if backend is None:
        check_server_key_use(user, cfg.backend, cfg.base_url, api_key, purpose="Generating Q/A")
    chunks = manifest["chunks"]
    prep = {"docs": [], "chunks": chunks, "selected": manifest.get("selected") or [],
            "pairs_per_chunk": manifest.get("pairs_per_chunk") or 1, "fingerprint": manifest.get("fingerprint"),
            "job": job_dir.name, "plan": plan(chunks, cfg)}
    return _generate_locked(job_dir, prep, cfg, api_key=api_key, backend=backend, progress=progress, stop=stop,
                            started=started)


def _generate_locked(job_dir: Path, prep: dict, cfg: AugmentConfig, *, api_key, backend, progress, stop,
                     started: float) -> AugmentResult:
    """``_generate`` while holding the job's lock, its stop signal reachable by ``stop_job``."""
    stop = stop or threading.Event()
    # Two Generates of one job (a second tab, a reload while the first still runs) would send every chunk twice
    # and write each pair twice: the second is refused until the first ends.
    with files_module.exclusive(job_dir / GENERATING, busy=(
            f"This job ({job_dir.name}) is already generating, in another tab or an earlier page of yours: its pairs "
            "are saved as they come; choose it under Earlier jobs to follow it, or press Generate again once it "
            "has ended (to continue it).")):
        _stop_signals[job_dir] = stop
        try:
            return _generate(job_dir, prep, cfg, api_key=api_key, backend=backend, progress=progress, stop=stop,
                             started=started)
        finally:
            del _stop_signals[job_dir]


def stop_job(user: str, name: str) -> bool:
    """Ask the user's running Generate of job ``name`` (in this process) to stop after the requests in flight, as
    its own page's Stop does: a reloaded page, or another tab, has lost that page. False: none is running."""
    signal = _stop_signals.get(_job_dir(user, name))
    if signal is None:
        return False
    signal.set()
    return True


def job_progress(user: str, name: str) -> dict | None:
    """One job's counts as ``list_jobs`` gives them (None: no such job), without reading its pairs: what a page
    following a running Generate asks every few seconds."""
    return _job_info(_job_dir(user, name))


def _write_manifest(job_dir: Path, prep: dict, cfg: AugmentConfig) -> None:
    _write_json_atomic(job_dir / MANIFEST, {
        "version": MANIFEST_VERSION,
        "fingerprint": prep["fingerprint"],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {**cfg.generation_settings(), **prep["chunking"]},
        "files": [{"name": d.get("name"), "chars": d.get("chars", len(d["text"])),
                   "sha256": hashlib.sha256(d["text"].encode("utf-8")).hexdigest()} for d in prep["docs"]],
        "pairs_per_chunk": prep["pairs_per_chunk"],
        "selected": prep["selected"],
        "chunks": [{"index": c["index"], "file": c["file"], "tokens": c["tokens"], "text": c["text"]}
                   for c in prep["chunks"]],
    })


def _generate(job_dir: Path, prep: dict, cfg: AugmentConfig, *, api_key, backend, progress, stop,
              started: float) -> AugmentResult:
    """``augment`` for one job, whose folder this process holds."""
    chunks, selected, per = prep["chunks"], prep["selected"], prep["pairs_per_chunk"]
    manifest, old_pairs, done = load_job(job_dir)
    if manifest is not None and manifest.get("fingerprint") != prep["fingerprint"]:
        log.info("job %s: files or settings changed; earlier results moved aside", job_dir.name)
        _archive(job_dir)
        manifest, old_pairs, done = None, [], set()
    selected_set = set(selected)
    resumed = len(done & selected_set)
    todo = [i for i in selected if i not in done]
    all_pairs = list(old_pairs)
    failed: list[dict] = []
    total = len(selected)

    own_backend = False
    parse_before, stats_before = 0, {}

    def report(done_now: int, eta: float | None) -> None:
        if progress:
            progress(resumed + done_now, total, len(all_pairs), eta)

    def result() -> AugmentResult:
        stats = {}
        if backend is not None:
            now = backend.stats.snapshot()
            stats = {k: round(v - stats_before.get(k, 0), 3) for k, v in now.items()}
        done_now = _done_chunks(job_dir) | {p["chunk"] for p in all_pairs}
        return AugmentResult(
            job_dir=job_dir, pairs=_as_generated(all_pairs, cfg.num_pairs), chunks=chunks, total_chunks=total,
            done_chunks=len(done_now & selected_set), resumed_chunks=resumed, failed=failed,
            parse_failures=(backend.stats.parse_failures - parse_before) if backend else 0,
            stats=stats, elapsed=round(time.monotonic() - started, 3), plan=prep["plan"], style=cfg.style)

    report(0, None)  # a callback that raises here cancels before anything is sent
    if todo and backend is None:
        backend = make_backend(cfg, api_key=api_key)  # no key, say: nothing written, no empty job left behind
        own_backend = True
    if manifest is None:
        _write_manifest(job_dir, prep, cfg)
    if not todo:
        return result()
    parse_before, stats_before = backend.stats.parse_failures, backend.stats.snapshot()

    def work(index: int) -> list[dict]:
        chunk = chunks[index]
        prompt = generation_prompt(cfg.style, chunk["text"], per, cfg.instruction)
        data = backend.generate_json(prompt, SCHEMAS[cfg.style], system=SYSTEM_WRITER, temperature=cfg.temperature)
        try:
            pairs = pairs_from_reply(data, cfg.style, chunk, per)
            return [{k: backend.scrub(v) if isinstance(v, str) else v for k, v in p.items()} for p in pairs]
        except ParseFailure:
            backend.count_parse_failure()
            raise

    width = min(cfg.concurrency, len(todo))
    queue = list(todo)
    fatal: BaseException | None = None
    stop_reason = ""
    in_a_row = 0
    done_now = 0
    run_start = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="augment") as pool:
            running: dict[Future, int] = {}
            while queue or running:
                while queue and len(running) < width and fatal is None and not (stop and stop.is_set()):
                    index = queue.pop(0)
                    running[pool.submit(work, index)] = index
                if not running:
                    break
                try:
                    finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                except KeyboardInterrupt as exc:  # Ctrl-C: save what is in flight, then stop
                    fatal, stop_reason = exc, "interrupt"
                    continue
                for future in finished:
                    index = running.pop(future)
                    try:
                        pairs = future.result()
                    except ParseFailure as exc:
                        failed.append({"chunk": index, "error": str(exc)})
                        _note(job_dir, backend, chunk=index, status="failed", error=str(exc))
                        continue
                    except (ServiceError, RequestRefused) as exc:
                        failed.append({"chunk": index, "error": str(exc)})
                        _note(job_dir, backend, chunk=index, status="failed", error=str(exc))
                        in_a_row += 1
                        if in_a_row >= FAILURES_IN_A_ROW and fatal is None:
                            fatal = exc
                        continue
                    except BackendError as exc:  # key rejected, quota spent, request cap
                        if fatal is None:
                            fatal = exc
                        continue
                    except BaseException as exc:  # a bug: stop cleanly, then let it surface
                        if fatal is None:
                            fatal = exc
                        continue
                    in_a_row = 0
                    files_module.append_jsonl(job_dir / PAIRS, *pairs, scrub=backend.scrub, sync=True)
                    _note(job_dir, backend, chunk=index, status="done", pairs=len(pairs))
                    all_pairs.extend(pairs)
                    done_now += 1
                    remaining = len(queue) + len(running)
                    eta = (time.monotonic() - run_start) / done_now * remaining
                    try:
                        report(done_now, round(eta, 1))
                    except BaseException as exc:  # a UI may cancel by raising from its callback
                        if fatal is None:
                            fatal = exc
                            stop_reason = "callback"
    finally:
        if own_backend and backend is not None:
            backend.close()

    res = result()
    if fatal is not None and not isinstance(fatal, GarageError) or stop_reason:
        raise fatal
    if fatal is not None or (stop is not None and stop.is_set() and not res.complete):
        head = str(fatal) if fatal is not None else "Stopped."
        # why it stopped, for a page that opens the job later (a line without a chunk: not a chunk's state)
        _note(job_dir, backend, stopped=head)
        raise AugmentInterrupted(
            backend.scrub(f"{head} {res.done_chunks} of {res.total_chunks} chunks are done and saved "
                          f"({len(all_pairs)} pairs in job {job_dir.name}); Continue the chosen job (or Generate "
                          "with the same files and settings) finishes it."), res) from fatal  # the kind of stop
    return res
