"""Training on Hugging Face Jobs, through the real huggingface_hub client against a local stand-in for the Hub and
its Jobs API (tests.fake_hub), which really runs each job's command in a process of its own: the job fetches its
inputs, installs the pinned requirements, trains with ``python -m garage job-train`` and pushes to the local Hub."""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from garage.data import gsm8k
from garage.errors import GarageError
from garage.infer.engine import Engine, GenSettings
from garage.jobs.store import RunStore
from garage.jobs.worker import Worker
from tests.conftest import ROOT
from tests.fake_hub import FakeHub
from tests.helpers import QA, conversations, go_online, tiny_config, wait_for, write_jsonl
from tests.test_browser import CHROMIUM, FLAGS

pytestmark = pytest.mark.slow

WRITE = "hf_" + secrets.token_hex(16)  # fresh per session: any copy of it found anywhere is a leak
READ = "hf_" + secrets.token_hex(16)
POOR = "hf_" + secrets.token_hex(16)  # a user without credits
# The stand-in's jobs run on this machine, which has no internet: libraries must not look for it (not
# TRANSFORMERS_OFFLINE: huggingface_hub reads it as HF_HUB_OFFLINE, and the job needs the Hub).
JOB_ENV = {"HF_DATASETS_OFFLINE": "1", "UNSLOTH_DISABLE_STATISTICS": "1",
           "TOKENIZERS_PARALLELISM": "false", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1",
           "HF_HUB_DISABLE_UPDATE_CHECK": "1"}


@pytest.fixture(scope="module")
def hub():
    server = FakeHub({WRITE: ("alice", "write"), READ: ("alice", "read"), POOR: ("bob", "write")},
                     no_credits={"bob"}, job_env=JOB_ENV).start()
    yield server
    server.stop()


@pytest.fixture
def online(hub, monkeypatch):
    go_online(monkeypatch, hub.url)
    monkeypatch.setenv("HF_TOKEN", WRITE)  # off a Space the saved token acts for the machine's user
    return hub


@pytest.fixture
def qa_file(tmp_path):
    return write_jsonl(tmp_path / "qa.jsonl", conversations())


def remote(data: Path, **overrides):
    return tiny_config(str(data), **{"run_on": "hf-jobs", "flavor": "cpu-basic", **overrides})


def leaks(hub, folder: Path) -> list[str]:
    """Every place the token shows up: the run folder, the job's spec (command, environment), the repos' files."""
    found = [str(p) for p in folder.rglob("*") if p.is_file() and WRITE.encode() in p.read_bytes()]
    for job_id, job in hub.jobs.items():
        spec = {k: v for k, v in job["spec"].items() if k != "secrets"}  # the secret itself travels as a secret
        if WRITE in json.dumps(spec):
            found.append(f"job {job_id} spec")
        if any(WRITE in line for line in job["log"]):
            found.append(f"job {job_id} log")
    for key, repo in hub.repos.items():
        found += [f"{key}/{path}" for path, data in repo["files"].items() if WRITE.encode() in data]
    return found


def test_a_run_on_jobs_trains_there_and_comes_back_as_a_local_run_would(online, qa_file, tmp_path, trained_run):
    worker = Worker(RunStore(tmp_path / "runs"))
    online.cut_log_streams = 3  # the log stream ends early, three times: it is opened again, nothing lost
    run = worker.store.get(worker.submit(remote(qa_file), "local", token=WRITE))
    job = run.status()["job"]
    assert job["flavor"] == "cpu-basic" and job["repo"] == f"alice/{run.id}"
    spec = online.job(job["id"])["spec"]
    assert spec["secrets"] and "HF_TOKEN" in spec["secrets"] and spec["flavor"] == "cpu-basic"
    assert spec["timeoutSeconds"] == job["limit_minutes"] * 60 == 30 * 60  # a tiny run: the 30-minute floor
    assert "Estimate: about" in run.log_tail(20) and job["estimate"]["usd"] >= 0
    assert worker.wait_idle(600), run.log_tail(40)
    status = run.status()
    assert status["state"] == "completed", (status.get("reason"), run.log_tail(60))

    # the loss curve is a local run's (same config, same seed, same rows)
    local = [m["loss"] for m in trained_run.metrics() if "loss" in m]
    mirrored = [m["loss"] for m in run.metrics() if "loss" in m]
    assert len(mirrored) == len(local) == 30
    assert all(abs(a - b) <= 1e-3 * max(1.0, abs(b)) for a, b in zip(mirrored, local)), (mirrored, local)
    assert status["step"] == status["total_steps"] == 30 and status["final_loss"] < 0.05

    # the trained weights came back: Compare's tuned model answers what it learned
    assert (run.adapter_dir / "adapter_config.json").exists()
    greedy = GenSettings(greedy=True, max_new_tokens=24)
    question, answer = QA[0]
    assert Engine().generate("tiny-gemma-3", [{"role": "user", "content": question}], greedy, run=run).text == answer

    # checkpoints went to the repo while it trained (one at a time); the finished repo holds the adapter at its root
    # and a model card, and no checkpoint; the run says where its model went
    assert "Could not push" not in run.log_tail(400)
    files = online.files(f"alice/{run.id}")
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(files)
    assert not any(p.startswith("checkpoints/") for p in files)
    assert b"base_model" not in files["README.md"] or b"garage-job" not in files["README.md"]
    assert any(f"alice/{run.id}" in p["url"] for p in status["pushed"])
    assert "python -m garage job-train" in " ".join(spec["command"]) and "Resuming" not in run.log_tail(200)
    assert online.cut_log_streams == 0 and "stream broke" not in run.log_tail(400)  # three cut, each reopened
    assert leaks(online, run.path) == []

    # weights that could not be fetched come again on Resume, from the repo: no second job trains them
    shutil.rmtree(run.adapter_dir)
    run.update(state="failed", reason="The job completed, but its weights could not be fetched")
    jobs = len(online.jobs)
    worker.resume(run.id, "local", token=WRITE)
    assert worker.wait_idle(60)
    assert run.status()["state"] == "completed" and len(online.jobs) == jobs
    assert (run.adapter_dir / "adapter_config.json").exists()


def test_stop_cancels_the_job_and_resume_goes_on_from_the_pushed_checkpoint(online, qa_file, tmp_path):
    worker = Worker(RunStore(tmp_path / "runs"))
    # 16 rows a step (4 passes of 4): slow enough on a CPU to stop it between two checkpoints
    cfg = remote(qa_file, max_steps=200, save_steps=5, learning_rate=1e-3, gradient_accumulation_steps=4,
                 batch_shaping=False)
    run = worker.store.get(worker.submit(cfg, "local", token=WRITE))
    wait_for(lambda: run.status().get("pushed_checkpoint") or run.status()["state"] not in ("queued", "running"),
             timeout=300, what="a pushed checkpoint")
    assert run.status()["state"] == "running", (run.status().get("reason"), run.log_tail(40))
    first = run.status()["job"]["id"]
    worker.stop(run.id, "local")
    wait_for(lambda: run.status()["state"] == "stopped", timeout=60, what="the run to stop")
    assert online.job(first)["stage"] == "CANCELED"
    pushed = run.status()["pushed_checkpoint"]
    step = int(pushed.rsplit("-", 1)[1])

    worker.resume(run.id, "local", token=WRITE)
    assert worker.wait_idle(600)
    status = run.status()
    assert status["state"] == "completed", (status.get("reason"), run.log_tail(60))
    assert status["job"]["id"] != first and f"Resuming from {pushed}" in run.log_tail(400)
    steps = [m["step"] for m in run.metrics() if "loss" in m]
    assert steps == list(range(1, 201)), "each step once: the resumed job goes on where the pushed checkpoint was"
    assert step >= 5
    assert leaks(online, run.path) == []


@pytest.mark.parametrize("job_ends_meanwhile", [False, True])
def test_an_app_restart_follows_the_job_again(online, qa_file, tmp_path, monkeypatch, job_ends_meanwhile):
    """The app (here the CLI, which follows a job the same way) dies while its job trains; the job goes on, and the
    next start of the app follows it again to the end (or finds it ended, and starts no new job): each step once in
    the curve, the weights back."""
    home = tmp_path / "home"
    config = tmp_path / "config.yaml"
    config.write_text(tiny_config(str(qa_file), max_steps=100, save_steps=50, gradient_accumulation_steps=4,
                                  batch_shaping=False).to_yaml())
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(GARAGE_HOME=str(home), HF_ENDPOINT=online.url, HF_TOKEN=WRITE, PYTHONPATH=str(ROOT))
    app = subprocess.Popen([sys.executable, "-m", "garage", "train", str(config), "--on", "hf-jobs", "--flavor",
                            "cpu-basic"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    try:
        runs = home / "runs"
        metrics = wait_for(lambda: next(runs.glob("*/metrics.jsonl"), None) if runs.exists() else None,
                           timeout=300, what="the first mirrored metrics")
        wait_for(lambda: metrics.read_text().count("\n") >= 5, timeout=120, what="a few steps")
    finally:
        app.kill()  # the app dies; the job does not
        app.wait()
    run_id = metrics.parent.name
    job = json.loads((metrics.parent / "status.json").read_text())["job"]
    assert online.job(job["id"])["stage"] == "RUNNING"
    if job_ends_meanwhile:
        wait_for(lambda: online.job(job["id"])["stage"] == "COMPLETED", timeout=300, what="the job to end")
    jobs = len(online.jobs)

    monkeypatch.setenv("GARAGE_HOME", str(home))
    worker = Worker(RunStore(runs))  # the app starts again
    assert worker.recovered == [run_id]
    assert worker.wait_idle(600)
    run = worker.store.get(run_id)
    status = run.status()
    assert status["state"] == "completed", (status.get("reason"), run.log_tail(60))
    assert f"following Hugging Face Job {job['id']} again" in run.log_tail(400) and len(online.jobs) == jobs
    assert [m["step"] for m in run.metrics() if "loss" in m] == list(range(1, 101))
    assert (run.adapter_dir / "adapter_config.json").exists() and leaks(online, run.path) == []


def test_on_a_shared_space_a_restart_leaves_the_job_to_its_owner(online, qa_file, tmp_path, monkeypatch):
    """The server's token never follows (or pays for) a visitor's job: after a restart the owner presses Resume."""
    store = RunStore(tmp_path / "runs")
    run = store.create(remote(qa_file), "hf-alice")
    run.update(state="running", job={"id": "0" * 24, "namespace": "alice", "flavor": "cpu-basic",
                                     "repo": "alice/x", "url": "u", "stage": "RUNNING", "lines": 0})
    monkeypatch.setenv("SPACE_ID", "me/garage")
    monkeypatch.delenv("GARAGE_SINGLE_USER", raising=False)
    worker = Worker(store)
    status = run.status()
    assert status["state"] == "interrupted" and "Press Resume (signed in)" in status["reason"]
    with pytest.raises(GarageError, match="may still be running"):  # deleting it would leave the job billing
        worker.delete(run.id, "hf-alice")


def test_a_stop_while_the_job_starts_cancels_the_job(online, qa_file, tmp_path, monkeypatch):
    from garage.jobs import hf_jobs

    worker = Worker(RunStore(tmp_path / "runs"))
    started = hf_jobs.start_job

    def start_then_stop(run, owner, token):  # the Stop click lands while the inputs upload and the job starts
        record = started(run, owner, token)
        worker.stop(run.id, owner)
        return record

    monkeypatch.setattr(hf_jobs, "start_job", start_then_stop)
    run = worker.store.get(worker.submit(remote(qa_file), "local", token=WRITE))
    assert worker.wait_idle(60)
    assert run.status()["state"] == "stopped"
    job = online.job(run.status()["job"]["id"])
    wait_for(lambda: job["stage"] == "CANCELED", timeout=30, what="the job to be cancelled")
    worker.delete(run.id, "local")  # its job is over: the run may go


def test_grpo_with_the_judge_runs_on_jobs_with_the_key_as_a_secret(online, tmp_path, monkeypatch):
    """The research recipe (GRPO, an LLM judge) on Jobs: the judge's key travels as a secret, never in a file."""
    from tests.fake_llm import FakeLLMServer
    from tests.test_grpo import grpo_config, judge_rule

    key = "test-key"
    data = write_jsonl(tmp_path / "math.jsonl", gsm8k.conversations("train", 4))
    with FakeLLMServer(valid_keys={key}) as llm:
        llm.rule = judge_rule
        monkeypatch.setenv("GEMINI_API_KEY", key)  # the server's key, which this machine's user may spend
        cfg = grpo_config(str(data), rewards=["judge", "format"], rubric="Shows its working, ends with the number.",
                          judge_model="gemini-test", judge_base_url=llm.url, run_on="hf-jobs", flavor="cpu-basic")
        worker = Worker(RunStore(tmp_path / "runs"))
        run = worker.store.get(worker.submit(cfg, "local", token=WRITE))
        assert worker.wait_idle(600)
        status = run.status()
        assert status["state"] == "completed", (status.get("reason"), run.log_tail(60))
        steps = [m for m in run.metrics() if "reward" in m]
        assert len(steps) == 2 and all(0.0 <= m["rewards/judge/mean"] <= 1.0 for m in steps)
        assert [r for r in llm.requests if "<rubric>" in r["prompt"]]  # the job's judge asked the LLM
    spec = online.job(status["job"]["id"])["spec"]
    assert set(spec["secrets"]) == {"HF_TOKEN", "GEMINI_API_KEY"} and key not in json.dumps(spec["environment"])
    assert not [p for p in run.path.rglob("*") if p.is_file() and key.encode() in p.read_bytes()]
    assert not any(key in line for line in online.job(status["job"]["id"])["log"])


def test_a_job_that_fails_says_why(online, tmp_path):
    long_prompt = "Please read this long question carefully before you answer it. " * 20
    data = write_jsonl(tmp_path / "long.jsonl", conversations([(long_prompt + q, a) for q, a in QA]))
    worker = Worker(RunStore(tmp_path / "runs"))
    run = worker.store.get(worker.submit(remote(data, max_seq_length=64, max_steps=2), "local", token=WRITE))
    assert worker.wait_idle(600)
    status = run.status()
    assert status["state"] == "failed"
    assert status["reason"].startswith(f"Hugging Face Job {status['job']['id']} on cpu-basic: Nothing to train on")


def test_refusals_start_nothing(online, qa_file, tmp_path, monkeypatch):
    worker, jobs = Worker(RunStore(tmp_path / "runs")), len(online.jobs)
    cases = [({"flavor": "h900x9"}, WRITE, "Unknown Jobs flavor 'h900x9'. Pick one of: cpu-basic"),
             ({"gpus": 4, "flavor": "a10g-small"}, WRITE,
              r"gpus is 4, and the flavor a10g-small has 1 GPU\(s\).*pick a flavor with several \(.*l4x4"),
             ({}, READ, "token is read-only"),
             ({}, POOR, "needs credits or a payment method"),
             ({}, "hf_" + "0" * 32, "refused your token")]
    for overrides, token, message in cases:
        with pytest.raises(GarageError, match=message) as caught:
            worker.submit(remote(qa_file, **overrides), "local", token=token)
        assert token not in str(caught.value)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-login"))  # no saved `hf auth login` either
    from garage.jobs import service

    monkeypatch.setattr(service, "get_worker", lambda: worker)
    with pytest.raises(GarageError, match="sign in with Hugging Face"):
        service.start_training(remote(qa_file), "local")
    monkeypatch.setenv("HF_TOKEN", WRITE)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # a machine kept offline
    with pytest.raises(GarageError, match=r"Training on Hugging Face Jobs needs the Hugging Face Hub.*run_on: here"):
        service.start_training(remote(qa_file), "local")
    assert worker.store.runs() == [] and len(online.jobs) == jobs


def test_the_command_line_names_the_flavors_and_their_prices(online, capsys):
    from garage.__main__ import main

    assert main(["flavors"]) == 0
    out = capsys.readouterr().out
    assert "a10g-small" in out and "/h" in out and WRITE not in out


def test_a_shared_spaces_llm_key_never_goes_into_a_visitors_job(qa_file, monkeypatch):
    from garage.jobs.hf_jobs import judge_secrets

    cfg = tiny_config(str(qa_file), method="grpo", rewards=["judge"], rubric="Correct.", run_on="hf-jobs")
    monkeypatch.setenv("GEMINI_API_KEY", "server-key-1234")
    monkeypatch.setenv("SPACE_ID", "me/garage")
    monkeypatch.setenv("SPACE_AUTHOR_NAME", "me")
    monkeypatch.setenv("GARAGE_SHARE_SERVER_KEYS", "1")  # shared with visitors, on the Space
    monkeypatch.delenv("GARAGE_SINGLE_USER", raising=False)
    with pytest.raises(GarageError, match="stays on the Space"):
        judge_secrets(cfg, "hf-bob")
    assert judge_secrets(cfg, "hf-me") == {"GEMINI_API_KEY": "server-key-1234"}  # the Space owner's own job
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with pytest.raises(GarageError, match="needs a Gemini key here"):  # before the job's paid setup, not after
        judge_secrets(cfg, "hf-me")


def test_the_estimate_scales_with_the_card_the_model_and_the_data():
    from garage.jobs.hf_jobs import estimate, time_limit

    rows = [{"messages": [{"role": "user", "content": "x" * 200}, {"role": "assistant", "content": "y" * 150}]}] * 1000
    cfg = tiny_config("d", model="gemma-3-1b-it", num_train_epochs=3, max_seq_length=1024)
    a10g = {"name": "a10g-small", "gpu": "A10G", "usd_per_hour": 1.0, "cpus": 4}
    h200 = {"name": "h200", "gpu": "H200", "usd_per_hour": 5.0, "cpus": 23}
    slow, fast = estimate(cfg, rows, a10g), estimate(cfg, rows, h200)
    assert slow["tokens"] == fast["tokens"] == 3 * 1000 * (len(json.dumps(rows[0])) // 4)
    assert fast["tokens_per_second"] == 4816 and slow["tokens_per_second"] == round(4816 * 125 / 989)
    assert slow["minutes"] == round((300 + slow["tokens"] / (4816 * 125 / 989)) / 60, 1)
    assert slow["usd"] == round(slow["minutes"] / 60, 2) and "rough" in slow["basis"]
    bigger = estimate(tiny_config("d", model="gemma-3-4b-it", num_train_epochs=3), rows, h200)
    assert bigger["tokens_per_second"] < fast["tokens_per_second"]
    assert time_limit(cfg, slow) == math.ceil(slow["minutes"] * 2 + 15) > 30  # twice the estimate, and a margin
    assert time_limit(tiny_config("d", job_timeout_minutes=90), slow) == 90
    # a flavor with several GPUs trains on all of them (GRPO on one): faster, and said how
    l4x1 = {"name": "l4x1", "gpu": "L4", "gpus": 1, "usd_per_hour": 0.8, "cpus": 8}
    l4x4 = {"name": "l4x4", "gpu": "L4", "gpus": 4, "usd_per_hour": 3.8, "cpus": 48}
    one, four = estimate(cfg, rows, l4x1), estimate(cfg, rows, l4x4)
    assert four["tokens_per_second"] == round(one["tokens_per_second"] * 4 * 0.85) and "x4 GPUs" in four["basis"]
    grpo = tiny_config("d", model="gemma-3-1b-it", method="grpo", rewards=["length"])
    assert estimate(grpo, rows, l4x4)["tokens_per_second"] == estimate(grpo, rows, l4x1)["tokens_per_second"]



@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_the_train_tab_runs_on_jobs_live_and_after_a_reload(hub, tmp_path):
    """A person picks Hugging Face Jobs in the Train tab: the flavors and prices, the run's job, its live curve."""
    from gradio_client import Client, handle_file
    from playwright.sync_api import expect, sync_playwright

    from tests.app_server import AppServer

    app = AppServer(tmp_path / "home", HF_HUB_OFFLINE="0", HF_ENDPOINT=hub.url, HF_TOKEN=WRITE).start()
    try:
        data = write_jsonl(tmp_path / "qa.jsonl", conversations())
        Client(app.url, verbose=False).predict(handle_file(str(data)), "", "", "train", "", "", "", "jobs-qa", True,
                                               api_name="/save_dataset")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(app.url)
            page.get_by_role("tab", name="Train").click()
            expect(page.get_by_label("dataset", exact=True)).to_have_value("jobs-qa", timeout=30_000)
            page.get_by_label("Total steps (overrides passes)", exact=True).fill("12")
            page.get_by_text("Where it trains (several GPUs, Hugging Face Jobs)").click()
            page.get_by_label("Where it trains", exact=True).click()
            page.get_by_role("option", name="hf-jobs").click()
            page.get_by_label("Jobs hardware").fill("cpu-basic")
            flavors = page.locator("#jobs-flavors")
            expect(flavors).to_contain_text("$0.01 an hour", timeout=20_000)
            expect(flavors).to_contain_text("a10g-small")
            page.get_by_role("button", name="Start training").click()
            expect(page.locator(".toast-body").filter(has_text="queued")).to_be_visible(timeout=60_000)
            run_id = page.get_by_label("Run", exact=True).input_value()
            expect(page.get_by_text("On Hugging Face Jobs").first).to_be_visible(timeout=20_000)
            expect(page.get_by_text(f"{run_id} · completed").first).to_be_visible(timeout=240_000)
            expect(page.locator("#loss-plot g.mark-line path[stroke]").first).to_be_visible(timeout=15_000)
            page.reload()  # a reload finds the run, its job and its curve
            page.get_by_role("tab", name="Train").click()
            expect(page.get_by_text(f"{run_id} · completed").first).to_be_visible(timeout=30_000)
            expect(page.get_by_text("On Hugging Face Jobs").first).to_be_visible()
            expect(page.locator("#loss-plot g.mark-line path[stroke]").first).to_be_visible(timeout=15_000)
            page.screenshot(path="/tmp/garage_train_jobs.png", full_page=True)
            browser.close()
    finally:
        app.stop()
    assert WRITE not in (tmp_path / "home" / "app.log").read_text()
    assert leaks(hub, tmp_path / "home") == []
