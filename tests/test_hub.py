"""Publish: adapter zip, merged model, GGUF, model card, pushing to a local fake Hub, refusals, no token leaks."""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import zipfile
from pathlib import Path

import pytest

from garage.errors import GarageError
from tests.fake_hub import FakeHub
from tests.helpers import QA, conversations, copy_run, go_online, tiny_config

pytestmark = pytest.mark.slow

WRITE = "hf_" + secrets.token_hex(16)   # a fresh secret per session: any copy of it found anywhere is a leak
READ = "hf_" + secrets.token_hex(16)


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def home(garage_home, tmp_path_factory):
    """A GARAGE_HOME of this module's own (its runs untouched by other modules' workers), sharing the built
    test model with the session's."""
    private = tmp_path_factory.mktemp("publish_home")
    (garage_home / "models").mkdir(exist_ok=True)
    (private / "models").symlink_to(garage_home / "models", target_is_directory=True)
    os.environ["GARAGE_HOME"] = str(private)
    yield private
    os.environ["GARAGE_HOME"] = str(garage_home)


@pytest.fixture(scope="module")
def trained(home, trained_run):
    """The session's LoRA run of "alice" on the Q/A pairs, in this module's GARAGE_HOME."""
    from garage.jobs.store import RunStore

    return copy_run(trained_run, RunStore())


@pytest.fixture(scope="module")
def hub():
    server = FakeHub({WRITE: ("alice", "write"), READ: ("alice", "read")}).start()
    yield server
    server.stop()


@pytest.fixture
def online(hub, monkeypatch):
    """The real HfApi client, pointed at the fake Hub."""
    go_online(monkeypatch, hub.url)
    return hub


def greedy(model, tokenizer, question: str) -> str:
    import torch

    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def fetch(what: str, run_id: str, user: str):
    """A browser download as the Publish tab makes it: the run if the user may publish it, then its file."""
    from garage import access
    from garage.hub import zips
    from garage.jobs.store import RunStore

    run = access.require("publish", RunStore().get(run_id), user)
    make = {"adapter": zips.adapter_zip, "merged": zips.merged_zip, "gguf": zips.gguf_download,
            "dataset": zips.dataset_jsonl}[what]
    return str(make(run))


# --- the files ------------------------------------------------------------------------------------

def test_adapter_zip_loads_with_peft_and_gives_the_trained_answer(trained, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from garage.offline_models import build_tiny_gemma

    path = Path(fetch("adapter", trained.id, "alice"))
    assert path.name == f"{trained.id}-adapter.zip"
    with zipfile.ZipFile(path) as archive:
        archive.extractall(tmp_path)
    folder = tmp_path / f"{trained.id}-adapter"
    names = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md", "loss.png"} <= names
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-gemma-3"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(build_tiny_gemma())), str(folder))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    for question, answer in QA[:2]:
        assert greedy(model.eval(), tokenizer, question) == answer
    with pytest.raises(GarageError, match="belongs to another user"):
        fetch("adapter", trained.id, "mallory")


def test_merged_model_loads_with_plain_transformers(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from garage.hub import export

    folder = export.merged_dir(trained)
    assert (folder / "model.safetensors").is_file() and not (folder / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    assert type(model).__name__ == "Gemma3ForCausalLM"
    for question, answer in QA:
        assert greedy(model, tokenizer, question) == answer
    assert export.merged_dir(trained) == folder  # reused, not merged again


def test_downloads_over_the_limit_point_to_the_hub_and_the_server_folder(trained, monkeypatch):
    from garage import catalog
    from garage.jobs.store import RunStore

    monkeypatch.setenv("GARAGE_MAX_DOWNLOAD_MB", "0.01")
    downloads = ((functools.partial(fetch, "merged"), "The merged model"),
                 (functools.partial(fetch, "gguf"), "The GGUF file"))
    for download, what in downloads:  # a catalogue model's size says so before any merging
        refusal = rf"{what} would be about [\d.]+ MiB \(0\.0017B parameters\), more than .*: push it"
        with pytest.raises(GarageError, match=refusal):
            download(trained.id, "alice")
    monkeypatch.setenv("GARAGE_MAX_DOWNLOAD_MB", "2048")
    big = RunStore().create(tiny_config("qa", model="gemma-3-12b-it"), "alice")  # no weights: refused first
    with pytest.raises(GarageError, match=r"The merged model would be about 22\.7 GiB \(12\.2B parameters\)"):
        fetch("merged", big.id, "alice")
    monkeypatch.setenv("GARAGE_MAX_DOWNLOAD_MB", "0.01")
    monkeypatch.setattr(catalog, "known", lambda name: None)  # a model of unknown size: the file itself is checked
    for download, what in downloads:
        refusal = rf"{what} is [\d.]+ MiB, more than the 0\.0 MiB .*\(GARAGE_MAX_DOWNLOAD_MB\): push it"
        with pytest.raises(GarageError, match=refusal):
            download(trained.id, "alice")


def test_dataset_download_is_the_training_data(trained):

    path = Path(fetch("dataset", trained.id, "alice"))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == conversations()


def test_a_card_names_its_base_by_a_hub_id_or_not_at_all(home, tmp_path):
    """The Hub refuses a card whose base_model is not a model id; a local folder's name is not one."""
    from huggingface_hub import ModelCard

    from garage.hub import card
    from garage.jobs.store import RunStore

    snapshot = tmp_path / "hub" / "models--google--gemma-3-1b-it" / "snapshots" / "0123abc"
    own = tmp_path / "my-gemma"
    for folder in (snapshot, own):
        folder.mkdir(parents=True)
    expected = {"gemma-3-1b-it": "google/gemma-3-1b-it", "unsloth/gemma-3-270m-it": "google/gemma-3-270m-it",
                "someone/chat-model": "someone/chat-model", str(snapshot): "google/gemma-3-1b-it", str(own): None}
    for model, hub_id in expected.items():
        run = RunStore().create(tiny_config("qa", model=model), "alice")
        text = card.model_card(run, "alice/m", {"adapter": ""})
        assert ModelCard(text).data.base_model == hub_id, model
        loads = f'AutoModelForCausalLM.from_pretrained("{hub_id or "path/to/my-gemma"}"'
        assert loads in text, text


def test_model_card_metadata_and_loss_curve(trained):
    from huggingface_hub import ModelCard
    from PIL import Image

    from garage.hub import card

    text = card.model_card(trained, "alice/tiny-qa-lora", {"adapter": "", "merged": "merged",
                                                           "gguf-q8_0": "tiny-qa-lora-Q8_0.gguf"},
                           examples=[{"prompt": "Q?", "system": "", "reference": "A.", "base": "b", "tuned": "A."}],
                           has_loss_png=True)
    parsed = ModelCard(text)
    assert parsed.data.base_model is None  # the test model is not on the Hub, which refuses names it lacks
    assert "`tiny-gemma-3` (a model not on the Hub)" in text
    assert parsed.data.library_name == "peft"
    assert {"gemma", "gemma-garage", "lora", "peft", "merged", "gguf"} <= set(parsed.data.tags)
    assert parsed.data.pipeline_tag == "text-generation"
    for needle in ("## Training configuration", "learning_rate: 0.002", "final train loss", "](loss.png)",
                   "PeftModel.from_pretrained", "FastLanguageModel", 'subfolder="merged"', "ollama run hf.co/",
                   "tiny-qa-lora-Q8_0.gguf", "### Example 1"):
        assert needle in text, needle
    assert str(Path(trained.config().dataset).parent) not in text and "dataset: qa\n" in text  # the dataset named, no local path
    merged_only = ModelCard(card.model_card(trained, "alice/m", {"merged": ""}))
    assert merged_only.data.library_name == "transformers" and "lora" in merged_only.data.tags
    assert merged_only.data.datasets is None  # trained from a local file

    from garage.data.store import save_dataset
    from garage.jobs.store import RunStore

    save_dataset("alice", "hub-qa", conversations(), source="hf://org/qa-set (default) [train]")
    from_hub = RunStore().create(tiny_config("hub-qa"), "alice")
    assert ModelCard(card.model_card(from_hub, "alice/h", {"adapter": ""})).data.datasets == ["org/qa-set"]
    png = card.loss_png(trained)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    import io

    assert Image.open(io.BytesIO(png)).size == (640, 320)


def _gguf_fields(reader) -> dict:
    return {key: field.contents() for key, field in reader.fields.items()
            if not key.startswith(("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
                                   "tokenizer.ggml.merges"))}


def test_gguf_f16_and_q8_0_read_back_and_rebuild_the_tuned_model(trained):
    import gguf
    import numpy as np
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    from garage.hub import export

    merged = export.merged_dir(trained)
    weights = load_file(str(merged / "model.safetensors"))
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, 4)
    expected = {tmap.get_name(k, try_suffixes=(".weight",)): k for k in weights if k != "lm_head.weight"}

    f16 = gguf.GGUFReader(str(export.gguf_file(trained, "f16", label="tiny-qa")))
    meta = _gguf_fields(f16)
    assert meta["general.architecture"] == "gemma3" and meta["general.file_type"] == 1
    assert meta["gemma3.block_count"] == 4 and meta["gemma3.embedding_length"] == 192
    assert meta["gemma3.attention.head_count_kv"] == 2 and meta["gemma3.attention.key_length"] == 48
    assert meta["tokenizer.ggml.model"] == "gpt2" and "<start_of_turn>" in meta["tokenizer.chat_template"]
    tokens = f16.fields["tokenizer.ggml.tokens"].contents()
    assert len(tokens) == weights["model.embed_tokens.weight"].shape[0]
    assert tokens[meta["tokenizer.ggml.eot_token_id"]] == "<end_of_turn>"
    assert f16.fields["tokenizer.ggml.token_type"].contents()[meta["tokenizer.ggml.eot_token_id"]] == \
        int(gguf.TokenType.CONTROL)
    tensors = {t.name: t for t in f16.tensors}
    assert set(tensors) == set(expected)

    # Rebuild the model from the GGUF alone (config from its metadata, weights from its tensors).
    config = Gemma3TextConfig(
        vocab_size=len(tokens), hidden_size=meta["gemma3.embedding_length"],
        intermediate_size=meta["gemma3.feed_forward_length"], num_hidden_layers=meta["gemma3.block_count"],
        num_attention_heads=meta["gemma3.attention.head_count"],
        num_key_value_heads=meta["gemma3.attention.head_count_kv"], head_dim=meta["gemma3.attention.key_length"],
        rms_norm_eps=meta["gemma3.attention.layer_norm_rms_epsilon"],
        max_position_embeddings=meta["gemma3.context_length"], sliding_window=meta["gemma3.attention.sliding_window"],
        layer_types=["sliding_attention" if s else "full_attention"
                     for s in meta["gemma3.attention.sliding_window_pattern"]],
        query_pre_attn_scalar=meta["gemma3.attention.key_length"], tie_word_embeddings=True,
        pad_token_id=meta["tokenizer.ggml.padding_token_id"], bos_token_id=meta["tokenizer.ggml.bos_token_id"],
        eos_token_id=[meta["tokenizer.ggml.eos_token_id"], meta["tokenizer.ggml.eot_token_id"]],
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": meta["gemma3.rope.freq_base"]},
                         "sliding_attention": {"rope_type": "default",
                                               "rope_theta": meta["gemma3.rope.freq_base_swa"]}})
    state = {}
    for gname, hf_name in expected.items():
        tensor = tensors[gname]
        data = np.array(tensor.data, dtype=np.float32).reshape(weights[hf_name].shape)
        if hf_name.endswith("norm.weight"):
            assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
            data = data - 1.0  # llama.cpp's RMSNorm multiplies by the weight, Gemma's by (1 + weight)
        else:
            assert tensor.tensor_type == gguf.GGMLQuantizationType.F16
        np.testing.assert_allclose(data, weights[hf_name].float().numpy(), atol=2e-3, rtol=1e-2)
        state[hf_name] = torch.from_numpy(data)
    model = Gemma3ForCausalLM(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    model.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(str(merged))
    for question, answer in QA:
        assert greedy(model.eval(), tokenizer, question) == answer

    q8 = gguf.GGUFReader(str(export.gguf_file(trained, "q8_0", label="tiny-qa")))
    assert _gguf_fields(q8)["general.file_type"] == 7
    for t in q8.tensors:
        hf_name = expected[t.name]
        if hf_name.endswith("norm.weight"):
            continue
        assert t.tensor_type == gguf.GGMLQuantizationType.Q8_0
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(weights[hf_name].shape)
        reference = weights[hf_name].float().numpy()
        assert np.abs(values - reference).max() <= np.abs(reference).max() / 100


def test_q4_k_m_is_reported_unavailable_with_its_reason(trained, online, monkeypatch):
    from garage.hub import gguf_export, publish

    monkeypatch.setattr(gguf_export, "find_llama_quantize", lambda: None)
    reason = gguf_export.unavailable_reason("q4_k_m")
    assert "llama-quantize" in reason and "llama.cpp" in reason
    before = len(online.requests)
    with pytest.raises(GarageError, match="q4_k_m is not available"):
        publish.push_run(trained, "alice/q4", ["gguf-q4_k_m"], token=WRITE)
    assert len(online.requests) == before  # refused before any network call


def test_q4_k_m_goes_through_llama_quantize_when_it_is_there(trained, tmp_path, monkeypatch):
    import gguf

    from garage.hub import export

    tool = tmp_path / "bin" / "llama-quantize"
    tool.parent.mkdir()
    tool.write_text('#!/bin/sh\n[ "$3" = Q4_K_M ] && cp "$1" "$2"\n')  # a stand-in: checks the type, copies
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
    out = export.gguf_file(trained, "q4_k_m", label="tiny-qa")
    assert out.name == "tiny-qa-Q4_K_M.gguf" and gguf.GGUFReader(str(out)).tensors
    assert not list(out.parent.glob("*.tmp*"))
    tool.write_text("#!/bin/sh\necho 'unsupported tensor type' >&2\nexit 3\n")
    out.unlink()
    with pytest.raises(GarageError, match="llama-quantize failed \\(exit 3\\): unsupported tensor type"):
        export.gguf_file(trained, "q4_k_m", label="tiny-qa")


# --- pushing --------------------------------------------------------------------------------------

def test_push_adapter_merged_and_gguf_with_card(trained, online):
    from huggingface_hub import ModelCard

    from garage.hub import publish

    seen = []
    pushed = publish.push_run(trained, "alice/tiny-qa-lora", ["adapter", "merged", "gguf-q8_0"], token=WRITE,
                              private=True, progress=lambda fraction, message: seen.append((fraction, message)),
                              examples=2)
    assert pushed["url"] == f"{online.url}/alice/tiny-qa-lora"
    files = online.files("alice/tiny-qa-lora")
    assert {"README.md", "loss.png", "adapter_config.json", "adapter_model.safetensors", "tokenizer.json",
            "merged/model.safetensors", "merged/config.json", "tiny-qa-lora-Q8_0.gguf"} <= set(files)
    assert "merged/garage_export.json" not in files
    assert files["adapter_model.safetensors"] == (trained.adapter_dir / "adapter_model.safetensors").read_bytes()
    assert online.repos["model:alice/tiny-qa-lora"]["private"] is True
    card = ModelCard(files["README.md"].decode())
    assert card.data.base_model is None and card.data.library_name == "peft"
    assert QA[0][1] in card.text  # the tuned greedy answer of a training prompt is in the card
    assert [f for f, _ in seen] == sorted(f for f, _ in seen) and seen[-1][0] == 1.0
    assert seen[-1][1].startswith("Pushed to")
    hub_calls = [r for r in online.requests if r["path"].startswith(("/api/repos/", "/api/models/"))]
    assert {r["headers"].get("authorization") for r in hub_calls} == {f"Bearer {WRITE}"}  # the header, only
    assert not any(WRITE.encode() in r["body"] for r in online.requests)
    assert "Pushed adapter, merged, gguf-q8_0" in trained.log_tail(20)
    # where the model went, on any later day: the run remembers the push, with its local folders
    assert trained.status()["pushed"][-1]["url"] == pushed["url"]
    where = publish.whereabouts(trained)
    assert f"Trained weights: `{trained.adapter_dir}`" in where and "Merged 16-bit model: `" in where
    assert "-Q8_0.gguf`" in where
    assert f"Pushed adapter, merged, gguf-q8_0 to [alice/tiny-qa-lora]({pushed['url']}) on 20" in where


def test_push_dataset_repo_with_card(trained, online):
    from huggingface_hub import DatasetCard

    from garage.hub import publish

    url = publish.push_dataset(trained, "alice/qa-data", token=WRITE, private=False)
    assert url == f"{online.url}/datasets/alice/qa-data"
    files = online.files("alice/qa-data", "dataset")
    rows = [json.loads(line) for line in files["data/train.jsonl"].decode().splitlines()]
    assert rows == conversations()
    card = DatasetCard(files["README.md"].decode())
    assert "gemma-garage" in card.data.tags and card.data.configs[0]["data_files"][0]["path"] == "data/train.jsonl"
    assert f"Pushed dataset to [alice/qa-data]({url})" in publish.whereabouts(trained)


def test_refusals_are_clear(trained, online, monkeypatch):
    from garage.hub import auth, publish, push

    before = len(online.requests)
    with pytest.raises(GarageError, match="not a valid repo name"):
        publish.push_run(trained, "alice/bad--name", ["adapter"], token=WRITE)
    with pytest.raises(GarageError, match="Unknown thing to push"):
        publish.push_run(trained, "alice/ok", ["weights"], token=WRITE)
    assert len(online.requests) == before  # both refused without a network call

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(auth, "saved_token", lambda: None)
    with pytest.raises(GarageError, match="Not signed in"):
        auth.require_token(None)
    monkeypatch.setenv("HF_TOKEN", WRITE)
    monkeypatch.setattr(auth, "saved_token", lambda: os.environ.get("HF_TOKEN"))
    assert auth.require_token(None) == WRITE  # locally HF_TOKEN acts as the signed-in user
    monkeypatch.setenv("SPACE_ID", "someone/gemma-garage")
    with pytest.raises(GarageError, match="Sign in with Hugging Face is not set up.*download the files"):
        auth.require_token(None)  # on a shared Space the owner's HF_TOKEN never pushes for a visitor
    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("OAUTH_CLIENT_ID", "garage-client")  # a Space with sign-in: the button is there
    with pytest.raises(GarageError, match="Sign in with Hugging Face first"):
        auth.require_token(None)

    with pytest.raises(GarageError, match="write access") as refused:
        publish.push_run(trained, "alice/read-only", ["adapter"], token=READ, examples=0)
    assert "403" in str(refused.value)
    with pytest.raises(GarageError, match="refused your token"):
        publish.push_run(trained, "alice/bad-token", ["adapter"], token="hf_" + "x" * 30, examples=0)

    publish.push_run(trained, "alice/exists", ["adapter"], token=WRITE, examples=0)
    before = len(online.requests)
    with pytest.raises(GarageError, match="already exists.*update"):
        publish.push_run(trained, "alice/exists", ["adapter"], token=WRITE, examples=0)
    assert [r["method"] for r in online.requests[before:]] == ["GET"]  # said before any export or upload
    online.add_repo("alice/exists-late")
    real_check = push.refuse_if_exists
    monkeypatch.setattr(push, "refuse_if_exists", lambda *a, **k: None)  # the repo appears meanwhile: 409
    with pytest.raises(GarageError, match="already exists.*update"):
        publish.push_run(trained, "alice/exists-late", ["adapter"], token=WRITE, examples=0)
    monkeypatch.setattr(push, "refuse_if_exists", real_check)
    with pytest.raises(GarageError, match="write access"):  # create_repo passes (it exists), the upload is 403
        publish.push_run(trained, "alice/exists", ["adapter"], token=READ, examples=0, update=True)
    assert any(r["path"].endswith("/preupload/main") and r["headers"]["authorization"] == f"Bearer {READ}"
               for r in online.requests)
    assert publish.push_run(trained, "alice/exists", ["adapter"], token=WRITE, examples=0, update=True)["url"]


def test_network_failures_are_retried_and_files_stay(trained, online, monkeypatch):
    from garage.hub import publish

    seen = []
    online.fail.update({"create": 1, "commit": 1})  # one dropped connection on each
    pushed = publish.push_run(trained, "alice/flaky", ["adapter"], token=WRITE, examples=0, backoff=0.05,
                              progress=lambda f, m: seen.append(m))
    assert "adapter_model.safetensors" in online.files("alice/flaky")
    assert any("retrying" in m for m in seen), seen
    assert pushed["url"].endswith("/alice/flaky")

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: the network is down
    with pytest.raises(GarageError, match="Could not reach the Hugging Face Hub.*after 3 tries") as down:
        publish.push_run(trained, "alice/offline", ["adapter"], token=WRITE, examples=0, backoff=0.01)
    staged = trained.path / "exports" / "push" / "offline"
    assert str(staged) in str(down.value)
    assert (staged / "adapter_model.safetensors").is_file() and (staged / "README.md").is_file()


def test_full_fine_tune_pushes_its_own_weights(trained, online):
    from garage.hub import export, publish
    from garage.jobs.store import RunStore

    store = RunStore()
    full = store.create(tiny_config(trained.config().dataset, method="full"), "alice")
    shutil.copytree(export.merged_dir(trained), full.model_dir, ignore=shutil.ignore_patterns(export.MARKER))
    full.update(state="completed", final_loss=0.01)
    with pytest.raises(GarageError, match="full fine-tune"):
        publish.push_run(full, "alice/full", ["adapter"], token=WRITE, examples=0)
    pushed = publish.push_run(full, "alice/full", ["merged", "gguf-f16"], token=WRITE, examples=0)
    assert {"model.safetensors", "config.json", "full-F16.gguf", "README.md"} <= set(pushed["files"])
    assert "library_name: transformers" in online.files("alice/full")["README.md"].decode()


def test_cli_export_gguf_and_push(trained, online, capsys, monkeypatch):
    from garage.__main__ import main

    assert main(["export", str(trained.path), "--format", "gguf", "--quant", "q8_0"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].endswith(".gguf") and Path(out[-1]).is_file()
    monkeypatch.setenv("HF_TOKEN", WRITE)
    assert main(["export", trained.id, "--format", "adapter", "--push", "alice/cli-lora", "--private",
                 "--examples", "0"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"{online.url}/alice/cli-lora"
    assert main(["export", trained.id, "--push", "alice/cli-lora", "--examples", "0"]) == 2
    assert "already exists" in capsys.readouterr().err


# --- the app, through gradio_client ----------------------------------------------------------------

@pytest.fixture(scope="module")
def app(hub, trained, tmp_path_factory):
    """The real app, signed in locally through HF_TOKEN, pushing to the fake Hub; it holds a copy of the run."""
    from gradio_client import Client

    from tests.app_server import AppServer

    home = tmp_path_factory.mktemp("publish_app_home")
    copy = home / "runs" / trained.id
    shutil.copytree(trained.path, copy, ignore=shutil.ignore_patterns("exports", "checkpoints"))
    status = json.loads((copy / "status.json").read_text())
    (copy / "status.json").write_text(json.dumps({**status, "owner": "local"}))
    server = AppServer(home, HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0", HF_ENDPOINT=hub.url, HF_TOKEN=WRITE,
                       GARAGE_CARD_EXAMPLES="0").start()
    yield server, Client(server.url, verbose=False)
    server.stop()


def test_api_download_adapter_and_push_to_hub(app, hub, trained, monkeypatch):
    from gradio_client.exceptions import AppError

    server, client = app
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/download_adapter", "/push_to_hub", "/download_merged", "/download_gguf", "/download_dataset",
            "/push_dataset"} <= names
    path = client.predict(trained.id, api_name="/download_adapter")
    with zipfile.ZipFile(path) as archive:
        assert f"{trained.id}-adapter/adapter_model.safetensors" in archive.namelist()
    gguf_path = Path(client.predict(trained.id, api_name="/download_gguf"))  # llama.cpp's file, in the browser
    assert gguf_path.name == f"{trained.id}-Q8_0.gguf" and gguf_path.read_bytes()[:4] == b"GGUF"
    url = client.predict(trained.id, "tiny-qa-app", ["adapter"], True, False, api_name="/push_to_hub")
    assert url == f"{hub.url}/alice/tiny-qa-app"  # the namespace came from the token (whoami)
    assert "adapter_model.safetensors" in hub.files("alice/tiny-qa-app")
    assert client.predict(trained.id, api_name="/training_status")["pushed"][-1]["url"] == url  # the owner's view
    from garage.jobs import service

    monkeypatch.setenv("SPACE_ID", "me/garage")  # on a shared Space a private repo's name is its pusher's
    monkeypatch.delenv("GARAGE_SINGLE_USER", raising=False)
    assert service.training_status(trained.id, "someone-else")["pushed"] == []
    monkeypatch.delenv("SPACE_ID")
    with pytest.raises(AppError, match="not a valid repo name"):
        client.predict(trained.id, "alice/no..dots", ["adapter"], True, False, api_name="/push_to_hub")
    with pytest.raises(AppError, match="already exists"):
        client.predict(trained.id, "alice/tiny-qa-app", ["adapter"], True, False, api_name="/push_to_hub")


# --- last: the token is nowhere --------------------------------------------------------------------

def test_the_token_is_never_written_or_shown(trained, online, app, home, capsys, caplog):
    import logging
    import tempfile

    from garage.hub import publish
    from garage.secrecy import scrub_tokens

    caplog.set_level(logging.DEBUG)
    messages = []
    online.error_once["create"] = (400, f"Bad request: token {WRITE} may not do that")  # the server echoes it
    with pytest.raises(GarageError) as echoed:
        publish.push_run(trained, "alice/echo", ["adapter"], token=WRITE, examples=0)
    messages.append(str(echoed.value))
    assert "may not do that" in messages[-1] and "hf_***" in messages[-1]
    with pytest.raises(GarageError) as refused:
        publish.push_run(trained, "alice/echo", ["adapter"], token=READ, examples=0)
    messages.append(str(refused.value))
    oauth_like = "hf_oauth_" + "Ab1" * 12
    assert scrub_tokens(f"x {WRITE} y {oauth_like} hf_hub_download") == "x hf_*** y hf_*** hf_hub_download"
    assert scrub_tokens("short custom token", "short custom token") == "hf_***"

    server, _ = app
    captured = capsys.readouterr()
    texts = messages + [caplog.text, captured.out, captured.err]
    places = [home, Path(server.log_path).parent, Path(tempfile.gettempdir()) / "garage-downloads"]
    leaks = []
    for token in (WRITE, READ):
        needle = token.encode()
        for place in places:
            leaks += [str(p) for p in Path(place).rglob("*") if p.is_file() and needle in p.read_bytes()]
        for key, repo in online.repos.items():  # model cards and every other pushed file
            leaks += [f"{key}:{name}" for name, data in repo["files"].items() if needle in data]
        leaks += [text[:80] for text in texts if token in text]
    assert not leaks, leaks
    assert any("Bearer " + WRITE == r["headers"].get("authorization") for r in online.requests)  # it was used
