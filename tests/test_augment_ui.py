"""The Documents -> Q/A panel through the running app: gradio_client against a fake Gemini server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from garage.ui import augment_api, augment_jobs
from tests.fake_llm import FakeLLMServer
from tests.app_server import AppServer, free_port

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
    # the job by name, without its files: done already, so nothing is sent
    kept = client.predict(first["job"], {**SETTINGS, "num_pairs": 50}, "", api_name="/continue_augment")
    assert kept["pairs"] == first["pairs"] and kept["resumed_chunks"] == first["total_chunks"]
    assert len(fake.requests) == len(sent)
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="No augment job named 'nope'"):
        client.predict("nope", SETTINGS, "", api_name="/continue_augment")


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
    rows = augment_jobs.pair_rows(result["pairs"][:3])
    rows[0][2] = "An edited answer."
    rows[1][0] = False
    message, update = augment_panel._on_save(rows, "rivers-edited", False, "", None)
    assert "2 conversations" in message and "rivers-edited" in update["choices"]
    edited = load_saved("local", "rivers-edited")
    assert len(edited) == 2 and edited[0]["messages"][-1]["content"] == "An edited answer."
    exported = Path(augment_panel._on_export(rows, "rivers", ""))
    assert [json.loads(x)["messages"][1]["content"] for x in exported.read_text().splitlines()] == \
        ["An edited answer.", result["pairs"][2]["answer"]]


# --- a failed Generate or Curate leaves its reason on the page, not only in a pop-up that fades ---------

def no_progress(*args, **kwargs):
    pass


def form_values(**changes) -> list:
    """The panel's settings controls, in their order, as the buttons send them."""
    import dataclasses

    from garage.augment.config import AugmentConfig
    from garage.ui.augment_panel import NAMES

    values = dataclasses.asdict(AugmentConfig.from_dict({**SETTINGS, **changes}))
    return [values[n] for n in NAMES]


@pytest.fixture
def panel(fake, monkeypatch):
    """The panel's handlers in this process, their Gemini client pointed at the fake server."""
    from garage.ui import augment_panel

    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake.url)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    return augment_panel


def generate(panel, files, api_key="", **changes):
    return panel._on_generate(None, None, no_progress, [str(f) for f in files], [], api_key, *form_values(**changes))


def kept_as_it_was(outputs) -> bool:
    return all(isinstance(o, dict) and o.get("__type__") == "update" and len(o) == 1 for o in outputs)


def test_refused_key_leaves_a_status_saying_so_and_where_to_set_one(panel, doc):
    out = generate(panel, [doc], WRONG, num_pairs=5)
    status = out[-1]
    assert status.startswith("⚠️ **Generate failed.**") and "key was rejected" in status
    assert "**API key** box" in status and "GEMINI_API_KEY" in status
    assert WRONG not in status and KEY not in status
    assert kept_as_it_was(out[:-1])  # the pairs and tables already on the page stay
    pairs = [{"question": "Q?", "answer": "A river carries sediment."}]
    out = panel._on_curate(None, None, no_progress, pairs, "", WRONG, True, *form_values())
    assert out[-1].startswith("⚠️ **Curate failed.**") and "key was rejected" in out[-1]
    assert "**API key** box" in out[-1] and WRONG not in out[-1] and kept_as_it_was(out[:-1])


def test_unreadable_document_leaves_a_status_naming_it_and_the_accepted_formats(panel, doc, tmp_path):
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(b"not a pdf at all")
    status = generate(panel, [scan])[-1]
    assert status.startswith("⚠️ **Generate failed.**") and "scan.pdf is not a PDF" in status
    assert "Accepted: .docx" in status and ".pdf" in status and ".txt" in status
    old = tmp_path / "minutes.doc"
    old.write_bytes(b"\xd0\xcf\x11\xe0 old word")
    status = generate(panel, [old])[-1]
    assert "minutes.doc" in status and "save it as .docx" in status and "Accepted:" in status
    assert "Add at least one document" in generate(panel, [])[-1]
    # one good document among bad ones: the pairs come, and the status says what was skipped and why
    out = generate(panel, [doc, scan])
    assert len(out[0]) == 6 and "Skipped (not readable): scan.pdf is not a PDF" in out[-1]
    # the upload itself lists the reason per file and the plan line says nothing is readable
    files = panel._on_files([str(scan)])
    assert files[1][0][0] == "scan.pdf" and "not a PDF" in files[1][0][2]
    assert panel._on_plan(files[0], *form_values()).startswith("⚠️ No document could be read. scan.pdf")


def test_no_key_ever_reaches_the_status(panel, monkeypatch):
    from garage.errors import GarageError

    def leaky(*args, **kwargs):
        raise GarageError(f"The endpoint said: key {WRONG} and server key {KEY} are bad.")

    assert "No pairs to curate" in panel._on_curate(None, None, no_progress, [], "", "", True, *form_values())[-1]

    monkeypatch.setattr(augment_api, "curate_rated", leaky)
    status = panel._on_curate(None, None, no_progress, [{"question": "Q?", "answer": "A."}], "", WRONG, True,
                              *form_values())[-1]
    assert "Curate failed." in status and "key *** and server key ***" in status
    assert WRONG not in status and KEY not in status

    def broken(*args, **kwargs):
        raise RuntimeError(f"a bug holding {WRONG}")

    monkeypatch.setattr(augment_api, "curate_rated", broken)
    status = panel._on_curate(None, None, no_progress, [{"question": "Q?", "answer": "A."}], "", WRONG, True,
                              *form_values())[-1]
    assert "Unexpected error (RuntimeError)" in status and "server log" in status and WRONG not in status


def test_unreachable_server_leaves_a_status_saying_so(panel, tmp_path):
    long = tmp_path / "long.txt"
    long.write_text(river_text(6), encoding="utf-8")
    out = generate(panel, [long], WRONG, base_url=f"http://127.0.0.1:{free_port()}", max_retries=0)
    assert out[-1].startswith("⚠️ **Generate failed.** The Gemini endpoint could not be reached")
    assert "check the address" in out[-1] and "run again" in out[-1] and WRONG not in out[-1]


def test_earlier_jobs_are_listed_on_page_load_and_a_chosen_one_fills_the_table(panel, doc, tmp_path, monkeypatch):
    """After a reload the panel lists the user's jobs; choosing one brings its pairs back for Curate and Save."""
    import gradio as gr

    from garage import files
    from garage.augment.pipeline import GENERATING, job_dir_for

    monkeypatch.setenv("GARAGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SPACE_ID", raising=False)
    with gr.Blocks():
        on_page_load, outputs = panel.build(gr.Dropdown())
    assert outputs[0].label.startswith("Earlier jobs")

    def on_load(request):
        return on_page_load(request)[0]

    assert on_load(None)["choices"] == []
    made = generate(panel, [doc])
    job = made[1]
    choices = on_load(None)["choices"]
    assert len(choices) == 1 and choices[0][1] == job
    assert choices[0][0].startswith(job) and "chunks · 6 pairs" in choices[0][0]
    assert "generating" not in choices[0][0]
    pairs, name, rows, dropped, dropdown, timer, following, status = augment_jobs.on_job(job, None)
    assert pairs == made[0] and name == job and rows == made[2] and dropped == [] and dropdown["value"] is None
    assert status.startswith(f"Job `{job}`: 6 pairs from") and "chunks." in status
    assert timer.active is False and following == ""  # a finished job is not followed

    state, held = files.try_lock(job_dir_for("local", job) / GENERATING)  # a Generate still running
    try:
        assert state == "mine" and on_load(None)["choices"][0][0].endswith(" · generating")
        *_, timer, following, status = augment_jobs.on_job(job, None)
        assert "is generating" in status and "follows it" in status and timer.active and following == job
    finally:
        files.release(held)
    assert "No augment job named" in augment_jobs.on_job("someone-elses", None)[-1]
    monkeypatch.setenv("SPACE_ID", "owner/space")  # a shared Space: an anonymous visitor is another user
    monkeypatch.delenv("GARAGE_SINGLE_USER", raising=False)
    assert on_load(None)["choices"] == []


def test_a_reloaded_page_follows_a_running_generate_stops_it_and_continues_it(panel, fake, tmp_path, monkeypatch):
    """A reload (or a second tab) finds the Generate still running: the status line follows its chunks, Stop on
    the new page stops it, and its pairs come into the table when it ends."""
    import threading
    import time
    from types import SimpleNamespace

    import gradio as gr

    from garage.augment import list_jobs
    from garage.errors import GarageError

    monkeypatch.setenv("GARAGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SPACE_ID", raising=False)
    long = tmp_path / "long.txt"
    long.write_text(river_text(12), encoding="utf-8")
    first, reloaded = SimpleNamespace(session_hash="first-page"), SimpleNamespace(session_hash="reloaded-page")
    fake.latency = 0.4
    try:
        outputs = []
        started = threading.Thread(target=lambda: outputs.append(panel._on_generate(
            first, None, no_progress, [str(long)], [], "", *form_values(num_pairs=24, concurrency=2))))
        started.start()
        deadline = time.monotonic() + 30
        while not any(j["generating"] and j["done_chunks"] for j in list_jobs("local")):
            assert time.monotonic() < deadline and started.is_alive(), outputs
            time.sleep(0.05)
        with gr.Blocks():
            on_page_load, _ = panel.build(gr.Dropdown())
        dropdown, status, timer, job = on_page_load(reloaded)
        assert job and timer.active and f"Job `{job}` is generating" in status and "chunks so far" in status
        *kept, status = augment_jobs.on_follow_tick(job, reloaded)
        assert kept_as_it_was(kept) and "is generating" in status  # counts only: the table waits for the end
        *kept, timer, following, status = augment_jobs.on_job(job, reloaded)  # chosen under Earlier jobs: followed
        assert kept_as_it_was(kept[:4]) and timer.active and following == job and "is generating" in status
        status = panel._on_continue(reloaded, None, no_progress, "", job, "", *form_values())[-1]
        assert f"Job `{job}` is still generating; its pairs come into the table when it ends" in status
        augment_jobs.on_stop(job, reloaded)  # this page never pressed Generate: the job's own signal stops it
        started.join(30)
        assert not started.is_alive() and outputs[0][-1].startswith("⚠️ **Generate stopped early.**")
    finally:
        fake.latency = 0.0
    pairs, name, rows, dropped, dropdown, timer, following, status = augment_jobs.on_follow_tick(job, reloaded)
    assert pairs == outputs[0][0] and 0 < len(pairs) < 24 and name == job and len(rows) == len(pairs)
    assert timer.active is False and following == "" and status.startswith(f"Job `{job}`: {len(pairs)} pairs")
    assert "**Continue the chosen job** generates the rest" in status
    assert "Why it stopped: Stopped." in status  # kept in the job folder, for any later page
    assert augment_jobs.on_follow_tick("", reloaded)[-3].active is False  # nothing followed: the timer goes off
    *_, timer, following, status = augment_jobs.on_follow_tick("deleted-meanwhile", reloaded)
    assert timer.active is False and following == "" and "no longer in your workspace" in status

    def damaged(user, name):
        raise GarageError(f"The pairs of {name} do not parse.")

    with monkeypatch.context() as patch:  # a failing tick says so once, and stops following
        patch.setattr("garage.augment.pipeline.open_job", damaged)
        *kept, timer, following, status = augment_jobs.on_follow_tick(job, reloaded)
    assert kept_as_it_was(kept) and timer.active is False and following == ""
    assert status.startswith("⚠️ **Following the job failed.** The pairs of") and "do not parse" in status

    # Continue: the rest of the job from the texts it kept, with its own settings (not the form's 50 pairs)
    sent = {r["prompt"] for r in fake.requests if r["kind"] == "generate"}
    fake.requests.clear()
    pairs, name, rows, dropped, status = panel._on_continue(reloaded, None, no_progress, job, "", "",
                                                            *form_values(num_pairs=50, concurrency=4))
    assert name == job and len(pairs) == 24 and pairs[:len(outputs[0][0])] == outputs[0][0]
    assert status.startswith("Resumed ") and f"job `{job}`" in status
    again = [r["prompt"] for r in fake.requests if r["kind"] == "generate"]
    assert again and not sent & set(again)  # only the chunks not done before were sent
    assert "Choose an unfinished job under Earlier jobs" in panel._on_continue(reloaded, None, no_progress, "", "", "",
                                                                               *form_values())[-1]


def test_curating_with_an_unknown_job_leaves_no_empty_job_behind():
    from garage.augment import pipeline
    from garage.errors import GarageError

    with pytest.raises(GarageError, match="No augment job named 'nope'"):
        augment_api.job_chunks("visitor-x", "nope")
    assert pipeline.existing_job_dir("visitor-x", "nope") is None


def test_a_generate_whose_every_chunk_failed_is_flagged_not_a_plain_status(tmp_path):
    from garage.augment.pipeline import AugmentResult

    result = AugmentResult(job_dir=tmp_path / "job-1", pairs=[], chunks=[], total_chunks=2, done_chunks=0,
                           resumed_chunks=0, failed=[{"chunk": 0, "error": "reply is not valid JSON"},
                                                     {"chunk": 1, "error": "local model reply is not valid JSON"}])
    with pytest.warns(UserWarning, match="No pairs: 2 chunk"):  # gr.Warning outside a request: a warning
        status = augment_jobs.job_outputs(result, "", "")[-1]
    assert status.startswith("⚠️ 0 pair(s)") and "local model reply is not valid JSON" in status
