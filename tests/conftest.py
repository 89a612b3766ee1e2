"""Shared test set-up: offline, and every test session gets its own GARAGE_HOME."""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session", autouse=True)
def garage_home(tmp_path_factory):
    """A private GARAGE_HOME for the whole test session (the tiny model is built once in it)."""
    home = tmp_path_factory.mktemp("garage_home")
    os.environ["GARAGE_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def trained_run(garage_home, tmp_path_factory):
    """One LoRA run of "alice" that memorised ``helpers.QA`` (tiny_config: 30 steps), trained once for the whole
    session. Tests that only read it share it; a module that changes it, or needs it in a store of its own, takes a
    copy (``helpers.copy_run``)."""
    from garage.jobs.store import RunStore
    from garage.jobs.worker import Worker
    from tests.helpers import conversations, tiny_config, write_jsonl

    folder = tmp_path_factory.mktemp("trained")
    data = write_jsonl(folder / "qa.jsonl", conversations())
    worker = Worker(RunStore(folder / "runs"))
    run_id = worker.submit(tiny_config(str(data)), "alice")
    assert worker.wait_idle(300)
    run = worker.store.get(run_id)
    assert run.status()["state"] == "completed", run.log_tail()
    return run


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The real app (`python app.py`) on a free port, with a 1 MB upload limit to test refusals."""
    from tests.app_server import AppServer

    app = AppServer(tmp_path_factory.mktemp("app_home"), GARAGE_MAX_UPLOAD_MB=1).start()
    yield app
    app.stop()


@pytest.fixture(scope="session")
def client(server):
    from gradio_client import Client

    return Client(server.url, verbose=False)


@pytest.fixture(scope="session")
def llm_server():
    """A local server speaking the Gemini and OpenAI REST APIs (tests.fake_llm)."""
    from tests.fake_llm import FakeLLMServer

    with FakeLLMServer() as srv:
        yield srv
