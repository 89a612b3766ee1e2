"""A person's view: headless Debian Chromium, driven by Playwright, against the running app."""

from __future__ import annotations

import shutil

import pytest

from tests.helpers import QA, conversations, wait_for, write_jsonl

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server.url)
        yield page
        browser.close()


def test_the_four_tabs_are_there(page, tmp_path):
    from playwright.sync_api import expect

    for name in ("Data", "Train", "Compare", "Publish"):
        expect(page.get_by_role("tab", name=name)).to_be_visible(timeout=30_000)
    page.screenshot(path="/tmp/garage_tabs.png")
    assert "garage_anon=" in page.evaluate("document.cookie")  # anonymous Space users keep their work


@pytest.fixture(scope="module")
def trained_run(client, tmp_path_factory):
    from gradio_client import handle_file

    path = write_jsonl(tmp_path_factory.mktemp("b") / "qa.jsonl", conversations())
    client.predict(handle_file(str(path)), "", "", "train", "", "", "", "browser-qa", True, api_name="/save_dataset")
    run_id = client.predict({"model": "tiny-gemma-3", "dataset": "browser-qa", "learning_rate": 2e-3,
                             "num_train_epochs": 30, "per_device_train_batch_size": 4,
                             "gradient_accumulation_steps": 1, "eval_fraction": 0.0, "lora_alpha": 32},
                            api_name="/start_training")
    wait_for(lambda: client.predict(run_id, api_name="/training_status")["state"] == "completed", timeout=300,
             interval=1, what="training")
    return run_id


def test_compare_fills_both_columns(page, trained_run):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Compare").click()
    page.get_by_label("Fine-tuned run").click()
    page.get_by_role("option", name=trained_run, exact=False).click()
    page.get_by_role("textbox", name="Prompt", exact=True).fill(QA[1][0])
    page.get_by_role("button", name="Send").click()
    base = page.locator("#base-chat")
    tuned = page.locator("#tuned-chat")
    expect(tuned).to_contain_text(QA[1][1], timeout=60_000)
    expect(base).to_contain_text(QA[1][0])  # the question is echoed in the base column too
    expect(page.get_by_text("tokens/s").first).to_be_visible()
    page.screenshot(path="/tmp/garage_compare.png")
    for column in (base, tuned):  # each column: the user's turn and one answer
        assert column.get_by_role("button", name="Copy message").count() == 2


def test_a_reload_finds_the_running_job(page, server, client):
    from playwright.sync_api import expect

    run_id = client.predict({"model": "tiny-gemma-3", "dataset": "browser-qa", "max_steps": 100000,
                             "save_steps": 100000}, api_name="/start_training")
    try:
        wait_for(lambda: client.predict(run_id, api_name="/training_status")["step"] >= 2, timeout=120,
                 what="the job to run")
        page.reload()
        page.get_by_role("tab", name="Train").click()
        progress = page.get_by_text(run_id).first
        expect(progress).to_be_visible(timeout=30_000)
        expect(page.get_by_text("running").first).to_be_visible(timeout=10_000)
        page.screenshot(path="/tmp/garage_reload.png")
    finally:
        client.predict(run_id, api_name="/stop_training")
        wait_for(lambda: client.predict(run_id, api_name="/training_status")["state"] == "stopped", timeout=60,
                 what="the stop")
