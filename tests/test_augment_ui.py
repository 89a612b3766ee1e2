"""The Documents -> Q/A panel through the running app: gradio_client against a fake Gemini server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from garage.augment.fakeserver import FakeLLMServer
from tests.app_server import AppServer

pytestmark = pytest.mark.slow

KEY = "AIzaFAKE-ui-key-0123456789-abcdef"
WRONG = "AIzaWRONG-ui-key-9876543210"
SETTINGS = {"num_pairs": 6, "chunk_tokens": 120, "chunk_overlap": 0, "concurrency": 4, "max_retries": 1,
            "retry_base_seconds": 0.01, "request_timeout": 10}


def river_text(paragraphs: int = 3) -> str:
    return "\n\n".join(" ".join(f"Fact {p}.{s} says that the river number {p} carries {s * 7 + p} tonnes of "
                                f"sediment every spring season." for s in range(4)) for p in range(paragraphs))


@pytest.fixture(scope="module")
def fake():
    with FakeLLMServer(valid_keys={KEY}) as server:
        yield server


@pytest.fixture(scope="module")
def app(tmp_path_factory, fake):
    """The real app, its Gemini client pointed at the fake server, GEMINI_API_KEY set on the server side."""
    home = tmp_path_factory.mktemp("augment_ui_home")
    server = AppServer(home, GOOGLE_GEMINI_BASE_URL=fake.url, GEMINI_API_KEY=KEY, GARAGE_SINGLE_USER="1").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app.url, verbose=False)


@pytest.fixture(scope="module")
def doc(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("docs") / "rivers.txt"
    path.write_text(river_text(), encoding="utf-8")
    return path


def upload(*paths):
    from gradio_client import handle_file

    return [handle_file(str(p)) for p in paths]


def test_extract_text_and_plan(client, doc, tmp_path):
    import docx
    from gradio_client.exceptions import AppError

    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/extract_text", "/augment_plan", "/augment", "/curate", "/save_pairs"} <= names
    word = tmp_path / "notes.docx"
    document = docx.Document()
    document.add_paragraph("The lighthouse keeper lights the lamp at dusk every evening.")
    document.save(word)
    out = client.predict(upload(doc, word), api_name="/extract_text")
    assert [d["name"] for d in out] == ["rivers.txt", "notes.docx"]
    assert out[0]["text"] == river_text() and out[0]["chars"] == len(river_text()) and out[0]["warning"] is None
    assert "lighthouse keeper lights the lamp" in out[1]["text"] and "characters" in out[1]["warning"]
    plan = client.predict(upload(doc), SETTINGS, api_name="/augment_plan")
    assert plan["chunks"] >= 2 and plan["llm_calls"] == plan["selected_chunks"] >= 2
    assert plan["est_seconds"] > 0 and plan["est_cost_usd"] is not None and "chunk" in plan["summary"]
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(AppError, match="empty"):
        client.predict(upload(empty), api_name="/extract_text")


def test_augment_returns_pairs_then_resumes(client, fake, doc):
    fake.requests.clear()
    first = client.predict(upload(doc), SETTINGS, "", api_name="/augment")  # empty key: the server's GEMINI_API_KEY
    assert len(first["pairs"]) == 6 and first["complete"] and first["resumed_chunks"] == 0
    assert all(p["question"] and p["answer"] for p in first["pairs"])
    sent = [r for r in fake.requests if r["kind"] == "generate"]
    assert len(sent) == first["total_chunks"] and all(r["key"] == KEY for r in sent)
    again = client.predict(upload(doc), SETTINGS, "", api_name="/augment")
    assert again["resumed_chunks"] == first["total_chunks"]
    assert again["summary"].startswith(f"Resumed {first['total_chunks']} chunk(s).")
    assert again["pairs"] == first["pairs"] and len(fake.requests) == len(sent)  # nothing sent twice


def test_curate_keeps_and_drops_with_reasons(client, doc):
    result = client.predict(upload(doc), SETTINGS, "", api_name="/augment")
    pairs = result["pairs"][:3]
    pairs.append({**pairs[0]})                                                  # a duplicate
    pairs.append({**pairs[1], "question": "Why BAD?", "answer": pairs[1]["answer"] + " BAD"})  # rated 2
    out = client.predict(pairs, {**SETTINGS, "curate_threshold": 7}, "", result["job"], True, api_name="/curate")
    assert len(out["kept"]) == 3 and all(p["rating"] == 9 for p in out["kept"])
    reasons = sorted(p["check"] for p in out["dropped"])
    assert reasons == ["duplicate", "rating"] and "kept 3 of 5" in out["summary"]
    assert any("below the threshold 7" in p["reason"] for p in out["dropped"])
    cheap = client.predict(pairs, SETTINGS, "", "", False, api_name="/curate")  # no rater: cheap checks only
    assert len(cheap["kept"]) == 4 and cheap["stats"]["requests"] == 0


def test_wrong_key_is_a_clear_error_and_the_app_keeps_serving(client, doc):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="key was rejected") as info:
        client.predict(upload(doc), {**SETTINGS, "num_pairs": 5}, WRONG, api_name="/augment")
    assert WRONG not in str(info.value)
    with pytest.raises(AppError, match="key was rejected"):
        client.predict([{"question": "Q?", "answer": "A river carries sediment."}], SETTINGS, WRONG, "", True,
                       api_name="/curate")
    assert client.predict(upload(doc), api_name="/extract_text")[0]["chars"] > 0


def test_save_makes_a_dataset_the_train_tab_lists(client, app, doc, monkeypatch):
    from garage.data.store import list_datasets, load_saved
    from garage.ui import augment_panel

    result = client.predict(upload(doc), SETTINGS, "", api_name="/augment")
    saved = client.predict(result["pairs"], "rivers-qa", False, "Answer briefly.", api_name="/save_pairs")
    assert saved["rows"] == 6 and "rivers-qa" in saved["datasets"]
    monkeypatch.setenv("GARAGE_HOME", app.env["GARAGE_HOME"])
    listed = {d["name"]: d for d in list_datasets("local")}
    assert listed["rivers-qa"]["rows"] == 6 and listed["rivers-qa"]["format"] == "messages"
    first = load_saved("local", "rivers-qa")[0]["messages"]
    assert [m["role"] for m in first] == ["system", "user", "assistant"]
    assert first[1]["content"] == result["pairs"][0]["question"]
    # the panel's own Save: edited cells and unticked rows, then the Train tab's dropdown is refreshed
    rows = augment_panel._pair_rows(result["pairs"][:3])
    rows[0][2] = "An edited answer."
    rows[1][0] = False
    message, update = augment_panel._on_save(rows, "rivers-edited", False, "", None)
    assert "2 conversations" in message and "rivers-edited" in update["choices"]
    edited = load_saved("local", "rivers-edited")
    assert len(edited) == 2 and edited[0]["messages"][-1]["content"] == "An edited answer."
    exported = Path(augment_panel._on_export(rows, "rivers", ""))
    assert [json.loads(x)["messages"][1]["content"] for x in exported.read_text().splitlines()] == \
        ["An edited answer.", result["pairs"][2]["answer"]]
