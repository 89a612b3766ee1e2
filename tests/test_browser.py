"""A person's view: headless Debian Chromium, driven by Playwright, against the running app."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

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
    # anonymous Space users keep their work: the server's signed visitor cookie, out of page scripts' reach
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["garage_visitor"]["httpOnly"] and "garage_visitor" not in page.evaluate("document.cookie")


def _close_toasts(page):
    for button in page.locator(".toast-close").all():
        button.click()


def test_data_tab_guides_column_mapping_and_save_reaches_the_train_tab(page, tmp_path):
    from playwright.sync_api import expect

    odd = tmp_path / "odd.csv"
    odd.write_text("q,a\n" + "".join(f'"{q}","{a}"\n' for q, a in QA), encoding="utf-8")
    page.get_by_role("tab", name="Data").click()
    page.locator("input[type=file]").first.set_input_files(str(odd))
    preview = page.get_by_role("button", name="Preview")
    expect(page.get_by_text("odd.csv").first).to_be_visible(timeout=10_000)
    preview.click()
    expect(page.locator(".toast-body").filter(has_text="Could not tell which columns")).to_be_visible(timeout=20_000)
    expect(page.get_by_text("No preview").first).to_be_visible()  # nothing stale left on screen
    # and the reason stays on the page after the pop-up has faded
    expect(page.locator("#data-summary")).to_contain_text("Could not tell which columns")
    user_col = page.get_by_label("user / question column")
    expect(user_col).to_be_visible()  # the failed preview opened "Map columns"
    _close_toasts(page)
    user_col.fill("q")
    page.get_by_label("assistant / answer column").fill("a")
    preview.click()
    expect(page.get_by_text(f"{len(QA)} conversations").first).to_be_visible(timeout=20_000)
    page.get_by_label("Save as").fill("ui-qa")
    page.get_by_role("button", name="Save to my workspace").click()
    expect(page.get_by_text("Saved ui-qa").first).to_be_visible(timeout=20_000)
    # the next file's columns are its own: the mapping made for odd.csv is cleared, and it previews as it is
    plain = tmp_path / "plain.jsonl"
    write_jsonl(plain, conversations())
    page.locator("#data-file button[aria-label='Clear']").click()
    page.locator("#data-file input[type=file]").set_input_files(str(plain))
    expect(user_col).to_have_value("", timeout=10_000)
    preview.click()
    expect(page.locator("#data-summary")).to_contain_text("plain.jsonl", timeout=20_000)
    expect(page.get_by_text("Saved ui-qa")).to_have_count(0)  # the last file's save line went with it
    # a file that cannot be saved: said where the save line is, and the Train tab's picker stays usable
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b"\x00\xff\xfe not text")
    page.locator("#data-file button[aria-label='Clear']").click()
    page.locator("#data-file input[type=file]").set_input_files(str(broken))
    page.get_by_label("Save as").fill("broken")
    page.get_by_role("button", name="Save to my workspace").click()
    expect(page.get_by_text("Not saved: the pop-up says why.").first).to_be_visible(timeout=20_000)
    _close_toasts(page)
    page.get_by_role("tab", name="Train").click()
    picker = page.get_by_label("dataset", exact=True)
    expect(picker).to_have_value("ui-qa")  # no refresh needed
    picker.click(timeout=5_000)  # no error mark over it taking the click
    page.keyboard.press("Escape")
    page.screenshot(path="/tmp/garage_data.png", full_page=True)


def test_start_training_in_the_train_tab_fills_progress_plots_and_runs(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Train").click()
    expect(page.get_by_label("dataset", exact=True)).to_have_value("ui-qa")
    # the form in a person's words, each field's config key beside it (what a YAML config names)
    for label, key in (("Passes over the data", "num_train_epochs"), ("Learning rate", "learning_rate"),
                       ("Conversations per pass on one GPU", "per_device_train_batch_size")):
        field = page.get_by_label(label, exact=True)
        expect(field).to_be_visible()
        expect(page.get_by_text(f"key: {key}").first).to_be_visible()
    for heading in ("How long", "How fast it learns", "Memory"):
        expect(page.get_by_text(heading, exact=True)).to_be_visible()
    page.get_by_label("Total steps (overrides passes)", exact=True).fill("6")
    page.get_by_role("button", name="Start training").click()
    expect(page.locator(".toast-body").filter(has_text="queued")).to_be_visible(timeout=20_000)
    assert page.locator(".toast-body").filter(has_text="Unexpected error").count() == 0
    run_id = page.get_by_label("Run", exact=True).input_value()
    expect(page.get_by_text(f"{run_id} · completed").first).to_be_visible(timeout=90_000)
    # the plots draw coloured lines (not only axes), the runs table and the command follow without a refresh
    for plot in ("#loss-plot", "#lr-plot"):
        expect(page.locator(f"{plot} g.mark-line path[stroke]").first).to_be_visible(timeout=10_000)
    # and say which line is which: the legend's entries inside the plot, not cut off below it
    label = page.locator("#loss-plot g.role-legend-label text").filter(has_text="train loss").first
    expect(label).to_be_visible()
    text, frame = label.bounding_box(), page.locator("#loss-plot").bounding_box()
    assert text["y"] + text["height"] <= frame["y"] + frame["height"], "the legend is cut off"
    row = page.locator(".virtual-row").filter(has_text=run_id)  # the runs table
    expect(row.get_by_text("completed", exact=True)).to_be_visible(timeout=15_000)
    expect(page.get_by_text("python -m garage train").first).to_be_visible()
    log = page.locator("#train-log textarea")
    expect(log).to_have_value(re.compile("Run completed"))
    at_end = log.evaluate("t => t.scrollHeight - t.clientHeight - t.scrollTop < 30")
    assert at_end, "the log tail shows its newest lines"
    page.screenshot(path="/tmp/garage_train.png", full_page=True)


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
    # the speed line comes when both columns are done: the base model may still be writing (a busy machine)
    expect(page.get_by_text("tokens/s").filter(visible=True).first).to_be_visible(timeout=60_000)
    page.screenshot(path="/tmp/garage_compare.png")
    for column in (base, tuned):  # each column: the user's turn and one answer
        assert column.get_by_role("button", name="Copy message").count() == 2
    # the picker's default, the base model alone: its column answers, nothing fails
    page.get_by_role("button", name="Clear", exact=True).filter(has_text="Clear").click()
    page.get_by_label("Fine-tuned run").click()
    page.get_by_role("option", name="(base model only)").click()
    page.get_by_role("textbox", name="Prompt", exact=True).fill(QA[0][0])
    page.get_by_role("button", name="Send").click()
    expect(base.get_by_role("button", name="Copy message")).to_have_count(2, timeout=60_000)
    assert tuned.get_by_role("button", name="Copy message").count() == 0
    assert page.locator(".toast-body").filter(has_text="rror").count() == 0


def test_a_blind_vote_names_the_sides_after_it_and_its_dataset_reaches_the_train_tab(page, trained_run):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Compare").click()
    page.get_by_label("Blind: random sides, named after your vote").check()
    left, right = page.locator("#base-chat"), page.locator("#tuned-chat")
    expect(left).to_contain_text("Answer A")
    expect(right).to_contain_text("Answer B")
    page.get_by_label("Fine-tuned run").click()
    page.get_by_role("option", name=trained_run, exact=False).click()
    page.get_by_role("textbox", name="Prompt", exact=True).fill(QA[2][0])
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#base-chat, #tuned-chat").filter(has_text=QA[2][1])).to_have_count(1, timeout=60_000)
    # both answers whole: blind mode says so without the speeds, which could tell the sides apart
    expect(page.get_by_text("✓ answered: vote below").filter(visible=True)).to_have_count(2, timeout=60_000)
    assert page.get_by_text("tokens/s").filter(visible=True).count() == 0
    tuned_side = "Left" if QA[2][1] in left.inner_text() else "Right"  # the fine-tuned model recites its answer
    # the random tiny base may say nothing, which makes no pair: the person writes what they would prefer
    page.get_by_text("Vote with a better answer, and where votes go").click()
    page.get_by_label("A better answer (optional: it becomes the chosen one)").fill("A teacher, as it says.")
    page.get_by_role("button", name="Both bad").click()
    said = page.locator("#vote-said")
    expect(said).to_contain_text("Vote kept in compare-votes", timeout=20_000)
    expect(said).to_contain_text(f"{tuned_side} was the fine-tuned model")
    page.get_by_role("tab", name="Train").click()
    page.get_by_role("button", name="↻ datasets").click()
    page.get_by_label("dataset", exact=True).click()
    expect(page.get_by_role("option", name="compare-votes")).to_be_visible(timeout=10_000)
    page.keyboard.press("Escape")
    page.get_by_role("tab", name="Compare").click()
    page.get_by_label("Blind: random sides, named after your vote").uncheck()  # the next tests see the names
    expect(left).to_contain_text("Base model")


def test_publish_lists_a_run_finished_after_the_page_loaded(page, trained_run):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Publish").click()  # trained_run finished after this page was loaded
    picker = page.get_by_label("Run (your completed runs)")
    picker.click()
    page.get_by_role("option").filter(has_text=trained_run).click()
    expect(page.locator("#publish-where")).to_contain_text(f"{trained_run}/adapter", timeout=20_000)  # where it is
    page.get_by_role("button", name="Adapter (.zip)").click()
    expect(page.locator(f'a[download="{trained_run}-adapter.zip"]').filter(visible=True)).to_be_visible(
        timeout=30_000)
    page.get_by_role("button", name="Merged model (.zip)").click()  # the location text follows the new export
    expect(page.locator("#publish-where")).to_contain_text("Merged 16-bit model", timeout=60_000)
    page.screenshot(path="/tmp/garage_publish.png")


def test_a_reload_finds_the_running_job(page, server, client):
    from playwright.sync_api import expect

    run_id = client.predict({"model": "tiny-gemma-3", "dataset": "browser-qa", "max_steps": 100000,
                             "save_steps": 100000, "learning_rate": 0.000123}, api_name="/start_training")
    try:
        wait_for(lambda: client.predict(run_id, api_name="/training_status")["step"] >= 2, timeout=120,
                 what="the job to run")
        page.reload()
        # the page opens on the Train tab by itself, where the running job is
        expect(page.get_by_role("tab", name="Train")).to_have_attribute("aria-selected", "true", timeout=30_000)
        progress = page.get_by_text(run_id).first
        expect(progress).to_be_visible(timeout=30_000)
        expect(page.get_by_label("dataset", exact=True)).to_have_value("browser-qa")  # the run's, not the newest
        expect(page.get_by_label("Learning rate", exact=True)).to_have_value("0.000123")  # the form shows the run
        expect(page.get_by_label("Total steps (overrides passes)", exact=True)).to_have_value("100000")
        expect(page.get_by_text("running").first).to_be_visible(timeout=10_000)
        # a log longer than its box (library warnings, say) shows its newest lines, not its oldest, also when
        # it arrived while the page showed another tab
        page.get_by_role("tab", name="Data").click()
        with open(Path(server.env["GARAGE_HOME"]) / "runs" / run_id / "log.txt", "a") as log:
            log.writelines(f"[00:00:00] warning {i} from a library\n" for i in range(30))
        page.wait_for_function("""() => document.querySelector('#train-log textarea').value.includes('warning 29')""",
                               timeout=30_000)
        page.get_by_role("tab", name="Train").click()
        page.wait_for_function("""() => { const box = document.querySelector('#train-log textarea');
            return box && box.value.includes('warning 29') && box.scrollHeight > box.clientHeight
                && box.scrollTop + box.clientHeight >= box.scrollHeight - 24; }""", timeout=30_000)
        page.screenshot(path="/tmp/garage_reload.png")
    finally:
        client.predict(run_id, api_name="/stop_training")
        wait_for(lambda: client.predict(run_id, api_name="/training_status")["state"] == "stopped", timeout=60,
                 what="the stop")


def test_a_reload_follows_a_running_generate_and_shows_its_pairs_when_it_ends(page, client, llm_server, tmp_path):
    """Documents -> Q/A: a Generate still running when the page reloads is followed on the new page."""
    from gradio_client import handle_file
    from playwright.sync_api import expect

    doc = tmp_path / "tides.txt"
    doc.write_text("\n\n".join(f"Tide table {i}: the harbour at berth {i} fills {i + 3} metres at spring tide. "
                                 f"Pilot boats wait {i * 5} minutes for slack water at berth {i}." for i in range(16)))
    settings = {"backend": "openai", "base_url": f"{llm_server.reset().url}/v1", "model": "any", "num_pairs": 8,
                "chunk_tokens": 64, "chunk_overlap": 0, "concurrency": 1, "max_retries": 0}
    llm_server.latency = 1.5  # 8 chunks one at a time: 12 s, time to reload and see it run
    job = client.submit([handle_file(str(doc))], settings, "", api_name="/augment")
    try:
        wait_for(lambda: len(llm_server.requests) >= 1, timeout=30, what="the Generate to start")
        page.reload()
        page.get_by_role("tab", name="Data").click()
        page.get_by_role("button", name="Documents → Q/A").click()
        status = page.locator("#augment-status")
        expect(status).to_contain_text("is generating", timeout=20_000)
        expect(status).to_contain_text("8 pairs from", timeout=60_000)  # it ended: the table has its pairs
        expect(page.get_by_text("Tide table").first).to_be_attached()
        assert job.result(timeout=30)["pairs"]
        page.screenshot(path="/tmp/garage_augment_follow.png", full_page=True)
    finally:
        llm_server.latency = 0.0


def test_delete_asks_first_and_a_no_keeps_the_run(page, client, trained_run):
    from playwright.sync_api import expect

    page.reload()
    page.get_by_role("tab", name="Train").click()
    page.get_by_label("Run", exact=True).click()
    page.get_by_role("option", name=trained_run, exact=False).first.click()
    asked = []

    def dismiss(dialog):
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.get_by_role("button", name="Delete run").click()
    expect(page.get_by_text("deleted")).to_have_count(0, timeout=3000)
    assert asked and "cannot be undone" in asked[0]
    assert client.predict(trained_run, api_name="/training_status")["state"] == "completed"
