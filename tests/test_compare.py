"""Compare: base and tuned answers from one copy of the base model."""

from __future__ import annotations

import gc

import pytest

from garage.errors import GarageError
from garage.infer.engine import Engine, GenSettings
from garage.jobs.store import RunStore
from garage.jobs.worker import Worker
from tests.helpers import QA, copy_run

pytestmark = pytest.mark.slow
GREEDY = GenSettings(greedy=True, max_new_tokens=24)


@pytest.fixture(scope="module")
def run(trained_run, tmp_path_factory):
    """The session's LoRA run (completed), in a store of this module's."""
    return copy_run(trained_run, RunStore(tmp_path_factory.mktemp("cmp") / "runs"))


def _drain(stream):
    seen = []
    while True:
        try:
            seen.append(next(stream))
        except StopIteration as stop:
            return seen, stop.value


def test_both_sides_stream_together_from_one_copy(run):
    from transformers import Gemma3ForCausalLM

    gc.collect()
    earlier = {id(o) for o in gc.get_objects() if type(o) is Gemma3ForCausalLM}  # other tests' models
    engine = Engine()
    seen, (base, tuned) = _drain(engine.stream_pair("tiny-gemma-3", [{"role": "user", "content": QA[0][0]}],
                                                    GREEDY, run))
    assert tuned.text == QA[0][1] and base.text != tuned.text
    assert len(seen) > 3 and all(len(pair) == 2 for pair in seen)  # updates carried both columns
    assert tuned.tokens_per_second > 0 and tuned.first_token_seconds is not None
    gc.collect()
    models = [o for o in gc.get_objects() if type(o) is Gemma3ForCausalLM and id(o) not in earlier]
    assert len(models) == 1  # the tuned side is an adapter on the same model, not a second copy
    base_params = sum(p.numel() for n, p in models[0].named_parameters() if "lora_" not in n)
    assert base_params > 1_000_000
    adapter_params = sum(p.numel() for n, p in models[0].named_parameters() if "lora_" in n)
    assert engine.loaded_parameter_count() == base_params + adapter_params
    assert adapter_params < base_params / 2


def test_multi_turn_keeps_each_sides_history(run):
    engine = Engine()
    first = [{"role": "user", "content": QA[0][0]}]
    _, (base1, tuned1) = _drain(engine.stream_pair("tiny-gemma-3", first, GREEDY, run))
    base_history = first + [{"role": "assistant", "content": base1.text or "…"},
                            {"role": "user", "content": QA[1][0]}]
    tuned_history = first + [{"role": "assistant", "content": tuned1.text}, {"role": "user", "content": QA[1][0]}]
    _, (_, tuned2) = _drain(engine.stream_pair("tiny-gemma-3", base_history, GREEDY, run,
                                               tuned_messages=tuned_history))
    assert tuned2.text  # the two rows had different lengths: left padding kept them apart


def test_fixed_seed_makes_sampling_repeatable(run):
    engine = Engine()
    settings = GenSettings(max_new_tokens=16, seed=7, temperature=1.0)
    messages = [{"role": "user", "content": "Tell me something."}]
    first = engine.generate("tiny-gemma-3", messages, settings)
    again = engine.generate("tiny-gemma-3", messages, settings)
    assert first.text == again.text


def test_eval_examples_and_chat_compare_api(run, monkeypatch):
    from garage.infer import compare
    from garage.jobs import worker as worker_module

    monkeypatch.setattr(worker_module, "_worker", Worker(RunStore(run.path.parent)))
    rows = compare.eval_examples(run, n=2, settings=GREEDY)
    assert len(rows) == 2 and all(r["tuned_matches"] for r in rows)
    result = compare.chat_compare(QA[2][0], run, settings=GREEDY)
    assert result["tuned"] == QA[2][1] and result["base"] != result["tuned"]
    with pytest.raises(GarageError, match="Type a prompt"):
        compare.chat_compare("  ", run)


def test_the_compare_tab_answers_with_the_base_model_alone():
    """The run picker's default, "(base model only)": the base column streams and fills, the tuned one stays empty."""
    from garage.ui.compare_tab import compare_stream

    updates = list(compare_stream(QA[0][0], "", "", [], [], 8, 1.0, 0.95, 64, 1.0, True, 0))
    base_chat, tuned_chat, prompt, base_speed, tuned_speed, exchange = updates[-1]
    assert [m["role"] for m in base_chat] == ["user", "assistant"] and base_chat[1]["content"].strip()
    assert tuned_chat == [] and prompt == "" and "tokens/s" in base_speed and tuned_speed == "—"
    assert exchange is None  # nothing to vote on without a fine-tuned answer
    assert len(updates) > 2  # it streamed


def test_an_evaluation_that_cannot_run_says_why_on_the_page():
    from garage.ui.compare_tab import _evaluate_markdown

    report, summary = _evaluate_markdown("", "", 5, None)
    assert summary == "⚠️ **Evaluate failed.** Pick a fine-tuned run to evaluate." and report is None
