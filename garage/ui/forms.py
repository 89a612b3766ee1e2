"""Generate a Gradio form from a config dataclass, so the form cannot drift from the config."""

from __future__ import annotations

import gradio as gr

from garage.config import SECTION_TITLES, field_specs

GROUP_TITLES = {"lora": "The adapter (LoRA, QLoRA)", "grpo": "Reinforcement learning (grpo) and preference tuning (dpo, orpo, kto)",
                "prompt": "Prompt optimisation (method prompt: GEPA evolves the system prompt, no training)",
                "where": "Where it trains (several GPUs, Hugging Face Jobs)",
                "advanced": "Advanced (schedule, checkpoints, logging, memory tricks)"}


def describe(spec: dict) -> str:
    """A field's help line: what it does, its unit and the range it accepts, then its config key (for YAML)."""
    limits = [part for part in (spec["unit"],
                                f"{_number(spec['minimum'])} to {_number(spec['maximum'])}"
                                if spec["minimum"] is not None and spec["maximum"] is not None else "") if part]
    return f"{spec['help']}" + (f" ({'; '.join(limits)})" if limits else "") + f" · key: {spec['name']}"


def _number(value) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


# Fields that name one of the user's runs: a picker the Train tab fills with their runs (a run id typed or pasted
# is taken too), its empty choice the base model.
RUN_PICKERS = ("init_run", "tuned_run")
NO_RUN = ("(none: the base model)", "")


def _component(spec: dict, value, visible: bool = True):
    label, info = spec["label"], describe(spec)
    if spec["name"] in RUN_PICKERS:
        return gr.Dropdown(choices=[NO_RUN], value=value or "", allow_custom_value=True, label=label, info=info,
                           visible=visible)
    if spec["choices"]:
        return gr.Dropdown(choices=list(spec["choices"]), value=value, label=label, info=info, visible=visible)
    if spec["type"] == "bool":
        return gr.Checkbox(value=bool(value), label=label, info=info, visible=visible)
    if spec["type"] in ("int", "float"):
        # no minimum / maximum here: Gradio's own check says "Value 0 is less than minimum value 1." without naming
        # the field (which may sit in a closed accordion); TrainConfig.validate names it and its range
        return gr.Number(value=value, label=label, info=info, precision=0 if spec["type"] == "int" else None,
                         visible=visible)
    if spec["type"] == "list":
        return gr.Textbox(value=_shown(value), label=label, info=info + " (comma-separated)", visible=visible)
    return gr.Textbox(value=value, label=label, info=info, visible=visible)


def build_form(cls, *, skip: tuple = (), defaults: dict | None = None, extras: dict | None = None,
               hidden: tuple = ()) -> dict:
    """Components for each field of ``cls`` (basic ones first, others in accordions), by field name. ``extras``:
    group -> a function that lays out more of that group's accordion under its fields (what it returns is kept
    under the group's name). ``hidden``: fields laid out but not shown (their value still goes with the form)."""
    defaults, extras = defaults or {}, extras or {}
    specs = [s for s in field_specs(cls) if s["name"] not in skip]
    components = {}
    for group in ("basic", *GROUP_TITLES):
        members = [s for s in specs if s["group"] == group]
        if not members:
            continue
        if group == "basic":
            _basic(members, defaults, components, hidden)
        else:
            with gr.Accordion(GROUP_TITLES[group], open=False):
                _rows(members, defaults, components, hidden)
                if group in extras:
                    components[group] = extras[group]()
    return components


def _basic(members: list[dict], defaults: dict, components: dict, hidden: tuple) -> None:
    """The fields shown open, under a heading per section (what it learns, how long, how fast, memory)."""
    unsectioned = [s for s in members if not s["section"]]
    if unsectioned:
        _rows(unsectioned, defaults, components, hidden)
    for section, title in SECTION_TITLES.items():
        fields = [s for s in members if s["section"] == section]
        if fields:
            gr.Markdown(f"**{title}**")
            _rows(fields, defaults, components, hidden)


def _rows(members: list[dict], defaults: dict, components: dict, hidden: tuple, per_row: int = 4) -> None:
    for start in range(0, len(members), per_row):
        with gr.Row(equal_height=True):
            for spec in members[start:start + per_row]:
                components[spec["name"]] = _component(spec, defaults.get(spec["name"], spec["default"]),
                                                      visible=spec["name"] not in hidden)


def form_updates(cls, values: dict, *, skip: tuple = ()) -> list:
    """gr.update()s that set a form built by ``build_form`` to ``values`` (e.g. a model's preset)."""
    updates = []
    for spec in field_specs(cls):
        if spec["name"] in skip:
            continue
        if spec["name"] in values:
            updates.append(gr.update(value=_shown(values[spec["name"]])))
        else:
            updates.append(gr.update())
    return updates


def _shown(value):
    """A field's value as its form component takes it: a list (of names, or of numbers) comma-separated."""
    return ", ".join(map(str, value)) if isinstance(value, list) else value
