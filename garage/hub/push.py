"""Create a Hub repo and upload a folder to it with ``huggingface_hub.HfApi``, retrying network failures.

Every failure becomes a ``GarageError`` a person can act on (not signed in, a token
without write access, the repo exists, the network is down), with the token scrubbed
out of the text. A failed upload leaves the local files where they are.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from garage.errors import GarageError
from garage.hub import auth
from garage.hub.names import validate_repo
from garage.hub.progress import Progress
from garage.secrecy import scrub_tokens

ATTEMPTS = 3          # tries per step (create the repo, upload) when the network fails
BACKOFF_S = 2.0       # wait before the 2nd try; doubles for each further try


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a failed Hub call (None for a network failure)."""
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def is_transient(exc: BaseException) -> bool:
    """A failure worth retrying: the network, a timeout, or the Hub's 5xx / 429."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return False
    if isinstance(exc, HfHubHTTPError):
        status = http_status(exc)
        return status is None or status >= 500 or status == 429
    try:
        import httpx

        if isinstance(exc, httpx.TransportError):
            return True
    except ImportError:
        pass
    return isinstance(exc, (ConnectionError, TimeoutError))


def explain(exc: BaseException, repo: str, token: str | None, *, repo_type: str = "model",
            local: Path | None = None, tries: int = 1) -> GarageError:
    """A GarageError for a failed Hub call; the token never appears in it."""
    kind = "dataset repo" if repo_type == "dataset" else "repo"
    status = http_status(exc)
    kept = f" The files are still on disk in {local}." if local else ""
    if status == 401:
        text = ("The Hugging Face Hub refused your token (401 Unauthorized): it is invalid or expired. Sign in "
                "again, or set HF_TOKEN to a new token from https://huggingface.co/settings/tokens.")
    elif status == 403:
        text = (f"Your Hugging Face token cannot write to the {kind} '{repo}' (403 Forbidden): pushing needs a "
                "token with write access. Create one with the 'Write' role at https://huggingface.co/settings/"
                "tokens (or sign in again and allow write access), and check that you may write to that "
                "namespace.")
    elif status == 409:
        text = (f"The {kind} '{repo}' already exists. Tick 'update the repo if it exists' (CLI: --update) to push "
                "into it, or pick another name.")
    elif status == 404:
        text = f"The Hub cannot find the {kind} '{repo}' (404): check the name and that you may write to it."
    elif is_transient(exc):
        what = f"HTTP {status}" if status else type(exc).__name__
        text = (f"Could not reach the Hugging Face Hub at {auth.endpoint()} ({what}) after {tries} "
                f"{'try' if tries == 1 else 'tries'}.{kept} Try again when the network is back.")
    else:
        detail = " ".join(str(exc).split())[:400]
        text = f"Pushing to '{repo}' failed: {type(exc).__name__}: {detail}{kept}"
    return GarageError(scrub_tokens(text, token))


def retrying(step: Callable, label: str, *, attempts: int = ATTEMPTS, backoff: float = BACKOFF_S,
             progress: Progress | None = None, at: float = 0.0):
    """Run ``step()``; on a transient failure wait (backoff, doubling) and try again, ``attempts`` times in all.

    Returns (result, tries used). The last failure is re-raised with ``tries`` attached.
    """
    for attempt in range(1, attempts + 1):
        try:
            return step(), attempt
        except Exception as exc:
            if attempt >= attempts or not is_transient(exc):
                exc.garage_tries = attempt  # type: ignore[attr-defined]
                raise
            wait = backoff * 2 ** (attempt - 1)
            if progress:
                progress(at, f"{label}: network problem ({type(exc).__name__}); retrying in {wait:.0f}s "
                             f"(try {attempt + 1} of {attempts})")
            time.sleep(wait)
    raise AssertionError("unreachable")


def folder_size(folder: Path) -> tuple[int, int]:
    files = [p for p in Path(folder).rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def refuse_if_exists(repo: str, token: str, repo_type: str = "model") -> None:
    """Say early (before exporting and writing the card) that ``repo`` exists; silent if the Hub cannot tell."""
    from huggingface_hub import HfApi

    try:
        exists = HfApi(endpoint=auth.endpoint(), token=token).repo_exists(repo, repo_type=repo_type)
    except Exception:
        return  # create_repo decides later, with retries and clear errors
    if exists:
        raise explain(_Conflict(), repo, token, repo_type=repo_type)


class _Conflict(Exception):
    response = type("Response", (), {"status_code": 409})()


def push_folder(folder: Path, repo: str, **options) -> str:
    """Create ``repo`` (or reuse it when ``update``) and upload ``folder`` into it; returns the repo URL."""
    return push_folder_commit(folder, repo, **options)[0]


def push_folder_commit(folder: Path, repo: str, *, token: str, private: bool = True, update: bool = False,
                       repo_type: str = "model", commit_message: str = "Upload from Gemma Garage",
                       progress: Progress | None = None, attempts: int = ATTEMPTS, backoff: float = BACKOFF_S,
                       start: float = 0.7, kept: bool = True):
    """``push_folder``, also returning the upload's commit (``.oid``: what a reader can pin to). ``kept``: the
    folder outlives a failure (a failure's message points to it)."""
    from huggingface_hub import HfApi

    repo = validate_repo(repo)
    if not token:
        auth.require_token(None)
    auth.check_online()
    api = HfApi(endpoint=auth.endpoint(), token=token)
    say = progress or (lambda fraction, message: None)
    say(start, f"Creating the {'dataset ' if repo_type == 'dataset' else ''}repo {repo}")
    try:
        url, _ = retrying(lambda: api.create_repo(repo, private=private, exist_ok=update, repo_type=repo_type),
                          "Creating the repo", attempts=attempts, backoff=backoff, progress=say, at=start)
    except Exception as exc:
        raise explain(exc, repo, token, repo_type=repo_type, local=folder if kept else None,
                      tries=getattr(exc, "garage_tries", 1)) from None
    repo_id = getattr(url, "repo_id", None) or repo
    count, size = folder_size(folder)
    at = start + (1 - start) * 0.3
    say(at, f"Uploading {count} files ({size / 2**20:.1f} MB) to {repo_id}")
    try:
        commit, _ = retrying(lambda: api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type,
                                                       commit_message=commit_message),
                             "Uploading", attempts=attempts, backoff=backoff, progress=say, at=at)
    except Exception as exc:
        raise explain(exc, repo_id, token, repo_type=repo_type, local=folder if kept else None,
                      tries=getattr(exc, "garage_tries", 1)) from None
    say(1.0, f"Pushed to {url}")
    return str(url), commit
