"""A reloaded Train tab shows the settings of the run it finds, not the defaults: the handlers the page calls."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from garage.config import TrainConfig
from garage.jobs import worker as worker_module
from garage.jobs.store import RunStore
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


def shown(outputs, updates) -> dict:
    """What each labelled component is set to (None: left as it was)."""
    return {c.label: u.get("value") if isinstance(u, dict) else u for c, u in zip(outputs, updates)
            if getattr(c, "label", None)}


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
    from garage.jobs import service

    handlers, (_, outputs) = page
    fields = [c for c in outputs if getattr(c, "label", None) in train_tab.FIELD_NAMES]

    def form_of(updates):
        return {c.label: u.get("value") for c, u in zip(fields, updates)}

    def pick(method, form):
        return form_of(handlers["on_method_pick"]("gemma-3-1b-it", method, *[form[n] for n in train_tab.FIELD_NAMES]))

    _, _, *form = handlers["on_model_change"]("gemma-3-1b-it", "tiny-gemma-3", "grpo")
    grpo = form_of(form)
    assert grpo["learning_rate"] == 5e-6 and grpo["method"] == "grpo" and grpo["num_generations"] == 8

    defaults = TrainConfig(dataset="x").to_dict()
    grpo_form = {**defaults, **service.preset_for("gemma-3-1b-it", "grpo")}
    back = pick("lora", grpo_form)  # out of GRPO: every field GRPO's preset set goes back
    assert (back["learning_rate"], back["lr_scheduler_type"], back["weight_decay"]) == (2e-4, "linear", 0.01)
    assert back["eval_fraction"] == defaults["eval_fraction"] and back["method"] is None  # the pick itself stays

    lora_form = {**defaults, **service.preset_for("gemma-3-1b-it", "lora"), "method": "lora"}
    assert pick("full", lora_form)["learning_rate"] == 2e-5  # a full fine-tune's rate is a tenth of LoRA's
    assert all(value is None for value in pick("qlora", lora_form).values())  # nothing to move between LoRAs
    typed = {**lora_form, "learning_rate": 3e-4, "lora_r": 64}
    into_grpo = pick("grpo", typed)
    assert into_grpo["learning_rate"] is None and into_grpo["lora_r"] is None  # the person's values stay
    assert into_grpo["num_generations"] == 8 and into_grpo["lr_scheduler_type"] == "cosine"


def test_an_out_of_range_number_is_refused_by_name_even_from_a_closed_accordion(page):
    """Gradio's own range check says "Value 0 is less than minimum value 1." and nothing of which field; the form
    leaves ranges to TrainConfig, whose message names the field and its range."""
    from garage.errors import GarageError
    from garage.jobs import service

    handlers, (_, outputs) = page
    logging_steps = next(c for c in outputs if getattr(c, "label", None) == "logging_steps")
    assert logging_steps.preprocess(0) == 0  # passes the page through to the server's check
    with pytest.raises(GarageError, match=r"logging_steps must be between 1 and"):
        service.config_from({"model": "tiny-gemma-3", "dataset": "qa", "logging_steps": 0})
