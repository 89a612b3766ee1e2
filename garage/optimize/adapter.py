"""GEPA's view of a model and a metric: a candidate system prompt answers rows, each answer scored with feedback.

``PromptAdapter`` is the ``gepa.GEPAAdapter`` of this app. Its one component is ``system_prompt``. A batch is
answered greedily by the app's own Engine (one base copy in memory, a finished run's adapter switched on where the
prompt is a tuned model's; a ZeroGPU call on ZeroGPU), and scored by the evaluation's own scorer: the final number
checked (math-verify for expressions), the LLM judge with the user's rubric, or word agreement with the reference
for free text. Each score comes with the feedback the reflection model reads: the answer that was wanted, the one
given, and whether the required form was followed.

Every scored answer is kept in ``answers.jsonl`` of the run's prompt folder, keyed by the prompt and the row: a
resumed optimisation (GEPA scores its starting prompt again before it reads its saved state) and a candidate
proposed twice cost nothing the second time.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

from gepa import EvaluationBatch

from garage import device, files
from garage.data.rows import with_system_prompt
from garage.evaluation.evaluate import answers_on_engine, generation_seconds, score_texts
from garage.scoring.rewards import extract_reference, prompt_text

COMPONENT = "system_prompt"
CHUNK = 16  # rows per generation call: a Stop waits for one chunk at most, and each ZeroGPU call stays short


class SearchStopped(Exception):
    """Raised between chunks when the run is asked to stop: GEPA ends there, its state as of the iteration's start
    (the answers scored so far are kept)."""


class PromptAdapter:
    """Scores a system prompt on rows ``{"prompt": messages without a system turn, "reference"}``."""

    propose_new_texts = None  # GEPA's own reflective proposal (its instruction template) writes new prompts

    def __init__(self, *, base: str, run=None, answer_format: str, scorer: str, judge=None, max_new_tokens: int,
                 folder: Path, batch_size: int = 8, visitor=None, should_stop=lambda: False):
        self.base, self.run = base, run
        self.answer_format, self.scorer, self.judge = answer_format, scorer, judge
        self.max_new_tokens, self.batch_size = int(max_new_tokens), int(batch_size)
        self.visitor, self.should_stop = visitor, should_stop
        self.path = Path(folder) / "answers.jsonl"
        self.gpu_seconds = 0.0  # spent generating in this start (the run adds what earlier starts spent)
        # what an answer depends on besides the prompt and the row: kept answers of other settings are not reused
        self._setting = json.dumps([base, run.id if run is not None else None, answer_format, scorer,
                                    self.max_new_tokens])
        self._lock = threading.Lock()
        self._cache: dict[str, dict] = {}
        for record in files.read_jsonl(self.path):
            self._cache[record["key"]] = record["item"]

    # --- GEPA's interface --------------------------------------------------------
    def evaluate(self, batch: list[dict], candidate: dict[str, str], capture_traces: bool = False) -> EvaluationBatch:
        prompt = candidate[COMPONENT]
        keys = [self._key(prompt, row) for row in batch]
        missing = [row for row, key in zip(batch, keys) if key not in self._cache]
        if missing:
            self._score(prompt, missing)
        items = [self._cache[key] for key in keys]
        outputs = [{"text": item["text"], "answer": item.get("answer")} for item in items]
        trajectories = ([{"row": row, "item": item} for row, item in zip(batch, items)] if capture_traces else None)
        return EvaluationBatch(outputs=outputs, scores=[item["score"] for item in items], trajectories=trajectories)

    def make_reflective_dataset(self, candidate: dict[str, str], eval_batch: EvaluationBatch,
                                components_to_update: list[str]) -> dict[str, list[dict]]:
        records = [{"Inputs": prompt_text(t["row"]["prompt"]), "Generated Outputs": t["item"]["text"],
                    "Feedback": t["item"]["feedback"]} for t in eval_batch.trajectories or []]
        return {name: records for name in components_to_update}

    # --- answering and scoring --------------------------------------------------------
    def _score(self, prompt: str, rows: list[dict]) -> None:
        for start in range(0, len(rows), CHUNK):
            if self.should_stop():
                raise SearchStopped()
            chunk = rows[start:start + CHUNK]
            conversations = [with_system_prompt(row["prompt"], prompt) for row in chunk]
            started = time.perf_counter()
            texts = device.call(answers_on_engine, self.base, self.run, conversations, self.max_new_tokens,
                                self.batch_size, seconds=generation_seconds(len(chunk), self.max_new_tokens),
                                visitor=self.visitor)
            seconds = time.perf_counter() - started
            items = score_texts(texts, chunk, self.answer_format, self.scorer, self.judge)
            with self._lock:
                self.gpu_seconds += seconds
                for row, item in zip(chunk, items):
                    kept = {"text": item["text"], "answer": item.get("answer"), "formatted": item["formatted"],
                            "correct": item["correct"],
                            "score": float(item.get("score", 1.0 if item["correct"] else 0.0)),
                            "feedback": self.feedback(item, row)}
                    key = self._key(prompt, row)
                    self._cache[key] = kept
                    files.append_jsonl(self.path, {"key": key, "item": kept})

    def feedback(self, item: dict, row: dict) -> str:
        """What the reflection model is told about one answer: what was wanted and what went wrong."""
        if self.scorer == "judge":
            return (f"The judge scored this answer {item['score']:.2f} of 1 against the rubric: "
                    f"{self.judge.rubric}" + (f" The reference answer: {row['reference']}" if row["reference"] else ""))
        if self.scorer == "overlap":
            return (f"This answer shares {item['score']:.0%} of its words with the reference answer (the score is "
                    f"their F1). The reference answer: {row['reference']}")
        gold = extract_reference(row["reference"])
        form = f"'{self.answer_format}'" if self.answer_format else "a final answer"
        if item["correct"]:
            return f"Correct: the final answer {gold} was given in the required form {form}."
        if item["formatted"]:
            return f"Wrong answer: it gave {item['answer']}, the right answer is {gold}."
        lenient = item.get("lenient_answer")
        if lenient is not None and item.get("correct_lenient"):
            return (f"The answer {lenient} is right, but it is not written in the required form {form}, so it "
                    f"scores 0: the final answer must end the reply as {form} with {{answer}} replaced by the "
                    "number.")
        return (f"No final answer in the required form {form} (the reply must end with it), and the right answer is "
                f"{gold}.")

    def _key(self, prompt: str, row: dict) -> str:
        """The prompt, the row's own content and the settings: a row edited between Stop and Resume is answered
        again, not scored from an answer to the old one."""
        text = json.dumps([prompt, row["prompt"], row["reference"], self._setting], sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]
