"""The three backends against real clients: google-genai and openai on local fake servers, a tiny local model."""

from __future__ import annotations

import time

import pytest

from garage.augment import (AugmentConfig, AuthError, GeminiBackend, OpenAIBackend, ParseFailure, QuotaError,
                            RequestCapError, ServiceError, augment, make_backend)
from garage.llm import parse_json_lenient
from tests.fake_llm import Reply, rate_limited, server_error
from garage.errors import GarageError

KEY = "test-key-ABCDEF-0123456789"
SCHEMA = {"type": "object", "properties": {"pairs": {"type": "array", "items": {
    "type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}}}}}}
PROMPT = "Write exactly 2 question-answer pairs.\n<document>\nOwls hunt at night. Bees make honey.\n</document>"


@pytest.fixture
def fake(llm_server, monkeypatch):
    server = llm_server.reset()
    monkeypatch.delenv("GOOGLE_GEMINI_BASE_URL", raising=False)
    return server


def gemini(fake, **kw) -> GeminiBackend:
    opts = dict(api_key=KEY, base_url=fake.url, max_retries=3, retry_base=0.01, timeout=5)
    opts.update(kw)
    return GeminiBackend("gemini-2.5-flash", **opts)


def openai_backend(fake, **kw) -> OpenAIBackend:
    opts = dict(api_key=KEY, base_url=fake.openai_url, max_retries=3, retry_base=0.01, timeout=5)
    opts.update(kw)
    return OpenAIBackend("served-model", **opts)


# --- Gemini -------------------------------------------------------------------------

def test_gemini_structured_output_and_base_url_from_env(fake, monkeypatch):
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake.url)
    backend = make_backend(AugmentConfig(model="gemini-2.5-flash-lite"), api_key=KEY)
    data = backend.generate_json(PROMPT, SCHEMA, system="Be exact.")
    assert [p["answer"] for p in data["pairs"]] == ["Owls hunt at night.", "Bees make honey."]
    [req] = fake.requests
    assert req["model"] == "gemini-2.5-flash-lite" and req["system"] == "Be exact." and req["key"] == KEY
    config = req["body"]["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"]["properties"]["pairs"]["type"] == "ARRAY"
    assert backend.stats.requests == 1 and backend.stats.input_tokens > 0
    assert backend.generate_text("Say hi <document>\nHi there.\n</document>")  # plain text works too


def test_gemini_429_waits_as_retry_after_says(fake):
    backend = gemini(fake)
    fake.script += [rate_limited("1")]
    started = time.monotonic()
    assert backend.generate_json(PROMPT, SCHEMA)["pairs"]
    assert time.monotonic() - started >= 0.95
    assert backend.stats.retries == 1 and backend.stats.rate_limited == 1 and backend.stats.requests == 2
    fake.script += [rate_limited(None), rate_limited(None)]  # no Retry-After: exponential back-off
    backend = gemini(fake, retry_base=0.1)
    assert backend.generate_json(PROMPT, SCHEMA)["pairs"]
    assert backend.stats.retries == 2 and 0.75 * 0.3 <= backend.stats.waited_seconds <= 1.25 * 0.3  # 0.1 + 0.2


def test_gemini_retries_5xx_and_timeouts_then_gives_up(fake):
    fake.script += [server_error(500), server_error(503)]
    backend = gemini(fake)
    assert backend.generate_json(PROMPT, SCHEMA)["pairs"] and backend.stats.retries == 2
    fake.script += [Reply(text="{}", delay=2.0)]  # slower than the 0.5 s time-out
    backend = gemini(fake, timeout=0.5)
    started = time.monotonic()
    assert backend.generate_json(PROMPT, SCHEMA)["pairs"]
    assert backend.stats.retries == 1 and time.monotonic() - started < 1.9
    fake.rule = lambda r: server_error(500)
    with pytest.raises(ServiceError, match=r"failed with HTTP 500 \(on 3 attempts in a row\)"):
        gemini(fake, max_retries=2).generate_json(PROMPT, SCHEMA)
    with pytest.raises(QuotaError, match="quota is exhausted"):
        fake.rule = lambda r: rate_limited("0")
        gemini(fake, max_retries=2).generate_json(PROMPT, SCHEMA)
    fake.rule = lambda r: server_error(500)
    with pytest.raises(RequestCapError, match="cap of 2 requests"):
        gemini(fake, max_retries=5, max_requests=2).generate_json(PROMPT, SCHEMA)


def test_gemini_malformed_json_is_counted_not_fatal(fake):
    backend = gemini(fake)
    fake.script += [Reply(text='{"pairs": [{"question": "Q?", "answer": '), Reply(text="")]
    for _ in range(2):
        with pytest.raises(ParseFailure):
            backend.generate_json(PROMPT, SCHEMA)
    assert backend.stats.parse_failures == 2
    fake.script += [Reply(text='Sure! ```json\n{"pairs": [{"question": "Q?", "answer": "A."}]}\n``` Done.')]
    assert backend.generate_json(PROMPT, SCHEMA) == {"pairs": [{"question": "Q?", "answer": "A."}]}
    fake.script += [Reply(raw=b"<html>not json at all</html>")]  # a broken proxy
    with pytest.raises(Exception):
        backend.generate_json(PROMPT, SCHEMA)


def test_gemini_wrong_key_says_so(fake):
    fake.valid_keys = {"another"}
    with pytest.raises(AuthError, match="The Gemini key was rejected") as info:
        gemini(fake).generate_json(PROMPT, SCHEMA)
    assert KEY not in str(info.value) and len(fake.requests) == 1  # no retry on a bad key
    fake.valid_keys = None
    fake.script += [Reply(403, error=f"Permission denied for {KEY}")]
    with pytest.raises(AuthError, match="The Gemini key was rejected") as info:
        gemini(fake).generate_json(PROMPT, SCHEMA)
    assert KEY not in str(info.value)


def test_lenient_json_parser():
    assert parse_json_lenient('[{"a": 1}]') == [{"a": 1}]
    assert parse_json_lenient('Here you go: {"pairs": []} and {"x": 1}') == {"pairs": []}
    assert parse_json_lenient('text {"pairs": [{"q": 1}]} tail') == {"pairs": [{"q": 1}]}
    for bad in ("", "   ", "no json here", "{broken"):
        with pytest.raises(ValueError):
            parse_json_lenient(bad)


# --- OpenAI-compatible -----------------------------------------------------------------

def test_openai_compatible_json_mode_retries_and_auth(fake):
    backend = openai_backend(fake)
    data = backend.generate_json(PROMPT, SCHEMA, system="Be exact.")
    assert len(data["pairs"]) == 2
    [req] = fake.requests
    assert req["api"] == "openai" and req["model"] == "served-model" and req["key"] == KEY
    assert req["body"]["response_format"] == {"type": "json_object"} and req["system"] == "Be exact."
    fake.script += [Reply(429, error="slow down", headers={"Retry-After": "0.2"}), server_error(502)]
    assert backend.generate_json(PROMPT, SCHEMA)["pairs"] and backend.stats.retries == 2
    fake.script += [Reply(text="not json")]
    with pytest.raises(ParseFailure):
        backend.generate_json(PROMPT, SCHEMA)
    fake.valid_keys = {"other"}
    with pytest.raises(AuthError, match="rejected the API key") as info:
        backend.generate_json(PROMPT, SCHEMA)
    assert KEY not in str(info.value)
    # a server that does not know response_format: asked again without it
    fake.valid_keys = None
    fake.script += [Reply(400, error="Unknown parameter: response_format")]
    assert openai_backend(fake).generate_json(PROMPT, SCHEMA)["pairs"]
    assert "response_format" not in fake.requests[-1]["body"]


def test_openai_compatible_pipeline(fake, tmp_path):
    doc = tmp_path / "notes.md"
    doc.write_text("\n\n".join(f"Note {i}: the pump number {i} moves {i * 10} litres per minute." for i in range(6)))
    config = AugmentConfig(backend="openai", model="served-model", base_url=fake.openai_url, num_pairs=6,
                           chunk_tokens=64, chunk_overlap=0, concurrency=3)
    result = augment([doc], config, api_key=KEY)
    assert result.complete and len(result.pairs) == 6 and {r["api"] for r in fake.requests} == {"openai"}


def test_openai_needs_a_base_url():
    with pytest.raises(GarageError, match="base URL"):
        AugmentConfig(backend="openai", model="m").validate()


# --- local model ---------------------------------------------------------------------------

@pytest.mark.slow
def test_local_model_runs_and_counts_parse_failures(tmp_path):
    from garage.offline_models import build_tiny_gemma

    folder = build_tiny_gemma()
    doc = tmp_path / "tiny.txt"
    doc.write_text("The sky is blue. Grass is green.\n\nWater is wet. Fire is hot.")
    config = AugmentConfig(backend="local", model=str(folder), num_pairs=2, chunk_tokens=64, chunk_overlap=0,
                           max_output_tokens=16, concurrency=4)
    backend = make_backend(config)
    text = backend.generate_text("Say something.", max_tokens=8)
    assert isinstance(text, str)
    result = augment([doc], config, backend=backend)  # random weights: garbage out, counted, no crash
    assert result.total_chunks == 1
    assert result.parse_failures == 1 and len(result.failed) == 1 and result.pairs == []
    assert "not valid JSON" in result.failed[0]["error"] and not result.complete
    with pytest.raises(GarageError, match="folder not found"):
        make_backend(AugmentConfig(backend="local", model=str(tmp_path / "nope")))
    with pytest.raises(GarageError, match="no config.json"):
        make_backend(AugmentConfig(backend="local", model=str(tmp_path)))


@pytest.mark.slow
def test_local_model_answers_concurrent_requests_in_shared_batches():
    """The pipeline's threads ask at once; the model answers them in fewer generate() calls, each reply the same
    as when asked alone (greedy), and its tokens counted per request."""
    from concurrent.futures import ThreadPoolExecutor

    from garage.offline_models import build_tiny_gemma

    backend = make_backend(AugmentConfig(backend="local", model=str(build_tiny_gemma())))
    prompts = [f"Question {i}: {'what is the colour of the sky ' * (i + 1)}?" for i in range(8)]
    alone = [backend.generate_text(p, temperature=0.0, max_tokens=12) for p in prompts]
    calls, tokens = backend.generator.generate_calls, backend.stats.output_tokens
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda p: backend.generate_text(p, temperature=0.0, max_tokens=12), prompts))
    assert together == alone  # left padding changes nothing a row says
    assert backend.generator.generate_calls - calls <= 4  # 8 requests, a first alone, then the rest together
    assert backend.stats.output_tokens - tokens == tokens and backend.stats.requests == 16
    with ThreadPoolExecutor(2) as pool:  # other settings never share a batch (another length, another temperature)
        short, long = pool.map(lambda n: backend.generate_text(prompts[0], temperature=0.0, max_tokens=n), (3, 12))
    assert long == alone[0] and long.startswith(short)


@pytest.mark.slow
def test_a_batch_that_fails_is_answered_row_by_row_and_equal_prompts_all_run():
    from concurrent.futures import ThreadPoolExecutor

    from garage.llm.local_batch import BatchedGenerator
    from garage.offline_models import build_tiny_gemma

    backend = make_backend(AugmentConfig(backend="local", model=str(build_tiny_gemma())))
    real, model = backend.generator, backend.generator.model

    class FailsOnBatches:  # a model that runs out of memory on more than one row
        generation_config = model.generation_config

        def generate(self, **kwargs):
            if kwargs["input_ids"].shape[0] > 1:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return model.generate(**kwargs)

    generator = BatchedGenerator(FailsOnBatches(), real.tokenizer, real.device, max_rows=4)
    messages = [{"role": "user", "content": "The same question."}]
    with ThreadPoolExecutor(6) as pool:  # six equal requests, more than one batch holds
        replies = list(pool.map(lambda _: generator.complete(messages, 6, 0.0), range(6)))
    alone = real.complete(messages, 6, 0.0)
    assert replies == [alone] * 6  # every request answered, none lost or failed
    assert generator.max_rows < 4  # after running out of memory it asks for smaller batches


def test_an_offline_machine_is_told_the_address_does_not_resolve(monkeypatch):
    """No network: the real clients fail to resolve the host; the message says so instead of 'run again later'."""
    from garage.augment import AugmentConfig, ServiceError, make_backend

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)  # a proxy would answer for the host (.invalid never resolves)
    for backend, url in (("gemini", ""), ("openai", "http://no-such-host.invalid/v1")):
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", "http://no-such-host.invalid")
        cfg = AugmentConfig(backend=backend, base_url=url, model="m", max_retries=1, retry_base_seconds=0.01)
        with pytest.raises(ServiceError, match="does not resolve from this machine .no network connection"):
            make_backend(cfg, api_key="AIzaFAKE-offline-key-0123456789").generate_json("Hi", {"type": "object"})
