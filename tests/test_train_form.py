"""A reloaded Train tab shows the settings of the run it finds, not the defaults: the handlers the page calls."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from garage.config import LABELS, TrainConfig
from garage.jobs import worker as worker_module
from garage.jobs.store import RunStore
from garage.train import presets
from garage.ui import train_tab
from garage.ui.forms import form_updates

REQUEST = SimpleNamespace(headers={}, session_hash="reloaded")  # off a Space every page is the "local" user's


@pytest.fixture
def store(tmp_path, monkeypatch):
    """The app's worker over an empty run store of this test's own; runs are made here, never trained."""
    monkeypatch.delenv("SPACE_ID", raising=False)
    worker = worker_module.Worker(RunStore(tmp_path / "runs"), execute=lambda run, stop: None)
    monkeypatch.setattr(worker_module, "_worker", worker)
    return worker.store


@pytest.fixture
def page():
    """The Train tab's handlers by name, and its load event (handler, outputs) as app.py registers it."""
    with gr.Blocks() as demo:
        with gr.Tabs() as tabs:
            with gr.Tab("Train", id=train_tab.TAB_ID):
                parts = train_tab.build(tabs)
    return {fn.name: fn.fn for fn in demo.fns.values()}, parts["on_load"]


def make_run(store, owner: str, created: float, state: str = "completed", **values) -> str:
    run = store.create(TrainConfig.from_dict({"model": "tiny-gemma-3", "dataset": "my-qa", **values}), owner)
    run.update(state=state, created=created)
    return run.id


KEYS = {label: name for name, (label, _) in LABELS.items()}  # a form field's label in words -> its config key


def shown(outputs, updates) -> dict:
    """What each labelled component is set to (None: left as it was), by config key where it is a form field."""
    return {KEYS.get(c.label, c.label): u.get("value") if isinstance(u, dict) else u
            for c, u in zip(outputs, updates) if getattr(c, "label", None)}


def test_a_reload_fills_the_form_with_the_users_running_run(store, page):
    handlers, (on_load, outputs) = page
    make_run(store, "local", 1.0, learning_rate=3e-4)  # older, finished
    running = make_run(store, "local", 2.0, "running", model="gemma-3-270m-it", dataset="notes", learning_rate=1e-4,
                       lora_r=8, max_steps=7, method="full", target_modules=["q_proj", "v_proj"], packing=True)
    make_run(store, "hf-someone", 3.0, learning_rate=5e-5)  # newest, another user's
    loaded = on_load(REQUEST, None)
    view = shown(outputs, loaded)
    assert view["Run"] == running
    assert loaded[-1].selected == train_tab.TAB_ID  # the page opens on the Train tab, where the run is
    assert (view["model"], view["dataset"], view["method"]) == ("gemma-3-270m-it", "notes", "full")
    assert (view["learning_rate"], view["lora_r"], view["max_steps"]) == (1e-4, 8, 7)
    assert view["target_modules"] == "q_proj, v_proj" and view["packing"] is True
    assert all(view[name] is not None for name in train_tab.FIELD_NAMES)  # every field, not just some
    # the model set by the reload triggers the model's change event: the run's values stay, no preset over them
    fit, settings_model, *form = handlers["on_model_change"]("gemma-3-270m-it", "gemma-3-270m-it", "full")
    assert settings_model == "gemma-3-270m-it" and all("value" not in update for update in form)
    # a model the person picks still brings its preset
    _, _, *form = handlers["on_model_change"]("tiny-gemma-3", "gemma-3-270m-it", "full")
    assert any("value" in update for update in form)


def test_a_model_or_method_picked_for_grpo_brings_grpos_learning_rate(page):
    """After the GSM8K + GRPO preset, picking another model must not set LoRA's 2e-4 on a GRPO run (40x too high);
    picking a method moves the fields still at a preset's values to that method's, and keeps what was typed."""

    handlers, (_, outputs) = page
    fields = [c for c in outputs if KEYS.get(getattr(c, "label", None)) in train_tab.FIELD_NAMES]

    def form_of(updates):
        return {KEYS[c.label]: u.get("value") for c, u in zip(fields, updates)}

    def pick(method, form):
        return form_of(handlers["on_method_pick"]("gemma-3-1b-it", method, *[form[n] for n in train_tab.FIELD_NAMES]))

    _, _, *form = handlers["on_model_change"]("gemma-3-1b-it", "tiny-gemma-3", "lora")
    lora = form_of(form)  # nothing of the test model's preset stays (its 30 epochs, no eval split)
    defaults = TrainConfig(dataset="x").to_dict()
    assert lora["learning_rate"] == 2e-4 and lora["num_train_epochs"] == defaults["num_train_epochs"]
    assert (lora["eval_fraction"], lora["gradient_checkpointing"]) == (defaults["eval_fraction"], True)

    _, _, *form = handlers["on_model_change"]("gemma-3-1b-it", "tiny-gemma-3", "grpo")
    grpo = form_of(form)
    assert grpo["learning_rate"] == 5e-6 and grpo["method"] == "grpo" and grpo["num_generations"] == 8

    grpo_form = {**defaults, **presets.preset_for("gemma-3-1b-it", "grpo")}
    back = pick("lora", grpo_form)  # out of GRPO: every field GRPO's preset set goes back
    assert (back["learning_rate"], back["lr_scheduler_type"], back["weight_decay"]) == (2e-4, "linear", 0.01)
    assert back["eval_fraction"] == defaults["eval_fraction"] and back["method"] is None  # the pick itself stays

    lora_form = {**defaults, **presets.preset_for("gemma-3-1b-it", "lora"), "method": "lora"}
    assert pick("full", lora_form)["learning_rate"] == 2e-5  # a full fine-tune's rate is a tenth of LoRA's
    assert all(value is None for value in pick("qlora", lora_form).values())  # nothing to move between LoRAs
    typed = {**lora_form, "learning_rate": 3e-4, "lora_r": 64}
    into_grpo = pick("grpo", typed)
    assert into_grpo["learning_rate"] is None and into_grpo["lora_r"] is None  # the person's values stay
    assert into_grpo["num_generations"] == 8 and into_grpo["lr_scheduler_type"] == "cosine"


def test_a_reload_without_an_active_run_shows_the_users_newest(store, page):
    _, (on_load, outputs) = page
    make_run(store, "local", 1.0, lora_r=4)
    newest = make_run(store, "local", 2.0, "stopped", lora_r=32, max_steps=9)
    loaded = on_load(REQUEST, None)
    view = shown(outputs, loaded)
    assert view["Run"] == newest and (view["lora_r"], view["max_steps"]) == (32, 9)
    assert loaded[-1]["__type__"] == "update" and len(loaded[-1]) == 1  # nothing training: the tab stays


def test_with_no_run_of_their_own_the_form_keeps_its_defaults(store, page):
    _, (on_load, outputs) = page
    others = make_run(store, "hf-someone", 1.0, learning_rate=5e-5, system_prompt="their prompt")
    view = shown(outputs, on_load(REQUEST, None))
    assert view["Run"] == others  # anyone may watch it
    assert view["model"] is None and all(view[name] is None for name in train_tab.FIELD_NAMES)  # nothing copied


def test_picking_a_run_shows_its_settings_for_the_users_own_runs_only(store, page):
    handlers, _ = page
    mine = make_run(store, "local", 1.0, learning_rate=1e-4, lora_r=8, max_steps=7)
    others = make_run(store, "hf-someone", 2.0, learning_rate=5e-5, rubric="their rubric")
    names = ["dataset", "model", "settings_model", *train_tab.FIELD_NAMES]
    picked = dict(zip(names, handlers["on_pick"](mine, REQUEST, None)))
    assert (picked["learning_rate"]["value"], picked["lora_r"]["value"], picked["max_steps"]["value"]) == (1e-4, 8, 7)
    for run_id in (others, "", "no-such-run"):
        assert all("value" not in update for update in handlers["on_pick"](run_id, REQUEST, None))


def test_number_lists_fill_the_form():
    """The GSM8K preset and saved GRPO runs carry reward_weights as numbers."""
    updates = dict(zip(train_tab.FIELD_NAMES, form_updates(TrainConfig, {"reward_weights": [1.0, 0.5]},
                                                           skip=train_tab.SKIP)))
    assert updates["reward_weights"]["value"] == "1.0, 0.5"


def test_only_a_persons_pick_refills_the_form_not_start_or_delete():
    """Start and Delete set the run picker too; if that refilled the form, a person's edits would be lost."""
    with gr.Blocks() as demo:
        with gr.Tabs() as tabs:
            parts = train_tab.build(tabs)
    picker = parts["run_pick"]._id
    triggers = {fn.name: list(fn.targets) for fn in demo.fns.values()}
    assert triggers["on_pick"] == [(picker, "input")]


def test_an_out_of_range_number_is_refused_by_name_even_from_a_closed_accordion(page):
    """Gradio's own range check says "Value 0 is less than minimum value 1." and nothing of which field; the form
    leaves ranges to TrainConfig, whose message names the field and its range."""
    from garage.errors import GarageError
    from garage.jobs import service

    handlers, (_, outputs) = page
    logging_steps = next(c for c in outputs if KEYS.get(getattr(c, "label", None)) == "logging_steps")
    assert logging_steps.preprocess(0) == 0  # passes the page through to the server's check
    with pytest.raises(GarageError, match=r"logging_steps must be between 1 and"):
        service.config_from({"model": "tiny-gemma-3", "dataset": "qa", "logging_steps": 0})


def test_the_log_of_someone_elses_run_is_not_shown(store, page, monkeypatch):
    """A run's log names its files and the repos it was pushed to (maybe private): on a shared Space a visitor
    watching another user's run sees its progress, not its log or command."""
    handlers, _ = page
    monkeypatch.setenv("SPACE_ID", "me/garage")
    monkeypatch.delenv("GARAGE_SINGLE_USER", raising=False)
    run_id = make_run(store, "hf-alice", 1.0)
    store.get(run_id).log("Pushed adapter to https://huggingface.co/alice/top-secret-model (7 files).")
    outputs = handlers["on_tick"](run_id, {}, REQUEST, SimpleNamespace(username="mallory"))
    progress, log, command = outputs[0], outputs[4], outputs[5]
    assert "completed" in progress and log["value"] == train_tab.LOG_OWNERS_ONLY and command == ""
    own = handlers["on_tick"](run_id, {}, REQUEST, SimpleNamespace(username="alice"))
    assert "top-secret-model" in own[4]["value"] and "python -m garage train" in own[5]
