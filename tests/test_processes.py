"""Several GPUs, rehearsed on the CPU: `gpus: 2` trains in two processes (DDP over gloo, started by accelerate
launch), the same code path as two GPUs over NCCL. What a user depends on: the run is the one-process run (same
loss curve, same weights), Stop and Resume work, and a process that dies or hangs fails the run with a reason,
leaving nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file

from garage.config import LABELS
from garage.errors import GarageError
from garage.jobs import service
from garage.jobs.store import Run, RunStore
from garage.jobs.worker import Worker
from garage.train import processes
from garage.train.rank import QuietRun
from garage.train.shaping import Shape, split
from garage.ui.train_tab import _progress_markdown
from tests.conftest import ROOT
from tests.helpers import QA, conversations, tiny_config, wait_for, write_jsonl

# fp32 rounding of one pass of 4 rows against two of 2 is ~1e-6 at most; the same passes split over two processes
# (2 rows each) as one process's 2 passes of 2 gave the same numbers to the last bit (bench: bench_processes.py)
TOLERANCE = 1e-5


@pytest.fixture
def cpu_processes(monkeypatch):
    monkeypatch.setenv("GARAGE_CPU_PROCESSES", "1")


@pytest.fixture
def worker(tmp_path):
    return Worker(RunStore(tmp_path / "runs"))


@pytest.fixture
def data(tmp_path):
    return str(write_jsonl(tmp_path / "qa.jsonl", conversations()))


def config(data, **overrides):
    values = dict(per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=12, save_steps=4,
                  batch_shaping=False)
    return tiny_config(data, **{**values, **overrides})


def losses(run) -> dict[int, float]:
    return {int(m["step"]): m["loss"] for m in run.metrics() if "loss" in m}


def rank_processes(rank: int) -> list[psutil.Process]:
    """This test process's training processes of ``rank`` (accelerate sets LOCAL_RANK in each)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.environ().get("LOCAL_RANK") == str(rank):
                found.append(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def no_training_processes_left(run) -> bool:
    """No process of this run's is alive anywhere (a rank whose launcher died is no longer our child)."""
    for process in psutil.process_iter(["cmdline", "status"]):
        if str(run.path) in " ".join(process.info["cmdline"] or []) and process.info["status"] != psutil.STATUS_ZOMBIE:
            return False
    return True


@pytest.mark.slow
def test_two_processes_train_the_one_process_run_through_stop_and_resume(worker, data, cpu_processes, tmp_path,
                                                                        monkeypatch):
    # one process as the command line trains it: a fresh process, as each of the two is (this test process has
    # trained other models before, which moves its first losses by about 5e-3)
    config_file = tmp_path / "alone.yaml"
    config_file.write_text(config(data).to_yaml(), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "garage", "train", str(config_file)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    alone = Run(Path(done.stdout.split("done: ")[-1].strip()).parent)  # "done: <run folder>/adapter"
    assert alone.status()["state"] == "completed", done.stdout[-1000:]

    two = worker.store.get(worker.submit(config(data, gpus=2), "alice"))
    wait_for(lambda: two.last_step() >= 5 or two.status()["state"] not in ("queued", "running"),  # one read
             timeout=300, what="step 5 of the two-process run")
    assert worker.stop(two.id, "alice") == "stopping"
    assert worker.wait_idle(300)
    status = two.status()
    assert status["state"] == "stopped", two.log_tail()
    stopped_at = status["step"]
    assert 5 <= stopped_at < 12 and two.last_checkpoint().name == f"checkpoint-{stopped_at}"
    # every process saved its random state into the checkpoint it stopped at
    assert {p.name for p in two.last_checkpoint().glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}

    worker.resume(two.id, "alice")
    assert worker.wait_idle(300)
    assert two.status()["state"] == "completed", two.log_tail()
    assert two.status()["processes"] == 2
    monkeypatch.setattr(service, "get_worker", lambda: worker)  # what the Train tab polls shows it
    assert "2 processes (DDP)" in _progress_markdown(service.training_status(two.id, "alice"))

    one_curve, two_curve = losses(alone), losses(two)
    assert sorted(two_curve) == list(range(1, 13)), "one record per step: only rank 0 writes metrics"
    assert max(abs(one_curve[step] - two_curve[step]) for step in one_curve) <= TOLERANCE, (one_curve, two_curve)
    # the weights too: the adapter two processes saved is the one one process saved
    one_weights = load_file(alone.adapter_dir / "adapter_model.safetensors")
    two_weights = load_file(two.adapter_dir / "adapter_model.safetensors")
    assert one_weights.keys() == two_weights.keys()
    assert max((one_weights[k].float() - two_weights[k].float()).abs().max().item() for k in one_weights) < 1e-4
    log = two.log_tail(400)
    assert log.count("Masking check") == 2, "one piece's lines once, not once per process"
    assert "4 rows a step, as configured, so the loss curve is one process's" in log
    assert not (two.path / processes.FOLDER / processes.PIECE).exists()
    assert no_training_processes_left(two)


@pytest.mark.slow
def test_a_killed_process_fails_the_run_saying_which_and_leaves_none_behind(worker, data, cpu_processes):
    run = worker.store.get(worker.submit(config(data, gpus=2, max_steps=100000), "alice"))
    wait_for(lambda: run.last_step() >= 2, timeout=300, what="step 2")
    victims = wait_for(lambda: rank_processes(1), timeout=10, what="rank 1's process")
    victims[0].send_signal(signal.SIGKILL)
    assert worker.wait_idle(120)
    status = run.status()
    assert status["state"] == "failed"
    assert status["reason"].startswith("Training process 2 of 2 was killed (SIGKILL)"), status["reason"]
    assert "press Resume" in status["reason"]
    wait_for(lambda: no_training_processes_left(run), timeout=30, what="no process left")


@pytest.mark.slow
def test_a_hung_process_is_ended_and_the_run_says_so(worker, data, cpu_processes, monkeypatch):
    run = worker.store.get(worker.submit(config(data, gpus=2, max_steps=100000), "alice"))
    wait_for(lambda: run.last_step() >= 2, timeout=300, what="step 2")
    monkeypatch.setattr(processes, "HANG_SECONDS", 12)  # read by the worker's watchdog each second
    victims = wait_for(lambda: rank_processes(1), timeout=10, what="rank 1's process")
    victims[0].send_signal(signal.SIGSTOP)  # alive but stuck: rank 0 waits for it in the next all-reduce, forever
    started = time.time()
    assert worker.wait_idle(120)
    assert time.time() - started < 60
    status = run.status()
    assert status["state"] == "failed" and "made no progress for" in status["reason"], status["reason"]
    wait_for(lambda: no_training_processes_left(run), timeout=30, what="no process left")


@pytest.mark.slow
def test_an_error_every_process_meets_is_said_once_as_in_one_process(worker, tmp_path, cpu_processes):
    long_questions = [("Please answer this question. " * 12 + question, answer) for question, answer in QA]
    data = str(write_jsonl(tmp_path / "long.jsonl", conversations(long_questions)))
    run = worker.store.get(worker.submit(config(data, gpus=2, max_seq_length=32), "alice"))  # answers cut off
    assert worker.wait_idle(300)
    status = run.status()
    assert status["state"] == "failed"
    assert status["reason"].startswith("Nothing to train on: 4 of 4 rows have no trainable token"), status["reason"]


def test_more_gpus_than_the_machine_has_is_refused_before_anything_starts(worker, data, monkeypatch):
    monkeypatch.delenv("GARAGE_CPU_PROCESSES", raising=False)
    with pytest.raises(GarageError, match="gpus is 2, but this machine has no GPU.*at most 1.*hf-jobs"):
        worker.submit(config(data, gpus=2), "alice")
    monkeypatch.setenv("GARAGE_CPU_PROCESSES", "1")  # CPU processes, one a core at most
    with pytest.raises(GarageError, match=f"gpus is 64: CPU processes stand in.*at most {os.cpu_count()}"):
        worker.submit(config(data, gpus=64), "alice")
    with pytest.raises(GarageError, match="GRPO trains on one GPU"):
        worker.submit(tiny_config(data, method="grpo", gpus=2, rewards=["length"]), "alice")
    assert worker.store.runs() == []


def test_a_step_is_split_over_the_processes_so_it_holds_the_same_rows():
    assert split(Shape(2, 4), 2) == Shape(2, 2)      # passes divided
    assert split(Shape(4, 1), 2) == Shape(2, 1)      # else the rows of a pass
    assert split(Shape(4, 3), 4) == Shape(1, 3)
    assert split(Shape(3, 1), 2) == Shape(3, 1)      # neither divides: each process takes it all (said in the log)
    assert split(Shape(5, 2), 1) == Shape(5, 2)


LAUNCHER_REPORT = """torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
garage.train.rank FAILED
------------------------------------------------------------
Failures:
[1]:
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 13332)  (SIGTERM)
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 13333)
============================================================
"""


def test_the_reason_names_the_process_that_failed_first_not_the_ones_that_lost_it(tmp_path):
    assert processes.root_cause(LAUNCHER_REPORT) == (1, -9)
    assert processes.root_cause("Traceback ... MemoryError") == (None, None)
    assert processes.died(4, 3, -9).startswith("Training process 4 of 4 was killed (SIGKILL): out of machine memory")
    assert processes.died(2, 0, -11).startswith("Training process 1 of 2 crashed (SIGSEGV)")
    assert processes.died(2, None, 1).startswith("accelerate launch ended with code 1 before a training process")
    lost_peer = "RuntimeError: Connection closed by peer"
    out_of_memory = "Out of memory. Lower per_device_train_batch_size"
    assert processes.believed({0: lost_peer}, 1, -9) is None          # killed from outside: not rank 0's error
    assert processes.believed({1: out_of_memory, 0: lost_peer}, 1, 1) == 1
    assert processes.believed({0: out_of_memory}, 1, -15) == 0        # the launcher's SIGTERM to the others
    assert processes.believed({1: out_of_memory}, None, None) == 1    # no report: the first that said why
    assert processes.believed({}, 0, 1) is None
    assert processes.believed({0: out_of_memory, 1: out_of_memory}, 1, 1) == 0  # all met it: no "process 2 of 2"


def test_a_process_other_than_the_first_reads_the_run_and_writes_nothing(tmp_path):
    store = RunStore(tmp_path / "runs")
    run = store.create(tiny_config(str(write_jsonl(tmp_path / "d.jsonl", conversations()))), "alice")
    before = {path.name: path.read_bytes() for path in run.path.iterdir() if path.is_file()}
    quiet = QuietRun(run, tmp_path / "rank-1.log")
    quiet.update(state="failed")
    quiet.log("rank 1 says")
    quiet.append_metrics({"step": 1, "loss": 1.0})
    quiet.drop_metrics_after(0)
    assert {path.name: path.read_bytes() for path in run.path.iterdir() if path.is_file()} == before
    assert quiet.status() == run.status() and quiet.path == run.path and quiet.config() == run.config()
    assert (tmp_path / "rank-1.log").read_text() == "rank 1 says\n"  # its own log, for the parent to copy
    assert json.loads((run.path / "status.json").read_text())["state"] == "queued"
    assert os.environ.get("WORLD_SIZE") is None  # this test process is not a rank


def test_the_command_line_takes_gpus_and_refuses_more_than_there_are(tmp_path, data):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(config(data).to_yaml(), encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if key != "GARAGE_CPU_PROCESSES"}
    done = subprocess.run([sys.executable, "-m", "garage", "train", str(config_file), "--gpus", "3"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode != 0
    assert "gpus is 3, but this machine has no GPU" in done.stderr, done.stderr


def test_the_train_tab_offers_gpus_only_where_several_can_train(monkeypatch):
    from garage.ui.app import build_app

    def gpus_field_visible() -> bool:
        label = LABELS["gpus"][0]
        fields = [c for c in build_app().get_config_file()["components"] if c.get("props", {}).get("label") == label]
        assert len(fields) == 1
        return fields[0]["props"]["visible"]

    monkeypatch.delenv("GARAGE_CPU_PROCESSES", raising=False)
    assert not gpus_field_visible()  # this machine has no GPU
    monkeypatch.setenv("GARAGE_CPU_PROCESSES", "1")
    assert gpus_field_visible()
    shown = _progress_markdown({"id": "r", "state": "running", "step": 3, "total_steps": 10, "processes": 2})
    assert "2 processes (DDP)" in shown


@pytest.mark.slow
def test_stop_while_the_processes_still_load_ends_them_at_once(worker, data, cpu_processes):
    run = worker.store.get(worker.submit(config(data, gpus=2), "alice"))
    wait_for(lambda: (processes.folder(run) / processes.OUTPUT).exists(), timeout=60, what="the launcher")
    assert worker.stop(run.id, "alice") == "stopping"
    assert worker.wait_idle(60)
    status = run.status()
    assert status["state"] == "stopped" and status["step"] == 0, status
    wait_for(lambda: no_training_processes_left(run), timeout=30, what="no process left")


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_preference_tuning_on_two_processes_is_the_one_process_run(worker, tmp_path, cpu_processes, method):
    wrong = ["London.", "Green.", "A doctor.", "5."]
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": q, "chosen": a, "rejected": wrong[i]}
                                                   for i, (q, a) in enumerate(QA)] * 2)
    runs = [worker.submit(config(str(pairs), method=method, beta=0.1, learning_rate=2e-4, max_steps=6, gpus=gpus),
                          "alice") for gpus in (1, 2)]
    assert worker.wait_idle(600)
    one, two = (worker.store.get(run_id) for run_id in runs)
    assert two.status()["state"] == "completed" and two.status()["processes"] == 2, two.log_tail()
    assert sorted(losses(two)) == list(range(1, 7))
    rows_per_step = [run.status()["rows_per_pass"] * run.status()["passes_per_step"] for run in (one, two)]
    assert rows_per_step == [4, 2]  # a step's 4 rows split over the two processes, 2 each
    # the same curve; this process has trained other models before, which moves its losses by up to ~5e-3 (a
    # process taking a whole step's rows each moved them by 1.4e-2)
    for step, loss in losses(one).items():
        assert losses(two)[step] == pytest.approx(loss, abs=8e-3)
