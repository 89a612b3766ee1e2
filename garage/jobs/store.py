"""Runs on disk: one folder per run, so a reload or a restart finds everything again.

    runs/<id>/config.yaml      the TrainConfig that defines the run
    runs/<id>/status.json      state, owner, progress, reason if failed (written atomically)
    runs/<id>/metrics.jsonl    one JSON object per logged step (loss, lr, eval_loss, ...)
    runs/<id>/log.txt          the run's log, full tracebacks included
    runs/<id>/checkpoints/     trainer checkpoints (resume points)
    runs/<id>/adapter/         the LoRA adapter + tokenizer (lora / qlora)
    runs/<id>/model/           the full weights + tokenizer (full fine-tuning)
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from garage import files, paths
from garage.config import TrainConfig
from garage.errors import GarageError

STATES = ("queued", "running", "completed", "failed", "stopped", "interrupted")
ACTIVE = ("queued", "running")

_lock = threading.Lock()


def _now() -> float:
    return round(time.time(), 3)


def new_run_id(cfg: TrainConfig) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    model = paths.safe_name(cfg.model.rsplit("/", 1)[-1], "model")[:32]
    return f"{stamp}-{model}-{secrets.token_hex(3)}"


def shown_owner(owner) -> str:
    """An owner as anyone may see it: an anonymous browser's id is what signs that browser in, so it stays hidden."""
    owner = str(owner or "")
    return "anonymous" if owner.startswith("anon-") else owner


def write_json_atomic(path: Path, data: dict) -> None:
    files.write_atomic(path, json.dumps(data, indent=1, default=str))


class Run:
    """One run folder. Every method reads or writes the disk: nothing is cached."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.id = self.path.name

    # --- files -----------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    def config(self) -> TrainConfig:
        return TrainConfig.from_yaml(self.config_path)

    # --- status ----------------------------------------------------------
    def status(self) -> dict:
        try:
            return json.loads((self.path / "status.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {"id": self.id, "state": "failed", "reason": "status.json is missing or unreadable"}

    def update(self, **fields) -> dict:
        with _lock:
            status = self.status()
            status.update(fields, updated=_now())
            write_json_atomic(self.path / "status.json", status)
            return status

    def append_to(self, key: str, item) -> dict:
        """Add ``item`` to the list ``status[key]`` (read and written under one lock: two at once keep both)."""
        with _lock:
            status = self.status()
            status[key] = [*(status.get(key) or []), item]
            status["updated"] = _now()
            write_json_atomic(self.path / "status.json", status)
            return status

    def merge_into(self, key: str, **fields) -> dict:
        """Set ``fields`` in the dict ``status[key]`` (read and written under one lock, as ``append_to``)."""
        with _lock:
            status = self.status()
            status[key] = {**(status.get(key) or {}), **fields}
            status["updated"] = _now()
            write_json_atomic(self.path / "status.json", status)
            return status

    def transition(self, from_states: tuple, **fields) -> dict | None:
        """``update(**fields)`` only if the state is one of ``from_states`` (checked and written under one lock);
        None when it is not, so two threads cannot both act on the same state."""
        with _lock:
            status = self.status()
            if status.get("state") not in from_states:
                return None
            status.update(fields, updated=_now())
            write_json_atomic(self.path / "status.json", status)
            return status

    # --- metrics and log -------------------------------------------------
    def append_metrics(self, record: dict) -> None:
        files.append_jsonl(self.path / "metrics.jsonl", record)

    def drop_metrics_after(self, step: int) -> None:
        """Forget records past ``step``: a run resumed from an earlier checkpoint logs those steps again."""
        records = self.metrics()
        kept = [r for r in records if not isinstance(r.get("step"), (int, float)) or r["step"] <= step]
        if len(kept) == len(records):
            return
        files.write_atomic(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))

    def metrics(self) -> list[dict]:
        """Every record (files.read_jsonl: a whole last record counts before its newline is written, as for
        service.latest_metrics; a line cut short by a crash is left out)."""
        return files.read_jsonl(self.path / "metrics.jsonl")

    def last_step(self) -> int:
        """The highest step its metrics record (0 before the first)."""
        return max((int(m["step"]) for m in self.metrics() if isinstance(m.get("step"), (int, float))), default=0)

    def log(self, message: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        with open(self.path / "log.txt", "a", encoding="utf-8") as fh:
            for line in str(message).rstrip("\n").splitlines() or [""]:
                fh.write(f"[{stamp}] {line}\n")

    def log_tail(self, lines: int = 40, *, max_bytes: int = 64 * 1024) -> str:
        """The log's last ``lines`` lines, read from its last ``max_bytes`` only (polled every second per viewer)."""
        try:
            with (self.path / "log.txt").open("rb") as log:
                size = log.seek(0, 2)
                log.seek(max(0, size - max_bytes))
                text = log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        if size > max_bytes:
            text = text.partition("\n")[2]  # the first line read is a cut one
        return "\n".join(text.splitlines()[-lines:])

    def log_size(self) -> int:
        """The log's size in bytes: unchanged, the page has nothing new to show."""
        try:
            return (self.path / "log.txt").stat().st_size
        except FileNotFoundError:
            return 0

    # --- stop requests: a file, so they also reach a piece running in another process (ZeroGPU) ---
    def request_stop(self) -> None:
        (self.path / "stop.request").touch()

    def stop_requested(self) -> bool:
        return (self.path / "stop.request").exists()

    def clear_stop(self) -> None:
        (self.path / "stop.request").unlink(missing_ok=True)

    # --- which process has the run: a lock the system lets go of when that process ends ---
    def claim(self):
        """Mark the run as queued or running in this process until ``files.release`` of the returned handle."""
        return files.try_lock(self._lock_path)[1]

    @property
    def _lock_path(self) -> Path:
        return self.path / ".worker.lock"

    def held_elsewhere(self) -> bool:
        """Whether another live process has this run queued or running."""
        return files.is_held(self._lock_path)

    def last_checkpoint(self) -> Path | None:
        if not self.checkpoints_dir.is_dir():
            return None
        found = [p for p in self.checkpoints_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
        return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)

    def sibling(self, run_id: str) -> "Run":
        """Another run of the same store (a prompt optimisation's tuned model); whose it is the caller checks."""
        path = self.path.parent / paths.safe_name(run_id, "")
        if not run_id or path.name != run_id or not (path / "config.yaml").exists():
            raise GarageError(f"No run {run_id!r}.")
        return Run(path)

    def output_dir(self) -> Path | None:
        """The trained weights: the adapter, or the full model, whichever exists."""
        for folder in (self.adapter_dir, self.model_dir):
            if (folder / "config.json").exists() or (folder / "adapter_config.json").exists():
                return folder
        return None


class RunStore:
    """All runs under ``<GARAGE_HOME>/runs``."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else paths.runs_dir()
        self.root.mkdir(parents=True, exist_ok=True)

    def create(self, cfg: TrainConfig, owner: str) -> Run:
        run_id = new_run_id(cfg)
        path = self.root / run_id
        path.mkdir(parents=True)
        run = Run(path)
        run.config_path.write_text(cfg.to_yaml(), encoding="utf-8")
        write_json_atomic(path / "status.json", {
            "id": run_id, "owner": owner, "state": "queued", "created": _now(), "model": cfg.model,
            "dataset": cfg.dataset, "method": cfg.method, "step": 0, "total_steps": None, "notices": [],
        })
        return run

    def get(self, run_id: str) -> Run:
        safe = paths.safe_name(run_id or "", "")
        path = self.root / safe
        if not safe or safe != run_id or not (path / "status.json").exists():
            raise GarageError(f"No run named {run_id!r}. Pick one from the runs table.")
        return Run(path)

    def find(self, ref: str) -> Run:
        """A run from its id, or from the path of its folder (``runs/<id>`` anywhere on disk: the command line's,
        never a visitor's)."""
        text = str(ref or "").strip()
        if not text:
            raise GarageError("Choose a run first.")
        folder = Path(text).expanduser()
        if folder.is_dir() and (folder / "status.json").is_file():
            return Run(folder.resolve())
        return self.get(text)

    def runs(self) -> list[Run]:
        found = [Run(p) for p in self.root.iterdir() if (p / "status.json").exists()]
        return sorted(found, key=lambda r: r.status().get("created", 0), reverse=True)

    def mark_interrupted(self) -> list[str]:
        """After a restart, runs that were queued or running did not finish: say so.

        Runs another live process holds (the app, while ``python -m garage train`` starts) are left alone.
        """
        marked = []
        for run in self.runs():
            if run.status().get("state") in ACTIVE and not run.held_elsewhere():
                reason = "The app stopped while this run was active."
                if run.last_checkpoint():
                    reason += " Resume continues from the last checkpoint."
                run.update(state="interrupted", reason=reason)
                run.log("Marked interrupted after an app restart.")
                marked.append(run.id)
        return marked
