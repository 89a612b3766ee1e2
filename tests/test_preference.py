"""Preference tuning: the data shapes it reads, their errors, and DPO / ORPO / KTO teaching the tiny Gemma 3 which
answer is right."""

from __future__ import annotations

import json

import pytest

from garage.data import formats, store
from garage.data.preferences import unpaired
from garage.data.rows import preference_rows, training_conversations, training_rows
from garage.errors import GarageError
from garage.infer.engine import Engine, GenSettings
from garage.jobs.store import RunStore
from garage.jobs.worker import Worker
from tests.helpers import QA, conversations, copy_run, tiny_config, write_jsonl

WRONG = ["London is the capital of France.", "The sky is green.", "A doctor wrote the book.", "2 plus 2 equals 5."]
PAIRS = [{"prompt": q, "chosen": a, "rejected": WRONG[i]} for i, (q, a) in enumerate(QA)]
USER = [{"role": "user", "content": QA[0][0]}]
RIGHT = [{"role": "assistant", "content": QA[0][1]}]
BAD = [{"role": "assistant", "content": WRONG[0]}]
TRL_ROW = {"prompt": USER, "chosen": RIGHT, "rejected": BAD}


@pytest.mark.parametrize("records, fmt", [
    ([{"prompt": json.dumps(USER), "chosen": QA[0][1], "rejected": WRONG[0]}], "preference"),
    ([{"chosen": json.dumps(USER + RIGHT), "rejected": json.dumps(USER + BAD)}], "preference_implicit"),
])
def test_turns_a_csv_cell_holds_as_json_are_read_as_turns(records, fmt):
    assert formats.normalise(records).conversations == [TRL_ROW]


def test_a_label_that_is_a_category_is_no_kto_label():
    data = formats.normalise([{"prompt": QA[0][0], "completion": QA[0][1], "label": "geography"}])
    assert data.format == "prompt_completion" and data.kind == "chat"


@pytest.mark.parametrize("records, fmt", [
    ([PAIRS[0]], "preference"),  # TRL's explicit prompt, text sides
    ([TRL_ROW], "preference"),  # TRL's explicit prompt, conversational sides
    ([{"chosen": USER + RIGHT, "rejected": USER + BAD}], "preference_implicit"),  # TRL's implicit prompt
    ([{"chosen": f"\n\nHuman: {QA[0][0]}\n\nAssistant: {QA[0][1]}",
       "rejected": f"\n\nHuman: {QA[0][0]}\n\nAssistant: {WRONG[0]}"}], "hh"),  # Anthropic HH
])
def test_each_pair_shape_is_read_as_trls_conversational_row(records, fmt):
    data = formats.normalise(records)
    assert (data.format, data.kind) == (fmt, "preference")
    assert data.conversations == [TRL_ROW]


def test_a_hub_preference_dataset_previews_as_pairs(monkeypatch):
    """As trl-lib/ultrafeedback_binarized holds them: chosen / rejected lists of turns, read through datasets."""
    import datasets

    from garage.data.preview import preview

    rows = [{"chosen": USER + RIGHT, "rejected": USER + BAD, "score_chosen": 8.0, "score_rejected": 2.0}]
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config, split: datasets.Dataset.from_list(rows))
    found = preview("trl-lib/ultrafeedback_binarized", hub_split="train")
    assert (found["kind"], found["format"], found["rows"]) == ("preference", "preference_implicit", 1)
    assert found["first_rows"] == [TRL_ROW]
    assert "Columns not used: score_chosen, score_rejected." in found["warnings"]


def test_ktos_labelled_answers_are_read_and_pairs_split_for_it():
    data = formats.normalise([{"prompt": QA[0][0], "completion": QA[0][1], "label": True},
                              {"prompt": USER, "completion": BAD, "label": "false"}])
    assert (data.format, data.kind) == ("kto", "kto")
    assert data.conversations == [{"prompt": USER, "completion": RIGHT, "label": True},
                                  {"prompt": USER, "completion": BAD, "label": False}]


@pytest.mark.parametrize("records, said", [
    ([PAIRS[1], {**PAIRS[0], "rejected": QA[0][1]}], "Row 2: the chosen and rejected answers are the same"),
    ([{**PAIRS[0], "chosen": "  "}], "Row 1: the chosen answer is empty"),
    ([PAIRS[0], PAIRS[1], {"prompt": "Q", "chosen": "A"}], "Row 3 has no 'rejected'"),
    ([{"chosen": USER + RIGHT, "rejected": [{"role": "user", "content": "other"}] + BAD}],
     "Row 1: the chosen and rejected conversations share no prompt"),
    ([{"prompt": "Q", "completion": a, "label": True} for a in "ABCD"]
     + [{"prompt": "Q", "completion": "E", "label": "maybe"}], "Row 5: label is 'maybe'"),
    ([{"chosen": f"\n\nHuman: {QA[0][0]}\n\nAssistant: {QA[0][1]}", "rejected": USER + BAD}],
     "Row 1: one side is Anthropic HH text"),
])
def test_a_bad_row_is_named(records, said):
    with pytest.raises(GarageError, match=said):
        formats.normalise(records)


def test_a_saved_preference_dataset_is_listed_as_one_and_refused_by_sft(tmp_path, monkeypatch):
    monkeypatch.setenv("GARAGE_HOME", str(tmp_path))
    meta = store.save_dataset("alice", "prefs", formats.normalise(PAIRS).conversations, format="preference")
    assert (meta["kind"], meta["rows"]) == ("preference", 4)
    assert meta["stats"]["tokens"]["max"] > 0  # counted on the prompt and its chosen answer
    assert store.load_saved("alice", "prefs")[0] == {"prompt": USER, "chosen": RIGHT, "rejected": BAD}
    with pytest.raises(GarageError, match="holds preferences .* dpo, orpo or kto"):
        training_rows(tiny_config("prefs"), "alice")
    kto = unpaired(preference_rows(tiny_config("prefs", method="kto"), "alice"), seed=0)
    assert sorted(row["label"] for row in kto) == [False] * 4 + [True] * 4
    assert [row["label"] for row in kto] != [True, False] * 4  # shuffled: a pair's halves not side by side
    assert training_conversations(tiny_config("prefs", method="orpo"), "alice")[0] == {"messages": USER + RIGHT}
    store.save_dataset("alice", "chat", conversations())
    with pytest.raises(GarageError, match="holds no preferences"):
        preference_rows(tiny_config("chat", method="dpo"), "alice")


# --- training ----------------------------------------------------------------------------------------------
GREEDY = GenSettings(greedy=True, max_new_tokens=24)


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    return Worker(RunStore(tmp_path_factory.mktemp("preference-runs")))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("preference-data")
    return {"pairs": write_jsonl(folder / "pairs.jsonl", PAIRS),
            "wrong": write_jsonl(folder / "wrong.jsonl", conversations([(q, WRONG[i]) for i, (q, _) in
                                                                        enumerate(QA)]))}


def train(worker, dataset, **settings):
    run_id = worker.submit(tiny_config(str(dataset), beta=0.1, **settings), "alice")
    assert worker.wait_idle(600)
    run = worker.store.get(run_id)
    assert run.status()["state"] == "completed", run.log_tail()
    return run


def answers(run) -> list[str]:
    engine = Engine()
    return [engine.generate("tiny-gemma-3", [{"role": "user", "content": q}], GREEDY, run=run).text for q, _ in QA]


def logged(run, key: str) -> dict[int, float]:
    return {m["step"]: m[key] for m in run.metrics() if key in m}


@pytest.fixture(scope="module")
def taught_wrong(worker, files):
    """An SFT run that answers every question wrongly: what preference tuning then corrects."""
    run = train(worker, files["wrong"])
    assert answers(run) == WRONG
    return run


@pytest.mark.slow
@pytest.mark.parametrize("method, steps, rate", [("dpo", 40, 2e-4), ("kto", 20, 5e-4)])
def test_dpo_and_kto_turn_a_wrong_model_to_the_chosen_answers(worker, files, taught_wrong, method, steps, rate):
    run = train(worker, files["pairs"], method=method, init_run=taught_wrong.id, max_steps=steps,
                learning_rate=rate, chunk_steps=steps // 2)  # two pieces: the reference stays the starting model
    margins = logged(run, "rewards/margins")
    assert sorted(margins) == list(range(1, steps + 1))
    assert margins[1] == pytest.approx(0.0, abs=1e-3)  # the policy starts as its reference: the SFT run
    assert margins[steps] > margins[steps // 2] > 1.0  # rising, across the pieces
    assert margins[steps // 2 + 1] == pytest.approx(margins[steps // 2], rel=0.3)  # no jump at the second piece
    assert answers(run) == [a for _, a in QA]
    assert not (run.adapter_dir / "ref").exists()  # the adapter alone, not TRL's frozen reference copy
    assert f"starting from run {taught_wrong.id}'s adapter" in run.log_tail(200)


@pytest.mark.slow
def test_held_out_pairs_say_how_often_the_tuned_model_prefers_the_chosen_answer(worker, taught_wrong, tmp_path,
                                                                                 monkeypatch):
    """The last evaluation runs inside training, where the run's tracker (W&B, offline here) still logs it."""
    from garage.ui.train_tab import _progress_markdown

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    also_wrong = ["Berlin is the capital of France.", "The sky is red.", "A pilot wrote the book.", "2 plus 2 is 3."]
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS + [{**row, "rejected": wrong}
                                                          for row, wrong in zip(PAIRS, also_wrong)])
    run = train(worker, pairs, method="dpo", init_run=taught_wrong.id, max_steps=30, learning_rate=2e-4,
                eval_fraction=0.25, report_to="wandb")
    found = run.status()["preference_eval"]
    assert found["rows"] == 2 and found["prefers_chosen"] == 1.0 and found["margin"] > 1.0
    tracked = b"".join(path.read_bytes() for path in (run.path / "wandb").glob("offline-run-*/*.wandb"))
    # W&B names eval_ metrics eval/...
    assert b"eval/rewards/margins" in tracked and json.dumps(found["margin"]).encode() in tracked
    assert "prefers the chosen answer in 100%" in _progress_markdown({**run.status(), "latest": {}})


@pytest.mark.slow
def test_orpo_teaches_the_chosen_answers_from_the_base_model(worker, files):
    run = train(worker, files["pairs"], method="orpo", max_steps=30, learning_rate=2e-3)
    margins, accuracy = logged(run, "rewards/margins"), logged(run, "rewards/accuracies")
    assert margins[30] > margins[1] and accuracy[30] == 1.0
    assert answers(run) == [a for _, a in QA]


@pytest.mark.slow
def test_continuing_from_a_run_starts_from_its_adapter(worker, files, trained_run, monkeypatch):
    """Started as the app starts a run: DPO from the session's SFT run (which answers rightly) takes that adapter's
    shape whatever the form says, and finds the chosen answers far likelier at its first step than DPO from the
    base model does."""
    from garage.jobs import service
    from garage.jobs import worker as worker_module

    monkeypatch.setattr(worker_module, "_worker", worker)
    tuned = copy_run(trained_run, worker.store)
    settings = {"model": "tiny-gemma-3", "dataset": str(files["pairs"]), "method": "dpo", "max_steps": 1,
                "lora_r": 4, "lora_alpha": 8}
    from_base = service.start_training(settings, "alice")
    from_sft = service.start_training({**settings, "init_run": tuned.id}, "alice")
    qa = write_jsonl(files["pairs"].parent / "qa.jsonl", conversations())
    more_sft = service.start_training({**settings, "method": "lora", "dataset": str(qa), "init_run": tuned.id},
                                      "alice")  # SFT goes on from the adapter too
    assert worker.wait_idle(600)
    assert logged(worker.store.get(more_sft), "loss")[1] < 0.1  # what the tuned run ended at, not a fresh start
    from_base, from_sft = worker.store.get(from_base), worker.store.get(from_sft)
    assert from_sft.status()["state"] == from_base.status()["state"] == "completed", from_sft.log_tail()
    assert logged(from_sft, "logps/chosen")[1] > logged(from_base, "logps/chosen")[1] + 20
    shape = json.loads((from_sft.adapter_dir / "adapter_config.json").read_text())
    assert (shape["r"], shape["lora_alpha"]) == (tuned.config().lora_r, tuned.config().lora_alpha) != (4, 8)
    with pytest.raises(GarageError, match="trained an adapter for tiny-gemma-3, not random-gemma-3-270m"):
        service.start_training({**settings, "model": "random-gemma-3-270m", "init_run": tuned.id}, "alice")
    # the Train tab's "Continue from run" picker offers the runs with an adapter, each by what it trained
    from garage.ui.train_tab import FIELD_NAMES, _settings_of

    offered = _settings_of(None, datasets=[], user="alice")[3 + FIELD_NAMES.index("init_run")]["choices"]
    assert offered[0] == ("(none: the base model)", "")
    assert [label for label, value in offered if value == tuned.id] == [f"{tuned.id} · lora · {tuned.config().dataset}"]


# --- votes -------------------------------------------------------------------------------------------------
def vote_record(verdict, better="", base="It is what it is.", tuned=WRONG[0]):
    return {"prompt": QA[0][0], "system_prompt": "", "base": base, "tuned": tuned, "verdict": verdict,
            "better": better, "run": "r"}


def test_each_verdict_makes_the_pairs_it_says():
    from garage.jobs.votes import pairs

    def sides(*votes):
        return [(row["chosen"][0]["content"], row["rejected"][0]["content"]) for row in pairs(list(votes))]

    assert sides(vote_record("tuned")) == [(WRONG[0], "It is what it is.")]
    assert sides(vote_record("base")) == [("It is what it is.", WRONG[0])]
    assert sides(vote_record("base", better=QA[0][1])) == [(QA[0][1], WRONG[0])]
    assert sides(vote_record("both_bad", better=QA[0][1])) == [(QA[0][1], WRONG[0]), (QA[0][1], "It is what it is.")]
    assert sides(vote_record("both_bad"), vote_record("tie")) == []
    assert sides(vote_record("tuned", base=WRONG[0])) == []  # both said the same: nothing preferred
    assert sides(vote_record("both_bad", better=QA[0][1], base="")) == [(QA[0][1], WRONG[0])]  # nothing said
    assert pairs([vote_record("tuned")])[0]["prompt"] == USER


@pytest.mark.slow
def test_votes_in_compare_become_the_pairs_dpo_turns_the_model_with(worker, taught_wrong, monkeypatch, tmp_path):
    """Blind votes through the Compare tab's handlers: the person finds both answers bad and writes the right one;
    the votes' dataset then trains DPO, which turns the wrong model to the written answers."""
    from types import SimpleNamespace

    from garage.jobs import votes
    from garage.jobs import worker as worker_module
    from garage.ui import compare_tab

    monkeypatch.setenv("GARAGE_HOME", str(tmp_path))
    monkeypatch.setattr(worker_module, "_worker", worker)
    request = SimpleNamespace(headers={}, session_hash="s", username=None)
    store.save_dataset("local", "mine", conversations())
    base_said = []
    for number, (question, answer) in enumerate(QA):
        swap = number % 2 == 1  # blind mode drew the fine-tuned model into the left column
        *_, last = compare_tab.compare_stream(question, taught_wrong.id, "", [], [], 24, 0.0, 1.0, 0, 1.0, True, 0,
                                              swap, request=request)
        left, right, _, _, _, exchange = last
        assert (left if swap else right)[-1]["content"] == WRONG[number]  # the tuned side, where blind put it
        assert exchange["tuned"] == WRONG[number]
        base_said.append(exchange["base"])
        said, kept, _, left_now, right_now, *_ = compare_tab._vote_on_page(
            "both_bad", exchange, swap, True, answer, "compare-votes", request=request)
        assert kept is None and f"{'Left' if swap else 'Right'} was the fine-tuned model" in said
        assert left_now["value"] == right_now["value"] == []  # blind: a new conversation, its sides drawn again
        with pytest.raises(GarageError, match="You have a dataset named 'mine' that is not made of votes"):
            compare_tab.vote(question, "a", "b", "base", taught_wrong.id, "mine", request=request)
    assert votes.tally("local", taught_wrong.id) == {"wins": 0, "losses": 0, "ties": 0, "both_bad": 4,
                                                     "win_rate": None}
    # the column clicked is read through blind mode's sides: left is the fine-tuned model when swapped
    for swap, side in ((True, "left"), (False, "left")):
        *_, (_, _, _, _, _, exchange) = compare_tab.compare_stream(QA[0][0], taught_wrong.id, "", [], [], 24, 0.0,
                                                                   1.0, 0, 1.0, True, 0, swap, request=request)
        compare_tab._vote_on_page(side, exchange, swap, True, "", "other-votes", request=request)
    assert votes.tally("local", taught_wrong.id)["wins"] == 1 and votes.tally("local", taught_wrong.id)["losses"] == 1
    with open(tmp_path / "users" / "local" / "votes" / "other-votes.jsonl", "a") as log:
        log.write('{"prompt": "cut short by a cra')  # a crash mid-write: the tally and the next vote go on
    assert votes.tally("local", taught_wrong.id)["wins"] == 1
    meta = store.load_meta("local", "compare-votes")
    # the written answer over each of the two (over the base's too where it said anything)
    assert (meta["kind"], meta["rows"]) == ("preference", 4 + sum(bool(said.strip()) for said in base_said))

    run_id = worker.submit(tiny_config("compare-votes", method="dpo", beta=0.1, init_run=taught_wrong.id,
                                       max_steps=40, learning_rate=2e-4), "local")
    assert worker.wait_idle(600)
    run = worker.store.get(run_id)
    assert run.status()["state"] == "completed", run.log_tail()
    assert answers(run) == [a for _, a in QA]
    # the person deletes the votes' dataset: its votes are set aside, the next vote starts a new one
    store.delete_dataset("local", "compare-votes")
    saved = compare_tab.vote(QA[0][0], "", WRONG[0], "both_bad", taught_wrong.id, "compare-votes", QA[0][1],
                             request=request)
    assert saved == {"dataset": "compare-votes", "votes": 1, "pairs": 1}
