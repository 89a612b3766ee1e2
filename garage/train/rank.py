"""One process of a several-GPU piece (``python -m garage.train.rank <run folder>``, started by accelerate launch).

Every rank trains the piece the parent pickled (``garage.train.processes``) with the same ``run_piece`` as a
one-process run; torch.distributed's environment (RANK, WORLD_SIZE, LOCAL_RANK) makes the Trainer wrap the model
in DDP and shard the rows, and Unsloth place each rank's model on its own GPU. Rank 0 alone writes the run
(``QuietRun`` for the others). When the piece ends, rank 0 writes its result; a rank whose piece raises writes
its reason, so the parent can say why the run failed.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys
from dataclasses import asdict
from pathlib import Path

import torch  # before Unsloth is fine (it imports torch first itself); transformers, TRL and PEFT come after it
import torch.distributed as dist

from garage import device
from garage.files import write_atomic
from garage.secrecy import scrub_secrets
from garage.train import processes, runner


class QuietRun:
    """A run as ranks other than 0 see it: they read its folder and write none of it (rank 0 writes the same
    steps, losses and weights, gathered over every rank). What the rank logs goes to a file of its own, which the
    parent copies into the run log when that rank is the one that failed."""

    WRITES = frozenset({"update", "append_to", "transition", "append_metrics", "drop_metrics_after",
                        "request_stop", "clear_stop"})

    def __init__(self, run, log_path: Path):
        self._run, self._log_path = run, log_path

    def log(self, message: str) -> None:
        with open(self._log_path, "a", encoding="utf-8") as log:
            log.write(str(message).rstrip("\n") + "\n")

    def __getattr__(self, name):
        if name in self.WRITES:
            return lambda *args, **kwargs: None
        return getattr(self._run, name)


def main(run_folder: str) -> int:
    processes.end_with_parent(signal.SIGKILL)  # a launcher killed from outside takes its ranks with it
    here = Path(run_folder) / processes.FOLDER
    with open(here / processes.PIECE, "rb") as piece:  # written by this run's parent, in the run's own folder
        run, cfg, owner, piece_steps = pickle.load(piece)
    rank = int(os.environ.get("RANK", "0"))
    view = run if rank == 0 else QuietRun(run, processes.rank_log(here, rank))
    cpu_places_are_the_cpu()
    result = runner.piece_elsewhere(view, cfg, owner, piece_steps)  # Unsloth first, as in one process
    if isinstance(result, device.Failed):  # not leaving the group: the others may sit in an exchange it waits for
        write_atomic(here / f"rank-{rank}.failed", json.dumps({"reason": scrub_secrets(result.message)}))
        return 1
    if rank == 0:
        write_atomic(here / processes.RESULT, json.dumps(asdict(result)))
    _leave_group()
    return 0


def cpu_places_are_the_cpu() -> None:
    """Let torch.load read 'cpu:0' as the CPU. Resuming, transformers loads the optimizer onto ``args.device``,
    which accelerate names 'cpu:<rank>' for CPU processes, and torch.load knows only 'cpu' ("don't know how to
    restore data location ... cpu:0"). GPU ranks ('cuda:<n>') need nothing."""
    torch.serialization.register_package(9, lambda storage: None,  # before the CPU's own (10): no tie
                                         lambda storage, place: storage if place.startswith("cpu:") else None)


def _leave_group() -> None:
    """End torch.distributed's process group cleanly (a rank left at exit can abort the others' teardown)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
