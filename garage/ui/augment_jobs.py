"""Documents -> Q/A jobs on the page: running one with progress and Stop, the Earlier jobs list, reopening a job,
and following one that another page (or a reload) runs.
"""

from __future__ import annotations

import threading

import gradio as gr

from garage.augment import pipeline
from garage.llm import AuthError, ServiceError
from garage.secrecy import scrub_secrets
from garage.ui import augment_api as api
from garage.ui.session import failure_stays, said, user_errors, user_of

NEXT_STEPS = {  # what to do after a failure, where the error itself cannot know the panel
    "key": "To use another key, paste it in the **API key** box above (used for this job only), or leave the box "
           "empty to use the server's key (`GEMINI_API_KEY`, or `OPENAI_API_KEY` for an OpenAI-compatible endpoint).",
    "server": "If you set a **base_url** (under Advanced), check the address and that its server is up.",
}


stops: dict[str, threading.Event] = {}  # page session -> the Stop button's signal to its running job


FOLLOW_SECONDS = 2.0  # how often a page following a job another page runs reads its counts


def pair_rows(pairs: list[dict]) -> list[list]:
    return [[True, p.get("question", ""), p.get("answer", ""), p.get("reasoning", ""),
             "" if p.get("rating") is None else f"{p['rating']:g}", p.get("file") or "",
             str(p.get("chunk", ""))] for p in pairs]


def eta_text(seconds) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    return f", about {seconds // 60}:{seconds % 60:02d} left" if seconds >= 60 else f", about {seconds} s left"


def failure_text(exc: BaseException, *pasted: str | None) -> str:
    """Why a Generate or Curate failed, with what to do next, and no key in it."""
    cause = exc.__cause__ or exc  # AugmentInterrupted carries what stopped the job as its cause
    text = said(exc, *pasted)  # a bug: user_errors has logged the trace
    if isinstance(cause, AuthError):
        text += " " + NEXT_STEPS["key"]
    elif isinstance(cause, ServiceError):
        text += " " + NEXT_STEPS["server"]
    return text


def stays(verb: str, outputs: int, others=None):
    return failure_stays(verb, outputs, others, explain=failure_text)


def run_job(request, progress, api_key: str, start):
    """``start(report, stop)`` with this page's progress bar and Stop button; (result, why it stopped early)."""
    session = getattr(request, "session_hash", None) or "anonymous"
    stop = stops[session] = threading.Event()

    def report(done, total, pairs, eta):
        progress((done, total), desc=f"{pairs} pair(s) so far{eta_text(eta)}", unit="chunks")

    try:
        return start(report, stop), ""
    except pipeline.AugmentInterrupted as exc:
        if not exc.result.pairs:  # everything done so far is on disk; Generate again continues
            raise
        stopped = failure_text(exc, api_key)
        gr.Warning(stopped)
        return exc.result, stopped
    finally:
        if stops.get(session) is stop:
            del stops[session]


def job_outputs(result, stopped: str, api_key: str, note: str = "") -> tuple:
    """A Generate's or a Continue's outputs: pairs, job, table, dropped (cleared), status."""
    status = f"{api.summary(result)} · job `{result.job_dir.name}`"
    if note:
        status += f"\n\n{note}"
    if result.failed:  # chunks that failed without stopping the job: say why, once
        why = scrub_secrets(result.failed[-1]["error"], api_key)
        status = f"⚠️ {status}\n\nWhy chunks failed (last error): {why}"
        if not result.pairs:
            gr.Warning(f"No pairs: {len(result.failed)} chunk(s) failed. Last error: {why}")
    if stopped:
        status = f"⚠️ **Generate stopped early.** {stopped}\n\n{status}"
    return result.pairs, result.job_dir.name, pair_rows(result.pairs), [], status


def job_choices(jobs: list[dict]) -> list[tuple[str, str]]:
    """The user's earlier jobs as the dropdown shows them: what each is, how far it got, whether it still runs."""
    return [(f"{j['name']} · {j['created'][:16].replace('T', ' ')} UTC · {j['done_chunks']}/{j['total_chunks']}"
             f" chunks · {j['pairs']} pairs" + (" · generating" if j["generating"] else ""), j["name"])
            for j in jobs]


def jobs_dropdown(user: str, jobs: list[dict] | None = None):
    # the choice is cleared so that choosing a job again (one still generating) loads it again
    return gr.update(choices=job_choices(pipeline.list_jobs(user) if jobs is None else jobs), value=None)


@user_errors
def on_jobs_load(request: gr.Request, profile: gr.OAuthProfile | None = None):
    return jobs_dropdown(user_of(request, profile))


def following(info: dict | None) -> tuple:
    """The follow timer and the followed job's name: on while ``info``'s job generates, else off."""
    if info and info["generating"]:
        return gr.Timer(active=True), info["name"]
    return gr.Timer(active=False), ""


@user_errors
def on_page_load(request: gr.Request, profile: gr.OAuthProfile | None = None):
    """A (re)loaded page lists the user's jobs and follows one that is still generating, as its own page did."""
    user = user_of(request, profile)
    jobs = pipeline.list_jobs(user)
    running = next((j for j in jobs if j["generating"]), None)
    return (jobs_dropdown(user, jobs), job_status(running) if running else gr.skip(), *following(running))


def job_status(info: dict) -> str:
    done = f"{info['done_chunks']} of {info['total_chunks']} chunks"
    if info["generating"]:
        return (f"⏳ Job `{info['name']}` is generating: {done} so far ({info['pairs']} pairs). This line follows "
                "it, its pairs come into the table below when it ends, and **Stop** stops it.")
    rest = "" if info["done_chunks"] >= info["total_chunks"] else (
        " **Continue the chosen job** generates the rest, from the texts it kept (no files to upload).")
    problem = info.get("last_problem") if info["done_chunks"] < info["total_chunks"] else ""
    why = f"\n\nWhy it stopped: {scrub_secrets(problem)}" if problem else ""
    return f"Job `{info['name']}`: {info['pairs']} pairs from {done}.{rest}{why}"


@stays("Loading the job", 8)
def on_job(name, request: gr.Request, profile: gr.OAuthProfile | None = None):
    """An earlier job's pairs into the table and state a Generate fills, so Curate, Save and Export work on them.
    A job still generating is followed instead, its pairs loaded when it ends (not before: pairs edited or
    curated in the table meanwhile would be replaced by the whole job's)."""
    if not name:
        return tuple(gr.skip() for _ in range(8))
    user = user_of(request, profile)
    info, pairs = pipeline.open_job(user, name)
    if info["generating"]:
        return (*[gr.skip()] * 4, jobs_dropdown(user), *following(info), job_status(info))
    return loaded(user, info, pairs)


def loaded(user: str, info: dict, pairs: list[dict]) -> tuple:
    """A job's pairs into the table and state, the following ended: ``on_job``'s outputs."""
    return (pairs, info["name"], pair_rows(pairs), [], jobs_dropdown(user), *following(None),
            job_status(info))


def stop_following() -> list:
    return [*[gr.skip()] * 5, *following(None)]


@stays("Following the job", 8, others=lambda why: stop_following())
def on_follow_tick(name, request: gr.Request, profile: gr.OAuthProfile | None = None):
    """Every few seconds while a job another page started generates: its counts on the status line; when it
    ends, its pairs into the table."""
    if not name:
        return (*stop_following(), gr.skip())
    user = user_of(request, profile)
    info = pipeline.job_progress(user, name)
    if info is None:
        return (*stop_following(), f"Job `{name}` is no longer in your workspace.")
    if info["generating"]:
        # the timer and the followed name are left as they are: a tick that was queued before this page's own
        # Generate (which stops the following) must not start it again
        return (*[gr.skip()] * 7, job_status(info))
    return loaded(user, *pipeline.open_job(user, name))


def on_stop(following: str, request: gr.Request, profile: gr.OAuthProfile | None = None):
    event = stops.get(getattr(request, "session_hash", None) or "anonymous")
    if event is not None:
        event.set()
    elif not (following and pipeline.stop_job(user_of(request, profile), following)):
        gr.Info("Nothing of yours is generating on this page.")
        return
    gr.Info("Stopping after the requests in flight; Continue the chosen job finishes it later.")
