"""Compare tab: the base model and a run's tuned model answer side by side, streaming together."""

from __future__ import annotations

import functools
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import gradio as gr

from garage.data import benchmarks
from garage.data.store import list_datasets
from garage.evaluation import methods
from garage.infer.engine import DEFAULTS, GenSettings
from garage.errors import GarageError
from garage.jobs import chat, service, votes
from garage.ui.session import failure_stays, user_errors, user_of


def _settings(max_new_tokens, temperature, top_p, top_k, repetition_penalty, fixed_seed, seed) -> GenSettings:
    return GenSettings(max_new_tokens=int(max_new_tokens), temperature=float(temperature), top_p=float(top_p),
                       top_k=int(top_k), repetition_penalty=float(repetition_penalty),
                       seed=int(seed) if fixed_seed else None)


def _speed(answer) -> str:
    if answer is None:
        return "—"
    first = f", first token {answer.first_token_seconds:.2f}s" if answer.first_token_seconds else ""
    return f"{answer.tokens} tokens · {answer.tokens_per_second} tokens/s{first}"


def _shown(text: str) -> str:
    return text if text.strip() else "*(no visible text: the model produced only whitespace or special tokens)*"


ANSWERED = "✓ answered: vote below"  # blind mode's line under each column once both are done (no speeds)


@user_errors
def compare_stream(prompt, run_id, system_prompt, left_chat, right_chat, max_new_tokens, temperature, top_p, top_k,
                   repetition_penalty, fixed_seed, seed, swap=None, request: gr.Request = None,
                   profile: gr.OAuthProfile | None = None):
    """Streaming handler: both chat columns grow together. ``swap``: None outside blind mode; in it, True when the
    base model answers in the right column and the fine-tuned one in the left (the speeds stay hidden: they could
    tell the two apart). Its last output is the exchange a vote is about."""
    blind, swap = swap is not None, bool(swap and run_id)
    shown = (lambda base, tuned: (tuned, base)) if swap else (lambda base, tuned: (base, tuned))
    base_chat, tuned_chat = (list(chat_ or []) for chat_ in shown(left_chat, right_chat))
    settings = _settings(max_new_tokens, temperature, top_p, top_k, repetition_penalty, fixed_seed, seed)
    stream = chat.stream(prompt, run_id or None, user_of(request, profile), system_prompt=system_prompt,
                         base_history=base_chat, tuned_history=tuned_chat, settings=settings)
    user_turn = {"role": "user", "content": prompt}
    answers = (None, None)
    while True:
        try:
            base_text, tuned_text = next(stream)
        except StopIteration as stop:
            answers = stop.value
            break
        yield (*shown(base_chat + [user_turn, {"role": "assistant", "content": base_text}],
                      tuned_chat + ([user_turn, {"role": "assistant", "content": tuned_text}] if run_id else [])),
               "", gr.update(), gr.update(), None)
    base, tuned = answers
    exchange = {"prompt": prompt, "system_prompt": system_prompt or "", "base": base.text, "run_id": run_id,
                "tuned": tuned.text} if tuned else None
    yield (*shown(base_chat + [user_turn, {"role": "assistant", "content": _shown(base.text)}],
                  tuned_chat + ([user_turn, {"role": "assistant", "content": _shown(tuned.text)}] if tuned else [])),
           "", *((ANSWERED, ANSWERED) if blind else shown(_speed(base), _speed(tuned))), exchange)


SIDES = {"left": "Left", "right": "Right"}


def vote(prompt: str, base_answer: str, tuned_answer: str, verdict: str, run_id: str,
         dataset: str = "compare-votes", better: str = "", system_prompt: str = "", request: gr.Request = None,
         profile: gr.OAuthProfile | None = None) -> dict:
    """One judgement of a base and a fine-tuned answer (verdict: tuned, base, tie or both_bad; better: an answer you
    wrote, chosen over the worse ones) into the preference dataset ``dataset`` of your workspace, which dpo, orpo
    and kto train on. ``{"dataset", "votes", "pairs"}``."""
    return votes.record(user_of(request, profile), dataset, prompt=prompt, base_answer=base_answer,
                        tuned_answer=tuned_answer, verdict=verdict, run_id=run_id, system_prompt=system_prompt,
                        better=better)


@user_errors
def _vote_on_page(side: str, exchange: dict | None, swap: bool, blind: bool, better: str, dataset: str,
                  request: gr.Request = None, profile: gr.OAuthProfile | None = None):
    """A vote button: the side clicked read as base or fine-tuned (blind mode shows them swapped at random), the
    exchange consumed (one vote an answer), and in blind mode which column was which said."""
    if not exchange:
        raise GarageError("Ask both models something first (with a fine-tuned run picked), then vote on their "
                          "answers. Each pair of answers takes one vote.")
    tuned_side = "left" if swap else "right"
    verdict = side if side in ("tie", "both_bad") else "tuned" if side == tuned_side else "base"
    saved = vote(exchange["prompt"], exchange["base"], exchange["tuned"], verdict, exchange["run_id"], dataset,
                 better, exchange["system_prompt"], request=request, profile=profile)
    said = f"Vote kept in **{saved['dataset']}**: {saved['votes']} vote(s), {saved['pairs']} preference pair(s) " \
           "to train dpo, orpo or kto on (Train tab)."
    if not saved["pairs"]:
        said += " No pair yet: a tie, two answers alike or an empty one prefer nothing; write a better answer " \
                "(under the buttons) to make one."
    if not blind:
        return said, None, "", *[gr.update()] * 5
    said += f" {SIDES[tuned_side]} was the fine-tuned model, {SIDES['right' if swap else 'left'].lower()} the base. " \
            "A new conversation starts, its sides drawn again."
    return said, None, "", *_blind_columns(True)[:5]


def _blind_columns(blind: bool):
    """Blind mode on or off, or a Clear: a fresh conversation, in blind mode its sides drawn at random (``swap``,
    None outside it) and the columns named A and B."""
    swap = secrets.randbelow(2) == 1 if blind else None
    left, right = ("Answer A", "Answer B") if blind else ("Base model", "Fine-tuned model")
    return gr.update(value=[], label=left), gr.update(value=[], label=right), swap, "—", "—", None


def chat_compare(prompt: str, run_id: str = "", system_prompt: str = "", max_new_tokens: int = 256,
                 temperature: float = 1.0, top_p: float = 0.95, top_k: int = 64, repetition_penalty: float = 1.0,
                 seed: int = -1, request: gr.Request = None, profile: gr.OAuthProfile | None = None) -> dict:
    """Prompt and settings in, both full answers out (seed -1: not fixed; temperature 0: greedy); your runs only."""
    settings = _api_settings(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed)
    return chat.chat(prompt, run_id or None, user_of(request, profile), system_prompt=system_prompt,
                     settings=settings)


def chat_stream(prompt: str, run_id: str = "", system_prompt: str = "", max_new_tokens: int = 256,
                temperature: float = 1.0, top_p: float = 0.95, top_k: int = 64, repetition_penalty: float = 1.0,
                seed: int = -1, request: gr.Request = None,
                profile: gr.OAuthProfile | None = None) -> Iterator[dict]:
    """/chat_compare's answers as they grow, for API clients: ``{"base", "tuned"}`` texts so far, then the whole
    answers with ``"done": true`` and their speeds. Any run of the caller's, also one started after the page
    loaded (the page's own /chat_compare_stream takes only the runs its picker listed)."""
    settings = _api_settings(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed)
    stream = chat.stream(prompt, run_id or None, user_of(request, profile), system_prompt=system_prompt,
                         settings=settings)
    while True:
        try:
            base_text, tuned_text = next(stream)
        except StopIteration as stop:
            base, tuned = stop.value
            yield {"base": base.text, "tuned": tuned.text if tuned else None, "done": True,
                   "base_speed": _speed(base), "tuned_speed": _speed(tuned) if tuned else None}
            return
        yield {"base": base_text, "tuned": tuned_text if run_id else None, "done": False}


def _api_settings(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed) -> GenSettings:
    """The API's settings: seed -1 is no fixed seed, temperature 0 greedy."""
    settings = _settings(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed >= 0, seed)
    settings.greedy = temperature <= 0
    return settings


def eval_examples(run_id: str, n: float = 5, request: gr.Request = None,
                  profile: gr.OAuthProfile | None = None) -> list[dict]:
    """Base answer, tuned answer and reference for N rows of the run's eval split (greedy); your runs only."""
    return chat.eval_examples(run_id, user_of(request, profile), int(n))


def _examples_table(run_id, n, request: gr.Request, profile: gr.OAuthProfile | None = None):
    import pandas as pd

    rows = eval_examples(run_id, n, request, profile)
    return pd.DataFrame(rows, columns=["split", "prompt", "base", "tuned", "reference", "tuned_matches"])


def evaluate(run_id: str, dataset: str = "", n: int = 50, request: gr.Request = None,
             profile: gr.OAuthProfile | None = None) -> dict:
    """Accuracy base vs tuned on a held-out set ("gsm8k", a saved dataset, or empty for the run's own eval rows),
    with format failures reported apart from wrong answers; your runs only."""
    return chat.evaluate(run_id, user_of(request, profile), dataset, int(n))


@failure_stays("Evaluate", 2, others=lambda why: [None])  # the reason stays under the button after the pop-up fades
def _evaluate_markdown(run_id, dataset, n, request: gr.Request, profile: gr.OAuthProfile | None = None):
    report = evaluate(run_id, dataset, n, request, profile)
    return report, report.get("summary", "")


def compare_methods(run_ids: list[str] | str, dataset: str = "gsm8k", n: int = 50, base_model: str = "",
                    request: gr.Request = None, profile: gr.OAuthProfile | None = None) -> dict:
    """Which helped, on one held-out set: the base model, each prompt run's best prompt, each fine-tuned run (SFT,
    GRPO) and tuned + prompt, with accuracy, format failures apart from wrong answers, and what each cost; plus the
    table as CSV and Markdown. ``run_ids``: your runs (a list, or ids separated by commas)."""
    ids = [r.strip() for r in (run_ids.split(",") if isinstance(run_ids, str) else run_ids or []) if r.strip()]
    table = chat.compare_methods(ids, user_of(request, profile), dataset, int(n), base_model or "")
    return {**table, "csv": methods.to_csv(table), "markdown": methods.to_markdown(table)}


@failure_stays("Compare methods", 2, others=lambda why: [None], status=0)  # the reason under the button
def _methods_view(run_ids, dataset, n, base_model, request: gr.Request, profile: gr.OAuthProfile | None = None):
    """The table as Markdown (the prompts shortened) and as a CSV download (whole)."""
    table = compare_methods(run_ids or [], dataset, n, base_model, request, profile)
    path = Path(tempfile.mkdtemp(prefix="garage-methods-")) / "which-helped.csv"
    path.write_text(table["csv"], encoding="utf-8")
    return table["markdown"], str(path)


def _prompt_label(run, status: dict) -> str:
    return f"{run.id} · prompt · best {status['prompt']['best_score']:.2f}"


def _tuned_label(run, status: dict) -> str:
    return f"{run.id} · {status.get('method')} · {status.get('model')}"


@user_errors
def _use_prompt(run_id, current, request: gr.Request, profile: gr.OAuthProfile | None = None):
    return service.best_prompt(run_id, user_of(request, profile)) if run_id else current


def _completed_runs(request: gr.Request = None, profile: gr.OAuthProfile | None = None,
                    tuned: list | None = None) -> list[tuple[str, str]]:
    """The chat's run picker; ``tuned``: the user's runs with weights when the caller has read them already."""
    tuned = service.runs_with_weights(user_of(request, profile), "use") if tuned is None else tuned
    return [("(base model only)", "")] + [(f"{run.id} · {status.get('model')} · {status.get('dataset')}", run.id)
                                          for run, status in tuned]


def build() -> dict:
    with gr.Row():
        run_pick = gr.Dropdown(choices=[("(base model only)", "")], value="", label="Fine-tuned run", scale=4)
        refresh = gr.Button("↻ runs", size="sm", scale=0)
    with gr.Row():
        system_prompt = gr.Textbox(label="System prompt (optional)", lines=1, scale=4)
        prompt_pick = gr.Dropdown(choices=[("(type your own)", "")], value="", scale=2, elem_id="prompt-pick",
                                  label="…or the best prompt of a prompt optimisation (Train, method prompt)")
    with gr.Row():
        with gr.Column():
            base_chat = gr.Chatbot(label="Base model", height=380, elem_id="base-chat")
            base_speed = gr.Markdown("—")
        with gr.Column():
            tuned_chat = gr.Chatbot(label="Fine-tuned model", height=380, elem_id="tuned-chat")
            tuned_speed = gr.Markdown("—")
    with gr.Row(elem_id="votes"):
        vote_buttons = {side: gr.Button(label, size="sm") for side, label in (
            ("left", "◀ Left is better"), ("right", "Right is better ▶"), ("tie", "Tie"), ("both_bad", "Both bad"))}
        blind = gr.Checkbox(label="Blind: random sides, named after your vote", value=False)
    with gr.Accordion("Vote with a better answer, and where votes go", open=False):
        better = gr.Textbox(label="A better answer (optional: it becomes the chosen one)", lines=2)
        vote_set = gr.Textbox(value="compare-votes", label="Votes go to the preference dataset")
    vote_said = gr.Markdown(elem_id="vote-said")
    swap, exchange = gr.State(None), gr.State(None)  # swap: None outside blind mode
    prompt = gr.Textbox(label="Prompt", placeholder="Ask both models the same thing…", lines=2)
    with gr.Row():
        send = gr.Button("Send", variant="primary")
        stop = gr.Button("Stop", variant="stop")
        clear = gr.Button("Clear")
    with gr.Accordion("Generation settings (Gemma 3 defaults)", open=False):
        with gr.Row():
            max_new_tokens = gr.Slider(1, 2048, value=DEFAULTS["max_new_tokens"], step=1, label="max new tokens")
            temperature = gr.Slider(0.0, 2.0, value=DEFAULTS["temperature"], step=0.05, label="temperature")
            top_p = gr.Slider(0.0, 1.0, value=DEFAULTS["top_p"], step=0.01, label="top-p")
            top_k = gr.Slider(0, 200, value=DEFAULTS["top_k"], step=1, label="top-k")
            repetition_penalty = gr.Slider(0.8, 2.0, value=DEFAULTS["repetition_penalty"], step=0.01,
                                           label="repetition penalty")
        with gr.Row():
            fixed_seed = gr.Checkbox(value=True, label="fixed seed (a difference then comes from the weights)")
            seed = gr.Number(value=42, precision=0, label="seed")

    with gr.Accordion("Eval examples: base vs tuned vs reference", open=False):
        with gr.Row():
            n_examples = gr.Number(value=5, precision=0, minimum=1, maximum=100, label="rows")
            examples_btn = gr.Button("Fill the table (greedy)")
        examples = gr.Dataframe(wrap=True, interactive=False)
    with gr.Accordion("Evaluate: accuracy before and after (format failures apart from wrong answers)",
                      open=False):
        with gr.Row():
            eval_dataset = gr.Dropdown(choices=[("the run's eval rows", ""), *benchmarks.NAMES], value="",
                                       allow_custom_value=True, label="held-out set (or a saved dataset's name)")
            eval_n = gr.Number(value=50, precision=0, minimum=1, maximum=2000, label="rows")
            eval_btn = gr.Button("Evaluate")
        eval_summary = gr.Markdown()
        eval_report = gr.JSON(label="Report")
    with gr.Accordion("Which helped: base, optimised prompt, fine-tuned runs on one held-out set", open=False):
        with gr.Row():
            method_runs = gr.Dropdown(choices=[], multiselect=True, label="prompt runs and fine-tuned runs", scale=4,
                                      elem_id="method-runs")
            methods_set = gr.Dropdown(choices=list(benchmarks.NAMES), value="gsm8k", allow_custom_value=True,
                                      label="held-out set (or a saved dataset)")
            methods_n = gr.Number(value=50, precision=0, minimum=1, maximum=2000, label="rows")
            methods_base = gr.Textbox(label="base model (empty: the runs')")
        methods_btn = gr.Button("Compare the methods")
        methods_md = gr.Markdown(elem_id="methods-table")
        methods_csv = gr.File(label="CSV (the prompts whole)", interactive=False)

    inputs = [prompt, run_pick, system_prompt, base_chat, tuned_chat, max_new_tokens, temperature, top_p, top_k,
              repetition_penalty, fixed_seed, seed, swap]
    outputs = [base_chat, tuned_chat, prompt, base_speed, tuned_speed, exchange]
    events = [send.click(compare_stream, inputs, outputs, api_name="chat_compare_stream", concurrency_limit=2,
                         concurrency_id="generate"),
              prompt.submit(compare_stream, inputs, outputs, api_visibility="private", concurrency_limit=2,
                            concurrency_id="generate")]
    stop.click(None, cancels=events)
    columns = [base_chat, tuned_chat, swap, base_speed, tuned_speed]
    clear.click(_blind_columns, blind, [*columns, exchange], api_visibility="private")
    blind.change(_blind_columns, blind, [*columns, exchange], api_visibility="private")
    for side, button in vote_buttons.items():
        button.click(functools.partial(_vote_on_page, side), [exchange, swap, blind, better, vote_set],
                     [vote_said, exchange, better, *columns], api_visibility="private")
    gr.api(user_errors(vote), api_name="vote", concurrency_limit=4)
    pickers = [run_pick, prompt_pick, method_runs, eval_dataset, methods_set]
    refresh.click(_refresh_runs, None, pickers, api_visibility="private")
    prompt_pick.change(_use_prompt, [prompt_pick, system_prompt], system_prompt, api_visibility="private")
    methods_btn.click(_methods_view, [method_runs, methods_set, methods_n, methods_base],
                      [methods_md, methods_csv], api_visibility="private", concurrency_id="generate")
    gr.api(user_errors(compare_methods), api_name="compare_methods", concurrency_limit=1, concurrency_id="generate")
    examples_btn.click(user_errors(_examples_table), [run_pick, n_examples], examples, api_visibility="private",
                       concurrency_id="generate")
    eval_btn.click(_evaluate_markdown, [run_pick, eval_dataset, eval_n], [eval_report, eval_summary],
                   api_visibility="private", concurrency_id="generate")
    gr.api(user_errors(evaluate), api_name="evaluate", concurrency_limit=1, concurrency_id="generate")
    gr.api(user_errors(eval_examples), api_name="eval_examples", concurrency_limit=2, concurrency_id="generate")
    gr.api(user_errors(chat_compare), api_name="chat_compare", concurrency_limit=2, concurrency_id="generate")
    gr.api(user_errors(chat_stream), api_name="chat_stream", concurrency_limit=2, concurrency_id="generate")
    return {"run_pick": run_pick, "refresh": _refresh_runs, "pickers": pickers}


def _refresh_runs(request: gr.Request, profile: gr.OAuthProfile | None = None):
    """Every picker of the tab, each list read once (it was four reads of every run's status a tab opening): runs
    with weights, prompt runs, and the held-out sets (benchmarks, then the user's datasets)."""
    user = user_of(request, profile)
    tuned, prompts = service.runs_with_weights(user, "use"), service.prompt_runs(user)
    found = [(_prompt_label(run, status), run.id) for run, status in prompts]
    sets = [*benchmarks.NAMES, *(meta["name"] for meta in list_datasets(user))]
    return (gr.update(choices=_completed_runs(request, profile, tuned)),
            gr.update(choices=[("(type your own)", ""), *found]),
            gr.update(choices=[*found, *[(_tuned_label(run, status), run.id) for run, status in tuned]]),
            gr.update(choices=[("the run's eval rows", ""), *sets]), gr.update(choices=sets))
