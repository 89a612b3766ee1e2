"""On a ZeroGPU Space the GPU exists only inside ``spaces.GPU`` calls, each in a forked worker process: training
pieces and Compare go through them, errors come back with their message, Unsloth stays out of the main process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import conversations, write_jsonl
from tests.zerogpu_child import VISITOR_TOKEN

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_training_and_compare_run_inside_zerogpu_calls(tmp_path):
    data = write_jsonl(tmp_path / "qa.jsonl", conversations())
    env = {**os.environ, "GARAGE_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "zerogpu_child.py"), str(data)], env=env,
                          capture_output=True, text=True, timeout=900, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])  # spaces prints too
    assert out["decorated"]  # at import, so the Space reports its GPU functions at launch
    assert out["good"] == {"state": "completed", "step": 4, "reason": None}, done.stderr[-3000:]
    # 90 s + 2 steps of 2.5 s, asked as the visitor who pressed Start (their quota), though on the worker thread
    assert out["schedule"] == {"cgroupPath": "/garage-test", "durationSeconds": "95", "token": VISITOR_TOKEN}
    assert out["pieces_scheduled"] == 2 + 1  # two pieces of 2 steps for the good run, one for the failing one
    assert out["bad"]["state"] == "failed" and "qa.jsonl.missing" in out["bad"]["reason"]  # its message, not a class
    assert out["compare"]["streamed"] >= 1 and out["compare"]["base_tokens"] > 0 and out["compare"]["tuned_tokens"]
    assert out["compare"]["scheduled"] == 1
    assert out["stopped_compare_released"]  # Stop in Compare ends the GPU call at once
    assert out["card_examples"] == {"answered": 2, "note": ""}  # a pushed card's example answers, in a GPU call
    assert out["merged"]  # the merge for export and GGUF
    refused = out["refused"]  # ZeroGPU's own refusal: said as such, with what to do
    assert refused["state"] == "failed" and refused["reason"].startswith("ZeroGPU gave no GPU: ")
    assert "press Resume" in refused["reason"]
    assert not out["unsloth_in_main_process"]  # its import fails under ZeroGPU's CUDA emulation
    assert out["queue_max_size"] == 256  # Gradio's ZeroGPU default of 1 would refuse the Train tab's ticks
    assert out["released"] == out["pieces_scheduled"] + 4  # Compare twice, the card's examples, the merge


def test_a_runs_gpu_quota_is_its_owners_and_is_forgotten_when_it_ends(tmp_path, monkeypatch):
    """Run ids are visible to all: another visitor's refused Resume must not make the run draw on their quota, and
    no visitor's request (it holds their token) outlives the run, also one stopped while queued."""
    import threading

    import pytest

    from garage import device
    from garage.errors import GarageError
    from garage.jobs.store import RunStore
    from garage.jobs.worker import Worker
    from tests.helpers import tiny_config

    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    started, release = threading.Event(), threading.Event()
    seen = []

    def execute(run, stop):
        seen.append(device.visitor_of(run.id))
        started.set()
        release.wait(30)

    worker = Worker(RunStore(tmp_path / "runs"), execute=execute)
    alice, bob, mallory = object(), object(), object()
    first = worker.submit(tiny_config("qa.jsonl"), "alice", request=alice)
    queued = worker.submit(tiny_config("qa.jsonl"), "bob", request=bob)
    assert started.wait(30)
    with pytest.raises(GarageError, match="another user"):
        worker.resume(first, "mallory", request=mallory)
    assert device.visitor_of(first) is alice and seen == [alice]
    worker.stop(queued, "bob")  # stopped before it started: it never runs
    release.set()
    assert worker.wait_idle(30)
    assert device.visitor_of(first) is None and device.visitor_of(queued) is None


def test_a_run_longer_than_a_days_zerogpu_quota_says_so_and_points_to_jobs():
    from garage.train.pieces import PieceResult
    from garage.train.runner import quota_notice
    from tests.helpers import tiny_config

    cfg = tiny_config("d")
    # 60-step pieces of SFT ask 90 s + 2.5 s a step: 1000 steps left are 17 pieces, about 67 minutes
    notice = quota_notice(cfg, PieceResult(False, False, step=60, total_steps=1060), 60)
    assert notice.startswith("This run needs about 67 more minutes of ZeroGPU time (1000 steps in 17 pieces)")
    assert "a PRO account 25 minutes, a free account 5 minutes a day" in notice and "hf-jobs" in notice
    assert quota_notice(cfg, PieceResult(False, False, step=60, total_steps=120), 60) is None  # 4 minutes: fits
