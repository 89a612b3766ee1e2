"""The running app through a real gradio_client: data in, bad input refused, training, compare."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.helpers import QA, conversations, wait_for, write_jsonl

pytestmark = pytest.mark.slow


def preview(client, path="", hub_id="", **kwargs):
    from gradio_client import handle_file

    args = dict(upload=handle_file(str(path)) if path else None, hub_id=hub_id, hub_config="", hub_split="train",
                user_col="", assistant_col="", system_col="", model="tiny-gemma-3", max_seq_length=256)
    args.update(kwargs)
    return client.predict(*args.values(), api_name="/preview_dataset")


def test_page_serves_fast_without_heavy_imports(server):
    assert server.startup_seconds < 30  # the note records the quiet-machine number (bench/bench_startup.py)
    html = urllib.request.urlopen(server.url, timeout=5).read().decode()
    assert "Gemma Garage" in html


def test_api_names_are_published(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    for name in ("/preview_dataset", "/save_dataset", "/start_training", "/training_status", "/stop_training",
                 "/list_runs", "/chat_compare", "/chat_compare_stream", "/chat_stream"):
        assert name in names


@pytest.mark.parametrize("suffix, make", [
    (".jsonl", lambda p: write_jsonl(p, conversations())),
    (".json", lambda p: p.write_text(json.dumps([{"question": q, "answer": a} for q, a in QA]))),
    (".csv", lambda p: p.write_text("instruction,input,output\n" + "".join(f'"{q}",,"{a}"\n' for q, a in QA))),
])
def test_preview_recognises_formats(client, tmp_path, suffix, make):
    path = tmp_path / f"data{suffix}"
    make(path)
    report, summary, table, chat = preview(client, path)
    assert report["rows"] == 4
    assert report["first_rows"][0]["messages"][-1]["content"] == QA[0][1]
    assert report["stats"]["tokens"]["method"] != "estimate"  # counted with tiny-gemma-3's tokenizer
    # the split the Train tab will make with this model's preset: tiny-gemma-3 holds nothing out
    assert "4 conversations" in summary and "eval_fraction 0.0 " in summary and "4 train / 0 eval rows" in summary
    summary = preview(client, path, model="google/gemma-3-1b-it", max_seq_length=None)[1]
    assert "eval_fraction 0.1 " in summary and "3 train / 1 eval rows" in summary


@pytest.mark.parametrize("content, expected", [
    (b"", "empty"),
    (b'{"question": "a", "answer": "b"}\n{"question": broken\n', "line 2"),
    (b'[{"colour": "red", "size": 3}]', "colour"),
    (b'question,answer\n"caf\xe9",x\n', "UTF-8"),
])
def test_bad_files_get_clear_errors_and_the_app_keeps_serving(client, tmp_path, content, expected):
    from gradio_client.exceptions import AppError

    name = "bad.csv" if content.startswith(b"question,") else ("bad.jsonl" if b"broken" in content else "bad.json")
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AppError, match=expected):
        preview(client, path)
    ok = tmp_path / "ok.jsonl"
    assert preview(client, write_jsonl(ok, conversations()))[0]["rows"] == 4


def test_ragged_csv_and_oversized_upload_and_missing_hub_dataset(client, tmp_path):
    from gradio_client.exceptions import AppError

    ragged = tmp_path / "ragged.csv"
    ragged.write_text("question,answer\nq1,a1\nq2,a2,extra\n")
    with pytest.raises(AppError, match="line 3"):
        preview(client, ragged)
    big = tmp_path / "big.jsonl"
    big.write_text(json.dumps({"question": "q", "answer": "x" * (2 * 1024 * 1024)}))
    with pytest.raises(AppError, match="MB"):
        preview(client, big)
    with pytest.raises(AppError, match="(?i)offline|unreachable|reach"):
        preview(client, hub_id="nobody/no-such-dataset")


def test_save_then_train_then_compare_through_the_api(client, tmp_path):
    from gradio_client import handle_file

    path = write_jsonl(tmp_path / "qa.jsonl", conversations())
    message, _ = client.predict(handle_file(str(path)), "", "", "train", "", "", "", "my-qa", False,
                                api_name="/save_dataset")
    assert "my-qa" in message and "4 conversations" in message
    config = {"model": "tiny-gemma-3", "dataset": "my-qa", "learning_rate": 2e-3, "num_train_epochs": 30,
              "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "eval_fraction": 0.0,
              "lora_alpha": 32, "save_steps": 100}
    run_id = client.predict(config, api_name="/start_training")
    status = wait_for(lambda: (s := client.predict(run_id, api_name="/training_status"))["state"]
                      in ("completed", "failed", "stopped") and s, timeout=300, interval=1, what="training")
    assert status["state"] == "completed", status
    assert status["step"] == status["total_steps"] == 30
    assert status["command"].startswith("python -m garage train ")
    metrics = client.predict(run_id, api_name="/training_metrics")
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert losses[-1] < losses[0] / 10
    assert any(r["id"] == run_id and r["mine"] for r in client.predict(api_name="/list_runs"))

    result = client.predict(QA[0][0], run_id, "", 24, 0.0, 0.95, 64, 1.0, -1, api_name="/chat_compare")
    assert result["tuned"] == QA[0][1]
    assert result["base"] != result["tuned"]

    # streamed, for a run started after this client loaded the page (the page's picker never listed it)
    job = client.submit(QA[1][0], run_id, "", 24, 0.0, 0.95, 64, 1.0, -1, api_name="/chat_stream")
    parts = list(job)
    assert parts[-1]["done"] and parts[-1]["tuned"] == QA[1][1] and parts[-1]["tuned_speed"]
    growing = [part["tuned"] for part in parts[:-1] if part["tuned"]]
    assert len(growing) > 1 and all(QA[1][1].startswith(text) for text in growing)


def test_unknown_run_is_explained(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="No run named"):
        client.predict("no-such-run", api_name="/training_status")


def test_a_long_answer_is_cut_in_the_preview_table_and_whole_in_its_chat_view():
    from garage.ui.data_tab import _chat_of, _table_of

    long = "word " * 6000
    row = {"messages": [{"role": "user", "content": "Say word a lot."}, {"role": "assistant", "content": long}]}
    cell = _table_of([row]).iloc[0]["assistant"]
    assert cell.startswith("word word") and cell.endswith("… (+29,500 characters)") and len(cell) < 600
    assert _chat_of(row)[-1]["content"] == long
