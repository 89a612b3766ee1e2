"""Preference tuning: the data shapes it reads, their errors, and DPO / ORPO / KTO teaching the tiny Gemma 3 which
answer is right."""

from __future__ import annotations

import json

import pytest

from garage.data import formats, store
from garage.data.rows import preference_rows, training_rows
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
    ([{"prompt": "Q", "completion": "A", "label": "maybe"}], "Row 1: label is 'maybe'"),
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
    kto = preference_rows(tiny_config("prefs", method="kto"), "alice")
    assert [row["label"] for row in kto] == [True, False] * 4
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
def test_orpo_teaches_the_chosen_answers_from_the_base_model(worker, files):
    run = train(worker, files["pairs"], method="orpo", max_steps=30, learning_rate=2e-3)
    margins, accuracy = logged(run, "rewards/margins"), logged(run, "rewards/accuracies")
    assert margins[30] > margins[1] and accuracy[30] == 1.0
    assert answers(run) == [a for _, a in QA]


@pytest.mark.slow
def test_continuing_from_a_run_starts_from_its_adapter(worker, files, trained_run):
    """DPO from the session's SFT run (which answers rightly) finds the chosen answers far likelier at its first
    step than DPO from the base model does."""
    tuned = copy_run(trained_run, worker.store)
    from_base = train(worker, files["pairs"], method="dpo", max_steps=1)
    from_sft = train(worker, files["pairs"], method="dpo", max_steps=1, init_run=tuned.id)
    assert logged(from_sft, "logps/chosen")[1] > logged(from_base, "logps/chosen")[1] + 20
    assert json.loads((from_sft.adapter_dir / "adapter_config.json").read_text())["r"] == \
        tuned.config().lora_r


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
        said, kept, _ = compare_tab._vote_on_page("both_bad", exchange, swap, True, answer, "compare-votes",
                                                  request=request)
        assert kept is None and f"{'Left' if swap else 'Right'} was the fine-tuned model" in said
        with pytest.raises(GarageError, match="You have a dataset named 'mine' that is not made of votes"):
            compare_tab.vote(question, "a", "b", "base", taught_wrong.id, "mine", request=request)
    assert votes.tally("local", taught_wrong.id) == {"wins": 0, "losses": 0, "ties": 0, "both_bad": 4,
                                                     "win_rate": None}
    meta = store.load_meta("local", "compare-votes")
    # the written answer over each of the two (over the base's too where it said anything)
    assert (meta["kind"], meta["rows"]) == ("preference", 4 + sum(bool(said.strip()) for said in base_said))

    run_id = worker.submit(tiny_config("compare-votes", method="dpo", beta=0.1, init_run=taught_wrong.id,
                                       max_steps=40, learning_rate=2e-4), "local")
    assert worker.wait_idle(600)
    run = worker.store.get(run_id)
    assert run.status()["state"] == "completed", run.log_tail()
    assert answers(run) == [a for _, a in QA]
