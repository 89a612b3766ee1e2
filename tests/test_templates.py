"""Chat templates: the tuned model is prompted in chat as it was in training, and only answers are trained."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from garage.config import TrainConfig
from garage.models import loading
from garage.models.templates import describe_gap, reply_openings
from tests.conftest import SHARED

# Gemma 4 26B-A4B and 31B's shape: the generation prompt opens the reply with an empty thought channel that the
# rendering of a past reply leaves out (the real tokenizers cannot be downloaded here; the tiny one stands in).
EMPTY_THOUGHT = """{{ bos_token }}{%- for m in messages -%}
{%- set role = 'model' if m['role'] == 'assistant' else m['role'] -%}
<|turn>{{ role }}
{{ m['content'] | trim }}<turn|>
{% endfor -%}
{%- if add_generation_prompt -%}<|turn>model
<|channel>thought
<channel|>{%- endif -%}"""

ROWS = [
    {"messages": [{"role": "user", "content": "What is the capital of France?"},
                  {"role": "assistant", "content": "Paris."}]},
    {"messages": [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hello! How are you?"},
                  {"role": "user", "content": "What is 2 plus 2?"}, {"role": "assistant", "content": "4."}]},
]
ANSWERS = ["Paris.", "Hello! How are you?", "4."]


def folder_with_template(tmp_path, template: str):
    folder = shutil.copytree(loading.model_source("tiny-gemma-3"), tmp_path / "model")
    for path in folder.glob("chat_template*"):
        path.unlink()
    (folder / "chat_template.jinja").write_text(template)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def trained_text(model: str, tmp_path) -> tuple[object, list[str], list[list[str]]]:
    """The loaded model, each row's training text, and the texts of its trained spans."""
    from garage.train.sft import build_trainer

    cfg = TrainConfig(model=model, dataset="x.jsonl", max_seq_length=256, batch_shaping=False,
                      gradient_checkpointing=False)
    loaded = loading.load_model(model, max_seq_length=256, log=lambda message: None)
    trainer = build_trainer(cfg, loaded, ROWS, [], tmp_path / "out", [], log=lambda message: None)
    texts, spans = [], []
    for row in trainer.train_dataset:
        texts.append(loaded.tokenizer.decode(row["input_ids"]))
        runs, current = [], []
        for token, label in zip(row["input_ids"], row["labels"]):
            if label != -100:
                current.append(token)
            elif current:
                runs, current = runs + [current], []
        spans.append([loaded.tokenizer.decode(run) for run in runs + ([current] if current else [])])
    return loaded, texts, spans


def test_a_gemma_4_that_opens_replies_with_an_empty_thought_channel_trains_after_it(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    folder = folder_with_template(tmp_path, EMPTY_THOUGHT)
    monkeypatch.setattr(loading, "model_source", lambda name: str(folder))
    loaded, texts, spans = trained_text("gemma-4-31B-it", tmp_path)

    assert any("empty thought channel" in notice for notice in loaded.notices)
    # what chat asks with (the model's own template, as Compare and exports use it) is what training put there
    prompt = AutoTokenizer.from_pretrained(folder).apply_chat_template(ROWS[0]["messages"][:1], tokenize=False,
                                                                       add_generation_prompt=True)
    assert prompt.endswith("<|turn>model\n<|channel>thought\n<channel|>")
    assert texts[0].startswith(prompt) and texts[0].startswith("<bos>")
    assert texts[1].count("<|channel>thought\n<channel|>") == 2
    # the channel is prompt, not answer: only the answers and their end of turn are trained
    assert [span for row in spans for span in row] == [f"{answer}<turn|>\n" for answer in ANSWERS]


def test_another_template_whose_reply_prompt_differs_is_named_not_changed(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder_with_template(tmp_path, EMPTY_THOUGHT))
    fixed, notices = loading.training_template(tokenizer, "someone/chat-model")
    assert fixed.chat_template == tokenizer.chat_template == EMPTY_THOUGHT
    assert notices == [describe_gap("someone/chat-model", (
        "<|turn>model\n<|channel>thought\n<channel|>", "<|turn>model\n"))]
    assert "prompts a reply after '<|turn>model\\n<|channel>thought\\n<channel|>' but writes past replies after " \
           "'<|turn>model\\n'" in notices[0]


def test_past_replies_that_only_add_text_are_no_gap():
    """Qwen3's shape: the last past reply carries an empty think block the prompt lacks; it is trained as part of
    the answer (the model learns to write it), so chat and training agree."""
    from transformers import AutoTokenizer

    from garage.models.templates import opening_gap

    tokenizer = AutoTokenizer.from_pretrained(loading.model_source("tiny-gemma-3"))
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                               "{% if m['role'] == 'assistant' %}<think>\n\n</think>\n\n{% endif %}"
                               "{{ m['content'] }}<|im_end|>\n{% endfor %}"
                               "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    assert opening_gap(tokenizer) is None
    assert loading.training_template(tokenizer, "someone/qwen-like")[1] == []


def test_the_tiny_gemma_prompts_replies_as_it_renders_them():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(loading.model_source("tiny-gemma-3"))
    prompt, past = reply_openings(tokenizer)
    assert prompt == past == "<start_of_turn>model\n"
    assert loading.training_template(tokenizer, "tiny-gemma-3")[1] == []


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """SmolLM2-135M-Instruct, a real model with a ChatML template, built offline by ../shared/tools/smollm2."""
    tool = SHARED / "tools" / "smollm2"
    if not tool.exists():
        pytest.skip("../shared/tools/smollm2 is not here")
    folder = tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct"
    env = {**os.environ, "PATH": f"{sys.prefix}/bin:{os.environ.get('PATH', '')}"}  # the tool runs "python"
    done = subprocess.run(["bash", str(tool), str(folder)], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return folder


@pytest.mark.slow
def test_a_chatml_model_trains_its_answers_and_not_the_next_turns_opening(smollm2, tmp_path):
    loaded, texts, spans = trained_text(str(smollm2), tmp_path)
    assert [span for row in spans for span in row] == [f"{answer}<|im_end|>\n" for answer in ANSWERS]
    prompt = loaded.tokenizer.apply_chat_template(ROWS[0]["messages"][:1], tokenize=False,
                                                  add_generation_prompt=True)
    assert texts[0].startswith(prompt) and loaded.notices == []
