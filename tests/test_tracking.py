"""report_to: a run's metrics also in trackio, TensorBoard or W&B, offline, one tracked run across its pieces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from garage import paths
from garage.errors import GarageError
from garage.jobs import service
from garage.jobs.store import RunStore
from garage.jobs.worker import Worker
from garage.llm.keys import key_users
from garage.secrecy import scrub_secrets
from tests.helpers import conversations, tiny_config, write_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory):
    """The Q/A pairs, beside the module's run store."""
    folder = tmp_path_factory.mktemp("tracking")
    return write_jsonl(folder / "qa.jsonl", conversations())


@pytest.fixture(scope="module")
def worker(qa_file):
    return Worker(RunStore(qa_file.parent / "runs"))


def train(worker, qa_file, **settings):
    """A six-step run in two pieces of three (as ZeroGPU or chunk_steps trains), finished."""
    run_id = worker.submit(tiny_config(str(qa_file), max_steps=6, chunk_steps=3, save_steps=3, **settings), "alice")
    assert worker.wait_idle(300)
    run = worker.store.get(run_id)
    assert run.status()["state"] == "completed", run.log_tail()
    return run


def app_losses(run) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in run.metrics() if "loss" in m}


def test_tensorboard_holds_the_runs_curve_and_ships_in_the_adapter_zip(worker, qa_file):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from garage.hub.zips import adapter_zip

    run = train(worker, qa_file, report_to="tensorboard")
    logs = run.path / "tensorboard"
    events = EventAccumulator(str(logs))
    events.Reload()
    tracked = {e.step: e.value for e in events.Scalars("train/loss")}
    assert sorted(tracked) == list(range(1, 7))  # both pieces, one run: no gap, no repeat
    assert tracked == pytest.approx(app_losses(run), rel=1e-5)
    with zipfile.ZipFile(adapter_zip(run, run.path)) as archive:
        shipped = [n for n in archive.namelist() if "/tensorboard/" in n]
    assert len(shipped) == len(list(logs.glob("events.out.tfevents.*"))) >= 2


def test_trackio_logs_offline_into_one_run_named_by_the_run_id(qa_file, tmp_path):
    """Through the CLI in a process of its own: trackio reads TRACKIO_DIR once, when first imported."""
    env = {**os.environ, "GARAGE_HOME": str(tmp_path / "home"), "TRACKIO_DIR": str(tmp_path / "trackio")}
    config = tmp_path / "config.yaml"
    config.write_text(tiny_config(str(qa_file), max_steps=6, chunk_steps=3, save_steps=3, report_to="trackio",
                                  tracking_project="garage-test").to_yaml())
    done = subprocess.run([sys.executable, "-m", "garage", "train", str(config)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run = RunStore(tmp_path / "home" / "runs").runs()[0]
    read = ("import json, sys; from trackio.sqlite_storage import SQLiteStorage as S; "
            "print(json.dumps([S.get_runs('garage-test'), S.get_logs('garage-test', sys.argv[1])], default=str))")
    shown = subprocess.run([sys.executable, "-c", read, run.id], env=env, capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    runs, logs = json.loads(shown.stdout.strip().splitlines()[-1])
    assert runs == [run.id]
    tracked = {row["train/global_step"]: row["train/loss"] for row in logs if "train/loss" in row}
    assert sorted(tracked) == list(range(1, 7))  # both pieces, one run
    assert tracked == pytest.approx(app_losses(run), rel=1e-5)


def test_wandb_offline_keeps_one_run_in_the_run_folder(worker, qa_file, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run = train(worker, qa_file, report_to="wandb", tracking_project="garage-test")
    pieces = sorted((run.path / "wandb").glob("offline-run-*"))
    assert len(pieces) == 2 and all(p.name.endswith(f"-{run.id}") for p in pieces)  # one W&B run, resumed
    # W&B offline keeps its records in a binary log of its own (wandb sync uploads it): each piece's holds the
    # losses the app logged in that piece, as the JSON it writes them in
    losses = app_losses(run)
    for piece, steps in zip(pieces, ((1, 2, 3), (4, 5, 6))):
        records = (piece / f"run-{run.id}.wandb").read_bytes()
        assert b"train/loss" in records
        assert [json.dumps(losses[step]).encode() in records for step in range(1, 7)] == [s in steps for s in
                                                                                           range(1, 7)]


def test_start_says_what_a_tracker_needs(qa_file, monkeypatch, tmp_path):
    monkeypatch.setenv("GARAGE_HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    cfg = tiny_config(str(qa_file), report_to="wandb")
    with pytest.raises(GarageError, match="WANDB_API_KEY.*WANDB_MODE=offline.*trackio or tensorboard"):
        service.check_tracker(cfg, "alice")
    with pytest.raises(GarageError, match="Trackio logs into a database .* Hugging Face Job"):
        tiny_config(str(qa_file), report_to="trackio", run_on="hf-jobs")
    with pytest.raises(GarageError, match="tracking_project must be"):
        tiny_config(str(qa_file), report_to="trackio", tracking_project="../theirs")
    with pytest.raises(GarageError, match="report_to to none"):
        tiny_config(str(qa_file), method="prompt", report_to="tensorboard", val_rows=4, metric_calls=40)


def test_on_a_shared_space_the_owners_tracker_and_key_stay_the_owners(qa_file, monkeypatch, tmp_path):
    monkeypatch.setenv("GARAGE_HOME", str(tmp_path))
    monkeypatch.setenv("SPACE_ID", "me/garage")
    monkeypatch.setenv("SPACE_AUTHOR_NAME", "me")
    monkeypatch.delenv("GARAGE_SINGLE_USER", raising=False)
    monkeypatch.delenv("GARAGE_SHARE_SERVER_KEYS", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret-key-0123456789")
    for name in ("WANDB_MODE", "GARAGE_KEY_USERS"):  # offline W&B needs no account; key users may spend it
        monkeypatch.delenv(name, raising=False)
    visitor, owner = "hf-bob", "hf-me"
    assert paths.shared() and visitor not in key_users(), {k: v for k, v in os.environ.items() if "GARAGE" in k}
    with pytest.raises(GarageError, match="Weights & Biases would spend this shared Space's W&B account"):
        service.check_tracker(tiny_config(str(qa_file), report_to="wandb"), visitor)
    monkeypatch.setenv("GARAGE_SHARE_SERVER_KEYS", "1")  # shared with visitors here, never into their own jobs
    service.check_tracker(tiny_config(str(qa_file), report_to="wandb"), visitor)
    with pytest.raises(GarageError, match="does not go into a job on your account"):
        service.check_tracker(tiny_config(str(qa_file), report_to="wandb", run_on="hf-jobs"), visitor)
    monkeypatch.delenv("GARAGE_SHARE_SERVER_KEYS")
    with pytest.raises(GarageError, match="only its owner can open"):
        service.check_tracker(tiny_config(str(qa_file), report_to="trackio"), visitor)
    service.check_tracker(tiny_config(str(qa_file), report_to="tensorboard"), visitor)  # their own run folder
    service.check_tracker(tiny_config(str(qa_file), report_to="wandb"), owner)
    assert "wandb-secret-key" not in scrub_secrets("wandb said: bad key wandb-secret-key-0123456789")
