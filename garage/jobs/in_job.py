"""Inside a Hugging Face Job: train the run the app uploaded, with the same runner as ``python -m garage train``.

The job's folder holds what ``garage.jobs.hf_jobs`` uploaded: ``config.yaml`` (the run's config, its dataset
named ``data.jsonl``) and the rows. The run trains in a run store of the job's own; while it does, a mirror
thread prints what the app copies into its run folder (``MARK`` lines: metrics records, status fields, the run
log) and pushes each new checkpoint to the run's model repo, so a stopped or failed job resumes in a new one.
At the end the trained adapter (or full model) goes to the repo's root, where PEFT or transformers load it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from garage import device, paths
from garage.config import TrainConfig
from garage.hub import card, push
from garage.jobs.store import RunStore
from garage.secrecy import saved_token, scrub_tokens
from garage.train import runner

MARK = "[garage] "          # a line the app reads as a record, not as log text
DATA, EVAL_DATA = "data.jsonl", "eval.jsonl"
CHECKPOINTS = "checkpoints"  # the repo folder that holds the last pushed checkpoint
# status fields the app mirrors (its own: id, owner, state, reason, dataset, the job's record)
MIRRORED = ("phase", "step", "total_steps", "elapsed", "eta", "tokens_per_second", "first_step_seconds",
            "parameters", "trainable_parameters", "rows_per_pass", "passes_per_step", "final_loss", "eval_loss",
            "evaluation", "notices", "processes")


def record(**fields) -> str:
    """One MARK line: {"resumed": checkpoint or None}, {"metrics": {...}}, {"status": {...}}, {"log": "..."},
    {"checkpoint": name} (pushed) or {"end": {"state", "reason"}}."""
    return MARK + json.dumps(fields, default=str)


_say_lock = threading.Lock()


def say(**fields) -> None:
    """Print one MARK line, whole: the mirror and a checkpoint's push print from two threads."""
    with _say_lock:
        sys.stdout.write(record(**fields) + "\n")
        sys.stdout.flush()


def parse(line: str) -> dict | None:
    """The record a MARK line holds (None for any other line: the job's own output, pip's, a library's)."""
    if not line.startswith(MARK):
        return None
    try:
        value = json.loads(line[len(MARK):])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def job_config(folder: Path) -> TrainConfig:
    """The uploaded config, pointed at the uploaded rows and set to train here (inside the job)."""
    cfg = TrainConfig.from_yaml(folder / "config.yaml")
    cfg.dataset, cfg.run_on = str(folder / DATA), "here"
    # every GPU of the flavor trains (garage.train.processes when there are several); GRPO trains on one
    cfg.gpus = 1 if cfg.method == "grpo" else max(1, device.gpu_count())
    if (folder / EVAL_DATA).exists():
        cfg.eval_dataset = str(folder / EVAL_DATA)
    return cfg


class Mirror(threading.Thread):
    """Prints the run's new metrics, status and log lines every ``poll`` seconds, and pushes a new checkpoint."""

    def __init__(self, run, api, repo: str, token: str | None, poll: float = 1.0):
        super().__init__(name="garage-job-mirror", daemon=True)
        self.training, self.api, self.repo, self.token, self.poll = run, api, repo, token, poll
        self.done = threading.Event()
        self._read: dict[str, int] = {}  # file name -> bytes of it already printed
        self._status: dict = {}
        self.pushed: str | None = None  # the checkpoint the repo holds
        self.pusher: threading.Thread | None = None  # a push in flight: a full model's takes minutes

    def run(self) -> None:  # the thread's body (threading.Thread.run)
        while not self.done.wait(self.poll):
            self.flush()

    def flush(self, checkpoints: bool = True) -> None:
        run = self.training
        metrics_file = run.path / "metrics.jsonl"
        if metrics_file.exists() and metrics_file.stat().st_size < self._read.get(metrics_file.name, 0):
            # rewritten shorter: the run went back to a checkpoint (batch shaping's fallback); so does the app's curve
            self._read[metrics_file.name] = metrics_file.stat().st_size
            say(resumed=f"checkpoint-{run.last_step()}")
        for line in self._new_lines("metrics.jsonl"):
            metrics = parse(MARK + line)  # a line that does not parse (a crash mid-write) is no record
            if metrics is not None:
                say(metrics=metrics)
        for line in self._new_lines("log.txt"):
            say(log=scrub_tokens(line, self.token))
        status = {key: value for key, value in run.status().items() if key in MIRRORED}
        changed = {key: value for key, value in status.items() if self._status.get(key) != value}
        if changed:
            say(status=changed)
            self._status.update(changed)
        checkpoint = run.last_checkpoint()
        busy = self.pusher is not None and self.pusher.is_alive()
        if checkpoints and checkpoint is not None and checkpoint.name != self.pushed and not busy:
            # on a thread of its own, so metrics and log lines go on reaching the app while it uploads
            self.pusher = threading.Thread(target=self._push_checkpoint, args=(checkpoint,), daemon=True)
            self.pusher.start()

    def _new_lines(self, name: str) -> list[str]:
        """The whole lines the run's file ``name`` gained since the last call (read from where that one ended: a
        long run's files are not read again every second; the last line may still be being written)."""
        try:
            with open(self.training.path / name, "rb") as fh:
                fh.seek(self._read.get(name, 0))
                new = fh.read()
        except FileNotFoundError:
            return []
        whole = new[:new.rfind(b"\n") + 1]
        self._read[name] = self._read.get(name, 0) + len(whole)
        return whole.decode("utf-8", errors="replace").splitlines()

    def _push_checkpoint(self, checkpoint: Path) -> None:
        """The newest checkpoint replaces the one before in the repo (a resume needs only the last)."""
        try:
            push.retrying(lambda: self.api.upload_folder(
                repo_id=self.repo, folder_path=str(checkpoint.parent), path_in_repo=CHECKPOINTS,
                allow_patterns=[f"{checkpoint.name}/**"], delete_patterns=["*"],
                commit_message=f"Gemma Garage: {checkpoint.name}"), "Pushing a checkpoint")
        except Exception as exc:  # training goes on; the next checkpoint tries again
            say(log=f"Could not push {checkpoint.name} to {self.repo}: {push.explain(exc, self.repo, self.token)}")
            return
        self.pushed = checkpoint.name
        say(checkpoint=checkpoint.name)


def restore_checkpoint(api, repo: str, run) -> str | None:
    """The checkpoint a stopped or failed job pushed, downloaded into the new run (None: start from scratch)."""
    names = {path.split("/")[1] for path in api.list_repo_files(repo) if path.startswith(CHECKPOINTS + "/")
             and path.count("/") >= 2}
    if not names:
        return None
    last = max(names, key=lambda name: int(name.rsplit("-", 1)[-1]))
    api.snapshot_download(repo_id=repo, allow_patterns=[f"{CHECKPOINTS}/{last}/**"], local_dir=str(run.path))
    return last


def push_result(api, run, repo: str) -> None:
    """The trained adapter (or full model) at the repo's root, where PEFT or transformers load it, with our model
    card (the library's own names the job's folder as the base model, which the Hub refuses); the checkpoint kept
    for a resume goes (a finished run does not resume, and it holds the optimizer's state: several times the
    adapter)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete  # the job's own process, as in train()

    output = run.output_dir()
    layout = {"merged" if output == run.model_dir else "adapter": ""}
    operations = [CommitOperationAdd(path_in_repo=path.relative_to(output).as_posix(), path_or_fileobj=str(path))
                  for path in sorted(output.rglob("*")) if path.is_file() and path.name != "README.md"]
    logs = run.path / paths.TENSORBOARD  # report_to: tensorboard; the app fetches them into its run folder
    operations += [CommitOperationAdd(path_in_repo=path.relative_to(run.path).as_posix(), path_or_fileobj=str(path))
                   for path in sorted(logs.rglob("*")) if path.is_file()]
    operations.append(CommitOperationAdd(path_in_repo="README.md",
                                         path_or_fileobj=card.model_card(run, repo, layout).encode("utf-8")))
    if any(path.startswith(CHECKPOINTS + "/") for path in api.list_repo_files(repo)):
        operations.append(CommitOperationDelete(path_in_repo=CHECKPOINTS + "/", is_folder=True))
    api.create_commit(repo_id=repo, operations=operations, commit_message="Gemma Garage: the trained weights")


def train(folder: str | Path, repo: str, owner: str = "local") -> int:
    """Train the uploaded run; 0 when it completed and its result is in ``repo``."""
    from huggingface_hub import HfApi  # the job's own process; kept out of the app's start-up with the rest

    folder = Path(folder).resolve()
    os.environ.setdefault("GARAGE_HOME", str(folder / "home"))
    os.environ["GARAGE_SINGLE_USER"] = "1"  # the job is one person's: its data files are theirs
    token = saved_token()  # the job's HF_TOKEN secret
    api = HfApi(token=token)
    run = RunStore().create(job_config(folder), owner)
    restored = restore_checkpoint(api, repo, run)
    say(resumed=restored)  # the app's curve past this step is this job's
    if restored:
        say(log=f"Resuming from {restored}, pushed by an earlier job.")
    mirror = Mirror(run, api, repo, token)
    mirror.pushed = restored
    mirror.start()
    try:
        runner.execute(run, threading.Event())
    finally:
        mirror.done.set()
        mirror.join()
    if mirror.pusher is not None:
        mirror.pusher.join()  # the result's commit deletes the checkpoints: not while one uploads
    mirror.flush(checkpoints=False)
    status = run.status()
    if status.get("state") == "completed":
        try:
            push.retrying(lambda: push_result(api, run, repo), "Pushing the result")
        except Exception as exc:
            status.update(state="failed", reason=f"Training completed but the result could not be pushed to "
                                                 f"{repo}: {push.explain(exc, repo, token)}")
    say(end={"state": status.get("state"), "reason": status.get("reason")})
    return 0 if status.get("state") == "completed" else 1
