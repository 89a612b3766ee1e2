"""Training jobs: the run store on disk and the GPU worker that runs them."""

from garage.jobs.store import Run, RunStore, STATES
from garage.jobs.worker import Worker, get_worker

__all__ = ["Run", "RunStore", "STATES", "Worker", "get_worker"]
