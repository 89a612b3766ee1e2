"""The command line runs the same code path as the UI and fails with one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import QA, conversations, tiny_config, write_jsonl

pytestmark = pytest.mark.slow


def garage(*args, home, timeout=300):
    env = {**os.environ, "GARAGE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "garage", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_train_then_chat(tmp_path):
    data = write_jsonl(tmp_path / "qa.jsonl", conversations())
    config = tmp_path / "config.yaml"
    config.write_text(tiny_config(str(data)).to_yaml())
    done = garage("train", str(config), home=tmp_path / "home")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "completed step 30/30" in done.stdout and "done: " in done.stdout
    run_dir = done.stdout.split("done: ")[-1].strip().rsplit("/", 1)[0]
    chat = garage("chat", run_dir, "--prompt", QA[3][0], "--greedy", "--max-new-tokens", "24",
                  home=tmp_path / "home")
    assert chat.returncode == 0, chat.stderr[-2000:]
    assert f"tuned> {QA[3][1]}" in chat.stdout


def test_failures_are_one_line_and_non_zero(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: tiny-gemma-3\ndataset: nothing-here\nlearning_rate: -3\n")
    done = garage("train", str(bad), home=tmp_path / "home", timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "learning_rate must be between" in done.stderr
    missing = garage("train", str(tmp_path / "nope.yaml"), home=tmp_path / "home", timeout=120)
    assert missing.returncode == 2 and "not found" in missing.stderr
