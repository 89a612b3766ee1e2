"""Documents -> Q/A panel of the Data tab: read, plan, generate, curate, edit, then save or export.

Its parts: the API endpoints and what they share with the panel (``augment_api``), running and following jobs and
the Earlier jobs list (``augment_jobs``), and here the form, generation, curation, saving and the layout.

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
from pathlib import Path

import gradio as gr

from garage import paths
from garage.augment import chunking, pipeline
from garage.augment import save as saving
from garage.augment.config import DEFAULT_GEMINI_MODEL, AugmentConfig
from garage.augment.ingest import SUPPORTED
from garage.config import field_specs
from garage.errors import GarageError
from garage.ui import augment_api as api
from garage.ui import augment_jobs as jobs
from garage.ui.forms import build_form
from garage.ui.session import user_errors, user_of

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


# --- shared by the API and the panel ----------------------------------------------------


# --- API endpoints ------------------------------------------------------------------------


# --- the panel's handlers -------------------------------------------------------------------

def _form_config(values) -> AugmentConfig:
    return api.settings_of(dict(zip(NAMES, values)))


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
    docs = api.extract(list(files))  # an unreadable file stays in the table with its reason; the plan says the rest
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
        return f"**Plan:** {chunking.plan(api.readable(docs), _form_config(values), curate=True)['summary']}"
    except GarageError as exc:  # a half-typed setting or no readable document: say so here, without a pop-up
        return f"⚠️ {exc}"


def _on_backend(backend, model):
    if backend == "gemini" and not (model or "").strip():
        model = DEFAULT_GEMINI_MODEL
    elif backend != "gemini" and model == DEFAULT_GEMINI_MODEL:
        model = ""
    return (gr.update(value=model, placeholder=MODEL_HINTS.get(backend, "")),
            gr.update(visible=backend != "local"), BACKEND_HINTS.get(backend, ""))


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


@jobs.stays("Generate", 5)
def _on_generate(request: gr.Request, profile: gr.OAuthProfile | None = None, progress=gr.Progress(), files=None,
                 docs=None, api_key="", *values):
    # Gradio fills request, profile and progress only in positional parameters, so they come first.
    cfg = _form_config(values)
    uploads = list(files or [])
    if not uploads:
        raise GarageError("Add at least one document (PDF, DOCX, PPTX, TXT, Markdown or HTML) first.")
    if [d.get("file") for d in docs or []] != uploads:
        docs = api.extract(uploads)
    docs = api.readable(docs)
    user = user_of(request, profile)
    result, stopped = jobs.run_job(request, progress, api_key, lambda report, stop: pipeline.augment(
        docs, cfg, user=user, api_key=(api_key or "").strip() or None, progress=report, stop=stop))
    skipped = "; ".join(d["warning"] for d in docs if not d["text"])
    return jobs.job_outputs(result, stopped, api_key, f"Skipped (not readable): {skipped}" if skipped else "")


@jobs.stays("Continue", 5)
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
    result, stopped = jobs.run_job(request, progress, api_key, lambda report, stop: pipeline.continue_job(
        user, job, _form_config(values), api_key=(api_key or "").strip() or None, progress=report, stop=stop))
    return jobs.job_outputs(result, stopped, api_key)


@jobs.stays("Curate", 3)
def _on_curate(request: gr.Request, profile: gr.OAuthProfile | None = None, progress=gr.Progress(), pairs=None,
               job="", api_key="", rate=True, *values):
    def report(done, total, kept, eta):
        progress((done, total), desc=f"{kept} pair(s) kept so far{jobs.eta_text(eta)}", unit="batches")

    result = api.curate_rated(pairs or [], _form_config(values), user_of(request, profile), api_key, job or "",
                              bool(rate), report)
    dropped = [[p.get("check", ""), p.get("reason", ""), p.get("question", ""), p.get("answer", "")]
               for p in result.dropped]
    return jobs.pair_rows(result.kept), dropped, f"**Curation:** {result.summary()}"


def _on_save(rows, name, overwrite, system, request: gr.Request, profile: gr.OAuthProfile | None = None):
    saved = api.save_pairs(_table_pairs(rows), name, overwrite, system, request, profile)
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
    follow = gr.Timer(jobs.FOLLOW_SECONDS, active=False)
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
                   concurrency_id="augment", **private).then(jobs.on_jobs_load, None, earlier, **private)
    resume.click(_on_continue, [job, following, api_key, *settings], [*generated, status], concurrency_limit=2,
                 concurrency_id="augment", **private).then(jobs.on_jobs_load, None, earlier, **private)
    # this page's own Generate fills the table: a job followed till now must not replace its pairs later, nor
    # pairs being curated or edited (Continue refuses while a followed job generates, so it leaves it followed)
    gr.on([generate.click, curate_btn.click, table.input], lambda: jobs.following(None), None, [follow, following],
          queue=False, **private)
    loaded = [*generated, earlier, follow, following, status]
    earlier.input(jobs.on_job, earlier, loaded, **private)
    follow.tick(jobs.on_follow_tick, following, loaded, show_progress="hidden", **private)
    stop.click(jobs.on_stop, following, None, **private)
    curate_btn.click(_on_curate, [pairs, job, api_key, rate, *settings], [table, dropped, curate_md],
                     concurrency_limit=2, concurrency_id="augment", **private)
    save.click(user_errors(_on_save), [table, name, overwrite, system], [saved, train_dataset], **private)
    export.click(user_errors(_on_export), [table, name, system], download, **private)

    gr.api(user_errors(api.extract_text), api_name="extract_text")
    gr.api(user_errors(api.augment_plan), api_name="augment_plan")
    gr.api(user_errors(api.augment), api_name="augment", concurrency_limit=2, concurrency_id="augment")
    gr.api(user_errors(api.continue_augment), api_name="continue_augment", concurrency_limit=2,
           concurrency_id="augment")
    gr.api(user_errors(api.curate), api_name="curate", concurrency_limit=2, concurrency_id="augment")
    gr.api(user_errors(api.save_pairs), api_name="save_pairs")
    return jobs.on_page_load, [earlier, status, follow, following]
