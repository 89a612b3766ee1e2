"""Augment: turn documents into a curated question/answer dataset.

    docs = extract_text(["manual.pdf", "notes.docx"])      # synthetic-data-kit's parsers, guarded
    print(plan(docs, cfg)["summary"])                      # chunks, requests, time and cost
    result = augment(docs, cfg, user=user, progress=cb)    # resumable, N requests in flight
    list_jobs(user); open_job(user, name)                  # earlier jobs (after a reload), and their pairs
    job_progress(user, name); stop_job(user, name)         # follow or stop a running one from another page
    continue_job(user, name, cfg)                          # an unfinished one's rest, without its files
    curated = curate(result.pairs, backend, 7.0, chunks=result.chunks)
    save_pairs(user, "manual-qa", curated.kept)            # into the user's datasets

Importing this package is cheap: google-genai, openai, torch, transformers and
synthetic-data-kit are imported inside the functions that use them.
"""

from garage.augment.chunking import chunk_documents, chunk_text, estimate_tokens, plan
from garage.augment.config import AugmentConfig, make_backend
from garage.augment.curate import CurateResult, curate
from garage.augment.ingest import extract_text
from garage.augment.pipeline import (AugmentInterrupted, AugmentResult, augment, continue_job, job_progress,
                                     list_jobs, load_job, open_job, prepare, stop_job)
from garage.augment.save import export_pairs, save_pairs, to_conversations
from garage.llm import (AuthError, Backend, BackendError, GeminiBackend, LocalBackend, OpenAIBackend, ParseFailure,
                        QuotaError, RequestCapError, ServiceError)

__all__ = [
    "AugmentConfig", "AugmentInterrupted", "AugmentResult", "AuthError", "Backend", "BackendError", "CurateResult",
    "GeminiBackend", "LocalBackend", "OpenAIBackend", "ParseFailure", "QuotaError", "RequestCapError",
    "ServiceError", "augment", "chunk_documents", "chunk_text", "continue_job", "curate", "estimate_tokens",
    "export_pairs", "extract_text", "job_progress", "list_jobs", "load_job", "make_backend", "open_job", "plan",
    "prepare", "save_pairs", "stop_job", "to_conversations",
]
