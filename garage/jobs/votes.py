"""Votes from Compare: a person's judgement of the base and the fine-tuned answer, kept as preference data.

Every vote is appended to the voter's ``votes/<dataset>.jsonl`` (what was asked, both answers, the verdict, the
better answer they wrote, if any), and the dataset of that name in their workspace is rebuilt from all of them, as
TRL's conversational pairs (garage.data.preferences), which dpo / orpo / kto train on:

    tuned / base   the winner's answer is chosen, the loser's rejected (a written better answer is chosen instead)
    both_bad       with a written better answer: it is chosen over each of the two; without, no pair
    tie            no pair (with a written better answer: it is chosen over each of the two)

A pair whose two sides are the same text (both models said the same), or with an empty side (a model that said
nothing), is left out: preference data with such a row is refused as a file too (garage.data.preferences).
Deleting the dataset sets its votes aside: the next vote starts a new one. The tally of a run's votes (wins,
losses, ties against its base) is its win rate in the Train tab.
"""

from __future__ import annotations

import json
import threading
import time

from garage import access, files, paths
from garage.data import store
from garage.errors import GarageError
from garage.jobs.worker import get_worker

VERDICTS = ("tuned", "base", "tie", "both_bad")
SOURCE = "Compare votes"
_lock = threading.Lock()  # one vote at a time rebuilds a dataset


def record(user: str, dataset: str, *, prompt: str, base_answer: str, tuned_answer: str, verdict: str,
           run_id: str, system_prompt: str = "", better: str = "") -> dict:
    """Keep one vote and rebuild the dataset; ``{"dataset", "votes", "pairs"}``."""
    name = paths.check_name(dataset or "", "dataset")
    if verdict not in VERDICTS:
        raise GarageError(f"A vote is one of {', '.join(VERDICTS)}; got {verdict!r}.")
    if not prompt.strip() or not (base_answer.strip() or tuned_answer.strip()):
        raise GarageError("Ask both models something first: a vote compares the base and the fine-tuned answer to "
                          "one prompt.")
    if not str(run_id or "").strip():
        raise GarageError("Choose a fine-tuned run: a vote compares its answer with its base model's.")
    # a vote on someone else's run would tell of their model (garage.access, as Compare's chat checks)
    run = access.require("use", get_worker().store.get(str(run_id).strip()), user)
    vote = {"prompt": prompt, "system_prompt": system_prompt or "", "base": base_answer, "tuned": tuned_answer,
            "verdict": verdict, "better": (better or "").strip(), "run": run.id, "time": round(time.time(), 3)}
    with _lock:
        exists = _check_name_is_ours(user, name)
        log = _votes_file(user, name)
        made = log.with_suffix(".made")  # the votes have made the dataset once
        if made.exists() and not exists:  # ... and the person deleted it since: its votes go too, kept aside
            log.rename(log.with_name(f"{log.name}.deleted-{int(time.time())}"))
            made.unlink()
        log.parent.mkdir(parents=True, exist_ok=True)
        files.append_jsonl(log, vote, sync=True)
        every = _read(log)
        rows = pairs(every)
        if rows:
            store.save_dataset(user, name, rows, source=SOURCE, format="preference", overwrite=True)
            made.touch()
    return {"dataset": name, "votes": len(every), "pairs": len(rows)}


def pairs(votes: list[dict]) -> list[dict]:
    """The preference rows the votes make (the module's rules), in TRL's conversational form."""
    rows = []
    for vote in votes:
        prompt = ([{"role": "system", "content": vote["system_prompt"]}] if vote["system_prompt"].strip() else []) \
            + [{"role": "user", "content": vote["prompt"]}]
        answers = {"tuned": vote["tuned"], "base": vote["base"]}
        if vote["verdict"] in ("tuned", "base"):
            loser = answers["base" if vote["verdict"] == "tuned" else "tuned"]
            sides = [(vote["better"] or answers[vote["verdict"]], loser)]
        else:
            sides = [(vote["better"], answer) for answer in answers.values()] if vote["better"] else []
        for chosen, rejected in sides:
            if chosen.strip() and rejected.strip() and chosen.strip() != rejected.strip():
                rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                             "rejected": [{"role": "assistant", "content": rejected}]})
    return rows


def tally(user: str, run_id: str) -> dict | None:
    """``user``'s votes on ``run_id`` across their vote files: wins, losses, ties, both_bad and the win rate over
    the decided ones; None without votes."""
    counts = dict.fromkeys(VERDICTS, 0)
    folder = paths.user_dir(user) / "votes"
    for log in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        for verdict, n in _per_run(log).get(run_id, {}).items():
            counts[verdict] += n
    if not any(counts.values()):
        return None
    decided = counts["tuned"] + counts["base"]
    return {"wins": counts["tuned"], "losses": counts["base"], "ties": counts["tie"], "both_bad": counts["both_bad"],
            "win_rate": round(counts["tuned"] / decided, 3) if decided else None}


# vote log path -> (its size and mtime, {run id: {verdict: count}}): the Train tab polls a run's status every
# second, and the tally would otherwise parse every vote the owner ever gave each time
_counted: dict[str, tuple] = {}


def _per_run(log) -> dict[str, dict[str, int]]:
    try:
        stat = log.stat()
    except FileNotFoundError:
        return {}
    seen = (stat.st_size, stat.st_mtime_ns)
    cached = _counted.get(str(log))
    if cached and cached[0] == seen:
        return cached[1]
    found: dict[str, dict[str, int]] = {}
    for vote in _read(log):
        per_verdict = found.setdefault(vote.get("run"), {})
        per_verdict[vote["verdict"]] = per_verdict.get(vote["verdict"], 0) + 1
    _counted[str(log)] = (seen, found)
    return found


def _votes_file(user: str, name: str):
    return paths.user_dir(user) / "votes" / f"{paths.safe_name(name, 'votes')}.jsonl"


def _read(log) -> list[dict]:
    """The votes of a log; a line cut short by a crash is skipped (as a run's metrics are)."""
    try:
        lines = log.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    votes = []
    for line in lines:
        try:
            vote = json.loads(line)
        except ValueError:
            continue
        if isinstance(vote, dict) and vote.get("verdict") in VERDICTS:
            votes.append(vote)
    return votes


def _check_name_is_ours(user: str, name: str) -> bool:
    """Whether the votes' dataset exists; votes never overwrite a dataset the person saved themselves."""
    try:
        meta = store.load_meta(user, name)
    except GarageError:
        return False  # no dataset of that name
    if meta.get("source") != SOURCE:
        raise GarageError(f"You have a dataset named {name!r} that is not made of votes: choose another name for "
                          "the votes' dataset.")
    return True
