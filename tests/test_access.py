"""Users kept apart on a shared Space: anonymous ids, workspaces, datasets, models by name, a run's private parts."""

from __future__ import annotations

import json
from types import SimpleNamespace

import gradio as gr
import pytest

from garage.errors import GarageError
from garage.jobs import worker as worker_module
from garage.jobs.store import RunStore
from garage.jobs.worker import Worker
from tests.helpers import conversations, tiny_config, write_jsonl

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
