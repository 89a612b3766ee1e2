"""Several GPUs: one piece of a run trained by N processes, started by ``accelerate launch`` (DDP).

The worker's thread starts ``accelerate launch --multi_gpu --num_processes N -m garage.train.rank <run folder>``
and waits for it. Each process is one rank of torch.distributed (NCCL on GPUs; gloo on CPU processes, which
``GARAGE_CPU_PROCESSES=1`` allows for rehearsals and tests) and trains the same piece as a one-process run
(``garage.train.rank``). They share the run folder: rank 0 writes the status, metrics, log and weights; each rank's
Trainer writes its own random state into a checkpoint. What the piece is (the run, its config, the owner, the
steps) reaches the ranks pickled in the run folder, as a ZeroGPU piece reaches its worker.

Here the parent turns how the processes ended into the piece's result, or into one line of reason: a rank's own
error, a process that died (its signal, from the launcher's report), or processes that stopped making progress
(a rank stuck in a collective waits forever, so the parent ends them all after ``HANG_SECONDS`` of silence).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from garage import catalog, device
from garage.errors import GarageError
from garage.models.loading import model_source
from garage.secrecy import scrub_secrets
from garage.train import pieces
from garage.train.pieces import PieceResult

FOLDER = "processes"          # in the run folder: what the ranks read and say
PIECE = "piece.pkl"           # (run, cfg, owner, piece_steps), written by the parent for this piece
RESULT = "result.json"        # rank 0's PieceResult when the piece ended as it should
OUTPUT = "output.log"         # the launcher's and the ranks' stdout and stderr, for the run log on a failure
HANG_SECONDS = 900            # training, no write to the run's status, metrics or log this long: they hang
POLL_S = 1.0
AFTER_RESULT_S = 120          # once rank 0 saved the piece, the processes have this long to exit
RANK_MODULE = "garage.train.rank"


def check(cfg) -> None:
    """Refuse, before anything starts, a number of GPUs this machine cannot give the run."""
    if cfg.gpus <= 1:
        return
    if cfg.method == "grpo":  # also on Jobs, where the job would refuse it after its paid setup
        raise GarageError("GRPO trains on one GPU for now (gpus: 1): its completions, judge and evaluation run in "
                          "one process. Several GPUs are for lora, qlora and full.")
    if cfg.run_on != "here":
        return
    if device.on_zerogpu():
        raise GarageError("ZeroGPU lends one GPU per call: set gpus to 1, or train on Hugging Face Jobs with a "
                          "multi-GPU flavor (l4x4, a100x4).")
    visible = device.gpu_count()
    if visible == 0 and device.cpu_processes_allowed():
        cores = os.cpu_count() or 1
        if cfg.gpus > cores:  # each loads the whole model: more than the cores only thrashes the machine
            raise GarageError(f"gpus is {cfg.gpus}: CPU processes stand in for GPUs here (GARAGE_CPU_PROCESSES=1), "
                              f"one a core, and this machine has {cores} cores. Set gpus to at most {cores}.")
        return
    if cfg.gpus > visible:
        seen = f"{visible} visible GPU{'s' if visible != 1 else ''}" if visible else "no GPU"
        raise GarageError(f"gpus is {cfg.gpus}, but this machine has {seen} (CUDA_VISIBLE_DEVICES="
                          f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}). Set gpus to at most {max(1, visible)}, "
                          "or train on Hugging Face Jobs with a multi-GPU flavor (run_on hf-jobs, flavor l4x4).")


def folder(run) -> Path:
    return run.path / FOLDER


# accelerate launch reads the machine's default config (``accelerate config``) under what the command line says:
# this one, of the run's own, keeps a DeepSpeed or TPU default meant for other work out of the run.
ACCELERATE_FILE = "accelerate.yaml"
ACCELERATE_CONFIG = "compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_machines: 1\n"


def launch_command(processes: int, run_folder: Path, port: int, threads: int) -> list[str]:
    """accelerate's launcher, DDP over ``processes`` on this machine, each process running ``garage.train.rank``.
    ``--multi_gpu`` also on CPU processes: with ``--cpu`` accelerate starts one process, whatever the count."""
    return [sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(run_folder / FOLDER / ACCELERATE_FILE),
            "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port), "--num_cpu_threads_per_process", str(threads),
            "-m", RANK_MODULE, str(run_folder)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train_piece(run, cfg, owner: str, stop_event: threading.Event | None, piece_steps: int) -> PieceResult:
    """One piece on ``cfg.gpus`` processes; its result, or a GarageError with the reason the run failed (the run
    keeps its last checkpoint). Stop reaches the ranks through the run folder's stop request, as ZeroGPU's does."""
    model_source(cfg.model)  # a test model is built here, once, not by every rank at the same time
    here = folder(run)
    shutil.rmtree(here, ignore_errors=True)
    here.mkdir(parents=True)
    with open(here / PIECE, "wb") as piece:
        pickle.dump((run, cfg, owner, piece_steps), piece)
    (here / ACCELERATE_FILE).write_text(ACCELERATE_CONFIG, encoding="utf-8")
    threads = max(1, (os.cpu_count() or 1) // cfg.gpus)  # more threads than cores: OpenMP spins, 20x slower
    command = launch_command(cfg.gpus, run.path, free_port(), threads)
    what = f"{cfg.gpus} GPUs" if device.has_gpu() else f"{cfg.gpus} CPU processes (gloo, {threads} thread each)"
    run.log(f"Training on {what}: DDP through accelerate launch, rank 0 writes the run's files.")
    if device.has_gpu() and not catalog.fits_one_gpu(cfg.model, cfg.method):  # DDP splits rows, not the model
        run.log(f"WARNING: {catalog.gpu_fit(cfg.model, cfg.method)} Under DDP every GPU holds the whole model, so "
                "more GPUs do not make it fit (FSDP, which shards it, is not wired in).")
    run.update(processes=cfg.gpus)
    with open(here / OUTPUT, "ab") as output:
        launcher = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=end_with_parent)
    try:
        ended = _wait(launcher, run, stop_event)
    finally:
        if launcher.poll() is None:  # this thread was interrupted: leave no process training behind
            _kill(launcher)
        (here / PIECE).unlink(missing_ok=True)
    if ended == "stopped":
        step = pieces.checkpoint_step(run.last_checkpoint())
        return PieceResult(finished=False, stopped=True, step=step, total_steps=run.status().get("total_steps") or 0)
    return _outcome(run, cfg.gpus, launcher.returncode, ended == "hung")


try:  # looked up here, once: the launcher's child calls it between fork and exec, where loading a library may hang
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the processes outlive a killed parent, as any child would
    _PRCTL = None


def end_with_parent(sent: int = signal.SIGTERM) -> None:
    """This process gets ``sent`` when the one that started it ends. The launcher gets SIGTERM when the app's
    process ends (it then ends its ranks), and each rank SIGKILL when the launcher ends: an app or a launcher
    killed mid-run leaves no process training into a run folder the app will call interrupted."""
    if _PRCTL is not None:
        _PRCTL(1, sent)  # PR_SET_PDEATHSIG


def _wait(launcher: subprocess.Popen, run, stop_event: threading.Event | None) -> str | None:
    """Wait for the launcher to end; "hung" when the processes went silent for HANG_SECONDS once training had
    begun, "stopped" when Stop came before it began (nothing to save yet), and they were ended. Before the piece's
    first step no silence is counted: loading (a download of a big model) may take long, and a process that dies
    then is the launcher's to report. Once rank 0 saved the piece, the others get AFTER_RESULT_S to exit."""
    first_step = pieces.checkpoint_step(run.last_checkpoint()) + 1
    saved_at = None
    while launcher.poll() is None:
        training = (run.status().get("step") or 0) >= first_step
        if not training and (run.stop_requested() or stop_event is not None and stop_event.is_set()):
            _kill(launcher)
            return "stopped"
        if training and time.time() - last_sign_of_life(run) > HANG_SECONDS:
            _kill(launcher)
            return "hung"
        if saved_at is None and (folder(run) / RESULT).exists():
            saved_at = time.time()
        if saved_at is not None and time.time() - saved_at > AFTER_RESULT_S:  # stuck in its exit teardown
            _kill(launcher)
        time.sleep(POLL_S)
    return None


def last_sign_of_life(run) -> float:
    """When rank 0 last wrote the run's status, metrics or log (it does at every step, and while loading)."""
    times = [(run.path / name).stat().st_mtime for name in ("status.json", "metrics.jsonl", "log.txt")
             if (run.path / name).exists()]
    outputs = folder(run) / OUTPUT
    if outputs.exists():  # the ranks' own output (loading, compiling) counts too
        times.append(outputs.stat().st_mtime)
    return max(times, default=time.time())


def _kill(launcher: subprocess.Popen) -> None:
    """The launcher and every process under it, then wait for them. torch's launcher starts each rank in a
    session of its own, so a signal to the launcher's process group would miss them."""
    try:
        family = psutil.Process(launcher.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(launcher.pid, signal.SIGKILL)
    launcher.wait()
    psutil.wait_procs(family, timeout=30)


def _outcome(run, processes: int, code: int, hung: bool) -> PieceResult:
    here = folder(run)
    if (here / RESULT).exists():
        if code != 0:  # seen with Unsloth: a rank aborts in its exit teardown after the piece was saved
            run.log(f"NOTICE: a training process ended with code {code} after the piece was saved; the run's files "
                    "are whole.")
        return PieceResult(**json.loads((here / RESULT).read_text(encoding="utf-8")))
    said = failures(here)
    output = (here / OUTPUT).read_text(encoding="utf-8", errors="replace")
    rank, exit_code = root_cause(output)
    quoted = believed(said, rank, exit_code)
    if quoted is not None:  # rank 0's trace is in the run log already; another's in a log of its own
        if quoted != 0:
            _copy_tail(run, rank_log(here, quoted), f"Process {quoted + 1}'s last lines")
        raise GarageError(said[quoted] if quoted == 0 else f"(process {quoted + 1} of {processes}) {said[quoted]}")
    _copy_tail(run, here / OUTPUT, "The training processes' last output")
    if hung:
        silence = f"{HANG_SECONDS // 60} minutes" if HANG_SECONDS >= 120 else f"{HANG_SECONDS} seconds"
        raise GarageError(f"The {processes} training processes made no progress for {silence} "
                          "(one may be stuck waiting for another) and were ended. The run keeps its last "
                          "checkpoint: press Resume to go on from there.")
    raise GarageError(died(processes, rank, code if exit_code is None else exit_code))


def failures(here: Path) -> dict[int, str]:
    """rank -> the reason it wrote when its piece failed (garage.train.rank)."""
    return {int(path.stem.split("-")[1]): json.loads(path.read_text(encoding="utf-8"))["reason"]
            for path in here.glob("rank-*.failed")}


def rank_log(here: Path, rank: int) -> Path:
    """What a process other than the first logs (its traces, its libraries' warnings)."""
    return here / f"rank-{rank}.log"


def believed(said: dict, rank: int | None, exit_code: int | None) -> int | None:
    """Which process's own reason is the run's: the launcher's first failure if it said why, else the first that
    did; None when a process was killed from outside (the others' errors are only about losing it). SIGTERM is
    what the launcher sends the rest once one failed, so a process that said why is believed over it. An error
    every process met (bad data) is said as one process would."""
    killed = exit_code is not None and exit_code < 0 and not (exit_code == -signal.SIGTERM and said)
    if killed or not said:
        return None
    chosen = rank if rank in said else min(said)
    if said.get(0) == said[chosen]:  # every process met it: said as one process would
        return 0
    return chosen


def root_cause(output: str) -> tuple[int | None, int | None]:
    """(rank, exit code) of the first process that failed, from the launcher's report (torch.distributed.elastic's
    'Root Cause' table); the others fail after it, with errors about a lost peer."""
    if "Root Cause" not in output:
        return None, None
    cause = output.rpartition("Root Cause")[2]
    rank, code = re.search(r"rank\s*:\s*(\d+)", cause), re.search(r"exitcode\s*:\s*(-?\d+)", cause)
    return (int(rank.group(1)) if rank else None), (int(code.group(1)) if code else None)


def died(processes: int, rank: int | None, code: int) -> str:
    """The reason when a process ended without saying why: killed, or crashed outside Python; with no process
    named (no launcher report), the launcher itself failed (its output is in the run log)."""
    if rank is None:
        return (f"accelerate launch ended with code {code} before a training process said why (its last output "
                "is in the run log). The run keeps its last checkpoint: press Resume to try again.")
    how = f"ended with code {code}"
    if code in (-signal.SIGKILL, -signal.SIGTERM):
        how = f"was killed ({signal.Signals(-code).name})"
        if code == -signal.SIGKILL:
            how += ": out of machine memory, or ended from outside"
    elif code < 0 and -code in signal.valid_signals():
        how = f"crashed ({signal.Signals(-code).name})"
    return (f"Training process {rank + 1} of {processes} {how}; the others were stopped. The run keeps its last "
            "checkpoint: press Resume to go on.")


def _copy_tail(run, path: Path, title: str, lines: int = 40) -> None:
    """The last ``lines`` of ``path`` into the run log, keys and tokens masked."""
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    if text.strip():
        run.log(f"{title}:\n" + scrub_secrets("\n".join(text.splitlines()[-lines:])))
