"""Documents -> Q/A panel of the Data tab: read, plan, generate, curate, edit, then save or export.

Every step is a ``garage.augment`` call; this module only wires components to them.
The settings form comes from ``AugmentConfig`` (``build_form``), so it cannot drift.

API (gradio_client), each also driven by the panel's buttons:

    /extract_text   files                                      -> [{name, chars, warning, text}]
    /augment_plan   files, settings                            -> plan (chunks, llm_calls, est_seconds, est_cost_usd...)
    /augment        files, settings, api_key=""                -> {pairs, summary, job, resumed_chunks, ...}
    /continue_augment job, settings, api_key=""                -> as /augment: a job's remaining chunks, no files
    /curate         pairs, settings, api_key="", job="", rate  -> {kept, dropped, summary, stats}
    /save_pairs     pairs, name, overwrite=False, system=""    -> {name, rows, datasets}

``settings`` is a dict of ``AugmentConfig`` fields (unset ones take their defaults). An
empty ``api_key`` means the server's GEMINI_API_KEY (or OPENAI_API_KEY), which on a shared Space
only its owner may spend (garage.llm.keys); a key is used for the requests of that call only and is
never stored.
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
from pathlib import Path

import gradio as gr

from garage import paths
from garage.augment import chunking, ingest, pipeline
from garage.augment import save as saving
from garage.augment.config import DEFAULT_GEMINI_MODEL, AugmentConfig, make_backend
from garage.augment.curate import RememberedRatings
from garage.augment.curate import curate as curate_pairs
from garage.augment.ingest import SUPPORTED
from garage.config import field_specs
from garage.data.store import list_datasets
from garage.errors import GarageError
from garage.llm import AuthError, ServiceError
from garage.llm.keys import check_server_key_use
from garage.secrecy import scrub_secrets
from garage.ui.forms import build_form
from garage.ui.session import failure_stays, said, user_errors, user_of

NAMES = [f.name for f in dataclasses.fields(AugmentConfig)]
CURATE_SPECS = [s for s in field_specs(AugmentConfig) if s["group"] == "curate"]
FILE_COLUMNS = ["file", "characters", "warning"]
PAIR_COLUMNS = ["keep", "question", "answer", "reasoning", "rating", "file", "chunk"]
DROPPED_COLUMNS = ["check", "reason", "question", "answer"]  # why first: long answers pushed it off-screen
SHOWN_CHARS = 20_000  # the text box shows the start of a long document
MODEL_HINTS = {"gemini": DEFAULT_GEMINI_MODEL, "openai": "the endpoint's model name, e.g. llama3.1",
               "local": "/path/to/an/instruction-tuned/model-folder"}
BACKEND_HINTS = {
    "gemini": "Empty key: the server's `GEMINI_API_KEY` is used (on a shared Space only by its owner).",
    "openai": "Set **base_url** (under Advanced) to your endpoint, e.g. `http://localhost:8000/v1`. "
              "Empty key: the server's `OPENAI_API_KEY` (or none, for a local server; on a shared Space only "
              "its owner's calls use it).",
    "local": "Runs the model folder on this machine, answering `concurrency` requests in one batch (slow without a GPU); no key.",
}
NEXT_STEPS = {  # what to do after a failure, where the error itself cannot know the panel
    "key": "To use another key, paste it in the **API key** box above (used for this job only), or leave the box "
           "empty to use the server's key (`GEMINI_API_KEY`, or `OPENAI_API_KEY` for an OpenAI-compatible endpoint).",
    "server": "If you set a **base_url** (under Advanced), check the address and that its server is up.",
}

_stops: dict[str, threading.Event] = {}  # page session -> the Stop button's signal to its running job
FOLLOW_SECONDS = 2.0  # how often a page following a job another page runs reads its counts


# --- shared by the API and the panel ----------------------------------------------------

def _settings(values: dict | None) -> AugmentConfig:
    if values is not None and not isinstance(values, dict):
        raise GarageError("settings must be a dict of AugmentConfig fields, e.g. {\"num_pairs\": 20}.")
    return AugmentConfig.from_dict(values or {})


def _uploaded(files) -> list[str]:
    """Server paths of files sent with ``gradio_client.handle_file`` (Gradio checked they are uploads)."""
    if isinstance(files, dict):
        files = [files]
    out = []
    for f in files or []:
        if not (isinstance(f, dict) and (f.get("meta") or {}).get("_type") == "gradio.FileData" and f.get("path")):
            raise GarageError("Send each document with gradio_client.handle_file(path).")
        out.append(f["path"])
    return out


def _extract(uploads: list[str]) -> list[dict]:
    """Every file's text; an unreadable one comes back empty, with the reason as its warning."""
    return ingest.extract_text(uploads, on_error="warn")


def _readable(docs: list[dict]) -> list[dict]:
    """``docs`` when any has text; else a GarageError naming each file, why it failed, and what is accepted."""
    if not any(d["text"] for d in docs):
        reasons = " ".join(d["warning"] or f"{d['name']} has no text." for d in docs)
        accepted = "" if "Accepted:" in reasons else (f" Accepted: {', '.join(SUPPORTED)}, with text in them "
                                                      "(a scanned PDF needs OCR first).")
        raise GarageError(f"No document could be read. {reasons}{accepted}")
    return docs


def _read(uploads: list[str]) -> list[dict]:
    """Every file's text; unreadable ones come back empty with the reason, unless none is readable."""
    return _readable(_extract(uploads))


def _public(doc: dict) -> dict:
    return {"name": doc["name"], "chars": doc["chars"], "warning": doc["warning"], "text": doc["text"]}


def _summary(result) -> str:
    head = f"Resumed {result.resumed_chunks} chunk(s). " if result.resumed_chunks else ""
    return head + result.summary()


def _result(result) -> dict:
    return {"pairs": result.pairs, "summary": _summary(result), "job": result.job_dir.name,
            "total_chunks": result.total_chunks, "done_chunks": result.done_chunks,
            "resumed_chunks": result.resumed_chunks, "failed": result.failed, "complete": result.complete,
            "plan": result.plan}


def _chunks_of(user: str, job: str):
    if not job:
        return None
    folder = pipeline.existing_job_dir(user, job)
    manifest = pipeline.job_manifest(folder) if folder else None
    if manifest is None:
        raise GarageError(f"No augment job named '{job}' in your workspace (the job name comes from /augment).")
    return manifest.get("chunks")


def _curate(pairs, cfg: AugmentConfig, user: str, api_key: str, job: str, rate: bool, progress=None):
    if not isinstance(pairs, list) or not all(isinstance(p, dict) for p in pairs):
        raise GarageError("pairs must be a list of {\"question\", \"answer\"} objects (as /augment returns).")
    if not pairs:
        raise GarageError("No pairs to curate: generate some first.")
    chunks = _chunks_of(user, job)
    if rate:
        check_server_key_use(user, cfg.backend, cfg.base_url, api_key, purpose="Rating pairs")
    backend = make_backend(cfg, api_key=(api_key or "").strip() or None) if rate else None
    try:
        # a job's ratings are remembered: curating again (another threshold, say) asks only about new pairs
        ratings = RememberedRatings(pipeline.job_dir_for(user, job) / "ratings.jsonl") if rate and job else None
        return curate_pairs(pairs, backend, cfg.curate_threshold, chunks=chunks, dedup_threshold=cfg.dedup_threshold,
                            min_support=cfg.min_support, concurrency=cfg.concurrency, instruction=cfg.instruction,
                            ratings=ratings, progress=progress)
    finally:
        if backend is not None:
            backend.close()


def _dataset_names(user: str) -> list[str]:
    return [d["name"] for d in list_datasets(user)]


# --- API endpoints ------------------------------------------------------------------------

def extract_text(files: list[dict]) -> list[dict]:
    """Documents in (PDF, DOCX, PPTX, TXT, MD, HTML; send each with handle_file); per file: name, chars,
    warning, text. An unreadable file comes back with empty text and the reason as its warning."""
    return [_public(d) for d in _read(_uploaded(files))]


def augment_plan(files: list[dict], settings: dict) -> dict:
    """Documents and AugmentConfig settings in; chunks, LLM calls (generation and rating), and for Gemini
    the estimated seconds and cost in USD out. Sends nothing to any model."""
    return chunking.plan(_read(_uploaded(files)), _settings(settings), curate=True)


def augment(files: list[dict], settings: dict, api_key: str = "", request: gr.Request | None = None,
            profile: gr.OAuthProfile | None = None) -> dict:
    """Documents and AugmentConfig settings in; question/answer pairs out. The same files and settings
    again continue the job (resumed_chunks). api_key: used for this call only (empty: the server's)."""
    docs = _read(_uploaded(files))
    result = pipeline.augment(docs, _settings(settings), user=user_of(request, profile),
                              api_key=(api_key or "").strip() or None)
    return _result(result)


def continue_augment(job: str, settings: dict, api_key: str = "", request: gr.Request | None = None,
                     profile: gr.OAuthProfile | None = None) -> dict:
    """An earlier /augment job's remaining chunks, from the texts and generation settings its folder kept (no
    files); settings give the rest (concurrency, retries, base_url). Out: what /augment returns."""
    return _result(pipeline.continue_job(user_of(request, profile), job, _settings(settings),
                                         api_key=(api_key or "").strip() or None))


def curate(pairs: list[dict], settings: dict, api_key: str = "", job: str = "", rate: bool = True,
           request: gr.Request | None = None, profile: gr.OAuthProfile | None = None) -> dict:
    """Pairs and settings (curate_threshold, dedup_threshold, min_support, backend...) in; kept and dropped
    pairs (each dropped one with its reason) out. job: the /augment job, for the source texts. rate=False:
    only the cheap checks (duplicates, empty, word support), no model calls."""
    result = _curate(pairs, _settings(settings), user_of(request, profile), api_key, job, bool(rate))
    return {"kept": result.kept, "dropped": result.dropped, "summary": result.summary(), "stats": result.stats}


def save_pairs(pairs: list[dict], name: str, overwrite: bool = False, system: str = "",
               request: gr.Request | None = None, profile: gr.OAuthProfile | None = None) -> dict:
    """Pairs in; saved as a dataset of `messages` in your workspace (the Train tab lists it). Out: its name,
    rows, and your dataset names."""
    user = user_of(request, profile)
    meta = saving.save_pairs(user, (name or "").strip(), pairs, system=(system or "").strip() or None,
                             source="augment", overwrite=bool(overwrite))
    return {"name": meta["name"], "rows": meta["rows"], "datasets": _dataset_names(user)}


# --- the panel's handlers -------------------------------------------------------------------

def _form_config(values) -> AugmentConfig:
    return _settings(dict(zip(NAMES, values)))


def _shown(docs: list[dict], index) -> str:
    if not docs or index is None or not 0 <= int(index) < len(docs):
        return ""
    doc = docs[int(index)]
    if not doc["text"]:
        return f"(no text: {doc['warning']})"
    more = len(doc["text"]) - SHOWN_CHARS
    return doc["text"][:SHOWN_CHARS] + (f"\n\n… ({more} more characters)" if more > 0 else "")


def _on_files(files):
    if not files:
        return [], [], gr.update(choices=[], value=None), ""
    docs = _extract(list(files))  # an unreadable file stays in the table with its reason; the plan says the rest
    for doc in docs:
        if not doc["text"]:
            gr.Warning(f"Skipped: {doc['warning']}")
    table = [[d["name"], d["chars"], d["warning"] or ""] for d in docs]
    choices = [(f"{i + 1}. {d['name']}", i) for i, d in enumerate(docs)]
    return docs, table, gr.update(choices=choices, value=0), _shown(docs, 0)


def _on_plan(docs, *values) -> str:
    if not docs:
        return "Add documents to see the plan: chunks, requests, and for Gemini the time and cost."
    try:
        return f"**Plan:** {chunking.plan(_readable(docs), _form_config(values), curate=True)['summary']}"
    except GarageError as exc:  # a half-typed setting or no readable document: say so here, without a pop-up
        return f"⚠️ {exc}"


def _on_backend(backend, model):
    if backend == "gemini" and not (model or "").strip():
        model = DEFAULT_GEMINI_MODEL
    elif backend != "gemini" and model == DEFAULT_GEMINI_MODEL:
        model = ""
    return (gr.update(value=model, placeholder=MODEL_HINTS.get(backend, "")),
            gr.update(visible=backend != "local"), BACKEND_HINTS.get(backend, ""))


def _pair_rows(pairs: list[dict]) -> list[list]:
    return [[True, p.get("question", ""), p.get("answer", ""), p.get("reasoning", ""),
             "" if p.get("rating") is None else f"{p['rating']:g}", p.get("file") or "",
             str(p.get("chunk", ""))] for p in pairs]


def _ticked(value) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def _table_pairs(rows) -> list[dict]:
    """The ticked rows of the edit table as pairs (an emptied question or answer is skipped on save)."""
    pairs = []
    for row in rows or []:
        if len(row) < len(PAIR_COLUMNS):
            continue
        cells = dict(zip(PAIR_COLUMNS, row))
        if not _ticked(cells["keep"]):
            continue
        pair = {"question": str(cells["question"] or "").strip(), "answer": str(cells["answer"] or "").strip()}
        if str(cells["reasoning"] or "").strip():
            pair["reasoning"] = str(cells["reasoning"]).strip()
        pairs.append(pair)
    return pairs


def _eta(seconds) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    return f", about {seconds // 60}:{seconds % 60:02d} left" if seconds >= 60 else f", about {seconds} s left"


def _failure_text(exc: BaseException, *pasted: str | None) -> str:
    """Why a Generate or Curate failed, with what to do next, and no key in it."""
    cause = exc.__cause__ or exc  # AugmentInterrupted carries what stopped the job as its cause
    text = said(exc, *pasted)  # a bug: user_errors has logged the trace
    if isinstance(cause, AuthError):
        text += " " + NEXT_STEPS["key"]
    elif isinstance(cause, ServiceError):
        text += " " + NEXT_STEPS["server"]
    return text


def _failure_stays(verb: str, outputs: int, others=None):
    return failure_stays(verb, outputs, others, explain=_failure_text)


@_failure_stays("Generate", 5)
def _on_generate(request: gr.Request, profile: gr.OAuthProfile | None = None, progress=gr.Progress(), files=None,
                 docs=None, api_key="", *values):
    # Gradio fills request, profile and progress only in positional parameters, so they come first.
    cfg = _form_config(values)
    uploads = list(files or [])
    if not uploads:
        raise GarageError("Add at least one document (PDF, DOCX, PPTX, TXT, Markdown or HTML) first.")
    if [d.get("file") for d in docs or []] != uploads:
        docs = _extract(uploads)
    docs = _readable(docs)
    user = user_of(request, profile)
    result, stopped = _run_job(request, progress, api_key, lambda report, stop: pipeline.augment(
        docs, cfg, user=user, api_key=(api_key or "").strip() or None, progress=report, stop=stop))
    skipped = "; ".join(d["warning"] for d in docs if not d["text"])
    return _job_outputs(result, stopped, api_key, f"Skipped (not readable): {skipped}" if skipped else "")


@_failure_stays("Continue", 5)
def _on_continue(request: gr.Request, profile: gr.OAuthProfile | None = None, progress=gr.Progress(), job="",
                 following="", api_key="", *values):
    """The chosen earlier job's remaining chunks, from its folder: no files to upload again."""
    if following:
        raise GarageError(f"Job `{following}` is still generating; its pairs come into the table when it ends. "
                          "Continue it then, if chunks are left.")
    if not job:
        raise GarageError("Choose an unfinished job under Earlier jobs first; Continue generates its remaining "
                          "chunks from the texts it kept, with its own model and settings.")
    user = user_of(request, profile)
    result, stopped = _run_job(request, progress, api_key, lambda report, stop: pipeline.continue_job(
        user, job, _form_config(values), api_key=(api_key or "").strip() or None, progress=report, stop=stop))
    return _job_outputs(result, stopped, api_key)


def _run_job(request, progress, api_key: str, start):
    """``start(report, stop)`` with this page's progress bar and Stop button; (result, why it stopped early)."""
    session = getattr(request, "session_hash", None) or "anonymous"
    stop = _stops[session] = threading.Event()

    def report(done, total, pairs, eta):
        progress((done, total), desc=f"{pairs} pair(s) so far{_eta(eta)}", unit="chunks")

    try:
        return start(report, stop), ""
    except pipeline.AugmentInterrupted as exc:
        if not exc.result.pairs:  # everything done so far is on disk; Generate again continues
            raise
        stopped = _failure_text(exc, api_key)
        gr.Warning(stopped)
        return exc.result, stopped
    finally:
        if _stops.get(session) is stop:
            del _stops[session]


def _job_outputs(result, stopped: str, api_key: str, note: str = "") -> tuple:
    """A Generate's or a Continue's outputs: pairs, job, table, dropped (cleared), status."""
    status = f"{_summary(result)} · job `{result.job_dir.name}`"
    if note:
        status += f"\n\n{note}"
    if result.failed:  # chunks that failed without stopping the job: say why, once
        why = scrub_secrets(result.failed[-1]["error"], api_key)
        status = f"⚠️ {status}\n\nWhy chunks failed (last error): {why}"
        if not result.pairs:
            gr.Warning(f"No pairs: {len(result.failed)} chunk(s) failed. Last error: {why}")
    if stopped:
        status = f"⚠️ **Generate stopped early.** {stopped}\n\n{status}"
    return result.pairs, result.job_dir.name, _pair_rows(result.pairs), [], status


def _job_choices(jobs: list[dict]) -> list[tuple[str, str]]:
    """The user's earlier jobs as the dropdown shows them: what each is, how far it got, whether it still runs."""
    return [(f"{j['name']} · {j['created'][:16].replace('T', ' ')} UTC · {j['done_chunks']}/{j['total_chunks']}"
             f" chunks · {j['pairs']} pairs" + (" · generating" if j["generating"] else ""), j["name"])
            for j in jobs]


def _jobs_dropdown(user: str, jobs: list[dict] | None = None):
    # the choice is cleared so that choosing a job again (one still generating) loads it again
    return gr.update(choices=_job_choices(pipeline.list_jobs(user) if jobs is None else jobs), value=None)


@user_errors
def _on_jobs_load(request: gr.Request, profile: gr.OAuthProfile | None = None):
    return _jobs_dropdown(user_of(request, profile))


def _following(info: dict | None) -> tuple:
    """The follow timer and the followed job's name: on while ``info``'s job generates, else off."""
    if info and info["generating"]:
        return gr.Timer(active=True), info["name"]
    return gr.Timer(active=False), ""


@user_errors
def _on_page_load(request: gr.Request, profile: gr.OAuthProfile | None = None):
    """A (re)loaded page lists the user's jobs and follows one that is still generating, as its own page did."""
    user = user_of(request, profile)
    jobs = pipeline.list_jobs(user)
    running = next((j for j in jobs if j["generating"]), None)
    return (_jobs_dropdown(user, jobs), _job_status(running) if running else gr.skip(), *_following(running))


def _job_status(info: dict) -> str:
    done = f"{info['done_chunks']} of {info['total_chunks']} chunks"
    if info["generating"]:
        return (f"⏳ Job `{info['name']}` is generating: {done} so far ({info['pairs']} pairs). This line follows "
                "it, its pairs come into the table below when it ends, and **Stop** stops it.")
    rest = "" if info["done_chunks"] >= info["total_chunks"] else (
        " **Continue the chosen job** generates the rest, from the texts it kept (no files to upload).")
    problem = info.get("last_problem") if info["done_chunks"] < info["total_chunks"] else ""
    why = f"\n\nWhy it stopped: {scrub_secrets(problem)}" if problem else ""
    return f"Job `{info['name']}`: {info['pairs']} pairs from {done}.{rest}{why}"


@_failure_stays("Loading the job", 8)
def _on_job(name, request: gr.Request, profile: gr.OAuthProfile | None = None):
    """An earlier job's pairs into the table and state a Generate fills, so Curate, Save and Export work on them.
    A job still generating is followed instead, its pairs loaded when it ends (not before: pairs edited or
    curated in the table meanwhile would be replaced by the whole job's)."""
    if not name:
        return tuple(gr.skip() for _ in range(8))
    user = user_of(request, profile)
    info, pairs = pipeline.open_job(user, name)
    if info["generating"]:
        return (*[gr.skip()] * 4, _jobs_dropdown(user), *_following(info), _job_status(info))
    return _loaded(user, info, pairs)


def _loaded(user: str, info: dict, pairs: list[dict]) -> tuple:
    """A job's pairs into the table and state, the following ended: ``_on_job``'s outputs."""
    return (pairs, info["name"], _pair_rows(pairs), [], _jobs_dropdown(user), *_following(None),
            _job_status(info))


def _stop_following() -> list:
    return [*[gr.skip()] * 5, *_following(None)]


@_failure_stays("Following the job", 8, others=_stop_following)
def _on_follow_tick(name, request: gr.Request, profile: gr.OAuthProfile | None = None):
    """Every few seconds while a job another page started generates: its counts on the status line; when it
    ends, its pairs into the table."""
    if not name:
        return (*_stop_following(), gr.skip())
    user = user_of(request, profile)
    info = pipeline.job_progress(user, name)
    if info is None:
        return (*_stop_following(), f"Job `{name}` is no longer in your workspace.")
    if info["generating"]:
        # the timer and the followed name are left as they are: a tick that was queued before this page's own
        # Generate (which stops the following) must not start it again
        return (*[gr.skip()] * 7, _job_status(info))
    return _loaded(user, *pipeline.open_job(user, name))


def _on_stop(following: str, request: gr.Request, profile: gr.OAuthProfile | None = None):
    event = _stops.get(getattr(request, "session_hash", None) or "anonymous")
    if event is not None:
        event.set()
    elif not (following and pipeline.stop_job(user_of(request, profile), following)):
        gr.Info("Nothing of yours is generating on this page.")
        return
    gr.Info("Stopping after the requests in flight; Continue the chosen job finishes it later.")


@_failure_stays("Curate", 3)
def _on_curate(request: gr.Request, profile: gr.OAuthProfile | None = None, progress=gr.Progress(), pairs=None,
               job="", api_key="", rate=True, *values):
    def report(done, total, kept, eta):
        progress((done, total), desc=f"{kept} pair(s) kept so far{_eta(eta)}", unit="batches")

    result = _curate(pairs or [], _form_config(values), user_of(request, profile), api_key, job or "", bool(rate),
                     report)
    dropped = [[p.get("check", ""), p.get("reason", ""), p.get("question", ""), p.get("answer", "")]
               for p in result.dropped]
    return _pair_rows(result.kept), dropped, f"**Curation:** {result.summary()}"


def _on_save(rows, name, overwrite, system, request: gr.Request, profile: gr.OAuthProfile | None = None):
    saved = save_pairs(_table_pairs(rows), name, overwrite, system, request, profile)
    message = f"Saved **{saved['name']}**: {saved['rows']} conversations. The Train tab lists it now."
    return message, gr.update(choices=saved["datasets"], value=saved["name"])


def _on_export(rows, name, system):
    folder = Path(tempfile.mkdtemp(prefix="garage-export-"))
    target = folder / f"{paths.safe_name(name or '', 'pairs')}.jsonl"
    return str(saving.export_pairs(_table_pairs(rows), target, system=(system or "").strip() or None))


# --- layout -----------------------------------------------------------------------------------

def _curate_controls() -> dict:
    """A slider per curation field of AugmentConfig (range, default and help from the field)."""
    controls = {}
    for spec in CURATE_SPECS:
        lo, hi = spec["minimum"], spec["maximum"]
        controls[spec["name"]] = gr.Slider(lo, hi, value=spec["default"], step=0.5 if hi - lo > 2 else 0.05,
                                           label=spec["name"], info=spec["help"])
    return controls


def build(train_dataset: gr.Dropdown) -> tuple:
    """The panel; returns its page-load handler and outputs (the app registers them with ``demo.load``)."""
    gr.Markdown("Turn PDF, DOCX, PPTX, TXT, Markdown or HTML documents into question/answer conversations: "
                "read them, check the plan, generate, curate, fix what is wrong, then save (the Train tab "
                "lists it) or download a JSONL. Generating again with the same files and settings continues "
                "where the last run stopped.")
    docs = gr.State([])
    pairs = gr.State([])
    job = gr.State("")

    files = gr.File(label="Documents", file_count="multiple", file_types=SUPPORTED, type="filepath",
                    elem_id="augment-files")
    with gr.Row():
        files_table = gr.Dataframe(headers=FILE_COLUMNS, label="Extracted text per file", interactive=False,
                                   wrap=True, scale=2)
        with gr.Column(scale=3):
            picker = gr.Dropdown(choices=[], label="Show the text of", interactive=True)
            text = gr.Textbox(label="Extracted text", lines=8, max_lines=16, interactive=False)

    lead = {"backend", "model"}
    form = build_form(AugmentConfig, skip=tuple(n for n in NAMES if n not in lead))
    with gr.Row():
        api_key = gr.Textbox(label="API key (this session only, never stored)", type="password", scale=2,
                             placeholder="paste a key, or leave empty to use the server's",
                             info="Sent with this job's requests only; not saved anywhere.")
        backend_hint = gr.Markdown(BACKEND_HINTS["gemini"])
    form.update(build_form(AugmentConfig, skip=tuple(n for n in NAMES if n != "instruction")))
    form.update(build_form(AugmentConfig, skip=(*lead, "instruction", *(s["name"] for s in CURATE_SPECS))))
    plan_md = gr.Markdown("Add documents to see the plan: chunks, requests, and for Gemini the time and cost.",
                          elem_id="augment-plan")
    with gr.Row():
        generate = gr.Button("Generate pairs", variant="primary")
        resume = gr.Button("Continue the chosen job")
        stop = gr.Button("Stop", variant="stop")
    status = gr.Markdown(elem_id="augment-status")
    following = gr.State("")  # a job another page (or this one before a reload) is generating
    follow = gr.Timer(FOLLOW_SECONDS, active=False)
    earlier = gr.Dropdown(choices=[], value=None, interactive=True, elem_id="augment-jobs",
                          label="Earlier jobs (yours): choose one to load its pairs into the table below")

    gr.Markdown("**Curate**: drop near-duplicates, answers the text does not support, and pairs the model "
                "rates below the threshold. Starts again from the generated pairs each time.")
    with gr.Row():
        form.update(_curate_controls())
        with gr.Column():
            rate = gr.Checkbox(value=True, label="rate with the model",
                               info="Off: only the cheap checks, no requests.")
            curate_btn = gr.Button("Curate")
    curate_md = gr.Markdown(elem_id="augment-curated")
    with gr.Accordion("Dropped pairs and why", open=True):
        dropped = gr.Dataframe(headers=DROPPED_COLUMNS, interactive=False, wrap=True, max_height=400,
                               column_widths=["12%", "26%", "27%", "35%"])

    missing = [n for n in NAMES if n not in form]
    if missing:
        raise RuntimeError(f"AugmentConfig fields without a control in the panel: {missing}")
    settings = [form[n] for n in NAMES]

    table = gr.Dataframe(headers=PAIR_COLUMNS, datatype=["bool", "str", "str", "str", "str", "str", "str"],
                         label="Pairs to save: edit a cell to fix it, untick keep to drop a pair",
                         interactive=True, type="array", wrap=True, static_columns=[4, 5, 6], max_height=600,
                         column_widths=["64px", "28%", "38%", "14%", "72px", "10%", "72px"])
    with gr.Row():
        system = gr.Textbox(label="System prompt for every conversation (optional)", scale=3)
        name = gr.Textbox(label="Save as", placeholder="my-docs-qa", scale=2)
        overwrite = gr.Checkbox(label="overwrite", value=False, scale=0)
    with gr.Row():
        save = gr.Button("Save to my workspace", variant="primary")
        export = gr.Button("Export JSONL")
    saved = gr.Markdown(elem_id="augment-saved")
    download = gr.File(label="JSONL download", interactive=False)

    private = dict(api_visibility="private")
    files.change(user_errors(_on_files), files, [docs, files_table, picker, text], **private).success(
        _on_plan, [docs, *settings], plan_md, **private)
    picker.change(_shown, [docs, picker], text, show_progress="hidden", **private)
    form["backend"].change(_on_backend, [form["backend"], form["model"]], [form["model"], api_key, backend_hint],
                           **private)
    gr.on([c.change for c in settings], _on_plan, [docs, *settings], plan_md, trigger_mode="always_last",
          show_progress="hidden", **private)
    generated = [pairs, job, table, dropped]
    generate.click(_on_generate, [files, docs, api_key, *settings], [*generated, status], concurrency_limit=2,
                   concurrency_id="augment", **private).then(_on_jobs_load, None, earlier, **private)
    resume.click(_on_continue, [job, following, api_key, *settings], [*generated, status], concurrency_limit=2,
                 concurrency_id="augment", **private).then(_on_jobs_load, None, earlier, **private)
    # this page's own Generate fills the table: a job followed till now must not replace its pairs later, nor
    # pairs being curated or edited (Continue refuses while a followed job generates, so it leaves it followed)
    gr.on([generate.click, curate_btn.click, table.input], lambda: _following(None), None, [follow, following],
          queue=False, **private)
    loaded = [*generated, earlier, follow, following, status]
    earlier.input(_on_job, earlier, loaded, **private)
    follow.tick(_on_follow_tick, following, loaded, show_progress="hidden", **private)
    stop.click(_on_stop, following, None, **private)
    curate_btn.click(_on_curate, [pairs, job, api_key, rate, *settings], [table, dropped, curate_md],
                     concurrency_limit=2, concurrency_id="augment", **private)
    save.click(user_errors(_on_save), [table, name, overwrite, system], [saved, train_dataset], **private)
    export.click(user_errors(_on_export), [table, name, system], download, **private)

    gr.api(user_errors(extract_text), api_name="extract_text")
    gr.api(user_errors(augment_plan), api_name="augment_plan")
    gr.api(user_errors(augment), api_name="augment", concurrency_limit=2, concurrency_id="augment")
    gr.api(user_errors(continue_augment), api_name="continue_augment", concurrency_limit=2,
           concurrency_id="augment")
    gr.api(user_errors(curate), api_name="curate", concurrency_limit=2, concurrency_id="augment")
    gr.api(user_errors(save_pairs), api_name="save_pairs")
    return _on_page_load, [earlier, status, follow, following]
