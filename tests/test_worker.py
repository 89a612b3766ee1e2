"""The worker's states and races (a job that raises, a Stop as the run starts, a second process), and what a
resume keeps (the loss curve, a note that the dataset changed, metrics cut by a crash)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from garage.jobs.store import RunStore
from garage.jobs.worker import Worker
from tests.helpers import conversations, tiny_config, wait_for, write_jsonl


@pytest.fixture
def qa_file(tmp_path):
    return write_jsonl(tmp_path / "qa.jsonl", conversations())


# --- the worker --------------------------------------------------------------------------------

def test_the_worker_survives_a_job_that_raises(tmp_path, qa_file):
    token = "hf_" + "Ab3" * 12  # a library's error text may carry one: the run log must not

    def execute(run, stop_event):
        if run.config().seed == 1:
            raise RuntimeError(f"a bug outside the runner's own handling (Authorization: Bearer {token})")
        run.update(state="completed")

    worker = Worker(RunStore(tmp_path / "runs"), execute=execute)
    broken = worker.submit(tiny_config(str(qa_file), seed=1), "alice")
    fine = worker.submit(tiny_config(str(qa_file), seed=2), "alice")
    assert worker.wait_idle(20), "the worker thread died: later runs stay queued forever"
    status = worker.store.get(broken).status()
    assert status["state"] == "failed" and "RuntimeError" in status["reason"]
    log = worker.store.get(broken).log_tail(100)
    assert "a bug outside" in log and token not in log
    assert worker.store.get(fine).status()["state"] == "completed"


def test_a_stop_that_lands_as_the_worker_starts_the_run_still_stops_it(tmp_path, qa_file, monkeypatch):
    from garage.train import pieces, runner, sft

    monkeypatch.setattr(runner, "import_unsloth", lambda: True)

    def fake_piece(run, cfg, owner, stop_event, *, piece_steps=0, log=print):
        stopped = stop_event.is_set() or run.stop_requested()
        return pieces.PieceResult(finished=not stopped, stopped=stopped, step=1, total_steps=10)

    monkeypatch.setattr(sft, "run_piece", fake_piece)
    said = []

    def execute(run, stop_event):
        said.append(worker.stop(run.id, "alice"))  # the user's click lands just as the worker picks the run
        return runner.execute(run, stop_event)

    worker = Worker(RunStore(tmp_path / "runs"), execute=execute)
    run_id = worker.submit(tiny_config(str(qa_file)), "alice")
    assert worker.wait_idle(20)
    assert worker.store.get(run_id).status()["state"] == "stopped", said


def test_a_second_process_leaves_the_first_ones_live_runs_alone(tmp_path, qa_file):
    gate = threading.Event()
    first = Worker(RunStore(tmp_path / "runs"), execute=lambda run, stop_event: gate.wait(30))
    running = first.submit(tiny_config(str(qa_file)), "local")
    queued = first.submit(tiny_config(str(qa_file)), "local")
    wait_for(lambda: first.current == running, timeout=10, what="the run to start")
    crashed = first.store.create(tiny_config(str(qa_file)), "local")  # active on disk, no process holds it
    crashed.update(state="running")
    try:
        # `python -m garage train` (or chat, export) started while the app trains: its worker must not
        # call the app's live runs interrupted (the user could then delete a run under its trainer)
        second = Worker(RunStore(tmp_path / "runs"), execute=lambda run, stop_event: None)
        assert second.recovered == [crashed.id]
        assert first.store.get(queued).status()["state"] == "queued"
        assert first.store.get(running).status()["state"] in ("queued", "running")
    finally:
        gate.set()
    assert first.wait_idle(20)


# --- resume and metrics ------------------------------------------------------------------------

def test_resuming_from_an_earlier_checkpoint_does_not_repeat_steps_in_the_curve(tmp_path, qa_file):
    from garage.train.callbacks import RunCallback

    run = RunStore(tmp_path / "runs").create(tiny_config(str(qa_file)), "local")
    for step in range(1, 38):  # a crash at step 37; the last checkpoint is checkpoint-35
        run.append_metrics({"step": step, "loss": 1.0 / step})
    callback = RunCallback(run, None)
    callback.on_train_begin(None, SimpleNamespace(global_step=35, max_steps=60, num_input_tokens_seen=0), None)
    assert [m["step"] for m in run.metrics()] == list(range(1, 36))


def test_resuming_on_a_dataset_saved_again_since_says_so(tmp_path, qa_file):
    from garage.train.pieces import note_dataset_change

    cfg = tiny_config(str(qa_file))
    run = RunStore(tmp_path / "runs").create(cfg, "local")
    checkpoint = run.checkpoints_dir / "checkpoint-10"
    said = []
    note_dataset_change(run, cfg, conversations(), None, said.append)
    note_dataset_change(run, cfg, conversations(), checkpoint, said.append)  # a plain resume: nothing to say
    assert not said and not run.status()["notices"]
    note_dataset_change(run, cfg, conversations()[:3], checkpoint, said.append)
    assert "changed after this run started" in said[0] and "checkpoint-10" in run.status()["notices"][0]


def test_a_metrics_line_cut_by_a_crash_does_not_swallow_the_next_one(tmp_path, qa_file):
    run = RunStore(tmp_path / "runs").create(tiny_config(str(qa_file)), "local")
    run.append_metrics({"step": 1, "loss": 2.0})
    with open(run.path / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"step": 2, "lo')  # the process died mid-write
    run.append_metrics({"step": 2, "loss": 1.5})
    assert [m["step"] for m in run.metrics()] == [1, 2]
