"""Runs that train on Hugging Face Jobs: the job runs ``python -m garage job-train`` (``garage.jobs.in_job``), the
app follows it and keeps the local run folder as a local run's would be.

Start: the run's config and rows go to a private dataset repo of the user's (never into the job's command or
environment), with the project's code off a Space (on a Space the job runs the Space's own image, which has it);
the user's token goes in as the job's secret ``HF_TOKEN``, held by the app in memory only. While the job runs, its
log (MARK records: metrics, status, the run log, pushed checkpoints) is mirrored into the run folder, so the Train
tab's plots, ETA, log and states read it as they read a local run. Stop cancels the job; Resume starts a new job,
which goes on from the checkpoint the last one pushed. When it completes, the trained weights come back from the
model repo, for Compare, Publish and the downloads.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

from garage import files
from garage.config import TrainConfig
from garage.data.rows import dataset_rows, training_rows
from garage.errors import GarageError
from garage.hub import auth, push
from garage.hub.names import validate_repo
from garage.jobs import in_job
from garage.secrecy import scrub_tokens

IMAGE = "python:3.11"  # off a Space: the README's Python; the job installs the pinned requirements.txt into it
RUNNING, TERMINAL = ("SCHEDULING", "RUNNING", "UPDATING"), ("COMPLETED", "ERROR", "CANCELED", "DELETED")
POLL_S = 2.0
PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm's "100%|█████|"
STAMP = re.compile(r"^\[\d\d:\d\d:\d\d\] ")  # Run.log's time stamp
CODE = ("app.py", "requirements.txt", "garage")  # what a job off a Space needs of the project
ROOT = Path(__file__).resolve().parents[2]

_tokens: dict[str, str] = {}  # run id -> its owner's token, while the app follows the job (memory only)
_tokens_lock = threading.Lock()


def remember_token(run_id: str, token: str) -> None:
    with _tokens_lock:
        _tokens[run_id] = token


def token_of(run_id: str) -> str | None:
    with _tokens_lock:
        return _tokens.get(run_id)


def forget_token(run_id: str) -> None:
    with _tokens_lock:
        _tokens.pop(run_id, None)


def _api(token: str):
    from huggingface_hub import HfApi  # kept out of the app's start-up, as in garage.hub

    auth.check_online()
    return HfApi(endpoint=auth.endpoint(), token=token)


def _refusal(exc: BaseException, token: str, flavor: str = "") -> GarageError:
    """Why the Hub would not start (or show) a job, in words a person can act on; the token never in it."""
    status = push._status(exc)
    said = " ".join(str(getattr(exc, "server_message", "") or exc).split())[:300]
    if status == 401:
        text = ("The Hugging Face Hub refused your token (401): it is invalid or expired. Sign in again, or set "
                "HF_TOKEN to a new token from https://huggingface.co/settings/tokens.")
    elif status == 402:
        text = ("Hugging Face Jobs needs credits or a payment method on your account (402 Payment Required): add "
                f"them at https://huggingface.co/settings/billing, then start again. The Hub said: {said}")
    elif status == 403:
        text = ("Your token may not run Hugging Face Jobs (403): use a token with the 'Write' role (or a "
                "fine-grained one that may start jobs) from https://huggingface.co/settings/tokens, or sign in "
                f"again allowing jobs. The Hub said: {said}")
    elif status == 400 and flavor:
        text = f"Hugging Face Jobs refused flavor {flavor!r} (400): {said}"
    else:
        return push.explain(exc, "jobs", token)
    return GarageError(scrub_tokens(text, token))


def flavors(token: str) -> list[dict]:
    """The Jobs hardware with its price: name, what it has, USD per hour."""
    try:
        hardware = _api(token).list_jobs_hardware()
    except Exception as exc:
        raise _refusal(exc, token) from None
    out = []
    for item in hardware:
        accelerator = getattr(item, "accelerator", None)
        gpu = f"{accelerator.quantity} x {accelerator.model} {accelerator.vram}" if accelerator else "no GPU"
        per_hour = getattr(item, "unit_cost_usd", 0) * (60 if getattr(item, "unit_label", "") == "minute" else 1)
        out.append({"name": item.name, "what": f"{item.pretty_name}: {gpu}", "usd_per_hour": round(per_hour, 2)})
    return out


def check_start(cfg: TrainConfig, token: str | None) -> str:
    """Before anything is uploaded: a token, the user it belongs to, a flavor the Hub has. Returns the user."""
    if not token:
        raise GarageError("Training on Hugging Face Jobs runs on your account: sign in with Hugging Face (allowing "
                          "jobs), or set HF_TOKEN to a token that may start jobs "
                          "(https://huggingface.co/settings/tokens), then start again.")
    api = _api(token)
    try:
        me = api.whoami()
    except Exception as exc:
        raise _refusal(exc, token) from None
    if (me.get("auth") or {}).get("accessToken", {}).get("role") == "read":
        raise GarageError("Your Hugging Face token is read-only: a job needs one that may start jobs and write "
                          "repos (it pushes checkpoints and the result). Use a 'Write' token from "
                          "https://huggingface.co/settings/tokens, or sign in again allowing jobs.")
    user = me["name"]
    names = [f["name"] for f in flavors(token)]
    if cfg.flavor not in names:
        raise GarageError(f"Unknown Jobs flavor {cfg.flavor!r}. Pick one of: {', '.join(names)}.")
    if cfg.hub_repo:
        validate_repo(cfg.hub_repo)
    return user


def _inputs(run, cfg: TrainConfig, owner: str, folder: Path) -> None:
    """What the job reads: the config (dataset renamed), the rows, and off a Space the project's code."""
    for name, rows in ((in_job.DATA, training_rows(cfg, owner)),
                       (in_job.EVAL_DATA, dataset_rows(owner, cfg.eval_dataset)
                        if cfg.eval_dataset not in ("", "gsm8k") else None)):
        if rows is not None:
            files.append_jsonl(folder / name, *rows)
    uploaded = TrainConfig.from_dict({**cfg.to_dict(), "dataset": in_job.DATA, "run_on": "here"})
    (folder / "config.yaml").write_text(uploaded.to_yaml(), encoding="utf-8")
    if not os.environ.get("SPACE_ID"):
        code = folder / "code"
        for name in CODE:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, code / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                code.mkdir(exist_ok=True)
                shutil.copy2(source, code / name)


def _command(inputs: str, repo: str) -> tuple[str, list[str]]:
    """The job's image and command: fetch the inputs, install the pinned requirements (off a Space), train."""
    fetch = f"hf download {inputs} --repo-type dataset --local-dir garage-job --quiet"
    space = os.environ.get("SPACE_ID")
    if space:  # the Space's own image: the app's code and requirements are in it, where the job starts
        return f"hf.co/spaces/{space}", ["bash", "-c", f"{fetch} && python -m garage job-train garage-job "
                                                       f"--repo {repo}"]
    return IMAGE, ["bash", "-c", f'pip install --quiet "huggingface_hub>=1,<2" && {fetch} && cd garage-job/code && '
                                 f"pip install --quiet -r requirements.txt && python -m garage job-train .. --repo {repo}"]


def start_job(run, owner: str, token: str) -> dict:
    """Upload the run's inputs and start its job; the job's record goes into the run's status."""
    cfg = run.config()
    user = check_start(cfg, token)
    repo = validate_repo(cfg.hub_repo or f"{user}/{run.id}")
    inputs = f"{user}/{run.id}-inputs"
    api = _api(token)
    folder = Path(tempfile.mkdtemp(prefix="garage-job-"))
    try:
        _inputs(run, cfg, owner, folder)
        push.push_folder(folder, inputs, token=token, private=True, update=True, repo_type="dataset",
                         commit_message=f"Gemma Garage: inputs of run {run.id}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    try:
        push.retrying(lambda: api.create_repo(repo, private=True, exist_ok=True), "Creating the model repo")
    except Exception as exc:
        raise push.explain(exc, repo, token) from None
    image, command = _command(inputs, repo)
    env = {"GARAGE_RUN": run.id, "PYTHONUNBUFFERED": "1"}  # the log streams as it is written
    if auth.endpoint() != "https://huggingface.co":  # a Hub of one's own: the job pushes there too
        env["HF_ENDPOINT"] = auth.endpoint()
    try:
        job = api.run_job(image=image, command=command, env=env, secrets={"HF_TOKEN": token}, flavor=cfg.flavor,
                          timeout=cfg.job_timeout_minutes * 60, namespace=user, labels={"garage-run": run.id})
    except Exception as exc:
        raise _refusal(exc, token, cfg.flavor) from None
    record = {"id": job.id, "url": job.url, "namespace": user, "flavor": cfg.flavor, "repo": repo,
              "inputs": inputs, "stage": job.status.stage, "lines": 0}
    run.update(job=record)
    run.log(f"Started Hugging Face Job {job.id} on {cfg.flavor} ({job.url}); it pushes checkpoints and the "
            f"result to {auth.endpoint()}/{repo} (private).")
    return record


# --- following a job ----------------------------------------------------------------------------------

def _mirror(run, line: str, token: str) -> None:
    """One line of the job's log into the run folder: a record where it holds one, else the log."""
    found = in_job.parse(line)
    if found is None:
        text = scrub_tokens(line, token).rstrip()
        if text and not PROGRESS_BAR.search(text):  # a bar's every redraw would bury the lines that matter
            run.log(f"job: {text}")
        return
    if "metrics" in found:
        run.append_metrics(found["metrics"])
    if "status" in found:
        run.update(**{k: v for k, v in found["status"].items() if k in in_job.MIRRORED})
    if "log" in found:  # a line of the job's run log: stamped again here, when it arrived
        run.log(STAMP.sub("", scrub_tokens(found["log"], token), count=1))
    if "checkpoint" in found:
        run.update(pushed_checkpoint=found["checkpoint"])
    if "end" in found:
        run.update(job_end=found["end"])


def _read_logs(api, run, job: dict, token: str, count: list) -> None:
    """Mirror the job's log as it streams (the Hub replays it from the start: lines already mirrored skipped)."""
    skip = job.get("lines", 0)
    try:
        for line in api.fetch_job_logs(job_id=job["id"], namespace=job["namespace"], follow=True):
            count[0] += 1
            if count[0] > skip:
                _mirror(run, line, token)
    except Exception as exc:  # the stream broke: inspect_job still says how the job ends
        run.log(f"The job's log stream broke ({type(exc).__name__}); following its state.")


def execute(run, stop_event: threading.Event) -> str:
    """What the worker runs for a run on Hugging Face Jobs: start (or find) its job, follow it to its end."""
    token = token_of(run.id)
    status = run.status()
    job = status.get("job") or {}
    if not token:
        return _end(run, "interrupted", "Following a Hugging Face Job needs your token: press Resume (signed in, "
                                        "or with HF_TOKEN set) to follow it again.")
    api = _api(token)
    try:
        if not job or _stage(api, job) in TERMINAL:  # a new run, or a resume of a job that ended
            step = _pushed_step(status)
            if job:
                run.drop_metrics_after(step)
                run.log(f"Resuming in a new job from {status.get('pushed_checkpoint') or 'the start'}.")
            run.update(pushed_checkpoint=status.get("pushed_checkpoint"), job_end=None)
            job = start_job(run, status.get("owner", "local"), token)
    except GarageError as exc:
        return _end(run, "failed", str(exc))
    count = [0]
    reader = threading.Thread(target=_read_logs, args=(api, run, job, token, count), daemon=True)
    reader.start()
    stage, cancelled = job.get("stage", "RUNNING"), False
    try:
        while stage not in TERMINAL:
            if (stop_event.wait(POLL_S) or run.stop_requested()) and not cancelled:
                api.cancel_job(job_id=job["id"], namespace=job["namespace"])
                cancelled = True
                run.log(f"Stop: cancelled job {job['id']}; Resume starts a new job from the last pushed checkpoint.")
            stage = _stage(api, job)
            run.update(job={**run.status().get("job", job), "stage": stage, "lines": count[0]})
    except Exception as exc:
        return _end(run, "interrupted", f"Lost touch with job {job['id']} ({type(exc).__name__}); press Resume to "
                                        "follow it again.")
    reader.join(30)
    run.update(job={**run.status().get("job", job), "stage": stage, "lines": count[0]})
    return _finish(api, run, job, stage, token)


def _stage(api, job: dict) -> str:
    info = api.inspect_job(job_id=job["id"], namespace=job["namespace"])
    job["message"] = info.status.message
    return info.status.stage


def _pushed_step(status: dict) -> int:
    name = status.get("pushed_checkpoint") or ""
    return int(name.rsplit("-", 1)[-1]) if re.fullmatch(r"checkpoint-\d+", name) else 0


def _finish(api, run, job: dict, stage: str, token: str) -> str:
    status = run.status()
    end = status.get("job_end") or {}
    if stage == "CANCELED":
        return _end(run, "stopped", "Stopped (the job was cancelled). Resume starts a new job from the last pushed "
                                    "checkpoint.")
    if stage != "COMPLETED" or end.get("state") != "completed":
        return _end(run, "failed", why_failed(job, end, run.log_tail(40)))
    cfg = run.config()
    target = run.model_dir if cfg.method == "full" else run.adapter_dir
    try:
        api.snapshot_download(repo_id=job["repo"], local_dir=str(target),
                              ignore_patterns=[f"{in_job.CHECKPOINTS}/*", ".gitattributes", "README.md"])
    except Exception as exc:
        return _end(run, "failed", f"The job completed, but its weights could not be fetched from {job['repo']}: "
                                   f"{push.explain(exc, job['repo'], token)} Resume fetches them again.")
    run.append_to("pushed", {"url": f"{auth.endpoint()}/{job['repo']}", "what": "trained weights (the job)",
                             "when": time.time()})
    return _end(run, "completed", None)


def why_failed(job: dict, end: dict, log: str) -> str:
    """One line: out of memory, the time limit, the install, or the run's own reason."""
    message = job.get("message") or ""
    where = f"Hugging Face Job {job['id']} on {job.get('flavor')}"
    if "out of memory" in log.lower() or "OutOfMemory" in log:
        return (f"{where} ran out of GPU memory: pick a bigger flavor, or lower per_device_train_batch_size or "
                "max_seq_length (or use qlora). Resume goes on from the last pushed checkpoint.")
    if "timeout" in message.lower() or "time limit" in message.lower():
        return (f"{where} reached its time limit: raise job_timeout_minutes and press Resume (it goes on from "
                "the last pushed checkpoint).")
    if end.get("reason"):
        return f"{where}: {end['reason']}"
    if "ERROR: " in log and ("pip" in log or "requirement" in log.lower()):
        last = [line for line in log.splitlines() if "ERROR: " in line][-1]
        return f"{where} could not install the requirements: {last.split('ERROR: ', 1)[1]}"
    lines = [line for line in log.splitlines() if line.strip()]
    tail = lines[-1].split("] ", 1)[-1] if lines else ""
    return f"{where} failed ({message or 'no message'}): {tail}".rstrip(": ")


def _end(run, state: str, reason: str | None) -> str:
    run.update(state=state, reason=reason, finished=time.time())
    if reason:
        run.log(reason)
    return state
