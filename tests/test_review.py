"""Regressions found in review: the worker's states and races, user separation, resume, the Compare engine."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import gradio as gr
import pytest

from garage.errors import GarageError
from garage.jobs import worker as worker_module
from garage.jobs.store import RunStore
from garage.jobs.worker import Worker
from tests.helpers import conversations, tiny_config, wait_for, write_jsonl

ANON_ID = "0f8e2a9c-1d2b-4c3d-8e9f-a0b1c2d3e4f5"


@pytest.fixture
def qa_file(tmp_path):
    return write_jsonl(tmp_path / "qa.jsonl", conversations())


def _shared_space(monkeypatch):
    monkeypatch.setenv("SPACE_ID", "me/garage")
    monkeypatch.delenv("GARAGE_SINGLE_USER", raising=False)


def _app_worker(monkeypatch, tmp_path, execute):
    worker = Worker(RunStore(tmp_path / "runs"), execute=execute)
    monkeypatch.setattr(worker_module, "_worker", worker)
    return worker


# --- the worker --------------------------------------------------------------------------------

def test_the_worker_survives_a_job_that_raises(tmp_path, qa_file):
    def execute(run, stop_event):
        if run.config().seed == 1:
            raise RuntimeError("a bug outside the runner's own handling")
        run.update(state="completed")

    worker = Worker(RunStore(tmp_path / "runs"), execute=execute)
    broken = worker.submit(tiny_config(str(qa_file), seed=1), "alice")
    fine = worker.submit(tiny_config(str(qa_file), seed=2), "alice")
    assert worker.wait_idle(20), "the worker thread died: later runs stay queued forever"
    status = worker.store.get(broken).status()
    assert status["state"] == "failed" and "RuntimeError" in status["reason"]
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


# --- user separation ---------------------------------------------------------------------------

def test_nobody_learns_an_anonymous_owners_browser_id(tmp_path, qa_file, monkeypatch):
    """The anonymous id is the cookie that identifies its browser: whoever knows it acts as that user."""
    from garage.jobs import service

    worker = _app_worker(monkeypatch, tmp_path, lambda run, stop_event: run.update(state="completed"))
    run_id = worker.submit(tiny_config(str(qa_file)), f"anon-{ANON_ID}")
    assert worker.wait_idle(20)
    assert ANON_ID not in json.dumps(service.training_status(run_id))
    assert ANON_ID not in worker.store.get(run_id).log_tail(100)
    assert ANON_ID not in json.dumps(service.list_runs("someone-else"))


def test_signing_in_on_a_single_user_machine_keeps_the_same_workspace(monkeypatch):
    from garage.ui.session import user_of

    request, ada = SimpleNamespace(headers={}, session_hash="s"), SimpleNamespace(username="ada")
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert user_of(request, ada) == user_of(request) == "local"  # runs started before signing in stay theirs
    monkeypatch.setenv("SPACE_ID", "me/garage")
    monkeypatch.setenv("GARAGE_SINGLE_USER", "1")
    assert user_of(request, ada) == user_of(request) == "local"
    monkeypatch.delenv("GARAGE_SINGLE_USER")
    assert user_of(request, ada) == "hf-ada"


def test_a_shared_space_trains_only_on_the_callers_own_datasets(tmp_path, monkeypatch):
    from garage.data import store
    from garage.data.rows import dataset_rows as load_conversations
    from garage.jobs import service
    from garage.ui import data_tab

    _shared_space(monkeypatch)
    _app_worker(monkeypatch, tmp_path, lambda run, stop_event: None)
    store.save_dataset("hf-alice", "private-notes", conversations(), overwrite=True)
    alices_file = str(store.dataset_path("hf-alice", "private-notes"))
    with pytest.raises(GarageError, match="No saved dataset named"):
        service.start_training({"model": "tiny-gemma-3", "dataset": alices_file}, "hf-mallory")
    with pytest.raises(GarageError, match="No saved dataset named"):  # the runner's, evaluate's and GRPO's way in
        load_conversations("hf-mallory", alices_file)
    with pytest.raises(GarageError, match="not a Hub dataset id"):  # the Data tab's Hub id box
        data_tab._source(None, alices_file)
    assert len(load_conversations("hf-alice", "private-notes")) == 4
    monkeypatch.setenv("GARAGE_SINGLE_USER", "1")  # one user's own machine or Space: any file may be named
    assert len(load_conversations("local", alices_file)) == 4


def test_only_the_owner_sees_a_runs_rows_in_eval_examples_and_evaluate(tmp_path, qa_file, monkeypatch):
    from garage.ui import compare_tab

    _shared_space(monkeypatch)
    worker = _app_worker(monkeypatch, tmp_path, lambda run, stop_event: run.update(state="completed"))
    run_id = worker.submit(tiny_config(str(qa_file)), "hf-alice")
    assert worker.wait_idle(20)
    mallory = SimpleNamespace(username="mallory")
    request = SimpleNamespace(headers={}, session_hash="s")
    with pytest.raises(GarageError, match="another user"):
        compare_tab.eval_examples(run_id, 2, request, mallory)
    with pytest.raises(GarageError, match="another user"):
        compare_tab.evaluate(run_id, "", 2, request, mallory)
    assert not (worker.store.get(run_id).path / "evaluation.json").exists()


def test_a_shared_space_takes_models_by_name_never_a_server_folder(tmp_path, qa_file, monkeypatch):
    """A visitor could name another user's run folder (its adapter, a checkpoint) as the base model and download
    the copy as their own, or load any server folder; models are named, never paths, on a shared Space."""
    from garage import access
    from garage.llm import LocalBackend
    from garage.jobs import service
    from garage.ui import compare_tab

    _shared_space(monkeypatch)
    worker = _app_worker(monkeypatch, tmp_path, lambda run, stop_event: run.update(state="completed"))
    alices = worker.store.get(worker.submit(tiny_config(str(qa_file)), "hf-alice"))
    assert worker.wait_idle(20)
    mallory = SimpleNamespace(username="mallory")
    request = SimpleNamespace(headers={}, session_hash="s")
    refusal = "not a folder on the server"
    for folder in (str(alices.path / "adapter"), str(alices.path), "/etc", "../runs", "./x", "~/models", "a/b/c"):
        with pytest.raises(GarageError, match=refusal):
            service.start_training({"model": folder, "dataset": "notes"}, "hf-mallory")
    with pytest.raises(GarageError, match=refusal):  # evaluating a "model" that is a folder
        compare_tab.evaluate(str(alices.path / "adapter"), "gsm8k", 2, request, mallory)
    with pytest.raises(GarageError, match="only the built-in test model"):  # Documents -> Q/A's local backend
        LocalBackend(str(alices.path))
    for name in ("tiny-gemma-3", "gemma-3-1b-it", "google/gemma-3-270m-it"):
        access.refuse_server_folder(name)  # names pass
    monkeypatch.setenv("GARAGE_SINGLE_USER", "1")  # one person's own Space or machine: folders are theirs
    access.refuse_server_folder(str(alices.path / "adapter"))


def test_on_a_shared_space_a_runs_private_parts_are_its_owners(tmp_path, qa_file, monkeypatch):
    """Anyone may watch a run's progress; its answers (it recites its training rows), dataset name, files and the
    repos it went to are its owner's."""
    from garage.jobs import service
    from garage.ui import compare_tab

    _shared_space(monkeypatch)
    worker = _app_worker(monkeypatch, tmp_path, lambda run, stop_event: run.update(state="completed"))
    run = worker.store.get(worker.submit(tiny_config(str(qa_file)), "hf-alice"))
    assert worker.wait_idle(20)
    run.adapter_dir.mkdir()  # it saved weights (the pickers list runs that have them)
    (run.adapter_dir / "adapter_config.json").write_text("{}")
    run.update(pushed=[{"url": "https://huggingface.co/alice/secret-model", "what": "adapter"}],
               reason="none of the 10 rows of 'alice-medical-notes' states a number",
               notices=["The evaluation after training failed: No saved dataset named alice-private-eval"])
    theirs, own = service.training_status(run.id, "hf-mallory"), service.training_status(run.id, "hf-alice")
    assert theirs["state"] == own["state"] == "completed"  # progress is anyone's to watch
    assert (theirs["dataset"], theirs["command"], theirs["pushed"]) == (service.OWNERS_ONLY, None, [])
    assert not any(secret in json.dumps(theirs) for secret in ("medical", "private-eval", "secret-model"))
    assert "alice-medical-notes" in own["reason"] and own["notices"]
    assert own["dataset"] == str(qa_file) and "python -m garage train" in own["command"] and own["pushed"]
    rows = {owner: next(r for r in service.list_runs(owner) if r["id"] == run.id) for owner in ("hf-mallory",
                                                                                               "hf-alice")}
    assert rows["hf-mallory"]["dataset"] == service.OWNERS_ONLY and rows["hf-alice"]["dataset"] == str(qa_file)
    mallory = SimpleNamespace(username="mallory")
    request = SimpleNamespace(headers={}, session_hash="s")
    with pytest.raises(GarageError, match="another user"):
        compare_tab.chat_compare("What is secret 3?", run.id, request=request, profile=mallory)
    with pytest.raises(gr.Error, match="another user"):
        next(compare_tab.compare_stream("What is secret 3?", run.id, "", [], [], 8, 1.0, 0.95, 64, 1.0, True, 0,
                                        request, mallory))
    assert run.id not in [value for _, value in compare_tab._completed_runs(request, mallory)]
    monkeypatch.delenv("SPACE_ID")  # off a Space everything is the machine's one user's (the CLI's runs too)
    assert service.training_status(run.id, "local")["dataset"] == str(qa_file)
    assert run.id in [value for _, value in compare_tab._completed_runs(request, None)]


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


# --- the Compare engine ------------------------------------------------------------------------

def _adapter(run, seed: int, strong: bool) -> None:
    """A LoRA adapter for the tiny model: zero (the base's answers) or strong random weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from garage.models.loading import model_source

    torch.manual_seed(seed)
    source = model_source("tiny-gemma-3")
    model = AutoModelForCausalLM.from_pretrained(source)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=8, target_modules=["lm_head"]))
    if strong:  # the random tiny model answers whitespace whatever its layers do: shift the logits themselves
        with torch.no_grad():
            for name, param in peft.named_parameters():
                if "lora_" in name:
                    param.normal_(0.0, 2.0)
    peft.save_pretrained(str(run.adapter_dir))
    AutoTokenizer.from_pretrained(source).save_pretrained(str(run.adapter_dir))


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory):
    """A completed run whose model name has a dot (as Qwen2.5, SmolLM2-1.7B or a local folder can)."""
    from garage.config import TrainConfig

    folder = tmp_path_factory.mktemp("engine")
    data = write_jsonl(folder / "qa.jsonl", conversations())
    store = RunStore(folder / "runs")
    run = store.create(TrainConfig(model="tiny-gemma-3", dataset=str(data)), "local")
    run.path.rename(run.path.with_name(run.id + ".v1.5"))
    run = store.get(run.id + ".v1.5")
    run.update(id=run.id, state="completed")
    _adapter(run, 0, strong=False)
    return run


MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def test_a_stream_closed_from_another_thread_frees_the_engine():
    """Gradio runs each next() of a stream on a worker thread and closes it (Stop) from the event loop."""
    from garage.infer.engine import Engine, GenSettings

    engine = Engine()
    stream = engine.stream_pair("tiny-gemma-3", MESSAGES, GenSettings(greedy=True, max_new_tokens=64))
    with ThreadPoolExecutor(1) as pool:
        pool.submit(next, stream).result(timeout=60)
    stream.close()
    answered = threading.Event()

    def chat():
        engine.generate("tiny-gemma-3", MESSAGES, GenSettings(greedy=True, max_new_tokens=2))
        answered.set()

    threading.Thread(target=chat, daemon=True).start()
    assert answered.wait(60), "the engine's lock stayed held: every later chat waits forever"


def test_compare_uses_the_adapter_on_disk_now_not_the_one_it_loaded_first(engine_run):
    """A stopped run is compared, then resumed and completed: Compare must show the new weights."""
    from garage.infer.engine import Engine, GenSettings

    greedy = GenSettings(greedy=True, max_new_tokens=12)
    engine = Engine()

    def answer(engine, run=None):
        reply = engine.generate("tiny-gemma-3", MESSAGES, greedy, run=run)
        return reply.text, reply.tokens

    base = answer(engine)
    assert answer(engine, engine_run) == base  # the zero adapter answers as the base does
    _adapter(engine_run, 1, strong=True)  # the resumed run saved new weights
    fresh = answer(Engine(), engine_run)
    assert fresh != base
    assert answer(engine, engine_run) == fresh
    assert len(engine._current.adapters) == 1  # the old weights were let go
    import shutil

    copy = shutil.copytree(engine_run.path, engine_run.path.with_name("copy-of-run"))
    answer(engine, RunStore(copy.parent).get(copy.name))
    assert len(engine._current.adapters) == 2
    shutil.rmtree(copy)  # the run is deleted while Compare holds its adapter
    answer(engine, engine_run)
    assert list(engine._current.adapters) == [engine_run.id]


def test_compare_formats_a_pretrained_models_chat_as_its_training_did(tmp_path, monkeypatch):
    """A base model without a chat template (gemma-3-*-pt) trains with the catalogue's; Compare must use it too."""
    import shutil

    from garage.infer import engine as engine_module
    from garage.infer.engine import Engine, GenSettings
    from garage.models import loading

    folder = shutil.copytree(loading.model_source("tiny-gemma-3"), tmp_path / "pt")
    for path in folder.glob("chat_template*"):
        path.unlink()
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    for module in (loading, engine_module):  # the engine names the loader's function as its own
        monkeypatch.setattr(module, "model_source", lambda name: str(folder))
    assert loading.load_model("gemma-3-270m-pt", log=lambda message: None).tokenizer.chat_template  # training's
    answer = Engine().generate("gemma-3-270m-pt", MESSAGES, GenSettings(greedy=True, max_new_tokens=2))
    assert answer.tokens > 0


def test_a_multimodal_gemma_adapter_is_applied_in_compare(tmp_path, monkeypatch):
    """Gemma 3 4B+, 3n and 4 are *ForConditionalGeneration: the Engine (AutoModelForCausalLM) must load the model
    with the module layout training used, or PEFT drops the adapter's weights and "tuned" answers as the base.
    (On CPU Unsloth loads the full model as the Engine does; on a GPU its text-only path differs: run this there.)"""
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    from garage.config import TrainConfig
    from garage.infer import engine as engine_module
    from garage.infer.engine import Engine, GenSettings
    from garage.offline_models import TINY_CONFIG, _build_tokenizer
    from garage.models import loading
    from garage.train.pieces import save_outputs

    tokenizer = _build_tokenizer()
    image = tokenizer.convert_tokens_to_ids("<start_of_image>")
    text = Gemma3TextConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            tie_word_embeddings=True, **TINY_CONFIG)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=32, patch_size=8, vision_use_head=False)
    torch.manual_seed(0)
    folder = tmp_path / "tiny-gemma-3-multimodal"
    Gemma3ForConditionalGeneration(Gemma3Config(
        text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4, image_token_index=image,
        boi_token_index=image, eoi_token_index=tokenizer.eos_token_id)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    real_source = loading.model_source
    for module in (loading, engine_module):  # the engine names the loader's function as its own
        monkeypatch.setattr(module, "model_source",
                            lambda name: str(folder) if name == "gemma-3-4b-it" else real_source(name))

    cfg = TrainConfig(model="gemma-3-4b-it", dataset="x.jsonl", gradient_checkpointing=False, max_seq_length=128)
    run = RunStore(tmp_path / "runs").create(cfg, "local")
    loaded = loading.load_model(cfg.model, max_seq_length=128, log=lambda message: None)
    model = loading.add_lora(loaded, cfg)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 1.0)
    save_outputs(cfg, SimpleNamespace(model=model), loaded, run)
    del loaded, model
    run.update(state="completed")

    engine = Engine()
    engine.generate("gemma-3-4b-it", MESSAGES, GenSettings(greedy=True, max_new_tokens=1), run=run)
    name = engine._current.adapters[run.id][0]
    lora_b = [p for n, p in engine._current.model.named_parameters() if "lora_B" in n and f".{name}." in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b), "the adapter's weights did not load: tuned == base"
