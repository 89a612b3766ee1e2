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
import traceback
from dataclasses import asdict
from pathlib import Path

import torch  # before Unsloth is fine (it imports torch first itself); transformers, TRL and PEFT come after it
import torch.distributed as dist

from garage.errors import GarageError
from garage.files import write_atomic
from garage.secrecy import scrub_secrets
from garage.train import processes, runner


class QuietRun:
    """A run as ranks other than 0 see it: they read its folder, and their writes go nowhere (rank 0 writes the
    same steps, losses and weights, gathered over every rank)."""

    WRITES = frozenset({"update", "append_to", "transition", "append_metrics", "drop_metrics_after", "log",
                        "request_stop", "clear_stop"})

    def __init__(self, run):
        self._run = run

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
    view = run if rank == 0 else QuietRun(run)
    try:
        run_piece = runner.piece_function(cfg.method)  # Unsloth first, as in one process
        cpu_places_are_the_cpu()
        with runner.library_logs_to(view):
            result = run_piece(view, cfg, owner, None, piece_steps=piece_steps, log=view.log)
        if rank == 0:
            write_atomic(here / processes.RESULT, json.dumps(asdict(result)))
    except GarageError as exc:
        return _failed(here, rank, str(exc))
    except Exception as exc:  # noqa: BLE001 - said as the run's reason, its trace logged by the parent
        return _failed(here, rank, runner.explain_failure(exc), traceback.format_exc())
    _leave_group()  # not after a failure: the others may sit in an exchange this would wait for
    return 0


def cpu_places_are_the_cpu() -> None:
    """Let torch.load read 'cpu:0' as the CPU. Resuming, transformers loads the optimizer onto ``args.device``,
    which accelerate names 'cpu:<rank>' for CPU processes, and torch.load knows only 'cpu' ("don't know how to
    restore data location ... cpu:0"). GPU ranks ('cuda:<n>') need nothing."""
    torch.serialization.register_package(9, lambda storage: None,  # before the CPU's own (10): no tie
                                         lambda storage, place: storage if place.startswith("cpu:") else None)


def _failed(here: Path, rank: int, reason: str, trace: str = "") -> int:
    """Say why for the parent (a library's error text may carry a key or a token: masked), and exit."""
    write_atomic(here / f"rank-{rank}.failed",
                 json.dumps({"reason": scrub_secrets(reason), "trace": scrub_secrets(trace)}))
    return 1


def _leave_group() -> None:
    """End torch.distributed's process group cleanly (a rank left at exit can abort the others' teardown)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
