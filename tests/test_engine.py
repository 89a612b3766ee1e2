"""The Compare engine: streams closed from another thread, adapters as they are on disk now, a pretrained model's
chat format, a multimodal Gemma's adapter."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from garage.jobs.store import RunStore
from tests.helpers import conversations, write_jsonl

pytestmark = pytest.mark.slow


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
    save_outputs(cfg, SimpleNamespace(model=model, is_world_process_zero=lambda: True), loaded, run)
    del loaded, model
    run.update(state="completed")

    engine = Engine()
    engine.generate("gemma-3-4b-it", MESSAGES, GenSettings(greedy=True, max_new_tokens=1), run=run)
    name = engine._current.adapters[run.id][0]
    lora_b = [p for n, p in engine._current.model.named_parameters() if "lora_B" in n and f".{name}." in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b), "the adapter's weights did not load: tuned == base"
