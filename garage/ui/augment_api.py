"""The Documents -> Q/A endpoints of the API (/extract_text, /augment_plan, /augment, /continue_augment, /curate,
/save_pairs), and what the panel shares with them: reading uploads, settings, results, curating with ratings.

Each is a ``garage.augment`` call; ``settings`` is a dict of ``AugmentConfig`` fields. An empty ``api_key``
means the server's key, which on a shared Space only its owner may spend (``garage.llm.keys``).
"""

from __future__ import annotations


import gradio as gr

from garage.augment import chunking, ingest, pipeline
from garage.augment import save as saving
from garage.augment.config import AugmentConfig, make_backend
from garage.augment.curate import RememberedRatings
from garage.augment.curate import curate as curate_pairs
from garage.augment.ingest import SUPPORTED
from garage.data.store import list_datasets
from garage.errors import GarageError
from garage.llm.keys import check_server_key_use
from garage.ui.session import user_of

def settings_of(values: dict | None) -> AugmentConfig:
    if values is not None and not isinstance(values, dict):
        raise GarageError("settings must be a dict of AugmentConfig fields, e.g. {\"num_pairs\": 20}.")
    return AugmentConfig.from_dict(values or {})


def uploaded(files) -> list[str]:
    """Server paths of files sent with ``gradio_client.handle_file`` (Gradio checked they are uploads)."""
    if isinstance(files, dict):
        files = [files]
    out = []
    for f in files or []:
        if not (isinstance(f, dict) and (f.get("meta") or {}).get("_type") == "gradio.FileData" and f.get("path")):
            raise GarageError("Send each document with gradio_client.handle_file(path).")
        out.append(f["path"])
    return out


def extract(uploads: list[str]) -> list[dict]:
    """Every file's text; an unreadable one comes back empty, with the reason as its warning."""
    return ingest.extract_text(uploads, on_error="warn")


def readable(docs: list[dict]) -> list[dict]:
    """``docs`` when any has text; else a GarageError naming each file, why it failed, and what is accepted."""
    if not any(d["text"] for d in docs):
        reasons = " ".join(d["warning"] or f"{d['name']} has no text." for d in docs)
        accepted = "" if "Accepted:" in reasons else (f" Accepted: {', '.join(SUPPORTED)}, with text in them "
                                                      "(a scanned PDF needs OCR first).")
        raise GarageError(f"No document could be read. {reasons}{accepted}")
    return docs


def read(uploads: list[str]) -> list[dict]:
    """Every file's text; unreadable ones come back empty with the reason, unless none is readable."""
    return readable(extract(uploads))


def public(doc: dict) -> dict:
    return {"name": doc["name"], "chars": doc["chars"], "warning": doc["warning"], "text": doc["text"]}


def summary(result) -> str:
    head = f"Resumed {result.resumed_chunks} chunk(s). " if result.resumed_chunks else ""
    return head + result.summary()


def result_of(result) -> dict:
    return {"pairs": result.pairs, "summary": summary(result), "job": result.job_dir.name,
            "total_chunks": result.total_chunks, "done_chunks": result.done_chunks,
            "resumed_chunks": result.resumed_chunks, "failed": result.failed, "complete": result.complete,
            "plan": result.plan}


def job_chunks(user: str, job: str):
    if not job:
        return None
    folder = pipeline.existing_job_dir(user, job)
    manifest = pipeline.job_manifest(folder) if folder else None
    if manifest is None:
        raise GarageError(f"No augment job named '{job}' in your workspace (the job name comes from /augment).")
    return manifest.get("chunks")


def curate_rated(pairs, cfg: AugmentConfig, user: str, api_key: str, job: str, rate: bool, progress=None):
    if not isinstance(pairs, list) or not all(isinstance(p, dict) for p in pairs):
        raise GarageError("pairs must be a list of {\"question\", \"answer\"} objects (as /augment returns).")
    if not pairs:
        raise GarageError("No pairs to curate: generate some first.")
    chunks = job_chunks(user, job)
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


def dataset_names(user: str) -> list[str]:
    return [d["name"] for d in list_datasets(user)]


def extract_text(files: list[dict]) -> list[dict]:
    """Documents in (PDF, DOCX, PPTX, TXT, MD, HTML; send each with handle_file); per file: name, chars,
    warning, text. An unreadable file comes back with empty text and the reason as its warning."""
    return [public(d) for d in read(uploaded(files))]


def augment_plan(files: list[dict], settings: dict) -> dict:
    """Documents and AugmentConfig settings in; chunks, LLM calls (generation and rating), and for Gemini
    the estimated seconds and cost in USD out. Sends nothing to any model."""
    return chunking.plan(read(uploaded(files)), settings_of(settings), curate=True)


def augment(files: list[dict], settings: dict, api_key: str = "", request: gr.Request | None = None,
            profile: gr.OAuthProfile | None = None) -> dict:
    """Documents and AugmentConfig settings in; question/answer pairs out. The same files and settings
    again continue the job (resumed_chunks). api_key: used for this call only (empty: the server's)."""
    docs = read(uploaded(files))
    result = pipeline.augment(docs, settings_of(settings), user=user_of(request, profile),
                              api_key=(api_key or "").strip() or None)
    return result_of(result)


def continue_augment(job: str, settings: dict, api_key: str = "", request: gr.Request | None = None,
                     profile: gr.OAuthProfile | None = None) -> dict:
    """An earlier /augment job's remaining chunks, from the texts and generation settings its folder kept (no
    files); settings give the rest (concurrency, retries, base_url). Out: what /augment returns."""
    return result_of(pipeline.continue_job(user_of(request, profile), job, settings_of(settings),
                                         api_key=(api_key or "").strip() or None))


def curate(pairs: list[dict], settings: dict, api_key: str = "", job: str = "", rate: bool = True,
           request: gr.Request | None = None, profile: gr.OAuthProfile | None = None) -> dict:
    """Pairs and settings (curate_threshold, dedup_threshold, min_support, backend...) in; kept and dropped
    pairs (each dropped one with its reason) out. job: the /augment job, for the source texts. rate=False:
    only the cheap checks (duplicates, empty, word support), no model calls."""
    result = curate_rated(pairs, settings_of(settings), user_of(request, profile), api_key, job, bool(rate))
    return {"kept": result.kept, "dropped": result.dropped, "summary": result.summary(), "stats": result.stats}


def save_pairs(pairs: list[dict], name: str, overwrite: bool = False, system: str = "",
               request: gr.Request | None = None, profile: gr.OAuthProfile | None = None) -> dict:
    """Pairs in; saved as a dataset of `messages` in your workspace (the Train tab lists it). Out: its name,
    rows, and your dataset names."""
    user = user_of(request, profile)
    meta = saving.save_pairs(user, (name or "").strip(), pairs, system=(system or "").strip() or None,
                             source="augment", overwrite=bool(overwrite))
    return {"name": meta["name"], "rows": meta["rows"], "datasets": dataset_names(user)}
