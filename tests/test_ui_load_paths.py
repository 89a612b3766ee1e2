"""The calls the UI polls under load: repeated previews are served from a cache, a run's latest metrics are read
incrementally; both must give exactly what a fresh full read gives."""

from __future__ import annotations

import importlib
import json

import pytest

from garage.config import TrainConfig
from garage.errors import GarageError
from garage.jobs import service
from garage.jobs.store import RunStore

preview_module = importlib.import_module("garage.data.preview")


def qa_file(path, answers):
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": a}) + "\n" for i, a in enumerate(answers)))
    return path


def fresh(path, **kwargs):
    preview_module._REPORTS.clear()
    return preview_module.preview(path, **kwargs)


def test_repeated_preview_is_cached_and_identical(tmp_path, monkeypatch):
    path = qa_file(tmp_path / "d.jsonl", ["a b", "a b", "c " * 300])
    first = fresh(path, max_seq_length=64)
    calls = []
    monkeypatch.setattr(preview_module, "prepare", lambda *a, **k: calls.append(1))
    again = preview_module.preview(str(path), max_seq_length=64)
    assert again == first and not calls  # served from the cache
    again["first_rows"].clear()  # a caller changing its copy does not change the cache
    assert preview_module.preview(path, max_seq_length=64) == first
    monkeypatch.undo()
    for kwargs in ({"max_seq_length": 2048}, {"n_rows": 1}, {"mapping": {"user": "question", "assistant": "answer"}}):
        assert preview_module.preview(path, **kwargs) == fresh(path, **kwargs)  # other settings: not that entry


def test_preview_sees_changed_bytes_and_refusals(tmp_path, monkeypatch):
    path = qa_file(tmp_path / "d.jsonl", ["one"])
    assert preview_module.preview(path)["first_rows"][0]["messages"][-1]["content"] == "one"
    qa_file(path, ["two"])  # same name and size, new content
    assert preview_module.preview(path)["first_rows"][0]["messages"][-1]["content"] == "two"
    path.write_text('{"question": broken\n')
    with pytest.raises(GarageError, match="line 1"):
        preview_module.preview(path)
    qa_file(path, ["one", "two"])
    monkeypatch.setenv("GARAGE_MAX_UPLOAD_MB", "0.00001")  # a cached file over a lowered limit is still refused
    with pytest.raises(GarageError, match="upload limit"):
        preview_module.preview(path)


def full_read(run) -> dict:
    latest = {}
    for record in run.metrics():
        latest.update({k: v for k, v in record.items() if k in service.LATEST_KEYS or k.startswith("rewards/")})
    return latest


def test_latest_metrics_match_a_full_read(tmp_path):
    run = RunStore(tmp_path / "runs").create(TrainConfig.from_dict({"model": "tiny-gemma-3", "dataset": "d"}), "me")
    assert service.latest_metrics(run) == {} == full_read(run)
    run.append_metrics({"step": 1, "loss": 2.0, "eval_loss": 2.5, "rewards/fmt/mean": 0.1, "other": 1})
    for step in range(2, 6):
        run.append_metrics({"step": step, "loss": 2.0 / step, "learning_rate": 1e-4 * step})
        assert service.latest_metrics(run) == full_read(run)
    with open(run.path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 6, "loss": 0.1}')  # a whole record, its newline not yet written
    assert service.latest_metrics(run) == full_read(run) and full_read(run)["loss"] == 0.1
    with open(run.path / "metrics.jsonl", "a") as fh:
        fh.write('\n{"step": 7, "lo')  # a record cut short
    assert service.latest_metrics(run) == full_read(run)
    run.append_metrics({"step": 8, "loss": 0.05})
    assert service.latest_metrics(run) == full_read(run) and full_read(run)["loss"] == 0.05
    run.drop_metrics_after(2)  # a resume rewrites the file: read again from the start
    assert service.latest_metrics(run) == full_read(run) and full_read(run)["loss"] == 1.0
    run.append_metrics({"step": 3, "loss": 0.7})
    assert service.latest_metrics(run) == full_read(run) and full_read(run)["loss"] == 0.7
    assert service.latest_metrics(run) == full_read(run)  # nothing new: the same answer


def test_the_log_tail_reads_only_the_end_of_a_long_log(tmp_path):
    run = RunStore(tmp_path / "runs").create(TrainConfig(model="tiny-gemma-3", dataset="d"), "me")
    lines = [f"step {i}: loss {1 / (i + 1):.4f} ü" for i in range(20000)]  # ~600 KB, multi-byte characters
    (run.path / "log.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert run.log_tail(60).splitlines() == lines[-60:]
    assert run.log_tail(60, max_bytes=100).splitlines() == lines[-3:]  # whole lines only, never a cut one
    assert run.log_size() == (run.path / "log.txt").stat().st_size


def test_the_progress_line_never_shows_a_loss_ahead_of_its_step():
    from garage.ui.train_tab import _progress_markdown

    status = {"id": "r", "state": "running", "step": 5, "total_steps": 10, "latest": {"step": 6, "loss": 0.5}}
    assert "step 6/10 (60%)" in _progress_markdown(status) and "loss 0.5000" in _progress_markdown(status)
