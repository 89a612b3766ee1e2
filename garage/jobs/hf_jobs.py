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

import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

from garage import catalog, files, paths
from garage.config import TrainConfig
from garage.data import benchmarks
from garage.data.rows import dataset_rows, run_rows
from garage.errors import GarageError
from garage.hub import auth, publish, push
from garage.hub.names import validate_repo
from garage.jobs import in_job
from garage.llm.keys import key_users, may_use_server_keys
from garage.secrecy import SERVER_KEYS, scrub_secrets

IMAGE = "python:3.11"  # off a Space: the README's Python; the job installs the pinned requirements.txt into it
TERMINAL = ("COMPLETED", "ERROR", "CANCELED", "DELETED")  # a job in any other stage (SCHEDULING, RUNNING) goes on
POLL_S = 2.0
POLL_GIVE_UP_S = 600  # how long the Hub may stay unreachable before the app stops following a job
PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm's "100%|█████|"
STAMP = re.compile(r"^\[\d\d:\d\d:\d\d\] ")  # Run.log's time stamp
CODE = ("app.py", "requirements.txt", "garage")  # what a job off a Space needs of the project
ROOT = Path(__file__).resolve().parents[2]

_tokens: dict[str, str] = {}  # run id -> its owner's token, while the app follows the job (memory only)
_tokens_lock = threading.Lock()
FLAVORS_KEPT_S = 600
_flavors_seen: list = [0.0, []]  # when the Hub's flavor list was asked, and what it said
_flavors_lock = threading.Lock()


def remember_token(run_id: str, token: str) -> None:
    with _tokens_lock:
        _tokens[run_id] = token


def token_of(run_id: str) -> str | None:
    with _tokens_lock:
        return _tokens.get(run_id)


def forget_token(run_id: str) -> None:
    with _tokens_lock:
        _tokens.pop(run_id, None)


def restart_token() -> str | None:
    """The token that follows a job again after an app restart: this machine's own (HF_TOKEN or a saved login),
    never on a shared Space, where each job is its visitor's (they press Resume, signed in)."""
    return None if paths.shared() else auth.resolve_token(None)


def _api(token: str):
    from huggingface_hub import HfApi  # kept out of the app's start-up, as in garage.hub

    auth.check_online("Training on Hugging Face Jobs", "train on this machine instead (run_on: here)")
    return HfApi(endpoint=auth.endpoint(), token=token)


def _refusal(exc: BaseException, token: str, flavor: str = "") -> GarageError:
    """Why the Hub would not start (or show) a job, in words a person can act on; the token never in it."""
    status = push.http_status(exc)
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
    return GarageError(scrub_secrets(text, token))


def flavors(token: str) -> list[dict]:
    """The Jobs hardware with its price: name, what it has, USD per hour (the Hub's list, the same for everyone,
    asked again after FLAVORS_KEPT_S: the Train tab asks at every change of flavor)."""
    with _flavors_lock:
        asked, listed = _flavors_seen
        if listed and time.monotonic() - asked < FLAVORS_KEPT_S:
            return listed
    try:
        hardware = _api(token).list_jobs_hardware()
    except Exception as exc:
        raise _refusal(exc, token) from None
    listed = _flavor_rows(hardware)
    with _flavors_lock:
        _flavors_seen[:] = [time.monotonic(), listed]
    return listed


def _flavor_rows(hardware) -> list[dict]:
    out = []
    for item in hardware:
        accelerator = getattr(item, "accelerator", None)
        gpu = f"{accelerator.quantity} x {accelerator.model} {accelerator.vram}" if accelerator else "no GPU"
        per_hour = getattr(item, "unit_cost_usd", 0) * (60 if getattr(item, "unit_label", "") == "minute" else 1)
        out.append({"name": item.name, "what": f"{item.pretty_name}: {gpu}", "usd_per_hour": round(per_hour, 2),
                    "gpu": accelerator.model if accelerator else None, "cpus": _count(getattr(item, "cpu", "")),
                    "gpus": int(accelerator.quantity) if accelerator else 0})
    return out


# A rough speed for the estimate before Start: tokens a second of a LoRA on a 1B-parameter Gemma on one GPU, as
# measured on an H100 (bench/results/train-random-gemma-3-1b-lora-1024-nvidia-h100-80gb-hbm3.json: 4816), scaled to
# other cards by their datasheet dense BF16 (T4: FP16) tensor throughput in TFLOPS and to other models by their
# parameters; on CPU flavors by the 2-core CPU run of the 270M shape (227 tokens/s) per core. Small runs are
# mostly fixed cost per step, so this is within about 3x, not better; the run log shows the real tokens/s.
MEASURED_1B_H100 = 4816.0
TFLOPS = {"H100": 989, "H200": 989, "A100": 312, "L40S": 362, "RTX PRO 6000": 500, "A10G": 125, "L4": 121,
          "T4": 65}
CPU_TOKENS_PER_CORE_270M = 113.0
DDP_EFFICIENCY = 0.85  # a guess, not measured here (no machine with several GPUs was at hand)
SETUP_S = 300  # the image, the install, loading the model: minutes, not seconds, on a fresh job


def estimate(cfg: TrainConfig, rows: list[dict], flavor: dict) -> dict:
    """Tokens to train, seconds and dollars on ``flavor`` (an item of ``flavors``), with how it was made."""
    params = catalog.resolve(cfg.model).params_b or 1.0
    per_row = [min(cfg.max_seq_length, max(1, len(json.dumps(row, ensure_ascii=False)) // 4)) for row in rows]
    batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    tokens = (cfg.max_steps * batch * sum(per_row) / max(1, len(per_row)) if cfg.max_steps > 0
              else cfg.num_train_epochs * sum(per_row))
    if cfg.method == "grpo":  # sampling completions dominates: each prompt's group is generated first
        tokens *= cfg.num_generations * 5
    gpu = flavor.get("gpu")
    if gpu in TFLOPS:
        speed, basis = MEASURED_1B_H100 * TFLOPS[gpu] / TFLOPS["H100"] / params, f"{gpu}, scaled from an H100"
        cards = training_gpus(cfg, flavor)
        if cards > 1:  # DDP: each card trains its share of a step; the exchange of gradients costs some of it
            speed, basis = speed * cards * DDP_EFFICIENCY, f"{basis}, x{cards} GPUs at {DDP_EFFICIENCY:.0%} each"
    else:
        speed, basis = CPU_TOKENS_PER_CORE_270M * flavor.get("cpus", 2) * 0.27 / params, "CPU, from a 2-core run"
    seconds = SETUP_S + tokens / speed
    return {"tokens": round(tokens), "tokens_per_second": round(speed), "minutes": round(seconds / 60, 1),
            "usd": round(seconds / 3600 * flavor["usd_per_hour"], 2),
            "basis": f"~{tokens / 1e6:.2f}M tokens (characters / 4) at ~{speed:.0f} tokens/s ({basis}; rough, "
                     "within about 3x) plus ~5 minutes of setup"}


def training_gpus(cfg: TrainConfig, flavor: dict) -> int:
    """How many of the flavor's GPUs train the run: all of them (inside the job, ``in_job.job_config``), except
    for GRPO, which trains on one."""
    return 1 if cfg.method == "grpo" else max(1, flavor.get("gpus") or 1)


def time_limit(cfg: TrainConfig, guess: dict) -> int:
    """The job's time limit in minutes: the user's, or twice the estimate and a quarter of an hour (30 at least)."""
    return cfg.job_timeout_minutes or max(30, math.ceil(guess["minutes"] * 2 + 15))


def _count(text) -> int:
    match = re.match(r"\s*(\d+)", str(text or ""))
    return int(match.group(1)) if match else 2


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
    listed = {f["name"]: f for f in flavors(token)}
    if cfg.flavor not in listed:
        raise GarageError(f"Unknown Jobs flavor {cfg.flavor!r}. Pick one of: {', '.join(listed)}.")
    if cfg.gpus > max(1, listed[cfg.flavor]["gpus"]):
        several = [name for name, f in listed.items() if f["gpus"] >= cfg.gpus]
        raise GarageError(f"gpus is {cfg.gpus}, and the flavor {cfg.flavor} has {listed[cfg.flavor]['gpus']} GPU(s). "
                          "On Jobs every GPU of the flavor trains: pick a flavor with several"
                          + (f" ({', '.join(several)})" if several else "") + ", or set gpus to 1.")
    if cfg.hub_repo:
        validate_repo(cfg.hub_repo)
    return user


def _inputs(cfg: TrainConfig, owner: str, rows: list[dict], folder: Path) -> None:
    """What the job reads: the config (dataset renamed), the rows, and off a Space the project's code."""
    files.append_jsonl(folder / in_job.DATA, *rows)
    if cfg.eval_dataset and benchmarks.get(cfg.eval_dataset) is None:  # a saved dataset (benchmarks are in the code)
        files.append_jsonl(folder / in_job.EVAL_DATA, *dataset_rows(owner, cfg.eval_dataset))
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


def judge_secrets(cfg: TrainConfig, owner: str) -> dict[str, str]:
    """GRPO's judge key, as secrets of the job: the server's, where its owner may spend it (garage.llm.keys, as
    for a run here; service.start_training has refused the rest)."""
    if cfg.method != "grpo" or "judge" not in cfg.rewards or not may_use_server_keys(owner, cfg.judge_base_url):
        return {}
    if paths.shared() and owner not in key_users():  # shared with visitors here, but not into their own jobs
        raise GarageError("On this shared Space the judge's API key is the Space owner's: it stays on the Space and "
                          "does not go into a job on your account. Train with the judge here, or use the "
                          "correctness and format rewards on Jobs.")
    found = {name: os.environ[name] for name in SERVER_KEYS[cfg.judge_backend] if os.environ.get(name, "").strip()}
    if not found and cfg.judge_backend == "gemini":  # said now, not after the job's paid setup
        raise GarageError("The judge on Hugging Face Jobs needs a Gemini key here (GEMINI_API_KEY or GOOGLE_API_KEY), "
                          "which goes with the job as a secret: set it and start again.")
    return found


def tracker_secrets(cfg: TrainConfig, owner: str) -> dict[str, str]:
    """W&B's key, as a secret of the job (service.start_training has checked the caller may log with it); on a
    shared Space never into a visitor's own job, even where the owner shares the key with visitors here."""
    if cfg.report_to != "wandb":
        return {}
    if paths.shared() and owner not in key_users():
        raise GarageError("On this shared Space the Weights & Biases key is the Space owner's: it stays on the Space "
                          "and does not go into a job on your account. Choose tensorboard for a run on Jobs (its "
                          "logs come back with the result).")
    found = {name: os.environ[name] for name in SERVER_KEYS["wandb"] if os.environ.get(name, "").strip()}
    if not found:  # a `wandb login` here, or offline mode: neither reaches a job's machine
        raise GarageError("report_to: wandb on Hugging Face Jobs needs WANDB_API_KEY set here, which goes with the "
                          "job as a secret (a `wandb login` or WANDB_MODE=offline stays on this machine): set it, "
                          "or choose tensorboard, whose logs come back with the result.")
    return found


def _command(inputs: str, revision: str, repo: str) -> tuple[str, list[str]]:
    """The job's image and command: fetch the inputs, install the pinned requirements (off a Space), train."""
    fetch = f"hf download {inputs} --repo-type dataset --revision {revision} --local-dir garage-job --quiet"
    space = os.environ.get("SPACE_ID")
    if space:  # the Space's own image: the app's code and requirements are in it, where the job starts
        return f"hf.co/spaces/{space}", ["bash", "-c", f"{fetch} && python -m garage job-train garage-job "
                                                       f"--repo {repo}"]
    return IMAGE, ["bash", "-c", f'pip install --quiet "huggingface_hub>=1,<2" && {fetch} && cd garage-job/code && '
                                 "pip install --quiet -r requirements.txt && "
                                 f"python -m garage job-train .. --repo {repo}"]


def start_job(run, owner: str, token: str) -> dict:
    """Upload the run's inputs and start its job; the job's record goes into the run's status."""
    cfg = run.config()
    user = check_start(cfg, token)
    repo = validate_repo(cfg.hub_repo or f"{user}/{run.id}")
    inputs = f"{user}/{run.id}-inputs"
    api = _api(token)
    rows = run_rows(cfg, owner)
    flavor = next(f for f in flavors(token) if f["name"] == cfg.flavor)  # check_start found it
    guess = estimate(cfg, rows, flavor)
    folder = Path(tempfile.mkdtemp(prefix="garage-job-"))
    try:
        _inputs(cfg, owner, rows, folder)
        _, commit = push.push_folder_commit(folder, inputs, token=token, private=True, update=True,
                                            repo_type="dataset", commit_message=f"Gemma Garage: inputs of run {run.id}",
                                            kept=False)  # a temporary folder: the message names no folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    try:
        push.retrying(lambda: api.create_repo(repo, private=True, exist_ok=True), "Creating the model repo")
    except Exception as exc:
        raise push.explain(exc, repo, token) from None
    image, command = _command(inputs, commit.oid, repo)  # the commit uploaded now, whatever is pushed there later
    env = {"GARAGE_RUN": run.id, "PYTHONUNBUFFERED": "1"}  # the log streams as it is written
    if auth.endpoint() != "https://huggingface.co":  # a Hub of one's own: the job pushes there too
        env["HF_ENDPOINT"] = auth.endpoint()
    limit = time_limit(cfg, guess)
    try:
        job = api.run_job(image=image, command=command, env=env, secrets={"HF_TOKEN": token,
                                                                          **judge_secrets(cfg, owner),
                                                                          **tracker_secrets(cfg, owner)},
                          flavor=cfg.flavor, timeout=limit * 60, namespace=user, labels={"garage-run": run.id})
    except Exception as exc:
        raise _refusal(exc, token, cfg.flavor) from None
    record = {"id": job.id, "url": job.url, "namespace": user, "flavor": cfg.flavor, "repo": repo,
              "inputs": inputs, "stage": job.status.stage, "estimate": guess, "limit_minutes": limit}
    run.update(job=record)
    run.log(f"Started Hugging Face Job {job.id} on {cfg.flavor} ({job.url}); it pushes checkpoints and the "
            f"result to {auth.endpoint()}/{repo} (private). Estimate: about {guess['minutes']:.0f} minutes and "
            f"${guess['usd']:.2f} ({guess['basis']}); time limit {limit} minutes (at most "
            f"${limit / 60 * flavor['usd_per_hour']:.2f}).")
    return record


# --- following a job ----------------------------------------------------------------------------------

LINES = "job_lines"  # "<job id> <lines of its log mirrored>": where the replay after an app restart goes on


def lines_mirrored(run, job_id: str) -> int:
    try:
        mirrored, count = (run.path / LINES).read_text().split()
    except (FileNotFoundError, ValueError):
        return 0
    return int(count) if mirrored == job_id else 0


class LogMirror:
    """The job's log into the run folder, line by line: a MARK record where a line holds one, else the run log.

    The Hub replays a job's log from its start on each connection: the lines already mirrored (``count``, kept in
    the run's job record across restarts) are skipped, and metrics of steps up to ``after`` are in the run already.
    One lock: the streaming thread and the last catch-up never mirror a line twice."""

    def __init__(self, run, job: dict, token: str, after: int):
        self.run, self.job, self.token, self.after = run, job, token, after
        self.count = lines_mirrored(run, job["id"])
        self.closed = threading.Event()  # set: the streaming thread mirrors no more lines
        self._lock = threading.Lock()

    def take(self, lines, streaming: bool = True) -> None:
        seen = 0
        for line in lines:
            seen += 1
            with self._lock:
                if streaming and self.closed.is_set():
                    return
                if seen > self.count:
                    self.count = seen
                    self._mirror(line)
                    files.write_atomic(self.run.path / LINES, f"{self.job['id']} {seen}")  # a replay goes on here

    def follow(self, api) -> None:
        """Stream the log while the job runs; a stream the server ends early is opened again."""
        while not self.closed.is_set():
            try:
                self.take(api.fetch_job_logs(job_id=self.job["id"], namespace=self.job["namespace"], follow=True))
            except Exception as exc:  # a broken stream: the state loop still follows the job
                self.run.log(f"The job's log stream broke ({type(exc).__name__}); opening it again.")
            self.closed.wait(POLL_S)

    def catch_up(self, api) -> None:
        """After the job ended: the lines the stream had not delivered (its end record among them)."""
        self.closed.set()
        try:
            self.take(api.fetch_job_logs(job_id=self.job["id"], namespace=self.job["namespace"]), streaming=False)
        except Exception as exc:
            self.run.log(f"Could not read the end of the job's log ({type(exc).__name__}).")

    def _mirror(self, line: str) -> None:
        run, found = self.run, in_job.parse(line)
        if found is None:
            text = scrub_secrets(line, self.token).rstrip()
            if text and not PROGRESS_BAR.search(text):  # a bar's every redraw would bury the lines that matter
                run.log(f"job: {text}")
            return
        if "resumed" in found:  # the new job goes on from this checkpoint: the curve past it is the new job's
            self.after = _step_of(found["resumed"])
            run.drop_metrics_after(self.after)
        if "metrics" in found and not found["metrics"].get("step", self.after + 1) <= self.after:
            run.append_metrics(found["metrics"])
        if "status" in found:
            run.update(**{k: v for k, v in found["status"].items() if k in in_job.MIRRORED})
        if "log" in found:  # a line of the job's run log: stamped again here, when it arrived
            run.log(STAMP.sub("", scrub_secrets(found["log"], self.token), count=1))
        if "checkpoint" in found:
            run.update(pushed_checkpoint=found["checkpoint"])
        if "end" in found:
            run.update(job_end={**found["end"], "reason": scrub_secrets(found["end"].get("reason") or "", self.token)})


def cancel(run, token: str | None = None) -> None:
    """Cancel the run's job (a Stop that came before anyone followed it, a Delete): it must not go on billing.
    Without a token it says where to cancel it by hand."""
    job, token = run.status().get("job"), token or token_of(run.id)
    if not job:
        return
    if not token:
        run.log(f"Hugging Face Job {job['id']} may still be running: cancel it at {job['url']}.")
        return
    try:
        _api(token).cancel_job(job_id=job["id"], namespace=job["namespace"])
        run.update(job={**job, "stage": "CANCELED"})
        run.log(f"Cancelled Hugging Face Job {job['id']}.")
    except Exception as exc:
        run.log(f"Could not cancel Hugging Face Job {job['id']} ({type(exc).__name__}): cancel it at {job['url']}.")


def execute(run, stop_event: threading.Event) -> str:
    """What the worker runs for a run on Hugging Face Jobs: start (or find) its job, follow it to its end. After an
    app restart (``follow_only`` in its status) it follows the job it had and never starts a new, paid one."""
    token = token_of(run.id)
    status = run.status()
    job, follow_only = status.get("job") or {}, bool(status.get("follow_only"))
    run.update(follow_only=None)
    if not token:
        return _end(run, "interrupted", "Following a Hugging Face Job needs your token: press Resume (signed in, "
                                        "or with HF_TOKEN set) to follow it again.")
    try:
        api = _api(token)
        stage = _stage(api, job) if job else None
        if job:
            run.update(job={**job, "stage": stage})
        if stage in TERMINAL and (stage == "COMPLETED" or follow_only):  # it ended while the app was away
            mirror = LogMirror(run, job, token, run.last_step())
            mirror.catch_up(api)  # its last steps, its end record
            return _finish(api, run, job, stage, token)  # a completed job is never trained again
        if stage is None or stage in TERMINAL:  # a new run, or a Resume of a job that failed or was cancelled
            if job:
                run.log("Resuming in a new job, from the last checkpoint an earlier job pushed.")
            run.update(job_end=None)
            job, after = start_job(run, status.get("owner", "local"), token), 0
        else:  # the app restarted while the job ran: its log replays past the lines already mirrored
            after = run.last_step()
    except Exception as exc:
        reason = str(exc) if isinstance(exc, GarageError) else str(push.explain(exc, "jobs", token))
        return _end(run, "failed", f"{reason} Resume tries again.")
    mirror = LogMirror(run, job, token, after)
    threading.Thread(target=mirror.follow, args=(api,), name=f"garage-job-log-{run.id}", daemon=True).start()
    try:
        stage = _watch(api, run, job, mirror, stop_event)
    finally:
        mirror.closed.set()
    if stage is None:
        return _end(run, "interrupted", f"Lost touch with Hugging Face Job {job['id']} for {POLL_GIVE_UP_S // 60} "
                                        f"minutes (it may still be running: {job['url']}); press Resume to follow "
                                        "it again.")
    mirror.catch_up(api)
    run.update(job={**run.status().get("job", job), "stage": stage})
    return _finish(api, run, job, stage, token)


def _watch(api, run, job: dict, mirror: LogMirror, stop_event: threading.Event) -> str | None:
    """Poll the job until it ends (its final stage), cancelling it on Stop; None when the Hub stays unreachable
    for POLL_GIVE_UP_S (a laptop asleep, the network down: the job goes on meanwhile)."""
    stage, cancelled, reached = job.get("stage", "RUNNING"), False, time.monotonic()
    while stage not in TERMINAL:
        if cancelled or not stop_event.wait(POLL_S):
            time.sleep(POLL_S if cancelled else 0)  # after a Stop the event stays set: poll at the same pace
        if not cancelled and (stop_event.is_set() or run.stop_requested()):
            try:
                api.cancel_job(job_id=job["id"], namespace=job["namespace"])
                run.log(f"Stop: cancelled job {job['id']}; Resume starts a new job from the last pushed "
                        "checkpoint.")
            except Exception as exc:  # it may have just ended: its stage says
                run.log(f"Could not cancel job {job['id']} ({type(exc).__name__}); its stage decides.")
            cancelled = True
        try:
            now, reached = _stage(api, job), time.monotonic()
        except Exception as exc:
            if not push.is_transient(exc) or time.monotonic() - reached > POLL_GIVE_UP_S:
                return None
            continue
        if now != stage:  # polled every POLL_S: status.json is written when the stage moves, not at each poll
            run.update(job={**run.status().get("job", job), "stage": now})
        stage = now
    return stage


def _stage(api, job: dict) -> str:
    info = api.inspect_job(job_id=job["id"], namespace=job["namespace"])
    job["message"] = info.status.message
    return info.status.stage


def _step_of(checkpoint: str | None) -> int:
    name = checkpoint or ""
    return int(name.rsplit("-", 1)[-1]) if re.fullmatch(r"checkpoint-\d+", name) else 0


def _finish(api, run, job: dict, stage: str, token: str) -> str:
    status = run.status()
    end = status.get("job_end") or {}
    if stage == "CANCELED":
        return _end(run, "stopped", "Stopped (the job was cancelled). Resume starts a new job from the last pushed "
                                    "checkpoint.")
    if stage != "COMPLETED" or end.get("state") not in ("completed", None):
        return _end(run, "failed", why_failed(job, end, run.log_tail(40)))
    cfg = run.config()
    target = run.model_dir if cfg.method == "full" else run.adapter_dir
    try:
        api.snapshot_download(repo_id=job["repo"], local_dir=str(target),
                              ignore_patterns=[f"{in_job.CHECKPOINTS}/*", f"{paths.TENSORBOARD}/*",
                                               ".gitattributes", "README.md"])
        if cfg.report_to == "tensorboard":  # the job's event files, where a run here keeps them
            api.snapshot_download(repo_id=job["repo"], local_dir=str(run.path),
                                  allow_patterns=[f"{paths.TENSORBOARD}/*"])
    except Exception as exc:
        shutil.rmtree(target, ignore_errors=True)  # half a download is no weights: Resume fetches them again
        said = scrub_secrets(" ".join(str(exc).split())[:300], token)
        return _end(run, "failed", f"The job completed, but its weights could not be fetched from {job['repo']} "
                                   f"({type(exc).__name__}: {said}). Resume fetches them again (it does not train "
                                   "again).")
    publish.remember_push(run, f"{auth.endpoint()}/{job['repo']}",
                          ["merged model" if cfg.method == "full" else "adapter", "checkpoints while it trained"])
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
