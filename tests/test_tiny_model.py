"""The offline tiny Gemma 3: real architecture and template, deterministic, fast to build."""

import time

from garage.offline_models import TINY_NAME, build_tiny_gemma, folder_fingerprint


def test_builds_fast_and_deterministically(tmp_path):
    start = time.perf_counter()
    first = build_tiny_gemma(tmp_path / "a")
    took = time.perf_counter() - start
    second = build_tiny_gemma(tmp_path / "b")
    assert folder_fingerprint(first) == folder_fingerprint(second)
    assert took < 15  # the issue asks < 5 s on a quiet 2-core machine; leave room for a loaded CI box


def test_is_a_gemma3_with_gemmas_chat_template(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    folder = build_tiny_gemma(tmp_path / "m")
    assert AutoConfig.from_pretrained(folder).model_type == "gemma3_text"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello."}], tokenize=False)
    assert text == ("<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
                    "<start_of_turn>model\nHello.<end_of_turn>\n")
    for token in ("<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<pad>"):
        assert tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id


def test_default_location_is_cached():
    first = build_tiny_gemma()
    assert first.name == TINY_NAME
    stamp = (first / "model.safetensors").stat().st_mtime
    assert build_tiny_gemma() == first and (first / "model.safetensors").stat().st_mtime == stamp
