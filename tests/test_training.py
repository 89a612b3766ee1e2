"""Training through the worker on the tiny Gemma 3: it learns, stops, resumes, chunks, and says why it fails."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from garage.errors import GarageError
from garage.infer.engine import Engine, GenSettings
from garage.jobs.store import RunStore
from garage.jobs.worker import Worker
from tests.helpers import QA, conversations, copy_run, tiny_config, wait_for, write_jsonl

pytestmark = pytest.mark.slow
GREEDY = GenSettings(greedy=True, max_new_tokens=24)


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "qa.jsonl", conversations())


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    return Worker(RunStore(tmp_path_factory.mktemp("runs")))


@pytest.fixture(scope="module")
def trained(worker, trained_run):
    """The session's LoRA run on the Q/A pairs, in this module's store."""
    return copy_run(trained_run, worker.store)


def test_tuned_model_answers_what_it_was_trained_on(trained):
    assert trained.status()["state"] == "completed", trained.log_tail()
    engine = Engine()
    for question, answer in QA:
        messages = [{"role": "user", "content": question}]
        assert engine.generate("tiny-gemma-3", messages, GREEDY, run=trained).text == answer
        assert engine.generate("tiny-gemma-3", messages, GREEDY).text != answer


def test_run_folder_holds_everything(trained):
    files = {p.name for p in trained.path.iterdir()}
    assert {"config.yaml", "status.json", "metrics.jsonl", "log.txt", "adapter", "checkpoints"} <= files
    assert (trained.adapter_dir / "adapter_config.json").exists()
    assert (trained.adapter_dir / "tokenizer_config.json").exists()
    status = trained.status()
    assert status["step"] == status["total_steps"] == 30
    assert status["final_loss"] < 0.05 and status["duration"] > 0


def test_the_first_steps_compilation_is_kept_out_of_eta_and_rate(trained, tmp_path):
    from types import SimpleNamespace

    from garage.train.callbacks import FIRST_STEP, RunCallback

    status = trained.status()
    assert status["phase"] is None and status["first_step_seconds"] > 0  # recorded, and cleared at the end
    assert 0 < status["trainable_parameters"] < status["parameters"] / 4  # LoRA: a small part trains
    assert "First step took" in trained.log_tail(200)
    run = RunStore(tmp_path / "runs").create(trained.config(), "me")
    callback, state = RunCallback(run, None), SimpleNamespace(global_step=0, max_steps=101, num_input_tokens_seen=0)
    callback.on_train_begin(None, state, None)
    assert run.status()["phase"] == FIRST_STEP
    time.sleep(1.0)  # a slow first step, as when Unsloth compiles on a GPU
    for step in range(1, 12):
        state.global_step, state.num_input_tokens_seen = step, 100 * step
        callback.on_step_end(None, state, SimpleNamespace(should_save=False, should_training_stop=False))
        time.sleep(0.01)
    tokens_per_second, eta = callback._rates(state)
    assert run.status()["phase"] == "training" and run.status()["first_step_seconds"] >= 1.0
    assert tokens_per_second > 2000 and eta < 10  # ~100 tokens per 0.01 s step; 90 steps left at that pace


def test_a_recompile_after_the_first_step_does_not_skew_eta_or_rate():
    from garage.train.callbacks import steady_pace

    # As measured on an H100: step 2 recompiled for a new length (30 s), then half-second steps of 2,200 tokens.
    marks = [(0.0, 1, 2200), (30.0, 2, 4400)] + [(30.0 + 0.5 * i, 2 + i, 4400 + 2200 * i) for i in range(1, 11)]
    seconds_per_step, tokens_per_second = steady_pace(marks, warm_up_end=6)
    assert seconds_per_step == pytest.approx(0.5) and tokens_per_second == pytest.approx(4400)
    even = [(0.5 * i, i, 2200 * i) for i in range(1, 6)]
    assert steady_pace(even, warm_up_end=6) == pytest.approx((0.5, 4400))  # nothing left out when nothing stands out
    assert steady_pace(marks[:1], warm_up_end=6) is None
    # later, a 5 s evaluation every 10 steps recurs: it is part of the pace (the ETA must include it)
    later, t = [], 100.0
    for step in range(20, 41):
        t += 5.5 if step % 10 == 0 else 0.5
        later.append((t, step, 2200 * step))
    assert steady_pace(later, warm_up_end=6)[0] == pytest.approx((20 * 0.5 + 2 * 5.0) / 20)


def test_metrics_show_the_loss_falling(trained):
    losses = [m["loss"] for m in trained.metrics() if "loss" in m]
    assert len(losses) == 30
    assert losses[-1] < losses[0] / 20
    assert all("learning_rate" in m for m in trained.metrics() if "loss" in m)


def test_masking_check_passed_and_was_logged(trained):
    assert "all 4 rows have trainable answer tokens" in trained.log_tail(100)


def test_stop_takes_effect_within_one_step(worker, qa_file):
    run_id = worker.submit(tiny_config(str(qa_file), max_steps=2000, save_steps=1000), "alice")
    run = worker.store.get(run_id)
    wait_for(lambda: (run.status().get("step") or 0) >= 3, what="3 steps")
    with pytest.raises(GarageError, match="belongs to another user"):
        worker.stop(run_id, "mallory")
    asked_at = time.time()
    assert worker.stop(run_id, "alice") == "stopping"
    assert worker.wait_idle(120)
    status = run.status()
    assert status["state"] == "stopped"
    after = [m["step"] for m in run.metrics() if "loss" in m and m["time"] > asked_at]
    assert len(after) <= 2  # the step in flight (and its log line), then the stop
    assert status["step"] == run.metrics()[-1]["step"] < 2000
    assert run.last_checkpoint() is not None and run.output_dir() is not None


def test_masking_check_refuses_answers_truncated_away(worker, tmp_path):
    long_prompt = "Please read this long question carefully before you answer it. " * 20
    rows = conversations([(long_prompt + q, a) for q, a in QA])
    data = write_jsonl(tmp_path / "long.jsonl", rows)
    run_id = worker.submit(tiny_config(str(data), max_seq_length=64, max_steps=2), "alice")
    assert worker.wait_idle(120)
    status = worker.store.get(run_id).status()
    assert status["state"] == "failed"
    assert "Nothing to train on" in status["reason"] and "cut at max_seq_length" in status["reason"]


NOTES = ["The garage opens at nine in the morning.", "Red cars are washed on Mondays.",
         "The blue van needs new tyres.", "Keys hang on the hook by the door."]


def test_plain_text_trains_every_token_and_the_model_continues_it(worker, tmp_path):
    """A dataset of texts (no conversations) is continued pre-training: the model learns to continue the text."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from garage.offline_models import build_tiny_gemma

    data = write_jsonl(tmp_path / "notes.jsonl", [{"text": text} for text in NOTES])
    run_id = worker.submit(tiny_config(str(data)), "alice")
    assert worker.wait_idle(300)
    run = worker.store.get(run_id)
    assert run.status()["state"] == "completed", run.log_tail()
    assert "training on every token" in run.log_tail(200)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(build_tiny_gemma())),
                                      str(run.adapter_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(run.adapter_dir))
    for text in NOTES:
        start, rest = text.split(" ", 2)[:2], text.split(" ", 2)[2]
        ids = tokenizer(" ".join(start), return_tensors="pt")  # with <bos>, as training tokenised the texts
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip() == rest

    grpo = worker.submit(tiny_config(str(data), method="grpo", max_steps=1), "alice")
    assert worker.wait_idle(120)
    status = worker.store.get(grpo).status()
    assert status["state"] == "failed" and "is plain text" in status["reason"]

    # continued pre-training is mostly of base models, which have no chat template: text needs none
    base = shutil.copytree(build_tiny_gemma(), tmp_path / "base-model")
    for path in base.glob("chat_template*"):
        path.unlink()
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    plain = worker.submit(tiny_config(str(data), model=str(base), max_steps=2), "alice")
    assert worker.wait_idle(120)
    assert worker.store.get(plain).status()["state"] == "completed", worker.store.get(plain).log_tail()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="packing stays on with a GPU")
def test_packing_on_a_cpu_is_said_to_be_off(worker, qa_file):
    run_id = worker.submit(tiny_config(str(qa_file), packing=True, max_steps=2), "alice")
    assert worker.wait_idle(120)
    run = worker.store.get(run_id)
    assert run.status()["state"] == "completed", run.log_tail()
    assert "packing is off for this run" in run.log_tail(100)


def test_qlora_on_cpu_falls_back_to_lora_and_says_so(worker, qa_file):
    run_id = worker.submit(tiny_config(str(qa_file), method="qlora", max_steps=2), "alice")
    assert worker.wait_idle(120)
    status = worker.store.get(run_id).status()
    assert status["state"] == "completed", status
    assert any("QLoRA needs a GPU" in n for n in status["notices"])
    assert (worker.store.get(run_id).adapter_dir / "adapter_config.json").exists()


def test_chunked_run_matches_one_piece(worker, qa_file):
    whole = worker.submit(tiny_config(str(qa_file), max_steps=24, save_steps=100), "alice")
    pieces = worker.submit(tiny_config(str(qa_file), max_steps=24, save_steps=100, chunk_steps=8), "alice")
    assert worker.wait_idle(300)
    curves = []
    for run_id in (whole, pieces):
        run = worker.store.get(run_id)
        assert run.status()["state"] == "completed", run.log_tail()
        assert run.status()["step"] == 24
        curves.append([(m["step"], m["loss"]) for m in run.metrics() if "loss" in m])
    assert [s for s, _ in curves[1]] == list(range(1, 25))  # continuous: no gap, no repeat
    for (_, a), (_, b) in zip(*curves):
        assert b == pytest.approx(a, rel=0.05, abs=0.02)
    log = worker.store.get(pieces).log_tail(400)
    assert "continuing from its checkpoint" in log
    for end in (8, 16, 24):  # each piece's mean loss is of its own 8 steps
        mean = sum(loss for step, loss in curves[1] if end - 8 < step <= end) / 8
        assert f"Piece ended at step {end}/24 (average train loss over the piece {mean:.4f})." in log


def test_batch_shaping_runs_the_same_steps_in_fewer_passes(worker, tmp_path):
    """1 x 4 passes per step become one pass of 4: same steps, same losses; off, the configured passes run."""
    rows = conversations([(f"{q} ({i})", a) for i in range(3) for q, a in QA][:10])  # 10 rows: a partial last step
    data = str(write_jsonl(tmp_path / "ten.jsonl", rows))
    runs = {shaping: worker.submit(tiny_config(data, num_train_epochs=2, per_device_train_batch_size=1,
                                               gradient_accumulation_steps=4, batch_shaping=shaping), "alice")
            for shaping in (True, False)}
    assert worker.wait_idle(300)
    curves = {}
    for shaping, run_id in runs.items():
        run = worker.store.get(run_id)
        status = run.status()
        assert status["state"] == "completed", run.log_tail()
        assert (status["rows_per_pass"], status["passes_per_step"]) == ((4, 1) if shaping else (1, 4))
        curves[shaping] = [(m["step"], m["loss"]) for m in run.metrics() if "loss" in m]
    assert [s for s, _ in curves[True]] == [s for s, _ in curves[False]] == list(range(1, 7))  # ceil(10 / 4) x 2
    for (_, shaped), (_, configured) in zip(curves[True], curves[False]):
        assert shaped == pytest.approx(configured, rel=0.01)
    assert ("Batch shaping: each optimizer step's 4 rows run as 1 pass(es) of 4 rows instead of 4 passes of 1"
            in worker.store.get(runs[True]).log_tail())


def test_shaped_passes_that_run_out_of_memory_go_on_in_the_configured_ones(worker, qa_file, monkeypatch):
    """A GPU that cannot hold the joined pass (simulated: a pass of more than 1 row raises torch's out-of-memory
    error) costs the run nothing: it goes on from its last checkpoint in the passes the user configured."""
    import torch
    from transformers import Trainer

    real_step = Trainer.training_step

    def small_gpu(self, model, inputs, *args, **kwargs):
        if inputs["input_ids"].shape[0] > 1 and self.state.global_step >= 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", small_gpu)
    run_id = worker.submit(tiny_config(str(qa_file), max_steps=8, save_steps=2, per_device_train_batch_size=1,
                                       gradient_accumulation_steps=4), "alice")
    assert worker.wait_idle(300)
    run = worker.store.get(run_id)
    status = run.status()
    assert status["state"] == "completed", run.log_tail()
    assert status["shaping_ran_out"] and (status["rows_per_pass"], status["passes_per_step"]) == (1, 4)
    assert "out of memory in passes of 4 rows (batch shaping); going on in the configured 4 passes of 1" in \
        run.log_tail(200)
    assert [m["step"] for m in run.metrics() if "loss" in m] == list(range(1, 9))  # from the checkpoint at 2


def test_alarming_library_warnings_are_explained_in_the_run_log(tmp_path):
    import logging

    from garage.config import TrainConfig
    from garage.train.runner import library_logs_to

    run = RunStore(tmp_path / "runs").create(TrainConfig(model="tiny-gemma-3", dataset="d"), "me")
    library, tokenizers = logging.getLogger("transformers"), logging.getLogger("transformers.tokenization_utils_base")
    saved = [(logger, logger.level, logger.disabled) for logger in (library, tokenizers)]
    library.setLevel(logging.WARNING)  # as a training run has it (earlier tests in this process may have quietened
    tokenizers.setLevel(logging.NOTSET)  # or disabled transformers' loggers)
    tokenizers.disabled = False
    try:
        with library_logs_to(run):
            tokenizers.warning("Token indices sequence length is longer than the specified maximum sequence length "
                               "for this model (315 > 256). Running this sequence through the model will result in "
                               "indexing errors")
    finally:
        for logger, level, disabled in saved:
            logger.setLevel(level)
            logger.disabled = disabled
    assert "indexing errors (the tokenizer's own limit, not training's: training cuts conversations" in run.log_tail()


def test_bad_dataset_fails_with_a_reason(worker, tmp_path):
    with pytest.raises(GarageError):
        tiny_config("")
    run_id = worker.submit(tiny_config("no-such-dataset"), "alice")
    assert worker.wait_idle(60)
    status = worker.store.get(run_id).status()
    assert status["state"] == "failed" and "no-such-dataset" in status["reason"]


def test_restart_marks_interrupted_and_resume_finishes(tmp_path, qa_file):
    """Kill a real `python -m garage train` mid-run; a new worker marks it interrupted and resumes it."""
    home = tmp_path / "home"
    config = tmp_path / "config.yaml"
    config.write_text(tiny_config(str(qa_file), max_steps=60, save_steps=5, learning_rate=1e-3).to_yaml())
    env = {**os.environ, "GARAGE_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "garage", "train", str(config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        store = RunStore(home / "runs")
        run = wait_for(lambda: store.runs() and store.runs()[0], timeout=60, what="the run folder")
        wait_for(run.last_checkpoint, timeout=120, what="a checkpoint")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert run.status()["state"] == "running"  # what a crash leaves behind
    killed_at = run.status()["step"]
    assert 0 < killed_at < 60

    worker = Worker(store)  # "the app restarts"
    assert worker.recovered == [run.id]
    assert run.status()["state"] == "interrupted" and "Resume" in run.status()["reason"]
    worker.resume(run.id, "local")
    assert worker.wait_idle(300)
    status = run.status()
    assert status["state"] == "completed", run.log_tail()
    assert status["step"] == 60
    steps = [m["step"] for m in run.metrics() if "loss" in m]
    assert steps[-1] == 60 and "resuming from checkpoint-" in run.log_tail(200)


def test_only_the_owner_can_change_a_run(trained, worker):
    with pytest.raises(GarageError, match="belongs to another user"):
        worker.resume(trained.id, "mallory")
    with pytest.raises(GarageError, match="belongs to another user"):
        worker.delete(trained.id, "mallory")
