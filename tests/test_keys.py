"""On a shared Space the server's LLM key is its owner's: visitors bring their own, and it never goes to an address a
visitor typed. The real google-genai client talks to the local fake Gemini server, which records every key it got."""

from __future__ import annotations

import pytest

from garage.augment import AugmentConfig, augment
from garage.config import TrainConfig
from garage.errors import GarageError
from garage.jobs import service
from garage.scoring.judge import Judge
from tests.helpers import conversations

SERVER_KEY = "AIzaSERVER-owner-key-0123456789"
VISITOR_KEY = "AIzaVISITOR-own-key-9876543210"
TEXT = ("The Rhine flows through Basel and Cologne. It reaches the North Sea near Rotterdam. "
        "Barges carry coal and grain along it. ") * 6


@pytest.fixture
def space(llm_server, monkeypatch, tmp_path):
    """A shared Space owned by dora, with her Gemini key as a secret; the client pointed at the fake server."""
    monkeypatch.setenv("SPACE_ID", "dora/gemma-garage")
    monkeypatch.setenv("SPACE_AUTHOR_NAME", "dora")
    monkeypatch.delenv("GARAGE_SINGLE_USER", raising=False)
    monkeypatch.delenv("GARAGE_SHARE_SERVER_KEYS", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", SERVER_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", llm_server.reset().url)
    doc = tmp_path / "rhine.txt"
    doc.write_text(TEXT, encoding="utf-8")
    return llm_server, doc


def settings(**kw) -> AugmentConfig:
    return AugmentConfig(**{"num_pairs": 2, "concurrency": 1, "max_retries": 1, "retry_base_seconds": 0.01,
                            "request_timeout": 10, **kw})


def keys_sent(server) -> set:
    return {r["key"] for r in server.requests}


def test_a_visitor_must_bring_a_key_and_the_owner_need_not(space):
    server, doc = space
    with pytest.raises(GarageError, match="own key.*GARAGE_SHARE_SERVER_KEYS=1"):
        augment([doc], settings(), user="anon-0123456789abcdef")
    assert server.requests == []  # refused before any request
    assert augment([doc], settings(), user="anon-0123456789abcdef", api_key=VISITOR_KEY).pairs
    assert keys_sent(server) == {VISITOR_KEY}
    server.requests.clear()
    assert augment([doc], settings(), user="hf-dora").pairs  # the Space's owner, signed in
    assert keys_sent(server) == {SERVER_KEY}


def test_a_shared_key_never_goes_to_an_address_a_visitor_typed(space, monkeypatch):
    server, doc = space
    monkeypatch.setenv("GARAGE_SHARE_SERVER_KEYS", "1")
    assert augment([doc], settings(), user="hf-someone").pairs  # shared, to the provider's own endpoint
    assert keys_sent(server) == {SERVER_KEY}
    server.requests.clear()
    with pytest.raises(GarageError, match="only to the provider's own endpoint"):
        augment([doc], settings(base_url=server.url, model="x"), user="hf-someone", job="typed")
    assert server.requests == []


def test_the_judge_refuses_a_visitor_before_a_run_is_queued(space, tmp_path):
    from garage.data.store import save_dataset

    cfg = TrainConfig(model="tiny-gemma-3", dataset="qa", method="grpo", rewards=["judge"], reward_weights=[1.0],
                      rubric="Correct and short.")
    with pytest.raises(GarageError, match="verifiable rewards"):
        Judge.from_config(cfg, owner="anon-0123456789abcdef")
    save_dataset("anon-0123456789abcdef", "qa", conversations() * 4)
    runs_before = len(service.list_runs())
    with pytest.raises(GarageError, match="verifiable rewards"):
        service.start_training(cfg, "anon-0123456789abcdef")
    assert len(service.list_runs()) == runs_before
    assert Judge.from_config(cfg, owner="hf-dora").backend == "gemini"


def test_off_a_space_the_keys_are_the_users_own(llm_server, monkeypatch, tmp_path):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", SERVER_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", llm_server.reset().url)
    doc = tmp_path / "rhine.txt"
    doc.write_text(TEXT, encoding="utf-8")
    assert augment([doc], settings(), user="local").pairs and keys_sent(llm_server) == {SERVER_KEY}


def test_an_organisations_members_may_be_named_and_no_server_key_means_nothing_to_guard(space, monkeypatch):
    server, doc = space
    monkeypatch.setenv("SPACE_AUTHOR_NAME", "acme-labs")  # a Space owned by an organisation
    with pytest.raises(GarageError, match="own key"):
        augment([doc], settings(), user="hf-dora")
    monkeypatch.setenv("GARAGE_KEY_USERS", "bob, dora")
    assert augment([doc], settings(), user="hf-dora", job="org").pairs and keys_sent(server) == {SERVER_KEY}
    monkeypatch.delenv("GEMINI_API_KEY")
    with pytest.raises(GarageError, match="No Gemini API key"):  # the backend's own message: nothing to spend
        augment([doc], settings(), user="anon-0123456789abcdef", job="keyless")
