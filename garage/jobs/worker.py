"""The GPU worker: one thread owns the GPU and runs queued jobs one at a time.

The UI and the API only enqueue, read and signal; they never wait for training. A run on Hugging Face Jobs does
not take this machine's GPU: a thread of its own follows its job (``garage.jobs.hf_jobs``) while local runs train.
Any session may watch any run; only its owner can stop, resume or delete it (``garage.access``).
"""

from __future__ import annotations

import queue
import shutil
import threading
import traceback

from garage import access, device, files
from garage.config import TrainConfig
from garage.errors import GarageError
from garage.jobs import hf_jobs
from garage.jobs.store import ACTIVE, Run, RunStore, shown_owner
from garage.secrecy import scrub_secrets
from garage.optimize import prompt_run
from garage.train import processes, runner

RESUMABLE = ("interrupted", "stopped", "failed")


class Worker:
    def __init__(self, store: RunStore | None = None, execute=None):
        self.store = store or RunStore()
        self._execute = execute
        self._queue: queue.Queue[str] = queue.Queue()
        self._stops: dict[str, threading.Event] = {}
        self._claims: dict[str, object] = {}  # run id -> its held lock file, while queued or running here
        self._lock = threading.Lock()
        self._remote: dict[str, threading.Thread] = {}  # run id -> the thread following its Hugging Face Job
        self.current: str | None = None
        self._thread = threading.Thread(target=self._loop, name="garage-gpu-worker", daemon=True)
        self.recovered = self.store.mark_interrupted()
        self._thread.start()
        for run_id in self.recovered:
            self._follow_again(self.store.get(run_id))

    # --- commands --------------------------------------------------------
    def submit(self, cfg: TrainConfig, owner: str, *, request=None, token: str | None = None) -> str:
        """Queue a new run; ``request``: the owner's, whose ZeroGPU quota its pieces draw on. A run on Hugging Face
        Jobs starts its job now (``token``: the owner's), so a refusal (no credits, a bad flavor) leaves no run."""
        cfg.validate()
        processes.check(cfg)
        run = self.store.create(cfg, owner)
        self._claim(run)
        run.log(f"Queued by {shown_owner(owner)}. Reproduce with: python -m garage train {run.config_path}")
        if cfg.run_on == "hf-jobs":
            hf_jobs.remember_token(run.id, token)
            try:
                hf_jobs.start_job(run, owner, token)
            except BaseException:
                self._release(run.id)
                hf_jobs.forget_token(run.id)
                shutil.rmtree(run.path, ignore_errors=True)
                raise
        device.remember_visitor(run.id, request)
        self._enqueue(run.id)
        return run.id

    def stop(self, run_id: str, user: str) -> str:
        run = self._owned(run_id, user)
        # checked and written at once: the worker may be taking this very run off the queue
        if run.transition(("queued",), state="stopped", reason="Stopped before it started.") is not None:
            return "stopped"
        state = run.status().get("state")
        if state != "running":
            raise GarageError(f"Run {run_id} is {state}; only a queued or running run can be stopped.")
        run.request_stop()
        self._stops.setdefault(run_id, threading.Event()).set()
        run.log("Stop requested; the run stops after the current optimizer step." if run.config().method != "prompt"
                else "Stop requested; the search stops after the answers being written (16 rows at most).")
        return "stopping"

    def resume(self, run_id: str, user: str, *, request=None, token: str | None = None) -> str:
        run = self._owned(run_id, user)
        cfg = run.config()
        if cfg.run_on == "hf-jobs":  # said now: a token, a flavor the Hub has
            hf_jobs.check_start(cfg, token)
            hf_jobs.remember_token(run_id, token)
        processes.check(cfg)  # the GPUs it trained on may be gone
        if run.transition(RESUMABLE, state="queued", reason=None) is None:  # e.g. a second click already queued it
            state = run.status().get("state")
            raise GarageError(f"Run {run_id} is {state}; only an interrupted, stopped or failed run resumes.")
        self._claim(run)
        checkpoint = run.last_checkpoint()
        if cfg.method == "prompt":
            run.log("Resume queued: the search goes on from its saved state (prompt/gepa) and kept answers.")
        else:
            run.log(f"Resume queued from {checkpoint.name if checkpoint else 'the start (no checkpoint yet)'}.")
        device.remember_visitor(run_id, request)  # the owner's (checked above), as for a new run
        self._enqueue(run_id)
        return run_id

    def delete(self, run_id: str, user: str, *, token: str | None = None) -> None:
        """``token``: the owner's, to cancel a Hugging Face Job nobody follows any more (after a restart)."""
        run = self._owned(run_id, user)
        status = run.status()
        if status.get("state") in ACTIVE:
            raise GarageError(f"Run {run_id} is still active: stop it before deleting it.")
        job = status.get("job") or {}
        if job.get("stage") not in (None, *hf_jobs.TERMINAL):  # it may still train, and bill
            token = token or hf_jobs.token_of(run_id) or hf_jobs.restart_token()
            if not token:
                raise GarageError(f"Run {run_id}'s Hugging Face Job {job['id']} may still be running on your "
                                  f"account: sign in and delete again (that cancels it), or cancel it at "
                                  f"{job['url']}.")
            hf_jobs.cancel(run, token)
        shutil.rmtree(run.path)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the queue is drained (tests and the CLI use this)."""
        done = threading.Event()

        def waiter():
            self._queue.join()
            for thread in list(self._remote.values()):
                thread.join()
            done.set()

        threading.Thread(target=waiter, daemon=True).start()
        return done.wait(timeout)

    def _follow_again(self, run: Run) -> None:
        """After a restart, a run on Hugging Face Jobs was not lost with this process: its job may still be training.
        Follow it again where this machine's own token may (off a shared Space); else say how (Resume)."""
        job = run.status().get("job")
        if not job or run.config().run_on != "hf-jobs":
            return
        token = hf_jobs.restart_token()
        if token is None:
            run.update(reason=f"The app restarted while Hugging Face Job {job['id']} ran; the job went on. Press "
                              "Resume (signed in) to follow it again.")
            return
        if run.transition(("interrupted",), state="queued", reason=None, follow_only=True) is not None:
            run.log(f"The app restarted: following Hugging Face Job {job['id']} again.")
            hf_jobs.remember_token(run.id, token)
            self._claim(run)
            self._enqueue(run.id)

    # --- internals -------------------------------------------------------
    def _owned(self, run_id: str, user: str) -> Run:
        return access.require("change", self.store.get(run_id), user)

    def _claim(self, run: Run) -> None:
        """Hold the run's lock while it is queued or running here, so another process does not call it orphaned."""
        with self._lock:
            if self._claims.get(run.id) is None:
                handle = run.claim()
                if handle is not None:
                    self._claims[run.id] = handle

    def _release(self, run_id: str) -> None:
        with self._lock:
            handle = self._claims.pop(run_id, None)
        files.release(handle)

    def _enqueue(self, run_id: str) -> None:
        self._stops[run_id] = threading.Event()
        if self.store.get(run_id).config().run_on == "hf-jobs":
            thread = threading.Thread(target=self._follow, args=(run_id,), name=f"garage-job-{run_id}", daemon=True)
            self._remote[run_id] = thread
            thread.start()
        else:
            self._queue.put(run_id)

    def _loop(self) -> None:
        while True:
            run_id = self._queue.get()
            try:
                self._guarded(run_id)
            finally:
                self._queue.task_done()

    def _follow(self, run_id: str) -> None:
        try:
            self._guarded(run_id, hf_jobs.execute)
        finally:
            hf_jobs.forget_token(run_id)
            self._remote.pop(run_id, None)

    def _guarded(self, run_id: str, execute=None) -> None:
        visitor = device.visitor_of(run_id)
        try:
            self._run_one(run_id, execute)
        except Exception as exc:  # a bug outside the runner's own handling: fail this run, keep serving
            self._crashed(run_id, exc)
        finally:
            self._release(run_id)
            device.forget_visitor(run_id, visitor)  # also when it was stopped or deleted while queued

    def _crashed(self, run_id: str, exc: Exception) -> None:
        try:
            run = self.store.get(run_id)
            run.log(scrub_secrets(traceback.format_exc()))  # a library's error text may carry a key or a token
            run.update(state="failed", reason=f"Unexpected error ({type(exc).__name__}); the run log has the "
                                              "details. Resume tries again.")
        except Exception:  # the run folder itself is gone or unwritable: nothing left to record
            pass

    def _run_one(self, run_id: str, execute=None) -> None:
        try:
            run = self.store.get(run_id)
        except GarageError:
            return  # deleted while queued
        run.clear_stop()  # before it counts as running: a stop from now on is for this start
        if run.transition(("queued",), state="running") is None:  # stopped while queued
            if execute is not None:  # a job already started for it (Stop came while its inputs uploaded)
                hf_jobs.cancel(run)
            return
        here = execute is None  # a Hugging Face Job holds no GPU of this machine: it is not the current run
        if here:
            self.current = run_id
        try:
            execute = execute or self._execute or (prompt_run.execute if run.config().method == "prompt"
                                                   else runner.execute)
            execute(run, self._stops.setdefault(run_id, threading.Event()))
        finally:
            if here:
                self.current = None
            self._stops.pop(run_id, None)


_worker: Worker | None = None
_worker_lock = threading.Lock()


def get_worker() -> Worker:
    """The process-wide worker, started on first use (it marks orphaned runs interrupted)."""
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = Worker()
        return _worker
